//! The agent card as the A2A Python SDK (a2a-sdk 1.3.0) reads it, and the exact bytes its card
//! signatures cover.
//!
//! A card signature is a JWS whose payload is not the card as served but
//! `JCS(_clean_empty(MessageToDict(parse_agent_card(card))) minus "signatures")`
//! (`a2a/utils/signing.py`). Verifying the card as served would refuse cards the SDK accepts;
//! verifying anything else than what the SDK verifies could accept a card the SDK refuses.
//! So this module re-does the SDK's reading, step by step:
//!
//! 1. `parse_agent_card` (`a2a/client/card_resolver.py`) maps the legacy v0.3 members:
//!    `supportsAuthenticatedExtendedCard` → `capabilities.extendedAgentCard` (when that is
//!    absent); `url`/`preferredTransport`/`protocolVersion`/`additionalInterfaces` → one
//!    `supportedInterfaces` list (only when that member is absent; the legacy members are
//!    dropped either way); `security` → `securityRequirements` (card and skills, when absent);
//!    a scheme with a legacy `type` is rebuilt from its flat members (`in` → `location` for
//!    `apiKey`), so in a hybrid card the flat members are what is signed, not the wrapper.
//! 2. protobuf's `ParseDict(…, ignore_unknown_fields=True)` into `lf.a2a.v1.AgentCard`: unknown
//!    members are dropped at every level, `null` means unset, scalars must have their type,
//!    a oneof takes one member.
//! 3. `MessageToDict`: proto3 defaults are omitted (an empty string, a `false` without
//!    presence such as `required`, an empty list or map); `optional` booleans
//!    (`capabilities.*`) keep `false`; numbers inside a `Struct` (`AgentExtension.params`)
//!    are doubles.
//! 4. `_clean_empty`: recursively drops `""`, `[]`, `{}` and `null` (also inside `params`,
//!    and list elements that become empty), keeping `false` and `0`; `signatures` is removed.
//! 5. RFC 8785 canonical JSON ([`arbiter_log::canonical_json`]; numbers that were doubles are
//!    written with the ECMAScript algorithm, as the SDK's `_jcs.py` does).
//!
//! Where the SDK would accept a shape by accident of Python rather than by design, this module
//! refuses the card instead of guessing ([`Invalid`]): a message member that is not an object
//! (the SDK iterates a string's characters as member names), a protobuf field name in place of
//! the JSON name (`supported_interfaces`: the SDK reads it, and the last spelling wins, so a
//! reader of `supportedInterfaces` could see another value), a non-boolean
//! `supportsAuthenticatedExtendedCard`, a legacy member of a shape the SDK only survives
//! because Python iterates it. Everything the SDK refuses is refused too. The fixtures under
//! `tests/fixtures/agent_card/` hold the SDK's own payload or refusal for every case, and the
//! tests compare byte for byte.

use serde_json::{Map, Number, Value};

/// Why a card is not read the SDK's way: the member (a path such as `skills[0].id`) and what
/// is wrong with it. Shown to callers: it quotes member names, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub(crate) path: String,
    pub(crate) problem: &'static str,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(self.problem)
        } else {
            write!(f, "`{}` {}", self.path, self.problem)
        }
    }
}

fn invalid<T>(path: &str, problem: &'static str) -> Result<T, Invalid> {
    Err(Invalid {
        path: truncated(path),
        problem,
    })
}

