//! Decision and reload counters, exposed in the Prometheus text format.
//!
//! Plain atomics: recording a decision costs a few relaxed increments, so metrics never show
//! up on the decision path's profile.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arbiter_types::Outcome;

/// Upper bounds of the decision latency histogram, in microseconds.
const BUCKETS_US: [u64; 12] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000,
];

#[derive(Debug, Default)]
pub struct Metrics {
    allow: AtomicU64,
    deny: AtomicU64,
    buckets: [AtomicU64; BUCKETS_US.len()],
    sum_us: AtomicU64,
    reload_ok: AtomicU64,
    reload_failed: AtomicU64,
    unrecorded: AtomicU64,
    /// Shadow evaluations: the same verdict, allow→deny, deny→allow, an approval change.
    shadow: [AtomicU64; 4],
}

impl Metrics {
    pub fn record_decision(&self, outcome: Outcome, elapsed: Duration) {
        match outcome {
            Outcome::Allow => self.allow.fetch_add(1, Ordering::Relaxed),
            // Counted when evaluated: `require_approval` comes later, from an allow.
            Outcome::Deny | Outcome::RequireApproval => self.deny.fetch_add(1, Ordering::Relaxed),
        };
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        if let Some(bucket) = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .and_then(|i| self.buckets.get(i))
        {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A shadow evaluation and how it compared (`None`: the same verdict).
    pub fn record_shadow(&self, change: Option<crate::replay::Change>) {
        use crate::replay::Change;
        let i = match change {
            None => 0,
            Some(Change::AllowToDeny) => 1,
            Some(Change::DenyToAllow) => 2,
            Some(Change::Approval) => 3,
        };
        if let Some(c) = self.shadow.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A decision that was turned into a deny because its record could not be persisted.
    pub fn record_unrecorded(&self) {
        self.unrecorded.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_reload(&self, ok: bool) {
        if ok {
            self.reload_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reload_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Decisions so far, by outcome: (allow, deny).
    pub fn decisions(&self) -> (u64, u64) {
        (
            self.allow.load(Ordering::Relaxed),
            self.deny.load(Ordering::Relaxed),
        )
    }

    /// Reloads so far: (succeeded, failed).
    pub fn reloads(&self) -> (u64, u64) {
        (
            self.reload_ok.load(Ordering::Relaxed),
            self.reload_failed.load(Ordering::Relaxed),
        )
    }

    pub fn render(
        &self,
        active_version: &str,
        last_reload_failed: bool,
        log_healthy: Option<bool>,
    ) -> String {
        let (allow, deny) = self.decisions();
        let (ok, failed) = self.reloads();
        let mut out = String::with_capacity(2048);
        let _ = writeln!(
            out,
            "# HELP arbiter_decisions_total Decisions taken, by outcome."
        );
        let _ = writeln!(out, "# TYPE arbiter_decisions_total counter");
        let _ = writeln!(out, "arbiter_decisions_total{{outcome=\"allow\"}} {allow}");
        let _ = writeln!(out, "arbiter_decisions_total{{outcome=\"deny\"}} {deny}");
        let _ = writeln!(
            out,
            "# HELP arbiter_decision_duration_seconds Time to evaluate a decision."
        );
        let _ = writeln!(out, "# TYPE arbiter_decision_duration_seconds histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS_US.iter().zip(&self.buckets) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "arbiter_decision_duration_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1e6
            );
        }
        let total = allow + deny;
        let _ = writeln!(
            out,
            "arbiter_decision_duration_seconds_bucket{{le=\"+Inf\"}} {total}"
        );
        let _ = writeln!(
            out,
            "arbiter_decision_duration_seconds_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "arbiter_decision_duration_seconds_count {total}");
        let _ = writeln!(
            out,
            "# HELP arbiter_policy_reloads_total Policy reload attempts, by result."
        );
        let _ = writeln!(out, "# TYPE arbiter_policy_reloads_total counter");
        let _ = writeln!(
            out,
            "arbiter_policy_reloads_total{{result=\"success\"}} {ok}"
        );
        let _ = writeln!(
            out,
            "arbiter_policy_reloads_total{{result=\"failure\"}} {failed}"
        );
        let _ = writeln!(
            out,
            "# HELP arbiter_policy_reload_failing 1 when the last reload attempt was rejected."
        );
        let _ = writeln!(out, "# TYPE arbiter_policy_reload_failing gauge");
        let _ = writeln!(
            out,
            "arbiter_policy_reload_failing {}",
            u8::from(last_reload_failed)
        );
        let _ = writeln!(out, "# HELP arbiter_policy_info The active policy version.");
        let _ = writeln!(out, "# TYPE arbiter_policy_info gauge");
        let _ = writeln!(out, "arbiter_policy_info{{version=\"{active_version}\"}} 1");
        let _ = writeln!(
            out,
            "# HELP arbiter_decisions_unrecorded_total Decisions answered as denies because the decision log could not persist them."
        );
        let _ = writeln!(out, "# TYPE arbiter_decisions_unrecorded_total counter");
        let _ = writeln!(
            out,
            "arbiter_decisions_unrecorded_total {}",
            self.unrecorded.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP arbiter_shadow_decisions_total Decisions also evaluated by the shadow version, by how its verdict compares."
        );
        let _ = writeln!(out, "# TYPE arbiter_shadow_decisions_total counter");
        for (i, change) in ["same", "allow_to_deny", "deny_to_allow", "approval"]
            .iter()
            .enumerate()
        {
            let n = self.shadow.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
            let _ = writeln!(
                out,
                "arbiter_shadow_decisions_total{{change=\"{change}\"}} {n}"
            );
        }
        if let Some(healthy) = log_healthy {
            let _ = writeln!(
                out,
                "# HELP arbiter_decision_log_healthy 1 while the decision log persists records."
            );
            let _ = writeln!(out, "# TYPE arbiter_decision_log_healthy gauge");
            let _ = writeln!(out, "arbiter_decision_log_healthy {}", u8::from(healthy));
        }
        out
    }
}
