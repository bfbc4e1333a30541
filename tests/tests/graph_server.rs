//! A `microsoft_graph` bridge in the real server, against the Graph fake: a series with an
//! exception and a deleted occurrence becomes one `calendar_event` document an app reads; an app
//! edit reaches Graph as one `PATCH` with `If-Match`; a quiet round writes nothing; a 410 leads to
//! a merging resync without a duplicate; an event that leaves the window is not tombstoned (one
//! that is deleted is); 429 with `Retry-After` is waited out; `GET /v1/bridges` lists the bridge.
//!
//! Contacts (`resource = "contacts"`): imported with slot-keyed emails and phones, an app edit is
//! one `PATCH` of the changed fields with `If-Match`, a 412 race merges, 429 is waited out, deletes
//! follow the rules. A 412 race on an event merges both edits without a conflict. A series
//! created, or whose rule is edited, in the app is written with a `patternedRecurrence`; a rule
//! Graph cannot express is not written (Graph keeps its rule, other edits still go through) and is
//! listed as a `recurrence` conflict with both rules until they agree again, quietly. A create whose answer was lost is adopted through its `transactionId`. Subscriptions
//! survive a restart and are renewed before they expire. A series that arrives in an incremental
//! round keeps its deleted occurrence cancelled (document and expansion endpoint) through master
//! PATCHes (ours and Outlook's) and a resync.
//!
//! The events are placed relative to today, since the server's window is around the real now.
//! Rounds are driven by `POST /v1/bridges/{id}/sync`.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{NaiveDate, Utc};
use driftless_bridges::google::client::Secret;
use driftless_client_protocol::DocumentId;
use driftless_server::config::{BridgeConfig, BridgeKind, GraphBridgeConfig};
use driftless_tests::TestServer;
use driftless_tests::dav_bridge::{
    Api, app_contact, app_edit_contact, app_edit_event, app_event, app_open,
};
use driftless_tests::fakes::graph::{CLIENT_ID, CLIENT_SECRET, FakeGraph, Logged, REFRESH_TOKEN};
use serde_json::{Value, json};

/// Polls `check` every 50 ms until it holds or `limit` passes.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> anyhow::Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if check().await? {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const BRIDGE: &str = "outlook";

fn bridge(fake: &FakeGraph) -> BridgeConfig {
    bridge_of(fake, BridgeKind::MicrosoftGraph)
}

/// A bridge of `kind` (`MicrosoftGraph`: calendar; `MicrosoftGraphContacts`: contacts).
fn bridge_of(fake: &FakeGraph, kind: BridgeKind) -> BridgeConfig {
    BridgeConfig {
        id: BRIDGE.into(),
        kind,
        workspace: "default".into(),
        // Rounds are driven by the test (apart from the one at startup).
        poll_interval: Duration::from_secs(3600),
        max_delete_fraction: 1.0,
        url: String::new(),
        username: None,
        password: None,
        google: None,
        hubspot: None,
        salesforce: None,
        graph: Some(GraphBridgeConfig {
            client_id: CLIENT_ID.into(),
            client_secret: Some(Secret::new(CLIENT_SECRET)),
            refresh_token: Secret::new(REFRESH_TOKEN),
            token_url: fake.token_url(),
            api_base: fake.api_base(),
            window_past: Duration::from_secs(30 * 86_400),
            window_future: Duration::from_secs(90 * 86_400),
            public_url: None,
        }),
    }
}

/// The day `n` days from today (UTC).
fn day(n: i64) -> NaiveDate {
    Utc::now().date_naive() + chrono::TimeDelta::days(n)
}

/// The override key of the 08:00 UTC instance on `d`.
fn key(d: NaiveDate) -> String {
    d.format("%Y%m%dT080000Z").to_string()
}

fn daily_series() -> Value {
    let first = day(7);
    json!({
        "subject": "Standup",
        "body": {"contentType": "text", "content": "Daily"},
        "start": {"dateTime": format!("{first}T08:00:00.0000000"), "timeZone": "UTC"},
        "end": {"dateTime": format!("{first}T08:15:00.0000000"), "timeZone": "UTC"},
        "originalStartTimeZone": "UTC",
        "originalEndTimeZone": "UTC",
        "iCalUId": "standup-series@example.com",
        "organizer": {"emailAddress": {"name": "Me", "address": "me@example.com"}},
        "isOrganizer": true,
        "attendees": [],
        "recurrence": {
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "numbered", "startDate": first.to_string(), "numberOfOccurrences": 5}
        }
    })
}

fn single(subject: &str, d: NaiveDate) -> Value {
    json!({
        "subject": subject,
        "start": {"dateTime": format!("{d}T09:00:00.0000000"), "timeZone": "UTC"},
        "end": {"dateTime": format!("{d}T10:00:00.0000000"), "timeZone": "UTC"},
        "originalStartTimeZone": "UTC",
        "originalEndTimeZone": "UTC",
        "iCalUId": format!("uid-{subject}@example.com"),
        "organizer": {"emailAddress": {"name": "Me", "address": "me@example.com"}},
        "attendees": [],
    })
}

/// Puts the daily series into the fake, its day-8 occurrence moved and renamed, its day-10
/// occurrence deleted. Returns the master's id.
fn seed_series(fake: &FakeGraph) -> anyhow::Result<String> {
    let master = fake.put_event(daily_series());
    let moved = fake.occurrence_id(&master, &key(day(8)));
    fake.patch_event(
        &moved,
        json!({"subject": "Standup (late)",
               "start": {"dateTime": format!("{}T10:00:00", day(8)), "timeZone": "UTC"},
               "end": {"dateTime": format!("{}T10:15:00", day(8)), "timeZone": "UTC"}}),
    )
    .context("moving an occurrence")?;
    if !fake.delete_event(&fake.occurrence_id(&master, &key(day(10)))) {
        bail!("the fake did not delete the occurrence");
    }
    Ok(master)
}

