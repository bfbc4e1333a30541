//! The engine host: one dedicated OS thread owns the [`Engine`] and carries out its effects.
//!
//! Inputs arrive on (a) a bounded channel from connection tasks and HTTP handlers (bounded so a
//! flood of frames pushes back on the socket readers instead of growing memory), (b) an unbounded
//! channel of storage results (bounded by the writes and loads the engine itself asked for, and
//! preferred, so durability acks are never stuck behind new work), and (c) a one-second `Tick`.
//! Effects are carried out in order and never block: frames go to each connection's bounded queue
//! with `try_send`, and a connection that cannot keep up is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use automerge::Automerge;
use driftless_client_protocol::DocumentId;
use driftless_client_protocol::engine::{
    Access, CloseReason, ConnectionId, DEFAULT_WORKSPACE, Effect, Engine, Input, LoadResult,
    Refusal,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::loader::{DocJson, Loader, document_json};
use crate::metrics::Metrics;
use crate::storage::PersistRequest;
use crate::writer::WriteQueue;

/// Most network inputs taken per wake-up of the engine thread before storage results are looked at.
const NETWORK_BURST: usize = 128;
/// At shutdown, network input keeps being applied until it is quiet this long...
const RECEIVE_QUIET: Duration = Duration::from_millis(100);
/// ...or for at most this long.
const RECEIVE_GRACE: Duration = Duration::from_secs(2);
/// How long shutdown waits for queued writes to commit and their acks to be sent.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for connections to close after being told to.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// WebSocket close code and reason used at shutdown.
pub const SHUTDOWN_CLOSE_CODE: u16 = 1001;
pub const SHUTDOWN_CLOSE_REASON: &str = "server shutting down";
/// Close code for a connection whose outbound queue filled up.
pub const SLOW_READER_CLOSE_CODE: u16 = 1008;

pub fn shutdown_reason() -> CloseReason {
    CloseReason {
        code: SHUTDOWN_CLOSE_CODE,
        reason: SHUTDOWN_CLOSE_REASON.into(),
    }
}

/// The engine as the host drives it. [`Engine`] is the implementation; tests substitute scripted
/// engines to check how the host carries out effects.
pub trait SyncEngine: Send + 'static {
    fn handle(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>);
    fn resident_document_count(&self) -> usize;
    fn document(&self, doc: &DocumentId) -> Option<&Automerge>;
    /// A resident document with its workspace.
    fn document_in_workspace(&self, doc: &DocumentId) -> Option<(&Automerge, &str)> {
        self.document(doc).map(|d| (d, DEFAULT_WORKSPACE))
    }
}

impl SyncEngine for Engine {
    fn handle(&mut self, now: Instant, input: Input, out: &mut Vec<Effect>) {
        Engine::handle(self, now, input, out);
    }
    fn resident_document_count(&self) -> usize {
        Engine::resident_document_count(self)
    }
    fn document(&self, doc: &DocumentId) -> Option<&Automerge> {
        Engine::document(self, doc)
    }
    fn document_in_workspace(&self, doc: &DocumentId) -> Option<(&Automerge, &str)> {
        Engine::document_in_workspace(self, doc)
    }
}

/// What the engine thread can be asked, over the bounded network channel.
#[derive(Debug)]
pub enum HostInput {
    /// A new WebSocket; the host feeds `Connected` and routes the connection's effects to `handle`.
    Register {
        conn: ConnectionId,
        peer: SocketAddr,
        /// What the connection's credentials allow (decided at the upgrade).
        access: Access,
        handle: ConnHandle,
    },
    /// `FrameReceived` or `Disconnected` from a connection task.
    Engine(Input),
    /// An HTTP read of a document in `workspace`: answered from the resident copy, else from
    /// storage; a document of another workspace is "not found".
    GetDocJson {
        doc: DocumentId,
        workspace: String,
        reply: oneshot::Sender<DocJson>,
    },
    /// Changes made in the server (a provider bridge): answered once durable with the document's
    /// durable heads, or with why they were refused.
    LocalChange {
        doc: DocumentId,
        workspace: String,
        changes: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<automerge::ChangeHash>, String>>,
    },
}

