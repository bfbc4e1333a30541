//! The sans-IO server sync engine.
//!
//! The host calls [`Engine::handle`] with an [`Input`] and the current time and carries out the returned
//! [`Effect`]s in order. The engine never blocks and never does I/O.
//!
//! Invariants:
//! - **Durable before acknowledged.** Changes a peer sends are applied to the in-memory document and
//!   handed to the host as one [`Effect::Persist`]. Until the host reports [`Input::WriteDurable`], no
//!   sync message for that document is generated for anyone (the sender's reply would carry heads that
//!   include the new changes, and other peers would receive them). Messages arriving meanwhile queue up
//!   and are applied together in the next step, which is also what batches work on hot documents.
//! - A fresh [`automerge::sync::State`] per (connection, document); never reused across connections.
//! - Nothing is sent to a connection before `peer`; every message we send carries our PeerId as
//!   `senderId` and the connection's PeerId as `targetId`.
//! - `request`/`sync` are answered only after storage was checked for the document.
//! - **Authorization.** Every connection arrives with an [`Access`] (fixed by the host at the upgrade).
//!   Every document belongs to exactly one workspace, recorded durably with its first write
//!   ([`Effect::Persist`] carries it) and reported back on load ([`LoadResult::Found`]). A connection
//!   only ever sees documents of its own workspace (and, for a document-scoped token, only those
//!   documents): anything else is answered with `doc-unavailable`, exactly as a never-seen id would be,
//!   and no changes are applied (a push to another workspace's id creates nothing). A read-only
//!   connection's changes are never applied, persisted or forwarded; it is synced with a read-only
//!   [`sync::State`] so the refused changes are not re-requested forever. Every refusal is reported to
//!   the host as an [`Effect::Refused`] (for logs and metrics), never to the peer beyond
//!   `doc-unavailable`.
//! - A ticket is bound to the PeerId of the first `join` made with it; a `join` with another PeerId on
//!   the same ticket closes that connection.
//! - A document's stored size never grows past [`EngineConfig::max_document_bytes`]: changes that would
//!   take it there are not applied and the sender is closed with [`close_code::MESSAGE_TOO_BIG`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, ChangeHash, ReadDoc as _};

use crate::{DocumentId, Message, PeerMetadata, codec};

/// The host's handle for one connection (one WebSocket).
pub type ConnectionId = u64;
/// Identifies one [`Effect::Persist`]; the host answers with [`Input::WriteDurable`] or [`Input::WriteFailed`].
pub type WriteId = u64;
/// Identifies one [`Input::LocalChange`], echoed in its [`Effect::LocalChangeDone`].
pub type LocalToken = u64;

/// WebSocket close codes the engine uses.
pub mod close_code {
    /// Normal closure (a `leave`, or a newer connection of the same peer).
    pub const NORMAL: u16 = 1000;
    /// Protocol error (unsupported version).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A frame that does not decode.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation (no `join` in time, a ticket used by a second PeerId).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A document would exceed its size quota.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// The server failed (a storage write failed).
    pub const INTERNAL_ERROR: u16 = 1011;
}

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
    /// A document nothing happened to for this long is dropped from memory: entirely when no
    /// connection has it open, otherwise only its Automerge data (the connections keep their sync
    /// states, and the next message for it reloads it from storage).
    pub idle_evict: Duration,
    /// The same for small documents (at most [`EngineConfig::small_doc_ops`]): they reload in
    /// about a millisecond or less but cost ~17 KiB each in memory, so they go sooner.
    pub small_idle_evict: Duration,
    /// Most operations plus changes of a document that counts as small for eviction (loading
    /// costs about 1-3 us per operation or change; a contact record has about ten).
    pub small_doc_ops: u64,
    /// Largest size of one document as compressed Automerge data (its last snapshot plus the change
    /// bytes received since, as sent by peers); `None`: unlimited.
    pub max_document_bytes: Option<u64>,
}

impl EngineConfig {
    pub fn new(peer_id: impl Into<String>, storage_id: impl Into<String>) -> Self {
        Self {
            peer_id: peer_id.into(),
            storage_id: storage_id.into(),
            join_timeout: Duration::from_secs(10),
            compact_after_chunks: 64,
            idle_evict: Duration::from_secs(300),
            small_idle_evict: Duration::from_secs(2),
            small_doc_ops: 1000,
            max_document_bytes: None,
        }
    }
}

/// The workspace of every peer in open (unauthenticated) mode, and of documents stored before
/// workspaces existed.
pub const DEFAULT_WORKSPACE: &str = "default";

/// What a connection may do with documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// May read; its changes are never applied.
    Read,
    /// May read and write.
    Write,
}

/// A ticket a connection authenticated with: bound to the first PeerId that joins with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketGrant {
    /// The ticket's unique id (not the ticket itself: no secret).
    pub id: String,
    /// When the ticket stops being accepted; the binding is forgotten after this.
    pub expires: Instant,
}

/// What one connection may access, decided by the host at the upgrade (from a token or ticket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub workspace: String,
    pub role: Role,
    /// `Some`: only these documents of the workspace (a token scoped to documents).
    pub docs: Option<HashSet<DocumentId>>,
    pub ticket: Option<TicketGrant>,
}

impl Access {
    /// Everything in the workspace.
    pub fn new(workspace: impl Into<String>, role: Role) -> Self {
        Self {
            workspace: workspace.into(),
            role,
            docs: None,
            ticket: None,
        }
    }

    /// Open development mode: read and write in [`DEFAULT_WORKSPACE`].
    pub fn open() -> Self {
        Self::new(DEFAULT_WORKSPACE, Role::Write)
    }

    /// Whether the token's document scope includes `doc` (the workspace is checked separately).
    pub fn in_scope(&self, doc: &DocumentId) -> bool {
        self.docs.as_ref().is_none_or(|d| d.contains(doc))
    }

