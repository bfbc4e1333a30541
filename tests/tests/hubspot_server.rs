//! A `hubspot` bridge in the real server, against the fake HubSpot CRM: a contact created in
//! HubSpot becomes a `contact` document an app reads; an app's phone edit reaches HubSpot as one
//! PATCH of that property; a quiet round writes nothing; an archived contact tombstones its
//! document (its only link); a create whose answer is lost is adopted, not duplicated; burst rate
//! limits are backed off inside a round.
//!
//! Rounds are driven by `POST /v1/bridges/{id}/sync` (counted by the fake's request log).

use std::time::Duration;

use anyhow::{Context, bail};
use driftless_bridges::hubspot::client::Secret;
use driftless_bridges::hubspot::webhook::ObjectType;
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::{Contact, ContactPoint, Link, Name};
use driftless_server::config::{BridgeConfig, BridgeKind, HubSpotAuthConfig, HubSpotBridgeConfig};
use driftless_tests::TestServer;
use driftless_tests::dav_bridge::{Api, app_add, app_contact, app_edit_contact, app_open};
use driftless_tests::fakes::hubspot::{FakeHubSpot, LoggedRequest, TOKEN};
use driftless_tests::rust_client::RustClient;
use serde_json::Value;

const BRIDGE: &str = "crm";
const CONTACT: ObjectType = ObjectType::Contact;
const ID_PROPERTY: &str = "driftless_id";
/// The app's client secret: webhook signatures are keyed with it.
const CLIENT_SECRET: &str = "hubspot-app-client-secret";

fn bridge(fake: &FakeHubSpot, id_property: Option<&str>) -> BridgeConfig {
    BridgeConfig {
        id: BRIDGE.into(),
        kind: BridgeKind::HubSpot,
        workspace: "default".into(),
        // Rounds are driven by the test (apart from the one at startup).
        poll_interval: Duration::from_secs(3600),
        max_delete_fraction: 1.0,
        url: String::new(),
        username: None,
        password: None,
        hubspot: Some(HubSpotBridgeConfig {
            auth: HubSpotAuthConfig::AccessToken(Secret::new(TOKEN)),
            client_secret: Some(Secret::new(CLIENT_SECRET)),
            api_base: fake.api_base(),
            id_property: id_property.map(str::to_owned),
        }),
        google: None,
    }
}

struct Env {
    fake: FakeHubSpot,
    server: TestServer,
    api: Api,
}

impl Env {
    async fn start(id_property: Option<&str>) -> anyhow::Result<Self> {
        let fake = FakeHubSpot::start().await?;
        Self::with(fake, id_property).await
    }

    async fn with(fake: FakeHubSpot, id_property: Option<&str>) -> anyhow::Result<Self> {
        let config = bridge(&fake, id_property);
        let server = TestServer::start_with_config(move |c| {
            c.bridges = vec![config.clone()];
        })
        .await?;
        server.wait_ready(Duration::from_secs(10)).await?;
        let api = Api::new(server.http_url());
        Ok(Self { fake, server, api })
    }

    /// The only contact document (fails on a duplicate).
    async fn only_contact(&self) -> anyhow::Result<(DocumentId, Value)> {
        let all = self.api.records("contact").await?;
        match all.as_slice() {
            [one] => Ok(one.clone()),
            _ => bail!("expected exactly one contact, got {}: {all:?}", all.len()),
        }
    }

    fn writes(&self) -> Vec<LoggedRequest> {
        self.fake
            .requests()
            .into_iter()
            .filter(LoggedRequest::is_write)
            .collect()
    }

    /// A round that must pull, push and delete nothing, and send HubSpot no write.
    async fn quiet_round(&self) -> anyhow::Result<()> {
        let before = self.fake.write_count();
        self.api.quiet_round(BRIDGE).await?;
        let writes = self.writes();
        if writes.len() != before {
            bail!("a quiet round wrote to HubSpot: {:?}", &writes[before..]);
        }
        Ok(())
    }
}

fn phone_values(contact: &Contact) -> Vec<&str> {
    contact.phones.values().map(|p| p.value.as_str()).collect()
}

