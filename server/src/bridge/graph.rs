//! The Microsoft Graph provider of the bridge runner (calendar events of one mailbox): drives the
//! sans-IO machines of `driftless_bridges::graph::sync` with the OAuth2 client.
//!
//! - A record is a single event or a *series* (master plus the instances seen in the window and
//!   the occurrences Graph deleted); its external id is the event's (the master's) id and its
//!   shadow `raw` is the [`EventBundle`] JSON, so instances seen in earlier rounds are kept when a
//!   later round reports only some of them.
//! - Pull: one [`CalendarPull`] per round over `calendarView/delta`; the cursor is the delta link
//!   (replayed verbatim) plus the window it was started for (a delta link keeps its window, so
//!   when the configured window has drifted by more than a day the round starts over as a complete,
//!   merging listing). Stripped occurrences are completed from their series master inside the
//!   pull. `@removed` is probed: 404 is a delete, an item that still exists merely left the
//!   window and is reported as listed and unchanged (never a tombstone). A 410
//!   `SyncStateNotFound` restarts the round as a complete listing that the runner merges.
//! - Writes: PATCH with only the changed fields and `If-Match` (the item's `@odata.etag`); a 412
//!   `ErrorIrresolvableConflict` hands Graph's current copy back as stale for the runner to merge.
//!   429/503 wait for `Retry-After` inside the machines. A changed rule is PATCHed as a
//!   `patternedRecurrence`; one Graph cannot express is not written (the rest is) and
//!   [`GraphProvider::held_back`] hands Graph's rule to the runner, which lists both rules as a
//!   conflict on the record (`links.<bridge>.diverged`).
//!   Creates carry `transactionId = driftless-<document id>`: a retried create gets the event
//!   the lost one made, and a pulled event carrying it is recognised as our own pending create
//!   ([`GraphProvider::created_document`]) instead of being imported twice.
//! - `resource = "contacts"` ([`BridgeKind::MicrosoftGraphContacts`]): the same provider syncs
//!   the mailbox's contacts instead (`contacts`).
//!
//! - Webhooks (when `public_url` is set): each round first makes sure a change-notification
//!   subscription on `/me/events` (or `/me/contacts`) exists and is renewed before it expires;
//!   its id, random `clientState` and granted expiry are stored in the bridge store
//!   ([`GraphHooks`]), so a restart reuses it. `POST /webhooks/graph/{bridge}`
//!   ([`Bridges::graph_webhook`]) echoes the validation token, checks `clientState` on every
//!   notification and only nudges the bridge task (bursts coalesce into one round; polling goes
//!   on); `missed` / `subscriptionRemoved` / `reauthorizationRequired` make the next round renew
//!   (or recreate) the subscription before its delta round.
//!
//! Must not: touch documents or the bridge store (the runner does; [`GraphHooks`] keeps only its
//! subscription under its own `bridge_state` key), or print a secret.

mod contacts;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use driftless_bridges::graph::client::{DriveError, GraphClient, GraphConfig, GraphError};
use driftless_bridges::graph::sync::{
    CalendarPull, ItemKind, KnownEvent, RetryPolicy, SyncError, Window, WriteJob, WriteOp,
    WriteOutcome as GraphWriteOutcome, apply_series, calendar_delta_url, infer_deleted_occurrences,
};
use driftless_bridges::graph::translate::{
    EventBundle, event_create_body, event_from_graph, event_writes, held_back_rule, response_write,
    series_uid, unwritable_changes,
};
use driftless_bridges::graph::webhook::{
    Hint, MAX_SUBSCRIPTION_MINUTES, subscription_body, triage, validation_token,
};
use driftless_bridges::sync::Listed;
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::CalendarEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{info, warn};

use super::provider::{Changes, DeleteOutcome, Resource, WriteOutcome};
use super::record::Record;
use super::store::{BridgeStore, Shadow};
use super::{BridgeError, Bridges};
use crate::config::{BridgeConfig, BridgeKind};

