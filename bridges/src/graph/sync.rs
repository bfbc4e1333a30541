//! Graph sync decisions as sans-IO state machines: a runner asks each machine which request to
//! make, makes it (see `client`), hands back the answer, and repeats until the machine is done.
//! Time and randomness are inputs (the window's `now`, the backoff jitter).
//!
//! - [`DeltaRound`]: one delta round (`calendarView/delta` or `contacts/delta`): follows
//!   `@odata.nextLink` until `@odata.deltaLink`, replaying both verbatim (never rebuilt); a 410
//!   `SyncStateNotFound` restarts from the initial URL as a *complete* listing that the plan merges
//!   with what is linked (nothing is wiped); 429/503 wait for `Retry-After` (or backoff) and retry.
//! - [`CalendarPull`]: a calendar round on top: fetches the series master of every series whose
//!   occurrences or exceptions were listed (occurrences arrive stripped), and probes every known
//!   item reported `@removed` (or missing from a complete listing) with a GET, because calendarView
//!   reports events that merely left the window exactly like deleted ones. 404 means deleted; an
//!   item that still exists left the window and is never tombstoned.
//! - [`ContactPull`]: a contacts round (no window: `@removed` and omission from a complete
//!   listing are deletes).
//! - [`plan_calendar`] / [`plan_contacts`]: what a round does to the link table (create, update,
//!   relink by iCalUId after a resync, remove, out of window).
//! - [`WriteJob`]: one conditional write (`If-Match` with the item's etag); 412
//!   `ErrorIrresolvableConflict` re-fetches, lets the runner merge and re-render, and retries.
//!
//! Must not: do I/O, read clocks or randomness, or touch documents.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::Value;

use super::translate::{
    EventBundle, EventWrite, event_from_graph, instance_key, key_instant, series_uid,
};
use super::wire::{DeltaPage, DeltaRow};

// ---------------------------------------------------------------------------------------------
// Requests, replies, steps
// ---------------------------------------------------------------------------------------------

/// Which Graph collection an item lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    /// `/me/events/{id}`
    Event,
    /// `/me/contacts/{id}`
    Contact,
}

/// A write to make.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// `PATCH /me/{events,contacts}/{id}` with `If-Match: etag` (when known).
    Patch {
        id: String,
        etag: Option<String>,
        body: serde_json::Map<String, Value>,
    },
    /// `DELETE /me/{events,contacts}/{id}` with `If-Match: etag` (when known).
    Delete { id: String, etag: Option<String> },
    /// `POST /me/{events,contacts}`.
    Create { body: Value },
    /// `POST /me/events/{id}/{action}` (a meeting response; no precondition).
    Action {
        id: String,
        action: String,
        body: Value,
    },
}

impl From<EventWrite> for WriteOp {
    fn from(w: EventWrite) -> Self {
        match w {
            EventWrite::Patch { id, etag, body } => WriteOp::Patch { id, etag, body },
            EventWrite::Delete { id, etag } => WriteOp::Delete { id, etag },
            EventWrite::Respond { id, action, body } => WriteOp::Action { id, action, body },
        }
    }
}

impl WriteOp {
    pub fn id(&self) -> Option<&str> {
        match self {
            WriteOp::Patch { id, .. } | WriteOp::Delete { id, .. } | WriteOp::Action { id, .. } => {
                Some(id)
            }
            WriteOp::Create { .. } => None,
        }
    }
}

/// A request a machine asks the runner to make.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// GET this URL exactly as given (an initial delta URL, a nextLink or a deltaLink).
    Page { url: String },
    /// GET one item by id.
    Item { kind: ItemKind, id: String },
    /// A write.
    Write { kind: ItemKind, op: WriteOp },
}

/// What the runner got back, classified (see `wire::classify`).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Page(DeltaPage),
    /// A 200/201 item body.
    Item(Value),
    /// 204 after a DELETE.
    Deleted,
    /// 202 (or another empty success) after a POST action such as `accept`.
    Accepted,
    NotFound,
    SyncStateNotFound,
    /// 412.
    Conflict,
    /// 429 / 503.
    Throttled {
        retry_after: Option<Duration>,
    },
}

/// A request to make after waiting `after` (zero unless backing off).
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub request: Request,
    pub after: Duration,
}

/// What the runner does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step<T> {
    Send(Outgoing),
    Done(T),
}

/// Why a round or a write gave up.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SyncError {
    #[error("{what}: still throttled after {attempts} attempts")]
    Throttled { what: String, attempts: u32 },
    #[error("delta round from {url}: {reason}")]
    MalformedPage { url: String, reason: String },
    #[error("delta round from {url}: the initial request itself answered SyncStateNotFound")]
    ResyncRejected { url: String },
    #[error("{what}: unexpected answer {reply}")]
    Unexpected { what: String, reply: String },
    #[error("{what}: still 412 after {attempts} merges")]
    Conflicts { what: String, attempts: u32 },
}

/// How throttled requests are retried: [`crate::sync::backoff`] from `base` up to `max`, never
/// shorter than `Retry-After`, at most `max_attempts` times in a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    pub max_attempts: u32,
    /// In `[0, 1)`; from the runner's randomness (fixed in tests).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(120),
            max_attempts: 8,
            jitter: 0.5,
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        crate::sync::backoff(attempt, self.base, self.max, retry_after, self.jitter)
    }
}