struct Env {
    fake: FakeGraph,
    server: TestServer,
    api: Api,
}

impl Env {
    /// The fake with a daily series (day 2 moved and renamed, day 4 deleted), then driftless
    /// with a bridge to it. Returns the master's id.
    async fn start() -> anyhow::Result<(Self, String)> {
        Self::start_with(false).await
    }

    /// As [`Env::start`]; with `webhooks`, the server's own address is its `public_url`, so the
    /// bridge subscribes to change notifications.
    async fn start_with(webhooks: bool) -> anyhow::Result<(Self, String)> {
        let fake = FakeGraph::start().await?;
        let master = seed_series(&fake)?;
        let env = Self::start_on(fake, webhooks).await?;
        Ok((env, master))
    }

    /// Driftless with a bridge to `fake` as it is (its first, complete round is over when this
    /// returns).
    async fn start_on(fake: FakeGraph, webhooks: bool) -> anyhow::Result<Self> {
        let config = bridge(&fake);
        let server = TestServer::start_with_config(move |c| {
            let mut config = config.clone();
            if webhooks {
                let public_url = format!("http://{}", c.listen);
                if let Some(graph) = config.graph.as_mut() {
                    graph.public_url = Some(public_url.clone());
                }
                c.public_url = Some(public_url);
            }
            c.bridges = vec![config];
        })
        .await?;
        server.wait_ready(Duration::from_secs(10)).await?;
        let api = Api::new(server.http_url());
        Ok(Self { fake, server, api })
    }

    fn writes(&self) -> Vec<Logged> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/v1.0/me/") && r.method != "GET")
            .collect()
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

