//! Pure translation between CalDAV/CardDAV resources and the canonical record values of
//! `driftless-crdt-model` (`calendar_event`, `contact`).
//!
//! # Invariants
//! - Reading then writing back an unchanged value returns the resource byte-for-byte: every
//!   writer compares in canonical space and calls an [`ical`](super::ical) / [`vcard`](super::vcard)
//!   setter only for a property whose canonical value differs from what the resource says.
//! - Writing then reading gives back the same canonical fields for every value in the
//!   representable set (see the lossy notes on each function).
//! - Provider input never panics: malformed resources and values are [`TranslateError`]s naming
//!   the resource (by UID) and the field.
//!
//! Times: `DTSTART;TZID=<IANA>` becomes `local+offset[zone]` with the offset from `chrono-tz`
//! (ambiguous wall times take the first occurrence and wall times in a gap the offset before it,
//! as RFC 5545 says). A TZID that is no IANA name (after stripping prefixes such as
//! `/mozilla.org/20050126_1/`) reads as floating, and its line is left as it is unless the
//! value changes. Instance keys (overrides, exdates, rdates) are the UTC basic form, the basic
//! date for all-day values, and the basic local form without `Z` for floating values.

use std::collections::BTreeMap;

use calcard::icalendar::ICalendarValue;
use calcard::{Entry, Parser};
use chrono::{Datelike, NaiveDate, NaiveTime, TimeDelta, Timelike};
use chrono_tz::Tz;
use driftless_crdt_model::{
    Attendee, CalendarEvent, Contact, ContactPoint, Name, Organizer, Override, Recurrence,
    ResolvedTime, SlotKind, assign_slots,
};

use super::content::{ContentDoc, RawProp, escape_text, fold};
use super::ical::{
    self, Calendar, DateProp, DateValue, EventId, EventProps, IcalError, Person, TextProp, Zone,
};
use super::vcard::{Card, CardList, CardText, ContactProps, TypedValue, VcardError};

/// Why a resource or a canonical value could not be translated.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// The resource is not a readable iCalendar object.
    #[error("{resource}: not a readable iCalendar resource: {source}")]
    Ical {
        resource: String,
        #[source]
        source: IcalError,
    },
    /// The resource is not a readable vCard.
    #[error("{resource}: not a readable vCard: {source}")]
    Vcard {
        resource: String,
        #[source]
        source: VcardError,
    },
    /// The resource has no VEVENT without RECURRENCE-ID.
    #[error("{resource}: no VEVENT (master event) in the resource")]
    NoEvent { resource: String },
    /// One field (an iCalendar property or a canonical field) could not be read or written.
    #[error("{resource}: field {field}: {reason}")]
    Field {
        resource: String,
        field: String,
        reason: String,
    },
}

fn field_error(resource: &str, field: &str, reason: impl Into<String>) -> TranslateError {
    TranslateError::Field {
        resource: resource.to_owned(),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------------------------

/// A duration: nominal days (wall clock) plus exact seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Span {
    days: i64,
    secs: i64,
}

const ZERO: Span = Span { days: 0, secs: 0 };
const ONE_DAY: Span = Span { days: 1, secs: 0 };

/// An IANA zone for a TZID, also when it carries a vendor prefix.
fn zone_of(tzid: &str) -> Option<Tz> {
    let tzid = tzid.trim();
    if let Ok(tz) = tzid.parse::<Tz>() {
        return Some(tz);
    }
    tzid.char_indices()
        .filter(|(_, c)| *c == '/')
        .find_map(|(i, _)| tzid[i + 1..].parse::<Tz>().ok())
}

fn in_range(d: NaiveDate) -> bool {
    (0..=9999).contains(&d.year())
}

/// A DTSTART-like iCalendar value as a time: a TZID that names no IANA zone (also after
/// stripping a vendor prefix) reads as floating, a leap second (60) as :59. `None` when the
/// value is no valid date or lies outside years 0-9999.
pub(crate) fn time_of_value(v: &DateValue) -> Option<ResolvedTime> {
    let when = match v {
        DateValue::Date { year, month, day } => ResolvedTime::Date(NaiveDate::from_ymd_opt(
            i32::from(*year),
            u32::from(*month),
            u32::from(*day),
        )?),
        DateValue::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            zone,
        } => {
            let date =
                NaiveDate::from_ymd_opt(i32::from(*year), u32::from(*month), u32::from(*day))?;
            let time = NaiveTime::from_hms_opt(
                u32::from(*hour),
                u32::from(*minute),
                u32::from((*second).min(59)),
            )?;
            let t = date.and_time(time);
            match zone {
                Zone::Utc => ResolvedTime::Utc(t),
                Zone::Floating => ResolvedTime::Floating(t),
                Zone::Tzid(id) => match zone_of(id) {
                    Some(tz) => ResolvedTime::Zoned(t, tz),
                    None => ResolvedTime::Floating(t),
                },
            }
        }
    };
    in_range(when.date()).then_some(when)
}

