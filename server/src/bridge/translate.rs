//! Translation between provider resources and canonical records, as the bridge runner needs it.
//!
//! STAND-IN: the full translation (`bridges::dav::translate`, branch `wip-translate`) maps every
//! field of the contracts. Until it is merged this module maps the core fields itself, with the
//! same signatures, over the byte-preserving editors of `bridges::dav::{ical, vcard}`:
//! events: `ical_uid`, `title`, `location`, `description`, `status`, `start`, `end`;
//! contacts: `name.full`, `job_title`, `notes`. Swap the four functions for the real ones and
//! nothing else changes.
//!
//! Invariant the runner relies on: `to_raw(Some(raw), &from_raw(raw))` is `raw` byte for byte
//! (the editors' setters are no-ops for equal values), so a quiet record writes nothing.

use driftless_bridges::dav::ical::{Calendar, DateProp, DateValue, TextProp, Zone};
use driftless_bridges::dav::vcard::{Card, CardText};
use driftless_crdt_model::{CalendarEvent, Contact};

/// Reads the canonical event of an iCalendar resource (its master VEVENT).
pub fn event_from_ical(raw: &str) -> Result<CalendarEvent, String> {
    let cal = Calendar::parse(raw).map_err(|e| e.to_string())?;
    let master = cal.master().ok_or("the resource has no master VEVENT")?;
    let p = cal.event(master).map_err(|e| e.to_string())?;
    Ok(CalendarEvent {
        ical_uid: p.uid,
        title: p.summary,
        location: p.location,
        description: p.description,
        status: p.status.map(|s| s.to_ascii_lowercase()),
        start: p.start.as_ref().map(date_string),
        end: p.end.as_ref().map(date_string),
        ..CalendarEvent::default()
    })
}

/// Writes `event` into `base` (or a new resource with `uid`), touching only what differs.
pub fn event_to_ical(
    base: Option<&str>,
    event: &CalendarEvent,
    uid: &str,
) -> Result<String, String> {
    let skeleton;
    let base = match base {
        Some(b) => b,
        None => {
            skeleton = format!(
                "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//driftless//bridge//EN\r\nBEGIN:VEVENT\r\n\
                 UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
            );
            &skeleton
        }
    };
    let mut cal = Calendar::parse(base).map_err(|e| e.to_string())?;
    let master = cal.master().ok_or("the resource has no master VEVENT")?;
    cal.set_text(master, TextProp::Summary, event.title.as_deref());
    cal.set_text(master, TextProp::Location, event.location.as_deref());
    cal.set_text(master, TextProp::Description, event.description.as_deref());
    let status = event.status.as_ref().map(|s| s.to_ascii_uppercase());
    cal.set_text(master, TextProp::Status, status.as_deref());
    for (prop, value) in [(DateProp::Start, &event.start), (DateProp::End, &event.end)] {
        let parsed = value.as_deref().map(parse_date).transpose()?;
        cal.set_date(master, prop, parsed.as_ref())
            .map_err(|e| e.to_string())?;
    }
    Ok(cal.to_ical())
}

/// Reads the canonical contact of a vCard.
pub fn contact_from_vcard(raw: &str, existing: Option<&Contact>) -> Result<Contact, String> {
    let card = Card::parse(raw).map_err(|e| e.to_string())?;
    let p = card.contact();
    let mut contact = existing.cloned().unwrap_or_default();
    contact.name.full = p.full_name;
    contact.job_title = p.title;
    contact.notes = p.note;
    Ok(Contact {
        links: Default::default(),
        deleted: false,
        deleted_at: None,
        ..contact
    })
}

