//! A `microsoft_graph` bridge in the real server, against the Graph fake: a series with an
//! exception and a deleted occurrence becomes one `calendar_event` document an app reads; an app
//! edit reaches Graph as one `PATCH` with `If-Match`; a quiet round writes nothing; a 410 leads to
//! a merging resync without a duplicate; an event that leaves the window is not tombstoned (one
//! that is deleted is); 429 with `Retry-After` is waited out; `GET /v1/bridges` lists the bridge.
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
use driftless_tests::dav_bridge::{Api, app_edit_event, app_event, app_open};
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
    BridgeConfig {
        id: BRIDGE.into(),
        kind: BridgeKind::MicrosoftGraph,
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
        Ok((Self { fake, server, api }, master))
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
        "RRULE:FREQ=DAILY;INTERVAL=1;COUNT=5"
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
