//! The route table of the forward-auth endpoint: which path templates each service has, so
//! that policies speak in templates (`tickets:GET /tickets/{id}`), not raw paths, and how each
//! service's proxy describes the original request.
//!
//! Two sources, any number of each:
//!
//! - a simple list (`--routes FILE`): one route per line, `SERVICE METHOD TEMPLATE`, `#`
//!   comments, e.g. `tickets GET /tickets/{id}`; METHOD may be `*` for any method; and one
//!   `@service SERVICE proxy=nginx|traefik|envoy [allow=CLASS,…] [method-override]` line per
//!   service ([`ServiceSettings`]);
//! - an OpenAPI 3 document in JSON (`--openapi SERVICE=FILE`): every operation under `paths`;
//!   its settings come from `serve --forward-auth 'SERVICE proxy=…'` (the same words).
//!
//! Every service with routes must say which proxy asks for it ([`RouteTable::check`]): the
//! headers read are never inferred from which headers a request happens to carry.
//!
//! A template is a path of literal segments and `{name}` parameters, each matching exactly one
//! non-empty segment. When several routes match, the most specific wins: at the first
//! position where they differ, a literal beats a parameter; an exact method beats `*`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use serde_json::{Map, Value};

/// Longest accepted route file.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Most segments in a template or a request path.
const MAX_SEGMENTS: usize = 64;

/// HTTP methods a route may name.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// One route: a method (or `*`) and a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Upper-case method, or `*`.
    pub method: String,
    /// The template as written, e.g. `/tickets/{id}`.
    pub template: String,
    segments: Vec<Segment>,
}

/// A matched route and the values of its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matched<'a> {
    pub route: &'a Route,
    pub params: BTreeMap<String, String>,
}

/// Which proxy asks about a service, and so which headers describe the original request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// nginx `auth_request`: `X-Original-Method`, `X-Original-URI`, `X-Original-Host`, set by
    /// the proxy configuration.
    Nginx,
    /// Traefik `forwardAuth`: `X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-Host`,
    /// which Traefik sets itself.
    Traefik,
    /// Envoy `ext_authz` (HTTP service): the request's own method, the path after
    /// `/v1/forward-auth/<service>` and its own `Host`.
    Envoy,
}

impl Proxy {
    pub fn name(self) -> &'static str {
        match self {
            Proxy::Nginx => "nginx",
            Proxy::Traefik => "traefik",
            Proxy::Envoy => "envoy",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "nginx" => Some(Proxy::Nginx),
            "traefik" => Some(Proxy::Traefik),
            "envoy" => Some(Proxy::Envoy),
            _ => None,
        }
    }
}

/// A class of request targets that upstreams interpret differently, refused unless the
/// service opts in (`allow=CLASS`) because its upstream is known to treat it literally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ambiguity {
    /// `;` in the path (path parameters: some servers cut the segment there), raw or `%3b`,
    /// and a raw `;` in the query (some servers split arguments there).
    Semicolon,
    /// A raw `\` in the path (some servers read it as `/`).
    Backslash,
    /// `%2f` in the path (some servers decode it before routing).
    EncodedSlash,
    /// `%5c` in the path.
    EncodedBackslash,
    /// `%2e` in the path (`%2e%2e` is `..` to some servers).
    EncodedDot,
    /// `%25` followed by two hex digits (some servers decode twice).
    DoubleEncoding,
    /// A control character, raw or percent-encoded (`%00`–`%1f`, `%7f`).
    Control,
    /// A path segment or query argument that is not UTF-8 once decoded.
    InvalidUtf8,
}

impl Ambiguity {
    pub const ALL: [Ambiguity; 8] = [
        Ambiguity::Semicolon,
        Ambiguity::Backslash,
        Ambiguity::EncodedSlash,
        Ambiguity::EncodedBackslash,
        Ambiguity::EncodedDot,
        Ambiguity::DoubleEncoding,
        Ambiguity::Control,
        Ambiguity::InvalidUtf8,
    ];

