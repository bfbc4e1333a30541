//! The HubSpot provider of the bridge runner (contacts, companies, deals): drives the sans-IO
//! decisions of `driftless_bridges::hubspot::sync` with the HubSpot client.
//!
//! - One provider (and one runner) per configured object type (`objects`); the contacts runner
//!   keeps the bridge id as its store key, the others use `{id}/companies` and `{id}/deals`
//!   ([`runner_parts`]). Documents are linked under the bridge id whatever the object type.
//! - A record is one CRM object; its external id is the HubSpot object id and its shadow `raw`
//!   is the object as last read or written (JSON: `id`, the string-typed `properties`,
//!   `updatedAt`, and for contacts and deals the v4 associations read with it, in the v3
//!   `associations` shape), so updates send only the properties that differ from it.
//! - Associations are references between documents: contact -> company becomes
//!   `contact.company`, deal -> company `deal.company`, deal -> contacts `deal.contacts`, each an
//!   `automerge:` URL of the linked document (looked up in the bridge store's link rows of the
//!   other object type, which this module reads and never writes). An association whose target is
//!   not linked (yet) is left out. On writes, a reference the shadow's associations lack is
//!   created at HubSpot (`PUT /crm/v4/...`); removing one in the app does not remove it at
//!   HubSpot yet, and association-only changes at HubSpot are seen when the object itself changes.
//! - Pull: an incremental search on `lastmodifieddate` from the stored watermark minus the
//!   overlap (search lags behind writes), re-anchoring before the result cap; the cursor
//!   ([`PollCursor`], JSON) is the runner's sync token. A polled record that is not newer than its
//!   shadow (the overlap, our own writes coming back) is not reported. Deletes come from the
//!   `archived=true` listing: archived records that are linked become removals, which the runner
//!   applies through its delete rules and guard. Search is never a complete listing, so nothing
//!   is deleted by omission.
//! - Writes: one record at a time. A create whose answer is lost (transport error, 5xx) looks the
//!   record up (by the `id_property` when configured, else by email) and adopts it before trying
//!   again; a 409 "Existing ID" adopts that contact. Updates PATCH only changed properties.
//!   HubSpot has no preconditions: a write is last-writer-wins there, and the next pull brings
//!   a concurrent HubSpot edit into the document.
//! - Rate limits: a 429 `TEN_SECONDLY_ROLLING` is backed off and retried inside the call; a
//!   `DAILY` one ends the round with the wait until the reset as its `retry_after`. Searches are
//!   paced to HubSpot's 5 per second.
//!
//! Must not: touch documents or the bridge store (the runner does), or print a secret.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use driftless_bridges::hubspot::client::{ApiError, Auth, HubSpotClient, HubSpotConfig};
use driftless_bridges::hubspot::sync::{
    CreateLookup, ListScan, Poll, PollConfig, PollCursor, RateLimitWait, SearchPacer,
    adopt_existing, archived_removals, create_lookup, is_news, merges_in, rate_limit_wait,
};
use driftless_bridges::hubspot::translate::{
    apply_written, company_create, company_from_properties, company_update, contact_create,
    contact_from_properties, contact_update, deal_create, deal_from_properties, deal_update,
    modified_at_ms, properties_to_read,
};
use driftless_bridges::hubspot::webhook::ObjectType;
use driftless_bridges::hubspot::wire::{
    AssociatedId, AssociationList, AssociationType, CreateInput, CrmObject, Properties,
    WriteProperties, association_type_id,
};
use driftless_bridges::sync::{self, FailureScope, Listed};
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::{Contact, DealContact};
use tracing::{info, warn};

use super::BridgeError;
use super::provider::{Changes, DeleteOutcome, Provider, Resource, WriteOutcome};
use super::record::{Record, RecordType};
use super::store::{BridgeStore, Shadow};
use crate::config::{BridgeConfig, HubSpotAuthConfig};

/// Burst (`TEN_SECONDLY_ROLLING`) 429s and 5xx retried inside one call before giving up.
const MAX_RETRIES: u32 = 5;
/// Creates tried (with a lookup after each lost answer) before the record is parked.
const MAX_CREATE_TRIES: u32 = 3;

