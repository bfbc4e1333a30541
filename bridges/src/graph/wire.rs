//! Microsoft Graph (v1.0) wire format: the event, contact, delta page, error and token bodies the
//! bridge reads.
//!
//! Every struct keeps the fields it does not name in `extra` (serde `flatten`), so nothing Graph
//! sends is lost when a value is read. Writes never serialize these structs back: the bridge
//! keeps each item's raw JSON and sends PATCH bodies with only the changed fields (see
//! `translate`), so every field it does not map stays as Graph has it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Fields a struct does not name, as Graph sent them.
pub type Extra = Map<String, Value>;

/// `dateTimeTimeZone`: a wall time without offset plus the zone it is in (a Windows name, an IANA
/// name, or `UTC`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DateTimeTimeZone {
    #[serde(default)]
    pub date_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `itemBody`: `contentType` is `text` or `html`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl ItemBody {
    pub fn is_html(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("html"))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailAddress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `recipient` (organizer).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recipient {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address: Option<EmailAddress>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `responseStatus`: `response` is one of `none`, `organizer`, `tentativelyAccepted`,
/// `accepted`, `declined`, `notResponded`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `attendee`: `type` is `required`, `optional` or `resource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attendee {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub attendee_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ResponseStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_address: Option<EmailAddress>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Location {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `@removed` on a delta row: `reason` is `changed` (restorable) or `deleted`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `event.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventType {
    SingleInstance,
    Occurrence,
    Exception,
    SeriesMaster,
    /// A value this version does not know; read like a single instance.
    #[serde(other)]
    Other,
}

/// `recurrencePattern`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurrencePattern {
    /// `daily`, `weekly`, `absoluteMonthly`, `relativeMonthly`, `absoluteYearly`, `relativeYearly`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub pattern_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_of_week: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_day_of_week: Option<String>,
    /// `first`, `second`, `third`, `fourth`, `last`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_of_month: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<u32>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `recurrenceRange`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurrenceRange {
    /// `endDate`, `noEnd` or `numbered`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub range_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_occurrences: Option<u32>,
    /// A Windows (or IANA) zone name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence_time_zone: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `patternedRecurrence` (on series masters only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PatternedRecurrence {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<RecurrencePattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<RecurrenceRange>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An `event`, or a row of a calendarView delta page (which may be `@removed`, or a stripped
/// occurrence carrying only `id`, `seriesMasterId`, `type`, `start`, `end` and the etag).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(default)]
    pub id: String,
    #[serde(
        rename = "@odata.etag",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub etag: Option<String>,
    #[serde(rename = "@removed", default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Removed>,
    #[serde(rename = "iCalUId", default, skip_serializing_if = "Option::is_none")]
    pub ical_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<ItemBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_preview: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<DateTimeTimeZone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<DateTimeTimeZone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_all_day: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// `free`, `tentative`, `busy`, `oof`, `workingElsewhere`, `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_as: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_cancelled: Option<bool>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<EventType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series_master_id: Option<String>,
    /// DateTimeOffset (`2026-11-26T09:00:00Z`) of an occurrence's or exception's slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_start_time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_end_time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<PatternedRecurrence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizer: Option<Recipient>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attendees: Option<Vec<Attendee>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_organizer: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<ResponseStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_date_time: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Event {
    /// `type`, defaulting to a single instance.
    pub fn kind(&self) -> EventType {
        self.event_type.unwrap_or(EventType::SingleInstance)
    }

    /// An occurrence row as calendarView delta sends it: no subject, no body, no iCalUId.
    pub fn is_stripped(&self) -> bool {
        self.kind() == EventType::Occurrence && self.subject.is_none() && self.ical_uid.is_none()
    }
}

/// A `contact`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contact {
    #[serde(default)]
    pub id: String,
    #[serde(
        rename = "@odata.etag",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub etag: Option<String>,
    #[serde(rename = "@removed", default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Removed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_addresses: Option<Vec<EmailAddress>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_phones: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_phones: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mobile_phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub personal_notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_key: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One page of a delta query. Exactly one of `next_link` (keep paging) and `delta_link` (the
/// round is done; store it) is set on a well-formed page. Rows stay raw JSON so they can be kept
/// verbatim as shadows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeltaPage {
    #[serde(default)]
    pub value: Vec<Value>,
    #[serde(
        rename = "@odata.nextLink",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub next_link: Option<String>,
    #[serde(
        rename = "@odata.deltaLink",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub delta_link: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A delta row, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum DeltaRow {
    /// A present item (full, or a stripped occurrence).
    Item { id: String, raw: Value },
    /// `@removed`: deleted, or (calendarView) changed outside the window.
    Removed { id: String, reason: Option<String> },
}

/// Why a delta row is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("delta row {index}: {reason}")]
pub struct RowError {
    pub index: usize,
    pub reason: String,
}

impl DeltaPage {
    /// Classifies every row; rows without an `id` are an error (Graph always sends one).
    pub fn rows(&self) -> Result<Vec<DeltaRow>, RowError> {
        self.value
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                let id = raw
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| RowError {
                        index,
                        reason: "no `id`".into(),
                    })?
                    .to_owned();
                Ok(match raw.get("@removed") {
                    Some(removed) => DeltaRow::Removed {
                        id,
                        reason: removed
                            .get("reason")
                            .and_then(Value::as_str)
                            .map(str::to_owned),
                    },
                    None => DeltaRow::Item {
                        id,
                        raw: raw.clone(),
                    },
                })
            })
            .collect()
    }
}

/// `{"error": {"code", "message", "innerError"}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner_error: Option<Value>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// The error codes the bridge acts on.
pub const SYNC_STATE_NOT_FOUND: &str = "SyncStateNotFound";
pub const IRRESOLVABLE_CONFLICT: &str = "ErrorIrresolvableConflict";
pub const TOO_MANY_REQUESTS: &str = "TooManyRequests";
pub const ITEM_NOT_FOUND: &str = "ErrorItemNotFound";

