//! Identity resolution on import: a new provider contact (from any contact-bearing bridge:
//! CardDAV, HubSpot, Salesforce, Graph contacts) is matched against the canonical contacts of the
//! bridge's workspace before a document is created for it.
//!
//! - Exactly one match by the rules of `driftless_crdt_model::identity::resolve` (an existing
//!   link, then a normalized email, then an E.164 phone with the same name): the provider record
//!   **attaches** to that document. Its link is added and its fields are merged the way an
//!   identity merge does (`merge_contacts`: the document keeps the values it holds, gains what it
//!   lacks, emails and phones are unioned by normalized value); the shadow is the provider's
//!   record with its emails and phones placed on the document's slots, so the next push writes
//!   the canonical values to the provider once and a later edit there lands in the same slot.
//! - No match: a new document, as before.
//! - Ambiguous (several records, a phone with another name, a record already linked at the same
//!   bridge): a new document, never merged; the pair shows up at `GET /v1/identity/suggestions`
//!   (which derives suggestions from the documents, so nothing is stored here).
//!
//! A record already linked at the incoming record's bridge (a live link or a removed one) is
//! never attached to automatically: one document holds one link per bridge.
//!
//! Concurrency: two bridges importing the same person at once must not make two documents.
//! Every decision of the process holds one lock ([`Identities`]) from the decision until the new
//! document is durable (or the attach is written), so the second bridge sees the first one's
//! document. A crash can leave another bridge's import pending with its document not yet sent;
//! pending imports of the workspace are candidates too, and matching one fails the round (retried
//! with backoff) until its bridge has finished it.
//!
//! The candidate index is kept in memory and caught up from the storage `change_log` before each
//! decision (like the record index), so app edits and merges are seen. Must not: decide anything
//! beyond [`decide_import`], or write except through the runner's `write_diff` and link commit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use driftless_client_protocol::DocumentId;
use driftless_crdt_model::identity::{
    Candidate, IdentityKeys, MatchReason, PhoneRegion, merge_contacts, resolve,
};
use driftless_crdt_model::{Contact, Link, SlotKind, assign_slots_in};
use tokio::sync::{Mutex, OwnedMutexGuard};
use tracing::info;

use super::record::Record;
use super::store::{LinkOp, Shadow};
use super::{BridgeError, Runner};
use crate::storage::Storage;

/// Change-log entries read per step while catching up.
const CATCH_UP_BATCH: usize = 1024;

/// What to do with one new provider contact.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportDecision<Id> {
    /// Attach to this document.
    Attach { doc: Id, reason: MatchReason },
    /// Create a new document; `suggested` are the records a person should compare it with.
    New { suggested: Vec<Candidate<Id>> },
}

/// A candidate record: its identity keys and every bridge it has a link entry at (live or
/// removed).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CandidateKeys {
    pub keys: IdentityKeys,
    pub linked_at: BTreeSet<String>,
}

impl CandidateKeys {
    pub fn of(contact: &Contact, region: PhoneRegion) -> Self {
        let mut keys = IdentityKeys::of(contact, region);
        // A removed link still names the record it was: a restored provider record re-links.
        for (bridge, link) in &contact.links {
            if !link.id.is_empty() {
                keys.links.insert((bridge.clone(), link.id.clone()));
            }
        }
        CandidateKeys {
            keys,
            linked_at: contact.links.keys().cloned().collect(),
        }
    }
}

/// Decides where a new record of `bridge` with `incoming` keys belongs among `candidates`
/// (pure). `resolve` decides; a candidate holding a link entry at `bridge` under another id is
/// only suggested.
pub fn decide_import<Id: Clone + Ord>(
    bridge: &str,
    incoming: &IdentityKeys,
    candidates: &[(Id, CandidateKeys)],
) -> ImportDecision<Id> {
    let known: Vec<(Id, IdentityKeys)> = candidates
        .iter()
        .map(|(id, c)| (id.clone(), c.keys.clone()))
        .collect();
    let resolution = resolve(incoming, &known);
    let mut suggested = resolution.suggestions;
    match resolution.matched {
        Some((doc, MatchReason::Link)) => ImportDecision::Attach {
            doc,
            reason: MatchReason::Link,
        },
        Some((doc, reason)) => {
            let linked_here = candidates
                .iter()
                .any(|(id, c)| *id == doc && c.linked_at.contains(bridge));
            if linked_here {
                suggested.insert(
                    0,
                    Candidate {
                        doc,
                        reason,
                        score: reason.score(),
                    },
                );
                ImportDecision::New { suggested }
            } else {
                ImportDecision::Attach { doc, reason }
            }
        }
        None => ImportDecision::New { suggested },
    }
}

