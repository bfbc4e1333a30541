//! A `hubspot` bridge in the real server, against the fake HubSpot CRM: a contact created in
//! HubSpot becomes a `contact` document an app reads; an app's phone edit reaches HubSpot as one
//! PATCH of that property; a quiet round writes nothing; an archived contact tombstones its
//! document (its only link); a create whose answer is lost is adopted, not duplicated; burst rate
//! limits are backed off inside a round.
//!
//! Webhooks: `POST /webhooks/hubspot/{bridge}` with v3 signatures over the URI built from
//! `public_url` (here a proxy's address, not the test server's, so a signature over the address
//! the request actually reached is refused); a valid delivery triggers a round without
//! `/sync`; duplicated and reordered deliveries hint once; refused deliveries change nothing.
//!
//! Rounds are driven by `POST /v1/bridges/{id}/sync` (counted by the fake's request log).

use std::time::Duration;

use anyhow::{Context, bail};
use driftless_bridges::hubspot::client::Secret;
use driftless_bridges::hubspot::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_v3};
use driftless_bridges::hubspot::webhook::ObjectType;
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::{Contact, ContactPoint, Link, Name};
use driftless_server::config::{BridgeConfig, BridgeKind, HubSpotAuthConfig, HubSpotBridgeConfig};
use driftless_tests::TestServer;
use driftless_tests::dav_bridge::{Api, app_add, app_contact, app_edit_contact, app_open};
use driftless_tests::fakes::hubspot::{FakeHubSpot, LoggedRequest, TOKEN};
use driftless_tests::rust_client::RustClient;
use serde_json::{Value, json};