    pub fn can_write(&self) -> bool {
        self.role == Role::Write
    }
}

/// Why the engine refused something; reported to the host for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The connection's token is scoped to other documents.
    OutOfScope,
    /// The document belongs to another workspace.
    OtherWorkspace,
    /// A read-only connection sent changes; they were dropped.
    ReadOnlyChanges,
    /// The document would grow past the quota; the connection is closed.
    QuotaExceeded { size: u64, limit: u64 },
    /// A ticket bound to another PeerId was used to join; the connection is closed.
    TicketPeerMismatch,
}

impl Refusal {
    /// A short stable name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::OutOfScope => "out_of_scope",
            Refusal::OtherWorkspace => "other_workspace",
            Refusal::ReadOnlyChanges => "read_only_changes",
            Refusal::QuotaExceeded { .. } => "document_quota",
            Refusal::TicketPeerMismatch => "ticket_peer_mismatch",
        }
    }
}

/// What a storage lookup found.
#[derive(Debug)]
pub enum LoadResult {
    /// The stored document, already loaded (the host does the CPU work off the engine's thread),
    /// with its workspace and the total size of its stored chunks (the quota's starting point).
    Found {
        doc: Box<Automerge>,
        workspace: String,
        stored_bytes: u64,
    },
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
        access: Access,
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
    /// Time passed: closes connections that never joined, evicts idle documents.
    Tick,
    /// Changes made inside the server (a provider bridge) for a document of `workspace`: applied
    /// like a peer's, persisted, forwarded; answered with [`Effect::LocalChangeDone`] once durable.
    LocalChange {
        doc: DocumentId,
        workspace: String,
        /// Automerge change chunks (`save_after`/`save_incremental` output).
        changes: Vec<u8>,
        token: LocalToken,
    },
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
    /// Write durably, then answer with [`Input::WriteDurable`]. The document belongs to `workspace`
    /// (the same for every write of a document); the host records it in the same transaction.
    Persist {
        write: WriteId,
        doc: DocumentId,
        workspace: String,
        op: PersistOp,
    },
    /// Close the connection (after sending everything emitted before this effect). The engine has
    /// already forgotten the connection; a later `Disconnected` for it is ignored.
    Close {
        conn: ConnectionId,
        reason: CloseReason,
    },
    /// Something the connection did was refused; for the host's log and metrics only (the peer was
    /// told `doc-unavailable`, or is closed by a following `Close`).
    Refused {
        conn: ConnectionId,
        doc: Option<DocumentId>,
        refusal: Refusal,
    },
    /// A [`Input::LocalChange`] is durable (`Ok` with the document's durable heads) or was refused.
    LocalChangeDone {
        token: LocalToken,
        result: Result<Vec<ChangeHash>, String>,
    },
}

enum ConnectionState {
    AwaitingJoin { since: Instant },
    Joined { peer_id: String },
}

struct Connection {
    state: ConnectionState,
    access: Access,
    /// Documents this connection has sent `request`/`sync` for (or is waiting for).
    docs: HashSet<DocumentId>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SyncKind {
    Request,
    Sync,
}

struct PendingMessage {
    conn: ConnectionId,
    kind: SyncKind,
    message: sync::Message,
    /// The sender's workspace and write permission, kept so a departed sender is still judged.
    workspace: String,
    writable: bool,
}

enum DocState {
    Loading,
    Ready(Box<Automerge>),
    /// Stored durably and dropped from memory while connections still have it open (their sync
    /// states are kept); the next message or local change for it reloads it.
    Unloaded,
    /// Not in storage; kept only while connections wait for it.
    Absent,
    /// Storage failed for it; served as unavailable, never written.
    Failed,
}

struct InFlightWrite {
    write: WriteId,
    heads: Vec<ChangeHash>,
    snapshot: bool,
    /// The document's stored size once this write is durable.
    stored_bytes: u64,
    /// Local changes this write makes durable.
    local: Vec<LocalToken>,
}

struct DocEntry {
    state: DocState,
    /// Known once the document is found in storage or created.
    workspace: Option<String>,
    /// Total bytes of the document's stored chunks.
    stored_bytes: u64,
    /// Connections syncing this document, each with its own sync state.
    peers: HashMap<ConnectionId, sync::State>,
    /// Connections told `doc-unavailable`, synced as soon as the document turns up.
    wanting: HashSet<ConnectionId>,
    /// Messages received but not yet applied (while loading or while a write is in flight).
    pending: Vec<PendingMessage>,
    /// Local (bridge) changes waiting like `pending`: (token, workspace, change bytes).
    local_pending: Vec<(LocalToken, String, Vec<u8>)>,
    in_flight: Option<InFlightWrite>,
    /// Heads of what storage holds durably.
    persisted_heads: Vec<ChangeHash>,
    chunks_since_snapshot: u32,
    last_active: Instant,
}

impl DocEntry {
    fn new(state: DocState, now: Instant) -> Self {
        Self {
            state,
            workspace: None,
            stored_bytes: 0,
            peers: HashMap::new(),
            wanting: HashSet::new(),
            pending: Vec::new(),
            local_pending: Vec::new(),
            in_flight: None,
            persisted_heads: Vec::new(),
            chunks_since_snapshot: 0,
            last_active: now,
        }
    }

    fn is_idle(&self) -> bool {
        self.peers.is_empty()
            && self.wanting.is_empty()
            && self.pending.is_empty()
            && self.local_pending.is_empty()
            && self.in_flight.is_none()
            && !matches!(self.state, DocState::Loading)
    }

