//! Google Calendar v3 provider edge.
//!
//! - [`wire`]: Event / events.list / error / token types (pure, unknown fields kept).
//! - [`translate`]: a series (master + exceptions) to and from the canonical `calendar_event`,
//!   rendering onto the stored raw JSON so untouched fields survive (pure).
//! - [`sync`]: the sans-IO pull and push state machines (paging, sync tokens, 410 resync,
//!   If-Match / 412, insert with a client id / 409, rate-limit backoff).
//! - [`channel`]: push notification channels (watch body, notification checks, coalescing,
//!   renewal), sans-IO.
//! - [`client`]: a thin reqwest client with the OAuth2 refresh-token flow.

pub mod channel;
pub mod client;
pub mod sync;
pub mod translate;
pub mod wire;