    /// A round that must pull, push and delete nothing, and send Graph no write.
    async fn quiet_round(&self) -> anyhow::Result<()> {
        self.fake.clear_log();
        self.api.quiet_round(BRIDGE).await?;
        let writes = self.writes();
        if !writes.is_empty() {
            bail!("a quiet round wrote to Graph: {writes:?}");
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_series_becomes_one_document_and_app_edits_reach_graph_quietly() -> anyhow::Result<()> {
    let (env, master) = Env::start().await?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");

    // One document for the series, its exception and its deleted occurrence, read by an app.
    let (doc_id, record) = env.only_event().await?;
    assert_eq!(record["links"][BRIDGE]["id"], master.as_str(), "{record}");
    let mut app = app_open(&env.server.url(), &doc_id, "graph-app").await?;
    let event = app_event(&mut app, &doc_id).await?;
    assert_eq!(event.title.as_deref(), Some("Standup"));
    assert_eq!(
        event.recurrence.as_ref().context("recurrence")?.rules["0"],
        "RRULE:FREQ=DAILY;COUNT=5"
    );
    assert_eq!(event.overrides.len(), 2, "{:?}", event.overrides);
    let moved = &event.overrides[&key(day(8))];
    assert_eq!(moved.title.as_deref(), Some("Standup (late)"));
    assert!(
        moved
            .start
            .as_deref()
            .is_some_and(|s| s.starts_with(&format!("{}T10:00:00", day(8)))),
        "{moved:?}"
    );
    assert!(event.overrides[&key(day(10))].cancelled);

    // Nothing changed anywhere: nothing is written.
    env.quiet_round().await?;

    // The app renames the series: one PATCH of the master with If-Match, nothing else.
    let etag_before = env.fake.event(&master).context("master")?["@odata.etag"].clone();
    app_edit_event(&mut app, &doc_id, |e| e.title = Some("Standup v2".into())).await?;
    env.fake.clear_log();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let writes = env.writes();
    let [patch] = writes.as_slice() else {
        bail!("expected one write, got {writes:?}");
    };
    assert_eq!(patch.method, "PATCH");
    assert!(
        patch.path.ends_with(&format!("/events/{master}")),
        "{patch:?}"
    );
    assert_eq!(patch.if_match.as_deref(), etag_before.as_str(), "{patch:?}");
    assert_eq!(patch.status, 200, "{patch:?}");
    assert_eq!(
        env.fake.event(&master).context("master")?["subject"],
        "Standup v2"
    );

    // Its own write comes back in the next pull and changes nothing.
    env.quiet_round().await?;
    let event = app_event(&mut app, &doc_id).await?;
    assert_eq!(event.title.as_deref(), Some("Standup v2"));
    assert_eq!(event.overrides.len(), 2);

    // A change in Outlook reaches the app.
    env.fake
        .patch_event(&master, json!({"location": {"displayName": "Room 5"}}))
        .context("patch master")?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pulled"], 1, "{report}");
    let event = app_event(&mut app, &doc_id).await?;
    assert_eq!(event.location.as_deref(), Some("Room 5"));
    assert_eq!(event.title.as_deref(), Some("Standup v2"));
    env.quiet_round().await?;

    let status = env.api.bridge_status(BRIDGE).await?;
    assert_eq!(status["kind"], "microsoft_graph", "{status}");
    assert_eq!(status["linked_records"], 1, "{status}");
    Ok(())
}

#[tokio::test]
async fn a_410_resyncs_by_merging_without_a_duplicate() -> anyhow::Result<()> {
    let (env, master) = Env::start().await?;
    env.api.sync(BRIDGE).await?;
    let (doc_id, _) = env.only_event().await?;

    // Changed in Outlook while the delta link expires: the complete listing merges.
    env.fake
        .patch_event(&master, json!({"subject": "After the resync"}))
        .context("patch master")?;
    env.fake.expire_delta_tokens();
    env.fake.clear_log();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    let deltas: Vec<Logged> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/calendarView/delta"))
        .collect();
    assert!(
        deltas.iter().any(|r| r.status == 410),
        "the stored delta link was not rejected: {deltas:?}"
    );
    assert!(
        deltas.iter().any(|r| r.status == 200
            && r.query
                .as_deref()
                .is_some_and(|q| q.contains("startDateTime"))),
        "no complete listing after the 410: {deltas:?}"
    );
    let (after, record) = env.only_event().await?;
    assert_eq!(after, doc_id, "the resync made another document");
    assert_eq!(record["title"], "After the resync", "{record}");
    assert_eq!(
        record["overrides"].as_object().map(|o| o.len()),
        Some(2),
        "{record}"
    );
    assert!(env.writes().is_empty(), "a resync wrote to Graph");
    env.quiet_round().await?;
    Ok(())
}

#[tokio::test]
async fn leaving_the_window_is_not_a_delete() -> anyhow::Result<()> {
    let (env, _) = Env::start().await?;
    let gone = env.fake.put_event(single("to-delete", day(3)));
    let away = env.fake.put_event(single("to-move", day(4)));
    env.api.sync(BRIDGE).await?;
    assert_eq!(env.api.records("calendar_event").await?.len(), 3);

    assert!(env.fake.delete_event(&gone));
    let far = day(400);
    env.fake
        .patch_event(
            &away,
            json!({"start": {"dateTime": format!("{far}T09:00:00"), "timeZone": "UTC"},
                   "end": {"dateTime": format!("{far}T10:00:00"), "timeZone": "UTC"}}),
        )
        .context("moving out of the window")?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    assert_eq!(report["deleted"], 1, "{report}");
    let (_, deleted) = env
        .api
        .record_where("calendar_event", "to-delete", |r| r["title"] == "to-delete")
        .await?;
    assert_eq!(deleted["deleted"], true, "{deleted}");
    let (_, moved) = env
        .api
        .record_where("calendar_event", "to-move", |r| r["title"] == "to-move")
        .await?;
    assert_ne!(
        moved["deleted"], true,
        "left the window: never a delete: {moved}"
    );
    assert_eq!(moved["links"][BRIDGE]["id"], away.as_str(), "{moved}");
    assert_ne!(moved["links"][BRIDGE]["removed"], true, "{moved}");

    // A complete listing (after a 410) does not take it for deleted either.
    env.fake.expire_delta_tokens();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["deleted"], 0, "{report}");
    let (_, moved) = env
        .api
        .record_where("calendar_event", "to-move", |r| r["title"] == "to-move")
        .await?;
    assert_ne!(moved["deleted"], true, "{moved}");
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    Ok(())
}

#[tokio::test]
async fn throttling_is_waited_out_within_a_round() -> anyhow::Result<()> {
    let (env, master) = Env::start().await?;
    env.api.sync(BRIDGE).await?;
    env.fake
        .patch_event(&master, json!({"subject": "Despite the limits"}))
        .context("patch master")?;
    env.fake.throttle_next(2, 429, 1);
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
async fn webhooks_validate_check_client_state_and_nudge_a_round() -> anyhow::Result<()> {
    let (env, master) = Env::start_with(true).await?;
    env.api.sync(BRIDGE).await?;

    // The round subscribed (Graph's validation handshake reached the endpoint).
    let subs = env.fake.subscriptions();
    let [sub] = subs.as_slice() else {
        bail!("expected one subscription, got {subs:?}");
    };
    let sub_id = sub["id"].as_str().context("subscription id")?.to_owned();
    assert_eq!(
        sub["notificationUrl"],
        format!("{}/webhooks/graph/{BRIDGE}", env.server.http_url()).as_str()
    );

    // The handshake itself: the token echoed as plain text.
    let http = reqwest::Client::new();
    let url = format!("{}/webhooks/graph/{BRIDGE}", env.server.http_url());
    let resp = http
        .post(format!("{url}?validationToken=Validation%3A+abc+123"))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()?
            .starts_with("text/plain")
    );
    assert_eq!(resp.text().await?, "Validation: abc 123");

    let title = |env: &Env| {
        let api = env.api.clone();
        async move {
            let all = api.records("calendar_event").await?;
            Ok::<_, anyhow::Error>(
                all.first()
                    .and_then(|(_, r)| r["title"].as_str().map(str::to_owned)),
            )
        }
    };

    // A forged notification (wrong clientState) is refused and starts nothing.
    env.fake
        .patch_event(&master, json!({"subject": "Via webhook"}))
        .context("patch master")?;
    let (status, _) = env
        .fake
        .deliver_raw(
            &sub_id,
            false,
            json!({"value": [{"subscriptionId": sub_id, "clientState": "guess",
                               "changeType": "updated", "resource": format!("Users/u/Events/{master}")}]}),
        )
        .await?;
    assert_eq!(status, 403);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(title(&env).await?.as_deref(), Some("Standup"));

    // A genuine one (sent twice, as Graph may) answers at once and nudges a round.
    for _ in 0..2 {
        // Answered before any round ran (the handler only asks for one); how fast is the
        // benchmarks' business, not this test's.
        let (status, _took) = env
            .fake
            .notify(&[(sub_id.as_str(), "updated", master.as_str())])
            .await?;
        assert_eq!(status, 202);
    }
    let pulled = eventually(Duration::from_secs(10), || async {
        Ok(title(&env).await?.as_deref() == Some("Via webhook"))
    })
    .await?;
    assert!(pulled, "the notification did not lead to a round");

    // reauthorizationRequired: the next round renews the subscription.
    env.fake.clear_log();
    let (status, _) = env
        .fake
        .lifecycle(&sub_id, "reauthorizationRequired")
        .await?;
    assert_eq!(status, 202);
    let renewed =
        eventually(Duration::from_secs(10), || async {
            Ok(env.fake.requests().iter().any(|r| {
                r.method == "PATCH" && r.path.ends_with(&format!("/subscriptions/{sub_id}"))
            }))
        })
        .await?;
    assert!(renewed, "no renewal after reauthorizationRequired");
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    Ok(())
}

/// The writes (PATCH/POST/DELETE) sent to the mailbox since the log was cleared.
fn mailbox_writes(fake: &FakeGraph) -> Vec<Logged> {
    fake.requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1.0/me/") && r.method != "GET")
        .collect()
}

#[tokio::test]
async fn contacts_sync_with_if_match_patches_and_follow_the_delete_rules() -> anyhow::Result<()> {
    let fake = FakeGraph::start().await?;
    let ada = fake.put_contact(json!({
        "displayName": "Ada Lovelace", "givenName": "Ada", "surname": "Lovelace",
        "companyName": "Analytical Engines", "jobTitle": "Analyst",
        "emailAddresses": [{"address": "ada@example.com", "name": "Ada Lovelace"},
                           {"address": "ada@home.example", "name": "ada@home.example"}],
        "businessPhones": ["+44 20 7946 0000"], "mobilePhone": "+44 7700 900123",
        "birthday": "1815-12-10T00:00:00Z"
    }));
    let bob = fake.put_contact(json!({
        "displayName": "Bob Byte", "givenName": "Bob", "surname": "Byte",
        "emailAddresses": [{"address": "bob@example.com", "name": "Bob"}]
    }));
    let config = bridge_of(&fake, BridgeKind::MicrosoftGraphContacts);
    let server = TestServer::start_with_config(move |c| c.bridges = vec![config.clone()]).await?;
    server.wait_ready(Duration::from_secs(10)).await?;
    let api = Api::new(server.http_url());
    let report = api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    assert!(api.records("calendar_event").await?.is_empty());

    // Imported as contacts, emails and phones keyed by slot ids.
    let (ada_doc, record) = api
        .record_where("contact", "Ada", |r| r["name"]["given"] == "Ada")
        .await?;
    assert_eq!(record["links"][BRIDGE]["id"], ada.as_str(), "{record}");
    assert_eq!(record["organization"], "Analytical Engines");
    let emails = record["emails"].as_object().context("emails")?;
    assert_eq!(emails.len(), 2, "{record}");
    let primary: Vec<&Value> = emails.values().filter(|e| e["primary"] == true).collect();
    assert_eq!(primary.len(), 1, "{record}");
    assert_eq!(primary[0]["value"], "ada@example.com");
    let phones = record["phones"].as_object().context("phones")?;
    let mobile_slot = phones
        .iter()
        .find(|(_, p)| p["label"] == "mobile")
        .map(|(k, _)| k.clone())
        .context("mobile phone")?;
    assert!(phones.values().any(|p| p["label"] == "work"), "{record}");
    for slot in emails.keys().chain(phones.keys()) {
        assert!(
            !slot.contains('@') && !slot.contains('+'),
            "slot ids are not values: {slot}"
        );
    }
    assert_eq!(api.records("contact").await?.len(), 2);

    let quiet = |api: &Api, fake: &FakeGraph| {
        fake.clear_log();
        let api = api.clone();
        async move { api.quiet_round(BRIDGE).await }
    };
    quiet(&api, &fake).await?;
    assert!(
        mailbox_writes(&fake).is_empty(),
        "{:?}",
        mailbox_writes(&fake)
    );

    // The app changes the job title and the mobile number (inside its slot): one PATCH with
    // If-Match carrying exactly those two fields.
    let mut app = app_open(&server.url(), &ada_doc, "contacts-app").await?;
    let etag_before = fake.contact(&ada).context("ada")?["@odata.etag"].clone();
    app_edit_contact(&mut app, &ada_doc, |c| {
        c.job_title = Some("Mathematician".into());
        if let Some(p) = c.phones.get_mut(&mobile_slot) {
            p.value = "+44 7700 900999".into();
        }
    })
    .await?;
    fake.clear_log();
    let report = api.sync(BRIDGE).await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let writes = mailbox_writes(&fake);
    let [patch] = writes.as_slice() else {
        bail!("expected one write, got {writes:?}");
    };
    assert_eq!(patch.method, "PATCH");
    assert!(
        patch.path.ends_with(&format!("/contacts/{ada}")),
        "{patch:?}"
    );
    assert_eq!(patch.if_match.as_deref(), etag_before.as_str(), "{patch:?}");
    assert_eq!(patch.status, 200, "{patch:?}");
    let body = patch.body.as_ref().context("PATCH body")?;
    let mut keys: Vec<&str> = body
        .as_object()
        .context("object")?
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["jobTitle", "mobilePhone"], "{body}");
    let stored = fake.contact(&ada).context("ada")?;
    assert_eq!(stored["jobTitle"], "Mathematician");
    assert_eq!(stored["mobilePhone"], "+44 7700 900999");
    assert_eq!(
        stored["birthday"], "1815-12-10T00:00:00Z",
        "unmapped fields kept"
    );
    quiet(&api, &fake).await?;

    // An Outlook edit lands between our read and our PATCH: 412, merged, both edits kept.
    app_edit_contact(&mut app, &ada_doc, |c| {
        c.notes = Some("Wrote the first program".into())
    })
    .await?;
    fake.edit_before_next_write(&ada, json!({"companyName": "Babbage & Co"}));
    fake.clear_log();
    let report = api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    let statuses: Vec<u16> = mailbox_writes(&fake).iter().map(|w| w.status).collect();
    assert_eq!(statuses, [412, 200], "the race was not met and retried");
    let stored = fake.contact(&ada).context("ada")?;
    assert_eq!(stored["companyName"], "Babbage & Co");
    assert_eq!(stored["personalNotes"], "Wrote the first program");
    let contact = app_contact(&mut app, &ada_doc).await?;
    assert_eq!(contact.organization.as_deref(), Some("Babbage & Co"));
    assert_eq!(contact.notes.as_deref(), Some("Wrote the first program"));
    assert!(api.conflicts(&ada_doc).await?.is_empty());
    quiet(&api, &fake).await?;

    // A change in Outlook reaches the document, 429s with Retry-After waited out on the way.
    fake.patch_contact(&bob, json!({"surname": "Bytes"}))
        .context("patch bob")?;
    fake.throttle_next(2, 429, 1);
    let started = std::time::Instant::now();
    let report = api.sync(BRIDGE).await?;
    assert_eq!(report["pulled"], 1, "{report}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was not honoured"
    );
    let (bob_doc, record) = api
        .record_where("contact", "Bob", |r| r["name"]["given"] == "Bob")
        .await?;
    assert_eq!(record["name"]["family"], "Bytes");

    // Deleted in Outlook: its only link goes, so the record is tombstoned.
    assert!(fake.delete_contact(&bob));
    let report = api.sync(BRIDGE).await?;
    assert_eq!(report["deleted"], 1, "{report}");
    let record = api.record("contact", &bob_doc).await?;
    assert_eq!(record["deleted"], true, "{record}");
    assert_eq!(record["links"][BRIDGE]["removed"], true, "{record}");

    // Deleted in the app: one DELETE with If-Match at Graph.
    let etag = fake.contact(&ada).context("ada")?["@odata.etag"].clone();
    app_edit_contact(&mut app, &ada_doc, |c| c.deleted = true).await?;
    fake.clear_log();
    api.sync(BRIDGE).await?;
    let writes = mailbox_writes(&fake);
    let [delete] = writes.as_slice() else {
        bail!("expected one write, got {writes:?}");
    };
    assert_eq!(delete.method, "DELETE");
    assert_eq!(delete.if_match.as_deref(), etag.as_str(), "{delete:?}");
    assert!(fake.contact(&ada).is_none(), "still at Graph");
    quiet(&api, &fake).await?;
    Ok(())
}

#[tokio::test]
async fn a_412_race_on_an_event_merges_both_edits_without_a_conflict() -> anyhow::Result<()> {
    let (env, master) = Env::start().await?;
    env.api.sync(BRIDGE).await?;
    let (doc_id, _) = env.only_event().await?;
    let mut app = app_open(&env.server.url(), &doc_id, "racer").await?;

    // Between our read of the series and our PATCH, Outlook changes its location.
    app_edit_event(&mut app, &doc_id, |e| {
        e.title = Some("Standup (renamed)".into())
    })
    .await?;
    env.fake
        .edit_before_next_write(&master, json!({"location": {"displayName": "Room 9"}}));
    env.fake.clear_log();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    let writes: Vec<(String, u16)> = env
        .writes()
        .into_iter()
        .map(|w| (w.method, w.status))
        .collect();
    assert_eq!(
        writes,
        [("PATCH".to_owned(), 412), ("PATCH".to_owned(), 200)],
        "the stale change key was not met, or not retried after the merge"
    );

    // Both edits are applied everywhere; nothing is a conflict.
    let stored = env.fake.event(&master).context("master")?;
    assert_eq!(stored["subject"], "Standup (renamed)");
    assert_eq!(stored["location"]["displayName"], "Room 9");
    let event = app_event(&mut app, &doc_id).await?;
    assert_eq!(event.title.as_deref(), Some("Standup (renamed)"));
    assert_eq!(event.location.as_deref(), Some("Room 9"));
    assert!(env.api.conflicts(&doc_id).await?.is_empty());
    env.quiet_round().await?;
    Ok(())
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_adopted_by_its_transaction_id() -> anyhow::Result<()> {
    let (env, _) = Env::start().await?;
    env.api.sync(BRIDGE).await?;

    // An app creates an event linked to the bridge (empty id: not created there yet).
    let mut app =
        driftless_tests::rust_client::RustClient::connect(&env.server.url(), "creator").await?;
    let d = day(5);
    let event = driftless_crdt_model::CalendarEvent {
        title: Some("Lunch".into()),
        start: Some(format!("{d}T12:00:00Z")),
        end: Some(format!("{d}T13:00:00Z")),
        links: [(BRIDGE.to_owned(), driftless_crdt_model::Link::default())].into(),
        ..Default::default()
    };
    let mut doc = automerge::AutoCommit::new();
    driftless_crdt_model::create_event(&mut doc, &event)?;
    let doc_id = driftless_tests::dav_bridge::app_add(&mut app, doc).await?;

    // Graph makes the event but its answer is lost: the round fails.
    env.fake.lose_next_create_answer();
    env.fake.clear_log();
    let (status, report) = env.api.try_sync(BRIDGE).await?;
    let posts: Vec<Logged> = env
        .writes()
        .into_iter()
        .filter(|w| w.method == "POST")
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].status, 504, "{posts:?}");
    let transaction = posts[0].body.as_ref().context("POST body")?["transactionId"].clone();
    assert_eq!(
        transaction,
        format!("driftless-{doc_id}").as_str(),
        "the create carries no transactionId derived from the document"
    );
    let record = env.api.record("calendar_event", &doc_id).await?;
    assert_eq!(
        record["links"][BRIDGE]["id"], "",
        "{status} {report} {record}"
    );

