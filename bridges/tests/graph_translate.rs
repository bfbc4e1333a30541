//! Pure translation tests for the Graph bridge: Windows zones, HTML bodies, stripped occurrences,
//! exceptions and cancelled occurrences as overrides, PATCH bodies with only changed fields,
//! contacts with stable slots, and the original UID inside Exchange global object ids.

use driftless_bridges::graph::translate::{
    EventBundle, EventWrite, contact_from_graph, contact_patch, event_create_body,
    event_from_graph, event_writes, held_back_rule, original_uid, response_write, series_uid,
    unwritable_changes,
};
use driftless_crdt_model::{Override, SlotKind};
use serde_json::{Value, json};

const BRIDGE: &str = "outlook";

/// A meeting organized in Google and seen in Outlook: its iCalUId wraps the Google UID.
const WRAPPED_ID: &str = "040000008200E00074C5B7101A82E00807EA0B13A0E3A4F5C9D3D8010000000000000000320000007643616C2D55696401000000357132763064336A3872306C316D39673073316332743362346B40676F6F676C652E636F6D00";
/// An id Exchange minted itself (no vCal-Uid), for the instance of 2026-11-19.
const NATIVE_ID: &str = "040000008200E00074C5B7101A82E00807EA0B13A0E3A4F5C9D3D8010000000000000000100000001A2B3C4D5E6F70819203A4B5C6D7E8F9";

#[test]
fn the_original_uid_is_extracted_from_a_global_object_id() {
    assert_eq!(
        original_uid(WRAPPED_ID).as_deref(),
        Some("5q2v0d3j8r0l1m9g0s1c2t3b4k@google.com")
    );
    // Lower-case hex reads the same.
    assert_eq!(
        original_uid(&WRAPPED_ID.to_lowercase()).as_deref(),
        Some("5q2v0d3j8r0l1m9g0s1c2t3b4k@google.com")
    );
    assert_eq!(original_uid(NATIVE_ID), None);
    assert_eq!(original_uid("plain-uid@example.com"), None);
    assert_eq!(original_uid("040000008200E000"), None);
    // A declared size beyond the data is not read past the end.
    let truncated = &WRAPPED_ID[..WRAPPED_ID.len() - 20];
    assert_eq!(original_uid(truncated), None);
    assert_eq!(
        series_uid(WRAPPED_ID),
        "5q2v0d3j8r0l1m9g0s1c2t3b4k@google.com"
    );
    // Exchange's own ids lose the per-instance date, so every occurrence names one series.
    let series = series_uid(NATIVE_ID);
    assert!(
        series.starts_with("040000008200E00074C5B7101A82E00800000000A0E3"),
        "{series}"
    );
    let other_instance = NATIVE_ID.replace("07EA0B13", "07EA0B1A");
    assert_eq!(series_uid(&other_instance), series);
    assert_eq!(series_uid("plain-uid@example.com"), "plain-uid@example.com");
}