const BRIDGE: &str = "crm";
const CONTACT: ObjectType = ObjectType::Contact;
const ID_PROPERTY: &str = "driftless_id";
/// The app's client secret: webhook signatures are keyed with it.
const CLIENT_SECRET: &str = "hubspot-app-client-secret";
/// Where HubSpot reaches the server (a proxy in front of it, with a path prefix).
const PUBLIC_URL: &str = "https://driftless.example.com/sync";

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
            objects: vec![ObjectType::Contact],
        }),
        google: None,
        graph: None,
        salesforce: None,
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
        Self::with_objects(fake, id_property, &[CONTACT]).await
    }

    async fn with_objects(
        fake: FakeHubSpot,
        id_property: Option<&str>,
        objects: &[ObjectType],
    ) -> anyhow::Result<Self> {
        Self::with_policies(fake, id_property, objects, Vec::new()).await
    }

    async fn with_policies(
        fake: FakeHubSpot,
        id_property: Option<&str>,
        objects: &[ObjectType],
        policies: Vec<driftless_server::config::Policy>,
    ) -> anyhow::Result<Self> {
        let mut config = bridge(&fake, id_property);
        if let Some(h) = config.hubspot.as_mut() {
            h.objects = objects.to_vec();
        }
        let server = TestServer::start_with_config(move |c| {
            c.bridges = vec![config.clone()];
            c.policies = policies.clone();
            c.public_url = Some(PUBLIC_URL.to_owned());
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How a test delivery is signed.
struct Signing<'a> {
    secret: &'a str,
    /// The URI the signature covers.
    uri: String,
    timestamp_ms: i64,
}

impl Signing<'_> {
    /// As HubSpot signs: the app's secret, the public URI, now.
    fn hubspot() -> Self {
        Signing {
            secret: CLIENT_SECRET,
            uri: format!("{PUBLIC_URL}/webhooks/hubspot/{BRIDGE}"),
            timestamp_ms: now_ms(),
        }
    }
}

impl Env {
    /// Posts `body` to the bridge's webhook, signed per `signing`; the status and JSON answer.
    async fn deliver_raw(
        &self,
        body: Vec<u8>,
        signing: &Signing<'_>,
    ) -> anyhow::Result<(u16, Value)> {
        let timestamp = signing.timestamp_ms.to_string();
        let signature = sign_v3(
            signing.secret.as_bytes(),
            "POST",
            &signing.uri,
            &body,
            &timestamp,
        );
        let resp = reqwest::Client::new()
            .post(format!(
                "{}/webhooks/hubspot/{BRIDGE}",
                self.server.http_url()
            ))
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .header(TIMESTAMP_HEADER, timestamp)
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let answer = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, answer))
    }

    /// Delivers `events` as HubSpot would (attempt number `attempt`); fails unless accepted.
    async fn deliver(&self, events: &[Value], attempt: u32) -> anyhow::Result<Value> {
        let events: Vec<Value> = events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["attemptNumber"] = json!(attempt);
                e
            })
            .collect();
        let (status, answer) = self
            .deliver_raw(serde_json::to_vec(&events)?, &Signing::hubspot())
            .await?;
        if status != 200 {
            bail!("delivery refused with {status}: {answer}");
        }
        Ok(answer)
    }

    fn searches(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/search"))
            .count()
    }

    /// Waits (without `/sync`) until the contact of document `id` satisfies `pred`.
    async fn wait_for(
        &self,
        id: &DocumentId,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let record = self.api.record("contact", id).await?;
            if pred(&record) {
                return Ok(record);
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the webhook did not lead to a round: {record}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn signed_deliveries_trigger_a_round_and_apply_once() -> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    let jane = fake.insert(CONTACT, &[("firstname", "Jane"), ("jobtitle", "CTO")]);
    let env = Env::with(fake, None).await?;
    env.api.sync(BRIDGE).await?;
    let (doc_id, _) = env.only_contact().await?;
    let creation = env.fake.take_webhook_events();
    assert!(!creation.is_empty());

    // A HubSpot edit, announced by a webhook: the document follows without `/sync`.
    env.fake.edit(CONTACT, &jane, &[("jobtitle", "CEO")]);
    let edit = env.fake.take_webhook_events();
    assert_eq!(edit.len(), 1, "{edit:?}");
    let answer = env.deliver(&edit, 0).await?;
    assert_eq!(answer["hints"], 1, "{answer}");
    env.wait_for(&doc_id, |r| r["job_title"] == "CEO").await?;

    // HubSpot retries the batch, and a duplicate arrives shuffled with an old creation event
    // the inbox already took: nothing new is hinted.
    let mut both = creation.clone();
    both.extend(edit.clone());
    env.deliver(&creation, 0).await?;
    let answer = env.deliver(&edit, 1).await?;
    assert_eq!(answer["hints"], 0, "{answer}");
    assert_eq!(answer["duplicates"], 1, "{answer}");
    both.reverse();
    let answer = env.deliver(&both, 3).await?;
    assert_eq!(answer["hints"], 0, "{answer}");

    // Two edits delivered newest first: the older one is stale, and the document ends with
    // HubSpot's latest value.
    env.fake.edit(CONTACT, &jane, &[("jobtitle", "CFO")]);
    let older = env.fake.take_webhook_events();
    env.fake.edit(CONTACT, &jane, &[("jobtitle", "COO")]);
    let newer = env.fake.take_webhook_events();
    assert_eq!(env.deliver(&newer, 0).await?["hints"], 1);
    let answer = env.deliver(&older, 0).await?;
    assert_eq!(answer["hints"], 0, "{answer}");
    assert_eq!(answer["stale"], 1, "{answer}");
    env.wait_for(&doc_id, |r| r["job_title"] == "COO").await?;

    // An archived contact announced by webhook is removed by the round it triggers.
    env.fake.archive(CONTACT, &jane);
    let deletion = env.fake.take_webhook_events();
    assert_eq!(env.deliver(&deletion, 0).await?["hints"], 1);
    env.wait_for(&doc_id, |r| r["deleted"] == true).await?;
    // The round after settles nothing more.
    env.quiet_round().await?;
    Ok(())
}

#[tokio::test]
async fn refused_deliveries_change_nothing() -> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    let jane = fake.insert(CONTACT, &[("firstname", "Jane"), ("jobtitle", "CTO")]);
    let env = Env::with(fake, None).await?;
    env.api.sync(BRIDGE).await?;
    env.fake.take_webhook_events();
    env.fake.edit(CONTACT, &jane, &[("jobtitle", "CEO")]);
    let events = env.fake.take_webhook_events();
    let body = serde_json::to_vec(&events)?;
    let searches = env.searches();

    let cases = [
        (
            "wrong secret",
            Signing {
                secret: "not-the-secret",
                ..Signing::hubspot()
            },
            401,
        ),
        (
            "signed over the address it reached, not public_url",
            Signing {
                uri: format!("{}/webhooks/hubspot/{BRIDGE}", env.server.http_url()),
                ..Signing::hubspot()
            },
            401,
        ),
        (
            "timestamp older than 5 minutes",
            Signing {
                timestamp_ms: now_ms() - 6 * 60 * 1000,
                ..Signing::hubspot()
            },
            401,
        ),
    ];
    for (what, signing, want) in cases {
        let (status, answer) = env.deliver_raw(body.clone(), &signing).await?;
        assert_eq!(status, want, "{what}: {answer}");
    }
    // The body is not the signed one.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let signing = Signing::hubspot();
    let timestamp = signing.timestamp_ms.to_string();
    let signature = sign_v3(
        CLIENT_SECRET.as_bytes(),
        "POST",
        &signing.uri,
        &body,
        &timestamp,
    );
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/webhooks/hubspot/{BRIDGE}",
            env.server.http_url()
        ))
        .header(SIGNATURE_HEADER, signature)
        .header(TIMESTAMP_HEADER, &timestamp)
        .body(tampered)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);
    // No headers at all.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/webhooks/hubspot/{BRIDGE}",
            env.server.http_url()
        ))
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);
    // Signed correctly, but not a delivery.
    for malformed in [
        &b"{\"not\": \"an array\"}"[..],
        b"[{\"subscriptionType\": 7}]",
        b"[{\"subscriptionType\": \"contact.propertyChange\", \"occurredAt\": 1}]",
    ] {
        let (status, answer) = env
            .deliver_raw(malformed.to_vec(), &Signing::hubspot())
            .await?;
        assert_eq!(status, 400, "{answer}");
    }
    // Another bridge id.
    let resp = reqwest::Client::new()
        .post(format!("{}/webhooks/hubspot/nope", env.server.http_url()))
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 404);

    // No round ran, and the document still has the old value.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.searches(),
        searches,
        "a refused delivery triggered a round"
    );
    let (doc_id, record) = env.only_contact().await?;
    assert_eq!(record["job_title"], "CTO");
    // The inbox remembered none of them: the genuine delivery is news.
    let answer = env.deliver(&events, 0).await?;
    assert_eq!(answer["hints"], 1, "{answer}");
    assert_eq!(answer["duplicates"], 0, "{answer}");
    env.wait_for(&doc_id, |r| r["job_title"] == "CEO").await?;
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Companies, deals and associations

