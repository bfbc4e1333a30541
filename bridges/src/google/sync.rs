//! The Google Calendar sync state machines (sans-IO): a runner feeds them HTTP answers and
//! carries out the requests they ask for; they never touch a socket, a clock or a store.
//!
//! - [`Pull`]: one pull round. Without a token it lists everything (`showDeleted=true`, so
//!   cancelled instances and deleted events are seen), page by page; only the last page carries
//!   `nextSyncToken`. With a token it asks for changes with that token and never sends the
//!   parameters Google forbids with it. A 410 `fullSyncRequired` restarts the round as a full
//!   listing marked `complete`, which [`plan_pull`] *merges* into the link table (matched by event
//!   id, then by iCalUID; nothing is wiped). Rate limits (403 `rateLimitExceeded` /
//!   `userRateLimitExceeded`, 429) and 5xx answers back off exponentially with jitter and honour
//!   `Retry-After`.
//! - [`group_series`] / [`plan_pull`] / [`merge_series`]: what a finished pull means per series
//!   (master + exceptions = one canonical document).
//! - [`Push`]: writing one record: insert with the client-chosen id (a 409 on a retried insert
//!   adopts the existing event instead of duplicating it), PATCH with `If-Match` (a 412 re-fetches
//!   and hands the fresh series back for a merge before the caller retries), DELETE for a
//!   tombstone or a cancelled instance. Only fields whose canonical value changed are sent, so an
//!   unchanged record sends nothing.
//!
//! Must not: decide the contracts' delete rules (see [`crate::sync`]) or touch documents.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use driftless_crdt_model::CalendarEvent;
use serde_json::{Value, json};

use super::translate::{
    self, InstanceRender, RenderContext, StoredSeries, TranslateError, instance_id, instance_keys,
    patch_body, render_instance, render_master,
};
use super::wire::{Event, EventsPage, Failure, MAX_RESULTS_LIMIT};
use crate::sync::{FetchedMember, Known, Listed, backoff};

// ---------------------------------------------------------------------------------------------
// Requests and answers
// ---------------------------------------------------------------------------------------------

/// An `events.list` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub sync_token: Option<String>,
    pub page_token: Option<String>,
    pub max_results: u32,
    /// Full listings only (forbidden with a sync token).
    pub time_min: Option<String>,
}

impl ListQuery {
    /// The query parameters. `singleEvents=false` (masters and exceptions, not expanded
    /// instances) and `showDeleted=true` on every request, so incremental requests match the
    /// full sync; nothing from [`super::wire::FORBIDDEN_WITH_SYNC_TOKEN`] with a sync token.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![
            ("maxResults", self.max_results.to_string()),
            ("singleEvents", "false".to_owned()),
            ("showDeleted", "true".to_owned()),
        ];
        match &self.sync_token {
            Some(token) => p.push(("syncToken", token.clone())),
            None => {
                if let Some(t) = &self.time_min {
                    p.push(("timeMin", t.clone()));
                }
            }
        }
        if let Some(page) = &self.page_token {
            p.push(("pageToken", page.clone()));
        }
        p
    }
}

/// A request the runner sends (relative to `calendars/{calendarId}/`).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// `GET events?...`
    List(ListQuery),
    /// `GET events/{event_id}`
    Get { event_id: String },
    /// `POST events` with a client-chosen `id` in the body.
    Insert { body: Value },
    /// `PATCH events/{event_id}`
    Patch {
        event_id: String,
        if_match: Option<String>,
        body: Value,
    },
    /// `DELETE events/{event_id}`
    Delete {
        event_id: String,
        if_match: Option<String>,
    },
    /// `POST events/watch` (body from [`super::channel::watch_body`]).
    Watch { body: Value },
    /// `POST channels/stop` (relative to the API base, not the calendar).
    StopChannel { body: Value },
}

impl Request {
    /// Whether the request writes an event.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Insert { .. } | Request::Patch { .. } | Request::Delete { .. }
        )
    }
}

/// An HTTP answer, as the runner got it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// From the `Retry-After` header.
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a round gave up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SyncError {
    #[error("{what}: {failure} (after {attempts} attempts)")]
    Provider {
        what: String,
        failure: Failure,
        attempts: u32,
    },
    #[error("{what}: malformed answer: {reason}")]
    Malformed { what: String, reason: String },
    #[error("{what}: {reason}")]
    Translate { what: String, reason: String },
    #[error("the sync token was rejected {0} times in one round")]
    TooManyResyncs(u32),
    #[error("the state machine was polled after it finished")]
    Finished,
}

// ---------------------------------------------------------------------------------------------
// Backoff
// ---------------------------------------------------------------------------------------------

/// How failed requests are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// First delay after a rate limit or 5xx (doubles each attempt).
    pub base: Duration,
    pub max: Duration,
    /// First delay after 403 `quotaExceeded` (Google's abuse limit: back off for long).
    pub quota_base: Duration,
    /// Attempts of one request before the round gives up.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(64),
            quota_base: Duration::from_secs(60),
            max_attempts: 8,
        }
    }
}

/// Backoff state for one request at a time; jitter from a small seeded generator (xorshift) so
/// runs are reproducible in tests.
#[derive(Debug, Clone)]
struct Retrier {
    policy: RetryPolicy,
    attempt: u32,
    rng: u64,
}

impl Retrier {
    fn new(policy: RetryPolicy, seed: u64) -> Self {
        Retrier {
            policy,
            attempt: 0,
            rng: seed | 1,
        }
    }

    fn jitter(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The pause before sending the failed request again, or `None` to give up.
    fn next_delay(&mut self, failure: &Failure, retry_after: Option<Duration>) -> Option<Duration> {
        if !failure.is_retryable() || self.attempt + 1 >= self.policy.max_attempts {
            return None;
        }
        let base = match failure {
            Failure::QuotaExceeded => self.policy.quota_base,
            _ => self.policy.base,
        };
        let max = self.policy.max.max(base);
        let jitter = self.jitter();
        let delay = backoff(self.attempt, base, max, retry_after, jitter);
        self.attempt += 1;
        Some(delay)
    }

    fn attempts(&self) -> u32 {
        self.attempt + 1
    }

    fn reset(&mut self) {
        self.attempt = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// Pull
// ---------------------------------------------------------------------------------------------

/// Settings of a pull round.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// `maxResults` (clamped to 1..=2500).
    pub max_results: u32,
    /// Lower bound of a full listing (RFC 3339), if the bridge only wants recent events.
    pub time_min: Option<String>,
    pub retry: RetryPolicy,
    /// Seed of the backoff jitter.
    pub seed: u64,
    /// 410s tolerated in one round before giving up.
    pub max_resyncs: u32,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            max_results: 250,
            time_min: None,
            retry: RetryPolicy::default(),
            seed: 0x9e37_79b9_7f4a_7c15,
            max_resyncs: 3,
        }
    }
}

