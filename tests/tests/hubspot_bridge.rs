//! HubSpot provider layer end to end against the fake: the client, the sans-IO sync decisions
//! and the translation, driven by a small runner written here (the server's generalized bridge
//! runner comes later). Every assertion counts requests or reads the fake's state, so a bridge
//! that duplicates, loops or drops a record fails.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use driftless_bridges::hubspot::client::{ApiError, Auth, HubSpotClient, HubSpotConfig, Secret};
use driftless_bridges::hubspot::signature::{
    SIGNATURE_HEADER, SignedRequest, TIMESTAMP_HEADER, verify_v3,
};
use driftless_bridges::hubspot::sync::{
    self, CreateLookup, ListScan, MergeResult, PendingWrite, Poll, PollConfig, PollCursor,
    PollOutcome, RateLimitWait, ResetSource, SearchPacer, WriteBatch, WriteOp,
};
use driftless_bridges::hubspot::translate::{
    contact_create, contact_from_properties, contact_update, modified_at_ms, properties_to_read,
};
use driftless_bridges::hubspot::webhook::{Hint, Inbox, ObjectType, parse_delivery};
use driftless_bridges::hubspot::wire::{CreateInput, CrmObject, Properties, RateLimitPolicy};
use driftless_crdt_model::{Contact, ContactPoint};
use driftless_tests::fakes::hubspot::{FakeHubSpot, TOKEN, deliver_webhook};
use serde_json::Value;

const CONTACT: ObjectType = ObjectType::Contact;
const ID_PROPERTY: &str = "driftless_id";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What the bridge keeps per linked HubSpot object.
#[derive(Debug, Clone)]
struct Shadow {
    key: String,
    props: Properties,
    modified_ms: Option<i64>,
}

/// Why a round stopped early.
#[derive(Debug)]
enum Stop {
    Daily(RateLimitWait),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Failed(e)
    }
}

#[derive(Debug, Default)]
struct Round {
    /// HubSpot ids whose news was applied.
    applied: Vec<String>,
    merges: Vec<MergeResult>,
    outcome: Option<PollOutcome>,
    burst_waits: u32,
}

/// A minimal contacts runner: canonical records by key, links, shadows, a poll cursor.
struct Runner {
    client: HubSpotClient,
    config: PollConfig,
    cursor: PollCursor,
    pacer: SearchPacer,
    id_property: Option<String>,
    docs: BTreeMap<String, Contact>,
    /// key -> HubSpot id
    links: BTreeMap<String, String>,
    /// HubSpot id -> shadow
    shadows: BTreeMap<String, Shadow>,
    next_key: u64,
    next_slot: u64,
}

impl Runner {
    fn new(fake: &FakeHubSpot, id_property: Option<&str>) -> anyhow::Result<Self> {
        let client = HubSpotClient::new(HubSpotConfig::new(
            fake.api_base(),
            Auth::AccessToken(Secret::new(TOKEN)),
        ))?;
        let mut config = PollConfig::new(properties_to_read(CONTACT, id_property));
        config.overlap = Duration::from_secs(60);
        Ok(Runner {
            client,
            config,
            cursor: PollCursor::default(),
            pacer: SearchPacer::default(),
            id_property: id_property.map(str::to_owned),
            docs: BTreeMap::new(),
            links: BTreeMap::new(),
            shadows: BTreeMap::new(),
            next_key: 1,
            next_slot: 1,
        })
    }

    fn doc_of(&self, hubspot_id: &str) -> Option<&Contact> {
        self.shadows
            .get(hubspot_id)
            .and_then(|s| self.docs.get(&s.key))
    }

    fn new_key(&mut self) -> String {
        let key = format!("doc{:04}", self.next_key);
        self.next_key += 1;
        key
    }

    fn apply(&mut self, object: &CrmObject) {
        let id = object.object_id().to_owned();
        let key = match self.shadows.get(&id) {
            Some(s) => s.key.clone(),
            None => self.new_key(),
        };
        let mut n = self.next_slot;
        let mut new_slot = || {
            n += 1;
            format!("slot{n:05}")
        };
        let contact =
            contact_from_properties(&object.properties, self.docs.get(&key), &mut new_slot);
        self.next_slot = n;
        self.docs.insert(key.clone(), contact);
        self.links.insert(key.clone(), id.clone());
        self.shadows.insert(
            id,
            Shadow {
                key,
                props: object.properties.clone(),
                modified_ms: modified_at_ms(CONTACT, object),
            },
        );
    }

