//! Provider edges of driftless.
//!
//! This crate owns each provider's wire types, the pure translation between provider payloads
//! and the properties driftless cares about, the provider-independent sync state machines
//! (to come), and thin HTTP clients at the very edge.
//!
//! Invariants:
//! - Everything except the `client` modules is sans-IO: pure functions over bytes and values,
//!   testable without a network.
//! - Provider input is never trusted: malformed payloads become typed errors, never panics.
//! - Editing a provider resource preserves everything driftless does not understand,
//!   byte-for-byte and in order.
//!
//! It must not touch redb, sockets (beyond the HTTP clients) or Automerge documents; the
//! mapping to canonical records lives with the record model.

pub mod dav;
pub mod google;
pub mod graph;
pub mod hubspot;
pub mod oauth;
pub mod salesforce;
pub mod secret;
pub mod sync;