/// One listed item: its raw JSON (kept whole for write-back) and its reading.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    pub raw: Value,
    pub event: Event,
}

impl RawEvent {
    pub fn parse(raw: Value) -> Result<RawEvent, serde_json::Error> {
        let event = Event::from_value(&raw)?;
        Ok(RawEvent { raw, event })
    }
}

/// A listed item that could not be read (the rest of the page is still used).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemProblem {
    pub event_id: Option<String>,
    pub reason: String,
}

/// What a finished pull round found.
#[derive(Debug, Clone, PartialEq)]
pub struct PullOutcome {
    /// Changed (or, when `complete`, all) events, each id once (its latest version), in the
    /// order first seen.
    pub events: Vec<RawEvent>,
    /// A full listing: a known series it does not contain is gone.
    pub complete: bool,
    /// The stored token was rejected (410) and the round fell back to a full listing.
    pub resynced: bool,
    /// Store this (after applying `events`) for the next round.
    pub next_sync_token: String,
    /// The calendar's `timeZone`, when a page said.
    pub calendar_zone: Option<String>,
    pub problems: Vec<ItemProblem>,
    /// Requests sent, retries included.
    pub requests: u32,
}

/// What the runner does next for a [`Pull`].
#[derive(Debug, Clone, PartialEq)]
pub enum PullStep {
    /// Send this request and pass the answer to [`Pull::on_response`].
    Send(Request),
    /// Wait this long, then poll again.
    Sleep(Duration),
    Done(PullOutcome),
    Failed(SyncError),
}

#[derive(Debug, Clone)]
enum PullState {
    Ready,
    Waiting(Duration),
    InFlight,
    Done(String),
    Failed(SyncError),
    Finished,
}

/// One pull round (see the module docs).
#[derive(Debug, Clone)]
pub struct Pull {
    opts: PullOptions,
    sync_token: Option<String>,
    page_token: Option<String>,
    resynced: bool,
    resyncs: u32,
    events: Vec<RawEvent>,
    index: BTreeMap<String, usize>,
    problems: Vec<ItemProblem>,
    calendar_zone: Option<String>,
    retry: Retrier,
    state: PullState,
    requests: u32,
}

impl Pull {
    /// A round from `stored_token` (`None`: a full listing).
    pub fn new(stored_token: Option<String>, opts: PullOptions) -> Pull {
        let retry = Retrier::new(opts.retry, opts.seed);
        Pull {
            opts,
            sync_token: stored_token.filter(|t| !t.is_empty()),
            page_token: None,
            resynced: false,
            resyncs: 0,
            events: Vec::new(),
            index: BTreeMap::new(),
            problems: Vec::new(),
            calendar_zone: None,
            retry,
            state: PullState::Ready,
            requests: 0,
        }
    }

    fn query(&self) -> ListQuery {
        ListQuery {
            sync_token: self.sync_token.clone(),
            page_token: self.page_token.clone(),
            max_results: self.opts.max_results.clamp(1, MAX_RESULTS_LIMIT),
            time_min: self.opts.time_min.clone(),
        }
    }

    pub fn poll(&mut self) -> PullStep {
        match std::mem::replace(&mut self.state, PullState::InFlight) {
            PullState::Ready => {
                self.requests += 1;
                PullStep::Send(Request::List(self.query()))
            }
            PullState::Waiting(d) => {
                self.state = PullState::Ready;
                PullStep::Sleep(d)
            }
            PullState::InFlight => PullStep::Failed(SyncError::Finished),
            PullState::Done(token) => {
                self.state = PullState::Finished;
                PullStep::Done(PullOutcome {
                    events: std::mem::take(&mut self.events),
                    complete: self.sync_token.is_none(),
                    resynced: self.resynced,
                    next_sync_token: token,
                    calendar_zone: self.calendar_zone.clone(),
                    problems: std::mem::take(&mut self.problems),
                    requests: self.requests,
                })
            }
            PullState::Failed(e) => {
                self.state = PullState::Finished;
                PullStep::Failed(e)
            }
            PullState::Finished => {
                self.state = PullState::Finished;
                PullStep::Failed(SyncError::Finished)
            }
        }
    }

    fn what(&self) -> String {
        match &self.sync_token {
            Some(_) => "incremental events.list".to_owned(),
            None => "full events.list".to_owned(),
        }
    }

    pub fn on_response(&mut self, resp: Response) {
        if resp.is_success() {
            self.retry.reset();
            self.on_page(&resp.body);
            return;
        }
        let failure = Failure::classify(resp.status, &resp.body);
        if failure == Failure::FullSyncRequired {
            self.resyncs += 1;
            if self.resyncs > self.opts.max_resyncs {
                self.state = PullState::Failed(SyncError::TooManyResyncs(self.resyncs));
                return;
            }
            // Start over without a token; what earlier pages said is listed again.
            self.sync_token = None;
            self.page_token = None;
            self.resynced = true;
            self.events.clear();
            self.index.clear();
            self.problems.clear();
            self.retry.reset();
            self.state = PullState::Ready;
            return;
        }
        match self.retry.next_delay(&failure, resp.retry_after) {
            Some(d) => self.state = PullState::Waiting(d),
            None => {
                self.state = PullState::Failed(SyncError::Provider {
                    what: self.what(),
                    attempts: self.retry.attempts(),
                    failure,
                })
            }
        }
    }

