//! Graph `patternedRecurrence` <-> RRULE: every pattern type both ways, the rules Graph cannot
//! express, and round-trip properties (Graph -> RRULE -> Graph is the identity on normal forms;
//! RRULE -> Graph -> RRULE keeps every instance, checked by expanding both).
#![allow(clippy::unwrap_used)]

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use driftless_crdt_model::CalendarEvent;
use driftless_crdt_model::Recurrence;
use driftless_crdt_model::recurrence::graph::{
    DayOfWeek, GraphMappingError, PatternType, PatternedRecurrence, RangeType, RecurrencePattern,
    RecurrenceRange, SeriesStart, WeekIndex, from_recurrence, from_rrule, to_rrule,
};
use driftless_crdt_model::recurrence::{ExpandOptions, expand};
use proptest::prelude::*;
use serde_json::json;

fn berlin() -> Tz {
    "Europe/Berlin".parse().unwrap()
}

fn start(date: &str, time: &str, zone: Option<Tz>) -> SeriesStart {
    SeriesStart {
        date: date.parse().unwrap(),
        time: time.parse().unwrap(),
        zone,
        all_day: false,
    }
}

fn graph(value: serde_json::Value) -> PatternedRecurrence {
    serde_json::from_value(value).unwrap()
}

#[test]
fn every_pattern_type_maps_both_ways() {
    let s = start("2026-01-15", "18:30:00", Some(berlin()));
    // (Graph as Graph sends it, with its zeros and defaults; the RRULE; the normal form back.)
    let table = [
        (
            json!({"pattern": {"type": "daily", "interval": 2, "month": 0, "dayOfMonth": 0,
                               "firstDayOfWeek": "sunday", "index": "first"},
                   "range": {"type": "noEnd", "startDate": "2026-01-15", "endDate": "0001-01-01",
                             "numberOfOccurrences": 0, "recurrenceTimeZone": "W. Europe Standard Time"}}),
            "RRULE:FREQ=DAILY;INTERVAL=2",
        ),
        (
            json!({"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["thursday", "monday"],
                               "firstDayOfWeek": "sunday"},
                   "range": {"type": "numbered", "startDate": "2026-01-15", "numberOfOccurrences": 10}}),
            "RRULE:FREQ=WEEKLY;BYDAY=MO,TH;WKST=SU;COUNT=10",
        ),
        (
            json!({"pattern": {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 15},
                   "range": {"type": "endDate", "startDate": "2026-01-15", "endDate": "2026-12-31"}}),
            "RRULE:FREQ=MONTHLY;BYMONTHDAY=15;UNTIL=20261231T225959Z",
        ),
        (
            json!({"pattern": {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["thursday"],
                               "index": "third"},
                   "range": {"type": "noEnd", "startDate": "2026-01-15"}}),
            "RRULE:FREQ=MONTHLY;BYDAY=3TH",
        ),
        (
            json!({"pattern": {"type": "relativeMonthly", "interval": 3,
                               "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"],
                               "index": "last"},
                   "range": {"type": "noEnd", "startDate": "2026-01-15"}}),
            "RRULE:FREQ=MONTHLY;INTERVAL=3;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1",
        ),
        (
            json!({"pattern": {"type": "absoluteYearly", "interval": 1, "month": 1, "dayOfMonth": 15},
                   "range": {"type": "numbered", "startDate": "2026-01-15", "numberOfOccurrences": 3}}),
            "RRULE:FREQ=YEARLY;BYMONTH=1;BYMONTHDAY=15;COUNT=3",
        ),
        (
            json!({"pattern": {"type": "relativeYearly", "interval": 1, "month": 1,
                               "daysOfWeek": ["thursday"], "index": "third"},
                   "range": {"type": "noEnd", "startDate": "2026-01-15"}}),
            "RRULE:FREQ=YEARLY;BYMONTH=1;BYDAY=3TH",
        ),
    ];
    for (graph_json, rrule) in table {
        let g = graph(graph_json);
        assert_eq!(to_rrule(&g, &s).unwrap(), rrule);
        let back = from_rrule(rrule, &s).unwrap();
        // The normal form: only the properties the type uses, no zone name (the bridge sets it).
        assert_eq!(back.pattern.pattern_type, g.pattern.pattern_type, "{rrule}");
        assert_eq!(back.range.range_type, g.range.range_type, "{rrule}");
        assert_eq!(to_rrule(&back, &s).unwrap(), rrule, "{rrule}");
    }
}

