//! The CalDAV / CardDAV provider of the bridge runner: sync-collection from the stored token (a
//! rejected token means a full listing), multiget of what changed, `PUT` with
//! `If-None-Match: *` at an href derived from the document id (a retried create meets 412 and
//! adopts its own earlier write), `PUT` / `DELETE` with `If-Match`.
//!
//! The external id of a record is its href as a path (servers answer with paths or full URLs).
//! Must not: touch documents or the bridge store (the runner does).

use std::collections::BTreeMap;

use driftless_bridges::dav::client::{
    self, DavClient, DavClientConfig, FetchError, HttpError, Precondition, PutOutcome, SyncError,
    SyncOutcome, WriteError,
};
use driftless_bridges::dav::wire::{CollectionKind, Fetched};
use driftless_bridges::sync::{self, FailureScope, Known, Listed};
use driftless_client_protocol::DocumentId;
use tracing::warn;

use super::BridgeError;
use super::provider::{Changes, DeleteOutcome, Resource, WriteOutcome};
use super::record::Record;
use super::store::{self, Shadow};
use super::translate;
use crate::config::{BridgeConfig, BridgeKind};

/// Most hrefs in one multiget.
const MULTIGET_BATCH: usize = 100;

pub struct DavProvider {
    bridge: String,
    kind: BridgeKind,
    client: DavClient,
}

impl DavProvider {
    pub fn new(config: &BridgeConfig) -> anyhow::Result<Self> {
        let collection = match config.kind {
            BridgeKind::CardDav => CollectionKind::AddressBook,
            _ => CollectionKind::Calendar,
        };
        let mut dav = DavClientConfig::new(config.url.clone(), collection);
        dav.username = config.username.clone();
        dav.password = config.password.clone();
        let client =
            DavClient::new(dav).map_err(|e| anyhow::anyhow!("bridge {}: {e}", config.id))?;
        Ok(Self {
            bridge: config.id.clone(),
            kind: config.kind,
            client,
        })
    }

    /// A failed request, as the whole provider's failure or this record's
    /// ([`sync::failure_scope`]).
    fn http(&self, context: &str, e: &HttpError) -> BridgeError {
        let what = format!("{context}: {e}");
        let bridge = &self.bridge;
        match e {
            HttpError::Transport { .. } => BridgeError::provider(bridge, what, None),
            HttpError::RateLimited { retry_after, .. } => {
                BridgeError::provider(bridge, what, *retry_after)
            }
            HttpError::Status {
                status,
                retry_after,
                ..
            } => match sync::failure_scope(status.as_u16()) {
                FailureScope::Provider => BridgeError::provider(bridge, what, *retry_after),
                FailureScope::Record => BridgeError::record(bridge, what, *retry_after),
            },
            HttpError::BadEtag { .. } | HttpError::BadHref { .. } => {
                BridgeError::record(bridge, what, None)
            }
        }
    }

    fn sync_err(&self, e: SyncError) -> BridgeError {
        match e {
            SyncError::Http(h) => self.http("sync-collection", &h),
            SyncError::Parse(p) => {
                BridgeError::provider(&self.bridge, format!("sync-collection: {p}"), None)
            }
        }
    }

    fn fetch_err(&self, href: &str, e: FetchError) -> BridgeError {
        match e {
            FetchError::Http(h) => self.http(&format!("fetching {href}"), &h),
            FetchError::Parse(p) => {
                BridgeError::record(&self.bridge, format!("fetching {href}: {p}"), None)
            }
        }
    }

    fn write_err(&self, href: &str, e: WriteError) -> BridgeError {
        match e {
            WriteError::Http(h) => self.http(&format!("writing {href}"), &h),
        }
    }

    /// Hrefs as the link table keys them: the path (servers answer with paths or full URLs).
    fn normalize_href(&self, href: &str) -> String {
        match self.client.resolve(href) {
            Ok(url) => url.path().to_owned(),
            Err(_) => href.to_owned(),
        }
    }

    fn extension(&self) -> &'static str {
        match self.kind {
            BridgeKind::CardDav => "vcf",
            _ => "ics",
        }
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

    /// The document created at `href` by [`DavProvider::create_href`], if it is one.
    pub fn created_document(&self, href: &str) -> Option<DocumentId> {
        href.rsplit('/')
            .next()
            .and_then(|name| name.strip_suffix(self.extension()))
            .and_then(|stem| stem.strip_suffix('.'))
            .and_then(|stem| stem.parse::<DocumentId>().ok())
            .filter(|doc_id| self.create_href(doc_id) == href)
    }

    pub fn translate(&self, raw: &str, existing: Option<&Record>) -> Result<Record, String> {
        Ok(match self.kind {
            BridgeKind::CardDav => {
                let existing = match existing {
                    Some(Record::Contact(c)) => Some(c.as_ref()),
                    _ => None,
                };
                Record::Contact(Box::new(translate::contact_from_vcard(raw, existing)?))
            }
            _ => Record::Event(Box::new(translate::event_from_ical(raw)?)),
        })
    }