fn unexpected<T>(what: impl Into<String>, reply: &Reply) -> Result<T, SyncError> {
    Err(SyncError::Unexpected {
        what: what.into(),
        reply: match reply {
            Reply::Page(_) => "a delta page".into(),
            Reply::Item(_) => "an item".into(),
            other => format!("{other:?}"),
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Window and initial URLs
// ---------------------------------------------------------------------------------------------

/// The calendarView range: `[start, end)` around `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: NaiveDateTime,
    pub end: NaiveDateTime,
}

impl Window {
    /// `window_past` before and `window_future` after `now`, whole seconds.
    pub fn around(now: DateTime<Utc>, past: Duration, future: Duration) -> Window {
        let now = now.naive_utc();
        let secs = |d: Duration| {
            i64::try_from(d.as_secs())
                .ok()
                .and_then(chrono::TimeDelta::try_seconds)
                .unwrap_or(chrono::TimeDelta::MAX)
        };
        let trunc = |t: NaiveDateTime| {
            chrono::DateTime::from_timestamp(t.and_utc().timestamp(), 0)
                .map_or(t, |d| d.naive_utc())
        };
        Window {
            start: trunc(now.checked_sub_signed(secs(past)).unwrap_or(now)),
            end: trunc(now.checked_add_signed(secs(future)).unwrap_or(now)),
        }
    }

    /// Whether the instance an override key names starts inside the window (`None`: bad key).
    pub fn contains_key(&self, key: &str) -> Option<bool> {
        let t = key_instant(key)?;
        Some(t >= self.start && t < self.end)
    }

    /// Delta tokens keep the window of the round that started them, so a window computed from
    /// `now` drifts away from the stored one. When the stored window's edges are more than
    /// `tolerance` off the fresh ones, the runner drops its delta link and runs a complete round
    /// over the fresh window (a merging resync: items that left it are probed, never deleted).
    pub fn needs_refresh(&self, fresh: &Window, tolerance: Duration) -> bool {
        let tolerance =
            chrono::TimeDelta::seconds(i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX / 2));
        (self.start - fresh.start).abs() > tolerance || (self.end - fresh.end).abs() > tolerance
    }

    fn iso(t: &NaiveDateTime) -> String {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

fn join(api_base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        api_base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// The first URL of a calendar round: `{api_base}/me/calendarView/delta?startDateTime=..&endDateTime=..`.
/// Only the first round builds a URL; every later one replays a link Graph gave.
pub fn calendar_delta_url(api_base: &str, window: &Window) -> String {
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("startDateTime", &Window::iso(&window.start))
        .append_pair("endDateTime", &Window::iso(&window.end))
        .finish();
    format!("{}?{query}", join(api_base, "me/calendarView/delta"))
}

/// The first URL of a contacts round.
pub fn contacts_delta_url(api_base: &str) -> String {
    join(api_base, "me/contacts/delta")
}

// ---------------------------------------------------------------------------------------------
// One delta round
// ---------------------------------------------------------------------------------------------

/// The last word on one id in a round (later pages and later rows win: Graph replays).
#[derive(Debug, Clone, PartialEq)]
pub enum RowState {
    Present(Value),
    Removed { reason: Option<String> },
}

/// Everything one delta round listed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaResult {
    /// True when this was a full listing (no stored link, or restarted after 410): a known item it
    /// does not list is gone (or, for calendarView, possibly out of the window).
    pub complete: bool,
    pub rows: BTreeMap<String, RowState>,
    /// Store this; the next round starts from it verbatim.
    pub delta_link: String,
}

/// Pages through one delta round; see the module doc.
#[derive(Debug, Clone)]
pub struct DeltaRound {
    initial_url: String,
    current: String,
    complete: bool,
    restarted: bool,
    rows: BTreeMap<String, RowState>,
    throttled: u32,
    retry: RetryPolicy,
}

impl DeltaRound {
    /// `stored_link`: the deltaLink of the last finished round (`None`: a first, complete round).
    pub fn new(initial_url: String, stored_link: Option<String>, retry: RetryPolicy) -> Self {
        let (current, complete) = match stored_link.filter(|l| !l.is_empty()) {
            Some(link) => (link, false),
            None => (initial_url.clone(), true),
        };
        Self {
            initial_url,
            current,
            complete,
            restarted: false,
            rows: BTreeMap::new(),
            throttled: 0,
            retry,
        }
    }

    /// The first request.
    pub fn start(&self) -> Outgoing {
        Outgoing {
            request: Request::Page {
                url: self.current.clone(),
            },
            after: Duration::ZERO,
        }
    }

    /// Whether the round restarted as a full listing after 410.
    pub fn restarted(&self) -> bool {
        self.restarted
    }

    pub fn handle(&mut self, reply: Reply) -> Result<Step<DeltaResult>, SyncError> {
        match reply {
            Reply::Page(page) => {
                self.throttled = 0;
                let rows = page.rows().map_err(|e| SyncError::MalformedPage {
                    url: self.current.clone(),
                    reason: e.to_string(),
                })?;
                for row in rows {
                    match row {
                        DeltaRow::Item { id, raw } => {
                            self.rows.insert(id, RowState::Present(raw));
                        }
                        DeltaRow::Removed { id, reason } => {
                            self.rows.insert(id, RowState::Removed { reason });
                        }
                    }
                }
                match (page.next_link, page.delta_link) {
                    (Some(next), _) => {
                        self.current = next;
                        Ok(Step::Send(self.start()))
                    }
                    (None, Some(delta_link)) => Ok(Step::Done(DeltaResult {
                        complete: self.complete,
                        rows: std::mem::take(&mut self.rows),
                        delta_link,
                    })),
                    (None, None) => Err(SyncError::MalformedPage {
                        url: self.current.clone(),
                        reason: "neither @odata.nextLink nor @odata.deltaLink".into(),
                    }),
                }
            }
            Reply::SyncStateNotFound => {
                if self.current == self.initial_url {
                    return Err(SyncError::ResyncRejected {
                        url: self.initial_url.clone(),
                    });
                }
                // Start over as a full listing; what was gathered belongs to the dead token.
                self.rows.clear();
                self.complete = true;
                self.restarted = true;
                self.current = self.initial_url.clone();
                Ok(Step::Send(self.start()))
            }
            Reply::Throttled { retry_after } => {
                self.throttled += 1;
                if self.throttled > self.retry.max_attempts {
                    return Err(SyncError::Throttled {
                        what: format!("GET {}", self.current),
                        attempts: self.throttled,
                    });
                }
                Ok(Step::Send(Outgoing {
                    request: Request::Page {
                        url: self.current.clone(),
                    },
                    after: self.retry.delay(self.throttled - 1, retry_after),
                }))
            }
            other => unexpected(format!("GET {}", self.current), &other),
        }
    }
}

/// Probes one id at a time with throttling handled; shared by the calendar and contact rounds.
#[derive(Debug, Clone)]
struct ItemFetches {
    kind: ItemKind,
    queue: Vec<String>,
    throttled: u32,
    retry: RetryPolicy,
    found: BTreeMap<String, Option<Value>>,
}

impl ItemFetches {
    fn new(kind: ItemKind, ids: BTreeSet<String>, retry: RetryPolicy) -> Self {
        let mut queue: Vec<String> = ids.into_iter().collect();
        queue.reverse();
        Self {
            kind,
            queue,
            throttled: 0,
            retry,
            found: BTreeMap::new(),
        }
    }

    fn next(&self, after: Duration) -> Option<Outgoing> {
        self.queue.last().map(|id| Outgoing {
            request: Request::Item {
                kind: self.kind,
                id: id.clone(),
            },
            after,
        })
    }

    /// `Some(request)` while more requests are due.
    fn handle(&mut self, reply: Reply) -> Result<Option<Outgoing>, SyncError> {
        let Some(id) = self.queue.last().cloned() else {
            return unexpected("item fetch with nothing outstanding", &reply);
        };
        match reply {
            Reply::Item(v) => {
                self.found.insert(id, Some(v));
            }
            Reply::NotFound => {
                self.found.insert(id, None);
            }
            Reply::Throttled { retry_after } => {
                self.throttled += 1;
                if self.throttled > self.retry.max_attempts {
                    return Err(SyncError::Throttled {
                        what: format!("GET item {id}"),
                        attempts: self.throttled,
                    });
                }
                return Ok(self.next(self.retry.delay(self.throttled - 1, retry_after)));
            }
            other => return unexpected(format!("GET item {id}"), &other),
        }
        self.throttled = 0;
        self.queue.pop();
        Ok(self.next(Duration::ZERO))
    }
}

// ---------------------------------------------------------------------------------------------
// Calendar round
// ---------------------------------------------------------------------------------------------

/// A linked calendar record, as the pull needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownEvent {
    /// The Graph id linked (a single event's, or a series master's).
    pub id: String,
    pub doc: String,
    /// [`series_uid`] of the stored `iCalUId`, to re-match after a resync.
    pub uid: Option<String>,
    /// For a series: instance id to its key, for the instances the bundle holds.
    pub instances: BTreeMap<String, String>,
}

impl KnownEvent {
    /// From a stored bundle.
    pub fn from_bundle(doc: &str, bundle: &EventBundle) -> Self {
        Self {
            id: bundle.id().to_owned(),
            doc: doc.to_owned(),
            uid: bundle.ical_uid().map(series_uid),
            instances: bundle
                .instances
                .keys()
                .filter_map(|id| bundle.key_of(id).map(|k| (id.clone(), k)))
                .collect(),
        }
    }
}

/// What a round saw of one series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesChange {
    /// The master as fetched this round.
    pub master: Option<Value>,
    /// Instance rows listed (stripped occurrences as sent; [`apply_series`] completes them).
    pub instances: Vec<Value>,
    /// Instance ids Graph deleted (cancelled occurrences, deleted exceptions).
    pub cancelled: Vec<String>,
    /// Instance ids that still exist outside the window.
    pub left_window: Vec<String>,
}

/// Everything a calendar round learned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CalendarChanges {
    pub complete: bool,
    /// Store after the round's changes are applied.
    pub delta_link: String,
    /// Single events listed, by id (full rows).
    pub singles: BTreeMap<String, Value>,
    /// Series touched, by master id (always with the master fetched this round).
    pub series: BTreeMap<String, SeriesChange>,
    /// Known singles / masters Graph no longer has.
    pub deleted: Vec<String>,
    /// Known singles / masters that still exist but are outside the window.
    pub left_window: Vec<String>,
}

#[derive(Debug, Clone)]
enum CalendarPhase {
    Paging(DeltaRound),
    Masters(ItemFetches),
    Probes(ItemFetches),
    Finished,
}

impl CalendarChanges {
    /// A complete listing that found nothing: the delete guard must ask before applying it.
    pub fn is_empty_listing(&self) -> bool {
        self.complete
            && self.singles.is_empty()
            && self.series.values().all(|s| s.instances.is_empty())
    }
}

/// One calendar round; see the module doc.
#[derive(Debug, Clone)]
pub struct CalendarPull {
    window: Window,
    retry: RetryPolicy,
    known: BTreeMap<String, KnownEvent>,
    /// Known instance id to its master id.
    owner: BTreeMap<String, String>,
    phase: CalendarPhase,
    out: CalendarChanges,
    /// Removed / missing known ids awaiting a probe.
    suspects: BTreeSet<String>,
}

impl CalendarPull {
    pub fn new(
        initial_url: String,
        stored_link: Option<String>,
        window: Window,
        known: Vec<KnownEvent>,
        retry: RetryPolicy,
    ) -> Self {
        let owner = known
            .iter()
            .flat_map(|k| k.instances.keys().map(|i| (i.clone(), k.id.clone())))
            .collect();
        Self {
            window,
            retry,
            known: known.into_iter().map(|k| (k.id.clone(), k)).collect(),
            owner,
            phase: CalendarPhase::Paging(DeltaRound::new(initial_url, stored_link, retry)),
            out: CalendarChanges::default(),
            suspects: BTreeSet::new(),
        }
    }

    pub fn start(&self) -> Step<CalendarChanges> {
        match &self.phase {
            CalendarPhase::Paging(round) => Step::Send(round.start()),
            _ => Step::Done(self.out.clone()),
        }
    }

    pub fn handle(&mut self, reply: Reply) -> Result<Step<CalendarChanges>, SyncError> {
        match &mut self.phase {
            CalendarPhase::Paging(round) => match round.handle(reply)? {
                Step::Done(result) => self.after_paging(result),
                Step::Send(out) => Ok(Step::Send(out)),
            },
            CalendarPhase::Masters(fetches) => match fetches.handle(reply)? {
                Some(out) => Ok(Step::Send(out)),
                None => self.after_masters(),
            },
            CalendarPhase::Probes(fetches) => match fetches.handle(reply)? {
                Some(out) => Ok(Step::Send(out)),
                None => Ok(self.after_probes()),
            },
            CalendarPhase::Finished => unexpected("finished calendar round", &reply),
        }
    }

    fn after_paging(&mut self, result: DeltaResult) -> Result<Step<CalendarChanges>, SyncError> {
        self.out.complete = result.complete;
        self.out.delta_link = result.delta_link;
        let mut masters: BTreeSet<String> = BTreeSet::new();
        let mut listed: BTreeSet<String> = BTreeSet::new();
        for (id, row) in result.rows {
            match row {
                RowState::Present(raw) => {
                    listed.insert(id.clone());
                    let master = raw
                        .get("seriesMasterId")
                        .and_then(Value::as_str)
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned);
                    let kind = raw.get("type").and_then(Value::as_str).unwrap_or_default();
                    match master {
                        Some(m) if kind == "occurrence" || kind == "exception" => {
                            masters.insert(m.clone());
                            self.out.series.entry(m).or_default().instances.push(raw);
                        }
                        // calendarView does not list masters; if one comes, refresh it by id.
                        _ if kind == "seriesMaster" => {
                            masters.insert(id.clone());
                            self.out.series.entry(id).or_default();
                        }
                        _ => {
                            self.out.singles.insert(id, raw);
                        }
                    }
                }
                RowState::Removed { .. } => {
                    if let Some(master) = self.owner.get(&id) {
                        // Deleting a whole series only shows as its instances leaving: fetching
                        // the master tells a deleted series from deleted occurrences.
                        masters.insert(master.clone());
                        self.suspects.insert(id);
                    } else if self.known.contains_key(&id) {
                        self.suspects.insert(id);
                    }
                }
            }
        }
        if self.out.complete {
            self.collect_missing(&listed, &masters);
        }
        let fetches = ItemFetches::new(ItemKind::Event, masters, self.retry);
        match fetches.next(Duration::ZERO) {
            Some(out) => {
                self.phase = CalendarPhase::Masters(fetches);
                Ok(Step::Send(out))
            }
            None => {
                self.phase = CalendarPhase::Masters(fetches);
                self.after_masters()
            }
        }
    }

    /// In a complete listing, known items not listed are suspects, except instances whose slot is
    /// outside the window (they left it; no probe needed).
    fn collect_missing(&mut self, listed: &BTreeSet<String>, touched: &BTreeSet<String>) {
        for (id, known) in &self.known {
            let series_touched = touched.contains(id);
            if !listed.contains(id) && !series_touched {
                self.suspects.insert(id.clone());
            }
            for (instance, key) in &known.instances {
                if listed.contains(instance) {
                    continue;
                }
                match self.window.contains_key(key) {
                    Some(false) => self
                        .out
                        .series
                        .entry(id.clone())
                        .or_default()
                        .left_window
                        .push(instance.clone()),
                    _ if series_touched => {
                        self.suspects.insert(instance.clone());
                    }
                    // The whole series is unlisted: its master's probe decides.
                    _ => {}
                }
            }
        }
    }

    fn after_masters(&mut self) -> Result<Step<CalendarChanges>, SyncError> {
        let CalendarPhase::Masters(fetches) = &mut self.phase else {
            return Ok(Step::Done(self.out.clone()));
        };
        let found = std::mem::take(&mut fetches.found);
        for (master_id, master) in found {
            match master {
                Some(m) => self.out.series.entry(master_id).or_default().master = Some(m),
                None => {
                    // The series is gone (its rows raced a delete).
                    self.out.series.remove(&master_id);
                    if self.known.contains_key(&master_id) {
                        self.out.deleted.push(master_id);
                    }
                }
            }
        }
        let deleted: BTreeSet<&String> = self.out.deleted.iter().collect();
        let suspects: BTreeSet<String> = self
            .suspects
            .iter()
            .filter(|id| !deleted.contains(id))
            .filter(|id| match self.owner.get(*id) {
                // An instance of a deleted series needs no probe.
                Some(master) => !deleted.contains(master),
                None => true,
            })
            .cloned()
            .collect();
        let probes = ItemFetches::new(ItemKind::Event, suspects, self.retry);
        match probes.next(Duration::ZERO) {
            Some(out) => {
                self.phase = CalendarPhase::Probes(probes);
                Ok(Step::Send(out))
            }
            None => {
                self.phase = CalendarPhase::Probes(probes);
                Ok(self.after_probes())
            }
        }
    }

    fn after_probes(&mut self) -> Step<CalendarChanges> {
        let found = match &mut self.phase {
            CalendarPhase::Probes(p) => std::mem::take(&mut p.found),
            _ => BTreeMap::new(),
        };
        for (id, item) in found {
            let gone = item.is_none();
            match self.owner.get(&id) {
                Some(master) => {
                    let change = self.out.series.entry(master.clone()).or_default();
                    if gone {
                        change.cancelled.push(id);
                    } else {
                        change.left_window.push(id);
                    }
                }
                None if gone => self.out.deleted.push(id),
                None => self.out.left_window.push(id),
            }
        }
        // A series with only instance news and no fetched master keeps its stored master.
        self.phase = CalendarPhase::Finished;
        Step::Done(std::mem::take(&mut self.out))
    }
}

