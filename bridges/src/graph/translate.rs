//! Pure translation between Microsoft Graph items and the canonical records of
//! `driftless-crdt-model` (`calendar_event`, `contact`).
//!
//! # What the bridge stores
//! A calendar record's shadow is an [`EventBundle`]: the raw JSON of the event (a single instance
//! or a series master) plus, for a series, the raw rows of its instances seen in the window
//! (stripped occurrences completed from the master, exceptions as Graph sent them) and the
//! instance keys of occurrences Graph deleted. A contact's shadow is the contact's raw JSON.
//!
//! # Invariants
//! - `event_writes(bundle, &event_from_graph(bundle, k)?)` is empty, and so is
//!   `contact_patch(raw, &contact_from_graph(raw, ..)?)`: a quiet record writes nothing.
//! - Writes are PATCH bodies holding only the Graph fields whose canonical value differs from what
//!   the stored JSON says, so unknown fields, the HTML of an unchanged body and the Windows zone
//!   spelling of an unchanged time are never rewritten.
//! - Provider input never panics: bad values are [`TranslateError`]s naming the item and field.
//!
//! Times: Graph sends `start`/`end` as a wall time plus `timeZone` (UTC unless the client asks
//! otherwise) and the zone the organizer used in `originalStartTimeZone`; the canonical value is
//! the instant shown in that zone (`local+offset[IANA]`, via [`super::tz`]), `...Z` for UTC, or
//! a date for all-day events. Instance keys are the original start in UTC basic form (the date for
//! all-day series).
//!
//! Recurrence: the Graph `recurrence` object stays in the bundle; the canonical `rules` and the
//! `recurrence` a PATCH carries come from [`super::recurrence`] (crdt-model's mapping); a rule
//! Graph cannot express is never written in a changed form: updates leave it out and report it
//! ([`held_back_rule`]), creates fail naming the item.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike, Utc};
use driftless_crdt_model::{
    Attendee, CalendarEvent, Contact, ContactPoint, Name, Organizer, Override, Recurrence,
    ResolvedTime, SlotKind, assign_slots,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::recurrence::{self, RecurrenceWriteError};
use super::tz::{self, Zone};
use super::wire::{self, EventType};

/// Why an item or a canonical value could not be translated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TranslateError {
    /// The stored or received JSON is not a Graph item of the expected shape.
    #[error("graph item {item}: not a readable {what}: {reason}")]
    Shape {
        item: String,
        what: &'static str,
        reason: String,
    },
    /// One field could not be read or written.
    #[error("graph item {item}: field {field}: {reason}")]
    Field {
        item: String,
        field: String,
        reason: String,
    },
}

fn recurrence_error(item: &str, err: &RecurrenceWriteError) -> TranslateError {
    field_error(item, "recurrence", err.to_string())
}