    // The next round pulls the event, recognises its own create and adopts it: one event at
    // Graph, one document, linked.
    let adopted = eventually(Duration::from_secs(30), || async {
        let (_, report) = env.api.try_sync(BRIDGE).await?;
        let record = env.api.record("calendar_event", &doc_id).await?;
        Ok(report["state"] == "idle" && record["links"][BRIDGE]["id"] != "")
    })
    .await?;
    assert!(adopted, "the lost create was never adopted");
    let lunches: Vec<Value> = env
        .fake
        .events()
        .into_iter()
        .filter(|e| e["subject"] == "Lunch")
        .collect();
    assert_eq!(lunches.len(), 1, "created twice: {lunches:?}");
    let graph_id = lunches[0]["id"].as_str().context("id")?;
    let titled: Vec<DocumentId> = env
        .api
        .records("calendar_event")
        .await?
        .into_iter()
        .filter(|(_, r)| r["title"] == "Lunch")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        titled,
        std::slice::from_ref(&doc_id),
        "imported as a second document"
    );
    let record = env.api.record("calendar_event", &doc_id).await?;
    assert_eq!(record["links"][BRIDGE]["id"], graph_id, "{record}");
    env.quiet_round().await?;
    Ok(())
}

#[tokio::test]
async fn subscriptions_survive_a_restart_and_are_renewed_before_they_expire() -> anyhow::Result<()>
{
    let (mut env, master) = Env::start_with(true).await?;
    env.api.sync(BRIDGE).await?;
    let subs = env.fake.subscriptions();
    let [sub] = subs.as_slice() else {
        bail!("expected one subscription, got {subs:?}");
    };
    let sub_id = sub["id"].as_str().context("subscription id")?.to_owned();

    // A restart reuses the stored subscription: no second one, and its clientState still works.
    env.server.restart().await?;
    env.server.wait_ready(Duration::from_secs(10)).await?;
    env.fake.clear_log();
    env.api.sync(BRIDGE).await?;
    let subs = env.fake.subscriptions();
    assert_eq!(subs.len(), 1, "a restart subscribed again: {subs:?}");
    assert_eq!(subs[0]["id"], sub_id.as_str());
    let calls: Vec<Logged> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.starts_with("/v1.0/subscriptions"))
        .collect();
    assert!(
        calls.is_empty(),
        "an unexpired subscription was touched: {calls:?}"
    );
    env.fake
        .patch_event(&master, json!({"subject": "After the restart"}))
        .context("patch master")?;
    let (status, _) = env
        .fake
        .notify(&[(sub_id.as_str(), "updated", master.as_str())])
        .await?;
    assert_eq!(status, 202, "the restarted server forgot the clientState");

    // Graph grants only a few seconds from now on: after the next renewal, rounds renew it again
    // before its granted end (halfway through), also after a restart; it is never recreated.
    env.fake.cap_subscription_lifetime(Duration::from_secs(4));
    env.fake
        .lifecycle(&sub_id, "reauthorizationRequired")
        .await?;
    let renewed =
        eventually(Duration::from_secs(10), || async {
            Ok(env.fake.requests().iter().any(|r| {
                r.method == "PATCH" && r.path.ends_with(&format!("/subscriptions/{sub_id}"))
            }))
        })
        .await?;
    assert!(renewed, "no renewal after reauthorizationRequired");
    env.fake.clear_log();
    env.server.restart().await?;
    env.server.wait_ready(Duration::from_secs(10)).await?;
    let renewed =
        eventually(Duration::from_secs(15), || async {
            env.api.sync(BRIDGE).await?;
            Ok(env.fake.requests().iter().any(|r| {
                r.method == "PATCH" && r.path.ends_with(&format!("/subscriptions/{sub_id}"))
            }))
        })
        .await?;
    assert!(
        renewed,
        "the short-lived subscription was not renewed before its end"
    );
    let created: Vec<Logged> = env
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/v1.0/subscriptions")
        .collect();
    assert!(
        created.is_empty(),
        "recreated instead of renewed: {created:?}"
    );
    assert_eq!(env.fake.subscriptions().len(), 1);
    Ok(())
}

