//! `start` / `end` values resolved against the zone database (chrono + chrono-tz): the one place
//! that turns the canonical forms into instants, UTC offsets and instance keys, and writes them
//! back as canonical strings. It also owns placing a wall time in a zone the RFC 5545 way
//! (§3.3.5), which recurrence expansion uses too.
//!
//! Bridges read their providers' wire formats (iCalendar values, Google's `dateTime` +
//! `timeZone`, Graph's wall time + Windows zone) into [`ResolvedTime`] with their own thin
//! functions; this module must not know any provider's format.

use std::fmt;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta,
    TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

use crate::time::{Date, EventTime, TimeParseError, WallTime};

/// An event time with its zone resolved: one of the four canonical forms as chrono values.
///
/// A zoned wall time names one instant by RFC 5545's rule: in a DST gap it takes the offset
/// before the gap (02:30 on a spring-forward night in Berlin is 01:30Z), when ambiguous its first
/// occurrence. A written offset is not kept, so the second occurrence of an ambiguous wall time
/// reads as the first (iCalendar's `TZID=` form cannot name it either).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedTime {
    /// All-day (an `end` date is exclusive).
    Date(NaiveDate),
    /// A wall time in UTC (`...Z`).
    Utc(NaiveDateTime),
    /// The same wall time in every zone.
    Floating(NaiveDateTime),
    /// A wall time in an IANA zone.
    Zoned(NaiveDateTime, Tz),
}

/// Why a canonical time could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(transparent)]
    BadTime(#[from] TimeParseError),
    #[error("`{0}` is not an IANA time zone")]
    UnknownZone(String),
    #[error("`{0}` is outside the supported date range")]
    OutOfRange(String),
}

impl ResolvedTime {
    /// Parses a canonical `start`/`end` string (any of the contracts' forms); the zone must be
    /// an IANA name.
    pub fn parse(s: &str) -> Result<Self, ResolveError> {
        Self::from_event_time(&EventTime::parse(s)?)
    }

    /// Resolves a parsed canonical time (a written offset is not kept, see the type's doc).
    pub fn from_event_time(time: &EventTime) -> Result<Self, ResolveError> {
        let out_of_range = || ResolveError::OutOfRange(time.to_string());
        let date = |d: Date| {
            NaiveDate::from_ymd_opt(d.year, u32::from(d.month), u32::from(d.day))
                .ok_or_else(out_of_range)
        };
        let wall = |w: WallTime| -> Result<NaiveDateTime, ResolveError> {
            let time = NaiveTime::from_hms_opt(
                u32::from(w.hour),
                u32::from(w.minute),
                u32::from(w.second),
            )
            .ok_or_else(out_of_range)?;
            Ok(date(w.date)?.and_time(time))
        };
        Ok(match time {
            EventTime::Date(d) => ResolvedTime::Date(date(*d)?),
            EventTime::Utc(w) => ResolvedTime::Utc(wall(*w)?),
            EventTime::Floating(w) => ResolvedTime::Floating(wall(*w)?),
            EventTime::Zoned { local, zone, .. } => {
                let tz = zone
                    .parse::<Tz>()
                    .map_err(|_| ResolveError::UnknownZone(zone.clone()))?;
                ResolvedTime::Zoned(wall(*local)?, tz)
            }
        })
    }

    /// The wall time an instant (UTC) shows in `tz`.
    pub fn zoned_at(instant: NaiveDateTime, tz: Tz) -> Self {
        ResolvedTime::Zoned(wall_in(tz, instant.and_utc()), tz)
    }