/// How far the configured window may drift from the stored delta link's before a round starts
/// over with a fresh window.
const WINDOW_TOLERANCE: Duration = Duration::from_secs(86_400);

/// The stored cursor: Graph's delta link and the window it belongs to.
#[derive(Debug, Serialize, Deserialize)]
struct Cursor {
    start: NaiveDateTime,
    end: NaiveDateTime,
    #[serde(rename = "deltaLink")]
    delta_link: String,
}

/// Which side of a round a failure happened on: a pull failure stops the round, a write
/// failure that concerns one record only parks that record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Pull,
    Write,
}

/// How long a subscription is asked to live, and how long before its end it is renewed (at most;
/// a subscription Graph granted for less is renewed halfway through its life).
const SUBSCRIPTION_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::days(3);
const RENEW_BEFORE: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The `bridge_state` key of the stored subscription.
const SUBSCRIPTION_KEY: &str = "graph_subscription";

/// The live subscription, as kept in memory and stored in `bridge_state` (the clientState is a
/// secret shared with Graph only, kept like Google's channel tokens).
#[derive(Clone, Serialize, Deserialize)]
struct Subscription {
    id: String,
    client_state: String,
    /// When it was created or last renewed.
    granted_at: chrono::DateTime<Utc>,
    /// As Graph granted it (its answer, not what was asked).
    expiration: chrono::DateTime<Utc>,
}

impl Subscription {
    /// Renew once less than a day, or less than half of the granted lifetime, is left.
    fn needs_renewal(&self, now: chrono::DateTime<Utc>) -> bool {
        let lifetime = self.expiration - self.granted_at;
        self.expiration - now <= RENEW_BEFORE.min(lifetime / 2)
    }
}

/// The change-notification subscription of one Graph bridge, shared by its provider (which
/// creates and renews it) and the webhook endpoint (which checks notifications against it).
/// Persisted in the bridge store once [`GraphHooks::load`] attached it, so a restart reuses an
/// unexpired subscription (and keeps accepting its notifications) instead of creating another.
#[derive(Default)]
pub struct GraphHooks {
    current: Mutex<Option<Subscription>>,
    /// A lifecycle event asked for a renewal (or re-creation) at the next round.
    renew_now: AtomicBool,
    /// Where `current` is persisted: the bridge id and its store.
    store: std::sync::OnceLock<(String, BridgeStore)>,
}

impl std::fmt::Debug for GraphHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GraphHooks { .. }") // never the clientState
    }
}

impl GraphHooks {
    fn current(&self) -> Option<Subscription> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, value: Option<Subscription>) {
        if let Some((bridge, store)) = self.store.get() {
            let bytes = value.as_ref().and_then(|s| serde_json::to_vec(s).ok());
            if let Err(e) = store.put_provider_state(bridge, SUBSCRIPTION_KEY, bytes.as_deref()) {
                // Only costs a new subscription after a restart; polling covers the gap.
                warn!(%bridge, error = %e, "cannot store the Graph subscription");
            }
        }
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
    }

    /// Attaches the bridge store and takes the subscription stored there (if any) as the live
    /// one. An unreadable value is dropped with a warning (a new subscription replaces it).
    pub fn load(&self, bridge: &str, store: BridgeStore) -> Result<(), BridgeError> {
        let stored = store
            .provider_state(bridge, SUBSCRIPTION_KEY)
            .map_err(|e| BridgeError::local(bridge, e))?;
        let current = stored.and_then(|bytes| {
            serde_json::from_slice::<Subscription>(&bytes)
                .map_err(|e| warn!(%bridge, error = %e, "stored Graph subscription is unreadable; subscribing anew"))
                .ok()
        });
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = current;
        let _ = self.store.set((bridge.to_owned(), store));
        Ok(())
    }

    fn client_state_of(&self, subscription: &str) -> Option<String> {
        self.current()
            .filter(|s| s.id == subscription)
            .map(|s| s.client_state)
    }
}

