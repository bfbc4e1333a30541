//! The Google Calendar provider layer against the fake Calendar v3 server: the client, the
//! sans-IO pull / push state machines and the translation, driven by a small runner in this
//! file that keeps the link table and shadows in memory (the server's runner does the same with
//! redb and Automerge).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use driftless_bridges::google::channel::{
    Channel, Channels, Notification, Verdict, stop_body, watch_body,
};
use driftless_bridges::google::client::{GoogleClient, GoogleConfig, Secret};
use driftless_bridges::google::sync::{
    KnownSeries, Pull, PullOptions, PullOutcome, PullStep, Push, PushOptions, PushOutcome,
    PushStep, Request, RetryPolicy, group_series, merge_series, plan_pull,
};
use driftless_bridges::google::translate::{
    RenderContext, StoredSeries, event_from_series, event_id_for_document,
};
use driftless_crdt_model::{CalendarEvent, Override};
use driftless_tests::fakes::google::{Fault, GoogleFake};
use serde_json::{Value, json};

const CAL: &str = "primary";

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(20),
        max: Duration::from_millis(200),
        quota_base: Duration::from_millis(200),
        max_attempts: 6,
    }
}

/// One linked record: its shadow at Google and the document's value.
#[derive(Debug, Clone)]
struct Record {
    stored: StoredSeries,
    doc: CalendarEvent,
}

#[derive(Debug, Default)]
struct RoundCounts {
    created: usize,
    updated: usize,
    changed_docs: usize,
    removed: usize,
    relinked: usize,
}

/// A minimal runner: link table, shadows and "documents" in memory.
struct Runner {
    client: GoogleClient,
    token: Option<String>,
    calendar_zone: Option<String>,
    /// Document id to record.
    records: BTreeMap<String, Record>,
    /// Series (master event) id to document id.
    links: BTreeMap<String, String>,
    sleeps: Vec<Duration>,
    next_doc: u8,
    time_min: Option<String>,
}

impl Runner {
    fn new(fake: &GoogleFake) -> anyhow::Result<Self> {
        let (client_id, secret, refresh) = fake.credentials();
        let mut config =
            GoogleConfig::new(CAL, client_id, Secret::new(secret), Secret::new(refresh));
        config.api_base = fake.api_base();
        config.token_url = fake.token_url();
        Ok(Runner {
            client: GoogleClient::new(config)?,
            token: None,
            calendar_zone: None,
            records: BTreeMap::new(),
            links: BTreeMap::new(),
            sleeps: Vec::new(),
            next_doc: 0,
            time_min: None,
        })
    }

    fn new_doc_id(&mut self) -> String {
        self.next_doc += 1;
        // Document ids are 16 bytes; the Google id is their hex form.
        event_id_for_document(&[
            0x5a,
            0x17,
            self.next_doc,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            1,
        ])
    }

    async fn pull(&mut self) -> anyhow::Result<(PullOutcome, RoundCounts)> {
        let opts = PullOptions {
            max_results: 2500,
            time_min: self.time_min.clone(),
            retry: fast_retry(),
            ..PullOptions::default()
        };
        let mut pull = Pull::new(self.token.clone(), opts);
        let outcome = loop {
            match pull.poll() {
                PullStep::Send(req) => {
                    let resp = self.client.execute(&req).await?;
                    pull.on_response(resp);
                }
                PullStep::Sleep(d) => {
                    self.sleeps.push(d);
                    tokio::time::sleep(d).await;
                }
                PullStep::Done(o) => break o,
                PullStep::Failed(e) => bail!("pull failed: {e}"),
            }
        };
        let counts = self.apply(&outcome)?;
        self.token = Some(outcome.next_sync_token.clone());
        if outcome.calendar_zone.is_some() {
            self.calendar_zone = outcome.calendar_zone.clone();
        }
        Ok((outcome, counts))
    }

