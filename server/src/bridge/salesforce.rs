//! The Salesforce provider of the bridge runner: drives the sans-IO decisions of
//! `driftless_bridges::salesforce::sync` with the Salesforce client, for the sObject type the
//! bridge is configured with (`object`: Contact, Account or Opportunity; the runner syncs the
//! matching record type, see [`record_type`], and everything here is parameterised by the type
//! through `translate::Canonical`).
//!
//! - A record's external id is the Salesforce record id; its shadow `raw` is the record as last
//!   read or written (JSON: every selected field, unknown ones included), so updates send only
//!   the mapped fields that differ from it.
//! - Pull: with a stored cursor ([`SyncCursor`], JSON, the runner's sync token), the `updated` and
//!   `deleted` windows from it, then the changed records by SOQL. Without one, or when a window
//!   starts before what the org keeps (`earliestDateAvailable` later than the cursor, or the 30/15
//!   day horizons), a full SOQL listing by `SystemModstamp` paged through `nextRecordsUrl`,
//!   reported as a complete listing: the runner merges it by id (known records update in place,
//!   records missing from it are deletes under the delete guard), so a resync never wipes and
//!   never duplicates. A polled record that says what its shadow says (our own write coming
//!   back, an edit of unmapped fields) is not reported.
//! - Writes go through sObject Collections with `allOrNone: false`, each answer's SaveResult
//!   matched to its record; the updates of one outbox batch are sent together
//!   ([`SalesforceProvider::stage_updates`]) and each job's `update` takes its record's answer: a record Salesforce refuses (validation, required field) fails alone
//!   and becomes the runner's failed job, retried with its own backoff. With `id_field` creates are
//!   upserts on it (a retried create after a lost answer updates the record it made); without, a
//!   lost answer is looked up by email before the create is repeated. Salesforce has no
//!   preconditions for Contact: a write is last-writer-wins there, and the next pull brings a
//!   concurrent Salesforce edit into the document.
//! - `REQUEST_LIMIT_EXCEEDED` ends the round at once with `request_limit_wait` as its
//!   `retry_after` (no retries against a spent allowance); 429/503 are backed off and retried
//!   inside the call; a 401 refreshes the session once (the client).
//!
//! Must not: touch documents or the bridge store (the runner does), or print a secret.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use driftless_bridges::salesforce::client::{
    ClientError, DriveError, SalesforceClient, SalesforceConfig,
};
use driftless_bridges::salesforce::sync::{
    CollectionOutcome, PendingWrite, Round, RoundConfig, RoundError, SyncCursor, Throttle, WriteOp,
    adopt_existing, create_lookup, is_news, plan_collections,
};
use driftless_bridges::salesforce::translate::{
    Canonical, apply_written, create_fields, fields_to_read, from_sobject, update_fields,
};
use driftless_bridges::salesforce::wire::{
    ErrorItem, Fields, QueryResponse, SObject, SObjectType, summarize,
};
use driftless_bridges::sync::{self, FailureScope, Listed};
use driftless_client_protocol::DocumentId;
use tracing::{info, warn};

use super::BridgeError;
use super::provider::{Changes, DeleteOutcome, Resource, StagedUpdate, WriteOutcome};
use super::record::{Record, RecordType};
use super::store::Shadow;
use crate::config::BridgeConfig;

/// 429/503 answers retried inside one call before the round gives up.
const MAX_BUSY_RETRIES: u32 = 4;
/// Creates tried (with a lookup after each lost answer) before the record is parked.
const MAX_CREATE_TRIES: u32 = 3;

/// Which side of a round a failure happened on: a pull failure stops the round, a write
/// failure that concerns one record only parks that record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Pull,
    Write,
}

pub struct SalesforceProvider {
    bridge: String,
    client: SalesforceClient,
    object: SObjectType,
    fields: Vec<String>,
    id_field: Option<String>,
    request_limit_wait: Duration,
    /// Salesforce id -> the document its `id_field` names (learned while pulling), so the runner
    /// recognises its own create whose answer was lost and does not import it.
    created: Mutex<BTreeMap<String, DocumentId>>,
    /// Document id -> the answer to an update sent in bulk by [`SalesforceProvider::stage_updates`],
    /// taken by that record's [`SalesforceProvider::update`] when it would write the same.
    staged: Mutex<BTreeMap<String, Staged>>,
}

/// A staged update and Salesforce's answer for its record.
struct Staged {
    id: String,
    fields: Fields,
    answer: Answer,
}

/// One record's part of a collection answer.
#[derive(Debug, Clone)]
enum Answer {
    Written,
    Gone,
    Failed(Vec<ErrorItem>),
    Unknown,
}

