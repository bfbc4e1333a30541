//! CalDAV/CardDAV resources <-> canonical records: exact round trips of rich resources,
//! canonical -> resource -> canonical over seeded random values, minimal edits, broken input.

use std::collections::BTreeMap;

use driftless_bridges::dav::translate::{
    TranslateError, contact_from_vcard, contact_to_vcard, event_from_ical, event_to_ical,
};
use driftless_crdt_model::{
    Attendee, CalendarEvent, Contact, ContactPoint, Name, Organizer, Override, Recurrence,
};

/// Folded lines, X- properties and parameters, VTIMEZONE, VALARM, an override, attendees.
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
BEGIN:VEVENT\r\n\
UID:series-1@example.com\r\n\
RECURRENCE-ID;TZID=Europe/Berlin:20261217T100000\r\n\
DTSTAMP:20260101T000000Z\r\n\
DTSTART;TZID=Europe/Berlin:20261217T100000\r\n\
DTEND;TZID=Europe/Berlin:20261217T110000\r\n\
SUMMARY;LANGUAGE=de:Weekly sync\\, with a comma and a long line that must be folded by the client\r\n\
STATUS:CANCELLED\r\n\
END:VEVENT\r\n\
END:VCALENDAR\r\n";

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[test]
fn reads_a_rich_resource() {
    let ev = event_from_ical(RESOURCE).unwrap();
    assert_eq!(
        ev.title.as_deref(),
        Some("Weekly sync, with a comma and a long line that must be folded by the client")
    );
    assert_eq!(ev.location, s("Room 1"));
    assert_eq!(ev.description, s("Line one\nLine two"));
    assert_eq!(ev.status, s("confirmed"));
    assert_eq!(ev.ical_uid, s("series-1@example.com"));
    assert_eq!(ev.start, s("2026-11-19T10:00:00+01:00[Europe/Berlin]"));
    assert_eq!(ev.end, s("2026-11-19T11:00:00+01:00[Europe/Berlin]"));
    let rec = ev.recurrence.clone().unwrap();
    assert_eq!(
        rec.rules,
        BTreeMap::from([("0".to_owned(), "RRULE:FREQ=WEEKLY;BYDAY=TH".to_owned())])
    );
    assert_eq!(
        rec.exdates,
        BTreeMap::from([
            (
                "20261126T090000Z".to_owned(),
                "2026-11-26T10:00:00+01:00[Europe/Berlin]".to_owned()
            ),
            (
                "20261203T090000Z".to_owned(),
                "2026-12-03T10:00:00+01:00[Europe/Berlin]".to_owned()
            ),
        ])
    );
    assert!(rec.rdates.is_empty());
    assert_eq!(ev.organizer.email, s("ada@example.com"));
    assert_eq!(ev.organizer.name, s("Ada"));
    assert_eq!(
        ev.attendees.keys().collect::<Vec<_>>(),
        ["bob@example.com", "eve@example.com"]
    );
    let eve = &ev.attendees["eve@example.com"];
    assert_eq!(eve.name, s("Eve, E."));
    assert_eq!(eve.response, s("needs_action"));
    assert!(eve.optional);
    assert_eq!(ev.attendees["bob@example.com"].response, s("accepted"));
    assert!(!ev.attendees["bob@example.com"].optional);
    assert_eq!(
        ev.overrides,
        BTreeMap::from([
            (
                "20261210T090000Z".to_owned(),
                Override {
                    title: s("Weekly sync (moved)"),
                    start: s("2026-12-10T12:00:00+01:00[Europe/Berlin]"),
                    end: s("2026-12-10T13:00:00+01:00[Europe/Berlin]"),
                    ..Override::default()
                }
            ),
            (
                "20261217T090000Z".to_owned(),
                Override {
                    cancelled: true,
                    ..Override::default()
                }
            ),
        ])
    );
}

#[test]
fn unchanged_event_is_written_back_byte_for_byte() {
    let ev = event_from_ical(RESOURCE).unwrap();
    assert_eq!(
        event_to_ical(Some(RESOURCE), &ev, "series-1@example.com").unwrap(),
        RESOURCE
    );
    for raw in [ALL_DAY, DURATION, ODD_TZID, FLOATING_NO_END] {
        let ev = event_from_ical(raw).unwrap();
        assert_eq!(event_to_ical(Some(raw), &ev, "x").unwrap(), raw);
    }
}

