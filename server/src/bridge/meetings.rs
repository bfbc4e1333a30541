//! One meeting, one document: the same meeting seen in several mailboxes (Google and Graph
//! bridges of one workspace) is one `calendar_event` document, and each mailbox's copy is a link
//! on it.
//!
//! - **Matching** is by iCalendar UID ([`meeting_key`]: Graph's global object ids seen through,
//!   Exchange's own ids without their instance date), never by provider id. The workspace-wide
//!   index `(workspace, key) -> document` lives in the bridge store (`bridge_meetings`) and is
//!   claimed in the same redb transaction that records the pending import, so two bridges
//!   importing one meeting at once never make two documents: the loser attaches its copy (adds
//!   its link) to the winner's document ([`decide_claimed`]). Instances are overrides keyed by the
//!   original start in UTC basic form, which both translators produce, so copies merge per
//!   instance.
//! - **Roles** are kept in the link entry: `links.<bridge>.organizer` (bool: this mailbox's copy
//!   is the organizer's; Google `organizer.self`, Graph `isOrganizer`) and `links.<bridge>.mailbox`
//!   (the mailbox owner's lower-cased address, the key of their `attendees` entry).
//! - **Shared fields** (title, location, description, start, end, status, recurrence, overrides,
//!   organizer, attendee list) follow the organizer's copy. A non-organizer copy's pull never
//!   writes them while an organizer copy is linked ([`contribution`]); a value it changed that
//!   differs from the document is kept in `links.<bridge>.diverged` ([`divergence`]) and listed by
//!   the conflicts endpoint with the document's (the organizer's) value as winner
//!   ([`copy_conflicts`]); it reaches no provider. App edits of shared fields are written to the
//!   organizer's mailbox only ([`push_view`]).
//! - **Responses**: each attendee's `response` is that attendee's own: a copy contributes its
//!   owner's response only, and only the owner's mailbox gets a response written.
//! - **Deletes**: the organizer's copy is the default delete authority ([`is_delete_authority`]);
//!   a `[[policies]]` `deleted` entry overrides it.
//! - **Held back**: a value the organizer's own provider cannot take (a rule Graph cannot
//!   express) is not written; the provider's value is kept in that copy's `diverged` and listed
//!   as a conflict the same way ([`Runner::record_held_back`]) until the values agree again.
//! - **Backfill**: at start, documents the Google/Graph bridges already link are indexed by
//!   their copies' UIDs where the index lacks them ([`backfill_index`]).
//!
//! The decisions are pure functions over canonical values; the runner glue at the bottom
//! (`impl Runner`) only loads, writes through the engine and stores. Must not: match by provider
//! id, write a shared field from a non-organizer copy while an organizer copy is linked, or
//! hold state outside the bridge store and the documents.

use std::collections::BTreeMap;
use std::time::Duration;

use automerge::ReadDoc;
use driftless_bridges::graph::translate::series_uid;
use driftless_crdt_model::{
    Attendee, CalendarEvent, ConflictValue, FieldConflict, Link, read_event,
};
use serde_json::{Map, Value, json};
use tracing::info;

use super::provider::Provider;
use super::record::Record;
use super::store::{BridgeStore, Claim, LinkOp, Shadow, StoreError};
use super::{BridgeError, Runner};
use crate::config::{BridgeConfig, BridgeKind};

/// `links.<bridge>.organizer`: this mailbox's copy is the organizer's.
pub const ORGANIZER_KEY: &str = "organizer";
/// `links.<bridge>.mailbox`: the mailbox owner's lower-cased address.
pub const MAILBOX_KEY: &str = "mailbox";
/// `links.<bridge>.diverged`: shared fields this (non-organizer) copy changed to another value.
pub const DIVERGED_KEY: &str = "diverged";
/// Top-level fields of a meeting that follow the organizer's copy (attendees are handled entry by
/// entry: the list is the organizer's, each response its attendee's).
pub const SHARED_FIELDS: &[&str] = &[
    "title",
    "location",
    "description",
    "start",
    "end",
    "status",
    "recurrence",
    "overrides",
    "organizer",
];

/// How long an import waits for a meeting document another bridge claimed to become durable.
const CLAIMED_WAIT: Duration = Duration::from_secs(5);

/// One mailbox's part in a meeting, read from its copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyRole {
    /// The copy is the organizer's (it owns the shared fields).
    pub organizer: bool,
    /// The mailbox owner's address, lower-cased (their `attendees` key).
    pub owner: Option<String>,
    /// What the owner answered, canonical (`accepted`, ...), when the copy says.
    pub owner_response: Option<String>,
}

/// The key a meeting is matched by across mailboxes: the series UID (the original UID inside an
/// Exchange global object id; Exchange's own ids with the instance date zeroed, upper-case).
pub fn meeting_key(uid: Option<&str>) -> Option<String> {
    let uid = uid?.trim();
    if uid.is_empty() {
        return None;
    }
    let key = series_uid(uid);
    (!key.is_empty()).then_some(key)
}

/// What an import does when the meeting's key is already claimed by a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Add this copy's link to the document.
    Attach,
    /// The document is tombstoned: the meeting starts over in a new document, which takes the key.
    Reclaim,
    /// This bridge already holds another copy with the same UID in that document (one calendar
    /// with two events of one UID): import it as a document of its own, unmatched.
    Separate,
}

/// Decides [`Claimed`] for the claimed document `existing` (`None`: not a readable calendar
/// event, e.g. the key's document was replaced by something else).
pub fn decide_claimed(existing: Option<&CalendarEvent>, bridge: &str, href: &str) -> Claimed {
    let Some(doc) = existing else {
        return Claimed::Reclaim;
    };
    if doc.deleted {
        return Claimed::Reclaim;
    }
    match doc.links.get(bridge) {
        Some(link) if !link.removed && !link.id.is_empty() && link.id != href => Claimed::Separate,
        _ => Claimed::Attach,
    }
}

pub fn is_organizer_link(link: &Link) -> bool {
    !link.removed && link.extra.get(ORGANIZER_KEY).and_then(Value::as_bool) == Some(true)
}