    /// One incremental poll round; 429s by policy (a DAILY limit stops the round).
    async fn poll(&mut self) -> Result<Round, Stop> {
        let mut poll = Poll::new(CONTACT, self.config.clone(), &self.cursor);
        let mut round = Round::default();
        let mut news: Vec<CrmObject> = Vec::new();
        let mut attempt = 0;
        while let Some(request) = poll.next_request() {
            tokio::time::sleep(self.pacer.delay(now_ms())).await;
            self.pacer.record(now_ms());
            match self.client.search(CONTACT, &request).await {
                Ok(page) => {
                    attempt = 0;
                    for record in poll.on_page(page).context("poll page")? {
                        let shadow = self
                            .shadows
                            .get(record.object_id())
                            .and_then(|s| s.modified_ms);
                        if sync::is_news(shadow, CONTACT, &record) {
                            news.push(record);
                        }
                    }
                }
                Err(ApiError::RateLimited {
                    policy,
                    retry_after,
                    ..
                }) => {
                    match sync::rate_limit_wait(policy, retry_after, attempt, now_ms(), None, 0.5) {
                        RateLimitWait::Backoff(wait) => {
                            attempt += 1;
                            round.burst_waits += 1;
                            tokio::time::sleep(wait).await;
                        }
                        daily => return Err(Stop::Daily(daily)),
                    }
                }
                Err(ApiError::Status { status: 400, .. }) => poll.on_past_cap(),
                Err(e) => return Err(Stop::Failed(e.into())),
            }
        }
        let linked = |id: &str| self.shadows.contains_key(id);
        round.merges = sync::merges_in(CONTACT, &news, &linked);
        for record in &news {
            self.apply(record);
            round.applied.push(record.object_id().to_owned());
        }
        for merge in &round.merges {
            for absorbed in &merge.absorbed {
                // The runner merges documents; here the absorbed link is dropped.
                if let Some(s) = self.shadows.remove(absorbed) {
                    self.links.remove(&s.key);
                    self.docs.remove(&s.key);
                }
            }
        }
        let outcome = poll.finish();
        self.cursor = outcome.cursor.clone();
        round.outcome = Some(outcome);
        Ok(round)
    }

    /// Linked records HubSpot lists as archived: unlinked and returned.
    async fn archived(&mut self) -> anyhow::Result<Vec<String>> {
        let mut scan = ListScan::new(true, vec!["email".into()]);
        let mut archived = Vec::new();
        while let Some(req) = scan.next_request() {
            archived.extend(scan.on_page(self.client.list(CONTACT, &req).await?));
        }
        let linked = |id: &str| self.shadows.contains_key(id);
        let removed = sync::archived_removals(&archived, &linked);
        for id in &removed {
            if let Some(s) = self.shadows.remove(id) {
                self.links.remove(&s.key);
            }
        }
        Ok(removed)
    }

    /// Adds a record created in the app (not yet at HubSpot).
    fn add_local(&mut self, contact: Contact) -> String {
        let key = self.new_key();
        self.docs.insert(key.clone(), contact);
        key
    }

    fn pending_writes(&self) -> Vec<PendingWrite> {
        self.docs
            .iter()
            .filter_map(|(key, doc)| match self.links.get(key) {
                Some(id) => {
                    let shadow = self.shadows.get(id)?;
                    Some(PendingWrite {
                        key: key.clone(),
                        op: WriteOp::Update {
                            id: id.clone(),
                            properties: contact_update(&shadow.props, doc),
                        },
                    })
                }
                None => {
                    let mut properties = contact_create(doc);
                    if let Some(p) = &self.id_property {
                        properties.insert(p.clone(), key.clone());
                    }
                    Some(PendingWrite {
                        key: key.clone(),
                        op: WriteOp::Create(CreateInput {
                            properties,
                            ..CreateInput::default()
                        }),
                    })
                }
            })
            .collect()
    }

    fn link_written(&mut self, key: &str, object: &CrmObject) {
        let id = object.object_id().to_owned();
        self.links.insert(key.to_owned(), id.clone());
        self.shadows.insert(
            id,
            Shadow {
                key: key.to_owned(),
                props: object.properties.clone(),
                modified_ms: modified_at_ms(CONTACT, object),
            },
        );
    }

    /// Pushes every record that differs from its shadow: batches first, then each failure alone.
    async fn push(&mut self) -> anyhow::Result<()> {
        let writes = self.pending_writes();
        let mut retry = Vec::new();
        for batch in sync::plan_batches(&writes) {
            let result = match &batch {
                WriteBatch::Create { body, .. } => self.client.batch_create(CONTACT, body).await?,
                WriteBatch::Update { body, .. } => self.client.batch_update(CONTACT, body).await?,
            };
            let outcome = sync::match_batch(&batch, &result, self.id_property.as_deref());
            for (key, object) in &outcome.written {
                self.link_written(key, object);
            }
            retry.extend(sync::retry_individually(&writes, &outcome));
        }
        for write in retry {
            self.write_one(&write).await?;
        }
        Ok(())
    }