/// Which side of a round a failure happened on: a pull failure stops the round, a write
/// failure that concerns one record only parks that record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Pull,
    Write,
}

pub struct HubSpotProvider {
    bridge: String,
    /// The object type this provider syncs.
    object: ObjectType,
    /// The bridge store (read only: link rows of the other object types, for references).
    store: Option<BridgeStore>,
    client: HubSpotClient,
    properties: Vec<String>,
    id_property: Option<String>,
    poll: PollConfig,
    pacer: Mutex<SearchPacer>,
    /// HubSpot id -> the document its `id_property` names (learned while polling), so the
    /// runner recognises its own create whose answer was lost and does not import it.
    created: Mutex<BTreeMap<String, DocumentId>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The store key of `object`'s runner of bridge `bridge`: the bridge id for contacts (as before
/// companies and deals existed), `{bridge}/companies` and `{bridge}/deals` otherwise.
pub fn store_key(bridge: &str, object: ObjectType) -> String {
    match object {
        ObjectType::Contact => bridge.to_owned(),
        other => format!("{bridge}/{}", other.path()),
    }
}

/// The record type of a HubSpot object type.
pub fn record_type(object: ObjectType) -> RecordType {
    match object {
        ObjectType::Contact => RecordType::Contact,
        ObjectType::Company => RecordType::Company,
        ObjectType::Deal => RecordType::Deal,
    }
}

/// One runner's parts per configured object type, in round order (companies, contacts, deals, so
/// references to companies resolve in the same round): record type, store key, provider.
pub fn runner_parts(
    config: &BridgeConfig,
    store: &BridgeStore,
) -> anyhow::Result<Vec<(RecordType, String, Provider)>> {
    let mut objects = config
        .hubspot
        .as_ref()
        .map(|h| h.objects.clone())
        .unwrap_or_else(|| vec![ObjectType::Contact]);
    objects.sort_by_key(|o| match o {
        ObjectType::Company => 0,
        ObjectType::Contact => 1,
        ObjectType::Deal => 2,
    });
    objects.dedup();
    objects
        .into_iter()
        .map(|object| {
            let provider = HubSpotProvider::for_object(config, object, Some(store.clone()))?;
            Ok((
                record_type(object),
                store_key(&config.id, object),
                Provider::HubSpot(Box::new(provider)),
            ))
        })
        .collect()
}

/// The object types whose associations a record of `object` holds as references.
fn referenced(object: ObjectType) -> &'static [ObjectType] {
    match object {
        ObjectType::Contact => &[ObjectType::Company],
        ObjectType::Deal => &[ObjectType::Company, ObjectType::Contact],
        ObjectType::Company => &[],
    }
}

/// An association as the shadow keeps it (`type` "primary" for a primary association).
const PRIMARY: &str = "primary";

/// A reference target: the HubSpot id and whether the association is the primary one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Target {
    id: String,
    primary: bool,
}

/// The shadow form of an object: its id, properties, modification time and associations.
fn resource_of(object: &CrmObject) -> Resource {
    let kept = CrmObject {
        id: object.id.clone(),
        properties: object.properties.clone(),
        created_at: object.created_at.clone(),
        updated_at: object.updated_at.clone(),
        archived: false,
        archived_at: None,
        object_write_trace_id: None,
        associations: object.associations.clone(),
        properties_with_history: None,
        extra: BTreeMap::new(),
    };
    Resource {
        id: object.id.clone(),
        etag: None,
        raw: serde_json::to_string(&kept).unwrap_or_default(),
    }
}

/// The object after writing `written` onto `base`: the base bag with the written values, then
/// whatever HubSpot's answer carries (its answer may hold only default properties).
fn after_write(
    base: Option<&Properties>,
    written: &WriteProperties,
    answer: CrmObject,
) -> Resource {
    let mut properties = apply_written(&base.cloned().unwrap_or_default(), written);
    for (k, v) in &answer.properties {
        properties.insert(k.clone(), v.clone());
    }
    resource_of(&CrmObject {
        properties,
        ..answer
    })
}