fn single(extra: Value) -> Value {
    let mut base = json!({
        "@odata.etag": "W/\"CQAAAB1\"",
        "id": "AAMkEV1=",
        "type": "singleInstance",
        "iCalUId": WRAPPED_ID,
        "subject": "Budget review",
        "body": {"contentType": "html", "content": "<html><head><style>p{margin:0}</style></head><body><div>Agenda:&nbsp;numbers</div><div>Room 4</div></body></html>"},
        "bodyPreview": "Agenda: numbers Room 4",
        "start": {"dateTime": "2026-11-19T09:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-11-19T10:00:00.0000000", "timeZone": "UTC"},
        "originalStartTimeZone": "W. Europe Standard Time",
        "originalEndTimeZone": "W. Europe Standard Time",
        "isAllDay": false,
        "isCancelled": false,
        "showAs": "busy",
        "sensitivity": "normal",
        "location": {"displayName": "Room 4", "locationType": "default"},
        "organizer": {"emailAddress": {"name": "Ada", "address": "Ada@Example.com"}},
        "attendees": [
            {"type": "required", "status": {"response": "accepted", "time": "2026-11-01T00:00:00Z"}, "emailAddress": {"name": "Bob", "address": "bob@example.com"}},
            {"type": "optional", "status": {"response": "tentativelyAccepted", "time": "0001-01-01T00:00:00Z"}, "emailAddress": {"name": "Cy", "address": "cy@example.com"}},
            {"type": "required", "status": {"response": "none", "time": "0001-01-01T00:00:00Z"}, "emailAddress": {"address": "dee@example.com"}}
        ]
    });
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

#[test]
fn a_single_event_reads_with_its_windows_zone_as_iana() {
    let event = event_from_graph(&EventBundle::single(single(json!({}))), BRIDGE).unwrap();
    assert_eq!(event.title.as_deref(), Some("Budget review"));
    assert_eq!(
        event.start.as_deref(),
        Some("2026-11-19T10:00:00+01:00[Europe/Berlin]")
    );
    assert_eq!(
        event.end.as_deref(),
        Some("2026-11-19T11:00:00+01:00[Europe/Berlin]")
    );
    assert_eq!(
        event.description.as_deref(),
        Some("Agenda: numbers\nRoom 4")
    );
    assert_eq!(event.location.as_deref(), Some("Room 4"));
    assert_eq!(event.status.as_deref(), Some("confirmed"));
    assert_eq!(
        event.ical_uid.as_deref(),
        Some("5q2v0d3j8r0l1m9g0s1c2t3b4k@google.com")
    );
    assert_eq!(event.organizer.email.as_deref(), Some("ada@example.com"));
    assert_eq!(event.organizer.name.as_deref(), Some("Ada"));
    let responses: Vec<(&str, Option<&str>, bool)> = event
        .attendees
        .iter()
        .map(|(k, a)| (k.as_str(), a.response.as_deref(), a.optional))
        .collect();
    assert_eq!(
        responses,
        vec![
            ("bob@example.com", Some("accepted"), false),
            ("cy@example.com", Some("tentative"), true),
            ("dee@example.com", Some("needs_action"), false),
        ]
    );
    assert!(event.recurrence.is_none() && event.overrides.is_empty());
}

#[test]
fn zones_follow_dst_and_other_windows_names() {
    let summer = single(json!({
        "start": {"dateTime": "2026-07-01T16:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-07-01T17:30:00.0000000", "timeZone": "UTC"},
        "originalStartTimeZone": "Pacific Standard Time",
        "originalEndTimeZone": "Pacific Standard Time"
    }));
    let event = event_from_graph(&EventBundle::single(summer), BRIDGE).unwrap();
    assert_eq!(
        event.start.as_deref(),
        Some("2026-07-01T09:00:00-07:00[America/Los_Angeles]")
    );
    // Times Graph sends in a named zone (Prefer: outlook.timezone) read the same.
    let local = single(json!({
        "start": {"dateTime": "2026-07-01T09:00:00.0000000", "timeZone": "Pacific Standard Time"},
        "end": {"dateTime": "2026-07-01T10:30:00.0000000", "timeZone": "Pacific Standard Time"},
        "originalStartTimeZone": "Pacific Standard Time",
        "originalEndTimeZone": "Pacific Standard Time"
    }));
    let event = event_from_graph(&EventBundle::single(local), BRIDGE).unwrap();
    assert_eq!(
        event.start.as_deref(),
        Some("2026-07-01T09:00:00-07:00[America/Los_Angeles]")
    );
    // UTC or an unknown (custom) zone shows UTC.
    let utc = single(
        json!({"originalStartTimeZone": "tzone://Microsoft/Custom", "originalEndTimeZone": "UTC"}),
    );
    let event = event_from_graph(&EventBundle::single(utc), BRIDGE).unwrap();
    assert_eq!(event.start.as_deref(), Some("2026-11-19T09:00:00Z"));
    assert_eq!(event.end.as_deref(), Some("2026-11-19T10:00:00Z"));
}

#[test]
fn all_day_events_read_as_dates() {
    let row = single(json!({
        "isAllDay": true,
        "start": {"dateTime": "2026-12-24T00:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-12-26T00:00:00.0000000", "timeZone": "UTC"}
    }));
    let bundle = EventBundle::single(row);
    let event = event_from_graph(&bundle, BRIDGE).unwrap();
    assert_eq!(event.start.as_deref(), Some("2026-12-24"));
    assert_eq!(event.end.as_deref(), Some("2026-12-26"));
    assert!(event_writes(&bundle, &event).unwrap().is_empty());
    let mut moved = event.clone();
    moved.end = Some("2026-12-27".into());
    let writes = event_writes(&bundle, &moved).unwrap();
    let [EventWrite::Patch { body, .. }] = writes.as_slice() else {
        panic!("{writes:?}")
    };
    assert_eq!(
        body.get("end"),
        Some(&json!({"dateTime": "2026-12-27T00:00:00", "timeZone": "W. Europe Standard Time"}))
    );
    assert!(!body.contains_key("isAllDay"));
}

#[test]
fn a_quiet_event_writes_nothing_and_a_change_writes_only_its_fields() {
    let bundle = EventBundle::single(single(json!({})));
    let event = event_from_graph(&bundle, BRIDGE).unwrap();
    assert_eq!(event_writes(&bundle, &event).unwrap(), vec![]);

    let mut edited = event.clone();
    edited.title = Some("Budget review (moved)".into());
    edited.start = Some("2026-11-19T11:00:00+01:00[Europe/Berlin]".into());
    edited.end = Some("2026-11-19T12:00:00+01:00[Europe/Berlin]".into());
    let writes = event_writes(&bundle, &edited).unwrap();
    let [EventWrite::Patch { id, etag, body }] = writes.as_slice() else {
        panic!("{writes:?}")
    };
    assert_eq!(id, "AAMkEV1=");
    assert_eq!(etag.as_deref(), Some("W/\"CQAAAB1\""));
    let keys: Vec<&str> = body.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["end", "start", "subject"]);
    // The wall time in the zone Graph knows the event by, spelled the Windows way.
    assert_eq!(
        body["start"],
        json!({"dateTime": "2026-11-19T11:00:00", "timeZone": "W. Europe Standard Time"})
    );
    // The HTML body is untouched while the description is unchanged; a new text replaces it.
    assert!(!body.contains_key("body"));
    let mut described = event.clone();
    described.description = Some("Agenda: numbers\nRoom 5".into());
    let writes = event_writes(&bundle, &described).unwrap();
    let [EventWrite::Patch { body, .. }] = writes.as_slice() else {
        panic!("{writes:?}")
    };
    assert_eq!(
        body["body"],
        json!({"contentType": "text", "content": "Agenda: numbers\nRoom 5"})
    );
    assert_eq!(body.len(), 1);
    // An attendee added keeps the others' entries (and their status) as they were.
    let mut invited = event.clone();
    invited.attendees.insert(
        "eve@example.com".into(),
        driftless_crdt_model::Attendee {
            name: Some("Eve".into()),
            ..Default::default()
        },
    );
    let writes = event_writes(&bundle, &invited).unwrap();
    let [EventWrite::Patch { body, .. }] = writes.as_slice() else {
        panic!("{writes:?}")
    };
    let list = body["attendees"].as_array().unwrap();
    assert_eq!(list.len(), 4);
    assert_eq!(list[0]["status"]["response"], "accepted");
    assert_eq!(list[3]["emailAddress"]["address"], "eve@example.com");
    // A zone change writes the new zone's Windows id.
    let mut tokyo = event.clone();
    tokyo.start = Some("2026-11-19T18:00:00+09:00[Asia/Tokyo]".into());
    tokyo.end = Some("2026-11-19T19:00:00+09:00[Asia/Tokyo]".into());
    let writes = event_writes(&bundle, &tokyo).unwrap();
    let [EventWrite::Patch { body, .. }] = writes.as_slice() else {
        panic!("{writes:?}")
    };
    assert_eq!(body["start"]["timeZone"], "Tokyo Standard Time");
}

