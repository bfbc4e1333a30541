//! `start` / `end` values: the four forms the contracts allow, parsed without a time-zone database.
//! [`ResolvedTime`](crate::ResolvedTime) resolves them against one (offsets, instants, keys).

use std::fmt;

/// A calendar date (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

/// A wall-clock date and time, to the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WallTime {
    pub date: Date,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

/// An event `start` or `end`.
///
/// The canonical value keeps the string; this type validates it and tells the forms apart.
/// `Display` writes the canonical form back (parse then display is the identity on accepted input).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventTime {
    /// `2026-11-19T10:00:00+01:00[Europe/Berlin]` (RFC 9557). Readers also accept the form without
    /// the offset, `2026-11-19T10:00:00[Europe/Berlin]`; resolving it needs a zone database.
    Zoned {
        local: WallTime,
        /// Offset from UTC in minutes, when written.
        offset_minutes: Option<i32>,
        zone: String,
    },
    /// `2026-11-19T09:00:00Z`
    Utc(WallTime),
    /// `2026-11-19T10:00:00`: the same wall time in every zone.
    Floating(WallTime),
    /// `2026-11-19`: all-day (an `end` date is exclusive).
    Date(Date),
}

/// Why a string is not an [`EventTime`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not an event time ({reason}); expected YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS, a trailing Z, or [+-HH:MM][Zone/Name]"
)]
pub struct TimeParseError {
    pub input: String,
    pub reason: &'static str,
}

impl EventTime {
    /// Parses one of the four forms.
    pub fn parse(input: &str) -> Result<Self, TimeParseError> {
        let fail = |reason| TimeParseError {
            input: input.to_owned(),
            reason,
        };
        let bytes = input.as_bytes();
        if bytes.len() < 10 {
            return Err(fail("too short"));
        }
        let date = parse_date(&input[..10]).ok_or_else(|| fail("bad date"))?;
        if bytes.len() == 10 {
            return Ok(EventTime::Date(date));
        }
        if bytes.len() < 19 || bytes[10] != b'T' || !input.is_char_boundary(19) {
            return Err(fail("bad time"));
        }
        let local = parse_time(date, &input[11..19]).ok_or_else(|| fail("bad time"))?;
        let rest = &input[19..];
        if rest.is_empty() {
            return Ok(EventTime::Floating(local));
        }
        if rest == "Z" {
            return Ok(EventTime::Utc(local));
        }
        let (offset_minutes, zone_part) = match rest.as_bytes()[0] {
            b'+' | b'-' => {
                if rest.len() < 6 || !rest.is_char_boundary(6) {
                    return Err(fail("bad offset"));
                }
                let offset = parse_offset(&rest[..6]).ok_or_else(|| fail("bad offset"))?;
                (Some(offset), &rest[6..])
            }
            _ => (None, rest),
        };
        let zone = zone_part
            .strip_prefix('[')
            .and_then(|z| z.strip_suffix(']'))
            .ok_or_else(|| fail("missing [Zone/Name]"))?;
        let zone_ok = !zone.is_empty()
            && zone
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'));
        if !zone_ok {
            return Err(fail("bad zone name"));
        }
        Ok(EventTime::Zoned {
            local,
            offset_minutes,
            zone: zone.to_owned(),
        })
    }

    /// True for the date-only (all-day) form.
    pub fn is_all_day(&self) -> bool {
        matches!(self, EventTime::Date(_))
    }

    /// The instant in UTC, when it is known without a zone database.
    pub fn to_utc(&self) -> Option<WallTime> {
        match self {
            EventTime::Utc(t) => Some(*t),
            EventTime::Zoned {
                local,
                offset_minutes: Some(off),
                ..
            } => Some(shift_minutes(*local, -i64::from(*off))),
            _ => None,
        }
    }

    /// The key of an override, exdate or rdate for the instance that starts here: UTC basic form
    /// (`20261217T090000Z`) or the basic date (`20261217`) for all-day. `None` for floating times
    /// and zoned times without an offset (those need recurrence expansion with a zone database).
    pub fn instance_key(&self) -> Option<String> {
        match self {
            EventTime::Date(d) => Some(format!("{:04}{:02}{:02}", d.year, d.month, d.day)),
            _ => self.to_utc().map(|t| {
                format!(
                    "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
                    t.date.year, t.date.month, t.date.day, t.hour, t.minute, t.second
                )
            }),
        }
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl fmt::Display for WallTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}T{:02}:{:02}:{:02}",
            self.date, self.hour, self.minute, self.second
        )
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventTime::Date(d) => write!(f, "{d}"),
            EventTime::Floating(t) => write!(f, "{t}"),
            EventTime::Utc(t) => write!(f, "{t}Z"),
            EventTime::Zoned {
                local,
                offset_minutes,
                zone,
            } => {
                write!(f, "{local}")?;
                if let Some(off) = offset_minutes {
                    let sign = if *off < 0 { '-' } else { '+' };
                    let abs = off.unsigned_abs();
                    write!(f, "{sign}{:02}:{:02}", abs / 60, abs % 60)?;
                }
                write!(f, "[{zone}]")
            }
        }
    }
}

