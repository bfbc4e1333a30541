//! The Graph provider layer (client + sans-IO sync + translation) against the Graph fake: initial
//! and incremental calendarView delta, stripped occurrences completed from their master,
//! `@removed` told apart (deleted vs left the window), a 410 resync that merges without duplicates,
//! a 412 race merged and retried, 429 honoured, quiet rounds that write nothing, contacts delta,
//! the OAuth refresh on 401, and subscriptions with their validation handshake and notifications.
//!
//! `Mirror` below is a deliberately small in-memory runner (documents as canonical values, a link
//! table of bundles): the server's real runner lands separately; this drives the same decisions.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use driftless_bridges::graph::client::{GraphClient, GraphConfig};
use driftless_bridges::graph::sync::{
    CalendarPlan, CalendarPull, ContactPlan, ContactPull, ItemKind, KnownEvent, Outgoing,
    RetryPolicy, Window, WriteJob, WriteOp, WriteOutcome, WriteStep, bundle_after,
    calendar_delta_url, contacts_delta_url, plan_calendar, plan_contacts,
};
use driftless_bridges::graph::translate::{
    EventBundle, EventWrite, contact_from_graph, contact_patch, event_from_graph, event_writes,
    response_write,
};
use driftless_bridges::graph::webhook::{Hint, subscription_body, triage, validation_token};
use driftless_bridges::sync::{Removal, removal};
use driftless_crdt_model::{CalendarEvent, Contact, Link};
use driftless_tests::fakes::graph::{CLIENT_ID, CLIENT_SECRET, FakeGraph, REFRESH_TOKEN};
use serde_json::{Value, json};

const BRIDGE: &str = "outlook";

fn retry() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(50),
        max: Duration::from_secs(5),
        max_attempts: 5,
        jitter: 0.0,
    }
}

fn client(fake: &FakeGraph, page_size: u32) -> anyhow::Result<GraphClient> {
    let mut config = GraphConfig::new(CLIENT_ID, REFRESH_TOKEN);
    config.api_base = fake.api_base();
    config.token_url = fake.token_url();
    config.client_secret = Some(CLIENT_SECRET.into());
    config.max_page_size = Some(page_size);
    config.timeout = Duration::from_secs(10);
    Ok(GraphClient::new(config)?)
}

fn window() -> Window {
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-15T00:00:00Z")
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    Window::around(
        now,
        Duration::from_secs(30 * 86_400),
        Duration::from_secs(90 * 86_400),
    )
}

fn event_row(subject: &str, day: u32, hour: u32) -> Value {
    json!({
        "subject": subject,
        "body": {"contentType": "html", "content": format!("<html><body><p>About {subject}</p></body></html>")},
        "start": {"dateTime": format!("2026-11-{day:02}T{hour:02}:00:00.0000000"), "timeZone": "UTC"},
        "end": {"dateTime": format!("2026-11-{day:02}T{:02}:30:00.0000000", hour), "timeZone": "UTC"},
        "originalStartTimeZone": "W. Europe Standard Time",
        "originalEndTimeZone": "W. Europe Standard Time",
        "iCalUId": format!("uid-{subject}@example.com"),
        "organizer": {"emailAddress": {"name": "Ada", "address": "ada@example.com"}},
        "attendees": [{"type": "required", "status": {"response": "accepted"}, "emailAddress": {"name": "Bob", "address": "bob@example.com"}}],
        "location": {"displayName": "Room 1"}
    })
}

/// A minimal runner: documents as canonical values, the link table as bundles.
struct Mirror {
    client: GraphClient,
    initial_url: String,
    window: Window,
    delta_link: Option<String>,
    links: BTreeMap<String, (String, EventBundle)>,
    docs: BTreeMap<String, CalendarEvent>,
    next_doc: u32,
}

impl Mirror {
    fn new(client: GraphClient, api_base: &str) -> Self {
        let window = window();
        Self {
            client,
            initial_url: calendar_delta_url(api_base, &window),
            window,
            delta_link: None,
            links: BTreeMap::new(),
            docs: BTreeMap::new(),
            next_doc: 0,
        }
    }

    fn known(&self) -> Vec<KnownEvent> {
        self.links
            .values()
            .map(|(doc, bundle)| KnownEvent::from_bundle(doc, bundle))
            .collect()
    }

    fn live_docs(&self) -> Vec<&CalendarEvent> {
        self.docs.values().filter(|d| !d.deleted).collect()
    }

    fn doc_by_title(&self, title: &str) -> Option<(String, CalendarEvent)> {
        self.docs
            .iter()
            .find(|(_, d)| d.title.as_deref() == Some(title))
            .map(|(k, d)| (k.clone(), d.clone()))
    }