/// The live contacts of every workspace, caught up from the change log.
#[derive(Debug, Default)]
pub struct IdentityIndex {
    cursor: Option<u64>,
    /// document -> (workspace, keys)
    docs: BTreeMap<DocumentId, (String, CandidateKeys)>,
}

impl IdentityIndex {
    fn catch_up(&mut self, storage: &Storage, region: PhoneRegion) -> Result<(), String> {
        loop {
            let entries = storage
                .changes_after(self.cursor, CATCH_UP_BATCH)
                .map_err(|e| format!("reading the change log: {e}"))?;
            let Some(&(last, _)) = entries.last() else {
                return Ok(());
            };
            let changed: BTreeSet<DocumentId> = entries.into_iter().map(|(_, d)| d).collect();
            for doc in changed {
                let stored = storage
                    .load_stored(&doc)
                    .map_err(|e| format!("document {doc}: {e}"))?;
                let live = stored.and_then(|s| {
                    if driftless_crdt_model::record_type(&s.document).as_deref()
                        != Some(driftless_crdt_model::CONTACT)
                    {
                        return None;
                    }
                    let contact = driftless_crdt_model::read_contact(&s.document).ok()?;
                    (!contact.deleted && contact.merged_into.is_none())
                        .then(|| (s.workspace, CandidateKeys::of(&contact, region)))
                });
                match live {
                    Some(entry) => {
                        self.docs.insert(doc, entry);
                    }
                    None => {
                        self.docs.remove(&doc);
                    }
                }
            }
            self.cursor = Some(last);
        }
    }

    /// Contacts of `workspace` sharing a link, an email or a phone with `keys`.
    fn candidates(&self, workspace: &str, keys: &IdentityKeys) -> Vec<(DocumentId, CandidateKeys)> {
        self.docs
            .iter()
            .filter(|(_, (ws, c))| {
                ws == workspace
                    && (!c.keys.links.is_disjoint(&keys.links)
                        || !c.keys.emails.is_disjoint(&keys.emails)
                        || !c.keys.phones.is_disjoint(&keys.phones))
            })
            .map(|(doc, (_, c))| (doc.clone(), c.clone()))
            .collect()
    }
}

/// The process's identity decisions: one lock, the index, the region and which bridges share a
/// workspace.
#[derive(Debug)]
pub struct Identities {
    index: Arc<Mutex<IdentityIndex>>,
    region: PhoneRegion,
    /// workspace -> its bridges (their pending imports are candidates too)
    bridges: BTreeMap<String, Vec<String>>,
}

impl Identities {
    pub fn new(region: PhoneRegion, bridges: BTreeMap<String, Vec<String>>) -> Self {
        Self {
            index: Arc::new(Mutex::new(IdentityIndex::default())),
            region,
            bridges,
        }
    }

    pub fn region(&self) -> PhoneRegion {
        self.region
    }
}

/// The identity lock, held by a new import until its document is durable.
pub(super) type IdentityClaim = OwnedMutexGuard<IdentityIndex>;

/// How [`Runner::resolve_identity`] ended.
pub(super) enum IdentityOutcome {
    /// Attached to an existing document: nothing left to import.
    Attached,
    /// Import as a new document, holding the claim (for a contact) until it is durable.
    New(Option<IdentityClaim>),
}

