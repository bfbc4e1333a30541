#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use automerge::transaction::Transactable;
use automerge::{ObjType, PatchAction, Prop, ROOT, ReadDoc};
use common::*;
use driftless_crdt_model::*;
use serde_json::json;

#[test]
fn event_round_trips_and_json_matches_the_document() {
    let event = sample_event();
    let mut d = doc(BASE);
    create_event(&mut d, &event).unwrap();
    d.commit();
    assert_eq!(read_event(&d).unwrap(), event);
    assert_eq!(to_json(&d).unwrap(), serde_json::to_value(&event).unwrap());
    // Atomic strings are Text objects, containers are maps.
    let (title, _) = d.get(ROOT, "title").unwrap().unwrap();
    assert_eq!(title, automerge::Value::Object(ObjType::Text));
    let (organizer, _) = d.get(ROOT, "organizer").unwrap().unwrap();
    assert_eq!(organizer, automerge::Value::Object(ObjType::Map));
    // And it survives save/load.
    let loaded = automerge::AutoCommit::load(&d.save()).unwrap();
    assert_eq!(read_event(&loaded).unwrap(), event);
}

#[test]
fn contact_round_trips_and_json_matches_the_document() {
    let contact = sample_contact();
    let mut d = doc(BASE);
    create_contact(&mut d, &contact).unwrap();
    d.commit();
    assert_eq!(read_contact(&d).unwrap(), contact);
    assert_eq!(
        to_json(&d).unwrap(),
        serde_json::to_value(&contact).unwrap()
    );
}

#[test]
fn equal_values_write_nothing() {
    let event = sample_event();
    let mut d = doc(BASE);
    create_event(&mut d, &event).unwrap();
    d.commit();
    let heads = d.get_heads();
    let summary = apply_event_diff(&mut d, &event, &event.clone()).unwrap();
    assert!(summary.is_empty());
    assert_eq!(d.commit(), None);
    assert_eq!(d.get_heads(), heads);

    let contact = sample_contact();
    let mut c = doc(BASE);
    create_contact(&mut c, &contact).unwrap();
    c.commit();
    let heads = c.get_heads();
    assert!(
        apply_contact_diff(&mut c, &contact, &contact)
            .unwrap()
            .is_empty()
    );
    assert_eq!(c.commit(), None);
    assert_eq!(c.get_heads(), heads);
}

/// The first-level field each patch touches.
fn touched_fields(d: &mut automerge::AutoCommit, before: &[automerge::ChangeHash]) -> Vec<String> {
    let after = d.get_heads();
    let mut fields: Vec<String> = d
        .diff(before, &after)
        .into_iter()
        .map(|p| match (p.path.first(), &p.action) {
            (Some((_, Prop::Map(k))), _) => k.clone(),
            (None, PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key }) => key.clone(),
            other => panic!("unexpected patch {other:?}"),
        })
        .collect();
    fields.dedup();
    fields
}

#[test]
fn diff_touches_only_the_changed_field() {
    let old = sample_event();
    let mut d = doc(BASE);
    create_event(&mut d, &old).unwrap();
    d.commit();
    let before = d.get_heads();

    let mut new = old.clone();
    new.title = Some("Budget review 2027".to_owned());
    let summary = apply_event_diff(&mut d, &old, &new).unwrap();
    assert_eq!(summary.written, vec!["title"]);
    let hash = d.commit().unwrap();
    assert_eq!(touched_fields(&mut d, &before), vec!["title"]);
    // One op makes the Text object, one per character fills it.
    let change = d.get_change_by_hash(&hash).unwrap();
    assert_eq!(change.len(), 1 + "Budget review 2027".chars().count());

    // A nested edit touches only that key: one attendee's response.
    let before = d.get_heads();
    let mut newer = new.clone();
    newer.attendees.get_mut("bob@example.com").unwrap().response = Some("declined".to_owned());
    let summary = apply_event_diff(&mut d, &new, &newer).unwrap();
    assert_eq!(summary.written, vec!["attendees.bob@example.com.response"]);
    d.commit();
    assert_eq!(touched_fields(&mut d, &before), vec!["attendees"]);

    // A description edit is a minimal splice, not a new Text object.
    let before = d.get_heads();
    let mut edited = newer.clone();
    edited.description = Some("Agenda: budget, hiring".to_owned());
    apply_event_diff(&mut d, &newer, &edited).unwrap();
    let hash = d.commit().unwrap();
    assert_eq!(touched_fields(&mut d, &before), vec!["description"]);
    assert_eq!(d.get_change_by_hash(&hash).unwrap().len(), ", hiring".len());
    assert_eq!(read_event(&d).unwrap(), edited);
}

