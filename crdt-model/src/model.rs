//! Canonical values of each record type: plain structs whose JSON form is the document's JSON form.
//!
//! Every struct keeps the keys it does not know in `extra`, so a read-modify-write never drops an
//! app's or a provider's fields. Bridges keep these values as shadows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The schema version this crate writes. Older documents are upgraded on read.
pub const SCHEMA_VERSION: u64 = 1;
/// `type` of a calendar event document.
pub const CALENDAR_EVENT: &str = "calendar_event";
/// `type` of a contact document.
pub const CONTACT: &str = "contact";
/// `type` of a company (CRM account) document.
pub const COMPANY: &str = "company";
/// `type` of a deal (CRM opportunity) document.
pub const DEAL: &str = "deal";

/// Unknown keys of a map, kept as JSON (Text reads as a string).
pub type Extra = BTreeMap<String, Value>;

fn is_false(b: &bool) -> bool {
    !*b
}

fn event_type() -> String {
    CALENDAR_EVENT.to_owned()
}

fn contact_type() -> String {
    CONTACT.to_owned()
}

fn company_type() -> String {
    COMPANY.to_owned()
}

fn deal_type() -> String {
    DEAL.to_owned()
}

fn current_schema() -> u64 {
    SCHEMA_VERSION
}

/// One entry of `links`: where a bridge holds this record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// The external id; empty means "create it there".
    #[serde(default)]
    pub id: String,
    /// True once the provider deleted its copy; a removed link is never recreated.
    #[serde(default)]
    pub removed: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A `calendar_event` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalendarEvent {
    #[serde(rename = "type", default = "event_type")]
    pub record_type: String,
    #[serde(default = "current_schema")]
    pub schema: u64,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// Bridge id to link.
    #[serde(default)]
    pub links: BTreeMap<String, Link>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `confirmed`, `tentative` or `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ical_uid: Option<String>,
    /// Plain text, edited with minimal splices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// An [`crate::EventTime`] string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// An [`crate::EventTime`] string; exclusive for all-day events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// Absent for a single event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recurrence: Option<Recurrence>,
    /// Keyed by the instance's original start in UTC basic form (see [`crate::EventTime::instance_key`]).
    #[serde(default)]
    pub overrides: BTreeMap<String, Override>,
    #[serde(default)]
    pub organizer: Organizer,
    /// Keyed by lower-cased email.
    #[serde(default)]
    pub attendees: BTreeMap<String, Attendee>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for CalendarEvent {
    fn default() -> Self {
        CalendarEvent {
            record_type: event_type(),
            schema: SCHEMA_VERSION,
            deleted: false,
            deleted_at: None,
            merged_into: None,
            links: BTreeMap::new(),
            title: None,
            location: None,
            status: None,
            ical_uid: None,
            description: None,
            start: None,
            end: None,
            recurrence: None,
            overrides: BTreeMap::new(),
            organizer: Organizer::default(),
            attendees: BTreeMap::new(),
            extra: Extra::new(),
        }
    }
}

/// `recurrence` of a recurring event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Recurrence {
    /// Small stable slot id to `RRULE:...`.
    #[serde(default)]
    pub rules: BTreeMap<String, String>,
    /// Instance key (UTC basic form) to the excluded date string.
    #[serde(default)]
    pub exdates: BTreeMap<String, String>,
    /// Instance key (UTC basic form) to the added date string.
    #[serde(default)]
    pub rdates: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `overrides`: a cancelled instance or the instance's changed fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Override {
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancelled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Present only when the instance's attendees differ from the series'.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attendees: Option<BTreeMap<String, Attendee>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, Link>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// `organizer` of an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Organizer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One entry of `attendees`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Attendee {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `needs_action`, `accepted`, `declined` or `tentative`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default)]
    pub optional: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A `contact` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    #[serde(rename = "type", default = "contact_type")]
    pub record_type: String,
    #[serde(default = "current_schema")]
    pub schema: u64,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    #[serde(default)]
    pub links: BTreeMap<String, Link>,
    #[serde(default)]
    pub name: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_title: Option<String>,
    /// Plain text, edited with minimal splices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// An `automerge:` URL of the company record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// Stable random slot id to email.
    #[serde(default)]
    pub emails: BTreeMap<String, ContactPoint>,
    /// Stable random slot id to phone.
    #[serde(default)]
    pub phones: BTreeMap<String, ContactPoint>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for Contact {
    fn default() -> Self {
        Contact {
            record_type: contact_type(),
            schema: SCHEMA_VERSION,
            deleted: false,
            deleted_at: None,
            merged_into: None,
            links: BTreeMap::new(),
            name: Name::default(),
            organization: None,
            job_title: None,
            notes: None,
            company: None,
            emails: BTreeMap::new(),
            phones: BTreeMap::new(),
            extra: Extra::new(),
        }
    }
}

/// `name` of a contact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Name {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub given: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A `company` document (HubSpot company, Salesforce Account).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Company {
    #[serde(rename = "type", default = "company_type")]
    pub record_type: String,
    #[serde(default = "current_schema")]
    pub schema: u64,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    #[serde(default)]
    pub links: BTreeMap<String, Link>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The primary web domain, lower-case, without scheme (`example.com`): the company's identity key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    /// Plain text, edited with minimal splices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Stable random slot id to phone.
    #[serde(default)]
    pub phones: BTreeMap<String, ContactPoint>,
    #[serde(default)]
    pub address: Address,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for Company {
    fn default() -> Self {
        Company {
            record_type: company_type(),
            schema: SCHEMA_VERSION,
            deleted: false,
            deleted_at: None,
            merged_into: None,
            links: BTreeMap::new(),
            name: None,
            domain: None,
            industry: None,
            description: None,
            phones: BTreeMap::new(),
            address: Address::default(),
            extra: Extra::new(),
        }
    }
}

/// `address` of a company: a container edited key by key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Address {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2 where the provider gives one, else as the provider wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// A `deal` document (HubSpot deal, Salesforce Opportunity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deal {
    #[serde(rename = "type", default = "deal_type")]
    pub record_type: String,
    #[serde(default = "current_schema")]
    pub schema: u64,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    #[serde(default)]
    pub links: BTreeMap<String, Link>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The provider's stage value as written there (stages are per pipeline and per CRM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// A decimal string (`"12500.00"`): money never goes through a float.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    /// ISO 4217 code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_date: Option<String>,
    /// Plain text, edited with minimal splices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// An `automerge:` URL of the company record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// The deal's contacts: `automerge:` URL to `{"primary": bool}` (a map, so concurrent
    /// additions of the same contact never duplicate).
    #[serde(default)]
    pub contacts: BTreeMap<String, DealContact>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for Deal {
    fn default() -> Self {
        Deal {
            record_type: deal_type(),
            schema: SCHEMA_VERSION,
            deleted: false,
            deleted_at: None,
            merged_into: None,
            links: BTreeMap::new(),
            name: None,
            stage: None,
            pipeline: None,
            amount: None,
            currency: None,
            close_date: None,
            description: None,
            company: None,
            contacts: BTreeMap::new(),
            extra: Extra::new(),
        }
    }
}

/// One entry of a deal's `contacts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DealContact {
    #[serde(default, skip_serializing_if = "is_false")]
    pub primary: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One email or phone slot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContactPoint {
    #[serde(default)]
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default)]
    pub primary: bool,
    #[serde(flatten)]
    pub extra: Extra,
}

