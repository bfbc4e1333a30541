//! A `google_calendar` bridge in the real server, against the fake Calendar v3 server: a series
//! with a moved and a cancelled instance becomes one `calendar_event` document an app reads; an
//! app edit reaches Google as one `PATCH` with `If-Match`; a quiet round writes nothing; a 410
//! leads to a merging resync without a duplicate; rate limits are backed off inside a round; an
//! edit made elsewhere between our read and our PATCH (412) is merged, both edits kept.
//!
//! Rounds are driven by `POST /v1/bridges/{id}/sync`.

use std::time::Duration;

use anyhow::{Context, bail};
use driftless_bridges::google::client::Secret;
use driftless_bridges::google::translate::event_id_for_document;
use driftless_client_protocol::DocumentId;
use driftless_server::config::{BridgeConfig, BridgeKind, GoogleCalendarConfig};
use driftless_tests::TestServer;
use driftless_tests::dav_bridge::{Api, app_edit_event, app_event, app_open};
use driftless_tests::fakes::google::{Fault, GoogleFake};
use serde_json::{Value, json};

const CAL: &str = "primary";
const BRIDGE: &str = "gcal";

fn bridge(fake: &GoogleFake) -> BridgeConfig {
    let (client_id, secret, refresh) = fake.credentials();
    BridgeConfig {
        id: BRIDGE.into(),
        kind: BridgeKind::GoogleCalendar,
        workspace: "default".into(),
        // Rounds are driven by the test (apart from the one at startup).
        poll_interval: Duration::from_secs(3600),
        max_delete_fraction: 1.0,
        url: String::new(),
        username: None,
        password: None,
        hubspot: None,
        google: Some(GoogleCalendarConfig {
            calendar_id: CAL.into(),
            client_id,
            client_secret: Secret::new(secret),
            refresh_token: Secret::new(refresh),
            token_url: fake.token_url(),
            api_base: fake.api_base(),
        }),
        graph: None,
        salesforce: None,
    }
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

struct Env {
    fake: GoogleFake,
    server: TestServer,
    api: Api,
}

impl Env {
    /// The fake with a weekly series (12 Nov moved and renamed, 19 Nov cancelled), then driftless
    /// with a bridge to it. Returns the master's event id too.
    async fn start() -> anyhow::Result<(Self, String)> {
        let fake = GoogleFake::start().await?;
        let master = fake.insert(CAL, weekly_series())?;
        let id = master["id"].as_str().context("id")?.to_owned();
        fake.patch(
            CAL,
            &format!("{id}_20261112T090000Z"),
            json!({"summary": "Weekly review (moved)",
                   "start": {"dateTime": "2026-11-12T14:00:00+01:00", "timeZone": "Europe/Berlin"},
                   "end": {"dateTime": "2026-11-12T15:00:00+01:00", "timeZone": "Europe/Berlin"}}),
        )?;
        fake.delete(CAL, &format!("{id}_20261119T090000Z"))?;
        let config = bridge(&fake);
        let server =
            TestServer::start_with_config(move |c| c.bridges = vec![config.clone()]).await?;
        server.wait_ready(Duration::from_secs(10)).await?;
        let api = Api::new(server.http_url());
        Ok((Self { fake, server, api }, id))
    }

    /// The only calendar_event document (fails on a duplicate).
    async fn only_event(&self) -> anyhow::Result<(DocumentId, Value)> {
        let all = self.api.records("calendar_event").await?;
        match all.as_slice() {
            [one] => Ok(one.clone()),
            _ => bail!(
                "expected exactly one calendar_event, got {}: {all:?}",
                all.len()
            ),
        }
    }

    /// A round that must pull, push and delete nothing, and send Google no write.
    async fn quiet_round(&self) -> anyhow::Result<()> {
        self.fake.clear_log();
        self.api.quiet_round(BRIDGE).await?;
        let writes: Vec<_> = self
            .fake
            .log()
            .into_iter()
            .filter(|r| r.is_event_write())
            .collect();
        if !writes.is_empty() {
            bail!("a quiet round wrote to Google: {writes:?}");
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_series_becomes_one_document_and_app_edits_reach_google_quietly() -> anyhow::Result<()> {
    let (env, id) = Env::start().await?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");

    // One document for master, exception and cancelled instance, read by an app.
    let (doc_id, record) = env.only_event().await?;
    assert_eq!(record["links"][BRIDGE]["id"], id.as_str(), "{record}");
    let mut app = app_open(&env.server.url(), &doc_id, "google-app").await?;
    let event = app_event(&mut app, &doc_id).await?;
    assert_eq!(event.title.as_deref(), Some("Weekly review"));
    assert_eq!(
        event.recurrence.as_ref().context("recurrence")?.rules["0"],
        "RRULE:FREQ=WEEKLY;BYDAY=TH;COUNT=10"
    );
    assert_eq!(
        event.ical_uid.as_deref(),
        Some(format!("{id}@google.com").as_str())
    );
    assert_eq!(event.overrides.len(), 2, "{:?}", event.overrides);
    let moved = &event.overrides["20261112T090000Z"];
    assert_eq!(moved.title.as_deref(), Some("Weekly review (moved)"));
    assert_eq!(
        moved.start.as_deref(),
        Some("2026-11-12T14:00:00+01:00[Europe/Berlin]")
    );
    assert!(event.overrides["20261119T090000Z"].cancelled);
    assert_eq!(
        event.attendees["bob@example.org"].response.as_deref(),
        Some("needs_action")
    );

    // Nothing changed anywhere: nothing is written.
    env.quiet_round().await?;

    // The app renames the series: one PATCH of the master with If-Match, nothing else.
    let etag_before = env.fake.event(CAL, &id).context("master")?["etag"].clone();
    app_edit_event(&mut app, &doc_id, |e| {
        e.title = Some("Weekly review v2".into())
    })
    .await?;
    env.fake.clear_log();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let writes: Vec<_> = env
        .fake
        .log()
        .into_iter()
        .filter(|r| r.is_event_write())
        .collect();
    let [patch] = writes.as_slice() else {
        bail!("expected one write, got {writes:?}");
    };
    assert_eq!(patch.method, "PATCH");
    assert!(patch.path.ends_with(&format!("/events/{id}")), "{patch:?}");
    assert_eq!(
        patch.if_match.as_ref(),
        etag_before.as_str().map(str::to_owned).as_ref()
    );
    assert_eq!(patch.status, 200, "{patch:?}");
    let master = env.fake.event(CAL, &id).context("master")?;
    assert_eq!(master["summary"], "Weekly review v2");
    // What driftless does not map stays as Google had it.
    assert_eq!(master["reminders"]["overrides"][0]["minutes"], 10);

    // Its own write comes back in the next pull and changes nothing.
    env.quiet_round().await?;
    let event = app_event(&mut app, &doc_id).await?;
    assert_eq!(event.title.as_deref(), Some("Weekly review v2"));
    assert_eq!(event.overrides.len(), 2);

    // A change at Google reaches the app.
    env.fake.patch(CAL, &id, json!({"location": "Room 5"}))?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pulled"], 1, "{report}");
    let event = app_event(&mut app, &doc_id).await?;
    assert_eq!(event.location.as_deref(), Some("Room 5"));
    assert_eq!(event.title.as_deref(), Some("Weekly review v2"));
    env.quiet_round().await?;
    Ok(())
}

#[tokio::test]
async fn a_410_resyncs_by_merging_without_a_duplicate() -> anyhow::Result<()> {
    let (env, id) = Env::start().await?;
    env.api.sync(BRIDGE).await?;
    let (doc_id, _) = env.only_event().await?;

    // Changed at Google while the token expires: the full listing merges.
    env.fake
        .patch(CAL, &id, json!({"summary": "After the resync"}))?;
    env.fake.expire_sync_tokens();
    env.fake.clear_log();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    let lists: Vec<_> = env
        .fake
        .log()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/events"))
        .collect();
    assert!(
        lists.iter().any(|r| r.status == 410),
        "the stored token was not rejected: {lists:?}"
    );
    assert!(
        lists
            .iter()
            .any(|r| r.status == 200 && !r.query.contains("syncToken")),
        "no full listing after the 410: {lists:?}"
    );
    let (after, record) = env.only_event().await?;
    assert_eq!(after, doc_id, "the resync made another document");
    assert_eq!(record["title"], "After the resync", "{record}");
    assert_eq!(
        record["overrides"].as_object().map(|o| o.len()),
        Some(2),
        "{record}"
    );
    assert_eq!(env.fake.write_requests(), 0, "a resync wrote to Google");

    // And the round after it is quiet again.
    env.quiet_round().await?;
    let status = env.api.bridge_status(BRIDGE).await?;
    assert_eq!(status["kind"], "google_calendar", "{status}");
    assert_eq!(status["linked_records"], 1, "{status}");
    Ok(())
}

#[tokio::test]
async fn an_app_event_whose_insert_answer_was_lost_is_adopted_not_duplicated() -> anyhow::Result<()>
{
    let (env, _) = Env::start().await?;
    env.api.sync(BRIDGE).await?;

    // An app creates an event linked to the bridge (empty id: not created there yet).
    let mut app =
        driftless_tests::rust_client::RustClient::connect(&env.server.url(), "creator").await?;
    let event = driftless_crdt_model::CalendarEvent {
        title: Some("Lunch".into()),
        start: Some("2026-11-20T12:00:00+01:00[Europe/Berlin]".into()),
        end: Some("2026-11-20T13:00:00+01:00[Europe/Berlin]".into()),
        links: [(BRIDGE.to_owned(), driftless_crdt_model::Link::default())].into(),
        ..Default::default()
    };
    let mut doc = automerge::AutoCommit::new();
    driftless_crdt_model::create_event(&mut doc, &event)?;
    let doc_id = driftless_tests::dav_bridge::app_add(&mut app, doc).await?;

    // An earlier attempt's insert landed but its answer was lost (the process died): the pull
    // lists it and leaves it to the push, whose insert meets 409 and adopts it.
    let google_id = event_id_for_document(doc_id.as_bytes());
    env.fake.insert(
        CAL,
        json!({"id": google_id, "summary": "Lunch",
               "start": {"dateTime": "2026-11-20T12:00:00+01:00", "timeZone": "Europe/Berlin"},
               "end": {"dateTime": "2026-11-20T13:00:00+01:00", "timeZone": "Europe/Berlin"}}),
    )?;
    env.fake.clear_log();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    let writes: Vec<(String, u16)> = env
        .fake
        .log()
        .into_iter()
        .filter(|r| r.is_event_write())
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        writes,
        [("POST".to_owned(), 409)],
        "adopted as is: nothing to patch"
    );
    let stored = env
        .fake
        .event(CAL, &google_id)
        .context("inserted under the document id")?;
    assert_eq!(stored["summary"], "Lunch");
    let lunches = env
        .fake
        .events(CAL)
        .values()
        .filter(|e| e["summary"] == "Lunch")
        .count();
    assert_eq!(lunches, 1, "inserted twice");
    assert_eq!(
        env.api.records("calendar_event").await?.len(),
        2,
        "the own insert was imported as a second document"
    );

    // An app edit of it is patched onto the adopted event.
    let mut app = app_open(&env.server.url(), &doc_id, "editor").await?;
    app_edit_event(&mut app, &doc_id, |e| e.location = Some("Canteen".into())).await?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pushed"], 1, "{report}");
    assert_eq!(
        env.fake.event(CAL, &google_id).context("event")?["location"],
        "Canteen"
    );
    let record = env.api.record("calendar_event", &doc_id).await?;
    assert_eq!(
        record["links"][BRIDGE]["id"],
        google_id.as_str(),
        "{record}"
    );

    // Pulling our own insert back makes no second document, and then nothing is written.
    env.api.sync(BRIDGE).await?;
    assert_eq!(env.api.records("calendar_event").await?.len(), 2);
    env.quiet_round().await?;
    Ok(())
}

#[tokio::test]
async fn rate_limits_are_backed_off_within_a_round() -> anyhow::Result<()> {
    let (env, id) = Env::start().await?;
    env.api.sync(BRIDGE).await?;
    env.fake
        .patch(CAL, &id, json!({"summary": "Despite the limits"}))?;
    env.fake.inject(Fault::RateLimit403, 1);
    env.fake.inject(
        Fault::TooMany429 {
            retry_after: Some(1),
        },
        1,
    );
    let started = std::time::Instant::now();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    let (_, record) = env.only_event().await?;
    assert_eq!(record["title"], "Despite the limits");
    Ok(())
}

#[tokio::test]
async fn a_412_race_merges_both_edits_without_a_conflict() -> anyhow::Result<()> {
    let (env, id) = Env::start().await?;
    env.api.sync(BRIDGE).await?;
    let (doc_id, _) = env.only_event().await?;
    let mut app = app_open(&env.server.url(), &doc_id, "racer").await?;

    // Between our read of the series and our PATCH, another client changes its location.
    app_edit_event(&mut app, &doc_id, |e| {
        e.title = Some("Weekly review (renamed)".into())
    })
    .await?;
    env.fake
        .edit_before_next_write(CAL, &id, json!({"location": "Room 9"}));
    env.fake.clear_log();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    let writes: Vec<(String, u16)> = env
        .fake
        .log()
        .into_iter()
        .filter(|r| r.is_event_write())
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(
        writes,
        [("PATCH".to_owned(), 412), ("PATCH".to_owned(), 200)],
        "the stale etag was not met, or not retried after the merge"
    );

    // Both edits are applied everywhere; nothing is a conflict.
    let stored = env.fake.event(CAL, &id).context("master")?;
    assert_eq!(stored["summary"], "Weekly review (renamed)");
    assert_eq!(stored["location"], "Room 9");
    let event = app_event(&mut app, &doc_id).await?;
    assert_eq!(event.title.as_deref(), Some("Weekly review (renamed)"));
    assert_eq!(event.location.as_deref(), Some("Room 9"));
    assert!(env.api.conflicts(&doc_id).await?.is_empty());
    env.quiet_round().await?;
    Ok(())
}
