//! Benchmarks: durable group-commit appends at 1/16/64 writer threads (real
//! fsync, Sync durability) and `verify_dir` throughput on a 200k-record log.
//!
//! `cargo bench -p arbiter-log --bench log` (add `-- --quick` for a fast run).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbiter_log::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

fn rec(i: u64) -> DecisionRecord {
    let ctx = json!({
        "tool": "fs.read",
        "arguments": {"path": format!("/srv/data/{i}.txt"), "offset": i, "limit": 4096},
        "session": "s-1234",
    });
    DecisionRecord {
        decision_id: format!("0190a1b2-c3d4-7e5f-8a9b-{i:012}"),
        subject: SubjectRef {
            kind: "Agent".into(),
            id: "agent-7".into(),
            agent_id: Some("agent-7".into()),
            credential_id: Some("cred-1".into()),
        },
        delegation: vec![EntityRef {
            kind: "User".into(),
            id: "alice".into(),
        }],
        action: "mcp:fs:read".into(),
        resource: EntityRef {
            kind: "File".into(),
            id: format!("/srv/data/{i}.txt"),
        },
        context_digest: context_digest(&ctx).unwrap(),
        context: ctx,
        outcome: Outcome::Allow,
        determining_policies: vec!["policy0".into()],
        reason_admin: "permitted by policy0".into(),
        reason_user: "allowed".into(),
        policy_version: "sha256:6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
            .into(),
        engine: "cedar".into(),
        engine_version: "4.14.0".into(),
        enforcement_point: "mcp:fs".into(),
        eval_us: 35,
        ..DecisionRecord::default()
    }
}

fn bench_dir() -> PathBuf {
    // real disk, not tmpfs
    let base = PathBuf::from("/var/tmp");
    if base.is_dir() {
        base
    } else {
        std::env::temp_dir()
    }
}

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_append");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(1));
    for threads in [1u64, 16, 64] {
        g.bench_with_input(
            BenchmarkId::from_parameter(threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
                    let (log, _) = Log::open(
                        dir.path(),
                        LogOptions {
                            node_id: "bench".into(),
                            ..LogOptions::default()
                        },
                    )
                    .unwrap();
                    let log = Arc::new(log);
                    let per = iters.div_ceil(threads);
                    let start = Instant::now();
                    let hs: Vec<_> = (0..threads)
                        .map(|t| {
                            let log = log.clone();
                            std::thread::spawn(move || {
                                for i in 0..per {
                                    log.append_blocking(rec(t * 1_000_000_000 + i)).unwrap();
                                }
                            })
                        })
                        .collect();
                    for h in hs {
                        h.join().unwrap();
                    }
                    let el = start.elapsed();
                    drop(log);
                    // scale to exactly `iters` records
                    el.mul_f64(iters as f64 / (per * threads) as f64)
                })
            },
        );
    }
    g.finish();
}

const VERIFY_RECORDS: u64 = 200_000;

fn verify(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    {
        let (log, _) = Log::open(
            dir.path(),
            LogOptions {
                node_id: "bench".into(),
                durability: Durability::Async,
                ..LogOptions::default()
            },
        )
        .unwrap();
        let mut tickets = Vec::with_capacity(10_000);
        for i in 0..VERIFY_RECORDS {
            tickets.push(log.append_ticket(rec(i)));
            if tickets.len() == 10_000 {
                for t in tickets.drain(..) {
                    t.wait().unwrap();
                }
            }
        }
        for t in tickets {
            t.wait().unwrap();
        }
    }
    let key = checkpoint::PublicKey::from_file(&dir.path().join(checkpoint::PUB_FILE)).unwrap();
    let mut g = c.benchmark_group("verify");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(VERIFY_RECORDS));
    g.bench_function("verify_dir_200k", |b| {
        b.iter(|| {
            let r = verify_dir(dir.path(), Some(&key), None).unwrap();
            assert!(r.is_ok(), "{r:?}");
            assert_eq!(r.records, VERIFY_RECORDS);
        })
    });
    g.bench_function("verify_dir_200k_reference", |b| {
        b.iter(|| {
            let r = verify::verify_dir_reference(dir.path(), Some(&key), None).unwrap();
            assert!(r.is_ok(), "{r:?}");
            assert_eq!(r.records, VERIFY_RECORDS);
        })
    });
    g.bench_function("open_200k", |b| {
        b.iter(|| {
            let (log, rep) = Log::open(
                dir.path(),
                LogOptions {
                    node_id: "bench".into(),
                    ..LogOptions::default()
                },
            )
            .unwrap();
            assert_eq!(rep.records, VERIFY_RECORDS);
            drop(log);
        })
    });
    g.finish();
}

criterion_group!(benches, appends, verify);
criterion_main!(benches);