    /// The document's new value: the provider's fields, the document's own links and tombstone.
    fn import(&mut self, doc: &str, id: &str, bundle: &EventBundle) -> anyhow::Result<()> {
        let mut event = event_from_graph(bundle, BRIDGE)?;
        let old = self.docs.get(doc).cloned().unwrap_or_default();
        event.links = old.links;
        event.links.insert(
            BRIDGE.into(),
            Link {
                id: id.into(),
                ..Default::default()
            },
        );
        event.deleted = old.deleted;
        self.docs.insert(doc.to_owned(), event);
        Ok(())
    }

    async fn pull(&mut self) -> anyhow::Result<CalendarPlan> {
        let known = self.known();
        let pull = CalendarPull::new(
            self.initial_url.clone(),
            self.delta_link.clone(),
            self.window,
            known.clone(),
            retry(),
        );
        let changes = self.client.run_calendar_pull(pull).await?;
        let plan = plan_calendar(&known, &changes);
        for id in &plan.creates {
            let Some(bundle) = bundle_after(id, None, &changes) else {
                continue;
            };
            self.next_doc += 1;
            let doc = format!("doc{}", self.next_doc);
            self.import(&doc, id, &bundle)?;
            self.links.insert(id.clone(), (doc, bundle));
        }
        for (id, doc) in &plan.updates {
            let stored = self.links.get(id).map(|(_, b)| b.clone());
            let Some(bundle) = bundle_after(id, stored, &changes) else {
                continue;
            };
            self.import(doc, id, &bundle)?;
            self.links.insert(id.clone(), (doc.clone(), bundle));
        }
        for (doc, old, new) in &plan.relinks {
            self.links.remove(old);
            let Some(bundle) = bundle_after(new, None, &changes) else {
                continue;
            };
            self.import(doc, new, &bundle)?;
            self.links.insert(new.clone(), (doc.clone(), bundle));
        }
        for (id, doc) in &plan.removals {
            self.links.remove(id);
            if let Some(d) = self.docs.get_mut(doc) {
                if let Some(link) = d.links.get_mut(BRIDGE) {
                    link.removed = true;
                }
                let others = d
                    .links
                    .iter()
                    .filter(|(b, l)| b.as_str() != BRIDGE && !l.removed)
                    .count();
                if removal(others, false) == Removal::Tombstone {
                    d.deleted = true;
                }
            }
        }
        // Out of the window: the link and the document stay as they are.
        self.delta_link = Some(changes.delta_link.clone());
        Ok(plan)
    }

    /// Pushes one document's differences; `merge` decides fields on a 412 (ours win where we
    /// changed them, theirs elsewhere).
    async fn push(&mut self, doc: &str) -> anyhow::Result<usize> {
        let event = self.docs.get(doc).cloned().context("no such doc")?;
        let link = event.links.get(BRIDGE).context("not linked")?.id.clone();
        let (_, mut bundle) = self.links.get(&link).cloned().context("no bundle")?;
        let base = event_from_graph(&bundle, BRIDGE)?;
        let mut writes_made = 0;
        let mut pending = event_writes(&bundle, &event)?;
        while let Some(write) = pending.first().cloned() {
            pending.remove(0);
            let op = WriteOp::from(write);
            let target = op.id().unwrap_or_default().to_owned();
            let mut job = WriteJob::new(ItemKind::Event, op, retry());
            let mut step = job.start();
            loop {
                match step {
                    WriteStep::Send(Outgoing { request, after }) => {
                        tokio::time::sleep(after).await;
                        writes_made += usize::from(matches!(
                            request,
                            driftless_bridges::graph::sync::Request::Write { .. }
                        ));
                        let reply = self.client.execute(&request).await?;
                        step = job.handle(reply)?;
                    }
                    WriteStep::Merge { current } => {
                        // Theirs for fields we did not change, ours for those we did.
                        bundle.replace_row(&target, current);
                        let theirs = event_from_graph(&bundle, BRIDGE)?;
                        let mut merged = theirs.clone();
                        if event.title != base.title {
                            merged.title = event.title.clone();
                        }
                        if event.location != base.location {
                            merged.location = event.location.clone();
                        }
                        if event.description != base.description {
                            merged.description = event.description.clone();
                        }
                        merged.links = event.links.clone();
                        self.docs.insert(doc.to_owned(), merged.clone());
                        let next = event_writes(&bundle, &merged)?
                            .into_iter()
                            .find(|w| matches!(w, EventWrite::Patch { id, .. } | EventWrite::Delete { id, .. } if *id == target));
                        step = job.rebase(next.map(WriteOp::from));
                    }
                    WriteStep::Done(outcome) => {
                        match outcome {
                            WriteOutcome::Stored(row) => bundle.replace_row(&target, row),
                            WriteOutcome::Deleted => bundle.cancel_instance(&target),
                            WriteOutcome::Gone
                            | WriteOutcome::NothingToWrite
                            | WriteOutcome::Accepted => {}
                        }
                        break;
                    }
                }
            }
        }
        self.links.insert(link, (doc.to_owned(), bundle));
        Ok(writes_made)
    }
}

