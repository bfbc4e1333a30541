//! A `salesforce` bridge in the real server, against the fake org: Contacts become `contact`
//! documents (the first listing paged through `nextRecordsUrl`); an app's edit reaches Salesforce
//! as one collection write of only the changed field; quiet rounds write nothing (our own write
//! coming back is not news); Salesforce edits and deletes (the `deleted` endpoint) reach the
//! documents under the delete rules, and an app's delete reaches Salesforce; a purged delete log
//! (`earliestDateAvailable` past the cursor) brings a full listing merged by id, without
//! duplicates; a record Salesforce refuses is a failed job while the others go through;
//! `REQUEST_LIMIT_EXCEEDED` is waited out without a retry storm; a lost create answer is adopted
//! through the external-id upsert; an expired session is refreshed. A bridge with
//! `object = "Account"` syncs `company` documents the same way.
//!
//! Rounds are driven by `POST /v1/bridges/{id}/sync` (counted by the fake's request log).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use driftless_bridges::salesforce::wire::SObjectType;
use driftless_bridges::secret::Secret;
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::{Contact, ContactPoint, Link, Name};
use driftless_server::config::{BridgeConfig, BridgeKind, SalesforceBridgeConfig};
use driftless_tests::TestServer;
use driftless_tests::dav_bridge::{
    Api, app_add, app_contact, app_edit_contact, app_open, app_wait_acknowledged,
};
use driftless_tests::fakes::salesforce::{
    FakeSalesforce, LoggedRequest, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, OAUTH_REFRESH_TOKEN,
};
use driftless_tests::rust_client::RustClient;
use serde_json::{Value, json};

const BRIDGE: &str = "sf";
const CONTACT: SObjectType = SObjectType::Contact;
const ID_FIELD: &str = "Driftless_Id__c";

struct Options {
    object: SObjectType,
    id_field: Option<&'static str>,
    request_limit_wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            object: CONTACT,
            id_field: None,
            request_limit_wait: Duration::from_secs(900),
        }
    }
}

fn bridge(fake: &FakeSalesforce, options: &Options) -> BridgeConfig {
    BridgeConfig {
        id: BRIDGE.into(),
        kind: BridgeKind::Salesforce,
        workspace: "default".into(),
        // Rounds are driven by the test (apart from the one at startup).
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
            api_version: "v62.0".into(),
            client_id: OAUTH_CLIENT_ID.into(),
            client_secret: Some(Secret::new(OAUTH_CLIENT_SECRET)),
            refresh_token: Secret::new(OAUTH_REFRESH_TOKEN),
            token_url: fake.token_url(),
            object: options.object,
            id_field: options.id_field.map(str::to_owned),
            request_limit_wait: options.request_limit_wait,
        }),
    }
}

struct Env {
    fake: FakeSalesforce,
    server: TestServer,
    api: Api,
}

impl Env {
    async fn with(fake: FakeSalesforce, options: Options) -> anyhow::Result<Self> {
        let config = bridge(&fake, &options);
        let server = TestServer::start_with_config(move |c| {
            c.bridges = vec![config.clone()];
        })
        .await?;
        server.wait_ready(Duration::from_secs(10)).await?;
        let api = Api::new(server.http_url());
        Ok(Self { fake, server, api })
    }

    fn write_count(&self) -> usize {
        self.fake.writes().len()
    }

    /// A round that must pull, push and delete nothing, and send Salesforce no write.
    async fn quiet_round(&self) -> anyhow::Result<()> {
        let before = self.write_count();
        self.api.quiet_round(BRIDGE).await?;
        let writes = self.fake.writes();
        if writes.len() != before {
            bail!("a quiet round wrote to Salesforce: {:?}", &writes[before..]);
        }
        Ok(())
    }

    /// The contact document linked to Salesforce record `id` (fails on none or several).
    async fn doc_of(&self, id: &str) -> anyhow::Result<(DocumentId, Value)> {
        self.api
            .record_where("contact", &format!("linked to {id}"), |r| {
                r["links"][BRIDGE]["id"] == id
            })
            .await
    }
}