/// A stored series bundle (`None`: new) with a round's news applied; `None` when there is
/// neither a stored bundle nor a fetched master.
pub fn apply_series(stored: Option<EventBundle>, change: &SeriesChange) -> Option<EventBundle> {
    let mut bundle = match (stored, &change.master) {
        (Some(mut b), Some(m)) => {
            b.set_master(m.clone());
            b
        }
        (Some(b), None) => b,
        (None, Some(m)) => EventBundle::single(m.clone()),
        (None, None) => return None,
    };
    for row in &change.instances {
        bundle.put_instance(row.clone());
    }
    for id in &change.cancelled {
        bundle.cancel_instance(id);
    }
    for id in &change.left_window {
        bundle.forget_instance(id);
    }
    Some(bundle)
}

/// After a round that listed every instance of the series in `window`: the series' rule instances
/// that start inside `window` but that Graph listed neither as an occurrence nor as an exception
/// were deleted (Graph has no EXDATE; a deleted occurrence simply vanishes from calendarView).
/// Marks their keys cancelled in `bundle` (with no id: Graph never said it) and returns how many.
/// Such rounds are complete listings, and incremental rounds that bring a series for the first
/// time (a delta link that never reported the series lists all its instances; without this, a
/// series created with a deleted occurrence after the first round would show that occurrence).
/// For a known series an incremental round reports deletions as `@removed`, which the probes
/// resolve.
///
/// Limitation: an exception moved from inside the window to outside it is not listed either, so
/// on a first import it reads as cancelled until it is listed again.
pub fn infer_deleted_occurrences(bundle: &mut EventBundle, window: &Window) -> usize {
    if !bundle.is_series() {
        return 0;
    }
    let Ok(mut event) = event_from_graph(bundle, "") else {
        return 0;
    };
    // Every instance the rule makes, whatever the bundle already says of it.
    event.overrides.clear();
    let options = driftless_crdt_model::recurrence::ExpandOptions::default();
    let Ok(expansion) = driftless_crdt_model::recurrence::expand(
        &event,
        window.start.and_utc(),
        window.end.and_utc(),
        &options,
    ) else {
        return 0;
    };
    if expansion.truncated {
        return 0; // a partial list proves nothing
    }
    let all_day = bundle.is_all_day();
    let present: BTreeSet<String> = bundle
        .instances
        .values()
        .filter_map(|row| instance_key(row, all_day))
        .chain(bundle.cancelled.keys().cloned())
        .collect();
    let mut inferred = 0;
    for occurrence in expansion.occurrences {
        if window.contains_key(&occurrence.key) == Some(true) && !present.contains(&occurrence.key)
        {
            bundle.cancelled.insert(occurrence.key, String::new());
            inferred += 1;
        }
    }
    inferred
}

