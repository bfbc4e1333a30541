//! One person across two CRMs (issue #8): a `hubspot` bridge (contacts) and a `salesforce` bridge
//! (`object = "Contact"`) in one workspace, against the fakes, in the real server.
//!
//! - The same person in both (same email, the phone written two ways) is imported as ONE contact
//!   document linked at both, with one phone slot (identity resolution on import).
//! - An edit in one CRM reaches the other through the document exactly once (counted at the
//!   fake), both ways; then rounds of both bridges write nothing.
//! - The same phone edited at once in an app and in HubSpot (`authority = "latest"` for contact
//!   phones): the document, HubSpot and Salesforce end with one value, each system written at most
//!   once, and further rounds of both bridges write nothing (no sync loop between the two CRMs).
//!
//! Rounds are driven by `POST /v1/bridges/{id}/sync`; writes are counted in the fakes' logs.

use std::time::Duration;

use anyhow::{Context, bail};
use driftless_bridges::hubspot::webhook::ObjectType;
use driftless_bridges::salesforce::wire::SObjectType;
use driftless_bridges::secret::Secret;
use driftless_client_protocol::DocumentId;
use driftless_server::config::{
    Authority, BridgeConfig, BridgeKind, HubSpotAuthConfig, HubSpotBridgeConfig, Policy,
    SalesforceBridgeConfig,
};
use driftless_tests::TestServer;
use driftless_tests::dav_bridge::{Api, app_open, app_wait_acknowledged};
use driftless_tests::fakes::hubspot::{self, FakeHubSpot};
use driftless_tests::fakes::salesforce::{
    self, FakeSalesforce, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, OAUTH_REFRESH_TOKEN,
};
use driftless_tests::rust_client::RustClient;
use serde_json::{Value, json};

const HS: &str = "crm";
const SF: &str = "sf";
const HS_CONTACT: ObjectType = ObjectType::Contact;
const SF_CONTACT: SObjectType = SObjectType::Contact;

fn hubspot_bridge(fake: &FakeHubSpot) -> BridgeConfig {
    BridgeConfig {
        id: HS.into(),
        kind: BridgeKind::HubSpot,
        workspace: "default".into(),
        // Rounds are driven by the test (apart from the one at startup).
        poll_interval: Duration::from_secs(3600),
        max_delete_fraction: 1.0,
        url: String::new(),
        username: None,
        password: None,
        hubspot: Some(HubSpotBridgeConfig {
            auth: HubSpotAuthConfig::AccessToken(Secret::new(hubspot::TOKEN)),
            client_secret: None,
            api_base: fake.api_base(),
            id_property: None,
            objects: vec![HS_CONTACT],
        }),
        google: None,
        graph: None,
        salesforce: None,
    }
}

fn salesforce_bridge(fake: &FakeSalesforce) -> BridgeConfig {
    BridgeConfig {
        id: SF.into(),
        kind: BridgeKind::Salesforce,
        workspace: "default".into(),
        poll_interval: Duration::from_secs(3600),
        max_delete_fraction: 1.0,
        url: String::new(),
        username: None,
        password: None,
        google: None,
        hubspot: None,
        graph: None,
        salesforce: Some(SalesforceBridgeConfig {
            instance_url: fake.instance_url(),
            api_version: salesforce::API_VERSION.into(),
            client_id: OAUTH_CLIENT_ID.into(),
            client_secret: Some(Secret::new(OAUTH_CLIENT_SECRET)),
            refresh_token: Secret::new(OAUTH_REFRESH_TOKEN),
            token_url: fake.token_url(),
            object: SF_CONTACT,
            id_field: None,
            request_limit_wait: Duration::from_secs(900),
        }),
    }
}

/// Writes each fake has received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Writes {
    hubspot: usize,
    salesforce: usize,
}

struct Env {
    hubspot: FakeHubSpot,
    salesforce: FakeSalesforce,
    server: TestServer,
    api: Api,
}

impl Env {
    async fn start(
        hubspot: FakeHubSpot,
        salesforce: FakeSalesforce,
        policies: Vec<Policy>,
    ) -> anyhow::Result<Self> {
        let bridges = vec![hubspot_bridge(&hubspot), salesforce_bridge(&salesforce)];
        let server = TestServer::start_with_config(move |c| {
            c.bridges = bridges.clone();
            c.policies = policies.clone();
            c.default_phone_region = Some("US".to_owned());
        })
        .await?;
        server.wait_ready(Duration::from_secs(10)).await?;
        let api = Api::new(server.http_url());
        let env = Self {
            hubspot,
            salesforce,
            server,
            api,
        };
        // The startup rounds are over once these are.
        env.api.sync(HS).await?;
        env.api.sync(SF).await?;
        Ok(env)
    }