fn jane() -> Value {
    json!({"FirstName": "Jane", "LastName": "Doe", "Email": "jane@example.com",
           "Phone": "+1 415 555 0100", "Title": "CTO", "Custom__c": "kept"})
}

fn person(i: usize) -> Value {
    json!({"FirstName": format!("Person{i}"), "LastName": "Test", "Email": format!("p{i}@example.com")})
}

#[tokio::test]
async fn contacts_become_documents_and_an_app_edit_is_one_write_of_the_changed_field()
-> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    fake.set_query_batch(2);
    let jane = fake.insert(CONTACT, jane());
    for i in 0..3 {
        fake.insert(CONTACT, person(i));
    }
    let env = Env::with(fake, Options::default()).await?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    assert_eq!(env.api.records("contact").await?.len(), 4);
    assert!(
        env.fake
            .requests()
            .iter()
            .any(|r| r.path.contains("/query/01gFAKE")),
        "the listing followed nextRecordsUrl"
    );

    let (doc_id, record) = env.doc_of(&jane).await?;
    assert_eq!(record["job_title"], "CTO", "{record}");
    let mut app = app_open(&env.server.url(), &doc_id, "salesforce-app").await?;
    let contact = app_contact(&mut app, &doc_id).await?;
    assert_eq!(contact.name.given.as_deref(), Some("Jane"));
    assert_eq!(contact.name.family.as_deref(), Some("Doe"));
    let phones: Vec<&str> = contact.phones.values().map(|p| p.value.as_str()).collect();
    assert_eq!(phones, ["+1 415 555 0100"]);

    env.quiet_round().await?;
    env.quiet_round().await?;

    // The app edits the phone: one collection PATCH carrying the id and that field only.
    let before = env.write_count();
    app_edit_contact(&mut app, &doc_id, |c| {
        if let Some(phone) = c.phones.values_mut().next() {
            phone.value = "+1 415 555 0199".into();
        }
    })
    .await?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let writes = env.fake.writes();
    assert_eq!(writes.len(), before + 1, "{:?}", &writes[before..]);
    let patch = &writes[before];
    assert_eq!(patch.method, "PATCH");
    assert!(patch.path.ends_with("/composite/sobjects"), "{patch:?}");
    assert_eq!(patch.body["allOrNone"], false);
    assert_eq!(
        patch.body["records"],
        json!([{"attributes": {"type": "Contact"}, "Id": jane, "Phone": "+1 415 555 0199"}])
    );
    let stored = env.fake.get(CONTACT, &jane).context("jane")?;
    assert_eq!(stored["Phone"], "+1 415 555 0199");
    assert_eq!(stored["Custom__c"], "kept", "unmapped fields are untouched");

    // Our own write coming back through the `updated` window is not news.
    env.quiet_round().await?;
    env.quiet_round().await?;

    // A Salesforce edit reaches the app, once.
    env.fake.edit(CONTACT, &jane, json!({"Title": "CEO"}));
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pulled"], 1, "{report}");
    let contact = app_contact(&mut app, &doc_id).await?;
    assert_eq!(contact.job_title.as_deref(), Some("CEO"));
    assert_eq!(
        contact.phones.values().next().map(|p| p.value.as_str()),
        Some("+1 415 555 0199")
    );
    env.quiet_round().await?;
    Ok(())
}

