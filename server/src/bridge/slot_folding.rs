//! Slot folding in the server (contracts, "contact"): when two email or phone slots of a contact
//! hold the same normalized value (a lower-cased email; a phone in E.164 read in
//! `default_phone_region`), they are folded into the slot with the smaller id before the document
//! is pushed, so the same number added in two systems (or by an app next to a provider's copy)
//! is one entry everywhere, and later edits of it are one conflict on one slot.
//!
//! The fold is one change through the engine, written by the bridge that meets it first; it is
//! deterministic (smallest id survives), so two bridges folding concurrently agree. Must not:
//! fold anything but a contact's `emails` and `phones`.

use driftless_client_protocol::DocumentId;
use driftless_crdt_model::fold_contact_in;
use tracing::info;

use super::record::Record;
use super::{BridgeError, Runner};

impl Runner {
    /// Folds duplicate email and phone slots of contact `doc_id` (see the module docs). Returns
    /// whether it wrote.
    pub(super) async fn fold_duplicate_slots(
        &self,
        doc_id: &DocumentId,
    ) -> Result<bool, BridgeError> {
        let Some(am) = self.load(doc_id)? else {
            return Ok(false);
        };
        if driftless_crdt_model::record_type(&am).as_deref() != Some(driftless_crdt_model::CONTACT)
            || !self.linked_here(&am)
        {
            return Ok(false);
        }
        // Unreadable: the push reports it as this record's failure.
        let Ok(current) = driftless_crdt_model::read_contact(&am) else {
            return Ok(false);
        };
        let mut folded = current.clone();
        let folds = fold_contact_in(&mut folded, self.identities.region());
        if folds.is_empty() {
            return Ok(false);
        }
        let (hash, _) = self
            .write_diff(
                doc_id,
                &[],
                &Record::Contact(Box::new(current)),
                &Record::Contact(Box::new(folded)),
                &format!("bridge {}: fold slots holding the same value", self.id()),
            )
            .await?;
        if hash.is_some() {
            let folds: Vec<String> = folds
                .iter()
                .map(|f| format!("{} -> {}", f.absorbed, f.into))
                .collect();
            info!(bridge = %self.id(), doc = %doc_id, ?folds, "folded slots holding the same value");
        }
        Ok(hash.is_some())
    }
}
