//! Pure translation between Google Calendar events and the canonical `calendar_event`.
//!
//! A canonical event is one Google *series*: the master (or single event) plus its exceptions
//! (instances with `recurringEventId` + `originalStartTime`), kept together as a [`StoredSeries`]
//! (the bridge's shadow of what Google holds). Exceptions become `overrides` keyed by the
//! original start's instance key (UTC basic form, or the basic date for all-day); a cancelled
//! exception is `{"cancelled": true}`.
//!
//! # Invariants
//! - Write-back edits the stored raw JSON: a field is rewritten only when its canonical value
//!   differs from what the stored JSON says, and every field driftless does not map (reminders,
//!   conferenceData, extendedProperties, attendee comments, ...) is kept. So rendering the
//!   canonical value read from a series onto that series changes nothing: a quiet round writes
//!   nothing.
//! - Provider input never panics: unreadable values are [`TranslateError`]s naming the event id
//!   and the field.
//!
//! Times: `{date}` is an all-day date; `{dateTime, timeZone}` with an IANA zone becomes
//! `wall+offset[zone]` (the offset from `chrono-tz`); `dateTime` without a zone becomes UTC
//! (`...Z`). A floating canonical time is written in the calendar's zone (or UTC when unknown).
//! Must not: do I/O or decide what to send (that is [`super::sync`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use driftless_crdt_model::{
    Attendee, CalendarEvent, Organizer, Override, Recurrence, ResolvedTime,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::wire::{self, Event, EventDateTime};
use crate::dav::ical::{Calendar, DateValue, Zone};
use crate::dav::translate::time_of_value;

/// Why an event or a canonical value could not be translated.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("Google event {event}: not a readable event: {source}")]
    Json {
        event: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("Google event {event}: field {field}: {reason}")]
    Field {
        event: String,
        field: String,
        reason: String,
    },
}