impl Answer {
    fn of(key: &str, outcome: &CollectionOutcome) -> Self {
        if outcome.written.contains_key(key) {
            Answer::Written
        } else if outcome.gone.contains(key) {
            Answer::Gone
        } else if let Some(errors) = outcome.failed.get(key) {
            Answer::Failed(errors.clone())
        } else {
            Answer::Unknown
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn jitter() -> f64 {
    rand::random()
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The shadow form of a record: its fields without `attributes`.
fn resource(id: &str, record: &SObject) -> Resource {
    let kept = SObject {
        attributes: None,
        fields: record.fields.clone(),
    };
    Resource {
        id: id.to_owned(),
        etag: None,
        raw: serde_json::to_string(&kept).unwrap_or_default(),
    }
}

/// The record type a `salesforce` bridge syncs: its `object`'s (Contact: `contact`, Account:
/// `company`, Opportunity: `deal`).
pub fn record_type(config: &BridgeConfig) -> RecordType {
    match config.salesforce.as_ref().map(|s| s.object) {
        Some(SObjectType::Account) => RecordType::Company,
        Some(SObjectType::Opportunity) => RecordType::Deal,
        Some(SObjectType::Contact) | None => RecordType::Contact,
    }
}

/// The canonical value of a runner record (the types the runner holds today).
fn canonical_of(record: &Record) -> Option<Canonical> {
    match record.provider_view() {
        Record::Contact(c) => Some(Canonical::Contact(c)),
        Record::Company(c) => Some(Canonical::Company(c)),
        Record::Deal(d) => Some(Canonical::Deal(d)),
        Record::Event(_) => None,
    }
}

/// The runner record of a canonical value.
fn record_of(canonical: Canonical) -> Result<Record, String> {
    match canonical {
        Canonical::Contact(c) => Ok(Record::Contact(c)),
        Canonical::Company(c) => Ok(Record::Company(c)),
        Canonical::Deal(d) => Ok(Record::Deal(d)),
    }
}

impl SalesforceProvider {
    pub fn new(config: &BridgeConfig) -> anyhow::Result<Self> {
        let settings = config.salesforce.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "bridge {}: a salesforce bridge needs its settings",
                config.id
            )
        })?;
        let client = SalesforceClient::new(SalesforceConfig {
            instance_url: settings.instance_url.clone(),
            api_version: settings.api_version.clone(),
            token_url: settings.token_url.clone(),
            client_id: settings.client_id.clone(),
            client_secret: settings.client_secret.clone(),
            refresh_token: settings.refresh_token.clone(),
            timeout: Duration::from_secs(60),
        })
        .map_err(|e| anyhow::anyhow!("bridge {}: {e}", config.id))?;
        Ok(Self {
            bridge: config.id.clone(),
            client,
            object: settings.object,
            fields: fields_to_read(settings.object, settings.id_field.as_deref()),
            id_field: settings.id_field.clone(),
            request_limit_wait: settings.request_limit_wait,
            created: Mutex::new(BTreeMap::new()),
            staged: Mutex::new(BTreeMap::new()),
        })
    }

    /// A failed call as the whole provider's or (writes only) this record's failure.
    fn err(&self, e: DriveError, side: Side, what: &str) -> BridgeError {
        let name = self.object.name();
        match &e {
            DriveError::Round(RoundError::Throttled {
                throttle: Throttle::RequestLimit,
                ..
            }) => {
                warn!(bridge = %self.bridge, %what, wait_s = self.request_limit_wait.as_secs(), "Salesforce's API request allowance is spent (REQUEST_LIMIT_EXCEEDED); waiting");
                BridgeError::provider(
                    &self.bridge,
                    format!(
                        "{what} ({name}): REQUEST_LIMIT_EXCEEDED: the org's API request allowance is spent; next try in {}s",
                        self.request_limit_wait.as_secs()
                    ),
                    Some(self.request_limit_wait),
                )
            }
            DriveError::Round(RoundError::Throttled {
                throttle: Throttle::Busy { retry_after },
                ..
            }) => BridgeError::provider(
                &self.bridge,
                format!("{what} ({name}): still unavailable after {MAX_BUSY_RETRIES} retries: {e}"),
                *retry_after,
            ),
            DriveError::Round(RoundError::Status { status, .. })
                if side == Side::Write && sync::failure_scope(*status) == FailureScope::Record =>
            {
                BridgeError::record(&self.bridge, format!("{what}: {e}"), None)
            }
            DriveError::Round(RoundError::Decode { .. } | RoundError::Protocol { .. })
                if side == Side::Write =>
            {
                BridgeError::record(&self.bridge, format!("{what}: {e}"), None)
            }
            _ => BridgeError::provider(&self.bridge, format!("{what} ({name}): {e}"), None),
        }
    }

    /// Whether a failed write may have been applied (no answer, or a 5xx / gateway timeout).
    fn outcome_unknown(e: &DriveError) -> bool {
        match e {
            DriveError::Client(c) => c.outcome_unknown(),
            DriveError::Round(RoundError::Status { status, .. }) => *status >= 500,
            DriveError::Round(RoundError::Decode { .. }) => true,
            _ => false,
        }
    }

    fn stored(&self, id: &str, raw: &str) -> Result<SObject, BridgeError> {
        serde_json::from_str(raw).map_err(|e| {
            BridgeError::local(
                &self.bridge,
                format!("shadow of {} {id} is unreadable: {e}", self.object.name()),
            )
        })
    }

    fn canonical(&self, record: &Record, doc_id: &DocumentId) -> Result<Canonical, BridgeError> {
        canonical_of(record).ok_or_else(|| {
            BridgeError::record(
                &self.bridge,
                format!(
                    "document {doc_id} is not a {} record",
                    self.object.record_type()
                ),
                None,
            )
        })
    }

    pub fn created_document(&self, id: &str) -> Option<DocumentId> {
        locked(&self.created).get(id).cloned()
    }

    /// When Salesforce last modified the stored record (`SystemModstamp`), for `latest`.
    pub fn modified_at_ms(&self, raw: &str) -> Option<u64> {
        let record: SObject = serde_json::from_str(raw).ok()?;
        u64::try_from(record.modstamp_ms()?).ok()
    }

    pub fn translate(&self, raw: &str, existing: Option<&Record>) -> Result<Record, String> {
        let record: SObject =
            serde_json::from_str(raw).map_err(|e| format!("stored {}: {e}", self.object.name()))?;
        let existing = existing.and_then(canonical_of);
        // Slot ids are random and never derived from the value (contracts: "Record documents").
        let mut new_slot = || uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        record_of(from_sobject(
            self.object,
            &record,
            existing.as_ref(),
            &mut new_slot,
        ))
    }

    pub async fn changes(
        &self,
        token: Option<&str>,
        links: &BTreeMap<String, Shadow>,
    ) -> Result<Changes, BridgeError> {
        let cursor: Option<SyncCursor> = match token {
            Some(t) if !t.is_empty() => Some(serde_json::from_str(t).map_err(|e| {
                BridgeError::local(&self.bridge, format!("stored sync cursor {t:?}: {e}"))
            })?),
            _ => None,
        };
        let round = Round::new(
            self.object,
            RoundConfig::new(self.fields.clone()),
            cursor,
            now_ms(),
        );
        let what = format!("pulling {} records", self.object.name());
        let outcome = self
            .client
            .run_round(round, MAX_BUSY_RETRIES, &mut jitter)
            .await
            .map_err(|e| self.err(e, Side::Pull, &what))?;
        if let Some(reason) = outcome.resync {
            info!(bridge = %self.bridge, ?reason, records = outcome.records.len(), "full Salesforce listing, merged with the links by id");
        }
        let mut changes = Changes {
            removed: outcome
                .deleted
                .iter()
                .filter(|id| links.contains_key(*id))
                .cloned()
                .collect(),
            complete: outcome.complete,
            next_token: serde_json::to_string(&outcome.cursor)
                .map_err(|e| BridgeError::local(&self.bridge, format!("sync cursor: {e}")))?,
            ..Changes::default()
        };
        for record in &outcome.records {
            let Some(id) = record.id().map(str::to_owned) else {
                continue;
            };
            if let Some(f) = &self.id_field
                && let Some(doc) = record.text(f).and_then(|d| d.parse().ok())
            {
                locked(&self.created).insert(id.clone(), doc);
            }
            let shadow = match links.get(&id) {
                Some(s) => Some(self.stored(&id, &s.raw)?),
                None => None,
            };
            let news = is_news(self.object, shadow.as_ref(), record);
            // A complete listing names every record (a known one it omits is gone); only news
            // is fetched into documents.
            if news || outcome.complete {
                changes.listed.push(Listed {
                    href: id.clone(),
                    etag: None,
                });
            }
            if news {
                changes.changed.push(resource(&id, record));
            }
        }
        Ok(changes)
    }

    /// Sends one collection call for record `key` and returns its outcome.
    async fn write_one(
        &self,
        key: &str,
        op: WriteOp,
        what: &str,
    ) -> Result<CollectionOutcome, DriveError> {
        let writes = [PendingWrite {
            key: key.to_owned(),
            op,
        }];
        let calls = plan_collections(self.object, &writes, self.id_field.as_deref());
        let Some(call) = calls.first() else {
            return Ok(CollectionOutcome::default());
        };
        let outcome = self
            .client
            .send_collection(call, MAX_BUSY_RETRIES, &mut jitter)
            .await?;
        if !outcome.failed.is_empty() {
            let reasons: Vec<String> = outcome.failed.values().map(|e| summarize(e)).collect();
            warn!(bridge = %self.bridge, %what, reasons = %reasons.join("; "), "Salesforce refused this record (the others in the call went through)");
        }
        Ok(outcome)
    }

    /// What an earlier create of `doc_id` whose answer was lost made, if anything.
    async fn look_up(
        &self,
        doc_id: &DocumentId,
        fields: &Fields,
    ) -> Result<Option<SObject>, BridgeError> {
        let key = doc_id.to_string();
        let what = format!("looking up the create of document {doc_id}");
        let Some(request) = create_lookup(
            self.object,
            &key,
            self.id_field.as_deref(),
            fields,
            &self.fields,
        ) else {
            return Ok(None);
        };
        let response = self
            .client
            .execute_patiently(&request, MAX_BUSY_RETRIES, &mut jitter)
            .await
            .map_err(|e: ClientError| self.err(e.into(), Side::Write, &what))?;
        if !(200..300).contains(&response.status) {
            return Err(BridgeError::provider(
                &self.bridge,
                format!("{what}: status {}", response.status),
                response.retry_after,
            ));
        }
        let page: QueryResponse = serde_json::from_slice(&response.body).map_err(|e| {
            BridgeError::provider(
                &self.bridge,
                format!("{what}: unreadable answer: {e}"),
                None,
            )
        })?;
        Ok(adopt_existing(&key, self.id_field.as_deref(), &page.records).cloned())
    }

    pub async fn create(
        &self,
        doc_id: &DocumentId,
        record: &Record,
    ) -> Result<Resource, BridgeError> {
        let canonical = self.canonical(record, doc_id)?;
        let fields = create_fields(self.object, &canonical)
            .map_err(|e| BridgeError::record(&self.bridge, e, None))?;
        let key = doc_id.to_string();
        let what = format!("creating the {} of document {doc_id}", self.object.name());
        for _ in 0..MAX_CREATE_TRIES {
            let result = self
                .write_one(&key, WriteOp::Create(fields.clone()), &what)
                .await;
            let outcome = match result {
                Ok(outcome) => outcome,
                Err(e) if Self::outcome_unknown(&e) => {
                    warn!(bridge = %self.bridge, doc = %doc_id, error = %e, "create answer lost; looking for the record before trying again");
                    if let Some(found) = self.look_up(doc_id, &fields).await?
                        && let Some(id) = found.id().map(str::to_owned)
                    {
                        info!(bridge = %self.bridge, doc = %doc_id, record = %id, "adopting the record an earlier create made");
                        return Ok(resource(&id, &found));
                    }
                    continue;
                }
                Err(e) => return Err(self.err(e, Side::Write, &what)),
            };
            if let Some(saved) = outcome.written.get(&key) {
                let Some(id) = saved.id.clone() else {
                    return Err(BridgeError::record(
                        &self.bridge,
                        format!("{what}: Salesforce reported success without an id"),
                        None,
                    ));
                };
                let mut stored = fields.clone();
                stored.insert("Id".into(), serde_json::Value::String(id.clone()));
                if let Some(f) = &self.id_field {
                    stored.insert(f.clone(), serde_json::Value::String(key.clone()));
                }
                return Ok(resource(
                    &id,
                    &SObject {
                        attributes: None,
                        fields: stored,
                    },
                ));
            }
            if let Some(errors) = outcome.failed.get(&key) {
                return Err(BridgeError::record(
                    &self.bridge,
                    format!("{what}: {}", summarize(errors)),
                    None,
                ));
            }
            // The answer does not say: look before repeating.
            if let Some(found) = self.look_up(doc_id, &fields).await?
                && let Some(id) = found.id().map(str::to_owned)
            {
                return Ok(resource(&id, &found));
            }
        }
        Err(BridgeError::record(
            &self.bridge,
            format!("{what}: no answer after {MAX_CREATE_TRIES} tries"),
            None,
        ))
    }

    pub async fn update(
        &self,
        doc_id: &DocumentId,
        id: &str,
        record: &Record,
        shadow: &Shadow,
    ) -> Result<WriteOutcome, BridgeError> {
        let canonical = self.canonical(record, doc_id)?;
        let stored = self.stored(id, &shadow.raw)?;
        let fields = update_fields(self.object, &stored, &canonical)
            .map_err(|e| BridgeError::record(&self.bridge, e, None))?;
        let key = doc_id.to_string();
        let staged = locked(&self.staged).remove(&key);
        if fields.is_empty() {
            return Ok(WriteOutcome::Unchanged);
        }
        let what = format!("updating {} {id} (document {doc_id})", self.object.name());
        let answer = match staged {
            // Sent in this batch's collection call: its answer is this record's.
            Some(s) if s.id == id && s.fields == fields => s.answer,
            _ => {
                let outcome = self
                    .write_one(
                        &key,
                        WriteOp::Update {
                            id: id.to_owned(),
                            fields: fields.clone(),
                        },
                        &what,
                    )
                    .await
                    .map_err(|e| self.err(e, Side::Write, &what))?;
                Answer::of(&key, &outcome)
            }
        };
        match answer {
            Answer::Written => Ok(WriteOutcome::Written(resource(
                id,
                &apply_written(&stored, &fields),
            ))),
            // Deleted (or merged away) meanwhile: the next pull reports it.
            Answer::Gone => Ok(WriteOutcome::Stale(None)),
            Answer::Failed(errors) => Err(BridgeError::record(
                &self.bridge,
                format!("{what}: {}", summarize(&errors)),
                None,
            )),
            Answer::Unknown => Err(BridgeError::record(
                &self.bridge,
                format!("{what}: the answer does not say"),
                None,
            )),
        }
    }

    /// Sends the updates of a batch of outbox jobs as collection calls of up to 200 records
    /// (`allOrNone: false`), keeping each record's answer for its own [`Self::update`]. One
    /// record alone is left to that call; a failed call leaves every record to it.
    pub async fn stage_updates(&self, items: &[StagedUpdate]) {
        locked(&self.staged).clear();
        let mut writes = Vec::new();
        let mut planned: BTreeMap<String, (String, Fields)> = BTreeMap::new();
        for item in items {
            let (Ok(canonical), Ok(stored)) = (
                self.canonical(&item.record, &item.doc),
                self.stored(&item.id, &item.shadow.raw),
            ) else {
                continue;
            };
            let Ok(fields) = update_fields(self.object, &stored, &canonical) else {
                continue;
            };
            if fields.is_empty() {
                continue;
            }
            let key = item.doc.to_string();
            planned.insert(key.clone(), (item.id.clone(), fields.clone()));
            writes.push(PendingWrite {
                key,
                op: WriteOp::Update {
                    id: item.id.clone(),
                    fields,
                },
            });
        }
        if writes.len() < 2 {
            return;
        }
        for call in plan_collections(self.object, &writes, self.id_field.as_deref()) {
            match self
                .client
                .send_collection(&call, MAX_BUSY_RETRIES, &mut jitter)
                .await
            {
                Ok(outcome) => {
                    info!(bridge = %self.bridge, records = call.keys.len(), written = outcome.written.len(), refused = outcome.failed.len(), "updates sent as one collection call");
                    let mut staged = locked(&self.staged);
                    for key in &call.keys {
                        if let Some((id, fields)) = planned.remove(key) {
                            let answer = Answer::of(key, &outcome);
                            staged.insert(key.clone(), Staged { id, fields, answer });
                        }
                    }
                }
                Err(e) => {
                    warn!(bridge = %self.bridge, records = call.keys.len(), error = %e, "bulk update failed; the records are written one by one");
                }
            }
        }
    }

    pub async fn delete(
        &self,
        doc_id: &DocumentId,
        id: &str,
        _shadow: &Shadow,
    ) -> Result<DeleteOutcome, BridgeError> {
        let key = doc_id.to_string();
        let what = format!("deleting {} {id} (document {doc_id})", self.object.name());
        let outcome = self
            .write_one(&key, WriteOp::Delete { id: id.to_owned() }, &what)
            .await
            .map_err(|e| self.err(e, Side::Write, &what))?;
        if outcome.written.contains_key(&key) || outcome.gone.contains(&key) {
            return Ok(DeleteOutcome::Deleted);
        }
        let reason = outcome
            .failed
            .get(&key)
            .map_or_else(|| "the answer does not say".to_owned(), |e| summarize(e));
        Err(BridgeError::record(
            &self.bridge,
            format!("{what}: {reason}"),
            None,
        ))
    }
}