    /// The name used in `allow=…`.
    pub fn name(self) -> &'static str {
        match self {
            Ambiguity::Semicolon => "semicolon",
            Ambiguity::Backslash => "backslash",
            Ambiguity::EncodedSlash => "encoded-slash",
            Ambiguity::EncodedBackslash => "encoded-backslash",
            Ambiguity::EncodedDot => "encoded-dot",
            Ambiguity::DoubleEncoding => "double-encoding",
            Ambiguity::Control => "control",
            Ambiguity::InvalidUtf8 => "invalid-utf8",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Ambiguity::Semicolon => "a `;` (path parameter or argument separator)",
            Ambiguity::Backslash => "a backslash",
            Ambiguity::EncodedSlash => "an encoded `/` (`%2f`)",
            Ambiguity::EncodedBackslash => "an encoded backslash (`%5c`)",
            Ambiguity::EncodedDot => "an encoded `.` (`%2e`)",
            Ambiguity::DoubleEncoding => "double percent-encoding (`%25` followed by hex)",
            Ambiguity::Control => "a control character",
            Ambiguity::InvalidUtf8 => "bytes that are not UTF-8 once decoded",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// How the forward-auth endpoint reads the original request of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    pub proxy: Proxy,
    /// Ambiguous target classes this service's upstream treats literally.
    pub allow: BTreeSet<Ambiguity>,
    /// Method-override headers (`X-HTTP-Method-Override`, `X-HTTP-Method`,
    /// `X-Method-Override`) are honoured by the upstream: the overriding method is decided.
    /// Without it, a request carrying one is denied.
    pub method_override: bool,
}

impl ServiceSettings {
    pub fn new(proxy: Proxy) -> Self {
        Self {
            proxy,
            allow: BTreeSet::new(),
            method_override: false,
        }
    }

    /// Parses `SERVICE proxy=nginx|traefik|envoy [allow=CLASS,…] [method-override]` (the
    /// words of an `@service` line and of `serve --forward-auth`).
    pub fn parse(words: &str) -> Result<(String, ServiceSettings), RouteSpecError> {
        Self::parse_words(words).map_err(RouteSpecError::Settings)
    }

    fn parse_words(words: &str) -> Result<(String, ServiceSettings), String> {
        let mut words = words.split_whitespace();
        let usage =
            "expected `SERVICE proxy=nginx|traefik|envoy [allow=CLASS,…] [method-override]`";
        let Some(service) = words.next() else {
            return Err(usage.to_owned());
        };
        if !valid_service(service) || service.contains('=') {
            return Err(format!(
                "service name `{service}` must be letters, digits, `.`, `_`, `-` ({usage})"
            ));
        }
        let mut proxy = None;
        let mut allow = BTreeSet::new();
        let mut method_override = false;
        for word in words {
            match word.split_once('=') {
                Some(("proxy", value)) => {
                    if proxy.is_some() {
                        return Err(format!("`proxy=` is given twice for `{service}`"));
                    }
                    proxy = Some(Proxy::parse(value).ok_or_else(|| {
                        format!("`proxy={value}`: the proxy is one of `nginx`, `traefik`, `envoy`")
                    })?);
                }
                Some(("allow", classes)) => {
                    for class in classes.split(',') {
                        let a = Ambiguity::parse(class).ok_or_else(|| {
                            format!(
                                "`allow={classes}`: `{class}` is not one of {}",
                                Ambiguity::ALL
                                    .iter()
                                    .map(|a| format!("`{}`", a.name()))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        })?;
                        allow.insert(a);
                    }
                }
                None if word == "method-override" => method_override = true,
                _ => {
                    return Err(format!(
                        "unknown setting `{word}` for `{service}` ({usage})"
                    ));
                }
            }
        }
        let Some(proxy) = proxy else {
            return Err(format!(
                "`{service}`: say which proxy asks for it, `proxy=nginx`, `proxy=traefik` or `proxy=envoy`"
            ));
        };
        Ok((
            service.to_owned(),
            ServiceSettings {
                proxy,
                allow,
                method_override,
            },
        ))
    }
}

/// Every service's routes and settings.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    services: HashMap<String, Vec<Route>>,
    settings: HashMap<String, ServiceSettings>,
}

/// Why a route, a service's settings or the table as a whole was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteSpecError {
    /// The words of an `@service` line or of `serve --forward-auth` are malformed.
    #[error("{0}")]
    Settings(String),
    /// A service name with characters outside letters, digits, `.`, `_`, `-`.
    #[error("service name `{0}` must be letters, digits, `.`, `_`, `-`")]
    ServiceName(String),
    /// A service's settings are given twice.
    #[error("the settings of service `{0}` are given twice")]
    SettingsTwice(String),
    /// A service has routes but no settings saying which proxy asks for it.
    #[error(
        "forward-auth service `{0}` does not say which proxy asks for it: add \
         `@service {0} proxy=nginx` (or `traefik`, `envoy`) to its routes file, \
         or `serve --forward-auth '{0} proxy=nginx'`"
    )]
    NoProxy(String),
    /// A service has settings but no routes.
    #[error("forward-auth settings are given for service `{0}`, which has no routes")]
    NoRoutes(String),
    /// Not an HTTP method.
    #[error("`{0}` is not an HTTP method (or `*`)")]
    Method(String),
    /// A path template that is malformed.
    #[error("{0}")]
    Template(String),
    /// The same method and template twice for one service.
    #[error("route `{method} {template}` is listed twice for `{service}`")]
    RouteTwice {
        /// The method.
        method: String,
        /// The path template.
        template: String,
        /// The service.
        service: String,
    },
}

