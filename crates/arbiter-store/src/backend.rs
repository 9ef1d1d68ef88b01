//! The [`Store`] written once over a [`Backend`]: every method is one transaction of the
//! rules in the modules ([`agents`], [`credentials`], …), run by whichever engine holds the
//! data. A backend provides only transactions and the change counter.

use crate::audit::{self, Verifier};
use crate::db::Db;
use crate::model::{
    Actor, Agent, AgentFilter, AgentPatch, AgentStatus, AuditEvent, Credential, CredentialFilter,
    Discovered, NewAgent, NewCredential, PinCheck, Sighting, SightingsReport, ToolPin,
};
use crate::model::{
    Approval, ApprovalLookup, ApprovalState, ChargeOutcome, NewApproval, NewCharge,
};
use crate::model::{NewNode, NewPolicyVersion, Node, PolicyActivation, PolicyVersion};
use crate::{
    Store, StoreError, agents, approvals, charges, credentials, discovered, nodes, pins,
    policy_versions, session_labels, validate,
};

/// An engine the store runs on.
pub(crate) trait Backend: Send + Sync + std::fmt::Debug {
    /// Runs `f` in a read transaction (one consistent snapshot).
    fn read<T>(&self, f: impl FnOnce(&dyn Db) -> Result<T, StoreError>) -> Result<T, StoreError>;

    /// Runs `f` in a write transaction; writers (of every process) take turns.
    fn write<T>(&self, f: impl FnOnce(&dyn Db) -> Result<T, StoreError>) -> Result<T, StoreError>;

