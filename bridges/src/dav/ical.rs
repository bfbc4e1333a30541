//! Reading and editing the VEVENT properties a `calendar_event` needs, in a VCALENDAR
//! resource, without disturbing anything else.
//!
//! The resource is validated with `calcard`, and date-valued properties are interpreted by
//! `calcard`'s parser. Edits go through [`ContentDoc`], so every line driftless does not
//! touch (X- properties, VALARM, VTIMEZONE, unknown parameters, folding) is written back
//! byte-for-byte and in order, and a setter given the value already present changes nothing.

use calcard::common::PartialDateTime;
use calcard::icalendar::ICalendarValue;
use calcard::{Entry, Parser};

use super::content::{
    ComponentId, ContentDoc, ContentError, LineId, RawProp, escape_text, unescape_text,
};

/// Why a resource could not be read or a value not interpreted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IcalError {
    #[error("not an iCalendar resource: {0}")]
    NotICalendar(String),
    #[error("iCalendar structure: {0}")]
    Structure(#[from] ContentError),
    #[error("resource has no VCALENDAR")]
    NoVCalendar,
    #[error("{property} has an invalid value {value:?}")]
    BadValue { property: String, value: String },
}

/// The zone of a date-time value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Zone {
    /// No zone: the same wall time everywhere.
    Floating,
    /// `Z`.
    Utc,
    /// `TZID=<id>` (usually an IANA name, with a VTIMEZONE in the resource).
    Tzid(String),
}

/// A DATE or DATE-TIME value of DTSTART, DTEND, RECURRENCE-ID, RDATE or EXDATE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DateValue {
    Date {
        year: u16,
        month: u8,
        day: u8,
    },
    DateTime {
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        zone: Zone,
    },
}

impl DateValue {
    /// The value as written in iCalendar (`20261119`, `20261119T100000`, `…Z`).
    pub fn to_ical(&self) -> String {
        match self {
            Self::Date { year, month, day } => format!("{year:04}{month:02}{day:02}"),
            Self::DateTime {
                year,
                month,
                day,
                hour,
                minute,
                second,
                zone,
            } => {
                let z = if *zone == Zone::Utc { "Z" } else { "" };
                format!("{year:04}{month:02}{day:02}T{hour:02}{minute:02}{second:02}{z}")
            }
        }
    }

    fn tzid(&self) -> Option<&str> {
        match self {
            Self::DateTime {
                zone: Zone::Tzid(t),
                ..
            } => Some(t),
            _ => None,
        }
    }

    fn is_date(&self) -> bool {
        matches!(self, Self::Date { .. })
    }

    fn from_partial(p: &PartialDateTime, tzid: Option<&str>) -> Option<Self> {
        let (year, month, day) = (p.year?, p.month?, p.day?);
        let Some(hour) = p.hour else {
            return Some(Self::Date { year, month, day });
        };
        let zone = if p.has_zone() {
            // Only `Z` is valid in iCalendar; a numeric offset is not a DATE-TIME form.
            if p.tz_hour != Some(0) || p.tz_minute.unwrap_or(0) != 0 {
                return None;
            }
            Zone::Utc
        } else if let Some(t) = tzid {
            Zone::Tzid(t.to_string())
        } else {
            Zone::Floating
        };
        Some(Self::DateTime {
            year,
            month,
            day,
            hour,
            minute: p.minute.unwrap_or(0),
            second: p.second.unwrap_or(0),
            zone,
        })
    }
}

/// ORGANIZER: an email (from `mailto:`) and a display name (CN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub email: String,
    pub name: Option<String>,
}

/// ATTENDEE with the parameters driftless maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendee {
    pub email: String,
    pub name: Option<String>,
    /// PARTSTAT as written, upper-cased (`ACCEPTED`, `NEEDS-ACTION`, …); `None` when absent.
    pub partstat: Option<String>,
    /// `ROLE=OPT-PARTICIPANT`.
    pub optional: bool,
}