/// How `POST /webhooks/graph/{bridge}` answers.
#[derive(Debug, PartialEq, Eq)]
pub enum WebhookAnswer {
    /// 200 `text/plain` with the validation token.
    Echo(String),
    /// 202: accepted (`hints` of them acted on).
    Accepted { hints: usize },
    /// 403: no notification carried this bridge's `clientState`; nothing was done.
    Forbidden,
    /// 404: no Graph bridge of that id.
    NotFound,
    /// 400: not a notification batch.
    BadRequest(String),
}

impl Bridges {
    /// A call of `POST /webhooks/graph/{id}` (`query`: the URL's query string). Never waits for
    /// a round: a notification only asks the bridge task for a round (`Bridges::pull_soon`).
    pub fn graph_webhook(&self, id: &str, query: Option<&str>, body: &[u8]) -> WebhookAnswer {
        let Some(handle) = self.handles.get(id) else {
            return WebhookAnswer::NotFound;
        };
        let Some(hooks) = &handle.graph_hooks else {
            return WebhookAnswer::NotFound;
        };
        if let Some(token) = query.and_then(validation_token) {
            return WebhookAnswer::Echo(token);
        }
        let batch = match triage(body, &|sub| hooks.client_state_of(sub)) {
            Ok(batch) => batch,
            Err(e) => return WebhookAnswer::BadRequest(e.to_string()),
        };
        if batch.rejected > 0 {
            warn!(bridge = %id, rejected = batch.rejected, "Graph notifications with an unknown subscription or a wrong clientState ignored");
        }
        if batch.hints.is_empty() {
            return if batch.rejected > 0 {
                WebhookAnswer::Forbidden
            } else {
                WebhookAnswer::Accepted { hints: 0 }
            };
        }
        let hints: Vec<Hint> = batch.hints.into_values().flatten().collect();
        if hints
            .iter()
            .any(|h| matches!(h, Hint::Resync | Hint::Reauthorize))
        {
            info!(bridge = %id, hints = ?hints, "Graph lifecycle event: the subscription is renewed at the next round");
            hooks.renew_now.store(true, Ordering::SeqCst);
        }
        self.pull_soon(id);
        WebhookAnswer::Accepted { hints: hints.len() }
    }
}

pub struct GraphProvider {
    bridge: String,
    /// `resource = "contacts"`: the bridge syncs the mailbox's contacts instead of its calendar.
    contacts: bool,
    hooks: std::sync::Arc<GraphHooks>,
    public_url: Option<String>,
    client: GraphClient,
    api_base: String,
    window_past: Duration,
    window_future: Duration,
    /// The mailbox's own address (`GET /me`), asked once: it keys the owner's attendee entry.
    mailbox: tokio::sync::OnceCell<String>,
    /// Graph id -> the document whose create made it, learned from the `transactionId` of
    /// pulled events, so the runner recognises its own create whose answer was lost.
    created: Mutex<BTreeMap<String, DocumentId>>,
}

/// The `transactionId` of the create of document `doc`: a retried `POST /me/events` with the
/// same value gets the event the first one made instead of a second one.
fn transaction_id(doc: &DocumentId) -> String {
    format!("driftless-{doc}")
}

/// The document whose create carried `transaction` (see [`transaction_id`]).
fn transaction_document(transaction: &str) -> Option<DocumentId> {
    transaction.strip_prefix("driftless-")?.parse().ok()
}

fn resource(bundle: &EventBundle) -> Resource {
    Resource {
        id: bundle.id().to_owned(),
        etag: bundle.etag().map(str::to_owned),
        raw: bundle.to_raw(),
    }
}

/// The expiration Graph granted (its answer; it may be earlier than asked), else the asked one.
fn granted(
    sub: Option<&driftless_bridges::graph::wire::Subscription>,
    asked: chrono::DateTime<Utc>,
) -> chrono::DateTime<Utc> {
    sub.and_then(|s| s.expiration_date_time.as_deref())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(asked, |t| t.with_timezone(&Utc))
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        jitter: rand::random::<f64>(),
        ..RetryPolicy::default()
    }
}