/// The host's end of one connection.
#[derive(Debug)]
pub struct ConnHandle {
    /// Frames to send, in order. Bounded: a full queue means a slow reader.
    pub outbound: mpsc::Sender<Vec<u8>>,
    /// Tells the connection task to flush its queue, send a close frame and end.
    pub close: oneshot::Sender<CloseReason>,
}

struct Conn {
    peer: SocketAddr,
    workspace: String,
    outbound: mpsc::Sender<Vec<u8>>,
    /// `None` once a close was requested; later sends to the connection are dropped.
    close: Option<oneshot::Sender<CloseReason>>,
}

impl Conn {
    fn close(&mut self, reason: CloseReason) {
        if let Some(close) = self.close.take() {
            let _ = close.send(reason);
        }
    }
}

/// Everything the engine thread needs.
pub struct HostParts<E> {
    pub engine: E,
    pub net_rx: mpsc::Receiver<HostInput>,
    pub internal_rx: mpsc::UnboundedReceiver<Input>,
    /// For reporting a failed hand-off (writer or loader gone) back to ourselves.
    pub internal_tx: mpsc::UnboundedSender<Input>,
    pub writes: WriteQueue,
    pub loader: Loader,
    pub metrics: Arc<Metrics>,
    /// Resolves (or is dropped) when the server shuts down.
    pub stop: oneshot::Receiver<()>,
}

/// Starts the engine thread. It returns after shutdown, once writes drained and connections closed;
/// dropping its write queue and loader then lets those threads finish.
pub fn spawn<E: SyncEngine>(parts: HostParts<E>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("driftless-engine".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!(error = %e, "cannot start the engine thread's runtime");
                    return;
                }
            };
            runtime.block_on(run(parts));
        })
}

struct Host<E> {
    engine: E,
    conns: HashMap<ConnectionId, Conn>,
    internal_tx: mpsc::UnboundedSender<Input>,
    writes: WriteQueue,
    loader: Loader,
    metrics: Arc<Metrics>,
    effects: Vec<Effect>,
    /// Persists handed to the writer and not yet answered.
    pending_writes: usize,
    /// Loads handed to the loader and not yet answered.
    pending_loads: usize,
    shutting_down: bool,
    /// Local changes handed to the engine, by token, with whom to tell when they are durable.
    local_replies: HashMap<u64, oneshot::Sender<Result<Vec<automerge::ChangeHash>, String>>>,
    next_local: u64,
}

async fn run<E: SyncEngine>(parts: HostParts<E>) {
    let HostParts {
        engine,
        mut net_rx,
        mut internal_rx,
        internal_tx,
        writes,
        loader,
        metrics,
        mut stop,
    } = parts;
    let mut host = Host {
        engine,
        conns: HashMap::new(),
        internal_tx,
        writes,
        loader,
        metrics,
        effects: Vec::new(),
        pending_writes: 0,
        pending_loads: 0,
        shutting_down: false,
        local_replies: HashMap::new(),
        next_local: 1,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            biased;
            Some(input) = internal_rx.recv() => host.internal(input),
            _ = &mut stop => break,
            Some(input) = net_rx.recv() => {
                host.network(input);
                // A burst (e.g. a hundred readers acknowledging one change) is taken in one go,
                // without a trip through `select!` and the runtime per frame; bounded so storage
                // results and the tick are never held up for long.
                for _ in 1..NETWORK_BURST {
                    let Ok(input) = net_rx.try_recv() else { break };
                    host.network(input);
                }
            }
            _ = tick.tick() => host.feed(Input::Tick),
        }
    }

    // Frames that reached us are applied too, including those still in socket buffers: keep taking
    // network input until it has been quiet for a moment (bounded, since a client may never stop).
    let grace_end = tokio::time::Instant::now() + RECEIVE_GRACE;
    loop {
        let quiet = tokio::time::Instant::now() + RECEIVE_QUIET;
        let next = tokio::time::timeout_at(quiet.min(grace_end), async {
            tokio::select! {
                biased;
                Some(input) = internal_rx.recv() => Some(Ok(input)),
                Some(input) = net_rx.recv() => Some(Err(input)),
                else => None,
            }
        })
        .await;
        match next {
            Ok(Some(Ok(input))) => host.internal(input),
            Ok(Some(Err(input))) => host.network(input),
            Ok(None) | Err(_) => break,
        }
    }
    // Drain: let queued writes commit and their acks go out before any socket closes. Network input
    // waits (readers block on the bounded channel) so no new writes start.
    host.shutting_down = true;
    let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
    while host.pending_writes + host.pending_loads > 0 {
        match tokio::time::timeout_at(deadline, internal_rx.recv()).await {
            Ok(Some(input)) => host.internal(input),
            Ok(None) => break,
            Err(_) => {
                warn!(
                    writes = host.pending_writes,
                    loads = host.pending_loads,
                    "shutdown: storage work still pending after {DRAIN_TIMEOUT:?}; closing anyway"
                );
                break;
            }
        }
    }

    // Close every connection and wait for them to end, feeding their `Disconnected`.
    for conn in host.conns.values_mut() {
        conn.close(shutdown_reason());
    }
    let deadline = tokio::time::Instant::now() + CLOSE_TIMEOUT;
    while !host.conns.is_empty() {
        let next = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                biased;
                Some(input) = internal_rx.recv() => Some(Ok(input)),
                Some(input) = net_rx.recv() => Some(Err(input)),
                else => None,
            }
        })
        .await;
        match next {
            Ok(Some(Ok(input))) => host.internal(input),
            Ok(Some(Err(input))) => host.network(input),
            Ok(None) => break,
            Err(_) => {
                warn!(
                    open = host.conns.len(),
                    "shutdown: connections still open after {CLOSE_TIMEOUT:?}"
                );
                break;
            }
        }
    }
    info!("engine stopped");
}

