//! Provider bridges (CalDAV / CardDAV): one task per `[[bridges]]` entry keeps a collection and
//! the bridge's workspace in step.
//!
//! A round is pull then push:
//! - **Pull**: sync-collection from the stored token (a rejected token means a full listing that
//!   merges with the link table), multiget what changed, translate, and let
//!   `driftless_bridges::sync` decide creates / updates / relinks / removals. A record's change is
//!   written into its document as ONE Automerge change with this process's bridge actor, computed
//!   against the shadow (only the fields the provider changed) at the shadow's heads, and sent
//!   through the engine (`HostInput::LocalChange`). Only once the engine reports it durable is the
//!   shadow stored; the sync token moves last, so a crash replays the page.
//! - **Push** (the transactional outbox): the engine's `change_log` is appended in the same redb
//!   transaction as every document change, so it is the job queue. Each bridge reads it from its
//!   own cursor, diffs every linked document against its shadow by rendering it onto the stored raw
//!   resource, and writes only when the bytes differ: `If-Match` on update, `If-None-Match: *` on
//!   create (at an href derived from the document id, so a retried create meets a 412 and adopts
//!   its own earlier write), `DELETE` for tombstones. A 412 re-fetches, merges the provider's
//!   change into the document and retries. The cursor moves only after its jobs are done.
//! - Deletes from the provider unlink, and tombstone only when no other live link remains; a
//!   round deleting more than `max_delete_fraction` of the linked records (or an empty complete
//!   listing) applies nothing and waits in `needs_confirmation` for `?confirm_deletes=true`.
//!
//! Failures back off exponentially with jitter and honour `Retry-After`.
//! Must not: write a document except through the engine, or hold bridge state outside `store`.

pub mod record;
pub mod store;
pub mod translate;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use automerge::{ActorId, AutoCommit, ChangeHash};
use driftless_bridges::dav::client::{
    DavClient, DavClientConfig, DeleteOutcome, FetchError, HttpError, Precondition, PutOutcome,
    SyncError, SyncOutcome, WriteError,
};
use driftless_bridges::dav::wire::{CollectionKind, Fetched};
use driftless_bridges::sync::{self, FetchedMember, Known, Listed, Removal};
use driftless_client_protocol::DocumentId;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{BridgeConfig, BridgeKind};
use crate::host::HostInput;
use crate::storage::Storage;
use record::Record;
use store::{BridgeStore, LinkOp, Shadow};

/// Most hrefs in one multiget.
const MULTIGET_BATCH: usize = 100;
/// Change-log entries read per outbox step.
const OUTBOX_BATCH: usize = 256;
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
    #[error("bridge {bridge}: {what}")]
    Local { bridge: String, what: String },
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
}

struct Handle {
    config: BridgeConfig,
    shared: Arc<Mutex<Shared>>,
    commands: mpsc::Sender<Command>,
}