    /// Whether the document in memory may be dropped and later reloaded from storage unchanged:
    /// nothing waits to be applied or written, and Automerge holds no queued changes (changes whose
    /// dependencies are missing are not stored until they apply, so dropping them would lose them).
    fn can_unload(&self) -> bool {
        let DocState::Ready(doc) = &self.state else {
            return false;
        };
        self.pending.is_empty()
            && self.local_pending.is_empty()
            && self.in_flight.is_none()
            && doc.get_missing_deps(&[]).is_empty()
    }
}

/// The engine. One per server.
pub struct Engine {
    config: EngineConfig,
    connections: HashMap<ConnectionId, Connection>,
    /// The live connection of each joined (workspace, PeerId) (the newest wins).
    peer_connections: HashMap<(String, String), ConnectionId>,
    /// The PeerId each ticket is bound to, until the ticket expires.
    ticket_peers: HashMap<String, (String, Instant)>,
    docs: HashMap<DocumentId, DocEntry>,
    writes: HashMap<WriteId, DocumentId>,
    next_write: WriteId,
    /// Last ephemeral `count` seen per (workspace, senderId, sessionId).
    ephemeral_seen: HashMap<(String, String, String), u64>,
    /// Documents in the `Ready` state, kept as a count because the host reads it after every input.
    resident: usize,
}

impl Engine {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            connections: HashMap::new(),
            peer_connections: HashMap::new(),
            ticket_peers: HashMap::new(),
            docs: HashMap::new(),
            writes: HashMap::new(),
            next_write: 1,
            ephemeral_seen: HashMap::new(),
            resident: 0,
        }
    }

    /// Feeds one input; effects are appended to `out` in the order the host must carry them out.
    pub fn handle(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Connected { conn, access } => {
                self.connections.insert(
                    conn,
                    Connection {
                        state: ConnectionState::AwaitingJoin { since: now },
                        access,
                        docs: HashSet::new(),
                    },
                );
            }
            Input::FrameReceived { conn, frame } => self.frame_received(now, conn, &frame, out),
            Input::Disconnected { conn } => self.forget_connection(conn),
            Input::StorageLoaded { doc, result } => self.storage_loaded(now, doc, result, out),
            Input::WriteDurable { write } => self.write_durable(now, write, out),
            Input::WriteFailed { write, error } => self.write_failed(write, &error, out),
            Input::Tick => self.tick(now, out),
            Input::LocalChange {
                doc,
                workspace,
                changes,
                token,
            } => {
                let entry = self.docs.entry(doc.clone()).or_insert_with(|| {
                    out.push(Effect::Load { doc: doc.clone() });
                    DocEntry::new(DocState::Loading, now)
                });
                entry.last_active = now;
                entry.local_pending.push((token, workspace, changes));
                self.process(&doc, out);
            }
        }
    }

    /// Connections currently known (joined or not).
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Documents held in memory.
    pub fn resident_document_count(&self) -> usize {
        self.resident
    }

    /// Panics if the engine's bookkeeping disagrees with its state (for tests; O(documents)).
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        let ready = self
            .docs
            .values()
            .filter(|d| matches!(d.state, DocState::Ready(_)))
            .count();
        assert_eq!(self.resident, ready, "resident document count");
        for (write, doc) in &self.writes {
            let in_flight = self.docs.get(doc).and_then(|d| d.in_flight.as_ref());
            assert_eq!(
                in_flight.map(|w| w.write),
                Some(*write),
                "write {write} is in flight for {doc}"
            );
        }
        for (peer, conn) in &self.peer_connections {
            assert!(
                self.connections.contains_key(conn),
                "peer {peer:?} maps to a live connection"
            );
        }
    }

    /// Writes handed to the host and not yet reported durable or failed.
    pub fn writes_in_flight(&self) -> usize {
        self.writes.len()
    }

    /// A resident document, for read-only inspection by the host.
    pub fn document(&self, doc: &DocumentId) -> Option<&Automerge> {
        self.document_in_workspace(doc).map(|(d, _)| d)
    }

    /// A resident document with its workspace.
    pub fn document_in_workspace(&self, doc: &DocumentId) -> Option<(&Automerge, &str)> {
        let entry = self.docs.get(doc)?;
        match &entry.state {
            DocState::Ready(d) => {
                Some((d, entry.workspace.as_deref().unwrap_or(DEFAULT_WORKSPACE)))
            }
            _ => None,
        }
    }

    fn frame_received(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        frame: &[u8],
        out: &mut Vec<Effect>,
    ) {
        let Some(connection) = self.connections.get(&conn) else {
            return; // closed by us already; late frames are dropped
        };
        let message = match codec::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                let reason = format!("connection {conn}: undecodable frame: {e}");
                return self.close(conn, close_code::INVALID_PAYLOAD, reason, out);
            }
        };
        match &connection.state {
            ConnectionState::AwaitingJoin { .. } => {
                // Like the JS server, anything but `join` before the handshake is dropped.
                if let Message::Join {
                    sender_id,
                    supported_protocol_versions,
                    ..
                } = message
                {
                    self.join(conn, sender_id, supported_protocol_versions, out);
                }
            }
            ConnectionState::Joined { peer_id } => {
                let peer_id = peer_id.clone();
                self.joined_message(now, conn, peer_id, message, out);
            }
        }
    }

    fn join(
        &mut self,
        conn: ConnectionId,
        sender_id: String,
        versions: Option<Vec<String>>,
        out: &mut Vec<Effect>,
    ) {
        let supported = versions.is_none_or(|v| v.iter().any(|v| v == "1"));
        if !supported {
            let error = Message::Error {
                message: "unsupported protocol version".to_owned(),
                sender_id: Some(self.config.peer_id.clone()),
                target_id: Some(sender_id),
            };
            out.push(Effect::Send {
                conn,
                frame: codec::encode(&error),
            });
            let reason = format!("connection {conn}: unsupported protocol version (only \"1\")");
            return self.close(conn, close_code::PROTOCOL_ERROR, reason, out);
        }
        let Some(connection) = self.connections.get(&conn) else {
            return;
        };
        let workspace = connection.access.workspace.clone();
        // A ticket belongs to the first PeerId that joins with it (the JS client reconnects with the
        // same URL, so its reconnects keep working); anyone else presenting it is closed.
        if let Some(ticket) = connection.access.ticket.clone() {
            match self.ticket_peers.get(&ticket.id) {
                Some((bound, _)) if *bound != sender_id => {
                    out.push(Effect::Refused {
                        conn,
                        doc: None,
                        refusal: Refusal::TicketPeerMismatch,
                    });
                    let reason = format!(
                        "connection {conn}: ticket is bound to another peer id; request a new ticket"
                    );
                    return self.close(conn, close_code::POLICY_VIOLATION, reason, out);
                }
                Some(_) => {}
                None => {
                    self.ticket_peers
                        .insert(ticket.id, (sender_id.clone(), ticket.expires));
                }
            }
        }
        // A connection joining again under another PeerId gives the old one up; otherwise its entry
        // would outlive the connection (and a peer could grow the map without bound).
        if let Some(previous) = joined_peer_id(&self.connections, conn)
            && previous != sender_id
        {
            let previous = previous.to_owned();
            self.release_peer(&workspace, &previous, conn);
        }
        // The newest connection of a PeerId wins, as in the JS server (within one workspace, so no
        // one can push another workspace's peer off).
        let key = (workspace, sender_id.clone());
        if let Some(old) = self.peer_connections.insert(key.clone(), conn)
            && old != conn
        {
            let reason =
                format!("connection {old}: superseded by a newer connection of the same peer");
            self.close(old, close_code::NORMAL, reason, out);
            self.peer_connections.insert(key, conn);
        }
        if let Some(c) = self.connections.get_mut(&conn) {
            c.state = ConnectionState::Joined {
                peer_id: sender_id.clone(),
            };
        }
        let peer = Message::Peer {
            sender_id: self.config.peer_id.clone(),
            target_id: sender_id,
            selected_protocol_version: "1".to_owned(),
            peer_metadata: Some(PeerMetadata {
                storage_id: Some(self.config.storage_id.clone()),
                is_ephemeral: false,
            }),
        };
        out.push(Effect::Send {
            conn,
            frame: codec::encode(&peer),
        });
    }

    fn joined_message(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        peer_id: String,
        message: Message,
        out: &mut Vec<Effect>,
    ) {
        match message {
            Message::Join {
                sender_id,
                supported_protocol_versions,
                ..
            } => self.join(conn, sender_id, supported_protocol_versions, out),
            Message::Request {
                document_id, data, ..
            } => self.sync_received(now, conn, document_id, SyncKind::Request, &data, out),
            Message::Sync {
                document_id, data, ..
            } => self.sync_received(now, conn, document_id, SyncKind::Sync, &data, out),
            Message::Ephemeral {
                sender_id,
                document_id,
                count,
                session_id,
                data,
                ..
            } => self.relay_ephemeral(conn, sender_id, document_id, count, session_id, data, out),
            Message::Leave { .. } => {
                let reason = format!("connection {conn} ({peer_id}): peer left");
                self.close(conn, close_code::NORMAL, reason, out)
            }
            // Gossip, their doc-unavailable, errors and unknown types need no answer.
            Message::DocUnavailable { .. }
            | Message::RemoteSubscriptionChange { .. }
            | Message::RemoteHeadsChanged { .. }
            | Message::Error { .. }
            | Message::Peer { .. }
            | Message::Unknown { .. } => {}
        }
    }

    fn sync_received(
        &mut self,
        now: Instant,
        conn: ConnectionId,
        doc: DocumentId,
        kind: SyncKind,
        data: &[u8],
        out: &mut Vec<Effect>,
    ) {
        let message = match sync::Message::decode(data)
            .map_err(|e| e.to_string())
            .and_then(|m| {
                // Automerge would panic or spin on some well-formed messages: refuse those first.
                crate::sync_guard::check(&m)
                    .map(|()| m)
                    .map_err(|e| e.to_string())
            }) {
            Ok(m) => m,
            Err(e) => {
                let reason = format!("connection {conn}: bad sync message for document {doc}: {e}");
                return self.close(conn, close_code::INVALID_PAYLOAD, reason, out);
            }
        };
        let Some(c) = self.connections.get_mut(&conn) else {
            return;
        };
        if !c.access.in_scope(&doc) {
            // Exactly what a never-seen id gets, without waiting for storage (nothing is looked up).
            out.push(Effect::Refused {
                conn,
                doc: Some(doc.clone()),
                refusal: Refusal::OutOfScope,
            });
            send_unavailable(&self.config, &self.connections, conn, &doc, out);
            return;
        }
        c.docs.insert(doc.clone());
        let workspace = c.access.workspace.clone();
        let writable = c.access.can_write();
        let entry = self.docs.entry(doc.clone()).or_insert_with(|| {
            out.push(Effect::Load { doc: doc.clone() });
            DocEntry::new(DocState::Loading, now)
        });
        entry.last_active = now;
        entry.wanting.remove(&conn);
        entry.pending.push(PendingMessage {
            conn,
            kind,
            message,
            workspace,
            writable,
        });
        self.process(&doc, out);
    }

    /// Applies what is pending for `doc` if its state allows, and answers.
    fn process(&mut self, doc_id: &DocumentId, out: &mut Vec<Effect>) {
        let Some(entry) = self.docs.get_mut(doc_id) else {
            return;
        };
        if (entry.pending.is_empty() && entry.local_pending.is_empty()) || entry.in_flight.is_some()
        {
            return;
        }
        match &entry.state {
            DocState::Loading => {}
            DocState::Unloaded => {
                // Dropped from memory while idle: what is stored is exactly what it held.
                entry.state = DocState::Loading;
                out.push(Effect::Load {
                    doc: doc_id.clone(),
                });
            }
            DocState::Failed => {
                for p in std::mem::take(&mut entry.pending) {
                    entry.peers.remove(&p.conn);
                    send_unavailable(&self.config, &self.connections, p.conn, doc_id, out);
                }
                for (token, _, _) in std::mem::take(&mut entry.local_pending) {
                    out.push(Effect::LocalChangeDone {
                        token,
                        result: Err(format!("document {doc_id} could not be loaded")),
                    });
                }
            }
            DocState::Absent => {
                // A peer that has changes (or heads) pushes the document: it exists from now on.
                // Only a peer that may write creates it, in its own workspace.
                // A local (bridge) change creates it in the bridge's workspace first.
                let creator = entry
                    .local_pending
                    .first()
                    .map(|(_, workspace, _)| workspace.clone())
                    .or_else(|| {
                        entry
                            .pending
                            .iter()
                            .find(|p| {
                                p.writable
                                    && (!p.message.heads.is_empty()
                                        || !p.message.changes.is_empty())
                            })
                            .map(|p| p.workspace.clone())
                    });
                if let Some(workspace) = creator {
                    entry.state = DocState::Ready(Box::new(Automerge::new()));
                    self.resident += 1;
                    // Waiting peers of other workspaces never see it.
                    let connections = &self.connections;
                    entry.wanting.retain(|c| {
                        connections
                            .get(c)
                            .is_some_and(|c| c.access.workspace == workspace)
                    });
                    entry.workspace = Some(workspace);
                    entry.stored_bytes = 0;
                    self.apply_pending(doc_id, out);
                } else {
                    for p in std::mem::take(&mut entry.pending) {
                        if self.connections.contains_key(&p.conn) {
                            entry.wanting.insert(p.conn);
                            send_unavailable(&self.config, &self.connections, p.conn, doc_id, out);
                        }
                    }
                    self.drop_if_idle(doc_id);
                }
            }
            DocState::Ready(_) => self.apply_pending(doc_id, out),
        }
    }

    /// Applies every pending message of a ready document in one step, then persists or answers.
    fn apply_pending(&mut self, doc_id: &DocumentId, out: &mut Vec<Effect>) {
        let Some(entry) = self.docs.get_mut(doc_id) else {
            return;
        };
        let DocState::Ready(doc) = &mut entry.state else {
            return;
        };
        let doc_workspace = entry
            .workspace
            .get_or_insert_with(|| DEFAULT_WORKSPACE.to_owned())
            .clone();
        let mut offenders: Vec<(ConnectionId, u16, String)> = Vec::new();

        // Authorization and quota first: what is refused here is never applied.
        let mut pending = Vec::new();
        let mut incoming: u64 = 0;
        for mut p in std::mem::take(&mut entry.pending) {
            if p.workspace != doc_workspace {
                // Answered exactly like an id nobody ever created; not remembered as "wanting".
                out.push(Effect::Refused {
                    conn: p.conn,
                    doc: Some(doc_id.clone()),
                    refusal: Refusal::OtherWorkspace,
                });
                entry.peers.remove(&p.conn);
                send_unavailable(&self.config, &self.connections, p.conn, doc_id, out);
                continue;
            }
            if p.message.changes.is_empty() {
                pending.push(p);
                continue;
            }
            if !p.writable {
                out.push(Effect::Refused {
                    conn: p.conn,
                    doc: Some(doc_id.clone()),
                    refusal: Refusal::ReadOnlyChanges,
                });
                p.message.changes = sync::ChunkList::empty();
                pending.push(p);
                continue;
            }
            let bytes: u64 = p.message.changes.iter().map(|c| c.len() as u64).sum();
            if let Some(limit) = self.config.max_document_bytes {
                let size = entry
                    .stored_bytes
                    .saturating_add(incoming)
                    .saturating_add(bytes);
                if size > limit {
                    out.push(Effect::Refused {
                        conn: p.conn,
                        doc: Some(doc_id.clone()),
                        refusal: Refusal::QuotaExceeded { size, limit },
                    });
                    offenders.push((
                        p.conn,
                        close_code::MESSAGE_TOO_BIG,
                        format!(
                            "document {doc_id} would exceed its size quota ({size} > {limit} bytes); changes refused"
                        ),
                    ));
                    continue;
                }
            }
            incoming += bytes;
            pending.push(p);
        }

        let senders: HashSet<ConnectionId> = pending.iter().map(|p| p.conn).collect();
        let before = doc.get_heads();

        // Local changes: only for a document of the bridge's own workspace.
        let mut local_tokens = Vec::new();
        for (token, workspace, changes) in std::mem::take(&mut entry.local_pending) {
            if workspace != doc_workspace {
                out.push(Effect::LocalChangeDone {
                    token,
                    result: Err(format!(
                        "document {doc_id} belongs to another workspace than {workspace}"
                    )),
                });
            } else if let Err(e) = doc.load_incremental(&changes) {
                out.push(Effect::LocalChangeDone {
                    token,
                    result: Err(format!("invalid local changes for document {doc_id}: {e}")),
                });
            } else {
                local_tokens.push(token);
            }
        }

        // All changes first, in one call: applying costs grow with history, so one batch per document.
        let mut had_changes = vec![false; pending.len()];
        let mut all_changes = Vec::new();
        for (i, p) in pending.iter_mut().enumerate() {
            if !p.message.changes.is_empty() {
                had_changes[i] = true;
                for chunk in p.message.changes.iter() {
                    all_changes.extend_from_slice(chunk);
                }
            }
        }
        if !all_changes.is_empty() && doc.load_incremental(&all_changes).is_err() {
            // Some peer sent a broken change: find it by applying message by message.
            for p in pending.iter() {
                if p.message.changes.is_empty() {
                    continue;
                }
                let mut bytes = Vec::new();
                for chunk in p.message.changes.iter() {
                    bytes.extend_from_slice(chunk);
                }
                if let Err(e) = doc.load_incremental(&bytes) {
                    offenders.push((
                        p.conn,
                        close_code::INVALID_PAYLOAD,
                        format!("invalid changes for document {doc_id}: {e}"),
                    ));
                }
            }
        }
        for (i, p) in pending.into_iter().enumerate() {
            let PendingMessage {
                conn,
                kind,
                mut message,
                writable,
                ..
            } = p;
            if offenders.iter().any(|(c, _, _)| *c == conn) || !self.connections.contains_key(&conn)
            {
                continue; // a departed peer's changes are kept, its sync state is not
            }
            message.changes = sync::ChunkList::empty();
            let state = entry
                .peers
                .entry(conn)
                .or_insert_with(|| new_sync_state(writable));
            // With the changes already applied, receive_sync_message would think we already told this
            // peer our (new) heads; restore its view so the reply acknowledges them.
            let last_sent = state.last_sent_heads.clone();
            // Most messages on a busy document are peers acknowledging our heads (or a writer whose
            // changes, applied above, made its heads ours): take those without automerge's walk
            // over the whole history (see `receive_up_to_date`).
            let received = receive_up_to_date(doc, state, message)
                .or_else(|message| doc.receive_sync_message(state, message));
            if let Err(e) = received {
                offenders.push((
                    conn,
                    close_code::INVALID_PAYLOAD,
                    format!("sync message for document {doc_id} failed: {e}"),
                ));
                continue;
            }
            if had_changes[i] {
                state.last_sent_heads = last_sent;
            }
            if kind == SyncKind::Request && doc.get_heads().is_empty() {
                // We only hold an empty placeholder: to a requester that is "unavailable".
                entry.peers.remove(&conn);
                entry.wanting.insert(conn);
                send_unavailable(&self.config, &self.connections, conn, doc_id, out);
            }
        }
        let after = doc.get_heads();
        if after != before {
            let snapshot = entry.chunks_since_snapshot + 1 >= self.config.compact_after_chunks;
            let op = if snapshot {
                PersistOp::Snapshot(doc.save())
            } else {
                PersistOp::Append(doc.save_after(&entry.persisted_heads))
            };
            // The quota counts compressed Automerge data: the last snapshot plus the changes as
            // received (an appended chunk is stored uncompressed and is often larger).
            let stored_bytes = match &op {
                PersistOp::Snapshot(b) => b.len() as u64,
                PersistOp::Append(_) => entry.stored_bytes.saturating_add(incoming),
            };
            let write = self.next_write;
            self.next_write += 1;
            entry.in_flight = Some(InFlightWrite {
                write,
                heads: after,
                snapshot,
                stored_bytes,
                local: local_tokens,
            });
            self.writes.insert(write, doc_id.clone());
            out.push(Effect::Persist {
                write,
                doc: doc_id.clone(),
                workspace: doc_workspace,
                op,
            });
        } else {
            // Nothing new to store: only the senders' states changed, so only they may need a reply.
            let peers = entry.peers.iter_mut().filter(|(c, _)| senders.contains(c));
            generate_for(&self.config, &self.connections, doc_id, doc, peers, out);
            // Local changes that were already here are as durable as the rest.
            for token in local_tokens {
                out.push(Effect::LocalChangeDone {
                    token,
                    result: Ok(entry.persisted_heads.clone()),
                });
            }
        }
        for (conn, code, reason) in offenders {
            self.close(conn, code, format!("connection {conn}: {reason}"), out);
        }
    }

    fn write_durable(&mut self, now: Instant, write: WriteId, out: &mut Vec<Effect>) {
        let Some(doc_id) = self.writes.remove(&write) else {
            return;
        };
        let Some(entry) = self.docs.get_mut(&doc_id) else {
            return;
        };
        let Some(in_flight) = entry.in_flight.take_if(|w| w.write == write) else {
            return;
        };
        entry.persisted_heads = in_flight.heads;
        entry.stored_bytes = in_flight.stored_bytes;
        for token in in_flight.local {
            out.push(Effect::LocalChangeDone {
                token,
                result: Ok(entry.persisted_heads.clone()),
            });
        }
        entry.chunks_since_snapshot = if in_flight.snapshot {
            0
        } else {
            entry.chunks_since_snapshot + 1
        };
        entry.last_active = now;
        if let DocState::Ready(doc) = &entry.state {
            // Peers that were told "unavailable" get the document now (if it is theirs to see).
            let workspace = entry.workspace.as_deref().unwrap_or(DEFAULT_WORKSPACE);
            for conn in std::mem::take(&mut entry.wanting) {
                let Some(c) = self.connections.get(&conn) else {
                    continue;
                };
                if c.access.workspace == workspace && c.access.in_scope(&doc_id) {
                    let writable = c.access.can_write();
                    entry
                        .peers
                        .entry(conn)
                        .or_insert_with(|| new_sync_state(writable));
                }
            }
            generate_for(
                &self.config,
                &self.connections,
                &doc_id,
                doc,
                entry.peers.iter_mut(),
                out,
            );
        }
        self.process(&doc_id, out);
    }

    fn write_failed(&mut self, write: WriteId, error: &str, out: &mut Vec<Effect>) {
        let Some(doc_id) = self.writes.remove(&write) else {
            return;
        };
        // The in-memory document holds changes that are not durable: drop it so nothing undurable is
        // ever acknowledged, and close its peers so they resend after reconnecting.
        let Some(entry) = self.docs.remove(&doc_id) else {
            return;
        };
        if matches!(entry.state, DocState::Ready(_)) {
            self.resident -= 1;
        }
        let failed_local = entry
            .in_flight
            .iter()
            .flat_map(|w| w.local.iter().copied())
            .chain(entry.local_pending.iter().map(|(t, _, _)| *t));
        for token in failed_local {
            out.push(Effect::LocalChangeDone {
                token,
                result: Err(format!(
                    "storage write for document {doc_id} failed: {error}"
                )),
            });
        }
        let conns: HashSet<ConnectionId> = entry
            .peers
            .keys()
            .chain(entry.wanting.iter())
            .chain(entry.pending.iter().map(|p| &p.conn))
            .copied()
            .collect();
        for conn in conns {
            let reason =
                format!("connection {conn}: storage write for document {doc_id} failed: {error}");
            self.close(conn, close_code::INTERNAL_ERROR, reason, out);
        }
    }

    fn storage_loaded(
        &mut self,
        now: Instant,
        doc_id: DocumentId,
        result: LoadResult,
        out: &mut Vec<Effect>,
    ) {
        let Some(entry) = self.docs.get_mut(&doc_id) else {
            return;
        };
        if !matches!(entry.state, DocState::Loading) {
            return;
        }
        entry.last_active = now;
        entry.state = match result {
            LoadResult::Found {
                doc,
                workspace,
                stored_bytes,
            } => {
                entry.persisted_heads = doc.get_heads();
                self.resident += 1;
                entry.workspace = Some(workspace);
                entry.stored_bytes = stored_bytes;
                DocState::Ready(doc)
            }
            LoadResult::NotFound => DocState::Absent,
            LoadResult::Failed(_) => DocState::Failed,
        };
        self.process(&doc_id, out);
        self.drop_if_idle(&doc_id);
    }

    #[allow(clippy::too_many_arguments)]
    fn relay_ephemeral(
        &mut self,
        conn: ConnectionId,
        sender_id: String,
        doc_id: DocumentId,
        count: u64,
        session_id: String,
        data: Vec<u8>,
        out: &mut Vec<Effect>,
    ) {
        let Some(c) = self.connections.get(&conn) else {
            return;
        };
        // Only a peer's own presence is relayed, only for documents it may see.
        if joined_peer_id(&self.connections, conn) != Some(sender_id.as_str())
            || !c.access.in_scope(&doc_id)
        {
            return;
        }
        let workspace = c.access.workspace.clone();
        let Some(entry) = self.docs.get(&doc_id) else {
            return;
        };
        if entry.workspace.as_deref() != Some(workspace.as_str()) {
            return;
        }
        let key = (workspace, sender_id, session_id);
        match self.ephemeral_seen.get(&key) {
            Some(last) if count <= *last => return,
            _ => {}
        }
        self.ephemeral_seen.insert(key.clone(), count);
        let (workspace, sender_id, session_id) = key;
        let targets: HashSet<ConnectionId> = entry
            .peers
            .keys()
            .chain(entry.wanting.iter())
            .copied()
            .collect();
        for target in targets {
            if target == conn {
                continue;
            }
            let Some(t) = self.connections.get(&target) else {
                continue;
            };
            if t.access.workspace != workspace || !t.access.in_scope(&doc_id) {
                continue;
            }
            let Some(target_peer) = joined_peer_id(&self.connections, target) else {
                continue;
            };
            let message = Message::Ephemeral {
                sender_id: sender_id.clone(),
                target_id: target_peer.to_owned(),
                document_id: doc_id.clone(),
                count,
                session_id: session_id.clone(),
                data: data.clone(),
            };
            out.push(Effect::Send {
                conn: target,
                frame: codec::encode(&message),
            });
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Effect>) {
        let timeout = self.config.join_timeout;
        let late: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, c)| match c.state {
                ConnectionState::AwaitingJoin { since } => {
                    now.saturating_duration_since(since) >= timeout
                }
                ConnectionState::Joined { .. } => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in late {
            let reason = format!("connection {conn}: no join within {}s", timeout.as_secs());
            self.close(conn, close_code::POLICY_VIOLATION, reason, out);
        }
        self.ticket_peers.retain(|_, (_, expires)| *expires > now);
        let config = &self.config;
        let mut evicted = 0;
        self.docs.retain(|_, d| {
            let evict = match &d.state {
                DocState::Ready(doc) => {
                    let stats = doc.stats();
                    if stats.num_ops + stats.num_changes <= config.small_doc_ops {
                        config.small_idle_evict
                    } else {
                        config.idle_evict
                    }
                }
                // Placeholders and unloaded documents hold no document data.
                _ => config.small_idle_evict,
            };
            if now.saturating_duration_since(d.last_active) < evict {
                return true;
            }
            if d.is_idle() {
                if matches!(d.state, DocState::Ready(_)) {
                    evicted += 1;
                }
                return false;
            }
            // Open but quiet: keep the connections' sync states, drop the document's data.
            if d.can_unload() {
                d.state = DocState::Unloaded;
                evicted += 1;
            }
            true
        });
        self.resident -= evicted;
    }

    /// Emits `Close` and forgets the connection at once, so nothing more is sent to it.
    fn close(&mut self, conn: ConnectionId, code: u16, reason: String, out: &mut Vec<Effect>) {
        if self.connections.contains_key(&conn) {
            self.forget_connection(conn);
            out.push(Effect::Close {
                conn,
                reason: CloseReason { code, reason },
            });
        }
    }

    fn forget_connection(&mut self, conn: ConnectionId) {
        let Some(connection) = self.connections.remove(&conn) else {
            return;
        };
        if let ConnectionState::Joined { peer_id } = &connection.state {
            self.release_peer(&connection.access.workspace, peer_id, conn);
        }
        for doc_id in connection.docs {
            if let Some(entry) = self.docs.get_mut(&doc_id) {
                entry.peers.remove(&conn);
                entry.wanting.remove(&conn);
                // Pending messages stay: their changes are still applied and stored.
            }
        }
    }

    /// Forgets that `conn` is the live connection of `peer_id` (if it still is).
    fn release_peer(&mut self, workspace: &str, peer_id: &str, conn: ConnectionId) {
        let key = (workspace.to_owned(), peer_id.to_owned());
        if self.peer_connections.get(&key) == Some(&conn) {
            self.peer_connections.remove(&key);
            self.ephemeral_seen
                .retain(|(ws, sender, _), _| !(*ws == key.0 && *sender == key.1));
        }
    }

    fn drop_if_idle(&mut self, doc_id: &DocumentId) {
        if let Some(entry) = self.docs.get(doc_id) {
            let placeholder = matches!(entry.state, DocState::Absent | DocState::Failed);
            if placeholder && entry.is_idle() {
                self.docs.remove(doc_id);
            }
        }
    }
}