/// Why a route source was refused; names the file and line.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct RouteError {
    pub source_name: String,
    pub line: Option<usize>,
    pub message: String,
}

fn err(source_name: &str, line: Option<usize>, message: impl ToString) -> RouteError {
    RouteError {
        source_name: source_name.to_owned(),
        line,
        message: message.to_string(),
    }
}

/// A service name: letters, digits, `.`, `_`, `-` (it becomes part of entity ids and the
/// enforcement point `http:<service>`).
pub fn valid_service(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn parse_template(template: &str) -> Result<Vec<Segment>, String> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err(format!("template `{template}` must start with `/`"));
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let mut names = Vec::new();
    for seg in rest.split('/') {
        if seg.is_empty() {
            return Err(format!("template `{template}` has an empty segment"));
        }
        if let Some(inner) = seg.strip_prefix('{') {
            let Some(name) = inner.strip_suffix('}') else {
                return Err(format!(
                    "template `{template}`: `{seg}` is not a `{{name}}` parameter"
                ));
            };
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "template `{template}`: bad parameter name `{name}`"
                ));
            }
            if names.contains(&name) {
                return Err(format!(
                    "template `{template}`: parameter `{name}` appears twice"
                ));
            }
            names.push(name);
            out.push(Segment::Param(name.to_owned()));
        } else if seg.contains('{') || seg.contains('}') {
            return Err(format!(
                "template `{template}`: `{seg}` mixes text and a parameter; a parameter must be a whole segment"
            ));
        } else {
            out.push(Segment::Literal(seg.to_owned()));
        }
    }
    if out.len() > MAX_SEGMENTS {
        return Err(format!(
            "template `{template}` has more than {MAX_SEGMENTS} segments"
        ));
    }
    Ok(out)
}

impl RouteTable {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The services with routes, sorted.
    pub fn services(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self.services.keys().map(String::as_str).collect();
        s.sort_unstable();
        s
    }

    pub fn has_service(&self, service: &str) -> bool {
        self.services.contains_key(service)
    }

    /// How the original request of `service` is read; `None` when it was never configured
    /// (refused by [`RouteTable::check`]).
    pub fn settings(&self, service: &str) -> Option<&ServiceSettings> {
        self.settings.get(service)
    }

    /// Sets how the original request of `service` is read (once per service).
    pub fn configure(
        &mut self,
        service: &str,
        settings: ServiceSettings,
    ) -> Result<(), RouteSpecError> {
        if !valid_service(service) {
            return Err(RouteSpecError::ServiceName(service.to_owned()));
        }
        if self.settings.contains_key(service) {
            return Err(RouteSpecError::SettingsTwice(service.to_owned()));
        }
        self.settings.insert(service.to_owned(), settings);
        Ok(())
    }