#[tokio::test]
async fn deletes_follow_the_delete_rules_both_ways() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    let ids: Vec<String> = (0..3).map(|i| fake.insert(CONTACT, person(i))).collect();
    let env = Env::with(fake, Options::default()).await?;
    env.api.sync(BRIDGE).await?;
    assert_eq!(env.api.records("contact").await?.len(), 3);

    // Deleted in Salesforce: the `deleted` endpoint reports it; its only link, so a tombstone.
    assert!(env.fake.delete(CONTACT, &ids[1]));
    let before = env.write_count();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["deleted"], 1, "{report}");
    assert_eq!(
        env.write_count(),
        before,
        "a removal writes nothing to Salesforce"
    );
    let (_, gone) = env
        .api
        .record_where("contact", "deleted", |r| r["deleted"] == true)
        .await?;
    assert_eq!(gone["name"]["given"], "Person1");
    assert_eq!(gone["links"][BRIDGE]["removed"], true, "{gone}");
    assert!(
        env.fake
            .requests()
            .iter()
            .any(|r| r.path.contains("/sobjects/Contact/deleted")),
    );
    assert_eq!(env.api.bridge_status(BRIDGE).await?["linked_records"], 2);
    env.quiet_round().await?;

    // Deleted in the app: one collection DELETE of that id.
    let (doc_id, _) = env.doc_of(&ids[2]).await?;
    let mut app = app_open(&env.server.url(), &doc_id, "deleting-app").await?;
    app_edit_contact(&mut app, &doc_id, |c| c.deleted = true).await?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["deleted"], 1, "{report}");
    let writes = env.fake.writes();
    let delete = writes.last().context("a delete")?;
    assert_eq!(delete.method, "DELETE");
    assert_eq!(delete.query["ids"], ids[2]);
    assert_eq!(delete.query["allOrNone"], "false");
    assert!(env.fake.get(CONTACT, &ids[2]).is_none());
    assert!(env.fake.get(CONTACT, &ids[0]).is_some());
    env.quiet_round().await?;
    assert_eq!(env.api.bridge_status(BRIDGE).await?["linked_records"], 1);
    Ok(())
}

#[tokio::test]
async fn a_purged_delete_log_brings_a_merging_resync_without_duplicates() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    let ids: Vec<String> = (0..3).map(|i| fake.insert(CONTACT, person(i))).collect();
    let env = Env::with(fake, Options::default()).await?;
    env.api.sync(BRIDGE).await?;
    assert_eq!(env.api.records("contact").await?.len(), 3);

    // While the bridge is not looking: an edit, a create, a delete, and the delete log purged.
    env.fake.edit(CONTACT, &ids[0], json!({"Title": "Edited"}));
    let added = env.fake.insert(CONTACT, person(9));
    env.fake.delete(CONTACT, &ids[1]);
    env.fake.purge_delete_log();
    let before = env.fake.requests().len();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    assert_eq!(
        report["deleted"], 1,
        "found missing from the listing: {report}"
    );
    let listed = env.fake.requests()[before..].iter().any(|r| {
        r.query
            .get("q")
            .is_some_and(|q| q.ends_with("ORDER BY SystemModstamp, Id"))
    });
    assert!(listed, "a full listing ran");

    // One document per Salesforce record, the known ones updated in place.
    let records = env.api.records("contact").await?;
    assert_eq!(records.len(), 4, "{records:?}");
    let (_, edited) = env.doc_of(&ids[0]).await?;
    assert_eq!(edited["job_title"], "Edited");
    let (_, deleted) = env.doc_of(&ids[1]).await?;
    assert_eq!(deleted["deleted"], true);
    env.doc_of(&ids[2]).await?;
    env.doc_of(&added).await?;
    assert!(
        env.write_count() == 0,
        "a resync writes nothing to Salesforce"
    );

    env.quiet_round().await?;
    assert_eq!(env.api.records("contact").await?.len(), 4);
    Ok(())
}