const COMPANY: ObjectType = ObjectType::Company;
const DEAL: ObjectType = ObjectType::Deal;

fn url(id: &DocumentId) -> String {
    format!("automerge:{id}")
}

/// Companies and deals become `company` and `deal` documents linked under the bridge id; the
/// associations contact -> company, deal -> company and deal -> contact become `automerge:`
/// references between them; app edits of a deal reach HubSpot once; a deal an app creates with
/// references is created at HubSpot with its associations; quiet rounds write nothing.
#[tokio::test]
async fn companies_and_deals_sync_with_associations_as_references() -> anyhow::Result<()> {
    use driftless_crdt_model::{Deal, DealContact};
    let fake = FakeHubSpot::start().await?;
    let acme = fake.insert(COMPANY, &[("name", "Acme"), ("domain", "acme.example")]);
    let jane = fake.insert(
        CONTACT,
        &[("firstname", "Jane"), ("email", "jane@acme.example")],
    );
    let anvils = fake.insert(
        DEAL,
        &[
            ("dealname", "Anvils"),
            ("amount", "12500.00"),
            ("dealstage", "appointmentscheduled"),
            ("pipeline", "default"),
        ],
    );
    assert!(fake.associate(CONTACT, &jane, COMPANY, &acme, 1));
    assert!(fake.associate(DEAL, &anvils, COMPANY, &acme, 5));
    assert!(fake.associate(DEAL, &anvils, CONTACT, &jane, 3));
    let env = Env::with_objects(fake, None, &[CONTACT, COMPANY, DEAL]).await?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    let status = env.api.bridge_status(BRIDGE).await?;
    assert_eq!(status["last_error"], Value::Null, "{status}");

    let one = |record_type: &'static str| {
        let api = env.api.clone();
        async move {
            let all = api.records(record_type).await?;
            match <[_; 1]>::try_from(all) {
                Ok([one]) => anyhow::Ok(one),
                Err(all) => bail!("expected one {record_type}, got {all:?}"),
            }
        }
    };
    let (company_doc, company) = one("company").await?;
    assert_eq!(company["name"], "Acme", "{company}");
    assert_eq!(company["links"][BRIDGE]["id"], acme.as_str(), "{company}");
    let (contact_doc, contact) = one("contact").await?;
    assert_eq!(contact["links"][BRIDGE]["id"], jane.as_str(), "{contact}");
    assert_eq!(contact["company"], url(&company_doc), "{contact}");
    let (deal_doc, deal) = one("deal").await?;
    assert_eq!(deal["links"][BRIDGE]["id"], anvils.as_str(), "{deal}");
    assert_eq!(deal["amount"], "12500.00", "{deal}");
    assert_eq!(deal["company"], url(&company_doc), "{deal}");
    let contacts = deal["contacts"].as_object().context("deal contacts")?;
    assert_eq!(
        contacts.keys().collect::<Vec<_>>(),
        vec![&url(&contact_doc)],
        "{deal}"
    );
    env.quiet_round().await?;

    // The app changes the amount: one PATCH of that property.
    let mut app = app_open(&env.server.url(), &deal_doc, "deal-app").await?;
    {
        let d = app.docs.get_mut(&deal_doc).context("the app's deal")?;
        let old = driftless_crdt_model::read_deal(&d.doc)?;
        let mut new = old.clone();
        new.amount = Some("13000.00".into());
        driftless_crdt_model::apply_deal_diff(&mut d.doc, &old, &new)?;
        d.doc.commit();
    }
    driftless_tests::dav_bridge::app_wait_acknowledged(&mut app, &deal_doc).await?;
    let before = env.fake.write_count();
    env.api.sync(BRIDGE).await?;
    let writes = env.writes();
    let new_writes = &writes[before..];
    assert_eq!(new_writes.len(), 1, "{new_writes:?}");
    assert_eq!(new_writes[0].method, "PATCH", "{new_writes:?}");
    let stored = env.fake.get(DEAL, &anvils).context("the deal")?;
    assert_eq!(stored["amount"], "13000.00");
    env.quiet_round().await?;

    // A deal the app creates with references is created with its associations.
    let mut doc = automerge::AutoCommit::new();
    let new_deal = Deal {
        name: Some("Rockets".into()),
        amount: Some("990.50".into()),
        company: Some(url(&company_doc)),
        contacts: [(url(&contact_doc), DealContact::default())]
            .into_iter()
            .collect(),
        links: [(BRIDGE.to_owned(), Link::default())].into_iter().collect(),
        ..Deal::default()
    };
    driftless_crdt_model::create_deal(&mut doc, &new_deal)?;
    let rockets_doc = app_add(&mut app, doc).await?;
    env.api.sync(BRIDGE).await?;
    assert_eq!(env.fake.live_count(DEAL), 2);
    let rockets = env.api.record("deal", &rockets_doc).await?;
    let rockets_id = rockets["links"][BRIDGE]["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .with_context(|| format!("the new deal is not linked: {rockets}"))?
        .to_owned();
    assert_eq!(
        env.fake.get(DEAL, &rockets_id).context("rockets")?["amount"],
        "990.50"
    );
    assert_eq!(
        env.fake.associated(DEAL, &rockets_id, COMPANY),
        vec![acme.clone()]
    );
    assert_eq!(
        env.fake.associated(DEAL, &rockets_id, CONTACT),
        vec![jane.clone()]
    );
    env.quiet_round().await?;
    env.quiet_round().await?;
    assert_eq!(env.api.records("deal").await?.len(), 2);
    assert_eq!(env.api.records("company").await?.len(), 1);
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// authority = "latest"

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The app's phone edit of contact `id`, committed with `time` (seconds) as Automerge clients
/// stamp their changes, and acknowledged by the server.
async fn app_phone_edit(
    app: &mut RustClient,
    id: &DocumentId,
    value: &str,
    time: i64,
) -> anyhow::Result<()> {
    let d = app.docs.get_mut(id).context("the app's contact")?;
    let old = driftless_crdt_model::read_contact(&d.doc)?;
    let mut new = old.clone();
    let slot = new.phones.values_mut().next().context("a phone slot")?;
    slot.value = value.to_owned();
    driftless_crdt_model::apply_contact_diff(&mut d.doc, &old, &new)?;
    d.doc
        .commit_with(automerge::transaction::CommitOptions::default().with_time(time));
    driftless_tests::dav_bridge::app_wait_acknowledged(app, id).await
}

/// With `authority = "latest"` for contact phones, a concurrent phone edit in the app and in
/// HubSpot is won by the newer one, whichever side it is and whatever Automerge's own pick: the
/// app's newer value is written to HubSpot once; HubSpot's newer value is kept and nothing is
/// written back; later rounds are quiet.
#[tokio::test]
async fn the_latest_edit_wins_a_conflict_and_is_written_back_once() -> anyhow::Result<()> {
    use driftless_server::config::{Authority, Policy};
    let fake = FakeHubSpot::start().await?;
    // Jane was created ten minutes ago (HubSpot's clock).
    fake.advance(-600_000);
    let jane = fake.insert(
        CONTACT,
        &[
            ("firstname", "Jane"),
            ("email", "jane@example.com"),
            ("phone", "+1 415 555 0100"),
        ],
    );
    let latest = vec![Policy {
        record_type: "contact".into(),
        field: "phones".into(),
        authority: Authority::Latest,
    }];
    let env = Env::with_policies(fake, None, &[CONTACT], latest).await?;
    env.api.sync(BRIDGE).await?;
    let (doc_id, _) = env.only_contact().await?;
    let mut app = app_open(&env.server.url(), &doc_id, "latest-app").await?;
    let phone_of = |record: &Value| -> Vec<String> {
        record["phones"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, p)| p["value"].as_str().unwrap_or("").to_owned())
            .collect()
    };

    // HubSpot's edit two minutes ago, the app's now: the app's value wins and reaches HubSpot
    // in one PATCH.
    env.fake.advance(480_000);
    env.fake
        .edit(CONTACT, &jane, &[("phone", "+1 415 555 0142")]);
    app_phone_edit(&mut app, &doc_id, "+1 415 555 0199", unix_seconds()).await?;
    let before = env.fake.write_count();
    env.api.sync(BRIDGE).await?;
    let record = env.api.record("contact", &doc_id).await?;
    assert_eq!(phone_of(&record), vec!["+1 415 555 0199"], "{record}");
    let writes = env.writes();
    assert_eq!(writes.len() - before, 1, "{:?}", &writes[before..]);
    assert_eq!(
        env.fake.get(CONTACT, &jane).context("jane")?["phone"],
        "+1 415 555 0199"
    );
    env.quiet_round().await?;

    // The app's edit a minute ago (its clock), HubSpot's now: HubSpot's value is kept and
    // nothing is written back.
    app_phone_edit(&mut app, &doc_id, "+1 415 555 0177", unix_seconds() - 60).await?;
    env.fake.advance(120_000);
    env.fake
        .edit(CONTACT, &jane, &[("phone", "+1 415 555 0188")]);
    let before = env.fake.write_count();
    env.api.sync(BRIDGE).await?;
    let record = env.api.record("contact", &doc_id).await?;
    assert_eq!(phone_of(&record), vec!["+1 415 555 0188"], "{record}");
    assert_eq!(
        env.fake.write_count(),
        before,
        "{:?}",
        &env.writes()[before..]
    );
    env.quiet_round().await?;
    assert_eq!(
        env.fake.get(CONTACT, &jane).context("jane")?["phone"],
        "+1 415 555 0188"
    );
    Ok(())
}