    fn on_page(&mut self, body: &[u8]) {
        let page: EventsPage = match serde_json::from_slice(body) {
            Ok(p) => p,
            Err(e) => {
                self.state = PullState::Failed(SyncError::Malformed {
                    what: self.what(),
                    reason: e.to_string(),
                });
                return;
            }
        };
        if page.time_zone.is_some() {
            self.calendar_zone = page.time_zone.clone();
        }
        for item in page.items {
            let id = item.get("id").and_then(Value::as_str).map(str::to_owned);
            match RawEvent::parse(item) {
                Ok(ev) if !ev.event.id.is_empty() => match self.index.get(&ev.event.id) {
                    // Changed again while we paged: the later version wins.
                    Some(&i) => self.events[i] = ev,
                    None => {
                        self.index.insert(ev.event.id.clone(), self.events.len());
                        self.events.push(ev);
                    }
                },
                Ok(_) => self.problems.push(ItemProblem {
                    event_id: None,
                    reason: "item without id".into(),
                }),
                Err(e) => self.problems.push(ItemProblem {
                    event_id: id,
                    reason: e.to_string(),
                }),
            }
        }
        match (page.next_page_token, page.next_sync_token) {
            (Some(next), _) => {
                self.page_token = Some(next);
                self.state = PullState::Ready;
            }
            (None, Some(token)) => self.state = PullState::Done(token),
            (None, None) => {
                self.state = PullState::Failed(SyncError::Malformed {
                    what: self.what(),
                    reason: "a page with neither nextPageToken nor nextSyncToken".into(),
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What a pull means per series
// ---------------------------------------------------------------------------------------------

/// The changes of one series in a pull: its master (when it changed) and changed exceptions.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesChange {
    /// The master's id (the single event's id for a non-recurring event).
    pub series_id: String,
    pub master: Option<RawEvent>,
    pub exceptions: Vec<RawEvent>,
}

impl SeriesChange {
    /// The master was deleted (a cancelled master is a deletion).
    pub fn is_deleted(&self) -> bool {
        self.master.as_ref().is_some_and(|m| m.event.is_cancelled())
    }

    pub fn ical_uid(&self) -> Option<&str> {
        self.master
            .iter()
            .chain(self.exceptions.iter())
            .find_map(|e| e.event.ical_uid.as_deref())
    }
}

/// Groups listed events by series (exceptions under their `recurringEventId`), in the order
/// each series was first seen.
pub fn group_series(events: &[RawEvent]) -> Vec<SeriesChange> {
    let mut order: Vec<SeriesChange> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for ev in events {
        let series = ev.event.series_id().unwrap_or(&ev.event.id).to_owned();
        let i = *index.entry(series.clone()).or_insert_with(|| {
            order.push(SeriesChange {
                series_id: series.clone(),
                master: None,
                exceptions: Vec::new(),
            });
            order.len() - 1
        });
        if ev.event.series_id().is_some() {
            order[i].exceptions.push(ev.clone());
        } else {
            order[i].master = Some(ev.clone());
        }
    }
    order
}

/// A series the bridge has linked to a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSeries {
    /// The master's event id (the link's external id).
    pub event_id: String,
    pub doc: String,
    pub ical_uid: Option<String>,
}

/// What a pull does to the link table (ids are series ids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullPlan {
    pub creates: Vec<String>,
    /// `(series id, doc)`
    pub updates: Vec<(String, String)>,
    /// `(doc, old series id, new series id)`: a resync found a known record (same iCalUID)
    /// under a new event id.
    pub relinks: Vec<(String, String, String)>,
    /// `(series id, doc)`: deleted at Google (or, in a complete listing, not listed).
    pub removals: Vec<(String, String)>,
    /// Exceptions of a series whose master is neither known nor listed (e.g. an invitation to
    /// one instance only): nothing to attach them to yet.
    pub orphans: Vec<String>,
}

/// Decides a pulled round with the provider-independent rules of [`crate::sync::plan_pull`]:
/// a listed series is matched by event id first, then (only against a known series that is
/// gone) by iCalUID; a partial page never deletes by omission.
pub fn plan_pull(known: &[KnownSeries], changes: &[SeriesChange], complete: bool) -> PullPlan {
    let known_ids: std::collections::BTreeSet<&str> =
        known.iter().map(|k| k.event_id.as_str()).collect();
    let k: Vec<Known> = known
        .iter()
        .map(|s| Known {
            href: s.event_id.clone(),
            doc: s.doc.clone(),
            etag: None,
            uid: s.ical_uid.clone(),
        })
        .collect();
    let mut listed = Vec::new();
    let mut fetched = Vec::new();
    let mut removed = Vec::new();
    let mut orphans = Vec::new();
    for c in changes {
        if c.is_deleted() {
            removed.push(c.series_id.clone());
        } else if c.master.is_some() || known_ids.contains(c.series_id.as_str()) {
            listed.push(Listed {
                href: c.series_id.clone(),
                etag: None,
            });
            fetched.push(FetchedMember {
                href: c.series_id.clone(),
                uid: c.ical_uid().map(str::to_owned),
            });
        } else {
            orphans.push(c.series_id.clone());
        }
    }
    let plan = crate::sync::plan_pull(&k, &listed, &fetched, &removed, complete);
    PullPlan {
        creates: plan.creates,
        updates: plan.updates,
        relinks: plan.relinks,
        removals: plan.removals,
        orphans,
    }
}

/// The stored series after a change: the master replaced when it changed, exceptions added or
/// replaced by original start. Exceptions the listing does not mention are kept (a full resync
/// merges; it never drops what it did not see). A series stored under another id (a relink)
/// starts over from the change's master.
pub fn merge_series(
    stored: Option<&StoredSeries>,
    change: &SeriesChange,
) -> Result<StoredSeries, TranslateError> {
    let mut series = match (stored, &change.master) {
        (Some(s), _) if s.id() == change.series_id => s.clone(),
        (_, Some(m)) => StoredSeries::new(m.raw.clone()),
        (_, None) => {
            return Err(TranslateError::Field {
                event: change.series_id.clone(),
                field: "recurringEventId".into(),
                reason: "exceptions of a series whose master is unknown".into(),
            });
        }
    };
    if let Some(m) = &change.master {
        series.master = m.raw.clone();
    }
    for ex in &change.exceptions {
        series.put_exception(ex.raw.clone())?;
    }
    Ok(series)
}

// ---------------------------------------------------------------------------------------------
// Push
// ---------------------------------------------------------------------------------------------

/// Settings of a [`Push`].
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub ctx: RenderContext,
    pub retry: RetryPolicy,
    pub seed: u64,
}

/// How a push ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PushOutcome {
    /// Everything that differed was written. `stored` is the new shadow (`None` once the event
    /// was deleted); `writes` counts the write requests that succeeded.
    Written {
        stored: Option<StoredSeries>,
        writes: u32,
        /// Overrides Google refused (e.g. a key that is no instance of the rule), with reasons.
        problems: Vec<String>,
    },
    /// A write met 412: Google's copy changed. Merge `fresh` into the document, then push again
    /// from `fresh`.
    Stale { fresh: StoredSeries, writes: u32 },
    /// The event no longer exists at Google (404 / 410 on a write): unlink it.
    Gone { writes: u32 },
}

/// What the runner does next for a [`Push`].
#[derive(Debug, Clone, PartialEq)]
pub enum PushStep {
    Send(Request),
    Sleep(Duration),
    Done(PushOutcome),
    Failed(SyncError),
}

#[derive(Debug, Clone, PartialEq)]
enum Job {
    Insert {
        body: Value,
    },
    /// Adopt the event a retried insert found (409): GET it.
    Adopt {
        id: String,
    },
    PatchMaster {
        body: Value,
    },
    DeleteMaster,
    PatchInstance {
        key: String,
        body: Value,
    },
    CancelInstance {
        key: String,
    },
    /// After a 412: GET the master or instance.
    Refetch {
        id: String,
        key: Option<String>,
    },
}

#[derive(Debug, Clone)]
enum PushState {
    Ready,
    Waiting(Duration),
    InFlight,
    Done(PushOutcome),
    Failed(SyncError),
    Finished,
}

/// Writes one record's changes to Google (see the module docs).
#[derive(Debug, Clone)]
pub struct Push {
    /// The document id, for errors.
    record: String,
    event: CalendarEvent,
    stored: Option<StoredSeries>,
    new_id: String,
    opts: PushOptions,
    jobs: VecDeque<Job>,
    instances_planned: bool,
    writes: u32,
    problems: Vec<String>,
    retry: Retrier,
    state: PushState,
}

impl Push {
    /// `stored`: the shadow of the series (None: not at Google yet, so it is inserted as
    /// `new_id`, see [`translate::event_id_for_document`]). `event`: the document's value.
    pub fn new(
        record: impl Into<String>,
        event: CalendarEvent,
        stored: Option<StoredSeries>,
        new_id: impl Into<String>,
        opts: PushOptions,
    ) -> Result<Push, SyncError> {
        let retry = Retrier::new(opts.retry, opts.seed);
        let mut push = Push {
            record: record.into(),
            event,
            stored,
            new_id: new_id.into(),
            opts,
            jobs: VecDeque::new(),
            instances_planned: false,
            writes: 0,
            problems: Vec::new(),
            retry,
            state: PushState::Ready,
        };
        push.plan_master()?;
        Ok(push)
    }