    fn apply(&mut self, outcome: &PullOutcome) -> anyhow::Result<RoundCounts> {
        let changes = group_series(&outcome.events);
        let known: Vec<KnownSeries> = self
            .links
            .iter()
            .map(|(id, doc)| KnownSeries {
                event_id: id.clone(),
                doc: doc.clone(),
                ical_uid: self.records[doc].stored.ical_uid().map(str::to_owned),
            })
            .collect();
        let plan = plan_pull(&known, &changes, outcome.complete);
        let by_id: BTreeMap<&str, _> = changes.iter().map(|c| (c.series_id.as_str(), c)).collect();
        let mut counts = RoundCounts::default();
        for (doc, old, new) in &plan.relinks {
            self.links.remove(old);
            self.links.insert(new.clone(), doc.clone());
            let record = self.records.get_mut(doc).context("relinked record")?;
            record.stored = merge_series(Some(&record.stored), by_id[new.as_str()])?;
            record.doc = merged(&record.doc, &event_from_series(&record.stored)?);
            counts.relinked += 1;
        }
        for id in &plan.creates {
            let stored = merge_series(None, by_id[id.as_str()])?;
            let doc_id = format!("doc-{id}");
            let doc = event_from_series(&stored)?;
            self.records.insert(doc_id.clone(), Record { stored, doc });
            self.links.insert(id.clone(), doc_id);
            counts.created += 1;
        }
        for (id, doc) in &plan.updates {
            let record = self.records.get_mut(doc).context("updated record")?;
            let before = event_from_series(&record.stored)?;
            record.stored = merge_series(Some(&record.stored), by_id[id.as_str()])?;
            let after = event_from_series(&record.stored)?;
            // The document takes what the provider changed (shadow diff), nothing else.
            if after != before {
                record.doc = merged(&record.doc, &after);
                counts.changed_docs += 1;
            }
            counts.updated += 1;
        }
        for (id, doc) in &plan.removals {
            self.links.remove(id);
            self.records.remove(doc);
            counts.removed += 1;
        }
        Ok(counts)
    }

    /// Pushes one document (as edited by the app), merging on 412 like the server's runner.
    async fn push(&mut self, doc_id: &str) -> anyhow::Result<u32> {
        let mut writes = 0;
        for _attempt in 0..4 {
            let record = self.records.get(doc_id).cloned();
            let (desired, stored) = match &record {
                Some(r) => (r.doc.clone(), Some(r.stored.clone())),
                None => bail!("no record {doc_id}"),
            };
            let stored = stored.filter(|s| !s.id().is_empty());
            let new_id = doc_id.to_owned();
            let opts = PushOptions {
                ctx: RenderContext {
                    calendar_zone: self.calendar_zone.clone(),
                },
                retry: fast_retry(),
                seed: 7,
            };
            let mut push = Push::new(doc_id, desired.clone(), stored.clone(), new_id, opts)?;
            let outcome = loop {
                match push.poll() {
                    PushStep::Send(req) => {
                        let resp = self.client.execute(&req).await?;
                        push.on_response(resp);
                    }
                    PushStep::Sleep(d) => {
                        self.sleeps.push(d);
                        tokio::time::sleep(d).await;
                    }
                    PushStep::Done(o) => break o,
                    PushStep::Failed(e) => bail!("push of {doc_id} failed: {e}"),
                }
            };
            match outcome {
                PushOutcome::Written {
                    stored,
                    writes: w,
                    problems,
                } => {
                    writes += w;
                    if !problems.is_empty() {
                        bail!("push of {doc_id}: {problems:?}");
                    }
                    match stored {
                        Some(s) => {
                            self.links.insert(s.id().to_owned(), doc_id.to_owned());
                            let r = self.records.get_mut(doc_id).context("record")?;
                            r.stored = s;
                        }
                        None => {
                            self.records.remove(doc_id);
                            self.links.retain(|_, d| d != doc_id);
                        }
                    }
                    return Ok(writes);
                }
                PushOutcome::Stale { fresh, writes: w } => {
                    writes += w;
                    // What the app changed (document vs shadow) goes onto Google's new copy.
                    let base = event_from_series(&stored.context("a 412 needs a stored series")?)?;
                    let theirs = event_from_series(&fresh)?;
                    let r = self.records.get_mut(doc_id).context("record")?;
                    r.doc = three_way(&base, &desired, &theirs);
                    r.stored = fresh;
                }
                PushOutcome::Gone { .. } => bail!("{doc_id} is gone at Google"),
            }
        }
        bail!("push of {doc_id} kept meeting 412")
    }

    async fn push_all(&mut self) -> anyhow::Result<u32> {
        let docs: Vec<String> = self.records.keys().cloned().collect();
        let mut writes = 0;
        for d in docs {
            writes += self.push(&d).await?;
        }
        Ok(writes)
    }

    fn doc_of(&self, series_id: &str) -> anyhow::Result<&CalendarEvent> {
        let doc = self.links.get(series_id).context("no link")?;
        Ok(&self.records[doc].doc)
    }

