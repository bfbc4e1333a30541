//! The Google Calendar provider of the bridge runner: drives the sans-IO state machines of
//! `driftless_bridges::google::sync` with the OAuth2 client.
//!
//! - A record is a *series* (master plus exceptions); its external id is the master's event id
//!   and its shadow `raw` is the [`StoredSeries`] JSON, so exceptions and cancelled instances
//!   seen in earlier pulls are kept when a later pull reports only some of them.
//! - Pull: `events.list` with the stored `syncToken` (a 410 makes the round a full listing that
//!   the runner merges with the link table); every listed series is reported with its merged
//!   series, deleted masters as removals. Exceptions of an unknown series without their master
//!   (an invitation to one instance) are skipped.
//! - Writes: a new document is inserted under the hex form of its document id, so a retried
//!   insert meets 409 and adopts its earlier write; PATCH / DELETE carry `If-Match`; a 412
//!   hands the fresh series back as stale for the runner to merge. Rate limits and 5xx are
//!   retried inside the state machines (exponential backoff with jitter, `Retry-After`).
//!
//! Must not: touch documents or the bridge store (the runner does), or print a secret.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use driftless_bridges::google::channel::{Channel, stop_body, watch_body};
use driftless_bridges::google::client::{ClientError, GoogleClient, GoogleConfig};
use driftless_bridges::google::sync::{
    Pull, PullOptions, PullStep, Push, PushOptions, PushOutcome, PushStep, Request, Response,
    SyncError, group_series, merge_series,
};
use driftless_bridges::google::translate::{
    RenderContext, StoredSeries, event_from_series, event_id_for_document,
};
use driftless_bridges::google::wire::Failure;
use driftless_bridges::sync::{self, FailureScope, Listed};
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::CalendarEvent;
use tracing::{info, warn};

use super::BridgeError;
use super::provider::{Changes, DeleteOutcome, Resource, WriteOutcome};
use super::record::Record;
use super::store::Shadow;
use crate::config::BridgeConfig;

/// Which side of a round a failure happened on: a pull failure stops the round, a write
/// failure that concerns one record only parks that record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Pull,
    Write,
}

/// One step of either state machine.
enum Step<O> {
    Send(Request),
    Sleep(Duration),
    Done(O),
    Failed(SyncError),
}

/// [`Pull`] and [`Push`] seen alike, so one loop drives both.
trait Machine {
    type Outcome;
    fn step(&mut self) -> Step<Self::Outcome>;
    fn feed(&mut self, response: Response);
}

impl Machine for Pull {
    type Outcome = driftless_bridges::google::sync::PullOutcome;
    fn step(&mut self) -> Step<Self::Outcome> {
        match self.poll() {
            PullStep::Send(r) => Step::Send(r),
            PullStep::Sleep(d) => Step::Sleep(d),
            PullStep::Done(o) => Step::Done(o),
            PullStep::Failed(e) => Step::Failed(e),
        }
    }
    fn feed(&mut self, response: Response) {
        self.on_response(response);
    }
}

impl Machine for Push {
    type Outcome = PushOutcome;
    fn step(&mut self) -> Step<Self::Outcome> {
        match self.poll() {
            PushStep::Send(r) => Step::Send(r),
            PushStep::Sleep(d) => Step::Sleep(d),
            PushStep::Done(o) => Step::Done(o),
            PushStep::Failed(e) => Step::Failed(e),
        }
    }
    fn feed(&mut self, response: Response) {
        self.on_response(response);
    }
}

pub struct GoogleProvider {
    bridge: String,
    client: GoogleClient,
    /// The calendar's time zone as the last pull reported it (floating times are written in it).
    calendar_zone: Mutex<Option<String>>,
}

fn resource(series: &StoredSeries) -> Resource {
    Resource {
        id: series.id().to_owned(),
        etag: series.etag().map(str::to_owned),
        raw: series.to_json(),
    }
}

