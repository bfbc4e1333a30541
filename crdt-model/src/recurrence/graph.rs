//! Microsoft Graph's `patternedRecurrence` <-> RFC 5545 RRULE, as pure functions.
//!
//! Owns the serde types of Graph's recurrence object and the mapping of every pattern type both
//! ways (the table in the shared provider notes, section 2.3):
//!
//! | Graph | RRULE |
//! |---|---|
//! | `daily`, interval n | `FREQ=DAILY;INTERVAL=n` |
//! | `weekly`, days D, firstDayOfWeek W | `FREQ=WEEKLY;INTERVAL=n;BYDAY=D;WKST=W` |
//! | `absoluteMonthly`, dayOfMonth d | `FREQ=MONTHLY;INTERVAL=n;BYMONTHDAY=d` |
//! | `relativeMonthly`, one day D, index k | `FREQ=MONTHLY;INTERVAL=n;BYDAY=kD` (`3TH`, `-1FR`) |
//! | `relativeMonthly`, days D, index k | `FREQ=MONTHLY;INTERVAL=n;BYDAY=D;BYSETPOS=k` |
//! | `absoluteYearly`, month m, day d | `FREQ=YEARLY;INTERVAL=n;BYMONTH=m;BYMONTHDAY=d` |
//! | `relativeYearly`, month m, days D, index k | as relativeMonthly, plus `BYMONTH=m` |
//! | range `numbered` N / `endDate` E / `noEnd` | `COUNT=N` / `UNTIL=` end of E / nothing |
//!
//! (index `first`..`fourth` is 1..4, `last` is -1; `INTERVAL=1` is left out.) `UNTIL` is the end of
//! `endDate` in the series' zone, in UTC (`UNTIL=20261231T225959Z`); a DATE for all-day series.
//!
//! A rule Graph cannot express (`FREQ=HOURLY`/`MINUTELY`/`SECONDLY`, `BYWEEKNO`, `BYYEARDAY`,
//! `BYHOUR`/`BYMINUTE`/`BYSECOND`, several or negative `BYMONTHDAY`, several `BYMONTH`, `BYSETPOS`
//! other than the index forms, ordinals other than 1..4 and -1, `COUNT` with `UNTIL`, EXRULE,
//! RDATEs, several rules) is a [`GraphMappingError::Unexpressible`]: the bridge records it as a
//! conflict on the record and never writes a different rule. Must not: do I/O, or map Windows
//! zone names (the Graph bridge turns `recurrenceTimeZone` into an IANA zone and back).
//!
//! Normal forms: [`from_rrule`] lists `daysOfWeek` Sunday first and only the properties its
//! pattern type uses; [`to_rrule`] lists `BYDAY` Monday first. Equivalent rules written
//! differently (`FREQ=WEEKLY` without `BYDAY`, `BYDAY=TH;BYSETPOS=3`) map to the same pattern, so
//! `to_rrule(from_rrule(r))` may differ from `r` in text but never in its instances.

use chrono::{NaiveDate, NaiveTime, TimeDelta, Weekday};
use chrono_tz::Tz;
use rrule::{Frequency, NWeekday};
use serde::{Deserialize, Serialize};

use super::rule::{RuleLine, UntilValue};
use super::{ExpandError, field_error, zone_of};
use crate::model::{CalendarEvent, Recurrence};
use crate::resolved_time::{place, wall_in};
use crate::time::EventTime;

/// Graph's `patternedRecurrence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PatternedRecurrence {
    pub pattern: RecurrencePattern,
    pub range: RecurrenceRange,
}

/// Graph's `recurrencePattern`. Graph sends every property (zeros and `first` where unused); only
/// the ones the `type` uses are read, and only those are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurrencePattern {
    #[serde(rename = "type")]
    pub pattern_type: PatternType,
    pub interval: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days_of_week: Vec<DayOfWeek>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_of_month: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub month: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<WeekIndex>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_day_of_week: Option<DayOfWeek>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PatternType {
    Daily,
    Weekly,
    AbsoluteMonthly,
    RelativeMonthly,
    AbsoluteYearly,
    RelativeYearly,
    /// A type this build does not know.
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DayOfWeek {
    Sunday,
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
}

/// `index` of the relative patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WeekIndex {
    First,
    Second,
    Third,
    Fourth,
    Last,
}

