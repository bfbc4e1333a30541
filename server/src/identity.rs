//! `GET /v1/identity/suggestions`: contacts of a workspace that may be one person (shared email,
//! shared phone), for a person to confirm with `POST /v1/identity/merge`.
//!
//! Reads durable storage only (every acknowledged change is there). The matching rules live in
//! `driftless_crdt_model::identity`; this module gathers the workspace's contacts and shapes JSON.
//! Must not: merge anything by itself.

use std::collections::BTreeSet;

use driftless_client_protocol::DocumentId;
use driftless_crdt_model::identity::{self, IdentityKeys, PhoneRegion};
use serde_json::{Value, json};

use crate::auth::Claims;
use crate::records::{Listing, RecordIndex};
use crate::storage::Storage;

/// Suggestions among the live (not deleted, not merged) contacts `claims` may read.
pub fn suggestions(
    storage: &Storage,
    index: &RecordIndex,
    claims: &Claims,
    region: PhoneRegion,
) -> Result<Value, String> {
    let listing = Listing {
        workspace: &claims.ws,
        record_type: Some(driftless_crdt_model::CONTACT),
        include_deleted: false,
        after: None,
    };
    let ids = index
        .list(&listing, usize::MAX, |id| claims.in_scope(id))
        .map_err(|e| format!("listing the contacts of workspace {}: {e}", claims.ws))?;
    let mut known: Vec<(DocumentId, IdentityKeys)> = Vec::new();
    for id in ids {
        let doc = match storage.load_document(&id) {
            Ok(Some(doc)) => doc,
            Ok(None) => continue,
            Err(e) => return Err(format!("document {id}: {e}")),
        };
        if driftless_crdt_model::record_type(&doc).as_deref() != Some(driftless_crdt_model::CONTACT)
        {
            continue;
        }
        // A contact that does not read (a newer schema, a broken app write) is left out of the
        // suggestions rather than failing them all; the records endpoint shows it as it is.
        let Ok(contact) = driftless_crdt_model::read_contact(&doc) else {
            continue;
        };
        if contact.deleted || contact.merged_into.is_some() {
            continue;
        }
        known.push((id, IdentityKeys::of(&contact, region)));
    }
    let list: Vec<Value> = identity::suggestions(&known, &BTreeSet::new())
        .into_iter()
        .map(|s| {
            json!({
                "a": format!("automerge:{}", s.a),
                "b": format!("automerge:{}", s.b),
                "reason": s.reason.as_str(),
                "score": s.score,
            })
        })
        .collect();
    Ok(json!({ "suggestions": list }))
}