fn field_error(item: &str, field: &str, reason: impl Into<String>) -> TranslateError {
    TranslateError::Field {
        item: item.to_owned(),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn parse_event(raw: &Value) -> Result<wire::Event, TranslateError> {
    serde_json::from_value(raw.clone()).map_err(|e| TranslateError::Shape {
        item: raw
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("(no id)")
            .to_owned(),
        what: "event",
        reason: e.to_string(),
    })
}

// ---------------------------------------------------------------------------------------------
// Global object ids
// ---------------------------------------------------------------------------------------------

/// The class id every Exchange global object id starts with.
const GLOBAL_ID_CLASS: [u8; 16] = [
    0x04, 0x00, 0x00, 0x00, 0x82, 0x00, 0xE0, 0x00, 0x74, 0xC5, 0xB7, 0x10, 0x1A, 0x82, 0xE0, 0x08,
];
/// Class id, instance date (4), creation time (8), reserved (8), data size (4).
const GLOBAL_ID_HEADER: usize = 40;
const VCAL_UID_MARKER: &[u8] = b"vCal-Uid\x01\x00\x00\x00";

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

fn global_id_bytes(ical_uid: &str) -> Option<Vec<u8>> {
    let bytes = decode_hex(ical_uid.trim())?;
    (bytes.len() >= GLOBAL_ID_HEADER && bytes[..16] == GLOBAL_ID_CLASS).then_some(bytes)
}

/// The iCalendar UID a meeting had where it was organized, when Graph's `iCalUId` is an Exchange
/// global object id wrapping it (`040000008200E00074C5B7101A82E008...` whose data is
/// `vCal-Uid\x01\x00\x00\x00<uid>\x00`, [MS-OXOCAL] 2.2.1.27). `None` for anything else,
/// including global ids Exchange minted itself (those are the UID as they are).
pub fn original_uid(ical_uid: &str) -> Option<String> {
    let bytes = global_id_bytes(ical_uid)?;
    let size = u32::from_le_bytes(bytes[36..40].try_into().ok()?) as usize;
    let data = bytes.get(GLOBAL_ID_HEADER..GLOBAL_ID_HEADER.checked_add(size)?)?;
    let uid = data.strip_prefix(VCAL_UID_MARKER)?;
    let uid = uid.split(|b| *b == 0).next()?;
    let uid = std::str::from_utf8(uid).ok()?.trim();
    (!uid.is_empty()).then(|| uid.to_owned())
}

/// The UID that identifies a meeting series across mailboxes and providers: the wrapped original
/// UID when there is one; for a global object id Exchange minted, the id with its per-instance
/// date zeroed (Graph's `iCalUId` differs per occurrence only there); anything else as it is.
pub fn series_uid(ical_uid: &str) -> String {
    if let Some(uid) = original_uid(ical_uid) {
        return uid;
    }
    match global_id_bytes(ical_uid) {
        Some(mut bytes) => {
            bytes[16..20].fill(0);
            bytes.iter().map(|b| format!("{b:02X}")).collect()
        }
        None => ical_uid.trim().to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------------------------

/// A Graph `dateTime` (`2026-11-19T10:00:00.0000000`), as a wall time.
fn parse_wall(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M").ok())
        .map(|t| t.with_nanosecond(0).unwrap_or(t))
}

fn wall_string(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// A Graph time as the canonical `start`/`end` string. `display_zone` is the zone the organizer
/// used (`originalStartTimeZone`), which decides the zone shown.
fn canonical_time(
    t: &wire::DateTimeTimeZone,
    all_day: bool,
    display_zone: Option<&str>,
    item: &str,
    field: &str,
) -> Result<String, TranslateError> {
    let wall = parse_wall(&t.date_time)
        .ok_or_else(|| field_error(item, field, format!("bad dateTime {:?}", t.date_time)))?;
    if all_day {
        return Ok(ResolvedTime::Date(wall.date()).to_string());
    }
    let sent_in = t.time_zone.as_deref().and_then(tz::zone_of);
    let utc = match sent_in {
        Some(Zone::Utc) => Some(wall),
        Some(Zone::Named(tz)) => Some(ResolvedTime::Zoned(wall, tz).instant()),
        None => None,
    };
    let Some(utc) = utc else {
        // A zone nobody knows (a custom Exchange zone): keep the wall time, floating.
        return Ok(ResolvedTime::Floating(wall).to_string());
    };
    let shown = display_zone.and_then(tz::zone_of).or(sent_in);
    Ok(match shown {
        Some(Zone::Named(tz)) => ResolvedTime::zoned_at(utc, tz),
        _ => ResolvedTime::Utc(utc),
    }
    .to_string())
}

/// A canonical `start`/`end` string, resolved.
fn parse_canonical(s: &str, item: &str, field: &str) -> Result<ResolvedTime, TranslateError> {
    ResolvedTime::parse(s).map_err(|e| field_error(item, field, e.to_string()))
}

/// A canonical time as a Graph `dateTimeTimeZone`; `current_zone` is the zone the item is in now
/// (its spelling is kept when it names the same zone; dates and floating times are written in it).
fn graph_time(when: ResolvedTime, current_zone: Option<&str>) -> Value {
    let (wall, zone) = match when {
        ResolvedTime::Date(d) => (
            d.and_time(NaiveTime::MIN),
            current_zone.unwrap_or("UTC").to_owned(),
        ),
        ResolvedTime::Utc(t) => (t, "UTC".to_owned()),
        ResolvedTime::Floating(t) => (t, current_zone.unwrap_or("UTC").to_owned()),
        ResolvedTime::Zoned(t, tz) => (t, tz::graph_zone_name(tz, current_zone)),
    };
    json!({"dateTime": wall_string(&wall), "timeZone": zone})
}

/// The instant a Graph `originalStart` (DateTimeOffset) names, in UTC.
fn parse_offset_time(s: &str) -> Option<NaiveDateTime> {
    DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc).naive_utc())
        .map(|t| t.with_nanosecond(0).unwrap_or(t))
}

/// The UTC instant a Graph time names (a wall time in a known zone), if known.
fn instant_of(t: &wire::DateTimeTimeZone) -> Option<NaiveDateTime> {
    let wall = parse_wall(&t.date_time)?;
    match t.time_zone.as_deref().and_then(tz::zone_of)? {
        Zone::Utc => Some(wall),
        Zone::Named(tz) => Some(ResolvedTime::Zoned(wall, tz).instant()),
    }
}

/// The override key of an instance row: its original start (`originalStart`, else its `start`,
/// which for an unmodified occurrence is the original slot) in UTC basic form, or the date for an
/// all-day series.
pub fn instance_key(row: &Value, all_day: bool) -> Option<String> {
    let original = row
        .get("originalStart")
        .and_then(Value::as_str)
        .and_then(parse_offset_time);
    let start: Option<wire::DateTimeTimeZone> = row
        .get("start")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    if all_day {
        let date = match (original, &start) {
            (Some(t), _) => t.date(),
            (None, Some(s)) => parse_wall(&s.date_time)?.date(),
            _ => return None,
        };
        return Some(ResolvedTime::Date(date).instance_key());
    }
    let instant = match original {
        Some(t) => t,
        None => instant_of(start.as_ref()?)?,
    };
    Some(ResolvedTime::Utc(instant).instance_key())
}

/// The instant (or midnight UTC of the date) an instance key names.
pub fn key_instant(key: &str) -> Option<NaiveDateTime> {
    if key.len() == 8 {
        return NaiveDate::parse_from_str(key, "%Y%m%d")
            .ok()
            .map(|d| d.and_time(NaiveTime::MIN));
    }
    NaiveDateTime::parse_from_str(key.strip_suffix('Z')?, "%Y%m%dT%H%M%S").ok()
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

/// A calendar record as the bridge stores it (the shadow's raw form; see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventBundle {
    /// The single instance or series master, as Graph last sent it.
    pub event: Value,
    /// Instance id to row, for a series: occurrences (completed from the master) and exceptions
    /// seen in the window.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances: BTreeMap<String, Value>,
    /// Instance key to the id the occurrence had, for occurrences Graph deleted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cancelled: BTreeMap<String, String>,
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

impl EventBundle {
    pub fn single(event: Value) -> Self {
        Self {
            event,
            ..Self::default()
        }
    }

    /// The Graph id this record is linked by (the master's for a series).
    pub fn id(&self) -> &str {
        str_field(&self.event, "id").unwrap_or_default()
    }

    /// `@odata.etag` of the event (what `If-Match` carries).
    pub fn etag(&self) -> Option<&str> {
        str_field(&self.event, "@odata.etag")
    }

    /// The raw `iCalUId`.
    pub fn ical_uid(&self) -> Option<&str> {
        str_field(&self.event, "iCalUId")
    }

    pub fn is_series(&self) -> bool {
        str_field(&self.event, "type") == Some("seriesMaster")
            || self.event.get("recurrence").is_some_and(|r| !r.is_null())
    }

    /// Whether this mailbox organizes the meeting (`isOrganizer`; absent reads as organizer, as for
    /// a plain appointment). Only the organizer's copy carries shared-field edits.
    pub fn is_organizer(&self) -> bool {
        self.event
            .get("isOrganizer")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    }

    pub fn is_all_day(&self) -> bool {
        self.event
            .get("isAllDay")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }

    /// The key of an instance this bundle knows (live or cancelled).
    pub fn key_of(&self, instance_id: &str) -> Option<String> {
        if let Some(row) = self.instances.get(instance_id) {
            return instance_key(row, self.is_all_day());
        }
        self.cancelled
            .iter()
            .find(|(_, id)| id.as_str() == instance_id)
            .map(|(k, _)| k.clone())
    }

    /// The live instance at `key`.
    pub fn instance_at(&self, key: &str) -> Option<(&str, &Value)> {
        let all_day = self.is_all_day();
        self.instances
            .iter()
            .find(|(_, row)| instance_key(row, all_day).as_deref() == Some(key))
            .map(|(id, row)| (id.as_str(), row))
    }

    /// Puts an instance row (completing a stripped occurrence from the master); an instance that
    /// comes back un-cancels its key.
    pub fn put_instance(&mut self, row: Value) {
        let Some(id) = str_field(&row, "id").map(str::to_owned) else {
            return;
        };
        let row = if str_field(&row, "type") == Some("occurrence") && row.get("subject").is_none() {
            complete_occurrence(&self.event, &row)
        } else {
            row
        };
        if let Some(key) = instance_key(&row, self.is_all_day()) {
            self.cancelled.remove(&key);
        }
        self.instances.insert(id, row);
    }

    /// Graph deleted this instance: an occurrence becomes a cancelled key.
    pub fn cancel_instance(&mut self, id: &str) {
        let all_day = self.is_all_day();
        if let Some(row) = self.instances.remove(id)
            && let Some(key) = instance_key(&row, all_day)
        {
            self.cancelled.insert(key, id.to_owned());
        }
    }

    /// The instance is no longer in the window (it still exists): forget its row.
    pub fn forget_instance(&mut self, id: &str) {
        self.instances.remove(id);
    }

    /// Replaces the master, re-completing the occurrences from it.
    pub fn set_master(&mut self, master: Value) {
        self.event = master;
        let rows: Vec<Value> = std::mem::take(&mut self.instances).into_values().collect();
        for row in rows {
            if str_field(&row, "type") == Some("occurrence") {
                self.put_instance(strip_occurrence(&row));
            } else {
                self.put_instance(row);
            }
        }
    }

    /// Replaces the row with `id` (the master or an instance) by Graph's answer to a write.
    pub fn replace_row(&mut self, id: &str, row: Value) {
        if self.id() == id {
            self.set_master(row);
        } else if self.instances.contains_key(id) {
            self.instances.insert(id.to_owned(), row);
        }
    }

    pub fn to_raw(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_raw(raw: &str) -> Result<Self, TranslateError> {
        serde_json::from_str(raw).map_err(|e| TranslateError::Shape {
            item: "(stored bundle)".into(),
            what: "event bundle",
            reason: e.to_string(),
        })
    }
}

/// The fields a calendarView delta keeps on an occurrence row.
const OCCURRENCE_KEEPS: &[&str] = &[
    "@odata.type",
    "@odata.etag",
    "id",
    "seriesMasterId",
    "type",
    "start",
    "end",
];

fn strip_occurrence(row: &Value) -> Value {
    let mut out = Map::new();
    if let Some(obj) = row.as_object() {
        for key in OCCURRENCE_KEEPS {
            if let Some(v) = obj.get(*key) {
                out.insert((*key).to_owned(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// Fields of a master that never describe one occurrence.
const SERIES_ONLY: &[&str] = &[
    "id",
    "@odata.etag",
    "changeKey",
    "type",
    "seriesMasterId",
    "recurrence",
    "iCalUId",
    "start",
    "end",
    "originalStart",
    "createdDateTime",
    "lastModifiedDateTime",
];

/// A stripped occurrence row (id, seriesMasterId, type, start, end, etag) completed with the
/// master's descriptive fields (subject, body, location, organizer, attendees, ...). The
/// occurrence's own fields win; `iCalUId` is not copied (Graph's differs per occurrence).
pub fn complete_occurrence(master: &Value, occurrence: &Value) -> Value {
    let mut out = Map::new();
    if let Some(m) = master.as_object() {
        for (k, v) in m {
            if !SERIES_ONLY.contains(&k.as_str()) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(o) = occurrence.as_object() {
        for (k, v) in o {
            out.insert(k.clone(), v.clone());
        }
    }
    Value::Object(out)
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.as_ref().filter(|s| !s.trim().is_empty()).cloned()
}

fn description_of(e: &wire::Event) -> Option<String> {
    let body = e.body.as_ref()?;
    let content = body.content.as_deref().unwrap_or_default();
    let text = if body.is_html() {
        tz::html_to_text(content)
    } else {
        content.trim_end().replace("\r\n", "\n")
    };
    (!text.trim().is_empty()).then_some(text)
}

fn response_of(r: Option<&str>) -> Option<String> {
    Some(
        match r? {
            "accepted" | "organizer" => "accepted",
            "declined" => "declined",
            "tentativelyAccepted" => "tentative",
            "none" | "notResponded" => "needs_action",
            _ => return None,
        }
        .to_owned(),
    )
}

fn attendees_of(e: &wire::Event) -> BTreeMap<String, Attendee> {
    e.attendees
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| {
            let email = a.email_address.as_ref()?.address.as_deref()?;
            let email = email.trim().to_lowercase();
            (!email.is_empty()).then(|| {
                (
                    email,
                    Attendee {
                        name: a.email_address.as_ref().and_then(|e| non_empty(&e.name)),
                        response: response_of(
                            a.status.as_ref().and_then(|s| s.response.as_deref()),
                        ),
                        optional: a.attendee_type.as_deref() == Some("optional"),
                        extra: Default::default(),
                    },
                )
            })
        })
        .collect()
}

fn organizer_of(e: &wire::Event) -> Organizer {
    let Some(addr) = e.organizer.as_ref().and_then(|o| o.email_address.as_ref()) else {
        return Organizer::default();
    };
    Organizer {
        email: addr
            .address
            .as_deref()
            .map(|a| a.trim().to_lowercase())
            .filter(|a| !a.is_empty()),
        name: non_empty(&addr.name),
        extra: Default::default(),
    }
}

fn status_of(e: &wire::Event) -> Option<String> {
    Some(if e.is_cancelled == Some(true) {
        "cancelled".into()
    } else {
        "confirmed".into()
    })
}

/// The descriptive fields of one Graph row, canonical.
struct Fields {
    title: Option<String>,
    description: Option<String>,
    location: Option<String>,
    status: Option<String>,
    start: Option<String>,
    end: Option<String>,
    attendees: BTreeMap<String, Attendee>,
}

fn fields_of(e: &wire::Event, all_day: bool) -> Result<Fields, TranslateError> {
    let start = e
        .start
        .as_ref()
        .map(|t| {
            canonical_time(
                t,
                all_day,
                e.original_start_time_zone.as_deref(),
                &e.id,
                "start",
            )
        })
        .transpose()?;
    let end = e
        .end
        .as_ref()
        .map(|t| {
            canonical_time(
                t,
                all_day,
                e.original_end_time_zone
                    .as_deref()
                    .or(e.original_start_time_zone.as_deref()),
                &e.id,
                "end",
            )
        })
        .transpose()?;
    Ok(Fields {
        title: non_empty(&e.subject),
        description: description_of(e),
        location: e.location.as_ref().and_then(|l| non_empty(&l.display_name)),
        status: status_of(e),
        start,
        end,
        attendees: attendees_of(e),
    })
}

fn changed(value: &Option<String>, series: &Option<String>) -> Option<String> {
    value
        .as_ref()
        .filter(|v| Some(*v) != series.as_ref())
        .cloned()
}

/// The override for an exception row: the fields that differ from the series, and its link.
fn override_of(
    master: &Fields,
    row: &wire::Event,
    all_day: bool,
    key: &str,
    link_key: &str,
) -> Result<Override, TranslateError> {
    let f = fields_of(row, all_day)?;
    let original = original_times(master, key, all_day);
    let mut ov = Override {
        title: changed(&f.title, &master.title),
        description: changed(&f.description, &master.description),
        location: changed(&f.location, &master.location),
        status: changed(&f.status, &master.status),
        start: f.start.filter(|s| Some(s) != original.0.as_ref()),
        end: f.end.filter(|e| Some(e) != original.1.as_ref()),
        attendees: (!f.attendees.is_empty() && f.attendees != master.attendees)
            .then_some(f.attendees),
        ..Override::default()
    };
    if f.status.as_deref() == Some("cancelled") && master.status.as_deref() != Some("cancelled") {
        ov = Override {
            cancelled: true,
            ..Override::default()
        };
    }
    ov.links.insert(
        link_key.to_owned(),
        driftless_crdt_model::Link {
            id: row.id.clone(),
            ..Default::default()
        },
    );
    Ok(ov)
}

/// The start and end an instance at `key` has when unmodified, in the series' canonical form.
fn original_times(master: &Fields, key: &str, all_day: bool) -> (Option<String>, Option<String>) {
    let Some(instant) = key_instant(key) else {
        return (None, None);
    };
    let parse = |s: &Option<String>| s.as_deref().and_then(|s| parse_canonical(s, "", "").ok());
    let (Some(ms), Some(me)) = (parse(&master.start), parse(&master.end)) else {
        return (None, None);
    };
    if all_day {
        let (ResolvedTime::Date(s), ResolvedTime::Date(e)) = (ms, me) else {
            return (None, None);
        };
        let days = (e - s).num_days();
        let start = instant.date();
        let end = start.checked_add_signed(TimeDelta::days(days));
        return (
            Some(ResolvedTime::Date(start).to_string()),
            end.map(|e| ResolvedTime::Date(e).to_string()),
        );
    }
    let span = me.instant() - ms.instant();
    let render = |t: NaiveDateTime| {
        match ms {
            ResolvedTime::Zoned(_, tz) => ResolvedTime::zoned_at(t, tz),
            _ => ResolvedTime::Utc(t),
        }
        .to_string()
    };
    (
        Some(render(instant)),
        instant.checked_add_signed(span).map(render),
    )
}

/// The canonical event of a bundle (links, deleted, schema and extra left at their defaults;
/// exceptions' overrides carry a link under `link_key`, the bridge id).
///
/// Lossy: `showAs`, `sensitivity`, reminders, online-meeting data, categories and the per-mailbox
/// `responseStatus` are not canonical fields (they stay in the bundle). An exception's fields that
/// equal the series' read as unchanged.
pub fn event_from_graph(
    bundle: &EventBundle,
    link_key: &str,
) -> Result<CalendarEvent, TranslateError> {
    let e = parse_event(&bundle.event)?;
    let all_day = e.is_all_day.unwrap_or(false);
    let f = fields_of(&e, all_day)?;
    let recurrence = match bundle.event.get("recurrence").filter(|r| !r.is_null()) {
        Some(r) if bundle.is_series() => Some(Recurrence {
            rules: BTreeMap::from([(
                "0".to_owned(),
                recurrence::rule_of_graph(r, f.start.as_deref())
                    .map_err(|reason| field_error(&e.id, "recurrence", reason))?,
            )]),
            ..Recurrence::default()
        }),
        _ => None,
    };
    let mut overrides = BTreeMap::new();
    for key in bundle.cancelled.keys() {
        overrides.insert(
            key.clone(),
            Override {
                cancelled: true,
                ..Override::default()
            },
        );
    }
    for row in bundle.instances.values() {
        let ev = parse_event(row)?;
        if ev.kind() != EventType::Exception {
            continue;
        }
        let Some(key) = instance_key(row, all_day) else {
            return Err(field_error(&ev.id, "originalStart", "missing or invalid"));
        };
        overrides.insert(key.clone(), override_of(&f, &ev, all_day, &key, link_key)?);
    }
    Ok(CalendarEvent {
        title: f.title,
        location: f.location,
        status: f.status,
        ical_uid: e.ical_uid.as_deref().map(series_uid),
        description: f.description,
        start: f.start,
        end: f.end,
        recurrence,
        overrides,
        organizer: organizer_of(&e),
        attendees: f.attendees,
        ..CalendarEvent::default()
    })
}

/// One write a canonical change needs at Graph.
#[derive(Debug, Clone, PartialEq)]
pub enum EventWrite {
    /// `PATCH /me/events/{id}` with `If-Match: etag`.
    Patch {
        id: String,
        etag: Option<String>,
        body: Map<String, Value>,
    },
    /// `DELETE /me/events/{id}` (a cancelled occurrence).
    Delete { id: String, etag: Option<String> },
    /// `POST /me/events/{id}/{action}` (`accept`, `decline`, `tentativelyAccept`): the mailbox
    /// owner's response to a meeting organized elsewhere.
    Respond {
        id: String,
        action: String,
        body: Value,
    },
}

/// What this mailbox answered, in canonical terms (`responseStatus.response`).
fn own_response(row: &Value) -> Option<String> {
    response_of(
        row.pointer("/responseStatus/response")
            .and_then(Value::as_str),
    )
}

/// The response to send when the canonical event says this mailbox (`mailbox`, its address) answers
/// differently from what Graph has: `accepted` -> `accept`, `declined` -> `decline`, `tentative` ->
/// `tentativelyAccept`. `None` for the organizer's own copy, for `needs_action` (an answer cannot
/// be withdrawn) and when nothing differs. Shared fields of a copy the mailbox does not organize are
/// the runner's to hold back (see [`EventBundle::is_organizer`]).
pub fn response_write(
    bundle: &EventBundle,
    event: &CalendarEvent,
    mailbox: &str,
) -> Option<EventWrite> {
    if bundle.is_organizer() {
        return None;
    }
    let want = event
        .attendees
        .get(&mailbox.trim().to_lowercase())?
        .response
        .as_deref()?;
    if own_response(&bundle.event).as_deref() == Some(want) {
        return None;
    }
    let action = match want {
        "accepted" => "accept",
        "declined" => "decline",
        "tentative" => "tentativelyAccept",
        _ => return None,
    };
    Some(EventWrite::Respond {
        id: bundle.id().to_owned(),
        action: action.to_owned(),
        body: json!({"sendResponse": true}),
    })
}

/// The attendees array for `want`, starting from each attendee's current entry (so its `status`
/// and unknown fields stay).
fn attendees_json(want: &BTreeMap<String, Attendee>, current: &Value) -> Value {
    let current: Vec<Value> = current.as_array().cloned().unwrap_or_default();
    let list: Vec<Value> = want
        .iter()
        .map(|(email, a)| {
            let base = current.iter().find(|c| {
                c.pointer("/emailAddress/address")
                    .and_then(Value::as_str)
                    .is_some_and(|x| x.trim().eq_ignore_ascii_case(email))
            });
            let mut out = base.cloned().unwrap_or_else(|| json!({}));
            if let Some(obj) = out.as_object_mut() {
                obj.insert(
                    "type".into(),
                    json!(if a.optional { "optional" } else { "required" }),
                );
                let mut addr = obj
                    .get("emailAddress")
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                if let Some(addr) = addr.as_object_mut() {
                    addr.insert("address".into(), json!(email));
                    match &a.name {
                        Some(n) => addr.insert("name".into(), json!(n)),
                        None => addr.remove("name"),
                    };
                }
                obj.insert("emailAddress".into(), addr);
            }
            out
        })
        .collect();
    Value::Array(list)
}

fn strip_attendees(m: &BTreeMap<String, Attendee>) -> BTreeMap<&str, (Option<&str>, bool)> {
    m.iter()
        .map(|(k, a)| (k.as_str(), (a.name.as_deref(), a.optional)))
        .collect()
}

/// Patch entries for the descriptive fields of one row: `want` vs what the row reads as (`have`).
#[allow(clippy::too_many_arguments)]
fn patch_fields(
    body: &mut Map<String, Value>,
    row: &Value,
    item: &str,
    have: &Fields,
    title: Option<&Option<String>>,
    description: Option<&Option<String>>,
    location: Option<&Option<String>>,
    times: Option<(&Option<String>, &Option<String>)>,
    attendees: Option<&BTreeMap<String, Attendee>>,
) -> Result<(), TranslateError> {
    if let Some(t) = title
        && *t != have.title
    {
        body.insert("subject".into(), json!(t.clone().unwrap_or_default()));
    }
    if let Some(d) = description
        && *d != have.description
    {
        // The new text replaces the HTML; an unchanged description never gets here.
        body.insert(
            "body".into(),
            json!({"contentType": "text", "content": d.clone().unwrap_or_default()}),
        );
    }
    if let Some(l) = location
        && *l != have.location
    {
        let mut loc = row.get("location").cloned().unwrap_or_else(|| json!({}));
        if let Some(obj) = loc.as_object_mut() {
            obj.insert("displayName".into(), json!(l.clone().unwrap_or_default()));
        }
        body.insert("location".into(), loc);
    }
    if let Some((start, end)) = times {
        // The organizer's zone (`originalStartTimeZone`), else the zone the time was sent in.
        let current = |k: &str, original: &str| -> Option<String> {
            str_field(row, original)
                .or_else(|| row.get(k).and_then(|v| str_field(v, "timeZone")))
                .map(str::to_owned)
        };
        let mut all_day = None;
        if let Some(s) = start
            && *start != have.start
        {
            let when = parse_canonical(s, item, "start")?;
            all_day = Some(matches!(when, ResolvedTime::Date(_)));
            body.insert(
                "start".into(),
                graph_time(when, current("start", "originalStartTimeZone").as_deref()),
            );
        }
        if let Some(e) = end
            && (*end != have.end || body.contains_key("start"))
        {
            let when = parse_canonical(e, item, "end")?;
            all_day = all_day.or(Some(matches!(when, ResolvedTime::Date(_))));
            body.insert(
                "end".into(),
                graph_time(when, current("end", "originalEndTimeZone").as_deref()),
            );
        }
        let was_all_day = row
            .get("isAllDay")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if let Some(all_day) = all_day
            && all_day != was_all_day
        {
            body.insert("isAllDay".into(), json!(all_day));
        }
    }
    if let Some(want) = attendees
        && strip_attendees(want) != strip_attendees(&have.attendees)
    {
        body.insert(
            "attendees".into(),
            attendees_json(want, row.get("attendees").unwrap_or(&Value::Null)),
        );
    }
    Ok(())
}

/// The writes that bring Graph's copy (`bundle`) to `event`: a PATCH of the master (or single
/// event) with only the changed fields, a PATCH per instance whose override changed, and a DELETE
/// per newly cancelled occurrence. Empty when Graph already says what `event` says. A changed rule
/// of a series goes into the master's PATCH as a `patternedRecurrence`; a rule Graph cannot
/// express is not written (Graph keeps its rule; [`held_back_rule`] names it for the caller to
/// report), the other changes are.
///
/// Not written (documented in docs/providers/graph.md): `status` (Graph cancels through
/// `POST /cancel`, organizer only), `organizer`, `ical_uid`, attendee responses (each attendee
/// answers with `accept`/`decline` in their own mailbox), adding or removing a recurrence, EXDATE
/// and RDATE edits, and overrides of instances outside the window.
pub fn event_writes(
    bundle: &EventBundle,
    event: &CalendarEvent,
) -> Result<Vec<EventWrite>, TranslateError> {
    let e = parse_event(&bundle.event)?;
    let all_day = e.is_all_day.unwrap_or(false);
    let have = fields_of(&e, all_day)?;
    let theirs = event_from_graph(bundle, "")?;
    let mut writes = Vec::new();
    let mut body = Map::new();
    patch_fields(
        &mut body,
        &bundle.event,
        &e.id,
        &have,
        Some(&event.title),
        Some(&event.description),
        Some(&event.location),
        Some((&event.start, &event.end)),
        Some(&event.attendees),
    )?;
    // A changed rule goes into the same PATCH as a `patternedRecurrence`. One Graph cannot
    // express is left out (Graph keeps its own rule, never a different one); the caller reports
    // it on the record ([`held_back_rule`]).
    match recurrence::recurrence_change(event, &theirs, bundle.event.get("recurrence")) {
        Ok(Some(pattern)) => {
            body.insert("recurrence".into(), pattern);
        }
        Ok(None) | Err(RecurrenceWriteError::Unexpressible(_)) => {}
        Err(err) => return Err(recurrence_error(&e.id, &err)),
    }
    if !body.is_empty() {
        writes.push(EventWrite::Patch {
            id: e.id.clone(),
            etag: e.etag.clone(),
            body,
        });
    }
    let keys: BTreeSet<&String> = event
        .overrides
        .keys()
        .chain(theirs.overrides.keys())
        .collect();
    let none = Override::default();
    for key in keys {
        let ours = event.overrides.get(key).unwrap_or(&none);
        let old = theirs.overrides.get(key).unwrap_or(&none);
        let Some((id, row)) = bundle.instance_at(key) else {
            continue; // cancelled already, or outside the window: nothing to address
        };
        let etag = str_field(row, "@odata.etag").map(str::to_owned);
        if ours.cancelled {
            if !old.cancelled {
                writes.push(EventWrite::Delete {
                    id: id.to_owned(),
                    etag,
                });
            }
            continue;
        }
        // Compare override against override, so a series edit never rewrites every instance.
        let pick = |o: &Option<String>, series: &Option<String>| o.clone().or(series.clone());
        let row_event = parse_event(row)?;
        let row_fields = fields_of(&row_event, all_day)?;
        let mut body = Map::new();
        let title = (ours.title != old.title).then(|| pick(&ours.title, &event.title));
        let description = (ours.description != old.description)
            .then(|| pick(&ours.description, &event.description));
        let location =
            (ours.location != old.location).then(|| pick(&ours.location, &event.location));
        let (orig_start, orig_end) = original_times(&have, key, all_day);
        let start = pick(&ours.start, &orig_start);
        let end = pick(&ours.end, &orig_end);
        let times = (ours.start != old.start || ours.end != old.end).then_some((&start, &end));
        let attendees = (ours.attendees != old.attendees).then(|| {
            ours.attendees
                .clone()
                .unwrap_or_else(|| event.attendees.clone())
        });
        patch_fields(
            &mut body,
            row,
            id,
            &row_fields,
            title.as_ref(),
            description.as_ref(),
            location.as_ref(),
            times,
            attendees.as_ref(),
        )?;
        if !body.is_empty() {
            writes.push(EventWrite::Patch {
                id: id.to_owned(),
                etag,
                body,
            });
        }
    }
    Ok(writes)
}

/// Graph's recurrence (as the canonical value it reads as) when `event`'s rule differs from it but
/// Graph cannot express `event`'s rule ([`event_writes`] leaves it out), with the reason; `None`
/// when the rule is written, equal, or not a series rule change. The runner shows the two rules
/// as a conflict on the record.
pub fn held_back_rule(
    bundle: &EventBundle,
    event: &CalendarEvent,
) -> Result<Option<(Recurrence, String)>, TranslateError> {
    let theirs = event_from_graph(bundle, "")?;
    match recurrence::recurrence_change(event, &theirs, bundle.event.get("recurrence")) {
        Err(RecurrenceWriteError::Unexpressible(reason)) => {
            Ok(theirs.recurrence.map(|r| (r, reason)))
        }
        _ => Ok(None),
    }
}

/// Canonical fields where `event` differs from Graph's copy but [`event_writes`] cannot write the
/// difference (`status`, `organizer`, `ical_uid`, `recurrence`, and `overrides` of instances the
/// bundle cannot address). The runner reports these (a conflict or a warning) instead of letting the
/// document and the mailbox drift apart silently.
pub fn unwritable_changes(
    bundle: &EventBundle,
    event: &CalendarEvent,
) -> Result<Vec<&'static str>, TranslateError> {
    let theirs = event_from_graph(bundle, "")?;
    let mut out = Vec::new();
    if event.status != theirs.status {
        out.push("status");
    }
    if event.organizer.email != theirs.organizer.email {
        out.push("organizer");
    }
    if event.ical_uid.is_some() && event.ical_uid != theirs.ical_uid {
        out.push("ical_uid");
    }
    // Rule changes of a series are written ([`event_writes`]); adding or removing a recurrence
    // and EXDATE/RDATE edits are not.
    let dates = |e: &CalendarEvent| {
        e.recurrence
            .as_ref()
            .map(|r| (r.exdates.clone(), r.rdates.clone()))
    };
    if event.recurrence.is_some() != theirs.recurrence.is_some()
        || dates(event) != dates(&theirs)
        || held_back_rule(bundle, event)?.is_some()
    {
        out.push("recurrence");
    }
    let none = Override::default();
    let strip = |o: &Override| Override {
        links: BTreeMap::new(),
        ..o.clone()
    };
    let unaddressable = event
        .overrides
        .keys()
        .chain(theirs.overrides.keys())
        .any(|key| {
            let ours = strip(event.overrides.get(key).unwrap_or(&none));
            let old = strip(theirs.overrides.get(key).unwrap_or(&none));
            ours != old && bundle.instance_at(key).is_none()
        });
    if unaddressable {
        out.push("overrides");
    }
    Ok(out)
}

/// The body of `POST /me/events` for a record created in driftless. Recurrence is not written yet
/// (see [`event_writes`]); the organizer is the mailbox.
pub fn event_create_body(event: &CalendarEvent) -> Result<Value, TranslateError> {
    let empty = Fields {
        title: None,
        description: None,
        location: None,
        status: None,
        start: None,
        end: None,
        attendees: BTreeMap::new(),
    };
    let mut body = Map::new();
    patch_fields(
        &mut body,
        &Value::Null,
        "(new event)",
        &empty,
        Some(&event.title),
        Some(&event.description),
        Some(&event.location),
        Some((&event.start, &event.end)),
        Some(&event.attendees),
    )?;
    if !body.contains_key("subject") {
        body.insert("subject".into(), json!(""));
    }
    if let Some(pattern) = recurrence::graph_recurrence(event, None)
        .map_err(|err| recurrence_error("(new event)", &err))?
    {
        body.insert("recurrence".into(), pattern);
    }
    if let Some(uid) = &event.ical_uid {
        // Graph ignores a client iCalUId on create today; sending it costs nothing and keeps the
        // UID where a future API version honours it.
        body.insert("iCalUId".into(), json!(uid));
    }
    Ok(Value::Object(body))
}

// ---------------------------------------------------------------------------------------------
// Contacts
// ---------------------------------------------------------------------------------------------

fn parse_contact(raw: &Value) -> Result<wire::Contact, TranslateError> {
    serde_json::from_value(raw.clone()).map_err(|e| TranslateError::Shape {
        item: raw
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("(no id)")
            .to_owned(),
        what: "contact",
        reason: e.to_string(),
    })
}

/// Phone labels and the Graph field each goes to.
const HOME: &str = "home";
const WORK: &str = "work";
const MOBILE: &str = "mobile";

fn point(value: &str, label: Option<&str>, primary: bool) -> ContactPoint {
    ContactPoint {
        value: value.trim().to_owned(),
        label: label.map(str::to_owned),
        primary,
        extra: Default::default(),
    }
}

fn contact_points(c: &wire::Contact) -> (Vec<ContactPoint>, Vec<ContactPoint>) {
    let emails = c
        .email_addresses
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|e| e.address.as_deref())
        .filter(|a| !a.trim().is_empty())
        .enumerate()
        .map(|(i, a)| point(a, None, i == 0))
        .collect();
    let mut phones = Vec::new();
    if let Some(m) = c.mobile_phone.as_deref().filter(|m| !m.trim().is_empty()) {
        phones.push(point(m, Some(MOBILE), false));
    }
    for p in c.business_phones.as_deref().unwrap_or_default() {
        if !p.trim().is_empty() {
            phones.push(point(p, Some(WORK), false));
        }
    }
    for p in c.home_phones.as_deref().unwrap_or_default() {
        if !p.trim().is_empty() {
            phones.push(point(p, Some(HOME), false));
        }
    }
    (emails, phones)
}

/// The canonical contact of a Graph contact. `existing`: the record's current canonical contact
/// (its slot ids are kept for the same values, or for the same label); `new_slot` makes ids for new
/// values (random in production).
///
/// Lossy: emails have no label in Graph (the first is primary); phones are labelled `mobile`
/// (`mobilePhone`), `work` (`businessPhones`) or `home` (`homePhones`); addresses, birthdays,
/// IM addresses and the like stay in the raw JSON.
pub fn contact_from_graph(
    raw: &Value,
    existing: Option<&Contact>,
    new_slot: &mut dyn FnMut() -> String,
) -> Result<Contact, TranslateError> {
    let c = parse_contact(raw)?;
    let (emails, phones) = contact_points(&c);
    let empty = BTreeMap::new();
    Ok(Contact {
        name: Name {
            full: non_empty(&c.display_name),
            given: non_empty(&c.given_name),
            family: non_empty(&c.surname),
            extra: Default::default(),
        },
        organization: non_empty(&c.company_name),
        job_title: non_empty(&c.job_title),
        notes: non_empty(&c.personal_notes),
        emails: assign_slots(
            existing.map_or(&empty, |e| &e.emails),
            &emails,
            SlotKind::Email,
            new_slot,
        ),
        phones: assign_slots(
            existing.map_or(&empty, |e| &e.phones),
            &phones,
            SlotKind::Phone,
            new_slot,
        ),
        ..Contact::default()
    })
}

/// The Graph fields a canonical contact says, in Graph's shapes (emails primary first, phones by
/// label; `current` supplies the `name` of an email entry that stays).
fn contact_fields(contact: &Contact, current: &Value) -> Map<String, Value> {
    let mut out = Map::new();
    let text = |s: &Option<String>| json!(s.clone().unwrap_or_default());
    out.insert("givenName".into(), text(&contact.name.given));
    out.insert("surname".into(), text(&contact.name.family));
    out.insert("displayName".into(), text(&contact.name.full));
    out.insert("companyName".into(), text(&contact.organization));
    out.insert("jobTitle".into(), text(&contact.job_title));
    out.insert("personalNotes".into(), text(&contact.notes));
    let mut emails: Vec<&ContactPoint> = contact.emails.values().collect();
    emails.sort_by_key(|p| !p.primary);
    let current_emails: Vec<Value> = current
        .get("emailAddresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let emails: Vec<Value> = emails
        .iter()
        .filter(|p| !p.value.trim().is_empty())
        .map(|p| {
            current_emails
                .iter()
                .find(|c| {
                    c.get("address").and_then(Value::as_str).is_some_and(|a| {
                        SlotKind::Email.normalize(a) == SlotKind::Email.normalize(&p.value)
                    })
                })
                .cloned()
                .unwrap_or_else(|| json!({"address": p.value, "name": p.value}))
        })
        .collect();
    out.insert("emailAddresses".into(), Value::Array(emails));
    let mut mobile: Option<String> = None;
    let (mut business, mut home) = (Vec::new(), Vec::new());
    for p in contact.phones.values() {
        if p.value.trim().is_empty() {
            continue;
        }
        match p.label.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some(MOBILE | "cell") if mobile.is_none() => mobile = Some(p.value.clone()),
            Some(HOME) => home.push(json!(p.value)),
            _ => business.push(json!(p.value)),
        }
    }
    out.insert("businessPhones".into(), Value::Array(business));
    out.insert("homePhones".into(), Value::Array(home));
    out.insert("mobilePhone".into(), text(&mobile));
    out
}

/// Whether two Graph field values say the same (absent, null and empty are alike; phone lists
/// compare as sets so Graph's own order never causes a write).
fn same_graph_value(key: &str, have: Option<&Value>, want: &Value) -> bool {
    let blank = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    if blank(have) && blank(Some(want)) {
        return true;
    }
    match key {
        "businessPhones" | "homePhones" => {
            let set = |v: Option<&Value>| -> BTreeSet<String> {
                v.and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(|s| SlotKind::Phone.normalize(s))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            set(have) == set(Some(want))
        }
        "emailAddresses" => {
            let list = |v: Option<&Value>| -> Vec<String> {
                v.and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| e.get("address").and_then(Value::as_str))
                            .map(|s| SlotKind::Email.normalize(s))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let (mut a, mut b) = (list(have), list(Some(want)));
            // Same first (primary) address and the same set.
            let first_same = a.first() == b.first();
            a.sort();
            b.sort();
            first_same && a == b
        }
        "personalNotes" => {
            let norm = |v: Option<&Value>| {
                v.and_then(Value::as_str)
                    .unwrap_or_default()
                    .replace("\r\n", "\n")
                    .trim()
                    .to_owned()
            };
            norm(have) == norm(Some(want))
        }
        _ => {
            let s = |v: Option<&Value>| {
                v.and_then(Value::as_str)
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            };
            s(have) == s(Some(want))
        }
    }
}

/// The PATCH body that brings Graph's contact (`raw`) to `contact`: only fields whose value
/// differs. Empty when nothing does.
pub fn contact_patch(raw: &Value, contact: &Contact) -> Map<String, Value> {
    contact_fields(contact, raw)
        .into_iter()
        .filter(|(k, want)| !same_graph_value(k, raw.get(k), want))
        .collect()
}

/// The body of `POST /me/contacts` for a contact created in driftless.
pub fn contact_create_body(contact: &Contact) -> Value {
    Value::Object(contact_patch(&json!({}), contact))
}
