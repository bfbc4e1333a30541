//! Google Calendar v3 wire types (pure): the Event resource, an `events.list` page, the error
//! envelope, the OAuth2 token answer, and the classification of a failed answer.
//!
//! Every struct keeps the fields it does not name in `extra` (serde flatten), so reading an event
//! never loses anything; write-back itself edits the stored raw JSON (see
//! [`super::translate`]), these types are only the reading view of it.
//! Must not: do I/O or decide sync policy (that is [`super::sync`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Unknown fields of a Google object, kept as JSON.
pub type Extra = BTreeMap<String, Value>;

/// `start`, `end` and `originalStartTime`: `date` for all-day, else `dateTime` (+ `timeZone`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDateTime {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `organizer` and `creator`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, rename = "self", skip_serializing_if = "Option::is_none")]
    pub is_self: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `attendees[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attendee {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// `needsAction | declined | tentative | accepted`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizer: Option<bool>,
    #[serde(default, rename = "self", skip_serializing_if = "Option::is_none")]
    pub is_self: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<bool>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// An Event resource (the fields the bridge reads; everything else in `extra`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Absent only on an insert body Google has not seen yet.
    #[serde(default)]
    pub id: String,
    /// `confirmed | tentative | cancelled`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<EventDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<EventDateTime>,
    /// RRULE / EXRULE / RDATE / EXDATE lines; masters only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurring_event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_start_time: Option<EventDateTime>,
    #[serde(default, rename = "iCalUID", skip_serializing_if = "Option::is_none")]
    pub ical_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organizer: Option<Person>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attendees: Option<Vec<Attendee>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Event {
    /// Reads an event from its JSON object.
    pub fn from_value(value: &Value) -> Result<Event, serde_json::Error> {
        Event::deserialize(value)
    }

    pub fn is_cancelled(&self) -> bool {
        self.status.as_deref() == Some("cancelled")
    }

    /// The master's id for an instance or exception; `None` for a master or a single event.
    pub fn series_id(&self) -> Option<&str> {
        self.recurring_event_id.as_deref().filter(|s| !s.is_empty())
    }
}

/// One `events.list` answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsPage {
    /// Raw items: each is read into an [`Event`] by the caller so one bad item does not lose the
    /// page.
    #[serde(default)]
    pub items: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sync_token: Option<String>,
    /// The calendar's zone (used for floating times written back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `error.errors[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorItem {
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// `error` of the error envelope `{"error": {"errors": [...], "code": N, "message": "..."}}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub errors: Vec<ErrorItem>,
    #[serde(default)]
    pub code: u16,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

impl ErrorBody {
    /// Parses an error answer; `None` when the body is not Google's envelope.
    pub fn parse(body: &[u8]) -> Option<ErrorBody> {
        serde_json::from_slice::<ErrorEnvelope>(body)
            .ok()
            .map(|e| e.error)
    }

    /// The envelope Google sends, for fakes and tests.
    pub fn envelope(code: u16, domain: &str, reason: &str, message: &str) -> Value {
        serde_json::json!({
            "error": {
                "errors": [{"domain": domain, "reason": reason, "message": message}],
                "code": code,
                "message": message,
            }
        })
    }

    pub fn has_reason(&self, reason: &str) -> bool {
        self.errors.iter().any(|e| e.reason == reason)
    }

    fn first_reason(&self) -> Option<&str> {
        self.errors.first().map(|e| e.reason.as_str())
    }
}

/// What a non-2xx answer means for the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// 410 `fullSyncRequired` / `updatedMinTooLongAgo`: the sync token is gone; list everything.
    FullSyncRequired,
    /// 410 `deleted`: the event was already deleted (a DELETE treats it as done).
    AlreadyDeleted,
    /// 403 `rateLimitExceeded` / `userRateLimitExceeded`, or 429: exponential backoff.
    RateLimited,
    /// 403 `quotaExceeded`: the abuse limit; back off for a long time.
    QuotaExceeded,
    /// 409 `duplicate`: the client-chosen id exists already.
    Duplicate,
    /// 412 `conditionNotMet`: the `If-Match` etag is stale.
    ConditionNotMet,
    /// 404.
    NotFound,
    /// 401: the access token is not (or no longer) valid.
    Unauthorized,
    /// 500 / 502 / 503 / 504: Google asks for a retry with backoff.
    ServerError,
    /// Anything else (a 400, a 403 for a permission, ...): not retried.
    Other { status: u16, reason: Option<String> },
}

impl Failure {
    /// Classifies a non-2xx answer by status and `error.errors[].reason`.
    pub fn classify(status: u16, body: &[u8]) -> Failure {
        let err = ErrorBody::parse(body).unwrap_or_default();
        let reason = |r: &str| err.has_reason(r);
        match status {
            410 if reason("deleted") => Failure::AlreadyDeleted,
            410 => Failure::FullSyncRequired,
            429 => Failure::RateLimited,
            403 if reason("rateLimitExceeded") || reason("userRateLimitExceeded") => {
                Failure::RateLimited
            }
            403 if reason("quotaExceeded") => Failure::QuotaExceeded,
            409 => Failure::Duplicate,
            412 => Failure::ConditionNotMet,
            404 => Failure::NotFound,
            401 => Failure::Unauthorized,
            500 | 502 | 503 | 504 => Failure::ServerError,
            _ => Failure::Other {
                status,
                reason: err.first_reason().map(str::to_owned),
            },
        }
    }

    /// Whether the same request may simply be sent again after a pause.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Failure::RateLimited | Failure::QuotaExceeded | Failure::ServerError
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::FullSyncRequired => write!(f, "410 fullSyncRequired"),
            Failure::AlreadyDeleted => write!(f, "410 deleted"),
            Failure::RateLimited => write!(f, "rate limited"),
            Failure::QuotaExceeded => write!(f, "403 quotaExceeded"),
            Failure::Duplicate => write!(f, "409 duplicate"),
            Failure::ConditionNotMet => write!(f, "412 conditionNotMet"),
            Failure::NotFound => write!(f, "404 notFound"),
            Failure::Unauthorized => write!(f, "401 unauthorized"),
            Failure::ServerError => write!(f, "server error"),
            Failure::Other { status, reason } => {
                write!(f, "{status} {}", reason.as_deref().unwrap_or("(no reason)"))
            }
        }
    }
}

