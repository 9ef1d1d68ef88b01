//! Tasks bound to the caller that created them.
//!
//! The upstream agent names a task when it answers a message; the gateway binds that id to the
//! caller (its agent id, or a hash of its credential when the decision point cannot say which
//! agent it is). Every later request that names the task — get, cancel, subscribe, push
//! configurations, a message continuing it — must come from the same caller; anyone else is
//! told the task does not exist, and the refusal is recorded. A task the gateway did not see
//! created (another gateway's, or one from before a restart, or one pushed out of the bounded
//! table) is refused the same way: the gateway cannot tell whose it is, so it fails closed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Tasks kept; past this the oldest binding is forgotten (its task becomes unreachable
/// through the gateway).
pub const MAX_TASKS: usize = 100_000;

/// Who created which task.
#[derive(Debug, Default)]
pub struct Tasks {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    owners: HashMap<String, String>,
    order: VecDeque<String>,
}

/// A task already bound to another caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenTask;

impl Tasks {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Binds `task` to `owner`; a task bound to another caller is refused.
    pub fn bind(&self, task: &str, owner: &str) -> Result<(), TakenTask> {
        let mut inner = self.lock();
        match inner.owners.get(task) {
            Some(o) if o == owner => return Ok(()),
            Some(_) => return Err(TakenTask),
            None => {}
        }
        if inner.owners.len() >= MAX_TASKS
            && let Some(oldest) = inner.order.pop_front()
        {
            inner.owners.remove(&oldest);
        }
        inner.owners.insert(task.to_owned(), owner.to_owned());
        inner.order.push_back(task.to_owned());
        Ok(())
    }

    /// Whether `task` was created by `owner`.
    pub fn owned_by(&self, task: &str, owner: &str) -> bool {
        self.lock().owners.get(task).is_some_and(|o| o == owner)
    }

    /// How many tasks are bound.
    pub fn len(&self) -> usize {
        self.lock().owners.len()
    }

    /// Whether no task is bound.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_task_belongs_to_its_creator() {
        let t = Tasks::default();
        t.bind("t1", "agent:a").unwrap();
        t.bind("t1", "agent:a").unwrap();
        assert_eq!(t.bind("t1", "agent:b"), Err(TakenTask));
        assert!(t.owned_by("t1", "agent:a"));
        assert!(!t.owned_by("t1", "agent:b"));
        assert!(!t.owned_by("t2", "agent:a"));
        assert_eq!(t.len(), 1);
    }
}