/// A time as an iCalendar value (a zoned time as `TZID=<IANA name>`); `None` outside years
/// 0-9999.
fn value_of_time(when: &ResolvedTime) -> Option<DateValue> {
    let date = when.date();
    let (year, month, day) = (
        u16::try_from(date.year()).ok()?,
        u8::try_from(date.month()).ok()?,
        u8::try_from(date.day()).ok()?,
    );
    let (t, zone) = match when {
        ResolvedTime::Date(_) => return Some(DateValue::Date { year, month, day }),
        ResolvedTime::Utc(t) => (t, Zone::Utc),
        ResolvedTime::Floating(t) => (t, Zone::Floating),
        ResolvedTime::Zoned(t, tz) => (t, Zone::Tzid(tz.name().to_owned())),
    };
    Some(DateValue::DateTime {
        year,
        month,
        day,
        hour: u8::try_from(t.hour()).ok()?,
        minute: u8::try_from(t.minute()).ok()?,
        second: u8::try_from(t.second()).ok()?,
        zone,
    })
}

/// `when` moved by `span` (days on the wall clock, then exact seconds), in the same form.
fn plus(when: &ResolvedTime, span: Span) -> Option<ResolvedTime> {
    let days = TimeDelta::try_days(span.days)?;
    let secs = TimeDelta::try_seconds(span.secs)?;
    let moved = match when {
        ResolvedTime::Date(d) => {
            let whole = TimeDelta::try_days(span.secs.div_euclid(86_400))?;
            ResolvedTime::Date(d.checked_add_signed(days)?.checked_add_signed(whole)?)
        }
        ResolvedTime::Utc(t) => {
            ResolvedTime::Utc(t.checked_add_signed(days)?.checked_add_signed(secs)?)
        }
        ResolvedTime::Floating(t) => {
            ResolvedTime::Floating(t.checked_add_signed(days)?.checked_add_signed(secs)?)
        }
        ResolvedTime::Zoned(t, tz) => {
            let wall = ResolvedTime::Zoned(t.checked_add_signed(days)?, *tz);
            let instant = wall.instant().checked_add_signed(secs)?;
            ResolvedTime::zoned_at(instant, *tz)
        }
    };
    in_range(moved.date()).then_some(moved)
}

/// RFC 5545's end when DTEND and DURATION are both absent.
fn default_span(when: &ResolvedTime) -> Span {
    match when {
        ResolvedTime::Date(_) => ONE_DAY,
        _ => ZERO,
    }
}

