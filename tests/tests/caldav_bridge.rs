//! The CalDAV bridge end to end: a real Radicale (and Xandikos) started by the test, driftless
//! in-process with a `[[bridges]]` entry (or the real binary, for the SIGKILL tests), rounds driven
//! by `POST /v1/bridges/{id}/sync`, provider edits through `DavClient`, app edits through the Rust
//! protocol client and a JS automerge-repo client, and faults injected by `dav_proxy`.

use std::time::Duration;

use anyhow::{Context, bail};
use automerge::AutoCommit;
use driftless_bridges::dav::client::{DavClient, DavClientConfig, DeleteOutcome};
use driftless_bridges::dav::wire::CollectionKind;
use driftless_crdt_model::{CalendarEvent, Link};
use driftless_server::config::{BridgeConfig, BridgeKind};
use driftless_tests::dav_bridge::{
    Api, Env, app_add, app_edit_event, app_event, app_open, bridge_config, bridge_toml, js_record,
    provider_body, provider_edit, provider_hrefs, put_new,
};
use driftless_tests::dav_proxy::{DavProxy, Match};
use driftless_tests::process::{free_port, spawn_server};
use driftless_tests::radicale::{DavServer, DavServerKind, PASSWORD, USER};
use serde_json::{Value, json};

const EVENT: &str = "calendar_event";

fn event(uid: &str, summary: &str, location: &str) -> String {
    format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//driftless//tests//EN\r\nBEGIN:VEVENT\r\n\
         UID:{uid}\r\nDTSTAMP:20260101T000000Z\r\nDTSTART;TZID=Europe/Berlin:20261119T100000\r\n\
         DTEND;TZID=Europe/Berlin:20261119T110000\r\nSUMMARY:{summary}\r\nLOCATION:{location}\r\n\
         X-CUSTOM;X-PARAM=keep:custom value\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
}

fn bridge(id: &str, url: String, max_delete_fraction: f64) -> BridgeConfig {
    bridge_config(id, BridgeKind::CalDav, url, max_delete_fraction)
}

/// A new app event linked to `bridge` with an empty id ("create it there").
fn new_event(title: &str, bridge: &str) -> anyhow::Result<AutoCommit> {
    let mut doc = AutoCommit::new();
    let new = CalendarEvent {
        title: Some(title.into()),
        start: Some("2026-12-01".into()),
        end: Some("2026-12-02".into()),
        links: [(bridge.to_owned(), Link::default())].into_iter().collect(),
        ..CalendarEvent::default()
    };
    driftless_crdt_model::create_event(&mut doc, &new)?;
    Ok(doc)
}

async fn record_titled(
    api: &Api,
    title: &str,
) -> anyhow::Result<(driftless_client_protocol::DocumentId, Value)> {
    api.record_where(EVENT, &format!("titled {title:?}"), |r| r["title"] == title)
        .await
}

/// A second calendar next to the server's default one, made with MKCALENDAR.
async fn second_calendar(dav: &DavServer, name: &str) -> anyhow::Result<(String, DavClient)> {
    let first = dav.calendar_url();
    let parent = first
        .trim_end_matches('/')
        .rsplit_once('/')
        .map(|(p, _)| p)
        .context("calendar url has no parent")?;
    let url = format!("{parent}/{name}/");
    let client = DavClient::new(
        DavClientConfig::new(url.clone(), CollectionKind::Calendar).basic_auth(USER, PASSWORD),
    )?;
    client
        .create_collection(name)
        .await
        .with_context(|| format!("MKCALENDAR {url} on {:?}", dav.kind()))?;
    Ok((url, client))
}

// -------------------------------------------------------------------------------------------------