// ------------------------------------------------------------------------------------------------
// Merges made in HubSpot

/// Two HubSpot contacts merged in HubSpot (`hs_merged_object_ids` on the survivor) merge their
/// documents: the survivor's keeps every field, the absorbed one points at it (`merged_into`) and
/// is unlinked there; nothing is archived at HubSpot; later rounds are quiet. A merge that makes a
/// new id moves the link to it.
#[tokio::test]
async fn a_merge_in_hubspot_merges_the_documents_and_deletes_nothing() -> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    let first = fake.insert(
        CONTACT,
        &[
            ("firstname", "Jane"),
            ("lastname", "Doe"),
            ("email", "jane@a.example"),
        ],
    );
    let second = fake.insert(
        CONTACT,
        &[
            ("firstname", "Jane"),
            ("lastname", "Doe"),
            ("email", "jane@b.example"),
            ("jobtitle", "CTO"),
        ],
    );
    let env = Env::with(fake, None).await?;
    env.api.sync(BRIDGE).await?;
    let doc_of = |hs: &str| {
        let api = env.api.clone();
        let hs = hs.to_owned();
        async move {
            api.record_where("contact", &format!("linked to {hs}"), |r| {
                r["links"][BRIDGE]["id"] == hs.as_str() && r["links"][BRIDGE]["removed"] == false
            })
            .await
        }
    };
    let (survivor_doc, _) = doc_of(&first).await?;
    let (absorbed_doc, _) = doc_of(&second).await?;

    env.fake.take_webhook_events();
    assert_eq!(
        env.fake.merge(CONTACT, &first, &second),
        Some(first.clone())
    );
    // HubSpot's merge webhook (delivered twice) brings the merge without `/sync`.
    let merge_events = env.fake.take_webhook_events();
    assert!(
        merge_events.iter().any(|e| e["subscriptionType"]
            .as_str()
            .is_some_and(|t| t.ends_with(".merge"))),
        "{merge_events:?}"
    );
    env.deliver(&merge_events, 0).await?;
    env.deliver(&merge_events, 1).await?;
    env.wait_for(&absorbed_doc, |r| r["merged_into"].is_string())
        .await?;
    let survivor = env.api.record("contact", &survivor_doc).await?;
    assert_eq!(survivor["job_title"], "CTO", "{survivor}");
    assert_eq!(
        survivor["links"][BRIDGE]["id"],
        first.as_str(),
        "{survivor}"
    );
    let absorbed = env.api.record("contact", &absorbed_doc).await?;
    assert_eq!(absorbed["merged_into"], url(&survivor_doc), "{absorbed}");
    assert_eq!(absorbed["links"][BRIDGE]["removed"], true, "{absorbed}");
    assert_eq!(absorbed["deleted"], false, "{absorbed}");
    let archives: Vec<LoggedRequest> = env
        .writes()
        .into_iter()
        .filter(|r| r.method == "DELETE" || r.path.contains("archive"))
        .collect();
    assert!(archives.is_empty(), "{archives:?}");
    assert_eq!(env.fake.live_count(CONTACT), 1);
    env.api.sync(BRIDGE).await?;
    env.quiet_round().await?;

    // A merge that creates a new record id: the survivor document follows it.
    env.fake.set_merge_creates_new_id(true);
    let third = env.fake.insert(
        CONTACT,
        &[("firstname", "Max"), ("email", "max@example.com")],
    );
    env.api.sync(BRIDGE).await?;
    let (third_doc, _) = doc_of(&third).await?;
    let new_id = env
        .fake
        .merge(CONTACT, &third, &first)
        .context("the merge's new id")?;
    assert_ne!(new_id, third);
    env.api.sync(BRIDGE).await?;
    let (now_linked, record) = doc_of(&new_id).await?;
    assert!(
        now_linked == third_doc || now_linked == survivor_doc,
        "the new id is linked to a document that was merged: {record}"
    );
    let other = if now_linked == third_doc {
        &survivor_doc
    } else {
        &third_doc
    };
    let other = env.api.record("contact", other).await?;
    assert_eq!(other["merged_into"], url(&now_linked), "{other}");
    assert_eq!(env.fake.live_count(CONTACT), 1);
    env.api.sync(BRIDGE).await?;
    env.quiet_round().await?;
    Ok(())
}