fn delta_requests(fake: &FakeGraph) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/delta"))
        .map(|r| r.query.unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn initial_and_incremental_delta_replay_links_verbatim() -> anyhow::Result<()> {
    let fake = FakeGraph::start().await?;
    for i in 0..12 {
        fake.put_event(event_row(&format!("meeting-{i:02}"), 10 + i, 9));
    }
    // Outside the window: never listed.
    let mut far = event_row("far-away", 1, 9);
    far["start"]["dateTime"] = json!("2028-01-01T09:00:00.0000000");
    far["end"]["dateTime"] = json!("2028-01-01T10:00:00.0000000");
    fake.put_event(far);
    let mut mirror = Mirror::new(client(&fake, 5)?, &fake.api_base());
    let plan = mirror.pull().await?;
    assert_eq!(plan.creates.len(), 12);
    assert_eq!(mirror.live_docs().len(), 12);
    // Three pages of at most five: the first with the window, then skip tokens.
    let queries = delta_requests(&fake);
    assert_eq!(queries.len(), 3, "{queries:?}");
    assert!(queries[0].starts_with("startDateTime="));
    assert!(queries[1].starts_with("$skiptoken=") && queries[2].starts_with("$skiptoken="));
    let (_, doc) = mirror.doc_by_title("meeting-03").context("meeting-03")?;
    assert_eq!(
        doc.start.as_deref(),
        Some("2026-11-13T10:00:00+01:00[Europe/Berlin]")
    );
    assert_eq!(doc.description.as_deref(), Some("About meeting-03"));
    assert_eq!(doc.ical_uid.as_deref(), Some("uid-meeting-03@example.com"));

    // Outlook edits one and adds one; the next round lists exactly those.
    let id = mirror
        .docs
        .values()
        .find(|d| d.title.as_deref() == Some("meeting-05"))
        .map(|d| d.links[BRIDGE].id.clone())
        .context("link")?;
    fake.patch_event(&id, json!({"subject": "meeting-05 (edited)"}));
    fake.put_event(event_row("late-addition", 28, 15));
    fake.clear_log();
    let plan = mirror.pull().await?;
    assert_eq!(plan.updates.len(), 1);
    assert_eq!(plan.creates.len(), 1);
    assert!(mirror.doc_by_title("meeting-05 (edited)").is_some());
    let queries = delta_requests(&fake);
    assert_eq!(queries.len(), 1);
    assert!(queries[0].starts_with("$deltatoken="), "{queries:?}");

    // Replayed rows (Graph repeats rows, even within one response) change nothing twice.
    fake.replay_rows(true);
    fake.patch_event(&id, json!({"subject": "meeting-05 (again)"}));
    let plan = mirror.pull().await?;
    assert_eq!(plan.updates.len(), 1);
    assert!(plan.creates.is_empty());
    assert_eq!(mirror.live_docs().len(), 13);
    fake.replay_rows(false);

    // A quiet round lists nothing and changes nothing.
    let before = mirror.docs.clone();
    let plan = mirror.pull().await?;
    assert_eq!(plan, CalendarPlan::default());
    assert_eq!(mirror.docs, before);
    Ok(())
}

fn daily_series() -> Value {
    json!({
        "id": "AAMkSERIES=",
        "subject": "Standup",
        "body": {"contentType": "text", "content": "Daily"},
        "start": {"dateTime": "2026-11-16T08:00:00.0000000", "timeZone": "UTC"},
        "end": {"dateTime": "2026-11-16T08:15:00.0000000", "timeZone": "UTC"},
        "originalStartTimeZone": "W. Europe Standard Time",
        "originalEndTimeZone": "W. Europe Standard Time",
        "iCalUId": "040000008200E00074C5B7101A82E00800000000A0E3A4F5C9D3D8010000000000000000320000007643616C2D55696401000000357132763064336A3872306C316D39673073316332743362346B40676F6F676C652E636F6D00",
        "organizer": {"emailAddress": {"name": "Ada", "address": "ada@example.com"}},
        "attendees": [],
        "recurrence": {
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": "2026-11-16", "numberOfOccurrences": 5}
        }
    })
}

#[tokio::test]
async fn stripped_occurrences_are_completed_and_exceptions_become_overrides() -> anyhow::Result<()>
{
    let fake = FakeGraph::start().await?;
    let master = fake.put_event(daily_series());
    let mut mirror = Mirror::new(client(&fake, 50)?, &fake.api_base());
    let plan = mirror.pull().await?;
    assert_eq!(
        plan.creates,
        vec![master.clone()],
        "one document for the series"
    );
    let (doc_id, doc) = mirror.doc_by_title("Standup").context("series doc")?;
    assert_eq!(
        doc.ical_uid.as_deref(),
        Some("5q2v0d3j8r0l1m9g0s1c2t3b4k@google.com")
    );
    assert_eq!(
        doc.recurrence.as_ref().map(|r| r.rules["0"].as_str()),
        Some("RRULE:FREQ=DAILY;COUNT=5")
    );
    assert!(doc.overrides.is_empty());
    // The delta rows were stripped; the bundle holds them completed from the fetched master.
    let (_, bundle) = &mirror.links[&master];
    assert_eq!(bundle.instances.len(), 5);
    assert!(bundle.instances.values().all(|r| r["subject"] == "Standup"));
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.ends_with(&format!("/events/{master}")))
    );

    // Outlook moves Wednesday and deletes Friday.
    let wed = fake.occurrence_id(&master, "20261118T080000Z");
    let fri = fake.occurrence_id(&master, "20261120T080000Z");
    fake.patch_event(
        &wed,
        json!({"subject": "Standup (late)", "start": {"dateTime": "2026-11-18T10:00:00", "timeZone": "W. Europe Standard Time"}, "end": {"dateTime": "2026-11-18T10:15:00", "timeZone": "W. Europe Standard Time"}}),
    )
    .context("patch wednesday")?;
    assert!(fake.delete_event(&fri));
    let plan = mirror.pull().await?;
    assert_eq!(plan.updates.len(), 1);
    assert!(plan.removals.is_empty() && plan.creates.is_empty());
    let doc = mirror.docs[&doc_id].clone();
    let keys: Vec<&str> = doc.overrides.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["20261118T080000Z", "20261120T080000Z"]);
    let moved = &doc.overrides["20261118T080000Z"];
    assert_eq!(moved.title.as_deref(), Some("Standup (late)"));
    assert_eq!(
        moved.start.as_deref(),
        Some("2026-11-18T10:00:00+01:00[Europe/Berlin]")
    );
    assert!(doc.overrides["20261120T080000Z"].cancelled);
    assert!(!doc.deleted);

    // The app cancels Tuesday: one DELETE of that occurrence, nothing else.
    let mut edited = doc.clone();
    edited.overrides.insert(
        "20261117T080000Z".into(),
        driftless_crdt_model::Override {
            cancelled: true,
            ..Default::default()
        },
    );
    mirror.docs.insert(doc_id.clone(), edited);
    fake.clear_log();
    let writes = mirror.push(&doc_id).await?;
    assert_eq!(writes, 1);
    assert_eq!(fake.write_count(), 1);
    assert!(
        fake.event(&fake.occurrence_id(&master, "20261117T080000Z"))
            .is_none()
    );
    Ok(())
}

