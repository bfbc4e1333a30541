//! `GET /v1/calendar/occurrences?from=RFC3339&to=RFC3339[&tz=IANA]`: every occurrence of the
//! workspace's live calendar events in a window, sorted by start.
//!
//! Owns the query (parsing, the window cap), reading the events from storage and the response
//! shape. The expansion itself is `driftless_crdt_model::recurrence`; the mapping of errors to HTTP
//! statuses is `http.rs`'s. Must not: write documents.
//!
//! Response: `{"occurrences": [{"url", "title", "start", "end", "original_start", "all_day",
//! "status"}], "warnings": [{"url", "code", "message"}]}`. Timed values are RFC 3339 with the
//! offset of `tz` (default UTC, written `Z`), all-day values are dates. An event that cannot be
//! read or expanded is left out and named in `warnings` (`invalid_event`), as is one whose list a
//! cap cut (`truncated`); the rest of the answer is still complete.

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use chrono_tz::Tz;
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::recurrence::{self, ExpandOptions, Occurrence, OccurrenceTime};
use driftless_crdt_model::{CALENDAR_EVENT, read_event, record_type};
use serde_json::{Value, json};
use tracing::warn;

use crate::auth::Claims;
use crate::records::{Listing, RecordIndex};
use crate::storage::Storage;

/// The longest window one request may ask for.
pub const MAX_WINDOW_DAYS: i64 = 366;
/// The most occurrences one answer holds; a larger answer is refused (ask for a smaller window).
pub const MAX_OCCURRENCES: usize = 100_000;

/// A parsed, valid query.
#[derive(Debug, Clone, PartialEq)]
pub struct OccurrenceQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub zone: Tz,
}

/// Why a request gets no occurrences.
#[derive(Debug, thiserror::Error)]
pub enum OccurrencesError {
    /// A missing or bad parameter: `code` is the JSON error code.
    #[error("{message}")]
    BadQuery { code: &'static str, message: String },
    #[error("the window holds more than {MAX_OCCURRENCES} occurrences; ask for a smaller window")]
    TooMany,
    #[error("reading the workspace's documents: {0}")]
    Storage(String),
}

fn bad(code: &'static str, message: impl Into<String>) -> OccurrencesError {
    OccurrencesError::BadQuery {
        code,
        message: message.into(),
    }
}

fn parse_instant(name: &str, value: Option<&str>) -> Result<DateTime<Utc>, OccurrencesError> {
    let code = if name == "from" {
        "invalid_from"
    } else {
        "invalid_to"
    };
    let value = value.ok_or_else(|| bad(code, format!("`{name}` is required (RFC 3339)")))?;
    // An unencoded `+` in a query string arrives as a space.
    let value = value.replace(' ', "+");
    DateTime::parse_from_rfc3339(&value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            bad(
                code,
                format!(
                    "`{name}` is not an RFC 3339 time ({e}): `{value}`; \
                     example 2026-11-01T00:00:00+01:00 (encode `+` as %2B)"
                ),
            )
        })
}

impl OccurrenceQuery {
    /// Parses the query string of a request.
    pub fn parse(query: Option<&str>) -> Result<Self, OccurrencesError> {
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let get = |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let from = parse_instant("from", get("from"))?;
        let to = parse_instant("to", get("to"))?;
        let zone = match get("tz") {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| {
                bad(
                    "invalid_tz",
                    format!("`tz` `{name}` is not an IANA time zone name (e.g. Europe/Berlin)"),
                )
            })?,
        };
        if to <= from {
            return Err(bad("invalid_window", "`to` must be after `from`"));
        }
        if to - from > TimeDelta::days(MAX_WINDOW_DAYS) {
            return Err(bad(
                "window_too_long",
                format!("the window may be at most {MAX_WINDOW_DAYS} days long"),
            ));
        }
        Ok(OccurrenceQuery { from, to, zone })
    }
}

fn format_time(t: OccurrenceTime, zone: Tz) -> String {
    match t {
        OccurrenceTime::Date(d) => d.format("%Y-%m-%d").to_string(),
        OccurrenceTime::At(t) => t
            .with_timezone(&zone)
            .to_rfc3339_opts(SecondsFormat::Secs, true),
    }
}

