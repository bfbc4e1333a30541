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

// ------------------------------------------------------------------------------------------------
// Identity resolution on import: CardDAV (real Radicale) and HubSpot (the fake) in one workspace.

mod on_import {
    use std::time::Duration;

    use anyhow::{Context as _, bail};
    use driftless_bridges::hubspot::client::Secret;
    use driftless_bridges::hubspot::webhook::ObjectType;
    use driftless_client_protocol::DocumentId;
    use driftless_server::config::{
        BridgeConfig, BridgeKind, HubSpotAuthConfig, HubSpotBridgeConfig,
    };
    use driftless_tests::dav_bridge::{Env, bridge_config, provider_body, put_new};
    use driftless_tests::fakes::hubspot::{FakeHubSpot, TOKEN};
    use driftless_tests::radicale::DavServerKind;
    use driftless_tests::rust_client::RustClient;
    use serde_json::Value;

    use super::{contact, store};

    pub const BOOK: &str = "book";
    pub const CRM: &str = "crm";
    const CONTACT: ObjectType = ObjectType::Contact;

    pub fn hubspot_bridge(id: &str, fake: &FakeHubSpot) -> BridgeConfig {
        BridgeConfig {
            id: id.into(),
            kind: BridgeKind::HubSpot,
            workspace: "default".into(),
            poll_interval: Duration::from_secs(3600),
            max_delete_fraction: 1.0,
            url: String::new(),
            username: None,
            password: None,
            hubspot: Some(HubSpotBridgeConfig {
                auth: HubSpotAuthConfig::AccessToken(Secret::new(TOKEN)),
                client_secret: None,
                api_base: fake.api_base(),
                id_property: None,
                objects: vec![ObjectType::Contact],
            }),
            google: None,
            graph: None,
            salesforce: None,
        }
    }

    /// Radicale's address book and a fake HubSpot, both bridged into the default workspace.
    pub async fn start() -> anyhow::Result<(Env, FakeHubSpot)> {
        let fake = FakeHubSpot::start().await?;
        let crm = hubspot_bridge(CRM, &fake);
        let env = Env::start(DavServerKind::Radicale, move |dav| {
            vec![
                bridge_config(BOOK, BridgeKind::CardDav, dav.addressbook_url(), 1.0),
                crm,
            ]
        })
        .await?;
        // The startup rounds are over once these are.
        env.api.sync(BOOK).await?;
        env.api.sync(CRM).await?;
        Ok((env, fake))
    }

    /// Contacts whose `links` has an entry at `bridge`.
    async fn linked_at(env: &Env, bridge: &str) -> anyhow::Result<Vec<(DocumentId, Value)>> {
        Ok(env
            .api
            .records("contact")
            .await?
            .into_iter()
            .filter(|(_, r)| r["links"].get(bridge).is_some())
            .collect())
    }