impl HubSpotProvider {
    /// The contacts provider of `config` (without references to other object types).
    pub fn new(config: &BridgeConfig) -> anyhow::Result<Self> {
        Self::for_object(config, ObjectType::Contact, None)
    }

    /// The provider of `object` for `config`; `store` resolves references.
    pub fn for_object(
        config: &BridgeConfig,
        object: ObjectType,
        store: Option<BridgeStore>,
    ) -> anyhow::Result<Self> {
        let settings = config.hubspot.as_ref().ok_or_else(|| {
            anyhow::anyhow!("bridge {}: a hubspot bridge needs its settings", config.id)
        })?;
        let auth = match &settings.auth {
            HubSpotAuthConfig::AccessToken(token) => Auth::AccessToken(token.clone()),
            HubSpotAuthConfig::OAuth {
                client_id,
                refresh_token,
                token_url,
            } => Auth::OAuth {
                client_id: client_id.clone(),
                client_secret: settings.client_secret.clone().ok_or_else(|| {
                    anyhow::anyhow!(
                        "bridge {}: OAuth needs client_secret_env (the app's client secret)",
                        config.id
                    )
                })?,
                refresh_token: refresh_token.clone(),
                token_url: token_url.clone(),
            },
        };
        let client = HubSpotClient::new(HubSpotConfig::new(settings.api_base.clone(), auth))
            .map_err(|e| anyhow::anyhow!("bridge {}: {e}", config.id))?;
        // The id property is a contact property.
        let id_property = settings
            .id_property
            .clone()
            .filter(|_| object == ObjectType::Contact);
        let properties = properties_to_read(object, id_property.as_deref());
        Ok(Self {
            bridge: store_key(&config.id, object),
            object,
            store,
            client,
            poll: PollConfig::new(properties.clone()),
            properties,
            id_property,
            pacer: Mutex::new(SearchPacer::default()),
            created: Mutex::new(BTreeMap::new()),
        })
    }

    /// A failed call as the whole provider's or (writes only) this record's failure.
    fn err(&self, e: ApiError, side: Side, what: &str) -> BridgeError {
        let record_scope = match &e {
            ApiError::Status { status, .. } => sync::failure_scope(*status) == FailureScope::Record,
            ApiError::Decode { .. } => true,
            ApiError::Transport { .. } | ApiError::RateLimited { .. } | ApiError::Auth { .. } => {
                false
            }
        };
        let what = format!("{what}: {e}");
        if record_scope && side == Side::Write {
            BridgeError::record(&self.bridge, what, None)
        } else {
            BridgeError::provider(&self.bridge, what, None)
        }
    }

    /// Runs `call`, backing off burst rate limits (and, when `idempotent`, 5xx) and retrying.
    /// A `DAILY` limit is returned at once as a provider failure waiting for the reset.
    async fn call<T, F, Fut>(
        &self,
        what: &str,
        idempotent: bool,
        call: F,
    ) -> Result<Result<T, ApiError>, BridgeError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut attempt = 0;
        loop {
            let e = match call().await {
                Ok(v) => return Ok(Ok(v)),
                Err(e) => e,
            };
            let wait = match &e {
                ApiError::RateLimited {
                    policy,
                    retry_after,
                    ..
                } => rate_limit_wait(
                    *policy,
                    *retry_after,
                    attempt,
                    now_ms(),
                    None,
                    rand::random(),
                ),
                ApiError::Status { status, .. } if idempotent && *status >= 500 => {
                    RateLimitWait::Backoff(sync::backoff(
                        attempt,
                        Duration::from_millis(200),
                        Duration::from_secs(5),
                        None,
                        rand::random(),
                    ))
                }
                _ => return Ok(Err(e)),
            };
            match wait {
                RateLimitWait::Backoff(pause) if attempt < MAX_RETRIES => {
                    info!(bridge = %self.bridge, %what, pause_ms = pause.as_millis() as u64, "HubSpot asked to slow down (or failed); backing off");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
                RateLimitWait::Backoff(pause) => {
                    return Err(BridgeError::provider(
                        &self.bridge,
                        format!("{what}: still failing after {MAX_RETRIES} retries: {e}"),
                        Some(pause),
                    ));
                }
                RateLimitWait::UntilDailyReset {
                    wait,
                    reset_at_ms,
                    source,
                } => {
                    warn!(bridge = %self.bridge, %what, reset_at_ms, ?source, "HubSpot's daily request limit is spent; waiting for the reset");
                    return Err(BridgeError::provider(
                        &self.bridge,
                        format!(
                            "{what}: daily request limit reached; next try at the reset ({reset_at_ms} ms)"
                        ),
                        Some(wait),
                    ));
                }
            }
        }
    }

