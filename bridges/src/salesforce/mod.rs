//! Salesforce REST (issue #8): Contact, Account and Opportunity.
//!
//! - [`wire`]: records, replication answers, SOQL pages, sObject Collections and errors (serde).
//! - [`translate`]: Contact <-> `contact`, Account <-> `company`, Opportunity <-> `deal` (pure).
//! - [`sync`]: the pull round (`updated`/`deleted` windows and horizons, SOQL with
//!   `nextRecordsUrl`, merging full resyncs), collection writes with partial success, and
//!   throttling, as a sans-IO state machine and pure decisions.
//! - [`client`]: the thin reqwest client at the edge (OAuth refresh on 401).
//!
//! Must not: do I/O outside [`client`] (the server's runner owns it).

pub mod client;
pub mod sync;
pub mod translate;
pub mod wire;