/// A phone the app adds reaches HubSpot in its own slot, and a later HubSpot edit of that number
/// edits the same slot (never a second entry).
#[tokio::test]
async fn a_phone_the_app_adds_stays_one_slot_when_hubspot_edits_it() -> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    let jane = fake.insert(
        CONTACT,
        &[
            ("firstname", "Jane"),
            ("email", "jane@example.com"),
            ("phone", "+1 415 555 0100"),
        ],
    );
    let env = Env::with(fake, None).await?;
    env.api.sync(BRIDGE).await?;
    let (doc_id, _) = env.only_contact().await?;
    let mut app = app_open(&env.server.url(), &doc_id, "phone-adder").await?;
    app_edit_contact(&mut app, &doc_id, |c| {
        c.phones.insert(
            "zz-app-slot".into(),
            ContactPoint {
                value: "+1 650 253 0000".into(),
                label: Some("cell".into()),
                ..ContactPoint::default()
            },
        );
    })
    .await?;
    env.api.sync(BRIDGE).await?;
    let stored = env.fake.get(CONTACT, &jane).context("jane")?;
    assert_eq!(stored["mobilephone"], "+1 650 253 0000", "{stored:?}");
    env.quiet_round().await?;

    env.fake
        .edit(CONTACT, &jane, &[("mobilephone", "+1 650 253 0001")]);
    env.api.sync(BRIDGE).await?;
    let contact = app_contact(&mut app, &doc_id).await?;
    let mut phones: Vec<(&str, &str)> = contact
        .phones
        .iter()
        .map(|(slot, p)| (slot.as_str(), p.value.as_str()))
        .collect();
    phones.sort();
    assert_eq!(
        phones.len(),
        2,
        "the edited number must stay in its slot: {phones:?}"
    );
    assert!(
        phones.contains(&("zz-app-slot", "+1 650 253 0001")),
        "{phones:?}"
    );
    env.quiet_round().await?;
    Ok(())
}
