//! HubSpot CRM (issue #8): the pure parts that come first: webhook signature v3 and the webhook
//! inbox that turns duplicated, reordered deliveries into hints applied once, in order.
//!
//! Must not: do I/O (the server's webhook endpoint verifies, parses and persists the inbox).

pub mod signature;
pub mod webhook;