    async fn write_one(&mut self, write: &PendingWrite) -> anyhow::Result<()> {
        match &write.op {
            WriteOp::Update { id, properties } => {
                let object = self.client.update(CONTACT, id, properties).await?;
                self.link_written(&write.key, &object);
            }
            WriteOp::Create(input) => {
                let mut unknown = false;
                for _ in 0..3 {
                    if unknown && let Some(found) = self.look_up(&write.key, input).await? {
                        self.link_written(&write.key, &found);
                        return Ok(());
                    }
                    match self.client.create(CONTACT, input).await {
                        Ok(object) => {
                            self.link_written(&write.key, &object);
                            return Ok(());
                        }
                        Err(e) if e.status() == Some(409) => {
                            let existing = e
                                .body()
                                .and_then(|b| b.existing_id())
                                .context("409 without an id")?;
                            let object = self
                                .client
                                .get(CONTACT, &existing, &self.config.properties, None)
                                .await?
                                .context("the existing contact vanished")?;
                            self.link_written(&write.key, &object);
                            return Ok(());
                        }
                        Err(e) if e.outcome_unknown() => unknown = true,
                        Err(e) => return Err(e.into()),
                    }
                }
                bail!("create of {} kept failing", write.key)
            }
        }
        Ok(())
    }

    async fn look_up(&self, key: &str, input: &CreateInput) -> anyhow::Result<Option<CrmObject>> {
        match sync::create_lookup(
            CONTACT,
            key,
            self.id_property.as_deref(),
            &input.properties,
            &self.config.properties,
        ) {
            CreateLookup::ByIdProperty { property, value } => Ok(self
                .client
                .get(CONTACT, &value, &self.config.properties, Some(&property))
                .await?),
            CreateLookup::Search(request) => {
                let page = self.client.search(CONTACT, &request).await?;
                Ok(sync::adopt_existing(
                    key,
                    self.id_property.as_deref(),
                    &input.properties,
                    &page.results,
                )
                .cloned())
            }
            CreateLookup::None => Ok(None),
        }
    }
}

fn contact(given: &str, family: &str, email: &str, phone: Option<&str>) -> Contact {
    let mut c = Contact::default();
    c.name.given = Some(given.into());
    c.name.family = Some(family.into());
    c.emails.insert(
        "e1".into(),
        ContactPoint {
            value: email.into(),
            primary: true,
            ..ContactPoint::default()
        },
    );
    if let Some(p) = phone {
        c.phones.insert(
            "p1".into(),
            ContactPoint {
                value: p.into(),
                label: Some("work".into()),
                primary: true,
                ..ContactPoint::default()
            },
        );
    }
    c
}

fn search_statuses(fake: &FakeHubSpot) -> Vec<u16> {
    fake.requests()
        .iter()
        .filter(|r| r.path.ends_with("/search"))
        .map(|r| r.status)
        .collect()
}

async fn poll_ok(runner: &mut Runner) -> anyhow::Result<Round> {
    match runner.poll().await {
        Ok(r) => Ok(r),
        Err(Stop::Failed(e)) => Err(e),
        Err(Stop::Daily(w)) => bail!("unexpected daily limit: {w:?}"),
    }
}

#[tokio::test]
async fn initial_and_incremental_polls_and_quiet_rounds_write_nothing() -> anyhow::Result<()> {
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
    let bob = fake.insert(
        CONTACT,
        &[("firstname", "Bob"), ("email", "bob@example.com")],
    );
    let mut runner = Runner::new(&fake, None)?;

    let first = poll_ok(&mut runner).await?;
    assert_eq!(first.applied.len(), 2);
    let doc = runner.doc_of(&jane).context("jane imported")?;
    assert_eq!(doc.name.full.as_deref(), Some("Jane Doe"));
    assert_eq!(doc.job_title.as_deref(), Some("CTO"));
    assert_eq!(
        doc.phones.values().next().map(|p| p.value.as_str()),
        Some("+1 415 555 0100")
    );

    // Changed in HubSpot: the next round brings exactly that record.
    fake.advance(1000);
    fake.edit(CONTACT, &bob, &[("jobtitle", "Engineer")]);
    let second = poll_ok(&mut runner).await?;
    assert_eq!(second.applied, vec![bob.clone()]);
    assert_eq!(
        runner
            .doc_of(&bob)
            .and_then(|d| d.job_title.clone())
            .as_deref(),
        Some("Engineer")
    );

    // A quiet round: nothing is news (the overlap re-reads are filtered) and nothing is written.
    let writes = fake.write_count();
    let quiet = poll_ok(&mut runner).await?;
    assert!(quiet.applied.is_empty(), "{:?}", quiet.applied);
    runner.push().await?;
    assert_eq!(fake.write_count(), writes, "a quiet round writes nothing");

    // An app edit is one batch update carrying only the changed property.
    let key = runner.shadows[&jane].key.clone();
    let slot = runner.docs[&key]
        .phones
        .keys()
        .next()
        .cloned()
        .context("phone slot")?;
    runner
        .docs
        .get_mut(&key)
        .and_then(|d| d.phones.get_mut(&slot))
        .context("slot")?
        .value = "+1 415 555 0199".into();
    runner.push().await?;
    assert_eq!(fake.write_count(), writes + 1);
    let inputs = fake.logged_inputs("batch/update");
    assert_eq!(inputs.len(), 1);
    assert_eq!(
        inputs[0]["properties"],
        serde_json::json!({"phone": "+1 415 555 0199"})
    );
    let at_hubspot = fake.get(CONTACT, &jane).context("jane")?;
    assert_eq!(at_hubspot["phone"], "+1 415 555 0199");
    assert_eq!(
        at_hubspot["hs_custom"], "kept",
        "unmapped properties stay untouched"
    );

    // Our own write coming back through search is not news, and pushing again writes nothing.
    let echo = poll_ok(&mut runner).await?;
    assert!(echo.applied.is_empty(), "{:?}", echo.applied);
    runner.push().await?;
    assert_eq!(fake.write_count(), writes + 1);
    Ok(())
}