#[test]
fn equivalent_rules_map_to_one_pattern() {
    let s = start("2026-01-15", "18:30:00", Some(berlin()));
    let weekly = from_rrule("RRULE:FREQ=WEEKLY", &s).unwrap();
    assert_eq!(weekly.pattern.days_of_week, vec![DayOfWeek::Thursday]);
    assert_eq!(weekly.pattern.first_day_of_week, Some(DayOfWeek::Monday));
    assert_eq!(
        from_rrule("RRULE:FREQ=MONTHLY;BYDAY=TH;BYSETPOS=3", &s).unwrap(),
        from_rrule("RRULE:FREQ=MONTHLY;BYDAY=3TH", &s).unwrap()
    );
    let monthly = from_rrule("FREQ=MONTHLY", &s).unwrap();
    assert_eq!(monthly.pattern.pattern_type, PatternType::AbsoluteMonthly);
    assert_eq!(monthly.pattern.day_of_month, Some(15));
    let yearly = from_rrule("RRULE:FREQ=YEARLY", &s).unwrap();
    assert_eq!(
        (yearly.pattern.month, yearly.pattern.day_of_month),
        (Some(1), Some(15))
    );
    let weekdays = from_rrule("RRULE:FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR", &s).unwrap();
    assert_eq!(weekdays.pattern.pattern_type, PatternType::Weekly);
    assert_eq!(weekdays.pattern.days_of_week.len(), 5);
    // UNTIL before the start's time of day ends the series the day before.
    let early = from_rrule("RRULE:FREQ=DAILY;UNTIL=20260301T080000Z", &s).unwrap();
    assert_eq!(early.range.end_date, Some("2026-02-28".parse().unwrap()));
    let late = from_rrule("RRULE:FREQ=DAILY;UNTIL=20260301T173000Z", &s).unwrap();
    assert_eq!(late.range.end_date, Some("2026-03-01".parse().unwrap()));
    // All-day series use DATE values.
    let all_day = SeriesStart {
        all_day: true,
        time: NaiveTime::MIN,
        zone: None,
        ..s
    };
    let g = from_rrule("RRULE:FREQ=YEARLY;UNTIL=20301231", &all_day).unwrap();
    assert_eq!(
        to_rrule(&g, &all_day).unwrap(),
        "RRULE:FREQ=YEARLY;BYMONTH=1;BYMONTHDAY=15;UNTIL=20301231"
    );
}