#[test]
fn removed_entries_are_deleted_by_key_and_containers_are_kept() {
    let old = sample_event();
    let mut d = doc(BASE);
    create_event(&mut d, &old).unwrap();
    d.commit();
    let (_, attendees_before) = d.get(ROOT, "attendees").unwrap().unwrap();
    let mut new = old.clone();
    new.attendees.clear();
    new.attendees.insert(
        "carol@example.com".to_owned(),
        Attendee {
            optional: true,
            ..Attendee::default()
        },
    );
    new.overrides.remove("20270121T090000Z");
    let summary = apply_event_diff(&mut d, &old, &new).unwrap();
    d.commit();
    assert_eq!(
        summary.deleted,
        vec!["attendees.bob@example.com", "overrides.20270121T090000Z"]
    );
    let (_, attendees_after) = d.get(ROOT, "attendees").unwrap().unwrap();
    assert_eq!(
        attendees_before, attendees_after,
        "container never replaced"
    );
    assert_eq!(read_event(&d).unwrap(), new);
}

#[test]
fn concurrent_edits_to_different_fields_both_survive() {
    let base = sample_event();
    let mut d = doc(BASE);
    create_event(&mut d, &base).unwrap();
    d.commit();
    let mut app = fork(&mut d, APP);
    let mut bridge = fork(&mut d, BRIDGE);

    let mut by_app = base.clone();
    by_app.location = Some("Room 7".to_owned());
    apply_event_diff(&mut app, &base, &by_app).unwrap();
    app.commit();

    let mut by_bridge = base.clone();
    by_bridge.title = Some("Budget review (provider)".to_owned());
    apply_event_diff(&mut bridge, &base, &by_bridge).unwrap();
    bridge.commit();

    merge_both(&mut app, &mut bridge);
    let merged = read_event(&app).unwrap();
    assert_eq!(merged.location.as_deref(), Some("Room 7"));
    assert_eq!(merged.title.as_deref(), Some("Budget review (provider)"));
    assert!(field_conflicts(&app, source).unwrap().is_empty());
}

#[test]
fn concurrent_title_edits_conflict_visibly_with_one_winner() {
    let base = sample_event();
    let mut d = doc(BASE);
    create_event(&mut d, &base).unwrap();
    d.commit();
    let mut app = fork(&mut d, APP);
    let mut bridge = fork(&mut d, BRIDGE);

    let mut by_app = base.clone();
    by_app.title = Some("App title".to_owned());
    apply_event_diff(&mut app, &base, &by_app).unwrap();
    app.commit();
    let mut by_bridge = base.clone();
    by_bridge.title = Some("Provider title".to_owned());
    apply_event_diff(&mut bridge, &base, &by_bridge).unwrap();
    bridge.commit();

    merge_both(&mut app, &mut bridge);
    let winner = read_event(&app).unwrap().title.unwrap();
    assert_eq!(read_event(&bridge).unwrap().title.unwrap(), winner);
    // Never interleaved: one whole value wins.
    assert!(winner == "App title" || winner == "Provider title");

    for replica in [&app, &bridge] {
        let conflicts = field_conflicts(replica, source).unwrap();
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        let c = &conflicts[0];
        assert_eq!(c.field, "title");
        assert_eq!(c.winner, json!(winner));
        let mut values: Vec<(String, String)> = c
            .values
            .iter()
            .map(|v| (v.value.as_str().unwrap().to_owned(), v.source.clone()))
            .collect();
        values.sort();
        assert_eq!(
            values,
            vec![
                ("App title".to_owned(), "app".to_owned()),
                ("Provider title".to_owned(), "caldav-main".to_owned())
            ]
        );
    }
    // The endpoint's JSON shape.
    let body = serde_json::to_value(field_conflicts(&app, source).unwrap()).unwrap();
    assert_eq!(body[0]["field"], json!("title"));
    assert!(body[0]["values"][0]["source"].is_string());

    // A later write by either side resolves it.
    let seen = read_event(&app).unwrap();
    let mut resolved = seen.clone();
    resolved.title = Some("Agreed title".to_owned());
    apply_event_diff(&mut app, &seen, &resolved).unwrap();
    app.commit();
    assert!(field_conflicts(&app, source).unwrap().is_empty());
}