impl GraphProvider {
    pub fn new(config: &BridgeConfig) -> anyhow::Result<Self> {
        let settings = config.graph.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "bridge {}: a microsoft_graph bridge needs its settings",
                config.id
            )
        })?;
        let mut graph = GraphConfig::new(
            settings.client_id.clone(),
            settings.refresh_token.expose().to_owned(),
        );
        graph.client_secret = settings
            .client_secret
            .as_ref()
            .map(|s| s.expose().to_owned());
        graph.api_base = settings.api_base.clone();
        graph.token_url = settings.token_url.clone();
        let client =
            GraphClient::new(graph).map_err(|e| anyhow::anyhow!("bridge {}: {e}", config.id))?;
        Ok(Self {
            bridge: config.id.clone(),
            contacts: config.kind == BridgeKind::MicrosoftGraphContacts,
            hooks: std::sync::Arc::default(),
            public_url: settings.public_url.clone(),
            client,
            api_base: settings.api_base.clone(),
            window_past: settings.window_past,
            window_future: settings.window_future,
            mailbox: tokio::sync::OnceCell::new(),
            created: Mutex::new(BTreeMap::new()),
        })
    }

    /// The subscription state the webhook endpoint checks against.
    pub fn hooks(&self) -> std::sync::Arc<GraphHooks> {
        self.hooks.clone()
    }

    /// Makes sure a change-notification subscription exists and is not about to expire.
    /// Best effort: a failure is logged and polling goes on.
    async fn maintain_subscription(&self) {
        let Some(public_url) = &self.public_url else {
            return;
        };
        let now = Utc::now();
        let renew_now = self.hooks.renew_now.swap(false, Ordering::SeqCst);
        let expiration = (now + SUBSCRIPTION_LIFETIME)
            .min(now + chrono::TimeDelta::minutes(MAX_SUBSCRIPTION_MINUTES - 60));
        let expiration_text = expiration.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match self.hooks.current() {
            Some(sub) if !renew_now && !sub.needs_renewal(now) => {}
            Some(Subscription {
                id,
                client_state: state,
                ..
            }) => match self.client.renew_subscription(&id, &expiration_text).await {
                Ok(sub) => {
                    let granted = granted(sub.as_ref(), expiration);
                    info!(bridge = %self.bridge, subscription = %id, expires = %granted, "Graph subscription renewed");
                    self.hooks.set(Some(Subscription {
                        id,
                        client_state: state,
                        granted_at: now,
                        expiration: granted,
                    }));
                }
                Err(e) => {
                    warn!(bridge = %self.bridge, subscription = %id, error = %e, "renewing the Graph subscription failed; creating a new one");
                    self.hooks.set(None);
                    self.create_subscription(public_url, expiration, &expiration_text)
                        .await;
                }
            },
            None => {
                self.create_subscription(public_url, expiration, &expiration_text)
                    .await;
            }
        }
    }

    async fn create_subscription(
        &self,
        public_url: &str,
        expiration: chrono::DateTime<Utc>,
        expiration_text: &str,
    ) {
        let url = format!(
            "{}/webhooks/graph/{}",
            public_url.trim_end_matches('/'),
            self.bridge
        );
        let client_state = format!("{:032x}", rand::random::<u128>());
        let resource = if self.contacts {
            "/me/contacts"
        } else {
            "/me/events"
        };
        let body = subscription_body(resource, &url, Some(&url), &client_state, expiration_text);
        match self.client.create_subscription(&body).await {
            Ok(sub) => match sub.id.clone() {
                Some(id) => {
                    let granted = granted(Some(&sub), expiration);
                    info!(bridge = %self.bridge, subscription = %id, %url, expires = %granted, "Graph subscription created");
                    self.hooks.set(Some(Subscription {
                        id,
                        client_state,
                        granted_at: Utc::now(),
                        expiration: granted,
                    }));
                }
                None => {
                    warn!(bridge = %self.bridge, "Graph created a subscription without an id; polling only")
                }
            },
            Err(e) => {
                warn!(bridge = %self.bridge, error = %e, "creating the Graph subscription failed; polling only until the next round");
            }
        }
    }

    fn err(&self, e: DriveError, side: Side) -> BridgeError {
        let record_scope = match &e {
            DriveError::Http(GraphError::Status { status, .. }) => {
                (400..500).contains(status) && *status != 401 && *status != 429
            }
            DriveError::Http(GraphError::Body { .. }) => true,
            DriveError::Http(_) => false,
            DriveError::Sync(SyncError::Conflicts { .. } | SyncError::Unexpected { .. }) => true,
            DriveError::Sync(_) => false,
        };
        if record_scope && side == Side::Write {
            BridgeError::record(&self.bridge, e, None)
        } else {
            BridgeError::provider(&self.bridge, e, None)
        }
    }

    fn bundle(&self, id: &str, raw: &str) -> Result<EventBundle, BridgeError> {
        EventBundle::from_raw(raw).map_err(|e| {
            BridgeError::local(
                &self.bridge,
                format!("shadow of event {id} is unreadable: {e}"),
            )
        })
    }

    fn event(&self, record: &Record, doc_id: &DocumentId) -> Result<CalendarEvent, BridgeError> {
        record
            .provider_event(doc_id)
            .map_err(|what| BridgeError::record(&self.bridge, what, None))
    }

    /// The mailbox owner's address (`GET /me`, asked once per process).
    pub async fn mailbox(&self) -> Result<String, BridgeError> {
        self.mailbox
            .get_or_try_init(|| async {
                self.client
                    .mailbox_address()
                    .await
                    .map_err(|e| BridgeError::provider(&self.bridge, format!("GET /me: {e}"), None))
            })
            .await
            .cloned()
    }

    /// Graph ids are chosen by Graph; an event pulled with our `transactionId` names the
    /// document whose create made it.
    pub fn created_document(&self, id: &str) -> Option<DocumentId> {
        self.created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    /// Remembers the document behind each pulled event that carries our `transactionId`.
    fn learn_creates(&self, changed: &[Resource]) {
        let mut created = self
            .created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in changed {
            let doc = EventBundle::from_raw(&r.raw).ok().and_then(|b| {
                b.event
                    .get("transactionId")
                    .and_then(Value::as_str)
                    .and_then(transaction_document)
            });
            if let Some(doc) = doc {
                created.insert(r.id.clone(), doc);
            }
        }
    }

    pub fn translate(&self, raw: &str, existing: Option<&Record>) -> Result<Record, String> {
        if self.contacts {
            return contacts::translate(raw, existing);
        }
        let bundle = EventBundle::from_raw(raw).map_err(|e| e.to_string())?;
        let event = event_from_graph(&bundle, &self.bridge).map_err(|e| e.to_string())?;
        Ok(Record::Event(Box::new(event)))
    }

    pub fn uid(&self, raw: &str) -> Option<String> {
        if self.contacts {
            return None; // Graph contact ids are stable: nothing to re-match by
        }
        EventBundle::from_raw(raw).ok()?.ical_uid().map(series_uid)
    }

    /// Whether a series re-listed this round is what the shadow holds, for the runner: the same
    /// master etag, the same instances and cancelled keys, and the same canonical event. Only the
    /// occurrences' own etags may differ (Graph re-lists every occurrence with a new etag when
    /// the master changes, our own PATCH included); a stale occurrence etag costs one 412 and a
    /// merge on the next write of that occurrence, never a lost change.
    fn same_series(&self, stored: &EventBundle, listed: &EventBundle) -> bool {
        if stored == listed {
            return true;
        }
        stored.etag() == listed.etag()
            && stored.instances.keys().eq(listed.instances.keys())
            && stored.cancelled == listed.cancelled
            && matches!(
                (event_from_graph(stored, &self.bridge), event_from_graph(listed, &self.bridge)),
                (Ok(a), Ok(b)) if a == b
            )
    }

    /// The window and delta link of this round: the stored ones, unless the configured window
    /// has drifted away from the stored one (then a fresh, complete round).
    fn round_start(&self, token: Option<&str>) -> (Window, Option<String>) {
        let fresh = Window::around(Utc::now(), self.window_past, self.window_future);
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return (fresh, None);
        };
        match serde_json::from_str::<Cursor>(token) {
            Ok(cursor) => {
                let stored = Window {
                    start: cursor.start,
                    end: cursor.end,
                };
                if stored.needs_refresh(&fresh, WINDOW_TOLERANCE) {
                    info!(bridge = %self.bridge, "sync window moved; complete round over the new window");
                    (fresh, None)
                } else {
                    (stored, Some(cursor.delta_link))
                }
            }
            Err(e) => {
                warn!(bridge = %self.bridge, error = %e, "stored cursor unreadable; complete round");
                (fresh, None)
            }
        }
    }

    pub async fn changes(
        &self,
        token: Option<&str>,
        links: &BTreeMap<String, Shadow>,
    ) -> Result<Changes, BridgeError> {
        self.maintain_subscription().await;
        if self.contacts {
            return self.contact_changes(token, links).await;
        }
        let (window, delta_link) = self.round_start(token);
        let mut stored: BTreeMap<&str, EventBundle> = BTreeMap::new();
        let mut known = Vec::with_capacity(links.len());
        for (id, shadow) in links {
            let bundle = self.bundle(id, &shadow.raw)?;
            known.push(KnownEvent {
                id: id.clone(),
                ..KnownEvent::from_bundle(&shadow.doc, &bundle)
            });
            stored.insert(id, bundle);
        }
        let pull = CalendarPull::new(
            calendar_delta_url(&self.api_base, &window),
            delta_link.clone(),
            window,
            known,
            retry(),
        );
        let outcome = self
            .client
            .run_calendar_pull(pull)
            .await
            .map_err(|e| self.err(e, Side::Pull))?;
        if outcome.complete && delta_link.is_some() {
            warn!(bridge = %self.bridge, "delta link expired at Graph (410 SyncStateNotFound); complete round merging with the link table");
        }
        let next_token = serde_json::to_string(&Cursor {
            start: window.start,
            end: window.end,
            delta_link: outcome.delta_link.clone(),
        })
        .map_err(|e| BridgeError::local(&self.bridge, e))?;
        let mut changes = Changes {
            complete: outcome.complete,
            next_token,
            removed: outcome.deleted.clone(),
            ..Changes::default()
        };
        let listed = |changes: &mut Changes, id: &str| {
            changes.listed.push(Listed {
                href: id.to_owned(),
                etag: None,
            })
        };
        for (id, row) in &outcome.singles {
            listed(&mut changes, id);
            let bundle = EventBundle::single(row.clone());
            if stored.get(id.as_str()) != Some(&bundle) {
                changes.changed.push(resource(&bundle));
            }
        }
        for (id, change) in &outcome.series {
            let before = stored.get(id.as_str()).cloned();
            let Some(mut bundle) = apply_series(before.clone(), change) else {
                info!(bridge = %self.bridge, event = %id, "instances of a series whose master is not visible; skipped");
                continue;
            };
            // Graph has no EXDATE: a deleted occurrence is only ever missing. A round lists every
            // instance of a series in the window when it is a complete listing, and also when the
            // series is new here (the delta link never reported any of its instances, so an
            // incremental round lists them all); only then does a missing one mean deleted.
            if outcome.complete || before.is_none() {
                infer_deleted_occurrences(&mut bundle, &window);
            }
            // Listed even when unchanged, so a complete listing does not take it for deleted.
            listed(&mut changes, id);
            if !before
                .as_ref()
                .is_some_and(|b| self.same_series(b, &bundle))
            {
                changes.changed.push(Resource {
                    id: id.clone(),
                    ..resource(&bundle)
                });
            }
        }
        // Still at Graph, only outside the window: listed, so it is neither changed nor removed.
        for id in &outcome.left_window {
            info!(bridge = %self.bridge, event = %id, "event left the sync window; kept as it is");
            listed(&mut changes, id);
        }
        self.learn_creates(&changes.changed);
        Ok(changes)
    }

    /// Runs one write; on 412 returns Graph's current copy of the written item instead.
    async fn write(&self, op: WriteOp) -> Result<(GraphWriteOutcome, Option<Value>), BridgeError> {
        let kind = if self.contacts {
            ItemKind::Contact
        } else {
            ItemKind::Event
        };
        let mut current = None;
        let outcome = self
            .client
            .run_write(WriteJob::new(kind, op, retry()), |fresh| {
                current = Some(fresh);
                None
            })
            .await
            .map_err(|e| self.err(e, Side::Write))?;
        Ok((outcome, current))
    }

    pub async fn create(
        &self,
        doc_id: &DocumentId,
        record: &Record,
    ) -> Result<Resource, BridgeError> {
        if self.contacts {
            return self.create_contact(doc_id, record).await;
        }
        let event = self.event(record, doc_id)?;
        let mut body = event_create_body(&event).map_err(|e| {
            BridgeError::record(&self.bridge, format!("document {doc_id}: {e}"), None)
        })?;
        if let Some(fields) = body.as_object_mut() {
            fields.insert(
                "transactionId".into(),
                Value::String(transaction_id(doc_id)),
            );
        }
        match self.write(WriteOp::Create { body }).await? {
            (GraphWriteOutcome::Stored(row), _) => Ok(resource(&EventBundle::single(row))),
            (other, _) => Err(BridgeError::record(
                &self.bridge,
                format!("creating the event of document {doc_id}: Graph answered {other:?}"),
                None,
            )),
        }
    }

    pub async fn update(
        &self,
        doc_id: &DocumentId,
        id: &str,
        record: &Record,
        shadow: &Shadow,
    ) -> Result<WriteOutcome, BridgeError> {
        if self.contacts {
            return self.update_contact(doc_id, id, record, shadow).await;
        }
        let event = self.event(record, doc_id)?;
        let mut bundle = self.bundle(id, &shadow.raw)?;
        let translate_err =
            |e: driftless_bridges::graph::translate::TranslateError| -> BridgeError {
                BridgeError::record(
                    &self.bridge,
                    format!("document {doc_id}, event {id}: {e}"),
                    None,
                )
            };
        // A meeting organized elsewhere: only the owner's response is this mailbox's to write
        // (the runner hands it the copy's own shared fields).
        let writes = if bundle.is_organizer() {
            let unwritable = unwritable_changes(&bundle, &event).map_err(translate_err)?;
            if !unwritable.is_empty() {
                warn!(bridge = %self.bridge, doc = %doc_id, event = %id, fields = ?unwritable, "changes Graph cannot take are not written");
            }
            event_writes(&bundle, &event).map_err(translate_err)?
        } else {
            match self.mailbox().await {
                Ok(mailbox) => response_write(&bundle, &event, &mailbox)
                    .into_iter()
                    .collect(),
                Err(e) => {
                    warn!(bridge = %self.bridge, doc = %doc_id, event = %id, error = %e, "mailbox address unknown; the response is not sent");
                    Vec::new()
                }
            }
        };
        if writes.is_empty() {
            return Ok(WriteOutcome::Unchanged);
        }
        for write in writes {
            let op = WriteOp::from(write);
            let target = op.id().unwrap_or_default().to_owned();
            let is_delete = matches!(op, WriteOp::Delete { .. });
            match self.write(op).await? {
                (GraphWriteOutcome::NothingToWrite, Some(current)) => {
                    bundle.replace_row(&target, current);
                    return Ok(WriteOutcome::Stale(Some(Resource {
                        id: id.to_owned(),
                        ..resource(&bundle)
                    })));
                }
                (GraphWriteOutcome::Stored(row), _) => bundle.replace_row(&target, row),
                // A meeting response (202, no body): the next pull brings the answered event.
                (GraphWriteOutcome::Accepted, _) => {}
                (GraphWriteOutcome::Deleted, _) if is_delete => bundle.cancel_instance(&target),
                // The item is gone at Graph: the next pull reports it.
                (GraphWriteOutcome::Gone, _) if target == id => {
                    return Ok(WriteOutcome::Stale(None));
                }
                (GraphWriteOutcome::Gone, _) => bundle.forget_instance(&target),
                (other, _) => {
                    return Err(BridgeError::record(
                        &self.bridge,
                        format!("writing {target} of event {id}: Graph answered {other:?}"),
                        None,
                    ));
                }
            }
        }
        Ok(WriteOutcome::Written(Resource {
            id: id.to_owned(),
            ..resource(&bundle)
        }))
    }

    /// The shared values Graph's copy (`shadow`) keeps because `record`'s cannot be written
    /// there (path -> Graph's canonical value): a rule Graph has no pattern for, on the
    /// organizer's copy of a series. The runner lists them as conflicts on the record.
    pub fn held_back(
        &self,
        doc_id: &DocumentId,
        record: &Record,
        shadow: &Shadow,
    ) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        if self.contacts {
            return out;
        }
        let (Ok(event), Ok(bundle)) = (
            record.provider_event(doc_id),
            EventBundle::from_raw(&shadow.raw),
        ) else {
            return out;
        };
        if !bundle.is_organizer() {
            return out;
        }
        match held_back_rule(&bundle, &event) {
            Ok(Some((theirs, reason))) => {
                warn!(bridge = %self.bridge, doc = %doc_id, event = %bundle.id(), %reason, "a rule Graph cannot express is not written; Graph keeps its rule, the record lists both as a conflict");
                if let Ok(value) = serde_json::to_value(theirs) {
                    out.insert("recurrence".to_owned(), value);
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!(bridge = %self.bridge, doc = %doc_id, error = %e, "cannot compare the rules")
            }
        }
        out
    }

    pub async fn delete(
        &self,
        _doc_id: &DocumentId,
        id: &str,
        shadow: &Shadow,
    ) -> Result<DeleteOutcome, BridgeError> {
        if self.contacts {
            return self.delete_contact(id, shadow).await;
        }
        let mut bundle = self.bundle(id, &shadow.raw)?;
        let op = WriteOp::Delete {
            id: id.to_owned(),
            etag: bundle.etag().map(str::to_owned),
        };
        Ok(match self.write(op).await? {
            (GraphWriteOutcome::NothingToWrite, Some(current)) => {
                bundle.replace_row(id, current);
                DeleteOutcome::Stale(Some(Resource {
                    id: id.to_owned(),
                    ..resource(&bundle)
                }))
            }
            (GraphWriteOutcome::Deleted | GraphWriteOutcome::Gone, _) => DeleteOutcome::Deleted,
            (other, _) => {
                return Err(BridgeError::record(
                    &self.bridge,
                    format!("deleting event {id}: Graph answered {other:?}"),
                    None,
                ));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_id_names_its_document_and_nothing_else() {
        let doc = DocumentId::from_bytes(&[7u8; 16]);
        assert_eq!(transaction_document(&transaction_id(&doc)), Some(doc));
        assert_eq!(transaction_document("driftless-not-a-document"), None);
        assert_eq!(transaction_document("someone-else-7"), None);
    }

    #[test]
    fn subscriptions_renew_a_day_or_half_their_life_before_the_end() {
        let at = |hours: i64| {
            chrono::DateTime::<Utc>::from_timestamp(1_800_000_000 + hours * 3600, 0)
                .unwrap_or_default()
        };
        let sub = |granted: i64, expires: i64| Subscription {
            id: "s".into(),
            client_state: "c".into(),
            granted_at: at(granted),
            expiration: at(expires),
        };
        // Three days granted: renewed once a day is left.
        assert!(!sub(0, 72).needs_renewal(at(47)));
        assert!(sub(0, 72).needs_renewal(at(48)));
        // Two hours granted: renewed halfway.
        assert!(!sub(0, 2).needs_renewal(at(0)));
        assert!(sub(0, 2).needs_renewal(at(1)));
        // Expired: renewed (and recreated if Graph no longer has it).
        assert!(sub(0, 2).needs_renewal(at(3)));
    }
}