#[tokio::test]
async fn an_app_rule_edit_is_written_as_a_patterned_recurrence_or_held_back_as_a_conflict()
-> anyhow::Result<()> {
    let (env, master) = Env::start().await?;
    env.api.sync(BRIDGE).await?;
    let (doc_id, _) = env.only_event().await?;
    let mut app = app_open(&env.server.url(), &doc_id, "rules").await?;
    let set_rule = |rule: &'static str| {
        move |e: &mut driftless_crdt_model::CalendarEvent| {
            if let Some(r) = e.recurrence.as_mut() {
                r.rules.insert("0".into(), rule.into());
            }
        }
    };

    // Seven instances instead of five: one PATCH of the master carrying only the recurrence.
    app_edit_event(&mut app, &doc_id, set_rule("RRULE:FREQ=DAILY;COUNT=7")).await?;
    env.fake.clear_log();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let writes = env.writes();
    let [patch] = writes.as_slice() else {
        bail!("expected one write, got {writes:?}");
    };
    assert!(
        patch.path.ends_with(&format!("/events/{master}")) && patch.status == 200,
        "{patch:?}"
    );
    let body = patch.body.as_ref().context("PATCH body")?;
    let keys: Vec<&String> = body.as_object().context("object")?.keys().collect();
    assert_eq!(keys, ["recurrence"], "{body}");
    let recurrence = &env.fake.event(&master).context("master")?["recurrence"];
    assert_eq!(recurrence["pattern"]["type"], "daily", "{recurrence}");
    assert_eq!(recurrence["range"]["type"], "numbered", "{recurrence}");
    assert_eq!(
        recurrence["range"]["numberOfOccurrences"], 7,
        "{recurrence}"
    );
    assert_eq!(
        recurrence["range"]["startDate"],
        day(7).to_string().as_str(),
        "{recurrence}"
    );
    // Graph lists the new occurrences; the rule reads back the same, then all is quiet.
    env.api.sync(BRIDGE).await?;
    env.quiet_round().await?;
    let event = app_event(&mut app, &doc_id).await?;
    assert_eq!(
        event.recurrence.as_ref().context("recurrence")?.rules["0"],
        "RRULE:FREQ=DAILY;COUNT=7"
    );

    // Hourly: Graph has no such pattern. The rule is not written (Graph keeps its own, the
    // document keeps the app's): the record lists both rules as a conflict; nothing loops.
    app_edit_event(&mut app, &doc_id, set_rule("RRULE:FREQ=HOURLY;COUNT=3")).await?;
    env.fake.clear_log();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    assert_eq!(
        env.fake.event(&master).context("master")?["recurrence"]["range"]["numberOfOccurrences"],
        7
    );
    assert_rule_conflict(
        &env,
        &doc_id,
        "RRULE:FREQ=HOURLY;COUNT=3",
        "RRULE:FREQ=DAILY;COUNT=7",
    )
    .await?;
    let status = env.api.bridge_status(BRIDGE).await?;
    assert!(status["last_error"].is_null(), "{status}");
    env.quiet_round().await?;
    env.quiet_round().await?;
    let event = app_event(&mut app, &doc_id).await?;
    assert_eq!(
        event.recurrence.as_ref().context("recurrence")?.rules["0"],
        "RRULE:FREQ=HOURLY;COUNT=3",
        "the app's rule was silently changed"
    );

    // Other edits still reach Graph (the rule stays held back), and an Outlook edit of something
    // else comes back without ending the conflict.
    app_edit_event(&mut app, &doc_id, |e| {
        e.title = Some("Standup (held)".into())
    })
    .await?;
    env.fake.clear_log();
    env.api.sync(BRIDGE).await?;
    let writes = env.writes();
    let [patch] = writes.as_slice() else {
        bail!("expected one write, got {writes:?}");
    };
    let keys: Vec<&String> = patch
        .body
        .as_ref()
        .and_then(Value::as_object)
        .context("PATCH body")?
        .keys()
        .collect();
    assert_eq!(keys, ["subject"], "{patch:?}");
    env.fake
        .patch_event(&master, json!({"location": {"displayName": "Room 7"}}))
        .context("patch master")?;
    env.api.sync(BRIDGE).await?;
    env.quiet_round().await?;
    assert_rule_conflict(
        &env,
        &doc_id,
        "RRULE:FREQ=HOURLY;COUNT=3",
        "RRULE:FREQ=DAILY;COUNT=7",
    )
    .await?;

    // Back to a rule Graph can express: written, and the conflict is over.
    app_edit_event(&mut app, &doc_id, set_rule("RRULE:FREQ=DAILY;COUNT=6")).await?;
    env.fake.clear_log();
    env.api.sync(BRIDGE).await?;
    assert_eq!(env.writes().len(), 1, "{:?}", env.writes());
    assert_eq!(
        env.fake.event(&master).context("master")?["recurrence"]["range"]["numberOfOccurrences"],
        6
    );
    assert_eq!(env.api.conflicts(&doc_id).await?, Vec::<Value>::new());
    env.api.sync(BRIDGE).await?;
    env.quiet_round().await?;

    // Hourly again, then the app goes back to Graph's own rule: the conflict ends without a write.
    app_edit_event(&mut app, &doc_id, set_rule("RRULE:FREQ=HOURLY;COUNT=3")).await?;
    env.api.sync(BRIDGE).await?;
    assert_rule_conflict(
        &env,
        &doc_id,
        "RRULE:FREQ=HOURLY;COUNT=3",
        "RRULE:FREQ=DAILY;COUNT=6",
    )
    .await?;
    app_edit_event(&mut app, &doc_id, set_rule("RRULE:FREQ=DAILY;COUNT=6")).await?;
    env.fake.clear_log();
    env.api.sync(BRIDGE).await?;
    assert!(env.writes().is_empty(), "{:?}", env.writes());
    assert_eq!(env.api.conflicts(&doc_id).await?, Vec::<Value>::new());
    env.quiet_round().await?;
    Ok(())
}