#[test]
fn concurrent_nested_edits_are_listed_by_path() {
    let base = sample_contact();
    let mut d = doc(BASE);
    create_contact(&mut d, &base).unwrap();
    d.commit();
    let mut app = fork(&mut d, APP);
    let mut bridge = fork(&mut d, BRIDGE);
    for (replica, given, phone) in [
        (&mut app, "Augusta", "+44 20 7946 0001"),
        (&mut bridge, "A.", "+44 20 7946 0002"),
    ] {
        let mut new = base.clone();
        new.name.given = Some(given.to_owned());
        new.phones.get_mut("p3").unwrap().value = phone.to_owned();
        apply_contact_diff(replica, &base, &new).unwrap();
        replica.commit();
    }
    merge_both(&mut app, &mut bridge);
    let fields: Vec<String> = field_conflicts(&app, source)
        .unwrap()
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(fields, vec!["name.given", "phones.p3.value"]);
    // One phone, one visible conflict: never two entries.
    assert_eq!(read_contact(&app).unwrap().phones.len(), 1);
}

#[test]
fn concurrent_description_edits_merge_character_by_character() {
    let base = sample_event();
    let mut d = doc(BASE);
    create_event(&mut d, &base).unwrap();
    d.commit();
    let mut app = fork(&mut d, APP);
    let mut bridge = fork(&mut d, BRIDGE);

    let mut by_app = base.clone();
    by_app.description = Some("Agenda: budget, hiring".to_owned());
    apply_event_diff(&mut app, &base, &by_app).unwrap();
    app.commit();
    let mut by_bridge = base.clone();
    by_bridge.description = Some("Draft agenda: budget".to_owned());
    apply_event_diff(&mut bridge, &base, &by_bridge).unwrap();
    bridge.commit();

    merge_both(&mut app, &mut bridge);
    assert_eq!(
        read_event(&app).unwrap().description.as_deref(),
        Some("Draft agenda: budget, hiring")
    );
    assert!(field_conflicts(&app, source).unwrap().is_empty());
}

#[test]
fn unknown_keys_survive_read_modify_write() {
    let base = sample_event();
    let mut d = doc(BASE);
    create_event(&mut d, &base).unwrap();
    d.commit();
    // An app adds fields this crate does not know, at the root and inside `organizer`.
    let mut app = fork(&mut d, APP);
    let color = app.put_object(ROOT, "x_app_color", ObjType::Text).unwrap();
    app.splice_text(&color, 0, 0, "teal").unwrap();
    app.put(ROOT, "x_priority", 3_i64).unwrap();
    let (_, organizer) = app.get(ROOT, "organizer").unwrap().unwrap();
    app.put(&organizer, "x_pronouns", "she/her").unwrap();
    app.commit();

    // Read -> modify -> write keeps them, and reading shows them in `extra`.
    let seen = read_event(&app).unwrap();
    assert_eq!(seen.extra.get("x_app_color"), Some(&json!("teal")));
    assert_eq!(seen.extra.get("x_priority"), Some(&json!(3)));
    assert_eq!(
        seen.organizer.extra.get("x_pronouns"),
        Some(&json!("she/her"))
    );
    let mut changed = seen.clone();
    changed.title = Some("Renamed".to_owned());
    changed.organizer.name = Some("Alice A.".to_owned());
    apply_event_diff(&mut app, &seen, &changed).unwrap();
    app.commit();
    assert_eq!(read_event(&app).unwrap(), changed);

    // A bridge whose shadow never saw them does not drop them either.
    let mut provider = base.clone();
    provider.location = Some("Room 9".to_owned());
    apply_event_diff(&mut app, &base, &provider).unwrap();
    app.commit();
    let after = to_json(&app).unwrap();
    assert_eq!(after["x_app_color"], json!("teal"));
    assert_eq!(after["organizer"]["x_pronouns"], json!("she/her"));
    assert_eq!(after["location"], json!("Room 9"));

    // Provider extras are written and read back too.
    let mut with_extra = provider.clone();
    with_extra.extra.insert(
        "x_google_color_id".to_owned(),
        json!({"id": "5", "tags": ["a", 1]}),
    );
    apply_event_diff(&mut app, &provider, &with_extra).unwrap();
    app.commit();
    assert_eq!(
        read_event(&app).unwrap().extra["x_google_color_id"],
        json!({"id": "5", "tags": ["a", 1]})
    );
}

