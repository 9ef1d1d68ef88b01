//! Where the identity store lives: `arbiter.db` in the data directory (the embedded default),
//! or the PostgreSQL database of `--store` / `ARBITER_STORE`, shared by a fleet. Set once, from
//! the global flags, before any command runs.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use arbiter_pdp::identity::STORE_FILE;
use arbiter_store::{Location, PgOptions, Store};

/// The PostgreSQL store of this run, if `--store` named one.
static SHARED: OnceLock<Option<Location>> = OnceLock::new();

/// Longest `--store-grace`.
const MAX_GRACE: Duration = Duration::from_secs(3_600);

/// Reads `--store` and `--store-grace`.
pub fn configure(url: Option<&str>, grace: &str) -> anyhow::Result<()> {
    let location = match url.map(str::trim).filter(|u| !u.is_empty()) {
        None => None,
        Some(url) => {
            let grace = parse_grace(grace)?;
            let options = PgOptions {
                grace,
                // Confirmed several times per grace period, at most every 500 ms.
                reconcile: (grace / 4).clamp(Duration::from_millis(50), Duration::from_millis(500)),
                ..PgOptions::default()
            };
            Some(Location::parse_url(url, options).context("`--store`")?)
        }
    };
    // Set once per process; a second call (tests driving `run` twice) keeps the first.
    let _ = SHARED.set(location);
    Ok(())
}

fn parse_grace(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let grace = match text.strip_suffix("ms") {
        Some(ms) => Duration::from_millis(ms.trim().parse::<u64>().map_err(|_| {
            anyhow::anyhow!("`--store-grace {text}`: expected e.g. `500ms`, `5s` or `1m`")
        })?),
        None => arbiter_pdp::admin::parse_duration(text)
            .map_err(|e| anyhow::anyhow!("`--store-grace {text}`: {e}"))?,
    };
    anyhow::ensure!(
        grace <= MAX_GRACE,
        "`--store-grace {text}`: at most one hour (a node would trust revoked credentials that long)"
    );
    Ok(grace)
}

/// The store's location for data directory `data`.
pub fn location(data: &Path) -> Location {
    match SHARED.get() {
        Some(Some(shared)) => shared.clone(),
        _ => Location::File(data.join(STORE_FILE)),
    }
}

/// The shared store of `--store`, if any.
pub fn shared() -> Option<Location> {
    SHARED.get().cloned().flatten()
}

/// Whether a store exists to read: the shared one, or the data directory's file.
pub fn exists(data: &Path) -> bool {
    matches!(SHARED.get(), Some(Some(_))) || data.join(STORE_FILE).exists()
}

/// Opens the store for data directory `data` (the file's directory must exist).
pub fn open(data: &Path) -> anyhow::Result<Arc<dyn Store>> {
    let location = location(data);
    location
        .open()
        .with_context(|| format!("cannot open the identity store at {}", location.describe()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn grace_reads_milliseconds_seconds_and_minutes_and_is_bounded() {
        assert_eq!(parse_grace("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_grace("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_grace("1m").unwrap(), Duration::from_secs(60));
        assert!(
            parse_grace("2h")
                .unwrap_err()
                .to_string()
                .contains("at most one hour")
        );
        assert!(parse_grace("fast").is_err());
        assert!(parse_grace("xms").is_err());
    }
}