fn master() -> Value {
    json!({
        "@odata.etag": "W/\"M1\"",
        "id": "AAMkMASTER=",
        "type": "seriesMaster",
        "iCalUId": NATIVE_ID,
        "subject": "Standup",
        "body": {"contentType": "text", "content": "Daily sync"},
        "start": {"dateTime": "2026-11-16T08:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-11-16T08:15:00.0000000", "timeZone": "UTC"},
        "originalStartTimeZone": "W. Europe Standard Time",
        "originalEndTimeZone": "W. Europe Standard Time",
        "isAllDay": false,
        "isCancelled": false,
        "location": {"displayName": "Room 1"},
        "organizer": {"emailAddress": {"name": "Ada", "address": "ada@example.com"}},
        "attendees": [{"type": "required", "status": {"response": "accepted"}, "emailAddress": {"address": "bob@example.com"}}],
        "recurrence": {
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday", "tuesday", "wednesday", "thursday", "friday"], "firstDayOfWeek": "monday"},
            "range": {"type": "noEnd", "startDate": "2026-11-16", "recurrenceTimeZone": "W. Europe Standard Time"}
        }
    })
}

fn stripped(id: &str, day: u32) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.event",
        "@odata.etag": format!("W/\"O{day}\""),
        "id": id,
        "seriesMasterId": "AAMkMASTER=",
        "type": "occurrence",
        "start": {"dateTime": format!("2026-11-{day:02}T08:00:00.0000000"), "timeZone": "UTC"},
        "end": {"dateTime": format!("2026-11-{day:02}T08:15:00.0000000"), "timeZone": "UTC"}
    })
}

