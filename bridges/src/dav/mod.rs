//! CalDAV / CardDAV (WebDAV Sync, RFC 6578) provider edge.
//!
//! - [`wire`]: request bodies and multistatus / error parsing (pure).
//! - [`client`]: a thin async HTTP client for one collection.
//! - [`content`]: the content-line layer shared by iCalendar and vCard that keeps the bytes of
//!   every untouched line.
//! - [`ical`] / [`vcard`]: read and edit the properties driftless maps (pure, over `calcard`).
//! - [`translate`]: resources to and from the canonical record values of `driftless-crdt-model`.

pub mod client;
pub mod content;
pub mod ical;
pub mod translate;
pub mod vcard;
pub mod wire;