/// A path for a message: member names are the card's (attacker-chosen), so long ones are cut.
fn truncated(path: &str) -> String {
    const MAX: usize = 120;
    if path.len() <= MAX {
        return path.to_owned();
    }
    let mut end = MAX;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_owned()
    } else {
        format!("{path}.{name}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

// ---- the schema of `lf.a2a.v1.AgentCard` (a2a-sdk 1.3.0, `a2a/types/a2a_pb2`) ---------------

/// How a field is read and written.
#[derive(Debug)]
enum Kind {
    /// `string` (with or without presence: an empty one is dropped either way).
    Str,
    /// `bool` without presence: written only when `true`.
    Bool,
    /// `optional bool`: written when set, `false` included.
    OptBool,
    Msg(&'static Message),
    RepStr,
    RepMsg(&'static Message),
    /// `map<string, Message>`.
    MapMsg(&'static Message),
    /// `map<string, string>`.
    MapStr,
    /// `google.protobuf.Struct`.
    Struct,
}

#[derive(Debug)]
struct Field {
    /// The JSON name (lowerCamelCase of the proto name; A2A has no custom `json_name`).
    json: &'static str,
    /// The proto name, which `ParseDict` also accepts.
    proto: &'static str,
    kind: Kind,
    /// A real oneof (not the synthetic one of a proto3 `optional`).
    oneof: bool,
}

#[derive(Debug)]
struct Message {
    fields: &'static [Field],
}

const fn f(json: &'static str, proto: &'static str, kind: Kind) -> Field {
    Field {
        json,
        proto,
        kind,
        oneof: false,
    }
}

const fn one(json: &'static str, proto: &'static str, kind: Kind) -> Field {
    Field {
        json,
        proto,
        kind,
        oneof: true,
    }
}

static AGENT_CARD: Message = Message {
    fields: &[
        f("name", "name", Kind::Str),
        f("description", "description", Kind::Str),
        f(
            "supportedInterfaces",
            "supported_interfaces",
            Kind::RepMsg(&AGENT_INTERFACE),
        ),
        f("provider", "provider", Kind::Msg(&AGENT_PROVIDER)),
        f("version", "version", Kind::Str),
        f("documentationUrl", "documentation_url", Kind::Str),
        f(
            "capabilities",
            "capabilities",
            Kind::Msg(&AGENT_CAPABILITIES),
        ),
        f(
            "securitySchemes",
            "security_schemes",
            Kind::MapMsg(&SECURITY_SCHEME),
        ),
        f(
            "securityRequirements",
            "security_requirements",
            Kind::RepMsg(&SECURITY_REQUIREMENT),
        ),
        f("defaultInputModes", "default_input_modes", Kind::RepStr),
        f("defaultOutputModes", "default_output_modes", Kind::RepStr),
        f("skills", "skills", Kind::RepMsg(&AGENT_SKILL)),
        f(
            "signatures",
            "signatures",
            Kind::RepMsg(&AGENT_CARD_SIGNATURE),
        ),
        f("iconUrl", "icon_url", Kind::Str),
    ],
};

static AGENT_INTERFACE: Message = Message {
    fields: &[
        f("url", "url", Kind::Str),
        f("protocolBinding", "protocol_binding", Kind::Str),
        f("tenant", "tenant", Kind::Str),
        f("protocolVersion", "protocol_version", Kind::Str),
    ],
};

static AGENT_PROVIDER: Message = Message {
    fields: &[
        f("url", "url", Kind::Str),
        f("organization", "organization", Kind::Str),
    ],
};

static AGENT_CAPABILITIES: Message = Message {
    fields: &[
        f("streaming", "streaming", Kind::OptBool),
        f("pushNotifications", "push_notifications", Kind::OptBool),
        f("extensions", "extensions", Kind::RepMsg(&AGENT_EXTENSION)),
        f("extendedAgentCard", "extended_agent_card", Kind::OptBool),
    ],
};

static AGENT_EXTENSION: Message = Message {
    fields: &[
        f("uri", "uri", Kind::Str),
        f("description", "description", Kind::Str),
        f("required", "required", Kind::Bool),
        f("params", "params", Kind::Struct),
    ],
};

static SECURITY_SCHEME: Message = Message {
    fields: &[
        one(
            "apiKeySecurityScheme",
            "api_key_security_scheme",
            Kind::Msg(&API_KEY_SECURITY_SCHEME),
        ),
        one(
            "httpAuthSecurityScheme",
            "http_auth_security_scheme",
            Kind::Msg(&HTTP_AUTH_SECURITY_SCHEME),
        ),
        one(
            "oauth2SecurityScheme",
            "oauth2_security_scheme",
            Kind::Msg(&OAUTH2_SECURITY_SCHEME),
        ),
        one(
            "openIdConnectSecurityScheme",
            "open_id_connect_security_scheme",
            Kind::Msg(&OPEN_ID_CONNECT_SECURITY_SCHEME),
        ),
        one(
            "mtlsSecurityScheme",
            "mtls_security_scheme",
            Kind::Msg(&MUTUAL_TLS_SECURITY_SCHEME),
        ),
    ],
};

static API_KEY_SECURITY_SCHEME: Message = Message {
    fields: &[
        f("description", "description", Kind::Str),
        f("location", "location", Kind::Str),
        f("name", "name", Kind::Str),
    ],
};

static HTTP_AUTH_SECURITY_SCHEME: Message = Message {
    fields: &[
        f("description", "description", Kind::Str),
        f("scheme", "scheme", Kind::Str),
        f("bearerFormat", "bearer_format", Kind::Str),
    ],
};

static OAUTH2_SECURITY_SCHEME: Message = Message {
    fields: &[
        f("description", "description", Kind::Str),
        f("flows", "flows", Kind::Msg(&OAUTH_FLOWS)),
        f("oauth2MetadataUrl", "oauth2_metadata_url", Kind::Str),
    ],
};

static OAUTH_FLOWS: Message = Message {
    fields: &[
        one(
            "authorizationCode",
            "authorization_code",
            Kind::Msg(&AUTHORIZATION_CODE_FLOW),
        ),
        one(
            "clientCredentials",
            "client_credentials",
            Kind::Msg(&CLIENT_CREDENTIALS_FLOW),
        ),
        one("implicit", "implicit", Kind::Msg(&IMPLICIT_FLOW)),
        one("password", "password", Kind::Msg(&PASSWORD_FLOW)),
        one("deviceCode", "device_code", Kind::Msg(&DEVICE_CODE_FLOW)),
    ],
};

static AUTHORIZATION_CODE_FLOW: Message = Message {
    fields: &[
        f("authorizationUrl", "authorization_url", Kind::Str),
        f("tokenUrl", "token_url", Kind::Str),
        f("refreshUrl", "refresh_url", Kind::Str),
        f("scopes", "scopes", Kind::MapStr),
        f("pkceRequired", "pkce_required", Kind::Bool),
    ],
};

static CLIENT_CREDENTIALS_FLOW: Message = Message {
    fields: &[
        f("tokenUrl", "token_url", Kind::Str),
        f("refreshUrl", "refresh_url", Kind::Str),
        f("scopes", "scopes", Kind::MapStr),
    ],
};

static IMPLICIT_FLOW: Message = Message {
    fields: &[
        f("authorizationUrl", "authorization_url", Kind::Str),
        f("refreshUrl", "refresh_url", Kind::Str),
        f("scopes", "scopes", Kind::MapStr),
    ],
};

static PASSWORD_FLOW: Message = Message {
    fields: &[
        f("tokenUrl", "token_url", Kind::Str),
        f("refreshUrl", "refresh_url", Kind::Str),
        f("scopes", "scopes", Kind::MapStr),
    ],
};

static DEVICE_CODE_FLOW: Message = Message {
    fields: &[
        f(
            "deviceAuthorizationUrl",
            "device_authorization_url",
            Kind::Str,
        ),
        f("tokenUrl", "token_url", Kind::Str),
        f("refreshUrl", "refresh_url", Kind::Str),
        f("scopes", "scopes", Kind::MapStr),
    ],
};

static OPEN_ID_CONNECT_SECURITY_SCHEME: Message = Message {
    fields: &[
        f("description", "description", Kind::Str),
        f("openIdConnectUrl", "open_id_connect_url", Kind::Str),
    ],
};

static MUTUAL_TLS_SECURITY_SCHEME: Message = Message {
    fields: &[f("description", "description", Kind::Str)],
};

static SECURITY_REQUIREMENT: Message = Message {
    fields: &[f("schemes", "schemes", Kind::MapMsg(&STRING_LIST))],
};

static STRING_LIST: Message = Message {
    fields: &[f("list", "list", Kind::RepStr)],
};

static AGENT_SKILL: Message = Message {
    fields: &[
        f("id", "id", Kind::Str),
        f("name", "name", Kind::Str),
        f("description", "description", Kind::Str),
        f("tags", "tags", Kind::RepStr),
        f("examples", "examples", Kind::RepStr),
        f("inputModes", "input_modes", Kind::RepStr),
        f("outputModes", "output_modes", Kind::RepStr),
        f(
            "securityRequirements",
            "security_requirements",
            Kind::RepMsg(&SECURITY_REQUIREMENT),
        ),
    ],
};

static AGENT_CARD_SIGNATURE: Message = Message {
    fields: &[
        f("protected", "protected", Kind::Str),
        f("signature", "signature", Kind::Str),
        f("header", "header", Kind::Struct),
    ],
};

// ---- step 1: `parse_agent_card`'s legacy mapping ---------------------------------------------

/// The legacy scheme `type`s and the wrapper member each becomes.
const LEGACY_SCHEME_TYPES: [(&str, &str); 5] = [
    ("apiKey", "apiKeySecurityScheme"),
    ("http", "httpAuthSecurityScheme"),
    ("oauth2", "oauth2SecurityScheme"),
    ("openIdConnect", "openIdConnectSecurityScheme"),
    ("mutualTLS", "mtlsSecurityScheme"),
];

fn legacy(card: &mut Map<String, Value>) -> Result<(), Invalid> {
    // `_handle_extended_card_compatibility`
    match card.remove("supportsAuthenticatedExtendedCard") {
        None | Some(Value::Null | Value::Bool(false)) => {}
        Some(Value::Bool(true)) => match card
            .entry("capabilities")
            .or_insert_with(|| Value::Object(Map::new()))
        {
            Value::Object(capabilities) => {
                capabilities
                    .entry("extendedAgentCard")
                    .or_insert(Value::Bool(true));
            }
            _ => return invalid("capabilities", "must be an object"),
        },
        Some(_) => return invalid("supportsAuthenticatedExtendedCard", "must be a boolean"),
    }

    // `_handle_connection_fields_compatibility`
    let url = card.remove("url");
    let transport = card.remove("preferredTransport");
    let version = card.remove("protocolVersion");
    let additional = card.remove("additionalInterfaces");
    if !card.contains_key("supportedInterfaces") {
        let url = match url {
            None | Some(Value::Null) => None,
            Some(Value::String(u)) if u.is_empty() => None,
            Some(Value::String(u)) => Some(u),
            Some(_) => return invalid("url", "must be a string"),
        };
        if let Some(url) = url {
            let text_or_null = |v: Option<Value>, default: &str, name: &str| match v {
                None => Ok(Value::String(default.to_owned())),
                Some(v @ (Value::Null | Value::String(_))) => Ok(v),
                Some(_) => invalid(name, "must be a string"),
            };
            let transport = text_or_null(transport, "JSONRPC", "preferredTransport")?;
            let version = text_or_null(version, "0.3.0", "protocolVersion")?;
            let mut interfaces = vec![Value::Object(Map::from_iter([
                ("url".to_owned(), Value::String(url)),
                ("protocolBinding".to_owned(), transport),
                ("protocolVersion".to_owned(), version.clone()),
            ]))];
            match additional {
                None | Some(Value::Null) => {}
                Some(Value::Array(list)) => {
                    for (i, iface) in list.into_iter().enumerate() {
                        let Value::Object(mut iface) = iface else {
                            return invalid(&index("additionalInterfaces", i), "must be an object");
                        };
                        interfaces.push(Value::Object(Map::from_iter([
                            ("url".to_owned(), iface.remove("url").unwrap_or(Value::Null)),
                            (
                                "protocolBinding".to_owned(),
                                iface.remove("transport").unwrap_or(Value::Null),
                            ),
                            ("protocolVersion".to_owned(), version.clone()),
                        ])));
                    }
                }
                Some(_) => return invalid("additionalInterfaces", "must be an array"),
            }
            card.insert("supportedInterfaces".to_owned(), Value::Array(interfaces));
        }
    }

    // `_handle_security_compatibility`
    if let Some(security) = card.remove("security")
        && !card.contains_key("securityRequirements")
        && !security.is_null()
    {
        let mapped = legacy_security(security, "security")?;
        card.insert("securityRequirements".to_owned(), mapped);
    }
    match card.get_mut("skills") {
        None => {}
        Some(Value::Array(skills)) => {
            for (i, skill) in skills.iter_mut().enumerate() {
                let Value::Object(skill) = skill else {
                    return invalid(&index("skills", i), "must be an object");
                };
                if let Some(security) = skill.remove("security")
                    && !skill.contains_key("securityRequirements")
                    && !security.is_null()
                {
                    let path = format!("{}.security", index("skills", i));
                    let mapped = legacy_security(security, &path)?;
                    skill.insert("securityRequirements".to_owned(), mapped);
                }
            }
        }
        Some(_) => return invalid("skills", "must be an array"),
    }
    match card.get_mut("securitySchemes") {
        None | Some(Value::Null) => {}
        Some(Value::Object(schemes)) => {
            for (name, scheme) in schemes.iter_mut() {
                let path = child("securitySchemes", name);
                let Value::Object(scheme) = scheme else {
                    return invalid(&path, "must be an object");
                };
                let wrapper = match scheme.remove("type") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(t)) => LEGACY_SCHEME_TYPES
                        .iter()
                        .find(|(legacy, _)| *legacy == t)
                        .map(|(legacy, wrapper)| (*legacy, *wrapper)),
                    Some(Value::Bool(_) | Value::Number(_)) => None,
                    Some(Value::Array(_) | Value::Object(_)) => {
                        return invalid(&child(&path, "type"), "must be a string");
                    }
                };
                if let Some((legacy, wrapper)) = wrapper {
                    if legacy == "apiKey"
                        && let Some(location) = scheme.remove("in")
                    {
                        scheme.insert("location".to_owned(), location);
                    }
                    let flat = std::mem::take(scheme);
                    scheme.insert(wrapper.to_owned(), Value::Object(flat));
                }
            }
        }
        Some(_) => return invalid("securitySchemes", "must be an object"),
    }
    Ok(())
}

/// `_map_legacy_security`: `[{name: [scopes]}]` → `[{"schemes": {name: {"list": scopes}}}]`.
fn legacy_security(security: Value, path: &str) -> Result<Value, Invalid> {
    let Value::Array(list) = security else {
        return invalid(path, "must be an array");
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, requirement) in list.into_iter().enumerate() {
        let Value::Object(requirement) = requirement else {
            return invalid(&index(path, i), "must be an object");
        };
        let schemes: Map<String, Value> = requirement
            .into_iter()
            .map(|(name, scopes)| {
                (
                    name,
                    Value::Object(Map::from_iter([("list".to_owned(), scopes)])),
                )
            })
            .collect();
        out.push(Value::Object(Map::from_iter([(
            "schemes".to_owned(),
            Value::Object(schemes),
        )])));
    }
    Ok(Value::Array(out))
}

// ---- steps 2 to 4: `ParseDict`, `MessageToDict`, `_clean_empty` -------------------------------

/// Reads `value` as `message`, returning what the SDK would keep of it (`None` when nothing).
fn message(
    message: &'static Message,
    value: &Map<String, Value>,
    path: &str,
) -> Result<Option<Value>, Invalid> {
    let mut out = Map::new();
    let mut oneof_set = false;
    for (name, v) in value {
        let here = child(path, name);
        let field = match message.fields.iter().find(|f| f.json == name) {
            Some(field) => field,
            None => {
                if message.fields.iter().any(|f| f.proto == name) {
                    return invalid(
                        &here,
                        "is a protobuf field name; only the JSON (lowerCamelCase) name is accepted",
                    );
                }
                if name.starts_with('[') {
                    return invalid(&here, "is refused (a protobuf extension name)");
                }
                // Unknown: dropped, as `ignore_unknown_fields=True` does.
                continue;
            }
        };
        if v.is_null() {
            continue;
        }
        if field.oneof {
            if oneof_set {
                return invalid(&here, "is a second member of a oneof");
            }
            oneof_set = true;
        }
        if let Some(kept) = read(&field.kind, v, &here)? {
            out.insert(field.json.to_owned(), kept);
        }
    }
    Ok((!out.is_empty()).then_some(Value::Object(out)))
}

fn read(kind: &Kind, v: &Value, path: &str) -> Result<Option<Value>, Invalid> {
    match kind {
        Kind::Str => match v {
            Value::String(s) => Ok((!s.is_empty()).then(|| v.clone())),
            _ => invalid(path, "must be a string"),
        },
        Kind::Bool => match v {
            Value::Bool(b) => Ok(b.then_some(Value::Bool(true))),
            _ => invalid(path, "must be a boolean"),
        },
        Kind::OptBool => match v {
            Value::Bool(_) => Ok(Some(v.clone())),
            _ => invalid(path, "must be a boolean"),
        },
        Kind::Msg(m) => match v {
            Value::Object(o) => message(m, o, path),
            _ => invalid(path, "must be an object"),
        },
        Kind::RepStr => {
            let Value::Array(items) = v else {
                return invalid(path, "must be an array");
            };
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::String(s) if s.is_empty() => {}
                    Value::String(_) => out.push(item.clone()),
                    _ => return invalid(&index(path, i), "must be a string"),
                }
            }
            Ok((!out.is_empty()).then_some(Value::Array(out)))
        }
        Kind::RepMsg(m) => {
            let Value::Array(items) = v else {
                return invalid(path, "must be an array");
            };
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let Value::Object(o) = item else {
                    return invalid(&index(path, i), "must be an object");
                };
                if let Some(kept) = message(m, o, &index(path, i))? {
                    out.push(kept);
                }
            }
            Ok((!out.is_empty()).then_some(Value::Array(out)))
        }
        Kind::MapMsg(m) => {
            let Value::Object(entries) = v else {
                return invalid(path, "must be an object");
            };
            let mut out = Map::new();
            for (key, item) in entries {
                let here = child(path, key);
                let Value::Object(o) = item else {
                    return invalid(&here, "must be an object");
                };
                if let Some(kept) = message(m, o, &here)? {
                    out.insert(key.clone(), kept);
                }
            }
            Ok((!out.is_empty()).then_some(Value::Object(out)))
        }
        Kind::MapStr => {
            let Value::Object(entries) = v else {
                return invalid(path, "must be an object");
            };
            let mut out = Map::new();
            for (key, item) in entries {
                match item {
                    Value::String(s) if s.is_empty() => {}
                    Value::String(_) => {
                        out.insert(key.clone(), item.clone());
                    }
                    _ => return invalid(&child(path, key), "must be a string"),
                }
            }
            Ok((!out.is_empty()).then_some(Value::Object(out)))
        }
        Kind::Struct => match v {
            Value::Object(_) => Ok(clean_struct(v)),
            _ => invalid(path, "must be an object"),
        },
    }
}