fn series_bundle() -> EventBundle {
    let mut bundle = EventBundle::single(master());
    bundle.put_instance(stripped("OCC16=", 16));
    bundle.put_instance(stripped("OCC17=", 17));
    bundle.put_instance(stripped("OCC18=", 18));
    // Thursday moved an hour later and retitled in Outlook.
    bundle.put_instance(json!({
        "@odata.etag": "W/\"X19\"",
        "id": "EXC19=",
        "seriesMasterId": "AAMkMASTER=",
        "type": "exception",
        "iCalUId": NATIVE_ID,
        "subject": "Standup (long)",
        "body": {"contentType": "text", "content": "Daily sync"},
        "start": {"dateTime": "2026-11-19T09:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-11-19T09:15:00.0000000", "timeZone": "UTC"},
        "originalStart": "2026-11-19T08:00:00Z",
        "originalStartTimeZone": "W. Europe Standard Time",
        "originalEndTimeZone": "W. Europe Standard Time",
        "isAllDay": false,
        "isCancelled": false,
        "location": {"displayName": "Room 1"},
        "organizer": {"emailAddress": {"name": "Ada", "address": "ada@example.com"}},
        "attendees": [{"type": "required", "status": {"response": "accepted"}, "emailAddress": {"address": "bob@example.com"}}]
    }));
    // Wednesday deleted in Outlook.
    bundle.cancel_instance("OCC18=");
    bundle
}

#[test]
fn stripped_occurrences_are_completed_from_their_master() {
    let bundle = series_bundle();
    let occ = &bundle.instances["OCC16="];
    assert_eq!(occ["subject"], "Standup");
    assert_eq!(
        occ["organizer"]["emailAddress"]["address"],
        "ada@example.com"
    );
    assert_eq!(occ["id"], "OCC16=");
    assert_eq!(occ["type"], "occurrence");
    assert!(occ.get("recurrence").is_none() && occ.get("iCalUId").is_none());
    // A new master re-completes the occurrences.
    let mut renamed = bundle.clone();
    let mut m = master();
    m["subject"] = json!("Standup v2");
    renamed.set_master(m);
    assert_eq!(renamed.instances["OCC16="]["subject"], "Standup v2");
    assert_eq!(renamed.instances["EXC19="]["subject"], "Standup (long)");
}

