//! Salesforce sync decisions as a sans-IO state machine and pure functions that a bridge runner
//! drives: it sends the [`Request`]s these produce (through `super::client`), feeds the
//! [`Response`]s back, and applies the outcome.
//!
//! - [`Round`]: one pull of one sObject type. With a [`SyncCursor`] it is incremental: the
//!   `updated` and `deleted` replication endpoints over minute-truncated windows starting at the
//!   cursor, then the updated ids fetched by SOQL (`WHERE Id IN (...)`, `nextRecordsUrl` paging).
//!   Without one (first sync), or when a window starts before what the org keeps (30 days for
//!   `updated`, 15 for `deleted`, or `earliestDateAvailable` later than the cursor: deletes may
//!   have been purged unseen), it is a **full resync**: SOQL over every record `ORDER BY
//!   SystemModstamp, Id`, a complete listing that the runner merges with its links by id (known
//!   records are updated, records gone from the listing are deletes under the delete guard),
//!   never a wipe and re-import. The next cursor is each endpoint's `latestDateCovered` (after a
//!   full resync: the round's start minus a clock-skew margin).
//! - [`is_news`]: a polled record that says what the shadow says (the bridge's own write coming
//!   back, an edit of unmapped fields) is not reported.
//! - [`plan_collections`] / [`match_results`]: writes through sObject Collections with
//!   `allOrNone: false`, at most 200 records per call, each SaveResult matched to its record by
//!   position (partial success: the failed ones are retried alone, the others are done). With an
//!   external-id field holding the document id, creates are upserts, so a retried create after a
//!   lost answer updates the record it made instead of making a second one.
//! - [`throttle`]: `REQUEST_LIMIT_EXCEEDED` (the org's API allowance is spent: wait, no retry
//!   storm) and 429/503 (back off briefly and retry).
//!
//! Must not: do I/O, read clocks or random numbers (time and jitter are parameters).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::translate::same_mapped;
use super::wire::Fields;
use super::wire::{
    CollectionRequest, DeletedResponse, ErrorItem, IDS_PER_QUERY, MAX_COLLECTION, QueryResponse,
    SObject, SObjectType, SaveResult, UpdatedResponse, codes, is_record_id, parse_datetime_ms,
    parse_errors, soql_literal, summarize, truncate_to_minute,
};

/// `updated` answers for at most 30 days back [doc].
pub const UPDATED_HORIZON: Duration = Duration::from_secs(30 * 86_400);
/// `deleted` answers for at most 15 days back, less if the recycle bin was emptied [doc].
pub const DELETED_HORIZON: Duration = Duration::from_secs(15 * 86_400);

/// One request to Salesforce (paths relative to `/services/data/{version}/`).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `GET sobjects/{o}/updated/?start&end`.
    Updated {
        object: SObjectType,
        start_ms: i64,
        end_ms: i64,
    },
    /// `GET sobjects/{o}/deleted/?start&end`.
    Deleted {
        object: SObjectType,
        start_ms: i64,
        end_ms: i64,
    },
    /// `GET query?q=`.
    Query { soql: String },
    /// `GET {nextRecordsUrl}` (a path from the instance root).
    QueryMore { url: String },
    /// `POST composite/sobjects`.
    Create { body: CollectionRequest },
    /// `PATCH composite/sobjects/{o}/{field}`: create or update by external id.
    Upsert {
        object: SObjectType,
        field: String,
        body: CollectionRequest,
    },
    /// `PATCH composite/sobjects`.
    Update { body: CollectionRequest },
    /// `DELETE composite/sobjects?ids=..&allOrNone=false`.
    Delete { ids: Vec<String> },
}

impl Request {
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Create { .. }
                | Request::Upsert { .. }
                | Request::Update { .. }
                | Request::Delete { .. }
        )
    }

    /// A short log-safe name (`updated Contact`, `query`, `composite update`).
    pub fn describe(&self) -> String {
        match self {
            Request::Updated { object, .. } => format!("updated {}", object.name()),
            Request::Deleted { object, .. } => format!("deleted {}", object.name()),
            Request::Query { .. } => "query".into(),
            Request::QueryMore { .. } => "query (next batch)".into(),
            Request::Create { .. } => "composite create".into(),
            Request::Upsert { object, field, .. } => {
                format!("composite upsert {} by {field}", object.name())
            }
            Request::Update { .. } => "composite update".into(),
            Request::Delete { .. } => "composite delete".into(),
        }
    }
}

/// Salesforce's answer, whatever its status (401 already handled by the client's refresh).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<Duration>,
    /// The org's clock (`Date` header), epoch ms.
    pub date_ms: Option<i64>,
    pub body: Vec<u8>,
}

// ---------------------------------------------------------------------------------------------
// Throttling
// ---------------------------------------------------------------------------------------------

/// A request Salesforce refused for load, not for what it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// `REQUEST_LIMIT_EXCEEDED`: the org's API allowance (a rolling 24 h total, or concurrent
    /// long requests) is spent. Retrying at once only burns more of it: the round ends and waits.
    RequestLimit,
    /// 429 or 503: overloaded for a moment; back off (at least `Retry-After`) and retry.
    Busy { retry_after: Option<Duration> },
}

/// Whether `response` is a throttle.
pub fn throttle(response: &Response) -> Option<Throttle> {
    if response.status >= 400
        && parse_errors(&response.body)
            .iter()
            .any(|e| e.code() == codes::REQUEST_LIMIT_EXCEEDED)
    {
        return Some(Throttle::RequestLimit);
    }
    matches!(response.status, 429 | 503).then_some(Throttle::Busy {
        retry_after: response.retry_after,
    })
}

