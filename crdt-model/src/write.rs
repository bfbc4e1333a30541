//! Writing: create a record, or write the field-level difference between two canonical values.
//!
//! The rules (contracts, "How values are written"): containers are created once and edited key by
//! key; atomic strings are written whole as a fresh Text object; text fields get minimal splices;
//! removed entries are deleted by key. Only fields that differ between `old` and `new` are touched,
//! so anything else in the document (a concurrent app edit, an unknown key) is left alone.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{AutoCommit, ChangeHash};
use automerge::{AutomergeError, ObjId as ExId, ObjType, ROOT, ScalarValue, Value as AmValue};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::model::{
    CALENDAR_EVENT, COMPANY, COMPANY_KIND, CONTACT, CONTACT_KIND, CalendarEvent, Company, Contact,
    DEAL, DEAL_KIND, Deal, EVENT_KIND, Kind,
};
use crate::read::{ReadError, canonical_json, to_json};

/// The fields a write touched, as dotted paths (`title`, `emails.k3f9.value`, `attendees.a@b.c`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSummary {
    /// Fields written (a container path means the container was created).
    pub written: Vec<String>,
    /// Keys deleted.
    pub deleted: Vec<String>,
}

impl ChangeSummary {
    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.written.is_empty() && self.deleted.is_empty()
    }
}

/// A write that could not be made. Nothing is committed by this crate, so the caller can roll back.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the new value is not a valid record: {0}")]
    Invalid(#[from] ReadError),
    #[error("cannot encode the record as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("the document does not have change {0} (the heads to write at)")]
    UnknownHead(ChangeHash),
    #[error("field `{field}`: {source}")]
    Automerge {
        field: String,
        #[source]
        source: Box<AutomergeError>,
    },
}

/// A document that could not be upgraded in place.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("the document has no known record `type`")]
    UnknownType,
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Writes a new event into an empty document, creating every container once.
///
/// Like every write here it adds operations to the open transaction; the caller commits (with its
/// own actor id and message).
pub fn create_event<D: Transactable>(
    doc: &mut D,
    event: &CalendarEvent,
) -> Result<ChangeSummary, WriteError> {
    write_diff(doc, EVENT_KIND, CALENDAR_EVENT, None, event)
}

/// Writes only the fields where `new` differs from `old` (the value the writer last saw).
pub fn apply_event_diff<D: Transactable>(
    doc: &mut D,
    old: &CalendarEvent,
    new: &CalendarEvent,
) -> Result<ChangeSummary, WriteError> {
    write_diff(doc, EVENT_KIND, CALENDAR_EVENT, Some(old), new)
}

/// Writes a new contact into an empty document, creating every container once.
pub fn create_contact<D: Transactable>(
    doc: &mut D,
    contact: &Contact,
) -> Result<ChangeSummary, WriteError> {
    write_diff(doc, CONTACT_KIND, CONTACT, None, contact)
}

/// Writes only the fields where `new` differs from `old`.
pub fn apply_contact_diff<D: Transactable>(
    doc: &mut D,
    old: &Contact,
    new: &Contact,
) -> Result<ChangeSummary, WriteError> {
    write_diff(doc, CONTACT_KIND, CONTACT, Some(old), new)
}

/// Writes a new company into an empty document, creating every container once.
pub fn create_company<D: Transactable>(
    doc: &mut D,
    company: &Company,
) -> Result<ChangeSummary, WriteError> {
    write_diff(doc, COMPANY_KIND, COMPANY, None, company)
}

/// Writes only the fields where `new` differs from `old`.
pub fn apply_company_diff<D: Transactable>(
    doc: &mut D,
    old: &Company,
    new: &Company,
) -> Result<ChangeSummary, WriteError> {
    write_diff(doc, COMPANY_KIND, COMPANY, Some(old), new)
}

/// Writes a new deal into an empty document, creating every container once.
pub fn create_deal<D: Transactable>(doc: &mut D, deal: &Deal) -> Result<ChangeSummary, WriteError> {
    write_diff(doc, DEAL_KIND, DEAL, None, deal)
}

/// Writes only the fields where `new` differs from `old`.
pub fn apply_deal_diff<D: Transactable>(
    doc: &mut D,
    old: &Deal,
    new: &Deal,
) -> Result<ChangeSummary, WriteError> {
    write_diff(doc, DEAL_KIND, DEAL, Some(old), new)
}

/// Writes `old -> new` as if the document were still at `heads` (where the writer took `old`, e.g.
/// a bridge's shadow), commits it as one change with `options`, and returns to the full document.
///
/// Use this when the document may have moved on since `old` was read: atomic fields behave the same
/// either way, but a text field's splices are then computed against the text the writer saw, so a
/// concurrent edit elsewhere in `description` merges instead of being overwritten by `update_text`
/// against the current text. On error nothing is committed.
pub fn commit_event_diff_at(
    doc: &mut AutoCommit,
    heads: &[ChangeHash],
    old: &CalendarEvent,
    new: &CalendarEvent,
    options: CommitOptions,
) -> Result<(ChangeSummary, Option<ChangeHash>), WriteError> {
    commit_at(doc, heads, options, |doc| apply_event_diff(doc, old, new))
}