#[tokio::test]
async fn a_hubspot_contact_becomes_a_document_and_app_edits_reach_hubspot_once()
-> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    let jane = fake.insert(
        CONTACT,
        &[
            ("firstname", "Jane"),
            ("lastname", "Doe"),
            ("email", "jane@example.com"),
            ("phone", "+1 415 555 0100"),
            ("jobtitle", "CTO"),
            ("hs_custom", "kept"),
        ],
    );
    let env = Env::with(fake, None).await?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");

    // One document, linked to the HubSpot id, read by a Rust app.
    let (doc_id, record) = env.only_contact().await?;
    assert_eq!(record["links"][BRIDGE]["id"], jane.as_str(), "{record}");
    let mut app = app_open(&env.server.url(), &doc_id, "hubspot-app").await?;
    let contact = app_contact(&mut app, &doc_id).await?;
    assert_eq!(contact.name.given.as_deref(), Some("Jane"));
    assert_eq!(contact.name.family.as_deref(), Some("Doe"));
    assert_eq!(contact.job_title.as_deref(), Some("CTO"));
    let emails: Vec<&str> = contact.emails.values().map(|e| e.value.as_str()).collect();
    assert_eq!(emails, ["jane@example.com"]);
    assert_eq!(phone_values(&contact), ["+1 415 555 0100"]);

    // Nothing changed anywhere: no writes.
    env.quiet_round().await?;

    // The app edits the phone: one PATCH carrying only that property.
    let before = env.fake.write_count();
    app_edit_contact(&mut app, &doc_id, |c| {
        if let Some(phone) = c.phones.values_mut().next() {
            phone.value = "+1 415 555 0199".into();
        }
    })
    .await?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let writes = env.writes();
    assert_eq!(writes.len(), before + 1, "{:?}", &writes[before..]);
    let patch = &writes[before];
    assert_eq!(patch.method, "PATCH");
    assert!(
        patch.path.ends_with(&format!("/contacts/{jane}")),
        "{patch:?}"
    );
    assert_eq!(
        patch.body["properties"],
        serde_json::json!({"phone": "+1 415 555 0199"}),
        "only the changed property is sent"
    );
    let stored = env.fake.get(CONTACT, &jane).context("jane at HubSpot")?;
    assert_eq!(stored["phone"], "+1 415 555 0199");
    assert_eq!(
        stored["hs_custom"], "kept",
        "unmapped properties are untouched"
    );

    // Our own write coming back through the overlapping search is not news.
    env.quiet_round().await?;
    env.quiet_round().await?;

    // A HubSpot edit reaches the app.
    env.fake.edit(CONTACT, &jane, &[("jobtitle", "CEO")]);
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pulled"], 1, "{report}");
    let contact = app_contact(&mut app, &doc_id).await?;
    assert_eq!(contact.job_title.as_deref(), Some("CEO"));
    assert_eq!(phone_values(&contact), ["+1 415 555 0199"]);
    env.quiet_round().await?;
    Ok(())
}

#[tokio::test]
async fn an_archived_contact_tombstones_its_only_link() -> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    let ids: Vec<String> = (0..3)
        .map(|i| {
            fake.insert(
                CONTACT,
                &[
                    ("firstname", &format!("Person{i}")),
                    ("email", &format!("p{i}@example.com")),
                ],
            )
        })
        .collect();
    let env = Env::with(fake, None).await?;
    env.api.sync(BRIDGE).await?;
    assert_eq!(env.api.records("contact").await?.len(), 3);

    assert!(env.fake.archive(CONTACT, &ids[1]));
    let before = env.fake.write_count();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["deleted"], 1, "{report}");
    assert_eq!(
        env.fake.write_count(),
        before,
        "a removal writes nothing to HubSpot"
    );
    let records = env.api.records("contact").await?;
    let gone: Vec<&Value> = records
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r["deleted"] == true)
        .collect();
    assert_eq!(gone.len(), 1, "{records:?}");
    assert_eq!(gone[0]["name"]["given"], "Person1");
    assert_eq!(gone[0]["links"][BRIDGE]["removed"], true, "{}", gone[0]);
    assert_eq!(env.api.bridge_status(BRIDGE).await?["linked_records"], 2);
    // Reported once: the archived listing names it again, but it is no longer linked.
    env.quiet_round().await?;
    Ok(())
}