#[test]
fn rules_graph_cannot_express_are_errors_not_changes() {
    let s = start("2026-01-15", "18:30:00", Some(berlin()));
    for rule in [
        "RRULE:FREQ=HOURLY",
        "RRULE:FREQ=MINUTELY;INTERVAL=15",
        "RRULE:FREQ=SECONDLY",
        "RRULE:FREQ=YEARLY;BYWEEKNO=20",
        "RRULE:FREQ=YEARLY;BYYEARDAY=100",
        "RRULE:FREQ=MONTHLY;BYMONTHDAY=1,15",
        "RRULE:FREQ=MONTHLY;BYMONTHDAY=-1",
        "RRULE:FREQ=YEARLY;BYMONTH=1,7",
        "RRULE:FREQ=MONTHLY;BYDAY=TH",
        "RRULE:FREQ=MONTHLY;BYDAY=1MO,3MO",
        "RRULE:FREQ=MONTHLY;BYDAY=5FR",
        "RRULE:FREQ=MONTHLY;BYDAY=-2FR",
        "RRULE:FREQ=MONTHLY;BYDAY=MO,FR;BYSETPOS=1,-1",
        "RRULE:FREQ=MONTHLY;BYDAY=MO;BYSETPOS=5",
        "RRULE:FREQ=WEEKLY;BYDAY=MO;BYSETPOS=1",
        "RRULE:FREQ=DAILY;BYHOUR=9,17",
        "RRULE:FREQ=DAILY;COUNT=3;UNTIL=20261231T000000Z",
        "RRULE:FREQ=DAILY;INTERVAL=2;BYDAY=MO,WE",
        "RRULE:FREQ=YEARLY;BYMONTHDAY=5",
        "EXRULE:FREQ=WEEKLY",
    ] {
        match from_rrule(rule, &s) {
            Err(GraphMappingError::Unexpressible {
                rule: named,
                reason,
            }) => {
                assert_eq!(named, rule);
                assert!(!reason.is_empty());
            }
            other => panic!("{rule}: {other:?}"),
        }
    }
    for rule in [
        "RRULE:FREQ=NEVER",
        "RRULE:FREQ=DAILY;UNTIL=soon",
        "DTSTART:20260101T000000Z",
    ] {
        assert!(
            matches!(
                from_rrule(rule, &s),
                Err(GraphMappingError::InvalidRule { .. })
            ),
            "{rule}"
        );
    }
    let mut rec = Recurrence::default();
    rec.rules.insert("0".into(), "RRULE:FREQ=WEEKLY".into());
    rec.rules
        .insert("1".into(), "RRULE:FREQ=MONTHLY;BYDAY=1MO".into());
    assert!(matches!(
        from_recurrence(&rec, &s),
        Err(GraphMappingError::Unexpressible { .. })
    ));
    rec.rules.remove("1");
    assert!(from_recurrence(&rec, &s).is_ok());
    rec.rdates
        .insert("20260301T173000Z".into(), "2026-03-01T17:30:00Z".into());
    assert!(matches!(
        from_recurrence(&rec, &s),
        Err(GraphMappingError::Unexpressible { .. })
    ));
}

#[test]
fn invalid_graph_patterns_are_errors() {
    let s = start("2026-01-15", "18:30:00", Some(berlin()));
    for value in [
        json!({"pattern": {"type": "weekly", "interval": 1, "daysOfWeek": []},
               "range": {"type": "noEnd", "startDate": "2026-01-15"}}),
        json!({"pattern": {"type": "absoluteMonthly", "interval": 1, "dayOfMonth": 0},
               "range": {"type": "noEnd", "startDate": "2026-01-15"}}),
        json!({"pattern": {"type": "absoluteYearly", "interval": 1, "month": 13, "dayOfMonth": 1},
               "range": {"type": "noEnd", "startDate": "2026-01-15"}}),
        json!({"pattern": {"type": "daily", "interval": 0},
               "range": {"type": "noEnd", "startDate": "2026-01-15"}}),
        json!({"pattern": {"type": "daily", "interval": 1},
               "range": {"type": "numbered", "startDate": "2026-01-15", "numberOfOccurrences": 0}}),
        json!({"pattern": {"type": "daily", "interval": 1},
               "range": {"type": "endDate", "startDate": "2026-01-15"}}),
        json!({"pattern": {"type": "fortnightly", "interval": 1},
               "range": {"type": "noEnd", "startDate": "2026-01-15"}}),
    ] {
        let g = graph(value.clone());
        assert!(
            matches!(
                to_rrule(&g, &s),
                Err(GraphMappingError::InvalidPattern { .. })
            ),
            "{value}"
        );
    }
}

// ---- properties ----

const DAYS: [DayOfWeek; 7] = [
    DayOfWeek::Sunday,
    DayOfWeek::Monday,
    DayOfWeek::Tuesday,
    DayOfWeek::Wednesday,
    DayOfWeek::Thursday,
    DayOfWeek::Friday,
    DayOfWeek::Saturday,
];
const INDEXES: [WeekIndex; 5] = [
    WeekIndex::First,
    WeekIndex::Second,
    WeekIndex::Third,
    WeekIndex::Fourth,
    WeekIndex::Last,
];

