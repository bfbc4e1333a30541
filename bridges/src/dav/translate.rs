//! Pure translation between CalDAV/CardDAV resources and the canonical record values of
//! `driftless-crdt-model` (work in progress: signatures are fixed).

use driftless_crdt_model::{CalendarEvent, Contact};

use super::ical::IcalError;
use super::vcard::VcardError;

/// Why a resource or a canonical value could not be translated.
#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    /// The resource is not a readable iCalendar object.
    #[error("{resource}: not a readable iCalendar resource: {source}")]
    Ical {
        resource: String,
        #[source]
        source: IcalError,
    },
    /// The resource is not a readable vCard.
    #[error("{resource}: not a readable vCard: {source}")]
    Vcard {
        resource: String,
        #[source]
        source: VcardError,
    },
    /// The resource has no VEVENT without RECURRENCE-ID.
    #[error("{resource}: no VEVENT (master event) in the resource")]
    NoEvent { resource: String },
    /// One field could not be read or written.
    #[error("{resource}: field {field}: {reason}")]
    Field {
        resource: String,
        field: String,
        reason: String,
    },
}

/// The canonical fields a CalDAV resource carries (links, deleted, schema, extra left at defaults).
pub fn event_from_ical(raw: &str) -> Result<CalendarEvent, TranslateError> {
    let _ = raw;
    Err(TranslateError::NoEvent {
        resource: "resource".into(),
    })
}

/// `base`: the resource as the provider last had it (None: create a new VCALENDAR with this UID).
/// Returns the resource to PUT: `base` edited so only properties whose canonical value differs from
/// what `base` says are rewritten; everything else (X- props, VALARM, VTIMEZONE, params) untouched.
pub fn event_to_ical(
    base: Option<&str>,
    event: &CalendarEvent,
    uid: &str,
) -> Result<String, TranslateError> {
    let _ = (base, event);
    Err(TranslateError::NoEvent {
        resource: format!("UID {uid}"),
    })
}

/// `existing`: the record's current canonical contact (its slot ids are kept for equal values / same labels);
/// `new_slot`: makes ids for new emails/phones.
pub fn contact_from_vcard(
    raw: &str,
    existing: Option<&Contact>,
    new_slot: &mut dyn FnMut() -> String,
) -> Result<Contact, TranslateError> {
    let _ = (raw, existing, new_slot);
    Ok(Contact::default())
}

/// `base`: the card as the provider last had it (None: create a new vCard with this UID).
pub fn contact_to_vcard(
    base: Option<&str>,
    contact: &Contact,
    uid: &str,
) -> Result<String, TranslateError> {
    let _ = (base, contact);
    Err(TranslateError::NoEvent {
        resource: format!("UID {uid}"),
    })
}