    fn doc_mut(&mut self, series_id: &str) -> anyhow::Result<&mut CalendarEvent> {
        let doc = self.links.get(series_id).context("no link")?.clone();
        Ok(&mut self.records.get_mut(&doc).context("record")?.doc)
    }
}

/// The provider's canonical fields onto a document, keeping the document's own (links, extra).
fn merged(doc: &CalendarEvent, provider: &CalendarEvent) -> CalendarEvent {
    CalendarEvent {
        links: doc.links.clone(),
        extra: doc.extra.clone(),
        ..provider.clone()
    }
}

/// Field-level three-way merge: a field the app changed (desired != base) keeps the app's value,
/// every other field takes Google's.
fn three_way(
    base: &CalendarEvent,
    desired: &CalendarEvent,
    theirs: &CalendarEvent,
) -> CalendarEvent {
    fn pick<T: PartialEq + Clone>(b: &T, d: &T, t: &T) -> T {
        if d != b { d.clone() } else { t.clone() }
    }
    CalendarEvent {
        title: pick(&base.title, &desired.title, &theirs.title),
        location: pick(&base.location, &desired.location, &theirs.location),
        description: pick(&base.description, &desired.description, &theirs.description),
        status: pick(&base.status, &desired.status, &theirs.status),
        start: pick(&base.start, &desired.start, &theirs.start),
        end: pick(&base.end, &desired.end, &theirs.end),
        recurrence: pick(&base.recurrence, &desired.recurrence, &theirs.recurrence),
        overrides: pick(&base.overrides, &desired.overrides, &theirs.overrides),
        attendees: pick(&base.attendees, &desired.attendees, &theirs.attendees),
        ..theirs.clone()
    }
}

fn single(summary: &str, day: u32) -> Value {
    json!({
        "summary": summary,
        "start": {"dateTime": format!("2026-11-{day:02}T10:00:00+01:00"), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": format!("2026-11-{day:02}T11:00:00+01:00"), "timeZone": "Europe/Berlin"},
    })
}

fn list_requests(fake: &GoogleFake) -> Vec<String> {
    fake.log()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/events"))
        .map(|r| r.query)
        .collect()
}

#[tokio::test]
async fn full_sync_pages_then_incremental_changes_and_deletes() -> anyhow::Result<()> {
    let fake = GoogleFake::start().await?;
    let mut ids = Vec::new();
    for i in 0..5 {
        let e = fake.insert(CAL, single(&format!("Event {i}"), 10 + i))?;
        ids.push(e["id"].as_str().context("id")?.to_owned());
    }
    fake.set_page_cap(2);
    fake.inject_empty_pages(1);
    let mut runner = Runner::new(&fake)?;
    runner.time_min = Some("2026-01-01T00:00:00Z".into());
    let (out, counts) = runner.pull().await?;
    assert!(out.complete);
    assert_eq!(counts.created, 5);
    assert_eq!(
        out.requests, 4,
        "one empty page and three pages of at most two"
    );
    assert_eq!(
        runner.doc_of(&ids[0])?.start.as_deref(),
        Some("2026-11-10T10:00:00+01:00[Europe/Berlin]")
    );

    fake.patch(CAL, &ids[1], json!({"summary": "Renamed"}))?;
    fake.delete(CAL, &ids[2])?;
    let added = fake.insert(CAL, single("Added", 20))?;
    fake.clear_log();
    let (out, counts) = runner.pull().await?;
    assert!(!out.complete);
    assert_eq!(
        (counts.created, counts.updated, counts.removed),
        (1, 1, 1),
        "{counts:?}"
    );
    assert_eq!(runner.doc_of(&ids[1])?.title.as_deref(), Some("Renamed"));
    assert!(
        runner
            .links
            .contains_key(added["id"].as_str().context("id")?)
    );
    assert!(!runner.links.contains_key(&ids[2]));
    let queries = list_requests(&fake);
    assert!(!queries.is_empty());
    for q in &queries {
        assert!(
            q.contains("syncToken=") && q.contains("showDeleted=true"),
            "{q}"
        );
        assert!(
            !q.contains("timeMin"),
            "forbidden parameter sent with syncToken: {q}"
        );
    }

    // Nothing changed: an incremental round lists nothing.
    let (out, counts) = runner.pull().await?;
    assert!(out.events.is_empty() && counts.updated == 0);
    Ok(())
}

#[tokio::test]
async fn a_410_resync_merges_without_duplicates_or_wipes() -> anyhow::Result<()> {
    let fake = GoogleFake::start().await?;
    let a = fake.insert(CAL, single("A", 10))?;
    let b = fake.insert(CAL, single("B", 11))?;
    let c = fake.insert(CAL, single("C", 12))?;
    let mut runner = Runner::new(&fake)?;
    runner.pull().await?;
    let docs_before: Vec<String> = runner.records.keys().cloned().collect();
    // A local-only field on a document survives the resync.
    let a_id = a["id"].as_str().context("id")?.to_owned();
    runner
        .doc_mut(&a_id)?
        .extra
        .insert("app_note".into(), json!("keep me"));

    fake.expire_sync_tokens();
    fake.patch(
        CAL,
        b["id"].as_str().context("id")?,
        json!({"location": "Moon"}),
    )?;
    fake.delete(CAL, c["id"].as_str().context("id")?)?;
    let (out, counts) = runner.pull().await?;
    assert!(out.resynced && out.complete);
    assert_eq!(counts.created, 0, "no duplicates: {counts:?}");
    assert_eq!(counts.removed, 1);
    assert_eq!(runner.records.len(), 2);
    assert!(runner.records.keys().all(|d| docs_before.contains(d)));
    assert_eq!(
        runner
            .doc_of(b["id"].as_str().context("id")?)?
            .location
            .as_deref(),
        Some("Moon")
    );
    assert_eq!(runner.doc_of(&a_id)?.extra["app_note"], "keep me");
    let q = list_requests(&fake);
    assert!(q.iter().filter(|q| !q.contains("syncToken")).count() >= 2);

    // And the next round is incremental again.
    let (out, _) = runner.pull().await?;
    assert!(!out.complete && out.events.is_empty());

    // Tokens also expire by age.
    fake.set_sync_token_max_age(Some(Duration::ZERO));
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (out, counts) = runner.pull().await?;
    assert!(
        out.resynced && counts.created == 0 && counts.removed == 0,
        "{counts:?}"
    );
    Ok(())
}

fn weekly_series() -> Value {
    json!({
        "summary": "Weekly review",
        "location": "Room 4",
        "start": {"dateTime": "2026-11-05T10:00:00+01:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-11-05T11:00:00+01:00", "timeZone": "Europe/Berlin"},
        "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=TH;COUNT=10"],
        "attendees": [
            {"email": "owner@example.org", "organizer": true, "self": true, "responseStatus": "accepted"},
            {"email": "Bob@Example.org", "displayName": "Bob", "responseStatus": "needsAction"},
        ],
        "reminders": {"useDefault": false, "overrides": [{"method": "popup", "minutes": 10}]},
    })
}