/// Graph's `recurrenceRange`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecurrenceRange {
    #[serde(rename = "type")]
    pub range_type: RangeType,
    /// The date of the first occurrence (the event's start date in its zone).
    pub start_date: NaiveDate,
    /// Inclusive; for `endDate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<NaiveDate>,
    /// For `numbered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_occurrences: Option<u32>,
    /// A Windows or IANA zone name; the bridge maps it ([`from_rrule`] leaves it `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence_time_zone: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RangeType {
    EndDate,
    NoEnd,
    Numbered,
    /// A type this build does not know.
    #[serde(other)]
    Unknown,
}

/// Where a series starts, which the mapping needs for `startDate` and `UNTIL` <-> `endDate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesStart {
    /// The first instance's date in the series' zone.
    pub date: NaiveDate,
    /// Its wall-clock time (midnight for all-day series): an `UNTIL` earlier in the day than this
    /// ends the series the day before.
    pub time: NaiveTime,
    /// The series' zone; `None` for all-day and floating series.
    pub zone: Option<Tz>,
    pub all_day: bool,
}

impl SeriesStart {
    /// Reads it from a canonical event's `start`.
    pub fn of(event: &CalendarEvent) -> Result<Self, ExpandError> {
        let text = event
            .start
            .as_deref()
            .ok_or_else(|| field_error("start", super::ExpandProblem::Missing))?;
        let start = super::parse_time(text, "start")?;
        let timed = |wall, zone| -> Result<SeriesStart, ExpandError> {
            let wall = super::naive(wall, "start")?;
            Ok(SeriesStart {
                date: wall.date(),
                time: wall.time(),
                zone,
                all_day: false,
            })
        };
        match start {
            EventTime::Date(d) => Ok(SeriesStart {
                date: super::date_of(d, "start")?,
                time: NaiveTime::MIN,
                zone: None,
                all_day: true,
            }),
            EventTime::Floating(w) => timed(w, None),
            EventTime::Utc(w) => timed(w, Some(Tz::UTC)),
            EventTime::Zoned { local, zone, .. } => timed(local, Some(zone_of(&zone, "start")?)),
        }
    }
}

/// Why a rule and a Graph pattern could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphMappingError {
    /// A valid rule that Graph has no pattern for: report a conflict, change nothing.
    #[error("Microsoft Graph cannot express `{rule}`: {reason}")]
    Unexpressible { rule: String, reason: String },
    /// The rule itself is not valid.
    #[error("`{rule}` is not a valid recurrence rule: {reason}")]
    InvalidRule { rule: String, reason: String },
    /// Graph's recurrence object is not valid.
    #[error("invalid Graph recurrence: `{field}` {reason}")]
    InvalidPattern { field: &'static str, reason: String },
}

fn invalid_pattern(field: &'static str, reason: impl Into<String>) -> GraphMappingError {
    GraphMappingError::InvalidPattern {
        field,
        reason: reason.into(),
    }
}

impl DayOfWeek {
    pub fn weekday(self) -> Weekday {
        match self {
            DayOfWeek::Sunday => Weekday::Sun,
            DayOfWeek::Monday => Weekday::Mon,
            DayOfWeek::Tuesday => Weekday::Tue,
            DayOfWeek::Wednesday => Weekday::Wed,
            DayOfWeek::Thursday => Weekday::Thu,
            DayOfWeek::Friday => Weekday::Fri,
            DayOfWeek::Saturday => Weekday::Sat,
        }
    }

    pub fn of(day: Weekday) -> Self {
        match day {
            Weekday::Sun => DayOfWeek::Sunday,
            Weekday::Mon => DayOfWeek::Monday,
            Weekday::Tue => DayOfWeek::Tuesday,
            Weekday::Wed => DayOfWeek::Wednesday,
            Weekday::Thu => DayOfWeek::Thursday,
            Weekday::Fri => DayOfWeek::Friday,
            Weekday::Sat => DayOfWeek::Saturday,
        }
    }
}

