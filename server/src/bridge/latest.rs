//! `authority = "latest"`: when a `[[policies]]` field of this name holds concurrent values, the
//! newest edit wins. Each value's time is found through the Automerge change that wrote it:
//!
//! - a value a bridge imported: the provider's modification time of the record when the bridge
//!   pulled it (HubSpot's last-modified property), or, where the provider gives none (CalDAV,
//!   CardDAV, Google, Graph for now), the time the server received it; recorded per change in the
//!   bridge store (`bridge_change_times`) when the pull writes it;
//! - a value an app wrote: the change's own commit time (Automerge clients stamp changes with
//!   their clock, in seconds), never later than the server's clock. The server keeps no receipt log
//!   per change yet, so this is the client's time bounded by the server's, not the time the server
//!   received it.
//!
//! The winner is written into the document before the push (like an authority bridge's value),
//! so every replica reads it and every other linked system gets it once. Must not: decide
//! anything itself (the rule is `Policies::latest_resolutions`, pure).

use std::collections::BTreeMap;

use automerge::{ActorId, AutoCommit, ChangeHash};
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::{ConflictValue, FieldConflict};
use serde_json::Value;
use tracing::warn;

use super::{BridgeError, Runner, unix_ms};

/// The changes of a document by actor: (first op counter, last op counter, hash, commit time s).
struct ChangeIndex(BTreeMap<ActorId, Vec<(u64, u64, ChangeHash, i64)>>);

impl ChangeIndex {
    fn of(am: &mut AutoCommit) -> Self {
        let mut by_actor: BTreeMap<ActorId, Vec<(u64, u64, ChangeHash, i64)>> = BTreeMap::new();
        for change in am.get_changes(&[]) {
            let start = change.start_op().get();
            let last = start + (change.len() as u64).saturating_sub(1);
            by_actor
                .entry(change.actor_id().clone())
                .or_default()
                .push((start, last, change.hash(), change.timestamp()));
        }
        Self(by_actor)
    }

    /// The change holding operation (`actor`, `counter`): its hash and commit time (seconds).
    fn change_of(&self, actor: &ActorId, counter: u64) -> Option<(ChangeHash, i64)> {
        self.0
            .get(actor)?
            .iter()
            .find(|(start, last, _, _)| (*start..=*last).contains(&counter))
            .map(|(_, _, hash, time)| (*hash, *time))
    }
}

impl Runner {
    /// Records that change `hash` of `doc_id`, written from the provider resource `body`, carries
    /// an edit made at the provider's modification time (or now, where it gives none).
    pub(super) fn record_change_time(&self, doc_id: &DocumentId, hash: ChangeHash, body: &str) {
        let at = self.provider.modified_at_ms(body).unwrap_or_else(unix_ms);
        if let Err(e) = self
            .store
            .put_change_time(&doc_id.to_string(), &hash.to_string(), at)
        {
            // Only `latest` policies lose precision (they fall back to the change's own time).
            warn!(bridge = %self.id(), doc = %doc_id, error = %e, "could not record an edit's time");
        }
    }

    /// The `latest` resolutions of the document's conflicts (see the module docs).
    pub(super) fn latest_resolutions(
        &self,
        record_type: &str,
        doc_id: &DocumentId,
        am: &AutoCommit,
        conflicts: &[FieldConflict],
    ) -> Result<Vec<(String, Value)>, BridgeError> {
        if !self.policies.has_latest_for(record_type) || conflicts.is_empty() {
            return Ok(Vec::new());
        }
        let mut am = am.clone();
        let index = ChangeIndex::of(&mut am);
        let doc = doc_id.to_string();
        let now = unix_ms();
        let mut times: BTreeMap<ChangeHash, Option<u64>> = BTreeMap::new();
        for conflict in conflicts {
            for value in &conflict.values {
                let Some((hash, seconds)) = value
                    .op
                    .as_ref()
                    .and_then(|(actor, counter)| index.change_of(actor, *counter))
                else {
                    continue;
                };
                if times.contains_key(&hash) {
                    continue;
                }
                let recorded = self
                    .store
                    .change_time(&doc, &hash.to_string())
                    .map_err(|e| self.local(e))?;
                let stamped = u64::try_from(seconds)
                    .ok()
                    .filter(|s| *s > 0)
                    .map(|s| s.saturating_mul(1000).min(now));
                times.insert(hash, recorded.or(stamped));
            }
        }
        let time_of = |v: &ConflictValue| {
            let (actor, counter) = v.op.as_ref()?;
            let (hash, _) = index.change_of(actor, *counter)?;
            times.get(&hash).copied().flatten()
        };
        Ok(self
            .policies
            .latest_resolutions(record_type, conflicts, time_of))
    }
}