/// Writes `contact` into `base` (or a new vCard with `uid`).
pub fn contact_to_vcard(
    base: Option<&str>,
    contact: &Contact,
    uid: &str,
) -> Result<String, String> {
    let skeleton;
    let base = match base {
        Some(b) => b,
        None => {
            skeleton = format!("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:\r\nEND:VCARD\r\n");
            &skeleton
        }
    };
    let mut card = Card::parse(base).map_err(|e| e.to_string())?;
    card.set_text(
        CardText::FullName,
        Some(contact.name.full.as_deref().unwrap_or_default()),
    );
    card.set_text(CardText::Title, contact.job_title.as_deref());
    card.set_text(CardText::Note, contact.notes.as_deref());
    Ok(card.to_vcard())
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

/// A contract time string: `2026-11-19`, `...T09:00:00Z`, `...T10:00:00`, `...T10:00:00[Zone]`.
fn date_string(v: &DateValue) -> String {
    match v {
        DateValue::Date { year, month, day } => format!("{year:04}-{month:02}-{day:02}"),
        DateValue::DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            zone,
        } => {
            let wall = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
            match zone {
                Zone::Floating => wall,
                Zone::Utc => format!("{wall}Z"),
                Zone::Tzid(tz) => format!("{wall}[{tz}]"),
            }
        }
    }
}

fn parse_date(s: &str) -> Result<DateValue, String> {
    let bad = || format!("`{s}` is not a date or date-time");
    let num = |r: std::ops::Range<usize>| -> Result<u16, String> {
        s.get(r).and_then(|d| d.parse().ok()).ok_or_else(bad)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)? as u8, num(8..10)? as u8);
    if s.len() == 10 {
        return Ok(DateValue::Date { year, month, day });
    }
    let (hour, minute, second) = (num(11..13)? as u8, num(14..16)? as u8, num(17..19)? as u8);
    let rest = s.get(19..).ok_or_else(bad)?;
    let zone = if rest == "Z" {
        Zone::Utc
    } else if let Some(open) = rest.find('[') {
        Zone::Tzid(rest[open + 1..].trim_end_matches(']').to_owned())
    } else if rest.is_empty() {
        Zone::Floating
    } else if rest.starts_with('+') || rest.starts_with('-') {
        // An offset without a zone: keep the wall time as UTC only if the offset is zero.
        if rest == "+00:00" {
            Zone::Utc
        } else {
            return Err(bad());
        }
    } else {
        return Err(bad());
    };
    Ok(DateValue::DateTime {
        year,
        month,
        day,
        hour,
        minute,
        second,
        zone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//EN\r\nBEGIN:VEVENT\r\nUID:u1\r\n\
        DTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20261119T100000\r\n\
        DTEND;TZID=Europe/Berlin:20261119T110000\r\nSUMMARY:Standup\r\nX-KEEP:yes\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    #[test]
    fn an_unchanged_event_round_trips_byte_for_byte() {
        let ev = event_from_ical(RAW).unwrap();
        assert_eq!(ev.title.as_deref(), Some("Standup"));
        assert_eq!(
            ev.start.as_deref(),
            Some("2026-11-19T10:00:00[Europe/Berlin]")
        );
        assert_eq!(event_to_ical(Some(RAW), &ev, "u1").unwrap(), RAW);
        let mut changed = ev.clone();
        changed.location = Some("Room 1".into());
        let out = event_to_ical(Some(RAW), &changed, "u1").unwrap();
        assert!(
            out.contains("LOCATION:Room 1") && out.contains("X-KEEP:yes"),
            "{out}"
        );
        assert_eq!(
            event_from_ical(&out).unwrap().location.as_deref(),
            Some("Room 1")
        );
    }

    #[test]
    fn new_events_get_the_uid() {
        let ev = CalendarEvent {
            title: Some("New".into()),
            start: Some("2026-11-19".into()),
            end: Some("2026-11-20".into()),
            ..CalendarEvent::default()
        };
        let out = event_to_ical(None, &ev, "doc-1").unwrap();
        let back = event_from_ical(&out).unwrap();
        assert_eq!(back.ical_uid.as_deref(), Some("doc-1"));
        assert_eq!(back.start.as_deref(), Some("2026-11-19"));
        assert_eq!(event_to_ical(Some(&out), &back, "doc-1").unwrap(), out);
    }
}