/// A fresh sync state for a connection: read-only connections never have their changes applied, and
/// a read-only state also stops us asking for them again and again.
fn new_sync_state(writable: bool) -> sync::State {
    if writable {
        sync::State::new()
    } else {
        sync::State::new_read_only()
    }
}

fn joined_peer_id(
    connections: &HashMap<ConnectionId, Connection>,
    conn: ConnectionId,
) -> Option<&str> {
    match &connections.get(&conn)?.state {
        ConnectionState::Joined { peer_id } => Some(peer_id),
        ConnectionState::AwaitingJoin { .. } => None,
    }
}

fn send_unavailable(
    config: &EngineConfig,
    connections: &HashMap<ConnectionId, Connection>,
    conn: ConnectionId,
    doc_id: &DocumentId,
    out: &mut Vec<Effect>,
) {
    let Some(peer) = joined_peer_id(connections, conn) else {
        return;
    };
    let message = Message::DocUnavailable {
        sender_id: config.peer_id.clone(),
        target_id: peer.to_owned(),
        document_id: doc_id.clone(),
    };
    out.push(Effect::Send {
        conn,
        frame: codec::encode(&message),
    });
}

/// True when the peer's sync state says there is nothing to tell it: we already told it our
/// current heads, it reported exactly those heads (so it holds every change we have and we need
/// nothing from it), it asks for nothing, and its last `have` names only changes we know (else
/// automerge would answer with a reset). `generate_sync_message` returns `None` in that case too
/// (at most it would resend changes the peer already holds), but only after computing our needs,
/// a bloom filter and the changes to send; at a hundred readers acknowledging each change this
/// check replaces a hundred such calls. It leaves the state untouched, as `None` does.
pub fn peer_is_caught_up(doc: &Automerge, our_heads: &[ChangeHash], state: &sync::State) -> bool {
    !our_heads.is_empty()
        && state.have_responded
        && !state.needs_reset
        && state.last_sent_heads == our_heads
        && state.their_heads.as_deref() == Some(our_heads)
        && state.their_need.as_ref().is_none_or(Vec::is_empty)
        && state.their_have.as_ref().is_none_or(|have| {
            have.first().is_none_or(|h| {
                h.last_sync
                    .iter()
                    .all(|c| doc.get_change_meta_by_hash(c).is_some())
            })
        })
}