    /// The instance a key names (see [`Self::instance_key`]), in the form of `series_start`: a
    /// UTC key becomes the series' wall time, a key without `Z` is a wall time of the series (in
    /// its zone, UTC for a UTC series, else floating). `None` when `key` is no instance key.
    pub fn of_instance_key(key: &str, series_start: &ResolvedTime) -> Option<Self> {
        if key.len() == 8 {
            return NaiveDate::parse_from_str(key, "%Y%m%d")
                .ok()
                .map(ResolvedTime::Date);
        }
        if let Some(utc) = key.strip_suffix('Z') {
            let t = NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S").ok()?;
            return Some(match series_start {
                ResolvedTime::Zoned(_, tz) => ResolvedTime::zoned_at(t, *tz),
                ResolvedTime::Floating(_) => ResolvedTime::Floating(t),
                ResolvedTime::Date(_) => ResolvedTime::Date(t.date()),
                ResolvedTime::Utc(_) => ResolvedTime::Utc(t),
            });
        }
        let t = NaiveDateTime::parse_from_str(key, "%Y%m%dT%H%M%S").ok()?;
        Some(match series_start {
            ResolvedTime::Zoned(_, tz) => ResolvedTime::Zoned(t, *tz),
            ResolvedTime::Utc(_) => ResolvedTime::Utc(t),
            _ => ResolvedTime::Floating(t),
        })
    }

    /// The calendar date (of the wall time).
    pub fn date(&self) -> NaiveDate {
        match self {
            ResolvedTime::Date(d) => *d,
            ResolvedTime::Utc(t) | ResolvedTime::Floating(t) | ResolvedTime::Zoned(t, _) => {
                t.date()
            }
        }
    }

    /// True for the date-only (all-day) form.
    pub fn is_all_day(&self) -> bool {
        matches!(self, ResolvedTime::Date(_))
    }

    /// The zone of a zoned time.
    pub fn zone(&self) -> Option<Tz> {
        match self {
            ResolvedTime::Zoned(_, tz) => Some(*tz),
            _ => None,
        }
    }

    /// The UTC offset in seconds: 0 for UTC, RFC 5545's rule for zoned times, `None` for
    /// floating times and dates.
    pub fn offset_secs(&self) -> Option<i64> {
        match self {
            ResolvedTime::Utc(_) => Some(0),
            ResolvedTime::Zoned(t, tz) => {
                Some((*t - place(*tz, *t, None).naive_utc()).num_seconds())
            }
            ResolvedTime::Floating(_) | ResolvedTime::Date(_) => None,
        }
    }

    /// The instant (UTC), with floating times and dates read as UTC wall clock.
    pub fn instant(&self) -> NaiveDateTime {
        match self {
            ResolvedTime::Date(d) => d.and_time(NaiveTime::MIN),
            ResolvedTime::Utc(t) | ResolvedTime::Floating(t) => *t,
            ResolvedTime::Zoned(t, tz) => place(*tz, *t, None).naive_utc(),
        }
    }

    /// The wall time with its UTC offset (RFC 3339: `2026-11-19T10:00:00+01:00`, `...Z` for
    /// UTC); `None` for floating times and dates.
    pub fn rfc3339(&self) -> Option<String> {
        match self {
            ResolvedTime::Utc(t) => Some(format!("{}Z", wall_text(t))),
            ResolvedTime::Zoned(t, _) => Some(format!(
                "{}{}",
                wall_text(t),
                offset_text(self.offset_secs()?)
            )),
            ResolvedTime::Floating(_) | ResolvedTime::Date(_) => None,
        }
    }

    /// The key of the instance that starts here, as `overrides`, `exdates` and `rdates` use it:
    /// UTC basic form (`20261217T090000Z`) for zoned and UTC times, the basic date (`20261217`)
    /// for all-day, the basic wall time without `Z` (`20261217T100000`) for floating ones.
    pub fn instance_key(&self) -> String {
        let basic = |t: &NaiveDateTime| {
            format!(
                "{:04}{:02}{:02}T{:02}{:02}{:02}",
                t.year(),
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        };
        match self {
            ResolvedTime::Date(d) => format!("{:04}{:02}{:02}", d.year(), d.month(), d.day()),
            ResolvedTime::Floating(t) => basic(t),
            ResolvedTime::Utc(_) | ResolvedTime::Zoned(..) => {
                format!("{}Z", basic(&self.instant()))
            }
        }
    }
}

/// The canonical string: `2026-11-19T10:00:00+01:00[Europe/Berlin]`, `2026-11-19T09:00:00Z`,
/// `2026-11-19T10:00:00` or `2026-11-19`.
impl fmt::Display for ResolvedTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolvedTime::Date(d) => write!(f, "{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
            ResolvedTime::Floating(t) => write!(f, "{}", wall_text(t)),
            ResolvedTime::Utc(_) | ResolvedTime::Zoned(..) => {
                write!(f, "{}", self.rfc3339().unwrap_or_default())?;
                match self.zone() {
                    Some(tz) => write!(f, "[{}]", tz.name()),
                    None => Ok(()),
                }
            }
        }
    }
}

