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

/// Why a merge was refused; `http.rs` maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Internal(String),
}

/// `POST /v1/identity/merge` body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    pub survivor: String,
    pub absorbed: String,
}

fn parse_url(field: &str, url: &str) -> Result<DocumentId, MergeError> {
    url.strip_prefix("automerge:")
        .unwrap_or(url)
        .parse()
        .map_err(|e| MergeError::BadRequest(format!("`{field}` is not an automerge: URL: {e}")))
}

fn url_of(doc: &DocumentId) -> String {
    format!("automerge:{doc}")
}

/// Which documents a merge may touch: those of `workspace` (and, for a token, those it names).
#[derive(Clone)]
pub struct MergeScope {
    pub workspace: String,
    /// The caller's token (`None`: a bridge, every document of the workspace).
    claims: Option<Claims>,
}

impl MergeScope {
    fn of(claims: &Claims) -> Self {
        Self {
            workspace: claims.ws.clone(),
            claims: Some(claims.clone()),
        }
    }

    /// Every document of `workspace` (a bridge applying a provider's merge).
    pub fn workspace(workspace: &str) -> Self {
        Self {
            workspace: workspace.to_owned(),
            claims: None,
        }
    }

    fn allows(&self, doc: &DocumentId) -> bool {
        self.claims.as_ref().is_none_or(|c| c.in_scope(doc))
    }
}

/// A contact of the scope's workspace, as stored.
fn load_contact(
    storage: &Storage,
    scope: &MergeScope,
    doc: &DocumentId,
) -> Result<(automerge::Automerge, driftless_crdt_model::Contact), MergeError> {
    let missing = || MergeError::NotFound(format!("document {doc} not found"));
    if !scope.allows(doc) {
        return Err(missing());
    }
    let stored = storage
        .load_stored(doc)
        .map_err(|e| MergeError::Internal(format!("document {doc}: {e}")))?
        .ok_or_else(missing)?;
    if stored.workspace != scope.workspace {
        return Err(missing());
    }
    let contact = driftless_crdt_model::read_contact(&stored.document).map_err(|e| {
        MergeError::Conflict(format!("document {doc} is not a readable contact: {e}"))
    })?;
    Ok((stored.document, contact))
}

/// Writes `old -> new` into `doc` as one change with a fresh actor (never reused) and waits until
/// the engine has it durable.
async fn write_contact(
    net_tx: &tokio::sync::mpsc::Sender<crate::host::HostInput>,
    workspace: &str,
    id: &DocumentId,
    doc: automerge::Automerge,
    old: &driftless_crdt_model::Contact,
    new: &driftless_crdt_model::Contact,
    message: String,
) -> Result<(), MergeError> {
    let internal = |what: String| MergeError::Internal(format!("document {id}: {what}"));
    let mut am = automerge::AutoCommit::load(&doc.save())
        .map_err(|e| internal(e.to_string()))?
        .with_actor(automerge::ActorId::random());
    let before = am.get_heads();
    driftless_crdt_model::apply_contact_diff(&mut am, old, new)
        .map_err(|e| internal(e.to_string()))?;
    if am
        .commit_with(automerge::transaction::CommitOptions::default().with_message(message))
        .is_none()
    {
        return Ok(()); // nothing differed
    }
    let changes = am.save_after(&before);
    let (reply, answer) = tokio::sync::oneshot::channel();
    net_tx
        .send(crate::host::HostInput::LocalChange {
            doc: id.clone(),
            workspace: workspace.to_owned(),
            changes,
            reply,
        })
        .await
        .map_err(|_| internal("the engine has stopped".into()))?;
    answer
        .await
        .map_err(|_| internal("the engine stopped before the change was durable".into()))?
        .map_err(|e| internal(format!("change refused: {e}")))?;
    Ok(())
}

