//! Identity merges seen from a bridge: after `POST /v1/identity/merge` the absorbed document
//! carries `merged_into`, and every link row of this bridge that still names it is repointed to
//! the survivor at the start of the next round, before anything is pulled or pushed.
//!
//! The shadow (what the provider last had) is kept; its heads are cleared because they belong to
//! the absorbed document's history, so the next push diffs the survivor's merged fields against
//! what the provider has and writes the difference once.
//!
//! Merges made at a provider (HubSpot: a survivor's `hs_merged_object_ids`, which a merge webhook
//! makes the bridge poll soon) are applied at the start of the pull, before anything else of it:
//! the documents of the merged records are merged with the identity merge code (contacts: the
//! survivor keeps every field and link, the absorbed document gets `merged_into`; nothing is
//! deleted anywhere), the absorbed ids' link rows go (those records no longer exist there, so the
//! absorbed document's link at this bridge is marked removed, never deleted at the provider), and
//! a survivor with a new id takes over the link row of the first merged record. Records of other
//! types are only unlinked. Must not: write documents except through the runner or the identity
//! merge.

use driftless_client_protocol::DocumentId;
use tracing::{info, warn};

use super::record::{Record, RecordType};
use super::store::{LinkOp, Shadow};
use super::{BridgeError, Runner};
use crate::identity::{MergeError, MergeScope, merge_documents};

/// Longest `merged_into` chain followed (a merged record merged again, and so on).
const MAX_HOPS: usize = 8;

impl Runner {
    /// The record `doc` was (transitively) merged into, if any.
    fn survivor_of(&self, doc: &DocumentId) -> Result<Option<DocumentId>, BridgeError> {
        let mut current = doc.clone();
        let mut moved = false;
        for _ in 0..MAX_HOPS {
            let Some(am) = self.load(&current)? else {
                break;
            };
            // Only the one key: a round reads it for every linked document.
            let next = merged_into(&am);
            let Some(next) = next else {
                break;
            };
            match next.strip_prefix("automerge:").unwrap_or(&next).parse() {
                Ok(id) if id != current => {
                    current = id;
                    moved = true;
                }
                _ => break,
            }
        }
        Ok(moved.then_some(current))
    }

    /// Repoints link rows whose document was merged into another.
    pub(super) fn follow_merges(&self) -> Result<(), BridgeError> {
        let links = self.store.links(self.id()).map_err(|e| self.local(e))?;
        let mut ops = Vec::new();
        for (href, shadow) in links {
            let Ok(doc) = shadow.doc.parse::<DocumentId>() else {
                continue;
            };
            let Some(survivor) = self.survivor_of(&doc)? else {
                continue;
            };
            info!(bridge = %self.id(), %href, absorbed = %doc, %survivor, "link follows an identity merge");
            ops.push(LinkOp::Put {
                href,
                shadow: Box::new(Shadow {
                    doc: survivor.to_string(),
                    heads: Vec::new(),
                    ..shadow
                }),
            });
        }
        if ops.is_empty() {
            return Ok(());
        }
        self.store
            .commit(self.id(), &ops, None, None)
            .map_err(|e| self.local(e))
    }
}

/// The root `merged_into` string (a Text object or a scalar string), if any.
fn merged_into(am: &automerge::AutoCommit) -> Option<String> {
    use automerge::{ObjType, ReadDoc, ScalarValue, Value};
    match am.get(automerge::ROOT, "merged_into").ok()?? {
        (Value::Object(ObjType::Text), id) => am.text(&id).ok(),
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

impl Runner {
    /// Applies the provider's merges (see the module docs). Returns whether a link row changed.
    pub(super) async fn apply_provider_merges(
        &self,
        merges: &[(String, Vec<String>)],
    ) -> Result<bool, BridgeError> {
        let mut changed = false;
        for (survivor, absorbed) in merges {
            let links = self.store.links(self.id()).map_err(|e| self.local(e))?;
            let mut merged: Vec<(String, Shadow)> = absorbed
                .iter()
                .filter(|id| *id != survivor)
                .filter_map(|id| links.get(id).map(|s| (id.clone(), s.clone())))
                .collect();
            let mut ops = Vec::new();
            let survivor_doc = match links.get(survivor) {
                Some(shadow) => shadow.doc.clone(),
                None => {
                    // A merge that made a new record: the first merged record's document is the
                    // survivor's, under the new id.
                    if merged.is_empty() {
                        continue;
                    }
                    let (first, shadow) = merged.remove(0);
                    let doc_id = self.parse_doc_id(&shadow.doc)?;
                    self.set_link_id(&doc_id, survivor, false).await?;
                    ops.push(LinkOp::Remove { href: first });
                    ops.push(LinkOp::Put {
                        href: survivor.clone(),
                        shadow: Box::new(Shadow {
                            heads: Vec::new(),
                            ..shadow.clone()
                        }),
                    });
                    shadow.doc
                }
            };
            let survivor_id = self.parse_doc_id(&survivor_doc)?;
            for (href, shadow) in merged {
                let absorbed_id = self.parse_doc_id(&shadow.doc)?;
                if absorbed_id != survivor_id {
                    if self.record_type == RecordType::Contact {
                        self.merge_documents(&survivor_id, &absorbed_id).await?;
                    }
                    // The record is gone at the provider: unlink, never delete there.
                    self.set_link_id(&absorbed_id, &href, true).await?;
                }
                info!(bridge = %self.id(), survivor = %survivor, absorbed = %href, survivor_doc = %survivor_id, absorbed_doc = %absorbed_id, "merged at the provider");
                ops.push(LinkOp::Remove { href });
            }
            if !ops.is_empty() {
                self.store
                    .commit(self.id(), &ops, None, None)
                    .map_err(|e| self.local(e))?;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Merges contact `absorbed` into `survivor` with the identity merge code.
    async fn merge_documents(
        &self,
        survivor: &DocumentId,
        absorbed: &DocumentId,
    ) -> Result<(), BridgeError> {
        let scope = MergeScope::workspace(&self.config.workspace);
        match merge_documents(
            &self.net_tx,
            self.store.storage(),
            &scope,
            self.identities.region(),
            survivor,
            absorbed,
        )
        .await
        {
            Ok(_) => Ok(()),
            // Already merged elsewhere, deleted, or not a contact: the provider's merge still
            // unlinks the absorbed record; nothing else to do.
            Err(MergeError::Conflict(what) | MergeError::NotFound(what)) => {
                warn!(bridge = %self.id(), %survivor, %absorbed, %what, "the provider's merge leaves the documents as they are");
                Ok(())
            }
            Err(e) => Err(self.local(format!("merging document {absorbed} into {survivor}: {e}"))),
        }
    }

    /// Sets this bridge's link in document `doc_id` to `href` (and `removed`).
    async fn set_link_id(
        &self,
        doc_id: &DocumentId,
        href: &str,
        removed: bool,
    ) -> Result<(), BridgeError> {
        let Some(am) = self.load(doc_id)? else {
            return Ok(());
        };
        let Ok(current) = Record::read(self.record_type, &am) else {
            return Ok(());
        };
        let mut next = current.clone();
        let link = next
            .links_mut()
            .entry(self.link_key().to_owned())
            .or_default();
        link.id = href.to_owned();
        link.removed = removed;
        self.write_diff(
            doc_id,
            &[],
            &current,
            &next,
            &format!("bridge {}: merged at the provider: {href}", self.id()),
        )
        .await?;
        Ok(())
    }
}
