//! Recurrence expansion with hand-checked answers (the table against python-dateutil lives in
//! the end-to-end crate: tests/tests/recurrence.rs).
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use driftless_crdt_model::recurrence::{
    ExpandOptions, ExpandProblem, OccurrenceTime, expand, instance_key,
};
use driftless_crdt_model::{CalendarEvent, EventTime};
use serde_json::{Value, json};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn event(value: Value) -> CalendarEvent {
    serde_json::from_value(value).unwrap()
}

fn in_zone(zone: &str) -> ExpandOptions {
    ExpandOptions {
        zone: zone.parse::<Tz>().unwrap(),
        ..ExpandOptions::default()
    }
}

/// Occurrence starts as RFC 3339 in `zone` (dates as dates).
fn starts(e: &CalendarEvent, from: &str, to: &str, zone: &str) -> Vec<String> {
    let tz: Tz = zone.parse().unwrap();
    expand(e, at(from), at(to), &in_zone(zone))
        .unwrap()
        .occurrences
        .iter()
        .map(|o| match o.start {
            OccurrenceTime::At(t) => t.with_timezone(&tz).to_rfc3339(),
            OccurrenceTime::Date(d) => d.to_string(),
        })
        .collect()
}

#[test]
fn wall_time_is_kept_across_dst() {
    let e = event(json!({
        "start": "2026-03-23T10:00:00+01:00[Europe/Berlin]",
        "end": "2026-03-23T11:00:00+01:00[Europe/Berlin]",
        "recurrence": {"rules": {"0": "RRULE:FREQ=WEEKLY"}}
    }));
    assert_eq!(
        starts(&e, "2026-03-20T00:00:00Z", "2026-04-07T00:00:00Z", "UTC"),
        [
            "2026-03-23T09:00:00+00:00",
            "2026-03-30T08:00:00+00:00",
            "2026-04-06T08:00:00+00:00"
        ]
    );
    let exp = expand(
        &e,
        at("2026-03-29T00:00:00Z"),
        at("2026-04-01T00:00:00Z"),
        &ExpandOptions::default(),
    )
    .unwrap();
    let o = &exp.occurrences[0];
    assert_eq!(o.key, "20260330T080000Z");
    assert_eq!(
        o.end,
        OccurrenceTime::At(at("2026-03-30T09:00:00Z")),
        "an hour long"
    );
}

#[test]
fn third_thursday_and_last_weekday() {
    let third = event(json!({
        "start": "2026-01-15T18:30:00+01:00[Europe/Berlin]",
        "recurrence": {"rules": {"0": "RRULE:FREQ=MONTHLY;BYDAY=3TH"}}
    }));
    let days: Vec<String> = starts(
        &third,
        "2026-01-01T00:00:00Z",
        "2026-07-01T00:00:00Z",
        "Europe/Berlin",
    )
    .into_iter()
    .map(|s| s[..10].to_owned())
    .collect();
    assert_eq!(
        days,
        [
            "2026-01-15",
            "2026-02-19",
            "2026-03-19",
            "2026-04-16",
            "2026-05-21",
            "2026-06-18"
        ]
    );
    let last = event(json!({
        "start": "2026-01-30T17:00:00-05:00[America/New_York]",
        "recurrence": {"rules": {"0": "RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1"}}
    }));
    let days: Vec<String> = starts(
        &last,
        "2026-01-01T00:00:00Z",
        "2026-07-01T00:00:00Z",
        "America/New_York",
    )
    .into_iter()
    .map(|s| s[..10].to_owned())
    .collect();
    // May 2026 ends on a Sunday, so its last weekday is Friday the 29th.
    assert_eq!(
        days,
        [
            "2026-01-30",
            "2026-02-27",
            "2026-03-31",
            "2026-04-30",
            "2026-05-29",
            "2026-06-30"
        ]
    );
}

