//! Seeded random pairs of canonical values: `apply_*_diff(old -> new)` then reading gives `new`.
//! Prints its seed; replay with `DRIFTLESS_SEED=<n> cargo test -p driftless-crdt-model --test random`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use driftless_crdt_model::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const CASES: usize = 150;

fn seed() -> u64 {
    let seed = std::env::var("DRIFTLESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026);
    println!("DRIFTLESS_SEED={seed}");
    seed
}

fn text(rng: &mut StdRng) -> String {
    const WORDS: &[&str] = &[
        "budget", "Review", "é", "日本", "🎉", " ", "room 4", "", "\n", "a",
    ];
    (0..rng.random_range(0..5))
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect()
}

fn opt_text(rng: &mut StdRng) -> Option<String> {
    rng.random_bool(0.7).then(|| text(rng))
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn time(rng: &mut StdRng) -> Option<String> {
    const TIMES: &[&str] = &[
        "2026-11-19T10:00:00+01:00[Europe/Berlin]",
        "2026-11-19T10:00:00[Europe/Berlin]",
        "2026-11-19T09:00:00Z",
        "2026-11-19T10:00:00",
        "2026-11-19",
        "2026-11-20",
    ];
    rng.random_bool(0.8).then(|| pick(rng, TIMES).to_owned())
}

fn json_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.random_range(0..if depth > 1 { 5 } else { 7 }) {
        0 => Value::String(text(rng)),
        1 => json!(rng.random_range(-5_i64..5)),
        2 => json!(rng.random_bool(0.5)),
        3 => json!(f64::from(rng.random_range(0..8_u8)) + 0.5),
        4 => Value::Null,
        5 => Value::Array(
            (0..rng.random_range(0..3))
                .map(|_| json_value(rng, depth + 1))
                .collect(),
        ),
        _ => Value::Object(
            (0..rng.random_range(0..3))
                .map(|_| {
                    (
                        pick(rng, &["a", "b", "c"]).to_owned(),
                        json_value(rng, depth + 1),
                    )
                })
                .collect(),
        ),
    }
}

fn extra(rng: &mut StdRng) -> Extra {
    (0..rng.random_range(0..3))
        .map(|_| {
            (
                pick(rng, &["x_one", "x_two", "x_three"]).to_owned(),
                json_value(rng, 0),
            )
        })
        .collect()
}

fn keyed<T>(
    rng: &mut StdRng,
    keys: &[&str],
    mut f: impl FnMut(&mut StdRng) -> T,
) -> BTreeMap<String, T> {
    (0..rng.random_range(0..4))
        .map(|_| (pick(rng, keys).to_owned(), f(rng)))
        .collect()
}

fn links(rng: &mut StdRng) -> BTreeMap<String, Link> {
    keyed(rng, &["caldav-main", "google-work", "graph"], |rng| Link {
        id: text(rng),
        removed: rng.random_bool(0.2),
        extra: extra(rng),
    })
}

fn attendees(rng: &mut StdRng) -> BTreeMap<String, Attendee> {
    keyed(rng, &["a@x.com", "b@x.com", "c@x.com", "d@x.com"], |rng| {
        Attendee {
            name: opt_text(rng),
            response: rng.random_bool(0.7).then(|| {
                pick(rng, &["needs_action", "accepted", "declined", "tentative"]).to_owned()
            }),
            optional: rng.random_bool(0.3),
            extra: extra(rng),
        }
    })
}

fn event(rng: &mut StdRng) -> CalendarEvent {
    let dates = |rng: &mut StdRng| {
        keyed(
            rng,
            &["20261119T090000Z", "20261217T090000Z", "20261119"],
            |rng| time(rng).unwrap_or_default(),
        )
    };
    CalendarEvent {
        deleted: rng.random_bool(0.1),
        deleted_at: rng
            .random_bool(0.1)
            .then(|| "2026-11-19T09:00:00Z".to_owned()),
        merged_into: rng.random_bool(0.1).then(|| "automerge:abc".to_owned()),
        links: links(rng),
        title: opt_text(rng),
        location: opt_text(rng),
        status: rng
            .random_bool(0.7)
            .then(|| pick(rng, &["confirmed", "tentative", "cancelled"]).to_owned()),
        ical_uid: opt_text(rng),
        description: opt_text(rng),
        start: time(rng),
        end: time(rng),
        recurrence: rng.random_bool(0.5).then(|| Recurrence {
            rules: keyed(rng, &["0", "1"], |rng| {
                pick(rng, &["RRULE:FREQ=DAILY", "RRULE:FREQ=MONTHLY;BYDAY=3TH"]).to_owned()
            }),
            exdates: dates(rng),
            rdates: dates(rng),
            extra: extra(rng),
        }),
        overrides: keyed(rng, &["20261119T090000Z", "20261217T090000Z"], |rng| {
            Override {
                cancelled: rng.random_bool(0.3),
                title: opt_text(rng),
                description: opt_text(rng),
                location: opt_text(rng),
                start: time(rng),
                end: time(rng),
                status: rng.random_bool(0.3).then(|| "tentative".to_owned()),
                attendees: rng.random_bool(0.4).then(|| attendees(rng)),
                links: links(rng),
                extra: extra(rng),
            }
        }),
        organizer: Organizer {
            email: opt_text(rng),
            name: opt_text(rng),
            extra: extra(rng),
        },
        attendees: attendees(rng),
        extra: extra(rng),
        ..CalendarEvent::default()
    }
}

fn points(rng: &mut StdRng) -> BTreeMap<String, ContactPoint> {
    keyed(rng, &["s1", "s2", "s3", "s4"], |rng| ContactPoint {
        value: text(rng),
        label: rng
            .random_bool(0.6)
            .then(|| pick(rng, &["work", "home", "mobile"]).to_owned()),
        primary: rng.random_bool(0.3),
        extra: extra(rng),
    })
}

fn contact(rng: &mut StdRng) -> Contact {
    Contact {
        deleted: rng.random_bool(0.1),
        links: links(rng),
        name: Name {
            full: opt_text(rng),
            given: opt_text(rng),
            family: opt_text(rng),
            extra: extra(rng),
        },
        organization: opt_text(rng),
        job_title: opt_text(rng),
        notes: opt_text(rng),
        company: rng.random_bool(0.3).then(|| "automerge:company".to_owned()),
        emails: points(rng),
        phones: points(rng),
        extra: extra(rng),
        ..Contact::default()
    }
}

/// `new` is either unrelated to `old` or `old` with some fields redrawn, so both whole rewrites
/// and small edits are covered.
fn mutate<T: Clone + serde::Serialize + serde::de::DeserializeOwned>(
    rng: &mut StdRng,
    old: &T,
    fresh: T,
) -> T {
    if rng.random_bool(0.3) {
        return fresh;
    }
    let (Value::Object(mut out), Value::Object(fresh)) = (
        serde_json::to_value(old).unwrap(),
        serde_json::to_value(fresh).unwrap(),
    ) else {
        unreachable!()
    };
    let keys: Vec<String> = out.keys().chain(fresh.keys()).cloned().collect();
    for key in keys {
        if rng.random_bool(0.25) {
            match fresh.get(&key) {
                Some(v) => out.insert(key, v.clone()),
                None => out.remove(&key),
            };
        }
    }
    serde_json::from_value(Value::Object(out)).unwrap()
}

#[test]
fn random_event_diffs_read_back_as_new() {
    let mut rng = StdRng::seed_from_u64(seed());
    for case in 0..CASES {
        let old = event(&mut rng);
        let fresh = event(&mut rng);
        let new = mutate(&mut rng, &old, fresh);
        let mut d = common::doc(common::BASE);
        create_event(&mut d, &old).unwrap();
        d.commit();
        assert_eq!(read_event(&d).unwrap(), old, "case {case}: create");
        apply_event_diff(&mut d, &old, &new).unwrap();
        d.commit();
        assert_eq!(read_event(&d).unwrap(), new, "case {case}: diff");
        assert_eq!(
            to_json(&d).unwrap(),
            serde_json::to_value(&new).unwrap(),
            "case {case}"
        );
        // And back again, on a document that went through save/load.
        let mut d = automerge::AutoCommit::load(&d.save()).unwrap();
        apply_event_diff(&mut d, &new, &old).unwrap();
        d.commit();
        assert_eq!(read_event(&d).unwrap(), old, "case {case}: reverse");
    }
}

#[test]
fn random_contact_diffs_read_back_as_new() {
    let mut rng = StdRng::seed_from_u64(seed());
    for case in 0..CASES {
        let old = contact(&mut rng);
        let fresh = contact(&mut rng);
        let new = mutate(&mut rng, &old, fresh);
        let mut d = common::doc(common::BASE);
        create_contact(&mut d, &old).unwrap();
        d.commit();
        assert_eq!(read_contact(&d).unwrap(), old, "case {case}: create");
        apply_contact_diff(&mut d, &old, &new).unwrap();
        d.commit();
        assert_eq!(read_contact(&d).unwrap(), new, "case {case}: diff");
        assert_eq!(
            to_json(&d).unwrap(),
            serde_json::to_value(&new).unwrap(),
            "case {case}"
        );
        apply_contact_diff(&mut d, &new, &old).unwrap();
        d.commit();
        assert_eq!(read_contact(&d).unwrap(), old, "case {case}: reverse");
    }
}
