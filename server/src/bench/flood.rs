//! Flood (issue #5): S2's edit loop runs as a control client (one writer, `--readers` readers)
//! while `--flooders` connections send `sync` frames as fast as their sockets take them (far over
//! any per-connection rate limit) and `--idle` sockets complete the WebSocket handshake and never
//! send `join`. The result carries the control client's S2 figures (`p50_ms`, `p99_ms`, ...) and
//! what the flood did (`flood_frames` and `flood_frames_per_s` while the control client ran,
//! `flood_frames_total` including the ramp-up, idle sockets the server closed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use automerge::sync::{self, SyncDoc as _};
use driftless_client_protocol::{Message, PeerMetadata, decode, encode};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{BenchArgs, contact_doc, new_document_id, new_peer_id, round3, s2};

/// Frames a flooder queues before each flush.
const FLOOD_BATCH: usize = 32;
/// How long the flood runs before the control client starts.
const RAMP: Duration = Duration::from_millis(500);

/// Runs the flood scenario and fills `out`.
pub async fn run(args: &BenchArgs, out: &mut Map<String, Value>) -> anyhow::Result<()> {
    let sent = Arc::new(AtomicU64::new(0));
    let flooders_up = Arc::new(AtomicUsize::new(0));
    let idle_up = Arc::new(AtomicUsize::new(0));
    let idle_closed = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for i in 0..args.flooders {
        let url = args.url.clone();
        let (sent, up) = (sent.clone(), flooders_up.clone());
        tasks.spawn(async move {
            // A flooder that fails (e.g. the server closes it) just stops flooding.
            let _ = flood_loop(i, &url, &sent, &up).await;
        });
    }
    for _ in 0..args.idle {
        let url = args.url.clone();
        let (up, closed) = (idle_up.clone(), idle_closed.clone());
        tasks.spawn(async move {
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
                return;
            };
            up.fetch_add(1, Relaxed);
            // Never join; read only to notice the server closing us.
            while let Some(Ok(_)) = ws.next().await {}
            closed.fetch_add(1, Relaxed);
        });
    }
    tokio::time::sleep(RAMP).await;
    let started = Instant::now();
    let sent0 = sent.load(Relaxed);
    let control = s2::run(args, out).await;
    let elapsed = started.elapsed().as_secs_f64();
    let frames = sent.load(Relaxed) - sent0;
    tasks.abort_all();
    out.insert("flooders_joined".into(), json!(flooders_up.load(Relaxed)));
    out.insert("flood_frames".into(), json!(frames));
    out.insert("flood_frames_total".into(), json!(sent.load(Relaxed)));
    out.insert(
        "flood_frames_per_s".into(),
        json!(round3(frames as f64 / elapsed.max(1e-9))),
    );
    out.insert("idle_connected".into(), json!(idle_up.load(Relaxed)));
    out.insert(
        "idle_closed_by_server".into(),
        json!(idle_closed.load(Relaxed)),
    );
    control.context("control client")
}

/// One flooder: join, then send the same `sync` for its own document as fast as the socket takes
/// it, discarding whatever the server answers.
async fn flood_loop(
    index: usize,
    url: &str,
    sent: &AtomicU64,
    up: &AtomicUsize,
) -> anyhow::Result<()> {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    let (mut sink, mut inbox) = ws.split();
    let peer_id = new_peer_id(&format!("flood{index}"));
    let join = Message::Join {
        sender_id: peer_id.clone(),
        supported_protocol_versions: Some(vec!["1".into()]),
        peer_metadata: Some(PeerMetadata {
            storage_id: None,
            is_ephemeral: true,
        }),
    };
    sink.send(WsMessage::Binary(encode(&join).into())).await?;
    let server_id = loop {
        match inbox.next().await {
            Some(Ok(WsMessage::Binary(b))) => {
                if let Ok(Message::Peer { sender_id, .. }) = decode(&b) {
                    break sender_id;
                }
            }
            Some(Ok(_)) => {}
            _ => anyhow::bail!("flooder {index}: no `peer`"),
        }
    };
    up.fetch_add(1, Relaxed);
    // Drain the server's answers so its outbound queue for us does not fill up.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = inbox.next().await {} });
    let doc = contact_doc(1_000 + index as u64)?;
    let data = doc
        .generate_sync_message(&mut sync::State::new())
        .map(|m| m.encode())
        .unwrap_or_default();
    let frame = encode(&Message::Sync {
        sender_id: peer_id,
        target_id: server_id,
        document_id: new_document_id(),
        data,
    });
    let result: Result<(), tokio_tungstenite::tungstenite::Error> = async {
        loop {
            for _ in 0..FLOOD_BATCH {
                sink.feed(WsMessage::Binary(frame.clone().into())).await?;
                sent.fetch_add(1, Relaxed);
            }
            sink.flush().await?;
        }
    }
    .await;
    drain.abort();
    Ok(result?)
}