/// `_clean_empty` of a `Struct` value after `MessageToDict`: numbers are doubles, and `null`,
/// `""`, `[]` and `{}` disappear (bottom-up).
fn clean_struct(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Bool(_) => Some(v.clone()),
        Value::String(s) => (!s.is_empty()).then(|| v.clone()),
        // `Number::as_f64` is `Some` for every number without `arbitrary_precision`; a double
        // that is not finite cannot come out of a JSON parse.
        Value::Number(n) => n.as_f64().and_then(Number::from_f64).map(Value::Number),
        Value::Array(items) => {
            let kept: Vec<Value> = items.iter().filter_map(clean_struct).collect();
            (!kept.is_empty()).then_some(Value::Array(kept))
        }
        Value::Object(members) => {
            let kept: Map<String, Value> = members
                .iter()
                .filter_map(|(k, v)| clean_struct(v).map(|v| (k.clone(), v)))
                .collect();
            (!kept.is_empty()).then_some(Value::Object(kept))
        }
    }
}

/// The card as the SDK reads it (after step 4, `signatures` included so that the caller can
/// check their shape; [`signed_payload`] removes them): `Value::Null` when nothing is left.
pub(crate) fn sdk_view(card: &Map<String, Value>) -> Result<Value, Invalid> {
    let mut card = card.clone();
    legacy(&mut card)?;
    Ok(message(&AGENT_CARD, &card, "")?.unwrap_or(Value::Null))
}

