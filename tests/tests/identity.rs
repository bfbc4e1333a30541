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