#[tokio::test]
async fn reanchors_before_the_result_cap_and_respects_search_rate() -> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    fake.set_search_cap(25);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(fake.insert(CONTACT, &[("firstname", &format!("early{i}"))]));
    }
    // More records at one instant than a query can page through: the hs_object_id walk.
    ids.extend(fake.insert_many_at_one_instant(CONTACT, 30, "tie"));
    for i in 0..15 {
        ids.push(fake.insert(CONTACT, &[("firstname", &format!("late{i}"))]));
    }
    let mut runner = Runner::new(&fake, None)?;
    runner.config.page_limit = 10;
    runner.config.result_cap = 25;
    let round = poll_ok(&mut runner).await?;
    let outcome = round.outcome.context("outcome")?;
    assert_eq!(runner.shadows.len(), 65, "every record once");
    for id in &ids {
        assert!(runner.shadows.contains_key(id), "{id} missing");
    }
    assert!(outcome.reanchors >= 3, "{outcome:?}");
    let statuses = search_statuses(&fake);
    assert!(
        statuses.iter().all(|s| *s == 200),
        "no 400 past the cap, no 429: {statuses:?}"
    );
    assert!(
        statuses.len() > 5,
        "enough searches to need pacing: {}",
        statuses.len()
    );

    // A bridge configured for HubSpot's 10,000 against a lower cap still gets everything.
    let mut naive = Runner::new(&fake, None)?;
    naive.config.page_limit = 10;
    let round = poll_ok(&mut naive).await?;
    assert_eq!(naive.shadows.len(), 65);
    assert!(round.outcome.context("outcome")?.reanchors >= 1);
    assert!(
        search_statuses(&fake).contains(&400),
        "the fake refused paging past its cap"
    );

    // Without pacing, the fake enforces 5 searches per second.
    let mut burst = 0;
    for _ in 0..8 {
        let req = Poll::new(CONTACT, runner.config.clone(), &PollCursor::default())
            .next_request()
            .context("request")?;
        if let Err(ApiError::RateLimited { policy, .. }) = runner.client.search(CONTACT, &req).await
        {
            assert_eq!(policy, RateLimitPolicy::TenSecondlyRolling);
            burst += 1;
        }
    }
    assert!(burst >= 1, "8 unpaced searches must meet the limit");
    Ok(())
}

#[tokio::test]
async fn search_lag_is_covered_by_the_overlap() -> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    fake.set_search_lag(5_000);
    let slow = fake.insert(
        CONTACT,
        &[("firstname", "Slow"), ("email", "slow@example.com")],
    );
    fake.set_search_lag(0);
    fake.advance(1_000);
    let fast = fake.insert(
        CONTACT,
        &[("firstname", "Fast"), ("email", "fast@example.com")],
    );

    let mut runner = Runner::new(&fake, None)?;
    runner.config.overlap = Duration::from_millis(10_000);
    let mut no_overlap = Runner::new(&fake, None)?;
    no_overlap.config.overlap = Duration::ZERO;
    let first = poll_ok(&mut runner).await?;
    assert_eq!(
        first.applied,
        vec![fast.clone()],
        "the slow write is not indexed yet"
    );
    poll_ok(&mut no_overlap).await?;

    fake.advance(10_000);
    let second = poll_ok(&mut runner).await?;
    assert_eq!(
        second.applied,
        vec![slow.clone()],
        "found through the overlap"
    );
    let missed = poll_ok(&mut no_overlap).await?;
    assert!(
        missed.applied.is_empty(),
        "without overlap the lagging record is lost"
    );
    Ok(())
}

#[tokio::test]
async fn archived_records_become_deletes_and_restores_come_back() -> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    let a = fake.insert(CONTACT, &[("firstname", "A"), ("email", "a@example.com")]);
    let b = fake.insert(CONTACT, &[("firstname", "B"), ("email", "b@example.com")]);
    let mut runner = Runner::new(&fake, None)?;
    poll_ok(&mut runner).await?;
    assert!(fake.archive(CONTACT, &a));
    fake.advance(1000);
    let round = poll_ok(&mut runner).await?;
    assert!(
        round.applied.is_empty(),
        "archived records never appear in search"
    );
    assert_eq!(runner.archived().await?, vec![a.clone()]);
    assert!(!runner.shadows.contains_key(&a) && runner.shadows.contains_key(&b));
    assert!(runner.archived().await?.is_empty(), "reported once");

    assert!(fake.restore(CONTACT, &a));
    fake.advance(1000);
    let round = poll_ok(&mut runner).await?;
    assert_eq!(round.applied, vec![a.clone()]);
    Ok(())
}