#[test]
fn reader_accepts_scalar_strings_and_missing_containers() {
    let mut d = doc(BASE);
    d.put(ROOT, "type", "calendar_event").unwrap();
    d.put(ROOT, "schema", 1_i64).unwrap();
    d.put(ROOT, "title", "Plain string title").unwrap();
    d.put(ROOT, "start", "2026-11-19").unwrap();
    d.commit();
    let event = read_event(&d).unwrap();
    assert_eq!(event.title.as_deref(), Some("Plain string title"));
    assert!(event.attendees.is_empty() && event.links.is_empty());
    assert!(!event.deleted);

    // Writing into it creates the missing container and replaces the scalar with Text.
    let mut new = event.clone();
    new.title = Some("Now Text".to_owned());
    new.attendees
        .insert("dan@example.com".to_owned(), Attendee::default());
    apply_event_diff(&mut d, &event, &new).unwrap();
    d.commit();
    assert_eq!(read_event(&d).unwrap(), new);
    let (title, _) = d.get(ROOT, "title").unwrap().unwrap();
    assert_eq!(title, automerge::Value::Object(ObjType::Text));
}

#[test]
fn bad_types_name_the_field() {
    let mut d = doc(BASE);
    create_event(&mut d, &sample_event()).unwrap();
    d.put(ROOT, "title", 5_i64).unwrap();
    d.commit();
    let err = read_event(&d).unwrap_err().in_document("automerge:abc");
    assert_eq!(err.field, "title");
    assert_eq!(err.document, "automerge:abc");
    assert!(matches!(
        err.problem,
        ReadProblem::BadType {
            expected: "string",
            found: "number"
        }
    ));
    assert!(err.to_string().contains("automerge:abc"), "{err}");

    let mut d = doc(BASE);
    create_event(&mut d, &sample_event()).unwrap();
    let (_, attendees) = d.get(ROOT, "attendees").unwrap().unwrap();
    d.put_object(&attendees, "eve@example.com", ObjType::List)
        .unwrap();
    d.commit();
    assert_eq!(
        read_event(&d).unwrap_err().field,
        "attendees.eve@example.com"
    );

    let mut d = doc(BASE);
    create_event(&mut d, &sample_event()).unwrap();
    let (_, overrides) = d.get(ROOT, "overrides").unwrap().unwrap();
    let (_, o) = d.get(&overrides, "20261217T090000Z").unwrap().unwrap();
    d.put(&o, "start", "next tuesday").unwrap();
    d.commit();
    let err = read_event(&d).unwrap_err();
    assert_eq!(err.field, "overrides.20261217T090000Z.start");
    assert!(matches!(err.problem, ReadProblem::BadTime(_)));

    // A contact is not an event, and a newer schema is refused.
    let mut c = doc(BASE);
    create_contact(&mut c, &sample_contact()).unwrap();
    c.commit();
    assert!(matches!(
        read_event(&c).unwrap_err().problem,
        ReadProblem::WrongRecordType { .. }
    ));
    c.put(ROOT, "schema", 99_i64).unwrap();
    c.commit();
    assert!(matches!(
        read_contact(&c).unwrap_err().problem,
        ReadProblem::NewerSchema { found: 99, .. }
    ));

    // Writers refuse values that would not read back.
    let mut bad = sample_event();
    bad.start = Some("2026-11-19 10:00".to_owned());
    let mut d = doc(BASE);
    assert!(matches!(
        create_event(&mut d, &bad),
        Err(WriteError::Invalid(_))
    ));
}

