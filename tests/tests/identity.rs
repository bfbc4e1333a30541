//! `GET /v1/identity/suggestions` over contacts an app client created: shared emails and phones
//! (E.164 with `default_phone_region`) are suggested once per pair; deleted and merged contacts
//! and other record types are not.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use automerge::AutoCommit;
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::{Contact, ContactPoint, Name};
use driftless_tests::TestServer;
use driftless_tests::rust_client::RustClient;
use serde_json::Value;

fn contact(full: &str, emails: &[&str], phones: &[&str]) -> Contact {
    let points = |values: &[&str], prefix: &str| -> BTreeMap<String, ContactPoint> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    format!("{prefix}{i}"),
                    ContactPoint {
                        value: (*v).to_owned(),
                        ..ContactPoint::default()
                    },
                )
            })
            .collect()
    };
    Contact {
        name: Name {
            full: Some(full.to_owned()),
            ..Name::default()
        },
        emails: points(emails, "e"),
        phones: points(phones, "p"),
        ..Contact::default()
    }
}

async fn store(app: &mut RustClient, contact: &Contact) -> anyhow::Result<DocumentId> {
    let mut doc = AutoCommit::new();
    driftless_crdt_model::create_contact(&mut doc, contact)?;
    doc.commit();
    let id = DocumentId::from_bytes(&rand::random::<[u8; 16]>());
    app.add(id.clone(), doc);
    for _ in 0..50 {
        app.sync_until_quiet(Duration::from_millis(50)).await?;
        if app.acknowledged(&id) {
            return Ok(id);
        }
    }
    anyhow::bail!("document {id} was not acknowledged")
}

