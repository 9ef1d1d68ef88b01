//! The decision log at scale: resident memory, lookup and proof latency as
//! the log grows to millions of records, then the time to reopen it, to prove
//! from the files alone (`arbiter log prove`), to verify it, and its bytes on
//! disk per record.
//!
//! `cargo bench -p arbiter-log --bench scale` (knobs, environment:
//! `SCALE_RECORDS` records to append, default 10 000 000; `SCALE_AT`
//! comma-separated sizes to report at, default 1000000,5000000,10000000;
//! `SCALE_DIR` where the log is written, default the temporary directory;
//! `SCALE_KEEP` a data directory to write the log to (`SCALE_KEEP/log`) and
//! keep, for `arbiter serve` to open afterwards;
//! `SCALE_PROVE_DIR` proofs from the files to time, default 5).
//! `bench/log-scale.sh` runs it and the same through `arbiter serve`.
//!
//! Appends are durable (the default `Sync` durability: group commit, one
//! `fdatasync` per batch) with up to 16 384 records in flight, as a busy
//! server would have. Only the log's public API is used, so the same file
//! measures an earlier version of the log too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arbiter_log::*;
use serde_json::json;

const IN_FLIGHT: u64 = 16_384;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A UUIDv7-shaped id: 20 decisions per millisecond.
fn id(i: u64) -> String {
    let ms = 1_765_000_000_000 + i / 20;
    format!(
        "{:08x}-{:04x}-7{:03x}-8{:03x}-{:012x}",
        ms >> 16,
        ms & 0xffff,
        (i * 7919) & 0xfff,
        (i * 104_729) & 0xfff,
        i
    )
}

fn rec(i: u64) -> DecisionRecord {
    let ctx = json!({
        "tool": "read_file",
        "arguments": {"path": format!("/srv/data/{}/{i}.txt", i % 97), "limit": 4096},
        "session": format!("s-{}", i % 1000),
        "mcp": {"server": "fs", "method": "tools/call"},
    });
    DecisionRecord {
        decision_id: id(i),
        subject: SubjectRef {
            kind: "Agent".into(),
            id: format!("agent-{}", i % 50),
            agent_id: Some(format!("agent-{}", i % 50)),
            credential_id: Some(format!("ak_{:016x}", i % 50)),
        },
        action: "mcp:fs:read_file".into(),
        resource: EntityRef {
            kind: "Tool".into(),
            id: "fs/read_file".into(),
        },
        context_digest: context_digest(&ctx).unwrap(),
        context: ctx,
        outcome: if i.is_multiple_of(5) {
            Outcome::Deny
        } else {
            Outcome::Allow
        },
        determining_policies: vec!["agents-read-data".into()],
        reason_admin: "permitted by agents-read-data".into(),
        reason_user: "allowed".into(),
        policy_version: "sha256:5f2b8c1e9d7a4b3c2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d"
            .into(),
        engine: "cedar".into(),
        engine_version: "4.5.0".into(),
        enforcement_point: "mcp:fs".into(),
        eval_us: 12,
        ..DecisionRecord::default()
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    (at(0.5), at(0.99))
}

fn dir_bytes(dir: &Path) -> (u64, u64) {
    let (mut segments, mut all) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else {
                all += md.len();
                if e.file_name().to_string_lossy().starts_with("seg-") {
                    segments += md.len();
                }
            }
        }
    }
    (segments, all)
}