impl WeekIndex {
    /// The RRULE ordinal: 1..4, or -1 for `last`.
    pub fn ordinal(self) -> i32 {
        match self {
            WeekIndex::First => 1,
            WeekIndex::Second => 2,
            WeekIndex::Third => 3,
            WeekIndex::Fourth => 4,
            WeekIndex::Last => -1,
        }
    }

    pub fn from_ordinal(n: i32) -> Option<Self> {
        Some(match n {
            1 => WeekIndex::First,
            2 => WeekIndex::Second,
            3 => WeekIndex::Third,
            4 => WeekIndex::Fourth,
            -1 => WeekIndex::Last,
            _ => return None,
        })
    }
}

fn day_code(day: Weekday) -> &'static str {
    match day {
        Weekday::Mon => "MO",
        Weekday::Tue => "TU",
        Weekday::Wed => "WE",
        Weekday::Thu => "TH",
        Weekday::Fri => "FR",
        Weekday::Sat => "SA",
        Weekday::Sun => "SU",
    }
}

/// `BYDAY` days, Monday first, without repeats.
fn by_day(days: &[DayOfWeek]) -> String {
    let mut days: Vec<Weekday> = days.iter().map(|d| d.weekday()).collect();
    days.sort_by_key(|d| d.num_days_from_monday());
    days.dedup();
    days.into_iter().map(day_code).collect::<Vec<_>>().join(",")
}

/// The RRULE line (`RRULE:FREQ=...`) for a Graph recurrence.
pub fn to_rrule(
    recurrence: &PatternedRecurrence,
    start: &SeriesStart,
) -> Result<String, GraphMappingError> {
    let p = &recurrence.pattern;
    if p.interval == 0 {
        return Err(invalid_pattern("pattern.interval", "must be at least 1"));
    }
    let month = || match p.month {
        Some(m @ 1..=12) => Ok(m),
        other => Err(invalid_pattern(
            "pattern.month",
            format!("must be 1..=12, is {other:?}"),
        )),
    };
    let day_of_month = || match p.day_of_month {
        Some(d @ 1..=31) => Ok(d),
        other => Err(invalid_pattern(
            "pattern.dayOfMonth",
            format!("must be 1..=31, is {other:?}"),
        )),
    };
    let days = || {
        if p.days_of_week.is_empty() {
            Err(invalid_pattern("pattern.daysOfWeek", "must not be empty"))
        } else {
            Ok(by_day(&p.days_of_week))
        }
    };
    // "the index-th day that is any of these days": BYSETPOS, or the ordinal form for one day.
    let relative = || -> Result<String, GraphMappingError> {
        let ordinal = p.index.unwrap_or(WeekIndex::First).ordinal();
        let days = days()?;
        Ok(if days.contains(',') {
            format!("BYDAY={days};BYSETPOS={ordinal}")
        } else {
            format!("BYDAY={ordinal}{days}")
        })
    };
    let (freq, by) = match p.pattern_type {
        PatternType::Daily => ("DAILY", String::new()),
        PatternType::Weekly => {
            let wkst = p.first_day_of_week.unwrap_or(DayOfWeek::Sunday).weekday();
            (
                "WEEKLY",
                format!("BYDAY={};WKST={}", days()?, day_code(wkst)),
            )
        }
        PatternType::AbsoluteMonthly => ("MONTHLY", format!("BYMONTHDAY={}", day_of_month()?)),
        PatternType::RelativeMonthly => ("MONTHLY", relative()?),
        PatternType::AbsoluteYearly => (
            "YEARLY",
            format!("BYMONTH={};BYMONTHDAY={}", month()?, day_of_month()?),
        ),
        PatternType::RelativeYearly => ("YEARLY", format!("BYMONTH={};{}", month()?, relative()?)),
        PatternType::Unknown => {
            return Err(invalid_pattern(
                "pattern.type",
                "is not a known pattern type",
            ));
        }
    };
    let mut line = format!("RRULE:FREQ={freq}");
    if p.interval > 1 {
        line.push_str(&format!(";INTERVAL={}", p.interval));
    }
    if !by.is_empty() {
        line.push(';');
        line.push_str(&by);
    }
    let r = &recurrence.range;
    match r.range_type {
        RangeType::NoEnd => {}
        RangeType::Numbered => match r.number_of_occurrences {
            Some(n) if n > 0 => line.push_str(&format!(";COUNT={n}")),
            other => {
                return Err(invalid_pattern(
                    "range.numberOfOccurrences",
                    format!("must be at least 1, is {other:?}"),
                ));
            }
        },
        RangeType::EndDate => {
            let end = r
                .end_date
                .ok_or_else(|| invalid_pattern("range.endDate", "is missing"))?;
            line.push_str(&format!(";UNTIL={}", until_of_end_date(end, start)));
        }
        RangeType::Unknown => {
            return Err(invalid_pattern("range.type", "is not a known range type"));
        }
    }
    Ok(line)
}

