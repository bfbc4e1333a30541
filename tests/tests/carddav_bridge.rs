//! The CardDAV bridge end to end against a real Radicale started by the test: contacts created in
//! Radicale become `contact` documents that reach a JS automerge-repo client; app edits (JS and
//! Rust clients) reach Radicale and Radicale's edits reach the apps; concurrent edits merge or
//! conflict visibly and identically everywhere; deletes propagate both ways; an app-created
//! contact is created exactly once. Requests are counted by `dav_proxy` between driftless and
//! Radicale.

use anyhow::Context;
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::{Contact, Link, Name};
use driftless_server::config::{BridgeConfig, BridgeKind};
use driftless_tests::dav_bridge::{
    Api, Env, app_add, app_contact, app_edit_contact, app_open, bridge_config, js_record,
    provider_body, provider_edit, provider_hrefs, put_new,
};
use driftless_tests::dav_proxy::Match;
use driftless_tests::radicale::DavServerKind;
use driftless_tests::rust_client::RustClient;
use serde_json::{Value, json};

const CONTACT: &str = "contact";

fn vcard(uid: &str, given: &str, family: &str, org: &str, email: &str) -> String {
    format!(
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{given} {family}\r\nN:{family};{given};;;\r\n\
         ORG:{org}\r\nTITLE:Engineer\r\nEMAIL;TYPE=INTERNET,WORK:{email}\r\n\
         TEL;TYPE=CELL:+49 30 1234567\r\nX-CUSTOM;X-PARAM=keep:custom value\r\nEND:VCARD\r\n"
    )
}

fn bridge(url: String) -> BridgeConfig {
    bridge_config("book", BridgeKind::CardDav, url, 1.0)
}

async fn contact_named(api: &Api, full: &str) -> anyhow::Result<(DocumentId, Value)> {
    api.record_where(CONTACT, &format!("named {full:?}"), |r| {
        r["name"]["full"] == full
    })
    .await
}