/// Backoff bounds for [`Throttle::Busy`].
pub const BUSY_BACKOFF_BASE: Duration = Duration::from_millis(250);
pub const BUSY_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The wait before retry `attempt` (0-based) of a [`Throttle::Busy`] request.
pub fn busy_wait(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    crate::sync::backoff(
        attempt,
        BUSY_BACKOFF_BASE,
        BUSY_BACKOFF_MAX,
        retry_after,
        jitter,
    )
}

// ---------------------------------------------------------------------------------------------
// Pull
// ---------------------------------------------------------------------------------------------

/// Where the next incremental round starts (epoch ms; the endpoints truncate to the minute).
/// The runner stores `Option<SyncCursor>`: `None` means a full sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncCursor {
    pub updated_from_ms: i64,
    pub deleted_from_ms: i64,
    /// When the last full listing started (or the `earliestDateAvailable` that caused it, when
    /// later): the listing knows every delete before then, so a delete log purged up to a point
    /// before it is no reason to list again (the windows themselves start a clock-skew margin
    /// earlier).
    #[serde(default)]
    pub listed_at_ms: i64,
}

/// Settings of a round.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundConfig {
    /// The `SELECT` list (see `translate::fields_to_read`).
    pub fields: Vec<String>,
    /// After a full resync the next window starts this long before the round began: our clock
    /// and Salesforce's differ, and a record changed while the query ran must be seen again.
    pub resync_margin: Duration,
    /// Requests one round may make before it fails (a provider that pages forever).
    pub max_requests: u32,
}

impl RoundConfig {
    pub fn new(fields: Vec<String>) -> Self {
        RoundConfig {
            fields,
            resync_margin: Duration::from_secs(5 * 60),
            max_requests: 10_000,
        }
    }
}

/// Why a round lists everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    /// No cursor yet.
    Initial,
    /// The `updated` window starts before what Salesforce keeps (30 days).
    UpdatedHorizon,
    /// The `deleted` window starts before `earliestDateAvailable` (or 15 days): deletes may
    /// have been purged before we saw them.
    DeletedHorizon,
    /// A single minute holds more ids than `updated` returns (`EXCEEDED_ID_LIMIT`).
    IdLimit,
}

/// Why a round failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoundError {
    #[error("{what}: throttled ({throttle:?})")]
    Throttled { what: String, throttle: Throttle },
    #[error("{what}: status {status}: {}", summarize(.errors))]
    Status {
        what: String,
        status: u16,
        errors: Vec<ErrorItem>,
    },
    #[error("{what}: unreadable answer: {message}")]
    Decode { what: String, message: String },
    #[error("{what}: {message}")]
    Protocol { what: String, message: String },
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Updated {
        start_ms: i64,
        end_ms: i64,
    },
    Deleted {
        start_ms: i64,
        end_ms: i64,
    },
    /// Fetching updated ids (chunks left in `id_chunks`).
    Fetch,
    /// The full listing.
    Full,
    Done,
}

/// One pull round of one sObject type (see the module docs).
#[derive(Debug, Clone)]
pub struct Round {
    object: SObjectType,
    config: RoundConfig,
    now_ms: i64,
    start: Option<SyncCursor>,
    step: Step,
    next: SyncCursor,
    updated_ids: BTreeSet<String>,
    id_chunks: VecDeque<Vec<String>>,
    /// `nextRecordsUrl` of the query being paged.
    more: Option<String>,
    seen_urls: BTreeSet<String>,
    records: BTreeMap<String, SObject>,
    deleted: BTreeSet<String>,
    resync: Option<ResyncReason>,
    requests: u32,
}