/// The bundle to store for `id` after a round: a listed single's row, or the stored series bundle
/// (`stored`) with the round's news applied. `None` when the round says nothing about `id`.
pub fn bundle_after(
    id: &str,
    stored: Option<EventBundle>,
    changes: &CalendarChanges,
) -> Option<EventBundle> {
    if let Some(row) = changes.singles.get(id) {
        return Some(EventBundle::single(row.clone()));
    }
    changes.series.get(id).and_then(|c| apply_series(stored, c))
}

/// What a calendar round does to the link table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CalendarPlan {
    /// New Graph ids (singles or masters): new documents.
    pub creates: Vec<String>,
    /// `(id, doc)`: known ids with news; write the difference against the shadow.
    pub updates: Vec<(String, String)>,
    /// `(doc, old id, new id)`: after a resync, a known record (same series UID) under a new id.
    pub relinks: Vec<(String, String, String)>,
    /// `(id, doc)`: deleted at Graph; apply `crate::sync::removal` (unlink, tombstone when no
    /// other live link remains) behind the delete guard.
    pub removals: Vec<(String, String)>,
    /// `(id, doc)`: still at Graph but outside the window. Never a delete: keep the link and the
    /// document as they are (the item is matched by id again when it comes back).
    pub out_of_window: Vec<(String, String)>,
}

/// Decides a calendar round. Matching is by Graph id first, then (complete rounds only) by series
/// UID against known records Graph no longer has under their old id.
pub fn plan_calendar(known: &[KnownEvent], changes: &CalendarChanges) -> CalendarPlan {
    let by_id: BTreeMap<&str, &KnownEvent> = known.iter().map(|k| (k.id.as_str(), k)).collect();
    let mut plan = CalendarPlan::default();
    let mut gone: BTreeSet<&str> = changes
        .deleted
        .iter()
        .map(String::as_str)
        .filter(|id| by_id.contains_key(id))
        .collect();
    let mut listed: Vec<(&str, Option<String>)> = Vec::new();
    for (id, raw) in &changes.singles {
        listed.push((
            id,
            raw.get("iCalUId").and_then(Value::as_str).map(series_uid),
        ));
    }
    for (id, change) in &changes.series {
        let uid = change
            .master
            .as_ref()
            .and_then(|m| m.get("iCalUId"))
            .and_then(Value::as_str)
            .map(series_uid);
        if change.master.is_none() && !by_id.contains_key(id.as_str()) {
            continue; // instance news of a series we do not hold and could not fetch
        }
        listed.push((id, uid));
    }
    for (id, uid) in listed {
        if let Some(k) = by_id.get(id) {
            plan.updates.push((id.to_owned(), k.doc.clone()));
            continue;
        }
        let moved = if changes.complete {
            uid.as_deref().and_then(|uid| {
                known
                    .iter()
                    .find(|k| k.uid.as_deref() == Some(uid) && gone.contains(k.id.as_str()))
            })
        } else {
            None
        };
        match moved {
            Some(k) => {
                gone.remove(k.id.as_str());
                plan.relinks
                    .push((k.doc.clone(), k.id.clone(), id.to_owned()));
            }
            None => plan.creates.push(id.to_owned()),
        }
    }
    for id in gone {
        if let Some(k) = by_id.get(id) {
            plan.removals.push((id.to_owned(), k.doc.clone()));
        }
    }
    for id in &changes.left_window {
        if let Some(k) = by_id.get(id.as_str()) {
            plan.out_of_window.push((id.clone(), k.doc.clone()));
        }
    }
    plan
}

