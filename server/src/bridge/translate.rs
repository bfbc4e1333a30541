//! Translation between provider resources and canonical records, as the bridge runner needs it:
//! a thin adapter over `driftless_bridges::dav::translate` (every field of the contracts, with
//! byte-preserving edits) that turns its errors into messages and supplies new slot ids.
//!
//! Invariant the runner relies on: `to_raw(Some(raw), &from_raw(raw))` is `raw` byte for byte, so a
//! quiet record writes nothing.

use driftless_bridges::dav::translate;
use driftless_crdt_model::{CalendarEvent, Contact};

/// Reads the canonical event of an iCalendar resource.
pub fn event_from_ical(raw: &str) -> Result<CalendarEvent, String> {
    translate::event_from_ical(raw).map_err(|e| e.to_string())
}

/// Writes `event` into `base` (or a new resource with `uid`), touching only what differs.
pub fn event_to_ical(
    base: Option<&str>,
    event: &CalendarEvent,
    uid: &str,
) -> Result<String, String> {
    translate::event_to_ical(base, event, uid).map_err(|e| e.to_string())
}

/// A new slot id for an email or phone: random, never derived from the value (contracts:
/// "Record documents").
pub fn new_slot_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Reads the canonical contact of a vCard, keeping the slot ids of `existing` for the same values.
pub fn contact_from_vcard(raw: &str, existing: Option<&Contact>) -> Result<Contact, String> {
    translate::contact_from_vcard(raw, existing, &mut new_slot_id).map_err(|e| e.to_string())
}

/// Writes `contact` into `base` (or a new vCard with `uid`), touching only what differs.
pub fn contact_to_vcard(
    base: Option<&str>,
    contact: &Contact,
    uid: &str,
) -> Result<String, String> {
    translate::contact_to_vcard(base, contact, uid).map_err(|e| e.to_string())
}

/// The `UID` of an iCalendar or vCard resource (first occurrence; enough to match records).
pub fn resource_uid(raw: &str) -> Option<String> {
    raw.lines()
        .find_map(|l| {
            l.strip_prefix("UID:").or_else(|| {
                l.strip_prefix("UID;")
                    .and_then(|r| r.split_once(':').map(|(_, v)| v))
            })
        })
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}