#[tokio::test]
async fn a_record_refused_in_a_collection_write_is_a_failed_job_while_the_others_go_through()
-> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    let refused = fake.insert(CONTACT, person(0));
    let accepted: Vec<String> = (1..3).map(|i| fake.insert(CONTACT, person(i))).collect();
    let env = Env::with(fake, Options::default()).await?;
    env.api.sync(BRIDGE).await?;
    env.fake.reject_value(CONTACT, "Title", "Forbidden");

    // Three apps edit three contacts; one edit breaks a validation rule.
    let (refused_doc, _) = env.doc_of(&refused).await?;
    let mut edits = vec![(refused_doc.clone(), "Forbidden".to_owned())];
    for (i, id) in accepted.iter().enumerate() {
        edits.push((env.doc_of(id).await?.0, format!("Allowed {i}")));
    }
    for (i, (doc, title)) in edits.iter().enumerate() {
        let mut app = app_open(&env.server.url(), doc, &format!("editing-app-{i}")).await?;
        app_edit_contact(&mut app, doc, |c| c.job_title = Some(title.clone())).await?;
    }

    let before = env.write_count();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(
        report["state"], "idle",
        "a refused record does not fail the round: {report}"
    );
    assert_eq!(report["pushed"], 2, "{report}");
    let writes = env.fake.writes();
    assert_eq!(
        writes.len(),
        before + 1,
        "one collection call: {:?}",
        &writes[before..]
    );
    let call = &writes[before];
    assert_eq!(call.body["allOrNone"], false);
    assert_eq!(
        call.body["records"].as_array().map(Vec::len),
        Some(3),
        "{call:?}"
    );
    for (i, id) in accepted.iter().enumerate() {
        let stored = env.fake.get(CONTACT, id).context("accepted")?;
        assert_eq!(stored["Title"], format!("Allowed {i}"));
    }
    assert!(
        env.fake
            .get(CONTACT, &refused)
            .context("refused")?
            .get("Title")
            .is_none()
    );
    let status = env.api.bridge_status(BRIDGE).await?;
    assert_eq!(status["outbox_pending"], 1, "{status}");
    let last_error = status["last_error"].as_str().unwrap_or_default();
    assert!(
        last_error.contains("FIELD_CUSTOM_VALIDATION_EXCEPTION")
            && last_error.contains(&refused_doc.to_string()),
        "{status}"
    );

    // The rule is lifted: the failed job goes through on its retry, alone.
    env.fake.clear_rules();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = env.write_count();
        env.api.sync(BRIDGE).await?;
        if env.fake.get(CONTACT, &refused).context("refused")?["Title"] == "Forbidden" {
            let writes = env.fake.writes();
            let retry = writes.last().context("the retry")?;
            assert_eq!(env.write_count(), before + 1);
            assert_eq!(retry.body["records"].as_array().map(Vec::len), Some(1));
            break;
        }
        if Instant::now() > deadline {
            bail!("the failed job was not retried");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(env.api.bridge_status(BRIDGE).await?["outbox_pending"], 0);
    env.quiet_round().await?;
    Ok(())
}

#[tokio::test]
async fn request_limit_exceeded_is_waited_out_without_a_retry_storm() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    fake.insert(CONTACT, person(0));
    let env = Env::with(
        fake,
        Options {
            request_limit_wait: Duration::from_secs(2),
            ..Options::default()
        },
    )
    .await?;
    env.api.sync(BRIDGE).await?;
    let late = env.fake.insert(CONTACT, person(1));
    env.fake.inject_request_limit(1);
    let (status, answer) = env.api.try_sync(BRIDGE).await?;
    assert_ne!(status, 200, "{answer}");
    assert!(
        answer.to_string().contains("REQUEST_LIMIT_EXCEEDED"),
        "{answer}"
    );
    let limited = |env: &Env| {
        env.fake
            .requests()
            .iter()
            .filter(|r| r.status == 403)
            .count()
    };
    assert_eq!(limited(&env), 1);
    // Nothing is asked while the wait lasts...
    let asked = env.fake.requests().len();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        env.fake.requests().len(),
        asked,
        "no request during the wait"
    );
    // ...then the bridge carries on by itself.
    let deadline = Instant::now() + Duration::from_secs(15);
    while env.doc_of(&late).await.is_err() {
        if Instant::now() > deadline {
            bail!("the round after the wait never ran");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(limited(&env), 1, "exactly one request met the limit");
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

#[tokio::test]
async fn a_lost_create_answer_is_adopted_through_the_external_id() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    fake.define_field(CONTACT, ID_FIELD, true);
    let env = Env::with(
        fake,
        Options {
            id_field: Some(ID_FIELD),
            ..Options::default()
        },
    )
    .await?;
    env.api.sync(BRIDGE).await?;
    let mut app = RustClient::connect(&env.server.url(), "creating-app").await?;
    let doc_id = app_add(&mut app, app_contact_doc()?).await?;

    env.fake.lose_write_answers(1);
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    let live = env.fake.live(CONTACT);
    assert_eq!(live.len(), 1, "exactly one contact at Salesforce: {live:?}");
    let (id, stored) = live.into_iter().next().context("the contact")?;
    assert_eq!(stored[ID_FIELD], doc_id.to_string());
    assert_eq!(stored["LastName"], "Lovelace");
    let upserts: Vec<LoggedRequest> = env
        .fake
        .writes()
        .into_iter()
        .filter(|r| {
            r.path
                .ends_with(&format!("/composite/sobjects/Contact/{ID_FIELD}"))
        })
        .collect();
    assert_eq!(upserts[0].status, 504, "{upserts:?}");

    let (linked, _) = env.doc_of(&id).await?;
    assert_eq!(linked, doc_id);
    env.quiet_round().await?;
    env.quiet_round().await?;
    assert_eq!(env.api.records("contact").await?.len(), 1);
    assert_eq!(env.fake.live(CONTACT).len(), 1);
    Ok(())
}

#[tokio::test]
async fn an_expired_session_is_refreshed_within_the_round() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    let id = fake.insert(CONTACT, person(0));
    let env = Env::with(fake, Options::default()).await?;
    env.api.sync(BRIDGE).await?;
    let tokens = env.fake.token_requests();
    env.fake.expire_sessions();
    env.fake
        .edit(CONTACT, &id, json!({"Title": "After the timeout"}));
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    assert_eq!(report["pulled"], 1, "{report}");
    assert_eq!(env.fake.token_requests(), tokens + 1);
    let (_, record) = env.doc_of(&id).await?;
    assert_eq!(record["job_title"], "After the timeout");
    Ok(())
}