#[tokio::test]
async fn removed_entries_delete_or_leave_the_window() -> anyhow::Result<()> {
    let fake = FakeGraph::start().await?;
    let gone = fake.put_event(event_row("to-delete", 20, 9));
    let moved = fake.put_event(event_row("to-move", 21, 9));
    fake.put_event(event_row("stays", 22, 9));
    let mut mirror = Mirror::new(client(&fake, 50)?, &fake.api_base());
    mirror.pull().await?;
    assert_eq!(mirror.live_docs().len(), 3);

    assert!(fake.delete_event(&gone));
    fake.patch_event(
        &moved,
        json!({"start": {"dateTime": "2028-03-01T09:00:00", "timeZone": "UTC"}, "end": {"dateTime": "2028-03-01T10:00:00", "timeZone": "UTC"}}),
    );
    let plan = mirror.pull().await?;
    // Both came as @removed; a GET told them apart.
    assert_eq!(plan.removals.len(), 1);
    assert_eq!(plan.removals[0].0, gone);
    assert_eq!(plan.out_of_window.len(), 1);
    assert_eq!(plan.out_of_window[0].0, moved);
    let (_, deleted) = mirror.doc_by_title("to-delete").context("deleted doc")?;
    assert!(deleted.deleted && deleted.links[BRIDGE].removed);
    let (_, away) = mirror.doc_by_title("to-move").context("moved doc")?;
    assert!(
        !away.deleted && !away.links[BRIDGE].removed,
        "left the window: never a delete"
    );
    let probes: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/me/events/"))
        .map(|r| r.path)
        .collect();
    assert_eq!(probes.len(), 2, "{probes:?}");
    Ok(())
}

