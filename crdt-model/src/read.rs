//! Reading: document -> JSON -> schema upgrade -> validation -> canonical value.
//!
//! Reading is tolerant where the contracts say so (scalar strings where Text is expected, missing
//! containers, unknown keys) and strict about types: a list where a map belongs is an error that
//! names the field.

use automerge::{ObjId as ExId, ObjType, ROOT, ReadDoc, ScalarValue, Value as AmValue};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::model::{
    CALENDAR_EVENT, COMPANY, COMPANY_KIND, CONTACT, CONTACT_KIND, CalendarEvent, Company, Contact,
    DEAL, DEAL_KIND, Deal, EVENT_KIND, Kind, SCHEMA_VERSION,
};
use crate::time::{EventTime, TimeParseError};

/// A record document that does not read as the requested type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("record document {document}: field `{field}`: {problem}")]
pub struct ReadError {
    /// The document's id when the caller supplied it ([`ReadError::in_document`]), else `(unnamed)`.
    pub document: String,
    /// Dotted path of the offending field (`""` for the root).
    pub field: String,
    pub problem: ReadProblem,
}

impl ReadError {
    /// Names the document in the error (the reader only sees the document, not its id).
    #[must_use]
    pub fn in_document(mut self, document: impl std::fmt::Display) -> Self {
        self.document = document.to_string();
        self
    }

    fn new(field: &str, problem: ReadProblem) -> Self {
        ReadError {
            document: "(unnamed)".to_owned(),
            field: field.to_owned(),
            problem,
        }
    }
}

/// What is wrong with the field a [`ReadError`] names.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadProblem {
    #[error("expected {expected}, found {found}")]
    BadType {
        expected: &'static str,
        found: &'static str,
    },
    #[error(transparent)]
    BadTime(#[from] TimeParseError),
    #[error("the document is a `{found}`, not a `{expected}`")]
    WrongRecordType {
        expected: &'static str,
        found: String,
    },
    #[error("schema {found} is newer than this build reads (up to {supported})")]
    NewerSchema { found: u64, supported: u64 },
    #[error("automerge: {0}")]
    Automerge(String),
    #[error("does not decode: {0}")]
    Decode(String),
}

/// Reads a `calendar_event`, upgrading older schemas.
pub fn read_event<D: ReadDoc>(doc: &D) -> Result<CalendarEvent, ReadError> {
    read_record(doc, CALENDAR_EVENT, EVENT_KIND)
}

/// Reads a `contact`, upgrading older schemas.
pub fn read_contact<D: ReadDoc>(doc: &D) -> Result<Contact, ReadError> {
    read_record(doc, CONTACT, CONTACT_KIND)
}

/// Reads a `company`, upgrading older schemas.
pub fn read_company<D: ReadDoc>(doc: &D) -> Result<Company, ReadError> {
    read_record(doc, COMPANY, COMPANY_KIND)
}

/// Reads a `deal`, upgrading older schemas.
pub fn read_deal<D: ReadDoc>(doc: &D) -> Result<Deal, ReadError> {
    read_record(doc, DEAL, DEAL_KIND)
}

/// The record's `type`, if the root holds a string there.
pub fn record_type<D: ReadDoc>(doc: &D) -> Option<String> {
    match doc.get(ROOT, "type").ok()?? {
        (AmValue::Object(ObjType::Text), id) => doc.text(&id).ok(),
        (AmValue::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn read_record<D: ReadDoc, T: DeserializeOwned>(
    doc: &D,
    record_type: &'static str,
    kind: Kind,
) -> Result<T, ReadError> {
    let raw =
        to_json(doc).map_err(|e| ReadError::new("", ReadProblem::Automerge(e.to_string())))?;
    let json = canonical_json(raw, record_type, kind)?;
    serde_json::from_value(json).map_err(|e| ReadError::new("", ReadProblem::Decode(e.to_string())))
}

/// Upgrades and validates the raw JSON of a document into the canonical JSON of `record_type`.
pub(crate) fn canonical_json(
    raw: Value,
    record_type: &'static str,
    kind: Kind,
) -> Result<Value, ReadError> {
    let Value::Object(mut root) = raw else {
        return Err(ReadError::new(
            "",
            ReadProblem::BadType {
                expected: "map",
                found: json_type(&raw),
            },
        ));
    };
    match root.get("type") {
        None | Some(Value::Null) => {}
        Some(Value::String(t)) if t == record_type => {}
        Some(Value::String(t)) => {
            return Err(ReadError::new(
                "type",
                ReadProblem::WrongRecordType {
                    expected: record_type,
                    found: t.clone(),
                },
            ));
        }
        Some(other) => return Err(bad_type("type", "string", other)),
    }
    let schema = match root.get("schema") {
        None | Some(Value::Null) => 0,
        Some(v) => as_uint(v).ok_or_else(|| bad_type("schema", "non-negative integer", v))?,
    };
    if schema > SCHEMA_VERSION {
        return Err(ReadError::new(
            "schema",
            ReadProblem::NewerSchema {
                found: schema,
                supported: SCHEMA_VERSION,
            },
        ));
    }
    if schema == 0 {
        upgrade_0_to_1(&mut root, record_type);
    }
    root.insert("type".to_owned(), Value::String(record_type.to_owned()));
    root.insert("schema".to_owned(), Value::from(SCHEMA_VERSION));
    let mut value = Value::Object(root);
    validate(&mut value, kind, "")?;
    check_times(&value)?;
    Ok(value)
}

/// Schema 0: documents written before `schema` existed. Prototype clients stored a contact's `name`
/// as one string (now `name.full`) and an event's single rule as a root `rrule` string (now
/// `recurrence.rules["0"]`). A missing `deleted` reads as false in every schema.
fn upgrade_0_to_1(root: &mut Map<String, Value>, record_type: &str) {
    if record_type == CONTACT {
        if let Some(Value::String(full)) = root.get("name") {
            let mut name = Map::new();
            name.insert("full".to_owned(), Value::String(full.clone()));
            root.insert("name".to_owned(), Value::Object(name));
        }
    } else if record_type == CALENDAR_EVENT
        && let Some(Value::String(rule)) = root.get("rrule").cloned()
    {
        let recurrence = root
            .entry("recurrence")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(recurrence) = recurrence {
            let rules = recurrence
                .entry("rules")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(rules) = rules
                && rules.is_empty()
            {
                rules.insert("0".to_owned(), Value::String(rule));
            }
        }
        root.remove("rrule");
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "map",
    }
}

fn bad_type(field: &str, expected: &'static str, found: &Value) -> ReadError {
    ReadError::new(
        field,
        ReadProblem::BadType {
            expected,
            found: json_type(found),
        },
    )
}

fn as_uint(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 9.0e15)
            // Checked integral and in range just above.
            .map(|f| f as u64)
    })
}