impl std::str::FromStr for ResolvedTime {
    type Err = ResolveError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResolvedTime::parse(s)
    }
}

fn wall_text(t: &NaiveDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn offset_text(secs: i64) -> String {
    let minutes = secs / 60;
    let sign = if minutes < 0 { '-' } else { '+' };
    let abs = minutes.abs();
    format!("{sign}{:02}:{:02}", abs / 60, abs % 60)
}

/// The instant of `wall` in `zone` (RFC 5545 §3.3.5): a wall time in a DST gap takes the offset
/// before the gap (02:30 on a spring-forward night is 03:30 summer time), an ambiguous one its
/// first occurrence unless `offset_minutes` picks the second.
pub(crate) fn place(zone: Tz, wall: NaiveDateTime, offset_minutes: Option<i32>) -> DateTime<Utc> {
    match zone.from_local_datetime(&wall) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, second) => {
            let wanted = offset_minutes.map(|m| m * 60);
            if wanted == Some(second.offset().fix().local_minus_utc()) {
                second.with_timezone(&Utc)
            } else {
                first.with_timezone(&Utc)
            }
        }
        LocalResult::None => {
            // The offset a day earlier is the one before the gap (zones never change twice a day).
            let day_before = wall.checked_sub_signed(TimeDelta::days(1)).unwrap_or(wall);
            let before = zone.offset_from_utc_datetime(&day_before).fix();
            wall.checked_sub_offset(before).unwrap_or(wall).and_utc()
        }
    }
}