#[test]
fn exceptions_and_deleted_occurrences_become_overrides() {
    let event = event_from_graph(&series_bundle(), BRIDGE).unwrap();
    assert_eq!(
        event.recurrence.as_ref().unwrap().rules["0"],
        "RRULE:FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR;WKST=MO"
    );
    assert_eq!(
        event.start.as_deref(),
        Some("2026-11-16T09:00:00+01:00[Europe/Berlin]")
    );
    let keys: Vec<&str> = event.overrides.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["20261118T080000Z", "20261119T080000Z"]);
    assert!(event.overrides["20261118T080000Z"].cancelled);
    let moved = &event.overrides["20261119T080000Z"];
    assert_eq!(moved.title.as_deref(), Some("Standup (long)"));
    assert_eq!(
        moved.start.as_deref(),
        Some("2026-11-19T10:00:00+01:00[Europe/Berlin]")
    );
    assert_eq!(
        moved.end.as_deref(),
        Some("2026-11-19T10:15:00+01:00[Europe/Berlin]")
    );
    assert!(moved.location.is_none() && moved.description.is_none() && moved.attendees.is_none());
    assert_eq!(moved.links[BRIDGE].id, "EXC19=");
    // The quiet series writes nothing.
    assert_eq!(event_writes(&series_bundle(), &event).unwrap(), vec![]);
}

#[test]
fn override_edits_address_the_instance_and_series_edits_only_the_master() {
    let bundle = series_bundle();
    let event = event_from_graph(&bundle, BRIDGE).unwrap();

    // Cancelling Tuesday deletes that occurrence.
    let mut cancelled = event.clone();
    cancelled.overrides.insert(
        "20261117T080000Z".into(),
        Override {
            cancelled: true,
            ..Override::default()
        },
    );
    assert_eq!(
        event_writes(&bundle, &cancelled).unwrap(),
        vec![EventWrite::Delete {
            id: "OCC17=".into(),
            etag: Some("W/\"O17\"".into())
        }]
    );

    // Retitling Monday patches that occurrence only.
    let mut retitled = event.clone();
    retitled.overrides.insert(
        "20261116T080000Z".into(),
        Override {
            title: Some("Standup + demo".into()),
            ..Override::default()
        },
    );
    assert_eq!(
        event_writes(&bundle, &retitled).unwrap(),
        vec![EventWrite::Patch {
            id: "OCC16=".into(),
            etag: Some("W/\"O16\"".into()),
            body: serde_json::Map::from_iter([("subject".to_owned(), json!("Standup + demo"))]),
        }]
    );

    // A series title change is one PATCH of the master, however many instances there are.
    let mut series = event.clone();
    series.title = Some("Team standup".into());
    let writes = event_writes(&bundle, &series).unwrap();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert!(matches!(&writes[0], EventWrite::Patch { id, .. } if id == "AAMkMASTER="));

    // Moving the exception back to its slot patches its times.
    let mut back = event.clone();
    if let Some(ov) = back.overrides.get_mut("20261119T080000Z") {
        ov.start = None;
        ov.end = None;
    }
    let writes = event_writes(&bundle, &back).unwrap();
    let [EventWrite::Patch { id, body, .. }] = writes.as_slice() else {
        panic!("{writes:?}")
    };
    assert_eq!(id, "EXC19=");
    assert_eq!(
        body["start"],
        json!({"dateTime": "2026-11-19T09:00:00", "timeZone": "W. Europe Standard Time"})
    );
}

#[test]
fn a_new_event_gets_a_create_body() {
    let mut event = event_from_graph(&EventBundle::single(single(json!({}))), BRIDGE).unwrap();
    event.description = Some("Plain".into());
    let body = event_create_body(&event).unwrap();
    assert_eq!(body["subject"], "Budget review");
    assert_eq!(
        body["body"],
        json!({"contentType": "text", "content": "Plain"})
    );
    assert_eq!(
        body["start"],
        json!({"dateTime": "2026-11-19T10:00:00", "timeZone": "W. Europe Standard Time"})
    );
    assert_eq!(body["attendees"].as_array().map(Vec::len), Some(3));
}

fn contact_row() -> Value {
    json!({
        "@odata.etag": "W/\"C1\"",
        "id": "AAMkCT1=",
        "givenName": "Grace",
        "surname": "Hopper",
        "displayName": "Grace Hopper",
        "emailAddresses": [
            {"name": "Grace Hopper", "address": "grace@navy.mil"},
            {"name": "grace@example.com", "address": "grace@example.com"}
        ],
        "businessPhones": ["+1 202 555 0100"],
        "homePhones": [],
        "mobilePhone": "+1 202 555 0199",
        "companyName": "US Navy",
        "jobTitle": "Rear Admiral",
        "personalNotes": "COBOL",
        "birthday": "1906-12-09T11:59:00Z",
        "imAddresses": ["grace@im"]
    })
}