#[test]
fn schema_0_documents_upgrade_on_read_and_in_place() {
    // A prototype-era contact: no `schema`, no `deleted`, `name` as one string.
    let mut c = doc(BASE);
    c.put(ROOT, "type", "contact").unwrap();
    c.put(ROOT, "name", "Ada Lovelace").unwrap();
    c.put(ROOT, "x_legacy", true).unwrap();
    c.commit();
    let contact = read_contact(&c).unwrap();
    assert_eq!(contact.schema, SCHEMA_VERSION);
    assert_eq!(contact.name.full.as_deref(), Some("Ada Lovelace"));
    assert!(!contact.deleted);
    assert_eq!(contact.extra.get("x_legacy"), Some(&json!(true)));

    let summary = upgrade_document(&mut c).unwrap();
    assert!(!summary.is_empty());
    c.commit();
    let raw = to_json(&c).unwrap();
    assert_eq!(raw["schema"], json!(1));
    assert_eq!(raw["name"], json!({"full": "Ada Lovelace"}));
    assert_eq!(raw["x_legacy"], json!(true));
    assert_eq!(read_contact(&c).unwrap(), contact);
    // Upgrading a current document is a no-op.
    assert!(upgrade_document(&mut c).unwrap().is_empty());

    // A prototype-era event with its rule at the root.
    let mut e = doc(BASE);
    e.put(ROOT, "type", "calendar_event").unwrap();
    e.put(ROOT, "title", "Standup").unwrap();
    e.put(ROOT, "rrule", "RRULE:FREQ=DAILY").unwrap();
    e.commit();
    let event = read_event(&e).unwrap();
    assert_eq!(
        event.recurrence.as_ref().unwrap().rules,
        BTreeMap::from([("0".to_owned(), "RRULE:FREQ=DAILY".to_owned())])
    );
    assert!(!event.extra.contains_key("rrule"));
    upgrade_document(&mut e).unwrap();
    e.commit();
    assert!(to_json(&e).unwrap().get("rrule").is_none());
    assert_eq!(read_event(&e).unwrap(), event);
}

#[test]
fn slots_fold_into_the_smaller_id() {
    let mut old = sample_contact();
    old.emails
        .insert("k9".to_owned(), point(" ADA@Example.com", None, false));
    old.phones
        .insert("p1".to_owned(), point("+44 (20) 7946-0000", None, false));
    let mut d = doc(BASE);
    create_contact(&mut d, &old).unwrap();
    d.commit();

    let mut new = old.clone();
    let folds = fold_contact(&mut new);
    assert_eq!(
        folds,
        vec![
            Fold {
                absorbed: "k9".to_owned(),
                into: "k1".to_owned()
            },
            Fold {
                absorbed: "p3".to_owned(),
                into: "p1".to_owned()
            },
        ]
    );
    // p1 keeps its value, takes the absorbed label and primary flag.
    assert_eq!(
        new.phones["p1"],
        point("+44 (20) 7946-0000", Some("mobile"), true)
    );
    let summary = apply_contact_diff(&mut d, &old, &new).unwrap();
    d.commit();
    assert_eq!(summary.deleted, vec!["emails.k9", "phones.p3"]);
    assert_eq!(read_contact(&d).unwrap(), new);
}

#[test]
fn provider_values_keep_their_slots() {
    let existing = sample_contact().phones;
    let mut next = 0;
    let mut new_slot = || {
        next += 1;
        format!("new{next}")
    };
    // Same number, different formatting: keeps p3. A changed number under the same label: edits
    // p3's value. An unseen number: a new slot.
    let same = assign_slots(
        &existing,
        &[point("+442079460000", Some("mobile"), true)],
        SlotKind::Phone,
        &mut new_slot,
    );
    assert_eq!(same.keys().collect::<Vec<_>>(), vec!["p3"]);
    let changed = assign_slots(
        &existing,
        &[
            point("+44 20 7946 9999", Some("mobile"), true),
            point("+1 555 0100", Some("work"), false),
        ],
        SlotKind::Phone,
        &mut new_slot,
    );
    assert_eq!(changed["p3"].value, "+44 20 7946 9999");
    assert_eq!(changed["new1"].value, "+1 555 0100");
}