#[test]
fn edits_touch_only_their_lines() {
    let mut ev = event_from_ical(RESOURCE).unwrap();
    ev.location = s("Room 2");
    ev.attendees.get_mut("bob@example.com").unwrap().response = s("declined");
    let out = event_to_ical(Some(RESOURCE), &ev, "series-1@example.com").unwrap();
    let expected = RESOURCE
        .replace(
            "LOCATION;ALTREP=\"http://example.com/room\":Room 1\r\n",
            "LOCATION;ALTREP=\"http://example.com/room\":Room 2\r\n",
        )
        .replace(
            "CN=Bob;PARTSTAT=ACCEPTED;RSVP=TRUE;X-NUM-GUESTS=0:mailto:bob@example.com\r\n",
            "CN=Bob;PARTSTAT=DECLINED;RSVP=TRUE;X-NUM-GUESTS=0:mailto:bob@examp\r\n le.com\r\n",
        );
    assert_eq!(out, expected);
    assert_eq!(event_from_ical(&out).unwrap(), ev);
}

#[test]
fn series_edits_carry_into_inheriting_overrides() {
    let mut ev = event_from_ical(RESOURCE).unwrap();
    ev.title = s("Renamed");
    ev.end = s("2026-11-19T11:30:00+01:00[Europe/Berlin]");
    // Un-cancel one instance and move it; add a new override.
    ev.overrides.insert(
        "20261217T090000Z".into(),
        Override {
            location: s("Elsewhere"),
            ..Override::default()
        },
    );
    ev.overrides.insert(
        "20261224T090000Z".into(),
        Override {
            cancelled: true,
            ..Override::default()
        },
    );
    let out = event_to_ical(Some(RESOURCE), &ev, "series-1@example.com").unwrap();
    assert!(out.contains("BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER;RELATED=START:-PT15M\r\n"));
    assert!(out.contains("X-APPLE-TRAVEL-ADVISORY-BEHAVIOR:AUTOMATIC\r\n"));
    assert!(out.contains("RECURRENCE-ID;TZID=Europe/Berlin:20261224T100000\r\n"));
    assert_eq!(event_from_ical(&out).unwrap(), ev);
}

const ALL_DAY: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:a\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;VALUE=DATE:20261119\r\nSUMMARY:Holiday\r\nRRULE:FREQ=YEARLY\r\nRDATE;VALUE=DATE:20270101\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
const DURATION: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:d\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20261119T090000Z\r\nDURATION:PT1H30M\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
const ODD_TZID: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VTIMEZONE\r\nTZID:Custom Zone\r\nBEGIN:STANDARD\r\nDTSTART:19700101T000000\r\nTZOFFSETFROM:+0300\r\nTZOFFSETTO:+0300\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\nBEGIN:VEVENT\r\nUID:t\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Custom Zone:20261119T090000\r\nDTEND;TZID=/mozilla.org/20050126_1/America/New_York:20261119T100000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
const FLOATING_NO_END: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:f\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20261119T090000\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

#[test]
fn times_dates_durations_and_odd_zones() {
    let ev = event_from_ical(ALL_DAY).unwrap();
    assert_eq!(ev.start, s("2026-11-19"));
    assert_eq!(ev.end, s("2026-11-20"));
    let rec = ev.recurrence.unwrap();
    assert_eq!(rec.rdates["20270101"], "2027-01-01");

    let ev = event_from_ical(DURATION).unwrap();
    assert_eq!(ev.start, s("2026-11-19T09:00:00Z"));
    assert_eq!(ev.end, s("2026-11-19T10:30:00Z"));

    // A TZID that is no IANA name reads as floating; a prefixed IANA name is recognised.
    let ev = event_from_ical(ODD_TZID).unwrap();
    assert_eq!(ev.start, s("2026-11-19T09:00:00"));
    assert_eq!(ev.end, s("2026-11-19T10:00:00-05:00[America/New_York]"));

    let ev = event_from_ical(FLOATING_NO_END).unwrap();
    assert_eq!(ev.start, s("2026-11-19T09:00:00"));
    assert_eq!(ev.end, ev.start);
}