fn link_mailbox(link: &Link) -> Option<&str> {
    link.extra.get(MAILBOX_KEY).and_then(Value::as_str)
}

/// The link entry of a copy at `href` with its role.
pub fn link_entry(href: &str, role: Option<&CopyRole>) -> Link {
    let mut link = Link {
        id: href.to_owned(),
        ..Link::default()
    };
    set_role(&mut link, role);
    link
}

/// Marks `link` with the copy's role (nothing for `None`).
pub(super) fn set_role(link: &mut Link, role: Option<&CopyRole>) {
    if let Some(role) = role {
        link.extra
            .insert(ORGANIZER_KEY.to_owned(), json!(role.organizer));
        if let Some(owner) = &role.owner {
            link.extra.insert(MAILBOX_KEY.to_owned(), json!(owner));
        }
    }
}

/// Whether `bridge`'s copy decides the shared fields: it is the organizer's, or no organizer's
/// copy is linked (then the copies relay the organizer's changes as they arrive).
pub fn owns_shared_fields(doc: &CalendarEvent, bridge: &str, role: &CopyRole) -> bool {
    role.organizer
        || !doc
            .links
            .iter()
            .any(|(b, l)| b != bridge && is_organizer_link(l))
}

fn json_of(event: &CalendarEvent) -> Map<String, Value> {
    match serde_json::to_value(event) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// `json_of` as copies are compared: an override's `links` (where each mailbox keeps that
/// instance) are no shared value.
fn comparable(event: &CalendarEvent) -> Map<String, Value> {
    let mut map = json_of(event);
    if let Some(Value::Object(overrides)) = map.get_mut("overrides") {
        for entry in overrides.values_mut() {
            if let Value::Object(o) = entry {
                o.remove("links");
            }
        }
    }
    map
}

fn event_of(map: Map<String, Value>, fallback: &CalendarEvent) -> CalendarEvent {
    serde_json::from_value(Value::Object(map)).unwrap_or_else(|_| fallback.clone())
}

/// Copies the shared fields of `from` onto `to` (absent ones removed).
fn take_shared(to: &mut Map<String, Value>, from: &Map<String, Value>) {
    for field in SHARED_FIELDS {
        match from.get(*field) {
            Some(v) => to.insert((*field).to_owned(), v.clone()),
            None => to.remove(*field),
        };
    }
}

/// The mailboxes (other than `bridge`'s) linked to the document, by address.
fn other_mailboxes<'a>(doc: &'a CalendarEvent, bridge: &str) -> Vec<&'a str> {
    doc.links
        .iter()
        .filter(|(b, l)| b.as_str() != bridge && !l.removed)
        .filter_map(|(_, l)| link_mailbox(l))
        .collect()
}

/// What a pulled copy contributes to the document, as the target of a diff from `base` (the
/// copy's previous value, or the document's current one when the copy is new to it): the copy as
/// it is when it owns the shared fields (except the responses of attendees whose own mailbox is
/// linked, which are theirs); otherwise `base` with only the owner's response taken from the copy.
pub fn contribution(
    base: &CalendarEvent,
    copy: &CalendarEvent,
    doc: &CalendarEvent,
    bridge: &str,
    role: &CopyRole,
) -> CalendarEvent {
    let owner = role.owner.as_deref();
    let owner_response = role.owner_response.clone().or_else(|| {
        owner
            .and_then(|o| copy.attendees.get(o))
            .and_then(|a| a.response.clone())
    });
    let mut out = if owns_shared_fields(doc, bridge, role) {
        let mut out = copy.clone();
        for email in other_mailboxes(doc, bridge) {
            if let Some(entry) = out.attendees.get_mut(email) {
                entry.response = base.attendees.get(email).and_then(|a| a.response.clone());
            }
        }
        out
    } else {
        let mut map = json_of(copy);
        take_shared(&mut map, &json_of(base));
        let mut out = event_of(map, copy);
        out.attendees = base.attendees.clone();
        out.ical_uid = base.ical_uid.clone().or(out.ical_uid);
        out
    };
    if let (Some(owner), Some(response)) = (owner, owner_response)
        && let Some(entry) = out.attendees.get_mut(owner)
    {
        entry.response = Some(response);
    }
    out
}

/// The shared values of an event by path: each shared field, except `overrides`, which is one
/// path per instance (`overrides.<key>`; a copy that lacks an instance, e.g. one outside Graph's
/// window, says nothing about it).
fn shared_values(event: &CalendarEvent) -> BTreeMap<String, Value> {
    let map = comparable(event);
    let mut out = BTreeMap::new();
    for field in SHARED_FIELDS {
        match (*field, map.get(*field)) {
            ("overrides", Some(Value::Object(overrides))) => {
                for (key, value) in overrides {
                    out.insert(format!("overrides.{key}"), value.clone());
                }
            }
            ("overrides", _) => {}
            (field, value) => {
                out.insert(field.to_owned(), value.cloned().unwrap_or(Value::Null));
            }
        }
    }
    out
}

/// The value at a path of [`shared_values`] (`null` when absent).
fn shared_value(values: &BTreeMap<String, Value>, path: &str) -> Value {
    values.get(path).cloned().unwrap_or(Value::Null)
}

/// The shared values (by path, see [`shared_values`]) a non-organizer copy changed (from `old`
/// to `new`) to a value the document (`doc`) does not hold, merged into what was diverged before
/// (`previous`): a path where the copy and the document agree (again) is dropped.
pub fn divergence(
    old: &CalendarEvent,
    new: &CalendarEvent,
    doc: &CalendarEvent,
    previous: &Map<String, Value>,
) -> Map<String, Value> {
    let (old, new, doc) = (shared_values(old), shared_values(new), shared_values(doc));
    let mut out = previous.clone();
    for (path, value) in &new {
        if *value == shared_value(&doc, path) {
            out.remove(path);
        } else if *value != shared_value(&old, path) {
            out.insert(path.clone(), value.clone());
        }
    }
    out.retain(|path, v| shared_value(&doc, path) != *v);
    out
}