#[tokio::test]
async fn a_series_with_a_moved_and_a_cancelled_instance_is_one_event() -> anyhow::Result<()> {
    let fake = GoogleFake::start().await?;
    let master = fake.insert(CAL, weekly_series())?;
    let id = master["id"].as_str().context("id")?.to_owned();
    // 12 Nov moves to 14:00 and is renamed; 19 Nov is cancelled.
    fake.patch(
        CAL,
        &format!("{id}_20261112T090000Z"),
        json!({"summary": "Weekly review (moved)",
               "start": {"dateTime": "2026-11-12T14:00:00+01:00", "timeZone": "Europe/Berlin"},
               "end": {"dateTime": "2026-11-12T15:00:00+01:00", "timeZone": "Europe/Berlin"}}),
    )?;
    fake.delete(CAL, &format!("{id}_20261119T090000Z"))?;

    let mut runner = Runner::new(&fake)?;
    let (out, counts) = runner.pull().await?;
    assert_eq!(out.events.len(), 3, "master, exception, cancelled instance");
    assert_eq!(counts.created, 1);
    assert_eq!(runner.records.len(), 1);
    let ev = runner.doc_of(&id)?;
    assert_eq!(
        ev.recurrence.as_ref().context("recurrence")?.rules["0"],
        "RRULE:FREQ=WEEKLY;BYDAY=TH;COUNT=10"
    );
    assert_eq!(
        ev.ical_uid.as_deref(),
        Some(format!("{id}@google.com").as_str())
    );
    assert_eq!(ev.overrides.len(), 2, "{:?}", ev.overrides);
    let moved = &ev.overrides["20261112T090000Z"];
    assert_eq!(moved.title.as_deref(), Some("Weekly review (moved)"));
    assert_eq!(
        moved.start.as_deref(),
        Some("2026-11-12T14:00:00+01:00[Europe/Berlin]")
    );
    assert!(ev.overrides["20261119T090000Z"].cancelled);
    assert_eq!(
        ev.attendees["bob@example.org"].response.as_deref(),
        Some("needs_action")
    );
    assert_eq!(ev.organizer.email.as_deref(), Some("owner@example.org"));

    // Another instance cancelled later arrives alone and lands in the same document.
    fake.delete(CAL, &format!("{id}_20261126T090000Z"))?;
    let (_, counts) = runner.pull().await?;
    assert_eq!((counts.created, counts.updated), (0, 1));
    assert!(runner.doc_of(&id)?.overrides["20261126T090000Z"].cancelled);

    // Nothing the app did: pushing writes nothing.
    fake.clear_log();
    assert_eq!(runner.push_all().await?, 0);
    assert_eq!(fake.write_requests(), 0);
    Ok(())
}