    fn stored_object(&self, id: &str, raw: &str) -> Result<CrmObject, BridgeError> {
        serde_json::from_str(raw).map_err(|e| {
            BridgeError::local(
                &self.bridge,
                format!("shadow of {} {id} is unreadable: {e}", self.object.path()),
            )
        })
    }

    fn contact(&self, record: &Record, doc_id: &DocumentId) -> Result<Contact, BridgeError> {
        record
            .provider_contact(doc_id)
            .map_err(|what| BridgeError::record(&self.bridge, what, None))
    }

    /// The object's last-modified property (unix ms).
    pub fn modified_at_ms(&self, raw: &str) -> Option<u64> {
        let object: CrmObject = serde_json::from_str(raw).ok()?;
        u64::try_from(modified_at_ms(self.object, &object)?).ok()
    }

    pub fn created_document(&self, id: &str) -> Option<DocumentId> {
        locked(&self.created).get(id).cloned()
    }

    pub fn translate(&self, raw: &str, existing: Option<&Record>) -> Result<Record, String> {
        let object: CrmObject =
            serde_json::from_str(raw).map_err(|e| format!("stored {}: {e}", self.object.path()))?;
        // Slot ids are random and never derived from the value (contracts: "Record documents").
        let mut new_slot = || uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let first = |targets: Vec<(String, bool)>| {
            targets
                .iter()
                .find(|(_, primary)| *primary)
                .or(targets.first())
                .map(|(url, _)| url.clone())
        };
        Ok(match self.object {
            ObjectType::Contact => {
                let existing = match existing {
                    Some(Record::Contact(c)) => Some(c.as_ref()),
                    _ => None,
                };
                let mut contact =
                    contact_from_properties(&object.properties, existing, &mut new_slot);
                if let Some(companies) = self.references(&object, ObjectType::Company)? {
                    contact.company = first(companies);
                }
                Record::Contact(Box::new(contact))
            }
            ObjectType::Company => {
                let existing = match existing {
                    Some(Record::Company(c)) => Some(c.as_ref()),
                    _ => None,
                };
                Record::Company(Box::new(company_from_properties(
                    &object.properties,
                    existing,
                    &mut new_slot,
                )))
            }
            ObjectType::Deal => {
                let existing = match existing {
                    Some(Record::Deal(d)) => Some(d.as_ref()),
                    _ => None,
                };
                let mut deal = deal_from_properties(&object.properties, existing);
                if let Some(companies) = self.references(&object, ObjectType::Company)? {
                    deal.company = first(companies);
                }
                if let Some(contacts) = self.references(&object, ObjectType::Contact)? {
                    deal.contacts = contacts
                        .into_iter()
                        .map(|(url, primary)| {
                            let mut entry = existing
                                .and_then(|d| d.contacts.get(&url).cloned())
                                .unwrap_or_default();
                            entry.primary = primary;
                            (url, entry)
                        })
                        .collect::<BTreeMap<String, DealContact>>();
                }
                Record::Deal(Box::new(deal))
            }
        })
    }

    /// The `automerge:` URLs (and primary flags) of `object`'s associations with `to` objects
    /// that are linked here; `None` when the object carries no associations with `to` (not read).
    fn references(
        &self,
        object: &CrmObject,
        to: ObjectType,
    ) -> Result<Option<Vec<(String, bool)>>, String> {
        let Some(list) = object.associations.as_ref().and_then(|a| a.get(to.path())) else {
            return Ok(None);
        };
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let key = store_key(self.link_key(), to);
        let mut out = Vec::new();
        for target in &list.results {
            let linked = store
                .link(&key, &target.id)
                .map_err(|e| format!("association with {} {}: {e}", to.path(), target.id))?;
            if let Some(shadow) = linked {
                out.push((
                    format!("automerge:{}", shadow.doc),
                    target.association_type.as_deref() == Some(PRIMARY),
                ));
            }
        }
        Ok(Some(out))
    }

