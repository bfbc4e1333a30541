//! What the bridge runner asks of a provider, whatever it is: a page of changes since a cursor,
//! translation of a stored resource to the canonical record, and writes of one record (create
//! with an idempotency key derived from the document id where the provider lets the client
//! choose it, update and delete under a
//! precondition). Each provider (`dav`, `google`, `graph`) implements these over its own client and
//! wire format; everything else a round does (shadow diffing, the outbox, failed jobs, pending
//! imports, delete guards, policies) lives once, in the runner (`super`).
//!
//! A resource's `raw` is what the shadow stores: the provider's bytes for DAV, the stored series
//! a quiet record writes nothing.
//! Must not: touch documents or the bridge store.

use std::collections::BTreeMap;

use driftless_client_protocol::DocumentId;

use super::BridgeError;
use super::dav::DavProvider;
use super::google::GoogleProvider;
use super::graph::GraphProvider;
use super::hubspot::HubSpotProvider;
use super::record::Record;
use super::salesforce::SalesforceProvider;
use super::store::Shadow;
use crate::config::{BridgeConfig, BridgeKind};

/// One record as the provider holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The external id (the link's id): an href, an event id.
    pub id: String,
    pub etag: Option<String>,
    /// The shadow's raw form (see the module docs).
    pub raw: String,
}

/// What changed at the provider since a cursor.
#[derive(Debug, Default)]
pub struct Changes {
    /// Every changed (or, when `complete`, every) record id, with the etag the listing gave.
    pub listed: Vec<driftless_bridges::sync::Listed>,
    /// The bodies of the listed records that needed fetching.
    pub changed: Vec<Resource>,
    /// Ids the provider reports deleted.
    pub removed: Vec<String>,
    /// A full listing: a known record it does not contain is gone.
    pub complete: bool,
    /// The cursor to store once the changes are applied.
    pub next_token: String,
    /// Records the provider reported but that cannot be used (`(id, reason)`); skipped until
    /// they change.
    pub problems: Vec<(String, String)>,
    /// Merges made at the provider: (survivor id, linked ids merged into it). Applied before the
    /// rest of the changes (see `merges.rs`).
    pub merges: Vec<(String, Vec<String>)>,
}

/// How an update ended.
#[derive(Debug)]
pub enum WriteOutcome {
    /// Nothing differed: no request was sent.
    Unchanged,
    /// Written; the resource as the provider now has it.
    Written(Resource),
    /// The precondition failed: the provider's current copy (`None`: deleted there) to merge
    /// before trying again.
    Stale(Option<Resource>),
}

/// How a delete ended.
#[derive(Debug)]
pub enum DeleteOutcome {
    /// Deleted (or already gone).
    Deleted,
    /// The precondition failed; the provider's current copy (`None`: no longer readable).
    Stale(Option<Resource>),
}

/// An update the outbox is about to make (see [`Provider::stage_updates`]).
#[derive(Debug, Clone)]
pub struct StagedUpdate {
    pub doc: DocumentId,
    /// The external id.
    pub id: String,
    pub record: Record,
    pub shadow: Shadow,
}

/// The provider of one bridge.
pub enum Provider {
    Dav(DavProvider),
    Google(Box<GoogleProvider>),
    HubSpot(Box<HubSpotProvider>),
    Graph(Box<GraphProvider>),
    Salesforce(Box<SalesforceProvider>),
}

impl Provider {
    /// The provider of a `[[bridges]]` entry.
    pub fn new(config: &BridgeConfig) -> anyhow::Result<Self> {
        Ok(match config.kind {
            BridgeKind::CalDav | BridgeKind::CardDav => Self::Dav(DavProvider::new(config)?),
            BridgeKind::GoogleCalendar => Self::Google(Box::new(GoogleProvider::new(config)?)),
            BridgeKind::HubSpot => Self::HubSpot(Box::new(HubSpotProvider::new(config)?)),
            BridgeKind::MicrosoftGraph | BridgeKind::MicrosoftGraphContacts => {
                Self::Graph(Box::new(GraphProvider::new(config)?))
            }
            BridgeKind::Salesforce => Self::Salesforce(Box::new(SalesforceProvider::new(config)?)),
        })
    }

    /// The changes since `token` (`None`: list everything). `links` is the link table, for
    /// providers that only fetch what differs from it.
    pub async fn changes(
        &self,
        token: Option<&str>,
        links: &BTreeMap<String, Shadow>,
    ) -> Result<Changes, BridgeError> {
        match self {
            Self::Dav(p) => p.changes(token, links).await,
            Self::Google(p) => p.changes(token, links).await,
            Self::HubSpot(p) => p.changes(token, links).await,
            Self::Graph(p) => p.changes(token, links).await,
            Self::Salesforce(p) => p.changes(token, links).await,
        }
    }