/// Checks known fields' types; drops nulls at known keys (absent); leaves unknown keys alone.
fn validate(value: &mut Value, kind: Kind, path: &str) -> Result<(), ReadError> {
    match kind {
        Kind::Any => Ok(()),
        Kind::Atomic | Kind::Text => match value {
            Value::String(_) => Ok(()),
            other => Err(bad_type(path, "string", other)),
        },
        Kind::Bool => match value {
            Value::Bool(_) => Ok(()),
            other => Err(bad_type(path, "boolean", other)),
        },
        Kind::Uint => match as_uint(value) {
            Some(n) => {
                *value = Value::from(n);
                Ok(())
            }
            None => Err(bad_type(path, "non-negative integer", value)),
        },
        Kind::Struct(_) | Kind::Entries(_) => {
            let Value::Object(map) = value else {
                return Err(bad_type(path, "map", value));
            };
            let known_null: Vec<String> = map
                .iter()
                .filter(|(k, v)| v.is_null() && !matches!(kind.field(k), Kind::Any))
                .map(|(k, _)| k.clone())
                .collect();
            for k in known_null {
                map.remove(&k);
            }
            for (k, v) in map.iter_mut() {
                validate(v, kind.field(k), &join(path, k))?;
            }
            Ok(())
        }
    }
}

fn check_time(map: &Map<String, Value>, key: &str, path: &str) -> Result<(), ReadError> {
    if let Some(Value::String(s)) = map.get(key) {
        EventTime::parse(s).map_err(|e| ReadError::new(&join(path, key), e.into()))?;
    }
    Ok(())
}

/// `start`/`end` of an event and of its overrides must be one of the [`EventTime`] forms.
fn check_times(value: &Value) -> Result<(), ReadError> {
    let Some(root) = value.as_object() else {
        return Ok(());
    };
    if root.get("type").and_then(Value::as_str) != Some(CALENDAR_EVENT) {
        return Ok(());
    }
    check_time(root, "start", "")?;
    check_time(root, "end", "")?;
    if let Some(Value::Object(overrides)) = root.get("overrides") {
        for (key, o) in overrides {
            if let Value::Object(o) = o {
                let path = join("overrides", key);
                check_time(o, "start", &path)?;
                check_time(o, "end", &path)?;
            }
        }
    }
    Ok(())
}

/// The whole document as JSON: Text and strings as strings, counters and timestamps as numbers,
/// bytes as lists of numbers.
pub fn to_json<D: ReadDoc>(doc: &D) -> Result<Value, automerge::AutomergeError> {
    object_json(doc, &ROOT, ObjType::Map)
}

pub(crate) fn value_json<D: ReadDoc>(
    doc: &D,
    value: &AmValue<'_>,
    id: &ExId,
) -> Result<Value, automerge::AutomergeError> {
    match value {
        AmValue::Object(ty) => object_json(doc, id, *ty),
        AmValue::Scalar(s) => Ok(scalar_json(s)),
    }
}

fn object_json<D: ReadDoc>(
    doc: &D,
    obj: &ExId,
    ty: ObjType,
) -> Result<Value, automerge::AutomergeError> {
    match ty {
        ObjType::Text => Ok(Value::String(doc.text(obj)?)),
        ObjType::Map | ObjType::Table => {
            let mut map = Map::new();
            for key in doc.keys(obj) {
                if let Some((value, id)) = doc.get(obj, key.as_str())? {
                    map.insert(key, value_json(doc, &value, &id)?);
                }
            }
            Ok(Value::Object(map))
        }
        ObjType::List => {
            let mut items = Vec::new();
            for index in 0..doc.length(obj) {
                if let Some((value, id)) = doc.get(obj, index)? {
                    items.push(value_json(doc, &value, &id)?);
                }
            }
            Ok(Value::Array(items))
        }
    }
}

fn scalar_json(s: &ScalarValue) -> Value {
    match s {
        ScalarValue::Str(s) => Value::String(s.to_string()),
        ScalarValue::Int(n) | ScalarValue::Timestamp(n) => Value::from(*n),
        ScalarValue::Uint(n) => Value::from(*n),
        ScalarValue::F64(f) => Value::from(*f),
        ScalarValue::Counter(c) => Value::from(i64::from(c)),
        ScalarValue::Boolean(b) => Value::Bool(*b),
        ScalarValue::Bytes(b) => Value::from(b.clone()),
        ScalarValue::Null | ScalarValue::Unknown { .. } => Value::Null,
    }
}
