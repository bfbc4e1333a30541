#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;

use automerge::{ActorId, AutoCommit, ChangeHash};
use driftless_crdt_model::{
    Attendee, CalendarEvent, Contact, ContactPoint, Link, Name, Organizer, Override, Recurrence,
};
use serde_json::json;

pub const BASE: u8 = 1;
pub const APP: u8 = 2;
pub const BRIDGE: u8 = 3;

pub fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 16])
}

pub fn source(a: &ActorId) -> String {
    if *a == actor(APP) {
        "app".to_owned()
    } else if *a == actor(BRIDGE) {
        "caldav-main".to_owned()
    } else {
        "unknown".to_owned()
    }
}

pub fn doc(n: u8) -> AutoCommit {
    AutoCommit::new().with_actor(actor(n))
}

pub fn fork(doc: &mut AutoCommit, n: u8) -> AutoCommit {
    doc.fork().with_actor(actor(n))
}

pub fn sorted_heads(doc: &mut AutoCommit) -> Vec<ChangeHash> {
    let mut heads = doc.get_heads();
    heads.sort();
    heads
}

/// Merges each into the other and checks convergence: equal sorted heads and equal JSON.
pub fn merge_both(a: &mut AutoCommit, b: &mut AutoCommit) {
    a.merge(b).unwrap();
    b.merge(a).unwrap();
    assert_eq!(sorted_heads(a), sorted_heads(b));
    assert_eq!(
        driftless_crdt_model::to_json(a).unwrap(),
        driftless_crdt_model::to_json(b).unwrap()
    );
}

pub fn sample_event() -> CalendarEvent {
    let mut attendees = BTreeMap::new();
    attendees.insert(
        "bob@example.com".to_owned(),
        Attendee {
            name: Some("Bob".to_owned()),
            response: Some("accepted".to_owned()),
            optional: false,
            extra: BTreeMap::new(),
        },
    );
    let mut overrides = BTreeMap::new();
    overrides.insert(
        "20261217T090000Z".to_owned(),
        Override {
            title: Some("Budget review (moved)".to_owned()),
            start: Some("2026-12-18T10:00:00+01:00[Europe/Berlin]".to_owned()),
            end: Some("2026-12-18T11:00:00+01:00[Europe/Berlin]".to_owned()),
            ..Override::default()
        },
    );
    overrides.insert(
        "20270121T090000Z".to_owned(),
        Override {
            cancelled: true,
            ..Override::default()
        },
    );
    let mut links = BTreeMap::new();
    links.insert(
        "caldav-main".to_owned(),
        Link {
            id: "/cal/alice/budget.ics".to_owned(),
            removed: false,
            extra: BTreeMap::new(),
        },
    );
    CalendarEvent {
        title: Some("Budget review".to_owned()),
        location: Some("Room 4".to_owned()),
        status: Some("confirmed".to_owned()),
        ical_uid: Some("budget-2026@example.com".to_owned()),
        description: Some("Agenda: budget".to_owned()),
        start: Some("2026-11-19T10:00:00+01:00[Europe/Berlin]".to_owned()),
        end: Some("2026-11-19T11:00:00+01:00[Europe/Berlin]".to_owned()),
        recurrence: Some(Recurrence {
            rules: BTreeMap::from([("0".to_owned(), "RRULE:FREQ=MONTHLY;BYDAY=3TH".to_owned())]),
            exdates: BTreeMap::from([(
                "20270218T090000Z".to_owned(),
                "2027-02-18T10:00:00+01:00[Europe/Berlin]".to_owned(),
            )]),
            rdates: BTreeMap::new(),
            extra: BTreeMap::new(),
        }),
        overrides,
        organizer: Organizer {
            email: Some("alice@example.com".to_owned()),
            name: Some("Alice".to_owned()),
            extra: BTreeMap::new(),
        },
        attendees,
        links,
        ..CalendarEvent::default()
    }
}

pub fn point(value: &str, label: Option<&str>, primary: bool) -> ContactPoint {
    ContactPoint {
        value: value.to_owned(),
        label: label.map(str::to_owned),
        primary,
        extra: BTreeMap::new(),
    }
}

pub fn sample_contact() -> Contact {
    Contact {
        name: Name {
            full: Some("Ada Lovelace".to_owned()),
            given: Some("Ada".to_owned()),
            family: Some("Lovelace".to_owned()),
            extra: BTreeMap::new(),
        },
        organization: Some("Analytical Engines Ltd".to_owned()),
        job_title: Some("Mathematician".to_owned()),
        notes: Some("Met at the 1843 conference.".to_owned()),
        company: Some("automerge:2f8yLGdcqaSPAxvdhtj2ZnLWrmyM".to_owned()),
        emails: BTreeMap::from([
            (
                "k1".to_owned(),
                point("ada@example.com", Some("work"), true),
            ),
            (
                "k7".to_owned(),
                point("ada@home.example", Some("home"), false),
            ),
        ]),
        phones: BTreeMap::from([(
            "p3".to_owned(),
            point("+44 20 7946 0000", Some("mobile"), true),
        )]),
        extra: BTreeMap::from([("x_app_color".to_owned(), json!("teal"))]),
        ..Contact::default()
    }
}