fn app_contact_doc() -> anyhow::Result<automerge::AutoCommit> {
    let mut doc = automerge::AutoCommit::new();
    let contact = Contact {
        name: Name {
            full: Some("Ada Lovelace".into()),
            given: Some("Ada".into()),
            family: Some("Lovelace".into()),
            ..Name::default()
        },
        emails: [(
            "e1".to_owned(),
            ContactPoint {
                value: "ada@example.com".into(),
                primary: true,
                ..ContactPoint::default()
            },
        )]
        .into_iter()
        .collect(),
        links: [(BRIDGE.to_owned(), Link::default())].into_iter().collect(),
        ..Default::default()
    };
    driftless_crdt_model::create_contact(&mut doc, &contact)?;
    Ok(doc)
}

/// An app creates a contact; HubSpot stores it but its answer is lost (504): the bridge finds
/// it (`lookup`) and links it, and later rounds neither import nor create it again.
async fn lost_create_answer_is_adopted(id_property: Option<&str>) -> anyhow::Result<()> {
    let env = Env::start(id_property).await?;
    env.api.sync(BRIDGE).await?;
    let mut app = RustClient::connect(&env.server.url(), "hubspot-creator").await?;
    let doc_id = app_add(&mut app, app_contact_doc()?).await?;

    env.fake.lose_create_responses(1);
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    assert_eq!(
        env.fake.live_count(CONTACT),
        1,
        "exactly one contact at HubSpot"
    );
    let creates: Vec<LoggedRequest> = env
        .writes()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/objects/contacts"))
        .collect();
    assert_eq!(
        creates.len(),
        1,
        "the create is not sent again: {creates:?}"
    );
    assert_eq!(creates[0].status, 504);

    let (only, record) = env.only_contact().await?;
    assert_eq!(only, doc_id);
    let linked = record["links"][BRIDGE]["id"]
        .as_str()
        .context("link id")?
        .to_owned();
    assert!(!linked.is_empty(), "{record}");
    let stored = env.fake.get(CONTACT, &linked).context("the contact")?;
    assert_eq!(stored["email"], "ada@example.com");
    if let Some(p) = id_property {
        assert_eq!(stored[p], doc_id.to_string());
    }
    env.quiet_round().await?;
    env.quiet_round().await?;
    assert_eq!(env.api.records("contact").await?.len(), 1);
    assert_eq!(env.fake.live_count(CONTACT), 1);
    Ok(())
}

#[tokio::test]
async fn a_lost_create_answer_is_adopted_by_id_property() -> anyhow::Result<()> {
    lost_create_answer_is_adopted(Some(ID_PROPERTY)).await
}

#[tokio::test]
async fn a_lost_create_answer_is_adopted_by_email() -> anyhow::Result<()> {
    lost_create_answer_is_adopted(None).await
}

#[tokio::test]
async fn burst_rate_limits_are_backed_off_inside_the_round() -> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    fake.insert(
        CONTACT,
        &[("firstname", "Grace"), ("email", "grace@example.com")],
    );
    let env = Env::with(fake, None).await?;
    env.fake
        .inject_rate_limit("TEN_SECONDLY_ROLLING", 2, Some(1));
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    let limited = env
        .fake
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert_eq!(limited, 2);
    let (_, record) = env.only_contact().await?;
    assert_eq!(record["name"]["given"], "Grace");
    Ok(())
}

#[tokio::test]
async fn a_daily_limit_ends_the_round_until_the_reset() -> anyhow::Result<()> {
    let env = Env::start(None).await?;
    env.api.sync(BRIDGE).await?;
    env.fake.insert(CONTACT, &[("firstname", "Linus")]);
    env.fake.inject_rate_limit("DAILY", 1, Some(3600));
    let (status, answer) = env.api.try_sync(BRIDGE).await?;
    assert_ne!(status, 200, "{answer}");
    assert!(
        answer.to_string().contains("daily request limit"),
        "{answer}"
    );
    // Exactly one request met the limit: no retry storm against a spent daily quota.
    let limited = env
        .fake
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert_eq!(limited, 1);
    Ok(())
}
