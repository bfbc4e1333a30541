//! The contacts side of the Graph provider (`kind = "microsoft_graph"`, `resource = "contacts"`):
//! a record is one Graph contact, its external id the contact's id and its shadow `raw` the
//! contact's JSON as Graph last sent it (so a PATCH carries only the fields whose canonical value
//! differs from it, and fields driftless does not map are never rewritten).
//!
//! - Pull: one [`ContactPull`] over `/me/contacts/delta`; the cursor is `{"deltaLink"}`, replayed
//!   verbatim. `@removed` entries (and, in a complete listing after a 410 `SyncStateNotFound`,
//!   known contacts missing from it) are deletes, applied by the runner under its delete rules.
//!   A listed contact equal to its shadow (our own write coming back) is not reported.
//! - Writes: `PATCH` with `If-Match: <@odata.etag>` (the change key; 412
//!   `ErrorIrresolvableConflict` hands Graph's current copy back as stale for the runner to
//!   merge), `POST /me/contacts`, `DELETE` with `If-Match`. 429 waits inside the machines.
//! - Translation is `driftless_bridges::graph::translate::contact_from_graph` (emails and phones
//!   keep their slot ids through crdt-model's `assign_slots`).
//!
//! Must not: touch documents or the bridge store.

use std::collections::{BTreeMap, BTreeSet};

use driftless_bridges::graph::sync::{
    ContactPull, WriteOp, WriteOutcome as GraphWriteOutcome, contacts_delta_url,
};
use driftless_bridges::graph::translate::{contact_create_body, contact_from_graph, contact_patch};
use driftless_bridges::sync::Listed;
use driftless_client_protocol::DocumentId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

use super::{GraphProvider, Side, retry};
use crate::bridge::BridgeError;
use crate::bridge::provider::{Changes, DeleteOutcome, Resource, WriteOutcome};
use crate::bridge::record::Record;
use crate::bridge::store::Shadow;
use crate::bridge::translate::new_slot_id;

/// The stored cursor of a contacts bridge.
#[derive(Debug, Serialize, Deserialize)]
struct ContactCursor {
    #[serde(rename = "deltaLink")]
    delta_link: String,
}

fn resource(row: &Value) -> Resource {
    Resource {
        id: row
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        etag: etag_of(row),
        raw: row.to_string(),
    }
}

