//! RRULE / EXRULE lines, RDATEs and EXDATEs into an `rrule::RRuleSet` evaluated in wall time.
//!
//! The set runs in a UTC stand-in: its "UTC" values are the series' wall times, which is how
//! RFC 5545 defines expansion (rules count calendar fields, not elapsed seconds). `UNTIL` is taken
//! out of the line before the crate sees it and put back as a wall time of the series, because a
//! `...Z` UNTIL is an instant and must be compared in the series' zone.

use chrono::{NaiveDate, NaiveDateTime, TimeZone};
use rrule::{RRule, RRuleSet, Tz as RuleTz, Unvalidated};

use super::{ExpandError, Series, field_error};
use crate::model::Recurrence;

/// A rule line that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("`{line}` is not an RRULE or EXRULE line")]
    NotARule { line: String },
    #[error("`{line}` does not parse: {reason}")]
    Invalid { line: String, reason: String },
}

/// The value of a rule's `UNTIL`, in the form it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UntilValue {
    /// `UNTIL=20261231`
    Date(NaiveDate),
    /// `UNTIL=20261231T225959Z`
    Utc(NaiveDateTime),
    /// `UNTIL=20261231T235959` (floating series)
    Floating(NaiveDateTime),
}

impl UntilValue {
    /// Parses the value of an `UNTIL=` part.
    pub fn parse(value: &str) -> Option<Self> {
        if let Some(utc) = value.strip_suffix('Z').or_else(|| value.strip_suffix('z')) {
            return NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S")
                .ok()
                .map(UntilValue::Utc);
        }
        if value.len() == 8 {
            return NaiveDate::parse_from_str(value, "%Y%m%d")
                .ok()
                .map(UntilValue::Date);
        }
        NaiveDateTime::parse_from_str(value, "%Y%m%dT%H%M%S")
            .ok()
            .map(UntilValue::Floating)
    }
}

/// A rule line split for evaluation: whether it excludes, its parts without UNTIL, and UNTIL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleLine {
    pub exclude: bool,
    /// `FREQ=...;...` without `UNTIL`.
    pub parts: String,
    pub until: Option<UntilValue>,
}

impl RuleLine {
    /// Splits `RRULE:FREQ=...` (or `EXRULE:...`, or a bare `FREQ=...`).
    pub(crate) fn split(line: &str) -> Result<Self, RuleError> {
        let trimmed = line.trim();
        let (exclude, body) = match trimmed.split_once(':') {
            Some((name, body)) if name.eq_ignore_ascii_case("RRULE") => (false, body),
            Some((name, body)) if name.eq_ignore_ascii_case("EXRULE") => (true, body),
            Some(_) => {
                return Err(RuleError::NotARule {
                    line: line.to_owned(),
                });
            }
            None => (false, trimmed),
        };
        let mut until = None;
        let mut parts = Vec::new();
        for part in body.split(';').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((key, value)) if key.eq_ignore_ascii_case("UNTIL") => {
                    until = Some(UntilValue::parse(value).ok_or_else(|| RuleError::Invalid {
                        line: line.to_owned(),
                        reason: format!("UNTIL `{value}` is not a date or date-time"),
                    })?);
                }
                _ => parts.push(part),
            }
        }
        Ok(RuleLine {
            exclude,
            parts: parts.join(";"),
            until,
        })
    }

    /// The rule without UNTIL, parsed by the `rrule` crate.
    pub(crate) fn unvalidated(&self, line: &str) -> Result<RRule<Unvalidated>, RuleError> {
        self.parts
            .parse::<RRule<Unvalidated>>()
            .map_err(|e| RuleError::Invalid {
                line: line.to_owned(),
                reason: e.to_string(),
            })
    }
}

/// A series' wall time as the stand-in's value.
fn stand_in(wall: NaiveDateTime) -> chrono::DateTime<RuleTz> {
    RuleTz::UTC.from_utc_datetime(&wall)
}

/// The instances of a series, as wall times.
pub(super) struct InstanceSet {
    set: RRuleSet,
}

/// Wall times found in a range, and whether the scan stopped at its cap.
pub(super) struct Scan {
    pub walls: Vec<NaiveDateTime>,
    pub truncated: bool,
}

impl InstanceSet {
    pub(super) fn build(
        series: &Series,
        recurrence: Option<&Recurrence>,
    ) -> Result<Self, ExpandError> {
        let dtstart = stand_in(series.dtstart);
        // DTSTART is always an instance (RFC 5545), even when the rules skip it. `limit` stops the
        // crate's own loops after 100 000 periods without an instance (a rule that never matches).
        let mut set = RRuleSet::new(dtstart).limit().rdate(dtstart);
        let Some(recurrence) = recurrence else {
            return Ok(InstanceSet { set });
        };
        for (slot, line) in &recurrence.rules {
            let field = format!("recurrence.rules.{slot}");
            let split = RuleLine::split(line).map_err(|e| field_error(&field, e))?;
            let mut rule = split
                .unvalidated(line)
                .map_err(|e| field_error(&field, e))?;
            if let Some(until) = split.until {
                let until = series.wall_of_until(until);
                // A rule that ends before it starts adds nothing (the crate would refuse it).
                if until < series.dtstart {
                    continue;
                }
                rule = rule.until(stand_in(until));
            }
            let rule = rule.validate(dtstart).map_err(|e| {
                field_error(
                    &field,
                    RuleError::Invalid {
                        line: line.clone(),
                        reason: e.to_string(),
                    },
                )
            })?;
            set = if split.exclude {
                set.exrule(rule)
            } else {
                set.rrule(rule)
            };
        }
        for (key, value) in &recurrence.rdates {
            let wall = series.wall_of_value(value, &format!("recurrence.rdates.{key}"))?;
            set = set.rdate(stand_in(wall));
        }
        for (key, value) in &recurrence.exdates {
            let wall = series.wall_of_value(value, &format!("recurrence.exdates.{key}"))?;
            set = set.exdate(stand_in(wall));
        }
        Ok(InstanceSet { set })
    }

    /// The instances in `[from, to)`, generating at most `max_scanned` from DTSTART on.
    pub(super) fn walls_between(
        &self,
        from: NaiveDateTime,
        to: NaiveDateTime,
        max_scanned: usize,
    ) -> Scan {
        let mut walls = Vec::new();
        let mut truncated = false;
        let mut last = None;
        for (scanned, instance) in (&self.set).into_iter().enumerate() {
            let wall = instance.naive_utc();
            if wall >= to {
                break;
            }
            if scanned >= max_scanned {
                truncated = true;
                break;
            }
            // Rules and RDATEs can name the same instant; it is one instance.
            if wall >= from && last != Some(wall) {
                walls.push(wall);
            }
            last = Some(wall);
        }
        Scan { walls, truncated }
    }
}