#[test]
fn deleted_and_links() {
    let old = sample_contact();
    let mut d = doc(BASE);
    create_contact(&mut d, &old).unwrap();
    d.commit();
    let mut new = old.clone();
    new.links.insert(
        "hubspot-main".to_owned(),
        Link {
            id: String::new(),
            removed: false,
            extra: BTreeMap::new(),
        },
    );
    new.deleted = true;
    new.deleted_at = Some("2026-11-19T09:00:00Z".to_owned());
    let summary = apply_contact_diff(&mut d, &old, &new).unwrap();
    assert_eq!(
        summary.written,
        vec![
            "deleted",
            "deleted_at",
            "links.hubspot-main",
            "links.hubspot-main.id",
            "links.hubspot-main.removed"
        ]
    );
    d.commit();
    let raw = to_json(&d).unwrap();
    assert_eq!(raw["deleted"], json!(true));
    assert_eq!(
        raw["links"]["hubspot-main"],
        json!({"id": "", "removed": false})
    );
}

#[test]
fn a_stale_shadow_is_applied_at_its_heads_so_text_edits_merge() {
    let shadow = sample_event();
    let mut d = doc(BRIDGE);
    create_event(&mut d, &shadow).unwrap();
    d.commit();
    let shadow_heads = d.get_heads();

    // An app edit arrives (merged) before the bridge writes the provider's change.
    let mut app = fork(&mut d, APP);
    let mut by_app = shadow.clone();
    by_app.description = Some("Agenda: budget, hiring".to_owned());
    by_app.location = Some("Room 7".to_owned());
    apply_event_diff(&mut app, &shadow, &by_app).unwrap();
    app.commit();
    d.merge(&mut app).unwrap();

    let mut provider = shadow.clone();
    provider.description = Some("Draft agenda: budget".to_owned());
    let (summary, hash) = commit_event_diff_at(
        &mut d,
        &shadow_heads,
        &shadow,
        &provider,
        automerge::transaction::CommitOptions::default().with_time(1_700_000_000),
    )
    .unwrap();
    assert_eq!(summary.written, vec!["description"]);
    let hash = hash.unwrap();
    assert_eq!(
        d.get_change_by_hash(&hash).unwrap().actor_id(),
        &actor(BRIDGE)
    );
    let merged = read_event(&d).unwrap();
    assert_eq!(
        merged.description.as_deref(),
        Some("Draft agenda: budget, hiring")
    );
    assert_eq!(merged.location.as_deref(), Some("Room 7"));
    // Both edits are heads: the bridge change does not depend on the app's.
    assert_eq!(d.get_heads().len(), 2);
    merge_both(&mut d, &mut app);
}

#[test]
fn the_examples_in_the_app_docs_read_back_exactly() {
    let md = include_str!("../../docs/record-model.md");
    let blocks: Vec<serde_json::Value> = md
        .split("```json")
        .skip(1)
        .map(|rest| serde_json::from_str(&rest[..rest.find("```").unwrap()]).unwrap())
        .filter(|v: &serde_json::Value| v.get("type").is_some())
        .collect();
    let types: Vec<&str> = blocks.iter().filter_map(|b| b["type"].as_str()).collect();
    assert_eq!(types, vec!["calendar_event", "contact", "deal"]);
    for block in &blocks {
        let mut d = doc(BASE);
        match block["type"].as_str().unwrap() {
            "calendar_event" => {
                let event: CalendarEvent = serde_json::from_value(block.clone()).unwrap();
                create_event(&mut d, &event).unwrap();
                assert_eq!(read_event(&d).unwrap(), event);
            }
            "contact" => {
                let contact: Contact = serde_json::from_value(block.clone()).unwrap();
                create_contact(&mut d, &contact).unwrap();
                assert_eq!(read_contact(&d).unwrap(), contact);
            }
            "deal" => {
                let deal: Deal = serde_json::from_value(block.clone()).unwrap();
                create_deal(&mut d, &deal).unwrap();
                assert_eq!(read_deal(&d).unwrap(), deal);
            }
            other => panic!("unexpected example type {other}"),
        }
        assert_eq!(&to_json(&d).unwrap(), block);
    }
}

#[test]
fn writing_at_unknown_heads_is_refused() {
    let event = sample_event();
    let mut d = doc(BASE);
    create_event(&mut d, &event).unwrap();
    d.commit();
    let mut other = doc(APP);
    other.put(ROOT, "x", 1_i64).unwrap();
    other.commit();
    let foreign = other.get_heads();
    let mut new = event.clone();
    new.title = Some("x".to_owned());
    let err = commit_event_diff_at(&mut d, &foreign, &event, &new, Default::default());
    assert!(matches!(err, Err(WriteError::UnknownHead(_))));
    assert_eq!(read_event(&d).unwrap(), event);
}
