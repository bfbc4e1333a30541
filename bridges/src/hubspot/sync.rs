//! HubSpot sync decisions as sans-IO state machines and pure functions that a bridge runner
//! drives: it sends the requests these produce, feeds the answers back, and applies the results.
//!
//! - [`Poll`]: one incremental round over the search API on the object's last-modified property,
//!   starting `overlap` before the last round's watermark (search indexing lags behind writes),
//!   sorted ascending, and re-anchoring the `GTE` cursor on the last seen modification time before
//!   the 10,000-result cap (with an `hs_object_id` walk when more than a query's worth shares one instant).
//! - [`ListScan`]: paging a plain or `archived=true` listing; [`archived_removals`] turns the
//!   archived one into deletes of linked records.
//! - [`merges_in`] / [`merge_from_get`]: merges seen through `hs_merged_object_ids` or a GET that
//!   answers with another object.
//! - [`plan_batches`] / [`match_batch`]: batch writes of at most 100 inputs, each with an
//!   `objectWriteTraceId`, and the 207 partial answer matched back to records; failures are
//!   retried one by one ([`retry_individually`]).
//! - [`create_lookup`] / [`create_search`] / [`adopt_existing`]: idempotent creates after a lost
//!   response or a 409.
//! - [`plan_hints`]: webhook hints (after the inbox) as refetches, removals and merges.
//! - [`rate_limit_wait`] and [`SearchPacer`]: 429 by policy (a `DAILY` limit waits for the reset)
//!   and search's 5 requests per second.
//!
//! Must not: do I/O, read clocks or random numbers (time and jitter are parameters), or keep
//! state beyond what the runner persists ([`PollCursor`] is serde).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Days, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::translate::{modified_at_ms, parse_time_ms};
use super::webhook::{Hint, ObjectRef, ObjectType};
use super::wire::{
    BatchInput, BatchResult, CreateInput, CrmObject, Direction, ErrorBody, Filter, FilterGroup,
    ListPage, MAX_BATCH_INPUTS, MAX_LIST_LIMIT, MAX_SEARCH_LIMIT, Operator, RateLimitPolicy,
    SEARCH_RESULT_CAP, SearchRequest, SearchResponse, Sort, UpdateInput, WriteProperties,
    next_after,
};

// ---------------------------------------------------------------------------------------------
// Incremental polling
// ---------------------------------------------------------------------------------------------

/// Settings of a poll round.
#[derive(Debug, Clone, PartialEq)]
pub struct PollConfig {
    /// Results per search page (at most 200).
    pub page_limit: u32,
    /// Results one query can page through (HubSpot: 10,000; tests use less).
    pub result_cap: u64,
    /// How far before the last watermark a round starts: must exceed search's indexing lag.
    pub overlap: Duration,
    /// Properties to request.
    pub properties: Vec<String>,
    /// Requests one round may make before it stops (and resumes next round from its watermark).
    pub max_requests: u32,
}

impl PollConfig {
    pub fn new(properties: Vec<String>) -> Self {
        PollConfig {
            page_limit: MAX_SEARCH_LIMIT,
            result_cap: SEARCH_RESULT_CAP,
            overlap: Duration::from_secs(5 * 60),
            properties,
            max_requests: 1000,
        }
    }
}

/// What a bridge keeps between rounds for one object type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollCursor {
    /// The newest modification time (epoch ms) a completed round saw; None before the first.
    pub watermark_ms: Option<i64>,
}

/// The query a poll is walking.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Query {
    /// Modified at or after (`inclusive`) / after `from_ms`, by modification time.
    Since { from_ms: i64, inclusive: bool },
    /// Modified exactly at `at_ms`, by `hs_object_id` above `after_id`: the tiebreak walk when
    /// more records share one instant than a query can page through.
    Tie { at_ms: i64, after_id: Option<u64> },
}

/// Why a poll round failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PollError {
    #[error("{object:?} search page {request} has no results but a next page: refusing to loop")]
    EmptyPageWithNext { object: ObjectType, request: u32 },
    #[error("{object:?} search round stopped after {0} requests (max_requests)", .request)]
    TooManyRequests { object: ObjectType, request: u32 },
    #[error("{object:?} search result {id}: no readable {property} ({value:?})")]
    NoModificationTime {
        object: ObjectType,
        id: String,
        property: &'static str,
        value: Option<String>,
    },
}

/// One incremental poll round of one object type.
#[derive(Debug, Clone)]
pub struct Poll {
    object_type: ObjectType,
    config: PollConfig,
    query: Query,
    after: Option<String>,
    fetched_in_query: u64,
    /// Id -> newest modification time returned this round.
    seen: BTreeMap<String, i64>,
    last: Option<(i64, String)>,
    max_seen_ms: Option<i64>,
    start_watermark: Option<i64>,
    requests: u32,
    reanchors: u32,
    done: bool,
}

/// What a finished round amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollOutcome {
    /// Persist this (only after the round's records are applied).
    pub cursor: PollCursor,
    pub requests: u32,
    /// Times the round re-anchored its cursor to stay under the result cap.
    pub reanchors: u32,
    /// Distinct records the round returned.
    pub records: usize,
}

impl Poll {
    /// Starts a round at `cursor.watermark - overlap` (the beginning of time on the first round).
    pub fn new(object_type: ObjectType, mut config: PollConfig, cursor: &PollCursor) -> Self {
        config.page_limit = config.page_limit.clamp(1, MAX_SEARCH_LIMIT);
        config.result_cap = config.result_cap.max(u64::from(config.page_limit));
        let overlap = i64::try_from(config.overlap.as_millis()).unwrap_or(i64::MAX);
        let from_ms = cursor
            .watermark_ms
            .map_or(0, |w| w.saturating_sub(overlap).max(0));
        Poll {
            object_type,
            config,
            query: Query::Since {
                from_ms,
                inclusive: true,
            },
            after: None,
            fetched_in_query: 0,
            seen: BTreeMap::new(),
            last: None,
            max_seen_ms: None,
            start_watermark: cursor.watermark_ms,
            requests: 0,
            reanchors: 0,
            done: false,
        }
    }

