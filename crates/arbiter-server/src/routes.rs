//! The route table of the forward-auth endpoint: which path templates each service has, so
//! that policies speak in templates (`tickets:GET /tickets/{id}`), not raw paths.
//!
//! Two sources, any number of each:
//!
//! - a simple list (`--routes FILE`): one route per line, `SERVICE METHOD TEMPLATE`, `#`
//!   comments, e.g. `tickets GET /tickets/{id}`; METHOD may be `*` for any method;
//! - an OpenAPI 3 document in JSON (`--openapi SERVICE=FILE`): every operation under `paths`.
//!
//! A template is a path of literal segments and `{name}` parameters, each matching exactly one
//! non-empty segment. When several routes match, the most specific wins: at the first
//! position where they differ, a literal beats a parameter; an exact method beats `*`.

use std::collections::{BTreeMap, HashMap};
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

/// Every service's routes.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    services: HashMap<String, Vec<Route>>,
}

/// Why a route source was refused; names the file and line.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct RouteError {
    pub source_name: String,
    pub line: Option<usize>,
    pub message: String,
}

fn err(source_name: &str, line: Option<usize>, message: impl Into<String>) -> RouteError {
    RouteError {
        source_name: source_name.to_owned(),
        line,
        message: message.into(),
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

    /// Adds one route.
    pub fn add(&mut self, service: &str, method: &str, template: &str) -> Result<(), String> {
        if !valid_service(service) {
            return Err(format!(
                "service name `{service}` must be letters, digits, `.`, `_`, `-`"
            ));
        }
        let method = method.to_ascii_uppercase();
        if method != "*" && !METHODS.contains(&method.as_str()) {
            return Err(format!("`{method}` is not an HTTP method (or `*`)"));
        }
        let segments = parse_template(template)?;
        let routes = self.services.entry(service.to_owned()).or_default();
        if routes
            .iter()
            .any(|r| r.method == method && r.segments == segments)
        {
            return Err(format!(
                "route `{method} {template}` is listed twice for `{service}`"
            ));
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

/// Splits a request target into decoded path segments and query arguments. Refuses what
/// cannot be matched safely: no leading `/`, `.`/`..` segments, encoded `/`, invalid
/// percent-encoding or UTF-8, too many segments.
pub fn split_target(target: &str) -> Result<(Vec<String>, Map<String, Value>), String> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let path = path.split('#').next().unwrap_or_default();
    let Some(rest) = path.strip_prefix('/') else {
        return Err("the original path must start with `/`".to_owned());
    };
    let mut segments = Vec::new();
    if !rest.is_empty() {
        for raw in rest.split('/') {
            if raw.is_empty() {
                return Err("the original path has an empty segment (`//`)".to_owned());
            }
            if raw.contains("%2f") || raw.contains("%2F") {
                return Err("the original path has an encoded `/`".to_owned());
            }
            let seg = percent_decode(raw)
                .ok_or("the original path is not valid percent-encoded UTF-8")?;
            if seg == "." || seg == ".." {
                return Err("the original path has a `.` or `..` segment".to_owned());
            }
            segments.push(seg);
            if segments.len() > MAX_SEGMENTS {
                return Err(format!(
                    "the original path has more than {MAX_SEGMENTS} segments"
                ));
            }
        }
    }
    let mut args = Map::new();
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(&k.replace('+', " "))
                .ok_or("the query is not valid percent-encoded UTF-8")?;
            let v = percent_decode(&v.replace('+', " "))
                .ok_or("the query is not valid percent-encoded UTF-8")?;
            // Repeated keys: the first value counts (documented).
            args.entry(k).or_insert(Value::String(v));
            if args.len() > 256 {
                return Err("the query has more than 256 arguments".to_owned());
            }
        }
    }
    Ok((segments, args))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn segs(p: &str) -> Vec<String> {
        split_target(p).unwrap().0
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
        let (s, q) = split_target("/a%20b/c?x=1&y=hello+world&x=2&flag").unwrap();
        assert_eq!(s, ["a b", "c"]);
        assert_eq!(q["x"], "1");
        assert_eq!(q["y"], "hello world");
        assert_eq!(q["flag"], "");
        for bad in [
            "a/b",
            "/a//b",
            "/a/../b",
            "/a/%2e%2e/b",
            "/a%2Fb",
            "/%zz",
            "/%ff",
        ] {
            assert!(split_target(bad).is_err(), "{bad}");
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
