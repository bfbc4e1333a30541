//! Salesforce REST wire types (serde): records with their `attributes`, the replication
//! endpoints (`updated`, `deleted`), SOQL query pages, sObject Collections requests and
//! SaveResults, error arrays, and Salesforce's date-time form.
//!
//! Parsed leniently: fields the docs do not promise are optional, a record's fields are kept as
//! JSON values (unknown ones included, so a read-modify-write drops nothing). Must not: do I/O or
//! decide anything about sync.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API version used when the bridge does not name one.
pub const DEFAULT_API_VERSION: &str = "v62.0";
/// sObject Collections take at most 200 records per request [doc].
pub const MAX_COLLECTION: usize = 200;
/// Ids per `WHERE Id IN (...)` fetch: keeps the query URL short.
pub const IDS_PER_QUERY: usize = 100;

/// The sObjects driftless syncs, each with its canonical record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SObjectType {
    Contact,
    Account,
    Opportunity,
}

impl SObjectType {
    pub const ALL: [SObjectType; 3] = [
        SObjectType::Contact,
        SObjectType::Account,
        SObjectType::Opportunity,
    ];

    /// The API name (`Contact`, `Account`, `Opportunity`).
    pub fn name(self) -> &'static str {
        match self {
            SObjectType::Contact => "Contact",
            SObjectType::Account => "Account",
            SObjectType::Opportunity => "Opportunity",
        }
    }

    /// The inverse of [`SObjectType::name`] (exact, as Salesforce spells it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The canonical record type it becomes (`contact`, `company`, `deal`).
    pub fn record_type(self) -> &'static str {
        match self {
            SObjectType::Contact => driftless_crdt_model::CONTACT,
            SObjectType::Account => driftless_crdt_model::COMPANY,
            SObjectType::Opportunity => driftless_crdt_model::DEAL,
        }
    }
}

/// `attributes` of a record: its type and (in answers) its URL.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attributes {
    #[serde(rename = "type")]
    pub sobject_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// A record: `attributes` plus every field as returned (strings, numbers, booleans, null,
/// nested relationship objects).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Attributes>,
    #[serde(flatten)]
    pub fields: BTreeMap<String, Value>,
}

/// Field values to write: a JSON value per field, `null` to clear.
pub type Fields = BTreeMap<String, Value>;

impl SObject {
    /// A record of `sobject_type` with `fields` (a write body entry).
    pub fn new(sobject_type: SObjectType, fields: Fields) -> Self {
        SObject {
            attributes: Some(Attributes {
                sobject_type: sobject_type.name().to_owned(),
                ..Attributes::default()
            }),
            fields,
        }
    }

    /// `Id`.
    pub fn id(&self) -> Option<&str> {
        self.text("Id")
    }

    /// A field as text: strings as they are, numbers and booleans in their JSON spelling; None
    /// for null, absent, blank or structured values.
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.fields.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.as_str()),
            _ => None,
        }
    }

    /// `SystemModstamp` as epoch milliseconds (falling back to `LastModifiedDate`).
    pub fn modstamp_ms(&self) -> Option<i64> {
        self.text("SystemModstamp")
            .or_else(|| self.text("LastModifiedDate"))
            .and_then(parse_datetime_ms)
    }
}

/// `GET .../sobjects/{o}/updated/?start&end`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdatedResponse {
    #[serde(default)]
    pub ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_date_covered: Option<String>,
}

/// One entry of `deletedRecords`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_date: Option<String>,
}

/// `GET .../sobjects/{o}/deleted/?start&end`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeletedResponse {
    #[serde(default)]
    pub deleted_records: Vec<DeletedRecord>,
    /// The oldest delete the org still remembers: a cursor before it may have missed deletes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earliest_date_available: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_date_covered: Option<String>,
}

/// A SOQL page (`/query?q=` and its `nextRecordsUrl`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryResponse {
    #[serde(default)]
    pub total_size: u64,
    #[serde(default = "default_true")]
    pub done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_records_url: Option<String>,
    #[serde(default)]
    pub records: Vec<SObject>,
}

fn default_true() -> bool {
    true
}

/// `POST` / `PATCH /composite/sobjects[/{o}/{externalIdField}]` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionRequest {
    pub all_or_none: bool,
    pub records: Vec<SObject>,
}

