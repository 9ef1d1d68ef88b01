//! Allocation-free validation of stored record bytes (the `verify_dir` and
//! recovery fast path).
//!
//! [`check_record`] accepts `bytes` only if they are exactly the canonical
//! encoding ([`DecisionRecord::write_canonical`]) of a schema-1 record, i.e.
//! only if `DecisionRecord::from_canonical_bytes(bytes)` would succeed. It
//! does so in one forward pass over the bytes without building the record:
//!
//! - the top level must follow the fixed member template that
//!   `write_canonical` writes (all members, RFC 8785 order, no whitespace,
//!   `schema` exactly `1`, `outcome` one of the three names, typed integers
//!   in plain minimal decimal within their type's range);
//! - every string must be valid UTF-8 written the way
//!   [`canonical::write_string`] writes it (only `\" \\ \b \t \n \f \r` and
//!   lowercase `\u00xx` for the other control characters; no raw control
//!   characters; nothing else escaped);
//! - the free-form `context` must be canonical JSON: object keys strictly
//!   increasing in UTF-16 order (so no duplicates), integers in minimal
//!   decimal, any other number token exactly what the canonical encoder
//!   writes for the value serde_json parses it to, nesting within the limit
//!   that both serde_json's parser and [`canonical::MAX_DEPTH`] allow.
//!
//! When this returns `None` the caller falls back to the full decode (to get
//! the precise error), so a rejection here never changes a verdict; an
//! acceptance here must imply the full decode accepts, which the
//! differential tests below check on random records and mutated bytes.
//!
//! [`DecisionRecord::write_canonical`]: crate::record::DecisionRecord::write_canonical

use std::cmp::Ordering;

use crate::canonical;

/// Deepest nesting of arrays/objects accepted inside `context`. The record
/// object itself takes one of serde_json's 127 parser levels (its recursion
/// limit is 128, exclusive), which is tighter than `canonical::MAX_DEPTH`.
const CONTEXT_MAX_NESTING: usize = {
    let serde_levels = 127 - 1;
    if serde_levels < canonical::MAX_DEPTH {
        serde_levels
    } else {
        canonical::MAX_DEPTH
    }
};

/// The fields the scanners need, borrowed from the record bytes. Strings are
/// the raw canonical (escaped) contents between the quotes; canonical
/// escaping is injective, so comparing raw forms compares the strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordView<'a> {
    pub seq: u64,
    pub ts_us: i64,
    pub node_id: &'a [u8],
    pub decision_id: &'a [u8],
}

struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn lit(&mut self, s: &[u8]) -> Option<()> {
        let end = self.i.checked_add(s.len())?;
        if self.b.get(self.i..end)? == s {
            self.i = end;
            Some(())
        } else {
            None
        }
    }

    /// A canonical string literal; returns its raw contents.
    #[inline]
    fn string(&mut self) -> Option<&'a [u8]> {
        self.lit(b"\"")?;
        let start = self.i;
        let mut ascii = true;
        loop {
            // Skip 8 plain bytes (printable ASCII other than `"` and `\`)
            // at a time.
            while let Some(w) = self.b.get(self.i..self.i + 8) {
                let mut a = [0u8; 8];
                a.copy_from_slice(w);
                if special(u64::from_le_bytes(a)) {
                    break;
                }
                self.i += 8;
            }
            let c = *self.b.get(self.i)?;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = *self.b.get(self.i + 1)?;
                    match e {
                        b'"' | b'\\' | b'b' | b't' | b'n' | b'f' | b'r' => self.i += 2,
                        b'u' => {
                            let h = self.b.get(self.i + 2..self.i + 6)?;
                            let v = match *h {
                                [b'0', b'0', hi @ (b'0' | b'1'), lo] => {
                                    (hi - b'0') * 16 + hex_lower(lo)?
                                }
                                _ => return None,
                            };
                            if matches!(v, 0x08 | 0x09 | 0x0a | 0x0c | 0x0d) {
                                return None;
                            }
                            self.i += 6;
                        }
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                0x80..=0xff => {
                    ascii = false;
                    self.i += 1;
                }
                _ => self.i += 1,
            }
        }
        let raw = self.b.get(start..self.i)?;
        if !ascii {
            // Escapes are ASCII, so the whole raw slice is valid UTF-8 iff
            // every literal run is.
            std::str::from_utf8(raw).ok()?;
        }
        self.i += 1;
        Some(raw)
    }

    /// Digits of a plain decimal magnitude: `0` or `[1-9][0-9]*`, no more
    /// than fits in u64.
    #[inline]
    fn magnitude(&mut self) -> Option<u64> {
        let first = self.peek()?;
        if first == b'0' {
            self.i += 1;
            return Some(0);
        }
        if !first.is_ascii_digit() {
            return None;
        }
        let mut v: u64 = 0;
        while let Some(c) = self.peek().filter(u8::is_ascii_digit) {
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.i += 1;
        }
        Some(v)
    }

    #[inline]
    fn u64(&mut self) -> Option<u64> {
        self.magnitude()
    }

    #[inline]
    fn i64(&mut self) -> Option<i64> {
        if self.peek()? == b'-' {
            self.i += 1;
            let m = self.magnitude()?;
            if m == 0 {
                return None;
            }
            0i64.checked_sub_unsigned(m)
        } else {
            i64::try_from(self.magnitude()?).ok()
        }
    }

    fn entity(&mut self) -> Option<()> {
        self.lit(b"{\"id\":")?;
        self.string()?;
        self.lit(b",\"kind\":")?;
        self.string()?;
        self.lit(b"}")
    }

    fn strings(&mut self) -> Option<()> {
        self.lit(b"[")?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.string()?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn opt_string(&mut self) -> Option<()> {
        if self.peek()? == b'n' {
            self.lit(b"null")
        } else {
            self.string().map(|_| ())
        }
    }

    /// A canonical JSON value nested `depth` containers deep in `context`.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'n' => self.lit(b"null"),
            b't' => self.lit(b"true"),
            b'f' => self.lit(b"false"),
            b'"' => self.string().map(|_| ()),
            b'-' | b'0'..=b'9' => self.number(),
            b'[' => {
                if depth >= CONTEXT_MAX_NESTING {
                    return None;
                }
                self.i += 1;
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.value(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'{' => {
                if depth >= CONTEXT_MAX_NESTING {
                    return None;
                }
                self.i += 1;
                if self.peek()? == b'}' {
                    self.i += 1;
                    return Some(());
                }
                let mut prev: Option<&[u8]> = None;
                loop {
                    let k = self.string()?;
                    if let Some(p) = prev
                        && key_cmp(p, k) != Ordering::Less
                    {
                        return None;
                    }
                    prev = Some(k);
                    self.lit(b":")?;
                    self.value(depth + 1)?;
                    match self.peek()? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }

    /// A number inside `context`.
    fn number(&mut self) -> Option<()> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                self.i += 1;
            } else {
                break;
            }
        }
        let tok = self.b.get(start..self.i)?;
        if is_plain_integer(tok) {
            return Some(());
        }
        // Anything else (floats, integers out of i64/u64 range): canonical
        // iff the canonical encoder writes back exactly this token for the
        // number serde_json parses it to.
        let n: serde_json::Number = serde_json::from_slice(tok).ok()?;
        let mut again = Vec::with_capacity(tok.len());
        canonical::write_canonical(&mut again, &serde_json::Value::Number(n)).ok()?;
        (again == tok).then_some(())
    }
}

/// `0`, `[1-9][0-9]*` within u64, or `-[1-9][0-9]*` within i64: the tokens
/// serde_json parses to an integer and the encoder writes back unchanged.
fn is_plain_integer(tok: &[u8]) -> bool {
    let mut c = Cur { b: tok, i: 0 };
    let ok = if tok.first() == Some(&b'-') {
        c.i64().is_some()
    } else {
        c.u64().is_some()
    };
    ok && c.i == tok.len()
}

/// Whether any byte of `w` is below 0x20, `"`, `\\` or non-ASCII (exact as a
/// yes/no answer).
#[inline]
fn special(w: u64) -> bool {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let ctl = w.wrapping_sub(LO * 0x20) & !w & HI;
    let q = w ^ (LO * u64::from(b'"'));
    let q = q.wrapping_sub(LO) & !q & HI;
    let bs = w ^ (LO * u64::from(b'\\'));
    let bs = bs.wrapping_sub(LO) & !bs & HI;
    (ctl | q | bs | (w & HI)) != 0
}