/// The company counterpart of [`commit_event_diff_at`].
pub fn commit_company_diff_at(
    doc: &mut AutoCommit,
    heads: &[ChangeHash],
    old: &Company,
    new: &Company,
    options: CommitOptions,
) -> Result<(ChangeSummary, Option<ChangeHash>), WriteError> {
    commit_at(doc, heads, options, |doc| apply_company_diff(doc, old, new))
}

/// The deal counterpart of [`commit_event_diff_at`].
pub fn commit_deal_diff_at(
    doc: &mut AutoCommit,
    heads: &[ChangeHash],
    old: &Deal,
    new: &Deal,
    options: CommitOptions,
) -> Result<(ChangeSummary, Option<ChangeHash>), WriteError> {
    commit_at(doc, heads, options, |doc| apply_deal_diff(doc, old, new))
}

/// The contact counterpart of [`commit_event_diff_at`].
pub fn commit_contact_diff_at(
    doc: &mut AutoCommit,
    heads: &[ChangeHash],
    old: &Contact,
    new: &Contact,
    options: CommitOptions,
) -> Result<(ChangeSummary, Option<ChangeHash>), WriteError> {
    commit_at(doc, heads, options, |doc| apply_contact_diff(doc, old, new))
}

fn commit_at(
    doc: &mut AutoCommit,
    heads: &[ChangeHash],
    options: CommitOptions,
    write: impl FnOnce(&mut AutoCommit) -> Result<ChangeSummary, WriteError>,
) -> Result<(ChangeSummary, Option<ChangeHash>), WriteError> {
    if let Some(missing) = heads.iter().find(|h| doc.get_change_by_hash(h).is_none()) {
        return Err(WriteError::UnknownHead(*missing));
    }
    // Commit whatever the caller had open, so it is not folded into the isolated change.
    doc.commit();
    doc.isolate(heads);
    let result = write(doc);
    let hash = match &result {
        Ok(_) => doc.commit_with(options),
        Err(_) => {
            doc.rollback();
            None
        }
    };
    doc.integrate();
    result.map(|summary| (summary, hash))
}

/// Rewrites an older-schema document in the current schema (what reading does in memory), writing
/// only the keys the upgrade changes. Returns an empty summary for a current document.
pub fn upgrade_document<D: Transactable>(doc: &mut D) -> Result<ChangeSummary, UpgradeError> {
    let (record_type, kind) = match crate::read::record_type(doc).as_deref() {
        Some(CALENDAR_EVENT) => (CALENDAR_EVENT, EVENT_KIND),
        Some(CONTACT) => (CONTACT, CONTACT_KIND),
        Some(COMPANY) => (COMPANY, COMPANY_KIND),
        Some(DEAL) => (DEAL, DEAL_KIND),
        _ => return Err(UpgradeError::UnknownType),
    };
    let raw = to_json(doc).map_err(am(""))?;
    let canonical = canonical_json(raw.clone(), record_type, kind)?;
    let (Value::Object(old), Value::Object(new)) = (&raw, &canonical) else {
        return Ok(ChangeSummary::default());
    };
    let mut summary = ChangeSummary::default();
    diff_map(doc, &ROOT, kind, old, new, "", &mut summary)?;
    Ok(summary)
}

fn write_diff<D: Transactable, T: Serialize>(
    doc: &mut D,
    kind: Kind,
    record_type: &'static str,
    old: Option<&T>,
    new: &T,
) -> Result<ChangeSummary, WriteError> {
    let new = serde_json::to_value(new)?;
    // The same validation readers apply, so nothing is written that would not read back.
    canonical_json(new.clone(), record_type, kind)?;
    let old = match old {
        Some(old) => serde_json::to_value(old)?,
        None => Value::Object(Map::new()),
    };
    let empty = Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let mut summary = ChangeSummary::default();
    diff_map(doc, &ROOT, kind, old, new, "", &mut summary)?;
    Ok(summary)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn am(field: &str) -> impl FnOnce(AutomergeError) -> WriteError + '_ {
    move |source| WriteError::Automerge {
        field: field.to_owned(),
        source: Box::new(source),
    }
}

