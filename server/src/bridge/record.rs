//! The canonical record of a bridge's kind (event for CalDAV and Google, contact for CardDAV;
//! contact, company or deal for the object types of a HubSpot bridge) behind one type, so the runner is written once: read from a document, create, and commit a
//! field-level difference at the shadow's heads (translation from and to a provider's resources
//! is the provider's, see `provider`).

use std::collections::BTreeMap;

use automerge::transaction::CommitOptions;
use automerge::{AutoCommit, ChangeHash, ReadDoc};
use driftless_crdt_model::{
    CalendarEvent, ChangeSummary, Company, Contact, Deal, Link, ReadError, WriteError,
    commit_company_diff_at, commit_contact_diff_at, commit_deal_diff_at, commit_event_diff_at,
    create_company, create_contact, create_deal, create_event, read_company, read_contact,
    read_deal, read_event,
};

use driftless_client_protocol::DocumentId;

use crate::config::BridgeKind;

/// Which record type a runner syncs: its bridge kind's, or (HubSpot) the object type's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    Event,
    Contact,
    Company,
    Deal,
}

impl RecordType {
    pub fn name(self) -> &'static str {
        match self {
            RecordType::Event => driftless_crdt_model::CALENDAR_EVENT,
            RecordType::Contact => driftless_crdt_model::CONTACT,
            RecordType::Company => driftless_crdt_model::COMPANY,
            RecordType::Deal => driftless_crdt_model::DEAL,
        }
    }
}

impl From<BridgeKind> for RecordType {
    fn from(kind: BridgeKind) -> Self {
        match crate::config::bridge_record_type(kind) {
            driftless_crdt_model::CONTACT => RecordType::Contact,
            _ => RecordType::Event,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Event(Box<CalendarEvent>),
    Contact(Box<Contact>),
    Company(Box<Company>),
    Deal(Box<Deal>),
}

impl Record {
    /// The provider's view of an event record; for a contact, an error naming the document.
    pub fn provider_event(&self, doc_id: &DocumentId) -> Result<CalendarEvent, String> {
        match self.provider_view() {
            Record::Event(event) => Ok(*event),
            other => Err(format!(
                "document {doc_id} is a {}, not a calendar event",
                other.type_name_of()
            )),
        }
    }

    /// The provider's view of a contact record; for an event, an error naming the document.
    pub fn provider_contact(&self, doc_id: &DocumentId) -> Result<Contact, String> {
        match self.provider_view() {
            Record::Contact(contact) => Ok(*contact),
            other => Err(format!(
                "document {doc_id} is a {}, not a contact",
                other.type_name_of()
            )),
        }
    }

    /// The record's type name.
    pub fn type_name_of(&self) -> &'static str {
        match self {
            Self::Event(_) => RecordType::Event.name(),
            Self::Contact(_) => RecordType::Contact.name(),
            Self::Company(_) => RecordType::Company.name(),
            Self::Deal(_) => RecordType::Deal.name(),
        }
    }

    pub fn read<D: ReadDoc>(kind: impl Into<RecordType>, doc: &D) -> Result<Self, ReadError> {
        Ok(match kind.into() {
            RecordType::Event => Self::Event(Box::new(read_event(doc)?)),
            RecordType::Contact => Self::Contact(Box::new(read_contact(doc)?)),
            RecordType::Company => Self::Company(Box::new(read_company(doc)?)),
            RecordType::Deal => Self::Deal(Box::new(read_deal(doc)?)),
        })
    }

    /// The record type a bridge of `kind` (or a runner of that record type) syncs.
    pub fn type_name(kind: impl Into<RecordType>) -> &'static str {
        kind.into().name()
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Event(e) => serde_json::to_value(e.as_ref()),
            Self::Contact(c) => serde_json::to_value(c.as_ref()),
            Self::Company(c) => serde_json::to_value(c.as_ref()),
            Self::Deal(d) => serde_json::to_value(d.as_ref()),
        }
        .unwrap_or(serde_json::Value::Null)
    }

    pub fn from_json(
        kind: impl Into<RecordType>,
        value: serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        Ok(match kind.into() {
            RecordType::Event => Self::Event(Box::new(serde_json::from_value(value)?)),
            RecordType::Contact => Self::Contact(Box::new(serde_json::from_value(value)?)),
            RecordType::Company => Self::Company(Box::new(serde_json::from_value(value)?)),
            RecordType::Deal => Self::Deal(Box::new(serde_json::from_value(value)?)),
        })
    }

    pub fn links(&self) -> &BTreeMap<String, Link> {
        match self {
            Self::Event(e) => &e.links,
            Self::Contact(c) => &c.links,
            Self::Company(c) => &c.links,
            Self::Deal(d) => &d.links,
        }
    }

    pub fn links_mut(&mut self) -> &mut BTreeMap<String, Link> {
        match self {
            Self::Event(e) => &mut e.links,
            Self::Contact(c) => &mut c.links,
            Self::Company(c) => &mut c.links,
            Self::Deal(d) => &mut d.links,
        }
    }

    pub fn deleted(&self) -> bool {
        match self {
            Self::Event(e) => e.deleted,
            Self::Contact(c) => c.deleted,
            Self::Company(c) => c.deleted,
            Self::Deal(d) => d.deleted,
        }
    }

    pub fn tombstone(&mut self, at: String) {
        let (deleted, deleted_at) = match self {
            Self::Event(e) => (&mut e.deleted, &mut e.deleted_at),
            Self::Contact(c) => (&mut c.deleted, &mut c.deleted_at),
            Self::Company(c) => (&mut c.deleted, &mut c.deleted_at),
            Self::Deal(d) => (&mut d.deleted, &mut d.deleted_at),
        };
        *deleted = true;
        *deleted_at = Some(at);
    }

    /// The UID the provider resource carries.
    pub fn uid(&self) -> Option<String> {
        match self {
            Self::Event(e) => e.ical_uid.clone(),
            _ => None,
        }
    }

    /// What the provider can hold: the record without the server-side fields (links, tombstone,
    /// merge pointer). Shadows hold this view.
    pub fn provider_view(&self) -> Self {
        let mut out = self.clone();
        let (links, deleted, deleted_at, merged_into) = match &mut out {
            Self::Event(e) => (
                &mut e.links,
                &mut e.deleted,
                &mut e.deleted_at,
                &mut e.merged_into,
            ),
            Self::Contact(c) => (
                &mut c.links,
                &mut c.deleted,
                &mut c.deleted_at,
                &mut c.merged_into,
            ),
            Self::Company(c) => (
                &mut c.links,
                &mut c.deleted,
                &mut c.deleted_at,
                &mut c.merged_into,
            ),
            Self::Deal(d) => (
                &mut d.links,
                &mut d.deleted,
                &mut d.deleted_at,
                &mut d.merged_into,
            ),
        };
        links.clear();
        *deleted = false;
        *deleted_at = None;
        *merged_into = None;
        out
    }

    /// Writes the whole record into an empty document (not committed).
    pub fn create(&self, doc: &mut AutoCommit) -> Result<ChangeSummary, WriteError> {
        match self {
            Self::Event(e) => create_event(doc, e),
            Self::Contact(c) => create_contact(doc, c),
            Self::Company(c) => create_company(doc, c),
            Self::Deal(d) => create_deal(doc, d),
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
            (Self::Company(o), Self::Company(n)) => {
                commit_company_diff_at(doc, heads, o, n, options)?
            }
            (Self::Deal(o), Self::Deal(n)) => commit_deal_diff_at(doc, heads, o, n, options)?,
            _ => return Ok(None),
        };
        Ok(hash)
    }
}