/// How a known key is stored; drives reading, writing and validation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    /// A string written whole as a new Text object; readers accept scalar strings.
    Atomic,
    /// A Text object edited with minimal splices.
    Text,
    Bool,
    Uint,
    /// A map with these known keys; other keys are kept as extras.
    Struct(&'static [(&'static str, Kind)]),
    /// A map keyed by ids (slots, emails, instance keys) whose entries all have one kind.
    Entries(&'static Kind),
    /// An unknown key: written by its JSON shape.
    Any,
}

impl Kind {
    pub(crate) fn field(self, key: &str) -> Kind {
        match self {
            Kind::Struct(fields) => fields
                .iter()
                .find(|(name, _)| *name == key)
                .map_or(Kind::Any, |(_, kind)| *kind),
            Kind::Entries(kind) => *kind,
            _ => Kind::Any,
        }
    }
}

const LINK: Kind = Kind::Struct(&[("id", Kind::Atomic), ("removed", Kind::Bool)]);
const LINKS: Kind = Kind::Entries(&LINK);
const ATTENDEE: Kind = Kind::Struct(&[
    ("name", Kind::Atomic),
    ("response", Kind::Atomic),
    ("optional", Kind::Bool),
]);
const ATTENDEES: Kind = Kind::Entries(&ATTENDEE);
const DATES: Kind = Kind::Entries(&Kind::Atomic);
const OVERRIDE: Kind = Kind::Struct(&[
    ("cancelled", Kind::Bool),
    ("title", Kind::Atomic),
    ("description", Kind::Text),
    ("location", Kind::Atomic),
    ("start", Kind::Atomic),
    ("end", Kind::Atomic),
    ("status", Kind::Atomic),
    ("attendees", ATTENDEES),
    ("links", LINKS),
]);