/// What a finished round amounts to.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundOutcome {
    /// Every record fetched (all of them after a full resync), by id order.
    pub records: Vec<SObject>,
    /// Ids the `deleted` endpoint reported.
    pub deleted: Vec<String>,
    /// The records are a complete listing: a known record not among them is gone.
    pub complete: bool,
    pub resync: Option<ResyncReason>,
    /// Persist this once the round's records are applied.
    pub cursor: SyncCursor,
    pub requests: u32,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Round {
    /// A round at `now_ms` from `cursor` (`None`: a full sync).
    pub fn new(
        object: SObjectType,
        config: RoundConfig,
        cursor: Option<SyncCursor>,
        now_ms: i64,
    ) -> Self {
        let mut round = Round {
            object,
            config,
            now_ms,
            start: cursor,
            step: Step::Done,
            next: cursor.unwrap_or_default(),
            updated_ids: BTreeSet::new(),
            id_chunks: VecDeque::new(),
            more: None,
            seen_urls: BTreeSet::new(),
            records: BTreeMap::new(),
            deleted: BTreeSet::new(),
            resync: None,
            requests: 0,
        };
        match cursor {
            None => round.begin_full(ResyncReason::Initial),
            // Windows the org no longer answers for: no need to ask.
            Some(c) if now_ms.saturating_sub(c.updated_from_ms) > ms(UPDATED_HORIZON) => {
                round.begin_full(ResyncReason::UpdatedHorizon)
            }
            Some(c) if now_ms.saturating_sub(c.deleted_from_ms) > ms(DELETED_HORIZON) => {
                round.begin_full(ResyncReason::DeletedHorizon)
            }
            Some(c) => round.begin_updated(c),
        }
        round
    }

    pub fn object(&self) -> SObjectType {
        self.object
    }

    fn window(&self, from_ms: i64) -> Option<(i64, i64)> {
        let (start, end) = (truncate_to_minute(from_ms), truncate_to_minute(self.now_ms));
        (end > start).then_some((start, end))
    }

    fn begin_updated(&mut self, c: SyncCursor) {
        self.step = match self.window(c.updated_from_ms) {
            Some((start_ms, end_ms)) => Step::Updated { start_ms, end_ms },
            None => return self.begin_deleted(),
        };
    }

    fn begin_deleted(&mut self) {
        let from = self.start.map_or(self.now_ms, |c| c.deleted_from_ms);
        match self.window(from) {
            Some((start_ms, end_ms)) => self.step = Step::Deleted { start_ms, end_ms },
            None => self.begin_fetch(),
        }
    }

    fn begin_fetch(&mut self) {
        let ids: Vec<String> = self
            .updated_ids
            .iter()
            .filter(|id| !self.deleted.contains(*id) && is_record_id(id))
            .cloned()
            .collect();
        self.id_chunks = ids.chunks(IDS_PER_QUERY).map(<[String]>::to_vec).collect();
        self.more = None;
        self.step = if self.id_chunks.is_empty() {
            Step::Done
        } else {
            Step::Fetch
        };
    }

    fn begin_full(&mut self, reason: ResyncReason) {
        self.resync = Some(reason);
        self.records.clear();
        self.deleted.clear();
        self.updated_ids.clear();
        self.more = None;
        let from = self.now_ms.saturating_sub(ms(self.config.resync_margin));
        // Our clock until the listing's answer tells the org's (a skew-margin earlier, so the
        // org's `Date` wins when it is close).
        self.next = SyncCursor {
            updated_from_ms: from,
            deleted_from_ms: from,
            listed_at_ms: from,
        };
        self.step = Step::Full;
    }

    fn select(&self) -> String {
        format!(
            "SELECT {} FROM {}",
            self.config.fields.join(", "),
            self.object.name()
        )
    }

    /// The next request; None when the round is complete.
    pub fn next_request(&self) -> Option<Request> {
        if let Some(url) = &self.more {
            return Some(Request::QueryMore { url: url.clone() });
        }
        match &self.step {
            Step::Updated { start_ms, end_ms } => Some(Request::Updated {
                object: self.object,
                start_ms: *start_ms,
                end_ms: *end_ms,
            }),
            Step::Deleted { start_ms, end_ms } => Some(Request::Deleted {
                object: self.object,
                start_ms: *start_ms,
                end_ms: *end_ms,
            }),
            Step::Fetch => self.id_chunks.front().map(|ids| {
                let list: Vec<String> = ids.iter().map(|id| soql_literal(id)).collect();
                Request::Query {
                    soql: format!("{} WHERE Id IN ({})", self.select(), list.join(", ")),
                }
            }),
            Step::Full => Some(Request::Query {
                soql: format!("{} ORDER BY SystemModstamp, Id", self.select()),
            }),
            Step::Done => None,
        }
    }

    fn what(&self) -> String {
        match self.next_request() {
            Some(r) => format!("{} ({})", r.describe(), self.object.name()),
            None => format!("{} round", self.object.name()),
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, body: &[u8]) -> Result<T, RoundError> {
        serde_json::from_slice(body).map_err(|e| RoundError::Decode {
            what: self.what(),
            message: e.to_string(),
        })
    }

    /// Takes the answer to [`Round::next_request`]. A throttle leaves the round where it was
    /// (the same request may be sent again after the wait).
    pub fn on_response(&mut self, response: &Response) -> Result<(), RoundError> {
        if let Some(t) = throttle(response) {
            return Err(RoundError::Throttled {
                what: self.what(),
                throttle: t,
            });
        }
        self.requests += 1;
        if self.requests > self.config.max_requests {
            return Err(RoundError::Protocol {
                what: self.what(),
                message: format!("stopped after {} requests", self.config.max_requests),
            });
        }
        if !(200..300).contains(&response.status) {
            return self.on_error(response);
        }
        if self.more.is_some() || matches!(self.step, Step::Fetch | Step::Full) {
            if self.step == Step::Full
                && self.more.is_none()
                && let Some(date) = response.date_ms
            {
                // The listing knows every delete before this instant on the org's clock, the
                // clock `earliestDateAvailable` is told in.
                self.next.listed_at_ms = self.next.listed_at_ms.max(date);
            }
            let page: QueryResponse = self.decode(&response.body)?;
            return self.on_query_page(page);
        }
        match self.step.clone() {
            Step::Updated { start_ms, .. } => {
                let answer: UpdatedResponse = self.decode(&response.body)?;
                self.updated_ids.extend(answer.ids);
                if let Some(latest) = covered(&answer.latest_date_covered, start_ms) {
                    self.next.updated_from_ms = latest;
                }
                self.begin_deleted();
            }
            Step::Deleted { start_ms, .. } => {
                let answer: DeletedResponse = self.decode(&response.body)?;
                let earliest = answer
                    .earliest_date_available
                    .as_deref()
                    .and_then(parse_datetime_ms);
                // What we know every delete before: the window's start, or a later listing.
                let known = self
                    .start
                    .map_or(start_ms, |c| c.deleted_from_ms.max(c.listed_at_ms));
                if let Some(e) = earliest.filter(|e| *e > known) {
                    // Deletes between `known` and `earliestDateAvailable` are gone unseen.
                    self.begin_full(ResyncReason::DeletedHorizon);
                    self.next.listed_at_ms = self.next.listed_at_ms.max(e);
                    return Ok(());
                }
                self.deleted
                    .extend(answer.deleted_records.into_iter().map(|d| d.id));
                if let Some(latest) = covered(&answer.latest_date_covered, start_ms) {
                    self.next.deleted_from_ms = latest;
                }
                self.begin_fetch();
            }
            Step::Fetch | Step::Full | Step::Done => {}
        }
        Ok(())
    }

    fn on_query_page(&mut self, page: QueryResponse) -> Result<(), RoundError> {
        for record in page.records {
            let Some(id) = record.id().map(str::to_owned) else {
                return Err(RoundError::Protocol {
                    what: self.what(),
                    message: "a record without Id".into(),
                });
            };
            self.records.insert(id, record);
        }
        match (page.done, page.next_records_url) {
            (false, Some(url)) => {
                if !self.seen_urls.insert(url.clone()) {
                    return Err(RoundError::Protocol {
                        what: self.what(),
                        message: format!("nextRecordsUrl {url} repeats: refusing to loop"),
                    });
                }
                self.more = Some(url);
            }
            (false, None) => {
                return Err(RoundError::Protocol {
                    what: self.what(),
                    message: "done is false but there is no nextRecordsUrl".into(),
                });
            }
            (true, _) => {
                self.more = None;
                if self.step == Step::Fetch {
                    self.id_chunks.pop_front();
                    if self.id_chunks.is_empty() {
                        self.step = Step::Done;
                    }
                } else {
                    self.step = Step::Done;
                }
            }
        }
        Ok(())
    }

    fn on_error(&mut self, response: &Response) -> Result<(), RoundError> {
        let errors = parse_errors(&response.body);
        let has = |code: &str| errors.iter().any(|e| e.code() == code);
        match self.step.clone() {
            Step::Updated { .. } | Step::Deleted { .. }
                if self.more.is_none() && has(codes::INVALID_REPLICATION_DATE) =>
            {
                let reason = if matches!(self.step, Step::Updated { .. }) {
                    ResyncReason::UpdatedHorizon
                } else {
                    ResyncReason::DeletedHorizon
                };
                self.begin_full(reason);
                Ok(())
            }
            Step::Updated { start_ms, end_ms } if has(codes::EXCEEDED_ID_LIMIT) => {
                // Narrow the window; the rest is the next round's.
                let half = truncate_to_minute(start_ms + (end_ms - start_ms) / 2);
                if half > start_ms {
                    self.step = Step::Updated {
                        start_ms,
                        end_ms: half,
                    };
                } else {
                    self.begin_full(ResyncReason::IdLimit);
                }
                Ok(())
            }
            _ => Err(RoundError::Status {
                what: self.what(),
                status: response.status,
                errors,
            }),
        }
    }

    /// Ends the round; call after [`Round::next_request`] returned None.
    pub fn finish(self) -> RoundOutcome {
        RoundOutcome {
            records: self.records.into_values().collect(),
            deleted: self.deleted.into_iter().collect(),
            complete: self.resync.is_some(),
            resync: self.resync,
            cursor: self.next,
            requests: self.requests,
        }
    }
}

/// `latestDateCovered` as the next window start: never before this window's start (a lagging
/// or missing value re-covers, which is harmless; going backwards would be a loop).
fn covered(latest: &Option<String>, start_ms: i64) -> Option<i64> {
    latest
        .as_deref()
        .and_then(parse_datetime_ms)
        .map(|l| l.max(start_ms))
}

/// Whether a polled record is news against the shadow's copy: new, changed since
/// (`SystemModstamp`), and saying something else in a mapped field.
pub fn is_news(object: SObjectType, shadow: Option<&SObject>, polled: &SObject) -> bool {
    let Some(shadow) = shadow else {
        return true;
    };
    match (shadow.modstamp_ms(), polled.modstamp_ms()) {
        (Some(a), Some(b)) if b <= a => false,
        _ => !same_mapped(object, shadow, polled),
    }
}

// ---------------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------------

/// One record's pending write; `key` names the record (its document id).
#[derive(Debug, Clone, PartialEq)]
pub struct PendingWrite {
    pub key: String,
    pub op: WriteOp,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    Create(Fields),
    Update { id: String, fields: Fields },
    Delete { id: String },
}

/// One sObject Collections call with its records' keys, in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionCall {
    pub keys: Vec<String>,
    /// For updates and deletes: the record id of each key (to check results against).
    pub ids: Vec<Option<String>>,
    pub request: Request,
}