/// The occurrences of every live `calendar_event` of the caller's workspace (and token scope).
/// Blocking: reads storage.
pub fn list(
    storage: &Storage,
    index: &RecordIndex,
    claims: &Claims,
    query: &OccurrenceQuery,
) -> Result<Value, OccurrencesError> {
    let listing = Listing {
        workspace: &claims.ws,
        record_type: Some(CALENDAR_EVENT),
        include_deleted: false,
        after: None,
    };
    let ids = index
        .list(&listing, usize::MAX, |id| claims.in_scope(id))
        .map_err(|e| OccurrencesError::Storage(e.to_string()))?;
    let options = ExpandOptions {
        zone: query.zone,
        ..ExpandOptions::default()
    };
    let mut found: Vec<(DocumentId, Occurrence)> = Vec::new();
    let mut warnings = Vec::new();
    for id in ids {
        if !claims.in_scope(&id) {
            continue;
        }
        let doc = match storage.load_document(&id) {
            Ok(Some(doc)) => doc,
            Ok(None) => continue,
            Err(e) => {
                warn!(document = %id, "occurrences: document not loadable: {e}");
                warnings.push(warning(&id, "invalid_event", e.to_string()));
                continue;
            }
        };
        if record_type(&doc).as_deref() != Some(CALENDAR_EVENT) {
            continue;
        }
        let event = match read_event(&doc) {
            Ok(event) => event,
            Err(e) => {
                let e = e.in_document(&id);
                warn!(document = %id, "occurrences: {e}");
                warnings.push(warning(&id, "invalid_event", e.to_string()));
                continue;
            }
        };
        // Tombstoned, or merged into another record (which lists it).
        if event.deleted || event.merged_into.is_some() {
            continue;
        }
        match recurrence::expand(&event, query.from, query.to, &options) {
            Ok(expansion) => {
                if expansion.truncated {
                    warnings.push(warning(
                        &id,
                        "truncated",
                        format!(
                            "more than {} occurrences in the window or {} instances since the \
                             start: the list is cut",
                            options.max_occurrences, options.max_scanned
                        ),
                    ));
                }
                found.extend(expansion.occurrences.into_iter().map(|o| (id.clone(), o)));
                if found.len() > MAX_OCCURRENCES {
                    return Err(OccurrencesError::TooMany);
                }
            }
            Err(e) => {
                warn!(document = %id, "occurrences: event not expandable: {e}");
                warnings.push(warning(&id, "invalid_event", e.to_string()));
            }
        }
    }
    found.sort_by(|(a_id, a), (b_id, b)| {
        let key = |o: &Occurrence| {
            (
                o.start.instant(query.zone),
                o.original_start.instant(query.zone),
            )
        };
        key(a)
            .cmp(&key(b))
            .then_with(|| a_id.to_string().cmp(&b_id.to_string()))
    });
    let occurrences: Vec<Value> = found
        .iter()
        .map(|(id, o)| occurrence_json(&format!("automerge:{id}"), o, query.zone))
        .collect();
    Ok(json!({ "occurrences": occurrences, "warnings": warnings }))
}

/// One entry of `occurrences`, times written in `zone`.
pub fn occurrence_json(url: &str, o: &Occurrence, zone: Tz) -> Value {
    json!({
        "url": url,
        "title": o.title,
        "start": format_time(o.start, zone),
        "end": format_time(o.end, zone),
        "original_start": format_time(o.original_start, zone),
        "all_day": o.all_day,
        "status": o.status,
    })
}

fn warning(id: &DocumentId, code: &str, message: String) -> Value {
    json!({"url": format!("automerge:{id}"), "code": code, "message": message})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(query: &str) -> &'static str {
        match OccurrenceQuery::parse(Some(query)) {
            Err(OccurrencesError::BadQuery { code, .. }) => code,
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn parses_and_checks_the_window() {
        let q = OccurrenceQuery::parse(Some(
            "from=2026-11-01T00:00:00%2B01:00&to=2026-12-01T00:00:00Z&tz=Europe/Berlin",
        ))
        .expect("valid query");
        assert_eq!(q.from.to_rfc3339(), "2026-10-31T23:00:00+00:00");
        assert_eq!(q.zone, chrono_tz::Europe::Berlin);
        // An unencoded `+` (decoded as a space) is read as meant.
        let q = OccurrenceQuery::parse(Some(
            "from=2026-11-01T00:00:00+01:00&to=2026-11-02T00:00:00+01:00",
        ))
        .expect("valid query");
        assert_eq!(q.zone, Tz::UTC);
        assert_eq!(q.to.to_rfc3339(), "2026-11-01T23:00:00+00:00");

        assert_eq!(code("to=2026-12-01T00:00:00Z"), "invalid_from");
        assert_eq!(
            code("from=2026-12-01&to=2026-12-02T00:00:00Z"),
            "invalid_from"
        );
        assert_eq!(code("from=2026-12-01T00:00:00Z"), "invalid_to");
        assert_eq!(
            code("from=2026-12-01T00:00:00Z&to=2026-12-02T00:00:00Z&tz=Mars/Olympus"),
            "invalid_tz"
        );
        assert_eq!(
            code("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z"),
            "invalid_window"
        );
        assert_eq!(
            code("from=2026-01-01T00:00:00Z&to=2027-01-03T00:00:00Z"),
            "window_too_long"
        );
    }
}