#[tokio::test]
async fn merges_are_reported_as_merges() -> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    let a = fake.insert(
        CONTACT,
        &[("firstname", "Ann"), ("email", "ann@example.com")],
    );
    let b = fake.insert(
        CONTACT,
        &[
            ("firstname", "Annie"),
            ("email", "annie@example.com"),
            ("phone", "+1 202 555 0111"),
        ],
    );
    let mut runner = Runner::new(&fake, None)?;
    poll_ok(&mut runner).await?;

    fake.advance(1000);
    let survivor = fake.merge(CONTACT, &a, &b).context("merge")?;
    assert_eq!(survivor, a);
    let round = poll_ok(&mut runner).await?;
    assert_eq!(round.merges.len(), 1, "{:?}", round.merges);
    assert_eq!(round.merges[0].survivor.id.0, a);
    assert_eq!(round.merges[0].absorbed, vec![b.clone()]);
    assert!(!runner.shadows.contains_key(&b));
    assert_eq!(
        runner.doc_of(&a).map(|d| d.phones.len()),
        Some(1),
        "merged values arrive"
    );

    // A GET of the absorbed id answers with the survivor.
    let got = runner
        .client
        .get(CONTACT, &b, &runner.config.properties, None)
        .await?
        .context("get")?;
    let merge = sync::merge_from_get(CONTACT, &b, &got).context("merge seen from GET")?;
    assert_eq!(merge.survivor.id.0, a);

    // A merge that creates a new survivor id absorbs both.
    let c = fake.insert(CONTACT, &[("firstname", "Cy"), ("email", "cy@example.com")]);
    poll_ok(&mut runner).await?;
    fake.set_merge_creates_new_id(true);
    fake.advance(1000);
    let new_id = fake.merge(CONTACT, &a, &c).context("merge")?;
    assert!(new_id != a && new_id != c);
    let round = poll_ok(&mut runner).await?;
    assert_eq!(round.merges.len(), 1);
    assert_eq!(round.merges[0].survivor.id.0, new_id);
    let mut absorbed = round.merges[0].absorbed.clone();
    absorbed.sort();
    let mut want = vec![a.clone(), c.clone()];
    want.sort();
    assert_eq!(absorbed, want);
    Ok(())
}

#[tokio::test]
async fn a_207_applies_successes_and_retries_only_failures() -> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    let mut runner = Runner::new(&fake, Some(ID_PROPERTY))?;
    let keys: Vec<String> = (0..5)
        .map(|i| {
            runner.add_local(contact(
                &format!("P{i}"),
                "Person",
                &format!("p{i}@example.com"),
                None,
            ))
        })
        .collect();
    fake.fail_batch_input(&keys[2]);
    runner.push().await?;
    assert_eq!(fake.live_count(CONTACT), 5);
    assert_eq!(runner.links.len(), 5);
    assert_eq!(
        fake.logged_inputs("batch/create").len(),
        5,
        "one batch of five"
    );
    let singles: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/crm/v3/objects/contacts")
        .collect();
    assert_eq!(singles.len(), 1, "only the failed input is retried");
    assert_eq!(singles[0].body["properties"][ID_PROPERTY], keys[2].as_str());

    // Updates: one failure in a batch of three.
    for (i, key) in keys.iter().take(3).enumerate() {
        runner.docs.get_mut(key).context("doc")?.job_title = Some(format!("Role {i}"));
    }
    fake.fail_batch_input(&keys[1]);
    let before = fake.write_count();
    runner.push().await?;
    assert_eq!(
        fake.write_count(),
        before + 2,
        "one batch update and one single PATCH"
    );
    let patches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].path,
        format!("/crm/v3/objects/contacts/{}", runner.links[&keys[1]])
    );
    for (i, key) in keys.iter().take(3).enumerate() {
        let at = fake.get(CONTACT, &runner.links[key]).context("contact")?;
        assert_eq!(at["jobtitle"], format!("Role {i}"));
    }
    // Everything is in step: another push writes nothing.
    let before = fake.write_count();
    runner.push().await?;
    assert_eq!(fake.write_count(), before);

    // Results without trace ids are matched by the driftless id property.
    fake.set_results_carry_trace_ids(false);
    let k = runner.add_local(contact("Q", "Person", "q@example.com", None));
    runner.push().await?;
    assert!(runner.links.contains_key(&k));
    assert_eq!(fake.live_count(CONTACT), 6);
    Ok(())
}