fn field_error(event: &str, field: &str, reason: impl Into<String>) -> TranslateError {
    TranslateError::Field {
        event: event.to_owned(),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Event ids
// ---------------------------------------------------------------------------------------------

/// The Google event id driftless chooses for a document: the lower-case hex form of the
/// document id's bytes (hex digits are a subset of base32hex, `a-v0-9`).
pub fn event_id_for_document(doc_bytes: &[u8]) -> String {
    doc_bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether Google accepts `id` as a client-chosen event id (base32hex, 5 to 1024 characters).
pub fn is_valid_event_id(id: &str) -> bool {
    (5..=1024).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
}

/// The id of one instance of a series: `<master>_<instance key>` (Google's own scheme).
pub fn instance_id(master_id: &str, instance_key: &str) -> String {
    format!("{master_id}_{instance_key}")
}

// ---------------------------------------------------------------------------------------------
// The stored series
// ---------------------------------------------------------------------------------------------

/// What the bridge keeps of one series at Google: the master's raw JSON and each exception's,
/// keyed by instance key. Serialized as the shadow's `raw`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredSeries {
    pub master: Value,
    #[serde(default)]
    pub exceptions: BTreeMap<String, Value>,
}

impl StoredSeries {
    pub fn new(master: Value) -> Self {
        StoredSeries {
            master,
            exceptions: BTreeMap::new(),
        }
    }

    pub fn master_event(&self) -> Result<Event, TranslateError> {
        read_event(&self.master)
    }

    pub fn id(&self) -> &str {
        self.master
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn etag(&self) -> Option<&str> {
        self.master.get("etag").and_then(Value::as_str)
    }

    pub fn ical_uid(&self) -> Option<&str> {
        self.master.get("iCalUID").and_then(Value::as_str)
    }

    /// Adds or replaces an exception; it must belong to this series.
    pub fn put_exception(&mut self, raw: Value) -> Result<(), TranslateError> {
        let e = read_event(&raw)?;
        let original = e
            .original_start_time
            .as_ref()
            .ok_or_else(|| field_error(&e.id, "originalStartTime", "missing on an instance"))?;
        let key = instance_key(original, &e.id, "originalStartTime")?;
        self.exceptions.insert(key, raw);
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

fn read_event(raw: &Value) -> Result<Event, TranslateError> {
    Event::from_value(raw).map_err(|source| TranslateError::Json {
        event: raw
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("(no id)")
            .to_owned(),
        source,
    })
}

// ---------------------------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------------------------

/// A canonical `start`/`end` string (any of the contracts' forms).
fn parse_canonical(s: &str) -> Result<ResolvedTime, String> {
    ResolvedTime::parse(s).map_err(|e| e.to_string())
}

/// Google's EventDateTime as a time: `date` is all-day; an RFC 3339 `dateTime` is that instant
/// shown in `timeZone` (UTC when there is none); a local `dateTime` is a wall time in `timeZone`.
fn time_of_google(edt: &EventDateTime) -> Result<ResolvedTime, String> {
    let when = time_of_google_unchecked(edt)?;
    // Years 0..=9999 as in iCalendar: a provider's year 262143 must not overflow date arithmetic
    // (spans between start and end, shifted exceptions) later.
    let year = match &when {
        ResolvedTime::Date(d) => d.year(),
        ResolvedTime::Utc(t) | ResolvedTime::Floating(t) | ResolvedTime::Zoned(t, _) => t.year(),
    };
    if !(0..=9999).contains(&year) {
        return Err(format!("year {year} is out of range (0-9999)"));
    }
    Ok(when)
}

fn time_of_google_unchecked(edt: &EventDateTime) -> Result<ResolvedTime, String> {
    if let Some(d) = &edt.date {
        return NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map(ResolvedTime::Date)
            .map_err(|_| format!("date `{d}` is not YYYY-MM-DD"));
    }
    let Some(dt) = &edt.date_time else {
        return Err("neither date nor dateTime".into());
    };
    let zone = edt.time_zone.as_deref().and_then(|z| z.parse::<Tz>().ok());
    match DateTime::<FixedOffset>::parse_from_rfc3339(dt) {
        Ok(instant) => {
            let utc = instant.with_timezone(&Utc).naive_utc();
            Ok(match zone {
                Some(tz) if tz.name() != "UTC" && tz.name() != "Etc/UTC" => {
                    ResolvedTime::zoned_at(utc, tz)
                }
                _ => ResolvedTime::Utc(utc),
            })
        }
        // Google accepts (and may echo) a local dateTime when timeZone names the zone.
        Err(_) => {
            let local = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S")
                .map_err(|_| format!("dateTime `{dt}` is not RFC 3339"))?;
            match zone {
                Some(tz) => Ok(ResolvedTime::Zoned(local, tz)),
                None => Err(format!("dateTime `{dt}` has neither offset nor timeZone")),
            }
        }
    }
}

/// The EventDateTime to write. `recurring` events need a `timeZone`; a floating time is written
/// in the calendar's zone (UTC when unknown).
fn google_time(when: ResolvedTime, calendar_zone: Option<&str>, recurring: bool) -> Value {
    match when {
        ResolvedTime::Date(d) => json!({"date": d.format("%Y-%m-%d").to_string()}),
        ResolvedTime::Utc(_) => {
            let mut v = json!({"dateTime": when.rfc3339()});
            if recurring {
                v["timeZone"] = json!("UTC");
            }
            v
        }
        ResolvedTime::Zoned(_, tz) => json!({
            "dateTime": when.rfc3339(),
            "timeZone": tz.name(),
        }),
        ResolvedTime::Floating(t) => {
            let zone = calendar_zone
                .and_then(|z| z.parse::<Tz>().ok())
                .unwrap_or(Tz::UTC);
            google_time(ResolvedTime::Zoned(t, zone), None, recurring)
        }
    }
}

/// An iCalendar DATE / DATE-TIME of an EXDATE or RDATE line; a floating value is read in
/// the series' zone (Google expands in the start's `timeZone`).
fn time_of_ical(v: &DateValue, series_zone: Option<Tz>) -> Option<ResolvedTime> {
    let when = time_of_value(v)?;
    Some(match (when, v, series_zone) {
        (
            ResolvedTime::Floating(t),
            DateValue::DateTime {
                zone: Zone::Floating,
                ..
            },
            Some(tz),
        ) => ResolvedTime::Zoned(t, tz),
        _ => when,
    })
}

/// `NAME;PARAMS:VALUE` for an EXDATE / RDATE line.
fn ical_line(when: &ResolvedTime, name: &str) -> String {
    match when {
        ResolvedTime::Date(d) => format!("{name};VALUE=DATE:{}", d.format("%Y%m%d")),
        ResolvedTime::Utc(t) => format!("{name}:{}", t.format("%Y%m%dT%H%M%SZ")),
        ResolvedTime::Floating(t) => format!("{name}:{}", t.format("%Y%m%dT%H%M%S")),
        ResolvedTime::Zoned(t, tz) => {
            format!("{name};TZID={}:{}", tz.name(), t.format("%Y%m%dT%H%M%S"))
        }
    }
}

/// `end` moved so it lies as far from `to` as it does from `from` (whole days for dates, exact
/// seconds otherwise), in the form of `to`.
fn shifted(from: &ResolvedTime, to: &ResolvedTime, end: &ResolvedTime) -> ResolvedTime {
    match (from, to, end) {
        (ResolvedTime::Date(a), ResolvedTime::Date(b), ResolvedTime::Date(e)) => {
            ResolvedTime::Date(*b + (*e - *a))
        }
        _ => {
            let span = end.instant() - from.instant();
            let instant = to.instant() + span;
            match to {
                ResolvedTime::Date(_) => ResolvedTime::Date(instant.date()),
                ResolvedTime::Utc(_) => ResolvedTime::Utc(instant),
                ResolvedTime::Floating(_) => ResolvedTime::Floating(instant),
                ResolvedTime::Zoned(_, tz) => ResolvedTime::zoned_at(instant, *tz),
            }
        }
    }
}

/// The canonical string of a Google EventDateTime.
pub fn canonical_time(edt: &EventDateTime) -> Result<String, String> {
    time_of_google(edt).map(|w| w.to_string())
}

/// The instance key of a Google EventDateTime (`originalStartTime`).
fn instance_key(edt: &EventDateTime, event: &str, field: &str) -> Result<String, TranslateError> {
    time_of_google(edt)
        .map(|w| w.instance_key())
        .map_err(|r| field_error(event, field, r))
}

/// The same moment in the same form: a zoned wall time that does not exist (a DST gap) equals the
/// wall time Google normalizes it to, so it is not rewritten every round.
fn same_when(a: &ResolvedTime, b: &ResolvedTime) -> bool {
    match (a, b) {
        (ResolvedTime::Zoned(_, x), ResolvedTime::Zoned(_, y)) => {
            x == y && a.instant() == b.instant()
        }
        _ => a == b,
    }
}

/// Two canonical times name the same moment in the same form (so `...[Europe/Berlin]` without
/// an offset equals the form with it). Unparseable values compare as strings.
fn same_time(a: Option<&str>, b: Option<&str>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => match (parse_canonical(a), parse_canonical(b)) {
            (Ok(x), Ok(y)) => same_when(&x, &y),
            _ => a == b,
        },
        (None, None) => true,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

fn response_of(status: Option<&str>) -> Option<String> {
    match status? {
        "needsAction" => Some("needs_action".into()),
        "accepted" => Some("accepted".into()),
        "declined" => Some("declined".into()),
        "tentative" => Some("tentative".into()),
        _ => None,
    }
}

fn response_status_of(response: &str) -> &'static str {
    match response {
        "accepted" => "accepted",
        "declined" => "declined",
        "tentative" => "tentative",
        _ => "needsAction",
    }
}

fn status_of(status: Option<&str>) -> Option<String> {
    match status? {
        s @ ("confirmed" | "tentative" | "cancelled") => Some(s.to_owned()),
        _ => None,
    }
}

fn attendees_of(list: Option<&Vec<wire::Attendee>>) -> BTreeMap<String, Attendee> {
    list.into_iter()
        .flatten()
        .filter_map(|a| {
            let email = a.email.as_deref()?.trim().to_lowercase();
            (!email.is_empty()).then(|| {
                (
                    email,
                    Attendee {
                        name: a.display_name.clone(),
                        response: response_of(a.response_status.as_deref()),
                        optional: a.optional.unwrap_or(false),
                        extra: Default::default(),
                    },
                )
            })
        })
        .collect()
}

fn organizer_of(p: Option<&wire::Person>) -> Organizer {
    match p.and_then(|p| p.email.as_deref().map(|e| (p, e.trim()))) {
        Some((p, email)) if !email.is_empty() => Organizer {
            email: Some(email.to_lowercase()),
            name: p.display_name.clone(),
            extra: Default::default(),
        },
        _ => Organizer::default(),
    }
}

/// The recurrence lines, split: canonical rules / exdates / rdates, and the lines driftless
/// does not map (EXRULE, unknown), kept for write-back.
struct Lines {
    recurrence: Option<Recurrence>,
    unmapped: Vec<String>,
}

/// Reads one EXDATE / RDATE line with calcard (through the CalDAV layer's reader).
fn ical_dates(line: &str, event: &str) -> Result<(bool, Vec<DateValue>), TranslateError> {
    let bad = |reason: String| field_error(event, "recurrence", reason);
    if line.contains(['\r', '\n']) {
        return Err(bad(format!("line {line:?} holds a line break")));
    }
    let text = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//driftless//google//EN\r\nBEGIN:VEVENT\r\n\
         UID:x\r\nDTSTAMP:20000101T000000Z\r\nDTSTART:20000101T000000Z\r\n{line}\r\n\
         END:VEVENT\r\nEND:VCALENDAR\r\n"
    );
    let cal = Calendar::parse(&text).map_err(|e| bad(format!("line {line:?}: {e}")))?;
    let master = cal
        .master()
        .ok_or_else(|| bad(format!("line {line:?} unreadable")))?;
    let props = cal
        .event(master)
        .map_err(|e| bad(format!("line {line:?}: {e}")))?;
    let is_exdate = line.to_ascii_uppercase().starts_with("EXDATE");
    Ok((
        is_exdate,
        if is_exdate {
            props.exdates
        } else {
            props.rdates
        },
    ))
}

fn line_name(line: &str) -> String {
    line.split([':', ';'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase()
}

fn read_lines(
    lines: Option<&Vec<String>>,
    series_zone: Option<Tz>,
    event: &str,
) -> Result<Lines, TranslateError> {
    let Some(lines) = lines.filter(|l| !l.is_empty()) else {
        return Ok(Lines {
            recurrence: None,
            unmapped: Vec::new(),
        });
    };
    let mut rec = Recurrence::default();
    let mut unmapped = Vec::new();
    for line in lines {
        match line_name(line).as_str() {
            "RRULE" => {
                let slot = rec.rules.len().to_string();
                let value = line.split_once(':').map_or("", |(_, v)| v).trim();
                rec.rules.insert(slot, format!("RRULE:{value}"));
            }
            "EXDATE" | "RDATE" => {
                let (is_exdate, values) = ical_dates(line, event)?;
                for v in values {
                    let w = time_of_ical(&v, series_zone).ok_or_else(|| {
                        field_error(event, "recurrence", format!("bad date in {line:?}"))
                    })?;
                    let map = if is_exdate {
                        &mut rec.exdates
                    } else {
                        &mut rec.rdates
                    };
                    map.insert(w.instance_key(), w.to_string());
                }
            }
            _ => unmapped.push(line.clone()),
        }
    }
    let empty = rec.rules.is_empty() && rec.exdates.is_empty() && rec.rdates.is_empty();
    Ok(Lines {
        recurrence: (!empty).then_some(rec),
        unmapped,
    })
}

/// The master's mapped fields, read once.
struct Master {
    event: Event,
    start: ResolvedTime,
    end: ResolvedTime,
}

impl Master {
    fn read(raw: &Value) -> Result<Master, TranslateError> {
        let event = read_event(raw)?;
        let id = event.id.clone();
        let time =
            |edt: Option<&EventDateTime>, field: &str| -> Result<ResolvedTime, TranslateError> {
                let edt = edt.ok_or_else(|| field_error(&id, field, "missing"))?;
                time_of_google(edt).map_err(|r| field_error(&id, field, r))
            };
        let start = time(event.start.as_ref(), "start")?;
        let end = time(event.end.as_ref(), "end")?;
        Ok(Master { event, start, end })
    }

    /// Where the instance with `key` starts and ends when it is not moved.
    fn original(&self, key: &str) -> Option<(ResolvedTime, ResolvedTime)> {
        let start = ResolvedTime::of_instance_key(key, &self.start)?;
        let end = shifted(&self.start, &start, &self.end);
        Some((start, end))
    }
}

fn changed(value: &Option<String>, series: &Option<String>) -> Option<String> {
    value
        .as_ref()
        .filter(|v| Some(*v) != series.as_ref())
        .cloned()
}

/// The override an exception stands for: `{"cancelled": true}`, or the mapped fields that
/// differ from the series (empty when only unmapped fields differ).
fn override_of(master: &Master, key: &str, raw: &Value) -> Result<Override, TranslateError> {
    let ex = read_event(raw)?;
    if ex.is_cancelled() {
        return Ok(Override {
            cancelled: true,
            ..Override::default()
        });
    }
    let m = &master.event;
    let time = |edt: Option<&EventDateTime>,
                field: &str|
     -> Result<Option<ResolvedTime>, TranslateError> {
        edt.map(|e| time_of_google(e).map_err(|r| field_error(&ex.id, field, r)))
            .transpose()
    };
    let original = master.original(key);
    let start = time(ex.start.as_ref(), "start")?;
    let end = time(ex.end.as_ref(), "end")?;
    let moved = |w: Option<ResolvedTime>, orig: Option<ResolvedTime>| -> Option<String> {
        let w = w?;
        let all_day = |x: &ResolvedTime| matches!(x, ResolvedTime::Date(_));
        match orig {
            Some(o) if o.instant() == w.instant() && all_day(&o) == all_day(&w) => None,
            _ => Some(w.to_string()),
        }
    };
    let attendees = attendees_of(ex.attendees.as_ref());
    Ok(Override {
        title: changed(&ex.summary, &m.summary),
        description: changed(&ex.description, &m.description),
        location: changed(&ex.location, &m.location),
        status: changed(
            &status_of(ex.status.as_deref()),
            &status_of(m.status.as_deref()),
        ),
        start: moved(start, original.map(|o| o.0)),
        end: moved(end, original.map(|o| o.1)),
        attendees: (!attendees.is_empty() && attendees != attendees_of(m.attendees.as_ref()))
            .then_some(attendees),
        ..Override::default()
    })
}

fn is_empty_override(o: &Override) -> bool {
    *o == Override::default()
}

/// The canonical fields of a stored series (links, deleted, schema, extra left at defaults).
///
/// Lossy: response statuses other than Google's four and statuses other than
/// confirmed/tentative/cancelled read as absent; attendees without email are skipped; rule slot
/// ids are `"0"`, `"1"`, ... in line order; EXRULE lines are not mapped (kept at Google); an
/// exception whose mapped fields equal the series' gives no override; an exception's fields are
/// compared with the master's, so an exception that repeats the series' value reads unchanged.
pub fn event_from_series(series: &StoredSeries) -> Result<CalendarEvent, TranslateError> {
    let master = Master::read(&series.master)?;
    let e = &master.event;
    let lines = read_lines(e.recurrence.as_ref(), master.start.zone(), &e.id)?;
    let mut overrides = BTreeMap::new();
    for (key, raw) in &series.exceptions {
        let ov = override_of(&master, key, raw)?;
        if !is_empty_override(&ov) {
            overrides.insert(key.clone(), ov);
        }
    }
    Ok(CalendarEvent {
        title: e.summary.clone(),
        location: e.location.clone(),
        status: status_of(e.status.as_deref()),
        ical_uid: e.ical_uid.clone(),
        description: e.description.clone(),
        start: Some(master.start.to_string()),
        end: Some(master.end.to_string()),
        recurrence: lines.recurrence,
        overrides,
        organizer: organizer_of(e.organizer.as_ref()),
        attendees: attendees_of(e.attendees.as_ref()),
        ..CalendarEvent::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// What the render needs beyond the event: the calendar's zone for floating times.
#[derive(Debug, Clone, Default)]
pub struct RenderContext {
    pub calendar_zone: Option<String>,
}

fn put_str(m: &mut Map<String, Value>, key: &str, current: &Option<String>, want: &Option<String>) {
    if current == want {
        return;
    }
    match want {
        Some(v) => {
            m.insert(key.to_owned(), Value::String(v.clone()));
        }
        None => {
            m.remove(key);
        }
    }
}

fn put_time(
    m: &mut Map<String, Value>,
    key: &str,
    current: Option<&EventDateTime>,
    want: &str,
    ctx: &RenderContext,
    recurring: bool,
    event: &str,
) -> Result<(), TranslateError> {
    let want_when = parse_canonical(want).map_err(|r| field_error(event, key, r))?;
    let current_when = current.and_then(|c| time_of_google(c).ok());
    let zone_ok = !recurring || current.is_some_and(|c| c.date.is_some() || c.time_zone.is_some());
    if current_when.is_some_and(|c| same_when(&c, &want_when)) && zone_ok {
        return Ok(());
    }
    m.insert(
        key.to_owned(),
        google_time(want_when, ctx.calendar_zone.as_deref(), recurring),
    );
    Ok(())
}

/// Renders `want` (attendees keyed by lower-cased email) onto the raw `attendees` array:
/// entries keep their unmapped fields (self, comment, id, ...) and order; only changed values
/// are rewritten; removed ones are dropped and new ones appended.
fn put_attendees(
    m: &mut Map<String, Value>,
    current: &BTreeMap<String, Attendee>,
    want: &BTreeMap<String, Attendee>,
) {
    if current == want {
        return;
    }
    let old = m
        .get("attendees")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for entry in old {
        let email = entry
            .get("email")
            .and_then(Value::as_str)
            .map(|e| e.trim().to_lowercase());
        let (Some(email), Value::Object(mut e)) = (email, entry.clone()) else {
            out.push(entry);
            continue;
        };
        let Some(w) = want.get(&email) else {
            continue;
        };
        if !seen.insert(email.clone()) {
            continue;
        }
        let had = current.get(&email);
        if had.map(|h| &h.name) != Some(&w.name) {
            match &w.name {
                Some(n) => {
                    e.insert("displayName".into(), json!(n));
                }
                None => {
                    e.remove("displayName");
                }
            }
        }
        if had.map(|h| &h.response) != Some(&w.response) {
            match &w.response {
                Some(r) => {
                    e.insert("responseStatus".into(), json!(response_status_of(r)));
                }
                None => {
                    e.remove("responseStatus");
                }
            }
        }
        if had.map(|h| h.optional) != Some(w.optional) {
            if w.optional {
                e.insert("optional".into(), json!(true));
            } else {
                e.remove("optional");
            }
        }
        out.push(Value::Object(e));
    }
    for (email, a) in want {
        if seen.contains(email) {
            continue;
        }
        let mut e = Map::new();
        e.insert("email".into(), json!(email));
        if let Some(n) = &a.name {
            e.insert("displayName".into(), json!(n));
        }
        e.insert(
            "responseStatus".into(),
            json!(response_status_of(a.response.as_deref().unwrap_or(""))),
        );
        if a.optional {
            e.insert("optional".into(), json!(true));
        }
        out.push(Value::Object(e));
    }
    if out.is_empty() {
        m.remove("attendees");
    } else {
        m.insert("attendees".into(), Value::Array(out));
    }
}

/// Canonical recurrence (compared by value, slot ids ignored) differs?
fn same_recurrence(a: Option<&Recurrence>, b: Option<&Recurrence>) -> bool {
    let norm = |r: Option<&Recurrence>| {
        r.map(|r| {
            let mut rules: Vec<String> = r
                .rules
                .values()
                .map(|v| v.trim_start_matches("RRULE:").to_owned())
                .collect();
            rules.sort();
            let dates = |m: &BTreeMap<String, String>| {
                m.values()
                    .map(|v| {
                        parse_canonical(v)
                            .map(|w| w.instance_key())
                            .unwrap_or_else(|_| v.clone())
                    })
                    .collect::<std::collections::BTreeSet<_>>()
            };
            (rules, dates(&r.exdates), dates(&r.rdates))
        })
        .filter(|(r, x, d)| !(r.is_empty() && x.is_empty() && d.is_empty()))
    };
    norm(a) == norm(b)
}

fn recurrence_lines(
    rec: &Recurrence,
    unmapped: &[String],
    event: &str,
) -> Result<Vec<String>, TranslateError> {
    let mut lines: Vec<String> = rec
        .rules
        .values()
        .map(|r| format!("RRULE:{}", r.trim_start_matches("RRULE:")))
        .collect();
    lines.extend(unmapped.iter().cloned());
    for (name, map) in [("EXDATE", &rec.exdates), ("RDATE", &rec.rdates)] {
        for v in map.values() {
            let w = parse_canonical(v).map_err(|r| {
                field_error(event, &format!("recurrence.{}", name.to_lowercase()), r)
            })?;
            lines.push(ical_line(&w, name));
        }
    }
    Ok(lines)
}

/// Renders the series-level fields of `event` onto the master's raw JSON `base` (an empty
/// object for a new event, which then gets `new_id`). Organizer and iCalUID are never written
/// (Google sets them); `status: cancelled` is a delete and not rendered here.
pub fn render_master(
    base: &Value,
    event: &CalendarEvent,
    new_id: &str,
    ctx: &RenderContext,
) -> Result<Value, TranslateError> {
    let is_new = base.get("id").and_then(Value::as_str).is_none();
    let current = if is_new {
        Event::default()
    } else {
        read_event(base)?
    };
    let id = if is_new {
        new_id.to_owned()
    } else {
        current.id.clone()
    };
    let mut map = base.as_object().cloned().unwrap_or_default();
    let m = &mut map;
    if is_new {
        m.insert("id".into(), json!(id));
    }
    put_str(m, "summary", &current.summary, &event.title);
    put_str(m, "description", &current.description, &event.description);
    put_str(m, "location", &current.location, &event.location);
    let want_status = status_of(event.status.as_deref()).filter(|s| s != "cancelled");
    if want_status.is_some() {
        put_str(
            m,
            "status",
            &status_of(current.status.as_deref()),
            &want_status,
        );
    }

    let current_zone = current
        .start
        .as_ref()
        .and_then(|s| time_of_google(s).ok())
        .and_then(|w| w.zone());
    let lines = read_lines(current.recurrence.as_ref(), current_zone, &id)?;
    let recurring = event
        .recurrence
        .as_ref()
        .is_some_and(|r| !r.rules.is_empty() || !r.rdates.is_empty());
    if !same_recurrence(lines.recurrence.as_ref(), event.recurrence.as_ref()) {
        match &event.recurrence {
            Some(rec) => {
                let new_lines = recurrence_lines(rec, &lines.unmapped, &id)?;
                m.insert("recurrence".into(), json!(new_lines));
            }
            None if lines.unmapped.is_empty() => {
                m.remove("recurrence");
            }
            None => {
                m.insert("recurrence".into(), json!(lines.unmapped));
            }
        }
    }
    let start = event
        .start
        .as_deref()
        .ok_or_else(|| field_error(&id, "start", "missing"))?;
    put_time(
        m,
        "start",
        current.start.as_ref(),
        start,
        ctx,
        recurring,
        &id,
    )?;
    let end = match event.end.as_deref() {
        Some(e) => e.to_owned(),
        // The RFC 5545 default: a day for all-day, zero length otherwise.
        None => match parse_canonical(start) {
            Ok(ResolvedTime::Date(d)) => ResolvedTime::Date(d + TimeDelta::days(1)).to_string(),
            _ => start.to_owned(),
        },
    };
    put_time(m, "end", current.end.as_ref(), &end, ctx, recurring, &id)?;
    put_attendees(
        m,
        &attendees_of(current.attendees.as_ref()),
        &event.attendees,
    );
    Ok(Value::Object(map))
}

/// What to do with one instance of a series.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceRender {
    /// Nothing to write.
    Unchanged,
    /// Cancel the instance (DELETE of the instance id).
    Cancel,
    /// PATCH the instance id with the difference from `base` (the stored exception, or a
    /// skeleton naming the instance) to `new`.
    Write { base: Value, new: Value },
}

/// Renders override `key` of `event` (absent: the instance follows the series) onto the stored
/// exception `base` (None: the instance is not an exception yet). Unchanged when the canonical
/// override equals what `base` stands for.
pub fn render_instance(
    series: &StoredSeries,
    key: &str,
    event: &CalendarEvent,
    ctx: &RenderContext,
) -> Result<InstanceRender, TranslateError> {
    let master = Master::read(&series.master)?;
    let id = master.event.id.clone();
    let base = series.exceptions.get(key);
    let current = match base {
        Some(raw) => override_of(&master, key, raw)?,
        None => Override::default(),
    };
    let want = event.overrides.get(key).cloned().unwrap_or_default();
    if same_override(&current, &want) {
        return Ok(InstanceRender::Unchanged);
    }
    if want.cancelled {
        return Ok(InstanceRender::Cancel);
    }
    let (orig_start, orig_end) = master
        .original(key)
        .ok_or_else(|| field_error(&id, "overrides", format!("key {key:?} is no instance key")))?;
    let iid = instance_id(&id, key);
    // An instance that is no exception yet looks like the master at its slot (as Google shows
    // it), so only what the override changes is sent.
    let skeleton = match base {
        Some(raw) => raw.clone(),
        None => {
            let mut v = series.master.as_object().cloned().unwrap_or_default();
            v.remove("recurrence");
            v.remove("etag");
            let zone = ctx.calendar_zone.as_deref();
            v.insert("id".into(), json!(iid));
            v.insert("recurringEventId".into(), json!(id));
            v.insert(
                "originalStartTime".into(),
                google_time(orig_start, zone, false),
            );
            v.insert("start".into(), google_time(orig_start, zone, false));
            v.insert("end".into(), google_time(orig_end, zone, false));
            Value::Object(v)
        }
    };
    let mut map = skeleton.as_object().cloned().unwrap_or_default();
    let ex = read_event(&skeleton)?;
    // Each field is the override's value, or the series' (the instance follows the series).
    let or_series = |o: &Option<String>, s: &Option<String>| o.clone().or_else(|| s.clone());
    let me = &master.event;
    let m = &mut map;
    put_str(
        m,
        "summary",
        &ex.summary,
        &or_series(&want.title, &me.summary),
    );
    put_str(
        m,
        "description",
        &ex.description,
        &or_series(&want.description, &me.description),
    );
    put_str(
        m,
        "location",
        &ex.location,
        &or_series(&want.location, &me.location),
    );
    let status = or_series(
        &want.status,
        &status_of(me.status.as_deref()).or(Some("confirmed".into())),
    );
    put_str(m, "status", &status_of(ex.status.as_deref()), &status);
    let start = want.start.clone().unwrap_or_else(|| orig_start.to_string());
    let end = want
        .end
        .clone()
        .unwrap_or_else(|| match parse_canonical(&start) {
            Ok(s) => shifted(&orig_start, &s, &orig_end).to_string(),
            Err(_) => orig_end.to_string(),
        });
    put_time(m, "start", ex.start.as_ref(), &start, ctx, false, &iid)?;
    put_time(m, "end", ex.end.as_ref(), &end, ctx, false, &iid)?;
    let attendees = want
        .attendees
        .clone()
        .unwrap_or_else(|| attendees_of(me.attendees.as_ref()));
    put_attendees(m, &attendees_of(ex.attendees.as_ref()), &attendees);
    Ok(InstanceRender::Write {
        base: skeleton,
        new: Value::Object(map),
    })
}

/// The cancelled exception a DELETE of instance `key` leaves at Google (kept in the shadow until
/// the next pull brings Google's own copy).
pub fn cancelled_instance(
    series: &StoredSeries,
    key: &str,
    ctx: &RenderContext,
) -> Result<Value, TranslateError> {
    let master = Master::read(&series.master)?;
    let id = master.event.id.clone();
    let (orig, _) = master
        .original(key)
        .ok_or_else(|| field_error(&id, "overrides", format!("key {key:?} is no instance key")))?;
    let mut map = series
        .exceptions
        .get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    map.entry("id")
        .or_insert_with(|| json!(instance_id(&id, key)));
    map.insert("recurringEventId".into(), json!(id));
    map.entry("originalStartTime")
        .or_insert_with(|| google_time(orig, ctx.calendar_zone.as_deref(), false));
    map.insert("status".into(), json!("cancelled"));
    Ok(Value::Object(map))
}

fn same_override(a: &Override, b: &Override) -> bool {
    a.cancelled == b.cancelled
        && a.title == b.title
        && a.description == b.description
        && a.location == b.location
        && a.status == b.status
        && same_time(a.start.as_deref(), b.start.as_deref())
        && same_time(a.end.as_deref(), b.end.as_deref())
        && a.attendees.as_ref().filter(|m| !m.is_empty())
            == b.attendees.as_ref().filter(|m| !m.is_empty())
}

/// The body of a PATCH from `old` to `new`: the top-level fields that differ, each with its new
/// value; a removed field as `null`. A changed object is sent whole, with `null` for each
/// key it lost, so the result is the same whether the server merges nested objects or replaces
/// them. `None` when nothing differs.
pub fn patch_body(old: &Value, new: &Value) -> Option<Value> {
    let empty = Map::new();
    let old = old.as_object().unwrap_or(&empty);
    let new = new.as_object().unwrap_or(&empty);
    let mut body = Map::new();
    for (k, v) in new {
        if old.get(k) == Some(v) {
            continue;
        }
        let mut v = v.clone();
        if let (Some(Value::Object(o)), Value::Object(n)) = (old.get(k), &mut v) {
            for ok in o.keys() {
                if !n.contains_key(ok) {
                    n.insert(ok.clone(), Value::Null);
                }
            }
        }
        body.insert(k.clone(), v);
    }
    for k in old.keys() {
        if !new.contains_key(k) {
            body.insert(k.clone(), Value::Null);
        }
    }
    (!body.is_empty()).then_some(Value::Object(body))
}

/// Applies a PATCH body as Google does (and as the fake does): `null` removes a field, an object
/// merges key by key (recursively), anything else replaces.
pub fn apply_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    let mut t = match std::mem::take(target) {
        Value::Object(t) => t,
        _ => Map::new(),
    };
    for (k, v) in p {
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(_) => {
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                apply_patch(slot, v);
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    *target = Value::Object(t);
}

/// Keys of instances a write must look at: every override and every stored exception.
pub fn instance_keys(series: &StoredSeries, event: &CalendarEvent) -> Vec<String> {
    let mut keys: std::collections::BTreeSet<String> = series.exceptions.keys().cloned().collect();
    keys.extend(event.overrides.keys().cloned());
    keys.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_outside_years_0_to_9999_are_refused_not_overflowed() {
        let edt = |date: Option<&str>, date_time: Option<&str>| EventDateTime {
            date: date.map(str::to_owned),
            date_time: date_time.map(str::to_owned),
            time_zone: Some("Europe/Berlin".into()),
            ..EventDateTime::default()
        };
        assert!(time_of_google(&edt(Some("2026-11-19"), None)).is_ok());
        assert!(time_of_google(&edt(Some("+262143-12-31"), None)).is_err());
        assert!(time_of_google(&edt(None, Some("+262143-12-31T10:00:00"))).is_err());
        assert!(time_of_google(&edt(None, Some("2026-11-19T10:00:00"))).is_ok());
    }

    fn series_json() -> StoredSeries {
        let master = json!({
            "kind": "calendar#event",
            "id": "m1",
            "etag": "\"1\"",
            "status": "confirmed",
            "summary": "Weekly sync",
            "description": "Agenda",
            "location": "Room 1",
            "start": {"dateTime": "2026-11-19T10:00:00+01:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-11-19T11:00:00+01:00", "timeZone": "Europe/Berlin"},
            "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=TH",
                           "EXDATE;TZID=Europe/Berlin:20261203T100000",
                           "EXRULE:FREQ=MONTHLY"],
            "iCalUID": "m1@google.com",
            "organizer": {"email": "Alice@Example.org", "displayName": "Alice", "self": true},
            "attendees": [
                {"email": "alice@example.org", "organizer": true, "self": true,
                 "responseStatus": "accepted"},
                {"email": "Bob@Example.org", "displayName": "Bob",
                 "responseStatus": "needsAction", "comment": "maybe"},
                {"email": "carol@example.org", "responseStatus": "tentative", "optional": true},
            ],
            "reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 5}]},
            "conferenceData": {"entryPoints": [{"uri": "https://meet.example/x"}]},
        });
        let mut s = StoredSeries::new(master);
        // Moved by an hour and retitled.
        s.put_exception(json!({
            "id": "m1_20261126T090000Z",
            "etag": "\"2\"",
            "status": "confirmed",
            "summary": "Weekly sync (moved)",
            "description": "Agenda",
            "location": "Room 1",
            "recurringEventId": "m1",
            "originalStartTime": {"dateTime": "2026-11-26T10:00:00+01:00",
                                  "timeZone": "Europe/Berlin"},
            "start": {"dateTime": "2026-11-26T11:00:00+01:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-11-26T12:00:00+01:00", "timeZone": "Europe/Berlin"},
            "iCalUID": "m1@google.com",
            "attendees": [
                {"email": "alice@example.org", "organizer": true, "self": true,
                 "responseStatus": "accepted"},
                {"email": "Bob@Example.org", "displayName": "Bob",
                 "responseStatus": "needsAction", "comment": "maybe"},
                {"email": "carol@example.org", "responseStatus": "tentative", "optional": true},
            ],
        }))
        .unwrap();
        // Cancelled: only id, recurringEventId and originalStartTime are guaranteed.
        s.put_exception(json!({
            "id": "m1_20261210T090000Z",
            "status": "cancelled",
            "recurringEventId": "m1",
            "originalStartTime": {"dateTime": "2026-12-10T09:00:00Z"},
        }))
        .unwrap();
        // Differs only in an unmapped field (its own reminders): no override.
        s.put_exception(json!({
            "id": "m1_20261217T090000Z",
            "status": "confirmed",
            "summary": "Weekly sync",
            "description": "Agenda",
            "location": "Room 1",
            "recurringEventId": "m1",
            "originalStartTime": {"dateTime": "2026-12-17T10:00:00+01:00",
                                  "timeZone": "Europe/Berlin"},
            "start": {"dateTime": "2026-12-17T10:00:00+01:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-12-17T11:00:00+01:00", "timeZone": "Europe/Berlin"},
            "reminders": {"useDefault": true},
        }))
        .unwrap();
        s
    }

    #[test]
    fn a_series_reads_into_one_canonical_event() {
        let e = event_from_series(&series_json()).unwrap();
        assert_eq!(e.title.as_deref(), Some("Weekly sync"));
        assert_eq!(
            e.start.as_deref(),
            Some("2026-11-19T10:00:00+01:00[Europe/Berlin]")
        );
        assert_eq!(
            e.end.as_deref(),
            Some("2026-11-19T11:00:00+01:00[Europe/Berlin]")
        );
        assert_eq!(e.ical_uid.as_deref(), Some("m1@google.com"));
        let rec = e.recurrence.as_ref().unwrap();
        assert_eq!(rec.rules["0"], "RRULE:FREQ=WEEKLY;BYDAY=TH");
        assert_eq!(rec.rules.len(), 1, "EXRULE is not a canonical rule");
        assert_eq!(
            rec.exdates["20261203T090000Z"],
            "2026-12-03T10:00:00+01:00[Europe/Berlin]"
        );
        assert_eq!(e.overrides.len(), 2, "{:?}", e.overrides);
        let moved = &e.overrides["20261126T090000Z"];
        assert_eq!(moved.title.as_deref(), Some("Weekly sync (moved)"));
        assert_eq!(
            moved.start.as_deref(),
            Some("2026-11-26T11:00:00+01:00[Europe/Berlin]")
        );
        assert_eq!(
            moved.end.as_deref(),
            Some("2026-11-26T12:00:00+01:00[Europe/Berlin]")
        );
        assert!(moved.attendees.is_none() && moved.location.is_none());
        assert!(e.overrides["20261210T090000Z"].cancelled);
        assert_eq!(e.organizer.email.as_deref(), Some("alice@example.org"));
        assert_eq!(e.attendees.len(), 3);
        let bob = &e.attendees["bob@example.org"];
        assert_eq!(bob.response.as_deref(), Some("needs_action"));
        assert_eq!(bob.name.as_deref(), Some("Bob"));
        assert!(e.attendees["carol@example.org"].optional);
    }

    #[test]
    fn an_unchanged_event_renders_to_equal_json() {
        let s = series_json();
        let e = event_from_series(&s).unwrap();
        let ctx = RenderContext::default();
        assert_eq!(render_master(&s.master, &e, "x", &ctx).unwrap(), s.master);
        for key in instance_keys(&s, &e) {
            assert_eq!(
                render_instance(&s, &key, &e, &ctx).unwrap(),
                InstanceRender::Unchanged,
                "{key}"
            );
        }
    }

    #[test]
    fn only_changed_fields_are_touched() {
        let s = series_json();
        let mut e = event_from_series(&s).unwrap();
        e.title = Some("Weekly sync v2".into());
        e.attendees.get_mut("bob@example.org").unwrap().response = Some("accepted".into());
        e.start = Some("2026-11-19T10:30:00+01:00[Europe/Berlin]".into());
        let out = render_master(&s.master, &e, "x", &RenderContext::default()).unwrap();
        let patch = patch_body(&s.master, &out).unwrap();
        let keys: Vec<&String> = patch.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["attendees", "start", "summary"]);
        assert_eq!(
            patch["start"],
            json!({"dateTime": "2026-11-19T10:30:00+01:00", "timeZone": "Europe/Berlin"})
        );
        // Bob keeps his comment; alice keeps `self`/`organizer`.
        let bob = &out["attendees"][1];
        assert_eq!(bob["responseStatus"], "accepted");
        assert_eq!(bob["comment"], "maybe");
        assert_eq!(out["attendees"][0]["self"], true);
        assert_eq!(out["reminders"], s.master["reminders"]);
        // The render reads back as the edited event.
        let mut s2 = s.clone();
        s2.master = out;
        let back = event_from_series(&s2).unwrap();
        assert_eq!(back.title, e.title);
        assert_eq!(back.start, e.start);
        assert_eq!(back.attendees, e.attendees);
    }

    #[test]
    fn all_day_and_utc_forms() {
        let all_day = StoredSeries::new(json!({
            "id": "d1", "summary": "Holiday",
            "start": {"date": "2026-12-24"}, "end": {"date": "2026-12-26"},
            "recurrence": ["RRULE:FREQ=YEARLY", "EXDATE;VALUE=DATE:20271224",
                           "RDATE;VALUE=DATE:20261231"],
        }));
        let e = event_from_series(&all_day).unwrap();
        assert_eq!(e.start.as_deref(), Some("2026-12-24"));
        assert_eq!(e.end.as_deref(), Some("2026-12-26"));
        let rec = e.recurrence.as_ref().unwrap();
        assert_eq!(rec.exdates["20271224"], "2027-12-24");
        assert_eq!(rec.rdates["20261231"], "2026-12-31");
        assert_eq!(
            render_master(&all_day.master, &e, "x", &RenderContext::default()).unwrap(),
            all_day.master
        );
        let utc = StoredSeries::new(json!({
            "id": "u1",
            "start": {"dateTime": "2026-11-19T09:00:00Z"},
            "end": {"dateTime": "2026-11-19T10:30:00+01:00"},
        }));
        let e = event_from_series(&utc).unwrap();
        assert_eq!(e.start.as_deref(), Some("2026-11-19T09:00:00Z"));
        assert_eq!(e.end.as_deref(), Some("2026-11-19T09:30:00Z"));
        // All-day to timed: the date goes, with an explicit null in the patch.
        let mut moved = e.clone();
        moved.start = Some("2026-11-20".into());
        moved.end = Some("2026-11-21".into());
        let out = render_master(&utc.master, &moved, "x", &RenderContext::default()).unwrap();
        let patch = patch_body(&utc.master, &out).unwrap();
        assert_eq!(
            patch["start"],
            json!({"date": "2026-11-20", "dateTime": null})
        );
        let mut applied = utc.master.clone();
        apply_patch(&mut applied, &patch);
        assert_eq!(applied, out);
    }

    #[test]
    fn a_new_event_gets_the_client_id_and_no_ical_uid() {
        let e = CalendarEvent {
            title: Some("New".into()),
            ical_uid: Some("from-elsewhere".into()),
            start: Some("2026-11-19T10:00:00[Europe/Berlin]".into()),
            end: Some("2026-11-19T11:00:00+01:00[Europe/Berlin]".into()),
            recurrence: Some(Recurrence {
                rules: [("0".to_string(), "RRULE:FREQ=DAILY;COUNT=3".to_string())].into(),
                ..Recurrence::default()
            }),
            ..CalendarEvent::default()
        };
        let out = render_master(&json!({}), &e, "0a1b", &RenderContext::default()).unwrap();
        assert_eq!(out["id"], "0a1b");
        assert!(out.get("iCalUID").is_none());
        assert_eq!(out["recurrence"], json!(["RRULE:FREQ=DAILY;COUNT=3"]));
        assert_eq!(out["start"]["dateTime"], "2026-11-19T10:00:00+01:00");
        assert_eq!(out["start"]["timeZone"], "Europe/Berlin");
    }

    #[test]
    fn overrides_render_as_instance_writes() {
        let s = series_json();
        let mut e = event_from_series(&s).unwrap();
        // Cancel a plain instance, un-cancel the cancelled one, move the moved one back.
        e.overrides.insert(
            "20261231T090000Z".into(),
            Override {
                cancelled: true,
                ..Override::default()
            },
        );
        e.overrides.remove("20261210T090000Z");
        e.overrides.remove("20261126T090000Z");
        e.overrides.insert(
            "20270107T090000Z".into(),
            Override {
                location: Some("Room 2".into()),
                ..Override::default()
            },
        );
        let ctx = RenderContext::default();
        assert_eq!(
            render_instance(&s, "20261231T090000Z", &e, &ctx).unwrap(),
            InstanceRender::Cancel
        );
        let InstanceRender::Write { new: back, .. } =
            render_instance(&s, "20261126T090000Z", &e, &ctx).unwrap()
        else {
            panic!("expected a write")
        };
        assert_eq!(back["summary"], "Weekly sync");
        assert_eq!(back["start"]["dateTime"], "2026-11-26T10:00:00+01:00");
        let InstanceRender::Write { new: revived, .. } =
            render_instance(&s, "20261210T090000Z", &e, &ctx).unwrap()
        else {
            panic!("expected a write")
        };
        assert_eq!(revived["status"], "confirmed");
        assert_eq!(revived["start"]["dateTime"], "2026-12-10T10:00:00+01:00");
        let InstanceRender::Write { new: fresh, .. } =
            render_instance(&s, "20270107T090000Z", &e, &ctx).unwrap()
        else {
            panic!("expected a write")
        };
        assert_eq!(fresh["id"], "m1_20270107T090000Z");
        assert_eq!(fresh["location"], "Room 2");
        assert_eq!(fresh["end"]["dateTime"], "2027-01-07T11:00:00+01:00");
        // Once stored, the fresh instance reads back as exactly that override.
        let mut s2 = s.clone();
        s2.put_exception(fresh).unwrap();
        let back = event_from_series(&s2).unwrap();
        assert_eq!(
            back.overrides["20270107T090000Z"],
            e.overrides["20270107T090000Z"]
        );
    }

    #[test]
    fn event_ids_are_base32hex() {
        let id = event_id_for_document(&[0x00, 0xff, 0x10, 0xab, 0x9c]);
        assert_eq!(id, "00ff10ab9c");
        assert!(is_valid_event_id(&id));
        assert!(!is_valid_event_id("abcw1"));
        assert!(!is_valid_event_id("ab"));
        assert!(!is_valid_event_id("ABCDE"));
    }

    #[test]
    fn bad_input_is_an_error_naming_the_event() {
        let s = StoredSeries::new(json!({"id": "b1", "start": {"dateTime": "tomorrow"},
                                          "end": {"date": "2026-01-01"}}));
        let err = event_from_series(&s).unwrap_err().to_string();
        assert!(err.contains("b1") && err.contains("start"), "{err}");
        let s = StoredSeries::new(json!({"id": "b2", "start": {"date": "2026-01-01"},
            "end": {"date": "2026-01-02"}, "recurrence": ["EXDATE:notadate"]}));
        assert!(event_from_series(&s).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn start_and_end() -> impl Strategy<Value = (String, String, bool)> {
            let zones = prop_oneof![
                Just("Europe/Berlin"),
                Just("America/New_York"),
                Just("Asia/Kolkata")
            ];
            (
                0u32..4,
                zones,
                1u32..28,
                0u32..24,
                prop_oneof![Just(0u32), Just(30)],
                1i64..5,
            )
                .prop_map(|(form, zone, day, hour, minute, len)| {
                    let d = NaiveDate::from_ymd_opt(2026, 3, day).unwrap_or_default();
                    match form {
                        0 => {
                            let s = ResolvedTime::Date(d);
                            let e = ResolvedTime::Date(d + TimeDelta::days(len));
                            (s.to_string(), e.to_string(), true)
                        }
                        1 => {
                            let t = d.and_hms_opt(hour, minute, 0).unwrap_or_default();
                            let s = ResolvedTime::Utc(t);
                            let e = ResolvedTime::Utc(t + TimeDelta::hours(len));
                            (s.to_string(), e.to_string(), false)
                        }
                        _ => {
                            let tz: Tz = zone.parse().unwrap_or(Tz::UTC);
                            let t = d.and_hms_opt(hour, minute, 0).unwrap_or_default();
                            let s = ResolvedTime::Zoned(t, tz);
                            let e = ResolvedTime::Zoned(t + TimeDelta::hours(len), tz);
                            (s.to_string(), e.to_string(), false)
                        }
                    }
                })
        }

        fn attendees() -> impl Strategy<Value = BTreeMap<String, Attendee>> {
            proptest::collection::btree_map(
                "[a-c]{1,3}@example\\.org",
                (
                    proptest::option::of("[A-Z][a-z]{0,6}"),
                    prop_oneof![
                        Just("needs_action"),
                        Just("accepted"),
                        Just("declined"),
                        Just("tentative")
                    ],
                    any::<bool>(),
                )
                    .prop_map(|(name, response, optional)| Attendee {
                        name,
                        response: Some(response.to_owned()),
                        optional,
                        extra: Default::default(),
                    }),
                0..4,
            )
        }

        fn events() -> impl Strategy<Value = CalendarEvent> {
            (
                proptest::option::of("[ -~]{0,20}"),
                proptest::option::of("[ -~\n]{0,40}"),
                proptest::option::of("[ -~]{0,20}"),
                prop_oneof![Just(None), Just(Some("confirmed")), Just(Some("tentative"))],
                start_and_end(),
                attendees(),
                proptest::option::of((
                    prop_oneof![Just("FREQ=DAILY;COUNT=5"), Just("FREQ=WEEKLY;BYDAY=MO,WE")],
                    proptest::collection::btree_set(1i64..5, 0..3),
                )),
            )
                .prop_map(
                    |(title, description, location, status, (start, end, _), attendees, rec)| {
                        let recurrence = rec.map(|(rule, weeks)| {
                            let first = parse_canonical(&start)
                                .unwrap_or(ResolvedTime::Date(NaiveDate::MIN));
                            let exdates = weeks
                                .into_iter()
                                .map(|w| {
                                    let at = match first {
                                        ResolvedTime::Date(d) => {
                                            ResolvedTime::Date(d + TimeDelta::weeks(w))
                                        }
                                        ResolvedTime::Utc(t) => {
                                            ResolvedTime::Utc(t + TimeDelta::weeks(w))
                                        }
                                        ResolvedTime::Floating(t) => {
                                            ResolvedTime::Floating(t + TimeDelta::weeks(w))
                                        }
                                        ResolvedTime::Zoned(t, tz) => {
                                            ResolvedTime::Zoned(t + TimeDelta::weeks(w), tz)
                                        }
                                    };
                                    (at.instance_key(), at.to_string())
                                })
                                .collect();
                            Recurrence {
                                rules: [("0".to_string(), format!("RRULE:{rule}"))].into(),
                                exdates,
                                ..Recurrence::default()
                            }
                        });
                        CalendarEvent {
                            title,
                            description,
                            location,
                            status: status.map(str::to_owned),
                            start: Some(start),
                            end: Some(end),
                            attendees,
                            recurrence,
                            ..CalendarEvent::default()
                        }
                    },
                )
        }

        /// An override at week `w` after the series start: cancelled, retitled, relocated or
        /// moved by some hours.
        fn overrides() -> impl Strategy<Value = Vec<(i64, u8, String, i64)>> {
            proptest::collection::vec((1i64..8, 0u8..4, "[a-z ]{1,10}", -3i64..4), 0..4)
        }

        proptest! {
            /// Overrides rendered onto instances, stored as Google would return them, read back
            /// as the same overrides; rendering again changes nothing.
            #[test]
            fn overrides_round_trip_through_instances(
                (start, end, _) in start_and_end(),
                specs in overrides(),
            ) {
                let ctx = RenderContext { calendar_zone: Some("Europe/Berlin".into()) };
                let mut e = CalendarEvent {
                    title: Some("Series".into()),
                    status: Some("confirmed".into()),
                    start: Some(start.clone()),
                    end: Some(end.clone()),
                    recurrence: Some(Recurrence {
                        rules: [("0".to_string(), "RRULE:FREQ=WEEKLY".to_string())].into(),
                        ..Recurrence::default()
                    }),
                    ..CalendarEvent::default()
                };
                let master = render_master(&json!({}), &e, "abcde", &ctx).unwrap();
                let mut series = StoredSeries::new(master);
                let first = parse_canonical(&start).unwrap();
                let first_end = parse_canonical(&end).unwrap();
                for (week, kind, text, hours) in specs {
                    let slot = match first {
                        ResolvedTime::Date(d) => ResolvedTime::Date(d + TimeDelta::weeks(week)),
                        ResolvedTime::Utc(t) => ResolvedTime::Utc(t + TimeDelta::weeks(week)),
                        ResolvedTime::Floating(t) => ResolvedTime::Floating(t + TimeDelta::weeks(week)),
                        ResolvedTime::Zoned(t, tz) => ResolvedTime::Zoned(t + TimeDelta::weeks(week), tz),
                    };
                    let moved = |w: ResolvedTime| match w {
                        ResolvedTime::Date(d) => ResolvedTime::Date(d + TimeDelta::days(hours)),
                        ResolvedTime::Utc(t) => ResolvedTime::Utc(t + TimeDelta::hours(hours)),
                        ResolvedTime::Floating(t) => ResolvedTime::Floating(t + TimeDelta::hours(hours)),
                        ResolvedTime::Zoned(t, tz) => ResolvedTime::Zoned(t + TimeDelta::hours(hours), tz),
                    };
                    let ov = match kind {
                        0 => Override { cancelled: true, ..Override::default() },
                        1 => Override { title: Some(text), ..Override::default() },
                        2 => Override { location: Some(text), ..Override::default() },
                        // A moved instance reads back with both ends (as in CalDAV): the end
                        // differs from the slot's original end too.
                        _ if hours != 0 => Override {
                            start: Some(moved(slot).to_string()),
                            end: Some(moved(shifted(&first, &slot, &first_end)).to_string()),
                            ..Override::default()
                        },
                        _ => Override { description: Some(text), ..Override::default() },
                    };
                    e.overrides.insert(slot.instance_key(), ov);
                }
                // Write each instance and store what "Google" keeps.
                for key in instance_keys(&series, &e) {
                    let stored = match render_instance(&series, &key, &e, &ctx).unwrap() {
                        InstanceRender::Unchanged => continue,
                        InstanceRender::Cancel => cancelled_instance(&series, &key, &ctx).unwrap(),
                        InstanceRender::Write { base, new } => {
                            let mut applied = base.clone();
                            if let Some(body) = patch_body(&base, &new) {
                                apply_patch(&mut applied, &body);
                            }
                            prop_assert_eq!(&applied, &new);
                            applied
                        }
                    };
                    series.put_exception(stored).unwrap();
                }
                let back = event_from_series(&series).unwrap();
                prop_assert_eq!(back.overrides.len(), e.overrides.len());
                for (key, want) in &e.overrides {
                    let got = back.overrides.get(key);
                    prop_assert!(got.is_some_and(|g| same_override(g, want)), "{key}: {got:?} vs {want:?}");
                }
                for key in instance_keys(&series, &e) {
                    prop_assert_eq!(
                        render_instance(&series, &key, &e, &ctx).unwrap(),
                        InstanceRender::Unchanged
                    );
                }
            }
        }

        proptest! {
            /// Render a new event, read it back, render again: the same canonical fields, and the
            /// second render (from the read-back value or the original) changes nothing.
            #[test]
            fn render_then_read_round_trips_and_is_quiet(e in events()) {
                let ctx = RenderContext { calendar_zone: Some("Europe/Berlin".into()) };
                let mut json1 = render_master(&json!({}), &e, "abcde", &ctx).unwrap();
                json1["etag"] = json!("\"1\"");
                let series = StoredSeries::new(json1.clone());
                let back = event_from_series(&series).unwrap();
                prop_assert_eq!(&back.title, &e.title);
                prop_assert_eq!(&back.description, &e.description);
                prop_assert_eq!(&back.location, &e.location);
                prop_assert_eq!(&back.status, &e.status);
                prop_assert!(same_time(back.start.as_deref(), e.start.as_deref()));
                prop_assert!(same_time(back.end.as_deref(), e.end.as_deref()));
                prop_assert_eq!(&back.attendees, &e.attendees);
                prop_assert!(same_recurrence(back.recurrence.as_ref(), e.recurrence.as_ref()));
                prop_assert_eq!(&render_master(&json1, &back, "x", &ctx).unwrap(), &json1);
                prop_assert_eq!(&render_master(&json1, &e, "x", &ctx).unwrap(), &json1);
                prop_assert!(patch_body(&json1, &json1).is_none());
            }
        }
    }
}
