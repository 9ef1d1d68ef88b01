//! Waiting for a condition instead of sleeping for a time.
//!
//! A fixed sleep is a guess at how long something takes; on a busy machine the guess is
//! wrong and the test fails for nothing. These helpers poll the condition itself, often at
//! first and less often later, until it holds or a deadline passes; the deadline is only
//! reached when the thing waited for really did not happen, and the panic names it.

use std::time::{Duration, Instant};

/// The deadline for waiting on something that should happen in well under a second: long
/// enough that a loaded machine never reaches it, short enough that a broken test ends.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The first pause between two polls; it doubles up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_millis(100);

/// Polls `cond` until it returns `true`; panics if `within` passes first, saying that `what`
/// did not happen (`what` reads as a clause: "the server answers /healthz").
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    wait_for(what, within, || cond().then_some(()));
}

/// Polls `f` until it returns `Some`, and returns that; panics like [`wait_until`].
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            timed_out(what, within);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// [`wait_until`] for a test on a tokio runtime: the pauses yield to the runtime, so the
/// server under test keeps running on the same thread.
#[cfg(feature = "tokio")]
pub async fn wait_until_async(what: &str, within: Duration, mut cond: impl AsyncFnMut() -> bool) {
    wait_for_async(what, within, async || cond().await.then_some(())).await;
}

/// [`wait_for`] for a test on a tokio runtime.
#[cfg(feature = "tokio")]
pub async fn wait_for_async<T>(
    what: &str,
    within: Duration,
    mut f: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    let mut pause = FIRST_PAUSE;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            timed_out(what, within);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

fn timed_out(what: &str, within: Duration) -> ! {
    panic!("timed out after {within:?} waiting until {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_as_soon_as_the_condition_holds() {
        let mut polls = 0;
        let got = wait_for("the third poll", PATIENCE, || {
            polls += 1;
            (polls == 3).then_some(polls)
        });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "waiting until the moon is made of cheese")]
    fn names_what_did_not_happen() {
        wait_until(
            "the moon is made of cheese",
            Duration::from_millis(30),
            || false,
        );
    }

    #[tokio::test]
    #[cfg(feature = "tokio")]
    async fn the_async_form_polls_too() {
        let mut polls = 0;
        wait_until_async("the second poll", PATIENCE, async || {
            polls += 1;
            polls == 2
        })
        .await;
        assert_eq!(polls, 2);
    }
}