    fn writes(&self) -> Writes {
        Writes {
            hubspot: self.hubspot.write_count(),
            salesforce: self.salesforce.writes().len(),
        }
    }

    /// The writes since `before`, for failure messages.
    fn writes_since(&self, before: Writes) -> String {
        let hs: Vec<_> = self
            .hubspot
            .requests()
            .into_iter()
            .filter(hubspot::LoggedRequest::is_write)
            .skip(before.hubspot)
            .map(|r| format!("{} {} {}", r.method, r.path, r.body))
            .collect();
        let sf: Vec<_> = self
            .salesforce
            .writes()
            .into_iter()
            .skip(before.salesforce)
            .map(|r| format!("{} {} {}", r.method, r.path, r.body))
            .collect();
        format!("HubSpot: {hs:?}; Salesforce: {sf:?}")
    }

    /// Rounds of both bridges (twice each) that must pull, push and delete nothing and send
    /// neither CRM a write.
    async fn quiet_rounds(&self) -> anyhow::Result<()> {
        let before = self.writes();
        for _ in 0..2 {
            self.api.quiet_round(HS).await?;
            self.api.quiet_round(SF).await?;
        }
        if self.writes() != before {
            bail!("quiet rounds wrote: {}", self.writes_since(before));
        }
        Ok(())
    }

    /// The only contact document (fails on none or several).
    async fn only_contact(&self) -> anyhow::Result<(DocumentId, Value)> {
        let all = self.api.records("contact").await?;
        match all.as_slice() {
            [one] => Ok(one.clone()),
            _ => bail!("expected exactly one contact, got {}: {all:?}", all.len()),
        }
    }

    fn hubspot_prop(&self, id: &str, prop: &str) -> anyhow::Result<String> {
        let props = self
            .hubspot
            .get(HS_CONTACT, id)
            .with_context(|| format!("HubSpot contact {id}"))?;
        Ok(props.get(prop).cloned().unwrap_or_default())
    }

    fn salesforce_field(&self, id: &str, field: &str) -> anyhow::Result<Value> {
        let record = self
            .salesforce
            .get(SF_CONTACT, id)
            .with_context(|| format!("Salesforce contact {id}"))?;
        Ok(record[field].clone())
    }
}

