//! Graph `patternedRecurrence` <-> the canonical `recurrence` of a series, for the Graph bridge:
//! a thin adapter over crdt-model's mapping (`driftless_crdt_model::recurrence::graph`, every
//! pattern and range type, lossy rules refused) that reads Graph's JSON as sent, compares rules by
//! what they mean rather than how they are spelled, and renders the value a PATCH or a create
//! carries.
//!
//! A rule Graph cannot express (hourly, `BYWEEKNO`, several `BYMONTHDAY`, RDATEs, several rules,
//! ...) is a [`RecurrenceWriteError::Unexpressible`]: the caller reports it on the record (a
//! conflict) and never writes a different rule. Must not: do I/O, or map anything but the recurrence.

use driftless_crdt_model::CalendarEvent;
use driftless_crdt_model::recurrence::graph::{
    GraphMappingError, PatternedRecurrence, SeriesStart, from_recurrence, from_rrule, to_rrule,
};
use serde_json::Value;

/// Why a canonical rule cannot be written to Graph.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecurrenceWriteError {
    /// A valid rule Graph has no pattern for; Graph keeps its own rule.
    #[error("{0}")]
    Unexpressible(String),
    /// The rule, the start or Graph's recurrence is not usable.
    #[error("{0}")]
    Invalid(String),
}

fn write_error(e: GraphMappingError) -> RecurrenceWriteError {
    match e {
        GraphMappingError::Unexpressible { .. } => {
            RecurrenceWriteError::Unexpressible(e.to_string())
        }
        other => RecurrenceWriteError::Invalid(other.to_string()),
    }
}

/// Where `event`'s series starts (its `start`).
pub fn series_start(event: &CalendarEvent) -> Result<SeriesStart, String> {
    SeriesStart::of(event).map_err(|e| format!("the series start: {e}"))
}

/// The RRULE line of Graph's `recurrence` JSON for a series starting at `start` (a canonical
/// `start` value).
pub fn rule_of_graph(recurrence: &Value, start: Option<&str>) -> Result<String, String> {
    let parsed: PatternedRecurrence = serde_json::from_value(recurrence.clone())
        .map_err(|e| format!("not a patternedRecurrence: {e}"))?;
    let event = CalendarEvent {
        start: start.map(str::to_owned),
        ..CalendarEvent::default()
    };
    to_rrule(&parsed, &series_start(&event)?).map_err(|e| e.to_string())
}

/// Graph's recurrence for `event`'s rule (`recurrenceTimeZone`: the zone name to send, usually
/// the one Graph already has; `None` leaves it to Graph's default, the event's zone). `Ok(None)`
/// when the event has no recurrence.
pub fn graph_recurrence(
    event: &CalendarEvent,
    recurrence_time_zone: Option<&str>,
) -> Result<Option<Value>, RecurrenceWriteError> {
    let Some(recurrence) = &event.recurrence else {
        return Ok(None);
    };
    let start = series_start(event).map_err(RecurrenceWriteError::Invalid)?;
    let mut pattern = from_recurrence(recurrence, &start).map_err(write_error)?;
    pattern.range.recurrence_time_zone = recurrence_time_zone.map(str::to_owned);
    serde_json::to_value(&pattern)
        .map(Some)
        .map_err(|e| RecurrenceWriteError::Invalid(e.to_string()))
}