/// `GET /v1/records/{id}/conflicts` lists `recurrence` with the document's rule (`ours`, the
/// winner, written by the app) and Graph's (`graphs`, source: the bridge), and nothing else.
async fn assert_rule_conflict(
    env: &Env,
    doc_id: &DocumentId,
    ours: &str,
    graphs: &str,
) -> anyhow::Result<()> {
    let conflicts = env.api.conflicts(doc_id).await?;
    let [conflict] = conflicts.as_slice() else {
        bail!("expected one conflict, got {conflicts:?}");
    };
    assert_eq!(conflict["field"], "recurrence", "{conflict}");
    assert_eq!(conflict["winner"]["rules"]["0"], ours, "{conflict}");
    let values = conflict["values"].as_array().context("values")?;
    let rule_of = |source: &str| {
        values
            .iter()
            .find(|v| v["source"] == source)
            .map(|v| v["value"]["rules"]["0"].clone())
    };
    assert_eq!(rule_of("app"), Some(json!(ours)), "{conflict}");
    assert_eq!(rule_of(BRIDGE), Some(json!(graphs)), "{conflict}");
    assert_eq!(values.len(), 2, "{conflict}");
    Ok(())
}

#[tokio::test]
async fn an_app_series_is_created_with_its_pattern_and_stays_quiet() -> anyhow::Result<()> {
    let (env, _) = Env::start().await?;
    env.api.sync(BRIDGE).await?;
    let mut app =
        driftless_tests::rust_client::RustClient::connect(&env.server.url(), "planner").await?;
    let d = day(14);
    let event = driftless_crdt_model::CalendarEvent {
        title: Some("Planning".into()),
        start: Some(format!("{d}T15:00:00Z")),
        end: Some(format!("{d}T16:00:00Z")),
        recurrence: Some(driftless_crdt_model::Recurrence {
            rules: [(
                "0".to_owned(),
                "RRULE:FREQ=DAILY;INTERVAL=2;COUNT=3".to_owned(),
            )]
            .into(),
            ..Default::default()
        }),
        links: [(BRIDGE.to_owned(), driftless_crdt_model::Link::default())].into(),
        ..Default::default()
    };
    let mut doc = automerge::AutoCommit::new();
    driftless_crdt_model::create_event(&mut doc, &event)?;
    let doc_id = driftless_tests::dav_bridge::app_add(&mut app, doc).await?;

    env.fake.clear_log();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let posts: Vec<Logged> = env
        .writes()
        .into_iter()
        .filter(|w| w.method == "POST")
        .collect();
    let [post] = posts.as_slice() else {
        bail!("expected one create, got {posts:?}");
    };
    let recurrence = &post.body.as_ref().context("POST body")?["recurrence"];
    assert_eq!(recurrence["pattern"]["type"], "daily", "{recurrence}");
    assert_eq!(recurrence["pattern"]["interval"], 2, "{recurrence}");
    assert_eq!(
        recurrence["range"]["numberOfOccurrences"], 3,
        "{recurrence}"
    );
    assert_eq!(recurrence["range"]["startDate"], d.to_string().as_str());
    let masters: Vec<Value> = env
        .fake
        .events()
        .into_iter()
        .filter(|e| e["subject"] == "Planning")
        .collect();
    assert_eq!(masters.len(), 1, "{masters:?}");
    assert_eq!(masters[0]["type"], "seriesMaster");

    // Its occurrences come back in the next pull: no second document, then nothing to do.
    env.api.sync(BRIDGE).await?;
    let planning: Vec<DocumentId> = env
        .api
        .records("calendar_event")
        .await?
        .into_iter()
        .filter(|(_, r)| r["title"] == "Planning")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(planning, std::slice::from_ref(&doc_id));
    env.quiet_round().await?;
    Ok(())
}