    /// The canonical record of a stored resource (`existing`: the shadow's record, for values
    /// that keep their slot ids).
    pub fn translate(&self, raw: &str, existing: Option<&Record>) -> Result<Record, String> {
        match self {
            Self::Dav(p) => p.translate(raw, existing),
            Self::Google(p) => p.translate(raw),
            Self::HubSpot(p) => p.translate(raw, existing),
            Self::Graph(p) => p.translate(raw, existing),
            Self::Salesforce(p) => p.translate(raw, existing),
        }
    }

    /// When the provider last modified the stored resource (unix ms), where it says so.
    pub fn modified_at_ms(&self, raw: &str) -> Option<u64> {
        match self {
            Self::HubSpot(p) => p.modified_at_ms(raw),
            Self::Salesforce(p) => p.modified_at_ms(raw),
            Self::Dav(_) | Self::Google(_) | Self::Graph(_) => None,
        }
    }

    /// The UID the resource carries (to re-match a record after a resync).
    pub fn uid(&self, raw: &str) -> Option<String> {
        match self {
            Self::Dav(_) => super::translate::resource_uid(raw),
            Self::Google(_) => GoogleProvider::uid(raw),
            // HubSpot ids are stable: nothing to re-match by.
            Self::HubSpot(_) => None,
            Self::Graph(p) => p.uid(raw),
            // Salesforce ids are stable: nothing to re-match by.
            Self::Salesforce(_) => None,
        }
    }

    /// The document whose create uses external id `id`, if `id` has that form.
    pub fn created_document(&self, id: &str) -> Option<DocumentId> {
        match self {
            Self::Dav(p) => p.created_document(id),
            Self::Google(p) => p.created_document(id),
            Self::HubSpot(p) => p.created_document(id),
            Self::Graph(p) => p.created_document(id),
            Self::Salesforce(p) => p.created_document(id),
        }
    }

    /// Creates `record` (document `doc_id`) under an id derived from the document id, so a
    /// retried create finds and adopts its own earlier write. Returns the resource as stored.
    pub async fn create(
        &self,
        doc_id: &DocumentId,
        record: &Record,
    ) -> Result<Resource, BridgeError> {
        match self {
            Self::Dav(p) => p.create(doc_id, record).await,
            Self::Google(p) => p.create(doc_id, record).await,
            Self::HubSpot(p) => p.create(doc_id, record).await,
            Self::Graph(p) => p.create(doc_id, record).await,
            Self::Salesforce(p) => p.create(doc_id, record).await,
        }
    }

    /// Writes `record` onto the resource of `shadow` (at `id`) if it differs, under the
    /// shadow's etag.
    pub async fn update(
        &self,
        doc_id: &DocumentId,
        id: &str,
        record: &Record,
        shadow: &Shadow,
    ) -> Result<WriteOutcome, BridgeError> {
        match self {
            Self::Dav(p) => p.update(doc_id, id, record, shadow).await,
            Self::Google(p) => p.update(doc_id, id, record, shadow).await,
            Self::HubSpot(p) => p.update(doc_id, id, record, shadow).await,
            Self::Graph(p) => p.update(doc_id, id, record, shadow).await,
            Self::Salesforce(p) => p.update(doc_id, id, record, shadow).await,
        }
    }

    /// Whether the provider writes updates in bulk ([`Provider::stage_updates`]).
    pub fn stages_updates(&self) -> bool {
        matches!(self, Self::Salesforce(_))
    }

    /// Sends the updates of `items` in bulk where the provider can; each record's
    /// [`Provider::update`] then returns the staged answer when it would write the same thing
    /// (and writes alone otherwise). Failures are left for those calls to meet and report.
    pub async fn stage_updates(&self, items: &[StagedUpdate]) {
        if let Self::Salesforce(p) = self {
            p.stage_updates(items).await;
        }
    }

    /// The shared values the provider's copy (`shadow`) keeps because `record`'s cannot be
    /// written there: path (`recurrence`, ...) -> the provider's canonical value. Empty for
    /// providers that write everything they model.
    pub fn held_back(
        &self,
        doc_id: &DocumentId,
        record: &Record,
        shadow: &Shadow,
    ) -> BTreeMap<String, serde_json::Value> {
        match self {
            Self::Graph(p) => p.held_back(doc_id, record, shadow),
            _ => BTreeMap::new(),
        }
    }

    /// Deletes the resource at `id` under the shadow's etag.
    pub async fn delete(
        &self,
        doc_id: &DocumentId,
        id: &str,
        shadow: &Shadow,
    ) -> Result<DeleteOutcome, BridgeError> {
        match self {
            Self::Dav(p) => p.delete(doc_id, id, shadow).await,
            Self::Google(p) => p.delete(doc_id, id, shadow).await,
            Self::HubSpot(p) => p.delete(doc_id, id, shadow).await,
            Self::Graph(p) => p.delete(doc_id, id, shadow).await,
            Self::Salesforce(p) => p.delete(doc_id, id, shadow).await,
        }
    }
}
