//! Conflicting concurrent writes of one field, as `GET /v1/records/{documentId}/conflicts` lists them.

use automerge::{ActorId, AutomergeError, ObjId as ExId, ObjType, ROOT, ReadDoc, Value as AmValue};
use serde::Serialize;
use serde_json::Value;

use crate::read::value_json;

/// One field with more than one concurrent value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldConflict {
    /// Dotted path: `title`, `name.given`, `emails.<slot>.value`.
    pub field: String,
    /// Every value, in Automerge's order (by operation id).
    pub values: Vec<ConflictValue>,
    /// The value every replica reads (Automerge's deterministic winner).
    pub winner: Value,
}

/// One of the values of a [`FieldConflict`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConflictValue {
    pub value: Value,
    /// Who wrote it: a bridge id or `app`, from the caller's actor registry.
    pub source: String,
    /// The operation that wrote it (actor, counter): finds the change, for its time.
    #[serde(skip)]
    pub op: Option<(ActorId, u64)>,
}

/// A document whose conflicts could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("field `{field}`: {source}")]
pub struct ConflictsError {
    pub field: String,
    #[source]
    pub source: Box<AutomergeError>,
}

/// Lists every map key of the document (known or not, at any depth) that holds concurrent values.
/// `actor_source` maps the actor that wrote a value to a source name.
pub fn field_conflicts<D: ReadDoc>(
    doc: &D,
    actor_source: impl Fn(&ActorId) -> String,
) -> Result<Vec<FieldConflict>, ConflictsError> {
    let mut out = Vec::new();
    walk(doc, &ROOT, "", &actor_source, &mut out)?;
    Ok(out)
}

fn walk<D: ReadDoc>(
    doc: &D,
    obj: &ExId,
    path: &str,
    actor_source: &impl Fn(&ActorId) -> String,
    out: &mut Vec<FieldConflict>,
) -> Result<(), ConflictsError> {
    for key in doc.keys(obj) {
        let field = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let err = |source| ConflictsError {
            field: field.clone(),
            source: Box::new(source),
        };
        let all = doc.get_all(obj, key.as_str()).map_err(err)?;
        if all.len() > 1 {
            let mut values = Vec::with_capacity(all.len());
            for (value, id) in &all {
                values.push(ConflictValue {
                    value: value_json(doc, value, id).map_err(err)?,
                    source: match id {
                        ExId::Id(_, actor, _) => actor_source(actor),
                        ExId::Root => String::new(),
                    },
                    op: match id {
                        ExId::Id(counter, actor, _) => Some((actor.clone(), *counter)),
                        ExId::Root => None,
                    },
                });
            }
            let winner = match doc.get(obj, key.as_str()).map_err(err)? {
                Some((value, id)) => value_json(doc, &value, &id).map_err(err)?,
                None => Value::Null,
            };
            out.push(FieldConflict {
                field: field.clone(),
                values,
                winner,
            });
        }
        // Only the winning container is visible to readers, so only its fields are listed.
        if let Some((AmValue::Object(ObjType::Map | ObjType::Table), id)) =
            doc.get(obj, key.as_str()).map_err(err)?
        {
            walk(doc, &id, &field, actor_source, out)?;
        }
    }
    Ok(())
}