    /// The bridge id (the store key of contacts).
    fn link_key(&self) -> &str {
        self.bridge
            .split_once('/')
            .map_or(self.bridge.as_str(), |(id, _)| id)
    }

    /// The HubSpot id of the `to` object linked to document URL `url`, if any.
    fn hubspot_id(&self, to: ObjectType, url: &str) -> Result<Option<String>, BridgeError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let doc = url.strip_prefix("automerge:").unwrap_or(url);
        let links = store
            .links(&store_key(self.link_key(), to))
            .map_err(|e| BridgeError::local(&self.bridge, e))?;
        Ok(links
            .into_iter()
            .find(|(_, shadow)| shadow.doc == doc)
            .map(|(id, _)| id))
    }

    /// The associations `record` stands for, as HubSpot targets by object type.
    fn wanted_targets(
        &self,
        record: &Record,
    ) -> Result<BTreeMap<ObjectType, Vec<Target>>, BridgeError> {
        let mut refs: Vec<(ObjectType, &str, bool)> = Vec::new();
        match record {
            Record::Contact(c) => {
                if let Some(company) = &c.company {
                    refs.push((ObjectType::Company, company, true));
                }
            }
            Record::Deal(d) => {
                if let Some(company) = &d.company {
                    refs.push((ObjectType::Company, company, true));
                }
                for (url, entry) in &d.contacts {
                    refs.push((ObjectType::Contact, url, entry.primary));
                }
            }
            _ => {}
        }
        let mut out: BTreeMap<ObjectType, Vec<Target>> = BTreeMap::new();
        for (to, url, primary) in refs {
            // A reference to a record not (yet) at HubSpot waits until it is.
            if let Some(id) = self.hubspot_id(to, url)? {
                out.entry(to).or_default().push(Target { id, primary });
            }
        }
        Ok(out)
    }

    /// Creates at HubSpot the associations `record` stands for that `raw` (the object as
    /// stored) lacks; returns the stored form with them.
    async fn write_associations(
        &self,
        doc_id: &DocumentId,
        mut resource: Resource,
        record: &Record,
    ) -> Result<Resource, BridgeError> {
        if referenced(self.object).is_empty() {
            return Ok(resource);
        }
        let mut object = self.stored_object(&resource.id, &resource.raw)?;
        let wanted = self.wanted_targets(record)?;
        let mut lists = object.associations.clone().unwrap_or_default();
        for to in referenced(self.object) {
            let list = lists.entry(to.path().to_owned()).or_default();
            for target in wanted.get(to).into_iter().flatten() {
                if list.results.iter().any(|a| a.id == target.id) {
                    continue;
                }
                let Some(type_id) = association_type_id(self.object, *to, target.primary) else {
                    continue;
                };
                let what = format!(
                    "associating {} {} with {} {} (document {doc_id})",
                    self.object.path(),
                    resource.id,
                    to.path(),
                    target.id
                );
                let types = [AssociationType::hubspot(type_id)];
                self.call(&what, true, || {
                    self.client
                        .associate(self.object, &resource.id, *to, &target.id, &types)
                })
                .await?
                .map_err(|e| self.err(e, Side::Write, &what))?;
                list.results.push(AssociatedId {
                    id: target.id.clone(),
                    association_type: target.primary.then(|| PRIMARY.to_owned()),
                });
            }
        }
        object.associations = Some(lists);
        resource.raw = resource_of(&object).raw;
        Ok(resource)
    }

    /// Whether `record` stands for an association the stored object lacks.
    fn associations_missing(
        &self,
        record: &Record,
        stored: &CrmObject,
    ) -> Result<bool, BridgeError> {
        for (to, targets) in self.wanted_targets(record)? {
            let have = stored.associations.as_ref().and_then(|a| a.get(to.path()));
            if targets
                .iter()
                .any(|t| !have.is_some_and(|l| l.results.iter().any(|a| a.id == t.id)))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Reads `object`'s associations with the object types it references (v4, every page).
    async fn read_associations(&self, object: &mut CrmObject) -> Result<(), BridgeError> {
        let mut lists: BTreeMap<String, AssociationList> = BTreeMap::new();
        for to in referenced(self.object) {
            let mut results = Vec::new();
            let mut after: Option<String> = None;
            let what = format!(
                "reading the {} of {} {}",
                to.path(),
                self.object.path(),
                object.id
            );
            loop {
                let page = self
                    .call(&what, true, || {
                        self.client
                            .associations(self.object, &object.id, *to, after.as_deref())
                    })
                    .await?
                    .map_err(|e| self.err(e, Side::Pull, &what))?;
                for target in page.results {
                    let primary = target.association_types.iter().any(|t| {
                        t.type_id.is_some()
                            && t.type_id == association_type_id(self.object, *to, true)
                            && association_type_id(self.object, *to, true)
                                != association_type_id(self.object, *to, false)
                    });
                    results.push(AssociatedId {
                        id: target.to_object_id.0.clone(),
                        association_type: primary.then(|| PRIMARY.to_owned()),
                    });
                }
                match page.paging.and_then(|p| p.next).map(|n| n.after) {
                    Some(next) if after.as_deref() != Some(next.as_str()) => after = Some(next),
                    _ => break,
                }
            }
            results.sort_by(|a, b| a.id.cmp(&b.id));
            results.dedup_by(|a, b| a.id == b.id);
            lists.insert(
                to.path().to_owned(),
                AssociationList {
                    results,
                    paging: None,
                },
            );
        }
        object.associations = Some(lists);
        Ok(())
    }

    pub async fn changes(
        &self,
        token: Option<&str>,
        links: &BTreeMap<String, Shadow>,
    ) -> Result<Changes, BridgeError> {
        let cursor: PollCursor = match token {
            Some(t) if !t.is_empty() => serde_json::from_str(t).map_err(|e| {
                BridgeError::local(&self.bridge, format!("stored poll cursor {t:?}: {e}"))
            })?,
            _ => PollCursor::default(),
        };
        let mut poll = Poll::new(self.object, self.poll.clone(), &cursor);
        let mut polled = Vec::new();
        while let Some(request) = poll.next_request() {
            let pause = locked(&self.pacer).delay(now_ms());
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            locked(&self.pacer).record(now_ms());
            let answer = self
                .call("contacts search", true, || {
                    self.client.search(self.object, &request)
                })
                .await?;
            match answer {
                Ok(page) => polled.extend(poll.on_page(page).map_err(|e| {
                    BridgeError::provider(&self.bridge, format!("contacts search: {e}"), None)
                })?),
                // Paging past HubSpot's result cap (lower than configured): re-anchor.
                Err(ApiError::Status { status: 400, .. }) if request.after.is_some() => {
                    poll.on_past_cap();
                }
                Err(e) => return Err(self.err(e, Side::Pull, "contacts search")),
            }
        }
        let outcome = poll.finish();
        if outcome.reanchors > 0 {
            info!(bridge = %self.bridge, reanchors = outcome.reanchors, "search re-anchored below HubSpot's result cap");
        }

        let mut scan = ListScan::new(true, vec!["hs_object_id".to_owned()]);
        let mut archived = Vec::new();
        while let Some(request) = scan.next_request() {
            let page = self
                .call("archived contacts", true, || {
                    self.client.list(self.object, &request)
                })
                .await?
                .map_err(|e| self.err(e, Side::Pull, "archived contacts"))?;
            archived.extend(scan.on_page(page));
        }
        let merges = merges_in(self.object, &polled, &|id| links.contains_key(id));
        // A merged-away record is the survivor's now, not a delete.
        let absorbed: Vec<&String> = merges.iter().flat_map(|m| &m.absorbed).collect();
        let mut removed = archived_removals(&archived, &|id| links.contains_key(id));
        removed.retain(|id| !absorbed.contains(&id));

        let merges = merges
            .into_iter()
            .map(|m| (m.survivor.id.0, m.absorbed))
            .collect();
        let mut changes = Changes {
            merges,
            removed,
            complete: false,
            next_token: serde_json::to_string(&outcome.cursor)
                .map_err(|e| BridgeError::local(&self.bridge, format!("poll cursor: {e}")))?,
            ..Changes::default()
        };
        for mut object in polled {
            let id = object.object_id().to_owned();
            if let Some(p) = &self.id_property
                && let Some(doc) = object.property(p).and_then(|d| d.parse().ok())
            {
                locked(&self.created).insert(id.clone(), doc);
            }
            if changes.removed.contains(&id) {
                continue;
            }
            let known_ms = match links.get(&id) {
                Some(shadow) => modified_at_ms(self.object, &self.stored_object(&id, &shadow.raw)?),
                None => None,
            };
            if links.contains_key(&id) && !is_news(known_ms, self.object, &object) {
                continue; // the overlap, or our own write coming back
            }
            if !referenced(self.object).is_empty() {
                self.read_associations(&mut object).await?;
            }
            changes.listed.push(Listed {
                href: id.clone(),
                etag: None,
            });
            changes.changed.push(Resource {
                id,
                ..resource_of(&object)
            });
        }
        Ok(changes)
    }

    /// What an earlier create of `doc_id` whose answer was lost made, if anything.
    async fn look_up(
        &self,
        doc_id: &DocumentId,
        input: &CreateInput,
    ) -> Result<Option<CrmObject>, BridgeError> {
        let key = doc_id.to_string();
        let what = format!("looking up the create of document {doc_id}");
        match create_lookup(
            self.object,
            &key,
            self.id_property.as_deref(),
            &input.properties,
            &self.properties,
        ) {
            CreateLookup::ByIdProperty { property, value } => self
                .call(&what, true, || {
                    self.client
                        .get(self.object, &value, &self.properties, Some(&property))
                })
                .await?
                .map_err(|e| self.err(e, Side::Write, &what)),
            CreateLookup::Search(request) => {
                let page = self
                    .call(&what, true, || self.client.search(self.object, &request))
                    .await?
                    .map_err(|e| self.err(e, Side::Write, &what))?;
                Ok(adopt_existing(
                    &key,
                    self.id_property.as_deref(),
                    &input.properties,
                    &page.results,
                )
                .cloned())
            }
            CreateLookup::None => Ok(None),
        }
    }

    pub async fn create(
        &self,
        doc_id: &DocumentId,
        record: &Record,
    ) -> Result<Resource, BridgeError> {
        let resource = self.create_object(doc_id, record).await?;
        self.write_associations(doc_id, resource, record).await
    }

    /// The properties `record` stands for, for a create.
    fn create_properties(
        &self,
        doc_id: &DocumentId,
        record: &Record,
    ) -> Result<WriteProperties, BridgeError> {
        Ok(match (self.object, record) {
            (ObjectType::Contact, _) => contact_create(&self.contact(record, doc_id)?),
            (ObjectType::Company, Record::Company(c)) => company_create(c),
            (ObjectType::Deal, Record::Deal(d)) => deal_create(d),
            _ => return Err(self.wrong_type(record, doc_id)),
        })
    }

    /// The properties of `record` that differ from `stored`'s.
    fn update_properties(
        &self,
        doc_id: &DocumentId,
        record: &Record,
        stored: &Properties,
    ) -> Result<WriteProperties, BridgeError> {
        Ok(match (self.object, record) {
            (ObjectType::Contact, _) => contact_update(stored, &self.contact(record, doc_id)?),
            (ObjectType::Company, Record::Company(c)) => company_update(stored, c),
            (ObjectType::Deal, Record::Deal(d)) => deal_update(stored, d),
            _ => return Err(self.wrong_type(record, doc_id)),
        })
    }

    fn wrong_type(&self, record: &Record, doc_id: &DocumentId) -> BridgeError {
        BridgeError::record(
            &self.bridge,
            format!(
                "document {doc_id} is a {}, not a HubSpot {}",
                record.type_name_of(),
                self.object.path()
            ),
            None,
        )
    }

    async fn create_object(
        &self,
        doc_id: &DocumentId,
        record: &Record,
    ) -> Result<Resource, BridgeError> {
        let mut properties = self.create_properties(doc_id, record)?;
        if let Some(p) = &self.id_property {
            properties.insert(p.clone(), doc_id.to_string());
        }
        let input = CreateInput {
            properties,
            ..CreateInput::default()
        };
        let what = format!("creating the {} of document {doc_id}", self.object.path());
        for _ in 0..MAX_CREATE_TRIES {
            let answer = self
                .call(&what, false, || self.client.create(self.object, &input))
                .await?;
            match answer {
                Ok(object) => return Ok(after_write(None, &input.properties, object)),
                Err(e) if e.status() == Some(409) => {
                    let Some(existing) = e.body().and_then(|b| b.existing_id()) else {
                        return Err(self.err(e, Side::Write, &what));
                    };
                    info!(bridge = %self.bridge, doc = %doc_id, contact = %existing, "HubSpot already has this contact (409); adopting it");
                    let found = self
                        .call(&what, true, || {
                            self.client
                                .get(self.object, &existing, &self.properties, None)
                        })
                        .await?
                        .map_err(|e| self.err(e, Side::Write, &what))?;
                    return match found {
                        Some(object) => Ok(resource_of(&object)),
                        None => Err(BridgeError::record(
                            &self.bridge,
                            format!("{what}: the existing contact {existing} vanished"),
                            None,
                        )),
                    };
                }
                Err(e) if e.outcome_unknown() => {
                    warn!(bridge = %self.bridge, doc = %doc_id, error = %e, "create answer lost; looking for the contact before trying again");
                    if let Some(object) = self.look_up(doc_id, &input).await? {
                        info!(bridge = %self.bridge, doc = %doc_id, contact = %object.id, "adopting the contact an earlier create made");
                        return Ok(resource_of(&object));
                    }
                }
                Err(e) => return Err(self.err(e, Side::Write, &what)),
            }
        }
        Err(BridgeError::record(
            &self.bridge,
            format!("{what}: no answer after {MAX_CREATE_TRIES} tries"),
            None,
        ))
    }

    pub async fn update(
        &self,
        doc_id: &DocumentId,
        id: &str,
        record: &Record,
        shadow: &Shadow,
    ) -> Result<WriteOutcome, BridgeError> {
        let stored = self.stored_object(id, &shadow.raw)?;
        let changed = self.update_properties(doc_id, record, &stored.properties)?;
        let associate = self.associations_missing(record, &stored)?;
        if changed.is_empty() && !associate {
            return Ok(WriteOutcome::Unchanged);
        }
        if changed.is_empty() {
            let resource = resource_of(&stored);
            return Ok(WriteOutcome::Written(
                self.write_associations(doc_id, resource, record).await?,
            ));
        }
        let what = format!("updating {} {id} (document {doc_id})", self.object.path());
        let answer = self
            .call(&what, true, || {
                self.client.update(self.object, id, &changed)
            })
            .await?;
        match answer {
            Ok(object) => {
                let mut written = after_write(Some(&stored.properties), &changed, object);
                // The answer carries no associations: keep the shadow's.
                let mut merged = self.stored_object(id, &written.raw)?;
                merged.associations = stored.associations.clone();
                written.raw = resource_of(&merged).raw;
                Ok(WriteOutcome::Written(
                    self.write_associations(doc_id, written, record).await?,
                ))
            }
            // Archived (or merged away) meanwhile: the next pull reports it.
            Err(e) if e.status() == Some(404) => Ok(WriteOutcome::Stale(None)),
            Err(e) => Err(self.err(e, Side::Write, &what)),
        }
    }

    pub async fn delete(
        &self,
        doc_id: &DocumentId,
        id: &str,
        _shadow: &Shadow,
    ) -> Result<DeleteOutcome, BridgeError> {
        let what = format!("archiving {} {id} (document {doc_id})", self.object.path());
        self.call(&what, true, || self.client.archive(self.object, id))
            .await?
            .map_err(|e| self.err(e, Side::Write, &what))?;
        Ok(DeleteOutcome::Deleted)
    }
}