fn days() -> impl Strategy<Value = Vec<DayOfWeek>> {
    proptest::sample::subsequence(DAYS.to_vec(), 1..=7)
}

fn series_start() -> impl Strategy<Value = SeriesStart> {
    (
        0u32..365,
        0u32..24,
        prop_oneof![Just(0u32), Just(30)],
        0usize..4,
    )
        .prop_map(|(day, hour, minute, zone)| {
            let date = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Days::new(day.into());
            let zones = [
                Some("Europe/Berlin"),
                Some("America/New_York"),
                Some("UTC"),
                None,
            ];
            match zones[zone] {
                Some(z) => SeriesStart {
                    date,
                    time: NaiveTime::from_hms_opt(hour, minute, 0).unwrap(),
                    zone: Some(z.parse().unwrap()),
                    all_day: false,
                },
                None => SeriesStart {
                    date,
                    time: NaiveTime::MIN,
                    zone: None,
                    all_day: true,
                },
            }
        })
}

/// Graph recurrences in normal form (what `from_rrule` produces).
fn normal_graph(start: SeriesStart) -> impl Strategy<Value = PatternedRecurrence> {
    let pattern = (
        0usize..6,
        1u32..5,
        days(),
        1u32..=31,
        1u32..=12,
        0usize..5,
        0usize..7,
    )
        .prop_map(|(kind, interval, days, day_of_month, month, index, wkst)| {
            let base = RecurrencePattern {
                pattern_type: PatternType::Daily,
                interval,
                days_of_week: Vec::new(),
                day_of_month: None,
                month: None,
                index: None,
                first_day_of_week: None,
            };
            match kind {
                0 => base,
                1 => RecurrencePattern {
                    pattern_type: PatternType::Weekly,
                    days_of_week: days,
                    first_day_of_week: Some(DAYS[wkst]),
                    ..base
                },
                2 => RecurrencePattern {
                    pattern_type: PatternType::AbsoluteMonthly,
                    day_of_month: Some(day_of_month),
                    ..base
                },
                3 => RecurrencePattern {
                    pattern_type: PatternType::RelativeMonthly,
                    days_of_week: days,
                    index: Some(INDEXES[index]),
                    ..base
                },
                4 => RecurrencePattern {
                    pattern_type: PatternType::AbsoluteYearly,
                    month: Some(month),
                    day_of_month: Some(day_of_month),
                    ..base
                },
                _ => RecurrencePattern {
                    pattern_type: PatternType::RelativeYearly,
                    month: Some(month),
                    days_of_week: days,
                    index: Some(INDEXES[index]),
                    ..base
                },
            }
        });
    let range = (0usize..3, 1u32..50, 0u64..2000).prop_map(move |(kind, n, days)| {
        let base = RecurrenceRange {
            range_type: RangeType::NoEnd,
            start_date: start.date,
            end_date: None,
            number_of_occurrences: None,
            recurrence_time_zone: None,
        };
        match kind {
            0 => base,
            1 => RecurrenceRange {
                range_type: RangeType::Numbered,
                number_of_occurrences: Some(n),
                ..base
            },
            _ => RecurrenceRange {
                range_type: RangeType::EndDate,
                end_date: Some(start.date + chrono::Days::new(days)),
                ..base
            },
        }
    });
    (pattern, range).prop_map(|(pattern, range)| PatternedRecurrence { pattern, range })
}