#[tokio::test]
async fn an_expired_delta_token_resyncs_by_merging_without_duplicates() -> anyhow::Result<()> {
    let fake = FakeGraph::start().await?;
    for i in 0..4 {
        fake.put_event(event_row(&format!("m{i}"), 10 + i, 9));
    }
    fake.put_event(daily_series());
    let mut mirror = Mirror::new(client(&fake, 3)?, &fake.api_base());
    mirror.pull().await?;
    assert_eq!(mirror.live_docs().len(), 5);
    let docs_before: BTreeSet<String> = mirror.docs.keys().cloned().collect();

    fake.expire_delta_tokens();
    let id = mirror
        .docs
        .values()
        .find(|d| d.title.as_deref() == Some("m1"))
        .map(|d| d.links[BRIDGE].id.clone())
        .context("m1")?;
    fake.patch_event(&id, json!({"subject": "m1 renamed"}));
    let m2 = mirror
        .docs
        .values()
        .find(|d| d.title.as_deref() == Some("m2"))
        .map(|d| d.links[BRIDGE].id.clone())
        .context("m2")?;
    fake.delete_event(&m2);
    fake.clear_log();
    let plan = mirror.pull().await?;
    assert!(
        plan.creates.is_empty(),
        "a resync never duplicates: {plan:?}"
    );
    assert_eq!(plan.removals.len(), 1);
    let docs_after: BTreeSet<String> = mirror.docs.keys().cloned().collect();
    assert_eq!(docs_before, docs_after);
    assert!(mirror.doc_by_title("m1 renamed").is_some());
    assert_eq!(mirror.live_docs().len(), 4);
    let statuses: Vec<(u16, String)> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/delta"))
        .map(|r| (r.status, r.query.unwrap_or_default()))
        .collect();
    assert_eq!(statuses[0].0, 410);
    assert!(statuses[1].1.starts_with("startDateTime="), "{statuses:?}");
    // The next round is incremental again.
    let plan = mirror.pull().await?;
    assert_eq!(plan, CalendarPlan::default());
    Ok(())
}

#[tokio::test]
async fn a_412_race_is_merged_and_retried() -> anyhow::Result<()> {
    let fake = FakeGraph::start().await?;
    let id = fake.put_event(event_row("race", 20, 9));
    let mut mirror = Mirror::new(client(&fake, 50)?, &fake.api_base());
    mirror.pull().await?;
    let (doc_id, mut doc) = mirror.doc_by_title("race").context("doc")?;
    // The app retitles while Outlook moves the meeting to another room.
    doc.title = Some("race (app title)".into());
    mirror.docs.insert(doc_id.clone(), doc);
    fake.patch_event(&id, json!({"location": {"displayName": "Room 9"}}));
    fake.clear_log();
    let writes = mirror.push(&doc_id).await?;
    assert_eq!(writes, 2, "one PATCH refused with 412, one accepted");
    let statuses: Vec<(String, u16)> = fake
        .requests()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("PATCH".into(), 412),
            ("GET".into(), 200),
            ("PATCH".into(), 200)
        ]
    );
    let stored = fake.event(&id).context("event")?;
    assert_eq!(stored["subject"], "race (app title)");
    assert_eq!(stored["location"]["displayName"], "Room 9");
    let doc = &mirror.docs[&doc_id];
    assert_eq!(doc.location.as_deref(), Some("Room 9"));
    // Pushing again is quiet.
    fake.clear_log();
    assert_eq!(mirror.push(&doc_id).await?, 0);
    assert_eq!(fake.write_count(), 0);
    Ok(())
}

#[tokio::test]
async fn throttling_is_honoured_and_tokens_refresh_on_401() -> anyhow::Result<()> {
    let fake = FakeGraph::start().await?;
    fake.put_event(event_row("slow", 20, 9));
    let mut mirror = Mirror::new(client(&fake, 50)?, &fake.api_base());
    fake.throttle_next(1, 429, 1);
    let started = Instant::now();
    mirror.pull().await?;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not waited for"
    );
    assert_eq!(mirror.live_docs().len(), 1);
    let api: Vec<u16> = fake
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1.0/"))
        .map(|r| r.status)
        .collect();
    assert_eq!(api[..2], [429, 200]);

    fake.throttle_next(1, 503, 0);
    mirror.pull().await?;

    assert_eq!(fake.token_requests(), 1);
    fake.revoke_access_tokens();
    mirror.pull().await?;
    assert_eq!(
        fake.token_requests(),
        2,
        "a 401 refreshes the access token once"
    );
    Ok(())
}