#[test]
fn contacts_keep_their_slots_and_patch_only_changes() {
    let raw = contact_row();
    let mut n = 0;
    let mut slot = || {
        n += 1;
        format!("s{n}")
    };
    let first = contact_from_graph(&raw, None, &mut slot).unwrap();
    assert_eq!(first.name.full.as_deref(), Some("Grace Hopper"));
    assert_eq!(first.organization.as_deref(), Some("US Navy"));
    assert_eq!(first.notes.as_deref(), Some("COBOL"));
    let emails: Vec<(&str, bool)> = first
        .emails
        .values()
        .map(|p| (p.value.as_str(), p.primary))
        .collect();
    assert_eq!(
        emails,
        vec![("grace@navy.mil", true), ("grace@example.com", false)]
    );
    let phones: Vec<(&str, Option<&str>)> = first
        .phones
        .values()
        .map(|p| (p.value.as_str(), p.label.as_deref()))
        .collect();
    assert_eq!(
        phones,
        vec![
            ("+1 202 555 0199", Some("mobile")),
            ("+1 202 555 0100", Some("work"))
        ]
    );
    assert!(contact_patch(&raw, &first).is_empty());

    // A changed mobile number at Graph stays in its slot (same label), the rest keep theirs.
    let mut changed = raw.clone();
    changed["mobilePhone"] = json!("+1 202 555 0142");
    let again = contact_from_graph(&changed, Some(&first), &mut slot).unwrap();
    assert_eq!(
        again.phones.keys().collect::<Vec<_>>(),
        first.phones.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        again.emails.keys().collect::<Vec<_>>(),
        first.emails.keys().collect::<Vec<_>>()
    );
    let mobile_slot = first
        .phones
        .iter()
        .find(|(_, p)| p.label.as_deref() == Some("mobile"))
        .map(|(k, _)| k.clone())
        .unwrap();
    assert_eq!(again.phones[&mobile_slot].value, "+1 202 555 0142");

    // An app edit writes only the fields it touched, keeping each email's `name`.
    let mut edited = first.clone();
    edited.job_title = Some("Commodore".into());
    edited.emails.insert(
        "new".into(),
        driftless_crdt_model::ContactPoint {
            value: "ghopper@example.org".into(),
            ..Default::default()
        },
    );
    let patch = contact_patch(&raw, &edited);
    let keys: Vec<&str> = patch.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["emailAddresses", "jobTitle"]);
    let emails = patch["emailAddresses"].as_array().unwrap();
    assert_eq!(
        emails[0],
        json!({"name": "Grace Hopper", "address": "grace@navy.mil"})
    );
    assert_eq!(emails.len(), 3);
    // Phone formatting differences are not changes.
    let mut reformatted = raw.clone();
    reformatted["businessPhones"] = json!(["+12025550100"]);
    assert!(contact_patch(&reformatted, &first).is_empty());
    assert_eq!(SlotKind::Phone.normalize("+1 202 555 0100"), "+12025550100");
}

#[test]
fn responses_are_sent_from_attendee_copies_only() {
    let row = single(json!({
        "isOrganizer": false,
        "responseStatus": {"response": "tentativelyAccepted", "time": "2026-11-02T00:00:00Z"}
    }));
    let bundle = EventBundle::single(row);
    assert!(!bundle.is_organizer());
    let mut event = event_from_graph(&bundle, BRIDGE).unwrap();
    // Cy is this mailbox and already answered tentatively.
    assert_eq!(response_write(&bundle, &event, "Cy@Example.com"), None);
    event.attendees.get_mut("cy@example.com").unwrap().response = Some("declined".into());
    assert_eq!(
        response_write(&bundle, &event, "cy@example.com"),
        Some(EventWrite::Respond {
            id: "AAMkEV1=".into(),
            action: "decline".into(),
            body: json!({"sendResponse": true}),
        })
    );
    // An answer cannot be withdrawn; an address not invited has nothing to send.
    event.attendees.get_mut("cy@example.com").unwrap().response = Some("needs_action".into());
    assert_eq!(response_write(&bundle, &event, "cy@example.com"), None);
    assert_eq!(response_write(&bundle, &event, "zed@example.com"), None);
    // The organizer's copy never sends a response.
    let organizer = EventBundle::single(single(json!({"isOrganizer": true})));
    let mut event = event_from_graph(&organizer, BRIDGE).unwrap();
    event.attendees.get_mut("cy@example.com").unwrap().response = Some("declined".into());
    assert_eq!(response_write(&organizer, &event, "cy@example.com"), None);
}