    /// Refuses a table where a service has routes but no proxy, or settings but no routes.
    pub fn check(&self) -> Result<(), RouteSpecError> {
        for service in self.services() {
            if !self.settings.contains_key(service) {
                return Err(RouteSpecError::NoProxy(service.to_owned()));
            }
        }
        let mut configured: Vec<&String> = self.settings.keys().collect();
        configured.sort_unstable();
        for service in configured {
            if !self.services.contains_key(service) {
                return Err(RouteSpecError::NoRoutes(service.clone()));
            }
        }
        Ok(())
    }

    /// Adds one route.
    pub fn add(
        &mut self,
        service: &str,
        method: &str,
        template: &str,
    ) -> Result<(), RouteSpecError> {
        if !valid_service(service) {
            return Err(RouteSpecError::ServiceName(service.to_owned()));
        }
        let method = method.to_ascii_uppercase();
        if method != "*" && !METHODS.contains(&method.as_str()) {
            return Err(RouteSpecError::Method(method));
        }
        let segments = parse_template(template).map_err(RouteSpecError::Template)?;
        let routes = self.services.entry(service.to_owned()).or_default();
        if routes
            .iter()
            .any(|r| r.method == method && r.segments == segments)
        {
            return Err(RouteSpecError::RouteTwice {
                method,
                template: template.to_owned(),
                service: service.to_owned(),
            });
        }
        routes.push(Route {
            method,
            template: template.to_owned(),
            segments,
        });
        Ok(())
    }

    /// Reads a simple route list.
    pub fn load_list(&mut self, path: &Path) -> Result<(), RouteError> {
        let name = path.display().to_string();
        let text = read(path)?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            if let Some(words) = line.strip_prefix("@service") {
                if !words.starts_with(char::is_whitespace) {
                    return Err(err(
                        &name,
                        Some(i + 1),
                        "expected `@service SERVICE proxy=…`",
                    ));
                }
                let (service, settings) =
                    ServiceSettings::parse(words).map_err(|m| err(&name, Some(i + 1), m))?;
                self.configure(&service, settings)
                    .map_err(|m| err(&name, Some(i + 1), m))?;
                continue;
            }
            if line.starts_with('@') {
                return Err(err(
                    &name,
                    Some(i + 1),
                    "the only directive is `@service SERVICE proxy=…`",
                ));
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [service, method, template] = fields.as_slice() else {
                return Err(err(
                    &name,
                    Some(i + 1),
                    "expected `SERVICE METHOD /path/{param}`",
                ));
            };
            self.add(service, method, template)
                .map_err(|m| err(&name, Some(i + 1), m))?;
        }
        Ok(())
    }

    /// Reads the operations of an OpenAPI 3 document (JSON) as the routes of `service`.
    pub fn load_openapi(&mut self, service: &str, path: &Path) -> Result<(), RouteError> {
        let name = path.display().to_string();
        let text = read(path)?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| {
            err(
                &name,
                Some(e.line()),
                format!(
                    "not an OpenAPI JSON document: {e} (YAML documents: convert to JSON first)"
                ),
            )
        })?;
        let paths = doc
            .get("paths")
            .and_then(Value::as_object)
            .ok_or_else(|| err(&name, None, "an OpenAPI document needs a `paths` object"))?;
        let mut added = 0;
        for (template, item) in paths {
            let Some(item) = item.as_object() else {
                return Err(err(
                    &name,
                    None,
                    format!("`paths.{template}` is not an object"),
                ));
            };
            for method in item.keys() {
                let upper = method.to_ascii_uppercase();
                if !METHODS.contains(&upper.as_str()) {
                    continue; // `parameters`, `summary`, `servers`, extensions
                }
                self.add(service, &upper, template)
                    .map_err(|m| err(&name, None, m))?;
                added += 1;
            }
        }
        if added == 0 {
            return Err(err(&name, None, "the document has no operations"));
        }
        Ok(())
    }

    /// The most specific route of `service` matching `method` and the (decoded) `segments`.
    pub fn find<'a>(
        &'a self,
        service: &str,
        method: &str,
        segments: &[String],
    ) -> Option<Matched<'a>> {
        let routes = self.services.get(service)?;
        let mut best: Option<(&Route, Vec<bool>)> = None;
        for route in routes {
            if route.method != "*" && route.method != method {
                continue;
            }
            if route.segments.len() != segments.len() {
                continue;
            }
            let mut shape = Vec::with_capacity(segments.len() + 1);
            let mut ok = true;
            for (seg, value) in route.segments.iter().zip(segments) {
                match seg {
                    Segment::Literal(l) if l == value => shape.push(true),
                    Segment::Literal(_) => {
                        ok = false;
                        break;
                    }
                    Segment::Param(_) => shape.push(false),
                }
            }
            if !ok {
                continue;
            }
            shape.push(route.method != "*");
            // Lexicographic: literal (true) beats parameter at the first difference.
            if best.as_ref().is_none_or(|(_, b)| shape > *b) {
                best = Some((route, shape));
            }
        }
        let (route, _) = best?;
        let params = route
            .segments
            .iter()
            .zip(segments)
            .filter_map(|(s, v)| match s {
                Segment::Param(name) => Some((name.clone(), v.clone())),
                Segment::Literal(_) => None,
            })
            .collect();
        Some(Matched { route, params })
    }
}