/// The values of a contact record's `emails` (or `phones`) slots.
fn slot_values(record: &Value, field: &str) -> Vec<String> {
    let mut values: Vec<String> = record[field]
        .as_object()
        .map(|slots| {
            slots
                .values()
                .filter_map(|s| s["value"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    values.sort();
    values
}

#[tokio::test]
async fn radicale_contacts_flow_both_ways_and_reach_a_js_client() -> anyhow::Result<()> {
    let env = Env::start_proxied(DavServerKind::Radicale, |dav, proxy| {
        vec![bridge(proxy.proxied(&dav.addressbook_url()))]
    })
    .await?;
    let (api, proxy) = (&env.api, env.proxy()?);
    let book = env.dav.addressbook()?;
    let ws = env.server.url();
    let href = put_new(
        &book,
        "ada.vcf",
        &vcard(
            "ada@test",
            "Ada",
            "Lovelace",
            "Babbage & Co",
            "ada@example.com",
        ),
    )
    .await?;

    // Created in Radicale -> a contact document.
    api.sync("book").await?;
    let (id, rec) = contact_named(api, "Ada Lovelace").await?;
    assert_eq!(rec["type"], CONTACT, "{rec}");
    assert_eq!(
        (&rec["name"]["given"], &rec["name"]["family"]),
        (&json!("Ada"), &json!("Lovelace")),
        "{rec}"
    );
    assert_eq!(rec["organization"], "Babbage & Co", "{rec}");
    assert_eq!(rec["job_title"], "Engineer", "{rec}");
    assert_eq!(slot_values(&rec, "emails"), ["ada@example.com"], "{rec}");
    assert_eq!(slot_values(&rec, "phones").len(), 1, "{rec}");
    assert_eq!(rec["links"]["book"]["id"], href, "{rec}");
    assert_eq!(rec["deleted"], false, "{rec}");

    // ...that reaches a JS automerge-repo client.
    let js = js_record(&ws, &id, &json!({})).await?;
    assert_eq!(js["name"]["full"], "Ada Lovelace", "{js}");
    assert_eq!(js["links"]["book"]["id"], href, "{js}");
    api.quiet_round("book").await?;

    // A JS app edit (an atomic field assigned whole) reaches Radicale, keeping the rest.
    js_record(&ws, &id, &json!({"organization": "Analytical Engines"})).await?;
    let report = api.sync("book").await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let body = provider_body(&book, &href).await?;
    assert!(body.contains("ORG:Analytical Engines\r\n"), "{body}");
    for kept in [
        "X-CUSTOM;X-PARAM=keep:custom value",
        "TEL;TYPE=CELL:+49 30 1234567",
        "EMAIL;TYPE=INTERNET,WORK:ada@example.com",
        "TITLE:Engineer",
    ] {
        assert!(body.contains(kept), "{kept} lost: {body}");
    }
    api.quiet_round("book").await?;

    // A Rust app edits the email inside its slot.
    let mut app = app_open(&ws, &id, "app-1").await?;
    app_edit_contact(&mut app, &id, |c| {
        for slot in c.emails.values_mut() {
            slot.value = "ada@engines.example".into();
        }
    })
    .await?;
    let report = api.sync("book").await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let body = provider_body(&book, &href).await?;
    assert!(
        body.contains("EMAIL;TYPE=INTERNET,WORK:ada@engines.example"),
        "{body}"
    );
    api.quiet_round("book").await?;

    // A Radicale edit reaches both apps.
    provider_edit(&book, &href, "TITLE:Engineer", "TITLE:Countess").await?;
    let report = api.sync("book").await?;
    assert_eq!(report["pulled"], 1, "{report}");
    let seen = app_contact(&mut app, &id).await?;
    assert_eq!(seen.job_title.as_deref(), Some("Countess"));
    assert_eq!(seen.organization.as_deref(), Some("Analytical Engines"));
    let js = js_record(&ws, &id, &json!({})).await?;
    assert_eq!(js["job_title"], "Countess", "{js}");
    api.quiet_round("book").await?;

    // An app-created contact, in the contract's JSON shape with an empty link, written by the JS
    // client: created at Radicale exactly once.
    let created = json!({
        "type": "contact",
        "schema": 1,
        "deleted": false,
        "links": {"book": {"id": "", "removed": false}},
        "name": {"full": "Grace Hopper", "given": "Grace", "family": "Hopper"},
        "organization": "US Navy",
        "emails": {"s1": {"value": "grace@navy.example", "label": "work", "primary": true}},
        "phones": {},
    });
    let out = driftless_tests::run_interop_helper(
        &[&ws, "create-json", &created.to_string()],
        std::time::Duration::from_secs(60),
    )
    .await?;
    let url = out.trim().lines().last().unwrap_or_default();
    let new_id: DocumentId = url
        .trim_start_matches("automerge:")
        .parse()
        .with_context(|| format!("create-json printed {out:?}"))?;
    let report = api.sync("book").await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let rec = api.record(CONTACT, &new_id).await?;
    let new_href = rec["links"]["book"]["id"]
        .as_str()
        .context("link id")?
        .to_owned();
    assert!(new_href.ends_with(".vcf"), "{rec}");
    let body = provider_body(&book, &new_href).await?;
    assert!(body.contains("FN:Grace Hopper"), "{body}");
    assert!(body.contains("grace@navy.example"), "{body}");
    assert!(body.contains("ORG:US Navy"), "{body}");
    api.quiet_round("book").await?;
    api.quiet_round("book").await?;
    assert_eq!(proxy.count("PUT", &new_href), 1, "{:?}", proxy.requests());
    assert_eq!(provider_hrefs(&book).await?.len(), 2, "created once");
    assert_eq!(api.records(CONTACT).await?.len(), 2, "not re-imported");
    let js = js_record(&ws, &new_id, &json!({})).await?;
    assert_eq!(js["links"]["book"]["id"], new_href, "{js}");
    Ok(())
}

#[tokio::test]
async fn radicale_concurrent_contact_edits_merge_and_conflicts_resolve_identically()
-> anyhow::Result<()> {
    let env = Env::start(DavServerKind::Radicale, |dav| {
        vec![bridge(dav.addressbook_url())]
    })
    .await?;
    let api = &env.api;
    let book = env.dav.addressbook()?;
    let ws = env.server.url();
    let href = put_new(
        &book,
        "alan.vcf",
        &vcard("alan@test", "Alan", "Turing", "NPL", "alan@example.com"),
    )
    .await?;
    api.sync("book").await?;
    let (id, _) = contact_named(api, "Alan Turing").await?;
    let mut app = app_open(&ws, &id, "app-c").await?;

    // Different fields, concurrently: the app the job title, Radicale the organization.
    app_edit_contact(&mut app, &id, |c| {
        c.job_title = Some("Mathematician".into())
    })
    .await?;
    provider_edit(&book, &href, "ORG:NPL", "ORG:Bletchley Park").await?;
    api.sync("book").await?;
    let seen = app_contact(&mut app, &id).await?;
    assert_eq!(seen.job_title.as_deref(), Some("Mathematician"));
    assert_eq!(seen.organization.as_deref(), Some("Bletchley Park"));
    let body = provider_body(&book, &href).await?;
    assert!(
        body.contains("TITLE:Mathematician") && body.contains("ORG:Bletchley Park"),
        "{body}"
    );
    assert!(api.conflicts(&id).await?.is_empty());

    // The same field on both sides: one listed conflict, one winner on every replica.
    app_edit_contact(&mut app, &id, |c| c.organization = Some("App Org".into())).await?;
    provider_edit(&book, &href, "ORG:Bletchley Park", "ORG:Provider Org").await?;
    let report = api.sync("book").await?;
    assert!(report["conflicts"].as_u64() >= Some(1), "{report}");
    let conflicts = api.conflicts(&id).await?;
    let org = conflicts
        .iter()
        .find(|c| c["field"] == "organization")
        .with_context(|| format!("no organization conflict: {conflicts:?}"))?;
    let mut values: Vec<(String, String)> = org["values"]
        .as_array()
        .context("values")?
        .iter()
        .map(|v| {
            (
                v["source"].as_str().unwrap_or_default().to_owned(),
                v["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    values.sort();
    assert_eq!(
        values,
        [
            ("app".to_owned(), "App Org".to_owned()),
            ("book".to_owned(), "Provider Org".to_owned())
        ],
        "{conflicts:?}"
    );
    let winner = org["winner"].as_str().context("winner")?.to_owned();
    api.sync("book").await?;
    assert_eq!(api.record(CONTACT, &id).await?["organization"], winner);
    assert_eq!(
        app_contact(&mut app, &id).await?.organization.as_deref(),
        Some(winner.as_str())
    );
    let js = js_record(&ws, &id, &json!({})).await?;
    assert_eq!(
        js["organization"], winner,
        "the JS replica resolves differently"
    );
    let body = provider_body(&book, &href).await?;
    assert!(
        body.contains(&format!("ORG:{winner}\r\n")),
        "{winner}: {body}"
    );
    api.quiet_round("book").await?;
    Ok(())
}

#[tokio::test]
async fn radicale_contact_deletes_propagate_both_ways() -> anyhow::Result<()> {
    let env = Env::start(DavServerKind::Radicale, |dav| {
        vec![bridge(dav.addressbook_url())]
    })
    .await?;
    let api = &env.api;
    let book = env.dav.addressbook()?;
    let a = put_new(
        &book,
        "a.vcf",
        &vcard("a@test", "Anna", "A", "Org", "a@example.com"),
    )
    .await?;
    put_new(
        &book,
        "b.vcf",
        &vcard("b@test", "Bert", "B", "Org", "b@example.com"),
    )
    .await?;
    api.sync("book").await?;
    let (a_id, _) = contact_named(api, "Anna A").await?;
    let (b_id, _) = contact_named(api, "Bert B").await?;

    // Radicale delete -> tombstone, not resurrected by the next polls.
    book.delete(&a, None).await?;
    let report = api.sync("book").await?;
    assert_eq!(report["deleted"], 1, "{report}");
    let anna = api.record(CONTACT, &a_id).await?;
    assert_eq!(anna["deleted"], true, "{anna}");
    assert_eq!(anna["links"]["book"]["removed"], true, "{anna}");
    api.quiet_round("book").await?;
    api.quiet_round("book").await?;
    assert!(book.get(&a).await?.is_none(), "resurrected at Radicale");

    // App delete (the tombstone) -> DELETE at Radicale.
    let mut app = app_open(&env.server.url(), &b_id, "app-d").await?;
    app_edit_contact(&mut app, &b_id, |c| c.deleted = true).await?;
    let report = api.sync("book").await?;
    assert_eq!(report["deleted"], 1, "{report}");
    api.quiet_round("book").await?;
    api.quiet_round("book").await?;
    assert!(
        provider_hrefs(&book).await?.is_empty(),
        "recreated at Radicale"
    );
    let recs = api.records(CONTACT).await?;
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(recs.iter().all(|(_, r)| r["deleted"] == true), "{recs:?}");
    assert_eq!(api.bridge_status("book").await?["linked_records"], 0);
    Ok(())
}

#[tokio::test]
async fn radicale_a_lost_answer_to_a_contact_create_is_adopted_not_duplicated() -> anyhow::Result<()>
{
    let env = Env::start_proxied(DavServerKind::Radicale, |dav, proxy| {
        vec![bridge(proxy.proxied(&dav.addressbook_url()))]
    })
    .await?;
    let (api, proxy) = (&env.api, env.proxy()?);
    let book = env.dav.addressbook()?;
    let collection = book.collection_url().path().to_owned();
    api.sync("book").await?;

    // An app creates a contact; Radicale stores it, but its answer is lost (connection closed).
    let mut doc = automerge::AutoCommit::new();
    let contact = Contact {
        name: Name {
            full: Some("Edsger Dijkstra".into()),
            ..Default::default()
        },
        job_title: Some("Professor".into()),
        links: [("book".to_owned(), Link::default())].into_iter().collect(),
        ..Default::default()
    };
    driftless_crdt_model::create_contact(&mut doc, &contact)?;
    let mut app = RustClient::connect(&env.server.url(), "app-l").await?;
    let id = app_add(&mut app, doc).await?;
    let href = format!("{collection}{id}.vcf");
    proxy.drop_response(Match::new("PUT", &href), 1);
    let failed = api.sync("book").await;
    assert!(
        failed.is_err(),
        "the round did not notice the lost answer: {failed:?}"
    );
    assert!(
        provider_body(&book, &href)
            .await?
            .contains("FN:Edsger Dijkstra")
    );

    // The next round finds its own earlier write instead of creating or importing it again.
    api.sync("book").await?;
    let rec = api.record(CONTACT, &id).await?;
    assert_eq!(rec["links"]["book"]["id"], href, "{rec}");
    api.quiet_round("book").await?;
    assert_eq!(provider_hrefs(&book).await?, vec![href.clone()]);
    assert_eq!(api.records(CONTACT).await?.len(), 1, "imported again");
    let puts: Vec<Option<u16>> = proxy
        .requests()
        .iter()
        .filter(|s| s.method == "PUT" && s.path == href)
        .map(|s| s.status)
        .collect();
    assert_eq!(puts, [Some(201), Some(412)], "one create, one adoption");
    assert!(api.conflicts(&id).await?.is_empty());
    assert_eq!(app_contact(&mut app, &id).await?.links["book"].id, href);
    Ok(())
}