/// Rules Graph can express, in the many spellings clients use.
fn expressible_rule() -> impl Strategy<Value = String> {
    let weekday_codes = ["SU", "MO", "TU", "WE", "TH", "FR", "SA"];
    let codes =
        proptest::sample::subsequence(weekday_codes.to_vec(), 1..=7).prop_map(|c| c.join(","));
    let ordinal = prop_oneof![Just(1), Just(2), Just(3), Just(4), Just(-1)];
    let by = (
        0usize..9,
        codes,
        ordinal,
        proptest::sample::select(weekday_codes.to_vec()),
        1u32..=31,
        1u32..=12,
    )
        .prop_map(|(kind, codes, k, one, d, m)| match kind {
            0 => "FREQ=DAILY".to_owned(),
            1 => format!("FREQ=WEEKLY;BYDAY={codes}"),
            2 => "FREQ=WEEKLY".to_owned(),
            3 => format!("FREQ=MONTHLY;BYMONTHDAY={d}"),
            4 => format!("FREQ=MONTHLY;BYDAY={k}{one}"),
            5 => format!("FREQ=MONTHLY;BYDAY={codes};BYSETPOS={k}"),
            6 => format!("FREQ=YEARLY;BYMONTH={m};BYMONTHDAY={d}"),
            7 => format!("FREQ=YEARLY;BYMONTH={m};BYDAY={k}{one}"),
            _ => format!("FREQ=YEARLY;BYMONTH={m};BYDAY={codes};BYSETPOS={k}"),
        });
    let end = prop_oneof![
        Just(String::new()),
        (1u32..40).prop_map(|n| format!(";COUNT={n}")),
        (0i64..900 * 24).prop_map(|hours| {
            let t = DateTime::<Utc>::from_timestamp(1_767_225_600 + hours * 3600, 0).unwrap();
            format!(";UNTIL={}", t.format("%Y%m%dT%H%M%SZ"))
        }),
    ];
    (by, 1u32..4, end, proptest::option::of(0usize..7)).prop_map(|(by, interval, end, wkst)| {
        let mut rule = format!("RRULE:{by}");
        if interval > 1 {
            rule.push_str(&format!(";INTERVAL={interval}"));
        }
        if let Some(w) = wkst {
            rule.push_str(&format!(
                ";WKST={}",
                ["SU", "MO", "TU", "WE", "TH", "FR", "SA"][w]
            ));
        }
        rule + &end
    })
}

fn start_text(s: &SeriesStart) -> String {
    match s.zone {
        None => s.date.to_string(),
        Some(Tz::UTC) => format!("{}T{}Z", s.date, s.time),
        Some(z) => format!("{}T{}[{}]", s.date, s.time, z.name()),
    }
}

/// Every occurrence start of a series with `rule` in about three years.
fn instances(s: &SeriesStart, rule: &str) -> Vec<String> {
    let event: CalendarEvent = serde_json::from_value(json!({
        "start": start_text(s),
        "recurrence": {"rules": {"0": rule}},
    }))
    .unwrap();
    let from = s.date.and_time(NaiveTime::MIN).and_utc() - chrono::TimeDelta::days(2);
    let to = from + chrono::TimeDelta::days(3 * 366);
    let expansion = expand(&event, from, to, &ExpandOptions::default()).unwrap();
    assert!(!expansion.truncated);
    expansion
        .occurrences
        .iter()
        .map(|o| format!("{:?}", o.start))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn graph_to_rrule_to_graph_is_the_identity(
        (s, g) in series_start().prop_flat_map(|s| (Just(s), normal_graph(s)))
    ) {
        let rule = to_rrule(&g, &s).unwrap();
        let mut back = from_rrule(&rule, &s).unwrap();
        back.range.recurrence_time_zone = g.range.recurrence_time_zone.clone();
        prop_assert_eq!(back, g, "{}", rule);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn rrule_to_graph_to_rrule_keeps_every_instance(s in series_start(), rule in expressible_rule()) {
        let g = from_rrule(&rule, &s).unwrap();
        let again = to_rrule(&g, &s).unwrap();
        // The normal form is a fixed point.
        prop_assert_eq!(from_rrule(&again, &s).unwrap(), g.clone());
        prop_assert_eq!(instances(&s, &rule), instances(&s, &again), "{} -> {}", rule, again);
    }
}