    /// The resource for `record`: `base` edited (only what differs), or a new one with `uid`.
    fn render(record: &Record, base: Option<&str>, uid: &str) -> Result<String, String> {
        match record {
            Record::Event(e) => translate::event_to_ical(base, e, uid),
            Record::Contact(c) => translate::contact_to_vcard(base, c, uid),
            other => Err(format!("a {} has no DAV form", other.type_name_of())),
        }
    }

    pub async fn changes(
        &self,
        token: Option<&str>,
        links: &BTreeMap<String, Shadow>,
    ) -> Result<Changes, BridgeError> {
        let mut complete = token.is_none();
        let mut outcome = self
            .client
            .sync_collection(token)
            .await
            .map_err(|e| self.sync_err(e))?;
        if outcome == SyncOutcome::TokenInvalid {
            warn!(bridge = %self.bridge, "sync token rejected by the provider; full resync merging with the link table");
            complete = true;
            outcome = self
                .client
                .sync_collection(None)
                .await
                .map_err(|e| self.sync_err(e))?;
        }
        let mut listed: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut removed: Vec<String> = Vec::new();
        let next_token;
        loop {
            let SyncOutcome::Page(page) = outcome else {
                return Err(BridgeError::provider(
                    &self.bridge,
                    "sync-collection rejected a full listing's token",
                    None,
                ));
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
                next_token = page.sync_token;
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
        let known: Vec<Known> = store::known(links);
        let wanted = sync::to_fetch(&known, &listed);
        let mut changed = Vec::new();
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
                changed.push(Resource {
                    id: self.normalize_href(&href),
                    etag,
                    raw: body,
                });
            }
        }
        Ok(Changes {
            listed,
            changed,
            removed,
            complete,
            next_token,
            problems: Vec::new(),
            ..Changes::default()
        })
    }

    /// `GET href` as a resource (`None`: not there).
    async fn fetch(&self, href: &str) -> Result<Option<Resource>, BridgeError> {
        Ok(self
            .client
            .get(href)
            .await
            .map_err(|e| self.fetch_err(href, e))?
            .map(|res| Resource {
                id: href.to_owned(),
                etag: res.etag,
                raw: res.body,
            }))
    }

    pub async fn create(
        &self,
        doc_id: &DocumentId,
        record: &Record,
    ) -> Result<Resource, BridgeError> {
        let href = self.create_href(doc_id);
        let uid = record.uid().unwrap_or_else(|| doc_id.to_string());
        let body = Self::render(&record.provider_view(), None, &uid).map_err(|e| {
            BridgeError::record(&self.bridge, format!("rendering a new {href}: {e}"), None)
        })?;
        let outcome = self
            .client
            .put(&href, &body, Precondition::IfNoneMatch)
            .await
            .map_err(|e| self.write_err(&href, e))?;
        match outcome {
            PutOutcome::Written { etag: Some(etag) } => Ok(Resource {
                id: href,
                etag: Some(etag),
                raw: body,
            }),
            PutOutcome::Written { etag: None } | PutOutcome::PreconditionFailed => {
                self.fetch(&href).await?.ok_or_else(|| {
                    BridgeError::record(
                        &self.bridge,
                        format!("{href} vanished right after its create"),
                        None,
                    )
                })
            }
        }
    }

    pub async fn update(
        &self,
        doc_id: &DocumentId,
        href: &str,
        record: &Record,
        shadow: &Shadow,
    ) -> Result<WriteOutcome, BridgeError> {
        let uid = record.uid().unwrap_or_else(|| doc_id.to_string());
        let body = Self::render(&record.provider_view(), Some(&shadow.raw), &uid).map_err(|e| {
            BridgeError::record(&self.bridge, format!("rendering onto {href}: {e}"), None)
        })?;
        if body == shadow.raw {
            return Ok(WriteOutcome::Unchanged); // nothing the provider does not have
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
        Ok(match outcome {
            PutOutcome::Written { etag: Some(etag) } => WriteOutcome::Written(Resource {
                id: href.to_owned(),
                etag: Some(etag),
                raw: body,
            }),
            PutOutcome::Written { etag: None } => {
                WriteOutcome::Written(self.fetch(href).await?.unwrap_or(Resource {
                    id: href.to_owned(),
                    etag: None,
                    raw: body,
                }))
            }
            PutOutcome::PreconditionFailed => WriteOutcome::Stale(self.fetch(href).await?),
        })
    }

    pub async fn delete(
        &self,
        _doc_id: &DocumentId,
        href: &str,
        shadow: &Shadow,
    ) -> Result<DeleteOutcome, BridgeError> {
        Ok(
            match self
                .client
                .delete(href, shadow.etag.as_deref())
                .await
                .map_err(|e| self.write_err(href, e))?
            {
                client::DeleteOutcome::Deleted | client::DeleteOutcome::NotFound => {
                    DeleteOutcome::Deleted
                }
                client::DeleteOutcome::PreconditionFailed => {
                    DeleteOutcome::Stale(self.fetch(href).await?)
                }
            },
        )
    }
}