#[tokio::test]
async fn app_edits_of_a_series_reach_google_and_come_back_quiet() -> anyhow::Result<()> {
    let fake = GoogleFake::start().await?;
    let master = fake.insert(CAL, weekly_series())?;
    let id = master["id"].as_str().context("id")?.to_owned();
    let mut runner = Runner::new(&fake)?;
    runner.pull().await?;

    let doc = runner.doc_mut(&id)?;
    doc.title = Some("Weekly review v2".into());
    doc.attendees
        .get_mut("bob@example.org")
        .context("bob")?
        .response = Some("accepted".into());
    doc.overrides.insert(
        "20261203T090000Z".into(),
        Override {
            cancelled: true,
            ..Override::default()
        },
    );
    doc.overrides.insert(
        "20261210T090000Z".into(),
        Override {
            location: Some("Room 9".into()),
            ..Override::default()
        },
    );
    let doc_id = runner.links[&id].clone();
    assert_eq!(
        runner.push(&doc_id).await?,
        3,
        "master patch, one cancel, one instance patch"
    );
    let stored = fake.event(CAL, &id).context("master")?;
    assert_eq!(stored["summary"], "Weekly review v2");
    assert_eq!(stored["attendees"][1]["responseStatus"], "accepted");
    assert_eq!(
        stored["reminders"]["overrides"][0]["minutes"], 10,
        "unmapped fields kept"
    );
    assert_eq!(
        fake.event(CAL, &format!("{id}_20261203T090000Z"))
            .context("cancelled")?["status"],
        "cancelled"
    );
    let moved = fake
        .event(CAL, &format!("{id}_20261210T090000Z"))
        .context("instance")?;
    assert_eq!(moved["location"], "Room 9");
    // The patch carried If-Match for the master.
    let log = fake.log();
    let patch = log
        .iter()
        .find(|r| r.method == "PATCH" && r.path.ends_with(&id))
        .context("master patch")?;
    assert_eq!(patch.if_match.as_deref(), master["etag"].as_str());

    // Our own writes come back in the next pull and change nothing; pushing again is quiet.
    let before = runner.doc_of(&id)?.clone();
    let (_, counts) = runner.pull().await?;
    assert_eq!(counts.changed_docs, 0, "own writes re-imported: {counts:?}");
    assert_eq!(runner.doc_of(&id)?, &before);
    fake.clear_log();
    assert_eq!(runner.push_all().await?, 0);
    assert_eq!(fake.write_requests(), 0);
    Ok(())
}

#[tokio::test]
async fn a_412_race_merges_and_retries() -> anyhow::Result<()> {
    let fake = GoogleFake::start().await?;
    let e = fake.insert(CAL, single("Planning", 10))?;
    let id = e["id"].as_str().context("id")?.to_owned();
    let mut runner = Runner::new(&fake)?;
    runner.pull().await?;

    // Someone else edits the location at Google while the app edits the title.
    fake.patch(CAL, &id, json!({"location": "Cafe"}))?;
    runner.doc_mut(&id)?.title = Some("Planning (agenda)".into());
    fake.clear_log();
    let doc_id = runner.links[&id].clone();
    runner.push(&doc_id).await?;
    let statuses: Vec<(String, u16)> = fake
        .log()
        .into_iter()
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("PATCH".to_string(), 412),
            ("GET".to_string(), 200),
            ("PATCH".to_string(), 200)
        ]
    );
    let stored = fake.event(CAL, &id).context("event")?;
    assert_eq!(stored["summary"], "Planning (agenda)");
    assert_eq!(stored["location"], "Cafe", "the concurrent edit survives");
    assert_eq!(runner.doc_of(&id)?.location.as_deref(), Some("Cafe"));
    Ok(())
}