    /// Runs `f` in a write transaction that only writers naming the same `key` wait for (a
    /// backend that has one write lock takes it).
    fn write_keyed<T>(
        &self,
        key: &str,
        f: impl FnOnce(&dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let _ = key;
        self.write(f)
    }

    /// [`Store::generation`].
    fn counter(&self) -> Result<u64, StoreError>;

    /// [`Store::generation_now`].
    fn counter_now(&self) -> Result<Option<u64>, StoreError>;

    /// [`Store::health`].
    fn backend_health(&self) -> crate::Health;

    /// [`Store::shared`].
    const SHARED: bool;

    /// Runs an audited change after checking the actor.
    fn change<T>(
        &self,
        actor: &Actor,
        f: impl FnOnce(&dyn Db) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        validate::actor(actor)?;
        self.write(f)
    }
}

/// Implements [`Store`] for a [`Backend`]: every method one transaction of the rules.
macro_rules! store_on_backend {
    ($backend:ty) => {
        impl Store for $backend {
            fn generation(&self) -> Result<u64, StoreError> {
                self.counter()
            }

            fn generation_now(&self) -> Result<Option<u64>, StoreError> {
                self.counter_now()
            }

            fn health(&self) -> crate::Health {
                self.backend_health()
            }

            fn shared(&self) -> bool {
                <$backend as Backend>::SHARED
            }

            fn register_agent(
                &self,
                new: &NewAgent,
                actor: &Actor,
                now_us: i64,
            ) -> Result<Agent, StoreError> {
                self.change(actor, |tx| agents::register(tx, new, actor, now_us))
            }

            fn agent(&self, id: &str) -> Result<Option<Agent>, StoreError> {
                self.read(|conn| agents::get(conn, id))
            }

            fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<Agent>, StoreError> {
                self.read(|conn| agents::list(conn, filter))
            }

            fn update_agent(
                &self,
                id: &str,
                patch: &AgentPatch,
                actor: &Actor,
                now_us: i64,
            ) -> Result<Agent, StoreError> {
                self.change(actor, |tx| agents::update(tx, id, patch, actor, now_us))
            }

            fn set_agent_status(
                &self,
                id: &str,
                status: AgentStatus,
                actor: &Actor,
                now_us: i64,
            ) -> Result<Agent, StoreError> {
                self.change(actor, |tx| {
                    agents::set_status(tx, id, status, actor, now_us)
                })
            }

            fn touch_agents(&self, seen: &[(String, i64)]) -> Result<usize, StoreError> {
                if seen.is_empty() {
                    return Ok(0);
                }
                self.write(|tx| agents::touch(tx, seen))
            }

            fn insert_credential(
                &self,
                new: &NewCredential,
                actor: &Actor,
                now_us: i64,
            ) -> Result<Credential, StoreError> {
                self.change(actor, |tx| credentials::insert(tx, new, actor, now_us))
            }

            fn credential(&self, id: &str) -> Result<Option<Credential>, StoreError> {
                self.read(|conn| credentials::get(conn, id))
            }

            fn list_credentials(
                &self,
                filter: &CredentialFilter,
            ) -> Result<Vec<Credential>, StoreError> {
                self.read(|conn| credentials::list(conn, filter))
            }

            fn rotate_credential(
                &self,
                old_id: &str,
                new: &NewCredential,
                old_expires_at_us: i64,
                actor: &Actor,
                now_us: i64,
            ) -> Result<(Credential, Credential), StoreError> {
                self.change(actor, |tx| {
                    credentials::rotate(tx, old_id, new, old_expires_at_us, actor, now_us)
                })
            }

            fn revoke_credential(
                &self,
                id: &str,
                reason: &str,
                actor: &Actor,
                now_us: i64,
            ) -> Result<Credential, StoreError> {
                self.change(actor, |tx| {
                    credentials::revoke(tx, id, reason, actor, now_us)
                })
            }

            fn revoke_agent_credentials(
                &self,
                agent_id: &str,
                reason: &str,
                actor: &Actor,
                now_us: i64,
            ) -> Result<usize, StoreError> {
                self.change(actor, |tx| {
                    credentials::revoke_for_agent(tx, agent_id, reason, actor, now_us)
                })
            }

            fn touch_credentials(&self, used: &[(String, i64)]) -> Result<usize, StoreError> {
                if used.is_empty() {
                    return Ok(0);
                }
                self.write(|tx| credentials::touch(tx, used))
            }

            fn record_sightings(
                &self,
                sightings: &[Sighting],
            ) -> Result<SightingsReport, StoreError> {
                if sightings.is_empty() {
                    return Ok(SightingsReport::default());
                }
                self.write(|tx| discovered::record(tx, sightings))
            }

            fn list_discovered(
                &self,
                include_adopted: bool,
            ) -> Result<Vec<Discovered>, StoreError> {
                self.read(|conn| discovered::list(conn, include_adopted))
            }

            fn discovered(&self, id: i64) -> Result<Option<Discovered>, StoreError> {
                self.read(|conn| discovered::get(conn, id))
            }

            fn mark_adopted(
                &self,
                id: i64,
                agent_id: &str,
                actor: &Actor,
                now_us: i64,
            ) -> Result<Discovered, StoreError> {
                self.change(actor, |tx| {
                    discovered::adopt(tx, id, agent_id, actor, now_us)
                })
            }

            /// Validates, then reads `hash, observed_hash` by primary key; only a
            /// first use or a new different hash opens a write transaction, which
            /// re-reads the row before deciding.
            fn check_tool(
                &self,
                server: &str,
                tool: &str,
                hash: &str,
                definition: &str,
                now_us: i64,
            ) -> Result<PinCheck, StoreError> {
                pins::validate_check(server, tool, hash, definition)?;
                if let Some(decided) =
                    self.read(|conn| pins::check_read(conn, server, tool, hash))?
                {
                    return Ok(decided);
                }
                self.change(&pins::first_use_actor(), |tx| {
                    pins::check(tx, server, tool, hash, definition, now_us)
                })
            }

            fn tool_pin(&self, server: &str, tool: &str) -> Result<Option<ToolPin>, StoreError> {
                self.read(|conn| pins::get(conn, server, tool))
            }

            fn list_tool_pins(&self, server: Option<&str>) -> Result<Vec<ToolPin>, StoreError> {
                self.read(|conn| pins::list(conn, server))
            }

            fn approve_tool(
                &self,
                server: &str,
                tool: &str,
                expected_hash: Option<&str>,
                actor: &Actor,
                now_us: i64,
            ) -> Result<ToolPin, StoreError> {
                self.change(actor, |tx| {
                    pins::approve(tx, server, tool, expected_hash, actor, now_us)
                })
            }

            fn pin_tools(
                &self,
                server: &str,
                pins: &[(String, String)],
                actor: &Actor,
                now_us: i64,
            ) -> Result<usize, StoreError> {
                self.change(actor, |tx| pins::pin_many(tx, server, pins, actor, now_us))
            }

            fn unpin_tool(
                &self,
                server: &str,
                tool: &str,
                actor: &Actor,
                now_us: i64,
            ) -> Result<(), StoreError> {
                self.change(actor, |tx| pins::unpin(tx, server, tool, actor, now_us))
            }

            fn approval_for(
                &self,
                new: &NewApproval,
                now_us: i64,
            ) -> Result<ApprovalLookup, StoreError> {
                self.write(|tx| approvals::lookup(tx, new, now_us))
            }

            fn charge(
                &self,
                charge: &NewCharge<'_>,
                now_us: i64,
            ) -> Result<ChargeOutcome, StoreError> {
                self.write_keyed(charge.key, |tx| charges::charge(tx, charge, now_us))
            }

            fn uncharge(&self, decision_id: &str) -> Result<usize, StoreError> {
                self.write(|tx| charges::uncharge(tx, decision_id))
            }

            fn register_node(
                &self,
                new: &NewNode,
                actor: &Actor,
                now_us: i64,
            ) -> Result<Node, StoreError> {
                self.change(actor, |tx| nodes::register(tx, new, actor, now_us))
            }

            fn publish_node_checkpoint(
                &self,
                id: &str,
                tree_size: u64,
                checkpoint: &str,
                now_us: i64,
            ) -> Result<(), StoreError> {
                self.write(|tx| nodes::publish_checkpoint(tx, id, tree_size, checkpoint, now_us))
            }

            fn node(&self, id: &str) -> Result<Option<Node>, StoreError> {
                self.read(|conn| nodes::get(conn, id))
            }

            fn nodes(&self) -> Result<Vec<Node>, StoreError> {
                self.read(nodes::list)
            }

            fn session_labels(
                &self,
                owner: &str,
                session: &str,
                since_us: i64,
            ) -> Result<Vec<String>, StoreError> {
                self.read(|conn| session_labels::get(conn, owner, session, since_us))
            }

            fn add_session_labels(
                &self,
                owner: &str,
                session: &str,
                labels: &[String],
                decision_id: &str,
                now_us: i64,
            ) -> Result<(), StoreError> {
                let key = format!("session:{owner}:{session}");
                self.write_keyed(&key, |tx| {
                    session_labels::add(tx, owner, session, labels, decision_id, now_us)
                })
            }

            fn session_calls(
                &self,
                owner: &str,
                session: &str,
                call_key: &str,
                since_us: i64,
                now_us: i64,
            ) -> Result<session_labels::CallCounts, StoreError> {
                self.read(|conn| {
                    session_labels::calls(conn, owner, session, call_key, since_us, now_us)
                })
            }

            fn add_session_call(
                &self,
                owner: &str,
                session: &str,
                call_key: &str,
                decision_id: &str,
                since_us: i64,
                now_us: i64,
            ) -> Result<(), StoreError> {
                let key = format!("session:{owner}:{session}");
                self.write_keyed(&key, |tx| {
                    session_labels::add_call(
                        tx,
                        owner,
                        session,
                        call_key,
                        decision_id,
                        since_us,
                        now_us,
                    )
                })
            }

            fn forget_session_effects(&self, decision_id: &str) -> Result<usize, StoreError> {
                self.write(|tx| session_labels::forget(tx, decision_id))
            }

            fn unuse_approval(&self, id: &str, decision_id: &str) -> Result<(), StoreError> {
                self.write(|tx| approvals::unuse(tx, id, decision_id))
            }

            fn decide_approval(
                &self,
                id: &str,
                approve: bool,
                approver: &str,
                reason: &str,
                actor: &Actor,
                now_us: i64,
            ) -> Result<Approval, StoreError> {
                self.change(actor, |tx| {
                    approvals::decide(tx, id, approve, approver, reason, actor, now_us)
                })
            }

            fn approval(&self, id: &str) -> Result<Option<Approval>, StoreError> {
                self.read(|conn| approvals::get(conn, id))
            }

            fn approval_steps_to_log(&self, limit: usize) -> Result<Vec<Approval>, StoreError> {
                self.read(|conn| approvals::steps_to_log(conn, limit))
            }

            fn approval_step_logged(&self, id: &str, now_us: i64) -> Result<(), StoreError> {
                self.write(|tx| approvals::step_logged(tx, id, now_us))
            }

            fn list_approvals(
                &self,
                state: Option<ApprovalState>,
                limit: usize,
            ) -> Result<Vec<Approval>, StoreError> {
                self.read(|conn| approvals::list(conn, state, limit))
            }

            fn propose_policy_version(
                &self,
                new: &NewPolicyVersion,
                actor: &Actor,
                now_us: i64,
            ) -> Result<PolicyVersion, StoreError> {
                self.change(actor, |tx| policy_versions::propose(tx, new, actor, now_us))
            }

            fn approve_policy_version(
                &self,
                version: &str,
                approver: &str,
                actor: &Actor,
                now_us: i64,
            ) -> Result<PolicyVersion, StoreError> {
                self.change(actor, |tx| {
                    policy_versions::approve(tx, version, approver, actor, now_us)
                })
            }

            fn reject_policy_version(
                &self,
                version: &str,
                by: &str,
                reason: &str,
                actor: &Actor,
                now_us: i64,
            ) -> Result<PolicyVersion, StoreError> {
                self.change(actor, |tx| {
                    policy_versions::reject(tx, version, by, reason, actor, now_us)
                })
            }

            fn activate_policy_version(
                &self,
                version: &str,
                by: &str,
                actor: &Actor,
                now_us: i64,
            ) -> Result<PolicyActivation, StoreError> {
                self.change(actor, |tx| {
                    policy_versions::activate(tx, version, by, actor, now_us)
                })
            }

            fn rollback_policy_version(
                &self,
                by: &str,
                actor: &Actor,
                now_us: i64,
            ) -> Result<PolicyActivation, StoreError> {
                self.change(actor, |tx| policy_versions::rollback(tx, by, actor, now_us))
            }

            fn policy_version(&self, version: &str) -> Result<Option<PolicyVersion>, StoreError> {
                self.read(|conn| policy_versions::get(conn, version))
            }

            fn resolve_policy_version(&self, version: &str) -> Result<String, StoreError> {
                self.read(|conn| policy_versions::resolve(conn, version))
            }

            fn list_policy_versions(&self, limit: usize) -> Result<Vec<PolicyVersion>, StoreError> {
                self.read(|conn| policy_versions::list(conn, limit))
            }

            fn policy_activations(
                &self,
                limit: usize,
            ) -> Result<Vec<PolicyActivation>, StoreError> {
                self.read(|conn| policy_versions::activations(conn, limit))
            }

            fn policy_shadow(&self) -> Result<Option<String>, StoreError> {
                self.read(policy_versions::shadow)
            }

            fn set_policy_shadow(
                &self,
                version: Option<&str>,
                actor: &Actor,
                now_us: i64,
            ) -> Result<(), StoreError> {
                self.change(actor, |tx| {
                    policy_versions::set_shadow(tx, version, actor, now_us)
                })
            }

            fn required_policy_approvals(&self) -> Result<u32, StoreError> {
                self.read(policy_versions::required_approvals)
            }

            fn set_required_policy_approvals(
                &self,
                n: u32,
                actor: &Actor,
                now_us: i64,
            ) -> Result<(), StoreError> {
                self.change(actor, |tx| {
                    policy_versions::set_required_approvals(tx, n, actor, now_us)
                })
            }

            fn list_audit(
                &self,
                after_seq: Option<u64>,
                limit: usize,
            ) -> Result<Vec<AuditEvent>, StoreError> {
                self.read(|conn| audit::list(conn, after_seq, limit))
            }

            fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
                self.read(audit::head)
            }

            /// Reads the chain in batches, releasing the lock between them so that
            /// a long verification does not stall the decision path; events
            /// appended meanwhile are verified too.
            fn verify_audit(&self) -> Result<u64, StoreError> {
                let mut verifier = Verifier::new();
                loop {
                    let batch = self.read(|conn| {
                        audit::stored_after(conn, verifier.last_seq(), audit::VERIFY_BATCH)
                    })?;
                    verifier.check(&batch)?;
                    if batch.len() < audit::VERIFY_BATCH {
                        return Ok(verifier.last_seq());
                    }
                }
            }
        }
    };
}

store_on_backend!(crate::SqliteStore);
store_on_backend!(crate::PgStore);