#[tokio::test]
async fn a_quiet_round_writes_nothing() -> anyhow::Result<()> {
    let fake = FakeGraph::start().await?;
    for i in 0..3 {
        fake.put_event(event_row(&format!("q{i}"), 10 + i, 9));
    }
    fake.put_event(daily_series());
    let mut mirror = Mirror::new(client(&fake, 50)?, &fake.api_base());
    mirror.pull().await?;
    fake.clear_log();
    let docs: Vec<String> = mirror.docs.keys().cloned().collect();
    for doc in &docs {
        assert_eq!(mirror.push(doc).await?, 0, "{doc}");
    }
    mirror.pull().await?;
    assert_eq!(fake.write_count(), 0);
    Ok(())
}

#[tokio::test]
async fn contacts_delta_creates_updates_deletes_and_patches_only_changes() -> anyhow::Result<()> {
    let fake = FakeGraph::start().await?;
    let grace = fake.put_contact(json!({
        "givenName": "Grace", "surname": "Hopper", "displayName": "Grace Hopper",
        "emailAddresses": [{"name": "Grace", "address": "grace@navy.mil"}],
        "businessPhones": ["+1 202 555 0100"], "mobilePhone": "+1 202 555 0199",
        "companyName": "US Navy", "birthday": "1906-12-09T11:59:00Z"
    }));
    let alan = fake.put_contact(
        json!({"givenName": "Alan", "surname": "Turing", "displayName": "Alan Turing"}),
    );
    let client = client(&fake, 1)?;
    let base = contacts_delta_url(&fake.api_base());
    let mut slot_n = 0;
    let mut slot = move || {
        slot_n += 1;
        format!("slot{slot_n}")
    };
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut docs: BTreeMap<String, (Value, Contact)> = BTreeMap::new();

    let changes = client
        .run_contact_pull(ContactPull::new(
            base.clone(),
            None,
            BTreeSet::new(),
            retry(),
        ))
        .await?;
    assert!(changes.complete);
    let plan = plan_contacts(&links, &changes);
    assert_eq!(plan.creates.len(), 2);
    for id in &plan.creates {
        let raw = changes.changed[id].clone();
        let contact = contact_from_graph(&raw, None, &mut slot)?;
        links.insert(id.clone(), format!("c-{id}"));
        docs.insert(id.clone(), (raw, contact));
    }
    assert_eq!(delta_requests(&fake).len(), 2, "page size 1: two pages");
    let link = changes.delta_link.clone();

    // Outlook changes Grace's mobile number and deletes Alan.
    fake.patch_contact(&grace, json!({"mobilePhone": "+1 202 555 0142"}));
    fake.delete_contact(&alan);
    let known: BTreeSet<String> = links.keys().cloned().collect();
    let changes = client
        .run_contact_pull(ContactPull::new(base.clone(), Some(link), known, retry()))
        .await?;
    let plan = plan_contacts(&links, &changes);
    assert_eq!(
        plan,
        ContactPlan {
            creates: vec![],
            updates: vec![(grace.clone(), format!("c-{grace}"))],
            removals: vec![(alan.clone(), format!("c-{alan}"))],
        }
    );
    let (_, before) = docs[&grace].clone();
    let raw = changes.changed[&grace].clone();
    let after = contact_from_graph(&raw, Some(&before), &mut slot)?;
    assert_eq!(
        after.phones.keys().collect::<Vec<_>>(),
        before.phones.keys().collect::<Vec<_>>(),
        "the changed number stays in its slot"
    );
    assert!(after.phones.values().any(|p| p.value == "+1 202 555 0142"));

    // The app edits the job title: one PATCH with that field only, If-Match the etag.
    let mut edited = after.clone();
    edited.job_title = Some("Rear Admiral".into());
    let patch = contact_patch(&raw, &edited);
    assert_eq!(patch.keys().collect::<Vec<_>>(), vec!["jobTitle"]);
    assert!(
        contact_patch(&raw, &after).is_empty(),
        "a quiet contact writes nothing"
    );
    let etag = raw["@odata.etag"].as_str().map(str::to_owned);
    fake.clear_log();
    let outcome = client
        .run_write(
            WriteJob::new(
                ItemKind::Contact,
                WriteOp::Patch {
                    id: grace.clone(),
                    etag,
                    body: patch,
                },
                retry(),
            ),
            |_| None,
        )
        .await?;
    let WriteOutcome::Stored(stored) = outcome else {
        bail!("not stored: {outcome:?}")
    };
    assert_eq!(stored["jobTitle"], "Rear Admiral");
    assert_eq!(
        stored["birthday"], "1906-12-09T11:59:00Z",
        "fields driftless does not map stay"
    );
    assert_eq!(fake.write_count(), 1);
    Ok(())
}