impl Runner {
    /// Before a new provider record is imported: attaches a contact to the one canonical
    /// contact the identity rules find, or tells the caller to import it as a new document
    /// (holding the identity lock until that document is durable).
    pub(super) async fn resolve_identity(
        &self,
        href: &str,
        etag: Option<String>,
        body: &str,
        record: &Record,
    ) -> Result<IdentityOutcome, BridgeError> {
        let Record::Contact(incoming) = record else {
            return Ok(IdentityOutcome::New(None));
        };
        let identities = self.identities.clone();
        let region = identities.region;
        let mut index = identities.index.clone().lock_owned().await;
        index
            .catch_up(self.store.storage(), region)
            .map_err(|e| self.local(format!("identity index: {e}")))?;
        let mut linked = incoming.as_ref().clone();
        linked.links.insert(
            self.link_key().to_owned(),
            Link {
                id: href.to_owned(),
                ..Link::default()
            },
        );
        let keys = IdentityKeys::of(&linked, region);
        let workspace = &self.config.workspace;
        let mut candidates = index.candidates(workspace, &keys);
        // Another bridge's import a crash interrupted (its document may not exist yet).
        let mut pending: BTreeSet<DocumentId> = BTreeSet::new();
        for bridge in identities.bridges.get(workspace).into_iter().flatten() {
            let imports = self
                .store
                .pending_imports(bridge)
                .map_err(|e| self.local(e))?;
            for shadow in imports.values() {
                let (Ok(doc), Ok(contact)) = (
                    shadow.doc.parse::<DocumentId>(),
                    serde_json::from_value::<Contact>(shadow.canonical.clone()),
                ) else {
                    continue;
                };
                if !candidates.iter().any(|(d, _)| *d == doc) {
                    candidates.push((doc.clone(), CandidateKeys::of(&contact, region)));
                    pending.insert(doc);
                }
            }
        }
        match decide_import(self.link_key(), &keys, &candidates) {
            ImportDecision::New { suggested } => {
                if !suggested.is_empty() {
                    let docs: Vec<String> = suggested.iter().map(|c| c.doc.to_string()).collect();
                    info!(bridge = %self.id(), %href, candidates = ?docs, "possible duplicate imported as its own document; listed as an identity suggestion");
                }
                Ok(IdentityOutcome::New(Some(index)))
            }
            ImportDecision::Attach { doc, reason } => {
                if pending.contains(&doc) && self.load(&doc)?.is_none() {
                    return Err(self.local(format!(
                        "{href} is the contact of document {doc}, whose import by another \
                         bridge was interrupted; retried once that bridge has finished it"
                    )));
                }
                self.attach(&doc, href, etag, body, incoming, reason)
                    .await?;
                drop(index);
                Ok(IdentityOutcome::Attached)
            }
        }
    }