/// One entry of Salesforce's error array, or of a SaveResult's `errors` (which names the code
/// `statusCode` instead of `errorCode`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorItem {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(
        default,
        rename = "errorCode",
        alias = "statusCode",
        skip_serializing_if = "Option::is_none"
    )]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl ErrorItem {
    pub fn code(&self) -> &str {
        self.error_code.as_deref().unwrap_or("")
    }

    /// `CODE: message [fields]`, log-safe.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{}: {}",
            self.error_code.as_deref().unwrap_or("(no code)"),
            self.message.as_deref().unwrap_or("(no message)")
        );
        if !self.fields.is_empty() {
            out.push_str(&format!(" [{}]", self.fields.join(", ")));
        }
        out
    }
}

/// Parses an error body: Salesforce's array, a single object, or (proxies, HTML pages) a
/// message-only item.
pub fn parse_errors(body: &[u8]) -> Vec<ErrorItem> {
    if let Ok(items) = serde_json::from_slice::<Vec<ErrorItem>>(body) {
        return items;
    }
    if let Ok(item) = serde_json::from_slice::<ErrorItem>(body)
        && (item.message.is_some() || item.error_code.is_some())
    {
        return vec![item];
    }
    if body.is_empty() {
        return Vec::new();
    }
    vec![ErrorItem {
        message: Some(String::from_utf8_lossy(body).chars().take(300).collect()),
        ..ErrorItem::default()
    }]
}

/// The errors as one line.
pub fn summarize(errors: &[ErrorItem]) -> String {
    if errors.is_empty() {
        return "(no error body)".into();
    }
    errors
        .iter()
        .map(ErrorItem::summary)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A SaveResult (create/update/delete) or UpsertResult (`created` set) of a collection call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SaveResult {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub success: bool,
    #[serde(default)]
    pub errors: Vec<ErrorItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
}

/// Error codes driftless acts on [doc: errorcodes].
pub mod codes {
    /// Daily API requests spent (403), or too many concurrent long requests.
    pub const REQUEST_LIMIT_EXCEEDED: &str = "REQUEST_LIMIT_EXCEEDED";
    /// 401: the access token expired or was revoked.
    pub const INVALID_SESSION_ID: &str = "INVALID_SESSION_ID";
    /// A replication window outside what the org keeps (too old, or start not before end).
    pub const INVALID_REPLICATION_DATE: &str = "INVALID_REPLICATION_DATE";
    /// More than 600,000 ids in an `updated` window.
    pub const EXCEEDED_ID_LIMIT: &str = "EXCEEDED_ID_LIMIT";
    /// The record is deleted (or merged away).
    pub const ENTITY_IS_DELETED: &str = "ENTITY_IS_DELETED";
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const INVALID_CROSS_REFERENCE_KEY: &str = "INVALID_CROSS_REFERENCE_KEY";
    /// With `allOrNone: true`, the siblings of a failed record.
    pub const ALL_OR_NONE_OPERATION_ROLLED_BACK: &str = "ALL_OR_NONE_OPERATION_ROLLED_BACK";
}

/// A Salesforce date-time (`2013-05-08T21:20:00.000+0000`, or RFC 3339) as epoch milliseconds.
pub fn parse_datetime_ms(value: &str) -> Option<i64> {
    let v = value.trim();
    if let Ok(dt) = DateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(dt.timestamp_millis());
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(v) {
        return Some(dt.timestamp_millis());
    }
    NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|dt| Utc.from_utc_datetime(&dt).timestamp_millis())
}