#[test]
fn changing_the_end_of_a_duration_event_replaces_duration_with_dtend() {
    let mut ev = event_from_ical(DURATION).unwrap();
    ev.end = s("2026-11-19T11:00:00Z");
    let out = event_to_ical(Some(DURATION), &ev, "d").unwrap();
    assert!(!out.contains("DURATION"), "{out}");
    assert!(out.contains("DTEND:20261119T110000Z\r\n"), "{out}");
    assert_eq!(event_from_ical(&out).unwrap(), ev);
    // Moving the start alone keeps the end where the record says.
    let mut ev = event_from_ical(DURATION).unwrap();
    ev.start = s("2026-11-19T08:00:00Z");
    let out = event_to_ical(Some(DURATION), &ev, "d").unwrap();
    assert_eq!(event_from_ical(&out).unwrap(), ev);
}

#[test]
fn unchanged_odd_tzid_line_is_kept_and_changed_one_rewritten() {
    let mut ev = event_from_ical(ODD_TZID).unwrap();
    ev.title = s("Now titled");
    let out = event_to_ical(Some(ODD_TZID), &ev, "t").unwrap();
    assert!(out.contains("DTSTART;TZID=Custom Zone:20261119T090000\r\n"));
    assert!(
        out.contains("DTEND;TZID=/mozilla.org/20050126_1/America/New_York:20261119T100000\r\n")
    );
    assert_eq!(event_from_ical(&out).unwrap(), ev);
}

#[test]
fn names_with_line_breaks_and_quotes_stay_readable() {
    let mut ev = event_from_ical(FLOATING_NO_END).unwrap();
    ev.organizer.email = s("Boss@Example.com");
    ev.organizer.name = s("The \"Boss\"\nHQ");
    ev.attendees.insert(
        "x@example.com".into(),
        Attendee {
            name: s("Two\r\nlines"),
            ..Attendee::default()
        },
    );
    let out = event_to_ical(Some(FLOATING_NO_END), &ev, "f").unwrap();
    let back = event_from_ical(&out).unwrap();
    assert_eq!(back.organizer.email, s("boss@example.com"));
    assert_eq!(back.organizer.name, s("The 'Boss' HQ"));
    assert_eq!(back.attendees["x@example.com"].name, s("Two  lines"));
}