#[tokio::test]
async fn a_lost_create_response_makes_no_duplicate() -> anyhow::Result<()> {
    // With the driftless id property: looked up by idProperty (no search lag).
    let fake = FakeHubSpot::start().await?;
    let mut runner = Runner::new(&fake, Some(ID_PROPERTY))?;
    let key = runner.add_local(contact("Lost", "Answer", "lost@example.com", None));
    fake.fail_batch_input(&key);
    fake.lose_create_responses(1);
    runner.push().await?;
    assert_eq!(fake.live_count(CONTACT), 1, "no duplicate");
    let id = runner.links.get(&key).context("linked")?;
    assert_eq!(
        fake.get(CONTACT, id).context("the one contact")?[ID_PROPERTY],
        key
    );
    let lookups = fake
        .requests()
        .iter()
        .filter(|r| r.query.contains("idProperty"))
        .count();
    assert_eq!(lookups, 1);

    // Without it, and with search lagging: the email search misses, the re-create meets
    // 409 "Existing ID" and adopts it.
    let fake = FakeHubSpot::start().await?;
    fake.set_search_lag(60_000);
    let mut runner = Runner::new(&fake, None)?;
    let key = runner.add_local(contact("Lost", "Again", "again@example.com", None));
    fake.fail_batch_input(&key);
    fake.lose_create_responses(1);
    runner.push().await?;
    assert_eq!(fake.live_count(CONTACT), 1, "no duplicate");
    assert!(fake.requests().iter().any(|r| r.status == 409));
    let id = runner.links.get(&key).context("linked")?;
    assert!(fake.get(CONTACT, id).is_some());
    Ok(())
}

#[tokio::test]
async fn rate_limits_by_policy_are_honoured() -> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    fake.insert(CONTACT, &[("firstname", "R"), ("email", "r@example.com")]);
    let mut runner = Runner::new(&fake, None)?;

    // Burst: backs off and retries.
    fake.inject_rate_limit("TEN_SECONDLY_ROLLING", 2, None);
    let started = Instant::now();
    let round = poll_ok(&mut runner).await?;
    assert_eq!(round.burst_waits, 2);
    assert_eq!(round.applied.len(), 1);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    // Daily without a reset header: the round stops, waits for the next UTC midnight and says so.
    fake.inject_rate_limit("DAILY", 1, None);
    let before = fake.requests().len();
    match runner.poll().await {
        Err(Stop::Daily(RateLimitWait::UntilDailyReset {
            wait,
            reset_at_ms,
            source,
        })) => {
            assert_eq!(source, ResetSource::AssumedUtcMidnight);
            assert_eq!(reset_at_ms % 86_400_000, 0, "a UTC midnight");
            assert!(wait <= Duration::from_secs(86_400) && wait > Duration::ZERO);
        }
        other => bail!("expected a daily stop, got {other:?}"),
    }
    assert_eq!(
        fake.requests().len(),
        before + 1,
        "no retry before the reset"
    );

    // Daily with Retry-After: the reset comes from the header; after it, the round runs.
    fake.inject_rate_limit("DAILY", 1, Some(1));
    let wait = match runner.poll().await {
        Err(Stop::Daily(
            w @ RateLimitWait::UntilDailyReset {
                source: ResetSource::Header,
                ..
            },
        )) => w.duration(),
        other => bail!("expected a daily stop from the header, got {other:?}"),
    };
    assert_eq!(wait, Duration::from_secs(1));
    tokio::time::sleep(wait).await;
    poll_ok(&mut runner).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------------------------

const CLIENT_SECRET: &str = "fake-client-secret";

/// A receiver in the shape of the server's future endpoint: verify, parse, inbox.
struct Receiver {
    addr: SocketAddr,
    inbox: Arc<Mutex<Inbox>>,
    hints: Arc<Mutex<Vec<Hint>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let hints = Arc::new(Mutex::new(Vec::new()));
        let (i, h) = (inbox.clone(), hints.clone());
        let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let (inbox, hints) = (i.clone(), h.clone());
            async move {
                let full_uri = format!("http://{addr}{uri}");
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let (timestamp, signature) = (header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER));
                let request = SignedRequest {
                    method: "POST",
                    uri: &full_uri,
                    body: &body,
                    timestamp: timestamp.as_deref(),
                    signature: signature.as_deref(),
                };
                if verify_v3(CLIENT_SECRET.as_bytes(), &request, now_ms()).is_err() {
                    return StatusCode::UNAUTHORIZED;
                }
                let Ok(events) = parse_delivery(&body) else {
                    return StatusCode::BAD_REQUEST;
                };
                let accepted = match inbox.lock() {
                    Ok(mut inbox) => inbox.accept(events, now_ms()),
                    Err(_) => return StatusCode::INTERNAL_SERVER_ERROR,
                };
                if let Ok(mut all) = hints.lock() {
                    all.extend(accepted.hints);
                }
                StatusCode::NO_CONTENT
            }
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Receiver {
            addr,
            inbox,
            hints,
            task,
        })
    }

    fn url(&self) -> String {
        format!(
            "http://{}/webhooks/hubspot/crm-main?portal=62515",
            self.addr
        )
    }

    /// The state the hints lead to: per object, live / deleted / merged into a survivor.
    fn final_state(&self) -> BTreeMap<String, String> {
        let mut state = BTreeMap::new();
        for hint in self.hints.lock().map(|h| h.clone()).unwrap_or_default() {
            match hint {
                Hint::Refetch(o) | Hint::Restored(o) => {
                    state.insert(o.to_string(), "live".to_owned());
                }
                Hint::Deleted { object, .. } => {
                    state.insert(object.to_string(), "deleted".to_owned());
                }
                Hint::Merged { survivor, merged } => {
                    for m in merged {
                        state.insert(m.to_string(), format!("merged into {survivor}"));
                    }
                    state.insert(survivor.to_string(), "live".to_owned());
                }
                Hint::AssociationChanged { .. } => {}
            }
        }
        state
    }
}