/// Receives a sync message from a peer that holds exactly our heads and sends no changes: the state ends up exactly as [`SyncDoc::receive_sync_message`] would leave
/// it, without its cost. automerge trims `sent_hashes` to what the peer has not seen by walking
/// every ancestor of the peer's heads (`ChangeGraph::remove_ancestors`), which for a peer holding
/// our heads is the whole history: ~100k nodes per message on a 100k-change document, for every
/// reader's acknowledgement of every keystroke. Here every change we hold is an ancestor of the
/// peer's heads, so every hash we sent is seen: `sent_hashes` is simply cleared. Returns the
/// message untouched when it does not qualify.
#[allow(clippy::result_large_err)] // the message is handed back for the general path, not an error
pub fn receive_up_to_date(
    doc: &Automerge,
    state: &mut sync::State,
    message: sync::Message,
) -> Result<(), sync::Message> {
    if !message.changes.is_empty() || message.heads.is_empty() || message.heads != doc.get_heads() {
        return Err(message);
    }
    let sync::Message {
        heads,
        need,
        have,
        flags,
        ..
    } = message;
    // As automerge does: flags mean a V2-capable peer; a reset only clears `sent_hashes`, which
    // is cleared below anyway.
    if let Some(flags) = flags {
        let mut capabilities = vec![sync::Capability::MessageV2];
        if flags.contains(sync::MessageFlags::SUPPORTS_SYNC_RESET) {
            capabilities.push(sync::Capability::SyncReset);
        }
        state.their_capabilities = Some(capabilities);
        state.peer_read_only = flags.contains(sync::MessageFlags::READ_ONLY);
    }
    state.in_flight = false;
    state.sent_hashes.clear();
    state.last_sent_heads.clone_from(&heads);
    state.shared_heads.clone_from(&heads);
    state.their_have = Some(have);
    state.their_need = Some(need);
    state.their_heads = Some(heads);
    Ok(())
}

/// One outgoing sync message per peer that has something to hear (none when `generate` says so).
fn generate_for<'a>(
    config: &EngineConfig,
    connections: &HashMap<ConnectionId, Connection>,
    doc_id: &DocumentId,
    doc: &Automerge,
    peers: impl Iterator<Item = (&'a ConnectionId, &'a mut sync::State)>,
    out: &mut Vec<Effect>,
) {
    let our_heads = doc.get_heads();
    for (conn, state) in peers {
        let Some(peer) = joined_peer_id(connections, *conn) else {
            continue;
        };
        if peer_is_caught_up(doc, &our_heads, state) {
            continue;
        }
        if let Some(message) = doc.generate_sync_message(state) {
            let frame = codec::encode(&Message::Sync {
                sender_id: config.peer_id.clone(),
                target_id: peer.to_owned(),
                document_id: doc_id.clone(),
                data: message.encode(),
            });
            out.push(Effect::Send { conn: *conn, frame });
        }
    }
}