#[test]
fn overrides_move_cancel_and_change_instances() {
    let e = event(json!({
        "title": "Standup",
        "status": "confirmed",
        "start": "2026-11-02T10:00:00+01:00[Europe/Berlin]",
        "end": "2026-11-02T10:15:00+01:00[Europe/Berlin]",
        "recurrence": {"rules": {"0": "RRULE:FREQ=WEEKLY;COUNT=10"}},
        "overrides": {
            "20261102T090000Z": {"start": "2026-12-01T10:00:00+01:00[Europe/Berlin]"},
            "20261207T090000Z": {"start": "2027-03-01T10:00:00+01:00[Europe/Berlin]"},
            "20261214T090000Z": {"cancelled": true},
            "20261221T090000Z": {"title": "Last one", "status": "tentative", "location": "Café"},
            "20261215T090000Z": {"start": "2026-12-02T10:00:00+01:00[Europe/Berlin]"}
        }
    }));
    let exp = expand(
        &e,
        at("2026-12-01T00:00:00Z"),
        at("2027-01-01T00:00:00Z"),
        &in_zone("Europe/Berlin"),
    )
    .unwrap();
    let listed: Vec<(&str, String, &str, Option<&str>)> = exp
        .occurrences
        .iter()
        .map(|o| {
            let OccurrenceTime::At(t) = o.start else {
                panic!("timed")
            };
            (
                o.key.as_str(),
                t.to_rfc3339(),
                o.status.as_str(),
                o.title.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (
                "20261102T090000Z",
                "2026-12-01T09:00:00+00:00".into(),
                "confirmed",
                Some("Standup")
            ),
            (
                "20261221T090000Z",
                "2026-12-21T09:00:00+00:00".into(),
                "tentative",
                Some("Last one")
            ),
            (
                "20261228T090000Z",
                "2026-12-28T09:00:00+00:00".into(),
                "confirmed",
                Some("Standup")
            ),
        ]
    );
    assert_eq!(exp.occurrences[1].location.as_deref(), Some("Café"));
    // The moved instance keeps the series' length and its original start.
    let moved = &exp.occurrences[0];
    assert_eq!(moved.end, OccurrenceTime::At(at("2026-12-01T09:15:00Z")));
    assert_eq!(
        moved.original_start,
        OccurrenceTime::At(at("2026-11-02T09:00:00Z"))
    );
    // The instance moved to March shows there, and only there.
    let march = expand(
        &e,
        at("2027-03-01T00:00:00Z"),
        at("2027-03-02T00:00:00Z"),
        &ExpandOptions::default(),
    )
    .unwrap();
    assert_eq!(march.occurrences.len(), 1);
    assert_eq!(march.occurrences[0].key, "20261207T090000Z");
}

#[test]
fn all_day_dates_are_placed_in_the_viewer_zone() {
    let e = event(json!({
        "start": "2026-07-04",
        "end": "2026-07-05",
        "recurrence": {"rules": {"0": "RRULE:FREQ=YEARLY;UNTIL=20280704"}}
    }));
    // 2027-07-04 in Tokyo ends at 2027-07-04T15:00Z: a window starting then misses it.
    assert_eq!(
        starts(
            &e,
            "2027-07-04T15:00:00Z",
            "2028-07-04T16:00:00Z",
            "Asia/Tokyo"
        ),
        ["2028-07-04"]
    );
    assert_eq!(
        starts(
            &e,
            "2027-07-04T15:00:00Z",
            "2028-07-04T16:00:00Z",
            "America/Los_Angeles"
        ),
        ["2027-07-04", "2028-07-04"]
    );
    let exp = expand(
        &e,
        at("2026-01-01T00:00:00Z"),
        at("2027-01-01T00:00:00Z"),
        &ExpandOptions::default(),
    )
    .unwrap();
    let o = &exp.occurrences[0];
    assert!(o.all_day);
    assert_eq!(o.key, "20260704");
    assert_eq!(
        o.end,
        OccurrenceTime::Date(NaiveDate::from_ymd_opt(2026, 7, 5).unwrap())
    );
}

#[test]
fn exdates_rdates_and_several_rules() {
    let e = event(json!({
        "start": "2026-06-01T09:00:00Z",
        "recurrence": {
            "rules": {"0": "RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=4", "1": "RRULE:FREQ=MONTHLY;BYMONTHDAY=20;COUNT=2"},
            "exdates": {"20260608T090000Z": "2026-06-08T11:00:00+02:00[Europe/Berlin]"},
            "rdates": {"20260603T150000Z": "2026-06-03T15:00:00Z"}
        }
    }));
    assert_eq!(
        starts(&e, "2026-06-01T00:00:00Z", "2026-08-01T00:00:00Z", "UTC"),
        [
            "2026-06-01T09:00:00+00:00",
            "2026-06-03T15:00:00+00:00",
            "2026-06-15T09:00:00+00:00",
            "2026-06-20T09:00:00+00:00",
            "2026-06-22T09:00:00+00:00",
            "2026-07-20T09:00:00+00:00"
        ]
    );
}

#[test]
fn bad_data_names_the_field() {
    let window = (at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"));
    let err =
        |v: Value| expand(&event(v), window.0, window.1, &ExpandOptions::default()).unwrap_err();
    let e = err(json!({"title": "no start"}));
    assert_eq!(
        (e.field.as_str(), &e.problem),
        ("start", &ExpandProblem::Missing)
    );
    let e = err(json!({"start": "2026-01-01T10:00:00[Europe/Nowhere]"}));
    assert_eq!(e.field, "start");
    assert!(matches!(e.problem, ExpandProblem::UnknownZone(_)));
    let e = err(
        json!({"start": "2026-01-01T10:00:00Z", "recurrence": {"rules": {"7": "RRULE:FREQ=DAILY;BYMONTHDAY=40"}}}),
    );
    assert_eq!(e.field, "recurrence.rules.7");
    assert!(e.to_string().contains("recurrence.rules.7"), "{e}");
    let e = err(
        json!({"start": "2026-01-01T10:00:00Z", "recurrence": {"rules": {"0": "RRULE:FREQ=DAILY"}},
                       "overrides": {"20260105T100000Z": {"start": "next tuesday"}}}),
    );
    assert_eq!(e.field, "overrides.20260105T100000Z.start");
    let e = err(json!({"start": "2026-01-01", "end": "2026-01-01T10:00:00Z"}));
    assert_eq!(e.field, "end");
}

#[test]
fn instance_keys_for_every_form() {
    let key = |s: &str| instance_key(&EventTime::parse(s).unwrap()).unwrap();
    assert_eq!(
        key("2026-12-17T10:00:00+01:00[Europe/Berlin]"),
        "20261217T090000Z"
    );
    // Without the offset the zone database resolves it.
    assert_eq!(
        key("2026-07-17T10:00:00[Europe/Berlin]"),
        "20260717T080000Z"
    );
    assert_eq!(key("2026-12-17T09:00:00Z"), "20261217T090000Z");
    assert_eq!(key("2026-12-17T10:00:00"), "20261217T100000");
    assert_eq!(key("2026-12-17"), "20261217");
}

#[test]
fn extreme_windows_and_dates_do_not_panic() {
    let e = event(json!({
        "start": "9999-12-31T23:00:00-05:00[America/New_York]",
        "end": "9999-12-31T23:30:00-05:00[America/New_York]",
        "recurrence": {"rules": {"0": "RRULE:FREQ=HOURLY"}}
    }));
    let early = event(json!({
        "start": "0000-01-01",
        "end": "9999-12-31",
        "recurrence": {"rules": {"0": "RRULE:FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30"}}
    }));
    for e in [e, early] {
        for (from, to) in [
            (DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC),
            (at("9999-12-31T00:00:00Z"), DateTime::<Utc>::MAX_UTC),
            (DateTime::<Utc>::MIN_UTC, at("0001-01-01T00:00:00Z")),
        ] {
            for zone in ["Pacific/Kiritimati", "Etc/GMT+12"] {
                let _ = expand(&e, from, to, &in_zone(zone));
            }
        }
    }
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    /// RRULE-shaped noise: real part names with values in and out of range.
    fn rule() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            proptest::sample::select(vec![
                "SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY", "X"
            ])
            .prop_map(|f| format!("FREQ={f}")),
            (-5i64..70).prop_map(|n| format!("INTERVAL={n}")),
            (-2i64..400).prop_map(|n| format!("COUNT={n}")),
            "[0-9TZ]{0,17}".prop_map(|u| format!("UNTIL={u}")),
            proptest::collection::vec(-60i64..400, 0..4).prop_map(|v| format!(
                "{}={}",
                [
                    "BYMONTHDAY",
                    "BYSETPOS",
                    "BYYEARDAY",
                    "BYWEEKNO",
                    "BYMONTH",
                    "BYHOUR",
                    "BYMINUTE",
                    "BYSECOND"
                ][(v.len() * 3) % 8],
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )),
            "(-?[0-9]{0,2}(MO|TU|WE|TH|FR|SA|SU|XX),?){0,3}".prop_map(|d| format!("BYDAY={d}")),
            proptest::sample::select(vec!["WKST=SU", "WKST=QQ", "", ";", "=", "FREQ"])
                .prop_map(String::from),
        ];
        let freq = proptest::sample::select(vec![
            "SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY",
        ]);
        (freq, proptest::collection::vec(part, 0..4))
            .prop_map(|(freq, parts)| format!("RRULE:FREQ={freq};{}", parts.join(";")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn arbitrary_rules_give_occurrences_or_errors(rule in rule(), all_day in any::<bool>()) {
            let start = if all_day { "2026-03-29" } else { "2026-03-29T02:30:00[Europe/Berlin]" };
            let e = event(json!({"start": start, "recurrence": {"rules": {"0": rule}}}));
            let options = ExpandOptions { max_scanned: 20_000, ..in_zone("America/New_York") };
            let _ = expand(&e, at("2026-01-01T00:00:00Z"), at("2027-01-01T00:00:00Z"), &options);
            let _ = driftless_crdt_model::recurrence::graph::from_rrule(
                &rule,
                &driftless_crdt_model::recurrence::graph::SeriesStart::of(&e).unwrap(),
            );
        }
    }
}