fn read(path: &Path) -> Result<String, RouteError> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| err(&name, None, e.to_string()))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(err(&name, None, "the file is larger than 8 MiB"));
    }
    std::fs::read_to_string(path).map_err(|e| err(&name, None, e.to_string()))
}

/// Why an original request target was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetProblem {
    /// The ambiguity class, when a service could opt in to it.
    pub ambiguity: Option<Ambiguity>,
    pub message: String,
}

impl std::fmt::Display for TargetProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

fn refused(message: impl Into<String>) -> TargetProblem {
    TargetProblem {
        ambiguity: None,
        message: message.into(),
    }
}

fn ambiguous(
    allow: &BTreeSet<Ambiguity>,
    class: Ambiguity,
    part: &str,
) -> Result<(), TargetProblem> {
    if allow.contains(&class) {
        return Ok(());
    }
    Err(TargetProblem {
        ambiguity: Some(class),
        message: format!(
            "the {part} has {}, which upstreams interpret differently (`{}`; a service whose \
             upstream treats it literally may opt in with `allow={}`)",
            class.describe(),
            class.name(),
            class.name()
        ),
    })
}

/// An original request target, checked and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The path as the upstream receives it, in ASCII: bytes outside ASCII (and spaces) are
    /// percent-encoded, which is what they mean to an upstream that decodes the path.
    pub path: String,
    /// The decoded path segments.
    pub segments: Vec<String>,
    /// The decoded query arguments (the first value of a repeated key).
    pub query: Map<String, Value>,
}

/// The raw bytes of a target as ASCII: bytes ≥ 0x80 and spaces percent-encoded (upper-case
/// hex); a raw control character is [`Ambiguity::Control`] (percent-encoded when allowed).
pub fn ascii_target(raw: &[u8], allow: &BTreeSet<Ambiguity>) -> Result<String, TargetProblem> {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if b < 0x20 || b == 0x7f {
            ambiguous(allow, Ambiguity::Control, "target")?;
        }
        if b <= 0x20 || b >= 0x7f {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(char::from(b));
        }
    }
    Ok(out)
}

/// Checks the percent-escapes of one part (`path` or `query`) of an ASCII target for
/// ambiguous classes and invalid encoding.
fn check_escapes(s: &str, part: &str, allow: &BTreeSet<Ambiguity>) -> Result<(), TargetProblem> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            i += 1;
            continue;
        }
        let value = hex_byte(bytes.get(i + 1..i + 3))
            .ok_or_else(|| refused(format!("the {part} has invalid percent-encoding")))?;
        let path = part == "path";
        match value {
            b'/' if path => ambiguous(allow, Ambiguity::EncodedSlash, part)?,
            b'\\' if path => ambiguous(allow, Ambiguity::EncodedBackslash, part)?,
            b'.' if path => ambiguous(allow, Ambiguity::EncodedDot, part)?,
            b';' if path => ambiguous(allow, Ambiguity::Semicolon, part)?,
            b'%' if hex_byte(bytes.get(i + 3..i + 5)).is_some() => {
                ambiguous(allow, Ambiguity::DoubleEncoding, part)?;
            }
            v if v < 0x20 || v == 0x7f => ambiguous(allow, Ambiguity::Control, part)?,
            _ => {}
        }
        i += 3;
    }
    Ok(())
}