#[tokio::test]
async fn duplicated_and_reordered_webhooks_lead_to_the_same_hints() -> anyhow::Result<()> {
    let fake = FakeHubSpot::start().await?;
    let a = fake.insert(CONTACT, &[("firstname", "A"), ("email", "a@example.com")]);
    fake.advance(10);
    fake.edit(
        CONTACT,
        &a,
        &[("phone", "+1 202 555 0100"), ("jobtitle", "Boss")],
    );
    let b = fake.insert(CONTACT, &[("firstname", "B")]);
    fake.advance(10);
    fake.archive(CONTACT, &b);
    let c = fake.insert(CONTACT, &[("firstname", "C")]);
    let d = fake.insert(CONTACT, &[("firstname", "D")]);
    fake.advance(10);
    fake.merge(CONTACT, &c, &d).context("merge")?;
    fake.advance(10);
    fake.restore(CONTACT, &b);
    let events = fake.take_webhook_events();
    assert!(events.len() >= 9, "{events:?}");

    let in_order = Receiver::start().await?;
    assert_eq!(
        deliver_webhook(&in_order.url(), CLIENT_SECRET, &events, 0).await?,
        204
    );

    let storm = Receiver::start().await?;
    // Reversed, split into batches, every batch delivered again as a retry, one event thrice.
    let mut reversed: Vec<Value> = events.clone();
    reversed.reverse();
    for (i, chunk) in reversed.chunks(3).enumerate() {
        assert_eq!(
            deliver_webhook(&storm.url(), CLIENT_SECRET, chunk, 0).await?,
            204
        );
        if i % 2 == 0 {
            assert_eq!(
                deliver_webhook(&storm.url(), CLIENT_SECRET, chunk, 1).await?,
                204
            );
        }
    }
    assert_eq!(
        deliver_webhook(&storm.url(), CLIENT_SECRET, &events[..1], 2).await?,
        204
    );
    assert_eq!(
        deliver_webhook(&storm.url(), CLIENT_SECRET, &events, 3).await?,
        204
    );

    let want = in_order.final_state();
    assert_eq!(
        want.get(&format!("Contact:{a}")).map(String::as_str),
        Some("live")
    );
    assert_eq!(
        want.get(&format!("Contact:{b}")).map(String::as_str),
        Some("live"),
        "restored last"
    );
    assert_eq!(
        want.get(&format!("Contact:{d}")).map(String::as_str),
        Some(format!("merged into Contact:{c}").as_str())
    );
    assert_eq!(storm.final_state(), want);
    // The runner's actions are the same too.
    let plan = |r: &Receiver| {
        let hints = r.hints.lock().map(|h| h.clone()).unwrap_or_default();
        sync::plan_hints(&hints, &|_| true)
    };
    let in_order_plan = plan(&in_order);
    assert_eq!(plan(&storm), in_order_plan);
    assert_eq!(in_order_plan.merges.len(), 1);
    assert_eq!(in_order_plan.merges[0].absorbed, vec![d.clone()]);
    let remembered = |r: &Receiver| r.inbox.lock().map(|i| i.remembered()).unwrap_or(0);
    assert_eq!(
        remembered(&storm),
        remembered(&in_order),
        "each event remembered once"
    );

    // A forged signature is refused and changes nothing.
    let hints_before = storm.hints.lock().map(|h| h.len()).unwrap_or(0);
    let status = reqwest::Client::new()
        .post(storm.url())
        .header(SIGNATURE_HEADER, "AAAA")
        .header(TIMESTAMP_HEADER, now_ms().to_string())
        .body(serde_json::to_vec(&events)?)
        .send()
        .await?
        .status();
    assert_eq!(status.as_u16(), 401);
    assert_eq!(
        storm.hints.lock().map(|h| h.len()).unwrap_or(0),
        hints_before
    );
    Ok(())
}