async fn provider_and_app_edits_flow_both_ways(kind: DavServerKind) -> anyhow::Result<()> {
    let env = Env::start_proxied(kind, |dav, proxy| {
        vec![bridge("cal", proxy.proxied(&dav.calendar_url()), 1.0)]
    })
    .await?;
    let (api, proxy) = (&env.api, env.proxy()?);
    let cal = env.dav.calendar()?;
    let href = put_new(
        &cal,
        "standup.ics",
        &event("standup@test", "Standup", "Room 1"),
    )
    .await?;

    // Provider-created record -> new document (the bridge's own first round, which starts with
    // the server, may have pulled it already).
    api.sync("cal").await?;
    let (id, rec) = record_titled(api, "Standup").await?;
    assert_eq!(rec["location"], "Room 1");
    assert_eq!(rec["ical_uid"], "standup@test");
    assert_eq!(rec["links"]["cal"]["id"], href);
    assert_eq!(rec["deleted"], false);

    // It reaches a JS automerge-repo client.
    let js = js_record(&env.server.url(), &id, &json!({})).await?;
    assert_eq!(js["title"], "Standup", "{js}");
    assert_eq!(js["links"]["cal"]["id"], href, "{js}");

    // Quiet rounds write nothing to the provider (only the sync REPORT is sent).
    let status = api.bridge_status("cal").await?;
    assert_eq!(status["state"], "idle", "{status}");
    assert_eq!(status["linked_records"], 1, "{status}");
    let before = provider_body(&cal, &href).await?;
    let writes = proxy.writes();
    api.quiet_round("cal").await?;
    assert_eq!(provider_body(&cal, &href).await?, before);
    assert_eq!(proxy.writes(), writes, "{:?}", proxy.requests());

    // An app edit reaches the provider, keeping what driftless does not model.
    let mut app = app_open(&env.server.url(), &id, "app-1").await?;
    app_edit_event(&mut app, &id, |e| e.title = Some("Daily standup".into())).await?;
    let report = api.sync("cal").await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let body = provider_body(&cal, &href).await?;
    assert!(body.contains("SUMMARY:Daily standup"), "{body}");
    assert!(
        body.contains("X-CUSTOM;X-PARAM=keep:custom value"),
        "{body}"
    );
    assert!(body.contains("LOCATION:Room 1"), "{body}");
    // ...and is not re-imported: the next round is quiet.
    api.quiet_round("cal").await?;

    // A provider edit reaches the app.
    provider_edit(&cal, &href, "LOCATION:Room 1", "LOCATION:Room 2").await?;
    let report = api.sync("cal").await?;
    assert_eq!(report["pulled"], 1, "{report}");
    let seen = app_event(&mut app, &id).await?;
    assert_eq!(seen.location.as_deref(), Some("Room 2"));
    assert_eq!(seen.title.as_deref(), Some("Daily standup"));
    api.quiet_round("cal").await?;

    // An app-created record with an empty link is created at the provider, once.
    let new_id = app_add(&mut app, new_event("Offsite", "cal")?).await?;
    let report = api.sync("cal").await?;
    assert_eq!(report["pushed"].as_u64(), Some(1), "{report}");
    let created = app_event(&mut app, &new_id).await?;
    let new_href = created.links["cal"].id.clone();
    assert!(new_href.ends_with(".ics"), "{new_href}");
    let body = provider_body(&cal, &new_href).await?;
    assert!(body.contains("SUMMARY:Offsite"), "{body}");
    let writes = proxy.writes();
    api.quiet_round("cal").await?;
    assert_eq!(proxy.writes(), writes, "{:?}", proxy.requests());
    assert_eq!(api.records(EVENT).await?.len(), 2, "no duplicates");
    assert_eq!(provider_hrefs(&cal).await?.len(), 2, "created once");
    assert_eq!(proxy.count("PUT", &new_href), 1, "{:?}", proxy.requests());

    // Never a `D:limit` (Xandikos truncates without saying so and loses the rest).
    let reports: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|s| s.method == "REPORT")
        .collect();
    assert!(reports.iter().any(|s| s.body.contains("sync-collection")));
    assert!(
        reports.iter().all(|s| !s.body.contains("nresults")),
        "{reports:?}"
    );
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
    let api = &env.api;
    let cal = env.dav.calendar()?;
    let href = put_new(
        &cal,
        "review.ics",
        &event("review@test", "Review", "Room 1"),
    )
    .await?;
    api.sync("cal").await?;
    let (id, _) = record_titled(api, "Review").await?;
    let mut app = app_open(&env.server.url(), &id, "app-c").await?;

    // Different fields: app edits the title, the provider the location, concurrently.
    app_edit_event(&mut app, &id, |e| e.title = Some("Design review".into())).await?;
    provider_edit(&cal, &href, "LOCATION:Room 1", "LOCATION:Room 7").await?;
    api.sync("cal").await?;
    let seen = app_event(&mut app, &id).await?;
    assert_eq!(seen.title.as_deref(), Some("Design review"));
    assert_eq!(seen.location.as_deref(), Some("Room 7"));
    let body = provider_body(&cal, &href).await?;
    assert!(
        body.contains("SUMMARY:Design review") && body.contains("LOCATION:Room 7"),
        "{body}"
    );

    // The same field on both sides: one visible conflict, one winner everywhere.
    app_edit_event(&mut app, &id, |e| e.location = Some("App room".into())).await?;
    provider_edit(&cal, &href, "LOCATION:Room 7", "LOCATION:Provider room").await?;
    let report = api.sync("cal").await?;
    assert!(report["conflicts"].as_u64() >= Some(1), "{report}");
    let conflicts = api.conflicts(&id).await?;
    let loc = conflicts
        .iter()
        .find(|c| c["field"] == "location")
        .with_context(|| format!("no location conflict: {conflicts:?}"))?;
    let mut sources: Vec<&str> = loc["values"]
        .as_array()
        .context("values")?
        .iter()
        .filter_map(|v| v["source"].as_str())
        .collect();
    sources.sort_unstable();
    assert_eq!(sources, vec!["app", "cal"], "{conflicts:?}");
    let winner = loc["winner"].as_str().context("winner")?.to_owned();
    // Server, app and provider agree (the provider gets the winner on the next push).
    api.sync("cal").await?;
    assert_eq!(api.record(EVENT, &id).await?["location"], winner.as_str());
    assert_eq!(
        app_event(&mut app, &id).await?.location.as_deref(),
        Some(winner.as_str())
    );
    let body = provider_body(&cal, &href).await?;
    assert!(
        body.contains(&format!("LOCATION:{winner}")),
        "{winner}: {body}"
    );
    api.quiet_round("cal").await?;
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
    let api = &env.api;
    let cal = env.dav.calendar()?;
    let a = put_new(&cal, "a.ics", &event("a@test", "Alpha", "R")).await?;
    put_new(&cal, "b.ics", &event("b@test", "Beta", "R")).await?;
    api.sync("cal").await?;
    let (a_id, _) = record_titled(api, "Alpha").await?;
    let (b_id, _) = record_titled(api, "Beta").await?;

    // Provider delete -> tombstone (no other link), not resurrected by the next polls.
    assert_eq!(cal.delete(&a, None).await?, DeleteOutcome::Deleted);
    let report = api.sync("cal").await?;
    assert_eq!(report["deleted"], 1, "{report}");
    let alpha = api.record(EVENT, &a_id).await?;
    assert_eq!(alpha["deleted"], true, "{alpha}");
    assert_eq!(alpha["links"]["cal"]["removed"], true, "{alpha}");
    api.quiet_round("cal").await?;
    api.quiet_round("cal").await?;
    assert!(cal.get(&a).await?.is_none(), "resurrected at the provider");
    assert_eq!(api.records(EVENT).await?.len(), 2);

    // App delete -> DELETE at the provider.
    let mut app = app_open(&env.server.url(), &b_id, "app-d").await?;
    let b_href = app_event(&mut app, &b_id).await?.links["cal"].id.clone();
    app_edit_event(&mut app, &b_id, |e| e.deleted = true).await?;
    let report = api.sync("cal").await?;
    assert_eq!(report["deleted"], 1, "{report}");
    assert!(
        cal.get(&b_href).await?.is_none(),
        "not deleted at the provider"
    );
    api.quiet_round("cal").await?;
    assert_eq!(api.records(EVENT).await?.len(), 2, "nothing new imported");
    assert!(
        provider_hrefs(&cal).await?.is_empty(),
        "recreated at the provider"
    );
    let status = api.bridge_status("cal").await?;
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