impl std::str::FromStr for EventTime {
    type Err = TimeParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventTime::parse(s)
    }
}

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_date(s: &str) -> Option<Date> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' || !s.is_ascii() {
        return None;
    }
    let year = i32::try_from(digits(&s[..4])?).ok()?;
    let month = u8::try_from(digits(&s[5..7])?).ok()?;
    let day = u8::try_from(digits(&s[8..10])?).ok()?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    Some(Date { year, month, day })
}

fn parse_time(date: Date, s: &str) -> Option<WallTime> {
    let b = s.as_bytes();
    if b.len() != 8 || b[2] != b':' || b[5] != b':' || !s.is_ascii() {
        return None;
    }
    let hour = u8::try_from(digits(&s[..2])?).ok()?;
    let minute = u8::try_from(digits(&s[3..5])?).ok()?;
    let second = u8::try_from(digits(&s[6..8])?).ok()?;
    (hour < 24 && minute < 60 && second < 60).then_some(WallTime {
        date,
        hour,
        minute,
        second,
    })
}

fn parse_offset(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    if b.len() != 6 || b[3] != b':' || !s.is_ascii() {
        return None;
    }
    let hours = i32::try_from(digits(&s[1..3])?).ok()?;
    let minutes = i32::try_from(digits(&s[4..6])?).ok()?;
    if hours > 23 || minutes > 59 {
        return None;
    }
    let total = hours * 60 + minutes;
    Some(if b[0] == b'-' { -total } else { total })
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's civil-date algorithms: exact for the proleptic Gregorian calendar.
fn days_from_civil(d: Date) -> i64 {
    let y = i64::from(d.year) - i64::from(d.month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(d.month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d.day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> Date {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Values are in range by construction (month 1..=12, day 1..=31, year near the input's).
    Date {
        year: i32::try_from(year).unwrap_or(i32::MAX),
        month: u8::try_from(month).unwrap_or(1),
        day: u8::try_from(day).unwrap_or(1),
    }
}

fn shift_minutes(t: WallTime, minutes: i64) -> WallTime {
    let total =
        days_from_civil(t.date) * 1440 + i64::from(t.hour) * 60 + i64::from(t.minute) + minutes;
    let days = total.div_euclid(1440);
    let rem = total.rem_euclid(1440);
    WallTime {
        date: civil_from_days(days),
        hour: u8::try_from(rem / 60).unwrap_or(0),
        minute: u8::try_from(rem % 60).unwrap_or(0),
        second: t.second,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_forms_round_trip() {
        for s in [
            "2026-11-19T10:00:00+01:00[Europe/Berlin]",
            "2026-11-19T10:00:00-05:30[America/St_Johns]",
            "2026-11-19T10:00:00[Europe/Berlin]",
            "2026-11-19T09:00:00Z",
            "2026-11-19T10:00:00",
            "2026-11-19",
        ] {
            let t = EventTime::parse(s).unwrap();
            assert_eq!(t.to_string(), s);
        }
    }

    #[test]
    fn rejects_bad_values() {
        for s in [
            "",
            "2026-13-01",
            "2026-02-29",
            "2026-11-19T24:00:00Z",
            "2026-11-19T10:00:00+01:00",
            "2026-11-19T10:00:00[]",
            "2026-11-19 10:00:00",
            "2026-11-19T10:00:00.5Z",
        ] {
            assert!(EventTime::parse(s).is_err(), "{s}");
        }
        assert!(EventTime::parse("2024-02-29").is_ok());
    }

    #[test]
    fn instance_keys() {
        let key = |s: &str| EventTime::parse(s).unwrap().instance_key();
        assert_eq!(
            key("2026-12-17T10:00:00+01:00[Europe/Berlin]").as_deref(),
            Some("20261217T090000Z")
        );
        assert_eq!(
            key("2027-01-01T00:30:00+01:00[Europe/Berlin]").as_deref(),
            Some("20261231T233000Z")
        );
        assert_eq!(
            key("2026-12-31T20:00:00-05:00[America/New_York]").as_deref(),
            Some("20270101T010000Z")
        );
        assert_eq!(key("2026-12-17").as_deref(), Some("20261217"));
        assert_eq!(key("2026-12-17T10:00:00"), None);
        assert_eq!(key("2026-12-17T10:00:00[Europe/Berlin]"), None);
    }
}
