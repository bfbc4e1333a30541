//! One WebSocket connection: socket reads become engine inputs, engine sends become socket writes.
//!
//! Each connection runs a reader and a writer over the split socket in one task. The reader feeds
//! binary frames to the engine (awaiting channel capacity: that is the backpressure) and stops on
//! text frames (1003), oversized messages (1009) and errors. The writer sends queued frames, pings
//! every [`PING_INTERVAL`] and ends the connection when the peer stayed silent since the previous
//! ping, or when the host asks it to close (after flushing what was queued before the close).
//! Whatever happens, the task reports `Disconnected` exactly once (if it was registered).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use driftless_client_protocol::engine::Access;
use driftless_client_protocol::engine::{CloseReason, ConnectionId, Input};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::host::{ConnHandle, HostInput, shutdown_reason};
use crate::limits::{AdmissionGuard, TokenBucket, limit};
use crate::metrics::Metrics;

/// How often the server pings each connection by default; a peer silent for a whole interval is closed.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// Longest a single socket write may take before the connection is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long we wait for the peer's close frame after sending ours.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

pub const CLOSE_UNSUPPORTED_DATA: u16 = 1003;
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
pub const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub const CLOSE_POLICY: u16 = 1008;

/// What every connection task shares.
#[derive(Clone, Debug)]
pub struct WsContext {
    pub net_tx: mpsc::Sender<HostInput>,
    pub metrics: Arc<Metrics>,
    pub next_conn: Arc<AtomicU64>,
    pub max_message_bytes: usize,
    /// How often each connection is pinged; silent for a whole interval means closed.
    pub ping_interval: Duration,
    pub limits: crate::config::Limits,
}

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// The stream ended (the peer went away, or the close handshake completed).
    Gone,
    /// The peer sent a close frame; tungstenite answers it as we finish reading.
    PeerClosed,
    /// We close with this code and reason.
    Close(CloseReason),
    /// The socket failed; nothing more can be sent.
    Failed(String),
}

fn reason(code: u16, text: impl Into<String>) -> CloseReason {
    CloseReason {
        code,
        reason: text.into(),
    }
}

/// Runs one upgraded connection to its end. `_admission` holds its place in the connection caps.
pub async fn serve(
    socket: WebSocket,
    peer: SocketAddr,
    ctx: WsContext,
    access: Access,
    _admission: AdmissionGuard,
) {
    let conn = ctx.next_conn.fetch_add(1, Relaxed);
    let (out_tx, mut out_rx) = mpsc::channel(ctx.limits.outbound_queue.max(1));
    let (close_tx, mut close_rx) = oneshot::channel();
    let (mut sink, mut stream) = socket.split();

    let handle = ConnHandle {
        outbound: out_tx,
        close: close_tx,
    };
    let register = HostInput::Register {
        conn,
        peer,
        access,
        handle,
    };
    if ctx.net_tx.send(register).await.is_err() {
        // The engine has stopped: we are shutting down.
        finish(&mut sink, &mut stream, End::Close(shutdown_reason())).await;
        return;
    }

    let alive = AtomicBool::new(true);
    let end = tokio::select! {
        end = read_loop(&mut stream, conn, peer, &ctx, &alive) => end,
        end = write_loop(&mut sink, &mut out_rx, &mut close_rx, &ctx, &alive) => end,
    };
    debug!(conn, %peer, end = ?end, "connection ending");
    finish(&mut sink, &mut stream, end).await;
    // Exactly once, after the last frame this task fed.
    let _ = ctx
        .net_tx
        .send(HostInput::Engine(Input::Disconnected { conn }))
        .await;
}

async fn read_loop(
    stream: &mut SplitStream<WebSocket>,
    conn: ConnectionId,
    peer: SocketAddr,
    ctx: &WsContext,
    alive: &AtomicBool,
) -> End {
    let now = std::time::Instant::now();
    let limits = &ctx.limits;
    let mut messages = TokenBucket::new(
        u64::from(limits.messages_per_second),
        u64::from(limits.message_burst),
        now,
    );
    // A maximal message always fits in the byte bucket.
    let byte_burst = limits.byte_burst.max(ctx.max_message_bytes as u64);
    let mut bytes = TokenBucket::new(limits.bytes_per_second, byte_burst, now);
    let mut throttled_before = false;
    loop {
        let message = match stream.next().await {
            None => return End::Gone,
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                let end = read_error(e, ctx.max_message_bytes);
                if let End::Close(r) = &end
                    && r.code == CLOSE_MESSAGE_TOO_BIG
                {
                    ctx.metrics.limit_hits.inc("max_message_bytes");
                    warn!(conn, %peer, limit = ctx.max_message_bytes, "message over max_message_bytes; closing");
                }
                return end;
            }
        };
        alive.store(true, Relaxed);
        match message {
            Message::Binary(frame) => {
                ctx.metrics.messages_in.fetch_add(1, Relaxed);
                // Token buckets: an over-eager peer is slowed down (we stop reading its socket,
                // which pushes back through TCP), never allowed to queue unbounded work.
                let now = std::time::Instant::now();
                let wait_messages = messages.take(1, now);
                let wait_bytes = bytes.take(frame.len() as u64, now);
                let wait = wait_messages.max(wait_bytes);
                if !wait.is_zero() {
                    let which = if wait_bytes > wait_messages {
                        limit::BYTES_PER_SECOND
                    } else {
                        limit::MESSAGES_PER_SECOND
                    };
                    ctx.metrics.limit_hits.inc(which);
                    if !throttled_before {
                        throttled_before = true;
                        warn!(conn, %peer, limit = which, wait_ms = wait.as_millis() as u64,
                            "limit hit: connection throttled (further throttling of it is counted, not logged)");
                    }
                    tokio::time::sleep(wait).await;
                }
                let input = Input::FrameReceived {
                    conn,
                    frame: Vec::from(frame),
                };
                if ctx.net_tx.send(HostInput::Engine(input)).await.is_err() {
                    return End::Close(shutdown_reason());
                }
            }
            Message::Text(_) => {
                return End::Close(reason(
                    CLOSE_UNSUPPORTED_DATA,
                    "text frames are not supported",
                ));
            }
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => return End::PeerClosed,
        }
    }
}