/// The properties of one VEVENT that a `calendar_event` needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventProps {
    pub uid: Option<String>,
    pub summary: Option<String>,
    pub location: Option<String>,
    pub description: Option<String>,
    /// STATUS upper-cased (`CONFIRMED`, `TENTATIVE`, `CANCELLED`).
    pub status: Option<String>,
    pub start: Option<DateValue>,
    pub end: Option<DateValue>,
    /// Set on overrides only.
    pub recurrence_id: Option<DateValue>,
    /// RRULE values as written (`FREQ=MONTHLY;BYDAY=3TH`).
    pub rrules: Vec<String>,
    pub rdates: Vec<DateValue>,
    pub exdates: Vec<DateValue>,
    pub organizer: Option<Person>,
    pub attendees: Vec<Attendee>,
}

/// Text-valued VEVENT properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextProp {
    Uid,
    Summary,
    Location,
    Description,
    Status,
}

impl TextProp {
    fn name(self) -> &'static str {
        match self {
            Self::Uid => "UID",
            Self::Summary => "SUMMARY",
            Self::Location => "LOCATION",
            Self::Description => "DESCRIPTION",
            Self::Status => "STATUS",
        }
    }
}

/// DTSTART or DTEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateProp {
    Start,
    End,
}

impl DateProp {
    fn name(self) -> &'static str {
        match self {
            Self::Start => "DTSTART",
            Self::End => "DTEND",
        }
    }
}

/// Handle to one VEVENT of a [`Calendar`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventId(ComponentId);

/// A parsed VCALENDAR resource that can be edited in place.
#[derive(Debug, Clone)]
pub struct Calendar {
    doc: ContentDoc,
    vcalendar: ComponentId,
}

/// `mailto:` stripped (case-insensitively) from a cal-address.
fn email_of(value: &str) -> String {
    let v = value.trim();
    match v.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("mailto:") => v[7..].to_string(),
        _ => v.to_string(),
    }
}

/// Interprets one date-valued property line with calcard.
fn parse_dates(prop: &RawProp) -> Result<Vec<DateValue>, IcalError> {
    let bad = || IcalError::BadValue {
        property: prop.name.clone(),
        value: prop.value.clone(),
    };
    let text = format!("BEGIN:VEVENT\r\n{}\r\nEND:VEVENT\r\n", prop.to_line());
    let Entry::ICalendar(cal) = Parser::new(&text).entry() else {
        return Err(bad());
    };
    let entry = cal
        .components
        .first()
        .and_then(|c| c.entries.first())
        .ok_or_else(bad)?;
    let tzid = prop.param("TZID");
    entry
        .values
        .iter()
        .map(|v| match v {
            ICalendarValue::PartialDateTime(p) => {
                DateValue::from_partial(p, tzid.as_deref()).ok_or_else(bad)
            }
            _ => Err(bad()),
        })
        .collect()
}

impl Calendar {
    /// Parses a resource; `calcard` must accept it as iCalendar.
    pub fn parse(text: &str) -> Result<Self, IcalError> {
        match Parser::new(text).entry() {
            Entry::ICalendar(_) => {}
            other => return Err(IcalError::NotICalendar(format!("{other:?}"))),
        }
        let doc = ContentDoc::parse(text)?;
        let vcalendar = doc
            .children(doc.root())
            .into_iter()
            .find(|c| doc.kind(*c) == "VCALENDAR")
            .ok_or(IcalError::NoVCalendar)?;
        Ok(Self { doc, vcalendar })
    }

    /// Every VEVENT, in order.
    pub fn events(&self) -> Vec<EventId> {
        self.doc
            .children(self.vcalendar)
            .into_iter()
            .filter(|c| self.doc.kind(*c) == "VEVENT")
            .map(EventId)
            .collect()
    }

    /// The VEVENT without RECURRENCE-ID.
    pub fn master(&self) -> Option<EventId> {
        self.events()
            .into_iter()
            .find(|e| self.doc.prop(e.0, "RECURRENCE-ID").is_none())
    }

    /// The VEVENTs with RECURRENCE-ID (overridden instances), in order.
    pub fn overrides(&self) -> Vec<EventId> {
        self.events()
            .into_iter()
            .filter(|e| self.doc.prop(e.0, "RECURRENCE-ID").is_some())
            .collect()
    }

    /// Whether an edit changed anything (only then is there anything to write).
    pub fn is_modified(&self) -> bool {
        self.doc.is_modified()
    }

    /// The resource: byte-for-byte the input when unedited.
    pub fn to_ical(&self) -> String {
        self.doc.write()
    }