#[tokio::test]
async fn an_edit_of_an_event_deleted_at_google_meanwhile_is_gone() -> anyhow::Result<()> {
    let fake = GoogleFake::start().await?;
    let e = fake.insert(CAL, single("Doomed", 10))?;
    let id = e["id"].as_str().context("id")?.to_owned();
    let mut runner = Runner::new(&fake)?;
    runner.pull().await?;
    fake.delete(CAL, &id)?;
    runner.doc_mut(&id)?.title = Some("Edited".into());
    let doc_id = runner.links[&id].clone();
    let err = runner.push(&doc_id).await.err().context("expected gone")?;
    assert!(err.to_string().contains("gone"), "{err}");
    assert_eq!(
        fake.event(CAL, &id).context("tombstone")?["status"],
        "cancelled",
        "not resurrected"
    );
    Ok(())
}

#[tokio::test]
async fn a_retried_insert_after_a_lost_response_makes_one_event() -> anyhow::Result<()> {
    let fake = GoogleFake::start().await?;
    let mut runner = Runner::new(&fake)?;
    runner.pull().await?;
    let doc_id = runner.new_doc_id();
    runner.records.insert(
        doc_id.clone(),
        Record {
            stored: StoredSeries::default(),
            doc: CalendarEvent {
                title: Some("Launch".into()),
                start: Some("2026-11-20T09:00:00Z".into()),
                end: Some("2026-11-20T10:00:00Z".into()),
                ..CalendarEvent::default()
            },
        },
    );
    // The insert is carried out but its answer is lost (503): the retry meets 409 and adopts.
    fake.inject(Fault::LoseResponse, 1);
    runner.push(&doc_id).await?;
    let events = fake.events(CAL);
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events.contains_key(&doc_id));
    let statuses: Vec<(String, u16)> = fake
        .log()
        .into_iter()
        .filter(|r| r.path.contains("/events"))
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("GET".to_string(), 200),
            ("POST".to_string(), 503),
            ("POST".to_string(), 409),
            ("GET".to_string(), 200)
        ]
    );
    assert_eq!(runner.records[&doc_id].stored.id(), doc_id);

    // A runner that crashed after sending the insert starts over from no shadow: same outcome.
    let doc2 = runner.new_doc_id();
    let body = json!({"id": doc2, "summary": "Crash", "start": {"date": "2026-11-21"},
                      "end": {"date": "2026-11-22"}});
    fake.insert(CAL, body)?;
    runner.records.insert(
        doc2.clone(),
        Record {
            stored: StoredSeries::default(),
            doc: CalendarEvent {
                title: Some("Crash".into()),
                start: Some("2026-11-21".into()),
                end: Some("2026-11-22".into()),
                ..CalendarEvent::default()
            },
        },
    );
    fake.clear_log();
    assert_eq!(
        runner.push(&doc2).await?,
        0,
        "adopted as is: nothing to patch"
    );
    assert_eq!(fake.events(CAL).len(), 2);
    assert_eq!(fake.write_requests(), 1, "only the refused insert");
    Ok(())
}

#[tokio::test]
async fn rate_limits_are_backed_off_and_retry_after_honoured() -> anyhow::Result<()> {
    let fake = GoogleFake::start().await?;
    fake.insert(CAL, single("A", 10))?;
    let mut runner = Runner::new(&fake)?;
    runner.pull().await?;
    fake.inject(
        Fault::TooMany429 {
            retry_after: Some(1),
        },
        1,
    );
    fake.inject(Fault::RateLimit403, 1);
    fake.inject(Fault::UserRateLimit403, 1);
    let started = std::time::Instant::now();
    let (out, _) = runner.pull().await?;
    assert!(out.events.is_empty());
    assert_eq!(runner.sleeps.len(), 3, "{:?}", runner.sleeps);
    assert_eq!(
        runner.sleeps[0],
        Duration::from_secs(1),
        "Retry-After honoured"
    );
    // Exponential (with jitter in the upper half): the third pause is at least the second's base.
    assert!(runner.sleeps[1] >= Duration::from_millis(20));
    assert!(runner.sleeps[2] >= Duration::from_millis(40));
    assert!(started.elapsed() >= Duration::from_secs(1));

    // A provider that keeps refusing makes the round fail with a clear error.
    fake.inject(Fault::RateLimit403, 10);
    let err = runner.pull().await.err().context("expected a failure")?;
    assert!(err.to_string().contains("rate limited"), "{err}");
    Ok(())
}