#[tokio::test]
async fn deals_and_companies_poll_on_hs_lastmodifieddate_and_associate() -> anyhow::Result<()> {
    use driftless_bridges::hubspot::translate::{
        company_from_properties, company_update, deal_from_properties, deal_update,
    };
    use driftless_bridges::hubspot::wire::{AssociationType, association_type_id};

    let fake = FakeHubSpot::start().await?;
    let deal = fake.insert(
        ObjectType::Deal,
        &[
            ("dealname", "Renewal"),
            ("amount", "12500.10"),
            ("closedate", "1798070400000"),
            ("dealstage", "contractsent"),
            ("pipeline", "default"),
            ("hs_deal_custom", "x"),
        ],
    );
    let company = fake.insert(
        ObjectType::Company,
        &[
            ("name", "Acme"),
            ("domain", "acme.example"),
            ("city", "Berlin"),
        ],
    );
    let person = fake.insert(
        CONTACT,
        &[("firstname", "Dee"), ("email", "dee@example.com")],
    );
    let client = HubSpotClient::new(HubSpotConfig::new(
        fake.api_base(),
        Auth::AccessToken(Secret::new(TOKEN)),
    ))?;

    let mut poll = Poll::new(
        ObjectType::Deal,
        PollConfig::new(properties_to_read(ObjectType::Deal, None)),
        &PollCursor::default(),
    );
    let mut deals = Vec::new();
    while let Some(req) = poll.next_request() {
        assert_eq!(
            req.filter_groups[0].filters[0].property_name,
            "hs_lastmodifieddate"
        );
        deals.extend(poll.on_page(client.search(ObjectType::Deal, &req).await?)?);
    }
    assert_eq!(deals.len(), 1);
    let canonical = deal_from_properties(&deals[0].properties, None);
    assert_eq!(canonical.amount.as_deref(), Some("12500.10"));
    assert_eq!(canonical.close_date.as_deref(), Some("2026-12-24"));
    assert_eq!(canonical.stage.as_deref(), Some("contractsent"));
    assert!(deal_update(&deals[0].properties, &canonical).is_empty());
    let mut changed = canonical.clone();
    changed.amount = Some("13000.00".into());
    let update = deal_update(&deals[0].properties, &changed);
    assert_eq!(update.len(), 1);
    let written = client.update(ObjectType::Deal, &deal, &update).await?;
    assert_eq!(written.property("amount"), Some("13000.00"));
    assert_eq!(
        fake.get(ObjectType::Deal, &deal).context("deal")?["hs_deal_custom"],
        "x"
    );

    let companies = client
        .search(
            ObjectType::Company,
            &Poll::new(
                ObjectType::Company,
                PollConfig::new(properties_to_read(ObjectType::Company, None)),
                &PollCursor::default(),
            )
            .next_request()
            .context("request")?,
        )
        .await?;
    let mut n = 0;
    let mut slot = || {
        n += 1;
        format!("c{n}")
    };
    let acme = company_from_properties(&companies.results[0].properties, None, &mut slot);
    assert_eq!(acme.address.city.as_deref(), Some("Berlin"));
    assert!(company_update(&companies.results[0].properties, &acme).is_empty());

    // Associations (v4): deal -> contact and deal -> company with HubSpot-defined types.
    let to_contact = association_type_id(ObjectType::Deal, CONTACT, false).context("type")?;
    let to_company =
        association_type_id(ObjectType::Deal, ObjectType::Company, true).context("type")?;
    client
        .associate(
            ObjectType::Deal,
            &deal,
            CONTACT,
            &person,
            &[AssociationType::hubspot(to_contact)],
        )
        .await?;
    client
        .associate(
            ObjectType::Deal,
            &deal,
            ObjectType::Company,
            &company,
            &[AssociationType::hubspot(to_company)],
        )
        .await?;
    assert_eq!(
        fake.associated(ObjectType::Deal, &deal, CONTACT),
        vec![person.clone()]
    );
    let page = client
        .associations(ObjectType::Deal, &deal, ObjectType::Company, None)
        .await?;
    assert_eq!(page.results.len(), 1);
    assert_eq!(page.results[0].to_object_id.0, company);
    assert_eq!(page.results[0].association_types[0].type_id, Some(5));
    Ok(())
}

#[tokio::test]
async fn oauth_refresh_mints_a_token_once_and_bad_credentials_fail_clearly() -> anyhow::Result<()> {
    use driftless_tests::fakes::hubspot::{
        OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, OAUTH_REFRESH_TOKEN,
    };
    let fake = FakeHubSpot::start().await?;
    fake.insert(CONTACT, &[("firstname", "O"), ("email", "o@example.com")]);
    let oauth = |refresh: &str| Auth::OAuth {
        client_id: OAUTH_CLIENT_ID.into(),
        client_secret: Secret::new(OAUTH_CLIENT_SECRET),
        refresh_token: Secret::new(refresh),
        token_url: format!("{}/oauth/v1/token", fake.api_base()),
    };
    let client = HubSpotClient::new(HubSpotConfig::new(
        fake.api_base(),
        oauth(OAUTH_REFRESH_TOKEN),
    ))?;
    let request = Poll::new(
        CONTACT,
        PollConfig::new(vec!["email".into()]),
        &PollCursor::default(),
    )
    .next_request()
    .context("request")?;
    assert_eq!(client.search(CONTACT, &request).await?.results.len(), 1);
    assert_eq!(client.search(CONTACT, &request).await?.results.len(), 1);
    assert_eq!(fake.token_requests(), 1, "the access token is cached");

    let bad = HubSpotClient::new(HubSpotConfig::new(
        fake.api_base(),
        oauth("wrong-refresh-token"),
    ))?;
    let err = bad
        .search(CONTACT, &request)
        .await
        .err()
        .context("must fail")?;
    let text = err.to_string();
    assert!(matches!(err, ApiError::Auth { .. }), "{text}");
    assert!(
        !text.contains("wrong-refresh-token") && !text.contains(OAUTH_CLIENT_SECRET),
        "{text}"
    );
    Ok(())
}
