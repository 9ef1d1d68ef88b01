//! The [`Decider`]: where an enforcement point's decisions come from.

use std::future::Future;
use std::pin::Pin;

use crate::{Ask, AuthError, DecideError, Verdict};

/// A boxed future, for the object-safe [`Decider`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What an enforcement point must still do with a batch of verdicts before it can act on
/// them (the SQL guard narrows the statement to the allowed rows): `Err(reason)` when it
/// cannot, and then every allow for some rows is a deny for that reason (see
/// [`Decider::decide_then`]).
pub type Settle<'a> = Box<dyn FnOnce(&[Verdict]) -> Result<(), String> + Send + 'a>;

/// Turns an allow for some rows that could not be applied into a deny for `reason`, naming
/// the allow (whose record says `allow`) in the agent's reason.
pub(crate) fn not_applied(v: &mut Verdict, reason: &str) {
    tracing::warn!(
        decision = v.decision_id.as_deref().unwrap_or(""),
        reason = %reason,
        "an allow for some rows could not be applied; the statement is denied"
    );
    v.allow = false;
    v.rows = None;
    v.reason_user = format!(
        "denied: {reason} (the decision point's allow{} was not applied)",
        v.decision_id
            .take()
            .map(|id| format!(" {id}"))
            .unwrap_or_default()
    );
}

/// The wait for the records of decisions already answered to be durable (see
/// [`Decider::decide_ahead`]): `Err` holds the deny that replaces an allow whose record could
/// not be written.
pub type Durable = BoxFuture<'static, Result<(), Verdict>>;

/// The verdicts of [`Decider::decide_ahead`], and the wait for their records when they came
/// before the records were durable.
pub type Ahead = (Vec<Verdict>, Option<Durable>);

/// [`decide_within`] with [`Decider::decide_ahead`]: the verdicts, and when they came before
/// their records were durable, the wait for that (which the caller must bound itself).
pub async fn decide_ahead_within(
    decider: &dyn Decider,
    timeout: std::time::Duration,
    credential: Option<&str>,
    asks: Vec<Ask>,
    settle: Settle<'_>,
) -> Result<Ahead, DecideError> {
    let asked = asks.len();
    let (verdicts, durable) =
        tokio::time::timeout(timeout, decider.decide_ahead(credential, asks, settle))
            .await
            .map_err(|_| DecideError::Deadline { after: timeout })??;
    counted(asked, &verdicts)?;
    Ok((verdicts, durable))
}

fn counted(asked: usize, verdicts: &[Verdict]) -> Result<(), DecideError> {
    if verdicts.len() != asked {
        return Err(DecideError::Count {
            asked,
            got: verdicts.len(),
        });
    }
    Ok(())
}

/// Decides `asks` with `decider` within `timeout` (the enforcement point's deadline for the
/// whole exchange), settling the verdicts with `settle` when given (see
/// [`Decider::decide_then`]): exactly one verdict per ask, or why there is none. This is how
/// every enforcement point asks.
pub async fn decide_within(
    decider: &dyn Decider,
    timeout: std::time::Duration,
    credential: Option<&str>,
    asks: Vec<Ask>,
    settle: Option<Settle<'_>>,
) -> Result<Vec<Verdict>, DecideError> {
    let asked = asks.len();
    let decided = match settle {
        Some(settle) => decider.decide_then(credential, asks, settle),
        None => decider.decide(credential, asks),
    };
    let verdicts = tokio::time::timeout(timeout, decided)
        .await
        .map_err(|_| DecideError::Deadline { after: timeout })??;
    counted(asked, &verdicts)?;
    Ok(verdicts)
}

/// Takes decisions for the holder of a credential.
pub trait Decider: Send + Sync + std::fmt::Debug {
    /// Decides every ask, in order, for the agent whose credential is `credential`
    /// (`None`: none was presented, which is a refusal). An `Err` means no decision could be
    /// taken at all; the enforcement point then refuses (fail closed).
    fn decide<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
    ) -> BoxFuture<'a, Result<Vec<Verdict>, DecideError>>;

    /// Decides as [`Decider::decide`] does, then runs `settle` on the verdicts. When it fails,
    /// every allow for some rows becomes a deny for its reason. A decider that records the
    /// decisions itself settles them before recording, so the record is the answer; the
    /// default, for a decision point that records elsewhere, can only answer the deny without
    /// the allow's decision id, saying the allow was not applied.
    fn decide_then<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
        settle: Settle<'a>,
    ) -> BoxFuture<'a, Result<Vec<Verdict>, DecideError>> {
        Box::pin(async move {
            let mut verdicts = self.decide(credential, asks).await?;
            if let Err(reason) = settle(&verdicts) {
                for v in verdicts.iter_mut().filter(|v| v.allow && v.rows.is_some()) {
                    not_applied(v, &reason);
                }
            }
            Ok(verdicts)
        })
    }

    /// Decides as [`Decider::decide_then`] does, but may answer before the decisions'
    /// records are durable, for work whose result the enforcement point withholds until then
    /// (the SQL guard forwards a plain read at once and holds its rows back): the verdicts,
    /// and `Some` wait for durability, which the caller must see succeed before anything the
    /// decisions allowed becomes visible. A decider answers this way only when every verdict
    /// allows; the default, and a decision point that records elsewhere, answer as
    /// [`Decider::decide_then`] with nothing to wait for.
    fn decide_ahead<'a>(
        &'a self,
        credential: Option<&'a str>,
        asks: Vec<Ask>,
        settle: Settle<'a>,
    ) -> BoxFuture<'a, Result<Ahead, DecideError>> {
        Box::pin(async move {
            let verdicts = self.decide_then(credential, asks, settle).await?;
            Ok((verdicts, None))
        })
    }

    /// The policy version decisions are taken with now, as far as this decider knows: the
    /// active snapshot's for an embedded decision point, the last one a remote decision point
    /// reported. `None` when it does not know.
    fn policy_version(&self) -> Option<String> {
        None
    }

    /// Checks a credential before any decision: `Ok(Some(agent id))` for an accepted agent
    /// credential, `Err` for a refused one (its message may be shown to the caller), `Ok(None)` when this decider
    /// cannot tell without deciding (the credential is then checked with every decision).
    /// Nothing is recorded: a refused credential is recorded when it is used to decide.
    fn authenticate<'a>(
        &'a self,
        credential: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, AuthError>> {
        let _ = credential;
        Box::pin(async { Ok(None) })
    }
}