/// Epoch milliseconds in Salesforce's answer form (`2013-05-08T21:20:00.000+0000`).
pub fn format_datetime_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Epoch milliseconds as a replication parameter (`2013-05-06T00:00:00+00:00`, seconds kept:
/// Salesforce truncates them itself).
pub fn format_param_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S+00:00").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// `ms` truncated to the minute, as the replication endpoints read their parameters.
pub fn truncate_to_minute(ms: i64) -> i64 {
    ms - ms.rem_euclid(60_000)
}

/// A SOQL string literal: quotes and backslashes escaped [doc: SOQL quoted string escapes].
pub fn soql_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A record id as Salesforce issues them: 15 or 18 ASCII letters and digits. Anything else
/// never reaches a query.
pub fn is_record_id(id: &str) -> bool {
    (id.len() == 15 || id.len() == 18) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A field API name (`Email`, `Driftless_Id__c`): letters, digits and underscores, starting
/// with a letter.
pub fn is_field_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_unknown_fields_and_attributes() {
        let body = r#"{"attributes":{"type":"Contact","url":"/services/data/v62.0/sobjects/Contact/003xx0000001AAAAA2"},
            "Id":"003xx0000001AAAAA2","LastName":"Doe","Custom__c":7,"Account":{"Name":"Acme"},
            "SystemModstamp":"2026-11-19T10:00:00.000+0000","Email":null}"#;
        let r: SObject = serde_json::from_str(body).unwrap();
        assert_eq!(r.id(), Some("003xx0000001AAAAA2"));
        assert_eq!(r.text("Email"), None);
        assert_eq!(r.modstamp_ms(), Some(1_795_082_400_000));
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["Custom__c"], 7);
        assert_eq!(back["Account"]["Name"], "Acme");
        assert_eq!(back["attributes"]["type"], "Contact");
    }

    #[test]
    fn replication_and_query_answers() {
        let d: DeletedResponse = serde_json::from_str(
            r#"{"deletedRecords":[{"id":"a00D0000008pQRAIA2","deletedDate":"2013-05-07T22:07:19.000+0000"}],
                "earliestDateAvailable":"2013-05-03T15:57:00.000+0000","latestDateCovered":"2013-05-08T21:20:00.000+0000"}"#,
        )
        .unwrap();
        assert_eq!(d.deleted_records[0].id, "a00D0000008pQRAIA2");
        assert_eq!(
            d.earliest_date_available
                .as_deref()
                .and_then(parse_datetime_ms),
            Some(1_367_596_620_000)
        );
        let q: QueryResponse = serde_json::from_str(
            r#"{"totalSize":3000,"done":false,"nextRecordsUrl":"/services/data/v62.0/query/01gD0000002HU6KIAW-2000","records":[]}"#,
        )
        .unwrap();
        assert!(!q.done);
        assert!(q.next_records_url.unwrap().ends_with("-2000"));
    }

    #[test]
    fn errors_in_every_shape() {
        let e = parse_errors(
            br#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
        );
        assert_eq!(e[0].code(), codes::REQUEST_LIMIT_EXCEEDED);
        let s: SaveResult = serde_json::from_str(
            r#"{"success":false,"errors":[{"statusCode":"REQUIRED_FIELD_MISSING","message":"Required fields are missing: [LastName]","fields":["LastName"]}]}"#,
        )
        .unwrap();
        assert_eq!(s.errors[0].code(), "REQUIRED_FIELD_MISSING");
        assert!(s.errors[0].summary().contains("[LastName]"));
        assert_eq!(parse_errors(b"<html>busy</html>")[0].code(), "");
        assert!(parse_errors(b"").is_empty());
        let body = serde_json::to_value(CollectionRequest {
            all_or_none: false,
            records: vec![SObject::new(SObjectType::Contact, Fields::new())],
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({"allOrNone": false, "records": [{"attributes": {"type": "Contact"}}]})
        );
    }

    #[test]
    fn times_literals_and_names() {
        assert_eq!(
            parse_datetime_ms("2026-11-19T10:00:00Z"),
            Some(1_795_082_400_000)
        );
        assert_eq!(
            format_datetime_ms(1_795_082_400_123),
            "2026-11-19T10:00:00.123+0000"
        );
        assert_eq!(
            format_param_ms(1_795_082_415_000),
            "2026-11-19T10:00:15+00:00"
        );
        assert_eq!(truncate_to_minute(1_795_082_415_123), 1_795_082_400_000);
        assert_eq!(soql_literal(r"O'Brien\x"), r"'O\'Brien\\x'");
        assert!(is_record_id("003xx0000001AAAAA2") && !is_record_id("003' OR Id != '"));
        assert!(is_field_name("Driftless_Id__c") && !is_field_name("Id, Name"));
        assert_eq!(
            SObjectType::from_name("Account"),
            Some(SObjectType::Account)
        );
        assert_eq!(SObjectType::Opportunity.record_type(), "deal");
    }
}