#[tokio::test]
async fn the_access_token_is_refreshed_once_and_reused() -> anyhow::Result<()> {
    let fake = GoogleFake::start().await?;
    fake.insert(CAL, single("A", 10))?;
    let mut runner = Runner::new(&fake)?;
    runner.pull().await?;
    runner.pull().await?;
    assert_eq!(fake.token_requests(), 1, "the cached token is reused");
    fake.revoke_access_tokens();
    runner.pull().await?;
    assert_eq!(fake.token_requests(), 2, "a 401 refreshes once");
    assert_eq!(runner.client.refresh_count(), 2);
    let printed = format!("{:?}", runner.client);
    assert!(!printed.contains("secret-1") && !printed.contains("refresh-1"));
    Ok(())
}

#[tokio::test]
async fn a_quiet_round_writes_nothing() -> anyhow::Result<()> {
    let fake = GoogleFake::start().await?;
    for i in 0..3 {
        fake.insert(CAL, single(&format!("E{i}"), 10 + i))?;
    }
    fake.insert(CAL, weekly_series())?;
    fake.insert(
        CAL,
        json!({"summary": "Holiday", "start": {"date": "2026-12-24"}, "end": {"date": "2026-12-27"},
               "description": "Closed", "extendedProperties": {"private": {"x": "1"}}}),
    )?;
    let mut runner = Runner::new(&fake)?;
    runner.pull().await?;
    fake.clear_log();
    assert_eq!(runner.push_all().await?, 0);
    let (out, _) = runner.pull().await?;
    assert!(out.events.is_empty());
    assert_eq!(fake.write_requests(), 0, "{:?}", fake.log());
    Ok(())
}

/// A webhook receiver on a loopback port that records every notification's headers.
struct Receiver {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<BTreeMap<String, String>>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let url = format!("http://{}/webhooks/google/team-cal", listener.local_addr()?);
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let sink = sink.clone();
            async move {
                let map: BTreeMap<String, String> = headers
                    .iter()
                    .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                    .collect();
                sink.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(map);
                axum::http::StatusCode::OK
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver {
            url,
            seen,
            _task: task,
        })
    }

    /// Waits until at least `n` notifications arrived in total, then returns them all.
    async fn wait_for(&self, n: usize) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
        for _ in 0..200 {
            let seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if seen.len() >= n {
                return Ok(seen);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        bail!("fewer than {n} notifications arrived")
    }
}

fn notification(headers: &BTreeMap<String, String>) -> anyhow::Result<Notification> {
    Ok(Notification::from_headers(|h| {
        headers.get(h).map(String::as_str)
    })?)
}

