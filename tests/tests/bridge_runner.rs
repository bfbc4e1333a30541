//! The bridge runner's robustness against a real Radicale: imports interrupted by a crash (fault
//! points of the `failpoints` feature), per-record outbox failures (a fault-injecting proxy in
//! front of Radicale answers 403 / 503 for chosen requests), and `[[policies]]` (the delete
//! authority, and the authority's value winning a same-field conflict).
//!
//! Rounds are driven by `POST /v1/bridges/{id}/sync`; provider edits go straight to Radicale, app
//! edits through the Rust protocol client.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use automerge::AutoCommit;
use driftless_bridges::dav::client::{DavClient, DavClientConfig};
use driftless_bridges::dav::wire::CollectionKind;
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::Link;
use driftless_server::bridge::failpoints;
use driftless_server::bridge::store::BridgeStore;
use driftless_server::config::{Authority, BridgeConfig, BridgeKind, Policy};
use driftless_server::storage::Storage;
use driftless_tests::TestServer;
use driftless_tests::dav_bridge::{
    Api, app_edit_event, app_event, app_local_edit_event, app_open, app_wait_acknowledged,
    provider_body, provider_edit, put_new,
};
use driftless_tests::dav_proxy::{Canned, DavProxy, Match};
use driftless_tests::radicale::{DavServer, PASSWORD, USER};
use serde_json::Value;

const QUIET: Duration = Duration::from_millis(300);