async fn an_event_in_two_calendars_survives_a_delete_in_one(
    kind: DavServerKind,
) -> anyhow::Result<()> {
    let dav = DavServer::start(kind).await?;
    let (second_url, second) = second_calendar(&dav, "second").await?;
    let bridges = vec![
        bridge("cal-a", dav.calendar_url(), 1.0),
        bridge("cal-b", second_url, 1.0),
    ];
    let env = Env::with(dav, None, bridges).await?;
    let api = &env.api;
    let cal = env.dav.calendar()?;
    let href = put_new(&cal, "shared.ics", &event("shared@test", "Shared", "R")).await?;
    api.sync("cal-a").await?;
    let (id, _) = record_titled(api, "Shared").await?;
    // The app links it to the second calendar too ("create it there").
    let mut app = app_open(&env.server.url(), &id, "app-2").await?;
    app_edit_event(&mut app, &id, |e| {
        e.links.insert("cal-b".into(), Link::default());
    })
    .await?;
    let report = api.sync("cal-b").await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let b_href = app_event(&mut app, &id).await?.links["cal-b"].id.clone();
    assert!(second.get(&b_href).await?.is_some());

    cal.delete(&href, None).await?;
    api.sync("cal-a").await?;
    api.sync("cal-b").await?;
    let ev = app_event(&mut app, &id).await?;
    assert!(!ev.deleted, "tombstoned although linked elsewhere");
    assert!(ev.links["cal-a"].removed);
    assert!(!ev.links["cal-b"].removed);
    assert!(
        second.get(&b_href).await?.is_some(),
        "deleted in the other calendar"
    );
    // Nothing comes back or goes away on later polls.
    api.quiet_round("cal-a").await?;
    api.quiet_round("cal-b").await?;
    assert!(
        cal.get(&href).await?.is_none(),
        "resurrected in the first calendar"
    );
    assert_eq!(provider_hrefs(&second).await?, vec![b_href]);
    assert_eq!(api.records(EVENT).await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn radicale_an_event_in_two_calendars_survives_a_delete_in_one() -> anyhow::Result<()> {
    an_event_in_two_calendars_survives_a_delete_in_one(DavServerKind::Radicale).await
}

#[tokio::test]
async fn xandikos_an_event_in_two_calendars_survives_a_delete_in_one() -> anyhow::Result<()> {
    an_event_in_two_calendars_survives_a_delete_in_one(DavServerKind::Xandikos).await
}

async fn deleting_half_a_calendar_needs_confirmation(kind: DavServerKind) -> anyhow::Result<()> {
    let env = Env::start(kind, |dav| vec![bridge("cal", dav.calendar_url(), 0.2)]).await?;
    let api = &env.api;
    let cal = env.dav.calendar()?;
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
    api.sync("cal").await?;
    assert_eq!(api.records(EVENT).await?.len(), 6);
    for href in &hrefs[..3] {
        cal.delete(href, None).await?;
    }
    let live = || async {
        anyhow::Ok(
            api.records(EVENT)
                .await?
                .iter()
                .filter(|(_, r)| r["deleted"] == false)
                .count(),
        )
    };
    let report = api.sync("cal").await?;
    assert_eq!(report["state"], "needs_confirmation", "{report}");
    assert_eq!(report["deleted"], 0, "{report}");
    let status = api.bridge_status("cal").await?;
    assert_eq!(status["state"], "needs_confirmation", "{status}");
    // Nothing tombstoned, however often it polls.
    let report = api.sync("cal").await?;
    assert_eq!(report["state"], "needs_confirmation", "{report}");
    assert_eq!(live().await?, 6);
    let report = api.sync_with("cal", "?confirm_deletes=true").await?;
    assert_eq!(report["deleted"], 3, "{report}");
    assert_eq!(live().await?, 3);
    assert_eq!(api.bridge_status("cal").await?["state"], "idle");
    api.quiet_round("cal").await?;
    Ok(())
}

#[tokio::test]
async fn radicale_deleting_half_a_calendar_needs_confirmation() -> anyhow::Result<()> {
    deleting_half_a_calendar_needs_confirmation(DavServerKind::Radicale).await
}

#[tokio::test]
async fn xandikos_deleting_half_a_calendar_needs_confirmation() -> anyhow::Result<()> {
    deleting_half_a_calendar_needs_confirmation(DavServerKind::Xandikos).await
}

async fn invalid_token_resyncs_without_duplicates(kind: DavServerKind) -> anyhow::Result<()> {
    let mut env = Env::start(kind, |dav| vec![bridge("cal", dav.calendar_url(), 1.0)]).await?;
    let cal = env.dav.calendar()?;
    let href = put_new(&cal, "keep.ics", &event("keep@test", "Keep", "Room 1")).await?;
    let gone = put_new(&cal, "gone.ics", &event("gone@test", "Gone", "R")).await?;
    env.api.sync("cal").await?;
    let (id, _) = record_titled(&env.api, "Keep").await?;
    // A local edit not yet pushed when the token breaks.
    let mut app = app_open(&env.server.url(), &id, "app-t").await?;
    app_edit_event(&mut app, &id, |e| e.title = Some("Keep (local)".into())).await?;
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
    env.restart().await?;
    env.api.sync("cal").await?;
    env.api.sync("cal").await?;
    let recs = env.api.records(EVENT).await?;
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

async fn outbox_survives_a_restart_and_completes_exactly_once(
    kind: DavServerKind,
) -> anyhow::Result<()> {
    let mut env = Env::start(kind, |dav| vec![bridge("cal", dav.calendar_url(), 1.0)]).await?;
    let cal = env.dav.calendar()?;
    let href = put_new(&cal, "o.ics", &event("o@test", "Outbox", "R")).await?;
    env.api.sync("cal").await?;
    let (id, _) = record_titled(&env.api, "Outbox").await?;
    let mut app = app_open(&env.server.url(), &id, "app-o").await?;
    app_edit_event(&mut app, &id, |e| e.title = Some("Outbox edited".into())).await?;
    let new_id = app_add(&mut app, new_event("Outbox created", "cal")?).await?;
    drop(app);
    // Stopped after the document changes are durable and before any provider write (rounds
    // run only at startup and when the test asks).
    env.server.stop().await?;
    assert!(
        provider_body(&cal, &href)
            .await?
            .contains("SUMMARY:Outbox\r\n")
    );
    assert_eq!(provider_hrefs(&cal).await?.len(), 1);
    env.restart().await?;
    env.api.sync("cal").await?;
    let body = provider_body(&cal, &href).await?;
    assert!(body.contains("SUMMARY:Outbox edited"), "{body}");
    let created = env.api.record(EVENT, &new_id).await?;
    let new_href = created["links"]["cal"]["id"].as_str().context("link")?;
    assert!(
        provider_body(&cal, new_href)
            .await?
            .contains("SUMMARY:Outbox created")
    );
    env.api.quiet_round("cal").await?;
    assert_eq!(
        provider_hrefs(&cal).await?.len(),
        2,
        "created more than once"
    );
    assert_eq!(env.api.records(EVENT).await?.len(), 2, "duplicated");
    assert_eq!(env.api.bridge_status("cal").await?["outbox_pending"], 0);
    Ok(())
}

#[tokio::test]
async fn radicale_outbox_survives_a_restart_and_completes_exactly_once() -> anyhow::Result<()> {
    outbox_survives_a_restart_and_completes_exactly_once(DavServerKind::Radicale).await
}

#[tokio::test]
async fn xandikos_outbox_survives_a_restart_and_completes_exactly_once() -> anyhow::Result<()> {
    outbox_survives_a_restart_and_completes_exactly_once(DavServerKind::Xandikos).await
}

// -------------------------------------------------------------------------------------------------
// Faults injected between driftless and Radicale

#[tokio::test]
async fn radicale_a_412_race_ends_with_both_edits_applied() -> anyhow::Result<()> {
    let env = Env::start_proxied(DavServerKind::Radicale, |dav, proxy| {
        vec![bridge("cal", proxy.proxied(&dav.calendar_url()), 1.0)]
    })
    .await?;
    let (api, proxy) = (&env.api, env.proxy()?);
    let direct = env.dav.calendar()?;
    let href = put_new(&direct, "race.ics", &event("race@test", "Race", "Room 1")).await?;
    api.sync("cal").await?;
    let (id, _) = record_titled(api, "Race").await?;
    let mut app = app_open(&env.server.url(), &id, "app-r").await?;
    app_edit_event(&mut app, &id, |e| e.title = Some("Race (app)".into())).await?;

    // Between driftless's read and its write, the event changes at Radicale (another field).
    let (client, target) = (direct.clone(), href.clone());
    proxy.before(Match::new("PUT", &href), 1, move || {
        let (client, target) = (client.clone(), target.clone());
        Box::pin(async move {
            provider_edit(&client, &target, "LOCATION:Room 1", "LOCATION:Room 5").await
        })
    });
    let report = api.sync("cal").await?;
    proxy.check_hooks()?;
    let puts: Vec<Option<u16>> = proxy
        .requests()
        .iter()
        .filter(|s| s.method == "PUT" && s.path == href)
        .map(|s| s.status)
        .collect();
    assert_eq!(puts.len(), 2, "one 412, one retry: {puts:?}");
    assert_eq!(puts[0], Some(412), "the race did not happen: {puts:?}");
    assert!(puts[1].is_some_and(|s| (200..300).contains(&s)), "{puts:?}");
    assert_eq!(report["pushed"], 1, "{report}");

    // Both edits, at Radicale and in the document (and the app).
    let body = provider_body(&direct, &href).await?;
    assert!(
        body.contains("SUMMARY:Race (app)") && body.contains("LOCATION:Room 5"),
        "{body}"
    );
    assert!(
        body.contains("X-CUSTOM;X-PARAM=keep:custom value"),
        "{body}"
    );
    let rec = api.record(EVENT, &id).await?;
    assert_eq!(
        (&rec["title"], &rec["location"]),
        (&json!("Race (app)"), &json!("Room 5")),
        "{rec}"
    );
    let seen = app_event(&mut app, &id).await?;
    assert_eq!(seen.location.as_deref(), Some("Room 5"));
    assert!(
        api.conflicts(&id).await?.is_empty(),
        "different fields do not conflict"
    );

    // A quiet round afterwards writes nothing.
    let writes = proxy.writes();
    api.quiet_round("cal").await?;
    assert_eq!(proxy.writes(), writes, "{:?}", proxy.requests());
    Ok(())
}

/// How the provider write in flight is lost when the server is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LostWrite {
    /// The PUT never reaches Radicale.
    NeverForwarded,
    /// Radicale applies the PUT, but its answer never reaches driftless.
    AnswerDropped,
}

/// Waits for the PUT the proxy holds, loses it as `lost` says, and SIGKILLs the server.
async fn kill_at_the_held_put(
    proxy: &DavProxy,
    server: &mut tokio::process::Child,
    lost: LostWrite,
) -> anyhow::Result<()> {
    let held = proxy.next_held(Duration::from_secs(30)).await?;
    match lost {
        LostWrite::NeverForwarded => {
            server.kill().await?;
            held.drop_unforwarded();
        }
        LostWrite::AnswerDropped => {
            let what = format!("{} {}", held.method, held.path);
            let status = held.forward_and_drop().await?;
            if !(200..300).contains(&status) {
                bail!("{what}: Radicale answered {status}");
            }
            server.kill().await?;
        }
    }
    Ok(())
}

/// The real binary, killed with SIGKILL while a provider write is in flight: first an app edit's
/// PUT, then (after a restart) an app create's PUT. After the last restart the outbox completes
/// and Radicale holds each write exactly once.
async fn sigkill_between_document_change_and_provider_write(lost: LostWrite) -> anyhow::Result<()> {
    let dav = DavServer::radicale().await?;
    let proxy = DavProxy::start(&dav.base_url()).await?;
    let cal = dav.calendar()?;
    let collection = cal.collection_url().path().to_owned();
    let with_description = event("kill@test", "Kill", "Room 1").replace(
        "LOCATION:Room 1\r\n",
        "LOCATION:Room 1\r\nDESCRIPTION:Agenda\r\n",
    );
    let href = put_new(&cal, "kill.ics", &with_description).await?;
    let data = tempfile::tempdir()?;
    let config_dir = tempfile::tempdir()?;
    let config = config_dir.path().join("config.toml");
    std::fs::write(
        &config,
        bridge_toml(&bridge("cal", proxy.proxied(&dav.calendar_url()), 1.0)),
    )?;
    let port = free_port()?;
    let start = || spawn_server(port, data.path(), Some(&config), "warn");
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    let ws = format!("ws://127.0.0.1:{port}");

    let mut server = start().await?;
    api.sync("cal").await?;
    let (id, _) = record_titled(&api, "Kill").await?;
    let mut app = app_open(&ws, &id, "app-k").await?;
    app_edit_event(&mut app, &id, |e| {
        e.title = Some("Kill (app)".into());
        e.description = Some("Agenda: restart".into()); // a text field: spliced
    })
    .await?;
    let new_id = app_add(&mut app, new_event("Created before the kill", "cal")?).await?;
    drop(app);
    let new_href = format!("{collection}{new_id}.ics");

    // 1. The round's first write, the edit's PUT, is lost with the server.
    proxy.hold(Match::new("PUT", &href), 1);
    let round = tokio::spawn({
        let api = api.clone();
        async move { api.sync("cal").await }
    });
    kill_at_the_held_put(&proxy, &mut server, lost).await?;
    assert!(
        round.await?.is_err(),
        "the round finished although the server was killed"
    );
    let body = provider_body(&cal, &href).await?;
    let expected = match lost {
        LostWrite::NeverForwarded => "SUMMARY:Kill\r\n",
        LostWrite::AnswerDropped => "SUMMARY:Kill (app)\r\n",
    };
    assert!(body.contains(expected), "{body}");

    // 2. Restarted, the startup round completes the edit; the create's PUT is lost.
    proxy.hold(Match::new("PUT", &new_href), 1);
    server = start().await?;
    kill_at_the_held_put(&proxy, &mut server, lost).await?;

    // 3. Restarted again: the outbox completes, exactly once.
    server = start().await?;
    api.sync("cal").await?;
    let body = provider_body(&cal, &href).await?;
    assert!(body.contains("SUMMARY:Kill (app)\r\n"), "{body}");
    assert_eq!(body.matches("SUMMARY:").count(), 1, "{body}");
    assert!(body.contains("DESCRIPTION:Agenda: restart\r\n"), "{body}");
    assert_eq!(body.matches("DESCRIPTION:").count(), 1, "{body}");
    assert!(body.contains("LOCATION:Room 1"), "{body}");
    assert!(
        body.contains("X-CUSTOM;X-PARAM=keep:custom value"),
        "{body}"
    );
    let mut expected_hrefs = vec![href.clone(), new_href.clone()];
    expected_hrefs.sort();
    assert_eq!(
        provider_hrefs(&cal).await?,
        expected_hrefs,
        "Radicale's listing"
    );
    let created = provider_body(&cal, &new_href).await?;
    assert!(
        created.contains("SUMMARY:Created before the kill"),
        "{created}"
    );
    let create_puts: Vec<Option<u16>> = proxy
        .requests()
        .iter()
        .filter(|s| s.method == "PUT" && s.path == new_href)
        .map(|s| s.status)
        .collect();
    assert_eq!(
        create_puts
            .iter()
            .filter(|s| s.is_some_and(|s| (200..300).contains(&s)))
            .count(),
        1,
        "the create reached Radicale exactly once: {create_puts:?}"
    );

    // The documents: the edit kept, the link recorded, nothing duplicated, no false conflict.
    let recs = api.records(EVENT).await?;
    assert_eq!(recs.len(), 2, "duplicated: {recs:?}");
    let rec = api.record(EVENT, &id).await?;
    assert_eq!(
        (&rec["title"], &rec["description"]),
        (&json!("Kill (app)"), &json!("Agenda: restart")),
        "{rec}"
    );
    let created = api.record(EVENT, &new_id).await?;
    assert_eq!(created["links"]["cal"]["id"], new_href, "{created}");
    assert_eq!(created["title"], "Created before the kill", "{created}");
    for doc in [&id, &new_id] {
        let conflicts = api.conflicts(doc).await?;
        assert!(conflicts.is_empty(), "{doc}: {conflicts:?}");
    }
    let writes = proxy.writes();
    api.quiet_round("cal").await?;
    assert_eq!(proxy.writes(), writes, "{:?}", proxy.requests());
    assert_eq!(api.bridge_status("cal").await?["outbox_pending"], 0);
    server.kill().await?;
    Ok(())
}

#[tokio::test]
async fn radicale_sigkill_before_the_provider_write_loses_nothing() -> anyhow::Result<()> {
    sigkill_between_document_change_and_provider_write(LostWrite::NeverForwarded).await
}

#[tokio::test]
async fn radicale_sigkill_after_an_unanswered_provider_write_writes_once() -> anyhow::Result<()> {
    sigkill_between_document_change_and_provider_write(LostWrite::AnswerDropped).await
}