fn hex_byte(hex: Option<&[u8]>) -> Option<u8> {
    let hex = hex?;
    if hex.len() != 2 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()
}

/// Splits an original request target (raw bytes, as the proxy sent them) into the ASCII path,
/// decoded path segments and query arguments. Refuses what cannot be matched safely (no
/// leading `/`, `.`/`..` or empty segments, a fragment, invalid percent-encoding, too many
/// segments) and, unless `allow` lists their class, targets that upstreams interpret
/// differently ([`Ambiguity`]).
pub fn split_target(raw: &[u8], allow: &BTreeSet<Ambiguity>) -> Result<Target, TargetProblem> {
    let target = ascii_target(raw, allow)?;
    if target.contains('#') {
        return Err(refused(
            "the target has a `#`, which a request target never holds",
        ));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target.as_str(), None),
    };
    let Some(rest) = path.strip_prefix('/') else {
        return Err(refused("the original path must start with `/`"));
    };
    if path.contains('\\') {
        ambiguous(allow, Ambiguity::Backslash, "path")?;
    }
    if path.contains(';') {
        ambiguous(allow, Ambiguity::Semicolon, "path")?;
    }
    check_escapes(path, "path", allow)?;
    let mut segments = Vec::new();
    if !rest.is_empty() {
        for raw in rest.split('/') {
            if raw.is_empty() {
                return Err(refused("the original path has an empty segment (`//`)"));
            }
            if raw == "." || raw == ".." {
                return Err(refused("the original path has a `.` or `..` segment"));
            }
            segments.push(decode(raw, "path", allow)?);
            if segments.len() > MAX_SEGMENTS {
                return Err(refused(format!(
                    "the original path has more than {MAX_SEGMENTS} segments"
                )));
            }
        }
    }
    let mut args = Map::new();
    if let Some(q) = query {
        if q.contains(';') {
            ambiguous(allow, Ambiguity::Semicolon, "query")?;
        }
        check_escapes(q, "query", allow)?;
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = decode(&k.replace('+', " "), "query", allow)?;
            let v = decode(&v.replace('+', " "), "query", allow)?;
            // Repeated keys: the first value counts (documented).
            args.entry(k).or_insert(Value::String(v));
            if args.len() > 256 {
                return Err(refused("the query has more than 256 arguments"));
            }
        }
    }
    Ok(Target {
        path: path.to_owned(),
        segments,
        query: args,
    })
}