/// All configured bridges: what the HTTP API talks to.
pub struct Bridges {
    handles: BTreeMap<String, Handle>,
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
            store: None,
            tasks: Mutex::new(Vec::new()),
            stop: watch::channel(false).0,
        }
    }

    /// Starts one task per configured bridge.
    pub fn start(
        configs: &[BridgeConfig],
        storage: &Storage,
        net_tx: mpsc::Sender<HostInput>,
    ) -> anyhow::Result<Self> {
        if configs.is_empty() {
            return Ok(Self::none());
        }
        let store = BridgeStore::open(storage.clone())?;
        let (stop, stop_rx) = watch::channel(false);
        let mut handles = BTreeMap::new();
        let mut tasks = Vec::new();
        for config in configs {
            let kind = match config.kind {
                BridgeKind::CalDav => CollectionKind::Calendar,
                BridgeKind::CardDav => CollectionKind::AddressBook,
            };
            let mut dav = DavClientConfig::new(config.url.clone(), kind);
            dav.username = config.username.clone();
            dav.password = config.password.clone();
            let client =
                DavClient::new(dav).map_err(|e| anyhow::anyhow!("bridge {}: {e}", config.id))?;
            // A fresh actor per process start: never reused after a crash.
            let actor = ActorId::random();
            store.register_actor(actor.to_bytes(), &config.id)?;
            let shared = Arc::new(Mutex::new(Shared {
                state: "idle",
                ..Shared::default()
            }));
            let (commands, commands_rx) = mpsc::channel(16);
            let runner = Runner {
                config: config.clone(),
                client,
                store: store.clone(),
                net_tx: net_tx.clone(),
                actor,
                shared: shared.clone(),
            };
            tasks.push(tokio::spawn(runner.run(commands_rx, stop_rx.clone())));
            info!(bridge = %config.id, kind = config.kind.as_str(), url = %config.url, "bridge started");
            handles.insert(
                config.id.clone(),
                Handle {
                    config: config.clone(),
                    shared,
                    commands,
                },
            );
        }
        Ok(Self {
            handles,
            store: Some(store),
            tasks: Mutex::new(tasks),
            stop,
        })
    }

    /// Stops every bridge task and waits for them (a round in progress is abandoned at its next
    /// await; everything it did not commit is redone after restart).
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = match self.tasks.lock() {
            Ok(mut t) => t.drain(..).collect(),
            Err(p) => p.into_inner().drain(..).collect(),
        };
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }

    /// Which bridge wrote with `actor`, if any.
    pub fn actor_sources(&self) -> BTreeMap<Vec<u8>, String> {
        self.store
            .as_ref()
            .and_then(|s| s.actor_sources().ok())
            .unwrap_or_default()
    }

    /// Statuses of the bridges of `workspace`.
    pub fn statuses(&self, workspace: &str) -> Vec<BridgeStatus> {
        let mut out = Vec::new();
        for (id, handle) in &self.handles {
            if handle.config.workspace != workspace {
                continue;
            }
            let (linked_records, outbox_pending) = match &self.store {
                Some(store) => (
                    store.links(id).map(|l| l.len()).unwrap_or(0),
                    store
                        .outbox_cursor(id)
                        .ok()
                        .and_then(|c| store.storage().changes_after(c, 100_000).ok())
                        .map_or(0, |c| c.len()),
                ),
                None => (0, 0),
            };
            let shared = lock(&handle.shared);
            out.push(BridgeStatus {
                id: id.clone(),
                kind: handle.config.kind.as_str(),
                workspace: handle.config.workspace.clone(),
                state: shared.state,
                last_sync_at: shared.last_sync_at.clone(),
                last_error: shared.last_error.clone(),
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
    client: DavClient,
    store: BridgeStore,
    net_tx: mpsc::Sender<HostInput>,
    actor: ActorId,
    shared: Arc<Mutex<Shared>>,
}

impl Runner {
    fn id(&self) -> &str {
        &self.config.id
    }

    fn local(&self, what: impl std::fmt::Display) -> BridgeError {
        BridgeError::Local {
            bridge: self.config.id.clone(),
            what: what.to_string(),
        }
    }

    fn provider(&self, what: impl std::fmt::Display, retry_after: Option<Duration>) -> BridgeError {
        BridgeError::Provider {
            bridge: self.config.id.clone(),
            what: what.to_string(),
            retry_after,
        }
    }

    fn http(&self, context: &str, e: &HttpError) -> BridgeError {
        let retry_after = match e {
            HttpError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        };
        self.provider(format!("{context}: {e}"), retry_after)
    }

    fn sync_err(&self, e: SyncError) -> BridgeError {
        match e {
            SyncError::Http(h) => self.http("sync-collection", &h),
            SyncError::Parse(p) => self.provider(format!("sync-collection: {p}"), None),
        }
    }

    fn fetch_err(&self, href: &str, e: FetchError) -> BridgeError {
        match e {
            FetchError::Http(h) => self.http(&format!("fetching {href}"), &h),
            FetchError::Parse(p) => self.provider(format!("fetching {href}: {p}"), None),
        }
    }

    fn write_err(&self, href: &str, e: WriteError) -> BridgeError {
        match e {
            WriteError::Http(h) => self.http(&format!("writing {href}"), &h),
        }
    }

    async fn run(self, mut commands: mpsc::Receiver<Command>, mut stop: watch::Receiver<bool>) {
        let mut failures: u32 = 0;
        let mut next = tokio::time::Instant::now();
        loop {
            let (confirm, reply) = tokio::select! {
                _ = stop.changed() => return,
                cmd = commands.recv() => match cmd {
                    Some(Command::Sync { confirm_deletes, reply }) => (confirm_deletes, Some(reply)),
                    None => return,
                },
                () = tokio::time::sleep_until(next) => (false, None),
            };
            lock(&self.shared).state = "syncing";
            let result = self.round(confirm).await;
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
                            BridgeError::Provider { retry_after, .. } => *retry_after,
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
            next = tokio::time::Instant::now() + delay;
            if let Some(reply) = reply {
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
        }
    }

    async fn round(&self, confirm_deletes: bool) -> Result<RoundReport, BridgeError> {
        let mut report = RoundReport {
            state: "idle",
            ..RoundReport::default()
        };
        self.pull(confirm_deletes, &mut report).await?;
        self.push(&mut report).await?;
        Ok(report)
    }

    // ---------------------------------------------------------------------------------------
    // Documents through the engine

    fn load(&self, doc: &DocumentId) -> Result<Option<AutoCommit>, BridgeError> {
        let Some(stored) = self
            .store
            .storage()
            .load_stored(doc)
            .map_err(|e| self.local(e))?
        else {
            return Ok(None);
        };
        if stored.workspace != self.config.workspace {
            return Ok(None);
        }
        let mut am = AutoCommit::load(&stored.document.save())
            .map_err(|e| self.local(format!("document {doc}: {e}")))?;
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

    fn parse_doc_id(&self, doc: &str) -> Result<DocumentId, BridgeError> {
        doc.parse().map_err(|e| {
            self.local(format!(
                "stored link names an invalid document {doc:?}: {e}"
            ))
        })
    }

    fn shadow_record(&self, shadow: &Shadow) -> Result<Record, BridgeError> {
        Record::from_json(self.config.kind, shadow.canonical.clone())
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
        let links = self.store.links(&id).map_err(|e| self.local(e))?;
        let token = self.store.sync_token(&id).map_err(|e| self.local(e))?;
        let mut complete = token.is_none();
        let mut outcome = self
            .client
            .sync_collection(token.as_deref())
            .await
            .map_err(|e| self.sync_err(e))?;
        if outcome == SyncOutcome::TokenInvalid {
            warn!(bridge = %id, "sync token rejected by the provider; full resync merging with the link table");
            complete = true;
            outcome = self
                .client
                .sync_collection(None)
                .await
                .map_err(|e| self.sync_err(e))?;
        }
        let mut listed: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut removed: Vec<String> = Vec::new();
        let new_token;
        loop {
            let SyncOutcome::Page(page) = outcome else {
                return Err(self.provider("sync-collection rejected a full listing's token", None));
            };
            for m in page.changed {
                let href = self.normalize_href(&m.href);
                removed.retain(|h| h != &href);
                listed.insert(href, m.etag);
            }
            for h in page.removed {
                let href = self.normalize_href(&h);
                listed.remove(&href);
                removed.push(href);
            }
            if !page.truncated {
                new_token = page.sync_token;
                break;
            }
            outcome = self
                .client
                .sync_collection(Some(&page.sync_token))
                .await
                .map_err(|e| self.sync_err(e))?;
        }
        let listed: Vec<Listed> = listed
            .into_iter()
            .map(|(href, etag)| Listed { href, etag })
            .collect();
        let known: Vec<Known> = links
            .iter()
            .map(|(href, s)| Known {
                href: href.clone(),
                doc: s.doc.clone(),
                etag: s.etag.clone(),
                uid: s.uid.clone(),
            })
            .collect();

        // Fetch what changed.
        let wanted = sync::to_fetch(&known, &listed);
        let mut bodies: BTreeMap<String, (Option<String>, String, Record)> = BTreeMap::new();
        for batch in wanted.chunks(MULTIGET_BATCH) {
            let fetched = self
                .client
                .multiget(batch)
                .await
                .map_err(|e| self.fetch_err("multiget", e))?;
            for f in fetched {
                let Fetched::Found { href, etag, body } = f else {
                    continue; // deleted since listed: the next page reports it
                };
                let href = self.normalize_href(&href);
                let existing = match links.get(&href) {
                    Some(s) => Some(self.shadow_record(s)?),
                    None => None,
                };
                match Record::from_raw(self.config.kind, &body, existing.as_ref()) {
                    Ok(record) => {
                        bodies.insert(href, (etag, body, record.provider_view()));
                    }
                    Err(e) => {
                        warn!(bridge = %id, %href, error = %e, "provider resource not understood; skipped until it changes");
                        lock(&self.shared).last_error = Some(format!("bridge {id}: {href}: {e}"));
                    }
                }
            }
        }
        let fetched: Vec<FetchedMember> = bodies
            .iter()
            .map(|(href, (_, body, _))| FetchedMember {
                href: href.clone(),
                uid: translate::resource_uid(body),
            })
            .collect();
        let plan = sync::plan_pull(&known, &listed, &fetched, &removed, complete);

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
            }
        }
        for (href, _) in &plan.updates {
            if let (Some(shadow), Some((etag, body, record))) = (links.get(href), bodies.get(href))
            {
                report.conflicts += self
                    .import_change(href, href, shadow, etag.clone(), body, record)
                    .await?;
                report.pulled += 1;
            }
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
            .commit(&id, &[], Some(Some(&new_token)), None)
            .map_err(|e| self.local(e))?;
        Ok(())
    }

    /// Hrefs as the link table keys them: the path (servers answer with paths or full URLs).
    fn normalize_href(&self, href: &str) -> String {
        match self.client.resolve(href) {
            Ok(url) => url.path().to_owned(),
            Err(_) => href.to_owned(),
        }
    }

    async fn import_new(
        &self,
        href: &str,
        etag: Option<String>,
        body: &str,
        record: &Record,
    ) -> Result<(), BridgeError> {
        let doc_id = DocumentId::from_bytes(uuid::Uuid::new_v4().as_bytes());
        let mut with_link = record.clone();
        with_link.links_mut().insert(
            self.id().to_owned(),
            driftless_crdt_model::Link {
                id: href.to_owned(),
                ..Default::default()
            },
        );
        let mut am = AutoCommit::new().with_actor(self.actor.clone());
        with_link
            .create(&mut am)
            .map_err(|e| self.local(format!("{href}: {e}")))?;
        let hash = am.commit_with(
            automerge::transaction::CommitOptions::default()
                .with_message(format!("bridge {}: import {href}", self.id())),
        );
        let changes = am.save();
        self.send(&doc_id, changes).await?;
        let shadow = Shadow {
            doc: doc_id.to_string(),
            etag,
            raw: body.to_owned(),
            canonical: record.to_json(),
            heads: hash.iter().map(ToString::to_string).collect(),
            uid: translate::resource_uid(body),
        };
        self.store
            .commit(
                self.id(),
                &[LinkOp::Put {
                    href: href.to_owned(),
                    shadow: Box::new(shadow),
                }],
                None,
                None,
            )
            .map_err(|e| self.local(e))?;
        info!(bridge = %self.id(), %href, doc = %doc_id, "imported a new provider record");
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
            .and_then(|am| Record::read(self.config.kind, &am).ok())
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
        Record::from_json(self.config.kind, settled)
            .map_err(|e| self.local(format!("document {doc_id}: settling the shadow: {e}")))
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
        let doc_id = self.parse_doc_id(&shadow.doc)?;
        let old = self.settled(&doc_id, self.shadow_record(shadow)?, record)?;
        let mut heads = shadow.change_heads();
        let mut conflicts = 0;
        if &old != record {
            let (hash, c) = self
                .write_diff(
                    &doc_id,
                    &heads,
                    &old,
                    record,
                    &format!("bridge {}: {href}", self.id()),
                )
                .await?;
            conflicts = c;
            if let Some(hash) = hash {
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
                && let Ok(current) = Record::read(self.config.kind, &am)
            {
                let mut moved = current.clone();
                if let Some(link) = moved.links_mut().get_mut(self.id()) {
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
                uid: translate::resource_uid(body),
            }),
        });
        self.store
            .commit(self.id(), &ops, None, None)
            .map_err(|e| self.local(e))?;
        Ok(conflicts)
    }

    /// The provider deleted `href`: unlink, and tombstone when no other live link remains.
    async fn import_removal(&self, href: &str, doc: &str) -> Result<(), BridgeError> {
        let doc_id = self.parse_doc_id(doc)?;
        if let Some(am) = self.load(&doc_id)?
            && let Ok(current) = Record::read(self.config.kind, &am)
        {
            let mut next = current.clone();
            let others = current
                .links()
                .iter()
                .filter(|(b, l)| b.as_str() != self.id() && !l.removed)
                .count();
            if let Some(link) = next.links_mut().get_mut(self.id()) {
                link.removed = true;
            }
            let outcome = sync::removal(others, false);
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

    async fn push(&self, report: &mut RoundReport) -> Result<(), BridgeError> {
        let id = self.id().to_owned();
        let mut cursor = self.store.outbox_cursor(&id).map_err(|e| self.local(e))?;
        loop {
            let entries = self
                .store
                .storage()
                .changes_after(cursor, OUTBOX_BATCH)
                .map_err(|e| self.local(e))?;
            let Some(&(last, _)) = entries.last() else {
                return Ok(());
            };
            let mut seen = HashSet::new();
            for (_, doc) in entries {
                if seen.insert(doc.clone()) {
                    self.push_doc(&doc, report).await?;
                }
            }
            self.store
                .commit(&id, &[], None, Some(last))
                .map_err(|e| self.local(e))?;
            cursor = Some(last);
        }
    }

    async fn push_doc(
        &self,
        doc_id: &DocumentId,
        report: &mut RoundReport,
    ) -> Result<(), BridgeError> {
        let Some(mut am) = self.load(doc_id)? else {
            return Ok(());
        };
        if driftless_crdt_model::record_type(&am).as_deref()
            != Some(Record::type_name(self.config.kind))
        {
            return Ok(());
        }
        let record = match Record::read(self.config.kind, &am) {
            Ok(r) => r,
            Err(e) => {
                warn!(bridge = %self.id(), doc = %doc_id, error = %e, "document not readable; not pushed");
                return Ok(());
            }
        };
        let Some(link) = record.links().get(self.id()).cloned() else {
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
        let links = self.store.links(self.id()).map_err(|e| self.local(e))?;
        let Some(shadow) = links.get(&link.id).filter(|s| s.doc == doc_id.to_string()) else {
            return Ok(()); // not (or no longer) linked here
        };
        if record.deleted() {
            return self.push_delete(&link.id, shadow, report).await;
        }
        self.push_update(doc_id, &link.id, shadow.clone(), report)
            .await
    }

    fn extension(&self) -> &'static str {
        match self.config.kind {
            BridgeKind::CalDav => "ics",
            BridgeKind::CardDav => "vcf",
        }
    }

    /// `href` is where this bridge creates a document of its workspace that still waits for
    /// its create here (its link has an empty id): see [`Runner::create_href`].
    fn is_own_pending_create(&self, href: &str) -> Result<bool, BridgeError> {
        let Some(doc_id) = href
            .rsplit('/')
            .next()
            .and_then(|name| name.strip_suffix(self.extension()))
            .and_then(|stem| stem.strip_suffix('.'))
            .and_then(|stem| stem.parse::<DocumentId>().ok())
            .filter(|doc_id| self.create_href(doc_id) == href)
        else {
            return Ok(false);
        };
        let Some(am) = self.load(&doc_id)? else {
            return Ok(false);
        };
        Ok(Record::read(self.config.kind, &am).is_ok_and(|record| {
            record
                .links()
                .get(self.id())
                .is_some_and(|link| link.id.is_empty() && !link.removed)
        }))
    }

    /// Where document `doc_id` is created. Derived from the document id, so a retried create
    /// finds its own earlier write (412) and a pull recognises it.
    fn create_href(&self, doc_id: &DocumentId) -> String {
        format!(
            "{}{doc_id}.{}",
            self.client.collection_url().path(),
            self.extension()
        )
    }

    async fn push_create(
        &self,
        doc_id: &DocumentId,
        record: &Record,
        heads: &[ChangeHash],
        report: &mut RoundReport,
    ) -> Result<(), BridgeError> {
        let href = self.create_href(doc_id);
        let uid = record.uid().unwrap_or_else(|| doc_id.to_string());
        let view = record.provider_view();
        let body = view
            .to_raw(None, &uid)
            .map_err(|e| self.local(format!("document {doc_id}: {e}")))?;
        let outcome = self
            .client
            .put(&href, &body, Precondition::IfNoneMatch)
            .await
            .map_err(|e| self.write_err(&href, e))?;
        let (etag, raw) = match outcome {
            PutOutcome::Written { etag: Some(etag) } => (Some(etag), body),
            PutOutcome::Written { etag: None } | PutOutcome::PreconditionFailed => {
                let res = self
                    .client
                    .get(&href)
                    .await
                    .map_err(|e| self.fetch_err(&href, e))?
                    .ok_or_else(|| {
                        self.provider(format!("{href} vanished right after its create"), None)
                    })?;
                (res.etag, res.body)
            }
        };
        let canonical = Record::from_raw(self.config.kind, &raw, Some(&view))
            .map_err(|e| self.provider(format!("{href}: {e}"), None))?
            .provider_view();
        let shadow = Shadow {
            doc: doc_id.to_string(),
            etag,
            uid: translate::resource_uid(&raw),
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
        if let Some(link) = linked.links_mut().get_mut(self.id()) {
            link.id = href.clone();
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
            let record = Record::read(self.config.kind, &am)
                .map_err(|e| self.local(format!("document {doc_id}: {e}")))?;
            if record.deleted() {
                return self.push_delete(href, &shadow, report).await;
            }
            let heads = am.get_heads();
            let uid = record.uid().unwrap_or_else(|| doc_id.to_string());
            let body = record
                .provider_view()
                .to_raw(Some(&shadow.raw), &uid)
                .map_err(|e| self.local(format!("document {doc_id} onto {href}: {e}")))?;
            if body == shadow.raw {
                return Ok(()); // nothing the provider does not have
            }
            let precondition = match &shadow.etag {
                Some(etag) => Precondition::IfMatch(etag),
                None => Precondition::IfNoneMatch,
            };
            let outcome = self
                .client
                .put(href, &body, precondition)
                .await
                .map_err(|e| self.write_err(href, e))?;
            match outcome {
                PutOutcome::Written { etag } => {
                    let (etag, raw) = match etag {
                        Some(e) => (Some(e), body),
                        None => match self
                            .client
                            .get(href)
                            .await
                            .map_err(|e| self.fetch_err(href, e))?
                        {
                            Some(res) => (res.etag, res.body),
                            None => (None, body),
                        },
                    };
                    let canonical = Record::from_raw(
                        self.config.kind,
                        &raw,
                        Some(&self.shadow_record(&shadow)?),
                    )
                    .map_err(|e| self.provider(format!("{href}: {e}"), None))?
                    .provider_view();
                    shadow.uid = translate::resource_uid(&raw);
                    shadow.etag = etag;
                    shadow.raw = raw;
                    shadow.canonical = canonical.to_json();
                    shadow.heads = heads.iter().map(ToString::to_string).collect();
                    self.store
                        .commit(
                            self.id(),
                            &[LinkOp::Put {
                                href: href.to_owned(),
                                shadow: Box::new(shadow),
                            }],
                            None,
                            None,
                        )
                        .map_err(|e| self.local(e))?;
                    report.pushed += 1;
                    return Ok(());
                }
                PutOutcome::PreconditionFailed => {
                    // The provider changed meanwhile: merge its change, then retry.
                    info!(bridge = %self.id(), %href, doc = %doc_id, "412 on write; merging the provider's change and retrying");
                    let Some(res) = self
                        .client
                        .get(href)
                        .await
                        .map_err(|e| self.fetch_err(href, e))?
                    else {
                        return Ok(()); // deleted there: the next pull sees it
                    };
                    let old = self.shadow_record(&shadow)?;
                    let theirs = Record::from_raw(self.config.kind, &res.body, Some(&old))
                        .map_err(|e| self.provider(format!("{href}: {e}"), None))?
                        .provider_view();
                    report.conflicts += self
                        .import_change(href, href, &shadow, res.etag.clone(), &res.body, &theirs)
                        .await?;
                    report.pulled += 1;
                    let links = self.store.links(self.id()).map_err(|e| self.local(e))?;
                    match links.get(href) {
                        Some(s) => shadow = s.clone(),
                        None => return Ok(()),
                    }
                }
            }
        }
        Err(self.provider(
            format!("{href}: still 412 after {MAX_412_RETRIES} merges"),
            None,
        ))
    }

    async fn push_delete(
        &self,
        href: &str,
        shadow: &Shadow,
        report: &mut RoundReport,
    ) -> Result<(), BridgeError> {
        let mut etag = shadow.etag.clone();
        for _ in 0..MAX_412_RETRIES {
            match self
                .client
                .delete(href, etag.as_deref())
                .await
                .map_err(|e| self.write_err(href, e))?
            {
                DeleteOutcome::Deleted | DeleteOutcome::NotFound => {
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
                DeleteOutcome::PreconditionFailed => {
                    etag = self
                        .client
                        .get(href)
                        .await
                        .map_err(|e| self.fetch_err(href, e))?
                        .and_then(|r| r.etag);
                }
            }
        }
        Err(self.provider(
            format!("{href}: delete still 412 after {MAX_412_RETRIES} tries"),
            None,
        ))
    }
}