/// The end of `end` (inclusive) as an `UNTIL` value.
fn until_of_end_date(end: NaiveDate, start: &SeriesStart) -> String {
    if start.all_day {
        return end.format("%Y%m%d").to_string();
    }
    let last_second = end.and_hms_opt(23, 59, 59).unwrap_or_default();
    match start.zone {
        None => last_second.format("%Y%m%dT%H%M%S").to_string(),
        Some(zone) => {
            let next_midnight = last_second + TimeDelta::seconds(1);
            let until = place(zone, next_midnight, None) - TimeDelta::seconds(1);
            until.format("%Y%m%dT%H%M%SZ").to_string()
        }
    }
}

/// The last date with an instance under `UNTIL`: Graph's patterns have at most one instance a
/// day, at the start's time, so an UNTIL earlier in the day than that ends on the day before.
fn end_date_of_until(until: UntilValue, start: &SeriesStart) -> NaiveDate {
    let wall = match until {
        UntilValue::Date(d) => return d,
        UntilValue::Floating(t) => t,
        UntilValue::Utc(t) => match start.zone {
            Some(zone) => wall_in(zone, t.and_utc()),
            None => t,
        },
    };
    if start.all_day || wall.time() >= start.time {
        wall.date()
    } else {
        wall.date().pred_opt().unwrap_or(wall.date())
    }
}

/// The Graph recurrence for a whole canonical `recurrence`: exactly one RRULE and no RDATEs.
/// EXDATEs are not part of Graph's recurrence (the bridge deletes those occurrences).
pub fn from_recurrence(
    recurrence: &Recurrence,
    start: &SeriesStart,
) -> Result<PatternedRecurrence, GraphMappingError> {
    let summary = || {
        recurrence
            .rules
            .values()
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    };
    if !recurrence.rdates.is_empty() {
        return Err(GraphMappingError::Unexpressible {
            rule: summary(),
            reason: "Graph has no RDATE (extra instances)".into(),
        });
    }
    let mut rules = recurrence.rules.values();
    match (rules.next(), rules.next()) {
        (Some(rule), None) => from_rrule(rule, start),
        (None, _) => Err(GraphMappingError::InvalidRule {
            rule: String::new(),
            reason: "the recurrence has no rule".into(),
        }),
        (Some(_), Some(_)) => Err(GraphMappingError::Unexpressible {
            rule: summary(),
            reason: "Graph has one pattern per series, not several rules".into(),
        }),
    }
}