/// The `recurrence` value that brings Graph's series (`theirs`, as read from Graph, with
/// `graph_recurrence`: the JSON Graph sent) to `ours`' rule, or `None` when both mean the same
/// series (same pattern and range, however the rule is spelled). EXDATEs are not part of it
/// (Graph deletes occurrences instead).
pub fn recurrence_change(
    ours: &CalendarEvent,
    theirs: &CalendarEvent,
    graph_recurrence_json: Option<&Value>,
) -> Result<Option<Value>, RecurrenceWriteError> {
    let (Some(our_rules), Some(_)) = (&ours.recurrence, &theirs.recurrence) else {
        return Ok(None); // adding or removing a recurrence is not written (see the callers)
    };
    let zone = graph_recurrence_json
        .and_then(|r| r.pointer("/range/recurrenceTimeZone"))
        .and_then(Value::as_str)
        .filter(|z| !z.is_empty());
    let start = series_start(ours).map_err(RecurrenceWriteError::Invalid)?;
    let wanted = from_recurrence(our_rules, &start).map_err(write_error)?;
    let same = |theirs: &CalendarEvent| -> Option<bool> {
        let their_start = series_start(theirs).ok()?;
        let rules = theirs.recurrence.as_ref()?;
        let line = rules.rules.values().next()?;
        // Graph's rule re-read as a pattern at our start: equal patterns mean equal series.
        let have = from_rrule(line, &their_start).ok()?;
        let at_ours = from_rrule(&to_rrule(&have, &their_start).ok()?, &start).ok()?;
        // Ours through the same round trip, so spellings of one rule (`INTERVAL=1`, `BYDAY=3TH`) compare equal.
        let ours = from_rrule(&to_rrule(&wanted, &start).ok()?, &start).ok()?;
        Some(at_ours == ours && their_start == start)
    };
    if same(theirs) == Some(true) {
        return Ok(None);
    }
    let mut pattern = wanted;
    pattern.range.recurrence_time_zone = zone.map(str::to_owned);
    serde_json::to_value(&pattern)
        .map(Some)
        .map_err(|e| RecurrenceWriteError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftless_crdt_model::Recurrence;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn series(rule: &str) -> CalendarEvent {
        CalendarEvent {
            start: Some("2026-11-05T10:00:00+01:00[Europe/Berlin]".into()),
            end: Some("2026-11-05T11:00:00+01:00[Europe/Berlin]".into()),
            recurrence: Some(Recurrence {
                rules: BTreeMap::from([("0".to_owned(), rule.to_owned())]),
                ..Recurrence::default()
            }),
            ..CalendarEvent::default()
        }
    }

    #[test]
    fn graph_json_reads_as_a_rule() {
        let graph = json!({
            "pattern": {"type": "relativeMonthly", "interval": 1, "daysOfWeek": ["thursday"],
                        "index": "third", "dayOfMonth": 0, "month": 0, "firstDayOfWeek": "sunday"},
            "range": {"type": "numbered", "startDate": "2026-11-19", "numberOfOccurrences": 10,
                      "recurrenceTimeZone": "W. Europe Standard Time"}
        });
        assert_eq!(
            rule_of_graph(&graph, Some("2026-11-19T10:00:00+01:00[Europe/Berlin]")).unwrap(),
            "RRULE:FREQ=MONTHLY;BYDAY=3TH;COUNT=10"
        );
    }

    #[test]
    fn the_same_series_spelled_differently_is_no_change() {
        for (ours, theirs) in [
            (
                "RRULE:FREQ=WEEKLY;INTERVAL=1;BYDAY=TH;COUNT=10",
                "RRULE:FREQ=WEEKLY;BYDAY=TH;COUNT=10",
            ),
            (
                "RRULE:FREQ=MONTHLY;BYDAY=TH;BYSETPOS=3",
                "RRULE:FREQ=MONTHLY;BYDAY=3TH",
            ),
        ] {
            assert_eq!(
                recurrence_change(&series(ours), &series(theirs), None).unwrap(),
                None,
                "{ours} vs {theirs}"
            );
        }
        // A different week start is a different rule (it matters with INTERVAL > 1).
        let change = recurrence_change(
            &series("RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=TH,SU;WKST=MO"),
            &series("RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=TH,SU;WKST=SU"),
            None,
        )
        .unwrap();
        assert!(change.is_some());
    }

    #[test]
    fn a_changed_rule_is_a_pattern_keeping_graphs_zone_name() {
        let ours = series("RRULE:FREQ=WEEKLY;BYDAY=TU,TH;COUNT=6");
        let theirs = series("RRULE:FREQ=WEEKLY;BYDAY=TH;COUNT=10");
        let graph = json!({"range": {"recurrenceTimeZone": "W. Europe Standard Time"}});
        let change = recurrence_change(&ours, &theirs, Some(&graph))
            .unwrap()
            .unwrap();
        assert_eq!(change["pattern"]["type"], "weekly");
        assert_eq!(
            change["pattern"]["daysOfWeek"],
            json!(["tuesday", "thursday"])
        );
        assert_eq!(change["range"]["type"], "numbered");
        assert_eq!(change["range"]["numberOfOccurrences"], 6);
        assert_eq!(change["range"]["startDate"], "2026-11-05");
        assert_eq!(
            change["range"]["recurrenceTimeZone"],
            "W. Europe Standard Time"
        );
    }

    #[test]
    fn a_rule_graph_cannot_express_is_refused_not_changed() {
        let theirs = series("RRULE:FREQ=WEEKLY;BYDAY=TH;COUNT=10");
        for rule in [
            "RRULE:FREQ=HOURLY;COUNT=3",
            "RRULE:FREQ=MONTHLY;BYMONTHDAY=1,15",
            "RRULE:FREQ=YEARLY;BYWEEKNO=20",
        ] {
            let err = recurrence_change(&series(rule), &theirs, None).unwrap_err();
            assert!(
                matches!(err, RecurrenceWriteError::Unexpressible(_)),
                "{rule}: {err:?}"
            );
            assert!(err.to_string().contains("cannot express"), "{err}");
        }
    }
}