    pub fn object_type(&self) -> ObjectType {
        self.object_type
    }

    /// The next search to send; None when the round is complete.
    pub fn next_request(&self) -> Option<SearchRequest> {
        if self.done {
            return None;
        }
        let modified = self.object_type.last_modified_property();
        let (filters, sort_by) = match &self.query {
            Query::Since { from_ms, inclusive } => (
                vec![Filter::new(
                    modified,
                    if *inclusive {
                        Operator::Gte
                    } else {
                        Operator::Gt
                    },
                    from_ms.to_string(),
                )],
                modified,
            ),
            Query::Tie { at_ms, after_id } => {
                let mut f = vec![Filter::new(modified, Operator::Eq, at_ms.to_string())];
                if let Some(id) = after_id {
                    f.push(Filter::new("hs_object_id", Operator::Gt, id.to_string()));
                }
                (f, "hs_object_id")
            }
        };
        Some(SearchRequest {
            filter_groups: vec![FilterGroup { filters }],
            sorts: vec![Sort {
                property_name: sort_by.to_owned(),
                direction: Direction::Ascending,
            }],
            properties: self.config.properties.clone(),
            limit: Some(self.config.page_limit),
            after: self.after.clone(),
            query: None,
        })
    }

    /// Takes the answer to [`Poll::next_request`]; returns the records not yet returned this round.
    pub fn on_page(&mut self, page: SearchResponse) -> Result<Vec<CrmObject>, PollError> {
        self.requests += 1;
        let object = self.object_type;
        let mut fresh = Vec::new();
        let count = page.results.len() as u64;
        for record in page.results {
            let Some(at) = modified_at_ms(object, &record) else {
                return Err(PollError::NoModificationTime {
                    object,
                    id: record.id.clone(),
                    property: object.last_modified_property(),
                    value: record
                        .property(object.last_modified_property())
                        .map(str::to_owned),
                });
            };
            self.max_seen_ms = Some(self.max_seen_ms.map_or(at, |m| m.max(at)));
            self.last = Some((at, record.id.clone()));
            // A record edited during the round comes back later with a newer time: news again.
            let newer = self.seen.get(&record.id).is_none_or(|known| at > *known);
            if newer {
                self.seen.insert(record.id.clone(), at);
                fresh.push(record);
            }
        }
        self.fetched_in_query += count;
        let next = next_after(&page.paging);
        if next.is_some() && count == 0 {
            return Err(PollError::EmptyPageWithNext {
                object,
                request: self.requests,
            });
        }
        match next {
            None => self.query_finished(),
            Some(after) => {
                if self.fetched_in_query + u64::from(self.config.page_limit)
                    > self.config.result_cap
                {
                    self.reanchor();
                } else {
                    self.after = Some(after);
                }
            }
        }
        if !self.done && self.requests >= self.config.max_requests {
            return Err(PollError::TooManyRequests {
                object,
                request: self.requests,
            });
        }
        Ok(fresh)
    }

    /// The provider refused to page further (400 past its cap, lower than configured):
    /// re-anchor now instead of failing the round.
    pub fn on_past_cap(&mut self) {
        self.requests += 1;
        self.reanchor();
    }

    fn query_finished(&mut self) {
        match self.query {
            Query::Since { .. } => self.done = true,
            Query::Tie { at_ms, .. } => {
                // Every record at `at_ms` is seen: continue strictly after it.
                self.query = Query::Since {
                    from_ms: at_ms,
                    inclusive: false,
                };
                self.after = None;
                self.fetched_in_query = 0;
            }
        }
    }

    fn reanchor(&mut self) {
        self.reanchors += 1;
        self.after = None;
        self.fetched_in_query = 0;
        let Some((last_ms, last_id)) = self.last.clone() else {
            self.done = true;
            return;
        };
        self.query = match self.query {
            Query::Since { from_ms, inclusive } => {
                if last_ms > from_ms || !inclusive {
                    // GTE the last seen time: records sharing it that the cap cut off come again
                    // (the ones already seen are dropped by id).
                    Query::Since {
                        from_ms: last_ms,
                        inclusive: true,
                    }
                } else {
                    // A whole query's worth of records at one instant: walk them by id.
                    Query::Tie {
                        at_ms: last_ms,
                        after_id: None,
                    }
                }
            }
            Query::Tie { at_ms, .. } => Query::Tie {
                at_ms,
                after_id: last_id.parse().ok(),
            },
        };
    }