/// Drops from every link's `diverged` what `doc` (the document's shared values as they are
/// about to be) now agrees with, so the order in which copies arrive leaves no trace.
fn settle_divergence(links: &mut BTreeMap<String, Link>, doc: &CalendarEvent) {
    let values = shared_values(doc);
    for link in links.values_mut() {
        let Some(Value::Object(diverged)) = link.extra.get_mut(DIVERGED_KEY) else {
            continue;
        };
        diverged.retain(|path, v| shared_value(&values, path) != *v);
        if diverged.is_empty() {
            link.extra.remove(DIVERGED_KEY);
        }
    }
}

/// What is written to `bridge`'s copy when the document is pushed: the document for the
/// organizer's copy (other attendees' responses left as the copy has them: theirs to answer);
/// the copy as it is for anyone else's, with only the owner's response from the document.
pub fn push_view(doc: &CalendarEvent, copy: &CalendarEvent, role: &CopyRole) -> CalendarEvent {
    let owner = role.owner.as_deref();
    let mut out = if role.organizer {
        let mut out = doc.clone();
        for (email, entry) in out.attendees.iter_mut() {
            if Some(email.as_str()) == owner {
                continue;
            }
            if let Some(theirs) = copy.attendees.get(email) {
                entry.response = theirs.response.clone();
            }
        }
        out
    } else {
        let mut map = json_of(doc);
        take_shared(&mut map, &json_of(copy));
        let mut out = event_of(map, doc);
        let mut attendees: BTreeMap<String, Attendee> = copy.attendees.clone();
        if let Some(owner) = owner
            && let (Some(mine), Some(wanted)) = (attendees.get_mut(owner), doc.attendees.get(owner))
        {
            mine.response = wanted.response.clone();
        }
        out.attendees = attendees;
        out
    };
    out.links = doc.links.clone();
    out
}

/// Whether a provider delete from `bridge` tombstones the meeting while other copies remain:
/// the `[[policies]]` `deleted` authority when one is configured (`policy`), else the organizer's
/// copy of a meeting (an event with attendees).
pub fn is_delete_authority(doc: &CalendarEvent, bridge: &str, policy: Option<&str>) -> bool {
    match policy {
        Some(authority) => authority == bridge,
        None => !doc.attendees.is_empty() && doc.links.get(bridge).is_some_and(is_organizer_link),
    }
}

/// The copies' divergent shared values as conflicts: for each `links.<b>.diverged` field whose
/// value differs from the document's, the document's value (the winner; source: the organizer's
/// bridge, or `app` when the diverging copy is the organizer's own, i.e. its provider cannot take
/// the document's value) and the copy's.
pub fn copy_conflicts(doc: &CalendarEvent) -> Vec<FieldConflict> {
    let current = shared_values(doc);
    let organizer = doc
        .links
        .iter()
        .find(|(_, l)| is_organizer_link(l))
        .map(|(b, _)| b.clone())
        .unwrap_or_default();
    let mut out: BTreeMap<String, FieldConflict> = BTreeMap::new();
    for (bridge, link) in &doc.links {
        let Some(Value::Object(diverged)) = link.extra.get(DIVERGED_KEY) else {
            continue;
        };
        // The organizer's own copy diverges only where its provider cannot take the document's
        // value (a rule Graph cannot express): that value is the document's, not the copy's.
        let document_source = if *bridge == organizer || organizer.is_empty() {
            "app".to_owned()
        } else {
            organizer.clone()
        };
        for (field, value) in diverged {
            let winner = shared_value(&current, field);
            if *value == winner {
                continue;
            }
            out.entry(field.clone())
                .or_insert_with(|| FieldConflict {
                    field: field.clone(),
                    values: vec![ConflictValue {
                        value: winner.clone(),
                        source: document_source.clone(),
                        op: None,
                    }],
                    winner,
                })
                .values
                .push(ConflictValue {
                    value: value.clone(),
                    source: bridge.clone(),
                    op: None,
                });
        }
    }
    out.into_values().collect()
}

/// Adds [`copy_conflicts`] of a stored document to the conflicts the endpoint lists.
pub fn add_copy_conflicts<D: ReadDoc>(doc: &D, conflicts: &mut Vec<FieldConflict>) {
    if let Ok(event) = read_event(doc) {
        conflicts.extend(copy_conflicts(&event));
    }
}

// -------------------------------------------------------------------------------------------
// Provider facts

/// `responseStatus` (Google) / `responseStatus.response` (Graph) in canonical terms.
fn canonical_response(response: &str) -> Option<String> {
    Some(
        match response {
            "accepted" | "organizer" => "accepted",
            "declined" => "declined",
            "tentative" | "tentativelyAccepted" => "tentative",
            "needsAction" | "none" | "notResponded" => "needs_action",
            _ => return None,
        }
        .to_owned(),
    )
}

/// The copy's role, for providers whose records are mailbox copies of meetings (Google, Graph);
/// `None` for the others. `graph_mailbox` is the Graph mailbox's own address (`GET /me`).
pub fn copy_role(provider: &Provider, raw: &str, graph_mailbox: Option<&str>) -> Option<CopyRole> {
    match provider {
        Provider::Google(_) => {
            let series = driftless_bridges::google::translate::StoredSeries::from_json(raw).ok()?;
            Some(google_role(&series.master))
        }
        Provider::Graph(_) => {
            let bundle = driftless_bridges::graph::translate::EventBundle::from_raw(raw).ok()?;
            Some(CopyRole {
                organizer: bundle.is_organizer(),
                owner: graph_mailbox.map(|m| m.trim().to_lowercase()),
                owner_response: bundle
                    .event
                    .pointer("/responseStatus/response")
                    .and_then(Value::as_str)
                    .and_then(canonical_response),
            })
        }
        _ => None,
    }
}

