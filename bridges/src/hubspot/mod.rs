//! HubSpot CRM (issue #8): contacts, companies and deals.
//!
//! - [`wire`]: CRM v3 objects, search, batch and v4 association types (serde).
//! - [`translate`]: string-typed property bags to and from canonical records (pure).
//! - [`sync`]: polling, archived listings, merges, batch writes with 207 partial failures,
//!   idempotent creates and rate limits, as sans-IO state machines and pure decisions.
//! - [`webhook`] / [`signature`]: deliveries (duplicated, reordered) and v3 signatures (pure).
//! - [`client`]: the thin reqwest client at the edge.
//!
//! Must not: do I/O outside [`client`] (the server's runner and webhook endpoint own it).

pub mod client;
pub mod signature;
pub mod sync;
pub mod translate;
pub mod webhook;
pub mod wire;