    /// Ends the round; call after [`Poll::next_request`] returned None.
    pub fn finish(self) -> PollOutcome {
        let watermark_ms = match (self.start_watermark, self.max_seen_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        PollOutcome {
            cursor: PollCursor { watermark_ms },
            requests: self.requests,
            reanchors: self.reanchors,
            records: self.seen.len(),
        }
    }
}

/// Whether a polled record is news: not known, or modified after the shadow's time. Overlapping
/// windows and the bridge's own writes come back with a time the shadow already has.
pub fn is_news(
    shadow_modified_ms: Option<i64>,
    object_type: ObjectType,
    record: &CrmObject,
) -> bool {
    match (shadow_modified_ms, modified_at_ms(object_type, record)) {
        (Some(known), Some(at)) => at > known,
        _ => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Listings, archived records and merges
// ---------------------------------------------------------------------------------------------

/// `GET /crm/v3/objects/{o}` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub archived: bool,
    pub limit: u32,
    pub after: Option<String>,
    pub properties: Vec<String>,
}

/// Pages through a listing (`archived=true` returns only archived records).
#[derive(Debug, Clone)]
pub struct ListScan {
    request: Option<ListRequest>,
    pub requests: u32,
}

impl ListScan {
    pub fn new(archived: bool, properties: Vec<String>) -> Self {
        ListScan {
            request: Some(ListRequest {
                archived,
                limit: MAX_LIST_LIMIT,
                after: None,
                properties,
            }),
            requests: 0,
        }
    }

    pub fn next_request(&self) -> Option<ListRequest> {
        self.request.clone()
    }

    /// Takes a page; returns its records.
    pub fn on_page(&mut self, page: ListPage) -> Vec<CrmObject> {
        self.requests += 1;
        let next = next_after(&page.paging);
        match (&mut self.request, next) {
            (Some(r), Some(after)) if !page.results.is_empty() => r.after = Some(after),
            _ => self.request = None,
        }
        page.results
    }
}

/// Linked records that an `archived=true` listing reports archived: the runner unlinks them (and
/// tombstones per the delete rules). `linked`: is this id linked by the bridge.
pub fn archived_removals(archived: &[CrmObject], linked: &dyn Fn(&str) -> bool) -> Vec<String> {
    let mut out: Vec<String> = archived
        .iter()
        .filter(|o| o.archived || o.archived_at.is_some())
        .map(|o| o.id.clone())
        .filter(|id| linked(id))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A merge at HubSpot: `absorbed` ids live on in `survivor` (the runner merges the documents;
/// nothing is deleted anywhere).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeResult {
    pub survivor: ObjectRef,
    pub absorbed: Vec<String>,
}

/// Merges visible in polled records: a survivor whose `hs_merged_object_ids` names linked ids.
pub fn merges_in(
    object_type: ObjectType,
    records: &[CrmObject],
    linked: &dyn Fn(&str) -> bool,
) -> Vec<MergeResult> {
    records
        .iter()
        .filter_map(|r| {
            let survivor = r.object_id().to_owned();
            let absorbed: Vec<String> = r
                .merged_object_ids()
                .into_iter()
                .filter(|id| *id != survivor && linked(id))
                .collect();
            (!absorbed.is_empty()).then_some(MergeResult {
                survivor: ObjectRef {
                    object_type,
                    id: super::webhook::HubSpotId(survivor),
                },
                absorbed,
            })
        })
        .collect()
}

/// A GET of `requested` that answered with another object: `requested` was merged into it.
pub fn merge_from_get(
    object_type: ObjectType,
    requested: &str,
    answer: &CrmObject,
) -> Option<MergeResult> {
    let survivor = answer.object_id();
    (survivor != requested).then(|| MergeResult {
        survivor: ObjectRef {
            object_type,
            id: super::webhook::HubSpotId(survivor.to_owned()),
        },
        absorbed: vec![requested.to_owned()],
    })
}

/// What the runner does about webhook hints (after the inbox dropped duplicates and stale ones).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HintPlan {
    /// Objects to re-read (created, changed, restored, merge survivors, association ends); the
    /// modification time then decides against the shadow.
    pub refetch: Vec<ObjectRef>,
    /// Linked objects archived or GDPR-deleted at HubSpot: unlink (tombstone per the delete rules).
    pub removals: Vec<ObjectRef>,
    pub merges: Vec<MergeResult>,
}

/// Turns hints into actions. Only linked objects are removed or absorbed; a later hint for the
/// same object overrides an earlier one (a restore after a delete refetches).
pub fn plan_hints(hints: &[Hint], linked: &dyn Fn(&ObjectRef) -> bool) -> HintPlan {
    let mut last: BTreeMap<ObjectRef, bool> = BTreeMap::new(); // true: refetch, false: removed
    let mut plan = HintPlan::default();
    for hint in hints {
        match hint {
            Hint::Refetch(o) | Hint::Restored(o) => {
                last.insert(o.clone(), true);
            }
            Hint::Deleted { object, .. } => {
                last.insert(object.clone(), false);
            }
            Hint::Merged { survivor, merged } => {
                let absorbed: Vec<String> = merged
                    .iter()
                    .filter(|m| linked(m))
                    .map(|m| m.id.0.clone())
                    .collect();
                for m in merged {
                    last.remove(m);
                }
                last.insert(survivor.clone(), true);
                if !absorbed.is_empty() {
                    plan.merges.push(MergeResult {
                        survivor: survivor.clone(),
                        absorbed,
                    });
                }
            }
            Hint::AssociationChanged { from, .. } => {
                last.entry(from.clone()).or_insert(true);
            }
        }
    }
    for (object, live) in last {
        if live {
            plan.refetch.push(object);
        } else if linked(&object) {
            plan.removals.push(object);
        }
    }
    plan
}

// ---------------------------------------------------------------------------------------------
// Batch writes
// ---------------------------------------------------------------------------------------------

/// One record's pending write. `key` names the record (its document id) and is its
/// `objectWriteTraceId`.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingWrite {
    pub key: String,
    pub op: WriteOp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Create(CreateInput),
    Update {
        id: String,
        properties: WriteProperties,
    },
}

/// One batch call: `create` or `update` inputs with their record keys, in input order.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteBatch {
    Create {
        keys: Vec<String>,
        body: BatchInput<CreateInput>,
    },
    Update {
        keys: Vec<String>,
        ids: Vec<String>,
        body: BatchInput<UpdateInput>,
    },
}

impl WriteBatch {
    pub fn keys(&self) -> &[String] {
        match self {
            WriteBatch::Create { keys, .. } | WriteBatch::Update { keys, .. } => keys,
        }
    }
}