#[inline]
fn hex_lower(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Decodes validated raw canonical string contents.
pub(crate) fn unescape(raw: &[u8]) -> String {
    if !raw.contains(&b'\\') {
        return String::from_utf8_lossy(raw).into_owned();
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&c) = raw.get(i) {
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        match raw.get(i + 1).copied() {
            Some(b'b') => out.push(0x08),
            Some(b't') => out.push(0x09),
            Some(b'n') => out.push(0x0a),
            Some(b'f') => out.push(0x0c),
            Some(b'r') => out.push(0x0d),
            Some(b'u') => {
                let hi = raw.get(i + 4).copied().and_then(hex_lower).unwrap_or(0);
                let lo = raw.get(i + 5).copied().and_then(hex_lower).unwrap_or(0);
                out.push(hi * 16 + lo);
                i += 6;
                continue;
            }
            Some(other) => out.push(other),
            None => {}
        }
        i += 2;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compares two validated raw keys as their decoded strings in UTF-16 order.
fn key_cmp(a: &[u8], b: &[u8]) -> Ordering {
    if !a.contains(&b'\\')
        && !b.contains(&b'\\')
        && let (Ok(x), Ok(y)) = (std::str::from_utf8(a), std::str::from_utf8(b))
    {
        return canonical::cmp_utf16(x, y);
    }
    canonical::cmp_utf16(&unescape(a), &unescape(b))
}

/// Checks that `bytes` are the canonical encoding of a schema-1 record and
/// returns the fields the scanners need; `None` if not (or if unsure: the
/// caller then runs the full decode).
pub(crate) fn check_record(bytes: &[u8]) -> Option<RecordView<'_>> {
    let mut c = Cur { b: bytes, i: 0 };
    c.lit(b"{\"action\":")?;
    c.string()?;
    c.lit(b",\"context\":")?;
    c.value(0)?;
    c.lit(b",\"context_digest\":")?;
    c.string()?;
    c.lit(b",\"decision_id\":")?;
    let decision_id = c.string()?;
    c.lit(b",\"delegation\":[")?;
    if c.peek()? == b']' {
        c.i += 1;
    } else {
        loop {
            c.entity()?;
            match c.peek()? {
                b',' => c.i += 1,
                b']' => {
                    c.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    c.lit(b",\"determining_policies\":")?;
    c.strings()?;
    c.lit(b",\"enforcement_point\":")?;
    c.string()?;
    c.lit(b",\"engine\":")?;
    c.string()?;
    c.lit(b",\"engine_version\":")?;
    c.string()?;
    c.lit(b",\"errors\":")?;
    c.strings()?;
    c.lit(b",\"eval_us\":")?;
    c.u64()?;
    c.lit(b",\"evaluations\":[")?;
    if c.peek()? == b']' {
        c.i += 1;
    } else {
        loop {
            c.lit(b"{\"determining_policies\":")?;
            c.strings()?;
            c.lit(b",\"outcome\":")?;
            match c.string()? {
                b"allow" | b"deny" | b"require_approval" => {}
                _ => return None,
            }
            c.lit(b",\"principal\":")?;
            c.entity()?;
            c.lit(b"}")?;
            match c.peek()? {
                b',' => c.i += 1,
                b']' => {
                    c.i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    c.lit(b",\"node_id\":")?;
    let node_id = c.string()?;
    c.lit(b",\"outcome\":")?;
    match c.string()? {
        b"allow" | b"deny" | b"require_approval" => {}
        _ => return None,
    }
    c.lit(b",\"policy_version\":")?;
    c.string()?;
    c.lit(b",\"reason_admin\":")?;
    c.string()?;
    c.lit(b",\"reason_user\":")?;
    c.string()?;
    c.lit(b",\"redacted_paths\":")?;
    c.strings()?;
    c.lit(b",\"resource\":")?;
    c.entity()?;
    c.lit(b",\"schema\":1,\"seq\":")?;
    let seq = c.u64()?;
    c.lit(b",\"subject\":{\"agent_id\":")?;
    c.opt_string()?;
    c.lit(b",\"credential_id\":")?;
    c.opt_string()?;
    c.lit(b",\"id\":")?;
    c.string()?;
    c.lit(b",\"kind\":")?;
    c.string()?;
    c.lit(b"},\"ts_us\":")?;
    let ts_us = c.i64()?;
    c.lit(b"}")?;
    if c.i != bytes.len() {
        return None;
    }
    Some(RecordView {
        seq,
        ts_us,
        node_id,
        decision_id,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::record::{DecisionRecord, EntityRef, Outcome, SubjectRef};
    use proptest::prelude::*;
    use serde_json::{Value, json};

    /// The reference verdict: full decode plus canonical re-encode.
    fn reference(b: &[u8]) -> Option<(u64, i64, String, String)> {
        DecisionRecord::from_canonical_bytes(b)
            .ok()
            .map(|r| (r.seq, r.ts_us, r.node_id, r.decision_id))
    }

    fn fast(b: &[u8]) -> Option<(u64, i64, String, String)> {
        check_record(b).map(|v| (v.seq, v.ts_us, unescape(v.node_id), unescape(v.decision_id)))
    }

    fn agree(b: &[u8]) {
        assert_eq!(
            fast(b),
            reference(b),
            "disagree on {:?}",
            String::from_utf8_lossy(b)
        );
    }

    fn base() -> DecisionRecord {
        DecisionRecord {
            decision_id: "d-1".into(),
            ts_us: 1_700_000_000_000_000,
            node_id: "n\u{1}é".into(),
            seq: 7,
            subject: SubjectRef {
                kind: "Agent".into(),
                id: "a".into(),
                agent_id: Some("a".into()),
                credential_id: None,
            },
            delegation: vec![EntityRef {
                kind: "User".into(),
                id: "u".into(),
            }],
            action: "read".into(),
            resource: EntityRef {
                kind: "File".into(),
                id: "/x".into(),
            },
            context: json!({"a": 1, "b": [1.5, -2, "s"], "c": {"\r": null}}),
            outcome: Outcome::Allow,
            ..DecisionRecord::default()
        }
    }

    fn with_context_text(ctx: &str) -> Vec<u8> {
        let mut r = base();
        r.context = json!("@@CTX@@");
        let s = String::from_utf8(r.canonical_bytes().unwrap()).unwrap();
        s.replace("\"@@CTX@@\"", ctx).into_bytes()
    }

    #[test]
    fn edge_cases_agree() {
        let ctxs = [
            "1",
            "-1",
            "0",
            "-0",
            "1.0",
            "1e2",
            "1E2",
            "1e+21",
            "1e21",
            "0.1",
            ".1",
            "01",
            "1.5e-7",
            "0.0000001",
            "1e-7",
            "18446744073709551615",
            "18446744073709551616",
            "20000000000000000000",
            "-9223372036854775808",
            "-9223372036854775809",
            "100000000000000000000",
            "1e400",
            "-",
            "+1",
            "1-",
            "true",
            "tru",
            "null",
            "nul",
            "\"\\u0001\"",
            "\"\\u0008\"",
            "\"\\b\"",
            "\"\\u001F\"",
            "\"\\u0041\"",
            "\"\\/\"",
            "\"/\"",
            "\"\u{7f}\"",
            "\"\\u007f\"",
            "\"\\ud83d\\ude00\"",
            "\"😀\"",
            "{\"a\":1,\"a\":2}",
            "{\"b\":1,\"a\":2}",
            "{\"a\":1,\"b\":2}",
            "{\"\\r\":1,\"1\":2}",
            "{\"1\":1,\"\\r\":2}",
            "{\"\u{e000}\":1,\"😀\":2}",
            "{\"😀\":1,\"\u{e000}\":2}",
            "[1,2]",
            "[1,2,]",
            "[ 1]",
            "{}",
            "[]",
            "{\"a\" :1}",
            "\"\\u00e9\"",
            "\"é\"",
        ];
        for c in ctxs {
            agree(&with_context_text(c));
        }
        // nesting around the serde_json / MAX_DEPTH limits
        for d in 120..135 {
            let ctx = format!("{}{}", "[".repeat(d), "]".repeat(d));
            agree(&with_context_text(&ctx));
            let ctx = format!("{}1{}", "{\"k\":".repeat(d), "}".repeat(d));
            agree(&with_context_text(&ctx));
        }
        // typed members
        let good = String::from_utf8(base().canonical_bytes().unwrap()).unwrap();
        agree(good.as_bytes());
        assert!(check_record(good.as_bytes()).is_some());
        for (from, to) in [
            ("\"schema\":1", "\"schema\":2"),
            ("\"schema\":1", "\"schema\":01"),
            ("\"seq\":7", "\"seq\":7.0"),
            ("\"seq\":7", "\"seq\":-7"),
            ("\"seq\":7", "\"seq\":18446744073709551615"),
            ("\"seq\":7", "\"seq\":18446744073709551616"),
            (
                "\"ts_us\":1700000000000000",
                "\"ts_us\":-9223372036854775808",
            ),
            (
                "\"ts_us\":1700000000000000",
                "\"ts_us\":-9223372036854775809",
            ),
            ("\"ts_us\":1700000000000000", "\"ts_us\":-0"),
            (
                "\"ts_us\":1700000000000000",
                "\"ts_us\":9223372036854775808",
            ),
            ("\"eval_us\":0", "\"eval_us\":00"),
            ("\"outcome\":\"allow\"", "\"outcome\":\"deny\""),
            ("\"outcome\":\"allow\"", "\"outcome\":\"require_approval\""),
            ("\"outcome\":\"allow\"", "\"outcome\":\"Allow\""),
            ("\"credential_id\":null", "\"credential_id\":\"c\""),
            ("\"agent_id\":\"a\"", "\"agent_id\":null"),
            (
                "\"delegation\":[{\"id\":\"u\",\"kind\":\"User\"}]",
                "\"delegation\":[]",
            ),
            ("\"errors\":[]", "\"errors\":[\"e\",\"f\"]"),
            (
                "\"evaluations\":[]",
                "\"evaluations\":[{\"determining_policies\":[\"p\"],\"outcome\":\"allow\",\"principal\":{\"id\":\"a\",\"kind\":\"Agent\"}},{\"determining_policies\":[],\"outcome\":\"deny\",\"principal\":{\"id\":\"u\",\"kind\":\"User\"}}]",
            ),
            (
                "\"evaluations\":[]",
                "\"evaluations\":[{\"outcome\":\"allow\",\"determining_policies\":[],\"principal\":{\"id\":\"a\",\"kind\":\"Agent\"}}]",
            ),
            ("\"evaluations\":[]", "\"evaluations\":[{}]"),
            ("\"errors\":[]", "\"errors\":[\"e\",]"),
            ("\"node_id\":\"n\\u0001é\"", "\"node_id\":\"n\\u0001e\""),
            ("}", " }"),
        ] {
            assert!(good.contains(from), "{from}");
            agree(good.replacen(from, to, 1).as_bytes());
        }
        agree(format!("{good} ").as_bytes());
        agree(format!("{good}\n").as_bytes());
    }

    fn arb_string() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9_]{0,8}",
            any::<String>(),
            proptest::collection::vec(
                prop_oneof![
                    Just('"'),
                    Just('\\'),
                    Just('\u{0}'),
                    Just('\u{1f}'),
                    Just('\u{7f}'),
                    Just('é'),
                    Just('\u{e000}'),
                    Just('😀'),
                    Just('\n'),
                    Just('/')
                ],
                0..6
            )
            .prop_map(|v| v.into_iter().collect()),
        ]
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            arb_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::vec((arb_string(), inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    fn arb_record() -> impl Strategy<Value = DecisionRecord> {
        (
            (
                arb_string(),
                any::<i64>(),
                arb_string(),
                any::<u64>(),
                any::<u64>(),
            ),
            (
                arb_string(),
                proptest::option::of(arb_string()),
                proptest::collection::vec(arb_string(), 0..3),
            ),
            arb_value(),
            0..3u8,
        )
            .prop_map(|((did, ts, node, seq, eval), (id, agent, errs), ctx, o)| {
                DecisionRecord {
                    decision_id: did,
                    ts_us: ts,
                    node_id: node,
                    seq,
                    eval_us: eval,
                    subject: SubjectRef {
                        kind: "Agent".into(),
                        id: id.clone(),
                        agent_id: agent,
                        credential_id: None,
                    },
                    delegation: vec![EntityRef {
                        kind: id.clone(),
                        id: id.clone(),
                    }],
                    evaluations: (0..o)
                        .map(|i| crate::record::PrincipalOutcome {
                            principal: EntityRef {
                                kind: "User".into(),
                                id: id.clone(),
                            },
                            outcome: if i == 0 {
                                Outcome::Allow
                            } else {
                                Outcome::Deny
                            },
                            determining_policies: errs.clone(),
                        })
                        .collect(),
                    errors: errs.clone(),
                    redacted_paths: errs,
                    context: ctx,
                    outcome: match o {
                        0 => Outcome::Allow,
                        1 => Outcome::Deny,
                        _ => Outcome::RequireApproval,
                    },
                    ..DecisionRecord::default()
                }
            })
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        Set(usize, u8),
        Insert(usize, u8),
        Delete(usize),
        Splice(usize, usize, &'static str),
    }

    fn arb_mutation() -> impl Strategy<Value = Mutation> {
        let interesting = prop_oneof![
            any::<u8>(),
            Just(b' '),
            Just(b'"'),
            Just(b'\\'),
            Just(b','),
            Just(b'0'),
            Just(b'1'),
            Just(b'-'),
            Just(b'.'),
            Just(b'e'),
            Just(b'}'),
            Just(b']'),
            Just(0x80),
            Just(0xc3),
        ];
        prop_oneof![
            (any::<usize>(), interesting.clone()).prop_map(|(i, b)| Mutation::Set(i, b)),
            (any::<usize>(), interesting).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<usize>().prop_map(Mutation::Delete),
            (
                any::<usize>(),
                0..4usize,
                prop_oneof![
                    Just("\\u0041"),
                    Just("\\u001f"),
                    Just("\\u001F"),
                    Just("\\/"),
                    Just("\\u0008"),
                    Just(".0"),
                    Just("e0"),
                    Just("-0"),
                    Just("00"),
                    Just("\"a\":1,"),
                    Just("null"),
                ]
            )
                .prop_map(|(i, n, s)| Mutation::Splice(i, n, s)),
        ]
    }

    fn mutate(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
        for m in muts {
            let len = b.len().max(1);
            match *m {
                Mutation::Set(i, v) => {
                    if let Some(x) = b.get_mut(i % len) {
                        *x = v;
                    }
                }
                Mutation::Insert(i, v) => b.insert(i % (b.len() + 1), v),
                Mutation::Delete(i) => {
                    if !b.is_empty() {
                        b.remove(i % len);
                    }
                }
                Mutation::Splice(i, n, s) => {
                    let at = i % (b.len() + 1);
                    let end = (at + n).min(b.len());
                    b.splice(at..end, s.bytes());
                }
            }
        }
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn swar_special_is_exact(w in any::<[u8; 8]>()) {
            let want = w.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\' || c >= 0x80);
            prop_assert_eq!(special(u64::from_le_bytes(w)), want);
        }

        #[test]
        fn fast_check_accepts_every_canonical_record(r in arb_record()) {
            let b = r.canonical_bytes().unwrap();
            let v = check_record(&b);
            prop_assert!(v.is_some(), "{}", String::from_utf8_lossy(&b));
            prop_assert_eq!(fast(&b), reference(&b));
            prop_assert_eq!(fast(&b), Some((r.seq, r.ts_us, r.node_id.clone(), r.decision_id.clone())));
        }

        #[test]
        fn fast_check_agrees_on_mutated_bytes(
            r in arb_record(),
            muts in proptest::collection::vec(arb_mutation(), 1..4),
        ) {
            let b = mutate(r.canonical_bytes().unwrap(), &muts);
            prop_assert_eq!(fast(&b), reference(&b), "{}", String::from_utf8_lossy(&b));
        }

        #[test]
        fn fast_check_agrees_on_reformatted_context(r in arb_record()) {
            // Same record with its context written by serde_json (insertion
            // order, serde's escapes and float form): canonical only if that
            // happens to coincide.
            let b = r.canonical_bytes().unwrap();
            let ctx = serde_json::to_string(&r.context).unwrap();
            let canon = String::from_utf8(crate::canonical::canonical_json(&r.context).unwrap()).unwrap();
            let s = String::from_utf8(b).unwrap().replacen(&format!("\"context\":{canon}"), &format!("\"context\":{ctx}"), 1);
            prop_assert_eq!(fast(s.as_bytes()), reference(s.as_bytes()), "{}", s);
        }
    }
}
