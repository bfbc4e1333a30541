//! Placing wall times in a zone, the RFC 5545 way (§3.3.5): a wall time in a DST gap takes the
//! offset before the gap (02:30 on a spring-forward night is 03:30 summer time), an ambiguous one
//! its first occurrence unless a written offset picks the second.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

/// The instant of `wall` in `zone`. `offset_minutes`, when given and matching one of two
/// ambiguous instants, picks that one.
pub(super) fn place(zone: Tz, wall: NaiveDateTime, offset_minutes: Option<i32>) -> DateTime<Utc> {
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
pub(super) fn wall_in(zone: Tz, instant: DateTime<Utc>) -> NaiveDateTime {
    let utc = instant.naive_utc();
    // At the ends of chrono's range the local time may not exist: stay at the UTC value.
    utc.checked_add_offset(zone.offset_from_utc_datetime(&utc).fix())
        .unwrap_or(utc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

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
}