    /// Links `href` to document `doc_id` and merges the provider's fields into it; stores the
    /// link with the provider's record (on the document's slots) as its shadow.
    async fn attach(
        &self,
        doc_id: &DocumentId,
        href: &str,
        etag: Option<String>,
        body: &str,
        incoming: &Contact,
        reason: MatchReason,
    ) -> Result<(), BridgeError> {
        let region = self.identities.region;
        let Some(am) = self.load(doc_id)? else {
            return Err(self.local(format!("document {doc_id} is missing from storage")));
        };
        let current = driftless_crdt_model::read_contact(&am)
            .map_err(|e| self.local(format!("document {doc_id} is not a readable contact: {e}")))?;
        let (mut merged, _) = merge_contacts(&current, incoming, region);
        let link = merged.links.entry(self.link_key().to_owned()).or_default();
        link.id = href.to_owned();
        link.removed = false;
        let (hash, _) = self
            .write_diff(
                doc_id,
                &[],
                &Record::Contact(Box::new(current)),
                &Record::Contact(Box::new(merged.clone())),
                &format!(
                    "bridge {}: {href} is this contact (identity: {})",
                    self.id(),
                    reason.as_str()
                ),
            )
            .await?;
        let heads = match hash {
            Some(hash) => vec![hash.to_string()],
            None => self
                .load(doc_id)?
                .map(|mut am| am.get_heads().iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
        };
        let canonical = on_document_slots(incoming, &merged, region);
        let shadow = Shadow {
            doc: doc_id.to_string(),
            etag,
            raw: body.to_owned(),
            canonical: Record::Contact(Box::new(canonical)).to_json(),
            heads,
            uid: self.provider.uid(body),
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
        info!(bridge = %self.id(), %href, doc = %doc_id, reason = reason.as_str(), "new provider contact attached to its existing document");
        Ok(())
    }
}

/// The provider's contact with its emails and phones moved onto the document's slot ids (same
/// normalized value first, then the same label), so later edits at the provider edit those slots.
pub fn on_document_slots(provider: &Contact, document: &Contact, region: PhoneRegion) -> Contact {
    let mut out = provider.clone();
    let mut fresh = || uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let emails: Vec<_> = provider.emails.values().cloned().collect();
    out.emails = assign_slots_in(
        &document.emails,
        &emails,
        SlotKind::Email,
        region,
        &mut fresh,
    );
    let phones: Vec<_> = provider.phones.values().cloned().collect();
    out.phones = assign_slots_in(
        &document.phones,
        &phones,
        SlotKind::Phone,
        region,
        &mut fresh,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftless_crdt_model::{ContactPoint, Name};

    fn us() -> PhoneRegion {
        "US".parse().expect("region")
    }

    fn contact(
        full: &str,
        emails: &[&str],
        phones: &[&str],
        links: &[(&str, &str, bool)],
    ) -> Contact {
        let point = |v: &&str| ContactPoint {
            value: (*v).to_owned(),
            ..ContactPoint::default()
        };
        Contact {
            name: Name {
                full: Some(full.to_owned()),
                ..Name::default()
            },
            emails: emails
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("e{i}"), point(v)))
                .collect(),
            phones: phones
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("p{i}"), point(v)))
                .collect(),
            links: links
                .iter()
                .map(|(b, id, removed)| {
                    (
                        (*b).to_owned(),
                        Link {
                            id: (*id).to_owned(),
                            removed: *removed,
                            ..Link::default()
                        },
                    )
                })
                .collect(),
            ..Contact::default()
        }
    }

    fn incoming(c: &Contact) -> IdentityKeys {
        IdentityKeys::of(c, us())
    }

    fn cands(list: &[(&'static str, Contact)]) -> Vec<(&'static str, CandidateKeys)> {
        list.iter()
            .map(|(id, c)| (*id, CandidateKeys::of(c, us())))
            .collect()
    }

    #[test]
    fn one_match_attaches_none_creates_several_suggest() {
        let jane = contact("Jane Roe", &["jane@x.com"], &[], &[("crm", "7", false)]);
        let from_book = contact(
            "Jane Roe",
            &["JANE@x.com"],
            &[],
            &[("book", "/j.vcf", false)],
        );
        assert_eq!(
            decide_import("crm", &incoming(&jane), &cands(&[("a", from_book.clone())])),
            ImportDecision::Attach {
                doc: "a",
                reason: MatchReason::Email
            }
        );
        assert_eq!(
            decide_import("crm", &incoming(&jane), &[]),
            ImportDecision::New {
                suggested: Vec::<Candidate<&str>>::new()
            }
        );
        let two = cands(&[("a", from_book.clone()), ("b", from_book)]);
        match decide_import("crm", &incoming(&jane), &two) {
            ImportDecision::New { suggested } => {
                assert_eq!(
                    suggested.iter().map(|c| c.doc).collect::<Vec<_>>(),
                    vec!["a", "b"]
                );
            }
            other => panic!("ambiguous emails must not attach: {other:?}"),
        }
    }

    #[test]
    fn a_phone_attaches_only_with_the_same_name_in_the_default_region() {
        let new = contact("Jane Roe", &[], &["(415) 555-0100"], &[("crm", "7", false)]);
        let same = contact("Roe, Jane", &[], &["+1 415-555-0100"], &[]);
        assert_eq!(
            decide_import("crm", &incoming(&new), &cands(&[("a", same)])),
            ImportDecision::Attach {
                doc: "a",
                reason: MatchReason::PhoneAndName
            }
        );
        let other = contact("John Roe", &[], &["+1 415-555-0100"], &[]);
        assert!(matches!(
            decide_import("crm", &incoming(&new), &cands(&[("a", other)])),
            ImportDecision::New { suggested } if suggested.len() == 1
        ));
    }

    #[test]
    fn a_record_with_a_link_entry_at_the_same_bridge_is_only_suggested() {
        let new = contact("Jane", &["jane@x.com"], &[], &[("crm", "8", false)]);
        for removed in [false, true] {
            let held = contact("Jane", &["jane@x.com"], &[], &[("crm", "7", removed)]);
            match decide_import("crm", &incoming(&new), &cands(&[("a", held)])) {
                ImportDecision::New { suggested } => {
                    assert_eq!(suggested.len(), 1, "removed={removed}");
                    assert_eq!(suggested[0].doc, "a");
                }
                other => panic!("removed={removed}: must not attach: {other:?}"),
            }
        }
        // The same bridge's own earlier link to this very record (a restore) re-links.
        let restored = contact("Jane", &[], &[], &[("crm", "8", true)]);
        assert_eq!(
            decide_import("crm", &incoming(&new), &cands(&[("a", restored)])),
            ImportDecision::Attach {
                doc: "a",
                reason: MatchReason::Link
            }
        );
    }

    #[test]
    fn the_shadow_takes_the_documents_slots() {
        let document = contact("Jane", &["jane@x.com"], &["+1 415-555-0100"], &[]);
        let mut provider = contact(
            "Jane",
            &["Jane@X.com"],
            &["(415) 555-0100", "+49 30 1234567"],
            &[],
        );
        provider.emails = BTreeMap::from([("zz".to_owned(), provider.emails["e0"].clone())]);
        let placed = on_document_slots(&provider, &document, us());
        assert_eq!(placed.emails.keys().collect::<Vec<_>>(), vec!["e0"]);
        assert_eq!(placed.phones.len(), 2);
        assert_eq!(placed.phones["p0"].value, "(415) 555-0100");
        assert!(placed.phones.keys().any(|k| k != "p0" && k != "p1"));
    }
}