    fn text(&self, e: EventId, name: &str) -> Option<String> {
        self.doc.prop(e.0, name).map(|p| unescape_text(&p.value))
    }

    fn date(&self, e: EventId, name: &str) -> Result<Option<DateValue>, IcalError> {
        match self.doc.prop(e.0, name) {
            Some(p) => Ok(parse_dates(p)?.into_iter().next()),
            None => Ok(None),
        }
    }

    fn dates(&self, e: EventId, name: &str) -> Result<Vec<DateValue>, IcalError> {
        let mut out = Vec::new();
        for (_, p) in self.doc.props(e.0, name) {
            out.extend(parse_dates(p)?);
        }
        Ok(out)
    }

    /// Reads the properties driftless maps.
    pub fn event(&self, e: EventId) -> Result<EventProps, IcalError> {
        Ok(EventProps {
            uid: self.text(e, "UID"),
            summary: self.text(e, "SUMMARY"),
            location: self.text(e, "LOCATION"),
            description: self.text(e, "DESCRIPTION"),
            status: self
                .text(e, "STATUS")
                .map(|s| s.trim().to_ascii_uppercase()),
            start: self.date(e, "DTSTART")?,
            end: self.date(e, "DTEND")?,
            recurrence_id: self.date(e, "RECURRENCE-ID")?,
            rrules: self
                .doc
                .props(e.0, "RRULE")
                .into_iter()
                .map(|(_, p)| p.value.clone())
                .collect(),
            rdates: self.dates(e, "RDATE")?,
            exdates: self.dates(e, "EXDATE")?,
            organizer: self.doc.prop(e.0, "ORGANIZER").map(|p| Person {
                email: email_of(&p.value),
                name: p.param("CN"),
            }),
            attendees: self
                .doc
                .props(e.0, "ATTENDEE")
                .into_iter()
                .map(|(_, p)| Attendee {
                    email: email_of(&p.value),
                    name: p.param("CN"),
                    partstat: p.param("PARTSTAT").map(|s| s.to_ascii_uppercase()),
                    optional: p
                        .param("ROLE")
                        .is_some_and(|r| r.eq_ignore_ascii_case("OPT-PARTICIPANT")),
                })
                .collect(),
        })
    }

    /// Sets (or with `None` removes) a text property; keeps its parameters. A no-op when the
    /// value is already `value`.
    pub fn set_text(&mut self, e: EventId, prop: TextProp, value: Option<&str>) {
        let name = prop.name();
        let existing: Vec<(LineId, RawProp)> = self
            .doc
            .props(e.0, name)
            .into_iter()
            .map(|(id, p)| (id, p.clone()))
            .collect();
        match (value, existing.first()) {
            (None, _) => {
                for (id, _) in existing {
                    self.doc.remove(id);
                }
            }
            (Some(v), Some((id, p))) => {
                if unescape_text(&p.value) != v {
                    let mut p = p.clone();
                    p.value = escape_text(v);
                    self.doc.replace(*id, p);
                }
            }
            (Some(v), None) => {
                self.doc
                    .insert(e.0, RawProp::new(name, escape_text(v)), &[]);
            }
        }
    }

    /// Sets (or removes) DTSTART / DTEND, writing `VALUE=DATE` or `TZID` as the value needs
    /// and keeping every other parameter.
    pub fn set_date(
        &mut self,
        e: EventId,
        prop: DateProp,
        value: Option<&DateValue>,
    ) -> Result<(), IcalError> {
        let name = prop.name();
        let existing: Vec<(LineId, RawProp)> = self
            .doc
            .props(e.0, name)
            .into_iter()
            .map(|(id, p)| (id, p.clone()))
            .collect();
        let Some(value) = value else {
            for (id, _) in existing {
                self.doc.remove(id);
            }
            return Ok(());
        };
        match existing.first() {
            Some((id, p)) => {
                // Unreadable current values are simply replaced.
                if parse_dates(p)
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .as_ref()
                    == Some(value)
                {
                    return Ok(());
                }
                let mut p = p.clone();
                set_date_params(&mut p, value);
                p.value = value.to_ical();
                self.doc.replace(*id, p);
            }
            None => {
                let mut p = RawProp::new(name, value.to_ical());
                set_date_params(&mut p, value);
                let after: &[&str] = match prop {
                    DateProp::Start => &[],
                    DateProp::End => &["DTSTART"],
                };
                self.doc.insert(e.0, p, after);
            }
        }
        Ok(())
    }