#[tokio::test]
async fn shared_emails_and_phones_are_suggested_once_per_pair() -> anyhow::Result<()> {
    let server = TestServer::start_with_config(|c| {
        c.default_phone_region = Some("DE".to_owned());
    })
    .await?;
    let mut app = RustClient::connect(&server.url(), "identity-app").await?;
    let jane = store(
        &mut app,
        &contact("Jane Roe", &["jane@example.com"], &["030 1234567"]),
    )
    .await?;
    let jane_again = store(
        &mut app,
        &contact("Roe, Jane", &["JANE@example.com"], &["+49 30 1234567"]),
    )
    .await?;
    let flatmate = store(
        &mut app,
        &contact("Max Muster", &[], &["+49 (30) 123-4567"]),
    )
    .await?;
    let _stranger = store(
        &mut app,
        &contact("Other", &["o@example.com"], &["+1 650 253 0000"]),
    )
    .await?;
    let mut gone = contact("Jane Deleted", &["jane@example.com"], &[]);
    gone.deleted = true;
    store(&mut app, &gone).await?;
    let mut merged = contact("Jane Merged", &["jane@example.com"], &[]);
    merged.merged_into = Some(format!("automerge:{jane}"));
    store(&mut app, &merged).await?;

    let text = reqwest::get(format!("{}/v1/identity/suggestions", server.http_url()))
        .await?
        .error_for_status()?
        .text()
        .await?;
    let body: Value = serde_json::from_str(&text)?;
    let list = body["suggestions"].as_array().context("suggestions")?;
    let url = |d: &DocumentId| format!("automerge:{d}");
    let mut got: Vec<(String, String, String)> = list
        .iter()
        .map(|s| {
            let (a, b) = (s["a"].as_str().unwrap_or(""), s["b"].as_str().unwrap_or(""));
            let (a, b) = if a < b { (a, b) } else { (b, a) };
            (
                a.to_owned(),
                b.to_owned(),
                s["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    got.sort();
    let pair = |x: &DocumentId, y: &DocumentId, reason: &str| {
        let (a, b) = if url(x) < url(y) {
            (url(x), url(y))
        } else {
            (url(y), url(x))
        };
        (a, b, reason.to_owned())
    };
    let mut want = vec![
        pair(&jane, &jane_again, "email"),
        pair(&jane, &flatmate, "phone"),
        pair(&jane_again, &flatmate, "phone"),
    ];
    want.sort();
    assert_eq!(got, want, "{body}");
    assert!(list.iter().all(|s| s["score"].as_f64().is_some()), "{body}");
    Ok(())
}

/// `POST /v1/identity/merge` with a CardDAV-linked contact (real Radicale): the survivor keeps
/// every field and takes over the link, the absorbed document points at the survivor, Radicale
/// gets the merged fields once and keeps its resource (nothing deleted), later Radicale edits
/// land in the survivor, and a repeated merge changes nothing.
#[tokio::test]
async fn a_merge_moves_the_link_to_the_survivor_and_deletes_nothing() -> anyhow::Result<()> {
    use driftless_server::config::BridgeKind;
    use driftless_tests::dav_bridge::{
        Env, bridge_config, provider_body, provider_edit, provider_hrefs, put_new,
    };
    use driftless_tests::radicale::DavServerKind;

    let env = Env::start(DavServerKind::Radicale, |dav| {
        vec![bridge_config(
            "book",
            BridgeKind::CardDav,
            dav.addressbook_url(),
            1.0,
        )]
    })
    .await?;
    let book = env.dav.addressbook()?;
    let href = put_new(
        &book,
        "grace.vcf",
        "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:grace@test\r\nFN:Grace Hopper\r\nN:Hopper;Grace;;;\r\n\
         EMAIL;TYPE=INTERNET:grace@navy.example\r\nX-CUSTOM:keep me\r\nEND:VCARD\r\n",
    )
    .await?;
    env.api.sync("book").await?;
    let (from_book, _) = env
        .api
        .record_where("contact", "Grace from Radicale", |r| {
            r["links"]["book"]["id"] == href
        })
        .await?;

    // The app already holds Grace, with the same email and a phone Radicale lacks.
    let mut app = RustClient::connect(&env.server.url(), "identity-merge-app").await?;
    let in_app = store(
        &mut app,
        &contact(
            "Grace Hopper",
            &["GRACE@navy.example"],
            &["+1 650 253 0000"],
        ),
    )
    .await?;
    let suggestions = env.api.get_json("/v1/identity/suggestions").await?;
    assert_eq!(
        suggestions["suggestions"].as_array().map(Vec::len),
        Some(1),
        "{suggestions}"
    );
    assert_eq!(
        suggestions["suggestions"][0]["reason"], "email",
        "{suggestions}"
    );

    let merge = |survivor: &DocumentId, absorbed: &DocumentId| {
        let body = serde_json::json!({
            "survivor": format!("automerge:{survivor}"),
            "absorbed": format!("automerge:{absorbed}"),
        });
        let url = format!("{}/v1/identity/merge", env.server.http_url());
        async move {
            let resp = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await?;
            let status = resp.status().as_u16();
            let body: Value = serde_json::from_str(&resp.text().await?)?;
            anyhow::Ok((status, body))
        }
    };
    let (status, merged) = merge(&in_app, &from_book).await?;
    assert_eq!(status, 200, "{merged}");
    assert_eq!(merged["url"], format!("automerge:{in_app}"), "{merged}");
    assert_eq!(merged["record"]["links"]["book"]["id"], href, "{merged}");

    let survivor = env.api.record("contact", &in_app).await?;
    assert_eq!(survivor["links"]["book"]["id"], href, "{survivor}");
    assert_eq!(
        survivor["phones"].as_object().map(|p| p.len()),
        Some(1),
        "{survivor}"
    );
    let absorbed = env.api.record("contact", &from_book).await?;
    assert_eq!(
        absorbed["merged_into"],
        format!("automerge:{in_app}"),
        "{absorbed}"
    );
    assert_eq!(absorbed["links"]["book"]["removed"], true, "{absorbed}");
    assert_eq!(absorbed["deleted"], false, "{absorbed}");
    // Merged contacts are no longer suggested.
    let suggestions = env.api.get_json("/v1/identity/suggestions").await?;
    assert_eq!(
        suggestions["suggestions"],
        serde_json::json!([]),
        "{suggestions}"
    );

    // Radicale gets the survivor's phone once, keeps what driftless does not model, and keeps
    // its one resource.
    let report = env.api.sync("book").await?;
    assert_eq!(report["pushed"], 1, "{report}");
    assert_eq!(report["deleted"], 0, "{report}");
    let body = provider_body(&book, &href).await?;
    assert!(body.contains("650"), "{body}");
    assert!(body.contains("X-CUSTOM:keep me"), "{body}");
    assert_eq!(provider_hrefs(&book).await?, vec![href.clone()]);
    env.api.quiet_round("book").await?;

    // A Radicale edit now lands in the survivor.
    provider_edit(
        &book,
        &href,
        "FN:Grace Hopper",
        "FN:Rear Admiral Grace Hopper",
    )
    .await?;
    env.api.sync("book").await?;
    let survivor = env.api.record("contact", &in_app).await?;
    assert_eq!(
        survivor["name"]["full"], "Rear Admiral Grace Hopper",
        "{survivor}"
    );
    let absorbed = env.api.record("contact", &from_book).await?;
    assert_eq!(absorbed["name"]["full"], "Grace Hopper", "{absorbed}");

    // Repeating the merge is harmless; merging the other way is refused.
    let (status, again) = merge(&in_app, &from_book).await?;
    assert_eq!(status, 200, "{again}");
    env.api.quiet_round("book").await?;
    let (status, refused) = merge(&from_book, &in_app).await?;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "merge_conflict", "{refused}");
    let (status, bad) = merge(&in_app, &in_app).await?;
    assert_eq!(status, 400, "{bad}");
    Ok(())
}