/// Groups writes into batches of at most 100 (creates and updates apart; empty updates dropped),
/// each input carrying its record key as `objectWriteTraceId`.
pub fn plan_batches(writes: &[PendingWrite]) -> Vec<WriteBatch> {
    let mut creates: Vec<(String, CreateInput)> = Vec::new();
    let mut updates: Vec<(String, UpdateInput)> = Vec::new();
    for w in writes {
        match &w.op {
            WriteOp::Create(input) => {
                let mut input = input.clone();
                input.object_write_trace_id = Some(w.key.clone());
                creates.push((w.key.clone(), input));
            }
            WriteOp::Update { id, properties } if !properties.is_empty() => updates.push((
                w.key.clone(),
                UpdateInput {
                    id: id.clone(),
                    properties: properties.clone(),
                    id_property: None,
                    object_write_trace_id: Some(w.key.clone()),
                },
            )),
            WriteOp::Update { .. } => {}
        }
    }
    let mut out = Vec::new();
    for chunk in creates.chunks(MAX_BATCH_INPUTS) {
        out.push(WriteBatch::Create {
            keys: chunk.iter().map(|(k, _)| k.clone()).collect(),
            body: BatchInput {
                inputs: chunk.iter().map(|(_, i)| i.clone()).collect(),
            },
        });
    }
    for chunk in updates.chunks(MAX_BATCH_INPUTS) {
        out.push(WriteBatch::Update {
            keys: chunk.iter().map(|(k, _)| k.clone()).collect(),
            ids: chunk.iter().map(|(_, i)| i.id.clone()).collect(),
            body: BatchInput {
                inputs: chunk.iter().map(|(_, i)| i.clone()).collect(),
            },
        });
    }
    out
}

/// A batch answer matched back to records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    /// Record key -> the object HubSpot stored: apply (link id, new shadow).
    pub written: BTreeMap<String, CrmObject>,
    /// Record key -> its error: retry this record alone.
    pub failed: BTreeMap<String, ErrorBody>,
    /// Keys neither answered nor refused (a result without trace id that matched nothing, or
    /// errors without context): outcome unknown, so a create must be looked up before retrying.
    pub unknown: Vec<String>,
}

/// Matches a 200/201/207 batch answer to the batch's records: results by `objectWriteTraceId`,
/// else (updates) by id, else (creates) by the driftless id property; errors by the trace ids in
/// their `context`. An error without context marks every unanswered key unknown.
pub fn match_batch(
    batch: &WriteBatch,
    result: &BatchResult,
    id_property: Option<&str>,
) -> BatchOutcome {
    let keys: BTreeSet<&str> = batch.keys().iter().map(String::as_str).collect();
    let mut out = BatchOutcome::default();
    for object in &result.results {
        let by_trace = object
            .object_write_trace_id
            .as_deref()
            .filter(|t| keys.contains(t));
        let key = by_trace.map(str::to_owned).or_else(|| match batch {
            WriteBatch::Update { keys, ids, .. } => ids
                .iter()
                .position(|id| *id == object.id)
                .map(|i| keys[i].clone()),
            WriteBatch::Create { .. } => id_property
                .and_then(|p| object.property(p))
                .filter(|v| keys.contains(v))
                .map(str::to_owned),
        });
        if let Some(key) = key {
            out.written.insert(key, object.clone());
        }
    }
    for error in &result.errors {
        for trace in error.trace_ids() {
            if keys.contains(trace.as_str()) && !out.written.contains_key(&trace) {
                out.failed.insert(trace, error.clone());
            }
        }
        // Updates may name the failed ids instead.
        if let WriteBatch::Update { keys: ks, ids, .. } = batch {
            for id in error
                .context_values("id")
                .into_iter()
                .chain(error.context_values("ids"))
            {
                if let Some(i) = ids.iter().position(|x| *x == id)
                    && !out.written.contains_key(&ks[i])
                {
                    out.failed.insert(ks[i].clone(), error.clone());
                }
            }
        }
    }
    for key in batch.keys() {
        if !out.written.contains_key(key) && !out.failed.contains_key(key) {
            out.unknown.push(key.clone());
        }
    }
    out
}

/// The writes to retry one by one: those of `failed` (and `unknown`) keys, nothing else.
pub fn retry_individually(writes: &[PendingWrite], outcome: &BatchOutcome) -> Vec<PendingWrite> {
    writes
        .iter()
        .filter(|w| outcome.failed.contains_key(&w.key) || outcome.unknown.contains(&w.key))
        .cloned()
        .collect()
}

/// How to find a record an earlier create may already have made (its response was lost).
#[derive(Debug, Clone, PartialEq)]
pub enum CreateLookup {
    /// `GET /crm/v3/objects/{o}/{value}?idProperty={property}`: exact, no search lag (needs a
    /// unique-value property).
    ByIdProperty { property: String, value: String },
    /// A search (by email for contacts); subject to search lag.
    Search(SearchRequest),
    /// Nothing to look up by: create.
    None,
}

/// The lookup before re-creating record `key` after an unknown outcome: the exact GET by the
/// driftless id property when one is configured, else [`create_search`].
pub fn create_lookup(
    object_type: ObjectType,
    key: &str,
    id_property: Option<&str>,
    properties: &WriteProperties,
    read_properties: &[String],
) -> CreateLookup {
    if let Some(p) = id_property {
        return CreateLookup::ByIdProperty {
            property: p.to_owned(),
            value: key.to_owned(),
        };
    }
    match create_search(object_type, key, None, properties, read_properties) {
        Some(request) => CreateLookup::Search(request),
        None => CreateLookup::None,
    }
}

/// A search for what an earlier create of `key` made: by the driftless id property, or (for
/// contacts) by email, ORed. Also the fallback when the id property is not unique-valued (HubSpot
/// refuses `idProperty` GETs on such properties). None when there is nothing to search by.
pub fn create_search(
    object_type: ObjectType,
    key: &str,
    id_property: Option<&str>,
    properties: &WriteProperties,
    read_properties: &[String],
) -> Option<SearchRequest> {
    let mut filter_groups = Vec::new();
    if let Some(p) = id_property {
        filter_groups.push(FilterGroup {
            filters: vec![Filter::new(p, Operator::Eq, key)],
        });
    }
    if object_type == ObjectType::Contact
        && let Some(email) = properties.get("email").filter(|e| !e.is_empty())
    {
        filter_groups.push(FilterGroup {
            filters: vec![Filter::new("email", Operator::Eq, email.clone())],
        });
    }
    (!filter_groups.is_empty()).then(|| SearchRequest {
        filter_groups,
        properties: read_properties.to_vec(),
        limit: Some(10),
        ..SearchRequest::default()
    })
}