/// Percent-decodes one (already checked) segment or argument; bytes that are not UTF-8 are
/// [`Ambiguity::InvalidUtf8`] (replaced by U+FFFD when allowed).
fn decode(s: &str, part: &str, allow: &BTreeSet<Ambiguity>) -> Result<String, TargetProblem> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let b = hex_byte(bytes.get(i + 1..i + 3))
                .ok_or_else(|| refused(format!("the {part} has invalid percent-encoding")))?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Ok(s),
        Err(e) => {
            ambiguous(allow, Ambiguity::InvalidUtf8, part)?;
            Ok(String::from_utf8_lossy(e.as_bytes()).into_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        split_target(p.as_bytes(), &BTreeSet::new())
            .unwrap()
            .segments
    }

    fn strict(p: &[u8]) -> Result<Target, TargetProblem> {
        split_target(p, &BTreeSet::new())
    }

    #[test]
    fn most_specific_route_wins() {
        let mut t = RouteTable::default();
        t.add("tickets", "GET", "/tickets/{id}").unwrap();
        t.add("tickets", "GET", "/tickets/mine").unwrap();
        t.add("tickets", "*", "/tickets/{id}/replies").unwrap();
        t.add("tickets", "POST", "/tickets/{id}/replies").unwrap();
        t.add("tickets", "GET", "/").unwrap();
        let m = t.find("tickets", "GET", &segs("/tickets/42")).unwrap();
        assert_eq!(m.route.template, "/tickets/{id}");
        assert_eq!(m.params["id"], "42");
        assert_eq!(
            t.find("tickets", "GET", &segs("/tickets/mine"))
                .unwrap()
                .route
                .template,
            "/tickets/mine"
        );
        assert_eq!(
            t.find("tickets", "POST", &segs("/tickets/7/replies"))
                .unwrap()
                .route
                .method,
            "POST"
        );
        assert_eq!(
            t.find("tickets", "PUT", &segs("/tickets/7/replies"))
                .unwrap()
                .route
                .method,
            "*"
        );
        assert_eq!(
            t.find("tickets", "GET", &segs("/")).unwrap().route.template,
            "/"
        );
        assert!(t.find("tickets", "DELETE", &segs("/tickets/7")).is_none());
        assert!(t.find("tickets", "GET", &segs("/tickets/7/x")).is_none());
        assert!(t.find("other", "GET", &segs("/tickets/7")).is_none());
    }

    #[test]
    fn targets_are_decoded_strictly() {
        let t = strict(b"/a%20b/c?x=1&y=hello+world&x=2&flag").unwrap();
        assert_eq!(t.segments, ["a b", "c"]);
        assert_eq!(t.path, "/a%20b/c");
        assert_eq!(t.query["x"], "1");
        assert_eq!(t.query["y"], "hello world");
        assert_eq!(t.query["flag"], "");
        for bad in [
            "a/b",
            "/a//b",
            "/a/../b",
            "/a/./b",
            "/a/%2e%2e/b",
            "/a%2Fb",
            "/%zz",
            "/%f",
            "/%ff",
            "/a#/../admin",
            "/a?x=%zz",
        ] {
            assert!(strict(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn bytes_outside_ascii_are_percent_encoded() {
        let t = strict("/caf\u{e9}/x?q=\u{e9}".as_bytes()).unwrap();
        assert_eq!(t.path, "/caf%C3%A9/x");
        assert_eq!(t.segments, ["caf\u{e9}", "x"]);
        assert_eq!(t.query["q"], "\u{e9}");
        // The reproduction's query: a lone é is fine, the method is what counts.
        let t = strict(b"/tickets/42?\xc3\xa9").unwrap();
        assert_eq!(t.segments, ["tickets", "42"]);
        // Bytes that are not UTF-8 once decoded are ambiguous.
        let e = strict(b"/tickets/\xff").unwrap_err();
        assert_eq!(e.ambiguity, Some(Ambiguity::InvalidUtf8));
    }

    /// Regression: ambiguous targets used to be decoded and matched (`;`, `\`, `%5c`,
    /// `%252f`, control characters), so a route and the upstream could disagree.
    #[test]
    fn ambiguous_targets_are_refused_unless_allowed() {
        use Ambiguity::*;
        let cases: [(&[u8], Ambiguity); 19] = [
            (b"/tickets/1;jsessionid=x", Semicolon),
            (b"/tickets;/1", Semicolon),
            (b"/tickets/1%3b", Semicolon),
            (b"/tickets/1%3B", Semicolon),
            (b"/tickets/1?a=1;export=1", Semicolon),
            (b"/tickets\\..\\admin", Backslash),
            (b"/tickets/1%2fx", EncodedSlash),
            (b"/tickets/1%2Fx", EncodedSlash),
            (b"/tickets/1%5cx", EncodedBackslash),
            (b"/tickets/1%5Cx", EncodedBackslash),
            (b"/tickets/%2e", EncodedDot),
            (b"/tickets/%2E%2E", EncodedDot),
            (b"/tickets/%252f", DoubleEncoding),
            (b"/tickets/1?x=%2541", DoubleEncoding),
            (b"/tickets/1%00", Control),
            (b"/tickets/1%0a", Control),
            (b"/tickets/1\t", Control),
            (b"/tickets/1?x=%7f", Control),
            (b"/tickets/%c3%28", InvalidUtf8),
        ];
        for (target, class) in cases {
            let e = strict(target).unwrap_err();
            assert_eq!(
                e.ambiguity,
                Some(class),
                "{}",
                String::from_utf8_lossy(target)
            );
            assert!(e.message.contains(class.name()), "{}", e.message);
            let allowed = split_target(target, &BTreeSet::from([class]));
            assert!(allowed.is_ok(), "{class:?}: {allowed:?}");
        }
        // Opted in, the classes are literal data of one segment.
        let all: BTreeSet<Ambiguity> = Ambiguity::ALL.into_iter().collect();
        assert_eq!(
            split_target(b"/tickets/a%2fb;c", &all).unwrap().segments,
            ["tickets", "a/b;c"]
        );
        assert_eq!(
            split_target(b"/t/%2541", &all).unwrap().segments,
            ["t", "%41"]
        );
        // `%25` not followed by hex is a literal `%`.
        assert_eq!(strict(b"/t/100%25").unwrap().segments, ["t", "100%"]);
        assert_eq!(strict(b"/t?q=a%2Fb").unwrap().query["q"], "a/b");
    }

    #[test]
    fn service_settings_are_parsed_and_required() {
        let (s, set) =
            ServiceSettings::parse("tickets proxy=envoy allow=semicolon,control method-override")
                .unwrap();
        assert_eq!(s, "tickets");
        assert_eq!(set.proxy, Proxy::Envoy);
        assert_eq!(
            set.allow,
            BTreeSet::from([Ambiguity::Semicolon, Ambiguity::Control])
        );
        assert!(set.method_override);
        for bad in [
            "",
            "tickets",
            "tickets proxy=haproxy",
            "tickets proxy=nginx proxy=envoy",
            "tickets proxy=nginx allow=dots",
            "tickets proxy=nginx override",
            "proxy=nginx",
            "bad/name proxy=nginx",
        ] {
            assert!(ServiceSettings::parse(bad).is_err(), "{bad}");
        }
        let mut t = RouteTable::default();
        t.add("tickets", "GET", "/t").unwrap();
        let e = t.check().unwrap_err();
        assert_eq!(e, RouteSpecError::NoProxy("tickets".into()));
        assert!(e.to_string().contains("@service tickets proxy=nginx"));
        t.configure("tickets", ServiceSettings::new(Proxy::Nginx))
            .unwrap();
        t.check().unwrap();
        assert_eq!(
            t.configure("tickets", ServiceSettings::new(Proxy::Nginx)),
            Err(RouteSpecError::SettingsTwice("tickets".into()))
        );
        t.configure("other", ServiceSettings::new(Proxy::Nginx))
            .unwrap();
        assert_eq!(t.check(), Err(RouteSpecError::NoRoutes("other".into())));
    }

    #[test]
    fn route_files_carry_service_settings() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("routes.txt");
        std::fs::write(
            &file,
            "@service tickets proxy=traefik allow=backslash # c\ntickets GET /t/{id}\n",
        )
        .unwrap();
        let mut t = RouteTable::default();
        t.load_list(&file).unwrap();
        t.check().unwrap();
        assert_eq!(t.settings("tickets").unwrap().proxy, Proxy::Traefik);
        for bad in [
            "@service tickets\ntickets GET /t\n",
            "@servicetickets proxy=nginx\n",
            "@proxy tickets nginx\n",
        ] {
            std::fs::write(&file, bad).unwrap();
            let e = RouteTable::default().load_list(&file).unwrap_err();
            assert_eq!(e.line, Some(1), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_templates_are_refused() {
        let mut t = RouteTable::default();
        for (svc, m, tpl) in [
            ("s", "GET", "x"),
            ("s", "GET", "/a//b"),
            ("s", "GET", "/a/{}"),
            ("s", "GET", "/a/x{id}"),
            ("s", "GET", "/{a}/{a}"),
            ("s", "FETCH", "/a"),
            ("bad service", "GET", "/a"),
        ] {
            assert!(t.add(svc, m, tpl).is_err(), "{svc} {m} {tpl}");
        }
        t.add("s", "get", "/a").unwrap();
        assert!(t.add("s", "GET", "/a").is_err(), "duplicate");
    }
}