impl GoogleProvider {
    pub fn new(config: &BridgeConfig) -> anyhow::Result<Self> {
        let settings = config.google.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "bridge {}: a google_calendar bridge needs its settings",
                config.id
            )
        })?;
        let mut google = GoogleConfig::new(
            settings.calendar_id.clone(),
            settings.client_id.clone(),
            settings.client_secret.clone(),
            settings.refresh_token.clone(),
        );
        google.api_base = settings.api_base.clone();
        google.token_url = settings.token_url.clone();
        let client =
            GoogleClient::new(google).map_err(|e| anyhow::anyhow!("bridge {}: {e}", config.id))?;
        Ok(Self {
            bridge: config.id.clone(),
            client,
            calendar_zone: Mutex::new(None),
        })
    }

    fn client_err(&self, e: ClientError) -> BridgeError {
        match e {
            ClientError::BadEventId { .. } | ClientError::BadEtag { .. } => {
                BridgeError::record(&self.bridge, e, None)
            }
            ClientError::Transport { .. }
            | ClientError::Token { .. }
            | ClientError::TokenMalformed { .. } => BridgeError::provider(&self.bridge, e, None),
        }
    }

    /// A state machine's failure, as the whole provider's or (writes only) this record's.
    fn sync_err(&self, e: SyncError, side: Side) -> BridgeError {
        let record_scope = match &e {
            SyncError::Provider { failure, .. } => match failure {
                Failure::RateLimited
                | Failure::QuotaExceeded
                | Failure::ServerError
                | Failure::Unauthorized
                | Failure::FullSyncRequired => false,
                Failure::Other { status, .. } => {
                    sync::failure_scope(*status) == FailureScope::Record
                }
                Failure::NotFound
                | Failure::Duplicate
                | Failure::ConditionNotMet
                | Failure::AlreadyDeleted => true,
            },
            SyncError::Malformed { .. } | SyncError::Translate { .. } => true,
            SyncError::TooManyResyncs(_) => false,
            SyncError::Finished => return BridgeError::local(&self.bridge, e),
        };
        if record_scope && side == Side::Write {
            BridgeError::record(&self.bridge, e, None)
        } else {
            BridgeError::provider(&self.bridge, e, None)
        }
    }

    /// Runs a state machine to its end, carrying out its requests and pauses.
    async fn drive<M: Machine>(
        &self,
        machine: &mut M,
        side: Side,
    ) -> Result<M::Outcome, BridgeError> {
        loop {
            match machine.step() {
                Step::Send(request) => {
                    let response = self
                        .client
                        .execute(&request)
                        .await
                        .map_err(|e| self.client_err(e))?;
                    machine.feed(response);
                }
                Step::Sleep(pause) => {
                    info!(bridge = %self.bridge, pause_ms = pause.as_millis() as u64, "Google asked to slow down; backing off");
                    tokio::time::sleep(pause).await;
                }
                Step::Done(outcome) => return Ok(outcome),
                Step::Failed(e) => return Err(self.sync_err(e, side)),
            }
        }
    }

    fn stored(&self, id: &str, raw: &str) -> Result<StoredSeries, BridgeError> {
        StoredSeries::from_json(raw).map_err(|e| {
            BridgeError::local(
                &self.bridge,
                format!("shadow of event {id} is unreadable: {e}"),
            )
        })
    }

    fn push_options(&self) -> PushOptions {
        let calendar_zone = self
            .calendar_zone
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        PushOptions {
            ctx: RenderContext { calendar_zone },
            retry: Default::default(),
            seed: rand::random(),
        }
    }

    fn event(&self, record: &Record, doc_id: &DocumentId) -> Result<CalendarEvent, BridgeError> {
        record
            .provider_event(doc_id)
            .map_err(|what| BridgeError::record(&self.bridge, what, None))
    }

    /// Runs one push of `event` onto `stored` (None: insert under the document's id).
    async fn push(
        &self,
        doc_id: &DocumentId,
        event: CalendarEvent,
        stored: Option<StoredSeries>,
    ) -> Result<PushOutcome, BridgeError> {
        let mut push = Push::new(
            doc_id.to_string(),
            event,
            stored,
            event_id_for_document(doc_id.as_bytes()),
            self.push_options(),
        )
        .map_err(|e| self.sync_err(e, Side::Write))?;
        let outcome = self.drive(&mut push, Side::Write).await?;
        if let PushOutcome::Written { problems, .. } = &outcome
            && !problems.is_empty()
        {
            warn!(bridge = %self.bridge, doc = %doc_id, problems = ?problems, "Google refused part of the record");
        }
        Ok(outcome)
    }

    /// Opens a push channel (`events.watch`) delivering to `address`; the answer names the
    /// watched resource and the expiration Google chose. `token` is kept in the returned channel.
    pub async fn watch(
        &self,
        channel_id: &str,
        address: &str,
        token: &str,
    ) -> Result<Channel, BridgeError> {
        let request = Request::Watch {
            body: watch_body(channel_id, address, token, None),
        };
        let response = self
            .client
            .execute(&request)
            .await
            .map_err(|e| self.client_err(e))?;
        if !response.is_success() {
            return Err(BridgeError::provider(
                &self.bridge,
                format!(
                    "events.watch for channel {channel_id} answered {}",
                    response.status
                ),
                response.retry_after,
            ));
        }
        let mut channel = Channel::from_watch_response(&response.body).map_err(|e| {
            BridgeError::provider(
                &self.bridge,
                format!("events.watch answer for channel {channel_id} is unreadable: {e}"),
                None,
            )
        })?;
        channel.token = Some(token.to_owned());
        Ok(channel)
    }

    /// Stops a push channel (`channels/stop`); one Google no longer knows (404) counts as stopped.
    pub async fn stop_channel(&self, channel: &Channel) -> Result<(), BridgeError> {
        let request = Request::StopChannel {
            body: stop_body(channel),
        };
        let response = self
            .client
            .execute(&request)
            .await
            .map_err(|e| self.client_err(e))?;
        if response.is_success() || response.status == 404 {
            Ok(())
        } else {
            Err(BridgeError::provider(
                &self.bridge,
                format!(
                    "channels/stop for channel {} answered {}",
                    channel.id, response.status
                ),
                response.retry_after,
            ))
        }
    }

    pub fn created_document(&self, id: &str) -> Option<DocumentId> {
        if id.len() != 32 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..id.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(id.get(i..i + 2)?, 16).ok())
            .collect();
        let doc = DocumentId::from_bytes(&bytes?);
        (event_id_for_document(doc.as_bytes()) == id).then_some(doc)
    }

    pub fn translate(&self, raw: &str) -> Result<Record, String> {
        let series = StoredSeries::from_json(raw).map_err(|e| format!("stored series: {e}"))?;
        let event = event_from_series(&series).map_err(|e| e.to_string())?;
        Ok(Record::Event(Box::new(event)))
    }

    pub fn uid(raw: &str) -> Option<String> {
        StoredSeries::from_json(raw)
            .ok()?
            .ical_uid()
            .map(str::to_owned)
    }

    pub async fn changes(
        &self,
        token: Option<&str>,
        links: &BTreeMap<String, Shadow>,
    ) -> Result<Changes, BridgeError> {
        let options = PullOptions {
            seed: rand::random(),
            ..PullOptions::default()
        };
        let mut pull = Pull::new(token.map(str::to_owned), options);
        let outcome = self.drive(&mut pull, Side::Pull).await?;
        if outcome.resynced {
            warn!(bridge = %self.bridge, "sync token expired at Google (410); full resync merging with the link table");
        }
        if let Some(zone) = &outcome.calendar_zone {
            *self
                .calendar_zone
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(zone.clone());
        }
        let mut changes = Changes {
            complete: outcome.complete,
            next_token: outcome.next_sync_token.clone(),
            problems: outcome
                .problems
                .iter()
                .map(|p| (p.event_id.clone().unwrap_or_default(), p.reason.clone()))
                .collect(),
            ..Changes::default()
        };
        for change in group_series(&outcome.events) {
            let id = change.series_id.clone();
            if change.is_deleted() {
                changes.removed.push(id);
                continue;
            }
            let stored = match links.get(&id) {
                Some(shadow) => Some(self.stored(&id, &shadow.raw)?),
                None if change.master.is_none() => {
                    info!(bridge = %self.bridge, event = %id, "exceptions of a series whose master is not visible; skipped");
                    continue;
                }
                None => None,
            };
            // Listed even when unusable, so a full listing does not take it for deleted.
            changes.listed.push(Listed {
                href: id.clone(),
                etag: None,
            });
            match merge_series(stored.as_ref(), &change) {
                // Our own write coming back (or a resync listing it unchanged): nothing to do,
                // as for a DAV resource whose etag matches the shadow's.
                Ok(series) if stored.as_ref() == Some(&series) => {}
                Ok(series) => changes.changed.push(Resource {
                    id,
                    ..resource(&series)
                }),
                Err(e) => changes.problems.push((id, e.to_string())),
            }
        }
        Ok(changes)
    }

    pub async fn create(
        &self,
        doc_id: &DocumentId,
        record: &Record,
    ) -> Result<Resource, BridgeError> {
        let event = self.event(record, doc_id)?;
        match self.push(doc_id, event, None).await? {
            PushOutcome::Written {
                stored: Some(series),
                ..
            }
            | PushOutcome::Stale { fresh: series, .. } => Ok(resource(&series)),
            PushOutcome::Written { stored: None, .. } | PushOutcome::Gone { .. } => {
                Err(BridgeError::record(
                    &self.bridge,
                    format!(
                        "event {} of document {doc_id} was deleted at Google; its id cannot be \
                         used again",
                        event_id_for_document(doc_id.as_bytes())
                    ),
                    None,
                ))
            }
        }
    }

    pub async fn update(
        &self,
        doc_id: &DocumentId,
        id: &str,
        record: &Record,
        shadow: &Shadow,
    ) -> Result<WriteOutcome, BridgeError> {
        let event = self.event(record, doc_id)?;
        let stored = self.stored(id, &shadow.raw)?;
        Ok(match self.push(doc_id, event, Some(stored)).await? {
            PushOutcome::Written { writes: 0, .. } => WriteOutcome::Unchanged,
            PushOutcome::Written {
                stored: Some(series),
                ..
            } => WriteOutcome::Written(resource(&series)),
            PushOutcome::Stale { fresh, .. } => WriteOutcome::Stale(Some(resource(&fresh))),
            // Deleted at Google meanwhile: the next pull reports it.
            PushOutcome::Written { stored: None, .. } | PushOutcome::Gone { .. } => {
                WriteOutcome::Stale(None)
            }
        })
    }

    pub async fn delete(
        &self,
        doc_id: &DocumentId,
        id: &str,
        shadow: &Shadow,
    ) -> Result<DeleteOutcome, BridgeError> {
        let stored = self.stored(id, &shadow.raw)?;
        let mut event = event_from_series(&stored)
            .map_err(|e| BridgeError::record(&self.bridge, format!("event {id}: {e}"), None))?;
        event.deleted = true;
        Ok(match self.push(doc_id, event, Some(stored)).await? {
            PushOutcome::Written { stored: None, .. } | PushOutcome::Gone { .. } => {
                DeleteOutcome::Deleted
            }
            PushOutcome::Stale { fresh, .. } => DeleteOutcome::Stale(Some(resource(&fresh))),
            PushOutcome::Written {
                stored: Some(_), ..
            } => {
                return Err(BridgeError::record(
                    &self.bridge,
                    format!("event {id}: the delete was not sent"),
                    None,
                ));
            }
        })
    }
}