impl<E: SyncEngine> Host<E> {
    /// Feeds one input and carries out the effects in order.
    fn feed(&mut self, input: Input) {
        let mut effects = std::mem::take(&mut self.effects);
        self.engine.handle(Instant::now(), input, &mut effects);
        for effect in effects.drain(..) {
            self.apply(effect);
        }
        self.effects = effects;
        self.metrics
            .resident_documents
            .store(self.engine.resident_document_count() as u64, Relaxed);
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Send { conn, frame } => {
                let Some(entry) = self.conns.get_mut(&conn) else {
                    return;
                };
                if entry.close.is_none() {
                    return; // closing: nothing after the close may be sent
                }
                match entry.outbound.try_send(frame) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        warn!(
                            conn,
                            peer = %entry.peer,
                            workspace = %entry.workspace,
                            limit = crate::limits::limit::OUTBOUND_QUEUE,
                            capacity = entry.outbound.max_capacity(),
                            "limit hit: connection is not reading fast enough (outbound queue full); closing it"
                        );
                        self.metrics.slow_reader_closes.fetch_add(1, Relaxed);
                        self.metrics
                            .limit_hits
                            .inc(crate::limits::limit::OUTBOUND_QUEUE);
                        entry.close(CloseReason {
                            code: SLOW_READER_CLOSE_CODE,
                            reason: "too slow: outbound queue full".into(),
                        });
                    }
                    // The task ended; its `Disconnected` is on the way.
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
            Effect::Load { doc } => {
                self.pending_loads += 1;
                if self.loader.load(doc.clone()).is_err() {
                    error!(%doc, "document loader has stopped; reporting the load failed");
                    let _ = self.internal_tx.send(Input::StorageLoaded {
                        result: LoadResult::Failed(format!("document {doc}: loader has stopped")),
                        doc,
                    });
                }
            }
            Effect::Persist {
                write,
                doc,
                workspace,
                op,
            } => {
                self.pending_writes += 1;
                let request = PersistRequest {
                    write,
                    doc,
                    workspace,
                    op,
                };
                if let Err(stopped) = self.writes.submit(request) {
                    error!(
                        write,
                        doc = %stopped.0.doc,
                        "STORAGE WRITER HAS STOPPED: reporting the write failed"
                    );
                    let _ = self.internal_tx.send(Input::WriteFailed {
                        write,
                        error: stopped.to_string(),
                    });
                }
            }
            Effect::Refused { conn, doc, refusal } => self.refused(conn, doc, &refusal),
            Effect::Close { conn, reason } => {
                if let Some(entry) = self.conns.get_mut(&conn) {
                    debug!(conn, peer = %entry.peer, code = reason.code, reason = %reason.reason, "engine closes connection");
                    entry.close(reason);
                }
            }
            Effect::LocalChangeDone { token, result } => {
                if let Some(reply) = self.local_replies.remove(&token) {
                    let _ = reply.send(result);
                }
            }
        }
    }

    fn refused(&mut self, conn: ConnectionId, doc: Option<DocumentId>, refusal: &Refusal) {
        self.metrics.refusals.inc(refusal.kind());
        let (peer, workspace) = match self.conns.get(&conn) {
            Some(c) => (Some(c.peer), c.workspace.as_str()),
            None => (None, ""),
        };
        let doc = doc.map(|d| d.to_string()).unwrap_or_default();
        match refusal {
            Refusal::ReadOnlyChanges => info!(
                conn, peer = ?peer, workspace, %doc,
                "read-only connection sent changes; not applied, persisted or forwarded"
            ),
            Refusal::QuotaExceeded { size, limit } => {
                self.metrics
                    .limit_hits
                    .inc(crate::limits::limit::DOCUMENT_BYTES);
                warn!(
                    conn, peer = ?peer, workspace, %doc, size, limit,
                    limit_name = crate::limits::limit::DOCUMENT_BYTES,
                    "limit hit: document would exceed its size quota; changes refused, connection closed"
                );
            }
            other => info!(
                conn, peer = ?peer, workspace, %doc, refusal = other.kind(),
                "refused: answered doc-unavailable or closed"
            ),
        }
    }

    fn internal(&mut self, input: Input) {
        match &input {
            Input::WriteDurable { .. } | Input::WriteFailed { .. } => {
                self.pending_writes = self.pending_writes.saturating_sub(1);
            }
            Input::StorageLoaded { .. } => {
                self.pending_loads = self.pending_loads.saturating_sub(1);
            }
            _ => {}
        }
        self.feed(input);
    }

    fn network(&mut self, input: HostInput) {
        match input {
            HostInput::Register {
                conn,
                peer,
                access,
                handle,
            } => {
                if self.shutting_down {
                    let _ = handle.close.send(shutdown_reason());
                    return;
                }
                debug!(conn, %peer, workspace = %access.workspace, role = ?access.role, "connected");
                self.conns.insert(
                    conn,
                    Conn {
                        peer,
                        workspace: access.workspace.clone(),
                        outbound: handle.outbound,
                        close: Some(handle.close),
                    },
                );
                self.metrics
                    .connections
                    .store(self.conns.len() as u64, Relaxed);
                self.feed(Input::Connected { conn, access });
            }
            HostInput::Engine(Input::Disconnected { conn }) => {
                // Only connections the engine saw connect are reported, and only once.
                if let Some(entry) = self.conns.remove(&conn) {
                    debug!(conn, peer = %entry.peer, "disconnected");
                    self.metrics
                        .connections
                        .store(self.conns.len() as u64, Relaxed);
                    self.feed(Input::Disconnected { conn });
                }
            }
            HostInput::Engine(Input::FrameReceived { conn, frame }) => {
                // Frames from closing connections, and any after shutdown began, are dropped.
                let open = self.conns.get(&conn).is_some_and(|c| c.close.is_some());
                if open && !self.shutting_down {
                    self.feed(Input::FrameReceived { conn, frame });
                }
            }
            HostInput::Engine(other) => {
                warn!(input = ?other, "unexpected input on the network channel; ignored");
            }
            HostInput::GetDocJson {
                doc,
                workspace,
                reply,
            } => match self.engine.document_in_workspace(&doc) {
                Some((document, ws)) => {
                    let _ = reply.send(if ws == workspace {
                        document_json(document)
                    } else {
                        DocJson::NotFound
                    });
                }
                None => {
                    if let Err(e) = self.loader.read_json(doc, workspace, reply) {
                        error!(error = %e, "cannot read document for HTTP");
                    }
                }
            },
            HostInput::LocalChange {
                doc,
                workspace,
                changes,
                reply,
            } => {
                if self.shutting_down {
                    let _ = reply.send(Err("server shutting down".into()));
                    return;
                }
                let token = self.next_local;
                self.next_local += 1;
                self.local_replies.insert(token, reply);
                self.feed(Input::LocalChange {
                    doc,
                    workspace,
                    changes,
                    token,
                });
            }
        }
    }
}