/// A Google event's role: the organizer's copy when `organizer.self` (or no organizer: an event
/// of the calendar's own); the owner is the attendee marked `self`.
pub fn google_role(master: &Value) -> CopyRole {
    let organizer = master.get("organizer");
    let is_organizer =
        organizer.is_none_or(|o| o.get("self").and_then(Value::as_bool) == Some(true));
    let me = master
        .get("attendees")
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter()
                .find(|a| a.get("self").and_then(Value::as_bool) == Some(true))
        });
    let owner = me
        .and_then(|a| a.get("email"))
        .or_else(|| {
            organizer
                .filter(|_| is_organizer)
                .and_then(|o| o.get("email"))
        })
        .and_then(Value::as_str)
        .map(|e| e.trim().to_lowercase());
    CopyRole {
        organizer: is_organizer,
        owner,
        owner_response: me
            .and_then(|a| a.get("responseStatus"))
            .and_then(Value::as_str)
            .and_then(canonical_response),
    }
}

// -------------------------------------------------------------------------------------------
// Index backfill (at start)

/// Whether `config`'s records are mailbox copies of meetings (Google and Graph calendars).
fn holds_meeting_copies(config: &BridgeConfig) -> bool {
    matches!(
        config.kind,
        BridgeKind::GoogleCalendar | BridgeKind::MicrosoftGraph
    )
}

/// The meeting key of a linked copy: from the shadow's `uid`, else read from its raw form
/// (older shadows).
fn linked_key(kind: BridgeKind, shadow: &Shadow) -> Option<String> {
    let uid = shadow.uid.clone().or_else(|| match kind {
        BridgeKind::GoogleCalendar => super::google::GoogleProvider::uid(&shadow.raw),
        BridgeKind::MicrosoftGraph => {
            driftless_bridges::graph::translate::EventBundle::from_raw(&shadow.raw)
                .ok()?
                .ical_uid()
                .map(series_uid)
        }
        _ => None,
    })?;
    meeting_key(Some(&uid))
}

/// Indexes the documents the Google and Graph bridges of `configs` already link, by their
/// meeting key, where the index has no entry for the key (documents imported before the index
/// existed, or whose claim was lost): otherwise a new mailbox's copy of such a meeting would
/// make a second document. Idempotent, existing claims win; one read of each link table and one
/// transaction per workspace, run before any bridge task starts. Returns how many were added.
pub fn backfill_index(store: &BridgeStore, configs: &[BridgeConfig]) -> Result<usize, StoreError> {
    let mut by_workspace: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    for config in configs.iter().filter(|c| holds_meeting_copies(c)) {
        let entries = by_workspace.entry(config.workspace.as_str()).or_default();
        for shadow in store.links(&config.id)?.values() {
            if let Some(key) = linked_key(config.kind, shadow) {
                entries.push((key, shadow.doc.clone()));
            }
        }
    }
    let mut added = 0;
    for (workspace, entries) in by_workspace {
        let n = store.backfill_meetings(workspace, &entries)?;
        if n > 0 {
            info!(%workspace, added = n, "meetings index backfilled from the linked copies");
        }
        added += n;
    }
    Ok(added)
}

// -------------------------------------------------------------------------------------------
// Runner glue (I/O: documents through the engine, the bridge store)

/// How an import of a new provider record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Imported {
    /// The pending import is recorded: the runner creates the document.
    Create,
    /// The copy was attached to the meeting's existing document (its link is stored).
    Attached,
}

fn event_of_record(record: &Record) -> Option<&CalendarEvent> {
    match record {
        Record::Event(e) => Some(e),
        Record::Contact(_) | Record::Company(_) | Record::Deal(_) => None,
    }
}

impl Runner {
    /// The role of the copy stored as `raw` (`None`: this bridge's records are no mailbox copies).
    pub(super) async fn copy_role(&self, raw: &str) -> Result<Option<CopyRole>, BridgeError> {
        // Contacts (a Graph bridge with `resource = "contacts"`) are no meeting copies.
        if Record::type_name(self.record_type) != "calendar_event" {
            return Ok(None);
        }
        // Without its address a Graph copy still has a role; only its owner's response is
        // unknown (a failing `GET /me` must not stop the calendar's sync).
        let mailbox = match &self.provider {
            Provider::Graph(graph) => match graph.mailbox().await {
                Ok(address) => Some(address),
                Err(e) => {
                    tracing::warn!(bridge = %self.id(), error = %e, "mailbox address unknown; this mailbox's own meeting responses are not synced");
                    None
                }
            },
            _ => None,
        };
        Ok(copy_role(&self.provider, raw, mailbox.as_deref()))
    }

    /// Records the pending import of a new provider record, claiming its meeting's key in the
    /// same transaction; when another document holds the key, attaches the copy to it instead.
    pub(super) async fn claim_meeting_or_attach(
        &self,
        href: &str,
        shadow: &Shadow,
        record: &Record,
        role: Option<&CopyRole>,
    ) -> Result<Imported, BridgeError> {
        let workspace = self.config.workspace.as_str();
        let key = role.and_then(|_| meeting_key(record.uid().as_deref()));
        let Some(key) = key else {
            self.store
                .begin_import(self.id(), href, shadow)
                .map_err(|e| self.local(e))?;
            return Ok(Imported::Create);
        };
        let taken = match self
            .store
            .begin_import_claiming(self.id(), href, shadow, workspace, &key, None)
            .map_err(|e| self.local(e))?
        {
            Claim::Claimed => return Ok(Imported::Create),
            Claim::Taken(doc) => doc,
        };
        let doc_id = self.parse_doc_id(&taken)?;
        let existing = self.wait_for_document(&doc_id, &key).await?;
        let existing = existing.as_ref().and_then(|am| read_event(am).ok());
        match decide_claimed(existing.as_ref(), self.id(), href) {
            Claimed::Attach => {
                let current = existing.ok_or_else(|| {
                    self.local(format!(
                        "meeting document {doc_id} vanished while attaching"
                    ))
                })?;
                self.attach_copy(href, shadow, record, role, &doc_id, current)
                    .await?;
                Ok(Imported::Attached)
            }
            Claimed::Reclaim => {
                let claim = self
                    .store
                    .begin_import_claiming(self.id(), href, shadow, workspace, &key, Some(&taken))
                    .map_err(|e| self.local(e))?;
                match claim {
                    Claim::Claimed => Ok(Imported::Create),
                    // Someone else reclaimed it first: their document is the meeting now.
                    Claim::Taken(other) => Err(self.local(format!(
                        "meeting {key}: claimed by document {other} meanwhile; retried next round"
                    ))),
                }
            }
            Claimed::Separate => {
                info!(bridge = %self.id(), %href, doc = %doc_id, uid = %key, "a second event with the same UID in this mailbox; imported as its own document");
                self.store
                    .begin_import(self.id(), href, shadow)
                    .map_err(|e| self.local(e))?;
                Ok(Imported::Create)
            }
        }
    }