#[test]
fn broken_input_is_an_error_naming_the_resource() {
    let no_event =
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VTODO\r\nUID:x\r\nEND:VTODO\r\nEND:VCALENDAR\r\n";
    assert!(matches!(
        event_from_ical(no_event),
        Err(TranslateError::NoEvent { .. })
    ));
    let bad = RESOURCE.replace(
        "DTSTART;TZID=Europe/Berlin:20261119T100000",
        "DTSTART:2026-bogus",
    );
    match event_from_ical(&bad) {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("series-1@example.com"), "{msg}");
        }
        Ok(ev) => panic!("accepted a bad DTSTART: {ev:?}"),
    }
    let no_start = FLOATING_NO_END.replace("DTSTART:20261119T090000\r\n", "");
    let err = event_from_ical(&no_start).unwrap_err().to_string();
    assert!(err.contains("DTSTART") && err.contains("UID f"), "{err}");
    for junk in ["", "hello", "BEGIN:VCARD\r\nFN:x\r\nEND:VCARD\r\n"] {
        assert!(event_from_ical(junk).is_err());
        assert!(event_to_ical(Some(junk), &CalendarEvent::default(), "u").is_err());
    }
    // A canonical value that cannot be written.
    let ev = CalendarEvent {
        start: s("2026-11-19T10:00:00+01:00[Mars/Olympus]"),
        ..CalendarEvent::default()
    };
    let err = event_to_ical(None, &ev, "u").unwrap_err().to_string();
    assert!(err.contains("start"), "{err}");
    assert!(event_to_ical(None, &CalendarEvent::default(), "u").is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn hostile_resources_never_panic(cut in 0usize..4000, flip in 0usize..4000, byte in 0u8..128) {
        let mut flipped = RESOURCE.as_bytes().to_vec();
        let len = flipped.len();
        flipped[flip % len] = byte;
        let mut cut_bytes = flipped.clone();
        cut_bytes.truncate(cut % (len + 1));
        for bytes in [flipped, cut_bytes] {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if let Ok(mut ev) = event_from_ical(&text) {
                let out = event_to_ical(Some(&text), &ev, "u").ok();
                proptest::prop_assert_eq!(out.as_deref(), Some(text.as_str()));
                // Edits over a damaged resource: an error or a resource, never a panic.
                ev.title = Some("changed".into());
                ev.end = None;
                ev.overrides.clear();
                ev.attendees.clear();
                let _ = event_to_ical(Some(&text), &ev, "u");
            }
        }
        let mut c = V3.as_bytes().to_vec();
        let len = c.len();
        c[flip % len] = byte;
        c.truncate(cut % (len + 1));
        let text = String::from_utf8_lossy(&c).into_owned();
        if let Ok(contact) = contact_from_vcard(&text, None, &mut counter()) {
            let _ = contact_to_vcard(Some(&text), &contact, "u");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seeded random canonical values
// ---------------------------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    /// Text fit for a parameter (CN): no line breaks or double quotes.
    fn name(&mut self) -> String {
        self.text().replace('\n', " ")
    }
    fn text(&mut self) -> String {
        let words = [
            "Budget",
            "review",
            "Ünïcode",
            "semi;colon",
            "comma,",
            "back\\slash",
            "new\nline",
            "x",
            "日本語",
            "  spaced  ",
        ];
        let n = 1 + self.below(4);
        (0..n)
            .map(|_| self.pick(&words))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

const ZONES: [&str; 4] = [
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Sydney",
];

#[derive(Clone, Copy)]
enum Form {
    Date,
    Utc,
    Floating,
    Zoned(&'static str),
}

/// A canonical time of `form`, `days`/`minutes` from 2026-03-01 00:00 (hours 08-20 only, so no
/// DST gaps or ambiguities).
fn time(form: Form, days: i64, minutes: i64) -> String {
    use chrono::{NaiveDate, TimeDelta, TimeZone};
    let base = NaiveDate::from_ymd_opt(2026, 3, 1).expect("date");
    let date = base + TimeDelta::days(days);
    let t = date.and_hms_opt(8, 0, 0).expect("time") + TimeDelta::minutes(minutes % (12 * 60));
    match form {
        Form::Date => date.format("%Y-%m-%d").to_string(),
        Form::Utc => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Form::Floating => t.format("%Y-%m-%dT%H:%M:%S").to_string(),
        Form::Zoned(zone) => {
            let tz: chrono_tz::Tz = zone.parse().expect("zone");
            let dt = tz.from_local_datetime(&t).single().expect("no DST edge");
            format!("{}[{zone}]", dt.format("%Y-%m-%dT%H:%M:%S%:z"))
        }
    }
}

/// The instance key the translation uses for a canonical time.
fn key_of(s: &str) -> String {
    let t = driftless_crdt_model::EventTime::parse(s).expect("canonical time");
    t.instance_key()
        .unwrap_or_else(|| s.replace(['-', ':'], ""))
}

fn attendees(rng: &mut Rng, prefix: &str) -> BTreeMap<String, Attendee> {
    let n = rng.below(4);
    (0..n)
        .map(|i| {
            (
                format!("{prefix}{i}@example.com"),
                Attendee {
                    name: rng.chance(60).then(|| rng.name()),
                    response: rng.chance(80).then(|| {
                        rng.pick(&["needs_action", "accepted", "declined", "tentative"])
                            .to_owned()
                    }),
                    optional: rng.chance(30),
                    extra: Default::default(),
                },
            )
        })
        .collect()
}

fn random_event(rng: &mut Rng, uid: &str) -> CalendarEvent {
    let form = match rng.below(4) {
        0 => Form::Date,
        1 => Form::Utc,
        2 => Form::Floating,
        _ => Form::Zoned(ZONES[rng.below(ZONES.len() as u64) as usize]),
    };
    let day = rng.below(300) as i64;
    let minute = rng.below(8) as i64 * 30;
    let start = time(form, day, minute);
    // Length in days (all-day) or half hours.
    let length = match form {
        Form::Date => 1 + rng.below(3) as i64,
        _ => rng.below(6) as i64,
    };
    let end = match form {
        Form::Date => time(form, day + length, 0),
        _ => time(form, day, minute + 30 * length),
    };
    let title = rng.chance(90).then(|| rng.text());
    let status = rng.chance(70).then(|| {
        rng.pick(&["confirmed", "tentative", "cancelled"])
            .to_owned()
    });
    let mut ev = CalendarEvent {
        title: title.clone(),
        location: rng.chance(50).then(|| rng.text()),
        description: rng.chance(50).then(|| rng.text()),
        status: status.clone(),
        ical_uid: Some(uid.to_owned()),
        start: Some(start),
        end: Some(end),
        organizer: if rng.chance(50) {
            Organizer {
                email: Some("boss@example.com".into()),
                name: rng.chance(50).then(|| rng.name()),
                extra: Default::default(),
            }
        } else {
            Organizer::default()
        },
        attendees: attendees(rng, "a"),
        ..CalendarEvent::default()
    };
    if rng.chance(60) {
        let rules = [
            "RRULE:FREQ=WEEKLY",
            "RRULE:FREQ=DAILY;COUNT=10",
            "RRULE:FREQ=MONTHLY;BYDAY=3TH",
        ];
        let n = 1 + rng.below(2);
        let mut rec = Recurrence {
            rules: (0..n)
                .map(|i| (i.to_string(), rng.pick(&rules).to_owned()))
                .collect(),
            ..Recurrence::default()
        };
        for _ in 0..rng.below(3) {
            let v = time(form, day + 7 * (1 + rng.below(10) as i64), minute);
            rec.exdates.insert(key_of(&v), v);
        }
        for _ in 0..rng.below(2) {
            let v = time(form, day + 3 + 7 * rng.below(10) as i64, minute);
            rec.rdates.insert(key_of(&v), v);
        }
        for _ in 0..rng.below(3) {
            let week = 1 + rng.below(10) as i64;
            let original = time(form, day + 7 * week, minute);
            let key = key_of(&original);
            if rec.exdates.contains_key(&key) {
                continue;
            }
            // A cancelled series has no separately cancelled instances.
            let o = if rng.chance(25) && ev.status.as_deref() != Some("cancelled") {
                Override {
                    cancelled: true,
                    ..Override::default()
                }
            } else {
                let moved = rng.chance(50);
                // An override's end is one the series' length would not give (else it reads
                // as unchanged): moved by one unit and one unit longer.
                let (os, oe) = match form {
                    Form::Date => (
                        time(form, day + 7 * week + 1, 0),
                        time(form, day + 7 * week + 2 + length, 0),
                    ),
                    _ => (
                        time(form, day + 7 * week, minute + 60),
                        time(form, day + 7 * week, minute + 90 + 30 * length),
                    ),
                };
                let title = rng.chance(50).then(|| format!("ov {}", rng.text()));
                let ov_status = rng
                    .chance(30)
                    .then(|| rng.pick(&["confirmed", "tentative"]).to_owned())
                    .filter(|s| Some(s) != status.as_ref());
                Override {
                    title,
                    location: rng.chance(30).then(|| format!("ov {}", rng.text())),
                    description: rng.chance(30).then(|| format!("ov {}", rng.text())),
                    start: moved.then(|| os.clone()),
                    end: (moved || rng.chance(30)).then(|| oe.clone()),
                    status: ov_status,
                    attendees: rng
                        .chance(30)
                        .then(|| attendees(rng, "o"))
                        .filter(|a| !a.is_empty()),
                    ..Override::default()
                }
            };
            rec.rules
                .entry("0".into())
                .or_insert_with(|| "RRULE:FREQ=WEEKLY".into());
            ev.overrides.insert(key, o);
        }
        ev.recurrence = Some(rec);
    }
    ev
}

#[test]
fn canonical_events_survive_the_round_trip() {
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let mut previous: Option<String> = None;
    for i in 0..400 {
        let uid = "round-trip@example.com";
        let ev = random_event(&mut rng, uid);
        // Fresh resource.
        let fresh =
            event_to_ical(None, &ev, uid).unwrap_or_else(|e| panic!("case {i}: {e}\n{ev:#?}"));
        let back = event_from_ical(&fresh).unwrap_or_else(|e| panic!("case {i}: {e}\n{fresh}"));
        assert_eq!(back, ev, "case {i} (fresh):\n{fresh}");
        assert_eq!(
            event_to_ical(Some(&fresh), &back, uid).unwrap(),
            fresh,
            "case {i}"
        );
        // Editing another event's resource into this one.
        if let Some(prev) = &previous {
            let edited =
                event_to_ical(Some(prev), &ev, uid).unwrap_or_else(|e| panic!("case {i}: {e}"));
            let back =
                event_from_ical(&edited).unwrap_or_else(|e| panic!("case {i}: {e}\n{edited}"));
            assert_eq!(
                back, ev,
                "case {i} (edited):\n--- base\n{prev}\n--- edited\n{edited}"
            );
        }
        previous = Some(fresh);
    }
}

// ---------------------------------------------------------------------------------------------
// vCard
// ---------------------------------------------------------------------------------------------

const V3: &str = "BEGIN:VCARD\r\n\
VERSION:3.0\r\n\
PRODID:-//Apple Inc.//iOS 17.0//EN\r\n\
N:Lovelace;Ada;Augusta;Lady;\r\n\
FN:Ada Lovelace\r\n\
ORG:Analytical Engines Ltd;Research\r\n\
TITLE:Countess\r\n\
item1.EMAIL;type=INTERNET;type=WORK;type=pref:ada@example.com\r\n\
item1.X-ABLabel:_$!<Work>!$_\r\n\
EMAIL;TYPE=INTERNET,HOME:ada@home.example\r\n\
TEL;TYPE=CELL;TYPE=VOICE:+44 20 7946 0018\r\n\
NOTE:Wrote the first program\\, arguably.\\nSecond line\r\n\
PHOTO;ENCODING=b;TYPE=JPEG:/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHR\r\n \
ofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/wAALCAABAAEBAREA\r\n\
X-SOCIALPROFILE;type=twitter:https://twitter.com/ada\r\n\
UID:c-1@example.com\r\n\
END:VCARD\r\n";

const V4: &str = "BEGIN:VCARD\r\n\
VERSION:4.0\r\n\
FN:Grace Hopper\r\n\
N:Hopper;Grace;;;\r\n\
EMAIL;TYPE=work;PREF=1:grace@navy.example\r\n\
TEL;VALUE=uri;TYPE=\"voice,cell\":tel:+1-555-0100\r\n\
UID:urn:uuid:4fbe8971-0bc3-424c-9c26-36c3e1eff6b1\r\n\
END:VCARD\r\n";

fn counter() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("s{n}")
    }
}

fn point(value: &str, label: Option<&str>, primary: bool) -> ContactPoint {
    ContactPoint {
        value: value.into(),
        label: label.map(str::to_owned),
        primary,
        extra: Default::default(),
    }
}

#[test]
fn reads_vcards_and_writes_them_back_unchanged() {
    let c = contact_from_vcard(V3, None, &mut counter()).unwrap();
    assert_eq!(c.name.full, s("Ada Lovelace"));
    assert_eq!(c.name.given, s("Ada"));
    assert_eq!(c.name.family, s("Lovelace"));
    assert_eq!(c.organization, s("Analytical Engines Ltd"));
    assert_eq!(c.job_title, s("Countess"));
    assert_eq!(
        c.notes,
        s("Wrote the first program, arguably.\nSecond line")
    );
    assert_eq!(
        c.emails,
        BTreeMap::from([
            (
                "s1".to_owned(),
                point("ada@example.com", Some("work"), true)
            ),
            (
                "s2".to_owned(),
                point("ada@home.example", Some("home"), false)
            ),
        ])
    );
    assert_eq!(
        c.phones,
        BTreeMap::from([(
            "s3".to_owned(),
            point("+44 20 7946 0018", Some("cell"), false)
        )])
    );
    assert_eq!(
        contact_to_vcard(Some(V3), &c, "c-1@example.com").unwrap(),
        V3
    );

    let g = contact_from_vcard(V4, None, &mut counter()).unwrap();
    assert_eq!(g.phones["s2"], point("+1-555-0100", Some("cell"), false));
    assert_eq!(
        g.emails["s1"],
        point("grace@navy.example", Some("work"), true)
    );
    assert_eq!(contact_to_vcard(Some(V4), &g, "u").unwrap(), V4);
}

#[test]
fn slot_ids_are_kept_and_edits_stay_minimal() {
    let c = contact_from_vcard(V3, None, &mut counter()).unwrap();
    let mut edited = c.clone();
    edited.phones.get_mut("s3").unwrap().value = "+44 20 7946 0099".into();
    edited.job_title = s("Mathematician");
    let out = contact_to_vcard(Some(V3), &edited, "c-1@example.com").unwrap();
    assert_eq!(
        out,
        V3.replace("TITLE:Countess", "TITLE:Mathematician")
            .replace("+44 20 7946 0018", "+44 20 7946 0099")
    );
    // The provider's change lands in the same slot (same label, new value).
    let back = contact_from_vcard(&out, Some(&c), &mut || "new".to_owned()).unwrap();
    assert_eq!(back, edited);
}

#[test]
fn broken_vcards_are_errors() {
    for junk in ["", "hello", RESOURCE] {
        assert!(contact_from_vcard(junk, None, &mut counter()).is_err());
        assert!(contact_to_vcard(Some(junk), &Contact::default(), "u").is_err());
    }
}

fn random_contact(rng: &mut Rng) -> Contact {
    let opt = |rng: &mut Rng| {
        rng.chance(70)
            .then(|| rng.text().trim().to_owned())
            .filter(|t| !t.is_empty())
    };
    let mut c = Contact {
        name: Name {
            full: opt(rng),
            given: opt(rng),
            family: opt(rng),
            extra: Default::default(),
        },
        organization: opt(rng),
        job_title: opt(rng),
        notes: opt(rng),
        ..Contact::default()
    };
    let labels = [
        None,
        Some("work"),
        Some("home"),
        Some("cell"),
        Some("work,fax"),
    ];
    for i in 0..rng.below(4) {
        let label = labels[rng.below(3) as usize];
        c.emails.insert(
            format!("e{i}"),
            point(&format!("user{i}@example.com"), label, rng.chance(30)),
        );
    }
    for i in 0..rng.below(4) {
        let label = labels[rng.below(labels.len() as u64) as usize];
        c.phones.insert(
            format!("p{i}"),
            point(&format!("+49 30 1234 56{i}"), label, rng.chance(30)),
        );
    }
    c
}

#[test]
fn canonical_contacts_survive_the_round_trip() {
    let mut rng = Rng(0x5eed_0000_c0de_0002);
    let mut previous: Option<String> = None;
    for i in 0..400 {
        let c = random_contact(&mut rng);
        let fresh = contact_to_vcard(None, &c, "u").unwrap_or_else(|e| panic!("case {i}: {e}"));
        let back = contact_from_vcard(&fresh, Some(&c), &mut || "new".to_owned()).unwrap();
        assert_eq!(back, c, "case {i} (fresh):\n{fresh}");
        assert_eq!(contact_to_vcard(Some(&fresh), &back, "u").unwrap(), fresh);
        if let Some(prev) = &previous {
            let edited = contact_to_vcard(Some(prev), &c, "u").unwrap();
            let back = contact_from_vcard(&edited, Some(&c), &mut || "new".to_owned()).unwrap();
            assert_eq!(
                back, c,
                "case {i} (edited):\n--- base\n{prev}\n--- edited\n{edited}"
            );
        }
        previous = Some(fresh);
    }
}

/// Found by `hostile_resources_never_panic`: whitespace (a space, a vertical tab) after an RRULE
/// value must not make an unchanged event rewrite its rule line.
#[test]
fn stray_whitespace_after_a_rule_round_trips_byte_for_byte() {
    let line = "RRULE:FREQ=WEEKLY;BYDAY=TH";
    assert!(RESOURCE.contains(line));
    for stray in [" ", "\u{b}"] {
        let text = RESOURCE.replacen(line, &format!("{line}{stray}"), 1);
        let ev = event_from_ical(&text).unwrap();
        assert_eq!(event_to_ical(Some(&text), &ev, "u").unwrap(), text);
    }
}