fn diff_map<D: Transactable>(
    doc: &mut D,
    obj: &ExId,
    kind: Kind,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    path: &str,
    summary: &mut ChangeSummary,
) -> Result<(), WriteError> {
    for key in old.keys().filter(|k| !new.contains_key(*k)) {
        let field = join(path, key);
        if doc.get(obj, key.as_str()).map_err(am(&field))?.is_some() {
            doc.delete(obj, key.as_str()).map_err(am(&field))?;
            summary.deleted.push(field);
        }
    }
    for (key, new_value) in new {
        let old_value = old.get(key);
        if old_value == Some(new_value) {
            continue;
        }
        let field = join(path, key);
        write_value(
            doc,
            obj,
            key,
            kind.field(key),
            old_value,
            new_value,
            &field,
            summary,
        )?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn write_value<D: Transactable>(
    doc: &mut D,
    obj: &ExId,
    key: &str,
    kind: Kind,
    old: Option<&Value>,
    new: &Value,
    field: &str,
    summary: &mut ChangeSummary,
) -> Result<(), WriteError> {
    let current = doc.get(obj, key).map_err(am(field))?;
    let current_is = |ty: ObjType| match &current {
        Some((AmValue::Object(t), id)) if *t == ty => Some(id.clone()),
        _ => None,
    };
    match new {
        Value::String(s) if matches!(kind, Kind::Text) => {
            match current_is(ObjType::Text) {
                Some(id) => {
                    if doc.text(&id).map_err(am(field))? == *s {
                        return Ok(());
                    }
                    // Minimal splices against the document's current text.
                    doc.update_text(&id, s).map_err(am(field))?;
                }
                None => new_text(doc, obj, key, s, field)?,
            }
            summary.written.push(field.to_owned());
        }
        Value::Object(map) => {
            let empty = Map::new();
            let id = match current_is(ObjType::Map) {
                // Edit the container in place; keys the writer never saw are left as they are.
                Some(id) => id,
                None => {
                    summary.written.push(field.to_owned());
                    doc.put_object(obj, key, ObjType::Map).map_err(am(field))?
                }
            };
            let old = old.and_then(Value::as_object).unwrap_or(&empty);
            diff_map(doc, &id, kind, old, map, field, summary)?;
        }
        _ => {
            if single_value_equals(doc, obj, key, new, field)? {
                return Ok(());
            }
            match new {
                Value::String(s) => new_text(doc, obj, key, s, field)?,
                Value::Array(items) => {
                    let list = doc.put_object(obj, key, ObjType::List).map_err(am(field))?;
                    fill_list(doc, &list, items, field)?;
                }
                scalar => doc.put(obj, key, to_scalar(scalar)).map_err(am(field))?,
            }
            summary.written.push(field.to_owned());
        }
    }
    Ok(())
}

/// True when the document already holds exactly `new` at `key` with no conflict, so writing it
/// again would only add an operation.
fn single_value_equals<D: Transactable>(
    doc: &D,
    obj: &ExId,
    key: &str,
    new: &Value,
    field: &str,
) -> Result<bool, WriteError> {
    let all = doc.get_all(obj, key).map_err(am(field))?;
    let [(value, id)] = all.as_slice() else {
        return Ok(false);
    };
    let current = crate::read::value_json(doc, value, id).map_err(am(field))?;
    Ok(&current == new)
}

/// An atomic string: always a fresh Text object, so concurrent writes conflict instead of
/// interleaving characters.
fn new_text<D: Transactable>(
    doc: &mut D,
    obj: &ExId,
    key: &str,
    s: &str,
    field: &str,
) -> Result<(), WriteError> {
    let text = doc.put_object(obj, key, ObjType::Text).map_err(am(field))?;
    if !s.is_empty() {
        doc.splice_text(&text, 0, 0, s).map_err(am(field))?;
    }
    Ok(())
}

/// Lists only occur in unknown fields; they are written whole.
fn fill_list<D: Transactable>(
    doc: &mut D,
    list: &ExId,
    items: &[Value],
    field: &str,
) -> Result<(), WriteError> {
    for (index, item) in items.iter().enumerate() {
        match item {
            Value::String(s) => {
                let text = doc
                    .insert_object(list, index, ObjType::Text)
                    .map_err(am(field))?;
                doc.splice_text(&text, 0, 0, s).map_err(am(field))?;
            }
            Value::Array(inner) => {
                let sub = doc
                    .insert_object(list, index, ObjType::List)
                    .map_err(am(field))?;
                fill_list(doc, &sub, inner, field)?;
            }
            Value::Object(map) => {
                let sub = doc
                    .insert_object(list, index, ObjType::Map)
                    .map_err(am(field))?;
                let mut ignored = ChangeSummary::default();
                diff_map(doc, &sub, Kind::Any, &Map::new(), map, field, &mut ignored)?;
            }
            scalar => doc
                .insert(list, index, to_scalar(scalar))
                .map_err(am(field))?,
        }
    }
    Ok(())
}

fn to_scalar(v: &Value) -> ScalarValue {
    match v {
        Value::Bool(b) => ScalarValue::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                ScalarValue::Int(i)
            } else if let Some(u) = n.as_u64() {
                ScalarValue::Uint(u)
            } else {
                ScalarValue::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        Value::Null | Value::Array(_) | Value::Object(_) => ScalarValue::Null,
    }
}
