//! Identity merges seen from a bridge: after `POST /v1/identity/merge` the absorbed document
//! carries `merged_into`, and every link row of this bridge that still names it is repointed to
//! the survivor at the start of the next round, before anything is pulled or pushed.
//!
//! The shadow (what the provider last had) is kept; its heads are cleared because they belong to
//! the absorbed document's history, so the next push diffs the survivor's merged fields against
//! what the provider has and writes the difference once. Must not: write documents.

use driftless_client_protocol::DocumentId;
use tracing::info;

use super::store::{LinkOp, Shadow};
use super::{BridgeError, Runner};

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