/// Groups writes into calls of at most 200 records, `allOrNone: false`: creates (upserts by
/// `id_field` = the key, when given), updates (empty ones dropped) and deletes apart.
pub fn plan_collections(
    object: SObjectType,
    writes: &[PendingWrite],
    id_field: Option<&str>,
) -> Vec<CollectionCall> {
    let mut creates = Vec::new();
    let mut updates = Vec::new();
    let mut deletes = Vec::new();
    for w in writes {
        match &w.op {
            WriteOp::Create(fields) => {
                let mut fields = fields.clone();
                if let Some(f) = id_field {
                    fields.insert(f.to_owned(), serde_json::Value::String(w.key.clone()));
                }
                creates.push((w.key.clone(), SObject::new(object, fields)));
            }
            WriteOp::Update { id, fields } if !fields.is_empty() => {
                let mut fields = fields.clone();
                fields.insert("Id".into(), serde_json::Value::String(id.clone()));
                updates.push((w.key.clone(), id.clone(), SObject::new(object, fields)));
            }
            WriteOp::Update { .. } => {}
            WriteOp::Delete { id } => deletes.push((w.key.clone(), id.clone())),
        }
    }
    let body = |records: Vec<SObject>| CollectionRequest {
        all_or_none: false,
        records,
    };
    let mut calls = Vec::new();
    for chunk in creates.chunks(MAX_COLLECTION) {
        let records = chunk.iter().map(|(_, r)| r.clone()).collect();
        calls.push(CollectionCall {
            keys: chunk.iter().map(|(k, _)| k.clone()).collect(),
            ids: vec![None; chunk.len()],
            request: match id_field {
                Some(f) => Request::Upsert {
                    object,
                    field: f.to_owned(),
                    body: body(records),
                },
                None => Request::Create {
                    body: body(records),
                },
            },
        });
    }
    for chunk in updates.chunks(MAX_COLLECTION) {
        calls.push(CollectionCall {
            keys: chunk.iter().map(|(k, _, _)| k.clone()).collect(),
            ids: chunk.iter().map(|(_, id, _)| Some(id.clone())).collect(),
            request: Request::Update {
                body: body(chunk.iter().map(|(_, _, r)| r.clone()).collect()),
            },
        });
    }
    for chunk in deletes.chunks(MAX_COLLECTION) {
        calls.push(CollectionCall {
            keys: chunk.iter().map(|(k, _)| k.clone()).collect(),
            ids: chunk.iter().map(|(_, id)| Some(id.clone())).collect(),
            request: Request::Delete {
                ids: chunk.iter().map(|(_, id)| id.clone()).collect(),
            },
        });
    }
    calls
}

