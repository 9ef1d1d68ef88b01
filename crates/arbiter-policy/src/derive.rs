//! Attributes the vocabulary derives from an entity's id, and the place where a calling
//! agent's own assertions go.
//!
//! The vocabulary's resource ids carry their identifying attributes (`Tool::"fs/read"` is
//! server `fs`, name `read`). When the agent itself asks the decision point (its key or token
//! over AuthZEN), the decision point derives those attributes from the id rather than taking
//! the agent's word for them, and puts whatever the agent asserted about the resource under
//! [`ASSERTED_CONTEXT_KEY`] (see `docs/identity.md`).

use serde_json::{Map, Value};

/// The context key under which the properties a calling agent asserted about the resource
/// are given to policies (`context.asserted.name`), never as attributes of the resource.
pub const ASSERTED_CONTEXT_KEY: &str = "asserted";

/// The attributes the vocabulary derives from the id of an entity of type `kind`:
///
/// | type | id | attributes |
/// |---|---|---|
/// | `Tool`, `Prompt` | `<server>/<name>` | `server`, `name` |
/// | `McpResource` | `<server>/<uri>` | `server`, `uri` |
/// | `Table` | `<database>.<schema>.<table>` | `database`, `schema`, `name` |
/// | `Route` | `<service>:<METHOD> <path>` | `service`, `method`, `path` |
/// | `Command` | `<program>` | `program` |
///
/// The split is at the first separator (a server name has no `/`, a service name no `:`);
/// a `Table` id must have exactly three non-empty dotted parts, since a dot inside a name
/// would make the split ambiguous. An id that does not have the shape derives nothing (a
/// policy reading the attribute then fails to evaluate, which is a deny). Other types derive
/// nothing.
pub fn derived_attributes(kind: &str, id: &str) -> Map<String, Value> {
    let mut attrs = Map::new();
    let mut put = |k: &str, v: &str| {
        attrs.insert(k.to_owned(), Value::String(v.to_owned()));
    };
    match kind {
        "Tool" | "Prompt" => {
            if let Some((server, name)) = id.split_once('/')
                && !server.is_empty()
                && !name.is_empty()
            {
                put("server", server);
                put("name", name);
            }
        }
        "McpResource" => {
            if let Some((server, uri)) = id.split_once('/')
                && !server.is_empty()
                && !uri.is_empty()
            {
                put("server", server);
                put("uri", uri);
            }
        }
        "Table" => {
            let parts: Vec<&str> = id.split('.').collect();
            if let [database, schema, name] = parts.as_slice()
                && parts.iter().all(|p| !p.is_empty())
            {
                put("database", database);
                put("schema", schema);
                put("name", name);
            }
        }
        "Route" => {
            if let Some((service, rest)) = id.split_once(':')
                && let Some((method, path)) = rest.split_once(' ')
                && !service.is_empty()
                && !method.is_empty()
                && !path.is_empty()
            {
                put("service", service);
                put("method", method);
                put("path", path);
            }
        }
        "Command" if !id.is_empty() => put("program", id),
        _ => {}
    }
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn derived(kind: &str, id: &str) -> Value {
        Value::Object(derived_attributes(kind, id))
    }

    #[test]
    fn ids_of_the_vocabulary_derive_their_attributes() {
        assert_eq!(
            derived("Tool", "helpdesk/delete_ticket"),
            json!({"server": "helpdesk", "name": "delete_ticket"})
        );
        assert_eq!(
            derived("Prompt", "docs/sum/up"),
            json!({"server": "docs", "name": "sum/up"})
        );
        assert_eq!(
            derived("McpResource", "fs/file:///srv/a.txt"),
            json!({"server": "fs", "uri": "file:///srv/a.txt"})
        );
        assert_eq!(
            derived("Table", "app.public.tickets"),
            json!({"database": "app", "schema": "public", "name": "tickets"})
        );
        assert_eq!(
            derived("Route", "helpdesk:GET /tickets/{id}"),
            json!({"service": "helpdesk", "method": "GET", "path": "/tickets/{id}"})
        );
        assert_eq!(derived("Command", "kubectl"), json!({"program": "kubectl"}));
    }

    #[test]
    fn ambiguous_or_malformed_ids_derive_nothing() {
        for (kind, id) in [
            ("Tool", "no-slash"),
            ("Tool", "/name"),
            ("Tool", "server/"),
            ("Table", "app.public.my.table"),
            ("Table", "app..t"),
            ("Route", "svc-no-method"),
            ("Command", ""),
            ("Document", "d1"),
        ] {
            assert_eq!(derived(kind, id), json!({}), "{kind} {id}");
        }
    }
}
