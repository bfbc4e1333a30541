//! The canonical record of a bridge's kind (event for CalDAV and Google, contact for CardDAV)
//! behind one type, so the runner is written once: read from a document, create, and commit a
//! field-level difference at the shadow's heads (translation from and to a provider's resources
//! is the provider's, see `provider`).

use std::collections::BTreeMap;

use automerge::transaction::CommitOptions;
use automerge::{AutoCommit, ChangeHash, ReadDoc};
use driftless_crdt_model::{
    CalendarEvent, ChangeSummary, Contact, Link, ReadError, WriteError, commit_contact_diff_at,
    commit_event_diff_at, create_contact, create_event, read_contact, read_event,
};

use driftless_client_protocol::DocumentId;

use crate::config::BridgeKind;

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Event(Box<CalendarEvent>),
    Contact(Box<Contact>),
}

impl Record {
    /// The provider's view of an event record; for a contact, an error naming the document.
    pub fn provider_event(&self, doc_id: &DocumentId) -> Result<CalendarEvent, String> {
        match self.provider_view() {
            Record::Event(event) => Ok(*event),
            Record::Contact(_) => Err(format!(
                "document {doc_id} is a contact, not a calendar event"
            )),
        }
    }

    /// The provider's view of a contact record; for an event, an error naming the document.
    pub fn provider_contact(&self, doc_id: &DocumentId) -> Result<Contact, String> {
        match self.provider_view() {
            Record::Contact(contact) => Ok(*contact),
            Record::Event(_) => Err(format!(
                "document {doc_id} is a calendar event, not a contact"
            )),
        }
    }

    pub fn read<D: ReadDoc>(kind: BridgeKind, doc: &D) -> Result<Self, ReadError> {
        Ok(match kind {
            BridgeKind::CalDav | BridgeKind::GoogleCalendar | BridgeKind::MicrosoftGraph => {
                Self::Event(Box::new(read_event(doc)?))
            }
            BridgeKind::CardDav
            | BridgeKind::HubSpot
            | BridgeKind::MicrosoftGraphContacts
            | BridgeKind::Salesforce => Self::Contact(Box::new(read_contact(doc)?)),
        })
    }

    /// The record type a bridge of `kind` syncs.
    pub fn type_name(kind: BridgeKind) -> &'static str {
        crate::config::bridge_record_type(kind)
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Event(e) => serde_json::to_value(e.as_ref()),
            Self::Contact(c) => serde_json::to_value(c.as_ref()),
        }
        .unwrap_or(serde_json::Value::Null)
    }

    pub fn from_json(
        kind: BridgeKind,
        value: serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        Ok(match kind {
            BridgeKind::CalDav | BridgeKind::GoogleCalendar | BridgeKind::MicrosoftGraph => {
                Self::Event(Box::new(serde_json::from_value(value)?))
            }
            BridgeKind::CardDav
            | BridgeKind::HubSpot
            | BridgeKind::MicrosoftGraphContacts
            | BridgeKind::Salesforce => Self::Contact(Box::new(serde_json::from_value(value)?)),
        })
    }

    pub fn links(&self) -> &BTreeMap<String, Link> {
        match self {
            Self::Event(e) => &e.links,
            Self::Contact(c) => &c.links,
        }
    }

    pub fn links_mut(&mut self) -> &mut BTreeMap<String, Link> {
        match self {
            Self::Event(e) => &mut e.links,
            Self::Contact(c) => &mut c.links,
        }
    }

    pub fn deleted(&self) -> bool {
        match self {
            Self::Event(e) => e.deleted,
            Self::Contact(c) => c.deleted,
        }
    }

    pub fn tombstone(&mut self, at: String) {
        match self {
            Self::Event(e) => {
                e.deleted = true;
                e.deleted_at = Some(at);
            }
            Self::Contact(c) => {
                c.deleted = true;
                c.deleted_at = Some(at);
            }
        }
    }

    /// The UID the provider resource carries.
    pub fn uid(&self) -> Option<String> {
        match self {
            Self::Event(e) => e.ical_uid.clone(),
            Self::Contact(_) => None,
        }
    }

    /// What the provider can hold: the record without the server-side fields (links, tombstone,
    /// merge pointer). Shadows hold this view.
    pub fn provider_view(&self) -> Self {
        let mut out = self.clone();
        match &mut out {
            Self::Event(e) => {
                e.links.clear();
                e.deleted = false;
                e.deleted_at = None;
                e.merged_into = None;
            }
            Self::Contact(c) => {
                c.links.clear();
                c.deleted = false;
                c.deleted_at = None;
                c.merged_into = None;
            }
        }
        out
    }

    /// Writes the whole record into an empty document (not committed).
    pub fn create(&self, doc: &mut AutoCommit) -> Result<ChangeSummary, WriteError> {
        match self {
            Self::Event(e) => create_event(doc, e),
            Self::Contact(c) => create_contact(doc, c),
        }
    }

    /// Commits `old -> new` at `heads` as one change (see `commit_event_diff_at`).
    pub fn commit_diff_at(
        doc: &mut AutoCommit,
        heads: &[ChangeHash],
        old: &Record,
        new: &Record,
        message: &str,
    ) -> Result<Option<ChangeHash>, WriteError> {
        let options = CommitOptions::default().with_message(message.to_owned());
        let (_, hash) = match (old, new) {
            (Self::Event(o), Self::Event(n)) => commit_event_diff_at(doc, heads, o, n, options)?,
            (Self::Contact(o), Self::Contact(n)) => {
                commit_contact_diff_at(doc, heads, o, n, options)?
            }
            _ => return Ok(None),
        };
        Ok(hash)
    }
}
