//! Provider bridges (CalDAV / CardDAV / Google Calendar): one task per `[[bridges]]` entry keeps
//! a provider's records and the bridge's workspace in step. What is provider-specific (listing
//! changes, fetching, translating, writing under a precondition) is behind [`provider::Provider`]
//! (`dav`, `google`); everything below is written once here.
//!
//! A round is pull then push:
//! - **Pull**: the provider's changes since the stored cursor (a rejected cursor means a full
//!   listing that merges with the link table), translated, and `driftless_bridges::sync` decides
//!   creates / updates / relinks / removals. A record's change is written into its document as
//!   ONE Automerge change with this process's bridge actor, computed against the shadow (only the
//!   fields the provider changed) at the shadow's heads, and sent through the engine
//!   (`HostInput::LocalChange`). Only once the engine reports it durable is the shadow stored; the
//!   cursor moves last, so a crash replays the page. Updates go in batches (`PULL_BATCH`): their
//!   changes are in flight together (one group commit) and their shadows stored in one commit.
//! - **Push** (the transactional outbox): the engine's `change_log` is appended in the same redb
//!   transaction as every document change, so it is the job queue. Each bridge reads it from its
//!   own cursor and has the provider render every linked document onto the shadow's raw resource,
//!   writing only when it differs: under the shadow's etag on update, at an id derived from the
//!   document id on create (so a retried create adopts its own earlier write), a delete for
//!   tombstones. A failed precondition brings the provider's copy, which is merged into the
//!   document before the write is retried. The cursor moves only after its jobs are done.
//! - A job the provider refuses for that record alone (a 4xx, 507, a document that cannot be
//!   rendered) becomes a **failed job** (`store`, keyed by bridge and document): the cursor moves
//!   on, the other records go through, and the failed one is retried with its own exponential
//!   backoff (jitter, `Retry-After`) until it is written or no longer needs a write.
//! - New provider records: the chosen document id is stored as a pending import before the
//!   document is sent and becomes the link once the document is durable; a round first finishes
//!   pending imports a crash interrupted (adopting the durable document, or recreating it with
//!   the same id), so a record is never imported twice.
//! - Meetings (`meetings`): a new Google/Graph record whose UID another mailbox of the workspace
//!   already imported attaches to that document (a workspace-wide index claimed with the pending
//!   import); pulls and pushes of a meeting copy carry only what its mailbox owns.
//! - Deletes from the provider unlink, and tombstone only when no other live link remains or the
//!   bridge is the record type's delete authority (`[[policies]]`, `field = "deleted"`; for a
//!   meeting, by default the organizer's copy); a
//!   round deleting more than `max_delete_fraction` of the linked records (or an empty complete
//!   listing) applies nothing and waits in `needs_confirmation` for `?confirm_deletes=true`.
//! - Policies: a conflict in a field whose `[[policies]]` authority is a bridge is resolved to
//!   that bridge's value before the document is pushed and after a bridge writes into it; with
//!   `authority = "latest"`, to the newest edit's value (`latest`).
//!
//! - New contacts first go through identity resolution (`identity_import`): one match attaches
//!   to the workspace's existing contact instead of making a document. Before a push, duplicate
//!   email/phone slots are folded (`slot_folding`); provider merges are applied first in a pull
//!   (`merges`).
//! - A bridge syncing several record types (HubSpot `objects`) has one `Runner` per type under
//!   the same bridge id (its `siblings`, run in the same round); each keeps its own store rows
//!   (`store_key`), while documents are always linked under the bridge id (`link_key`).
//!
//! Webhooks are hints: [`Bridges::pull_soon`] asks a bridge for a round soon, coalescing with one
//! already pending; Google's push channels are kept by `google_watch`. Polling goes on regardless.
//!
//! Provider-wide failures (unreachable, 5xx, 429, credentials) back off the whole round
//! exponentially with jitter and honour `Retry-After`; no job is lost.
//! Must not: write a document except through the engine, or hold bridge state outside `store`.

mod dav;
#[cfg(feature = "failpoints")]
pub mod failpoints;
mod google;
pub mod google_watch;
pub mod graph;
mod hubspot;
pub mod hubspot_webhook;
pub mod identity_import;
mod latest;
pub mod meetings;
mod merges;
pub mod policy;
pub mod provider;
pub mod record;
mod salesforce;
mod slot_folding;
pub mod store;
pub mod translate;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use automerge::{ActorId, AutoCommit, ChangeHash};
use driftless_bridges::sync::{self, FetchedMember, JobRetry, Known, Removal};
use driftless_client_protocol::DocumentId;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{BridgeConfig, Policy};
use crate::host::HostInput;
use crate::storage::Storage;
use policy::Policies;
use provider::{DeleteOutcome, Provider, Resource, WriteOutcome};
use record::Record;
use store::{BridgeStore, FailedJob, LinkOp, Shadow};

/// Change-log entries read per outbox step.
const OUTBOX_BATCH: usize = 256;
/// Pulled updates written at once: their document changes are in flight together (so the
/// engine's group commit makes them one fsync) and their links are stored in one commit. Small
/// enough that a client's change queued behind a batch in the engine waits little (S5's S2 p99).
const PULL_BATCH: usize = 64;
/// Retries of a write that keeps meeting 412.
const MAX_412_RETRIES: u32 = 4;
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// A bridge failure, naming the bridge and the record or href.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("bridge {bridge}: {what}")]
    Provider {
        bridge: String,
        what: String,
        retry_after: Option<Duration>,
    },
    /// The provider refused this one record, or the document cannot be rendered for it: the
    /// outbox parks it as a failed job and goes on with the others.
    #[error("bridge {bridge}: {what}")]
    Record {
        bridge: String,
        what: String,
        retry_after: Option<Duration>,
    },
    #[error("bridge {bridge}: {what}")]
    Local { bridge: String, what: String },
}

impl BridgeError {
    pub fn provider(
        bridge: &str,
        what: impl std::fmt::Display,
        retry_after: Option<Duration>,
    ) -> Self {
        Self::Provider {
            bridge: bridge.to_owned(),
            what: what.to_string(),
            retry_after,
        }
    }

    pub fn record(
        bridge: &str,
        what: impl std::fmt::Display,
        retry_after: Option<Duration>,
    ) -> Self {
        Self::Record {
            bridge: bridge.to_owned(),
            what: what.to_string(),
            retry_after,
        }
    }

    pub fn local(bridge: &str, what: impl std::fmt::Display) -> Self {
        Self::Local {
            bridge: bridge.to_owned(),
            what: what.to_string(),
        }
    }
}

/// What `GET /v1/bridges` shows of one bridge.
#[derive(Debug, Clone, Serialize)]
pub struct BridgeStatus {
    pub id: String,
    pub kind: &'static str,
    pub workspace: String,
    /// `idle | syncing | needs_confirmation | error`
    pub state: &'static str,
    pub last_sync_at: Option<String>,
    pub last_error: Option<String>,
    pub linked_records: usize,
    pub outbox_pending: usize,
}

/// Counts of one round (`POST /v1/bridges/{id}/sync`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundReport {
    pub pulled: usize,
    pub pushed: usize,
    pub deleted: usize,
    pub conflicts: usize,
    /// The bridge state after the round (`needs_confirmation` when deletes wait).
    pub state: &'static str,
}

#[derive(Debug, Default)]
struct Shared {
    state: &'static str,
    last_sync_at: Option<String>,
    last_error: Option<String>,
}