/// Merges `absorbed` into `survivor` (contracts, "Deletes" and issue #8): the survivor keeps
/// every field and gains the absorbed record's links (see `identity::merge_contacts`); the
/// absorbed record gets `merged_into` and its moved links marked removed there, so nothing is
/// deleted at any provider. Bridges repoint their link rows to the survivor at their next round.
/// Idempotent: repeating a merge that happened answers the survivor again.
pub async fn merge(
    net_tx: &tokio::sync::mpsc::Sender<crate::host::HostInput>,
    storage: &Storage,
    claims: &Claims,
    region: PhoneRegion,
    request: MergeRequest,
) -> Result<Value, MergeError> {
    if claims.role != crate::auth::ClaimRole::Write {
        return Err(MergeError::Forbidden(
            "a merge needs a token with role write".into(),
        ));
    }
    let survivor_id = parse_url("survivor", &request.survivor)?;
    let absorbed_id = parse_url("absorbed", &request.absorbed)?;
    merge_documents(
        net_tx,
        storage,
        &MergeScope::of(claims),
        region,
        &survivor_id,
        &absorbed_id,
    )
    .await
}

/// [`merge`] of two documents of `scope` (no token: the bridges use it for merges made at a
/// provider, e.g. HubSpot's `hs_merged_object_ids`).
pub async fn merge_documents(
    net_tx: &tokio::sync::mpsc::Sender<crate::host::HostInput>,
    storage: &Storage,
    scope: &MergeScope,
    region: PhoneRegion,
    survivor_id: &DocumentId,
    absorbed_id: &DocumentId,
) -> Result<Value, MergeError> {
    let (survivor_id, absorbed_id) = (survivor_id.clone(), absorbed_id.clone());
    if survivor_id == absorbed_id {
        return Err(MergeError::BadRequest(
            "survivor and absorbed are the same document".into(),
        ));
    }
    let (survivor_doc, survivor) = {
        let (storage, scope, id) = (storage.clone(), scope.clone(), survivor_id.clone());
        tokio::task::spawn_blocking(move || load_contact(&storage, &scope, &id))
            .await
            .map_err(|_| MergeError::Internal("shutting down".into()))??
    };
    let (absorbed_doc, absorbed) = {
        let (storage, scope, id) = (storage.clone(), scope.clone(), absorbed_id.clone());
        tokio::task::spawn_blocking(move || load_contact(&storage, &scope, &id))
            .await
            .map_err(|_| MergeError::Internal("shutting down".into()))??
    };
    let survivor_url = url_of(&survivor_id);
    if let Some(into) = &survivor.merged_into {
        return Err(MergeError::Conflict(format!(
            "survivor {survivor_id} was itself merged into {into}; merge into that record"
        )));
    }
    if survivor.deleted || absorbed.deleted {
        return Err(MergeError::Conflict(
            "a deleted contact cannot take part in a merge".into(),
        ));
    }
    match &absorbed.merged_into {
        Some(into) if *into == survivor_url => {} // repeated: finish what may be missing
        Some(into) => {
            return Err(MergeError::Conflict(format!(
                "document {absorbed_id} was already merged into {into}"
            )));
        }
        None => {}
    }
    let (merged, report) = identity::merge_contacts(&survivor, &absorbed, region);
    write_contact(
        net_tx,
        &scope.workspace,
        &survivor_id,
        survivor_doc,
        &survivor,
        &merged,
        format!("identity merge: absorbed {}", url_of(&absorbed_id)),
    )
    .await?;
    let mut marked = absorbed.clone();
    marked.merged_into = Some(survivor_url.clone());
    let kept_there: BTreeSet<&str> = report
        .duplicate_links
        .iter()
        .map(|(bridge, _)| bridge.as_str())
        .collect();
    for (bridge, link) in &mut marked.links {
        if !kept_there.contains(bridge.as_str()) {
            link.removed = true;
        }
    }
    write_contact(
        net_tx,
        &scope.workspace,
        &absorbed_id,
        absorbed_doc,
        &absorbed,
        &marked,
        format!("identity merge: merged into {survivor_url}"),
    )
    .await?;
    tracing::info!(survivor = %survivor_id, absorbed = %absorbed_id, duplicate_links = ?report.duplicate_links, "identity merge");
    let record = serde_json::to_value(&merged).map_err(|e| MergeError::Internal(e.to_string()))?;
    Ok(json!({
        "url": survivor_url,
        "record": record,
        "kept_on_absorbed": report
            .duplicate_links
            .iter()
            .map(|(bridge, id)| json!({"bridge": bridge, "id": id}))
            .collect::<Vec<_>>(),
    }))
}