// ---------------------------------------------------------------------------------------------
// Contacts round
// ---------------------------------------------------------------------------------------------

/// Everything a contacts round learned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactChanges {
    pub complete: bool,
    pub delta_link: String,
    /// Contacts listed, by id.
    pub changed: BTreeMap<String, Value>,
    /// Known ids removed (reported, or missing from a complete listing).
    pub deleted: Vec<String>,
}

/// One contacts round: a [`DeltaRound`] whose removals need no probe.
#[derive(Debug, Clone)]
pub struct ContactPull {
    round: DeltaRound,
    known: BTreeSet<String>,
}

impl ContactPull {
    pub fn new(
        initial_url: String,
        stored_link: Option<String>,
        known: BTreeSet<String>,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            round: DeltaRound::new(initial_url, stored_link, retry),
            known,
        }
    }

    pub fn start(&self) -> Step<ContactChanges> {
        Step::Send(self.round.start())
    }

    pub fn handle(&mut self, reply: Reply) -> Result<Step<ContactChanges>, SyncError> {
        let result = match self.round.handle(reply)? {
            Step::Done(result) => result,
            Step::Send(out) => return Ok(Step::Send(out)),
        };
        let mut out = ContactChanges {
            complete: result.complete,
            delta_link: result.delta_link,
            ..ContactChanges::default()
        };
        for (id, row) in result.rows {
            match row {
                RowState::Present(raw) => {
                    out.changed.insert(id, raw);
                }
                RowState::Removed { .. } if self.known.contains(&id) => out.deleted.push(id),
                RowState::Removed { .. } => {}
            }
        }
        if out.complete {
            for id in &self.known {
                if !out.changed.contains_key(id) && !out.deleted.contains(id) {
                    out.deleted.push(id.clone());
                }
            }
        }
        Ok(Step::Done(out))
    }
}

/// What a contacts round does to the link table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactPlan {
    pub creates: Vec<String>,
    pub updates: Vec<(String, String)>,
    pub removals: Vec<(String, String)>,
}

/// `known`: linked contact id to document.
pub fn plan_contacts(known: &BTreeMap<String, String>, changes: &ContactChanges) -> ContactPlan {
    let mut plan = ContactPlan::default();
    for id in changes.changed.keys() {
        match known.get(id) {
            Some(doc) => plan.updates.push((id.clone(), doc.clone())),
            None => plan.creates.push(id.clone()),
        }
    }
    for id in &changes.deleted {
        if let Some(doc) = known.get(id) {
            plan.removals.push((id.clone(), doc.clone()));
        }
    }
    plan
}

// ---------------------------------------------------------------------------------------------
// Writes
// ---------------------------------------------------------------------------------------------

/// How a write ended.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// Graph's copy after the write (PATCH / POST answer): store it as the shadow.
    Stored(Value),
    /// Deleted (204, or already gone: 404 on DELETE).
    Deleted,
    /// The item is gone at Graph; the next pull reports it.
    Gone,
    /// After a merge, nothing was left to write.
    NothingToWrite,
    /// An action (meeting response) was accepted; the next pull shows its effect.
    Accepted,
}

/// What the runner does next with a write.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteStep {
    Send(Outgoing),
    /// 412: Graph's copy changed. Merge `current` into the document (as a pull would), re-render
    /// the write against it and call [`WriteJob::rebase`].
    Merge {
        current: Value,
    },
    Done(WriteOutcome),
}

/// One conditional write; see the module doc.
#[derive(Debug, Clone)]
pub struct WriteJob {
    kind: ItemKind,
    op: WriteOp,
    retry: RetryPolicy,
    max_conflicts: u32,
    conflicts: u32,
    throttled: u32,
    refetching: bool,
}

impl WriteJob {
    pub fn new(kind: ItemKind, op: WriteOp, retry: RetryPolicy) -> Self {
        Self {
            kind,
            op,
            retry,
            max_conflicts: 4,
            conflicts: 0,
            throttled: 0,
            refetching: false,
        }
    }

    fn what(&self) -> String {
        match &self.op {
            WriteOp::Patch { id, .. } => format!("PATCH {id}"),
            WriteOp::Delete { id, .. } => format!("DELETE {id}"),
            WriteOp::Create { .. } => "POST (create)".into(),
            WriteOp::Action { id, action, .. } => format!("POST {id}/{action}"),
        }
    }

    fn send(&self, after: Duration) -> WriteStep {
        WriteStep::Send(Outgoing {
            request: Request::Write {
                kind: self.kind,
                op: self.op.clone(),
            },
            after,
        })
    }

    pub fn start(&self) -> WriteStep {
        self.send(Duration::ZERO)
    }

    /// After a [`WriteStep::Merge`]: the re-rendered write (`None`: nothing left to write).
    pub fn rebase(&mut self, op: Option<WriteOp>) -> WriteStep {
        self.refetching = false;
        match op {
            Some(op) => {
                self.op = op;
                self.send(Duration::ZERO)
            }
            None => WriteStep::Done(WriteOutcome::NothingToWrite),
        }
    }

    pub fn handle(&mut self, reply: Reply) -> Result<WriteStep, SyncError> {
        if self.refetching {
            return match reply {
                Reply::Item(current) => Ok(WriteStep::Merge { current }),
                Reply::NotFound => Ok(WriteStep::Done(match self.op {
                    WriteOp::Delete { .. } => WriteOutcome::Deleted,
                    _ => WriteOutcome::Gone,
                })),
                Reply::Throttled { retry_after } => self.throttle(retry_after),
                other => unexpected(format!("re-fetch for {}", self.what()), &other),
            };
        }
        match reply {
            Reply::Item(v) => Ok(WriteStep::Done(WriteOutcome::Stored(v))),
            Reply::Deleted => Ok(WriteStep::Done(WriteOutcome::Deleted)),
            Reply::Accepted => Ok(WriteStep::Done(WriteOutcome::Accepted)),
            Reply::NotFound => Ok(WriteStep::Done(match self.op {
                WriteOp::Delete { .. } => WriteOutcome::Deleted,
                _ => WriteOutcome::Gone,
            })),
            Reply::Conflict => {
                self.conflicts += 1;
                if self.conflicts > self.max_conflicts {
                    return Err(SyncError::Conflicts {
                        what: self.what(),
                        attempts: self.conflicts,
                    });
                }
                let Some(id) = self.op.id() else {
                    return unexpected(self.what(), &Reply::Conflict);
                };
                self.refetching = true;
                self.throttled = 0;
                Ok(WriteStep::Send(Outgoing {
                    request: Request::Item {
                        kind: self.kind,
                        id: id.to_owned(),
                    },
                    after: Duration::ZERO,
                }))
            }
            Reply::Throttled { retry_after } => self.throttle(retry_after),
            other => unexpected(self.what(), &other),
        }
    }

