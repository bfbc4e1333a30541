//! Fake provider servers on loopback ports, reproducing the wire formats and faults of
//! `../shared/docs/providers.md`, driven from the tests.

pub mod google;
pub mod graph;
pub mod hubspot;
pub mod salesforce;
