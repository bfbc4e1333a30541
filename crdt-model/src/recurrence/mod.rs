//! Recurrence: expanding one canonical `calendar_event` into its occurrences in a window, and
//! (in [`graph`]) mapping rules to and from Microsoft Graph's `patternedRecurrence`.
//!
//! Owns the reading of `start`/`end`, `recurrence` (RRULE lines, RDATEs, EXDATEs) and `overrides`:
//! which instances a series has, where each one is, and what it is called. Must not write
//! documents, do I/O, or guess: bad data is an [`ExpandError`] naming the field, never a panic.
//!
//! # Semantics (docs/record-model.md, "Recurrence", says the same for app developers)
//! - Rules are evaluated by the `rrule` crate in the series' *wall time*; each wall time is then
//!   placed in the series' zone. A wall time that does not exist (a DST gap) takes the offset
//!   before the gap, an ambiguous one its first occurrence (RFC 5545 §3.3.5), so a 10:00 Berlin
//!   meeting stays at 10:00 across DST. UTC starts are zoned in UTC; floating and all-day series
//!   are placed in the viewer's zone ([`ExpandOptions::zone`]).
//! - DTSTART is always an instance (RFC 5545 §3.8.5.3), also when the rules would not produce it.
//!   RDATEs add instances, EXDATEs remove them (compared in the series' wall time).
//! - `UNTIL` in UTC is converted to the series' wall time; a date-only `UNTIL` on a timed series
//!   includes that whole day (Google writes such rules); on an all-day series it is inclusive.
//! - Durations: a timed occurrence lasts exactly `end - start` (instants); an all-day one the same
//!   number of days. A missing `end` means zero length (timed) or one day (all-day).
//! - Overrides are keyed by the instance's original start ([`instance_key`]); `cancelled` removes
//!   the instance, `start`/`end` move it (also into or out of the window), `title`, `location` and
//!   `status` replace the series' values. An override whose key is no instance (a stale one after a
//!   rule change) is ignored, as Google and Microsoft do.
//! - An occurrence is listed when it overlaps `[from, to)`: it starts before `to` and ends after
//!   `from` (one without duration: `from <= start < to`).
//! - Runaway rules are bounded: per event and window at most [`ExpandOptions::max_occurrences`]
//!   occurrences are listed and at most [`ExpandOptions::max_scanned`] instances are generated
//!   (counting from DTSTART to the end of the window). Past either, the list is cut and
//!   [`Expansion::truncated`] says so.

pub mod graph;
mod rule;

use std::collections::BTreeMap;

use chrono::{DateTime, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Utc};
use chrono_tz::Tz;

use crate::model::{CalendarEvent, Override};
use crate::resolved_time::{place, wall_in};
use crate::time::{Date, EventTime, TimeParseError, WallTime};

pub use rule::{RuleError, UntilValue};

/// The most occurrences one event lists in one window, by default.
pub const DEFAULT_MAX_OCCURRENCES: usize = 10_000;
/// The most instances generated for one event (from DTSTART to the window's end), by default.
pub const DEFAULT_MAX_SCANNED: usize = 200_000;

/// How to expand.
#[derive(Debug, Clone)]
pub struct ExpandOptions {
    /// The viewer's zone: where floating times and all-day dates are placed.
    pub zone: Tz,
    /// Cap on the occurrences listed per event and window.
    pub max_occurrences: usize,
    /// Cap on the instances generated per event, counted from DTSTART.
    pub max_scanned: usize,
}

impl Default for ExpandOptions {
    fn default() -> Self {
        ExpandOptions {
            zone: Tz::UTC,
            max_occurrences: DEFAULT_MAX_OCCURRENCES,
            max_scanned: DEFAULT_MAX_SCANNED,
        }
    }
}

/// A point of an occurrence: an instant, or a date for all-day values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OccurrenceTime {
    At(DateTime<Utc>),
    Date(NaiveDate),
}

impl OccurrenceTime {
    /// The instant: a date is midnight in `zone`.
    pub fn instant(&self, zone: Tz) -> DateTime<Utc> {
        match self {
            OccurrenceTime::At(t) => *t,
            OccurrenceTime::Date(d) => place(zone, midnight(*d), None),
        }
    }

    pub fn is_date(&self) -> bool {
        matches!(self, OccurrenceTime::Date(_))
    }
}

