//! `arbiter log …` end to end, against a log built with the arbiter-log library.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use arbiter_testkit::copy_dir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use arbiter_log::{
    DecisionRecord, EntityRef, Log, LogOptions, Outcome, SubjectRef, context_digest,
};
use arbiter_testkit::{Arbiter, Lines, PATIENCE, Running, json_lines, text, wait_until};
use serde_json::{Value, json};

const ARBITER: Arbiter = Arbiter::at(env!("CARGO_BIN_EXE_arbiter"));

fn arbiter() -> Command {
    ARBITER.command()
}

fn run(args: &[&str], data: &Path) -> Output {
    arbiter()
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("ARBITER_DATA")
        .output()
        .unwrap()
}

fn lines(out: &Output) -> Vec<Value> {
    json_lines(&text(&out.stdout))
}

const T0: i64 = 1_735_787_045_000_000; // 2025-01-02T03:04:05Z

fn rec(i: u64) -> DecisionRecord {
    let ctx = json!({"i": i});
    DecisionRecord {
        decision_id: format!("d-{i}"),
        ts_us: T0 + i as i64 * 1_000_000,
        subject: SubjectRef {
            kind: "Agent".into(),
            id: format!("agent-{}", i % 3),
            agent_id: if i % 3 == 2 {
                None
            } else {
                Some(format!("bot-{}", i % 3))
            },
            credential_id: None,
        },
        action: if i.is_multiple_of(2) {
            "fs:read"
        } else {
            "fs:write"
        }
        .into(),
        resource: EntityRef {
            kind: "File".into(),
            id: format!("/f/{i}"),
        },
        context_digest: context_digest(&ctx).unwrap(),
        context: ctx,
        outcome: match i % 3 {
            0 => Outcome::Allow,
            1 => Outcome::Deny,
            _ => Outcome::RequireApproval,
        },
        determining_policies: vec![format!("p{i}")],
        reason_admin: "because".into(),
        reason_user: "no".into(),
        policy_version: if i < 6 { "v1" } else { "v2" }.into(),
        engine: "cedar".into(),
        engine_version: "4".into(),
        enforcement_point: "authzen".into(),
        eval_us: 10,
        ..DecisionRecord::default()
    }
}

fn opts() -> LogOptions {
    LogOptions {
        node_id: "n1".into(),
        checkpoint_every: Duration::from_secs(3600),
        ..LogOptions::default()
    }
}

/// A data dir with `n` records and a final checkpoint (from shutdown).
fn build(n: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    append(&data, 0..n);
    (tmp, data)
}

fn append(data: &Path, range: std::ops::Range<u64>) {
    let (log, _) = Log::open(&data.join("log"), opts()).unwrap();
    for i in range {
        log.append_blocking(rec(i)).unwrap();
    }
    log.shutdown().unwrap();
}