/// A collection answer matched back to records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectionOutcome {
    /// Key -> its SaveResult (`id` of a created record): done.
    pub written: BTreeMap<String, SaveResult>,
    /// Key -> the record no longer exists there (deleted or merged away meanwhile). For a
    /// delete this is success.
    pub gone: BTreeSet<String>,
    /// Key -> Salesforce's reasons: this record alone failed; retry it on its own.
    pub failed: BTreeMap<String, Vec<ErrorItem>>,
    /// Keys whose outcome the answer does not tell (a result array of the wrong length, or a
    /// result about another id): a create must be looked up before it is repeated.
    pub unknown: Vec<String>,
}

/// Error codes meaning the record is not there (any more).
fn is_gone(errors: &[ErrorItem]) -> bool {
    errors.iter().any(|e| {
        matches!(
            e.code(),
            codes::ENTITY_IS_DELETED | codes::NOT_FOUND | codes::INVALID_CROSS_REFERENCE_KEY
        )
    })
}

/// Matches a 200 answer of `call` (SaveResults in request order) to its records. A non-2xx
/// answer is the whole call's failure ([`RoundError::Status`]); a throttle is reported as such.
pub fn match_results(
    call: &CollectionCall,
    response: &Response,
) -> Result<CollectionOutcome, RoundError> {
    let what = call.request.describe();
    if let Some(t) = throttle(response) {
        return Err(RoundError::Throttled { what, throttle: t });
    }
    if !(200..300).contains(&response.status) {
        return Err(RoundError::Status {
            what,
            status: response.status,
            errors: parse_errors(&response.body),
        });
    }
    let results: Vec<SaveResult> =
        serde_json::from_slice(&response.body).map_err(|e| RoundError::Decode {
            what: what.clone(),
            message: e.to_string(),
        })?;
    let mut out = CollectionOutcome::default();
    if results.len() != call.keys.len() {
        out.unknown = call.keys.clone();
        return Ok(out);
    }
    for ((key, expected), result) in call.keys.iter().zip(&call.ids).zip(results) {
        let about_another =
            matches!((expected, &result.id), (Some(e), Some(got)) if !same_id(e, got));
        if about_another {
            out.unknown.push(key.clone());
        } else if result.success {
            out.written.insert(key.clone(), result);
        } else if is_gone(&result.errors) && expected.is_some() {
            out.gone.insert(key.clone());
        } else {
            out.failed.insert(key.clone(), result.errors);
        }
    }
    Ok(out)
}

/// Salesforce ids compare case-sensitively in their 15-character form (the 18-character form
/// adds a case-insensitivity checksum).
pub fn same_id(a: &str, b: &str) -> bool {
    a.get(..15).is_some_and(|x| Some(x) == b.get(..15))
}

/// A query for what an earlier create of record `key` made, after its answer was lost: by the
/// external-id field when configured, else by email (contacts). None: nothing to look up by.
pub fn create_lookup(
    object: SObjectType,
    key: &str,
    id_field: Option<&str>,
    fields: &Fields,
    select: &[String],
) -> Option<Request> {
    let condition = match id_field {
        Some(f) => format!("{f} = {}", soql_literal(key)),
        None => {
            let email = fields
                .get("Email")
                .and_then(|v| v.as_str())
                .filter(|e| object == SObjectType::Contact && !e.trim().is_empty())?;
            format!("Email = {}", soql_literal(email.trim()))
        }
    };
    Some(Request::Query {
        soql: format!(
            "SELECT {} FROM {} WHERE {condition} ORDER BY CreatedDate DESC LIMIT 10",
            select.join(", "),
            object.name()
        ),
    })
}

/// The record to adopt from a lookup's answer: the one whose id field is `key`, or (by email)
/// the only match. Several by email: ambiguous, adopt none.
pub fn adopt_existing<'a>(
    key: &str,
    id_field: Option<&str>,
    found: &'a [SObject],
) -> Option<&'a SObject> {
    match id_field {
        Some(f) => found.iter().find(|r| r.text(f) == Some(key)),
        None => match found {
            [one] => Some(one),
            _ => None,
        },
    }
}