pub(crate) const EVENT_KIND: Kind = Kind::Struct(&[
    ("type", Kind::Atomic),
    ("schema", Kind::Uint),
    ("deleted", Kind::Bool),
    ("deleted_at", Kind::Atomic),
    ("merged_into", Kind::Atomic),
    ("links", LINKS),
    ("title", Kind::Atomic),
    ("location", Kind::Atomic),
    ("status", Kind::Atomic),
    ("ical_uid", Kind::Atomic),
    ("description", Kind::Text),
    ("start", Kind::Atomic),
    ("end", Kind::Atomic),
    (
        "recurrence",
        Kind::Struct(&[("rules", DATES), ("exdates", DATES), ("rdates", DATES)]),
    ),
    ("overrides", Kind::Entries(&OVERRIDE)),
    (
        "organizer",
        Kind::Struct(&[("email", Kind::Atomic), ("name", Kind::Atomic)]),
    ),
    ("attendees", ATTENDEES),
]);

const CONTACT_POINT: Kind = Kind::Struct(&[
    ("value", Kind::Atomic),
    ("label", Kind::Atomic),
    ("primary", Kind::Bool),
]);

pub(crate) const CONTACT_KIND: Kind = Kind::Struct(&[
    ("type", Kind::Atomic),
    ("schema", Kind::Uint),
    ("deleted", Kind::Bool),
    ("deleted_at", Kind::Atomic),
    ("merged_into", Kind::Atomic),
    ("links", LINKS),
    (
        "name",
        Kind::Struct(&[
            ("full", Kind::Atomic),
            ("given", Kind::Atomic),
            ("family", Kind::Atomic),
        ]),
    ),
    ("organization", Kind::Atomic),
    ("job_title", Kind::Atomic),
    ("notes", Kind::Text),
    ("company", Kind::Atomic),
    ("emails", Kind::Entries(&CONTACT_POINT)),
    ("phones", Kind::Entries(&CONTACT_POINT)),
]);

pub(crate) const COMPANY_KIND: Kind = Kind::Struct(&[
    ("type", Kind::Atomic),
    ("schema", Kind::Uint),
    ("deleted", Kind::Bool),
    ("deleted_at", Kind::Atomic),
    ("merged_into", Kind::Atomic),
    ("links", LINKS),
    ("name", Kind::Atomic),
    ("domain", Kind::Atomic),
    ("industry", Kind::Atomic),
    ("description", Kind::Text),
    ("phones", Kind::Entries(&CONTACT_POINT)),
    (
        "address",
        Kind::Struct(&[
            ("street", Kind::Atomic),
            ("city", Kind::Atomic),
            ("region", Kind::Atomic),
            ("postal_code", Kind::Atomic),
            ("country", Kind::Atomic),
        ]),
    ),
]);

pub(crate) const DEAL_KIND: Kind = Kind::Struct(&[
    ("type", Kind::Atomic),
    ("schema", Kind::Uint),
    ("deleted", Kind::Bool),
    ("deleted_at", Kind::Atomic),
    ("merged_into", Kind::Atomic),
    ("links", LINKS),
    ("name", Kind::Atomic),
    ("stage", Kind::Atomic),
    ("pipeline", Kind::Atomic),
    ("amount", Kind::Atomic),
    ("currency", Kind::Atomic),
    ("close_date", Kind::Atomic),
    ("description", Kind::Text),
    ("company", Kind::Atomic),
    (
        "contacts",
        Kind::Entries(&Kind::Struct(&[("primary", Kind::Bool)])),
    ),
]);
