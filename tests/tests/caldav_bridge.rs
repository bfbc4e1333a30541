//! The CalDAV bridge end to end: a real Radicale (and Xandikos) started by the test, driftless
//! in-process with a `[[bridges]]` entry, rounds driven by `POST /v1/bridges/{id}/sync`, provider
//! edits through `DavClient`, app edits through the Rust protocol client (and one read through the
//! JS automerge-repo client).

use std::time::Duration;

use anyhow::{Context, bail};
use automerge::AutoCommit;
use driftless_bridges::dav::client::{DavClient, Precondition, PutOutcome};
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::{CalendarEvent, Link, apply_event_diff, read_event};
use driftless_server::config::{BridgeConfig, BridgeKind};
use driftless_tests::TestServer;
use driftless_tests::radicale::{DavServer, DavServerKind, PASSWORD, USER};
use driftless_tests::rust_client::RustClient;
use serde_json::Value;

const QUIET: Duration = Duration::from_millis(300);

fn event(uid: &str, summary: &str, location: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//driftless//tests//EN\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20261119T100000\r\n\
         DTEND;TZID=Europe/Berlin:20261119T110000\r\nSUMMARY:{summary}\r\nLOCATION:{location}\r\n\
         X-CUSTOM;X-PARAM=keep:custom value\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

fn bridge(id: &str, url: String, max_delete_fraction: f64) -> BridgeConfig {
    BridgeConfig {
        id: id.into(),
        kind: BridgeKind::CalDav,
        workspace: "default".into(),
        // Rounds are driven by the test.
        poll_interval: Duration::from_secs(3600),
        max_delete_fraction,
        url,
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
    }
}

struct Env {
    dav: DavServer,
    server: TestServer,
    http: reqwest::Client,
}

impl Env {
    async fn start(
        kind: DavServerKind,
        bridges: impl FnOnce(&DavServer) -> Vec<BridgeConfig>,
    ) -> anyhow::Result<Self> {
        let dav = DavServer::start(kind).await?;
        let bridges = bridges(&dav);
        let server = TestServer::start_with_config(move |c| c.bridges = bridges.clone()).await?;
        server.wait_ready(Duration::from_secs(10)).await?;
        Ok(Self {
            dav,
            server,
            http: reqwest::Client::new(),
        })
    }

    fn cal(&self) -> anyhow::Result<DavClient> {
        self.dav.calendar()
    }

    async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.server.http_url()))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }

    async fn sync_with(&self, id: &str, query: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!(
                "{}/v1/bridges/{id}/sync{query}",
                self.server.http_url()
            ))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            bail!("sync {id}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }

    async fn sync(&self, id: &str) -> anyhow::Result<Value> {
        self.sync_with(id, "").await
    }

    /// Every calendar_event record (with tombstones), as (document id, record).
    async fn records(&self) -> anyhow::Result<Vec<(DocumentId, Value)>> {
        let v = self
            .get_json("/v1/records?type=calendar_event&include_deleted=true")
            .await?;
        let mut out = Vec::new();
        for r in v["records"].as_array().context("records")? {
            let url = r["url"].as_str().context("url")?;
            let id: DocumentId = url.trim_start_matches("automerge:").parse()?;
            out.push((id, r["record"].clone()));
        }
        Ok(out)
    }

    async fn record_titled(&self, title: &str) -> anyhow::Result<(DocumentId, Value)> {
        let all = self.records().await?;
        let mut found = all.into_iter().filter(|(_, r)| r["title"] == title);
        let first = found
            .next()
            .with_context(|| format!("no record titled {title}"))?;
        if found.next().is_some() {
            bail!("more than one record titled {title}");
        }
        Ok(first)
    }

    async fn bridge_status(&self, id: &str) -> anyhow::Result<Value> {
        let v = self.get_json("/v1/bridges").await?;
        v["bridges"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["id"] == id).cloned())
            .with_context(|| format!("bridge {id} not listed: {v}"))
    }
}

async fn put_new(cal: &DavClient, name: &str, body: &str) -> anyhow::Result<String> {
    let href = format!("{}{name}", cal.collection_url().path());
    match cal.put(&href, body, Precondition::IfNoneMatch).await? {
        PutOutcome::Written { .. } => Ok(href),
        PutOutcome::PreconditionFailed => bail!("{href} exists"),
    }
}

