//! The identity layer's cost on the decision path: authenticating an agent key whose
//! credential and agent are cached (the common case), alone and while the store is busy
//! writing (the flusher's last-used times, an administrator's change).
//!
//! Variants:
//! - `hit`: `Identity::authenticate` of a valid agent key, cache warm, nothing else running —
//!   medians of interleaved slices, as the other benches;
//! - `hit, store writing`: the same while another thread writes to the store without pause
//!   (bookkeeping writes, each a committed and synced SQLite transaction); per-call latency
//!   percentiles, since a call that waits behind a write shows in the tail, not the median.
//!
//! Run: `cargo bench -p arbiter-pdp --bench identity` (`-- --quick` for a short run).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arbiter_pdp::identity::{Caller, Identity, IdentitySettings, Source, now_us};
use arbiter_store::{Actor, Environment, NewAgent};
use serde_json::Map;

fn setup(data: &std::path::Path) -> (Arc<Identity>, String, String) {
    let identity = Arc::new(Identity::open(data, IdentitySettings::default()).unwrap());
    let store = identity.store();
    let actor = Actor::system("bench");
    store
        .register_agent(
            &NewAgent {
                id: "bench-bot".to_owned(),
                name: "bench bot".to_owned(),
                owner: "bench@example.com".to_owned(),
                purpose: "benchmarks".to_owned(),
                environment: Environment::Prod,
                attributes: Map::new(),
            },
            &actor,
            now_us(),
        )
        .unwrap();
    let issued =
        arbiter_pdp::admin::issue_key(store.as_ref(), "bench-bot", "bench", None, &actor, now_us())
            .unwrap();
    let key = issued.secret.expose().to_owned();
    (identity, key, issued.credential.id)
}

fn authenticate(identity: &Identity, key: &str) {
    let source = Source {
        address: "127.0.0.1",
        enforcement_point: "authzen",
        session: None,
    };
    match identity.authenticate(Some(black_box(key)), &source, now_us()) {
        Ok(Caller::Agent(a)) => {
            black_box(a);
        }
        other => panic!("the key was refused: {other:?}"),
    }
}

/// Nanoseconds per call of `f` over `slice`.
fn time_slice(f: &mut dyn FnMut(), slice: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < slice {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 5 } else { 15 };
    let slice = Duration::from_millis(if quick { 60 } else { 200 });

    let data = tempfile::tempdir().unwrap();
    let (identity, key, credential_id) = setup(data.path());
    authenticate(&identity, &key);

    let mut hit = Vec::new();
    for _ in 0..rounds {
        hit.push(time_slice(&mut || authenticate(&identity, &key), slice));
    }
    println!("hit                      median {:>9.0} ns", median(hit));

    // The same with a writer on the store: what the flusher does once a second, here without
    // pause, so that every call can meet a write in progress.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (identity, stop, credential_id) = (
            Arc::clone(&identity),
            Arc::clone(&stop),
            credential_id.clone(),
        );
        std::thread::spawn(move || {
            let mut writes = 0u64;
            while !stop.load(Ordering::Relaxed) {
                identity
                    .store()
                    .touch_credentials(&[(credential_id.clone(), now_us())])
                    .unwrap();
                writes += 1;
            }
            writes
        })
    };
    let calls = if quick { 2_000 } else { 20_000 };
    let mut latencies = Vec::with_capacity(calls);
    let started = Instant::now();
    for _ in 0..calls {
        let t = Instant::now();
        authenticate(&identity, &key);
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    latencies.sort();
    let waited = latencies
        .iter()
        .filter(|l| **l > Duration::from_millis(1))
        .count();
    println!(
        "hit, store writing       p50 {:>9.1?}  p99 {:>9.1?}  p99.9 {:>9.1?}  max {:>9.1?}  \
         calls over 1 ms: {waited}  ({calls} calls, {writes} writes in {elapsed:.1?})",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        latencies[latencies.len() - 1],
    );
}