/// The existing object a create should adopt: from a lookup's results (matching the id property
/// or email), or the id of a 409 "Existing ID: N".
pub fn adopt_existing<'a>(
    key: &str,
    id_property: Option<&str>,
    properties: &WriteProperties,
    found: &'a [CrmObject],
) -> Option<&'a CrmObject> {
    found.iter().find(|o| {
        id_property.is_some_and(|p| o.property(p) == Some(key))
            || properties.get("email").is_some_and(|e| {
                !e.is_empty()
                    && o.property("email")
                        .is_some_and(|x| x.eq_ignore_ascii_case(e))
            })
    })
}

// ---------------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------------

/// Where a daily reset time came from (reported to the operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetSource {
    /// The response said when (`Retry-After`).
    Header,
    /// Midnight in the account's configured time zone.
    AccountMidnight(Tz),
    /// No header and no configured zone: assumed the next UTC midnight.
    AssumedUtcMidnight,
}

/// What to do about a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitWait {
    /// Burst limit: retry after this (exponential with jitter, at least `Retry-After`).
    Backoff(Duration),
    /// Daily limit: no request before `reset_at_ms`.
    UntilDailyReset {
        wait: Duration,
        reset_at_ms: i64,
        source: ResetSource,
    },
}

impl RateLimitWait {
    pub fn duration(&self) -> Duration {
        match self {
            RateLimitWait::Backoff(d) | RateLimitWait::UntilDailyReset { wait: d, .. } => *d,
        }
    }
}

/// Burst backoff bounds: HubSpot's rolling window is 10 s.
pub const BURST_BACKOFF_BASE: Duration = Duration::from_millis(500);
pub const BURST_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Decides the wait after a 429 with `policy`, its `Retry-After` (if any), at `now_ms`, on retry
/// `attempt` (0-based), with `jitter` in `[0, 1)`.
pub fn rate_limit_wait(
    policy: RateLimitPolicy,
    retry_after: Option<Duration>,
    attempt: u32,
    now_ms: i64,
    account_zone: Option<Tz>,
    jitter: f64,
) -> RateLimitWait {
    match policy {
        RateLimitPolicy::Daily => {
            let (reset_at_ms, source) = match retry_after {
                Some(d) => (
                    now_ms.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                    ResetSource::Header,
                ),
                None => match account_zone {
                    Some(tz) => (
                        next_midnight_ms(now_ms, tz),
                        ResetSource::AccountMidnight(tz),
                    ),
                    None => (
                        next_midnight_ms(now_ms, Tz::UTC),
                        ResetSource::AssumedUtcMidnight,
                    ),
                },
            };
            let wait = Duration::from_millis(u64::try_from(reset_at_ms - now_ms).unwrap_or(0));
            RateLimitWait::UntilDailyReset {
                wait,
                reset_at_ms,
                source,
            }
        }
        RateLimitPolicy::TenSecondlyRolling | RateLimitPolicy::Unknown => {
            RateLimitWait::Backoff(crate::sync::backoff(
                attempt,
                BURST_BACKOFF_BASE,
                BURST_BACKOFF_MAX,
                retry_after,
                jitter,
            ))
        }
    }
}

/// The first midnight in `tz` after `now_ms` (epoch ms).
pub fn next_midnight_ms(now_ms: i64, tz: Tz) -> i64 {
    let fallback = now_ms + 24 * 3600 * 1000;
    let Some(now) = DateTime::<Utc>::from_timestamp_millis(now_ms) else {
        return fallback;
    };
    let local_date = now.with_timezone(&tz).date_naive();
    let Some(tomorrow) = local_date.checked_add_days(Days::new(1)) else {
        return fallback;
    };
    let Some(midnight) = tomorrow.and_hms_opt(0, 0, 0) else {
        return fallback;
    };
    // A zone whose midnight does not exist that day (DST at 00:00) resets at the first valid time.
    (0..4)
        .find_map(|h| {
            tz.from_local_datetime(&(midnight + chrono::Duration::hours(h)))
                .earliest()
        })
        .map_or(fallback, |t| t.timestamp_millis())
}

/// Search's own limit: at most `max_per_window` requests per `window` (HubSpot: 5 per second).
#[derive(Debug, Clone)]
pub struct SearchPacer {
    max_per_window: usize,
    window_ms: i64,
    sent: VecDeque<i64>,
}

impl Default for SearchPacer {
    fn default() -> Self {
        // A little over a second: the provider counts arrival times, which jitter.
        SearchPacer::new(5, Duration::from_millis(1100))
    }
}

impl SearchPacer {
    pub fn new(max_per_window: usize, window: Duration) -> Self {
        SearchPacer {
            max_per_window: max_per_window.max(1),
            window_ms: i64::try_from(window.as_millis()).unwrap_or(1000),
            sent: VecDeque::new(),
        }
    }

    /// How long to wait at `now_ms` before the next search may go.
    pub fn delay(&self, now_ms: i64) -> Duration {
        let in_window: Vec<i64> = self
            .sent
            .iter()
            .copied()
            .filter(|t| now_ms - t < self.window_ms)
            .collect();
        if in_window.len() < self.max_per_window {
            return Duration::ZERO;
        }
        let oldest = in_window[in_window.len() - self.max_per_window];
        Duration::from_millis(u64::try_from(oldest + self.window_ms - now_ms).unwrap_or(0))
    }