    /// The claimed document, once durable: the bridge that claimed it may still be sending it
    /// (or finishes it at its next round after a crash). `None` when it exists but is not in
    /// this workspace.
    async fn wait_for_document(
        &self,
        doc_id: &driftless_client_protocol::DocumentId,
        key: &str,
    ) -> Result<Option<automerge::AutoCommit>, BridgeError> {
        let deadline = tokio::time::Instant::now() + CLAIMED_WAIT;
        loop {
            if let Some(am) = self.load(doc_id)? {
                return Ok(Some(am));
            }
            if self
                .store
                .storage()
                .load_stored(doc_id)
                .map_err(|e| self.local(e))?
                .is_some()
            {
                return Ok(None);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.local(format!(
                    "meeting {key}: document {doc_id} is still being imported by another \
                     bridge; retried next round"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Adds the copy at `href` to the meeting document `doc_id` (as it is now: `current`) with
    /// what the copy contributes, then stores the link. Repeating it (after a crash before the
    /// link was stored) writes nothing twice.
    async fn attach_copy(
        &self,
        href: &str,
        shadow: &Shadow,
        record: &Record,
        role: Option<&CopyRole>,
        doc_id: &driftless_client_protocol::DocumentId,
        current: CalendarEvent,
    ) -> Result<(), BridgeError> {
        let copy = event_of_record(record)
            .ok_or_else(|| self.local(format!("{href}: a meeting copy that is no event")))?;
        let role = role.cloned().unwrap_or_default();
        let mut next = contribution(&current, copy, &current, self.id(), &role);
        next.links = current.links.clone();
        next.deleted = current.deleted;
        next.deleted_at = current.deleted_at.clone();
        next.merged_into = current.merged_into.clone();
        next.extra = current.extra.clone();
        let link = next.links.entry(self.id().to_owned()).or_default();
        link.id = href.to_owned();
        link.removed = false;
        set_role(link, Some(&role));
        let (hash, _) = self
            .write_diff(
                doc_id,
                &[],
                &Record::Event(Box::new(current)),
                &Record::Event(Box::new(next)),
                &format!("bridge {}: attach {href} to its meeting", self.id()),
            )
            .await?;
        let heads = match hash {
            Some(h) => vec![h.to_string()],
            None => self
                .load(doc_id)?
                .map(|mut am| am.get_heads().iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
        };
        let linked = Shadow {
            doc: doc_id.to_string(),
            heads,
            ..shadow.clone()
        };
        self.store
            .commit(
                self.id(),
                &[LinkOp::Put {
                    href: href.to_owned(),
                    shadow: Box::new(linked),
                }],
                None,
                None,
            )
            .map_err(|e| self.local(e))?;
        info!(bridge = %self.id(), %href, doc = %doc_id, organizer = role.organizer, "attached a mailbox copy to its meeting's document");
        Ok(())
    }

    /// What a pulled change of a linked copy writes into document `doc_id` (the diff target from
    /// `old`): see [`contribution`]. A non-organizer copy's divergent shared values and changed
    /// role flags are written into its link entry here.
    pub(super) async fn meeting_contribution(
        &self,
        doc_id: &driftless_client_protocol::DocumentId,
        old: &Record,
        new: &Record,
        raw: &str,
    ) -> Result<Record, BridgeError> {
        let (Some(old_event), Some(new_event)) = (event_of_record(old), event_of_record(new))
        else {
            return Ok(new.clone());
        };
        let Some(role) = self.copy_role(raw).await? else {
            return Ok(new.clone());
        };
        let Some(am) = self.load(doc_id)? else {
            return Ok(new.clone());
        };
        let Ok(doc) = read_event(&am) else {
            return Ok(new.clone());
        };
        let target = contribution(old_event, new_event, &doc, self.id(), &role);
        let mut next = doc.clone();
        // What the document is about to hold ends the divergences it now agrees with.
        let owns = owns_shared_fields(&doc, self.id(), &role);
        let own_previous = match doc.links.get(self.id()).map(|l| l.extra.get(DIVERGED_KEY)) {
            Some(Some(Value::Object(m))) => m.clone(),
            _ => Map::new(),
        };
        settle_divergence(&mut next.links, if owns { &target } else { &doc });
        if let Some(link) = next.links.get_mut(self.id()) {
            set_role(link, Some(&role));
            let previous = match link.extra.get(DIVERGED_KEY) {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            };
            let diverged = if owns {
                // What this copy's provider holds back (see `record_held_back`) stays while the
                // copy still holds it: the document keeps its own value there. A copy that
                // changed it hands its new value to the document instead.
                let now = shared_values(new_event);
                own_previous
                    .into_iter()
                    .filter(|(path, v)| shared_value(&now, path) == *v)
                    .collect()
            } else {
                divergence(old_event, new_event, &doc, &previous)
            };
            if diverged != previous {
                if diverged.is_empty() {
                    link.extra.remove(DIVERGED_KEY);
                } else {
                    info!(bridge = %self.id(), doc = %doc_id, fields = ?diverged.keys().collect::<Vec<_>>(), "a non-organizer copy differs in shared fields; kept as a conflict, not propagated");
                    link.extra
                        .insert(DIVERGED_KEY.to_owned(), Value::Object(diverged));
                }
            }
        }
        if next != doc {
            self.write_diff(
                doc_id,
                &[],
                &Record::Event(Box::new(doc)),
                &Record::Event(Box::new(next)),
                &format!("bridge {}: meeting copy state", self.id()),
            )
            .await?;
        }
        Ok(Record::Event(Box::new(target)))
    }

    /// After a push of `record` onto the copy now stored as `shadow`: keeps the copy's
    /// `links.<bridge>.diverged` equal to the shared values its provider holds back
    /// ([`Provider::held_back`]: a rule Graph cannot express), so the conflicts endpoint lists
    /// the document's value next to the provider's, and drops them once the provider takes (or
    /// already has) the document's value. A non-organizer copy's divergences are its pulls' to
    /// keep: its provider is never written shared values, so it holds nothing back.
    pub(super) async fn record_held_back(
        &self,
        doc_id: &driftless_client_protocol::DocumentId,
        record: &Record,
        shadow: &Shadow,
    ) -> Result<(), BridgeError> {
        let held: Map<String, Value> = self
            .provider
            .held_back(doc_id, record, shadow)
            .into_iter()
            .collect();
        // The common case (nothing held back now or before) needs no document load: `record`
        // carries the document's links.
        let had = record
            .links()
            .get(self.id())
            .is_some_and(|l| l.extra.contains_key(DIVERGED_KEY));
        if held.is_empty() && !had {
            return Ok(());
        }
        let Some(am) = self.load(doc_id)? else {
            return Ok(());
        };
        let Ok(doc) = read_event(&am) else {
            return Ok(());
        };
        let Some(link) = doc.links.get(self.id()) else {
            return Ok(());
        };
        if held.is_empty() && !is_organizer_link(link) {
            return Ok(());
        }
        let previous = match link.extra.get(DIVERGED_KEY) {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        if held == previous {
            return Ok(());
        }
        let mut next = doc.clone();
        if let Some(link) = next.links.get_mut(self.id()) {
            if held.is_empty() {
                link.extra.remove(DIVERGED_KEY);
            } else {
                link.extra
                    .insert(DIVERGED_KEY.to_owned(), Value::Object(held));
            }
        }
        self.write_diff(
            doc_id,
            &[],
            &Record::Event(Box::new(doc)),
            &Record::Event(Box::new(next)),
            &format!("bridge {}: values the provider cannot take", self.id()),
        )
        .await?;
        Ok(())
    }

    /// The record to render onto this bridge's copy (see [`push_view`]); other records as they are.
    pub(super) async fn meeting_push_view(
        &self,
        record: &Record,
        shadow: &Shadow,
    ) -> Result<Record, BridgeError> {
        let Some(doc) = event_of_record(record) else {
            return Ok(record.clone());
        };
        let Some(role) = self.copy_role(&shadow.raw).await? else {
            return Ok(record.clone());
        };
        let copy = match self.shadow_record(shadow)? {
            Record::Event(e) => e,
            Record::Contact(_) | Record::Company(_) | Record::Deal(_) => return Ok(record.clone()),
        };
        Ok(Record::Event(Box::new(push_view(doc, &copy, &role))))
    }

    /// A document the app created was just created at this bridge's provider (as `raw`): it now
    /// has a UID, and claims its meeting so that the invitations arriving in other mailboxes
    /// attach to it. Another document holding the UID already (both created at once) is only
    /// reported: the two stay apart.
    /// Returns the copy's role, for its link entry.
    pub(super) async fn claim_created_meeting(
        &self,
        doc_id: &driftless_client_protocol::DocumentId,
        raw: &str,
    ) -> Result<Option<CopyRole>, BridgeError> {
        let Some(role) = self.copy_role(raw).await? else {
            return Ok(None);
        };
        let Some(key) = meeting_key(self.provider.uid(raw).as_deref()) else {
            return Ok(Some(role));
        };
        let claim = self
            .store
            .claim_meeting(&self.config.workspace, &key, &doc_id.to_string())
            .map_err(|e| self.local(e))?;
        if let Claim::Taken(other) = claim {
            tracing::warn!(bridge = %self.id(), doc = %doc_id, other = %other, uid = %key, "two documents hold one meeting (created at once); they stay apart");
        }
        Ok(Some(role))
    }

    /// Whether this bridge's delete of the meeting in `current` tombstones it (see
    /// [`is_delete_authority`]).
    pub(super) fn meeting_delete_authority(&self, current: &Record) -> bool {
        let record_type = Record::type_name(self.record_type);
        let policy = self.policies.authority(record_type, "deleted");
        match event_of_record(current) {
            Some(doc) if matches!(self.provider, Provider::Google(_) | Provider::Graph(_)) => {
                is_delete_authority(doc, self.id(), policy)
            }
            _ => policy == Some(self.link_key()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attendee(response: &str) -> Attendee {
        Attendee {
            response: Some(response.into()),
            ..Attendee::default()
        }
    }

    /// The invite as the organizer (alice) has it; bob and carol invited.
    fn meeting(title: &str) -> CalendarEvent {
        CalendarEvent {
            title: Some(title.into()),
            location: Some("Room 4".into()),
            start: Some("2026-11-19T10:00:00+01:00[Europe/Berlin]".into()),
            end: Some("2026-11-19T11:00:00+01:00[Europe/Berlin]".into()),
            ical_uid: Some("m1@google.com".into()),
            attendees: BTreeMap::from([
                ("alice@x.org".to_owned(), attendee("accepted")),
                ("bob@x.org".to_owned(), attendee("needs_action")),
                ("carol@x.org".to_owned(), attendee("needs_action")),
            ]),
            ..CalendarEvent::default()
        }
    }

    fn role(organizer: bool, owner: &str) -> CopyRole {
        CopyRole {
            organizer,
            owner: Some(owner.into()),
            owner_response: None,
        }
    }

    /// A document with links for alice (organizer, google) and bob (attendee, graph).
    fn doc_with_links() -> CalendarEvent {
        let mut doc = meeting("Budget");
        doc.links.insert(
            "google-alice".into(),
            link_entry("a1", Some(&role(true, "alice@x.org"))),
        );
        doc.links.insert(
            "graph-bob".into(),
            link_entry("b1", Some(&role(false, "bob@x.org"))),
        );
        doc
    }

    #[test]
    fn meeting_keys_see_through_global_object_ids_and_ignore_provider_ids() {
        let wrapped = "040000008200E00074C5B7101A82E00807EA0B13A0E3A4F5C9D3D8010000000000000000320000007643616C2D55696401000000357132763064336A3872306C316D39673073316332743362346B40676F6F676C652E636F6D00";
        assert_eq!(
            meeting_key(Some(wrapped)).as_deref(),
            Some("5q2v0d3j8r0l1m9g0s1c2t3b4k@google.com")
        );
        assert_eq!(
            meeting_key(Some(" 5q2v0d3j8r0l1m9g0s1c2t3b4k@google.com ")),
            meeting_key(Some(wrapped))
        );
        // Exchange's own ids: the instance date does not matter, nor the case of the hex.
        let native = "040000008200E00074C5B7101A82E00807EA0B13A0E3A4F5C9D3D8010000000000000000100000001A2B3C4D5E6F70819203A4B5C6D7E8F9";
        let other_instance = native.replace("07EA0B13", "07EA0B1A");
        assert_eq!(
            meeting_key(Some(native)),
            meeting_key(Some(&other_instance))
        );
        assert_eq!(
            meeting_key(Some(&native.to_lowercase())),
            meeting_key(Some(native))
        );
        assert_eq!(meeting_key(Some("  ")), None);
        assert_eq!(meeting_key(None), None);
    }

    #[test]
    fn a_claimed_meeting_is_attached_unless_tombstoned_or_already_held_here() {
        let doc = doc_with_links();
        assert_eq!(
            decide_claimed(Some(&doc), "google-carol", "c1"),
            Claimed::Attach
        );
        // The same copy again (a crash before its link was stored): attach again, idempotently.
        assert_eq!(
            decide_claimed(Some(&doc), "graph-bob", "b1"),
            Claimed::Attach
        );
        // Another event with the same UID in bob's mailbox: not merged into his own copy.
        assert_eq!(
            decide_claimed(Some(&doc), "graph-bob", "b2"),
            Claimed::Separate
        );
        let mut removed = doc.clone();
        removed.links.get_mut("graph-bob").unwrap().removed = true;
        assert_eq!(
            decide_claimed(Some(&removed), "graph-bob", "b2"),
            Claimed::Attach
        );
        let mut gone = doc.clone();
        gone.deleted = true;
        assert_eq!(
            decide_claimed(Some(&gone), "google-carol", "c1"),
            Claimed::Reclaim
        );
        assert_eq!(decide_claimed(None, "google-carol", "c1"), Claimed::Reclaim);
    }

    #[test]
    fn an_attendee_copy_contributes_only_its_owners_response() {
        let doc = doc_with_links();
        let old = meeting("Budget");
        let mut new = meeting("Bob's own title");
        new.location = Some("Bob's desk".into());
        new.attendees
            .insert("bob@x.org".into(), attendee("accepted"));
        new.attendees
            .insert("carol@x.org".into(), attendee("declined"));
        let target = contribution(&old, &new, &doc, "graph-bob", &role(false, "bob@x.org"));
        assert_eq!(target.title.as_deref(), Some("Budget"));
        assert_eq!(target.location.as_deref(), Some("Room 4"));
        assert_eq!(
            target.attendees["bob@x.org"].response.as_deref(),
            Some("accepted")
        );
        // Carol's answer as bob's copy shows it is not bob's to give.
        assert_eq!(
            target.attendees["carol@x.org"].response.as_deref(),
            Some("needs_action")
        );
        // Graph's responseStatus decides over the attendee list of the copy.
        let mut graph_role = role(false, "bob@x.org");
        graph_role.owner_response = Some("tentative".into());
        let target = contribution(&old, &new, &doc, "graph-bob", &graph_role);
        assert_eq!(
            target.attendees["bob@x.org"].response.as_deref(),
            Some("tentative")
        );
    }

    #[test]
    fn the_organizers_copy_owns_shared_fields_but_not_linked_attendees_responses() {
        let doc = doc_with_links();
        let old = meeting("Budget");
        let mut new = meeting("Budget 2027");
        new.attendees
            .insert("bob@x.org".into(), attendee("declined"));
        new.attendees
            .insert("carol@x.org".into(), attendee("accepted"));
        let target = contribution(&old, &new, &doc, "google-alice", &role(true, "alice@x.org"));
        assert_eq!(target.title.as_deref(), Some("Budget 2027"));
        // Bob's mailbox is linked: his response is his copy's.
        assert_eq!(
            target.attendees["bob@x.org"].response.as_deref(),
            Some("needs_action")
        );
        // Carol has no mailbox here: the organizer's copy is the best source.
        assert_eq!(
            target.attendees["carol@x.org"].response.as_deref(),
            Some("accepted")
        );
    }

    #[test]
    fn without_an_organizer_copy_an_attendee_copy_relays_shared_fields() {
        let mut doc = meeting("Budget");
        doc.links.insert(
            "graph-bob".into(),
            link_entry("b1", Some(&role(false, "bob@x.org"))),
        );
        let new = meeting("Budget (moved)");
        let target = contribution(
            &meeting("Budget"),
            &new,
            &doc,
            "graph-bob",
            &role(false, "bob@x.org"),
        );
        assert_eq!(target.title.as_deref(), Some("Budget (moved)"));
        // Once the organizer's copy is linked, it no longer does.
        doc.links.insert(
            "google-alice".into(),
            link_entry("a1", Some(&role(true, "alice@x.org"))),
        );
        let target = contribution(
            &meeting("Budget"),
            &new,
            &doc,
            "graph-bob",
            &role(false, "bob@x.org"),
        );
        assert_eq!(target.title.as_deref(), Some("Budget"));
    }

    #[test]
    fn divergence_keeps_what_the_copy_changed_away_from_the_document() {
        let doc = doc_with_links();
        let old = meeting("Budget");
        let new = meeting("Bob's title");
        let diverged = divergence(&old, &new, &doc, &Map::new());
        assert_eq!(diverged.get("title"), Some(&json!("Bob's title")));
        assert_eq!(diverged.len(), 1);
        // Unchanged again in the next pull: kept.
        let again = divergence(&new, &new, &doc, &diverged);
        assert_eq!(again, diverged);
        // Changed back to the document's value: dropped.
        let back = divergence(&new, &old, &doc, &diverged);
        assert!(back.is_empty(), "{back:?}");
        // The document came to agree (the organizer renamed it the same way): dropped.
        let agreed = divergence(&new, &new, &meeting("Bob's title"), &diverged);
        assert!(agreed.is_empty(), "{agreed:?}");
        // The organizer's rename reached the copy too (the shadow settled to it): dropped.
        let mut renamed = doc.clone();
        renamed.title = Some("Budget 2027".into());
        let caught_up = divergence(
            &meeting("Budget 2027"),
            &meeting("Budget 2027"),
            &renamed,
            &diverged,
        );
        assert!(caught_up.is_empty(), "{caught_up:?}");
        // Where a copy keeps an instance (an override's links) is no divergence.
        let mut moved = meeting("Budget");
        moved.overrides.insert(
            "20261126T090000Z".into(),
            driftless_crdt_model::Override {
                title: Some("moved".into()),
                ..Default::default()
            },
        );
        let mut with_link = moved.clone();
        if let Some(o) = with_link.overrides.get_mut("20261126T090000Z") {
            o.links
                .insert("graph-bob".into(), link_entry("occ-1", None));
        }
        let mut doc_moved = doc.clone();
        doc_moved.overrides = moved.overrides.clone();
        assert!(divergence(&meeting("Budget"), &with_link, &doc_moved, &Map::new()).is_empty());
    }

    #[test]
    fn divergent_values_are_listed_as_conflicts_with_the_document_value_winning() {
        let mut doc = doc_with_links();
        doc.links.get_mut("graph-bob").unwrap().extra.insert(
            DIVERGED_KEY.into(),
            json!({"title": "Bob's title", "location": "Room 4"}),
        );
        let conflicts = copy_conflicts(&doc);
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        let c = &conflicts[0];
        assert_eq!(c.field, "title");
        assert_eq!(c.winner, json!("Budget"));
        assert_eq!(
            c.values,
            vec![
                ConflictValue {
                    value: json!("Budget"),
                    source: "google-alice".into(),
                    op: None,
                },
                ConflictValue {
                    value: json!("Bob's title"),
                    source: "graph-bob".into(),
                    op: None,
                },
            ]
        );
    }

    #[test]
    fn a_value_the_organizers_provider_holds_back_is_listed_against_the_documents() {
        let mut doc = doc_with_links();
        doc.links
            .get_mut("google-alice")
            .unwrap()
            .extra
            .insert(DIVERGED_KEY.into(), json!({"title": "What Google keeps"}));
        let conflicts = copy_conflicts(&doc);
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(conflicts[0].winner, json!("Budget"));
        assert_eq!(
            conflicts[0].values,
            vec![
                ConflictValue {
                    value: json!("Budget"),
                    source: "app".into(),
                    op: None,
                },
                ConflictValue {
                    value: json!("What Google keeps"),
                    source: "google-alice".into(),
                    op: None,
                },
            ]
        );
    }

    #[test]
    fn pushes_give_each_mailbox_only_what_it_owns() {
        let mut doc = doc_with_links();
        doc.title = Some("Renamed in the app".into());
        doc.attendees
            .insert("bob@x.org".into(), attendee("accepted"));
        doc.attendees
            .insert("alice@x.org".into(), attendee("tentative"));
        let copy = meeting("Budget");
        // The organizer's mailbox: the shared fields and alice's own answer, not bob's.
        let organizer = push_view(&doc, &copy, &role(true, "alice@x.org"));
        assert_eq!(organizer.title.as_deref(), Some("Renamed in the app"));
        assert_eq!(
            organizer.attendees["bob@x.org"].response.as_deref(),
            Some("needs_action")
        );
        assert_eq!(
            organizer.attendees["alice@x.org"].response.as_deref(),
            Some("tentative")
        );
        // Bob's mailbox: his copy as it is, with his answer.
        let bob = push_view(&doc, &copy, &role(false, "bob@x.org"));
        assert_eq!(bob.title.as_deref(), Some("Budget"));
        assert_eq!(
            bob.attendees["bob@x.org"].response.as_deref(),
            Some("accepted")
        );
        assert_eq!(
            bob.attendees["alice@x.org"].response.as_deref(),
            Some("accepted")
        );
        assert_eq!(bob.links, doc.links);
    }

    #[test]
    fn the_organizers_copy_is_the_default_delete_authority_of_a_meeting() {
        let doc = doc_with_links();
        assert!(is_delete_authority(&doc, "google-alice", None));
        assert!(!is_delete_authority(&doc, "graph-bob", None));
        // A policy decides instead.
        assert!(!is_delete_authority(
            &doc,
            "google-alice",
            Some("graph-bob")
        ));
        assert!(is_delete_authority(&doc, "graph-bob", Some("graph-bob")));
        // An event without attendees is no meeting.
        let mut single = doc.clone();
        single.attendees.clear();
        assert!(!is_delete_authority(&single, "google-alice", None));
    }

    #[test]
    fn google_roles_come_from_organizer_self_and_the_self_attendee() {
        let organizer = google_role(&json!({
            "organizer": {"email": "Alice@x.org", "self": true},
            "attendees": [{"email": "Alice@x.org", "self": true, "responseStatus": "accepted"},
                          {"email": "bob@x.org", "responseStatus": "needsAction"}]
        }));
        assert_eq!(
            organizer,
            CopyRole {
                organizer: true,
                owner: Some("alice@x.org".into()),
                owner_response: Some("accepted".into())
            }
        );
        let attendee = google_role(&json!({
            "organizer": {"email": "alice@x.org"},
            "attendees": [{"email": "alice@x.org", "organizer": true, "responseStatus": "accepted"},
                          {"email": "Carol@x.org", "self": true, "responseStatus": "tentative"}]
        }));
        assert_eq!(
            attendee,
            CopyRole {
                organizer: false,
                owner: Some("carol@x.org".into()),
                owner_response: Some("tentative".into())
            }
        );
        // An event of the calendar's own without an organizer field.
        assert!(google_role(&json!({"summary": "x"})).organizer);
    }
}
