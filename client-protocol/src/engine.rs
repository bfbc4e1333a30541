//! The sans-IO server sync engine. (Interface fixed; implementation in progress.)
//!
//! The host calls [`Engine::handle`] with an [`Input`] and the current time and carries out the returned
//! [`Effect`]s in order. Durable before acknowledged: changes a peer sends are answered, and forwarded to
//! other peers, only after the host reports the [`Effect::Persist`] carrying them as
//! [`Input::WriteDurable`].

use std::time::{Duration, Instant};

use automerge::Automerge;

use crate::DocumentId;

/// The host's handle for one connection (one WebSocket).
pub type ConnectionId = u64;
/// Identifies one [`Effect::Persist`]; the host answers with [`Input::WriteDurable`] or [`Input::WriteFailed`].
pub type WriteId = u64;

/// Fixed settings of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Our PeerId, sent in `peer` and as `senderId` of everything we send.
    pub peer_id: String,
    /// Our stable, persisted storage id, advertised with `isEphemeral: false`.
    pub storage_id: String,
    /// A connection that has not sent `join` this long after connecting is closed.
    pub join_timeout: Duration,
    /// After this many appended chunks a document is rewritten as one snapshot.
    pub compact_after_chunks: u32,
}

impl EngineConfig {
    pub fn new(peer_id: impl Into<String>, storage_id: impl Into<String>) -> Self {
        Self {
            peer_id: peer_id.into(),
            storage_id: storage_id.into(),
            join_timeout: Duration::from_secs(10),
            compact_after_chunks: 64,
        }
    }
}

/// What a storage lookup found.
#[derive(Debug)]
pub enum LoadResult {
    /// The stored document, already loaded (the host does the CPU work off the engine's thread).
    Found(Box<Automerge>),
    NotFound,
    /// Storage could not be read or the bytes did not load; the document is served as unavailable
    /// and never overwritten.
    Failed(String),
}

/// Everything that can happen to the engine.
#[derive(Debug)]
pub enum Input {
    Connected {
        conn: ConnectionId,
    },
    /// One binary WebSocket frame.
    FrameReceived {
        conn: ConnectionId,
        frame: Vec<u8>,
    },
    Disconnected {
        conn: ConnectionId,
    },
    /// The answer to [`Effect::Load`].
    StorageLoaded {
        doc: DocumentId,
        result: LoadResult,
    },
    /// The [`Effect::Persist`] with this id is on disk (fsynced).
    WriteDurable {
        write: WriteId,
    },
    /// The [`Effect::Persist`] with this id failed; nothing in it may be acknowledged.
    WriteFailed {
        write: WriteId,
        error: String,
    },
    /// Time passed; closes connections that never joined.
    Tick,
}

/// How a document's bytes change in storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistOp {
    /// Append these bytes (a `save_after` chunk) to the document's stored chunks.
    Append(Vec<u8>),
    /// Replace every stored chunk of the document by this full `save()`, atomically.
    Snapshot(Vec<u8>),
}

/// Why the engine closes a connection; `code` is a WebSocket close code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
}

/// What the host must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Send this binary frame on the connection.
    Send { conn: ConnectionId, frame: Vec<u8> },
    /// Look the document up in storage and answer with [`Input::StorageLoaded`].
    Load { doc: DocumentId },
    /// Write durably, then answer with [`Input::WriteDurable`].
    Persist {
        write: WriteId,
        doc: DocumentId,
        op: PersistOp,
    },
    /// Close the connection (after sending everything emitted before this effect).
    Close {
        conn: ConnectionId,
        reason: CloseReason,
    },
}

/// The engine. One per server.
pub struct Engine {
    #[allow(dead_code)]
    config: EngineConfig,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Self { config }
    }

    /// Feeds one input; effects are appended to `out` in the order the host must carry them out.
    pub fn handle(&mut self, _now: Instant, _input: Input, _out: &mut Vec<Effect>) {}

    /// Connections currently known (joined or not).
    pub fn connection_count(&self) -> usize {
        0
    }

    /// Documents held in memory.
    pub fn resident_document_count(&self) -> usize {
        0
    }

    /// A resident document, for read-only inspection by the host.
    pub fn document(&self, _doc: &DocumentId) -> Option<&Automerge> {
        None
    }
}