fn event(uid: &str, summary: &str, location: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//driftless//tests//EN\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20261119T100000\r\n\
         DTEND;TZID=Europe/Berlin:20261119T110000\r\nSUMMARY:{summary}\r\nLOCATION:{location}\r\n\
         END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

fn bridge(id: &str, url: String) -> BridgeConfig {
    BridgeConfig {
        id: id.into(),
        kind: BridgeKind::CalDav,
        workspace: "default".into(),
        // Rounds are driven by the test.
        poll_interval: Duration::from_secs(3600),
        max_delete_fraction: 1.0,
        url,
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        hubspot: None,
        google: None,
        graph: None,
        salesforce: None,
    }
}

fn policy(field: &str, authority: &str) -> Policy {
    Policy {
        record_type: "calendar_event".into(),
        field: field.into(),
        authority: Authority::Bridge(authority.into()),
    }
}

/// Radicale, driftless in-process with `bridges` and `policies`, and its HTTP API (`Deref`).
struct Env {
    dav: DavServer,
    server: TestServer,
    api: Api,
}

impl std::ops::Deref for Env {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Env {
    async fn start(
        dav: DavServer,
        bridges: Vec<BridgeConfig>,
        policies: Vec<Policy>,
    ) -> anyhow::Result<Self> {
        let server = TestServer::start_with_config(move |c| {
            c.bridges = bridges.clone();
            c.policies = policies.clone();
        })
        .await?;
        server.wait_ready(Duration::from_secs(10)).await?;
        let api = Api::new(server.http_url());
        Ok(Self { dav, server, api })
    }

    fn cal(&self) -> anyhow::Result<DavClient> {
        self.dav.calendar()
    }

    /// Every calendar_event record (with tombstones), as (document id, record).
    async fn records(&self) -> anyhow::Result<Vec<(DocumentId, Value)>> {
        self.api.records("calendar_event").await
    }

    async fn records_titled(&self, title: &str) -> anyhow::Result<Vec<(DocumentId, Value)>> {
        Ok(self
            .records()
            .await?
            .into_iter()
            .filter(|(_, r)| r["title"] == title)
            .collect())
    }

    async fn record_titled(&self, title: &str) -> anyhow::Result<(DocumentId, Value)> {
        self.api
            .record_where("calendar_event", &format!("titled {title:?}"), |r| {
                r["title"] == title
            })
            .await
    }

    async fn record(&self, id: &DocumentId) -> anyhow::Result<Value> {
        self.api.record("calendar_event", id).await
    }

    async fn restart(&mut self) -> anyhow::Result<()> {
        self.server.restart().await?;
        self.server.wait_ready(Duration::from_secs(10)).await
    }
}

/// Reads the bridge tables of a stopped server.
fn with_store<T>(env: &Env, read: impl FnOnce(&BridgeStore) -> T) -> anyhow::Result<T> {
    let store = BridgeStore::open(Storage::open(env.server.data_dir())?)?;
    Ok(read(&store))
}

async fn assert_quiet(env: &Env, id: &str) -> anyhow::Result<()> {
    let report = env.sync(id).await?;
    assert_eq!(
        (report["pulled"].as_u64(), report["pushed"].as_u64()),
        (Some(0), Some(0)),
        "not quiet: {report}"
    );
    Ok(())
}

// -------------------------------------------------------------------------------------------------
// 1. Imports interrupted by a crash

#[tokio::test]
async fn an_import_interrupted_after_its_document_is_durable_is_adopted_not_duplicated()
-> anyhow::Result<()> {
    let dav = DavServer::radicale().await?;
    let url = dav.calendar_url();
    let mut env = Env::start(dav, vec![bridge("crash-after", url)], vec![]).await?;
    // Queued behind the bridge's own first round: that one is over when this returns.
    env.sync("crash-after").await?;
    failpoints::arm("crash-after", "import.after_send", 1);
    let cal = env.cal()?;
    let href = put_new(
        &cal,
        "standup.ics",
        &event("standup@t", "Standup", "Room 1"),
    )
    .await?;

    // The document is durable; the round "dies" before the link is stored.
    let (status, answer) = env.try_sync("crash-after").await?;
    assert_ne!(status, 200, "the fault point did not fire: {answer}");
    assert!(answer.to_string().contains("import.after_send"), "{answer}");
    assert_eq!(env.records_titled("Standup").await?.len(), 1);

    // After a restart the next round adopts that document.
    env.restart().await?;
    env.sync("crash-after").await?;
    env.sync("crash-after").await?;
    let (id, rec) = env.record_titled("Standup").await?;
    assert_eq!(rec["links"]["crash-after"]["id"], href, "{rec}");
    assert_eq!(env.records().await?.len(), 1, "duplicate document");
    let status = env.bridge_status("crash-after").await?;
    assert_eq!(status["linked_records"], 1, "{status}");
    // And it is an ordinary linked record: a provider edit reaches it.
    provider_edit(&cal, &href, "LOCATION:Room 1", "LOCATION:Room 2").await?;
    env.sync("crash-after").await?;
    assert_eq!(env.record(&id).await?["location"], "Room 2");
    assert_eq!(env.records().await?.len(), 1);
    assert_quiet(&env, "crash-after").await
}

#[tokio::test]
async fn an_import_interrupted_before_its_document_is_sent_is_recreated_under_the_same_id()
-> anyhow::Result<()> {
    let dav = DavServer::radicale().await?;
    let url = dav.calendar_url();
    let mut env = Env::start(dav, vec![bridge("crash-before", url)], vec![]).await?;
    env.sync("crash-before").await?;
    failpoints::arm("crash-before", "import.before_send", 1);
    let cal = env.cal()?;
    let href = put_new(&cal, "review.ics", &event("review@t", "Review", "Room 1")).await?;

    let (status, answer) = env.try_sync("crash-before").await?;
    assert_ne!(status, 200, "the fault point did not fire: {answer}");
    assert!(env.records().await?.is_empty(), "the document was sent");

    env.server.stop().await?;
    let pending = with_store(&env, |s| s.pending_imports("crash-before"))??;
    let chosen = pending.get(&href).context("no pending import")?.doc.clone();
    env.restart().await?;
    env.sync("crash-before").await?;
    env.sync("crash-before").await?;
    let (id, rec) = env.record_titled("Review").await?;
    assert_eq!(id.to_string(), chosen, "recreated under another id");
    assert_eq!(rec["links"]["crash-before"]["id"], href, "{rec}");
    assert_eq!(env.records().await?.len(), 1, "duplicate document");
    assert_eq!(
        env.bridge_status("crash-before").await?["linked_records"],
        1
    );
    assert_quiet(&env, "crash-before").await
}

// -------------------------------------------------------------------------------------------------
// 2. Per-record outbox failures

const FORBIDDEN: &str =
    "<?xml version=\"1.0\"?><D:error xmlns:D=\"DAV:\"><D:need-privileges/></D:error>";

#[tokio::test]
async fn a_record_the_provider_refuses_does_not_block_the_others_and_retries_with_backoff()
-> anyhow::Result<()> {
    let dav = DavServer::radicale().await?;
    let proxy = DavProxy::start(&dav.base_url()).await?;
    let url = proxy.proxied(&dav.calendar_url());
    let mut env = Env::start(dav, vec![bridge("cal", url)], vec![]).await?;
    let cal = env.cal()?;
    let a = put_new(&cal, "a.ics", &event("a@t", "Alpha", "R")).await?;
    let b = put_new(&cal, "b.ics", &event("b@t", "Beta", "R")).await?;
    env.sync("cal").await?;
    let (a_id, _) = env.record_titled("Alpha").await?;
    let (b_id, _) = env.record_titled("Beta").await?;

    // The provider refuses every write of Alpha.
    proxy.answer(
        Match::ending("PUT", "/a.ics"),
        usize::MAX,
        Canned::status(403).body(FORBIDDEN),
    );
    let mut app = app_open(&env.server.url(), &a_id, "app-a").await?;
    app.add(b_id.clone(), AutoCommit::new());
    app.sync_until_quiet(QUIET).await?;
    app_edit_event(&mut app, &a_id, |e| e.title = Some("Alpha 2".into())).await?;
    app_edit_event(&mut app, &b_id, |e| e.title = Some("Beta 2".into())).await?;

    let report = env.sync("cal").await?;
    assert_eq!(report["pushed"], 1, "{report}");
    assert!(provider_body(&cal, &b).await?.contains("SUMMARY:Beta 2"));
    assert!(provider_body(&cal, &a).await?.contains("SUMMARY:Alpha\r\n"));
    let status = env.bridge_status("cal").await?;
    assert_eq!(status["outbox_pending"], 1, "{status}");
    let error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&a_id.to_string()) && error.contains("a.ics") && error.contains("403"),
        "last_error does not name the record: {status}"
    );

    // Rounds every 100 ms: Alpha is retried only when its own backoff says so, with growing
    // delays (at least 0.5 s, 1 s, 2 s: exponential from 1 s with jitter in the upper half).
    let started = Instant::now();
    let mut rounds = 0;
    while proxy.seen_ending("PUT", "/a.ics").len() < 4 {
        if started.elapsed() > Duration::from_secs(20) {
            bail!(
                "Alpha was not retried 3 times in 20 s: {:?}",
                proxy.seen_ending("PUT", "/a.ics")
            );
        }
        env.sync("cal").await?;
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tries: Vec<Instant> = proxy
        .seen_ending("PUT", "/a.ics")
        .iter()
        .map(|l| l.at)
        .collect();
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, min_ms) in gaps.iter().zip([480, 980, 1980]) {
        assert!(
            *gap >= Duration::from_millis(min_ms),
            "retried too early: {gaps:?}"
        );
    }
    assert!(gaps[2] > gaps[0], "delays do not grow: {gaps:?}");
    assert!(rounds >= 10, "only {rounds} rounds");
    assert_eq!(
        proxy.seen_ending("PUT", "/b.ics").len(),
        1,
        "Beta pushed twice"
    );

    // The failed job survives a restart; the outbox cursor has moved past it.
    env.server.stop().await?;
    let (jobs, cursor) = with_store(&env, |s| (s.failed_jobs("cal"), s.outbox_cursor("cal")))?;
    let jobs = jobs?;
    let job = jobs.get(&a_id.to_string()).context("no failed job")?;
    assert_eq!(job.attempts, 4, "{job:?}");
    assert!(job.last_error.contains("403"), "{job:?}");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(cursor?.is_some());
    env.restart().await?;
    let status = env.bridge_status("cal").await?;
    assert_eq!(status["outbox_pending"], 1, "{status}");
    assert!(
        status["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains(&a_id.to_string()),
        "{status}"
    );

    // Once the provider accepts it, the next due attempt writes it.
    proxy.clear_rules();
    let started = Instant::now();
    while !provider_body(&cal, &a).await?.contains("SUMMARY:Alpha 2") {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("Alpha was never written");
        }
        env.sync("cal").await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let status = env.bridge_status("cal").await?;
    assert_eq!(status["outbox_pending"], 0, "{status}");
    assert!(status["last_error"].is_null(), "{status}");
    let puts = proxy.seen_ending("PUT", "").len();
    assert_quiet(&env, "cal").await?;
    assert_eq!(
        proxy.seen_ending("PUT", "").len(),
        puts,
        "a quiet round wrote"
    );
    Ok(())
}

#[tokio::test]
async fn a_failed_job_honours_retry_after_and_is_dropped_once_nothing_needs_writing()
-> anyhow::Result<()> {
    let dav = DavServer::radicale().await?;
    let proxy = DavProxy::start(&dav.base_url()).await?;
    let url = proxy.proxied(&dav.calendar_url());
    let env = Env::start(dav, vec![bridge("cal", url)], vec![]).await?;
    let cal = env.cal()?;
    let c = put_new(&cal, "c.ics", &event("c@t", "Gamma", "R")).await?;
    env.sync("cal").await?;
    let (c_id, _) = env.record_titled("Gamma").await?;

    proxy.answer(
        Match::ending("PUT", "/c.ics"),
        usize::MAX,
        Canned::status(409).header("Retry-After", "3"),
    );
    let mut app = app_open(&env.server.url(), &c_id, "app-c").await?;
    app_edit_event(&mut app, &c_id, |e| e.title = Some("Gamma 2".into())).await?;
    env.sync("cal").await?;
    assert_eq!(proxy.seen_ending("PUT", "/c.ics").len(), 1);
    assert_eq!(env.bridge_status("cal").await?["outbox_pending"], 1);

    // Retry-After (3 s) outlasts the first backoff (at most 1 s): no retry before it.
    let failed_at = Instant::now();
    while failed_at.elapsed() < Duration::from_millis(2500) {
        env.sync("cal").await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        proxy.seen_ending("PUT", "/c.ics").len(),
        1,
        "retried before Retry-After"
    );

    // The app takes its edit back: the record no longer needs a write, so the job is dropped
    // when it comes due, without writing.
    app_edit_event(&mut app, &c_id, |e| e.title = Some("Gamma".into())).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    env.sync("cal").await?;
    let status = env.bridge_status("cal").await?;
    assert_eq!(status["outbox_pending"], 0, "{status}");
    assert!(status["last_error"].is_null(), "{status}");
    assert_eq!(proxy.seen_ending("PUT", "/c.ics").len(), 1, "wrote anyway");
    assert!(provider_body(&cal, &c).await?.contains("SUMMARY:Gamma\r\n"));
    Ok(())
}

#[tokio::test]
async fn a_provider_wide_failure_fails_the_round_and_loses_no_job() -> anyhow::Result<()> {
    let dav = DavServer::radicale().await?;
    let proxy = DavProxy::start(&dav.base_url()).await?;
    let url = proxy.proxied(&dav.calendar_url());
    let env = Env::start(dav, vec![bridge("cal", url)], vec![]).await?;
    let cal = env.cal()?;
    let d = put_new(&cal, "d.ics", &event("d@t", "Delta", "R")).await?;
    env.sync("cal").await?;
    let (d_id, _) = env.record_titled("Delta").await?;
    let mut app = app_open(&env.server.url(), &d_id, "app-d").await?;
    app_edit_event(&mut app, &d_id, |e| e.title = Some("Delta 2".into())).await?;

    // The provider is overloaded for writes: the round fails as a whole. (Retry-After keeps the
    // bridge's own retry out of the way; a job parked as the record's failure would wait as long.)
    proxy.answer(
        Match::new("PUT", ""),
        usize::MAX,
        Canned::status(503).header("Retry-After", "30"),
    );
    let (status, answer) = env.try_sync("cal").await?;
    assert_eq!(status, 502, "{answer}");
    let bridge = env.bridge_status("cal").await?;
    assert_eq!(bridge["state"], "error", "{bridge}");
    assert!(
        bridge["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("503"),
        "{bridge}"
    );
    assert!(bridge["outbox_pending"].as_u64() >= Some(1), "{bridge}");

    // Not parked as the record's failure: the very next round writes it.
    proxy.clear_rules();
    let report = env.sync("cal").await?;
    assert_eq!(report["pushed"], 1, "{report}");
    assert!(provider_body(&cal, &d).await?.contains("SUMMARY:Delta 2"));
    let bridge = env.bridge_status("cal").await?;
    assert_eq!(bridge["outbox_pending"], 0, "{bridge}");
    assert_eq!(bridge["state"], "idle", "{bridge}");
    Ok(())
}

// -------------------------------------------------------------------------------------------------
// 3. [[policies]]

#[tokio::test]
async fn the_delete_authority_tombstones_a_record_other_bridges_still_hold() -> anyhow::Result<()> {
    let dav = DavServer::radicale().await?;
    let second_url = format!("{}/{USER}/second/", dav.base_url());
    let second = DavClient::new(
        DavClientConfig::new(second_url.clone(), CollectionKind::Calendar)
            .basic_auth(USER, PASSWORD),
    )?;
    second.create_collection("Second").await?;
    let first_url = dav.calendar_url();
    let env = Env::start(
        dav,
        vec![bridge("main", first_url), bridge("copy", second_url)],
        vec![policy("deleted", "main")],
    )
    .await?;
    let cal = env.cal()?;
    let x = put_new(&cal, "x.ics", &event("x@t", "Xray", "R")).await?;
    put_new(&cal, "y.ics", &event("y@t", "Yankee", "R")).await?;
    env.sync("main").await?;
    let (x_id, _) = env.record_titled("Xray").await?;
    let (y_id, _) = env.record_titled("Yankee").await?;
    // Both records are linked to the second calendar too.
    let mut app = app_open(&env.server.url(), &x_id, "app-p").await?;
    app.add(y_id.clone(), AutoCommit::new());
    app.sync_until_quiet(QUIET).await?;
    for id in [&x_id, &y_id] {
        app_edit_event(&mut app, id, |e| {
            e.links.insert("copy".into(), Link::default());
        })
        .await?;
    }
    let report = env.sync("copy").await?;
    assert_eq!(report["pushed"], 2, "{report}");
    let x_copy = app_event(&mut app, &x_id).await?.links["copy"].id.clone();
    let y_copy = app_event(&mut app, &y_id).await?.links["copy"].id.clone();

    // Deleted in the copy (not the authority): only unlinked there.
    second.delete(&y_copy, None).await?;
    env.sync("copy").await?;
    let y = env.record(&y_id).await?;
    assert_eq!(y["deleted"], false, "{y}");
    assert_eq!(y["links"]["copy"]["removed"], true, "{y}");
    assert_eq!(y["links"]["main"]["removed"], false, "{y}");

    // Deleted at the authority: tombstoned although the copy still holds it...
    cal.delete(&x, None).await?;
    let report = env.sync("main").await?;
    assert_eq!(report["deleted"], 1, "{report}");
    let rec = env.record(&x_id).await?;
    assert_eq!(rec["deleted"], true, "not tombstoned: {rec}");
    assert_eq!(rec["links"]["main"]["removed"], true, "{rec}");
    // ...and so deleted at the copy too, and not resurrected.
    let report = env.sync("copy").await?;
    assert_eq!(report["deleted"], 1, "{report}");
    assert!(second.get(&x_copy).await?.is_none(), "still in the copy");
    env.sync("main").await?;
    env.sync("copy").await?;
    assert!(cal.get(&x).await?.is_none(), "resurrected");
    assert_eq!(env.records().await?.len(), 2, "{:?}", env.records().await?);
    Ok(())
}

#[tokio::test]
async fn the_policy_authority_wins_a_same_field_conflict_everywhere() -> anyhow::Result<()> {
    let dav = DavServer::radicale().await?;
    let url = dav.calendar_url();
    let env = Env::start(
        dav,
        vec![bridge("cal", url)],
        vec![policy("location", "cal")],
    )
    .await?;
    let cal = env.cal()?;
    let href = put_new(&cal, "r.ics", &event("r@t", "Review", "Room 1")).await?;
    env.sync("cal").await?;
    let (id, _) = env.record_titled("Review").await?;
    let mut app = app_open(&env.server.url(), &id, "app-w").await?;

    // Offline app edits, sent only after the provider's edit is imported. The long description
    // first: the app's later location op then outnumbers the bridge's, so Automerge alone would
    // pick the app's location.
    app_local_edit_event(&mut app, &id, |e| {
        e.description = Some("notes ".repeat(60));
    })?;
    app_local_edit_event(&mut app, &id, |e| e.location = Some("App room".into()))?;
    provider_edit(&cal, &href, "LOCATION:Room 1", "LOCATION:Provider room").await?;
    let report = env.sync("cal").await?;
    assert_eq!(report["pulled"], 1, "{report}");
    app_wait_acknowledged(&mut app, &id).await?;

    let doc = env.get_json(&format!("/v1/docs/{id}")).await?;
    assert_eq!(doc["location"], "App room", "Automerge's own pick: {doc}");
    let conflicts = env.get_json(&format!("/v1/records/{id}/conflicts")).await?;
    let loc = conflicts["conflicts"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["field"] == "location"))
        .with_context(|| format!("no location conflict: {conflicts}"))?;
    assert_eq!(loc["winner"], "Provider room", "{conflicts}");

    // The next round writes the authority's value into the document before pushing.
    env.sync("cal").await?;
    let rec = env.record(&id).await?;
    assert_eq!(rec["location"], "Provider room", "{rec}");
    assert!(
        rec["description"]
            .as_str()
            .unwrap_or_default()
            .starts_with("notes")
    );
    let body = provider_body(&cal, &href).await?;
    assert!(
        body.contains("LOCATION:Provider room") && body.contains("DESCRIPTION:notes"),
        "{body}"
    );
    assert_eq!(
        app_event(&mut app, &id).await?.location.as_deref(),
        Some("Provider room")
    );
    let conflicts = env.get_json(&format!("/v1/records/{id}/conflicts")).await?;
    if let Some(loc) = conflicts["conflicts"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["field"] == "location"))
    {
        assert_eq!(loc["winner"], "Provider room", "{conflicts}");
    }
    assert_quiet(&env, "cal").await
}
