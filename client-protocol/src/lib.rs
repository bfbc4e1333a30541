//! driftless-client-protocol: the automerge-repo wire protocol, with no I/O.
//!
//! Owns the message types and their CBOR codec ([`message`], [`codec`]), document ids and
//! `automerge:` URLs ([`document_id`], [`url`]), and the sans-IO server sync engine ([`engine`]):
//! the host feeds it inputs (frames, connects, storage results, durable writes, ticks) and carries out
//! the effects it returns (send, load, persist, close).
//!
//! Invariants: nothing here touches a socket, a clock or a disk; time and ids arrive as inputs, so
//! every behaviour replays in tests. Must not depend on tokio, axum or redb.

pub mod codec;
pub mod document_id;
pub mod engine;
pub mod message;
pub mod sync_guard;
pub mod url;

pub use codec::{DecodeError, decode, encode};
pub use document_id::{DocumentId, DocumentIdError};
pub use message::{HeadsInfo, Message, PeerMetadata};
pub use url::{AutomergeUrl, UrlError};