    fn translate_error(&self, e: TranslateError) -> SyncError {
        translate_error(&self.record, e)
    }

    fn plan_master(&mut self) -> Result<(), SyncError> {
        let job = match (&self.stored, self.event.deleted) {
            (None, true) => None,
            (Some(_), true) => Some(Job::DeleteMaster),
            (None, false) => {
                let body = render_master(&json!({}), &self.event, &self.new_id, &self.opts.ctx)
                    .map_err(|e| self.translate_error(e))?;
                Some(Job::Insert { body })
            }
            (Some(s), false) => {
                let new = render_master(&s.master, &self.event, &self.new_id, &self.opts.ctx)
                    .map_err(|e| self.translate_error(e))?;
                patch_body(&s.master, &new).map(|body| Job::PatchMaster { body })
            }
        };
        self.jobs.extend(job);
        Ok(())
    }

    fn plan_instances(&mut self) -> Result<(), SyncError> {
        self.instances_planned = true;
        let Some(series) = &self.stored else {
            return Ok(());
        };
        let mut jobs = Vec::new();
        for key in instance_keys(series, &self.event) {
            match render_instance(series, &key, &self.event, &self.opts.ctx)
                .map_err(|e| self.translate_error(e))?
            {
                InstanceRender::Unchanged => {}
                InstanceRender::Cancel => jobs.push(Job::CancelInstance { key }),
                InstanceRender::Write { base, new } => {
                    if let Some(body) = patch_body(&base, &new) {
                        jobs.push(Job::PatchInstance { key, body });
                    }
                }
            }
        }
        self.jobs.extend(jobs);
        Ok(())
    }

    fn master_id(&self) -> String {
        self.stored
            .as_ref()
            .map_or_else(|| self.new_id.clone(), |s| s.id().to_owned())
    }