/// A webhook receiver built on `graph::webhook`, as the server's endpoint will be: echoes
/// validation tokens, triages batches, records the hints, answers 202.
struct Receiver {
    url: String,
    hints: std::sync::Arc<std::sync::Mutex<Vec<(String, Hint)>>>,
    rejected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

async fn receiver(client_state: &'static str, echo_wrong: bool) -> anyhow::Result<Receiver> {
    use axum::extract::{RawQuery, State};
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    type Shared = (
        std::sync::Arc<std::sync::Mutex<Vec<(String, Hint)>>>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    );
    async fn hook(
        State((hints, rejected)): State<Shared>,
        axum::extract::Path(state): axum::extract::Path<String>,
        RawQuery(query): RawQuery,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let (client_state, wrong) = state.split_once(':').unwrap_or((&state, "0"));
        if let Some(token) = query.as_deref().and_then(validation_token) {
            let token = if wrong == "1" {
                format!("{token}x")
            } else {
                token
            };
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/plain")],
                token,
            )
                .into_response();
        }
        let expected = client_state.to_owned();
        match triage(&body, &|_| Some(expected.clone())) {
            Ok(t) => {
                rejected.fetch_add(t.rejected, std::sync::atomic::Ordering::SeqCst);
                let mut h = hints
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (sub, list) in t.hints {
                    for hint in list {
                        h.push((sub.clone(), hint));
                    }
                }
                StatusCode::ACCEPTED.into_response()
            }
            Err(_) => StatusCode::BAD_REQUEST.into_response(),
        }
    }
    let hints = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rejected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/webhooks/graph/{state}", axum::routing::post(hook))
        .with_state((hints.clone(), rejected.clone()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Receiver {
        url: format!(
            "http://{addr}/webhooks/graph/{client_state}:{}",
            u8::from(echo_wrong)
        ),
        hints,
        rejected,
        _task: task,
    })
}

#[tokio::test]
async fn subscriptions_validate_and_notifications_carry_client_state() -> anyhow::Result<()> {
    let fake = FakeGraph::start().await?;
    let client = client(&fake, 50)?;
    let expiration = (chrono::Utc::now() + chrono::TimeDelta::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();

    // A receiver that does not echo the token: no subscription.
    let bad = receiver("cs-1", true).await?;
    let refused = client
        .create_subscription(&subscription_body(
            "/me/events",
            &bad.url,
            None,
            "cs-1",
            &expiration,
        ))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert!(fake.subscriptions().is_empty());
    // Too long a lifetime is refused.
    let good = receiver("cs-1", false).await?;
    let too_long = (chrono::Utc::now() + chrono::TimeDelta::days(8))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    assert!(
        client
            .create_subscription(&subscription_body(
                "/me/events",
                &good.url,
                None,
                "cs-1",
                &too_long
            ))
            .await
            .is_err()
    );

    let sub = client
        .create_subscription(&subscription_body(
            "/me/events",
            &good.url,
            Some(&good.url),
            "cs-1",
            &expiration,
        ))
        .await?;
    let sub_id = sub.id.clone().context("subscription id")?;
    assert_eq!(sub.client_state.as_deref(), Some("cs-1"));

    // A burst of changes is one batch; the receiver answers within Graph's 3 s budget.
    let (status, took) = fake
        .notify(&[
            (&sub_id, "updated", "e1"),
            (&sub_id, "created", "e2"),
            (&sub_id, "updated", "e1"),
        ])
        .await?;
    assert_eq!(status, 202);
    assert!(took < Duration::from_secs(3));
    assert_eq!(
        good.hints.lock().unwrap().clone(),
        vec![(sub_id.clone(), Hint::Pull)]
    );
    // A forged batch (wrong clientState) changes nothing.
    fake.deliver_raw(
        &sub_id,
        false,
        json!({"value": [{"subscriptionId": sub_id, "clientState": "guess", "changeType": "deleted"}]}),
    )
    .await?;
    assert_eq!(good.rejected.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(good.hints.lock().unwrap().len(), 1);
    // Lifecycle: missed means resync.
    fake.lifecycle(&sub_id, "missed").await?;
    assert_eq!(
        good.hints.lock().unwrap().last(),
        Some(&(sub_id.clone(), Hint::Resync))
    );

    // Renew, delete, and a renewal of a deleted subscription fails.
    let renewed = client.renew_subscription(&sub_id, &expiration).await?;
    assert_eq!(
        renewed.and_then(|s| s.expiration_date_time),
        Some(expiration.clone())
    );
    client.delete_subscription(&sub_id).await?;
    assert!(
        client
            .renew_subscription(&sub_id, &expiration)
            .await
            .is_err()
    );
    Ok(())
}

#[tokio::test]
async fn an_attendee_response_reaches_the_attendee_mailbox() -> anyhow::Result<()> {
    let fake = FakeGraph::start().await?;
    fake.set_owner("bob@example.com");
    let mut row = event_row("invite", 20, 9);
    row["isOrganizer"] = json!(false);
    row["responseStatus"] = json!({"response": "notResponded", "time": "0001-01-01T00:00:00Z"});
    row["attendees"][0]["status"] = json!({"response": "none", "time": "0001-01-01T00:00:00Z"});
    let id = fake.put_event(row);
    let client = client(&fake, 50)?;
    let me = client.mailbox_address().await?;
    assert_eq!(me, "bob@example.com");
    let mut mirror = Mirror::new(client.clone(), &fake.api_base());
    mirror.pull().await?;
    let (doc_id, doc) = mirror.doc_by_title("invite").context("invite")?;
    assert_eq!(doc.attendees[&me].response.as_deref(), Some("needs_action"));
    let (_, bundle) = mirror.links[&id].clone();
    assert!(!bundle.is_organizer());
    assert_eq!(response_write(&bundle, &doc, &me), None);

    // The app accepts on Bob's behalf: one POST accept, no PATCH of the shared fields.
    let mut accepted = doc.clone();
    if let Some(a) = accepted.attendees.get_mut(&me) {
        a.response = Some("accepted".into());
    }
    let write = response_write(&bundle, &accepted, &me).context("a response to send")?;
    assert!(matches!(&write, EventWrite::Respond { action, .. } if action == "accept"));
    fake.clear_log();
    let outcome = client
        .run_write(
            WriteJob::new(ItemKind::Event, WriteOp::from(write), retry()),
            |_| None,
        )
        .await?;
    assert_eq!(outcome, WriteOutcome::Accepted);
    let log: Vec<(String, String, u16)> = fake
        .requests()
        .into_iter()
        .map(|r| (r.method, r.path, r.status))
        .collect();
    assert_eq!(
        log,
        vec![("POST".into(), format!("/v1.0/me/events/{id}/accept"), 202)]
    );
    mirror.docs.insert(doc_id.clone(), accepted);
    mirror.pull().await?;
    let doc = &mirror.docs[&doc_id];
    assert_eq!(doc.attendees[&me].response.as_deref(), Some("accepted"));
    let (_, bundle) = mirror.links[&id].clone();
    assert_eq!(
        response_write(&bundle, doc, &me),
        None,
        "answered: nothing more to send"
    );
    Ok(())
}

#[tokio::test]
async fn a_moved_window_resyncs_without_deleting() -> anyhow::Result<()> {
    let fake = FakeGraph::start().await?;
    let early = fake.put_event(event_row("early", 10, 9));
    fake.put_event(event_row("late", 28, 9));
    let mut mirror = Mirror::new(client(&fake, 50)?, &fake.api_base());
    mirror.pull().await?;
    assert_eq!(mirror.live_docs().len(), 2);

    // Weeks later: the fresh window starts after "early".
    let now =
        chrono::DateTime::parse_from_rfc3339("2026-12-15T00:00:00Z")?.with_timezone(&chrono::Utc);
    let fresh = Window::around(
        now,
        Duration::from_secs(30 * 86_400),
        Duration::from_secs(90 * 86_400),
    );
    assert!(
        mirror
            .window
            .needs_refresh(&fresh, Duration::from_secs(86_400))
    );
    mirror.window = fresh;
    mirror.initial_url = calendar_delta_url(&fake.api_base(), &fresh);
    mirror.delta_link = None;
    let plan = mirror.pull().await?;
    assert_eq!(plan.out_of_window.len(), 1);
    assert_eq!(plan.out_of_window[0].0, early);
    assert_eq!(plan.updates.len(), 1, "late is re-listed and matched by id");
    assert!(plan.creates.is_empty() && plan.removals.is_empty());
    assert_eq!(mirror.live_docs().len(), 2, "nothing deleted");
    Ok(())
}