#[test]
fn changes_graph_cannot_take_are_listed_not_dropped() {
    let bundle = series_bundle();
    let event = event_from_graph(&bundle, BRIDGE).unwrap();
    assert!(unwritable_changes(&bundle, &event).unwrap().is_empty());
    let mut changed = event.clone();
    changed.status = Some("cancelled".into());
    changed
        .recurrence
        .as_mut()
        .unwrap()
        .rules
        .insert("0".into(), "RRULE:FREQ=DAILY".into());
    // A rule change is written; an EXDATE is not (Graph has none: it deletes the occurrence).
    changed
        .recurrence
        .as_mut()
        .unwrap()
        .exdates
        .insert("20261117T080000Z".into(), "20261117T080000Z".into());
    // An instance outside what the bundle holds cannot be addressed.
    changed.overrides.insert(
        "20270104T080000Z".into(),
        Override {
            title: Some("far".into()),
            ..Override::default()
        },
    );
    // An addressable one can.
    changed.overrides.insert(
        "20261116T080000Z".into(),
        Override {
            title: Some("near".into()),
            ..Override::default()
        },
    );
    assert_eq!(
        unwritable_changes(&bundle, &changed).unwrap(),
        vec!["status", "recurrence", "overrides"]
    );
    // The addressable override and the new rule are still written.
    let writes = event_writes(&bundle, &changed).unwrap();
    assert!(writes.iter().any(|w| matches!(
        w,
        EventWrite::Patch { body, .. } if body.get("recurrence").is_some_and(|r| r["pattern"]["type"] == "daily")
    )));
    assert!(
        writes
            .iter()
            .any(|w| matches!(w, EventWrite::Patch { id, .. } if id == "OCC16="))
    );
}

#[test]
fn a_rule_graph_cannot_express_is_held_back_while_the_other_changes_are_written() {
    let bundle = series_bundle();
    let event = event_from_graph(&bundle, BRIDGE).unwrap();
    assert_eq!(held_back_rule(&bundle, &event).unwrap(), None);
    let mut hourly = event.clone();
    hourly.title = Some("Standup v2".into());
    if let Some(r) = hourly.recurrence.as_mut() {
        r.rules
            .insert("0".into(), "RRULE:FREQ=HOURLY;COUNT=3".into());
    }
    // The title is written; the rule is not (Graph keeps its own, never a changed one).
    let writes = event_writes(&bundle, &hourly).unwrap();
    let [EventWrite::Patch { id, body, .. }] = writes.as_slice() else {
        panic!("expected one PATCH, got {writes:?}");
    };
    assert_eq!(id, "AAMkMASTER=");
    assert_eq!(body.keys().collect::<Vec<_>>(), ["subject"]);
    // ... and reported: Graph's rule, with why.
    let (theirs, reason) = held_back_rule(&bundle, &hourly)
        .unwrap()
        .expect("held back");
    assert_eq!(Some(&theirs), event.recurrence.as_ref());
    assert!(reason.contains("cannot express"), "{reason}");
    assert!(
        unwritable_changes(&bundle, &hourly)
            .unwrap()
            .contains(&"recurrence")
    );
    // An expressible rule is written and nothing is held back.
    let mut weekly = event.clone();
    if let Some(r) = weekly.recurrence.as_mut() {
        r.rules
            .insert("0".into(), "RRULE:FREQ=WEEKLY;COUNT=3".into());
    }
    assert_eq!(held_back_rule(&bundle, &weekly).unwrap(), None);
    assert!(matches!(
        event_writes(&bundle, &weekly).unwrap().as_slice(),
        [EventWrite::Patch { body, .. }] if body.contains_key("recurrence")
    ));
}