    fn suggestion_pairs(v: &Value) -> Vec<(String, String, String)> {
        let mut out: Vec<(String, String, String)> = v["suggestions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let (a, b) = (s["a"].as_str().unwrap_or(""), s["b"].as_str().unwrap_or(""));
                let (a, b) = if a <= b { (a, b) } else { (b, a) };
                (
                    a.to_owned(),
                    b.to_owned(),
                    s["reason"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }

    fn url(id: &DocumentId) -> String {
        format!("automerge:{id}")
    }

    /// One person in Radicale and in HubSpot (the same email, the phone written two ways)
    /// becomes one document linked at both, with one phone slot; each system then gets the
    /// canonical values once and later rounds write nothing.
    #[tokio::test]
    async fn a_person_in_carddav_and_hubspot_becomes_one_document() -> anyhow::Result<()> {
        let (env, fake) = start().await?;
        let book = env.dav.addressbook()?;
        let href = put_new(
            &book,
            "grace.vcf",
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:grace@test\r\nFN:Grace Hopper\r\nN:Hopper;Grace;;;\r\n\
             EMAIL;TYPE=INTERNET:grace@navy.example\r\nTEL;TYPE=CELL:+1 415-555-0100\r\n\
             X-CUSTOM:keep me\r\nEND:VCARD\r\n",
        )
        .await?;
        env.api.sync(BOOK).await?;
        let hs = fake.insert(
            CONTACT,
            &[
                ("firstname", "Grace"),
                ("lastname", "Hopper"),
                ("email", "GRACE@navy.example"),
                ("mobilephone", "(415) 555-0100"),
                ("jobtitle", "Rear Admiral"),
            ],
        );
        let report = env.api.sync(CRM).await?;
        assert_eq!(report["pulled"], 1, "{report}");

        let all = env.api.records("contact").await?;
        let [(doc, record)] = all.as_slice() else {
            bail!("expected one contact document, got {all:?}");
        };
        assert_eq!(record["links"][BOOK]["id"], href, "{record}");
        assert_eq!(record["links"][CRM]["id"], hs.as_str(), "{record}");
        assert_eq!(record["job_title"], "Rear Admiral", "{record}");
        assert_eq!(record["name"]["full"], "Grace Hopper", "{record}");
        let phones = record["phones"].as_object().context("phones")?;
        assert_eq!(
            phones.len(),
            1,
            "one phone in two spellings is one slot: {record}"
        );
        assert_eq!(
            record["emails"].as_object().map(serde_json::Map::len),
            Some(1),
            "{record}"
        );
        let suggestions = env.api.get_json("/v1/identity/suggestions").await?;
        assert_eq!(
            suggestions["suggestions"],
            serde_json::json!([]),
            "{suggestions}"
        );

        // Radicale learns the job title once; HubSpot already has every canonical value.
        let report = env.api.sync(BOOK).await?;
        assert_eq!(report["pushed"], 1, "{report}");
        let body = provider_body(&book, &href).await?;
        assert!(body.contains("Rear Admiral"), "{body}");
        assert!(body.contains("X-CUSTOM:keep me"), "{body}");
        env.api.sync(CRM).await?;
        env.api.quiet_round(BOOK).await?;
        let writes = fake.write_count();
        env.api.quiet_round(CRM).await?;
        assert_eq!(fake.write_count(), writes, "a quiet round wrote to HubSpot");
        assert_eq!(fake.live_count(CONTACT), 1);

        // A HubSpot edit lands in the same document.
        fake.edit(CONTACT, &hs, &[("jobtitle", "Commodore")]);
        env.api.sync(CRM).await?;
        let record = env.api.record("contact", doc).await?;
        assert_eq!(record["job_title"], "Commodore", "{record}");
        assert_eq!(env.api.records("contact").await?.len(), 1);
        Ok(())
    }

    /// Grace in Radicale and in HubSpot, imported into one document, everything written once:
    /// (document, Radicale href, HubSpot id).
    async fn grace_in_both(
        env: &Env,
        fake: &FakeHubSpot,
    ) -> anyhow::Result<(DocumentId, String, String)> {
        let book = env.dav.addressbook()?;
        let href = put_new(
            &book,
            "grace.vcf",
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:grace@test\r\nFN:Grace Hopper\r\nN:Hopper;Grace;;;\r\n\
             EMAIL;TYPE=INTERNET:grace@navy.example\r\nTEL;TYPE=CELL:+1 415-555-0100\r\nEND:VCARD\r\n",
        )
        .await?;
        env.api.sync(BOOK).await?;
        let hs = fake.insert(
            CONTACT,
            &[
                ("firstname", "Grace"),
                ("lastname", "Hopper"),
                ("email", "grace@navy.example"),
                ("mobilephone", "(415) 555-0100"),
            ],
        );
        env.api.sync(CRM).await?;
        env.api.sync(BOOK).await?;
        env.api.sync(CRM).await?;
        env.api.quiet_round(BOOK).await?;
        env.api.quiet_round(CRM).await?;
        let all = env.api.records("contact").await?;
        let [(doc, _)] = all.as_slice() else {
            bail!("expected one contact document, got {all:?}");
        };
        Ok((doc.clone(), href, hs))
    }

    fn phone_values(record: &Value) -> Vec<String> {
        let mut out: Vec<String> = record["phones"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, p)| p["value"].as_str().unwrap_or("").to_owned())
            .collect();
        out.sort();
        out
    }

    fn digits(s: &str) -> String {
        s.chars().filter(char::is_ascii_digit).collect()
    }

    /// The same new number added in Radicale and in HubSpot (written two ways) ends as one slot
    /// in the document and one number in each system.
    #[tokio::test]
    async fn the_same_phone_added_in_two_systems_is_one_slot() -> anyhow::Result<()> {
        let (env, fake) = start().await?;
        let (doc, href, hs) = grace_in_both(&env, &fake).await?;
        let book = env.dav.addressbook()?;
        driftless_tests::dav_bridge::provider_edit(
            &book,
            &href,
            "END:VCARD",
            "TEL;TYPE=WORK:+1 650-253-0000\r\nEND:VCARD",
        )
        .await?;
        fake.edit(CONTACT, &hs, &[("phone", "(650) 253-0000")]);
        env.api.sync(BOOK).await?;
        env.api.sync(CRM).await?;
        env.api.sync(BOOK).await?;
        env.api.sync(CRM).await?;
        let record = env.api.record("contact", &doc).await?;
        let phones = phone_values(&record);
        assert_eq!(phones.len(), 2, "{record}");
        assert_eq!(
            phones
                .iter()
                .filter(|p| digits(p).ends_with("6502530000"))
                .count(),
            1,
            "{record}"
        );
        let body = provider_body(&book, &href).await?;
        assert_eq!(
            body.matches("253-0000").count() + body.matches("2530000").count(),
            1,
            "{body}"
        );
        let props = fake.get(CONTACT, &hs).context("HubSpot contact")?;
        let in_hubspot = ["phone", "mobilephone"]
            .iter()
            .filter(|k| {
                props
                    .get(**k)
                    .is_some_and(|v| digits(v).ends_with("6502530000"))
            })
            .count();
        assert_eq!(in_hubspot, 1, "{props:?}");
        env.api.quiet_round(BOOK).await?;
        env.api.quiet_round(CRM).await?;
        Ok(())
    }

    /// The same phone edited at once in Radicale and in HubSpot is one conflict on one slot,
    /// never two entries; both systems end with the winner.
    #[tokio::test]
    async fn one_phone_edited_in_two_systems_is_one_conflict_on_one_slot() -> anyhow::Result<()> {
        let (env, fake) = start().await?;
        let (doc, href, hs) = grace_in_both(&env, &fake).await?;
        let record = env.api.record("contact", &doc).await?;
        let slot = record["phones"]
            .as_object()
            .and_then(|p| p.keys().next().cloned())
            .context("a phone slot")?;
        let book = env.dav.addressbook()?;
        let body = provider_body(&book, &href).await?;
        let line = body
            .lines()
            .find(|l| l.starts_with("TEL"))
            .context("TEL line")?
            .to_owned();
        driftless_tests::dav_bridge::provider_edit(
            &book,
            &href,
            &line,
            "TEL;TYPE=CELL:+1 415-555-0142",
        )
        .await?;
        fake.edit(CONTACT, &hs, &[("mobilephone", "(415) 555-0199")]);
        env.api.sync(BOOK).await?;
        env.api.sync(CRM).await?;
        let record = env.api.record("contact", &doc).await?;
        assert_eq!(phone_values(&record).len(), 1, "{record}");
        let conflicts = env.api.conflicts(&doc).await?;
        let fields: Vec<&str> = conflicts
            .iter()
            .filter_map(|c| c["field"].as_str())
            .collect();
        assert_eq!(
            fields,
            vec![format!("phones.{slot}.value")],
            "{conflicts:?}"
        );

        // Both systems converge on the document's value, then nothing more is written.
        for _ in 0..2 {
            env.api.sync(BOOK).await?;
            env.api.sync(CRM).await?;
        }
        let record = env.api.record("contact", &doc).await?;
        let [winner] = phone_values(&record)
            .try_into()
            .map_err(|v| anyhow::anyhow!("{v:?}"))?;
        let body = provider_body(&book, &href).await?;
        assert!(body.contains(&winner), "{winner} not in {body}");
        let props = fake.get(CONTACT, &hs).context("HubSpot contact")?;
        assert_eq!(
            props.get("mobilephone").map(|v| digits(v)),
            Some(digits(&winner)),
            "{props:?}"
        );
        env.api.quiet_round(BOOK).await?;
        env.api.quiet_round(CRM).await?;
        Ok(())
    }

    /// Two bridges importing the same new person in the same instant make one document.
    #[tokio::test]
    async fn two_bridges_importing_one_person_at_once_make_one_document() -> anyhow::Result<()> {
        let (env, fake) = start().await?;
        let book = env.dav.addressbook()?;
        for n in 0..5 {
            put_new(
                &book,
                &format!("p{n}.vcf"),
                &format!(
                    "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:p{n}@test\r\nFN:Person {n}\r\n\
                     EMAIL:person{n}@example.com\r\nEND:VCARD\r\n"
                ),
            )
            .await?;
            fake.insert(
                CONTACT,
                &[
                    ("firstname", "Person"),
                    ("lastname", &n.to_string()),
                    ("email", &format!("Person{n}@Example.com")),
                ],
            );
        }
        let (a, b) = tokio::join!(env.api.sync(BOOK), env.api.sync(CRM));
        a?;
        b?;
        let all = env.api.records("contact").await?;
        assert_eq!(all.len(), 5, "{all:?}");
        for (_, r) in &all {
            assert!(
                r["links"][BOOK]["id"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{r}"
            );
            assert!(
                r["links"][CRM]["id"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "{r}"
            );
        }
        Ok(())
    }

    /// A CardDAV import interrupted after its pending import was stored (the document not yet
    /// sent) is a candidate for HubSpot's import of the same person: HubSpot's round waits
    /// (fails and is retried) instead of making a second document, and attaches once the
    /// CardDAV bridge has finished its import.
    #[tokio::test]
    async fn an_interrupted_import_of_another_bridge_is_not_duplicated() -> anyhow::Result<()> {
        use driftless_server::bridge::failpoints;
        let (env, fake) = start().await?;
        let book = env.dav.addressbook()?;
        put_new(
            &book,
            "lin.vcf",
            "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:lin@test\r\nFN:Lin Wu\r\n\
             EMAIL:lin@example.com\r\nEND:VCARD\r\n",
        )
        .await?;
        fake.insert(
            CONTACT,
            &[("firstname", "Lin"), ("email", "lin@example.com")],
        );
        failpoints::arm(BOOK, "import.before_send", 1);
        let (status, _) = env.api.try_sync(BOOK).await?;
        assert_ne!(status, 200, "the armed failpoint must end the round");
        let (status, answer) = env.api.try_sync(CRM).await?;
        assert_ne!(
            status, 200,
            "HubSpot must wait for the interrupted import: {answer}"
        );
        assert!(env.api.records("contact").await?.is_empty());
        env.api.sync(BOOK).await?;
        env.api.sync(CRM).await?;
        let all = env.api.records("contact").await?;
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(
            all[0].1["links"][CRM]["id"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
        assert!(
            all[0].1["links"][BOOK]["id"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );
        Ok(())
    }

    /// Ambiguous evidence never attaches: a new HubSpot contact sharing an email with two
    /// documents, or with a document already linked at HubSpot, becomes its own document and
    /// is listed as a suggestion.
    #[tokio::test]
    async fn ambiguous_matches_become_suggestions_not_merges() -> anyhow::Result<()> {
        let (env, fake) = start().await?;
        let mut app = RustClient::connect(&env.server.url(), "identity-import-app").await?;
        let twin_a = store(&mut app, &contact("Twin A", &["twin@example.com"], &[])).await?;
        let twin_b = store(&mut app, &contact("Twin B", &["twin@example.com"], &[])).await?;
        let first = fake.insert(
            CONTACT,
            &[("firstname", "Ann"), ("email", "ann@example.com")],
        );
        env.api.sync(CRM).await?;
        let twin = fake.insert(
            CONTACT,
            &[("firstname", "Twin"), ("email", "TWIN@example.com")],
        );
        // A second HubSpot record with Ann's email: HubSpot's own duplicate.
        let second = fake.insert(
            CONTACT,
            &[("firstname", "Annie"), ("email", "Ann@example.com")],
        );
        env.api.sync(CRM).await?;

        let linked = linked_at(&env, CRM).await?;
        assert_eq!(linked.len(), 3, "{linked:?}");
        let doc_of = |hs: &str| {
            linked
                .iter()
                .find(|(_, r)| r["links"][CRM]["id"] == hs)
                .map(|(d, _)| d.clone())
                .with_context(|| format!("no document linked to HubSpot {hs}"))
        };
        let (twin_doc, first_doc, second_doc) = (doc_of(&twin)?, doc_of(&first)?, doc_of(&second)?);
        assert_ne!(first_doc, second_doc);
        for twin_app in [&twin_a, &twin_b] {
            let r = env.api.record("contact", twin_app).await?;
            assert!(r["links"].get(CRM).is_none(), "{r}");
        }
        let pairs = suggestion_pairs(&env.api.get_json("/v1/identity/suggestions").await?);
        let pair = |x: &DocumentId, y: &DocumentId| {
            let (a, b) = (url(x), url(y));
            if a <= b {
                (a, b, "email".to_owned())
            } else {
                (b, a, "email".to_owned())
            }
        };
        let mut expected = vec![
            pair(&twin_a, &twin_b),
            pair(&twin_a, &twin_doc),
            pair(&twin_b, &twin_doc),
            pair(&first_doc, &second_doc),
        ];
        expected.sort();
        assert_eq!(pairs, expected);
        Ok(())
    }
}
