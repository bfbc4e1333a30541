//! The HubSpot provider of the bridge runner (contacts): drives the sans-IO decisions of
//! `driftless_bridges::hubspot::sync` with the HubSpot client.
//!
//! - A record is one CRM contact; its external id is the HubSpot object id and its shadow `raw`
//!   is the object as last read or written (JSON: `id`, the string-typed `properties`,
//!   `updatedAt`), so updates send only the properties that differ from it.
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
    adopt_existing, archived_removals, create_lookup, is_news, rate_limit_wait,
};
use driftless_bridges::hubspot::translate::{
    apply_written, contact_create, contact_from_properties, contact_update, modified_at_ms,
    properties_to_read,
};
use driftless_bridges::hubspot::webhook::ObjectType;
use driftless_bridges::hubspot::wire::{CreateInput, CrmObject, Properties, WriteProperties};
use driftless_bridges::sync::{self, FailureScope, Listed};
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::Contact;
use tracing::{info, warn};

use super::BridgeError;
use super::provider::{Changes, DeleteOutcome, Resource, WriteOutcome};
use super::record::Record;
use super::store::Shadow;
use crate::config::{BridgeConfig, HubSpotAuthConfig};

const CONTACT: ObjectType = ObjectType::Contact;
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

/// The shadow form of an object: its id, properties and modification time only.
fn resource(object: &CrmObject) -> Resource {
    let kept = CrmObject {
        id: object.id.clone(),
        properties: object.properties.clone(),
        created_at: object.created_at.clone(),
        updated_at: object.updated_at.clone(),
        archived: false,
        archived_at: None,
        object_write_trace_id: None,
        associations: None,
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
    resource(&CrmObject {
        properties,
        ..answer
    })
}

impl HubSpotProvider {
    pub fn new(config: &BridgeConfig) -> anyhow::Result<Self> {
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
        let properties = properties_to_read(CONTACT, settings.id_property.as_deref());
        Ok(Self {
            bridge: config.id.clone(),
            client,
            poll: PollConfig::new(properties.clone()),
            properties,
            id_property: settings.id_property.clone(),
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

    fn object(&self, id: &str, raw: &str) -> Result<CrmObject, BridgeError> {
        serde_json::from_str(raw).map_err(|e| {
            BridgeError::local(
                &self.bridge,
                format!("shadow of contact {id} is unreadable: {e}"),
            )
        })
    }

    fn contact(&self, record: &Record, doc_id: &DocumentId) -> Result<Contact, BridgeError> {
        record
            .provider_contact(doc_id)
            .map_err(|what| BridgeError::record(&self.bridge, what, None))
    }

    pub fn created_document(&self, id: &str) -> Option<DocumentId> {
        locked(&self.created).get(id).cloned()
    }

    pub fn translate(&self, raw: &str, existing: Option<&Record>) -> Result<Record, String> {
        let object: CrmObject =
            serde_json::from_str(raw).map_err(|e| format!("stored contact: {e}"))?;
        let existing = match existing {
            Some(Record::Contact(c)) => Some(c.as_ref()),
            _ => None,
        };
        // Slot ids are random and never derived from the value (contracts: "Record documents").
        let mut new_slot = || uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        Ok(Record::Contact(Box::new(contact_from_properties(
            &object.properties,
            existing,
            &mut new_slot,
        ))))
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
        let mut poll = Poll::new(CONTACT, self.poll.clone(), &cursor);
        let mut polled = Vec::new();
        while let Some(request) = poll.next_request() {
            let pause = locked(&self.pacer).delay(now_ms());
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            locked(&self.pacer).record(now_ms());
            let answer = self
                .call("contacts search", true, || {
                    self.client.search(CONTACT, &request)
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
                    self.client.list(CONTACT, &request)
                })
                .await?
                .map_err(|e| self.err(e, Side::Pull, "archived contacts"))?;
            archived.extend(scan.on_page(page));
        }
        let removed = archived_removals(&archived, &|id| links.contains_key(id));

        let mut changes = Changes {
            removed,
            complete: false,
            next_token: serde_json::to_string(&outcome.cursor)
                .map_err(|e| BridgeError::local(&self.bridge, format!("poll cursor: {e}")))?,
            ..Changes::default()
        };
        for object in polled {
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
                Some(shadow) => modified_at_ms(CONTACT, &self.object(&id, &shadow.raw)?),
                None => None,
            };
            if links.contains_key(&id) && !is_news(known_ms, CONTACT, &object) {
                continue; // the overlap, or our own write coming back
            }
            changes.listed.push(Listed {
                href: id.clone(),
                etag: None,
            });
            changes.changed.push(Resource {
                id,
                ..resource(&object)
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
            CONTACT,
            &key,
            self.id_property.as_deref(),
            &input.properties,
            &self.properties,
        ) {
            CreateLookup::ByIdProperty { property, value } => self
                .call(&what, true, || {
                    self.client
                        .get(CONTACT, &value, &self.properties, Some(&property))
                })
                .await?
                .map_err(|e| self.err(e, Side::Write, &what)),
            CreateLookup::Search(request) => {
                let page = self
                    .call(&what, true, || self.client.search(CONTACT, &request))
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
        let contact = self.contact(record, doc_id)?;
        let mut properties = contact_create(&contact);
        if let Some(p) = &self.id_property {
            properties.insert(p.clone(), doc_id.to_string());
        }
        let input = CreateInput {
            properties,
            ..CreateInput::default()
        };
        let what = format!("creating the contact of document {doc_id}");
        for _ in 0..MAX_CREATE_TRIES {
            let answer = self
                .call(&what, false, || self.client.create(CONTACT, &input))
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
                            self.client.get(CONTACT, &existing, &self.properties, None)
                        })
                        .await?
                        .map_err(|e| self.err(e, Side::Write, &what))?;
                    return match found {
                        Some(object) => Ok(resource(&object)),
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
                        return Ok(resource(&object));
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
        let contact = self.contact(record, doc_id)?;
        let stored = self.object(id, &shadow.raw)?;
        let changed = contact_update(&stored.properties, &contact);
        if changed.is_empty() {
            return Ok(WriteOutcome::Unchanged);
        }
        let what = format!("updating contact {id} (document {doc_id})");
        let answer = self
            .call(&what, true, || self.client.update(CONTACT, id, &changed))
            .await?;
        match answer {
            Ok(object) => Ok(WriteOutcome::Written(after_write(
                Some(&stored.properties),
                &changed,
                object,
            ))),
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
        let what = format!("archiving contact {id} (document {doc_id})");
        self.call(&what, true, || self.client.archive(CONTACT, id))
            .await?
            .map_err(|e| self.err(e, Side::Write, &what))?;
        Ok(DeleteOutcome::Deleted)
    }
}