    fn instance_etag(&self, key: &str) -> Option<String> {
        self.stored
            .as_ref()
            .and_then(|s| s.exceptions.get(key))
            .and_then(|e| e.get("etag"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn request(&self, job: &Job) -> Request {
        let master_etag = self
            .stored
            .as_ref()
            .and_then(|s| s.etag())
            .map(str::to_owned);
        match job {
            Job::Insert { body } => Request::Insert { body: body.clone() },
            Job::Adopt { id } | Job::Refetch { id, .. } => Request::Get {
                event_id: id.clone(),
            },
            Job::PatchMaster { body } => Request::Patch {
                event_id: self.master_id(),
                if_match: master_etag,
                body: body.clone(),
            },
            Job::DeleteMaster => Request::Delete {
                event_id: self.master_id(),
                if_match: master_etag,
            },
            Job::PatchInstance { key, body } => Request::Patch {
                event_id: instance_id(&self.master_id(), key),
                if_match: self.instance_etag(key),
                body: body.clone(),
            },
            Job::CancelInstance { key } => Request::Delete {
                event_id: instance_id(&self.master_id(), key),
                if_match: self.instance_etag(key),
            },
        }
    }

    pub fn poll(&mut self) -> PushStep {
        match std::mem::replace(&mut self.state, PushState::InFlight) {
            PushState::Ready => {
                if self.jobs.is_empty()
                    && !self.instances_planned
                    && let Err(e) = self.plan_instances()
                {
                    self.state = PushState::Finished;
                    return PushStep::Failed(e);
                }
                match self.jobs.front() {
                    Some(job) => PushStep::Send(self.request(job)),
                    None => {
                        self.state = PushState::Finished;
                        PushStep::Done(PushOutcome::Written {
                            stored: self.stored.take(),
                            writes: self.writes,
                            problems: std::mem::take(&mut self.problems),
                        })
                    }
                }
            }
            PushState::Waiting(d) => {
                self.state = PushState::Ready;
                PushStep::Sleep(d)
            }
            PushState::InFlight | PushState::Finished => {
                self.state = PushState::Finished;
                PushStep::Failed(SyncError::Finished)
            }
            PushState::Done(o) => {
                self.state = PushState::Finished;
                PushStep::Done(o)
            }
            PushState::Failed(e) => {
                self.state = PushState::Finished;
                PushStep::Failed(e)
            }
        }
    }

    fn body_json(&self, resp: &Response, what: &str) -> Result<Value, SyncError> {
        serde_json::from_slice(&resp.body).map_err(|e| SyncError::Malformed {
            what: format!("record {}: {what}", self.record),
            reason: e.to_string(),
        })
    }

    pub fn on_response(&mut self, resp: Response) {
        let Some(job) = self.jobs.front().cloned() else {
            self.state = PushState::Failed(SyncError::Finished);
            return;
        };
        self.state = PushState::Ready;
        let result = if resp.is_success() {
            self.retry.reset();
            self.jobs.pop_front();
            self.on_success(job, &resp)
        } else {
            self.on_failure(job, &resp)
        };
        if let Err(e) = result {
            self.state = PushState::Failed(e);
        }
    }

    fn on_success(&mut self, job: Job, resp: &Response) -> Result<(), SyncError> {
        match job {
            Job::Insert { .. } | Job::PatchMaster { .. } => {
                self.writes += 1;
                let body = self.body_json(resp, "event written")?;
                // A patch can land on an event deleted at Google since the last pull.
                if body.get("status").and_then(Value::as_str) == Some("cancelled") {
                    self.jobs.clear();
                    self.state = PushState::Done(PushOutcome::Gone {
                        writes: self.writes,
                    });
                    return Ok(());
                }
                match &mut self.stored {
                    Some(s) => s.master = body,
                    None => self.stored = Some(StoredSeries::new(body)),
                }
            }
            Job::Adopt { .. } => {
                // Our own earlier insert (its response was lost): adopt it and render onto it,
                // unless it was deleted at Google since (its id stays taken): then it is gone.
                let body = self.body_json(resp, "adopted event")?;
                if body.get("status").and_then(Value::as_str) == Some("cancelled") {
                    self.jobs.clear();
                    self.state = PushState::Done(PushOutcome::Gone {
                        writes: self.writes,
                    });
                    return Ok(());
                }
                self.stored = Some(StoredSeries::new(body));
                self.plan_master()?;
            }
            Job::DeleteMaster => {
                self.writes += 1;
                self.stored = None;
                self.jobs.clear();
                self.instances_planned = true;
            }
            Job::PatchInstance { .. } => {
                self.writes += 1;
                let body = self.body_json(resp, "instance written")?;
                if let Some(s) = &mut self.stored {
                    s.put_exception(body)
                        .map_err(|e| translate_error(&self.record, e))?;
                }
            }
            Job::CancelInstance { key } => {
                self.writes += 1;
                self.store_cancelled(&key)?;
            }
            Job::Refetch { key, .. } => {
                let body = self.body_json(resp, "re-fetched event")?;
                if key.is_none() && body.get("status").and_then(Value::as_str) == Some("cancelled")
                {
                    self.state = PushState::Done(PushOutcome::Gone {
                        writes: self.writes,
                    });
                    return Ok(());
                }
                let mut fresh = self.stored.clone().unwrap_or_default();
                match key {
                    Some(_) => fresh
                        .put_exception(body)
                        .map_err(|e| self.translate_error(e))?,
                    None => fresh.master = body,
                }
                self.state = PushState::Done(PushOutcome::Stale {
                    fresh,
                    writes: self.writes,
                });
            }
        }
        Ok(())
    }

    /// A DELETE of an instance answers 204 without a body: keep a cancelled exception until the
    /// next pull brings Google's own.
    fn store_cancelled(&mut self, key: &str) -> Result<(), SyncError> {
        let Some(series) = &mut self.stored else {
            return Ok(());
        };
        let cancelled = translate::cancelled_instance(series, key, &self.opts.ctx)
            .map_err(|e| translate_error(&self.record, e))?;
        series.exceptions.insert(key.to_owned(), cancelled);
        Ok(())
    }

    fn on_failure(&mut self, job: Job, resp: &Response) -> Result<(), SyncError> {
        let failure = Failure::classify(resp.status, &resp.body);
        let give_up = |this: &Self, failure: Failure| SyncError::Provider {
            what: format!("record {}: {}", this.record, describe(&this.request(&job))),
            failure,
            attempts: this.retry.attempts(),
        };
        match (&job, &failure) {
            (Job::Insert { body }, Failure::Duplicate) => {
                let id = body
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or(&self.new_id)
                    .to_owned();
                self.jobs.pop_front();
                self.jobs.push_front(Job::Adopt { id });
            }
            (Job::PatchMaster { .. } | Job::DeleteMaster, Failure::ConditionNotMet) => {
                let id = self.master_id();
                self.jobs.clear();
                self.jobs.push_front(Job::Refetch { id, key: None });
            }
            (
                Job::PatchInstance { key, .. } | Job::CancelInstance { key },
                Failure::ConditionNotMet,
            ) => {
                let id = instance_id(&self.master_id(), key);
                let key = key.clone();
                self.jobs.clear();
                self.jobs.push_front(Job::Refetch { id, key: Some(key) });
            }
            (Job::DeleteMaster, Failure::NotFound | Failure::AlreadyDeleted) => {
                self.jobs.clear();
                self.stored = None;
                self.instances_planned = true;
            }
            (Job::PatchMaster { .. }, Failure::NotFound | Failure::AlreadyDeleted)
            | (Job::Refetch { key: None, .. }, Failure::NotFound) => {
                self.jobs.clear();
                self.state = PushState::Done(PushOutcome::Gone {
                    writes: self.writes,
                });
            }
            (Job::CancelInstance { key }, Failure::AlreadyDeleted) => {
                let key = key.clone();
                self.jobs.pop_front();
                self.store_cancelled(&key)?;
            }
            (
                Job::PatchInstance { key, .. } | Job::CancelInstance { key },
                Failure::NotFound | Failure::Other { .. },
            ) if !failure.is_retryable() => {
                self.problems.push(format!(
                    "override {key} of event {}: {failure}",
                    self.master_id()
                ));
                self.jobs.pop_front();
            }
            _ => match self.retry.next_delay(&failure, resp.retry_after) {
                Some(d) => self.state = PushState::Waiting(d),
                None => return Err(give_up(self, failure.clone())),
            },
        }
        Ok(())
    }
}

fn translate_error(record: &str, e: TranslateError) -> SyncError {
    SyncError::Translate {
        what: format!("record {record}"),
        reason: e.to_string(),
    }
}

fn describe(req: &Request) -> String {
    match req {
        Request::List(_) => "events.list".into(),
        Request::Get { event_id } => format!("GET event {event_id}"),
        Request::Insert { body } => format!(
            "insert event {}",
            body.get("id").and_then(Value::as_str).unwrap_or("?")
        ),
        Request::Patch { event_id, .. } => format!("PATCH event {event_id}"),
        Request::Delete { event_id, .. } => format!("DELETE event {event_id}"),
        Request::Watch { .. } => "events.watch".into(),
        Request::StopChannel { .. } => "channels.stop".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::google::translate::event_from_series;
    use crate::google::wire::ErrorBody;

    fn ok(body: Value) -> Response {
        Response {
            status: 200,
            retry_after: None,
            body: serde_json::to_vec(&body).unwrap(),
        }
    }

    fn err(status: u16, reason: &str, retry_after: Option<u64>) -> Response {
        Response {
            status,
            retry_after: retry_after.map(Duration::from_secs),
            body: serde_json::to_vec(&ErrorBody::envelope(status, "global", reason, "m")).unwrap(),
        }
    }

    fn list_query(step: PullStep) -> ListQuery {
        match step {
            PullStep::Send(Request::List(q)) => q,
            other => panic!("expected a list request, got {other:?}"),
        }
    }

    fn ev(id: &str, extra: Value) -> Value {
        let mut v = json!({"id": id, "etag": format!("\"{id}\""), "status": "confirmed",
                           "iCalUID": format!("{id}@google.com"),
                           "start": {"dateTime": "2026-11-19T09:00:00Z"},
                           "end": {"dateTime": "2026-11-19T10:00:00Z"}});
        translate::apply_patch(&mut v, &extra);
        v
    }

    #[test]
    fn a_full_sync_pages_until_the_sync_token() {
        let mut pull = Pull::new(None, PullOptions::default());
        let q = list_query(pull.poll());
        assert_eq!(q.sync_token, None);
        let params = q.params();
        assert!(params.contains(&("showDeleted", "true".into())));
        pull.on_response(ok(
            json!({"items": [ev("a", json!({}))], "nextPageToken": "p2"}),
        ));
        let q = list_query(pull.poll());
        assert_eq!(q.page_token.as_deref(), Some("p2"));
        // An empty page can still carry nextPageToken.
        pull.on_response(ok(json!({"items": [], "nextPageToken": "p3"})));
        let _ = list_query(pull.poll());
        pull.on_response(ok(
            json!({"items": [ev("b", json!({})), ev("a", json!({"summary": "v2"}))],
                                   "nextSyncToken": "s1", "timeZone": "Europe/Berlin"}),
        ));
        let PullStep::Done(out) = pull.poll() else {
            panic!("expected done")
        };
        assert!(out.complete && !out.resynced);
        assert_eq!(out.next_sync_token, "s1");
        assert_eq!(out.calendar_zone.as_deref(), Some("Europe/Berlin"));
        let ids: Vec<&str> = out.events.iter().map(|e| e.event.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(out.events[0].event.summary.as_deref(), Some("v2"));
        assert_eq!(out.requests, 3);
    }

    #[test]
    fn incremental_requests_never_carry_forbidden_parameters() {
        let opts = PullOptions {
            time_min: Some("2026-01-01T00:00:00Z".into()),
            ..PullOptions::default()
        };
        let mut pull = Pull::new(Some("tok".into()), opts.clone());
        let q = list_query(pull.poll());
        let params = q.params();
        assert!(params.contains(&("syncToken", "tok".into())));
        for (name, _) in &params {
            assert!(
                !crate::google::wire::FORBIDDEN_WITH_SYNC_TOKEN.contains(name),
                "{name} sent with syncToken"
            );
        }
        let full = Pull::new(None, opts).query().params();
        assert!(full.contains(&("timeMin", "2026-01-01T00:00:00Z".into())));
    }

    #[test]
    fn a_410_restarts_as_a_complete_listing() {
        let mut pull = Pull::new(Some("old".into()), PullOptions::default());
        let _ = pull.poll();
        pull.on_response(ok(
            json!({"items": [ev("x", json!({}))], "nextPageToken": "p"}),
        ));
        let _ = pull.poll();
        pull.on_response(err(410, "fullSyncRequired", None));
        let q = list_query(pull.poll());
        assert_eq!((q.sync_token, q.page_token), (None, None));
        pull.on_response(ok(
            json!({"items": [ev("a", json!({}))], "nextSyncToken": "new"}),
        ));
        let PullStep::Done(out) = pull.poll() else {
            panic!()
        };
        assert!(out.complete && out.resynced);
        assert_eq!(out.events.len(), 1, "pages before the 410 are discarded");
        // A token that keeps failing stops the round.
        let mut pull = Pull::new(Some("old".into()), PullOptions::default());
        for _ in 0..4 {
            let _ = pull.poll();
            pull.on_response(err(410, "fullSyncRequired", None));
        }
        assert_eq!(pull.poll(), PullStep::Failed(SyncError::TooManyResyncs(4)));
    }

    #[test]
    fn rate_limits_back_off_exponentially_and_honour_retry_after() {
        let opts = PullOptions {
            retry: RetryPolicy {
                base: Duration::from_secs(1),
                max: Duration::from_secs(64),
                quota_base: Duration::from_secs(60),
                max_attempts: 4,
            },
            ..PullOptions::default()
        };
        let mut pull = Pull::new(Some("t".into()), opts);
        let _ = pull.poll();
        pull.on_response(err(403, "rateLimitExceeded", None));
        let PullStep::Sleep(d1) = pull.poll() else {
            panic!()
        };
        assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1));
        let _ = list_query(pull.poll());
        pull.on_response(err(403, "userRateLimitExceeded", None));
        let PullStep::Sleep(d2) = pull.poll() else {
            panic!()
        };
        assert!(d2 >= Duration::from_secs(1) && d2 <= Duration::from_secs(2));
        let _ = pull.poll();
        pull.on_response(err(429, "rateLimitExceeded", Some(30)));
        assert_eq!(pull.poll(), PullStep::Sleep(Duration::from_secs(30)));
        let _ = pull.poll();
        pull.on_response(err(429, "rateLimitExceeded", None));
        match pull.poll() {
            PullStep::Failed(SyncError::Provider {
                attempts, failure, ..
            }) => {
                assert_eq!((attempts, failure), (4, Failure::RateLimited));
            }
            other => panic!("expected to give up, got {other:?}"),
        }
        // A 400 is not retried.
        let mut pull = Pull::new(Some("t".into()), PullOptions::default());
        let _ = pull.poll();
        pull.on_response(err(400, "syncTokenWithRequestRestrictions", None));
        assert!(matches!(
            pull.poll(),
            PullStep::Failed(SyncError::Provider { .. })
        ));
    }

    #[test]
    fn bad_items_are_reported_and_the_rest_kept() {
        let mut pull = Pull::new(None, PullOptions::default());
        let _ = pull.poll();
        pull.on_response(ok(
            json!({"items": [{"id": "bad", "start": 5}, ev("ok", json!({}))],
                                   "nextSyncToken": "s"}),
        ));
        let PullStep::Done(out) = pull.poll() else {
            panic!()
        };
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.problems[0].event_id.as_deref(), Some("bad"));
    }

    fn raw(v: Value) -> RawEvent {
        RawEvent::parse(v).unwrap()
    }

    #[test]
    fn series_are_grouped_and_planned() {
        let events = vec![
            raw(ev("m", json!({"recurrence": ["RRULE:FREQ=DAILY"]}))),
            raw(json!({"id": "m_20261120T090000Z", "status": "cancelled",
                       "recurringEventId": "m",
                       "originalStartTime": {"dateTime": "2026-11-20T09:00:00Z"}})),
            raw(json!({"id": "k_20261120T090000Z", "status": "cancelled",
                       "recurringEventId": "k",
                       "originalStartTime": {"dateTime": "2026-11-20T09:00:00Z"}})),
            raw(
                json!({"id": "orph_20261120T090000Z", "recurringEventId": "orph",
                       "originalStartTime": {"dateTime": "2026-11-20T09:00:00Z"}}),
            ),
            raw(json!({"id": "gone", "status": "cancelled"})),
        ];
        let groups = group_series(&events);
        assert_eq!(groups.len(), 4);
        assert_eq!(groups[0].exceptions.len(), 1);
        let known = [
            KnownSeries {
                event_id: "k".into(),
                doc: "K".into(),
                ical_uid: None,
            },
            KnownSeries {
                event_id: "gone".into(),
                doc: "G".into(),
                ical_uid: None,
            },
        ];
        let plan = plan_pull(&known, &groups, false);
        assert_eq!(plan.creates, ["m"]);
        assert_eq!(plan.updates, [("k".to_string(), "K".to_string())]);
        assert_eq!(plan.removals, [("gone".to_string(), "G".to_string())]);
        assert_eq!(plan.orphans, ["orph"]);
    }

    #[test]
    fn a_resync_relinks_by_ical_uid_and_deletes_only_what_it_does_not_list() {
        let known = [
            KnownSeries {
                event_id: "old".into(),
                doc: "A".into(),
                ical_uid: Some("uid-a".into()),
            },
            KnownSeries {
                event_id: "b".into(),
                doc: "B".into(),
                ical_uid: Some("b@google.com".into()),
            },
            KnownSeries {
                event_id: "c".into(),
                doc: "C".into(),
                ical_uid: Some("c@google.com".into()),
            },
        ];
        let listed = group_series(&[
            raw(ev("new", json!({"iCalUID": "uid-a"}))),
            raw(ev("b", json!({}))),
        ]);
        let plan = plan_pull(&known, &listed, true);
        assert_eq!(
            plan.relinks,
            [("A".to_string(), "old".to_string(), "new".to_string())]
        );
        assert_eq!(plan.updates, [("b".to_string(), "B".to_string())]);
        assert_eq!(plan.removals, [("c".to_string(), "C".to_string())]);
        assert!(plan.creates.is_empty());
        // The same listing as an incremental page deletes nothing by omission.
        let plan = plan_pull(&known, &listed, false);
        assert!(plan.removals.is_empty() && plan.relinks.is_empty());
        assert_eq!(plan.creates, ["new"]);
    }

    #[test]
    fn merge_keeps_exceptions_it_did_not_see() {
        let master = raw(ev(
            "m",
            json!({"recurrence": ["RRULE:FREQ=DAILY"],
                                         "start": {"timeZone": "UTC"}, "end": {"timeZone": "UTC"}}),
        ));
        let ex = |day: u32| {
            raw(
                json!({"id": format!("m_202611{day}T090000Z"), "status": "cancelled",
                       "recurringEventId": "m",
                       "originalStartTime": {"dateTime": format!("2026-11-{day}T09:00:00Z")}}),
            )
        };
        let first = group_series(&[master.clone(), ex(20)]);
        let s = merge_series(None, &first[0]).unwrap();
        let second = group_series(&[ex(21)]);
        let s = merge_series(Some(&s), &second[0]).unwrap();
        assert_eq!(s.exceptions.len(), 2);
        assert_eq!(event_from_series(&s).unwrap().overrides.len(), 2);
        assert!(merge_series(None, &second[0]).is_err());
    }

    fn stored_single() -> StoredSeries {
        StoredSeries::new(ev("e1", json!({"summary": "Lunch"})))
    }

    fn send(step: PushStep) -> Request {
        match step {
            PushStep::Send(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn an_unchanged_record_sends_nothing() {
        let s = stored_single();
        let e = event_from_series(&s).unwrap();
        let mut push =
            Push::new("doc", e, Some(s.clone()), "unused", PushOptions::default()).unwrap();
        assert_eq!(
            push.poll(),
            PushStep::Done(PushOutcome::Written {
                stored: Some(s),
                writes: 0,
                problems: vec![]
            })
        );
    }

    #[test]
    fn a_change_is_a_conditional_patch_of_the_changed_fields() {
        let s = stored_single();
        let mut e = event_from_series(&s).unwrap();
        e.title = Some("Long lunch".into());
        let mut push = Push::new("doc", e, Some(s), "unused", PushOptions::default()).unwrap();
        let req = send(push.poll());
        assert_eq!(
            req,
            Request::Patch {
                event_id: "e1".into(),
                if_match: Some("\"e1\"".into()),
                body: json!({"summary": "Long lunch"}),
            }
        );
        push.on_response(ok(ev(
            "e1",
            json!({"summary": "Long lunch", "etag": "\"e2\""}),
        )));
        let PushStep::Done(PushOutcome::Written { stored, writes, .. }) = push.poll() else {
            panic!()
        };
        assert_eq!(writes, 1);
        assert_eq!(stored.unwrap().etag(), Some("\"e2\""));
    }

    #[test]
    fn a_412_refetches_and_hands_back_the_fresh_series() {
        let s = stored_single();
        let mut e = event_from_series(&s).unwrap();
        e.title = Some("Mine".into());
        let mut push = Push::new("doc", e, Some(s), "unused", PushOptions::default()).unwrap();
        let _ = send(push.poll());
        push.on_response(err(412, "conditionNotMet", None));
        assert_eq!(
            send(push.poll()),
            Request::Get {
                event_id: "e1".into()
            }
        );
        let theirs = ev(
            "e1",
            json!({"summary": "Theirs", "location": "Cafe", "etag": "\"e9\""}),
        );
        push.on_response(ok(theirs.clone()));
        let PushStep::Done(PushOutcome::Stale { fresh, writes: 0 }) = push.poll() else {
            panic!()
        };
        assert_eq!(fresh.master, theirs);
    }

    #[test]
    fn a_retried_insert_adopts_the_existing_event() {
        let e = CalendarEvent {
            title: Some("Launch".into()),
            start: Some("2026-11-19T09:00:00Z".into()),
            end: Some("2026-11-19T10:00:00Z".into()),
            ..CalendarEvent::default()
        };
        let mut push = Push::new("doc", e, None, "00aa11bb", PushOptions::default()).unwrap();
        let Request::Insert { body } = send(push.poll()) else {
            panic!()
        };
        assert_eq!(body["id"], "00aa11bb");
        push.on_response(err(409, "duplicate", None));
        assert_eq!(
            send(push.poll()),
            Request::Get {
                event_id: "00aa11bb".into()
            }
        );
        // The earlier insert landed, with the same content: nothing more to write.
        let mut existing = body.clone();
        translate::apply_patch(
            &mut existing,
            &json!({"etag": "\"1\"", "iCalUID": "x@google.com",
                                                      "status": "confirmed"}),
        );
        push.on_response(ok(existing.clone()));
        let PushStep::Done(PushOutcome::Written { stored, writes, .. }) = push.poll() else {
            panic!()
        };
        assert_eq!(writes, 0);
        assert_eq!(stored.unwrap().master, existing);
    }

    #[test]
    fn a_retried_insert_of_an_event_deleted_since_is_gone() {
        let e = CalendarEvent {
            title: Some("Launch".into()),
            start: Some("2026-11-19T09:00:00Z".into()),
            end: Some("2026-11-19T10:00:00Z".into()),
            ..CalendarEvent::default()
        };
        let mut push = Push::new("doc", e, None, "00aa11bb", PushOptions::default()).unwrap();
        let _ = send(push.poll());
        push.on_response(err(409, "duplicate", None));
        let _ = send(push.poll());
        push.on_response(ok(json!({"id": "00aa11bb", "status": "cancelled"})));
        assert_eq!(push.poll(), PushStep::Done(PushOutcome::Gone { writes: 0 }));
    }

    #[test]
    fn deletes_and_cancelled_instances() {
        let s = stored_single();
        let mut e = event_from_series(&s).unwrap();
        e.deleted = true;
        let mut push = Push::new("doc", e, Some(s), "unused", PushOptions::default()).unwrap();
        assert_eq!(
            send(push.poll()),
            Request::Delete {
                event_id: "e1".into(),
                if_match: Some("\"e1\"".into())
            }
        );
        // Already deleted counts as done.
        push.on_response(err(410, "deleted", None));
        assert!(matches!(
            push.poll(),
            PushStep::Done(PushOutcome::Written { stored: None, .. })
        ));

        let series = StoredSeries::new(ev(
            "m",
            json!({"recurrence": ["RRULE:FREQ=DAILY"],
                         "start": {"timeZone": "UTC"}, "end": {"timeZone": "UTC"}}),
        ));
        let mut e = event_from_series(&series).unwrap();
        e.overrides.insert(
            "20261121T090000Z".into(),
            driftless_crdt_model::Override {
                cancelled: true,
                ..Default::default()
            },
        );
        let mut push = Push::new(
            "doc",
            e.clone(),
            Some(series),
            "unused",
            PushOptions::default(),
        )
        .unwrap();
        assert_eq!(
            send(push.poll()),
            Request::Delete {
                event_id: "m_20261121T090000Z".into(),
                if_match: None
            }
        );
        push.on_response(Response {
            status: 204,
            retry_after: None,
            body: vec![],
        });
        let PushStep::Done(PushOutcome::Written {
            stored: Some(stored),
            writes: 1,
            ..
        }) = push.poll()
        else {
            panic!()
        };
        // The shadow now says cancelled, so pushing the same record again is quiet.
        assert_eq!(event_from_series(&stored).unwrap().overrides, e.overrides);
        let mut again =
            Push::new("doc", e, Some(stored), "unused", PushOptions::default()).unwrap();
        assert!(matches!(
            again.poll(),
            PushStep::Done(PushOutcome::Written { writes: 0, .. })
        ));
    }
}