/// Replaces a property line of the resource at `href` (a provider-side edit).
async fn provider_edit(cal: &DavClient, href: &str, from: &str, to: &str) -> anyhow::Result<()> {
    let res = cal.get(href).await?.context("resource gone")?;
    if !res.body.contains(from) {
        bail!("{href} does not contain {from:?}:\n{}", res.body);
    }
    let body = res.body.replace(from, to);
    let etag = res.etag.context("no etag")?;
    match cal.put(href, &body, Precondition::IfMatch(&etag)).await? {
        PutOutcome::Written { .. } => Ok(()),
        PutOutcome::PreconditionFailed => bail!("{href} changed meanwhile"),
    }
}

/// The only resource of the collection with `needle` in its body.
async fn provider_body(cal: &DavClient, href: &str) -> anyhow::Result<String> {
    Ok(cal.get(href).await?.context("resource gone")?.body)
}

/// An app: the Rust protocol client holding one document.
async fn app_open(server: &TestServer, id: &DocumentId, peer: &str) -> anyhow::Result<RustClient> {
    let mut app = RustClient::connect(&server.url(), peer).await?;
    app.add(id.clone(), AutoCommit::new());
    app.sync_until_quiet(QUIET).await?;
    Ok(app)
}

/// Edits the app's copy like a well-behaved client (only the changed fields) and waits until the
/// server has it durably.
async fn app_edit(
    app: &mut RustClient,
    id: &DocumentId,
    edit: impl FnOnce(&mut CalendarEvent),
) -> anyhow::Result<()> {
    let d = app.docs.get_mut(id).context("doc")?;
    let old = read_event(&d.doc)?;
    let mut new = old.clone();
    edit(&mut new);
    apply_event_diff(&mut d.doc, &old, &new)?;
    d.doc.commit();
    for _ in 0..50 {
        app.sync_until_quiet(Duration::from_millis(100)).await?;
        if app.acknowledged(id) {
            return Ok(());
        }
    }
    bail!("the server did not acknowledge the app's edit")
}

async fn app_event(app: &mut RustClient, id: &DocumentId) -> anyhow::Result<CalendarEvent> {
    app.sync_until_quiet(QUIET).await?;
    Ok(read_event(&app.docs.get(id).context("doc")?.doc)?)
}

// -------------------------------------------------------------------------------------------------