/// One occurrence of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// The instance key of the original start (the key `overrides` use).
    pub key: String,
    /// Where the rules put the instance, before any move.
    pub original_start: OccurrenceTime,
    pub start: OccurrenceTime,
    /// Exclusive.
    pub end: OccurrenceTime,
    /// True when `start` is a date.
    pub all_day: bool,
    pub title: Option<String>,
    pub location: Option<String>,
    /// `confirmed` unless the event or the override says otherwise.
    pub status: String,
}

/// The occurrences of one event in one window, sorted by start (then original start).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    pub occurrences: Vec<Occurrence>,
    /// True when a cap cut the list (see the module docs).
    pub truncated: bool,
}

/// Why an event could not be expanded. `field` is the dotted path of the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {problem}")]
pub struct ExpandError {
    pub field: String,
    pub problem: ExpandProblem,
}

/// What is wrong with the field an [`ExpandError`] names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandProblem {
    #[error("missing")]
    Missing,
    #[error(transparent)]
    BadTime(#[from] TimeParseError),
    #[error("unknown time zone `{0}` (expected an IANA name such as Europe/Berlin)")]
    UnknownZone(String),
    #[error("{0}")]
    BadRule(#[from] RuleError),
    #[error("{0}")]
    Mismatch(&'static str),
    #[error("`end` is before `start`")]
    EndBeforeStart,
}

fn field_error(field: impl Into<String>, problem: impl Into<ExpandProblem>) -> ExpandError {
    ExpandError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The instance key of an original start, as `overrides`, `exdates` and `rdates` use it: UTC
/// basic form (`20261217T090000Z`) for zoned and UTC times, the basic date (`20261217`) for
/// all-day, and the basic wall time without `Z` (`20261217T100000`) for floating ones.
pub fn instance_key(time: &EventTime) -> Result<String, ExpandError> {
    match time {
        EventTime::Date(d) => Ok(format!("{:04}{:02}{:02}", d.year, d.month, d.day)),
        EventTime::Floating(w) => Ok(naive(*w, "instance")?.format("%Y%m%dT%H%M%S").to_string()),
        _ => Ok(utc_key(instant_of(time, "instance")?)),
    }
}

fn utc_key(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

fn midnight(d: NaiveDate) -> NaiveDateTime {
    d.and_time(NaiveTime::MIN)
}

fn date_of(d: Date, field: &str) -> Result<NaiveDate, ExpandError> {
    NaiveDate::from_ymd_opt(d.year, u32::from(d.month), u32::from(d.day)).ok_or_else(|| {
        field_error(
            field,
            ExpandProblem::Mismatch("date out of the supported range"),
        )
    })
}

fn naive(w: WallTime, field: &str) -> Result<NaiveDateTime, ExpandError> {
    let time = NaiveTime::from_hms_opt(u32::from(w.hour), u32::from(w.minute), u32::from(w.second))
        .ok_or_else(|| field_error(field, ExpandProblem::Mismatch("time out of range")))?;
    Ok(date_of(w.date, field)?.and_time(time))
}

fn zone_of(name: &str, field: &str) -> Result<Tz, ExpandError> {
    name.parse::<Tz>()
        .map_err(|_| field_error(field, ExpandProblem::UnknownZone(name.to_owned())))
}

/// The instant of a UTC or zoned value (`None` offset: resolved in the zone).
fn instant_of(time: &EventTime, field: &str) -> Result<DateTime<Utc>, ExpandError> {
    match time {
        EventTime::Utc(w) => Ok(naive(*w, field)?.and_utc()),
        EventTime::Zoned {
            local,
            offset_minutes,
            zone,
        } => Ok(place(
            zone_of(zone, field)?,
            naive(*local, field)?,
            *offset_minutes,
        )),
        EventTime::Floating(_) | EventTime::Date(_) => Err(field_error(
            field,
            ExpandProblem::Mismatch("expected a UTC or zoned time"),
        )),
    }
}

fn parse_time(value: &str, field: &str) -> Result<EventTime, ExpandError> {
    EventTime::parse(value).map_err(|e| field_error(field, e))
}

/// An override's `start`/`end` as an occurrence point (floating times in the viewer's zone).
fn occurrence_time(value: &str, field: &str, viewer: Tz) -> Result<OccurrenceTime, ExpandError> {
    match parse_time(value, field)? {
        EventTime::Date(d) => Ok(OccurrenceTime::Date(date_of(d, field)?)),
        EventTime::Floating(w) => Ok(OccurrenceTime::At(place(viewer, naive(w, field)?, None))),
        other => Ok(OccurrenceTime::At(instant_of(&other, field)?)),
    }
}

/// Where a series' wall times live.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Frame {
    /// Zoned or UTC: wall times in this zone.
    Zoned(Tz),
    /// Wall times placed in the viewer's zone.
    Floating,
    /// Dates (wall time midnight), placed in the viewer's zone.
    AllDay,
}

/// The parsed series: its frame, DTSTART (wall time) and duration.
struct Series {
    frame: Frame,
    viewer: Tz,
    dtstart: NaiveDateTime,
    /// The written offset of DTSTART, to pick the right one of two ambiguous wall times.
    dtstart_offset: Option<i32>,
    length: Length,
}

#[derive(Debug, Clone, Copy)]
enum Length {
    Exact(TimeDelta),
    Days(u64),
}

impl Series {
    fn read(event: &CalendarEvent, viewer: Tz) -> Result<Self, ExpandError> {
        let start_text = event
            .start
            .as_deref()
            .ok_or_else(|| field_error("start", ExpandProblem::Missing))?;
        let start = parse_time(start_text, "start")?;
        let end = event
            .end
            .as_deref()
            .map(|e| parse_time(e, "end"))
            .transpose()?;
        let (frame, dtstart, dtstart_offset) = match &start {
            EventTime::Date(d) => (Frame::AllDay, midnight(date_of(*d, "start")?), None),
            EventTime::Floating(w) => (Frame::Floating, naive(*w, "start")?, None),
            EventTime::Utc(w) => (Frame::Zoned(Tz::UTC), naive(*w, "start")?, None),
            EventTime::Zoned {
                local,
                offset_minutes,
                zone,
            } => (
                Frame::Zoned(zone_of(zone, "start")?),
                naive(*local, "start")?,
                *offset_minutes,
            ),
        };
        let mut series = Series {
            frame,
            viewer,
            dtstart,
            dtstart_offset,
            length: Length::Exact(TimeDelta::zero()),
        };
        series.length = match (frame, end) {
            (Frame::AllDay, None) => Length::Days(1),
            (Frame::AllDay, Some(EventTime::Date(d))) => {
                let days = (date_of(d, "end")? - dtstart.date()).num_days();
                Length::Days(
                    u64::try_from(days)
                        .map_err(|_| field_error("end", ExpandProblem::EndBeforeStart))?,
                )
            }
            (Frame::AllDay, Some(_)) => {
                return Err(field_error(
                    "end",
                    ExpandProblem::Mismatch("a timed `end` for an all-day `start`"),
                ));
            }
            (_, None) => Length::Exact(TimeDelta::zero()),
            (_, Some(EventTime::Date(_))) => {
                return Err(field_error(
                    "end",
                    ExpandProblem::Mismatch("an all-day `end` for a timed `start`"),
                ));
            }
            (_, Some(end)) => {
                let end_instant = match end {
                    EventTime::Floating(w) => place(viewer, naive(w, "end")?, None),
                    other => instant_of(&other, "end")?,
                };
                let length = end_instant - series.place(dtstart, dtstart_offset);
                if length < TimeDelta::zero() {
                    return Err(field_error("end", ExpandProblem::EndBeforeStart));
                }
                Length::Exact(length)
            }
        };
        Ok(series)
    }

    fn all_day(&self) -> bool {
        self.frame == Frame::AllDay
    }

    /// A wall time of this series as an instant.
    fn place(&self, wall: NaiveDateTime, offset_minutes: Option<i32>) -> DateTime<Utc> {
        match self.frame {
            Frame::Zoned(tz) => place(tz, wall, offset_minutes),
            Frame::Floating | Frame::AllDay => place(self.viewer, wall, None),
        }
    }

    /// An instant as a wall time of this series.
    fn wall(&self, instant: DateTime<Utc>) -> NaiveDateTime {
        match self.frame {
            Frame::Zoned(tz) => wall_in(tz, instant),
            Frame::Floating | Frame::AllDay => wall_in(self.viewer, instant),
        }
    }

    /// The original start of the instance at `wall`, as listed.
    fn original(&self, wall: NaiveDateTime) -> OccurrenceTime {
        if self.all_day() {
            OccurrenceTime::Date(wall.date())
        } else {
            OccurrenceTime::At(self.place(wall, self.offset_hint(wall)))
        }
    }

    /// DTSTART's written offset applies to DTSTART itself only.
    fn offset_hint(&self, wall: NaiveDateTime) -> Option<i32> {
        (wall == self.dtstart)
            .then_some(self.dtstart_offset)
            .flatten()
    }

    fn key(&self, wall: NaiveDateTime) -> String {
        match self.frame {
            Frame::AllDay => wall.format("%Y%m%d").to_string(),
            Frame::Floating => wall.format("%Y%m%dT%H%M%S").to_string(),
            Frame::Zoned(_) => utc_key(self.place(wall, self.offset_hint(wall))),
        }
    }

    /// An override key as a wall time of this series; `None` if it is not a key of this form.
    fn wall_of_key(&self, key: &str) -> Option<NaiveDateTime> {
        match self.frame {
            Frame::AllDay => NaiveDate::parse_from_str(key, "%Y%m%d").ok().map(midnight),
            Frame::Floating => NaiveDateTime::parse_from_str(key, "%Y%m%dT%H%M%S").ok(),
            Frame::Zoned(_) => {
                let utc =
                    NaiveDateTime::parse_from_str(key.strip_suffix('Z')?, "%Y%m%dT%H%M%S").ok()?;
                Some(self.wall(utc.and_utc()))
            }
        }
    }

    /// An RDATE or EXDATE value as a wall time of this series.
    fn wall_of_value(&self, value: &str, field: &str) -> Result<NaiveDateTime, ExpandError> {
        let time = parse_time(value, field)?;
        match (self.frame, time) {
            (Frame::AllDay, EventTime::Date(d)) => Ok(midnight(date_of(d, field)?)),
            (Frame::AllDay, _) => Err(field_error(
                field,
                ExpandProblem::Mismatch("a timed value in an all-day series"),
            )),
            (_, EventTime::Date(_)) => Err(field_error(
                field,
                ExpandProblem::Mismatch("a date in a timed series"),
            )),
            // A floating value in a zoned series reads as the series' wall time.
            (_, EventTime::Floating(w)) => naive(w, field),
            (_, other) => Ok(self.wall(instant_of(&other, field)?)),
        }
    }

    /// The UNTIL of a rule as a wall time of this series (inclusive).
    fn wall_of_until(&self, until: UntilValue) -> NaiveDateTime {
        match (self.frame, until) {
            (Frame::AllDay, UntilValue::Date(d)) => midnight(d),
            // A whole day, on a timed series.
            (_, UntilValue::Date(d)) => d.and_time(NaiveTime::MIN) + TimeDelta::seconds(86_399),
            (Frame::AllDay, UntilValue::Utc(t) | UntilValue::Floating(t)) => t,
            (_, UntilValue::Floating(t)) => t,
            (_, UntilValue::Utc(t)) => self.wall(t.and_utc()),
        }
    }

    fn default_end(&self, start: OccurrenceTime) -> OccurrenceTime {
        match (start, self.length) {
            (OccurrenceTime::Date(d), Length::Days(n)) => {
                OccurrenceTime::Date(d.checked_add_days(Days::new(n)).unwrap_or(d))
            }
            (OccurrenceTime::At(t), Length::Exact(len)) => {
                OccurrenceTime::At(t.checked_add_signed(len).unwrap_or(t))
            }
            // An override that turned a timed instance into an all-day one, or back.
            (OccurrenceTime::Date(d), Length::Exact(_)) => {
                OccurrenceTime::Date(d.checked_add_days(Days::new(1)).unwrap_or(d))
            }
            (at @ OccurrenceTime::At(_), Length::Days(_)) => at,
        }
    }

    /// How far before a window's start an instance may begin and still overlap it.
    fn lead(&self) -> TimeDelta {
        let length = match self.length {
            Length::Exact(len) => len,
            Length::Days(n) => i64::try_from(n)
                .ok()
                .and_then(TimeDelta::try_days)
                .unwrap_or(TimeDelta::MAX),
        };
        // One more day covers any difference between the window's zone and the series' offsets.
        length
            .checked_add(&TimeDelta::days(1))
            .unwrap_or(TimeDelta::MAX)
    }
}

/// Expands `event` into its occurrences that overlap `[from, to)`.
pub fn expand(
    event: &CalendarEvent,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    options: &ExpandOptions,
) -> Result<Expansion, ExpandError> {
    let series = Series::read(event, options.zone)?;
    let set = rule::InstanceSet::build(&series, event.recurrence.as_ref())?;
    // Saturating: no window or event length can make the arithmetic panic.
    let scan_from = series
        .wall(from)
        .checked_sub_signed(series.lead())
        .unwrap_or(NaiveDateTime::MIN);
    let scan_to = series
        .wall(to)
        .checked_add_signed(TimeDelta::days(1))
        .unwrap_or(NaiveDateTime::MAX);

    let mut expansion = Expansion::default();
    let mut listed = Vec::new();
    let scan = set.walls_between(scan_from, scan_to, options.max_scanned);
    expansion.truncated |= scan.truncated;
    for wall in scan.walls {
        let key = series.key(wall);
        let patch = event.overrides.get(&key);
        if let Some(occurrence) = occurrence(event, &series, wall, key, patch)?
            && overlaps(&occurrence, from, to, options.zone)
        {
            listed.push(occurrence);
        }
    }

    // Instances from outside the scanned range that an override moved into the window.
    for (key, patch) in moved_overrides(&event.overrides) {
        let Some(wall) = series.wall_of_key(key) else {
            continue;
        };
        if (scan_from..scan_to).contains(&wall) {
            continue;
        }
        let Some(occurrence) = occurrence(event, &series, wall, key.clone(), Some(patch))? else {
            continue;
        };
        if !overlaps(&occurrence, from, to, options.zone) {
            continue;
        }
        let next = wall
            .checked_add_signed(TimeDelta::seconds(1))
            .unwrap_or(NaiveDateTime::MAX);
        let probe = set.walls_between(wall, next, options.max_scanned);
        expansion.truncated |= probe.truncated;
        if probe.walls.contains(&wall) {
            listed.push(occurrence);
        }
    }

    listed.sort_by_key(|o| {
        (
            o.start.instant(options.zone),
            o.original_start.instant(options.zone),
        )
    });
    if listed.len() > options.max_occurrences {
        listed.truncate(options.max_occurrences);
        expansion.truncated = true;
    }
    expansion.occurrences = listed;
    Ok(expansion)
}

fn moved_overrides(
    overrides: &BTreeMap<String, Override>,
) -> impl Iterator<Item = (&String, &Override)> {
    overrides
        .iter()
        .filter(|(_, o)| !o.cancelled && (o.start.is_some() || o.end.is_some()))
}

/// The occurrence of the instance at `wall` with its override applied; `None` when cancelled.
fn occurrence(
    event: &CalendarEvent,
    series: &Series,
    wall: NaiveDateTime,
    key: String,
    patch: Option<&Override>,
) -> Result<Option<Occurrence>, ExpandError> {
    let empty = Override::default();
    let patch = patch.unwrap_or(&empty);
    if patch.cancelled {
        return Ok(None);
    }
    let original_start = series.original(wall);
    let field = |name: &str| format!("overrides.{key}.{name}");
    let start = match &patch.start {
        Some(s) => occurrence_time(s, &field("start"), series.viewer)?,
        None => original_start,
    };
    let end = match &patch.end {
        Some(e) => occurrence_time(e, &field("end"), series.viewer)?,
        None => series.default_end(start),
    };
    Ok(Some(Occurrence {
        original_start,
        start,
        end,
        all_day: start.is_date(),
        title: patch.title.clone().or_else(|| event.title.clone()),
        location: patch.location.clone().or_else(|| event.location.clone()),
        status: patch
            .status
            .clone()
            .or_else(|| event.status.clone())
            .unwrap_or_else(|| "confirmed".to_owned()),
        key,
    }))
}

fn overlaps(o: &Occurrence, from: DateTime<Utc>, to: DateTime<Utc>, zone: Tz) -> bool {
    let start = o.start.instant(zone);
    let end = o.end.instant(zone);
    start < to && (end > from || (end <= start && start >= from))
}
