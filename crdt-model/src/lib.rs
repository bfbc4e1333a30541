//! Record schemas over Automerge: the `calendar_event`, `contact`, `company` and `deal` documents,
//! their canonical values (plain structs bridges keep as shadows), typed reading, field-level diff
//! and apply, conflict listing, schema versions, event times resolved against the zone database
//! ([`ResolvedTime`]), and recurrence (expanding an event into its
//! occurrences; Microsoft Graph's recurrence patterns <-> RRULE) in [`recurrence`].
//!
//! # Invariants
//! - A canonical value's JSON form is the document's JSON form (`to_json`), field for field; keys
//!   this crate does not know are kept in each struct's `extra`, so read -> modify -> write never
//!   drops an app's or a provider's fields.
//! - Writes follow "How values are written": containers (`links`, `name`, `organizer`,
//!   `recurrence`, `overrides`, `attendees`, `emails`, `phones` and every entry in them) are created
//!   once and edited key by key, never replaced; atomic strings are written whole as a fresh Text
//!   object (so concurrent writes are a visible conflict, never interleaved characters); `description`
//!   and `notes` get minimal splices; removed entries are deleted by key.
//! - `apply_*_diff(old, new)` touches only fields where `old` and `new` differ; equal values write
//!   nothing (the document's heads do not move when the caller commits).
//! - Reading upgrades older schemas in memory (schema 0 = no `schema` key); `upgrade_document` writes
//!   the upgrade. A document from a newer schema is refused, never rewritten.
//! - Writes add operations to the caller's open transaction and never commit: the caller commits
//!   once, with its own actor id, so one bridge round is one Automerge change.
//!
//! This crate does no I/O and keeps no state; time and slot ids come from the caller.

mod conflicts;
pub mod identity;
mod model;
mod read;
pub mod recurrence;
mod resolved_time;
mod slots;
mod time;
mod write;

pub use conflicts::{ConflictValue, ConflictsError, FieldConflict, field_conflicts};
pub use model::{
    Address, Attendee, CALENDAR_EVENT, COMPANY, CONTACT, CalendarEvent, Company, Contact,
    ContactPoint, DEAL, Deal, DealContact, Extra, Link, Name, Organizer, Override, Recurrence,
    SCHEMA_VERSION,
};
pub use read::{
    ReadError, ReadProblem, read_company, read_contact, read_deal, read_event, record_type, to_json,
};
pub use resolved_time::{ResolveError, ResolvedTime};
pub use slots::{
    Fold, SlotKind, assign_slots, assign_slots_in, fold_contact, fold_contact_in, fold_slots,
    fold_slots_in,
};
pub use time::{Date, EventTime, TimeParseError, WallTime};
pub use write::{
    ChangeSummary, UpgradeError, WriteError, apply_company_diff, apply_contact_diff,
    apply_deal_diff, apply_event_diff, commit_company_diff_at, commit_contact_diff_at,
    commit_deal_diff_at, commit_event_diff_at, create_company, create_contact, create_deal,
    create_event, upgrade_document,
};