/// `object = "Account"`: Accounts become `company` documents; an app edit of the name is one
/// collection PATCH of `Name` alone; a Salesforce edit reaches the document; quiet rounds write
/// nothing.
#[tokio::test]
async fn accounts_become_company_documents_and_an_app_edit_is_one_write() -> anyhow::Result<()> {
    const ACCOUNT: SObjectType = SObjectType::Account;
    let fake = FakeSalesforce::start().await?;
    let acme = fake.insert(
        ACCOUNT,
        json!({"Name": "Acme", "Website": "https://www.acme.example/", "Industry": "Tools"}),
    );
    let options = Options {
        object: ACCOUNT,
        ..Options::default()
    };
    let env = Env::with(fake, options).await?;
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["state"], "idle", "{report}");
    assert!(env.api.records("contact").await?.is_empty());
    let (doc_id, record) = env
        .api
        .record_where("company", &format!("linked to {acme}"), |r| {
            r["links"][BRIDGE]["id"] == acme.as_str()
        })
        .await?;
    assert_eq!(record["name"], "Acme", "{record}");
    assert_eq!(record["industry"], "Tools", "{record}");
    env.quiet_round().await?;

    let mut app = app_open(&env.server.url(), &doc_id, "salesforce-app").await?;
    app.sync_until_quiet(Duration::from_millis(300)).await?;
    {
        let d = app
            .docs
            .get_mut(&doc_id)
            .context("the app holds the company")?;
        let old = driftless_crdt_model::read_company(&d.doc)?;
        let mut new = old.clone();
        new.name = Some("Acme Corporation".into());
        driftless_crdt_model::apply_company_diff(&mut d.doc, &old, &new)?;
        d.doc.commit();
    }
    app_wait_acknowledged(&mut app, &doc_id).await?;
    let before = env.write_count();
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pushed"], 1, "{report}");
    let writes = env.fake.writes();
    assert_eq!(writes.len(), before + 1, "{:?}", &writes[before..]);
    assert_eq!(
        writes[before].body["records"],
        json!([{"attributes": {"type": "Account"}, "Id": acme, "Name": "Acme Corporation"}])
    );
    assert_eq!(
        env.fake.get(ACCOUNT, &acme).context("acme")?["Industry"],
        "Tools"
    );
    env.quiet_round().await?;

    env.fake
        .edit(ACCOUNT, &acme, json!({"Industry": "Robotics"}));
    let report = env.api.sync(BRIDGE).await?;
    assert_eq!(report["pulled"], 1, "{report}");
    let record = env.api.record("company", &doc_id).await?;
    assert_eq!(record["industry"], "Robotics", "{record}");
    assert_eq!(record["name"], "Acme Corporation", "{record}");
    env.quiet_round().await?;
    Ok(())
}
