//! Hot reload: a background thread polls the policy directory and reloads on change.
//!
//! Polling a cheap fingerprint (names, sizes and modification times of the files that make up
//! a policy directory) works on every file system, including network and container mounts
//! where change notifications are lost, and it never misses an edit made while a reload runs.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use crate::Pdp;

/// Stops the watcher when dropped.
#[derive(Debug)]
pub struct WatchHandle {
    stop: Arc<AtomicBool>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Pdp {
    /// Starts polling the source directory every `interval`; reloads when it changes.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> Option<WatchHandle> {
        let dir = self.source()?.to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = WatchHandle { stop: stop.clone() };
        let pdp = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("arbiter-policy-watch".into())
            .spawn(move || {
                let mut last = fingerprint(&dir);
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(interval);
                    let Some(pdp) = pdp.upgrade() else { return };
                    let now = fingerprint(&dir);
                    // File times are coarse (a few ms): an edit right after the previous one
                    // can keep size and time. While any file is that fresh, compare content
                    // (reload is a no-op when the version is unchanged).
                    if now != last || is_racy(&now) {
                        last = now;
                        // Errors are recorded in the status and logged by reload itself.
                        let _ = pdp.reload();
                    }
                }
            });
        match spawned {
            Ok(_) => Some(handle),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the policy watcher; hot reload is off");
                None
            }
        }
    }
}

/// Whether any file changed so recently that an edit could hide behind its timestamp.
fn is_racy(fingerprint: &[(String, u64, u128)]) -> bool {
    const WINDOW: Duration = Duration::from_secs(2);
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    fingerprint
        .iter()
        .any(|(_, _, mtime)| now.saturating_sub(*mtime) < WINDOW.as_nanos())
}

/// A cheap summary of a policy directory's files: any edit, addition, removal or rename
/// changes it.
pub fn fingerprint(dir: &Path) -> Vec<(String, u64, u128)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            out.push((format!("unreadable:{}", d.display()), 0, 0));
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            out.push((path.to_string_lossy().into_owned(), meta.len(), mtime));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ReloadOutcome;
    use arbiter_types::{Action, Entity, EvaluationRequest};
    use std::time::Instant;

    fn request() -> EvaluationRequest {
        EvaluationRequest {
            subject: Entity {
                kind: "User".into(),
                id: "a".into(),
                properties: None,
            },
            action: Action {
                name: "read".into(),
                properties: None,
            },
            resource: Entity {
                kind: "Doc".into(),
                id: "d".into(),
                properties: None,
            },
            context: serde_json::Map::new(),
        }
    }

    fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn valid_change_swaps_invalid_change_keeps_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let staging = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.cedar");
        // Each version replaces the file whole (as deployments do): a watcher that looked
        // between a truncation and the write would otherwise see an empty, valid directory.
        let replace = |content: &str| {
            let tmp = staging.path().join("p.cedar");
            std::fs::write(&tmp, content).unwrap();
            std::fs::rename(&tmp, &file).unwrap();
        };
        replace("forbid(principal, action, resource);");
        let pdp = Arc::new(Pdp::load(dir.path()).unwrap());
        let _watch = pdp.watch(Duration::from_millis(25)).unwrap();
        assert!(!pdp.decide(&request()).outcome.is_allow());
        let v1 = pdp.status().active_version;

        replace("permit(principal, action, resource);");
        assert!(
            wait_for(|| pdp.decide(&request()).outcome.is_allow()),
            "valid change applied"
        );
        let v2 = pdp.status().active_version;
        assert_ne!(v1, v2);

        replace("permit(principal, action, resource");
        assert!(
            wait_for(|| pdp.status().last_error.is_some()),
            "invalid change noticed"
        );
        let status = pdp.status();
        assert_eq!(status.active_version, v2, "last good version keeps serving");
        assert!(status.last_error.unwrap().contains("p.cedar:1:"));
        assert!(pdp.decide(&request()).outcome.is_allow());
        assert_eq!(pdp.metrics().reloads(), (1, 1));
        assert!(
            pdp.render_metrics()
                .contains("arbiter_policy_reload_failing 1")
        );

        replace("forbid(principal, action, resource);");
        assert!(wait_for(|| pdp.status().last_error.is_none()), "recovers");
        assert_eq!(pdp.status().active_version, v1);
    }

    #[test]
    fn unchanged_content_is_not_a_swap() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.cedar"),
            "permit(principal, action, resource);",
        )
        .unwrap();
        let pdp = Pdp::load(dir.path()).unwrap();
        assert_eq!(pdp.reload().unwrap(), ReloadOutcome::Unchanged);
    }
}