fn main() {
    let n = env_u64("SCALE_RECORDS", 10_000_000);
    let points: Vec<u64> = std::env::var("SCALE_AT")
        .unwrap_or_else(|_| "1000000,5000000,10000000".into())
        .split(',')
        .filter_map(|p| p.trim().replace('_', "").parse().ok())
        .filter(|p| *p <= n)
        .chain([n])
        .collect::<std::collections::BTreeSet<u64>>()
        .into_iter()
        .collect();
    let parent =
        std::env::var("SCALE_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let tmp = tempfile::Builder::new()
        .prefix("arbiter-log-scale.")
        .tempdir_in(&parent)
        .unwrap();
    let dir = match std::env::var("SCALE_KEEP") {
        Ok(keep) if !keep.is_empty() => Path::new(&keep).join("log"),
        _ => tmp.path().join("log"),
    };
    let opts = LogOptions {
        node_id: "bench".into(),
        ..LogOptions::default()
    };
    let (log, _) = Log::open(&dir, opts.clone()).unwrap();
    let key = log.public_key();
    let log = Arc::new(log);
    let empty = rss_kib();
    println!(
        "log scale: {n} records, durable appends, {IN_FLIGHT} in flight; resident memory of an empty log {:.1} MiB",
        empty as f64 / 1024.0
    );
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut next = 0u64;
    let mut last = (Instant::now(), 0u64);
    for &point in &points {
        while next < point {
            while next - done.load(Ordering::Acquire) >= IN_FLIGHT {
                std::thread::sleep(Duration::from_micros(200));
            }
            let (d, f) = (done.clone(), failed.clone());
            log.append(
                rec(next),
                Box::new(move |r| {
                    if r.is_err() {
                        f.fetch_add(1, Ordering::Relaxed);
                    }
                    d.fetch_add(1, Ordering::Release);
                }),
            );
            next += 1;
        }
        while done.load(Ordering::Acquire) < point {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(failed.load(Ordering::Relaxed), 0, "appends failed");
        let rate = (point - last.1) as f64 / last.0.elapsed().as_secs_f64();
        let rss = rss_kib();
        let gets: Vec<Duration> = (0..2000)
            .map(|_| {
                let i = rng.below(point);
                let t = Instant::now();
                let r = log.get(&id(i)).unwrap().unwrap();
                let d = t.elapsed();
                assert_eq!(r.seq, i);
                d
            })
            .collect();
        let proofs: Vec<Duration> = (0..300)
            .map(|_| {
                let i = rng.below(point);
                let t = Instant::now();
                let b = log.prove(&id(i)).unwrap();
                let d = t.elapsed();
                assert_eq!(b.leaf_index, i);
                d
            })
            .collect();
        let (g50, g99) = percentiles(gets);
        let (p50, p99) = percentiles(proofs);
        println!(
            "records={point} rss_mib={:.1} above_empty_mib={:.1} appends_per_s={rate:.0} get_ms_p50={g50:.3} get_ms_p99={g99:.3} prove_ms_p50={p50:.3} prove_ms_p99={p99:.3}",
            rss as f64 / 1024.0,
            rss.saturating_sub(empty) as f64 / 1024.0,
        );
        last = (Instant::now(), point);
    }
    Arc::try_unwrap(log).ok().unwrap().shutdown().unwrap();
    let t = Instant::now();
    let (log, rep) = Log::open(&dir, opts).unwrap();
    let reopen = t.elapsed();
    assert_eq!(rep.records, n);
    drop(log);
    let proofs: Vec<Duration> = (0..env_u64("SCALE_PROVE_DIR", 5))
        .map(|_| {
            let i = rng.below(n);
            let t = Instant::now();
            let b = prove_dir(&dir, &id(i)).unwrap();
            let d = t.elapsed();
            assert_eq!(b.leaf_index, i);
            d
        })
        .collect();
    let (d50, d99) = percentiles(proofs);
    let t = Instant::now();
    let v = verify_dir(&dir, Some(&key), None).unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(v.problem.is_none(), "{:?}", v.problem);
    let (segments, all) = dir_bytes(&dir);
    println!(
        "reopen_ms={:.0} prove_dir_ms_p50={d50:.1} prove_dir_ms_p99={d99:.1} verify_records_per_s={:.0} segment_bytes_per_record={:.0} all_bytes_per_record={:.0}",
        reopen.as_secs_f64() * 1e3,
        v.records as f64 / secs,
        segments as f64 / n as f64,
        all as f64 / n as f64,
    );
}