async fn provider_and_app_edits_flow_both_ways(kind: DavServerKind) -> anyhow::Result<()> {
    let env = Env::start(kind, |dav| vec![bridge("cal", dav.calendar_url(), 1.0)]).await?;
    let cal = env.cal()?;
    let href = put_new(
        &cal,
        "standup.ics",
        &event("standup@test", "Standup", "Room 1"),
    )
    .await?;

    // Provider-created record -> new document (the bridge's own first round, which starts with
    // the server, may have pulled it already).
    env.sync("cal").await?;
    let (id, rec) = env.record_titled("Standup").await?;
    assert_eq!(rec["location"], "Room 1");
    assert_eq!(rec["ical_uid"], "standup@test");
    assert_eq!(rec["links"]["cal"]["id"], href);
    assert_eq!(rec["deleted"], false);

    // It reaches a JS automerge-repo client.
    let js = driftless_tests::run_interop_helper(
        &[&env.server.url(), "find-json", &format!("automerge:{id}")],
        Duration::from_secs(60),
    )
    .await;
    if let Ok(out) = &js {
        let js: Value = serde_json::from_str(out.trim().lines().last().unwrap_or_default())?;
        assert_eq!(js["title"], "Standup", "{js}");
        assert_eq!(js["links"]["cal"]["id"], href, "{js}");
    } else if let Err(e) = js
        && std::env::var("DRIFTLESS_REQUIRE_NODE").is_ok()
    {
        bail!("the JS client could not read the document: {e:#}");
    }

    // Quiet rounds write nothing to the provider (only the sync REPORT is sent).
    let status = env.bridge_status("cal").await?;
    assert_eq!(status["state"], "idle", "{status}");
    assert_eq!(status["linked_records"], 1, "{status}");
    let before = provider_body(&cal, &href).await?;
    let report = env.sync("cal").await?;
    assert_eq!(
        (report["pulled"].as_u64(), report["pushed"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );
    assert_eq!(provider_body(&cal, &href).await?, before);

    // An app edit reaches the provider, keeping what driftless does not model.
    let mut app = app_open(&env.server, &id, "app-1").await?;
    app_edit(&mut app, &id, |e| e.title = Some("Daily standup".into())).await?;
    let report = env.sync("cal").await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let body = provider_body(&cal, &href).await?;
    assert!(body.contains("SUMMARY:Daily standup"), "{body}");
    assert!(
        body.contains("X-CUSTOM;X-PARAM=keep:custom value"),
        "{body}"
    );
    assert!(body.contains("LOCATION:Room 1"), "{body}");
    // ...and is not re-imported: the next round is quiet.
    let report = env.sync("cal").await?;
    assert_eq!(
        (report["pulled"].as_u64(), report["pushed"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );

    // A provider edit reaches the app.
    provider_edit(&cal, &href, "LOCATION:Room 1", "LOCATION:Room 2").await?;
    let report = env.sync("cal").await?;
    assert_eq!(report["pulled"], 1, "{report}");
    let seen = app_event(&mut app, &id).await?;
    assert_eq!(seen.location.as_deref(), Some("Room 2"));
    assert_eq!(seen.title.as_deref(), Some("Daily standup"));
    let report = env.sync("cal").await?;
    assert_eq!(
        (report["pulled"].as_u64(), report["pushed"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );

    // An app-created record with an empty link is created at the provider, once.
    let mut doc = AutoCommit::new();
    let new = CalendarEvent {
        title: Some("Offsite".into()),
        start: Some("2026-12-01".into()),
        end: Some("2026-12-02".into()),
        links: [("cal".to_owned(), Link::default())].into_iter().collect(),
        ..CalendarEvent::default()
    };
    driftless_crdt_model::create_event(&mut doc, &new)?;
    doc.commit();
    let new_id = DocumentId::from_bytes(&rand::random::<[u8; 16]>());
    app.add(new_id.clone(), doc);
    for _ in 0..50 {
        app.sync_until_quiet(Duration::from_millis(100)).await?;
        if app.acknowledged(&new_id) {
            break;
        }
    }
    let report = env.sync("cal").await?;
    assert_eq!(report["pushed"].as_u64(), Some(1), "{report}");
    let created = app_event(&mut app, &new_id).await?;
    let new_href = created.links["cal"].id.clone();
    assert!(new_href.ends_with(".ics"), "{new_href}");
    let body = provider_body(&cal, &new_href).await?;
    assert!(body.contains("SUMMARY:Offsite"), "{body}");
    let report = env.sync("cal").await?;
    assert_eq!(
        (report["pulled"].as_u64(), report["pushed"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );
    assert_eq!(env.records().await?.len(), 2, "no duplicates");
    Ok(())
}

#[tokio::test]
async fn radicale_provider_and_app_edits_flow_both_ways() -> anyhow::Result<()> {
    provider_and_app_edits_flow_both_ways(DavServerKind::Radicale).await
}

#[tokio::test]
async fn xandikos_provider_and_app_edits_flow_both_ways() -> anyhow::Result<()> {
    provider_and_app_edits_flow_both_ways(DavServerKind::Xandikos).await
}

async fn concurrent_edits_merge_and_conflicts_resolve_identically(
    kind: DavServerKind,
) -> anyhow::Result<()> {
    let env = Env::start(kind, |dav| vec![bridge("cal", dav.calendar_url(), 1.0)]).await?;
    let cal = env.cal()?;
    let href = put_new(
        &cal,
        "review.ics",
        &event("review@test", "Review", "Room 1"),
    )
    .await?;
    env.sync("cal").await?;
    let (id, _) = env.record_titled("Review").await?;
    let mut app = app_open(&env.server, &id, "app-c").await?;

    // Different fields: app edits the title, the provider the location, concurrently.
    app_edit(&mut app, &id, |e| e.title = Some("Design review".into())).await?;
    provider_edit(&cal, &href, "LOCATION:Room 1", "LOCATION:Room 7").await?;
    env.sync("cal").await?;
    let seen = app_event(&mut app, &id).await?;
    assert_eq!(seen.title.as_deref(), Some("Design review"));
    assert_eq!(seen.location.as_deref(), Some("Room 7"));
    let body = provider_body(&cal, &href).await?;
    assert!(
        body.contains("SUMMARY:Design review") && body.contains("LOCATION:Room 7"),
        "{body}"
    );

    // The same field on both sides: one visible conflict, one winner everywhere.
    app_edit(&mut app, &id, |e| e.location = Some("App room".into())).await?;
    provider_edit(&cal, &href, "LOCATION:Room 7", "LOCATION:Provider room").await?;
    let report = env.sync("cal").await?;
    assert!(report["conflicts"].as_u64() >= Some(1), "{report}");
    let conflicts = env.get_json(&format!("/v1/records/{id}/conflicts")).await?;
    let list = conflicts["conflicts"].as_array().context("conflicts")?;
    let loc = list
        .iter()
        .find(|c| c["field"] == "location")
        .with_context(|| format!("no location conflict: {conflicts}"))?;
    let mut sources: Vec<&str> = loc["values"]
        .as_array()
        .context("values")?
        .iter()
        .filter_map(|v| v["source"].as_str())
        .collect();
    sources.sort_unstable();
    assert_eq!(sources, vec!["app", "cal"], "{conflicts}");
    let winner = loc["winner"].as_str().context("winner")?.to_owned();
    // Server, app and provider agree (the provider gets the winner on the next push).
    env.sync("cal").await?;
    let (_, rec) = env.record_titled("Design review").await?;
    assert_eq!(rec["location"], winner.as_str());
    assert_eq!(
        app_event(&mut app, &id).await?.location.as_deref(),
        Some(winner.as_str())
    );
    let body = provider_body(&cal, &href).await?;
    assert!(
        body.contains(&format!("LOCATION:{winner}")),
        "{winner}: {body}"
    );
    let report = env.sync("cal").await?;
    assert_eq!(
        (report["pulled"].as_u64(), report["pushed"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );
    Ok(())
}

#[tokio::test]
async fn radicale_concurrent_edits_merge_and_conflicts_resolve_identically() -> anyhow::Result<()> {
    concurrent_edits_merge_and_conflicts_resolve_identically(DavServerKind::Radicale).await
}

#[tokio::test]
async fn xandikos_concurrent_edits_merge_and_conflicts_resolve_identically() -> anyhow::Result<()> {
    concurrent_edits_merge_and_conflicts_resolve_identically(DavServerKind::Xandikos).await
}

async fn deletes_propagate_both_ways(kind: DavServerKind) -> anyhow::Result<()> {
    let env = Env::start(kind, |dav| vec![bridge("cal", dav.calendar_url(), 1.0)]).await?;
    let cal = env.cal()?;
    let a = put_new(&cal, "a.ics", &event("a@test", "Alpha", "R")).await?;
    put_new(&cal, "b.ics", &event("b@test", "Beta", "R")).await?;
    env.sync("cal").await?;
    let (a_id, _) = env.record_titled("Alpha").await?;
    let (b_id, _) = env.record_titled("Beta").await?;

    // Provider delete -> tombstone (no other link), not resurrected by the next polls.
    assert!(matches!(
        cal.delete(&a, None).await?,
        driftless_bridges::dav::client::DeleteOutcome::Deleted
    ));
    let report = env.sync("cal").await?;
    assert_eq!(report["deleted"], 1, "{report}");
    let recs = env.records().await?;
    let alpha = &recs.iter().find(|(i, _)| *i == a_id).context("alpha")?.1;
    assert_eq!(alpha["deleted"], true, "{alpha}");
    assert_eq!(alpha["links"]["cal"]["removed"], true, "{alpha}");
    env.sync("cal").await?;
    env.sync("cal").await?;
    assert!(cal.get(&a).await?.is_none(), "resurrected at the provider");
    assert_eq!(env.records().await?.len(), 2);

    // App delete -> DELETE at the provider.
    let mut app = app_open(&env.server, &b_id, "app-d").await?;
    let b_href = app_event(&mut app, &b_id).await?.links["cal"].id.clone();
    app_edit(&mut app, &b_id, |e| e.deleted = true).await?;
    let report = env.sync("cal").await?;
    assert_eq!(report["deleted"], 1, "{report}");
    assert!(
        cal.get(&b_href).await?.is_none(),
        "not deleted at the provider"
    );
    let report = env.sync("cal").await?;
    assert_eq!(
        (report["pulled"].as_u64(), report["deleted"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );
    assert_eq!(env.records().await?.len(), 2, "nothing new imported");
    let status = env.bridge_status("cal").await?;
    assert_eq!(status["linked_records"], 0, "{status}");
    Ok(())
}

#[tokio::test]
async fn radicale_deletes_propagate_both_ways() -> anyhow::Result<()> {
    deletes_propagate_both_ways(DavServerKind::Radicale).await
}

#[tokio::test]
async fn xandikos_deletes_propagate_both_ways() -> anyhow::Result<()> {
    deletes_propagate_both_ways(DavServerKind::Xandikos).await
}

#[tokio::test]
async fn radicale_an_event_in_two_calendars_survives_a_delete_in_one() -> anyhow::Result<()> {
    let dav = DavServer::radicale().await?;
    let second_url = format!("{}/{USER}/second/", dav.base_url());
    let second = driftless_bridges::dav::client::DavClient::new(
        driftless_bridges::dav::client::DavClientConfig::new(
            second_url.clone(),
            driftless_bridges::dav::wire::CollectionKind::Calendar,
        )
        .basic_auth(USER, PASSWORD),
    )?;
    second.create_collection("Second").await?;
    let first_url = dav.calendar_url();
    let server = TestServer::start_with_config(move |c| {
        c.bridges = vec![
            bridge("cal-a", first_url.clone(), 1.0),
            bridge("cal-b", second_url.clone(), 1.0),
        ]
    })
    .await?;
    let env = Env {
        dav,
        server,
        http: reqwest::Client::new(),
    };
    let cal = env.cal()?;
    let href = put_new(&cal, "shared.ics", &event("shared@test", "Shared", "R")).await?;
    env.sync("cal-a").await?;
    let (id, _) = env.record_titled("Shared").await?;
    // The app links it to the second calendar too ("create it there").
    let mut app = app_open(&env.server, &id, "app-2").await?;
    app_edit(&mut app, &id, |e| {
        e.links.insert("cal-b".into(), Link::default());
    })
    .await?;
    let report = env.sync("cal-b").await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let b_href = app_event(&mut app, &id).await?.links["cal-b"].id.clone();
    assert!(second.get(&b_href).await?.is_some());

    cal.delete(&href, None).await?;
    env.sync("cal-a").await?;
    env.sync("cal-b").await?;
    let ev = app_event(&mut app, &id).await?;
    assert!(!ev.deleted, "tombstoned although linked elsewhere");
    assert!(ev.links["cal-a"].removed);
    assert!(!ev.links["cal-b"].removed);
    assert!(
        second.get(&b_href).await?.is_some(),
        "deleted in the other calendar"
    );
    Ok(())
}

#[tokio::test]
async fn radicale_deleting_half_a_calendar_needs_confirmation() -> anyhow::Result<()> {
    let env = Env::start(DavServerKind::Radicale, |dav| {
        vec![bridge("cal", dav.calendar_url(), 0.2)]
    })
    .await?;
    let cal = env.cal()?;
    let mut hrefs = Vec::new();
    for i in 0..6 {
        hrefs.push(
            put_new(
                &cal,
                &format!("e{i}.ics"),
                &event(&format!("e{i}@t"), &format!("E{i}"), "R"),
            )
            .await?,
        );
    }
    env.sync("cal").await?;
    assert_eq!(env.records().await?.len(), 6);
    for href in &hrefs[..3] {
        cal.delete(href, None).await?;
    }
    let report = env.sync("cal").await?;
    assert_eq!(report["state"], "needs_confirmation", "{report}");
    assert_eq!(report["deleted"], 0, "{report}");
    let status = env.bridge_status("cal").await?;
    assert_eq!(status["state"], "needs_confirmation", "{status}");
    // Nothing tombstoned, however often it polls.
    env.sync("cal").await?;
    let live = env
        .records()
        .await?
        .iter()
        .filter(|(_, r)| r["deleted"] == false)
        .count();
    assert_eq!(live, 6);
    let report = env.sync_with("cal", "?confirm_deletes=true").await?;
    assert_eq!(report["deleted"], 3, "{report}");
    let live = env
        .records()
        .await?
        .iter()
        .filter(|(_, r)| r["deleted"] == false)
        .count();
    assert_eq!(live, 3);
    assert_eq!(env.bridge_status("cal").await?["state"], "idle");
    Ok(())
}

async fn invalid_token_resyncs_without_duplicates(kind: DavServerKind) -> anyhow::Result<()> {
    let mut env = Env::start(kind, |dav| vec![bridge("cal", dav.calendar_url(), 1.0)]).await?;
    let cal = env.cal()?;
    let href = put_new(&cal, "keep.ics", &event("keep@test", "Keep", "Room 1")).await?;
    let gone = put_new(&cal, "gone.ics", &event("gone@test", "Gone", "R")).await?;
    env.sync("cal").await?;
    let (id, _) = env.record_titled("Keep").await?;
    // A local edit not yet pushed when the token breaks.
    let mut app = app_open(&env.server, &id, "app-t").await?;
    app_edit(&mut app, &id, |e| e.title = Some("Keep (local)".into())).await?;
    drop(app);
    env.server.stop().await?;
    {
        let storage = driftless_server::storage::Storage::open(env.server.data_dir())?;
        let store = driftless_server::bridge::store::BridgeStore::open(storage)?;
        let bogus = match kind {
            DavServerKind::Radicale => {
                "http://radicale.org/ns/sync/0000000000000000000000000000000000000000000000000000000000000000"
            }
            DavServerKind::Xandikos => "0000000000000000000000000000000000000000",
        };
        store.commit("cal", &[], Some(Some(bogus)), None)?;
    }
    // Meanwhile at the provider: one edit, one delete.
    provider_edit(&cal, &href, "LOCATION:Room 1", "LOCATION:Room 9").await?;
    cal.delete(&gone, None).await?;
    env.server.restart().await?;
    env.server.wait_ready(Duration::from_secs(10)).await?;
    env.sync("cal").await?;
    env.sync("cal").await?;
    let recs = env.records().await?;
    assert_eq!(recs.len(), 2, "duplicates after resync: {recs:?}");
    let keep = &recs.iter().find(|(i, _)| *i == id).context("keep")?.1;
    assert_eq!(keep["title"], "Keep (local)", "{keep}");
    assert_eq!(keep["location"], "Room 9", "{keep}");
    let gone_rec = &recs.iter().find(|(i, _)| *i != id).context("gone")?.1;
    assert_eq!(gone_rec["deleted"], true, "{gone_rec}");
    let body = provider_body(&cal, &href).await?;
    assert!(
        body.contains("SUMMARY:Keep (local)") && body.contains("LOCATION:Room 9"),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn radicale_invalid_token_resyncs_without_duplicates() -> anyhow::Result<()> {
    invalid_token_resyncs_without_duplicates(DavServerKind::Radicale).await
}

#[tokio::test]
async fn xandikos_invalid_token_resyncs_without_duplicates() -> anyhow::Result<()> {
    invalid_token_resyncs_without_duplicates(DavServerKind::Xandikos).await
}

#[tokio::test]
async fn radicale_outbox_survives_a_restart_and_completes_exactly_once() -> anyhow::Result<()> {
    let mut env = Env::start(DavServerKind::Radicale, |dav| {
        vec![bridge("cal", dav.calendar_url(), 1.0)]
    })
    .await?;
    let cal = env.cal()?;
    let href = put_new(&cal, "o.ics", &event("o@test", "Outbox", "R")).await?;
    env.sync("cal").await?;
    let (id, _) = env.record_titled("Outbox").await?;
    let mut app = app_open(&env.server, &id, "app-o").await?;
    app_edit(&mut app, &id, |e| e.title = Some("Outbox edited".into())).await?;
    // A new record to create, too.
    drop(app);
    // Stopped after the document change is durable and before any provider write.
    env.server.stop().await?;
    assert!(
        provider_body(&cal, &href)
            .await?
            .contains("SUMMARY:Outbox\r\n")
    );
    env.server.restart().await?;
    env.server.wait_ready(Duration::from_secs(10)).await?;
    env.sync("cal").await?;
    let body = provider_body(&cal, &href).await?;
    assert!(body.contains("SUMMARY:Outbox edited"), "{body}");
    let report = env.sync("cal").await?;
    assert_eq!(report["pushed"], 0, "pushed twice: {report}");
    assert_eq!(env.bridge_status("cal").await?["outbox_pending"], 0);
    Ok(())
}