/// What a non-success answer means for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The delta token expired (410, or a 4xx with `SyncStateNotFound` / `syncStateNotFound`):
    /// restart the round from the initial URL, merging with what is linked.
    SyncStateNotFound,
    /// 412 (`ErrorIrresolvableConflict`): the change key sent in `If-Match` is stale.
    Conflict,
    /// 429 or 503: wait `retry_after` (the header, in seconds) when given.
    Throttled { retry_after: Option<Duration> },
    /// 404.
    NotFound,
    /// 401: the access token is no longer accepted.
    Unauthorized,
    /// Anything else.
    Other {
        status: u16,
        code: String,
        message: String,
    },
}

/// Classifies a non-2xx answer from its status, body and `Retry-After` header value.
pub fn classify(status: u16, body: &str, retry_after: Option<&str>) -> Failure {
    let detail = serde_json::from_str::<ErrorBody>(body)
        .map(|b| b.error)
        .unwrap_or_default();
    let sync_state = detail.code.eq_ignore_ascii_case(SYNC_STATE_NOT_FOUND)
        || detail.code.eq_ignore_ascii_case("resyncRequired");
    match status {
        410 => Failure::SyncStateNotFound,
        400..=409 | 411..=499 if sync_state => Failure::SyncStateNotFound,
        412 => Failure::Conflict,
        429 | 503 => Failure::Throttled {
            retry_after: retry_after
                .and_then(|v| crate::sync::parse_retry_after(v, std::time::SystemTime::now())),
        },
        404 => Failure::NotFound,
        401 => Failure::Unauthorized,
        _ => Failure::Other {
            status,
            code: detail.code,
            message: detail.message,
        },
    }
}

/// The OAuth2 token endpoint's answer to a `refresh_token` grant.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub token_type: Option<String>,
    /// Some servers rotate the refresh token.
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// A change-notification subscription (`POST /subscriptions` body and answer).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `created,updated,deleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_url: Option<String>,
    /// Only settable at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_notification_url: Option<String>,
    /// `/me/events`, `/me/contacts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date_time: Option<String>,
    /// A secret Graph echoes in every notification; compare it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_state: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of a notification batch: a change (`changeType`) or a lifecycle event
/// (`lifecycleEvent`: `missed`, `subscriptionRemoved`, `reauthorizationRequired`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    #[serde(default)]
    pub subscription_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_expiration_date_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `{"value": [...]}`: Graph batches notifications, possibly of several subscriptions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NotificationBatch {
    #[serde(default)]
    pub value: Vec<Notification>,
    #[serde(flatten)]
    pub extra: Extra,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_keep_unknown_fields_and_read_stripped_occurrences() {
        let raw = r##"{
            "@odata.type": "#microsoft.graph.event",
            "@odata.etag": "W/\"DwAAABYAAAB\"",
            "id": "AAMkAGI2TG93AAA=",
            "seriesMasterId": "AAMkAGI2MASTER=",
            "type": "occurrence",
            "start": {"dateTime": "2026-11-19T09:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-11-19T10:00:00.0000000", "timeZone": "UTC"}
        }"##;
        let e: Event = serde_json::from_str(raw).unwrap();
        assert_eq!(e.kind(), EventType::Occurrence);
        assert!(e.is_stripped());
        assert_eq!(e.etag.as_deref(), Some("W/\"DwAAABYAAAB\""));
        assert_eq!(
            e.extra.get("@odata.type"),
            Some(&Value::String("#microsoft.graph.event".into()))
        );
        let full: Event = serde_json::from_str(
            r#"{"id":"x","type":"somethingNew","subject":"s","sensitivity":"normal"}"#,
        )
        .unwrap();
        assert_eq!(full.kind(), EventType::Other);
        assert!(full.extra.contains_key("sensitivity"));
    }

    #[test]
    fn delta_rows_are_classified() {
        let page: DeltaPage = serde_json::from_str(
            r#"{"@odata.context":"c","value":[
                {"id":"a","subject":"x"},
                {"id":"b","@removed":{"reason":"deleted"}}
            ],"@odata.deltaLink":"https://graph/me/calendarView/delta?$deltatoken=t"}"#,
        )
        .unwrap();
        let rows = page.rows().unwrap();
        assert!(matches!(&rows[0], DeltaRow::Item { id, .. } if id == "a"));
        assert_eq!(
            rows[1],
            DeltaRow::Removed {
                id: "b".into(),
                reason: Some("deleted".into())
            }
        );
        assert!(page.next_link.is_none());
        let bad: DeltaPage = serde_json::from_str(r#"{"value":[{"subject":"x"}]}"#).unwrap();
        assert!(bad.rows().is_err());
    }

    #[test]
    fn failures_are_classified() {
        let gone = r#"{"error":{"code":"SyncStateNotFound","message":"The sync state generation is not found"}}"#;
        assert_eq!(classify(410, gone, None), Failure::SyncStateNotFound);
        assert_eq!(classify(400, gone, None), Failure::SyncStateNotFound);
        assert_eq!(
            classify(
                412,
                r#"{"error":{"code":"ErrorIrresolvableConflict"}}"#,
                None
            ),
            Failure::Conflict
        );
        assert_eq!(
            classify(429, "", Some("7")),
            Failure::Throttled {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify(503, "not json", None),
            Failure::Throttled { retry_after: None }
        );
        assert!(matches!(
            classify(500, r#"{"error":{"code":"generalException","message":"m"}}"#, None),
            Failure::Other { status: 500, ref code, .. } if code == "generalException"
        ));
    }
}