enum Command {
    Sync {
        confirm_deletes: bool,
        reply: oneshot::Sender<Result<RoundReport, String>>,
    },
    /// A webhook said something changed: run a round soon. At most one is queued (see
    /// [`Bridges::pull_soon`]).
    PullSoon,
}

/// How long a "pull soon" waits before the round starts, so a burst of notifications arriving
/// together becomes one pull.
const PULL_SOON_DELAY: Duration = Duration::from_millis(300);
/// The earliest a round for a channel renewal follows the previous round.
const RENEW_RETRY: Duration = Duration::from_secs(5);

struct Handle {
    config: BridgeConfig,
    shared: Arc<Mutex<Shared>>,
    commands: mpsc::Sender<Command>,
    /// A `PullSoon` is queued or waiting and its round has not started yet.
    pull_pending: Arc<AtomicBool>,
    /// Push channels (google_calendar bridges with `public_url`).
    google_watch: Option<Arc<google_watch::GoogleWatch>>,
    /// A Graph bridge's subscription state, for `POST /webhooks/graph/{id}`.
    graph_hooks: Option<Arc<graph::GraphHooks>>,
}

/// All configured bridges: what the HTTP API talks to.
pub struct Bridges {
    handles: BTreeMap<String, Handle>,
    policies: Arc<Policies>,
    store: Option<BridgeStore>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    stop: watch::Sender<bool>,
}