fn phone_values(record: &Value) -> Vec<String> {
    record["phones"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(_, p)| p["value"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// The national number (US) of a phone, whatever its spelling.
fn national(s: &str) -> String {
    let d = digits(s);
    d.strip_prefix('1')
        .filter(|rest| rest.len() == 10)
        .map_or(d.clone(), str::to_owned)
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The app's edit of contact `id`'s only phone, committed with `time` (seconds) as Automerge
/// clients stamp their changes, and acknowledged by the server.
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
    app_wait_acknowledged(app, id).await
}

/// Grace in HubSpot (with a job title) and in Salesforce (without), the phone written two ways,
/// imported HubSpot first: (document, HubSpot id, Salesforce id), after the settling rounds
/// (Salesforce learns the title once) and quiet rounds.
async fn grace_in_both(env: &Env) -> anyhow::Result<(DocumentId, String, String)> {
    let hs = env.hubspot.insert(
        HS_CONTACT,
        &[
            ("firstname", "Grace"),
            ("lastname", "Hopper"),
            ("email", "grace@navy.example"),
            ("phone", "+1 415-555-0100"),
            ("jobtitle", "Rear Admiral"),
        ],
    );
    let sf = env.salesforce.insert(
        SF_CONTACT,
        json!({"FirstName": "Grace", "LastName": "Hopper", "Email": "GRACE@navy.example",
               "Phone": "(415) 555-0100"}),
    );
    let before = env.writes();
    let report = env.api.sync(HS).await?;
    assert_eq!(report["pulled"], 1, "{report}");
    let report = env.api.sync(SF).await?;
    assert_eq!(report["pulled"], 1, "{report}");

    let (doc, record) = env.only_contact().await?;
    assert_eq!(record["links"][HS]["id"], hs.as_str(), "{record}");
    assert_eq!(record["links"][SF]["id"], sf.as_str(), "{record}");
    assert_eq!(
        phone_values(&record).len(),
        1,
        "one phone in two spellings is one slot: {record}"
    );
    assert_eq!(
        record["emails"].as_object().map(serde_json::Map::len),
        Some(1),
        "{record}"
    );
    assert_eq!(record["job_title"], "Rear Admiral", "{record}");
    let suggestions = env.api.get_json("/v1/identity/suggestions").await?;
    assert_eq!(suggestions["suggestions"], json!([]), "{suggestions}");

    // Settling: Salesforce learns the job title, in one write; nothing else is written.
    // Settling: Salesforce learns the job title in one write (the attaching round pushes it);
    // HubSpot already has every value.
    env.api.sync(HS).await?;
    env.api.sync(SF).await?;
    env.api.sync(HS).await?;
    let after = env.writes();
    assert_eq!(
        (
            after.hubspot - before.hubspot,
            after.salesforce - before.salesforce
        ),
        (0, 1),
        "{}",
        env.writes_since(before)
    );
    let patch = &env.salesforce.writes()[before.salesforce];
    assert_eq!(patch.body["records"][0]["Id"], sf.as_str(), "{patch:?}");
    assert_eq!(
        patch.body["records"][0]["Title"], "Rear Admiral",
        "{patch:?}"
    );
    assert_eq!(env.salesforce_field(&sf, "Title")?, "Rear Admiral");
    env.quiet_rounds().await?;
    assert_eq!(env.hubspot.live_count(HS_CONTACT), 1);
    assert_eq!(env.salesforce.live(SF_CONTACT).len(), 1);
    assert_eq!(env.api.records("contact").await?.len(), 1);
    Ok((doc, hs, sf))
}

#[tokio::test]
async fn one_person_in_hubspot_and_salesforce_is_one_document() -> anyhow::Result<()> {
    let env = Env::start(
        FakeHubSpot::start().await?,
        FakeSalesforce::start().await?,
        Vec::new(),
    )
    .await?;
    let (doc, _, _) = grace_in_both(&env).await?;
    let record = env.api.record("contact", &doc).await?;
    assert_eq!(record["name"]["given"], "Grace", "{record}");
    assert_eq!(record["name"]["family"], "Hopper", "{record}");
    Ok(())
}

#[tokio::test]
async fn an_edit_in_one_crm_reaches_the_other_once_both_ways() -> anyhow::Result<()> {
    let env = Env::start(
        FakeHubSpot::start().await?,
        FakeSalesforce::start().await?,
        Vec::new(),
    )
    .await?;
    let (doc, hs, sf) = grace_in_both(&env).await?;

    // HubSpot -> document -> Salesforce, one write.
    env.hubspot
        .edit(HS_CONTACT, &hs, &[("jobtitle", "Commodore")]);
    let before = env.writes();
    let report = env.api.sync(HS).await?;
    assert_eq!(report["pulled"], 1, "{report}");
    let record = env.api.record("contact", &doc).await?;
    assert_eq!(record["job_title"], "Commodore", "{record}");
    let report = env.api.sync(SF).await?;
    assert_eq!(report["pushed"], 1, "{report}");
    env.api.sync(HS).await?;
    env.api.sync(SF).await?;
    let after = env.writes();
    assert_eq!(
        (
            after.hubspot - before.hubspot,
            after.salesforce - before.salesforce
        ),
        (0, 1),
        "{}",
        env.writes_since(before)
    );
    let patch = &env.salesforce.writes()[before.salesforce];
    assert_eq!(
        patch.body["records"],
        json!([{"attributes": {"type": "Contact"}, "Id": sf, "Title": "Commodore"}]),
        "{patch:?}"
    );
    assert_eq!(env.salesforce_field(&sf, "Title")?, "Commodore");
    env.quiet_rounds().await?;

    // Salesforce -> document -> HubSpot, one write.
    env.salesforce
        .edit(SF_CONTACT, &sf, json!({"Title": "Rear Admiral Lower Half"}));
    let before = env.writes();
    let report = env.api.sync(SF).await?;
    assert_eq!(report["pulled"], 1, "{report}");
    let record = env.api.record("contact", &doc).await?;
    assert_eq!(record["job_title"], "Rear Admiral Lower Half", "{record}");
    let report = env.api.sync(HS).await?;
    assert_eq!(report["pushed"], 1, "{report}");
    env.api.sync(SF).await?;
    env.api.sync(HS).await?;
    let after = env.writes();
    assert_eq!(
        (
            after.hubspot - before.hubspot,
            after.salesforce - before.salesforce
        ),
        (1, 0),
        "{}",
        env.writes_since(before)
    );
    assert_eq!(
        env.hubspot_prop(&hs, "jobtitle")?,
        "Rear Admiral Lower Half"
    );
    env.quiet_rounds().await?;
    assert_eq!(env.api.records("contact").await?.len(), 1);
    Ok(())
}

/// The phone edited at once in the app and in HubSpot; `authority = "latest"` for contact phones
/// makes the newer edit win whatever Automerge's own pick.
async fn concurrent_phone_edit(app_is_newer: bool) -> anyhow::Result<()> {
    let hubspot = FakeHubSpot::start().await?;
    // Grace was created in HubSpot ten minutes ago (HubSpot's clock).
    hubspot.advance(-600_000);
    let latest = vec![Policy {
        record_type: "contact".into(),
        field: "phones".into(),
        authority: Authority::Latest,
    }];
    let env = Env::start(hubspot, FakeSalesforce::start().await?, latest).await?;
    let (doc, hs, sf) = grace_in_both(&env).await?;
    let mut app = app_open(&env.server.url(), &doc, "no-loop-app").await?;

    const FROM_APP: &str = "+1 415 555 0199";
    const FROM_HUBSPOT: &str = "(415) 555-0142";
    let before = env.writes();
    if app_is_newer {
        // HubSpot's edit two minutes ago, the app's now.
        env.hubspot.advance(480_000);
        env.hubspot
            .edit(HS_CONTACT, &hs, &[("phone", FROM_HUBSPOT)]);
        app_phone_edit(&mut app, &doc, FROM_APP, unix_seconds()).await?;
    } else {
        // The app's edit a minute ago (its clock), HubSpot's now.
        app_phone_edit(&mut app, &doc, FROM_APP, unix_seconds() - 60).await?;
        env.hubspot.advance(600_000);
        env.hubspot
            .edit(HS_CONTACT, &hs, &[("phone", FROM_HUBSPOT)]);
    }
    let winner = if app_is_newer { FROM_APP } else { FROM_HUBSPOT };

    // Rounds of both bridges, in both orders, until everything has converged.
    for _ in 0..2 {
        env.api.sync(HS).await?;
        env.api.sync(SF).await?;
    }
    env.api.sync(HS).await?;

    let record = env.api.record("contact", &doc).await?;
    let phones = phone_values(&record);
    assert_eq!(phones.len(), 1, "{record}");
    assert_eq!(national(&phones[0]), national(winner), "{record}");
    assert_eq!(
        national(&env.hubspot_prop(&hs, "phone")?),
        national(winner),
        "{:?}",
        env.hubspot.get(HS_CONTACT, &hs)
    );
    let sf_phone = env.salesforce_field(&sf, "Phone")?;
    assert_eq!(
        national(sf_phone.as_str().unwrap_or("")),
        national(winner),
        "{sf_phone}"
    );
    for field in ["MobilePhone", "HomePhone", "OtherPhone"] {
        let v = env.salesforce_field(&sf, field)?;
        assert!(
            v.is_null() || v == "",
            "{field} = {v}: one slot is one field"
        );
    }
    let contact = driftless_tests::dav_bridge::app_contact(&mut app, &doc).await?;
    let in_app: Vec<&str> = contact.phones.values().map(|p| p.value.as_str()).collect();
    assert_eq!(in_app.len(), 1, "{in_app:?}");
    assert_eq!(national(in_app[0]), national(winner), "{in_app:?}");

    // HubSpot is written once when the app's value wins (never when its own does); Salesforce
    // once either way.
    let after = env.writes();
    let expected_hubspot = usize::from(app_is_newer);
    assert_eq!(
        (
            after.hubspot - before.hubspot,
            after.salesforce - before.salesforce
        ),
        (expected_hubspot, 1),
        "{}",
        env.writes_since(before)
    );

    // No loop: further rounds of both bridges write nothing.
    env.quiet_rounds().await?;
    env.quiet_rounds().await?;
    assert_eq!(env.api.records("contact").await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_phone_edited_in_the_app_and_hubspot_at_once_settles_without_a_loop_app_newer()
-> anyhow::Result<()> {
    concurrent_phone_edit(true).await
}

#[tokio::test]
async fn a_phone_edited_in_the_app_and_hubspot_at_once_settles_without_a_loop_hubspot_newer()
-> anyhow::Result<()> {
    concurrent_phone_edit(false).await
}