    /// Makes the RRULE lines exactly `rules` (values like `FREQ=WEEKLY`, an `RRULE:` prefix
    /// is accepted): lines already holding one of them stay untouched.
    pub fn set_rrules(&mut self, e: EventId, rules: &[&str]) {
        let wanted: Vec<&str> = rules
            .iter()
            .map(|r| r.strip_prefix("RRULE:").unwrap_or(r))
            .collect();
        let mut missing = wanted.clone();
        let existing: Vec<(LineId, String)> = self
            .doc
            .props(e.0, "RRULE")
            .into_iter()
            .map(|(id, p)| (id, p.value.clone()))
            .collect();
        for (id, value) in existing {
            if let Some(i) = missing.iter().position(|w| *w == value) {
                missing.remove(i);
            } else {
                self.doc.remove(id);
            }
        }
        for rule in missing {
            self.doc.insert(
                e.0,
                RawProp::new("RRULE", rule.to_string()),
                &["RRULE", "DTEND", "DTSTART"],
            );
        }
    }

    /// Makes the EXDATEs exactly `dates`; lines whose every value is wanted stay untouched.
    pub fn set_exdates(&mut self, e: EventId, dates: &[DateValue]) -> Result<(), IcalError> {
        self.set_date_list(e, "EXDATE", dates)
    }

    /// Makes the RDATEs exactly `dates`; lines whose every value is wanted stay untouched.
    pub fn set_rdates(&mut self, e: EventId, dates: &[DateValue]) -> Result<(), IcalError> {
        self.set_date_list(e, "RDATE", dates)
    }

    fn set_date_list(
        &mut self,
        e: EventId,
        name: &str,
        dates: &[DateValue],
    ) -> Result<(), IcalError> {
        let mut missing: Vec<&DateValue> = dates.iter().collect();
        let existing: Vec<(LineId, RawProp)> = self
            .doc
            .props(e.0, name)
            .into_iter()
            .map(|(id, p)| (id, p.clone()))
            .collect();
        for (id, p) in existing {
            let values = parse_dates(&p).unwrap_or_default();
            let keep = !values.is_empty() && values.iter().all(|v| missing.contains(&v));
            if keep {
                missing.retain(|m| !values.contains(m));
            } else {
                self.doc.remove(id);
            }
        }
        for d in missing {
            let mut p = RawProp::new(name, d.to_ical());
            set_date_params(&mut p, d);
            self.doc
                .insert(e.0, p, &[name, "RRULE", "DTEND", "DTSTART"]);
        }
        Ok(())
    }

    /// Sets (or removes) ORGANIZER; keeps its other parameters.
    pub fn set_organizer(&mut self, e: EventId, organizer: Option<&Person>) {
        let existing = self
            .doc
            .props(e.0, "ORGANIZER")
            .into_iter()
            .map(|(id, p)| (id, p.clone()))
            .next();
        match (organizer, existing) {
            (None, Some((id, _))) => self.doc.remove(id),
            (None, None) => {}
            (Some(o), Some((id, p))) => {
                let mut new = p.clone();
                if !email_of(&p.value).eq_ignore_ascii_case(&o.email) {
                    new.value = format!("mailto:{}", o.email);
                }
                if p.param("CN") != o.name {
                    new.set_param("CN", o.name.as_deref());
                }
                self.doc.replace(id, new);
            }
            (Some(o), None) => {
                let mut p = RawProp::new("ORGANIZER", format!("mailto:{}", o.email));
                p.set_param("CN", o.name.as_deref());
                self.doc.insert(e.0, p, &[]);
            }
        }
    }