fn etag_of(row: &Value) -> Option<String> {
    row.get("@odata.etag")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The canonical contact of a stored Graph contact; `existing` keeps its slot ids.
pub(super) fn translate(raw: &str, existing: Option<&Record>) -> Result<Record, String> {
    let row: Value = serde_json::from_str(raw).map_err(|e| format!("stored Graph contact: {e}"))?;
    let existing = match existing {
        Some(Record::Contact(c)) => Some(c.as_ref()),
        _ => None,
    };
    contact_from_graph(&row, existing, &mut new_slot_id)
        .map(|c| Record::Contact(Box::new(c)))
        .map_err(|e| e.to_string())
}

impl GraphProvider {
    fn contact_shadow(&self, id: &str, raw: &str) -> Result<Value, BridgeError> {
        serde_json::from_str(raw).map_err(|e| {
            BridgeError::local(
                &self.bridge,
                format!("shadow of contact {id} is unreadable: {e}"),
            )
        })
    }

    pub(super) async fn contact_changes(
        &self,
        token: Option<&str>,
        links: &BTreeMap<String, Shadow>,
    ) -> Result<Changes, BridgeError> {
        let delta_link = match token.filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => match serde_json::from_str::<ContactCursor>(t) {
                // A calendar cursor (the bridge's `resource` was changed) is not replayed.
                Ok(c) if c.delta_link.contains("/contacts/delta") => Some(c.delta_link),
                Ok(_) => {
                    warn!(bridge = %self.bridge, "stored cursor is not a contacts delta link; complete round");
                    None
                }
                Err(e) => {
                    warn!(bridge = %self.bridge, error = %e, "stored contacts cursor unreadable; complete round");
                    None
                }
            },
        };
        let known: BTreeSet<String> = links.keys().cloned().collect();
        let pull = ContactPull::new(
            contacts_delta_url(&self.api_base),
            delta_link.clone(),
            known,
            retry(),
        );
        let outcome = self
            .client
            .run_contact_pull(pull)
            .await
            .map_err(|e| self.err(e, Side::Pull))?;
        if outcome.complete && delta_link.is_some() {
            warn!(bridge = %self.bridge, "contacts delta link expired at Graph (410 SyncStateNotFound); complete round merging with the link table");
        }
        let next_token = serde_json::to_string(&ContactCursor {
            delta_link: outcome.delta_link.clone(),
        })
        .map_err(|e| BridgeError::local(&self.bridge, e))?;
        let mut changes = Changes {
            complete: outcome.complete,
            next_token,
            removed: outcome.deleted.clone(),
            ..Changes::default()
        };
        for (id, row) in &outcome.changed {
            changes.listed.push(Listed {
                href: id.clone(),
                etag: etag_of(row),
            });
            let stored = links
                .get(id)
                .and_then(|s| serde_json::from_str::<Value>(&s.raw).ok());
            if stored.as_ref() != Some(row) {
                changes.changed.push(Resource {
                    id: id.clone(),
                    ..resource(row)
                });
            }
        }
        Ok(changes)
    }

    pub(super) async fn create_contact(
        &self,
        doc_id: &DocumentId,
        record: &Record,
    ) -> Result<Resource, BridgeError> {
        let contact = record
            .provider_contact(doc_id)
            .map_err(|what| BridgeError::record(&self.bridge, what, None))?;
        let body = contact_create_body(&contact);
        match self.write(WriteOp::Create { body }).await? {
            (GraphWriteOutcome::Stored(row), _) => Ok(resource(&row)),
            (other, _) => Err(BridgeError::record(
                &self.bridge,
                format!("creating the contact of document {doc_id}: Graph answered {other:?}"),
                None,
            )),
        }
    }

    pub(super) async fn update_contact(
        &self,
        doc_id: &DocumentId,
        id: &str,
        record: &Record,
        shadow: &Shadow,
    ) -> Result<WriteOutcome, BridgeError> {
        let contact = record
            .provider_contact(doc_id)
            .map_err(|what| BridgeError::record(&self.bridge, what, None))?;
        let current = self.contact_shadow(id, &shadow.raw)?;
        let body = contact_patch(&current, &contact);
        if body.is_empty() {
            return Ok(WriteOutcome::Unchanged);
        }
        let op = WriteOp::Patch {
            id: id.to_owned(),
            etag: etag_of(&current),
            body,
        };
        Ok(match self.write(op).await? {
            (GraphWriteOutcome::NothingToWrite, Some(fresh)) => {
                WriteOutcome::Stale(Some(Resource {
                    id: id.to_owned(),
                    ..resource(&fresh)
                }))
            }
            (GraphWriteOutcome::Stored(row), _) => WriteOutcome::Written(Resource {
                id: id.to_owned(),
                ..resource(&row)
            }),
            (GraphWriteOutcome::Gone, _) => WriteOutcome::Stale(None),
            (other, _) => {
                return Err(BridgeError::record(
                    &self.bridge,
                    format!("writing contact {id} of document {doc_id}: Graph answered {other:?}"),
                    None,
                ));
            }
        })
    }

    pub(super) async fn delete_contact(
        &self,
        id: &str,
        shadow: &Shadow,
    ) -> Result<DeleteOutcome, BridgeError> {
        let current = self.contact_shadow(id, &shadow.raw)?;
        let op = WriteOp::Delete {
            id: id.to_owned(),
            etag: etag_of(&current),
        };
        Ok(match self.write(op).await? {
            (GraphWriteOutcome::NothingToWrite, Some(fresh)) => {
                DeleteOutcome::Stale(Some(Resource {
                    id: id.to_owned(),
                    ..resource(&fresh)
                }))
            }
            (GraphWriteOutcome::Deleted | GraphWriteOutcome::Gone, _) => DeleteOutcome::Deleted,
            (other, _) => {
                return Err(BridgeError::record(
                    &self.bridge,
                    format!("deleting contact {id}: Graph answered {other:?}"),
                    None,
                ));
            }
        })
    }
}
