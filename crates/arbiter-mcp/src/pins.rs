//! Tool pins on the gateway's request path, without blocking its runtime.
//!
//! Every `tools/list` answer and every `tools/call` checks the announced definition against
//! its pin ([`Store::check_tool`]): a store read, and on a tool's first use (or a changed
//! definition) a write, which may wait up to the store's busy timeout for another process.
//! [`Pins`] keeps what it has seen match, stamped with the store's generation (which every
//! pin change moves, whoever makes it), and answers a repeat from memory after the store's
//! generation check that waits for nothing ([`Store::generation_now`]). Anything else — a tool
//! not seen yet, a different definition, a generation that moved — is checked on the blocking
//! pool, bounded by [`arbiter_pdp::LOOKUP_TIMEOUT`]. A check that fails or runs out of time is
//! an error, which the session answers as a refusal.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arbiter_store::{PinCheck, Store, StoreError};

/// Entries kept before the memory is simply cleared.
const MAX_KNOWN: usize = 10_000;

/// Why a pin could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the pin check did not finish within {} s", arbiter_pdp::LOOKUP_TIMEOUT.as_secs())]
    TimedOut,
    #[error("the pin check failed: {0}")]
    Failed(String),
}

/// The tool pins of a gateway.
#[derive(Debug)]
pub struct Pins {
    store: Arc<dyn Store>,
    known: Mutex<Known>,
}

/// Definitions known to match their pins, as of one store generation.
#[derive(Debug, Default)]
struct Known {
    generation: u64,
    /// `(server, tool)` → the hash that matched.
    matching: HashMap<(String, String), String>,
}

impl Pins {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            known: Mutex::new(Known::default()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// [`Store::check_tool`], answered from memory when the same definition matched before
    /// and no pin changed since.
    pub async fn check(
        &self,
        server: &str,
        tool: &str,
        hash: &str,
        definition: &str,
        now_us: i64,
    ) -> Result<PinCheck, PinError> {
        if let Ok(Some(generation)) = self.store.generation_now() {
            let known = self.known();
            if known.generation == generation
                && known
                    .matching
                    .get(&(server.to_owned(), tool.to_owned()))
                    .is_some_and(|h| h == hash)
            {
                return Ok(PinCheck::Matches);
            }
        }
        let store = Arc::clone(&self.store);
        let (s, t, h, d) = (
            server.to_owned(),
            tool.to_owned(),
            hash.to_owned(),
            definition.to_owned(),
        );
        let checked = tokio::task::spawn_blocking(move || {
            // The generation before the check: a change after it moves the generation, so
            // what is remembered under it is never served once stale.
            let generation = store.generation()?;
            let check = store.check_tool(&s, &t, &h, &d, now_us)?;
            Ok::<_, StoreError>((generation, check))
        });
        let (generation, check) =
            match tokio::time::timeout(arbiter_pdp::LOOKUP_TIMEOUT, checked).await {
                Ok(Ok(result)) => result?,
                Ok(Err(e)) => return Err(PinError::Failed(e.to_string())),
                Err(_) => return Err(PinError::TimedOut),
            };
        // A pin just made (`Pinned`) moved the generation: the next check reads it back.
        if check == PinCheck::Matches {
            let mut known = self.known();
            if known.generation != generation || known.matching.len() >= MAX_KNOWN {
                known.generation = generation;
                known.matching.clear();
            }
            known
                .matching
                .insert((server.to_owned(), tool.to_owned()), hash.to_owned());
        }
        Ok(check)
    }
}