    /// Makes the ATTENDEEs exactly `attendees`, matched by case-insensitive email: matching
    /// lines keep every parameter but CN, PARTSTAT and ROLE, and stay untouched when those
    /// agree; others are removed; new ones are added after the last attendee.
    pub fn set_attendees(&mut self, e: EventId, attendees: &[Attendee]) {
        let existing: Vec<(LineId, RawProp)> = self
            .doc
            .props(e.0, "ATTENDEE")
            .into_iter()
            .map(|(id, p)| (id, p.clone()))
            .collect();
        let mut missing: Vec<&Attendee> = attendees.iter().collect();
        for (id, p) in existing {
            let email = email_of(&p.value);
            let Some(i) = missing
                .iter()
                .position(|a| a.email.eq_ignore_ascii_case(&email))
            else {
                self.doc.remove(id);
                continue;
            };
            let a = missing.remove(i);
            let mut new = p.clone();
            if p.param("CN") != a.name {
                new.set_param("CN", a.name.as_deref());
            }
            let partstat = p.param("PARTSTAT").map(|s| s.to_ascii_uppercase());
            if partstat != a.partstat {
                new.set_param("PARTSTAT", a.partstat.as_deref());
            }
            let role = p.param("ROLE");
            let optional = role
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case("OPT-PARTICIPANT"));
            if optional != a.optional {
                // Only the optional/required distinction is ours; CHAIR etc. count as
                // required and are replaced only when the attendee becomes optional.
                new.set_param(
                    "ROLE",
                    Some(if a.optional {
                        "OPT-PARTICIPANT"
                    } else {
                        "REQ-PARTICIPANT"
                    }),
                );
            }
            self.doc.replace(id, new);
        }
        for a in missing {
            let mut p = RawProp::new("ATTENDEE", format!("mailto:{}", a.email));
            p.set_param("CN", a.name.as_deref());
            if a.optional {
                p.set_param("ROLE", Some("OPT-PARTICIPANT"));
            }
            p.set_param("PARTSTAT", a.partstat.as_deref());
            self.doc.insert(e.0, p, &["ATTENDEE", "ORGANIZER"]);
        }
    }

    /// Adds an override VEVENT for the instance at `recurrence_id` (with the master's UID,
    /// after the last VEVENT); set its fields with the setters.
    pub fn add_override(&mut self, recurrence_id: &DateValue) -> Result<EventId, IcalError> {
        let master = self.master().ok_or(IcalError::BadValue {
            property: "VEVENT".into(),
            value: "no master event to override".into(),
        })?;
        let uid = self.doc.prop(master.0, "UID").cloned();
        let mut rid = RawProp::new("RECURRENCE-ID", recurrence_id.to_ical());
        set_date_params(&mut rid, recurrence_id);
        let mut props = Vec::new();
        if let Some(uid) = uid {
            props.push(RawProp::new("UID", uid.value));
        }
        props.push(rid);
        let last = self.events().last().map(|e| e.0);
        let id = self
            .doc
            .insert_component(self.vcalendar, "VEVENT", last, props);
        Ok(EventId(id))
    }

    /// Removes a VEVENT (an override that went back to the series, say).
    pub fn remove_event(&mut self, e: EventId) {
        self.doc.remove_component(e.0);
    }

    /// The TZIDs that have a VTIMEZONE in the resource.
    pub fn timezones(&self) -> Vec<String> {
        self.doc
            .children(self.vcalendar)
            .into_iter()
            .filter(|c| self.doc.kind(*c) == "VTIMEZONE")
            .filter_map(|c| self.doc.prop(c, "TZID").map(|p| p.value.clone()))
            .collect()
    }
}