/// The bytes the SDK signs for a card whose [`sdk_view`] is `view`.
pub(crate) fn signed_payload(view: &Value) -> Result<Vec<u8>, Invalid> {
    let mut view = view.clone();
    if let Value::Object(members) = &mut view {
        members.remove("signatures");
        if members.is_empty() {
            view = Value::Null;
        }
    }
    arbiter_log::canonical_json(&view).map_err(|_| Invalid {
        path: String::new(),
        problem: "has no canonical JSON form",
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/tests/fixtures/agent_card/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    fn payload(card: &Value) -> Result<String, Invalid> {
        let Value::Object(card) = card else {
            return invalid("", "not an object");
        };
        let view = sdk_view(card)?;
        Ok(String::from_utf8(signed_payload(&view)?).unwrap())
    }

    /// Every case of `normalisation_cases.json` carries the bytes the SDK signs for the card,
    /// or the SDK's refusal: Arbiter must produce the same bytes, or refuse where the SDK
    /// refuses, or (cases marked `refuses`, which the SDK accepts) refuse on purpose.
    #[test]
    fn normalisation_matches_the_sdk_byte_for_byte() {
        let cases = fixture("normalisation_cases.json");
        let mut checked = 0;
        for case in cases.as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            // The card is re-parsed from its text as the gateway would, strictly.
            let text = serde_json::to_vec(&case["card"]).unwrap();
            let card = arbiter_types::strict::parse_strict(&text, crate::card::MAX_CARD_DEPTH);
            let ours = match card {
                Ok(card) => payload(&card),
                Err(_) => invalid("", "not strict JSON within the depth limit"),
            };
            match (case["arbiter"].as_str().unwrap(), &case["sdk"]) {
                ("same", sdk) if sdk.get("payload").is_some() => {
                    assert_eq!(
                        ours.as_deref().map_err(ToString::to_string),
                        Ok(sdk["payload"].as_str().unwrap()),
                        "case {name}"
                    );
                }
                ("same", sdk) => {
                    assert!(
                        ours.is_err(),
                        "case {name}: the SDK refuses ({sdk}), we accept"
                    );
                }
                ("refuses", sdk) => {
                    assert!(sdk.get("payload").is_some(), "case {name}");
                    assert!(ours.is_err(), "case {name}: must be refused");
                }
                (other, _) => panic!("case {name}: unknown expectation {other}"),
            }
            checked += 1;
        }
        assert!(checked >= 40, "only {checked} cases");
    }

    #[test]
    fn refusals_name_the_member_not_the_value() {
        let card = serde_json::json!({"skills": [{"id": 5}]});
        let err = payload(&card).unwrap_err();
        assert_eq!(err.to_string(), "`skills[0].id` must be a string");
        let card = serde_json::json!({"supported_interfaces": []});
        assert!(
            payload(&card)
                .unwrap_err()
                .to_string()
                .starts_with("`supported_interfaces` is a protobuf field name")
        );
        let long = "x".repeat(500);
        let card = serde_json::json!({"securitySchemes": {long.clone(): "not an object"}});
        let message = payload(&card).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn a_card_of_nothing_signs_null_as_the_sdk_does() {
        assert_eq!(payload(&serde_json::json!({})).unwrap(), "null");
        assert_eq!(
            payload(&serde_json::json!({"signatures": [{"protected": "x"}]})).unwrap(),
            "null"
        );
    }
}