/// One place decides what a read error means for the peer.
fn read_error(e: axum::Error, limit: usize) -> End {
    let inner = e.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
            ..
        })) => End::Close(reason(
            CLOSE_MESSAGE_TOO_BIG,
            format!("message too large (limit {limit} bytes)"),
        )),
        Some(tungstenite::Error::Protocol(p)) => {
            End::Close(reason(CLOSE_PROTOCOL_ERROR, format!("protocol error: {p}")))
        }
        Some(tungstenite::Error::Utf8(_)) => {
            End::Close(reason(1007, "invalid UTF-8 in a text or close frame"))
        }
        _ => End::Failed(inner.to_string()),
    }
}

async fn write_loop(
    sink: &mut SplitSink<WebSocket, Message>,
    out_rx: &mut mpsc::Receiver<Vec<u8>>,
    close_rx: &mut oneshot::Receiver<CloseReason>,
    ctx: &WsContext,
    alive: &AtomicBool,
) -> End {
    let metrics = &ctx.metrics;
    let every = ctx.ping_interval;
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            close = &mut *close_rx => {
                // Everything the engine queued before the close goes out first.
                while let Ok(frame) = out_rx.try_recv() {
                    if let Err(end) = send(sink, Message::Binary(Bytes::from(frame)), metrics).await {
                        return end;
                    }
                }
                return End::Close(close.unwrap_or_else(|_| shutdown_reason()));
            }
            frame = out_rx.recv() => {
                let Some(frame) = frame else { return End::Close(shutdown_reason()) };
                // Everything already queued goes out with this frame in one flush (one write
                // syscall for a burst instead of one per frame).
                if let Err(end) = send_batch(sink, frame, out_rx, metrics).await {
                    return end;
                }
            }
            _ = ping.tick() => {
                if !alive.swap(false, Relaxed) {
                    return End::Close(reason(CLOSE_POLICY, "keep-alive timeout: no pong"));
                }
                if let Err(end) = send(sink, Message::Ping(Bytes::new()), metrics).await {
                    return end;
                }
            }
        }
    }
}

/// Most frames taken from the queue per flush.
const MAX_BATCH: usize = 64;

/// Feeds `first` and whatever else is queued (up to [`MAX_BATCH`]) into the socket, then flushes
/// once, all within [`SEND_TIMEOUT`].
async fn send_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    first: Vec<u8>,
    out_rx: &mut mpsc::Receiver<Vec<u8>>,
    metrics: &Metrics,
) -> Result<(), End> {
    let batch = async {
        let mut n = 1u64;
        sink.feed(Message::Binary(Bytes::from(first))).await?;
        while n < MAX_BATCH as u64 {
            let Ok(frame) = out_rx.try_recv() else { break };
            sink.feed(Message::Binary(Bytes::from(frame))).await?;
            n += 1;
        }
        sink.flush().await?;
        Ok::<u64, axum::Error>(n)
    };
    match tokio::time::timeout(SEND_TIMEOUT, batch).await {
        Ok(Ok(n)) => {
            metrics.messages_out.fetch_add(n, Relaxed);
            Ok(())
        }
        Ok(Err(e)) => Err(End::Failed(e.to_string())),
        Err(_) => Err(End::Failed(format!(
            "send timed out after {SEND_TIMEOUT:?}"
        ))),
    }
}

async fn send(
    sink: &mut SplitSink<WebSocket, Message>,
    message: Message,
    metrics: &Metrics,
) -> Result<(), End> {
    let binary = matches!(message, Message::Binary(_));
    match tokio::time::timeout(SEND_TIMEOUT, sink.send(message)).await {
        Ok(Ok(())) => {
            if binary {
                metrics.messages_out.fetch_add(1, Relaxed);
            }
            Ok(())
        }
        Ok(Err(e)) => Err(End::Failed(e.to_string())),
        Err(_) => Err(End::Failed(format!(
            "send timed out after {SEND_TIMEOUT:?}"
        ))),
    }
}

/// Ends the socket politely where possible: our close frame, then wait for the peer's.
async fn finish(
    sink: &mut SplitSink<WebSocket, Message>,
    stream: &mut SplitStream<WebSocket>,
    end: End,
) {
    match end {
        End::Gone => return,
        End::Failed(error) => {
            debug!(%error, "socket failed; dropping it");
            return;
        }
        End::PeerClosed => {}
        End::Close(close) => {
            let frame = CloseFrame {
                code: close.code,
                reason: truncate_reason(&close.reason).into(),
            };
            let sent = tokio::time::timeout(
                CLOSE_HANDSHAKE_TIMEOUT,
                sink.send(Message::Close(Some(frame))),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                return;
            }
        }
    }
    // Reading on completes the close handshake (and flushes tungstenite's reply to a peer close).
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

/// Close reasons are limited to 123 bytes on the wire.
fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= 123 {
        return reason;
    }
    let mut end = 123;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}