    fn throttle(&mut self, retry_after: Option<Duration>) -> Result<WriteStep, SyncError> {
        self.throttled += 1;
        if self.throttled > self.retry.max_attempts {
            return Err(SyncError::Throttled {
                what: self.what(),
                attempts: self.throttled,
            });
        }
        let after = self.retry.delay(self.throttled - 1, retry_after);
        Ok(if self.refetching {
            match self.op.id() {
                Some(id) => WriteStep::Send(Outgoing {
                    request: Request::Item {
                        kind: self.kind,
                        id: id.to_owned(),
                    },
                    after,
                }),
                None => self.send(after),
            }
        } else {
            self.send(after)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const INITIAL: &str = "https://graph/v1.0/me/calendarView/delta?startDateTime=a&endDateTime=b";

    #[test]
    fn a_window_beyond_chrono_range_does_not_panic() {
        let now = chrono::Utc::now();
        let huge = Duration::from_secs(u64::MAX);
        let _ = Window::around(now, huge, huge);
        let _ = Window::around(now, Duration::from_secs(1 << 62), Duration::ZERO);
    }

    fn retry() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            max_attempts: 2,
            jitter: 0.0,
        }
    }

    fn page(rows: Value, next: Option<&str>, delta: Option<&str>) -> Reply {
        Reply::Page(DeltaPage {
            value: rows.as_array().cloned().unwrap_or_default(),
            next_link: next.map(str::to_owned),
            delta_link: delta.map(str::to_owned),
            extra: Default::default(),
        })
    }

    fn sent<T: std::fmt::Debug>(step: &Step<T>) -> (&Request, Duration) {
        match step {
            Step::Send(Outgoing { request, after }) => (request, *after),
            Step::Done(d) => panic!("expected a request, got Done({d:?})"),
        }
    }

    fn done<T: std::fmt::Debug>(step: Step<T>) -> T {
        match step {
            Step::Done(t) => t,
            Step::Send(o) => panic!("expected Done, got {o:?}"),
        }
    }

    fn url(u: &str) -> Request {
        Request::Page { url: u.into() }
    }

    fn item(id: &str) -> Request {
        Request::Item {
            kind: ItemKind::Event,
            id: id.into(),
        }
    }

    #[test]
    fn rule_instances_missing_from_a_complete_listing_are_deleted_occurrences() {
        let master = json!({
            "id": "M", "type": "seriesMaster", "subject": "Standup",
            "start": {"dateTime": "2026-11-16T08:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-11-16T08:15:00.0000000", "timeZone": "UTC"},
            "recurrence": {
                "pattern": {"type": "daily", "interval": 1},
                "range": {"type": "numbered", "startDate": "2026-11-16", "numberOfOccurrences": 5}
            }
        });
        let occurrence = |day: u32| {
            json!({"id": format!("O{day}"), "type": "occurrence", "seriesMasterId": "M",
                   "start": {"dateTime": format!("2026-11-{day}T08:00:00.0000000"), "timeZone": "UTC"},
                   "end": {"dateTime": format!("2026-11-{day}T08:15:00.0000000"), "timeZone": "UTC"}})
        };
        let mut bundle = EventBundle::single(master);
        bundle.put_instance(occurrence(16));
        bundle.put_instance(occurrence(19));
        // Moved to the afternoon: listed under its original start.
        bundle.put_instance(
            json!({"id": "X17", "type": "exception", "seriesMasterId": "M",
            "subject": "Standup (late)",
            "originalStart": "2026-11-17T08:00:00Z",
            "start": {"dateTime": "2026-11-17T15:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-11-17T15:15:00.0000000", "timeZone": "UTC"}}),
        );
        // The window ends before the 20th: only the 18th is missing inside it.
        let window = Window {
            start: NaiveDateTime::parse_from_str("2026-11-01T00:00:00", "%Y-%m-%dT%H:%M:%S")
                .unwrap(),
            end: NaiveDateTime::parse_from_str("2026-11-20T00:00:00", "%Y-%m-%dT%H:%M:%S").unwrap(),
        };
        assert_eq!(infer_deleted_occurrences(&mut bundle, &window), 1);
        let cancelled: Vec<&str> = bundle.cancelled.keys().map(String::as_str).collect();
        assert_eq!(cancelled, vec!["20261118T080000Z"]);
        // Idempotent, and nothing for a single event.
        assert_eq!(infer_deleted_occurrences(&mut bundle, &window), 0);
        let mut single = EventBundle::single(json!({"id": "S", "subject": "x",
            "start": {"dateTime": "2026-11-16T08:00:00.0000000", "timeZone": "UTC"},
            "end": {"dateTime": "2026-11-16T09:00:00.0000000", "timeZone": "UTC"}}));
        assert_eq!(infer_deleted_occurrences(&mut single, &window), 0);
    }

    #[test]
    fn links_are_followed_verbatim_and_the_last_row_wins() {
        let mut round = DeltaRound::new(INITIAL.into(), None, retry());
        assert_eq!(round.start().request, url(INITIAL));
        let next = "https://graph/v1.0/me/calendarView/delta?$skiptoken=X%3D%3D&odd=1";
        let step = round
            .handle(page(
                json!([{"id": "a", "subject": "1"}, {"id": "b"}]),
                Some(next),
                None,
            ))
            .unwrap();
        assert_eq!(sent(&step).0, &url(next));
        let step = round
            .handle(page(
                json!([{"id": "a", "@removed": {"reason": "deleted"}}, {"id": "b", "subject": "2"}]),
                None,
                Some("DL"),
            ))
            .unwrap();
        let result = done(step);
        assert!(result.complete);
        assert_eq!(result.delta_link, "DL");
        assert_eq!(
            result.rows["a"],
            RowState::Removed {
                reason: Some("deleted".into())
            }
        );
        assert!(matches!(&result.rows["b"], RowState::Present(v) if v["subject"] == "2"));
    }

    #[test]
    fn an_expired_token_restarts_as_a_complete_listing() {
        let mut round = DeltaRound::new(INITIAL.into(), Some("DL1".into()), retry());
        assert_eq!(round.start().request, url("DL1"));
        let step = round
            .handle(page(json!([{"id": "a"}]), Some("NEXT"), None))
            .unwrap();
        assert_eq!(sent(&step).0, &url("NEXT"));
        // The skip token dies mid-round: start over from the initial URL, forgetting page one.
        let step = round.handle(Reply::SyncStateNotFound).unwrap();
        assert_eq!(sent(&step).0, &url(INITIAL));
        assert!(round.restarted());
        let result = done(
            round
                .handle(page(json!([{"id": "z"}]), None, Some("DL2")))
                .unwrap(),
        );
        assert!(result.complete);
        assert_eq!(result.rows.keys().collect::<Vec<_>>(), vec!["z"]);
        // The initial URL itself refused: give up instead of looping.
        let mut fresh = DeltaRound::new(INITIAL.into(), None, retry());
        assert!(matches!(
            fresh.handle(Reply::SyncStateNotFound),
            Err(SyncError::ResyncRejected { .. })
        ));
    }

    #[test]
    fn throttling_waits_for_retry_after_then_gives_up() {
        let mut round = DeltaRound::new(INITIAL.into(), Some("DL".into()), retry());
        let step = round
            .handle(Reply::Throttled {
                retry_after: Some(Duration::from_secs(7)),
            })
            .unwrap();
        assert_eq!(sent(&step), (&url("DL"), Duration::from_secs(7)));
        // Without Retry-After: exponential backoff.
        let step = round
            .handle(Reply::Throttled { retry_after: None })
            .unwrap();
        assert_eq!(sent(&step), (&url("DL"), Duration::from_secs(1)));
        assert!(matches!(
            round.handle(Reply::Throttled { retry_after: None }),
            Err(SyncError::Throttled { attempts: 3, .. })
        ));
        // A page without either link is refused.
        let mut bad = DeltaRound::new(INITIAL.into(), None, retry());
        assert!(matches!(
            bad.handle(page(json!([]), None, None)),
            Err(SyncError::MalformedPage { .. })
        ));
    }

    fn known(id: &str, doc: &str, uid: &str, instances: &[(&str, &str)]) -> KnownEvent {
        KnownEvent {
            id: id.into(),
            doc: doc.into(),
            uid: Some(uid.into()),
            instances: instances
                .iter()
                .map(|(i, k)| ((*i).to_owned(), (*k).to_owned()))
                .collect(),
        }
    }

    fn window() -> Window {
        Window {
            start: chrono::NaiveDate::from_ymd_opt(2026, 11, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .unwrap(),
            end: chrono::NaiveDate::from_ymd_opt(2026, 12, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .unwrap(),
        }
    }

    #[test]
    fn stripped_occurrences_fetch_their_master_and_removals_are_probed() {
        let k = vec![
            known("S1", "doc-s1", "uid-s1", &[]),
            known("S2", "doc-s2", "uid-s2", &[]),
            known("M", "doc-m", "uid-m", &[("M-o17", "20261117T080000Z")]),
        ];
        let mut pull = CalendarPull::new(INITIAL.into(), Some("DL".into()), window(), k, retry());
        assert_eq!(sent(&pull.start()).0, &url("DL"));
        let rows = json!([
            {"id": "M-o16", "type": "occurrence", "seriesMasterId": "M", "start": {}, "end": {}},
            {"id": "S1", "@removed": {"reason": "deleted"}},
            {"id": "S2", "@removed": {"reason": "deleted"}},
            {"id": "M-o17", "@removed": {"reason": "deleted"}},
            {"id": "never-seen", "@removed": {"reason": "deleted"}},
            {"id": "N", "type": "singleInstance", "subject": "new"}
        ]);
        let step = pull.handle(page(rows, None, Some("DL2"))).unwrap();
        assert_eq!(sent(&step).0, &item("M"));
        let step = pull
            .handle(Reply::Item(
                json!({"id": "M", "type": "seriesMaster", "subject": "s"}),
            ))
            .unwrap();
        // Probes in id order; the unknown id is never probed.
        assert_eq!(sent(&step).0, &item("M-o17"));
        let step = pull.handle(Reply::NotFound).unwrap();
        assert_eq!(sent(&step).0, &item("S1"));
        let step = pull.handle(Reply::NotFound).unwrap();
        assert_eq!(sent(&step).0, &item("S2"));
        // S2 still exists: it left the window.
        let changes = done(pull.handle(Reply::Item(json!({"id": "S2"}))).unwrap());
        assert!(!changes.complete);
        assert_eq!(changes.delta_link, "DL2");
        assert_eq!(changes.deleted, vec!["S1"]);
        assert_eq!(changes.left_window, vec!["S2"]);
        assert_eq!(changes.singles.keys().collect::<Vec<_>>(), vec!["N"]);
        let series = &changes.series["M"];
        assert_eq!(series.master.as_ref().unwrap()["subject"], "s");
        assert_eq!(series.instances.len(), 1);
        assert_eq!(series.cancelled, vec!["M-o17"]);

        let plan = plan_calendar(
            &[
                known("S1", "doc-s1", "uid-s1", &[]),
                known("S2", "doc-s2", "uid-s2", &[]),
                known("M", "doc-m", "uid-m", &[]),
            ],
            &changes,
        );
        assert_eq!(plan.creates, vec!["N"]);
        assert_eq!(plan.updates, vec![("M".to_owned(), "doc-m".to_owned())]);
        assert_eq!(plan.removals, vec![("S1".to_owned(), "doc-s1".to_owned())]);
        assert_eq!(
            plan.out_of_window,
            vec![("S2".to_owned(), "doc-s2".to_owned())]
        );
        assert!(plan.relinks.is_empty());
    }

    #[test]
    fn a_resync_merges_by_id_then_uid_without_duplicates() {
        let k = vec![
            known("A", "doc-a", "uid-a", &[]),
            known("B", "doc-b", "uid-b", &[]),
            known(
                "M",
                "doc-m",
                "uid-m",
                &[("M-o1", "20261102T080000Z"), ("M-old", "20261001T080000Z")],
            ),
        ];
        let mut pull = CalendarPull::new(
            INITIAL.into(),
            Some("DL".into()),
            window(),
            k.clone(),
            retry(),
        );
        let step = pull.handle(Reply::SyncStateNotFound).unwrap();
        assert_eq!(sent(&step).0, &url(INITIAL));
        // The full listing: A unchanged, B re-listed under a new id, the series with one instance.
        let rows = json!([
            {"id": "A", "type": "singleInstance", "iCalUId": "uid-a"},
            {"id": "B2", "type": "singleInstance", "iCalUId": "uid-b"},
            {"id": "M-o2", "type": "occurrence", "seriesMasterId": "M"}
        ]);
        let step = pull.handle(page(rows, None, Some("DL3"))).unwrap();
        assert_eq!(sent(&step).0, &item("M"));
        let step = pull
            .handle(Reply::Item(json!({"id": "M", "iCalUId": "uid-m"})))
            .unwrap();
        // B is missing: probe it. M-o1 is missing inside the window: probe. M-old is outside.
        assert_eq!(sent(&step).0, &item("B"));
        let step = pull.handle(Reply::NotFound).unwrap();
        assert_eq!(sent(&step).0, &item("M-o1"));
        let changes = done(pull.handle(Reply::NotFound).unwrap());
        assert!(changes.complete);
        assert_eq!(changes.series["M"].cancelled, vec!["M-o1"]);
        assert_eq!(changes.series["M"].left_window, vec!["M-old"]);
        let plan = plan_calendar(&k, &changes);
        assert_eq!(
            plan.updates,
            vec![
                ("A".to_owned(), "doc-a".to_owned()),
                ("M".to_owned(), "doc-m".to_owned())
            ]
        );
        assert_eq!(
            plan.relinks,
            vec![("doc-b".to_owned(), "B".to_owned(), "B2".to_owned())]
        );
        assert!(plan.creates.is_empty() && plan.removals.is_empty());
    }

    #[test]
    fn an_incremental_round_never_relinks_by_uid() {
        let k = vec![known("B", "doc-b", "uid-b", &[])];
        let changes = CalendarChanges {
            singles: BTreeMap::from([("B2".to_owned(), json!({"iCalUId": "uid-b"}))]),
            deleted: vec!["B".into()],
            ..CalendarChanges::default()
        };
        let plan = plan_calendar(&k, &changes);
        assert_eq!(plan.creates, vec!["B2"]);
        assert_eq!(plan.removals, vec![("B".to_owned(), "doc-b".to_owned())]);
    }

    #[test]
    fn a_deleted_series_needs_no_instance_probes() {
        let k = vec![known(
            "M",
            "doc-m",
            "uid-m",
            &[("M-o1", "20261102T080000Z")],
        )];
        let mut pull = CalendarPull::new(INITIAL.into(), Some("DL".into()), window(), k, retry());
        // A series deleted in Outlook: only its instances are reported, as removed.
        let rows = json!([{"id": "M-o1", "@removed": {"reason": "deleted"}}]);
        let step = pull.handle(page(rows, None, Some("DL2"))).unwrap();
        assert_eq!(sent(&step).0, &item("M"));
        let changes = done(pull.handle(Reply::NotFound).unwrap());
        assert_eq!(changes.deleted, vec!["M"]);
        assert!(changes.series.is_empty());
    }

    #[test]
    fn contacts_rounds_delete_by_report_and_by_omission() {
        let known: BTreeSet<String> = ["c1", "c2", "c3"].iter().map(|s| (*s).to_owned()).collect();
        let mut pull = ContactPull::new("C0".into(), Some("CDL".into()), known.clone(), retry());
        assert_eq!(sent(&pull.start()).0, &url("CDL"));
        let changes = done(
            pull.handle(page(
                json!([{"id": "c1", "givenName": "x"}, {"id": "c2", "@removed": {"reason": "changed"}}, {"id": "c9", "givenName": "n"}]),
                None,
                Some("CDL2"),
            ))
            .unwrap(),
        );
        assert_eq!(changes.deleted, vec!["c2"]);
        let map: BTreeMap<String, String> = known
            .iter()
            .map(|k| (k.clone(), format!("doc-{k}")))
            .collect();
        let plan = plan_contacts(&map, &changes);
        assert_eq!(plan.creates, vec!["c9"]);
        assert_eq!(plan.updates, vec![("c1".to_owned(), "doc-c1".to_owned())]);
        assert_eq!(plan.removals, vec![("c2".to_owned(), "doc-c2".to_owned())]);
        // A complete listing (no stored link) that omits c3 deletes it.
        let mut full = ContactPull::new("C0".into(), None, known, retry());
        let changes = done(
            full.handle(page(
                json!([{"id": "c1"}, {"id": "c2"}]),
                None,
                Some("CDL3"),
            ))
            .unwrap(),
        );
        assert!(changes.complete);
        assert_eq!(changes.deleted, vec!["c3"]);
    }

    #[test]
    fn a_stale_change_key_refetches_merges_and_retries() {
        let patch = |etag: &str, title: &str| WriteOp::Patch {
            id: "E".into(),
            etag: Some(etag.into()),
            body: serde_json::Map::from_iter([("subject".to_owned(), json!(title))]),
        };
        let mut job = WriteJob::new(ItemKind::Event, patch("W/\"1\"", "mine"), retry());
        let WriteStep::Send(first) = job.start() else {
            panic!()
        };
        assert!(matches!(first.request, Request::Write { .. }));
        let step = job.handle(Reply::Conflict).unwrap();
        assert_eq!(
            step,
            WriteStep::Send(Outgoing {
                request: item("E"),
                after: Duration::ZERO
            })
        );
        let theirs =
            json!({"id": "E", "@odata.etag": "W/\"2\"", "location": {"displayName": "moved"}});
        let step = job.handle(Reply::Item(theirs.clone())).unwrap();
        assert_eq!(step, WriteStep::Merge { current: theirs });
        let step = job.rebase(Some(patch("W/\"2\"", "mine")));
        let WriteStep::Send(Outgoing {
            request: Request::Write { op, .. },
            ..
        }) = step
        else {
            panic!("{step:?}")
        };
        assert_eq!(op, patch("W/\"2\"", "mine"));
        let stored = json!({"id": "E", "@odata.etag": "W/\"3\""});
        assert_eq!(
            job.handle(Reply::Item(stored.clone())).unwrap(),
            WriteStep::Done(WriteOutcome::Stored(stored))
        );
        // Nothing left after the merge: done without writing.
        let mut job = WriteJob::new(ItemKind::Event, patch("W/\"1\"", "x"), retry());
        job.handle(Reply::Conflict).unwrap();
        job.handle(Reply::Item(json!({"id": "E"}))).unwrap();
        assert_eq!(
            job.rebase(None),
            WriteStep::Done(WriteOutcome::NothingToWrite)
        );
        // A delete of something already gone is done.
        let mut del = WriteJob::new(
            ItemKind::Event,
            WriteOp::Delete {
                id: "E".into(),
                etag: None,
            },
            retry(),
        );
        assert_eq!(
            del.handle(Reply::NotFound).unwrap(),
            WriteStep::Done(WriteOutcome::Deleted)
        );
    }

    #[test]
    fn endless_conflicts_and_throttles_give_up() {
        let op = WriteOp::Delete {
            id: "E".into(),
            etag: Some("1".into()),
        };
        let mut job = WriteJob::new(ItemKind::Event, op.clone(), retry());
        for _ in 0..4 {
            job.handle(Reply::Conflict).unwrap();
            job.handle(Reply::Item(json!({"id": "E"}))).unwrap();
            job.rebase(Some(op.clone()));
        }
        assert!(matches!(
            job.handle(Reply::Conflict),
            Err(SyncError::Conflicts { .. })
        ));
        let mut job = WriteJob::new(ItemKind::Contact, op, retry());
        let step = job
            .handle(Reply::Throttled {
                retry_after: Some(Duration::from_secs(30)),
            })
            .unwrap();
        assert!(
            matches!(step, WriteStep::Send(Outgoing { after, .. }) if after == Duration::from_secs(30))
        );
        job.handle(Reply::Throttled { retry_after: None }).unwrap();
        assert!(job.handle(Reply::Throttled { retry_after: None }).is_err());
    }

    #[test]
    fn the_window_and_the_first_url() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-19T10:30:15.250Z")
            .unwrap()
            .with_timezone(&Utc);
        let w = Window::around(
            now,
            Duration::from_secs(30 * 86_400),
            Duration::from_secs(365 * 86_400),
        );
        assert_eq!(
            calendar_delta_url("http://fake/v1.0/", &w),
            "http://fake/v1.0/me/calendarView/delta?startDateTime=2026-10-20T10%3A30%3A15Z&endDateTime=2027-11-19T10%3A30%3A15Z"
        );
        assert_eq!(w.contains_key("20261119T000000Z"), Some(true));
        assert_eq!(w.contains_key("20261001"), Some(false));
        assert_eq!(w.contains_key("garbage"), None);
        assert_eq!(
            contacts_delta_url("http://fake/v1.0"),
            "http://fake/v1.0/me/contacts/delta"
        );
        let later = Window::around(
            now + chrono::TimeDelta::hours(20),
            Duration::from_secs(30 * 86_400),
            Duration::from_secs(365 * 86_400),
        );
        let day = Duration::from_secs(86_400);
        assert!(!w.needs_refresh(&later, day));
        let next_week = Window::around(
            now + chrono::TimeDelta::days(7),
            Duration::from_secs(30 * 86_400),
            Duration::from_secs(365 * 86_400),
        );
        assert!(w.needs_refresh(&next_week, day));
        assert!(
            CalendarChanges {
                complete: true,
                ..CalendarChanges::default()
            }
            .is_empty_listing()
        );
        assert!(!CalendarChanges::default().is_empty_listing());
    }
}