/// From `a` to `b`: whole days between dates, else exact seconds.
fn span_between(a: &ResolvedTime, b: &ResolvedTime) -> Span {
    match (a, b) {
        (ResolvedTime::Date(x), ResolvedTime::Date(y)) => Span {
            days: (*y - *x).num_days(),
            secs: 0,
        },
        _ => Span {
            days: 0,
            secs: (b.instant() - a.instant()).num_seconds(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Reading a VCALENDAR
// ---------------------------------------------------------------------------------------------

/// One VEVENT, interpreted.
#[derive(Debug, Clone)]
struct Read {
    id: EventId,
    props: EventProps,
    start: Option<ResolvedTime>,
    /// DTEND as written.
    explicit_end: Option<ResolvedTime>,
    /// DURATION as written.
    duration: Option<Span>,
    recurrence_id: Option<ResolvedTime>,
}

impl Read {
    /// The end the resource implies when its DTSTART is `start`.
    fn end_for(&self, start: &ResolvedTime) -> Option<ResolvedTime> {
        match &self.explicit_end {
            Some(end) => Some(*end),
            None => plus(start, self.duration.unwrap_or(default_span(start))),
        }
    }

    fn end(&self) -> Option<ResolvedTime> {
        self.start.as_ref().and_then(|s| self.end_for(s))
    }
}

/// A parsed resource and each of its VEVENTs (in order).
struct Parsed {
    cal: Calendar,
    events: Vec<Read>,
    resource: String,
}

/// `UID <uid>` of the first component that has one, for error messages.
fn resource_name(doc: Option<&ContentDoc>, fallback: &str) -> String {
    let Some(doc) = doc else {
        return fallback.to_owned();
    };
    let mut stack = vec![doc.root()];
    while let Some(c) = stack.pop() {
        if let Some(uid) = doc.prop(c, "UID") {
            return format!("UID {}", uid.value.trim());
        }
        let mut children = doc.children(c);
        children.reverse();
        stack.extend(children);
    }
    fallback.to_owned()
}

/// A DURATION line, read with calcard.
fn parse_duration(prop: &RawProp) -> Option<Span> {
    let text = format!("BEGIN:VEVENT\r\n{}\r\nEND:VEVENT\r\n", prop.to_line());
    let Entry::ICalendar(cal) = Parser::new(&text).entry() else {
        return None;
    };
    let entry = cal.components.first()?.entries.first()?;
    match entry.values.first()? {
        ICalendarValue::Duration(d) => {
            let days = i64::from(d.weeks) * 7 + i64::from(d.days);
            let secs = i64::from(d.hours) * 3600 + i64::from(d.minutes) * 60 + i64::from(d.seconds);
            let sign = if d.neg { -1 } else { 1 };
            Some(Span {
                days: sign * days,
                secs: sign * secs,
            })
        }
        _ => None,
    }
}

impl Parsed {
    fn parse(raw: &str) -> Result<Parsed, TranslateError> {
        let doc = ContentDoc::parse(raw).ok();
        let resource = resource_name(doc.as_ref(), "iCalendar resource without UID");
        let cal = Calendar::parse(raw).map_err(|source| TranslateError::Ical {
            resource: resource.clone(),
            source,
        })?;
        // The same VEVENTs in the same order as `Calendar::events`, for DURATION.
        let vevents = doc
            .as_ref()
            .map(|doc| {
                doc.children(doc.root())
                    .into_iter()
                    .filter(|c| doc.kind(*c) == "VCALENDAR")
                    .flat_map(|v| doc.children(v))
                    .filter(|c| doc.kind(*c) == "VEVENT")
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let mut events = Vec::new();
        for (i, id) in cal.events().into_iter().enumerate() {
            let props = cal.event(id).map_err(|e| match e {
                IcalError::BadValue { property, value } => {
                    field_error(&resource, &property, format!("invalid value {value:?}"))
                }
                source => TranslateError::Ical {
                    resource: resource.clone(),
                    source,
                },
            })?;
            let when = |v: &Option<DateValue>,
                        name: &str|
             -> Result<Option<ResolvedTime>, TranslateError> {
                v.as_ref()
                    .map(|v| {
                        time_of_value(v).ok_or_else(|| {
                            field_error(&resource, name, "date out of range or invalid")
                        })
                    })
                    .transpose()
            };
            let start = when(&props.start, "DTSTART")?;
            let explicit_end = when(&props.end, "DTEND")?;
            let recurrence_id = when(&props.recurrence_id, "RECURRENCE-ID")?;
            let duration = match (doc.as_ref(), vevents.get(i)) {
                (Some(doc), Some(c)) => match doc.prop(*c, "DURATION") {
                    Some(p) => Some(parse_duration(p).ok_or_else(|| {
                        field_error(
                            &resource,
                            "DURATION",
                            format!("invalid value {:?}", p.value),
                        )
                    })?),
                    None => None,
                },
                _ => None,
            };
            events.push(Read {
                id,
                props,
                start,
                explicit_end,
                duration,
                recurrence_id,
            });
        }
        Ok(Parsed {
            cal,
            events,
            resource,
        })
    }

    fn master(&self) -> Option<&Read> {
        self.events.iter().find(|e| e.props.recurrence_id.is_none())
    }

    fn overrides(&self) -> impl Iterator<Item = &Read> {
        self.events.iter().filter(|e| e.recurrence_id.is_some())
    }
}

fn status_of(raw: Option<&str>) -> Option<String> {
    match raw?.trim().to_ascii_uppercase().as_str() {
        "CONFIRMED" => Some("confirmed".into()),
        "TENTATIVE" => Some("tentative".into()),
        "CANCELLED" => Some("cancelled".into()),
        _ => None,
    }
}

fn response_of(partstat: Option<&str>) -> Option<String> {
    match partstat?.trim().to_ascii_uppercase().as_str() {
        "NEEDS-ACTION" => Some("needs_action".into()),
        "ACCEPTED" => Some("accepted".into()),
        "DECLINED" => Some("declined".into()),
        "TENTATIVE" => Some("tentative".into()),
        _ => None,
    }
}

fn partstat_of(response: &str) -> String {
    response.trim().to_ascii_uppercase().replace('_', "-")
}

fn attendees_of(list: &[ical::Attendee]) -> BTreeMap<String, Attendee> {
    list.iter()
        .map(|a| {
            (
                a.email.trim().to_lowercase(),
                Attendee {
                    name: a.name.clone(),
                    response: response_of(a.partstat.as_deref()),
                    optional: a.optional,
                    extra: Default::default(),
                },
            )
        })
        .collect()
}

fn organizer_of(p: Option<&Person>) -> Organizer {
    match p {
        Some(p) if !p.email.trim().is_empty() => Organizer {
            email: Some(p.email.trim().to_lowercase()),
            name: p.name.clone(),
            extra: Default::default(),
        },
        _ => Organizer::default(),
    }
}

/// Instance key to canonical date string, for EXDATE or RDATE values.
fn date_map(
    values: &[DateValue],
    resource: &str,
    field: &str,
) -> Result<BTreeMap<String, String>, TranslateError> {
    values
        .iter()
        .map(|v| {
            let w = time_of_value(v)
                .ok_or_else(|| field_error(resource, field, "date out of range or invalid"))?;
            Ok((w.instance_key(), w.to_string()))
        })
        .collect()
}

fn recurrence_of(props: &EventProps, resource: &str) -> Result<Option<Recurrence>, TranslateError> {
    if props.rrules.is_empty() && props.exdates.is_empty() && props.rdates.is_empty() {
        return Ok(None);
    }
    Ok(Some(Recurrence {
        rules: props
            .rrules
            .iter()
            .enumerate()
            .map(|(i, r)| (i.to_string(), format!("RRULE:{r}")))
            .collect(),
        exdates: date_map(&props.exdates, resource, "EXDATE")?,
        rdates: date_map(&props.rdates, resource, "RDATE")?,
        extra: Default::default(),
    }))
}

/// A value the override changes: present in the override and different from the series'.
fn changed(value: &Option<String>, series: &Option<String>) -> Option<String> {
    value
        .as_ref()
        .filter(|v| Some(*v) != series.as_ref())
        .cloned()
}

/// The override entry for one VEVENT with RECURRENCE-ID: `{"cancelled": true}` or the fields
/// that differ from the series (`start` from the original start, `end` from the original start
/// plus the series' duration).
fn override_of(master: &Read, ov: &Read, rid: &ResolvedTime) -> Override {
    let cancelled = |p: &EventProps| status_of(p.status.as_deref()).as_deref() == Some("cancelled");
    // In a cancelled series every instance is cancelled; the override then only carries changes.
    if cancelled(&ov.props) && !cancelled(&master.props) {
        return Override {
            cancelled: true,
            ..Override::default()
        };
    }
    let m = &master.props;
    let p = &ov.props;
    let series_span = match (&master.start, master.end()) {
        (Some(s), Some(e)) => span_between(s, &e),
        _ => default_span(rid),
    };
    let original_end = plus(rid, series_span).map(|w| w.to_string());
    // A VEVENT without DTSTART starts where the instance would.
    let effective_start = ov.start.unwrap_or(*rid);
    let start = Some(effective_start.to_string());
    let end = ov.end_for(&effective_start).map(|w| w.to_string());
    let attendees = attendees_of(&p.attendees);
    Override {
        title: changed(&p.summary, &m.summary),
        description: changed(&p.description, &m.description),
        location: changed(&p.location, &m.location),
        status: changed(
            &status_of(p.status.as_deref()),
            &status_of(m.status.as_deref()),
        ),
        start: start.filter(|s| *s != rid.to_string()),
        end: end.filter(|e| Some(e) != original_end.as_ref()),
        attendees: (!attendees.is_empty() && attendees != attendees_of(&m.attendees))
            .then_some(attendees),
        ..Override::default()
    }
}

fn event_of(parsed: &Parsed) -> Result<CalendarEvent, TranslateError> {
    let resource = &parsed.resource;
    let master = parsed.master().ok_or_else(|| TranslateError::NoEvent {
        resource: resource.clone(),
    })?;
    let start = master
        .start
        .as_ref()
        .ok_or_else(|| field_error(resource, "DTSTART", "missing"))?;
    let end = master
        .end()
        .ok_or_else(|| field_error(resource, "DTEND", "end out of range"))?;
    let p = &master.props;
    let mut overrides = BTreeMap::new();
    for ov in parsed.overrides() {
        if let Some(rid) = &ov.recurrence_id {
            overrides.insert(rid.instance_key(), override_of(master, ov, rid));
        }
    }
    Ok(CalendarEvent {
        title: p.summary.clone(),
        location: p.location.clone(),
        status: status_of(p.status.as_deref()),
        ical_uid: p.uid.clone(),
        description: p.description.clone(),
        start: Some(start.to_string()),
        end: Some(end.to_string()),
        recurrence: recurrence_of(p, resource)?,
        overrides,
        organizer: organizer_of(p.organizer.as_ref()),
        attendees: attendees_of(&p.attendees),
        ..CalendarEvent::default()
    })
}

/// The canonical fields a CalDAV resource carries (links, deleted, schema, extra left at defaults).
///
/// Lossy: PARTSTAT values other than the four canonical ones and STATUS values other than the
/// three read as absent; several ATTENDEE lines with one email collapse into one entry; rule
/// slot ids are `"0"`, `"1"`, ... in line order; an override's fields that equal the series'
/// read as unchanged, and properties an override VEVENT lacks are inherited; a STATUS:CANCELLED
/// override is only `{"cancelled": true}` (unless the whole series is cancelled); RECURRENCE-ID;RANGE=THISANDFUTURE is read as a single
/// instance; RDATE;VALUE=PERIOD is refused (an error). A resource holding only overridden
/// instances (no master VEVENT) is an error.
pub fn event_from_ical(raw: &str) -> Result<CalendarEvent, TranslateError> {
    event_of(&Parsed::parse(raw)?)
}

// ---------------------------------------------------------------------------------------------
// Writing a VCALENDAR
// ---------------------------------------------------------------------------------------------

fn utc_stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

fn new_calendar(uid: &str) -> String {
    let mut out = String::from(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//driftless//driftless//EN\r\nBEGIN:VEVENT\r\n",
    );
    out.push_str(&fold(&format!("UID:{}", escape_text(uid)), "\r\n"));
    out.push_str(&format!(
        "DTSTAMP:{}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
        utc_stamp()
    ));
    out
}

/// A canonical time as a value to write; `base` is used when it means the same.
fn value_of(
    when: &ResolvedTime,
    base: Option<&DateValue>,
    resource: &str,
    field: &str,
) -> Result<DateValue, TranslateError> {
    if let Some(b) = base
        && time_of_value(b).is_some_and(|w| w.to_string() == when.to_string())
    {
        return Ok(b.clone());
    }
    value_of_time(when).ok_or_else(|| field_error(resource, field, "date out of range"))
}

fn parse_time(s: &str, resource: &str, field: &str) -> Result<ResolvedTime, TranslateError> {
    ResolvedTime::parse(s).map_err(|e| field_error(resource, field, e.to_string()))
}

/// Sets a text property when the canonical value differs.
fn put_text(
    cal: &mut Calendar,
    e: EventId,
    prop: TextProp,
    current: &Option<String>,
    want: &Option<String>,
) {
    if current != want {
        cal.set_text(e, prop, want.as_deref());
    }
}

/// The ATTENDEE list for `want`, starting from each attendee's current line.
fn attendee_list(
    want: &BTreeMap<String, Attendee>,
    current: &[ical::Attendee],
) -> Vec<ical::Attendee> {
    want.iter()
        .map(|(email, a)| {
            let base = current
                .iter()
                .find(|c| c.email.trim().eq_ignore_ascii_case(email));
            let mut out = base.cloned().unwrap_or_else(|| ical::Attendee {
                email: email.clone(),
                name: None,
                partstat: None,
                optional: false,
            });
            if out.name != a.name {
                out.name = param_text(&a.name);
            }
            if response_of(out.partstat.as_deref()) != a.response {
                out.partstat = a.response.as_deref().map(partstat_of);
            }
            out.optional = a.optional;
            out
        })
        .collect()
}

fn put_attendees(
    cal: &mut Calendar,
    e: EventId,
    current: &[ical::Attendee],
    want: &BTreeMap<String, Attendee>,
) {
    let strip = |m: &BTreeMap<String, Attendee>| {
        m.iter()
            .map(|(k, a)| (k.clone(), (a.name.clone(), a.response.clone(), a.optional)))
            .collect::<BTreeMap<_, _>>()
    };
    if strip(&attendees_of(current)) != strip(want) {
        cal.set_attendees(e, &attendee_list(want, current));
    }
}

/// Sets DTSTART and DTEND of one VEVENT to `start`/`end` where the resource says otherwise.
/// Returns whether DTEND was written (a DURATION next to it must then go).
fn put_times(
    cal: &mut Calendar,
    r: Option<&Read>,
    e: EventId,
    start: &ResolvedTime,
    end: &ResolvedTime,
    resource: &str,
) -> Result<bool, TranslateError> {
    let set = |cal: &mut Calendar, prop, v: &DateValue| {
        cal.set_date(e, prop, Some(v)).map_err(|err| {
            field_error(
                resource,
                if prop == DateProp::Start {
                    "start"
                } else {
                    "end"
                },
                err.to_string(),
            )
        })
    };
    if r.and_then(|r| r.start.as_ref())
        .map(ResolvedTime::to_string)
        != Some(start.to_string())
    {
        let v = value_of(
            start,
            r.and_then(|r| r.props.start.as_ref()),
            resource,
            "start",
        )?;
        set(cal, DateProp::Start, &v)?;
    }
    let implied = match r {
        Some(r) => r.end_for(start),
        None => plus(start, default_span(start)),
    };
    if implied.map(|w| w.to_string()) != Some(end.to_string()) {
        let v = value_of(end, r.and_then(|r| r.props.end.as_ref()), resource, "end")?;
        set(cal, DateProp::End, &v)?;
        return Ok(true);
    }
    Ok(false)
}

fn put_dates(
    cal: &mut Calendar,
    e: EventId,
    current: &[DateValue],
    want: &BTreeMap<String, String>,
    exdates: bool,
    resource: &str,
) -> Result<(), TranslateError> {
    let field = if exdates {
        "recurrence.exdates"
    } else {
        "recurrence.rdates"
    };
    let now = date_map(current, resource, field)?;
    let want_values: Vec<&String> = want.values().collect();
    let now_values: Vec<&String> = now.values().collect();
    let mut a = want_values.clone();
    let mut b = now_values;
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    if a == b {
        return Ok(());
    }
    let mut values = Vec::new();
    for s in a {
        let w = parse_time(s, resource, field)?;
        let base = current
            .iter()
            .find(|c| time_of_value(c).is_some_and(|c| c.to_string() == w.to_string()));
        values.push(value_of(&w, base, resource, field)?);
    }
    let result = if exdates {
        cal.set_exdates(e, &values)
    } else {
        cal.set_rdates(e, &values)
    };
    result.map_err(|err| field_error(resource, field, err.to_string()))
}

/// A display name as a parameter value: parameters cannot carry line breaks or double quotes
/// (the content layer writes them verbatim), so those become a space and a single quote.
fn param_text(name: &Option<String>) -> Option<String> {
    name.as_ref().map(|n| {
        n.chars()
            .map(|c| match c {
                '\r' | '\n' => ' ',
                '"' => '\'',
                c if c.is_control() => ' ',
                c => c,
            })
            .collect()
    })
}

fn upper(s: &Option<String>) -> Option<String> {
    s.as_ref().map(|s| s.trim().to_ascii_uppercase())
}

/// The series as it is to be written, for overrides that inherit from it.
struct Series<'a> {
    event: &'a CalendarEvent,
    start: ResolvedTime,
    span: Span,
}

/// Edits (or fills, when `fresh`) one override VEVENT. Fields the override does not change
/// follow the series where the VEVENT carries them.
fn put_override(
    cal: &mut Calendar,
    e: EventId,
    r: Option<&Read>,
    rid: &ResolvedTime,
    o: &Override,
    series: &Series<'_>,
    resource: &str,
) -> Result<bool, TranslateError> {
    let ev = series.event;
    let cur = |f: fn(&EventProps) -> &Option<String>| r.and_then(|r| f(&r.props).clone());
    let fresh = r.is_none();
    let status_now = cur(|p| &p.status);
    if o.cancelled && !fresh {
        if status_of(status_now.as_deref()).as_deref() != Some("cancelled") {
            cal.set_text(e, TextProp::Status, Some("CANCELLED"));
        }
        return Ok(false);
    }
    for (prop, now, own, series_value) in [
        (TextProp::Summary, cur(|p| &p.summary), &o.title, &ev.title),
        (
            TextProp::Location,
            cur(|p| &p.location),
            &o.location,
            &ev.location,
        ),
        (
            TextProp::Description,
            cur(|p| &p.description),
            &o.description,
            &ev.description,
        ),
    ] {
        let want = match own {
            Some(v) => Some(v.clone()),
            None if fresh || now.is_some() => series_value.clone(),
            None => continue,
        };
        put_text(cal, e, prop, &now, &want);
    }
    // STATUS: the override's own, or the series' where the VEVENT carries a known one.
    let now_status = status_of(status_now.as_deref());
    let want_status = if o.cancelled {
        Some("cancelled".to_owned())
    } else {
        match &o.status {
            Some(s) => status_of(Some(s)),
            None if fresh || now_status.is_some() => {
                ev.status.as_deref().and_then(|s| status_of(Some(s)))
            }
            None => now_status.clone(),
        }
    };
    if now_status != want_status {
        cal.set_text(e, TextProp::Status, upper(&want_status).as_deref());
    }
    let start = match &o.start {
        Some(s) => parse_time(s, resource, "overrides.start")?,
        None => *rid,
    };
    let end = match &o.end {
        Some(s) => parse_time(s, resource, "overrides.end")?,
        None => plus(&start, series.span)
            .ok_or_else(|| field_error(resource, "overrides.end", "end out of range"))?,
    };
    // Read as the reader does: a VEVENT without DTSTART starts at its RECURRENCE-ID.
    let effective = r.map(|r| {
        let mut r = r.clone();
        if r.start.is_none() {
            r.start = Some(*rid);
        }
        r
    });
    let wrote_end = put_times(cal, effective.as_ref(), e, &start, &end, resource)?;
    let current_attendees = r.map(|r| r.props.attendees.as_slice()).unwrap_or_default();
    let want_attendees = match &o.attendees {
        Some(a) => Some(a),
        None if fresh || !current_attendees.is_empty() => Some(&ev.attendees),
        None => None,
    };
    if let Some(want) = want_attendees {
        put_attendees(cal, e, current_attendees, want);
    }
    Ok(wrote_end)
}

/// DTSTAMP where a VEVENT lacks it; no DURATION next to a DTEND we wrote.
fn tidy(text: &str, strip_duration: bool) -> String {
    let Ok(mut doc) = ContentDoc::parse(text) else {
        return text.to_owned();
    };
    let vevents: Vec<_> = doc
        .children(doc.root())
        .into_iter()
        .filter(|c| doc.kind(*c) == "VCALENDAR")
        .flat_map(|v| doc.children(v))
        .filter(|c| doc.kind(*c) == "VEVENT")
        .collect();
    for c in vevents {
        if strip_duration && doc.prop(c, "DTEND").is_some() {
            let durations: Vec<_> = doc
                .props(c, "DURATION")
                .into_iter()
                .map(|(id, _)| id)
                .collect();
            for id in durations {
                doc.remove(id);
            }
        }
        if doc.prop(c, "DTSTAMP").is_none() {
            doc.insert(
                c,
                RawProp::new("DTSTAMP", utc_stamp()),
                &["RECURRENCE-ID", "UID"],
            );
        }
    }
    doc.write()
}

/// `base`: the resource as the provider last had it (None: create a new VCALENDAR with this UID).
/// Returns the resource to PUT: `base` edited so only properties whose canonical value differs from
/// what `base` says are rewritten; everything else (X- props, VALARM, VTIMEZONE, params) untouched.
///
/// The UID of an existing resource is kept (a stored resource cannot change UID); `uid` is used
/// for new resources; `event.ical_uid` is written only into a `base` that lacks a UID. A new zoned time
/// gets a TZID without VTIMEZONE (servers resolve IANA names, RFC 7809). A new override VEVENT
/// copies the series' title, location, description, status and attendees; without its own
/// `end` it lasts as long as the series. `end: None` writes the RFC 5545 default end.
pub fn event_to_ical(
    base: Option<&str>,
    event: &CalendarEvent,
    uid: &str,
) -> Result<String, TranslateError> {
    let text = match base {
        Some(b) => b.to_owned(),
        None => new_calendar(uid),
    };
    let parsed = Parsed::parse(&text)?;
    let resource = format!("UID {uid}");
    let resource = resource.as_str();
    let mut cal = parsed.cal.clone();
    let master = parsed.master().ok_or_else(|| TranslateError::NoEvent {
        resource: resource.to_owned(),
    })?;
    let m = master.id;
    let p = &master.props;

    // A stored resource keeps its UID; one without UID gets the record's (if it has one).
    if p.uid.is_none()
        && let Some(ical_uid) = &event.ical_uid
    {
        cal.set_text(m, TextProp::Uid, Some(ical_uid));
    }
    put_text(&mut cal, m, TextProp::Summary, &p.summary, &event.title);
    put_text(
        &mut cal,
        m,
        TextProp::Location,
        &p.location,
        &event.location,
    );
    put_text(
        &mut cal,
        m,
        TextProp::Description,
        &p.description,
        &event.description,
    );
    if status_of(p.status.as_deref()) != event.status.as_deref().and_then(|s| status_of(Some(s))) {
        cal.set_text(m, TextProp::Status, upper(&event.status).as_deref());
    }

    let start = parse_time(
        event
            .start
            .as_deref()
            .ok_or_else(|| field_error(resource, "start", "missing (CalDAV needs DTSTART)"))?,
        resource,
        "start",
    )?;
    let end = match &event.end {
        Some(s) => parse_time(s, resource, "end")?,
        None => plus(&start, default_span(&start))
            .ok_or_else(|| field_error(resource, "end", "out of range"))?,
    };
    let mut wrote_end = put_times(&mut cal, Some(master), m, &start, &end, resource)?;

    // Recurrence.
    let empty = Recurrence::default();
    let rec = event.recurrence.as_ref().unwrap_or(&empty);
    let mut rules: Vec<(&String, &String)> = rec.rules.iter().collect();
    rules.sort_by_key(|(k, _)| (k.parse::<u64>().unwrap_or(u64::MAX), k.to_string()));
    let want_rules: Vec<&str> = rules
        .iter()
        .map(|(_, r)| {
            let r = r.trim();
            r.strip_prefix("RRULE:").unwrap_or(r)
        })
        .collect();
    // Compared as trimmed values: a rule the provider wrote with stray whitespace around it reads
    // back trimmed, and rewriting its line for that alone would be a write with no change.
    if p.rrules
        .iter()
        .map(|r| r.trim())
        .ne(want_rules.iter().copied())
    {
        // Rewritten in slot order so the slots read back the same.
        cal.set_rrules(m, &[]);
        cal.set_rrules(m, &want_rules);
    }
    put_dates(&mut cal, m, &p.exdates, &rec.exdates, true, resource)?;
    put_dates(&mut cal, m, &p.rdates, &rec.rdates, false, resource)?;

    // Organizer and attendees.
    let want_organizer = Organizer {
        email: event
            .organizer
            .email
            .as_ref()
            .map(|e| e.trim().to_lowercase())
            .filter(|e| !e.is_empty()),
        name: event.organizer.name.clone(),
        extra: Default::default(),
    };
    let now_organizer = organizer_of(p.organizer.as_ref());
    if (now_organizer.email.as_ref(), now_organizer.name.as_ref())
        != (want_organizer.email.as_ref(), want_organizer.name.as_ref())
    {
        let person = want_organizer.email.as_ref().map(|email| Person {
            email: email.clone(),
            name: param_text(&want_organizer.name),
        });
        cal.set_organizer(m, person.as_ref());
    }
    put_attendees(&mut cal, m, &p.attendees, &event.attendees);

    // Overrides.
    let series = Series {
        event,
        span: span_between(&start, &end),
        start,
    };
    let mut seen = std::collections::BTreeSet::new();
    for ov in parsed.overrides() {
        let Some(rid) = &ov.recurrence_id else {
            continue;
        };
        let key = rid.instance_key();
        match event.overrides.get(&key) {
            Some(o) if seen.insert(key.clone()) => {
                wrote_end |= put_override(&mut cal, ov.id, Some(ov), rid, o, &series, resource)?;
            }
            _ => cal.remove_event(ov.id),
        }
    }
    for (key, o) in &event.overrides {
        if seen.contains(key) {
            continue;
        }
        let field = format!("overrides.{key}");
        let rid = ResolvedTime::of_instance_key(key, &series.start)
            .ok_or_else(|| field_error(resource, &field, "not an instance key"))?;
        let value =
            value_of_time(&rid).ok_or_else(|| field_error(resource, &field, "out of range"))?;
        let id = cal
            .add_override(&value)
            .map_err(|e| field_error(resource, &field, e.to_string()))?;
        wrote_end |= put_override(&mut cal, id, None, &rid, o, &series, resource)?;
    }

    if !cal.is_modified() {
        return Ok(text);
    }
    Ok(tidy(&cal.to_ical(), wrote_end))
}

// ---------------------------------------------------------------------------------------------
// vCard
// ---------------------------------------------------------------------------------------------

fn nonempty(s: Option<&String>) -> Option<String> {
    s.filter(|s| !s.is_empty()).cloned()
}

/// TYPE values that say nothing a label would: the vCard 3 defaults.
fn generic_type(list: CardList, t: &str) -> bool {
    match list {
        CardList::Emails => matches!(t, "internet" | "x400"),
        CardList::Phones => t == "voice",
    }
}

fn point_of(list: CardList, v: &TypedValue) -> ContactPoint {
    let label: Vec<&str> = v
        .types
        .iter()
        .map(String::as_str)
        .filter(|t| !generic_type(list, t))
        .collect();
    ContactPoint {
        value: v.value.trim().to_owned(),
        label: (!label.is_empty()).then(|| label.join(",")),
        primary: v.pref,
        extra: Default::default(),
    }
}

fn points_of(list: CardList, values: &[TypedValue]) -> Vec<ContactPoint> {
    values
        .iter()
        .map(|v| point_of(list, v))
        .filter(|p| !p.value.is_empty())
        .collect()
}

fn card_resource(raw: &str) -> String {
    resource_name(ContentDoc::parse(raw).ok().as_ref(), "vCard without UID")
}

fn contact_of(
    props: &ContactProps,
    existing: Option<&Contact>,
    new_slot: &mut dyn FnMut() -> String,
) -> Contact {
    let none = BTreeMap::new();
    let emails = points_of(CardList::Emails, &props.emails);
    let phones = points_of(CardList::Phones, &props.phones);
    Contact {
        name: Name {
            full: nonempty(props.full_name.as_ref()),
            given: nonempty(props.name.as_ref().map(|n| &n.given)),
            family: nonempty(props.name.as_ref().map(|n| &n.family)),
            extra: Default::default(),
        },
        organization: nonempty(props.organization.as_ref()),
        job_title: nonempty(props.title.as_ref()),
        notes: nonempty(props.note.as_ref()),
        emails: assign_slots(
            existing.map_or(&none, |c| &c.emails),
            &emails,
            SlotKind::Email,
            new_slot,
        ),
        phones: assign_slots(
            existing.map_or(&none, |c| &c.phones),
            &phones,
            SlotKind::Phone,
            new_slot,
        ),
        ..Contact::default()
    }
}

/// `existing`: the record's current canonical contact (its slot ids are kept for equal values / same labels);
/// `new_slot`: makes ids for new emails/phones.
///
/// Lossy: N's additional names, prefixes and suffixes, ORG units, grouped `X-ABLabel` labels,
/// generic TYPEs (`internet`, `voice`) and PREF ranks other than 1 are not canonical fields
/// (they stay in the card when written back); empty values read as absent.
pub fn contact_from_vcard(
    raw: &str,
    existing: Option<&Contact>,
    new_slot: &mut dyn FnMut() -> String,
) -> Result<Contact, TranslateError> {
    let card = Card::parse(raw).map_err(|source| TranslateError::Vcard {
        resource: card_resource(raw),
        source,
    })?;
    Ok(contact_of(&card.contact(), existing, new_slot))
}

fn new_card(uid: &str) -> String {
    let mut out =
        String::from("BEGIN:VCARD\r\nVERSION:3.0\r\nPRODID:-//driftless//driftless//EN\r\n");
    out.push_str(&fold(&format!("UID:{}", escape_text(uid)), "\r\n"));
    out.push_str("FN:\r\nN:;;;;\r\nEND:VCARD\r\n");
    out
}

/// A list's canonical content, in a fixed order.
fn key_points(points: &[ContactPoint]) -> Vec<(String, Option<String>, bool)> {
    let mut out: Vec<_> = points
        .iter()
        .map(|p| (p.value.trim().to_owned(), p.label.clone(), p.primary))
        .collect();
    out.sort();
    out
}

fn put_list(
    card: &mut Card,
    list: CardList,
    current: &[TypedValue],
    want: &BTreeMap<String, ContactPoint>,
) {
    let want: Vec<ContactPoint> = want
        .values()
        .filter(|p| !p.value.trim().is_empty())
        .cloned()
        .collect();
    let now = points_of(list, current);
    if key_points(&now) == key_points(&want) {
        return;
    }
    // Each wanted entry starts from the line that already says it, else from an unused line
    // with the same label (an edited value keeps its TYPEs, group and parameters).
    let mut used = vec![false; current.len()];
    let mut wanted: Vec<Option<TypedValue>> = want
        .iter()
        .map(|w| {
            let (i, c) = current.iter().enumerate().find(|(i, c)| {
                !used[*i] && {
                    let p = point_of(list, c);
                    p.value == w.value.trim() && p.label == w.label && p.primary == w.primary
                }
            })?;
            used[i] = true;
            Some(c.clone())
        })
        .collect();
    for (slot, w) in wanted.iter_mut().zip(&want) {
        if slot.is_some() {
            continue;
        }
        let same_label = current
            .iter()
            .enumerate()
            .find(|(i, c)| !used[*i] && point_of(list, c).label == w.label);
        *slot = Some(match same_label {
            Some((i, c)) => {
                used[i] = true;
                TypedValue {
                    value: w.value.trim().to_owned(),
                    types: c.types.clone(),
                    pref: w.primary,
                }
            }
            None => TypedValue {
                value: w.value.trim().to_owned(),
                types: w
                    .label
                    .iter()
                    .flat_map(|l| l.split(','))
                    .map(|t| t.trim().to_lowercase())
                    .filter(|t| !t.is_empty())
                    .collect(),
                pref: w.primary,
            },
        });
    }
    let wanted: Vec<TypedValue> = wanted.into_iter().flatten().collect();
    card.set_list(list, &wanted);
}

/// `base`: the card as the provider last had it (None: create a new vCard 3.0 with this UID;
/// an existing card's UID, or its lack of one, is left alone).
/// Returns the card to PUT, edited only where the canonical value differs from what `base` says.
/// An absent full name keeps an empty FN (required by vCard); an absent given/family name
/// empties its N component (other N components stay).
pub fn contact_to_vcard(
    base: Option<&str>,
    contact: &Contact,
    uid: &str,
) -> Result<String, TranslateError> {
    let text = match base {
        Some(b) => b.to_owned(),
        None => new_card(uid),
    };
    let mut card = Card::parse(&text).map_err(|source| TranslateError::Vcard {
        resource: format!("UID {uid}"),
        source,
    })?;
    let cur = card.contact();
    let name = &contact.name;
    if nonempty(cur.full_name.as_ref()) != nonempty(name.full.as_ref()) {
        card.set_text(CardText::FullName, Some(name.full.as_deref().unwrap_or("")));
    }
    let given = nonempty(cur.name.as_ref().map(|n| &n.given));
    let family = nonempty(cur.name.as_ref().map(|n| &n.family));
    if given != nonempty(name.given.as_ref()) || family != nonempty(name.family.as_ref()) {
        let mut n = cur.name.clone().unwrap_or_default();
        n.given = name.given.clone().unwrap_or_default();
        n.family = name.family.clone().unwrap_or_default();
        card.set_name(Some(&n));
    }
    if nonempty(cur.organization.as_ref()) != nonempty(contact.organization.as_ref()) {
        card.set_organization(nonempty(contact.organization.as_ref()).as_deref());
    }
    if nonempty(cur.title.as_ref()) != nonempty(contact.job_title.as_ref()) {
        card.set_text(
            CardText::Title,
            nonempty(contact.job_title.as_ref()).as_deref(),
        );
    }
    if nonempty(cur.note.as_ref()) != nonempty(contact.notes.as_ref()) {
        card.set_text(CardText::Note, nonempty(contact.notes.as_ref()).as_deref());
    }
    put_list(&mut card, CardList::Emails, &cur.emails, &contact.emails);
    put_list(&mut card, CardList::Phones, &cur.phones, &contact.phones);
    if !card.is_modified() {
        return Ok(text);
    }
    Ok(card.to_vcard())
}