/// The token endpoint's answer to a refresh-token grant.
#[derive(Clone, PartialEq, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    /// Seconds; Google sends 3599.
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub token_type: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("token_type", &self.token_type)
            .finish()
    }
}

/// Query parameters `events.list` must never carry together with `syncToken`.
pub const FORBIDDEN_WITH_SYNC_TOKEN: &[&str] = &[
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];

/// The largest `maxResults` Google accepts.
pub const MAX_RESULTS_LIMIT: u32 = 2500;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_keeps_unknown_fields_through_a_round_trip() {
        let raw = json!({
            "kind": "calendar#event",
            "id": "abc123",
            "etag": "\"3181161784712000\"",
            "status": "confirmed",
            "htmlLink": "https://www.google.com/calendar/event?eid=x",
            "summary": "Standup",
            "start": {"dateTime": "2026-11-19T10:00:00+01:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-11-19T10:15:00+01:00", "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=DAILY"],
            "iCalUID": "abc123@google.com",
            "attendees": [{"email": "a@x.org", "responseStatus": "accepted", "self": true,
                           "comment": "hi"}],
            "reminders": {"useDefault": true},
            "extendedProperties": {"private": {"k": "v"}},
            "sequence": 2,
        });
        let e = Event::from_value(&raw).unwrap();
        assert_eq!(e.ical_uid.as_deref(), Some("abc123@google.com"));
        assert_eq!(e.attendees.as_ref().unwrap()[0].is_self, Some(true));
        assert!(e.extra.contains_key("reminders") && e.extra.contains_key("htmlLink"));
        assert_eq!(serde_json::to_value(&e).unwrap(), raw);
    }

    #[test]
    fn failures_are_classified_by_status_and_reason() {
        let body = |code, domain, reason| {
            serde_json::to_vec(&ErrorBody::envelope(code, domain, reason, "m")).unwrap()
        };
        assert_eq!(
            Failure::classify(410, &body(410, "calendar", "fullSyncRequired")),
            Failure::FullSyncRequired
        );
        assert_eq!(
            Failure::classify(410, &body(410, "global", "deleted")),
            Failure::AlreadyDeleted
        );
        for reason in ["rateLimitExceeded", "userRateLimitExceeded"] {
            assert_eq!(
                Failure::classify(403, &body(403, "usageLimits", reason)),
                Failure::RateLimited
            );
        }
        assert_eq!(Failure::classify(429, b""), Failure::RateLimited);
        assert_eq!(
            Failure::classify(403, &body(403, "usageLimits", "quotaExceeded")),
            Failure::QuotaExceeded
        );
        assert_eq!(
            Failure::classify(403, &body(403, "calendar", "forbiddenForNonOrganizer")),
            Failure::Other {
                status: 403,
                reason: Some("forbiddenForNonOrganizer".into())
            }
        );
        assert_eq!(
            Failure::classify(409, &body(409, "global", "duplicate")),
            Failure::Duplicate
        );
        assert_eq!(
            Failure::classify(412, &body(412, "global", "conditionNotMet")),
            Failure::ConditionNotMet
        );
        assert_eq!(Failure::classify(503, b"<html>"), Failure::ServerError);
        assert!(Failure::RateLimited.is_retryable());
        assert!(!Failure::Duplicate.is_retryable());
    }

    #[test]
    fn token_responses_never_print_the_token() {
        let t: TokenResponse =
            serde_json::from_str(r#"{"access_token":"ya29.secret","expires_in":3599}"#).unwrap();
        assert!(!format!("{t:?}").contains("ya29"));
    }
}