fn pubkey(data: &Path) -> String {
    let out = run(&["log", "pubkey"], data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

#[test]
fn pubkey_prints_64_hex() {
    let (_t, data) = build(1);
    let key = pubkey(&data);
    assert_eq!(key.len(), 64);
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[test]
fn verify_ok_then_tampered() {
    let (tmp, data) = build(12);
    let key = pubkey(&data);
    let out = run(&["log", "verify", "--pubkey", &key], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("log ok: 12 records"), "{s}");
    assert!(s.contains("signatures checked"), "{s}");

    // Without --pubkey: still ok, with a note about the stronger external key.
    let out = run(&["log", "verify"], &data);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("--pubkey"),
        "{}",
        text(&out.stderr)
    );

    // The key from a file works too.
    let keyfile = tmp.path().join("trusted.pub");
    std::fs::write(&keyfile, format!("{key}\n")).unwrap();
    let out = run(
        &["log", "verify", "--pubkey", keyfile.to_str().unwrap()],
        &data,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // ... or the JSON of GET /v1/log/pubkey.
    std::fs::write(
        &keyfile,
        serde_json::to_vec(&json!({"public_key": key, "algorithm": "ed25519"})).unwrap(),
    )
    .unwrap();
    let out = run(
        &["log", "verify", "--pubkey", keyfile.to_str().unwrap()],
        &data,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // A wrong key: bad signature.
    let other = "11".repeat(32);
    let out = run(&["log", "verify", "--pubkey", &other], &data);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("bad signature"), "{err}");

    // Flip a byte inside record 5's payload.
    let seg = data.join("log/seg-00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let mut off = 0usize;
    for _ in 0..5 {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        off += 8 + len;
    }
    bytes[off + 8 + 10] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let out = run(&["log", "verify", "--pubkey", &key], &data);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("record 5"), "{err}");
    assert!(err.contains("modified"), "{err}");

    // JSON report.
    let out = run(&["log", "verify", "--json", "--pubkey", &key], &data);
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["problem"]["index"], 5);
    assert_eq!(v["problem"]["kind"], "modified");
}

#[test]
fn verify_missing_dir_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(&["log", "verify"], &tmp.path().join("nope"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no decision log"));
}

#[test]
fn prove_and_check_proof_round_trip() {
    let (tmp, data) = build(9);
    let key = pubkey(&data);
    let proof = tmp.path().join("proof.json");
    let out = run(
        &["log", "prove", "d-4", "--out", proof.to_str().unwrap()],
        &data,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = arbiter()
        .args([
            "log",
            "check-proof",
            proof.to_str().unwrap(),
            "--pubkey",
            &key,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("proof ok: decision d-4 is record 4 of a log of size 9 signed at"),
        "{s}"
    );

    // Stdout form is the same bundle.
    let out = run(&["log", "prove", "d-4"], &data);
    assert_eq!(out.status.code(), Some(0));
    let a: Value = serde_json::from_slice(&out.stdout).unwrap();
    let b: Value = serde_json::from_slice(&std::fs::read(&proof).unwrap()).unwrap();
    assert_eq!(a, b);

    // Tamper with the record: leaf mismatch, exit 3.
    let mut t = b.clone();
    t["record"]["outcome"] = json!("allow");
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, serde_json::to_vec(&t).unwrap()).unwrap();
    let out = arbiter()
        .args([
            "log",
            "check-proof",
            bad.to_str().unwrap(),
            "--pubkey",
            &key,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("proof INVALID"));

    // Tamper with the audit path.
    let mut t = b.clone();
    t["proof"][0] = json!("00".repeat(32));
    std::fs::write(&bad, serde_json::to_vec(&t).unwrap()).unwrap();
    let out = arbiter()
        .args([
            "log",
            "check-proof",
            bad.to_str().unwrap(),
            "--pubkey",
            &key,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));

    // Another trusted key: exit 3.
    let out = arbiter()
        .args(["log", "check-proof", proof.to_str().unwrap(), "--pubkey"])
        .arg("22".repeat(32))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));

    // Unknown decision: exit 1.
    let out = run(&["log", "prove", "nope"], &data);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no record with decision id"));
}

#[test]
fn prove_record_newer_than_checkpoint_is_refused() {
    let (_t, data) = build(3);
    // Append one record without a final checkpoint: simulate by writing
    // through a log that is dropped without shutdown is not possible (Drop
    // shuts down), so remove the last checkpoint frame instead.
    let cps = data.join("log/checkpoints.log");
    let bytes = std::fs::read(&cps).unwrap();
    let mut frames = Vec::new();
    let mut off = 0usize;
    while off < bytes.len() {
        let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
        frames.push((off, off + 8 + len));
        off += 8 + len;
    }
    // Keep only checkpoints smaller than the full log.
    let mut keep = Vec::new();
    for (a, b) in frames {
        let cp: Value = serde_json::from_slice(&bytes[a + 8..b]).unwrap();
        if cp["tree_size"].as_u64().unwrap() < 3 {
            keep.extend_from_slice(&bytes[a..b]);
        }
    }
    std::fs::write(&cps, keep).unwrap();
    let out = run(&["log", "prove", "d-2"], &data);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("not yet covered by a signed checkpoint"),
        "{err}"
    );
}

#[test]
fn checkpoint_and_consistency() {
    let (tmp, data) = build(5);
    let old = tmp.path().join("old.json");
    let out = run(&["log", "checkpoint"], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    std::fs::write(&old, &out.stdout).unwrap();
    let cp: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cp["tree_size"], 5);

    append(&data, 5..11);
    let new = tmp.path().join("new.json");
    let out = run(&["log", "checkpoint"], &data);
    std::fs::write(&new, &out.stdout).unwrap();
    let key = pubkey(&data);

    let o = old.to_str().unwrap();
    let n = new.to_str().unwrap();
    let out = run(&["log", "consistency", o, n, "--pubkey", &key], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("the log only grew from size 5 to 11"),
        "{}",
        text(&out.stdout)
    );

    // A forged old checkpoint (different root, re-signed by nobody): exit 3.
    let mut forged = cp.clone();
    forged["root_hash"] = json!("ab".repeat(32));
    let f = tmp.path().join("forged.json");
    std::fs::write(&f, serde_json::to_vec(&forged).unwrap()).unwrap();
    let out = run(
        &[
            "log",
            "consistency",
            f.to_str().unwrap(),
            n,
            "--pubkey",
            &key,
        ],
        &data,
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn tail_and_query() {
    let (_t, data) = build(12);
    let out = run(&["log", "tail", "-n", "3"], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let recs = lines(&out);
    let ids: Vec<_> = recs.iter().map(|r| r["decision_id"].clone()).collect();
    assert_eq!(ids, vec![json!("d-9"), json!("d-10"), json!("d-11")]);

    let out = run(&["log", "tail"], &data);
    assert_eq!(lines(&out).len(), 10);

    let ids = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["log", "query"];
        a.extend_from_slice(args);
        let out = run(&a, &data);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        lines(&out)
            .iter()
            .map(|r| r["decision_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&[]).len(), 12);
    assert_eq!(ids(&["--agent", "bot-1"]), ["d-1", "d-4", "d-7", "d-10"]);
    // No agent_id: matched by subject.id.
    assert_eq!(ids(&["--agent", "agent-2"]), ["d-2", "d-5", "d-8", "d-11"]);
    assert_eq!(ids(&["--agent", "agent-1"]), Vec::<String>::new());
    assert_eq!(
        ids(&["--outcome", "allow", "--action", "fs:read"]),
        ["d-0", "d-6"]
    );
    assert_eq!(ids(&["--outcome", "require_approval"]).len(), 4);
    assert_eq!(ids(&["--resource", "File::/f/3"]), ["d-3"]);
    assert_eq!(ids(&["--resource", "/f/4"]), ["d-4"]);
    assert_eq!(
        ids(&["--since", "2025-01-02T03:04:15Z", "--until", "1735787057"]),
        ["d-10", "d-11"]
    );
    assert_eq!(ids(&["--policy-version", "v1"]).len(), 6);

    let out = run(&["log", "query", "--since", "yesterday"], &data);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
    let err = text(&out.stderr);
    assert!(err.contains("a time ago such as `15m`"), "{err}");

    // --limit keeps the most recent matches, oldest first.
    assert_eq!(ids(&["--limit", "3"]), ["d-9", "d-10", "d-11"]);
    assert_eq!(ids(&["--agent", "bot-1", "--limit", "2"]), ["d-7", "d-10"]);
    assert_eq!(ids(&["--limit", "0"]), Vec::<String>::new());
    // A time ago: the records are from 2025, long before an hour ago.
    assert_eq!(ids(&["--since", "1h"]), Vec::<String>::new());
    assert_eq!(ids(&["--until", "1h"]).len(), 12);
    assert_eq!(ids(&["--since", "100000d"]).len(), 12);
    let out = run(&["log", "query", "--since", "99999999999999999d"], &data);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// On a terminal `log query` prints a table (one header, one row a record); `--json` keeps
/// the JSON lines there too.
#[test]
fn query_prints_a_table_on_a_terminal() {
    let (_t, data) = build(4);
    let on_a_terminal = |extra: &str| {
        let cmd = format!(
            "{} log query --data {} --limit 2 {extra}",
            ARBITER.path(),
            data.display()
        );
        let out = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("TERM", "dumb")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).replace('\r', "")
    };
    let table = on_a_terminal("");
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(rows[0].starts_with("TIME (UTC)"), "{table}");
    assert!(
        rows[1].starts_with("2025-01-02T03:04:07  require_approval")
            || rows[1].starts_with("2025-01-02T03:04:07  require_"),
        "{table}"
    );
    assert!(
        rows[2].contains("bot-0") && rows[2].contains("d-3"),
        "{table}"
    );
    let json = on_a_terminal("--json");
    assert!(json.lines().all(|l| l.starts_with('{')), "{json}");
}

#[test]
fn tail_follow_prints_new_records() {
    let (_t, data) = build(2);
    let mut tail = Running::spawn(
        "arbiter log tail -f",
        arbiter()
            .args(["log", "tail", "-f", "-n", "1", "--data"])
            .arg(&data)
            .stdout(Stdio::piped()),
    );
    let lines = Lines::spawn("arbiter log tail -f", tail.child().stdout.take().unwrap());
    let next_id = || {
        let v: Value = serde_json::from_str(&lines.next()).unwrap();
        v["decision_id"].as_str().unwrap().to_string()
    };
    // Once it printed the last record there is, it follows: records appended now are new.
    let mut got = vec![next_id()];
    append(&data, 2..4);
    got.push(next_id());
    got.push(next_id());
    tail.kill();
    assert_eq!(got, ["d-1", "d-2", "d-3"]);
}

#[test]
fn export_jsonl_and_ocsf() {
    let (_t, data) = build(4);
    let out = run(&["log", "export", "--format", "jsonl"], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let recs = lines(&out);
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[3]["seq"], 3);

    let out = run(&["log", "export", "--format", "ocsf"], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let evs = lines(&out);
    assert_eq!(evs.len(), 4);
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e["class_uid"], 6003);
        assert_eq!(e["category_uid"], 6);
        assert_eq!(e["type_uid"], 600_399);
        assert_eq!(e["metadata"]["uid"], format!("d-{i}"));
        assert_eq!(e["metadata"]["version"], "1.3.0");
        assert_eq!(e["time"], (T0 + i as i64 * 1_000_000) / 1000);
        assert_eq!(e["api"]["operation"], recs[i]["action"]);
        assert_eq!(e["resources"][0]["uid"], format!("/f/{i}"));
        assert_eq!(e["resources"][0]["type"], "File");
        assert_eq!(e["actor"]["user"]["uid"], recs[i]["subject"]["id"]);
        assert_eq!(
            e["actor"]["authorizations"][0]["policy"]["uid"],
            format!("p{i}")
        );
        assert_eq!(e["unmapped"]["policy_version"], "v1");
    }
    assert_eq!(evs[0]["status_id"], 1);
    assert_eq!(evs[1]["status_id"], 2);
    assert_eq!(evs[2]["status_id"], 99);
    assert_eq!(evs[0]["actor"]["app_uid"], "bot-0");
}

// --- Evidence that can be rewritten (issue 14, part 3) ---

/// The reproduction: 30 decisions; record 1 rewritten from `deny` to `allow`
/// with a fresh checksum; `checkpoints.log` deleted (or emptied).
fn rewritten_log(empty_instead: bool) -> (tempfile::TempDir, PathBuf, String) {
    let (tmp, data) = build(30);
    let key = pubkey(&data);
    let seg = data.join("log/seg-00000000000000000000.log");
    let buf = std::fs::read(&seg).unwrap();
    let mut out = Vec::new();
    let mut off = 0usize;
    let mut i = 0;
    while off + 8 <= buf.len() {
        let len = u32::from_le_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        let payload = &buf[off + 8..off + 8 + len];
        let payload = if i == 1 {
            let mut r = DecisionRecord::from_canonical_bytes(payload).unwrap();
            assert_eq!(r.outcome, Outcome::Deny);
            r.outcome = Outcome::Allow;
            let mut b = Vec::new();
            r.write_canonical(&mut b).unwrap();
            b
        } else {
            payload.to_vec()
        };
        arbiter_log::segment::encode_frame(&payload, &mut out);
        off += 8 + len;
        i += 1;
    }
    assert_eq!(i, 30);
    out.resize(buf.len(), 0);
    std::fs::write(&seg, out).unwrap();
    let cps = data.join("log/checkpoints.log");
    if empty_instead {
        std::fs::write(&cps, b"").unwrap();
    } else {
        std::fs::remove_file(&cps).unwrap();
    }
    (tmp, data, key)
}

/// `arbiter serve` on a free port with `data` and `extra`, its output discarded.
fn serve_command(data: &Path, extra: &[&str]) -> Command {
    let mut c = arbiter();
    c.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--node-id",
        "n1",
        "--data",
    ])
    .arg(data)
    .args(extra)
    .env_remove("ARBITER_DATA")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    c
}

/// Runs `arbiter serve` on a free port, which must refuse to start: returns its exit status
/// and stderr; fails the test if it is still running after a generous deadline.
fn serve_exits(data: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut serve = Running::spawn(
        "arbiter serve",
        serve_command(data, extra).stderr(Stdio::piped()),
    );
    wait_until("arbiter serve refuses to start and exits", PATIENCE, || {
        serve.child().try_wait().unwrap().is_some()
    });
    let out = serve.terminate();
    (out.status.code(), text(&out.stderr))
}

#[test]
fn rewritten_record_with_checkpoints_deleted_fails_verify_and_serve() {
    for empty in [false, true] {
        let (_t, data, key) = rewritten_log(empty);
        let out = run(&["log", "verify", "--pubkey", &key], &data);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{}{err}", text(&out.stdout));
        assert!(err.contains("truncated"), "{err}");
        assert!(!err.contains("signatures checked"), "{err}");
        let (code, err) = serve_exits(&data, &[]);
        assert_ne!(code, Some(0), "{err}");
        assert!(err.contains("holds 0 checkpoints"), "{err}");
        assert!(err.contains("arbiter log verify"), "{err}");
        assert!(err.contains("--accept-log-damage"), "{err}");
        // Still refused, and still failing verify: nothing was signed.
        let out = run(&["log", "verify", "--pubkey", &key], &data);
        assert_eq!(out.status.code(), Some(3));
    }
}

#[test]
fn verify_fails_on_records_no_checkpoint_covers() {
    let (_t, data) = build(30);
    let key = pubkey(&data);
    std::fs::remove_file(data.join("log/checkpoints.log")).unwrap();
    // (Absent before `checkpoints.state` existed.)
    let _ = std::fs::remove_file(data.join("log/checkpoints.state"));
    let out = run(&["log", "verify", "--pubkey", &key], &data);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("not covered by a checkpoint"), "{err}");
    assert!(
        err.contains("no checkpoint, so no signature checked"),
        "{err}"
    );
}

#[test]
fn accepted_log_damage_is_recorded_and_verify_reports_it() {
    let (_t, data, key) = rewritten_log(false);
    let mut serve = Running::spawn(
        "arbiter serve --accept-log-damage",
        &mut serve_command(
            &data,
            &["--accept-log-damage", "restored from backup, see INC-7"],
        ),
    );
    let dir = data.join("log");
    wait_until("the override is checkpointed", PATIENCE, || {
        serve.assert_running();
        arbiter_log::read_checkpoints(&dir)
            .unwrap_or_default()
            .iter()
            .any(|c| c.tree_size == 31)
    });
    serve.kill();
    let out = run(&["log", "verify", "--pubkey", &key], &data);
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{err}");
    assert!(stdout.contains("31 records"), "{stdout}");
    assert!(stdout.contains("1 operator override"), "{stdout}");
    assert!(err.contains("record 30"), "{err}");
    assert!(err.contains("restored from backup, see INC-7"), "{err}");
    assert!(err.contains("holds 0 checkpoints"), "{err}");
    let out = run(&["log", "verify", "--pubkey", &key, "--json"], &data);
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["overrides"][0]["index"], 30);
    // The override persists: the log now opens without it.
    let (log, report) = Log::open(&dir, opts()).unwrap();
    assert!(report.accepted_damage.is_none());
    assert_eq!(log.tree_size(), 31);
}

// --- Witnessed checkpoints (issue 15, part 4) ---

/// `arbiter witness serve` on a free port following the log in `data`, ready.
fn witness(wdata: &Path, data: &Path) -> (Running, u16) {
    let port = arbiter_testkit::free_port();
    let mut w = Running::spawn(
        "arbiter witness serve",
        arbiter()
            .args(["witness", "serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data")
            .arg(wdata)
            .arg("--log-key")
            .arg(data.join("log/log-signing.pub"))
            .args(["--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_until("the witness answers /healthz", PATIENCE, || {
        w.assert_running();
        arbiter_testkit::http(port, "GET", "/healthz", &[], "").is_ok_and(|r| r.status == 200)
    });
    (w, port)
}

/// `arbiter serve` of `data` sending checkpoints (every 100 ms) to the witness at `url`.
fn serve_witnessed(data: &Path, url: &str) -> (u16, arbiter_testkit::Served) {
    let port = arbiter_testkit::free_port();
    let mut cmd = arbiter();
    cmd.args([
        "serve",
        "--node-id",
        "n1",
        "--checkpoint-interval-ms",
        "100",
    ])
    .args(["--listen", &format!("127.0.0.1:{port}"), "--witness", url])
    .arg("--data")
    .arg(data)
    .env_remove("ARBITER_DATA")
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    (port, arbiter_testkit::Served::start(&mut cmd, port))
}

/// Serves `data` with the witness at `wport`, makes `n` decisions, waits until the witness
/// cosigned all of them, and stops (the final checkpoint is witnessed at shutdown).
fn decide_witnessed(data: &Path, wport: u16, n: usize) -> Value {
    let (port, served) = serve_witnessed(data, &format!("http://127.0.0.1:{wport}"));
    for i in 0..n {
        let body = json!({
            "subject": {"type": "Agent", "id": format!("a{i}")},
            "action": {"name": "read"},
            "resource": {"type": "Doc", "id": "1"},
        });
        let r = arbiter_testkit::http(
            port,
            "POST",
            "/access/v1/evaluation",
            &[("content-type", "application/json")],
            &body.to_string(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.raw);
    }
    let ready = arbiter_testkit::wait_for("every record witnessed", PATIENCE, || {
        let r = arbiter_testkit::http(port, "GET", "/readyz", &[], "").ok()?;
        let v = r.json();
        let records = v["decision_log"]["records"].as_u64()?;
        (v["witness"]["status"] == "witnessed"
            && v["witness"]["witnessed_size"].as_u64() == Some(records))
        .then_some(v)
    });
    let metrics = arbiter_testkit::http(port, "GET", "/metrics", &[], "").unwrap();
    assert!(
        metrics
            .body
            .contains("arbiter_witness_unwitnessed_records 0"),
        "{}",
        metrics.body
    );
    let mut served = served;
    let out = served.process.terminate();
    assert_eq!(out.status.code(), Some(0));
    ready
}

fn verify_witnessed(data: &Path, key: &str, wkey: &str, url: Option<&str>) -> Output {
    let mut args = vec!["log", "verify", "--pubkey", key, "--witness-key", wkey];
    if let Some(u) = url {
        args.extend(["--witness", u]);
    }
    run(&args, data)
}

/// Rebuilds the log of `from` in `to` with the same signing key and record 1's outcome
/// flipped: a log that verifies by itself, with checkpoints regenerated over the rewrite.
fn forge(from: &Path, to: &Path) {
    let records: Vec<DecisionRecord> = arbiter_log::read_records(&from.join("log"))
        .unwrap()
        .map(|r| r.unwrap().1)
        .collect();
    std::fs::create_dir_all(to.join("log")).unwrap();
    std::fs::copy(
        from.join("log/log-signing.key"),
        to.join("log/log-signing.key"),
    )
    .unwrap();
    let (log, _) = Log::open(&to.join("log"), opts()).unwrap();
    for (i, mut r) in records.into_iter().enumerate() {
        if i == 1 {
            r.outcome = if r.outcome == Outcome::Allow {
                Outcome::Deny
            } else {
                Outcome::Allow
            };
        }
        log.append_blocking(r).unwrap();
    }
    log.shutdown().unwrap();
}

#[test]
fn witnessed_log_rewrite_truncation_and_rollback_are_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    append(&data, 0..5);
    let key = pubkey(&data);
    let wdata = tmp.path().join("witness");
    let (mut w, wport) = witness(&wdata, &data);
    let wurl = format!("http://127.0.0.1:{wport}");
    let out = run(&["witness", "pubkey"], &wdata);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let wkey = text(&out.stdout).trim().to_string();
    assert_eq!(wkey.len(), 64);

    // Decisions flow; every checkpoint is cosigned; verify agrees with the witness.
    let ready = decide_witnessed(&data, wport, 12);
    assert_eq!(ready["witness"]["quorum"], 1);
    assert!(data.join("log/cosignatures.log").exists());
    for url in [None, Some(wurl.as_str())] {
        let out = verify_witnessed(&data, &key, &wkey, url);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("witness "),
            "{}",
            text(&out.stdout)
        );
        assert!(text(&out.stdout).contains(" ok: cosigned size "));
    }
    let backup = tmp.path().join("backup");
    copy_dir(&data, &backup);
    decide_witnessed(&data, wport, 6);
    let out = verify_witnessed(&data, &key, &wkey, Some(&wurl));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Another key's cosignatures prove nothing.
    let stranger = arbiter_log::KeyPair::from_seed(&[9; 32]).public_key_hex();
    let out = verify_witnessed(&data, &key, &stranger, None);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("no checkpoint of this log cosigned"));

    // Rewritten with regenerated checkpoints: verifies alone, never with the witness.
    let forged = tmp.path().join("forged");
    forge(&data, &forged);
    let out = run(&["log", "verify", "--pubkey", &key], &forged);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = verify_witnessed(&forged, &key, &wkey, None);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("no checkpoint of this log cosigned by this witness"),
        "{}",
        text(&out.stderr)
    );
    // ... even with the old cosignatures copied beside it.
    std::fs::copy(
        data.join("log/cosignatures.log"),
        forged.join("log/cosignatures.log"),
    )
    .unwrap();
    let out = verify_witnessed(&forged, &key, &wkey, None);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("records were rewritten after it saw them"),
        "{}",
        text(&out.stderr)
    );
    // The witness refuses to cosign the forged log, and serving it says so.
    let (port, mut served) = serve_witnessed(&forged, &wurl);
    let refused = arbiter_testkit::wait_for("the witness refuses", PATIENCE, || {
        let v = arbiter_testkit::http(port, "GET", "/readyz", &[], "")
            .ok()?
            .json();
        let e = v["witness"]["witnesses"][0]["last_error"]
            .as_str()?
            .to_string();
        Some((v, e))
    });
    assert!(refused.1.contains("refused (422)"), "{}", refused.1);
    assert_eq!(refused.0["witness"]["status"], "behind");
    assert_eq!(refused.0["status"], "ready", "decisions keep flowing");
    served.process.terminate();

    // Rolled back to the backup: consistent with its own cosignatures, so only the witness
    // itself can tell.
    let out = verify_witnessed(&backup, &key, &wkey, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = verify_witnessed(&backup, &key, &wkey, Some(&wurl));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("records were removed"),
        "{}",
        text(&out.stderr)
    );

    // The witness's view survives its restart.
    w.terminate();
    let (_w, wport) = witness(&wdata, &data);
    let out = verify_witnessed(
        &backup,
        &key,
        &wkey,
        Some(&format!("http://127.0.0.1:{wport}")),
    );
    assert_eq!(out.status.code(), Some(3));
    decide_witnessed(&data, wport, 2);

    // Records after the witnessed checkpoint: within the allowed lag, or reported.
    append(&data, 100..103);
    let out = verify_witnessed(&data, &key, &wkey, None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("3 record(s) after it"),
        "{}",
        text(&out.stdout)
    );
    let out = run(
        &[
            "log",
            "verify",
            "--pubkey",
            &key,
            "--witness-key",
            &wkey,
            "--unwitnessed-records",
            "2",
        ],
        &data,
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("3 records after the witnessed checkpoint"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn archive_moves_old_segments_and_the_log_still_proves_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (log, _) = Log::open(
        &data.join("log"),
        LogOptions {
            segment_bytes: 16 << 10,
            ..opts()
        },
    )
    .unwrap();
    let tickets: Vec<_> = (0..400).map(|i| log.append_ticket(rec(i))).collect();
    for t in tickets {
        t.wait().unwrap();
    }
    log.shutdown().unwrap();
    drop(log);
    let to = tmp.path().join("archive");
    let to_s = to.to_str().unwrap();
    // Records are one second apart from T0: everything sealed before T0 + 200 s moves.
    let before = (T0 / 1_000_000 + 200).to_string();
    let out = run(
        &["log", "archive", "--before", &before, "--to", to_s],
        &data,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.starts_with("archived records 0 to "), "{said}");
    assert!(to.join("seg-00000000000000000000.log.zst").is_file());
    // Proved and verified across the archive.
    let out = run(&["log", "prove", "d-3"], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(&["log", "verify"], &data);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("400 records"),
        "{}",
        text(&out.stdout)
    );
    // Again: nothing more is that old.
    let out = run(
        &["log", "archive", "--before", &before, "--to", to_s],
        &data,
    );
    assert!(
        text(&out.stdout).starts_with("nothing to archive"),
        "{}",
        text(&out.stdout)
    );
    // A bad time is named.
    let out = run(&["log", "archive", "--before", "soon", "--to", to_s], &data);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("soon"), "{}", text(&out.stderr));
    // The archive inside the data directory is refused.
    let inside = data.join("log").join("old");
    let out = run(
        &[
            "log",
            "archive",
            "--before",
            "1d",
            "--to",
            inside.to_str().unwrap(),
        ],
        &data,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("outside the log directory"),
        "{}",
        text(&out.stderr)
    );
    assert!(!inside.exists());
}
