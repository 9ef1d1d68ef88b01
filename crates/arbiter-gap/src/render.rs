//! The gap map as a terminal table and as one self-contained HTML page (no scripts, no
//! external resources, every text escaped). The JSON form is the serde serialization of
//! [`GapMap`].

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::model::{Cell, GapMap, Layer, State};

/// The cells by (agent, layer), looked up once per cell rendered (a map may hold many rows).
fn index(map: &GapMap) -> HashMap<(&str, Layer), &Cell> {
    map.cells
        .iter()
        .map(|c| ((c.agent.as_str(), c.layer), c))
        .collect()
}

/// The state word of a cell in the table: readable without colour (gaps in capitals).
fn word(cell: &Cell) -> String {
    match cell.state {
        State::Enforced => "enforced".to_owned(),
        State::Coarse => "COARSE".to_owned(),
        State::Ungoverned => "UNGOVERNED".to_owned(),
        State::Unknown if !cell.declared.is_empty() => "declared".to_owned(),
        State::Unknown => "-".to_owned(),
    }
}

use arbiter_types::text::terminal_cell as clean;

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}

/// The matrix, then the findings with their next steps, the summary and the warnings.
pub fn table(map: &GapMap) -> String {
    let cells = index(map);
    let mut out = String::new();
    let agent_width = map
        .rows
        .iter()
        .map(|r| clean(&r.agent, 40).chars().count() + usize::from(!r.registered) * 2)
        .max()
        .unwrap_or(5)
        .max(5);
    let col = 16;
    let _ = write!(out, "{}", pad("AGENT", agent_width + 2));
    for layer in &map.layers {
        let _ = write!(out, "{}", pad(&layer.as_str().to_ascii_uppercase(), col));
    }
    out.push('\n');
    for row in &map.rows {
        let name = if row.registered {
            clean(&row.agent, 40)
        } else {
            format!("{} ?", clean(&row.agent, 40))
        };
        let _ = write!(out, "{}", pad(&name, agent_width + 2));
        for layer in &map.layers {
            let w = cells
                .get(&(row.agent.as_str(), *layer))
                .map_or("-".to_owned(), |c| word(c));
            let _ = write!(out, "{}", pad(&w, col));
        }
        out.push('\n');
    }
    if map.rows.is_empty() {
        out.push_str("(no agents: nothing registered, decided or found)\n");
    }
    out.push_str(
        "\n? = not a registered agent; declared = declared in `systems`, nothing observed\n",
    );
    let s = &map.summary;
    let _ = writeln!(
        out,
        "\n{} enforced, {} coarse, {} ungoverned, {} unknown (decisions since {})",
        s.enforced, s.coarse, s.ungoverned, s.unknown, map.since
    );
    let notable: Vec<&Cell> = map
        .cells
        .iter()
        .filter(|c| !c.findings.is_empty() || c.next_step.is_some())
        .collect();
    if !notable.is_empty() {
        out.push_str("\nFindings:\n");
    }
    for c in notable {
        let _ = writeln!(
            out,
            "\n{} / {}: {}",
            clean(&c.agent, 80),
            c.layer.as_str(),
            word(c)
        );
        if let Some(e) = &c.enforced {
            let _ = writeln!(
                out,
                "  enforced at {}: {} decision(s), {} denied, last {}",
                clean(&e.enforcement_points.join(", "), 200),
                e.decisions,
                e.denied,
                e.last_seen
            );
        }
        for f in &c.findings {
            let _ = writeln!(
                out,
                "  {} ({} {}): {}\n    next: {}",
                f.state.as_str(),
                f.source.as_str(),
                clean(&f.r#where, 200),
                clean(&f.detail, 2000),
                clean(&f.next_step, 2000)
            );
        }
        if c.findings.is_empty()
            && let Some(step) = &c.next_step
        {
            let _ = writeln!(out, "  next: {}", clean(step, 2000));
        }
    }
    if !map.warnings.is_empty() {
        out.push_str("\nWarnings:\n");
        for w in &map.warnings {
            let _ = writeln!(out, "  {}", clean(w, 2000));
        }
    }
    out
}

/// `s` escaped for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#111}\
table{border-collapse:collapse}th,td{border:1px solid #999;padding:.35rem .6rem;text-align:left;vertical-align:top}\
td.enforced{background:#d8f0d8}td.coarse{background:#ffe2a8}td.ungoverned{background:#f7b6b6}td.unknown{background:#f2f2f2}\
.s{font-weight:600}code{white-space:pre-wrap;word-break:break-all}li{margin:.3rem 0}";

/// One self-contained page: the matrix as a heatmap (state words as well as colours), each
/// cell linking to its evidence below.
pub fn html(map: &GapMap) -> String {
    let cells = index(map);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Arbiter gap map</title><style>{STYLE}</style></head><body>\
         <h1>Gap map</h1><p>Generated {} from decisions since {}. {} enforced, {} coarse, {} \
         ungoverned, {} unknown.</p>",
        escape(&map.generated_at),
        escape(&map.since),
        map.summary.enforced,
        map.summary.coarse,
        map.summary.ungoverned,
        map.summary.unknown
    );
    out.push_str("<table><thead><tr><th scope=\"col\">Agent</th>");
    for layer in &map.layers {
        let _ = write!(out, "<th scope=\"col\">{}</th>", layer.as_str());
    }
    out.push_str("</tr></thead><tbody>");
    for (i, row) in map.rows.iter().enumerate() {
        let mark = if row.registered {
            ""
        } else {
            " (not registered)"
        };
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}{mark}</th>",
            escape(&row.agent)
        );
        for layer in &map.layers {
            match cells.get(&(row.agent.as_str(), *layer)).copied() {
                Some(c) => {
                    let detail = c
                        .enforced
                        .as_ref()
                        .map(|e| format!(" · {} decisions, {} denied", e.decisions, e.denied))
                        .unwrap_or_default();
                    let _ = write!(
                        out,
                        "<td class=\"{}\"><a href=\"#c{i}-{}\"><span class=\"s\">{}</span></a>{}</td>",
                        c.state.as_str(),
                        layer.as_str(),
                        escape(&word(c)),
                        escape(&detail)
                    );
                }
                None => out.push_str("<td class=\"unknown\">-</td>"),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out.push_str("<h2>Evidence</h2>");
    for (i, row) in map.rows.iter().enumerate() {
        for layer in Layer::ALL {
            let Some(c) = cells.get(&(row.agent.as_str(), layer)).copied() else {
                continue;
            };
            let _ = write!(
                out,
                "<section id=\"c{i}-{}\"><h3>{} / {}: {}</h3><ul>",
                layer.as_str(),
                escape(&c.agent),
                layer.as_str(),
                c.state.as_str()
            );
            if !c.declared.is_empty() {
                let _ = write!(out, "<li>declared: {}</li>", escape(&c.declared.join(", ")));
            }
            if !c.wrapped.is_empty() {
                let _ = write!(
                    out,
                    "<li>wrapped by <code>arbiter mcp</code>: {}</li>",
                    escape(&c.wrapped.join(", "))
                );
            }
            if let Some(e) = &c.enforced {
                let _ = write!(
                    out,
                    "<li>enforced at {}: {} decisions, {} denied ({:.1} %), last {}; policies: {}</li>",
                    escape(&e.enforcement_points.join(", ")),
                    e.decisions,
                    e.denied,
                    e.deny_rate * 100.0,
                    escape(&e.last_seen),
                    escape(&e.policies.join(", "))
                );
            }
            for f in &c.findings {
                let _ = write!(
                    out,
                    "<li><span class=\"s\">{}</span> ({} <code>{}</code>): {}<br>next: <code>{}</code></li>",
                    f.state.as_str(),
                    f.source.as_str(),
                    escape(&f.r#where),
                    escape(&f.detail),
                    escape(&f.next_step)
                );
            }
            if c.findings.is_empty()
                && let Some(step) = &c.next_step
            {
                let _ = write!(out, "<li>next: {}</li>", escape(step));
            }
            if c.declared.is_empty()
                && c.wrapped.is_empty()
                && c.enforced.is_none()
                && c.findings.is_empty()
            {
                out.push_str("<li>nothing declared or observed</li>");
            }
            out.push_str("</ul></section>");
        }
    }
    if !map.warnings.is_empty() {
        out.push_str("<h2>Warnings</h2><ul>");
        for w in &map.warnings {
            let _ = write!(out, "<li>{}</li>", escape(w));
        }
        out.push_str("</ul>");
    }
    out.push_str("</body></html>\n");
    out
}