/// Ids a round may put into a query: anything that is not a Salesforce id is dropped.
pub fn queryable_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    ids.into_iter()
        .filter(|id| is_record_id(id))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::wire::{format_datetime_ms, truncate_to_minute};
    use serde_json::json;

    const MIN: i64 = 60_000;
    const DAY: i64 = 86_400_000;
    const NOW: i64 = 1_795_082_415_000; // 2026-11-19T10:00:15Z

    fn ok(v: serde_json::Value) -> Response {
        Response {
            status: 200,
            retry_after: None,
            date_ms: None,
            body: serde_json::to_vec(&v).unwrap(),
        }
    }

    fn error(status: u16, code: &str) -> Response {
        Response {
            status,
            retry_after: None,
            date_ms: None,
            body: serde_json::to_vec(&json!([{"message": "x", "errorCode": code}])).unwrap(),
        }
    }

    fn rec(id: &str, stamp_ms: i64) -> serde_json::Value {
        json!({"attributes": {"type": "Contact"}, "Id": id, "LastName": id,
               "SystemModstamp": format_datetime_ms(stamp_ms)})
    }

    fn config() -> RoundConfig {
        RoundConfig::new(vec![
            "Id".into(),
            "LastName".into(),
            "SystemModstamp".into(),
        ])
    }

    fn id(n: u32) -> String {
        format!("003xx{n:010}AAA")
    }

    #[test]
    fn a_first_round_lists_everything_by_systemmodstamp_and_pages() {
        let mut round = Round::new(SObjectType::Contact, config(), None, NOW);
        let Some(Request::Query { soql }) = round.next_request() else {
            panic!()
        };
        assert_eq!(
            soql,
            "SELECT Id, LastName, SystemModstamp FROM Contact ORDER BY SystemModstamp, Id"
        );
        // The org's clock (90 s behind ours) dates the listing.
        let mut first_page = ok(json!({"totalSize": 3, "done": false,
            "nextRecordsUrl": "/services/data/v62.0/query/01g-2", "records": [rec(&id(1), NOW), rec(&id(2), NOW)]}));
        first_page.date_ms = Some(NOW - 90_000);
        round.on_response(&first_page).unwrap();
        assert_eq!(
            round.next_request(),
            Some(Request::QueryMore {
                url: "/services/data/v62.0/query/01g-2".into()
            })
        );
        round
            .on_response(&ok(
                json!({"totalSize": 3, "done": true, "records": [rec(&id(3), NOW)]}),
            ))
            .unwrap();
        assert_eq!(round.next_request(), None);
        let out = round.finish();
        assert_eq!(out.records.len(), 3);
        assert!(out.complete);
        assert_eq!(out.resync, Some(ResyncReason::Initial));
        assert_eq!(out.cursor.updated_from_ms, NOW - 5 * MIN);
        assert_eq!(out.cursor.listed_at_ms, NOW - 90_000);
    }

    #[test]
    fn an_incremental_round_uses_both_windows_and_fetches_what_changed() {
        let cursor = SyncCursor {
            updated_from_ms: NOW - 10 * MIN - 30_000,
            deleted_from_ms: NOW - 20 * MIN,
            ..SyncCursor::default()
        };
        let mut round = Round::new(SObjectType::Contact, config(), Some(cursor), NOW);
        assert_eq!(
            round.next_request(),
            Some(Request::Updated {
                object: SObjectType::Contact,
                start_ms: truncate_to_minute(NOW - 10 * MIN - 30_000),
                end_ms: truncate_to_minute(NOW),
            })
        );
        let covered = truncate_to_minute(NOW) - MIN;
        round
            .on_response(&ok(json!({"ids": [id(1), id(2), id(3)],
                "latestDateCovered": format_datetime_ms(covered)})))
            .unwrap();
        let Some(Request::Deleted { start_ms, .. }) = round.next_request() else {
            panic!()
        };
        assert_eq!(start_ms, truncate_to_minute(NOW - 20 * MIN));
        round
            .on_response(&ok(json!({"deletedRecords": [{"id": id(3), "deletedDate": format_datetime_ms(NOW - MIN)}],
                "earliestDateAvailable": format_datetime_ms(NOW - 3 * DAY),
                "latestDateCovered": format_datetime_ms(covered)})))
            .unwrap();
        let Some(Request::Query { soql }) = round.next_request() else {
            panic!()
        };
        // The deleted one is not fetched.
        assert!(
            soql.ends_with(&format!("WHERE Id IN ('{}', '{}')", id(1), id(2))),
            "{soql}"
        );
        round
            .on_response(&ok(json!({"totalSize": 2, "done": true, "records": [rec(&id(1), NOW), rec(&id(2), NOW)]})))
            .unwrap();
        assert_eq!(round.next_request(), None);
        let out = round.finish();
        assert!(!out.complete);
        assert_eq!(out.deleted, vec![id(3)]);
        assert_eq!(out.records.len(), 2);
        assert_eq!(
            out.cursor,
            SyncCursor {
                updated_from_ms: covered,
                deleted_from_ms: covered,
                listed_at_ms: 0,
            }
        );
    }

    #[test]
    fn windows_inside_one_minute_ask_nothing_and_keep_the_cursor() {
        let cursor = SyncCursor {
            updated_from_ms: truncate_to_minute(NOW),
            deleted_from_ms: truncate_to_minute(NOW),
            ..SyncCursor::default()
        };
        let round = Round::new(SObjectType::Contact, config(), Some(cursor), NOW);
        assert_eq!(round.next_request(), None);
        assert_eq!(round.finish().cursor, cursor);
    }

    #[test]
    fn a_lagging_latest_date_covered_is_where_the_next_round_starts() {
        let cursor = SyncCursor {
            updated_from_ms: NOW - 5 * MIN,
            deleted_from_ms: NOW - 5 * MIN,
            ..SyncCursor::default()
        };
        let mut round = Round::new(SObjectType::Contact, config(), Some(cursor), NOW);
        // Covered only two minutes into the window; a value before the start is not a rewind.
        round
            .on_response(&ok(json!({"ids": [], "latestDateCovered": format_datetime_ms(truncate_to_minute(NOW - 3 * MIN))})))
            .unwrap();
        round
            .on_response(&ok(
                json!({"deletedRecords": [], "latestDateCovered": format_datetime_ms(NOW - DAY)}),
            ))
            .unwrap();
        let out = round.finish();
        assert_eq!(
            out.cursor.updated_from_ms,
            truncate_to_minute(NOW - 3 * MIN)
        );
        assert_eq!(
            out.cursor.deleted_from_ms,
            truncate_to_minute(NOW - 5 * MIN)
        );
    }

    #[test]
    fn a_cursor_past_a_horizon_means_a_full_resync_not_a_wipe() {
        // earliestDateAvailable after the cursor: deletes were purged unseen.
        let cursor = SyncCursor {
            updated_from_ms: NOW - DAY,
            deleted_from_ms: NOW - DAY,
            ..SyncCursor::default()
        };
        let mut round = Round::new(SObjectType::Contact, config(), Some(cursor), NOW);
        round
            .on_response(&ok(
                json!({"ids": [id(1)], "latestDateCovered": format_datetime_ms(NOW)}),
            ))
            .unwrap();
        round
            .on_response(&ok(json!({"deletedRecords": [{"id": id(9)}],
                "earliestDateAvailable": format_datetime_ms(NOW - DAY / 2),
                "latestDateCovered": format_datetime_ms(NOW)})))
            .unwrap();
        let Some(Request::Query { soql }) = round.next_request() else {
            panic!()
        };
        assert!(soql.ends_with("ORDER BY SystemModstamp, Id"), "{soql}");
        round
            .on_response(&ok(
                json!({"done": true, "records": [rec(&id(1), NOW), rec(&id(2), NOW)]}),
            ))
            .unwrap();
        let out = round.finish();
        assert_eq!(out.resync, Some(ResyncReason::DeletedHorizon));
        assert!(out.complete, "a complete listing, merged by id");
        assert!(
            out.deleted.is_empty(),
            "the half-read delete log is dropped"
        );
        assert_eq!(out.records.len(), 2);

        // Older than what `updated` keeps: straight to the listing.
        let old = SyncCursor {
            updated_from_ms: NOW - 31 * DAY,
            deleted_from_ms: NOW - 31 * DAY,
            ..SyncCursor::default()
        };
        let round = Round::new(SObjectType::Contact, config(), Some(old), NOW);
        assert!(matches!(round.next_request(), Some(Request::Query { .. })));
        // Salesforce refusing the window says the same.
        let mut round = Round::new(SObjectType::Contact, config(), Some(cursor), NOW);
        round
            .on_response(&error(400, codes::INVALID_REPLICATION_DATE))
            .unwrap();
        assert!(matches!(round.next_request(), Some(Request::Query { .. })));
        assert_eq!(round.finish().resync, Some(ResyncReason::UpdatedHorizon));
    }

    #[test]
    fn a_delete_log_purged_before_the_last_listing_needs_no_second_listing() {
        let cursor = SyncCursor {
            updated_from_ms: NOW - 5 * MIN,
            deleted_from_ms: NOW - 5 * MIN,
            listed_at_ms: NOW - 2 * MIN,
        };
        let mut round = Round::new(SObjectType::Contact, config(), Some(cursor), NOW);
        round
            .on_response(&ok(
                json!({"ids": [], "latestDateCovered": format_datetime_ms(NOW)}),
            ))
            .unwrap();
        // Purged up to three minutes ago: before the listing, which saw those deletes.
        round
            .on_response(&ok(json!({"deletedRecords": [],
                "earliestDateAvailable": format_datetime_ms(NOW - 3 * MIN),
                "latestDateCovered": format_datetime_ms(NOW)})))
            .unwrap();
        let out = round.finish();
        assert_eq!(out.resync, None);
        assert_eq!(out.cursor.listed_at_ms, NOW - 2 * MIN, "carried forward");
    }

    #[test]
    fn too_many_ids_narrow_the_window() {
        let cursor = SyncCursor {
            updated_from_ms: NOW - 60 * MIN,
            deleted_from_ms: NOW,
            ..SyncCursor::default()
        };
        let mut round = Round::new(SObjectType::Contact, config(), Some(cursor), NOW);
        round
            .on_response(&error(400, codes::EXCEEDED_ID_LIMIT))
            .unwrap();
        let Some(Request::Updated {
            start_ms, end_ms, ..
        }) = round.next_request()
        else {
            panic!()
        };
        assert_eq!(start_ms, truncate_to_minute(NOW - 60 * MIN));
        assert_eq!(end_ms - start_ms, 30 * MIN);
    }

    #[test]
    fn throttles_leave_the_round_where_it_was_and_errors_name_the_request() {
        let mut round = Round::new(SObjectType::Account, config(), None, NOW);
        let before = round.next_request();
        let err = round
            .on_response(&error(403, codes::REQUEST_LIMIT_EXCEEDED))
            .unwrap_err();
        assert!(matches!(
            err,
            RoundError::Throttled {
                throttle: Throttle::RequestLimit,
                ..
            }
        ));
        let busy = Response {
            status: 503,
            retry_after: Some(Duration::from_secs(2)),
            date_ms: None,
            body: vec![],
        };
        assert_eq!(
            throttle(&busy),
            Some(Throttle::Busy {
                retry_after: Some(Duration::from_secs(2))
            })
        );
        assert_eq!(round.next_request(), before);
        let err = round
            .on_response(&error(400, "MALFORMED_QUERY"))
            .unwrap_err();
        assert!(err.to_string().contains("MALFORMED_QUERY"), "{err}");
        assert!(err.to_string().contains("Account"), "{err}");
        assert!(busy_wait(0, Some(Duration::from_secs(2)), 0.5) >= Duration::from_secs(2));
    }

    #[test]
    fn paging_that_loops_or_lies_is_an_error() {
        let mut round = Round::new(SObjectType::Contact, config(), None, NOW);
        let page = json!({"done": false, "nextRecordsUrl": "/q/1", "records": [rec(&id(1), NOW)]});
        round.on_response(&ok(page.clone())).unwrap();
        assert!(round.on_response(&ok(page)).is_err());
        let mut round = Round::new(SObjectType::Contact, config(), None, NOW);
        assert!(
            round
                .on_response(&ok(json!({"done": false, "records": []})))
                .is_err()
        );
    }

    #[test]
    fn news_ignores_own_writes_and_unmapped_edits() {
        let shadow: SObject = serde_json::from_value(rec(&id(1), NOW - MIN)).unwrap();
        let mut polled = shadow.clone();
        assert!(!is_news(SObjectType::Contact, Some(&shadow), &polled));
        polled
            .fields
            .insert("SystemModstamp".into(), json!(format_datetime_ms(NOW)));
        polled.fields.insert("Custom__c".into(), json!("x"));
        assert!(!is_news(SObjectType::Contact, Some(&shadow), &polled));
        polled.fields.insert("Title".into(), json!("CEO"));
        assert!(is_news(SObjectType::Contact, Some(&shadow), &polled));
        assert!(is_news(SObjectType::Contact, None, &polled));
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect()
    }

    #[test]
    fn collections_hold_200_and_updates_carry_their_id() {
        let writes: Vec<PendingWrite> = (0..450)
            .map(|i| PendingWrite {
                key: format!("doc{i}"),
                op: if i % 3 == 0 {
                    WriteOp::Create(fields(&[("LastName", "x")]))
                } else {
                    WriteOp::Update {
                        id: id(i),
                        fields: fields(&[("Title", "y")]),
                    }
                },
            })
            .collect();
        let calls = plan_collections(SObjectType::Contact, &writes, None);
        assert_eq!(calls.len(), 1 + 2);
        for call in &calls {
            assert!(call.keys.len() <= MAX_COLLECTION);
            match &call.request {
                Request::Create { body } | Request::Update { body } => {
                    assert!(!body.all_or_none);
                    assert_eq!(body.records.len(), call.keys.len());
                }
                other => panic!("{other:?}"),
            }
        }
        let Request::Update { body } = &calls[1].request else {
            panic!()
        };
        assert_eq!(body.records[0].id(), Some(id(1).as_str()));
        // With an external-id field, creates are upserts carrying the document id.
        let calls = plan_collections(SObjectType::Contact, &writes[..1], Some("Driftless_Id__c"));
        let Request::Upsert { field, body, .. } = &calls[0].request else {
            panic!()
        };
        assert_eq!(field, "Driftless_Id__c");
        assert_eq!(body.records[0].text("Driftless_Id__c"), Some("doc0"));
        // Nothing to say: no call.
        let empty = PendingWrite {
            key: "e".into(),
            op: WriteOp::Update {
                id: id(1),
                fields: Fields::new(),
            },
        };
        assert!(plan_collections(SObjectType::Contact, &[empty], None).is_empty());
    }

    #[test]
    fn partial_success_is_matched_to_each_record() {
        let writes = vec![
            PendingWrite {
                key: "a".into(),
                op: WriteOp::Update {
                    id: id(1),
                    fields: fields(&[("Title", "1")]),
                },
            },
            PendingWrite {
                key: "b".into(),
                op: WriteOp::Update {
                    id: id(2),
                    fields: fields(&[("Email", "not an email")]),
                },
            },
            PendingWrite {
                key: "c".into(),
                op: WriteOp::Update {
                    id: id(3),
                    fields: fields(&[("Title", "3")]),
                },
            },
        ];
        let call = &plan_collections(SObjectType::Contact, &writes, None)[0];
        let answer = ok(json!([
            {"id": id(1), "success": true, "errors": []},
            {"success": false, "errors": [{"statusCode": "INVALID_EMAIL_ADDRESS", "message": "Email: invalid email address: not an email", "fields": ["Email"]}]},
            {"id": id(3), "success": false, "errors": [{"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted"}]}
        ]));
        let out = match_results(call, &answer).unwrap();
        assert_eq!(out.written.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(out.failed["b"][0].code(), "INVALID_EMAIL_ADDRESS");
        assert!(out.gone.contains("c"));
        assert!(out.unknown.is_empty());
        // A short array says nothing about any record.
        let short = ok(json!([{"id": id(1), "success": true}]));
        assert_eq!(match_results(call, &short).unwrap().unknown.len(), 3);
        // A result about another record is not taken for this one.
        let swapped = ok(json!([
            {"id": id(2), "success": true}, {"id": id(1), "success": true}, {"id": id(3), "success": true}
        ]));
        assert_eq!(
            match_results(call, &swapped).unwrap().unknown,
            vec!["a", "b"]
        );
        // A malformed request fails the whole call.
        assert!(matches!(
            match_results(call, &error(400, "JSON_PARSER_ERROR")),
            Err(RoundError::Status { status: 400, .. })
        ));
        assert!(same_id("003xx0000001AAA", "003xx0000001AAAAA2"));
    }

    #[test]
    fn lost_creates_are_looked_up_by_id_field_or_email() {
        let select = vec!["Id".to_owned()];
        let f = fields(&[("Email", "o'brien@example.com"), ("LastName", "O'Brien")]);
        let Some(Request::Query { soql }) = create_lookup(
            SObjectType::Contact,
            "doc1",
            Some("Driftless_Id__c"),
            &f,
            &select,
        ) else {
            panic!()
        };
        assert!(soql.contains("WHERE Driftless_Id__c = 'doc1'"), "{soql}");
        let Some(Request::Query { soql }) =
            create_lookup(SObjectType::Contact, "doc1", None, &f, &select)
        else {
            panic!()
        };
        assert!(
            soql.contains(r"WHERE Email = 'o\'brien@example.com'"),
            "{soql}"
        );
        assert_eq!(
            create_lookup(SObjectType::Account, "doc1", None, &f, &select),
            None
        );
        let a: SObject =
            serde_json::from_value(json!({"Id": id(1), "Driftless_Id__c": "doc1"})).unwrap();
        let b: SObject = serde_json::from_value(json!({"Id": id(2)})).unwrap();
        assert!(adopt_existing("doc1", Some("Driftless_Id__c"), &[b.clone(), a.clone()]).is_some());
        assert!(
            adopt_existing("doc1", None, &[a.clone(), b]).is_none(),
            "ambiguous"
        );
        assert!(adopt_existing("doc1", None, &[a]).is_some());
        assert_eq!(
            queryable_ids(["003xx0000001AAAAA2", "x' OR '1'='1"]),
            vec!["003xx0000001AAAAA2"]
        );
    }
}