/// The Graph recurrence for one RRULE line (`RRULE:FREQ=...` or a bare `FREQ=...`).
pub fn from_rrule(
    line: &str,
    start: &SeriesStart,
) -> Result<PatternedRecurrence, GraphMappingError> {
    let unexpressible = |reason: &str| GraphMappingError::Unexpressible {
        rule: line.to_owned(),
        reason: reason.to_owned(),
    };
    let invalid = |reason: String| GraphMappingError::InvalidRule {
        rule: line.to_owned(),
        reason,
    };
    let split = RuleLine::split(line).map_err(|e| invalid(e.to_string()))?;
    if split.exclude {
        return Err(unexpressible("Graph has no EXRULE"));
    }
    let rule = split
        .unvalidated(line)
        .map_err(|e| invalid(e.to_string()))?;

    if !rule.get_by_week_no().is_empty() {
        return Err(unexpressible("Graph has no BYWEEKNO"));
    }
    if !rule.get_by_year_day().is_empty() {
        return Err(unexpressible("Graph has no BYYEARDAY"));
    }
    if !rule.get_by_hour().is_empty()
        || !rule.get_by_minute().is_empty()
        || !rule.get_by_second().is_empty()
    {
        return Err(unexpressible(
            "Graph has no BYHOUR/BYMINUTE/BYSECOND (one instance per day at the start time)",
        ));
    }
    if rule.get_count().is_some() && split.until.is_some() {
        return Err(unexpressible(
            "Graph ends a series by COUNT or UNTIL, not both",
        ));
    }
    let interval = u32::from(rule.get_interval()).max(1);
    let by_month = rule.get_by_month();
    let month_days: Vec<i32> = rule
        .get_by_month_day()
        .iter()
        .map(|d| i32::from(*d))
        .collect();
    let set_pos = rule.get_by_set_pos();
    let weekdays = rule.get_by_weekday();

    let every_days = || -> Option<Vec<DayOfWeek>> {
        let mut days = Vec::new();
        for d in weekdays {
            match d {
                NWeekday::Every(day) => days.push(DayOfWeek::of(*day)),
                NWeekday::Nth(..) => return None,
            }
        }
        days.sort();
        days.dedup();
        Some(days)
    };
    let single_month_day = || -> Result<Option<u32>, GraphMappingError> {
        match month_days.as_slice() {
            [] => Ok(None),
            [d] if *d > 0 => Ok(u32::try_from(*d).ok()),
            [_] => Err(unexpressible(
                "Graph has no negative BYMONTHDAY (days counted from the month's end)",
            )),
            _ => Err(unexpressible("Graph has one day of the month, not several")),
        }
    };
    // BYDAY with an ordinal (`3TH`) or BYDAY plus BYSETPOS: Graph's relative patterns.
    let relative = || -> Result<(Vec<DayOfWeek>, WeekIndex), GraphMappingError> {
        let index_of = |n: i32| {
            WeekIndex::from_ordinal(n)
                .ok_or_else(|| unexpressible("Graph's index is first..fourth or last (1..4 or -1)"))
        };
        match (weekdays, set_pos) {
            ([NWeekday::Nth(n, day)], []) => {
                Ok((vec![DayOfWeek::of(*day)], index_of(i32::from(*n))?))
            }
            (_, [pos]) => {
                let days = every_days().ok_or_else(|| {
                    unexpressible("Graph cannot combine BYSETPOS with ordinal BYDAY values")
                })?;
                Ok((days, index_of(*pos)?))
            }
            (_, []) => Err(unexpressible(
                "Graph picks one weekday of the month: an ordinal BYDAY for a single day \
                 (3TH) or BYSETPOS, not several ordinals or every such weekday",
            )),
            _ => Err(unexpressible("Graph has one BYSETPOS value, not several")),
        }
    };
    let start_day = DayOfWeek::of(chrono::Datelike::weekday(&start.date));
    let start_month_day = chrono::Datelike::day(&start.date);
    let start_month = chrono::Datelike::month(&start.date);

    let pattern = match rule.get_freq() {
        Frequency::Daily => {
            if !by_month.is_empty() || !month_days.is_empty() || !set_pos.is_empty() {
                return Err(unexpressible(
                    "Graph's daily pattern has no BYMONTH, BYMONTHDAY or BYSETPOS",
                ));
            }
            if weekdays.is_empty() {
                pattern(PatternType::Daily, interval)
            } else {
                // "Every weekday" as FREQ=DAILY;BYDAY=...: Graph's weekly pattern, if every week.
                let days = every_days().ok_or_else(|| {
                    unexpressible("ordinal BYDAY values need FREQ=MONTHLY or YEARLY")
                })?;
                if interval != 1 {
                    return Err(unexpressible(
                        "FREQ=DAILY with BYDAY and an INTERVAL has no Graph pattern",
                    ));
                }
                RecurrencePattern {
                    days_of_week: days,
                    first_day_of_week: Some(DayOfWeek::of(rule.get_week_start())),
                    ..pattern(PatternType::Weekly, 1)
                }
            }
        }
        Frequency::Weekly => {
            if !by_month.is_empty() || !month_days.is_empty() || !set_pos.is_empty() {
                return Err(unexpressible(
                    "Graph's weekly pattern has no BYMONTH, BYMONTHDAY or BYSETPOS",
                ));
            }
            let days = every_days()
                .ok_or_else(|| unexpressible("ordinal BYDAY values need FREQ=MONTHLY or YEARLY"))?;
            RecurrencePattern {
                days_of_week: if days.is_empty() {
                    vec![start_day]
                } else {
                    days
                },
                first_day_of_week: Some(DayOfWeek::of(rule.get_week_start())),
                ..pattern(PatternType::Weekly, interval)
            }
        }
        Frequency::Monthly => {
            if !by_month.is_empty() {
                return Err(unexpressible("Graph's monthly patterns have no BYMONTH"));
            }
            if weekdays.is_empty() {
                if !set_pos.is_empty() {
                    return Err(unexpressible("BYSETPOS without BYDAY has no Graph pattern"));
                }
                RecurrencePattern {
                    day_of_month: Some(single_month_day()?.unwrap_or(start_month_day)),
                    ..pattern(PatternType::AbsoluteMonthly, interval)
                }
            } else {
                if !month_days.is_empty() {
                    return Err(unexpressible("Graph cannot combine BYMONTHDAY with BYDAY"));
                }
                let (days, index) = relative()?;
                RecurrencePattern {
                    days_of_week: days,
                    index: Some(index),
                    ..pattern(PatternType::RelativeMonthly, interval)
                }
            }
        }
        Frequency::Yearly => {
            let month = match by_month {
                [] if month_days.is_empty() && weekdays.is_empty() && set_pos.is_empty() => {
                    start_month
                }
                [] => {
                    return Err(unexpressible(
                        "a yearly rule with BYMONTHDAY, BYDAY or BYSETPOS needs one BYMONTH for Graph",
                    ));
                }
                [m] => u32::from(*m),
                _ => return Err(unexpressible("Graph has one month, not several")),
            };
            if weekdays.is_empty() {
                if !set_pos.is_empty() {
                    return Err(unexpressible("BYSETPOS without BYDAY has no Graph pattern"));
                }
                RecurrencePattern {
                    month: Some(month),
                    day_of_month: Some(single_month_day()?.unwrap_or(start_month_day)),
                    ..pattern(PatternType::AbsoluteYearly, interval)
                }
            } else {
                if !month_days.is_empty() {
                    return Err(unexpressible("Graph cannot combine BYMONTHDAY with BYDAY"));
                }
                let (days, index) = relative()?;
                RecurrencePattern {
                    month: Some(month),
                    days_of_week: days,
                    index: Some(index),
                    ..pattern(PatternType::RelativeYearly, interval)
                }
            }
        }
        other => {
            return Err(unexpressible(&format!(
                "Graph has no FREQ={} (daily is its shortest pattern)",
                other.to_string().to_uppercase()
            )));
        }
    };

    let range = match (rule.get_count(), split.until) {
        (Some(n), _) => RecurrenceRange {
            number_of_occurrences: Some(n),
            ..range(RangeType::Numbered, start.date)
        },
        (None, Some(until)) => RecurrenceRange {
            end_date: Some(end_date_of_until(until, start)),
            ..range(RangeType::EndDate, start.date)
        },
        (None, None) => range(RangeType::NoEnd, start.date),
    };
    Ok(PatternedRecurrence { pattern, range })
}

fn pattern(pattern_type: PatternType, interval: u32) -> RecurrencePattern {
    RecurrencePattern {
        pattern_type,
        interval,
        days_of_week: Vec::new(),
        day_of_month: None,
        month: None,
        index: None,
        first_day_of_week: None,
    }
}

fn range(range_type: RangeType, start_date: NaiveDate) -> RecurrenceRange {
    RecurrenceRange {
        range_type,
        start_date,
        end_date: None,
        number_of_occurrences: None,
        recurrence_time_zone: None,
    }
}