impl std::fmt::Debug for Bridges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridges")
            .field("bridges", &self.handles.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn now_rfc3339() -> String {
    crate::auth::rfc3339(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// A pulled update of a linked record: href, its shadow, and (etag, raw body, record).
type PulledUpdate<'a> = (&'a String, &'a Shadow, &'a (Option<String>, String, Record));

/// Splits `items` into consecutive batches of at most `max`, none holding two items of the same
/// document (a later item of a document already in the batch starts the next batch), so each
/// batch can be written concurrently in order.
fn update_batches<T>(items: &[T], doc_of: impl Fn(&T) -> &str, max: usize) -> Vec<&[T]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut docs: HashSet<&str> = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        if i - start >= max.max(1) || !docs.insert(doc_of(item)) {
            batches.push(&items[start..i]);
            start = i;
            docs.clear();
            docs.insert(doc_of(item));
        }
    }
    if start < items.len() {
        batches.push(&items[start..]);
    }
    batches
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Bridges {
    /// No bridges (no `[[bridges]]` entries).
    pub fn none() -> Self {
        Self {
            handles: BTreeMap::new(),
            policies: Arc::new(Policies::default()),
            store: None,
            tasks: Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
        }
    }

    /// Starts one task per configured bridge, applying `policies` (checked here against the
    /// bridges, so a configuration built in code is validated like a file). With `public_url`,
    /// bridges whose provider has push notifications register webhooks under it.
    pub fn start(
        configs: &[BridgeConfig],
        policies: &[Policy],
        storage: &Storage,
        net_tx: mpsc::Sender<HostInput>,
        public_url: Option<&str>,
        phone_region: driftless_crdt_model::identity::PhoneRegion,
    ) -> anyhow::Result<Self> {
        crate::config::validate_policies(policies, configs)?;
        if configs.is_empty() {
            return Ok(Self::none());
        }
        let policies = Arc::new(Policies::new(policies));
        let store = BridgeStore::open(storage.clone())?;
        // Before any bridge task runs, so no first round imports a known meeting anew.
        meetings::backfill_index(&store, configs)?;
        let (stop, stop_rx) = watch::channel(false);
        let mut workspaces: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for config in configs {
            workspaces
                .entry(config.workspace.clone())
                .or_default()
                .push(config.id.clone());
        }
        let identities = Arc::new(identity_import::Identities::new(phone_region, workspaces));
        let mut handles = BTreeMap::new();
        let mut tasks = Vec::new();
        for config in configs {
            // One runner per record type the bridge syncs (HubSpot: per object type).
            let mut parts = match config.kind {
                crate::config::BridgeKind::HubSpot => hubspot::runner_parts(config, &store)?,
                crate::config::BridgeKind::Salesforce => vec![(
                    salesforce::record_type(config),
                    config.id.clone(),
                    Provider::new(config)?,
                )],
                kind => vec![(kind.into(), config.id.clone(), Provider::new(config)?)],
            };
            if parts.is_empty() {
                anyhow::bail!("bridge {}: no object types to sync", config.id);
            }
            let (record_type, store_key, provider) = parts.remove(0);
            // A fresh actor per process start: never reused after a crash.
            let actor = ActorId::random();
            store.register_actor(actor.to_bytes(), &config.id)?;
            let shared = Arc::new(Mutex::new(Shared {
                state: "idle",
                ..Shared::default()
            }));
            let (commands, commands_rx) = mpsc::channel(16);
            let pull_pending = Arc::new(AtomicBool::new(false));
            let google_watch = match (&provider, public_url) {
                (Provider::Google(_), Some(url)) => Some(Arc::new(
                    google_watch::GoogleWatch::load(
                        &config.id,
                        url,
                        config.poll_interval,
                        store.clone(),
                    )
                    .map_err(|e| anyhow::anyhow!("{e}"))?,
                )),
                _ => None,
            };
            let graph_hooks = match &provider {
                Provider::Graph(p) => {
                    let hooks = p.hooks();
                    hooks
                        .load(&config.id, store.clone())
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    Some(hooks)
                }
                _ => None,
            };
            let runner = Runner {
                pull_pending: pull_pending.clone(),
                google_watch: google_watch.clone(),
                config: config.clone(),
                provider,
                store: store.clone(),
                net_tx: net_tx.clone(),
                actor,
                shared: shared.clone(),
                policies: policies.clone(),
                identities: identities.clone(),
                record_type,
                store_key,
                siblings: Vec::new(),
            };
            let mut runner = runner;
            for (record_type, store_key, provider) in parts {
                let actor = ActorId::random();
                store.register_actor(actor.to_bytes(), &config.id)?;
                runner.siblings.push(Runner {
                    pull_pending: runner.pull_pending.clone(),
                    google_watch: None,
                    config: config.clone(),
                    provider,
                    store: store.clone(),
                    net_tx: net_tx.clone(),
                    actor,
                    shared: shared.clone(),
                    policies: policies.clone(),
                    identities: identities.clone(),
                    record_type,
                    store_key,
                    siblings: Vec::new(),
                });
            }
            tasks.push(tokio::spawn(runner.run(commands_rx, stop_rx.clone())));
            info!(bridge = %config.id, kind = config.kind.as_str(), url = %config.url, "bridge started");
            handles.insert(
                config.id.clone(),
                Handle {
                    config: config.clone(),
                    shared,
                    commands,
                    pull_pending,
                    google_watch,
                    graph_hooks,
                },
            );
        }
        Ok(Self {
            handles,
            policies,
            store: Some(store),
            tasks: Mutex::new(tasks),
            stop,
        })
    }

    /// Stops every bridge task and waits for them (a round in progress is abandoned at its next
    /// await; everything it did not commit is redone after restart). A task first stops its
    /// push channels, within a bounded time.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = match self.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(p) => p.into_inner().drain(..).collect(),
        };
        for mut task in tasks {
            let grace = google_watch::STOP_TIMEOUT + Duration::from_secs(1);
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Asks bridge `id` for a round soon (a webhook's hint). Coalesces: while one is pending
    /// and its round has not started, further calls add nothing. False if there is no such
    /// running bridge.
    pub fn pull_soon(&self, id: &str) -> bool {
        let Some(handle) = self.handles.get(id) else {
            return false;
        };
        if handle.pull_pending.swap(true, Ordering::SeqCst) {
            return true;
        }
        match handle.commands.try_send(Command::PullSoon) {
            Ok(()) => true,
            // Commands are queued already; each runs a round that starts after this call.
            Err(mpsc::error::TrySendError::Full(_)) => {
                handle.pull_pending.store(false, Ordering::SeqCst);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                handle.pull_pending.store(false, Ordering::SeqCst);
                false
            }
        }
    }

    /// The push channels of bridge `id`, when it is a google_calendar bridge with webhooks.
    pub fn google_watch(&self, id: &str) -> Option<Arc<google_watch::GoogleWatch>> {
        self.handles.get(id)?.google_watch.clone()
    }

    /// Which bridge wrote with `actor`, if any.
    pub fn actor_sources(&self) -> BTreeMap<Vec<u8>, String> {
        self.store
            .as_ref()
            .and_then(|s| s.actor_sources().ok())
            .unwrap_or_default()
    }

    /// The configured `[[policies]]`.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Statuses of the bridges of `workspace`. `outbox_pending` counts the documents changed
    /// since the outbox cursor plus the failed jobs; without a round error, `last_error` is the
    /// latest failed job's (naming its document and href).
    pub fn statuses(&self, workspace: &str) -> Vec<BridgeStatus> {
        let mut out = Vec::new();
        for (id, handle) in &self.handles {
            if handle.config.workspace != workspace {
                continue;
            }
            let (linked_records, outbox_pending, failed_error) = match &self.store {
                Some(store) => {
                    let failed = store.failed_jobs(id).unwrap_or_default();
                    let mut pending: HashSet<String> = store
                        .outbox_cursor(id)
                        .ok()
                        .and_then(|c| store.storage().changes_after(c, 100_000).ok())
                        .map(|c| c.into_iter().map(|(_, doc)| doc.to_string()).collect())
                        .unwrap_or_default();
                    pending.extend(failed.keys().cloned());
                    let failed_error = failed
                        .values()
                        .max_by_key(|j| j.failed_at_ms)
                        .map(|j| format!("bridge {id}: {}", j.last_error));
                    (
                        store.links(id).map(|l| l.len()).unwrap_or(0),
                        pending.len(),
                        failed_error,
                    )
                }
                None => (0, 0, None),
            };
            let shared = lock(&handle.shared);
            out.push(BridgeStatus {
                id: id.clone(),
                kind: handle.config.kind.as_str(),
                workspace: handle.config.workspace.clone(),
                state: shared.state,
                last_sync_at: shared.last_sync_at.clone(),
                last_error: shared.last_error.clone().or(failed_error),
                linked_records,
                outbox_pending,
            });
        }
        out
    }

    /// The workspace of bridge `id`, if configured.
    pub fn workspace(&self, id: &str) -> Option<&str> {
        self.handles.get(id).map(|h| h.config.workspace.as_str())
    }

    /// Runs one complete round of bridge `id` that starts after this call.
    pub async fn sync(&self, id: &str, confirm_deletes: bool) -> Result<RoundReport, String> {
        let handle = self
            .handles
            .get(id)
            .ok_or_else(|| format!("no bridge {id}"))?;
        let (reply, answer) = oneshot::channel();
        handle
            .commands
            .send(Command::Sync {
                confirm_deletes,
                reply,
            })
            .await
            .map_err(|_| format!("bridge {id} has stopped"))?;
        answer
            .await
            .map_err(|_| format!("bridge {id} stopped during the round"))?
    }
}

struct Runner {
    config: BridgeConfig,
    provider: Provider,
    pull_pending: Arc<AtomicBool>,
    google_watch: Option<Arc<google_watch::GoogleWatch>>,
    store: BridgeStore,
    net_tx: mpsc::Sender<HostInput>,
    actor: ActorId,
    shared: Arc<Mutex<Shared>>,
    policies: Arc<Policies>,
    identities: Arc<identity_import::Identities>,
    /// What this runner syncs: the bridge kind's record type, or a HubSpot object type's.
    record_type: record::RecordType,
    /// The key of this runner's rows in the bridge store (links, cursors, failed jobs): the
    /// bridge id, or `{id}/{object}` for a HubSpot bridge's further object types.
    store_key: String,
    /// Runners of the same bridge for its further object types, run after this one in each
    /// round (see `hubspot::object_runners`).
    siblings: Vec<Runner>,
}

impl Runner {
    /// This runner's store key (the bridge id, or `{id}/{object}`), also used in logs and errors.
    fn id(&self) -> &str {
        &self.store_key
    }

    /// The key of this bridge's links in documents: always the bridge id (contracts).
    fn link_key(&self) -> &str {
        &self.config.id
    }

    fn local(&self, what: impl std::fmt::Display) -> BridgeError {
        BridgeError::local(self.id(), what)
    }

    fn record_err(
        &self,
        what: impl std::fmt::Display,
        retry_after: Option<Duration>,
    ) -> BridgeError {
        BridgeError::record(self.id(), what, retry_after)
    }

    async fn run(self, mut commands: mpsc::Receiver<Command>, mut stop: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        let mut next = tokio::time::Instant::now();
        let mut last_round = tokio::time::Instant::now();
        loop {
            // A push channel due for renewal wakes the task earlier than the poll interval.
            // A renewal that failed is retried no sooner than RENEW_RETRY after the last round.
            let wake = match self.google_watch.as_ref().and_then(|w| w.renewal_at_ms()) {
                Some(at) => next.min(
                    (tokio::time::Instant::now()
                        + Duration::from_millis(at.saturating_sub(unix_ms())))
                    .max(last_round + RENEW_RETRY),
                ),
                None => next,
            };
            let (confirm, reply) = tokio::select! {
                _ = stop.changed() => return self.stop_channels().await,
                cmd = commands.recv() => match cmd {
                    Some(Command::Sync { confirm_deletes, reply }) => (confirm_deletes, Some(reply)),
                    Some(Command::PullSoon) if failures > 0 => {
                        // While failing, the backoff decides: a webhook storm must not undo it.
                        self.pull_pending.store(false, Ordering::SeqCst);
                        continue;
                    }
                    Some(Command::PullSoon) => {
                        // Let the rest of a burst arrive; it joins this pending pull.
                        tokio::select! {
                            _ = stop.changed() => return self.stop_channels().await,
                            () = tokio::time::sleep(PULL_SOON_DELAY) => {}
                        }
                        (false, None)
                    }
                    None => return,
                },
                () = tokio::time::sleep_until(wake) => (false, None),
            };
            // A notification from now on asks for another round (this one may list too early).
            self.pull_pending.store(false, Ordering::SeqCst);
            lock(&self.shared).state = "syncing";
            let result = tokio::select! {
                result = self.round_and_channels(confirm) => result,
                _ = stop.changed() => return self.stop_channels().await,
            };
            let delay = {
                let mut shared = lock(&self.shared);
                match &result {
                    Ok(report) => {
                        failures = 0;
                        shared.state = report.state;
                        shared.last_sync_at = Some(now_rfc3339());
                        if report.state != "error" {
                            shared.last_error = None;
                        }
                        self.config.poll_interval
                    }
                    Err(e) => {
                        warn!(bridge = %self.id(), error = %e, attempt = failures, "bridge round failed; backing off");
                        shared.state = "error";
                        shared.last_error = Some(e.to_string());
                        let retry_after = match e {
                            BridgeError::Provider { retry_after, .. }
                            | BridgeError::Record { retry_after, .. } => *retry_after,
                            BridgeError::Local { .. } => None,
                        };
                        let delay = sync::backoff(
                            failures,
                            BACKOFF_BASE,
                            BACKOFF_MAX.min(self.config.poll_interval.max(BACKOFF_BASE)),
                            retry_after,
                            rand::random::<f64>(),
                        );
                        failures = failures.saturating_add(1);
                        delay
                    }
                }
            };
            last_round = tokio::time::Instant::now();
            next = last_round
                .checked_add(delay)
                .unwrap_or(last_round + BACKOFF_MAX);
            if let Some(reply) = reply {
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
        }
    }

    /// A round, then (after a successful one) the push channels' upkeep.
    async fn round_and_channels(&self, confirm_deletes: bool) -> Result<RoundReport, BridgeError> {
        let result = self.round(confirm_deletes).await;
        if result.is_ok()
            && let (Some(watch), Provider::Google(google)) = (&self.google_watch, &self.provider)
        {
            watch.maintain(google).await;
        }
        result
    }

    /// On shutdown: stops the push channels, where the provider has them.
    async fn stop_channels(&self) {
        if let (Some(watch), Provider::Google(google)) = (&self.google_watch, &self.provider) {
            watch.stop_all(google).await;
        }
    }

    /// One round of this runner and then of its siblings (the bridge's further record types).
    async fn round(&self, confirm_deletes: bool) -> Result<RoundReport, BridgeError> {
        let mut report = RoundReport {
            state: "idle",
            ..RoundReport::default()
        };
        for runner in std::iter::once(self).chain(&self.siblings) {
            runner.round_of_type(confirm_deletes, &mut report).await?;
        }
        Ok(report)
    }

    async fn round_of_type(
        &self,
        confirm_deletes: bool,
        report: &mut RoundReport,
    ) -> Result<(), BridgeError> {
        self.finish_pending_imports().await?;
        self.follow_merges()?;
        self.pull(confirm_deletes, report).await?;
        self.push(report).await
    }

    // ---------------------------------------------------------------------------------------
    // Documents through the engine

    /// The stored document, loaded once straight from its chunks (not through `load_stored`'s
    /// `Automerge`, which would cost a second load and a save: S5 profile, docs/benchmarks.md).
    fn load(&self, doc: &DocumentId) -> Result<Option<AutoCommit>, BridgeError> {
        let storage = self.store.storage();
        let Some(chunks) = storage.load(doc).map_err(|e| self.local(e))? else {
            return Ok(None);
        };
        let workspace = storage.workspace(doc).map_err(|e| self.local(e))?;
        let workspace = workspace
            .as_deref()
            .unwrap_or(driftless_client_protocol::engine::DEFAULT_WORKSPACE);
        if workspace != self.config.workspace {
            return Ok(None);
        }
        let corrupt = |e: automerge::AutomergeError| self.local(format!("document {doc}: {e}"));
        let mut chunks = chunks.into_iter();
        let first = chunks.next().unwrap_or_default();
        let mut am = AutoCommit::load(&first).map_err(corrupt)?;
        let rest: Vec<u8> = chunks.flatten().collect();
        if !rest.is_empty() {
            am.load_incremental(&rest).map_err(corrupt)?;
        }
        am.set_actor(self.actor.clone());
        Ok(Some(am))
    }

    /// Sends changes to the engine and waits until they are durable.
    async fn send(&self, doc: &DocumentId, changes: Vec<u8>) -> Result<(), BridgeError> {
        let (reply, answer) = oneshot::channel();
        self.net_tx
            .send(HostInput::LocalChange {
                doc: doc.clone(),
                workspace: self.config.workspace.clone(),
                changes,
                reply,
            })
            .await
            .map_err(|_| self.local("the engine has stopped"))?;
        answer
            .await
            .map_err(|_| {
                self.local(format!(
                    "document {doc}: the engine stopped before the change was durable"
                ))
            })?
            .map_err(|e| self.local(format!("document {doc}: change refused: {e}")))?;
        Ok(())
    }

    /// Commits `old -> new` at `heads` into the stored document and sends it. Returns the new
    /// change's hash (None: nothing differed) and the number of conflicting fields afterwards.
    async fn write_diff(
        &self,
        doc_id: &DocumentId,
        heads: &[ChangeHash],
        old: &Record,
        new: &Record,
        message: &str,
    ) -> Result<(Option<ChangeHash>, usize), BridgeError> {
        let Some(mut am) = self.load(doc_id)? else {
            return Err(self.local(format!("document {doc_id} is missing from storage")));
        };
        let before = am.get_heads();
        let heads: Vec<ChangeHash> = if heads.is_empty() {
            before.clone()
        } else {
            heads.to_vec()
        };
        let hash = Record::commit_diff_at(&mut am, &heads, old, new, message)
            .map_err(|e| self.local(format!("document {doc_id}: {e}")))?;
        if hash.is_none() {
            return Ok((None, 0));
        }
        let conflicts = driftless_crdt_model::field_conflicts(&am, |_| String::new())
            .map(|c| c.len())
            .unwrap_or(0);
        let changes = am.save_after(&before);
        self.send(doc_id, changes).await?;
        Ok((hash, conflicts))
    }

    /// Writes the authority's value into every conflict of the document that a `[[policies]]`
    /// bridge decides (where Automerge picked another value), so every replica and provider
    /// reads it. Returns whether it wrote.
    async fn resolve_by_policy(&self, doc_id: &DocumentId) -> Result<bool, BridgeError> {
        let record_type = Record::type_name(self.record_type);
        if !self.policies.has_authority_for(record_type)
            && !self.policies.has_latest_for(record_type)
        {
            return Ok(false);
        }
        let Some(am) = self.load(doc_id)? else {
            return Ok(false);
        };
        if driftless_crdt_model::record_type(&am).as_deref() != Some(record_type)
            || !self.linked_here(&am)
        {
            return Ok(false);
        }
        let sources = self.store.actor_sources().map_err(|e| self.local(e))?;
        let Ok(conflicts) = driftless_crdt_model::field_conflicts(&am, |actor| {
            sources
                .get(actor.to_bytes())
                .cloned()
                .unwrap_or_else(|| "app".to_owned())
        }) else {
            return Ok(false);
        };
        let mut resolutions = self.policies.resolutions(record_type, &conflicts);
        resolutions.extend(self.latest_resolutions(record_type, doc_id, &am, &conflicts)?);
        if resolutions.is_empty() {
            return Ok(false);
        }
        // Unreadable: the push reports it as this record's failure.
        let Ok(current) = Record::read(self.record_type, &am) else {
            return Ok(false);
        };
        let mut json = current.to_json();
        for (path, value) in &resolutions {
            policy::set_dotted(&mut json, path, value.clone());
        }
        let resolved = Record::from_json(self.record_type, json)
            .map_err(|e| self.record_err(format!("resolving by policy: {e}"), None))?;
        let fields: Vec<&str> = resolutions.iter().map(|(f, _)| f.as_str()).collect();
        let (hash, _) = self
            .write_diff(
                doc_id,
                &[],
                &current,
                &resolved,
                &format!(
                    "bridge {}: policy authority for {}",
                    self.id(),
                    fields.join(", ")
                ),
            )
            .await?;
        if hash.is_some() {
            info!(bridge = %self.id(), doc = %doc_id, fields = ?fields, "conflict resolved by policy");
        }
        Ok(hash.is_some())
    }

    fn parse_doc_id(&self, doc: &str) -> Result<DocumentId, BridgeError> {
        doc.parse().map_err(|e| {
            self.local(format!(
                "stored link names an invalid document {doc:?}: {e}"
            ))
        })
    }

    fn shadow_record(&self, shadow: &Shadow) -> Result<Record, BridgeError> {
        Record::from_json(self.record_type, shadow.canonical.clone())
            .map_err(|e| self.local(format!("shadow of document {}: {e}", shadow.doc)))
    }

    // ---------------------------------------------------------------------------------------
    // Pull

    async fn pull(
        &self,
        confirm_deletes: bool,
        report: &mut RoundReport,
    ) -> Result<(), BridgeError> {
        let id = self.id().to_owned();
        let mut links = self.store.links(&id).map_err(|e| self.local(e))?;
        let token = self.store.sync_token(&id).map_err(|e| self.local(e))?;
        let changes = self.provider.changes(token.as_deref(), &links).await?;
        if self.apply_provider_merges(&changes.merges).await? {
            links = self.store.links(&id).map_err(|e| self.local(e))?;
        }
        for (record, problem) in &changes.problems {
            warn!(bridge = %id, record = %record, error = %problem, "provider record not understood; skipped until it changes");
            lock(&self.shared).last_error = Some(format!("bridge {id}: {record}: {problem}"));
        }
        let (listed, removed, complete) = (&changes.listed, &changes.removed, changes.complete);
        let known: Vec<Known> = store::known(&links);

        // Translate what changed.
        let mut bodies: BTreeMap<String, (Option<String>, String, Record)> = BTreeMap::new();
        for (n, resource) in changes.changed.into_iter().enumerate() {
            if n % 16 == 15 {
                // A big page is a lot of translating without an await (S5).
                tokio::task::yield_now().await;
            }
            let Resource {
                id: href,
                etag,
                raw,
            } = resource;
            let existing = match links.get(&href) {
                Some(s) => Some(self.shadow_record(s)?),
                None => None,
            };
            match self.provider.translate(&raw, existing.as_ref()) {
                Ok(record) => {
                    bodies.insert(href, (etag, raw, record.provider_view()));
                }
                Err(e) => {
                    warn!(bridge = %id, %href, error = %e, "provider resource not understood; skipped until it changes");
                    lock(&self.shared).last_error = Some(format!("bridge {id}: {href}: {e}"));
                }
            }
        }
        let fetched: Vec<FetchedMember> = bodies
            .iter()
            .map(|(href, (_, body, _))| FetchedMember {
                href: href.clone(),
                uid: self.provider.uid(body),
            })
            .collect();
        let plan = sync::plan_pull(&known, listed, &fetched, removed, complete);

        for href in &plan.creates {
            if let Some((etag, body, record)) = bodies.get(href) {
                if self.is_own_pending_create(href)? {
                    // Our own create whose answer was lost (crash, dropped connection): the
                    // push adopts it (`If-None-Match: *` meets 412); importing it would make a
                    // second document.
                    continue;
                }
                self.import_new(href, etag.clone(), body, record).await?;
                report.pulled += 1;
                tokio::task::yield_now().await;
            }
        }
        let updates: Vec<_> = plan
            .updates
            .iter()
            .filter_map(|(href, _)| Some((href, links.get(href)?, bodies.get(href)?)))
            .collect();
        for batch in update_batches(&updates, |(_, shadow, _)| shadow.doc.as_str(), PULL_BATCH) {
            self.import_changes(batch, report).await?;
        }
        for (_, old, new) in &plan.relinks {
            if let (Some(shadow), Some((etag, body, record))) = (links.get(old), bodies.get(new)) {
                report.conflicts += self
                    .import_change(old, new, shadow, etag.clone(), body, record)
                    .await?;
                report.pulled += 1;
            }
        }

        let guard = sync::check_deletes(
            plan.removals.len(),
            links.len(),
            complete && listed.is_empty(),
            self.config.max_delete_fraction,
            confirm_deletes,
        );
        if let Some(needs) = guard {
            warn!(
                bridge = %id,
                removals = needs.removals,
                linked = needs.linked,
                "round would delete too many records; nothing deleted until confirmed \
                 (POST /v1/bridges/{id}/sync?confirm_deletes=true)"
            );
            report.state = "needs_confirmation";
            // The token stays, so the same deletes come back until they are confirmed.
            return Ok(());
        }
        for (href, doc) in &plan.removals {
            self.import_removal(href, doc).await?;
            report.deleted += 1;
        }
        self.store
            .commit(&id, &[], Some(Some(&changes.next_token)), None)
            .map_err(|e| self.local(e))?;
        Ok(())
    }

    /// A test-armed fault point ([`failpoints`]): fails the round here as a crash would.
    fn failpoint(&self, point: &str) -> Result<(), BridgeError> {
        #[cfg(feature = "failpoints")]
        if failpoints::fire(self.id(), point) {
            return Err(self.local(format!("failpoint {point}")));
        }
        let _ = point;
        Ok(())
    }

    /// A new provider record becomes a new document, unless it is a contact the workspace already
    /// holds (see `identity_import`). The pending import (with the chosen document id) is durable
    /// before the document is sent, so a crash at any point is finished by
    /// [`Runner::finish_pending_imports`] instead of importing the record a second time.
    async fn import_new(
        &self,
        href: &str,
        etag: Option<String>,
        body: &str,
        record: &Record,
    ) -> Result<(), BridgeError> {
        // Held until the new document is durable, so no other bridge decides meanwhile.
        let _identity_claim = match self
            .resolve_identity(href, etag.clone(), body, record)
            .await?
        {
            identity_import::IdentityOutcome::Attached => return Ok(()),
            identity_import::IdentityOutcome::New(claim) => claim,
        };
        let doc_id = DocumentId::from_bytes(uuid::Uuid::new_v4().as_bytes());
        let role = self.copy_role(body).await?;
        let (hash, changes) = self.new_document(href, record, role.as_ref())?;
        let shadow = Shadow {
            doc: doc_id.to_string(),
            etag,
            raw: body.to_owned(),
            canonical: record.to_json(),
            heads: hash.iter().map(ToString::to_string).collect(),
            uid: self.provider.uid(body),
        };
        // One meeting, one document: another mailbox's copy may already have it.
        let imported = self
            .claim_meeting_or_attach(href, &shadow, record, role.as_ref())
            .await?;
        if imported == meetings::Imported::Attached {
            return Ok(());
        }
        self.failpoint("import.before_send")?;
        self.send(&doc_id, changes).await?;
        self.failpoint("import.after_send")?;
        self.store
            .finish_import(self.id(), href, &shadow)
            .map_err(|e| self.local(e))?;
        info!(bridge = %self.id(), %href, doc = %doc_id, "imported a new provider record");
        Ok(())
    }

    /// The changes creating a document for `record` linked to `href`, and their hash.
    fn new_document(
        &self,
        href: &str,
        record: &Record,
        role: Option<&meetings::CopyRole>,
    ) -> Result<(Option<ChangeHash>, Vec<u8>), BridgeError> {
        let mut with_link = record.clone();
        with_link
            .links_mut()
            .insert(self.link_key().to_owned(), meetings::link_entry(href, role));
        let mut am = AutoCommit::new().with_actor(self.actor.clone());
        with_link
            .create(&mut am)
            .map_err(|e| self.local(format!("{href}: {e}")))?;
        let hash = am.commit_with(
            automerge::transaction::CommitOptions::default()
                .with_message(format!("bridge {}: import {href}", self.id())),
        );
        Ok((hash, am.save()))
    }

    /// Finishes the imports a crash interrupted: a pending import whose document is durable
    /// becomes its link; one whose document never arrived is created again under the same id.
    async fn finish_pending_imports(&self) -> Result<(), BridgeError> {
        let pending = self
            .store
            .pending_imports(self.id())
            .map_err(|e| self.local(e))?;
        for (href, mut shadow) in pending {
            let doc_id = self.parse_doc_id(&shadow.doc)?;
            if self.load(&doc_id)?.is_some() {
                info!(bridge = %self.id(), %href, doc = %doc_id, "adopting an interrupted import's document");
            } else {
                let record = self.shadow_record(&shadow)?;
                let role = self.copy_role(&shadow.raw).await?;
                let (hash, changes) = self.new_document(&href, &record, role.as_ref())?;
                self.send(&doc_id, changes).await?;
                shadow.heads = hash.iter().map(ToString::to_string).collect();
                info!(bridge = %self.id(), %href, doc = %doc_id, "recreated an interrupted import's document");
            }
            self.store
                .finish_import(self.id(), &href, &shadow)
                .map_err(|e| self.local(e))?;
        }
        Ok(())
    }

    /// `old` (the shadow) with every top-level field that document `doc_id` already holds with
    /// the provider's value taken from `new`, so the import does not write it again: our own
    /// write whose answer was lost (or the same edit made on both sides) would otherwise come
    /// back as a concurrent write of an equal value, listed as a conflict (or, in a text field,
    /// its splices applied twice).
    fn settled(
        &self,
        doc_id: &DocumentId,
        old: Record,
        new: &Record,
    ) -> Result<Record, BridgeError> {
        let Some(current) = self
            .load(doc_id)?
            .and_then(|am| Record::read(self.record_type, &am).ok())
        else {
            return Ok(old);
        };
        let (mut settled, new, current) = (
            old.to_json(),
            new.to_json(),
            current.provider_view().to_json(),
        );
        if let (Some(o), Some(n), Some(c)) = (
            settled.as_object_mut(),
            new.as_object(),
            current.as_object(),
        ) {
            let keys: Vec<String> = o.keys().chain(n.keys()).cloned().collect();
            for key in keys {
                if n.get(&key) == c.get(&key) {
                    match n.get(&key) {
                        Some(v) => o.insert(key, v.clone()),
                        None => o.remove(&key),
                    };
                }
            }
        }
        Record::from_json(self.record_type, settled)
            .map_err(|e| self.local(format!("document {doc_id}: settling the shadow: {e}")))
    }

    /// Known records changed at the provider, each of a different document: their changes are
    /// written concurrently and their links stored in one commit once every document is durable.
    async fn import_changes(
        &self,
        batch: &[PulledUpdate<'_>],
        report: &mut RoundReport,
    ) -> Result<(), BridgeError> {
        let written = futures::future::try_join_all(batch.iter().map(
            |(href, shadow, (etag, body, record))| {
                self.import_change_ops(href, href, shadow, etag.clone(), body, record)
            },
        ))
        .await?;
        let mut ops = Vec::with_capacity(written.len());
        for (conflicts, mut link_ops) in written {
            report.conflicts += conflicts;
            report.pulled += 1;
            ops.append(&mut link_ops);
        }
        self.store
            .commit(self.id(), &ops, None, None)
            .map_err(|e| self.local(e))
    }

    /// A known record changed at the provider (possibly moved from `old_href` to `href`): write
    /// the fields it changed since the shadow. Returns the conflicts in the document afterwards.
    async fn import_change(
        &self,
        old_href: &str,
        href: &str,
        shadow: &Shadow,
        etag: Option<String>,
        body: &str,
        record: &Record,
    ) -> Result<usize, BridgeError> {
        let (conflicts, ops) = self
            .import_change_ops(old_href, href, shadow, etag, body, record)
            .await?;
        self.store
            .commit(self.id(), &ops, None, None)
            .map_err(|e| self.local(e))?;
        Ok(conflicts)
    }

    /// [`Runner::import_change`] up to the document being durable: returns the conflicts and the
    /// link operations still to be stored.
    async fn import_change_ops(
        &self,
        old_href: &str,
        href: &str,
        shadow: &Shadow,
        etag: Option<String>,
        body: &str,
        record: &Record,
    ) -> Result<(usize, Vec<LinkOp>), BridgeError> {
        // Loading and diffing a document is CPU work without an await: yield first, so the
        // connections' tasks (and, in a batch, `FuturesOrdered`'s yield) interleave with it.
        tokio::task::yield_now().await;
        let doc_id = self.parse_doc_id(&shadow.doc)?;
        let old = self.settled(&doc_id, self.shadow_record(shadow)?, record)?;
        let mut heads = shadow.change_heads();
        let mut conflicts = 0;
        // A meeting copy writes only what it owns (the organizer's: shared fields).
        let target = self
            .meeting_contribution(&doc_id, &old, record, body)
            .await?;
        if old != target {
            let (hash, c) = self
                .write_diff(
                    &doc_id,
                    &heads,
                    &old,
                    &target,
                    &format!("bridge {}: {href}", self.id()),
                )
                .await?;
            conflicts = c;
            if let Some(hash) = hash {
                self.record_change_time(&doc_id, hash, body);
                heads = vec![hash];
            }
        }
        let mut ops = Vec::new();
        if old_href != href {
            ops.push(LinkOp::Remove {
                href: old_href.to_owned(),
            });
            // The document's link follows the record.
            if let Some(am) = self.load(&doc_id)?
                && let Ok(current) = Record::read(self.record_type, &am)
            {
                let mut moved = current.clone();
                if let Some(link) = moved.links_mut().get_mut(self.link_key()) {
                    link.id = href.to_owned();
                }
                self.write_diff(&doc_id, &[], &current, &moved, "relink")
                    .await?;
            }
        }
        ops.push(LinkOp::Put {
            href: href.to_owned(),
            shadow: Box::new(Shadow {
                doc: shadow.doc.clone(),
                etag,
                raw: body.to_owned(),
                canonical: record.to_json(),
                heads: heads.iter().map(ToString::to_string).collect(),
                uid: self.provider.uid(body),
            }),
        });
        Ok((conflicts, ops))
    }

    /// The provider deleted `href`: unlink, and tombstone when no other live link remains.
    async fn import_removal(&self, href: &str, doc: &str) -> Result<(), BridgeError> {
        let doc_id = self.parse_doc_id(doc)?;
        if let Some(am) = self.load(&doc_id)?
            && let Ok(current) = Record::read(self.record_type, &am)
        {
            let mut next = current.clone();
            let others = current
                .links()
                .iter()
                .filter(|(b, l)| b.as_str() != self.link_key() && !l.removed)
                .count();
            if let Some(link) = next.links_mut().get_mut(self.link_key()) {
                link.removed = true;
            }
            let authority = self.meeting_delete_authority(&current);
            let outcome = sync::removal(others, authority);
            if outcome == Removal::Tombstone && !current.deleted() {
                next.tombstone(now_rfc3339());
            }
            self.write_diff(
                &doc_id,
                &[],
                &current,
                &next,
                &format!("bridge {}: {href} deleted", self.id()),
            )
            .await?;
            info!(bridge = %self.id(), %href, doc = %doc_id, outcome = ?outcome, "provider deleted a record");
        }
        self.store
            .commit(
                self.id(),
                &[LinkOp::Remove {
                    href: href.to_owned(),
                }],
                None,
                None,
            )
            .map_err(|e| self.local(e))
    }

    // ---------------------------------------------------------------------------------------
    // Push (the outbox)

    /// Walks the change log from the cursor, then retries the failed jobs that are due. A
    /// record the provider refuses becomes (or stays) a failed job and the cursor moves past it;
    /// a provider-wide failure ends the round before the cursor moves, so no job is lost.
    async fn push(&self, report: &mut RoundReport) -> Result<(), BridgeError> {
        let id = self.id().to_owned();
        let mut failed = self.store.failed_jobs(&id).map_err(|e| self.local(e))?;
        let mut cursor = self.store.outbox_cursor(&id).map_err(|e| self.local(e))?;
        // Each document is pushed at most once per round (it is pushed as it is now).
        let mut seen: HashSet<String> = HashSet::new();
        loop {
            let entries = self
                .store
                .storage()
                .changes_after(cursor, OUTBOX_BATCH)
                .map_err(|e| self.local(e))?;
            let Some(&(last, _)) = entries.last() else {
                break;
            };
            let batch: Vec<DocumentId> = entries
                .iter()
                .map(|(_, doc)| doc.clone())
                .filter(|doc| !seen.contains(&doc.to_string()))
                .collect();
            self.stage_updates(&batch, &failed).await?;
            for (_, doc) in entries {
                if seen.insert(doc.to_string()) {
                    self.push_job(&doc, &mut failed, report).await?;
                    // A job the provider already has sends nothing and never waits: let the
                    // connections' tasks run between documents (S5: S2 p99 during a burst).
                    tokio::task::yield_now().await;
                }
            }
            self.store
                .commit(&id, &[], None, Some(last))
                .map_err(|e| self.local(e))?;
            cursor = Some(last);
        }
        let waiting: Vec<String> = failed
            .keys()
            .filter(|doc| !seen.contains(*doc))
            .cloned()
            .collect();
        for doc in waiting {
            let doc_id = self.parse_doc_id(&doc)?;
            self.push_job(&doc_id, &mut failed, report).await?;
        }
        Ok(())
    }

    /// Offers the provider the updates a batch of the outbox is about to make, so a provider that
    /// writes in bulk (Salesforce's sObject Collections) sends them in one call and each job's own
    /// write then finds its answer; the jobs themselves (failed jobs, 412 merges, shadows) are
    /// unchanged. Jobs not yet due, creates, deletes and unreadable documents are left to the
    /// one-by-one path.
    async fn stage_updates(
        &self,
        docs: &[DocumentId],
        failed: &BTreeMap<String, FailedJob>,
    ) -> Result<(), BridgeError> {
        if !self.provider.stages_updates() {
            return Ok(());
        }
        let now = unix_ms();
        let mut items = Vec::new();
        for doc_id in docs {
            if failed
                .get(&doc_id.to_string())
                .is_some_and(|job| now < job.next_attempt_ms)
            {
                continue;
            }
            // The provider gets the policy's value, as in `push_doc`.
            self.resolve_by_policy(doc_id).await?;
            let Some(am) = self.load(doc_id)? else {
                continue;
            };
            if driftless_crdt_model::record_type(&am).as_deref()
                != Some(Record::type_name(self.record_type))
            {
                continue;
            }
            let Ok(record) = Record::read(self.record_type, &am) else {
                continue;
            };
            let Some(link) = record.links().get(self.link_key()).cloned() else {
                continue;
            };
            if record.deleted() || link.removed || link.id.is_empty() {
                continue;
            }
            let shadow = self
                .store
                .link(self.id(), &link.id)
                .map_err(|e| self.local(e))?;
            if let Some(shadow) = shadow.filter(|s| s.doc == doc_id.to_string()) {
                items.push(provider::StagedUpdate {
                    doc: doc_id.clone(),
                    id: link.id,
                    record,
                    shadow,
                });
            }
        }
        self.provider.stage_updates(&items).await;
        Ok(())
    }

    /// One outbound job. A failed job waits until it is due; a record-level failure is stored
    /// with the next attempt's time (exponential backoff with jitter, at least `Retry-After`);
    /// success, or nothing left to write, drops the failed job.
    async fn push_job(
        &self,
        doc: &DocumentId,
        failed: &mut BTreeMap<String, FailedJob>,
        report: &mut RoundReport,
    ) -> Result<(), BridgeError> {
        let key = doc.to_string();
        let now = unix_ms();
        let retry = failed.get(&key).map(|job| JobRetry {
            attempts: job.attempts,
            next_attempt_ms: job.next_attempt_ms,
        });
        if retry.is_some_and(|r| !r.is_due(now)) {
            return Ok(());
        }
        match self.push_doc(doc, report).await {
            Ok(()) => {
                if failed.remove(&key).is_some() {
                    self.store
                        .remove_failed_job(self.id(), &key)
                        .map_err(|e| self.local(e))?;
                    info!(bridge = %self.id(), doc = %doc, "failed job done: written, or nothing left to write");
                }
                Ok(())
            }
            Err(BridgeError::Record {
                what, retry_after, ..
            }) => {
                let now = unix_ms();
                let next = JobRetry::after_failure(
                    retry.as_ref(),
                    now,
                    retry_after,
                    rand::random::<f64>(),
                );
                let job = FailedJob {
                    attempts: next.attempts,
                    next_attempt_ms: next.next_attempt_ms,
                    failed_at_ms: now,
                    last_error: format!("document {doc}: {what}"),
                };
                warn!(
                    bridge = %self.id(),
                    doc = %doc,
                    attempts = job.attempts,
                    retry_in_ms = job.next_attempt_ms.saturating_sub(now),
                    error = %what,
                    "the provider refused this record; the others go on, it is retried later"
                );
                self.store
                    .put_failed_job(self.id(), &key, &job)
                    .map_err(|e| self.local(e))?;
                failed.insert(key, job);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn push_doc(
        &self,
        doc_id: &DocumentId,
        report: &mut RoundReport,
    ) -> Result<(), BridgeError> {
        // The provider gets the policy's value, not Automerge's pick, and one slot per value.
        self.resolve_by_policy(doc_id).await?;
        self.fold_duplicate_slots(doc_id).await?;
        let Some(mut am) = self.load(doc_id)? else {
            return Ok(());
        };
        if driftless_crdt_model::record_type(&am).as_deref()
            != Some(Record::type_name(self.record_type))
        {
            return Ok(());
        }
        let record = match Record::read(self.record_type, &am) {
            Ok(r) => r,
            // Only a document linked here is this bridge's job.
            Err(e) if self.linked_here(&am) => {
                return Err(self.record_err(format!("document is not readable: {e}"), None));
            }
            Err(_) => return Ok(()),
        };
        let Some(link) = record.links().get(self.link_key()).cloned() else {
            return Ok(());
        };
        if link.removed {
            return Ok(());
        }
        let heads = am.get_heads();
        if link.id.is_empty() {
            if record.deleted() {
                return Ok(());
            }
            return self.push_create(doc_id, &record, &heads, report).await;
        }
        let shadow = self
            .store
            .link(self.id(), &link.id)
            .map_err(|e| self.local(e))?;
        let Some(shadow) = shadow.filter(|s| s.doc == doc_id.to_string()) else {
            return Ok(()); // not (or no longer) linked here
        };
        if record.deleted() {
            return self.push_delete(doc_id, &link.id, &shadow, report).await;
        }
        self.push_update(doc_id, &link.id, shadow, report).await
    }

    /// Whether the document has a link to this bridge (read without the record model, for a
    /// document the model cannot read).
    fn linked_here(&self, am: &AutoCommit) -> bool {
        use automerge::ReadDoc;
        matches!(
            am.get(automerge::ROOT, "links"),
            Ok(Some((automerge::Value::Object(_), links))) if matches!(am.get(&links, self.link_key()), Ok(Some(_)))
        )
    }

    /// `id` is where this bridge creates a document of its workspace that still waits for
    /// its create here (its link has an empty id): see [`Provider::created_document`].
    fn is_own_pending_create(&self, id: &str) -> Result<bool, BridgeError> {
        let Some(doc_id) = self.provider.created_document(id) else {
            return Ok(false);
        };
        let Some(am) = self.load(&doc_id)? else {
            return Ok(false);
        };
        Ok(Record::read(self.record_type, &am).is_ok_and(|record| {
            record
                .links()
                .get(self.link_key())
                .is_some_and(|link| link.id.is_empty() && !link.removed)
        }))
    }

    async fn push_create(
        &self,
        doc_id: &DocumentId,
        record: &Record,
        heads: &[ChangeHash],
        report: &mut RoundReport,
    ) -> Result<(), BridgeError> {
        let view = record.provider_view();
        let Resource {
            id: href,
            etag,
            raw,
        } = self.provider.create(doc_id, record).await?;
        let canonical = self
            .provider
            .translate(&raw, Some(&view))
            .map_err(|e| self.record_err(format!("{href} as stored: {e}"), None))?
            .provider_view();
        // An app-created meeting: invitations in other mailboxes attach to this document.
        let role = self.claim_created_meeting(doc_id, &raw).await?;
        let shadow = Shadow {
            doc: doc_id.to_string(),
            etag,
            uid: self.provider.uid(&raw),
            raw,
            canonical: canonical.to_json(),
            heads: heads.iter().map(ToString::to_string).collect(),
        };
        self.store
            .commit(
                self.id(),
                &[LinkOp::Put {
                    href: href.clone(),
                    shadow: Box::new(shadow.clone()),
                }],
                None,
                None,
            )
            .map_err(|e| self.local(e))?;
        // Record the external id in the document.
        let mut linked = record.clone();
        if let Some(link) = linked.links_mut().get_mut(self.link_key()) {
            link.id = href.clone();
            meetings::set_role(link, role.as_ref());
        }
        self.write_diff(
            doc_id,
            &[],
            record,
            &linked,
            &format!("bridge {}: created {href}", self.id()),
        )
        .await?;
        report.pushed += 1;
        info!(bridge = %self.id(), %href, doc = %doc_id, "created at the provider");
        // An adopted earlier write may differ from the document: bring it up to date.
        self.push_update(doc_id, &href, shadow, report).await
    }

    async fn push_update(
        &self,
        doc_id: &DocumentId,
        href: &str,
        mut shadow: Shadow,
        report: &mut RoundReport,
    ) -> Result<(), BridgeError> {
        for _ in 0..MAX_412_RETRIES {
            let Some(mut am) = self.load(doc_id)? else {
                return Ok(());
            };
            let record = Record::read(self.record_type, &am)
                .map_err(|e| self.record_err(format!("document is not readable: {e}"), None))?;
            if record.deleted() {
                return self.push_delete(doc_id, href, &shadow, report).await;
            }
            let heads = am.get_heads();
            // A meeting copy gets only what its mailbox owns.
            let record = self.meeting_push_view(&record, &shadow).await?;
            match self.provider.update(doc_id, href, &record, &shadow).await? {
                // Nothing the provider does not have, or can take.
                WriteOutcome::Unchanged => {
                    return self.record_held_back(doc_id, &record, &shadow).await;
                }
                WriteOutcome::Written(Resource { etag, raw, .. }) => {
                    // Read back against the document, so values it wrote keep its slot ids.
                    let canonical = self
                        .provider
                        .translate(&raw, Some(&record.provider_view()))
                        .map_err(|e| self.record_err(format!("{href} as stored: {e}"), None))?
                        .provider_view();
                    shadow.uid = self.provider.uid(&raw);
                    shadow.etag = etag;
                    shadow.raw = raw;
                    shadow.canonical = canonical.to_json();
                    shadow.heads = heads.iter().map(ToString::to_string).collect();
                    self.store
                        .commit(
                            self.id(),
                            &[LinkOp::Put {
                                href: href.to_owned(),
                                shadow: Box::new(shadow.clone()),
                            }],
                            None,
                            None,
                        )
                        .map_err(|e| self.local(e))?;
                    report.pushed += 1;
                    return self.record_held_back(doc_id, &record, &shadow).await;
                }
                WriteOutcome::Stale(fresh) => {
                    // The provider changed meanwhile: merge its change, then retry.
                    info!(bridge = %self.id(), %href, doc = %doc_id, "412 on write; merging the provider's change and retrying");
                    let Some(res) = fresh else {
                        return Ok(()); // deleted there: the next pull sees it
                    };
                    let old = self.shadow_record(&shadow)?;
                    let theirs = self
                        .provider
                        .translate(&res.raw, Some(&old))
                        .map_err(|e| self.record_err(format!("{href}: {e}"), None))?
                        .provider_view();
                    report.conflicts += self
                        .import_change(href, href, &shadow, res.etag.clone(), &res.raw, &theirs)
                        .await?;
                    report.pulled += 1;
                    match self
                        .store
                        .link(self.id(), href)
                        .map_err(|e| self.local(e))?
                    {
                        Some(s) => shadow = s,
                        None => return Ok(()),
                    }
                }
            }
        }
        Err(self.record_err(
            format!("{href}: still 412 after {MAX_412_RETRIES} merges"),
            None,
        ))
    }

    async fn push_delete(
        &self,
        doc_id: &DocumentId,
        href: &str,
        shadow: &Shadow,
        report: &mut RoundReport,
    ) -> Result<(), BridgeError> {
        let mut current = shadow.clone();
        for _ in 0..MAX_412_RETRIES {
            match self.provider.delete(doc_id, href, &current).await? {
                DeleteOutcome::Deleted => {
                    self.store
                        .commit(
                            self.id(),
                            &[LinkOp::Remove {
                                href: href.to_owned(),
                            }],
                            None,
                            None,
                        )
                        .map_err(|e| self.local(e))?;
                    report.deleted += 1;
                    info!(bridge = %self.id(), %href, doc = %shadow.doc, "deleted at the provider");
                    return Ok(());
                }
                // Changed there meanwhile; the app's delete still wins.
                DeleteOutcome::Stale(fresh) => match fresh {
                    Some(res) => {
                        current.etag = res.etag;
                        current.raw = res.raw;
                    }
                    None => current.etag = None,
                },
            }
        }
        Err(self.record_err(
            format!("{href}: delete still 412 after {MAX_412_RETRIES} tries"),
            None,
        ))
    }
}

#[cfg(test)]
mod batch_tests {
    use super::update_batches;

    #[test]
    fn batches_are_bounded_and_never_hold_a_document_twice() {
        let items = ["a", "b", "c", "a", "d", "e", "f"];
        let batches = update_batches(&items, |d| d, 3);
        assert_eq!(
            batches,
            vec![&["a", "b", "c"][..], &["a", "d", "e"][..], &["f"][..]]
        );
        let batches = update_batches(&items, |d| d, 10);
        assert_eq!(
            batches,
            vec![&["a", "b", "c"][..], &["a", "d", "e", "f"][..]]
        );
        assert!(update_batches(&[] as &[&str], |d| d, 3).is_empty());
    }
}