/// The occurrences `GET /v1/calendar/occurrences` lists from today to day 60: their start days.
async fn occurrence_days(api: &Api) -> anyhow::Result<Vec<String>> {
    let from = format!("{}T00:00:00Z", day(0));
    let to = format!("{}T00:00:00Z", day(60));
    let v = api
        .get_json(&format!("/v1/calendar/occurrences?from={from}&to={to}"))
        .await?;
    Ok(v["occurrences"]
        .as_array()
        .context("occurrences")?
        .iter()
        .filter_map(|o| o["start"].as_str().map(|s| s[..10].to_owned()))
        .collect())
}

/// The deleted occurrence (day 10) is cancelled in the document and not listed by the
/// expansion endpoint; the moved one (day 8) is still an exception.
async fn assert_cancelled_kept(env: &Env, when: &str) -> anyhow::Result<()> {
    let (_, record) = env.only_event().await?;
    let overrides = &record["overrides"];
    assert_eq!(
        overrides[key(day(10))]["cancelled"],
        true,
        "{when}: the deleted occurrence is no longer cancelled: {record}"
    );
    assert_eq!(
        overrides[key(day(8))]["title"],
        "Standup (late)",
        "{when}: {record}"
    );
    let days = occurrence_days(&env.api).await?;
    let expected: Vec<String> = [7, 8, 9, 11].iter().map(|n| day(*n).to_string()).collect();
    assert_eq!(days, expected, "{when}");
    Ok(())
}