/// The wall time of `instant` in `zone`.
pub(crate) fn wall_in(zone: Tz, instant: DateTime<Utc>) -> NaiveDateTime {
    let utc = instant.naive_utc();
    // At the ends of chrono's range the local time may not exist: stay at the UTC value.
    utc.checked_add_offset(zone.offset_from_utc_datetime(&utc).fix())
        .unwrap_or(utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(y: i32, m: u32, d: u32, h: u32, min: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(h, min, 0)
            .unwrap()
    }

    #[test]
    fn gaps_take_the_offset_before_and_ambiguous_times_the_first() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-29 02:30 does not exist in Berlin: read with +01:00, i.e. 01:30Z (03:30 CEST).
        assert_eq!(
            place(berlin, wall(2026, 3, 29, 2, 30), None),
            wall(2026, 3, 29, 1, 30).and_utc()
        );
        // 2026-10-25 02:30 happens twice: first +02:00 (00:30Z), then +01:00 (01:30Z).
        assert_eq!(
            place(berlin, wall(2026, 10, 25, 2, 30), None),
            wall(2026, 10, 25, 0, 30).and_utc()
        );
        assert_eq!(
            place(berlin, wall(2026, 10, 25, 2, 30), Some(60)),
            wall(2026, 10, 25, 1, 30).and_utc()
        );
        let ny: Tz = "America/New_York".parse().unwrap();
        assert_eq!(
            place(ny, wall(2026, 3, 8, 2, 15), None),
            wall(2026, 3, 8, 7, 15).and_utc()
        );
        assert_eq!(
            wall_in(ny, wall(2026, 3, 8, 7, 15).and_utc()),
            wall(2026, 3, 8, 3, 15)
        );
    }

    #[test]
    fn canonical_forms_round_trip() {
        for s in [
            "2026-11-19T10:00:00+01:00[Europe/Berlin]",
            "2026-07-19T10:00:00+02:00[Europe/Berlin]",
            "2026-11-19T10:00:00-03:30[America/St_Johns]",
            "2026-11-19T09:00:00Z",
            "2026-11-19T10:00:00",
            "2026-11-19",
        ] {
            assert_eq!(ResolvedTime::parse(s).unwrap().to_string(), s);
        }
        // The offset is computed from the zone, so a value without one gets it.
        assert_eq!(
            ResolvedTime::parse("2026-11-19T10:00:00[Europe/Berlin]")
                .unwrap()
                .to_string(),
            "2026-11-19T10:00:00+01:00[Europe/Berlin]"
        );
        assert!(matches!(
            ResolvedTime::parse("2026-11-19T10:00:00[Mars/Olympus]"),
            Err(ResolveError::UnknownZone(_))
        ));
        assert!(matches!(
            ResolvedTime::parse("2026-11-19T10:00"),
            Err(ResolveError::BadTime(_))
        ));
    }

    #[test]
    fn dst_gap_and_overlap_offsets() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // In the gap: the offset before it (+01:00), so 02:30 is 01:30Z.
        let gap = ResolvedTime::Zoned(wall(2026, 3, 29, 2, 30), berlin);
        assert_eq!(gap.offset_secs(), Some(3600));
        assert_eq!(gap.instant(), wall(2026, 3, 29, 1, 30));
        assert_eq!(gap.to_string(), "2026-03-29T02:30:00+01:00[Europe/Berlin]");
        // Ambiguous: the first occurrence (+02:00).
        let twice = ResolvedTime::Zoned(wall(2026, 10, 25, 2, 30), berlin);
        assert_eq!(twice.instance_key(), "20261025T003000Z");
        assert_eq!(
            twice.rfc3339().as_deref(),
            Some("2026-10-25T02:30:00+02:00")
        );
        assert_eq!(
            ResolvedTime::zoned_at(wall(2026, 3, 29, 1, 30), berlin),
            ResolvedTime::Zoned(wall(2026, 3, 29, 3, 30), berlin)
        );
    }

    #[test]
    fn instance_keys_and_back() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let zoned = ResolvedTime::Zoned(wall(2026, 12, 17, 10, 0), berlin);
        assert_eq!(zoned.instance_key(), "20261217T090000Z");
        assert_eq!(
            ResolvedTime::Utc(wall(2026, 12, 17, 9, 0)).instance_key(),
            "20261217T090000Z"
        );
        let floating = ResolvedTime::Floating(wall(2026, 12, 17, 10, 0));
        assert_eq!(floating.instance_key(), "20261217T100000");
        let day = ResolvedTime::Date(NaiveDate::from_ymd_opt(2026, 12, 17).unwrap());
        assert_eq!(day.instance_key(), "20261217");
        for t in [
            zoned,
            floating,
            day,
            ResolvedTime::Utc(wall(2026, 12, 17, 9, 0)),
        ] {
            assert_eq!(
                ResolvedTime::of_instance_key(&t.instance_key(), &t),
                Some(t)
            );
        }
        // A UTC key in a zoned series is that series' wall time.
        assert_eq!(
            ResolvedTime::of_instance_key("20260701T080000Z", &zoned),
            Some(ResolvedTime::Zoned(wall(2026, 7, 1, 10, 0), berlin))
        );
        // A key without `Z` is a wall time of the series: in UTC for a UTC series.
        assert_eq!(
            ResolvedTime::of_instance_key(
                "20261217T090000",
                &ResolvedTime::Utc(wall(2026, 1, 1, 0, 0))
            ),
            Some(ResolvedTime::Utc(wall(2026, 12, 17, 9, 0)))
        );
        assert_eq!(ResolvedTime::of_instance_key("tomorrow", &zoned), None);
    }
}