/// VALUE=DATE for dates, TZID for zoned date-times; other parameters stay.
fn set_date_params(p: &mut RawProp, value: &DateValue) {
    if value.is_date() {
        p.set_param("TZID", None);
        p.set_param("VALUE", Some("DATE"));
    } else {
        p.set_param("VALUE", None);
        p.set_param("TZID", value.tzid());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unusual but valid: folded lines, X- properties and parameters, quoted parameter values,
    /// lower-case parameter names, VTIMEZONE, VALARM, an override, LF-free CRLF throughout.
    const RESOURCE: &str = "BEGIN:VCALENDAR\r\n\
VERSION:2.0\r\n\
PRODID:-//Example Corp.//CalDAV Client//EN\r\n\
X-WR-CALNAME:Team\r\n\
BEGIN:VTIMEZONE\r\n\
TZID:Europe/Berlin\r\n\
BEGIN:STANDARD\r\n\
DTSTART:19701025T030000\r\n\
TZOFFSETFROM:+0200\r\n\
TZOFFSETTO:+0100\r\n\
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n\
END:STANDARD\r\n\
END:VTIMEZONE\r\n\
BEGIN:VEVENT\r\n\
UID:series-1@example.com\r\n\
DTSTAMP:20260101T000000Z\r\n\
DTSTART;TZID=Europe/Berlin:20261119T100000\r\n\
DTEND;TZID=Europe/Berlin;X-FOO=\"a;b\":20261119T110000\r\n\
RRULE:FREQ=WEEKLY;BYDAY=TH\r\n\
EXDATE;TZID=Europe/Berlin:20261126T100000,20261203T100000\r\n\
SUMMARY;LANGUAGE=de:Weekly sync\\, with a comma and a long line that must be fol\r\n \
ded by the client\r\n\
LOCATION;ALTREP=\"http://example.com/room\":Room 1\r\n\
DESCRIPTION:Line one\\nLine two\r\n\
STATUS:CONFIRMED\r\n\
ORGANIZER;CN=Ada;SENT-BY=\"mailto:sec@example.com\":mailto:ada@example.com\r\n\
ATTENDEE;CN=Bob;PARTSTAT=ACCEPTED;RSVP=TRUE;X-NUM-GUESTS=0:mailto:bob@example.com\r\n\
ATTENDEE;cn=\"Eve, E.\";role=OPT-PARTICIPANT;partstat=needs-action:MAILTO:Eve@Example.com\r\n\
X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC\r\n\
BEGIN:VALARM\r\n\
ACTION:DISPLAY\r\n\
TRIGGER;RELATED=START:-PT15M\r\n\
DESCRIPTION:Reminder\r\n\
END:VALARM\r\n\
END:VEVENT\r\n\
BEGIN:VEVENT\r\n\
UID:series-1@example.com\r\n\
RECURRENCE-ID;TZID=Europe/Berlin:20261210T100000\r\n\
DTSTAMP:20260101T000000Z\r\n\
DTSTART;TZID=Europe/Berlin:20261210T120000\r\n\
DTEND;TZID=Europe/Berlin:20261210T130000\r\n\
SUMMARY:Weekly sync (moved)\r\n\
END:VEVENT\r\n\
END:VCALENDAR\r\n";

    fn berlin(day: u8, hour: u8) -> DateValue {
        DateValue::DateTime {
            year: 2026,
            month: if day >= 100 { 12 } else { 11 },
            day: day % 100,
            hour,
            minute: 0,
            second: 0,
            zone: Zone::Tzid("Europe/Berlin".into()),
        }
    }

    #[test]
    fn reads_master_and_override() {
        let cal = Calendar::parse(RESOURCE).unwrap();
        assert_eq!(cal.events().len(), 2);
        let master = cal.master().unwrap();
        let ev = cal.event(master).unwrap();
        assert_eq!(ev.uid.as_deref(), Some("series-1@example.com"));
        assert_eq!(
            ev.summary.as_deref(),
            Some("Weekly sync, with a comma and a long line that must be folded by the client")
        );
        assert_eq!(ev.location.as_deref(), Some("Room 1"));
        assert_eq!(ev.description.as_deref(), Some("Line one\nLine two"));
        assert_eq!(ev.status.as_deref(), Some("CONFIRMED"));
        assert_eq!(ev.start, Some(berlin(19, 10)));
        assert_eq!(ev.end, Some(berlin(19, 11)));
        assert_eq!(ev.rrules, vec!["FREQ=WEEKLY;BYDAY=TH".to_string()]);
        assert_eq!(ev.exdates, vec![berlin(26, 10), berlin(103, 10)]);
        assert!(ev.rdates.is_empty());
        assert_eq!(ev.recurrence_id, None);
        assert_eq!(
            ev.organizer,
            Some(Person {
                email: "ada@example.com".into(),
                name: Some("Ada".into())
            })
        );
        assert_eq!(
            ev.attendees,
            vec![
                Attendee {
                    email: "bob@example.com".into(),
                    name: Some("Bob".into()),
                    partstat: Some("ACCEPTED".into()),
                    optional: false
                },
                Attendee {
                    email: "Eve@Example.com".into(),
                    name: Some("Eve, E.".into()),
                    partstat: Some("NEEDS-ACTION".into()),
                    optional: true
                }
            ]
        );
        let overrides = cal.overrides();
        assert_eq!(overrides.len(), 1);
        let ov = cal.event(overrides[0]).unwrap();
        assert_eq!(ov.recurrence_id, Some(berlin(110, 10)));
        assert_eq!(ov.start, Some(berlin(110, 12)));
        assert_eq!(cal.timezones(), vec!["Europe/Berlin".to_string()]);
    }

    #[test]
    fn unchanged_resource_round_trips_exactly() {
        let mut cal = Calendar::parse(RESOURCE).unwrap();
        assert_eq!(cal.to_ical(), RESOURCE);
        // Setting every property to what it already is changes nothing either.
        for e in cal.events() {
            let props = cal.event(e).unwrap();
            cal.set_text(e, TextProp::Uid, props.uid.as_deref());
            cal.set_text(e, TextProp::Summary, props.summary.as_deref());
            cal.set_text(e, TextProp::Location, props.location.as_deref());
            cal.set_text(e, TextProp::Description, props.description.as_deref());
            cal.set_text(e, TextProp::Status, props.status.as_deref());
            cal.set_date(e, DateProp::Start, props.start.as_ref())
                .unwrap();
            cal.set_date(e, DateProp::End, props.end.as_ref()).unwrap();
            let rules: Vec<&str> = props.rrules.iter().map(String::as_str).collect();
            cal.set_rrules(e, &rules);
            cal.set_exdates(e, &props.exdates).unwrap();
            cal.set_rdates(e, &props.rdates).unwrap();
            cal.set_organizer(e, props.organizer.as_ref());
            cal.set_attendees(e, &props.attendees);
        }
        assert!(!cal.is_modified());
        assert_eq!(cal.to_ical(), RESOURCE);
    }

    #[test]
    fn edits_change_only_their_lines() {
        let mut cal = Calendar::parse(RESOURCE).unwrap();
        let m = cal.master().unwrap();
        cal.set_text(m, TextProp::Location, Some("Room 2; east"));
        cal.set_date(m, DateProp::End, Some(&berlin(19, 12)))
            .unwrap();
        let mut attendees = cal.event(m).unwrap().attendees;
        attendees[0].partstat = Some("DECLINED".into());
        cal.set_attendees(m, &attendees);
        assert!(cal.is_modified());
        let expected = RESOURCE
            .replace(
                "LOCATION;ALTREP=\"http://example.com/room\":Room 1\r\n",
                "LOCATION;ALTREP=\"http://example.com/room\":Room 2\\; east\r\n",
            )
            .replace(
                "DTEND;TZID=Europe/Berlin;X-FOO=\"a;b\":20261119T110000\r\n",
                "DTEND;TZID=Europe/Berlin;X-FOO=\"a;b\":20261119T120000\r\n",
            )
            // A line we write is folded at 75 octets; the untouched long Eve line is not.
            .replace(
                "CN=Bob;PARTSTAT=ACCEPTED;RSVP=TRUE;X-NUM-GUESTS=0:mailto:bob@example.com\r\n",
                "CN=Bob;PARTSTAT=DECLINED;RSVP=TRUE;X-NUM-GUESTS=0:mailto:bob@examp\r\n le.com\r\n",
            );
        assert_eq!(cal.to_ical(), expected);
        // And it reads back.
        let back = Calendar::parse(&cal.to_ical()).unwrap();
        let ev = back.event(back.master().unwrap()).unwrap();
        assert_eq!(ev.location.as_deref(), Some("Room 2; east"));
        assert_eq!(ev.end, Some(berlin(19, 12)));
    }

    #[test]
    fn all_day_utc_floating_and_lists() {
        let mut cal = Calendar::parse(RESOURCE).unwrap();
        let m = cal.master().unwrap();
        let day = DateValue::Date {
            year: 2026,
            month: 11,
            day: 19,
        };
        cal.set_date(m, DateProp::Start, Some(&day)).unwrap();
        let utc = DateValue::DateTime {
            year: 2026,
            month: 11,
            day: 19,
            hour: 9,
            minute: 30,
            second: 0,
            zone: Zone::Utc,
        };
        cal.set_date(m, DateProp::End, Some(&utc)).unwrap();
        cal.set_exdates(m, &[berlin(26, 10)]).unwrap();
        cal.set_rrules(m, &["RRULE:FREQ=MONTHLY;BYDAY=3TH"]);
        cal.set_text(m, TextProp::Description, None);
        cal.set_attendees(
            m,
            &[Attendee {
                email: "new@example.com".into(),
                name: Some("New, Person".into()),
                partstat: None,
                optional: true,
            }],
        );
        cal.set_organizer(m, None);
        let out = cal.to_ical();
        assert!(out.contains("DTSTART;VALUE=DATE:20261119\r\n"), "{out}");
        assert!(
            out.contains("DTEND;X-FOO=\"a;b\":20261119T093000Z\r\n"),
            "{out}"
        );
        assert!(out.contains("RRULE:FREQ=MONTHLY;BYDAY=3TH\r\n"));
        assert!(!out.contains("FREQ=WEEKLY;BYDAY=TH"));
        assert!(out.contains("EXDATE;TZID=Europe/Berlin:20261126T100000\r\n"));
        assert!(!out.contains("DESCRIPTION:Line one"));
        assert!(!out.contains("ORGANIZER"));
        assert!(!out.contains("bob@example.com"));
        assert!(out.contains(
            "ATTENDEE;CN=\"New, Person\";ROLE=OPT-PARTICIPANT:mailto:new@example.com\r\n"
        ));
        // Untouched parts survive verbatim.
        assert!(out.contains("BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER;RELATED=START:-PT15M\r\n"));
        assert!(out.contains("X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC\r\n"));
        let back = Calendar::parse(&out).unwrap();
        let ev = back.event(back.master().unwrap()).unwrap();
        assert_eq!(ev.start, Some(day));
        assert_eq!(ev.end, Some(utc));
        assert_eq!(ev.exdates, vec![berlin(26, 10)]);
        assert_eq!(ev.attendees.len(), 1);
        assert_eq!(ev.attendees[0].name.as_deref(), Some("New, Person"));
    }

    #[test]
    fn overrides_can_be_added_and_removed() {
        let mut cal = Calendar::parse(RESOURCE).unwrap();
        let ov = cal.add_override(&berlin(117, 10)).unwrap();
        cal.set_text(ov, TextProp::Summary, Some("Special"));
        cal.set_date(ov, DateProp::Start, Some(&berlin(117, 11)))
            .unwrap();
        let out = cal.to_ical();
        let back = Calendar::parse(&out).unwrap();
        assert_eq!(back.overrides().len(), 2);
        let ev = back.event(back.overrides()[1]).unwrap();
        assert_eq!(ev.uid.as_deref(), Some("series-1@example.com"));
        assert_eq!(ev.summary.as_deref(), Some("Special"));
        assert_eq!(ev.recurrence_id, Some(berlin(117, 10)));
        let mut back = back;
        let first = back.overrides()[0];
        back.remove_event(first);
        assert_eq!(back.overrides().len(), 1);
        assert!(!back.to_ical().contains("Weekly sync (moved)"));
    }

    #[test]
    fn rejects_what_is_not_icalendar() {
        assert!(Calendar::parse("BEGIN:VCARD\r\nFN:x\r\nEND:VCARD\r\n").is_err());
        assert!(Calendar::parse("hello").is_err());
        assert!(Calendar::parse("").is_err());
        let bad_date = RESOURCE.replace("20261119T100000\r\n", "2026-bogus\r\n");
        if let Ok(cal) = Calendar::parse(&bad_date) {
            assert!(matches!(
                cal.event(cal.master().unwrap()),
                Err(IcalError::BadValue { .. })
            ));
        }
    }

    proptest::proptest! {
        /// Provider input never panics the parser or the readers, including truncations
        /// and byte flips of a realistic resource.
        #[test]
        fn hostile_input_never_panics(cut in 0usize..4000, flip in 0usize..4000, byte in 0u8..128, junk in "[ -~\r\n\t]{0,300}") {
            let mut bytes = RESOURCE.as_bytes().to_vec();
            let len = bytes.len();
            bytes[flip % len] = byte;
            bytes.truncate(cut % (len + 1));
            let text = String::from_utf8_lossy(&bytes).into_owned();
            for t in [text, format!("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\n{junk}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"), junk] {
                if let Ok(cal) = Calendar::parse(&t) {
                    for e in cal.events() {
                        let _ = cal.event(e);
                    }
                    proptest::prop_assert_eq!(cal.to_ical(), t);
                }
            }
        }
    }
}