    /// Records a search sent at `now_ms`.
    pub fn record(&mut self, now_ms: i64) {
        self.sent.push_back(now_ms);
        while self.sent.len() > self.max_per_window {
            self.sent.pop_front();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Associations
// ---------------------------------------------------------------------------------------------

/// Associations to add and remove so that `from` is associated with exactly `want` (ids of `to`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssociationPlan {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

/// Compares the associations HubSpot has with the ones the canonical references want.
pub fn association_plan(have: &BTreeSet<String>, want: &BTreeSet<String>) -> AssociationPlan {
    AssociationPlan {
        add: want.difference(have).cloned().collect(),
        remove: have.difference(want).cloned().collect(),
    }
}

/// The archive time of an archived record (epoch ms), for ordering against other events.
pub fn archived_at_ms(object: &CrmObject) -> Option<i64> {
    object.archived_at.as_deref().and_then(parse_time_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hubspot::wire::{NextPage, Paging, Properties};

    fn obj(id: u64, modified: i64) -> CrmObject {
        let mut properties = Properties::new();
        properties.insert("lastmodifieddate".into(), Some(modified.to_string()));
        properties.insert("hs_object_id".into(), Some(id.to_string()));
        CrmObject {
            id: id.to_string(),
            properties,
            created_at: None,
            updated_at: None,
            archived: false,
            archived_at: None,
            object_write_trace_id: None,
            associations: None,
            properties_with_history: None,
            extra: BTreeMap::new(),
        }
    }

    /// A search engine over `records` with HubSpot's semantics (filters, one sort, offset
    /// paging, a cap), enough to drive [`Poll`] exhaustively.
    fn answer(records: &[CrmObject], req: &SearchRequest, cap: u64) -> Result<SearchResponse, ()> {
        let offset: u64 = req.after.as_deref().map_or(0, |a| a.parse().unwrap());
        if offset >= cap {
            return Err(());
        }
        let mut hits: Vec<&CrmObject> = records
            .iter()
            .filter(|r| {
                req.filter_groups.iter().any(|g| {
                    g.filters.iter().all(|f| {
                        let have: i64 = r.property(&f.property_name).unwrap().parse().unwrap();
                        let v: i64 = f.value.as_deref().unwrap().parse().unwrap();
                        match f.operator {
                            Operator::Gte => have >= v,
                            Operator::Gt => have > v,
                            Operator::Eq => have == v,
                            _ => unreachable!(),
                        }
                    })
                })
            })
            .collect();
        let sort = &req.sorts[0].property_name;
        // Ties in the sort come back in an arbitrary (here: reversed id) order.
        hits.sort_by_key(|r| {
            (
                r.property(sort).unwrap().parse::<i64>().unwrap(),
                std::cmp::Reverse(r.id.parse::<u64>().unwrap()),
            )
        });
        let limit = u64::from(req.limit.unwrap());
        let end = (offset + limit).min(hits.len() as u64).min(cap);
        let page: Vec<CrmObject> = hits[offset as usize..end as usize]
            .iter()
            .map(|r| (*r).clone())
            .collect();
        let paging = (end < hits.len() as u64).then(|| Paging {
            next: Some(NextPage {
                after: end.to_string(),
                link: None,
            }),
        });
        Ok(SearchResponse {
            total: hits.len() as u64,
            results: page,
            paging,
        })
    }

    fn run(
        records: &[CrmObject],
        config: PollConfig,
        cursor: &PollCursor,
        cap: u64,
    ) -> (BTreeSet<String>, PollOutcome) {
        let mut poll = Poll::new(ObjectType::Contact, config, cursor);
        let mut got = BTreeSet::new();
        while let Some(req) = poll.next_request() {
            match answer(records, &req, cap) {
                Ok(page) => {
                    for r in poll.on_page(page).unwrap() {
                        assert!(got.insert(r.id), "a record is returned once per round");
                    }
                }
                Err(()) => poll.on_past_cap(),
            }
        }
        (got, poll.finish())
    }

    fn config(limit: u32, cap: u64) -> PollConfig {
        PollConfig {
            page_limit: limit,
            result_cap: cap,
            overlap: Duration::from_millis(100),
            properties: vec![],
            max_requests: 10_000,
        }
    }

    #[test]
    fn reanchors_before_the_cap_and_sees_every_record() {
        // 95 records, many sharing an instant, a cap of 20 per query, pages of 7.
        let records: Vec<CrmObject> = (1..=95).map(|i| obj(i, 1000 + (i as i64 / 4))).collect();
        let (got, out) = run(&records, config(7, 20), &PollCursor::default(), 20);
        assert_eq!(got.len(), 95);
        assert!(out.reanchors >= 4, "{out:?}");
        assert_eq!(out.cursor.watermark_ms, Some(1000 + 95 / 4));
    }

    #[test]
    fn more_records_at_one_instant_than_a_query_can_hold_walk_by_id() {
        let mut records: Vec<CrmObject> = (1..=50).map(|i| obj(i, 5000)).collect();
        records.extend((51..=60).map(|i| obj(i, 6000)));
        let (got, out) = run(&records, config(5, 10), &PollCursor::default(), 10);
        assert_eq!(got.len(), 60);
        assert_eq!(out.cursor.watermark_ms, Some(6000));
    }

    #[test]
    fn a_provider_cap_lower_than_configured_is_survived() {
        let records: Vec<CrmObject> = (1..=40).map(|i| obj(i, 1000 + i as i64)).collect();
        let (got, out) = run(&records, config(5, 10_000), &PollCursor::default(), 15);
        assert_eq!(got.len(), 40);
        assert!(out.reanchors >= 2);
    }

    #[test]
    fn the_next_round_starts_an_overlap_before_the_watermark() {
        let poll = Poll::new(
            ObjectType::Company,
            config(10, 100),
            &PollCursor {
                watermark_ms: Some(10_000),
            },
        );
        let req = poll.next_request().unwrap();
        let f = &req.filter_groups[0].filters[0];
        assert_eq!(f.property_name, "hs_lastmodifieddate");
        assert_eq!(f.operator, Operator::Gte);
        assert_eq!(f.value.as_deref(), Some("9900"));
        assert_eq!(req.sorts[0].property_name, "hs_lastmodifieddate");
        // A quiet round keeps the watermark.
        let mut poll = poll;
        poll.on_page(SearchResponse::default()).unwrap();
        assert!(poll.next_request().is_none());
        assert_eq!(poll.finish().cursor.watermark_ms, Some(10_000));
    }

    #[test]
    fn lagging_records_inside_the_overlap_are_found_next_round() {
        let mut records = vec![obj(1, 1000), obj(2, 2000)];
        let (_, first) = run(&records[1..], config(10, 100), &PollCursor::default(), 100);
        // Record 1 (modified before record 2) shows up in search only now.
        records.push(obj(3, 2050));
        let mut cfg = config(10, 100);
        cfg.overlap = Duration::from_millis(1500);
        let (got, _) = run(&records, cfg, &first.cursor, 100);
        assert!(got.contains("1"));
        // Without enough overlap, it would be missed.
        let (got, _) = run(&records, config(10, 100), &first.cursor, 100);
        assert!(!got.contains("1"));
    }

    #[test]
    fn a_record_edited_during_the_round_is_news_again() {
        let mut poll = Poll::new(ObjectType::Contact, config(10, 100), &PollCursor::default());
        let page = |r: Vec<CrmObject>| SearchResponse {
            total: r.len() as u64,
            results: r,
            paging: Some(Paging {
                next: Some(NextPage {
                    after: "1".into(),
                    link: None,
                }),
            }),
        };
        assert_eq!(
            poll.on_page(page(vec![obj(1, 100), obj(2, 100)]))
                .unwrap()
                .len(),
            2
        );
        // Seen again with the same time: dropped; with a newer time: news.
        let again = poll.on_page(page(vec![obj(2, 100), obj(1, 300)])).unwrap();
        assert_eq!(
            again.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            vec!["1"]
        );
    }

    #[test]
    fn hints_become_refetches_removals_and_merges() {
        use crate::hubspot::webhook::HubSpotId;
        let c = |id: &str| ObjectRef {
            object_type: ObjectType::Contact,
            id: HubSpotId(id.into()),
        };
        let linked = |o: &ObjectRef| o.id.0 != "99";
        let hints = vec![
            Hint::Refetch(c("1")),
            Hint::Deleted {
                object: c("2"),
                privacy: false,
            },
            Hint::Deleted {
                object: c("3"),
                privacy: false,
            },
            Hint::Restored(c("3")),
            Hint::Deleted {
                object: c("99"),
                privacy: true,
            },
            Hint::Merged {
                survivor: c("4"),
                merged: vec![c("5"), c("99")],
            },
        ];
        let plan = plan_hints(&hints, &linked);
        assert_eq!(plan.refetch, vec![c("1"), c("3"), c("4")]);
        assert_eq!(plan.removals, vec![c("2")]);
        assert_eq!(plan.merges.len(), 1);
        assert_eq!(plan.merges[0].absorbed, vec!["5"]);
    }

    #[test]
    fn records_without_a_modification_time_are_errors_not_panics() {
        let mut poll = Poll::new(ObjectType::Contact, config(10, 100), &PollCursor::default());
        let mut bad = obj(1, 0);
        bad.properties
            .insert("lastmodifieddate".into(), Some("never".into()));
        let err = poll
            .on_page(SearchResponse {
                total: 1,
                results: vec![bad],
                paging: None,
            })
            .unwrap_err();
        assert!(err.to_string().contains("lastmodifieddate"));
    }

    #[test]
    fn news_compares_modification_times() {
        let r = obj(1, 5000);
        assert!(is_news(None, ObjectType::Contact, &r));
        assert!(is_news(Some(4999), ObjectType::Contact, &r));
        assert!(!is_news(Some(5000), ObjectType::Contact, &r));
    }

    #[test]
    fn archived_and_merges() {
        let mut a = obj(7, 1);
        a.archived = true;
        let linked = |id: &str| id == "7" || id == "9";
        assert_eq!(archived_removals(&[a, obj(8, 1)], &linked), vec!["7"]);
        let mut survivor = obj(10, 2);
        survivor
            .properties
            .insert("hs_merged_object_ids".into(), Some("9;11".into()));
        let merges = merges_in(ObjectType::Contact, &[survivor.clone()], &linked);
        assert_eq!(merges.len(), 1);
        assert_eq!(merges[0].survivor.id.0, "10");
        assert_eq!(merges[0].absorbed, vec!["9"]);
        assert_eq!(
            merge_from_get(ObjectType::Contact, "9", &survivor).map(|m| m.absorbed),
            Some(vec!["9".to_owned()])
        );
        assert_eq!(merge_from_get(ObjectType::Contact, "10", &survivor), None);
    }

    fn write(key: &str, id: Option<&str>) -> PendingWrite {
        let properties: WriteProperties = [("firstname".to_owned(), key.to_owned())].into();
        PendingWrite {
            key: key.into(),
            op: match id {
                Some(id) => WriteOp::Update {
                    id: id.into(),
                    properties,
                },
                None => WriteOp::Create(CreateInput {
                    properties,
                    ..CreateInput::default()
                }),
            },
        }
    }

    #[test]
    fn batches_hold_at_most_100_with_trace_ids() {
        let writes: Vec<PendingWrite> = (0..250)
            .map(|i| write(&format!("k{i}"), (i % 2 == 0).then_some("1")))
            .collect();
        let batches = plan_batches(&writes);
        assert_eq!(batches.len(), 4);
        for b in &batches {
            assert!(b.keys().len() <= 100);
            if let WriteBatch::Create { keys, body } = b {
                for (k, i) in keys.iter().zip(&body.inputs) {
                    assert_eq!(i.object_write_trace_id.as_ref(), Some(k));
                }
            }
        }
        // Updates with nothing to say are dropped.
        let empty = PendingWrite {
            key: "e".into(),
            op: WriteOp::Update {
                id: "1".into(),
                properties: WriteProperties::new(),
            },
        };
        assert!(plan_batches(&[empty]).is_empty());
    }

    #[test]
    fn a_207_is_matched_back_to_its_records() {
        let writes = vec![write("a", None), write("b", None), write("c", None)];
        let batch = &plan_batches(&writes)[0];
        let mut ok = obj(100, 1);
        ok.object_write_trace_id = Some("a".into());
        let mut by_property = obj(101, 1);
        by_property
            .properties
            .insert("driftless_id".into(), Some("c".into()));
        let result: BatchResult = serde_json::from_value(serde_json::json!({
            "status": "COMPLETE",
            "results": [ok, by_property],
            "errors": [{"status": "error", "category": "VALIDATION_ERROR",
                        "message": "bad", "context": {"objectWriteTraceId": ["b"]}}]
        }))
        .unwrap();
        let outcome = match_batch(batch, &result, Some("driftless_id"));
        assert_eq!(outcome.written.keys().collect::<Vec<_>>(), vec!["a", "c"]);
        assert_eq!(outcome.failed.keys().collect::<Vec<_>>(), vec!["b"]);
        assert!(outcome.unknown.is_empty());
        let retry = retry_individually(&writes, &outcome);
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].key, "b");
        // Without the id property, "c" is unknown (its create must be looked up, not repeated).
        let outcome = match_batch(batch, &result, None);
        assert_eq!(outcome.unknown, vec!["c"]);
    }

    #[test]
    fn update_results_match_by_id() {
        let writes = vec![write("a", Some("5")), write("b", Some("6"))];
        let batch = &plan_batches(&writes)[0];
        let result: BatchResult = serde_json::from_value(serde_json::json!({
            "status": "COMPLETE", "results": [obj(6, 1)],
            "errors": [{"message": "x", "context": {"ids": ["5"]}}]
        }))
        .unwrap();
        let outcome = match_batch(batch, &result, None);
        assert_eq!(outcome.written.keys().collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(outcome.failed.keys().collect::<Vec<_>>(), vec!["a"]);
    }

    #[test]
    fn creates_look_up_before_repeating() {
        let props: WriteProperties = [("email".to_owned(), "a@x.com".to_owned())].into();
        assert_eq!(
            create_lookup(
                ObjectType::Contact,
                "doc1",
                Some("driftless_id"),
                &props,
                &[]
            ),
            CreateLookup::ByIdProperty {
                property: "driftless_id".into(),
                value: "doc1".into()
            }
        );
        match create_lookup(ObjectType::Contact, "doc1", None, &props, &[]) {
            CreateLookup::Search(req) => {
                assert_eq!(req.filter_groups[0].filters[0].property_name, "email")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            create_lookup(ObjectType::Deal, "doc1", None, &props, &[]),
            CreateLookup::None
        );
        let both = create_search(
            ObjectType::Contact,
            "doc1",
            Some("driftless_id"),
            &props,
            &[],
        )
        .unwrap();
        assert_eq!(both.filter_groups.len(), 2, "id property OR email");
        let deal =
            create_search(ObjectType::Deal, "doc1", Some("driftless_id"), &props, &[]).unwrap();
        assert_eq!(
            deal.filter_groups[0].filters[0].value.as_deref(),
            Some("doc1")
        );
        assert_eq!(deal.filter_groups.len(), 1);
        let mut found = obj(3, 1);
        found
            .properties
            .insert("email".into(), Some("A@x.com".into()));
        assert!(adopt_existing("doc1", None, &props, std::slice::from_ref(&found)).is_some());
        assert!(adopt_existing("doc1", None, &WriteProperties::new(), &[found]).is_none());
    }

    #[test]
    fn rate_limits_by_policy() {
        let now = 1_763_546_400_000; // 2025-11-19T10:00:00Z
        match rate_limit_wait(RateLimitPolicy::TenSecondlyRolling, None, 0, now, None, 0.5) {
            RateLimitWait::Backoff(d) => assert!(d <= BURST_BACKOFF_MAX && d > Duration::ZERO),
            other => panic!("{other:?}"),
        }
        let daily = rate_limit_wait(RateLimitPolicy::Daily, None, 0, now, None, 0.5);
        assert_eq!(
            daily,
            RateLimitWait::UntilDailyReset {
                wait: Duration::from_secs(14 * 3600),
                reset_at_ms: 1_763_596_800_000,
                source: ResetSource::AssumedUtcMidnight
            }
        );
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        match rate_limit_wait(RateLimitPolicy::Daily, None, 0, now, Some(berlin), 0.5) {
            RateLimitWait::UntilDailyReset { wait, source, .. } => {
                assert_eq!(wait, Duration::from_secs(13 * 3600));
                assert_eq!(source, ResetSource::AccountMidnight(berlin));
            }
            other => panic!("{other:?}"),
        }
        match rate_limit_wait(
            RateLimitPolicy::Daily,
            Some(Duration::from_secs(90)),
            0,
            now,
            None,
            0.5,
        ) {
            RateLimitWait::UntilDailyReset { wait, source, .. } => {
                assert_eq!(
                    (wait, source),
                    (Duration::from_secs(90), ResetSource::Header)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_search_pacer_keeps_five_per_window() {
        let mut p = SearchPacer::new(5, Duration::from_millis(1000));
        for t in 0..5 {
            assert_eq!(p.delay(t * 10), Duration::ZERO);
            p.record(t * 10);
        }
        assert_eq!(p.delay(50), Duration::from_millis(950));
        assert_eq!(p.delay(1000), Duration::ZERO);
    }

    #[test]
    fn association_plans() {
        let have: BTreeSet<String> = ["1", "2"].iter().map(|s| s.to_string()).collect();
        let want: BTreeSet<String> = ["2", "3"].iter().map(|s| s.to_string()).collect();
        let plan = association_plan(&have, &want);
        assert_eq!(plan.add, vec!["3"]);
        assert_eq!(plan.remove, vec!["1"]);
    }
}
