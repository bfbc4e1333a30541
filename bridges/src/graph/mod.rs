//! Microsoft Graph (v1.0) provider edge: calendar events (`calendarView/delta` over a window) and
//! contacts (`contacts/delta`) of one mailbox.
//!
//! - [`wire`]: serde types of events, contacts, delta pages, errors and tokens (unknown fields kept).
//! - [`tz`]: Windows time-zone ids <-> IANA, HTML bodies -> plain text (pure).
//! - [`translate`]: Graph items <-> canonical records, and PATCH bodies with only changed fields
//!   (pure); [`recurrence`]: `patternedRecurrence` <-> rules over crdt-model's mapping (pure).
//! - [`sync`]: delta rounds, master completion, removal probes, resync merging and conditional
//!   writes as sans-IO state machines, plus the link-table plans.
//! - [`webhook`]: change notifications (validation token, `clientState`, lifecycle events) as
//!   pure decisions for the server's webhook endpoint.
//! - [`client`]: a thin reqwest client (OAuth2 refresh-token flow) that executes the machines'
//!   requests.

pub mod client;
pub mod recurrence;
pub mod sync;
pub mod translate;
pub mod tz;
pub mod webhook;
pub mod wire;