#[tokio::test]
async fn watch_channels_notify_coalesce_and_renew() -> anyhow::Result<()> {
    let fake = GoogleFake::start().await?;
    let receiver = Receiver::start().await?;
    let mut runner = Runner::new(&fake)?;
    runner.pull().await?;
    let mut channels = Channels::new();

    let watch = |id: &str| Request::Watch {
        body: watch_body(id, &receiver.url, "chan-secret", None),
    };
    let resp = runner.client.execute(&watch("ch-1")).await?;
    assert_eq!(resp.status, 200);
    channels.opened(Channel::from_watch_response(&resp.body)?);
    let seen = receiver.wait_for(1).await?;
    assert_eq!(seen[0]["x-goog-resource-state"], "sync");
    assert_eq!(seen[0]["x-goog-message-number"], "1");
    assert_eq!(
        channels.on_notification(&notification(&seen[0])?)?,
        Verdict::Opened
    );

    // A burst of changes, each notified once more (duplicates): one pull picks them all up.
    fake.duplicate_notifications(true);
    for i in 0..3 {
        fake.insert(CAL, single(&format!("Burst {i}"), 10 + i))?;
    }
    let seen = receiver.wait_for(7).await?;
    let mut verdicts = Vec::new();
    let mut burst: Vec<Notification> = seen[1..]
        .iter()
        .map(notification)
        .collect::<anyhow::Result<_>>()?;
    // Delivery order is not guaranteed; Google's numbers only grow.
    burst.sort_by_key(|n| n.message_number);
    for n in &burst {
        verdicts.push(channels.on_notification(n)?);
    }
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| **v == Verdict::PullWanted)
            .count(),
        3,
        "{verdicts:?}"
    );
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| **v == Verdict::Duplicate)
            .count(),
        3
    );
    assert!(channels.take_pull());
    let (_, counts) = runner.pull().await?;
    assert_eq!(counts.created, 3);
    assert!(!channels.take_pull());

    // A forged notification (right channel id, wrong token) is refused.
    let mut forged = seen[1].clone();
    forged.insert("x-goog-channel-token".into(), "guess".into());
    forged.insert("x-goog-message-number".into(), "999".into());
    assert!(channels.on_notification(&notification(&forged)?).is_err());
    assert!(!channels.take_pull());

    // Renewal: a new channel overlaps the old one, then the old one is stopped.
    fake.duplicate_notifications(false);
    let resp = runner.client.execute(&watch("ch-2")).await?;
    channels.opened(Channel::from_watch_response(&resp.body)?);
    receiver.wait_for(8).await?;
    assert_eq!(fake.open_channels(CAL).len(), 2);
    for old in channels.superseded(0) {
        let resp = runner
            .client
            .execute(&Request::StopChannel {
                body: stop_body(&old),
            })
            .await?;
        assert_eq!(resp.status, 204);
        channels.closed(&old.id);
    }
    assert_eq!(fake.open_channels(CAL), ["ch-2"]);
    fake.insert(CAL, single("After renewal", 20))?;
    let seen = receiver.wait_for(9).await?;
    let last = notification(&seen[8])?;
    assert_eq!(last.channel_id, "ch-2");
    assert_eq!(channels.on_notification(&last)?, Verdict::PullWanted);
    Ok(())
}

#[tokio::test]
async fn an_app_created_series_with_exceptions_is_inserted_then_quiet() -> anyhow::Result<()> {
    let fake = GoogleFake::start().await?;
    let mut runner = Runner::new(&fake)?;
    runner.pull().await?;
    let doc_id = runner.new_doc_id();
    let mut event = CalendarEvent {
        title: Some("Standup".into()),
        start: Some("2026-11-02T09:30:00+01:00[Europe/Berlin]".into()),
        end: Some("2026-11-02T09:45:00+01:00[Europe/Berlin]".into()),
        recurrence: Some(driftless_crdt_model::Recurrence {
            rules: [("0".to_string(), "RRULE:FREQ=DAILY;COUNT=10".to_string())].into(),
            ..Default::default()
        }),
        ..CalendarEvent::default()
    };
    event.overrides.insert(
        "20261103T083000Z".into(),
        Override {
            cancelled: true,
            ..Override::default()
        },
    );
    event.overrides.insert(
        "20261104T083000Z".into(),
        Override {
            start: Some("2026-11-04T11:00:00+01:00[Europe/Berlin]".into()),
            end: Some("2026-11-04T11:15:00+01:00[Europe/Berlin]".into()),
            title: Some("Standup (late)".into()),
            ..Override::default()
        },
    );
    runner.records.insert(
        doc_id.clone(),
        Record {
            stored: StoredSeries::default(),
            doc: event.clone(),
        },
    );
    assert_eq!(
        runner.push(&doc_id).await?,
        3,
        "insert, cancel, one instance patch"
    );
    let master = fake.event(CAL, &doc_id).context("master")?;
    assert_eq!(master["start"]["timeZone"], "Europe/Berlin");
    assert_eq!(master["recurrence"], json!(["RRULE:FREQ=DAILY;COUNT=10"]));
    let moved = fake
        .event(CAL, &format!("{doc_id}_20261104T083000Z"))
        .context("moved instance")?;
    assert_eq!(moved["start"]["dateTime"], "2026-11-04T11:00:00+01:00");
    assert_eq!(moved["summary"], "Standup (late)");
    assert_eq!(
        fake.event(CAL, &format!("{doc_id}_20261103T083000Z"))
            .context("cancelled instance")?["status"],
        "cancelled"
    );

    // The next pull brings our writes back: same document, nothing to import or write.
    let (_, counts) = runner.pull().await?;
    assert_eq!((counts.created, counts.changed_docs), (0, 0), "{counts:?}");
    let back = event_from_series(&runner.records[&doc_id].stored)?;
    assert_eq!(back.overrides, event.overrides);
    fake.clear_log();
    assert_eq!(runner.push_all().await?, 0);
    assert_eq!(fake.write_requests(), 0);
    Ok(())
}