#[tokio::test]
async fn a_deleted_occurrence_stays_cancelled_after_the_master_is_patched() -> anyhow::Result<()> {
    // The series arrives after the first (complete) round: Graph's delta lists its occurrences
    // and its exception, never the deleted occurrence (Graph has no EXDATE).
    let env = Env::start_on(FakeGraph::start().await?, false).await?;
    env.api.sync(BRIDGE).await?;
    let master = seed_series(&env.fake)?;
    env.api.sync(BRIDGE).await?;
    let (doc_id, _) = env.only_event().await?;
    assert_cancelled_kept(&env, "after an incremental import").await?;

    // The app renames the series: Graph's master is patched (and Graph re-lists every
    // occurrence with a new etag in the next delta).
    let mut app = app_open(&env.server.url(), &doc_id, "cancel-app").await?;
    app_edit_event(&mut app, &doc_id, |e| e.title = Some("Standup v2".into())).await?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pushed"], 1, "{report}");
    assert_eq!(
        env.fake.event(&master).context("master")?["subject"],
        "Standup v2"
    );
    for round in 0..3 {
        env.api.sync(BRIDGE).await?;
        assert_cancelled_kept(&env, &format!("delta round {round} after our PATCH")).await?;
    }
    env.quiet_round().await?;

    // Outlook patches the master too; then the delta link expires (a complete listing).
    env.fake
        .patch_event(&master, json!({"subject": "Standup v3"}))
        .context("patch master")?;
    env.api.sync(BRIDGE).await?;
    assert_cancelled_kept(&env, "after an Outlook rename").await?;
    env.fake.expire_delta_tokens();
    env.api.sync(BRIDGE).await?;
    assert_cancelled_kept(&env, "after a resync").await?;
    env.quiet_round().await?;
    let (_, record) = env.only_event().await?;
    assert_eq!(record["title"], "Standup v3", "{record}");
    Ok(())
}
