//! S6, idle connections (`performance.md`): N WebSocket connections, each joined and holding one
//! small synced document, then left idle (the connection tasks keep reading, so the server's pings
//! are answered) for `--idle-s` seconds.
//!
//! Reports connections/s while opening them, the server's resident memory per connection
//! (`rss_per_connection_kib` = (RSS at the end of the idle period - RSS before connecting) / N, and
//! `rss_per_connection_connected_kib` the same 2 s after the last connection synced; from
//! `/proc/PID/status` when `--server-pid` is given), its CPU use while idle (percent of one core), and how many connections the server closed
//! while they were idle (a server that drops idle-but-answering peers fails the run).
//!
//! One process holds every client socket, so N stays under the file-descriptor limit of a process
//! (20k here: 15k is fine); `--source-addrs` spreads the connections over several loopback source
//! addresses so ephemeral ports never run out.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use automerge::sync::{State as SyncState, SyncDoc as _};
use driftless_client_protocol::{Message, PeerMetadata, decode, encode};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Map, Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{BenchArgs, contact_doc, new_document_id, new_peer_id, process_cpu_seconds, round3};

/// Resident memory of a process in KiB (`VmRSS`), from /proc/PID/status.
pub fn process_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The server's host and port from a `ws://host:port/...` URL.
fn server_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("ws://")
        .with_context(|| format!("S6 needs a ws:// URL, got {url}"))?;
    let host_port = rest.split('/').next().unwrap_or(rest);
    host_port
        .parse()
        .with_context(|| format!("S6 needs an IP:port in the URL, got {host_port}"))
}

/// Opens one connection from `source`, joins, syncs `docs` documents until the server has them, then
/// keeps reading (answering pings) until the server closes it. `ready` counts it once synced;
/// `closed` counts it if the server ends it.
#[allow(clippy::too_many_arguments)] // one spawned task's whole setup, each argument used once
async fn hold_one(
    url: String,
    server: SocketAddr,
    source: IpAddr,
    n: u64,
    docs: usize,
    timeout: Duration,
    ready: tokio::sync::mpsc::UnboundedSender<anyhow::Result<()>>,
    closed: Arc<AtomicUsize>,
) {
    let setup = async {
        let socket = TcpSocket::new_v4().context("socket")?;
        socket
            .bind(SocketAddr::new(source, 0))
            .with_context(|| format!("binding a client socket to {source}"))?;
        let stream = socket
            .connect(server)
            .await
            .with_context(|| format!("connecting to {server} from {source}"))?;
        stream.set_nodelay(true)?;
        let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
            .await
            .context("WebSocket handshake")?;
        let peer_id = new_peer_id("idle");
        let join = Message::Join {
            sender_id: peer_id.clone(),
            supported_protocol_versions: Some(vec!["1".into()]),
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        };
        ws.send(WsMessage::Binary(encode(&join).into())).await?;
        let server_id = loop {
            match ws.next().await {
                Some(Ok(WsMessage::Binary(b))) => match decode(&b)? {
                    Message::Peer { sender_id, .. } => break sender_id,
                    other => bail!("expected `peer`, got `{}`", other.type_name()),
                },
                Some(Ok(WsMessage::Close(_))) | None => bail!("closed during the handshake"),
                Some(Err(e)) => bail!("handshake failed: {e}"),
                Some(Ok(_)) => {}
            }
        };
        // Small documents, each synced until the server reports our heads.
        for d in 0..docs {
            let mut doc = contact_doc(n * 1000 + d as u64)?;
            let doc_id = new_document_id();
            let mut state = SyncState::new();
            let ours = doc.get_heads();
            loop {
                if let Some(m) = doc.generate_sync_message(&mut state) {
                    let msg = Message::Sync {
                        sender_id: peer_id.clone(),
                        target_id: server_id.clone(),
                        document_id: doc_id.clone(),
                        data: m.encode(),
                    };
                    ws.send(WsMessage::Binary(encode(&msg).into())).await?;
                }
                match ws.next().await {
                    Some(Ok(WsMessage::Binary(b))) => {
                        if let Message::Sync { data, .. } = decode(&b)? {
                            let m = automerge::sync::Message::decode(&data)?;
                            let mut heads = m.heads.clone();
                            heads.sort();
                            let mut want = ours.clone();
                            want.sort();
                            doc.receive_sync_message(&mut state, m)?;
                            if heads == want {
                                break;
                            }
                        }
                    }
                    Some(Ok(WsMessage::Close(_))) | None => bail!("closed while syncing"),
                    Some(Err(e)) => bail!("sync failed: {e}"),
                    Some(Ok(_)) => {}
                }
            }
        }
        anyhow::Ok(ws)
    };
    let mut ws = match tokio::time::timeout(timeout, setup).await {
        Ok(Ok(ws)) => {
            let _ = ready.send(Ok(()));
            ws
        }
        Ok(Err(e)) => {
            let _ = ready.send(Err(e));
            return;
        }
        Err(_) => {
            let _ = ready.send(Err(anyhow::anyhow!(
                "connection {n}: not synced within {timeout:?}"
            )));
            return;
        }
    };
    // Idle: reading drives tungstenite's automatic pong to the server's pings.
    loop {
        match ws.next().await {
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Some(Ok(_)) => {}
        }
    }
}

pub async fn run(args: &BenchArgs, out: &mut Map<String, Value>) -> anyhow::Result<()> {
    let server = server_addr(&args.url)?;
    let sources: Vec<IpAddr> = args
        .source_addrs
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .with_context(|| format!("--source-addrs: {s:?} is not an IP address"))
        })
        .collect::<anyhow::Result<_>>()?;
    if sources.is_empty() {
        bail!("--source-addrs is empty");
    }
    let n = args.connections;
    let rss_before = args.server_pid.and_then(process_rss_kib);
    let closed = Arc::new(AtomicUsize::new(0));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();

    let started = Instant::now();
    let mut opened = 0usize;
    let mut done = 0usize;
    let mut in_flight = 0usize;
    while done < n {
        while in_flight < args.connect_parallel.max(1) && opened < n {
            tasks.spawn(hold_one(
                args.url.clone(),
                server,
                sources[opened % sources.len()],
                opened as u64,
                args.connection_docs,
                args.phase_timeout(),
                ready_tx.clone(),
                closed.clone(),
            ));
            opened += 1;
            in_flight += 1;
        }
        let result = tokio::time::timeout(args.phase_timeout(), ready_rx.recv())
            .await
            .with_context(|| format!("connect phase: {done}/{n} connections after a stall"))?
            .context("connection tasks ended")?;
        result.with_context(|| format!("connect phase: {done}/{n} connected"))?;
        done += 1;
        in_flight -= 1;
    }
    let connect_s = started.elapsed().as_secs_f64();
    out.insert("connections".into(), json!(n));
    out.insert("connect_s".into(), json!(round3(connect_s)));
    out.insert(
        "connections_per_s".into(),
        json!(round3(n as f64 / connect_s.max(1e-9))),
    );

    // Let the server settle (writes of the documents, buffers), then measure the idle period.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = args.server_pid.and_then(process_rss_kib);
    let cpu_before = args.server_pid.and_then(process_cpu_seconds);
    tokio::time::sleep(Duration::from_secs(args.idle_s)).await;
    let cpu_after = args.server_pid.and_then(process_cpu_seconds);
    let rss_idle = args.server_pid.and_then(process_rss_kib);
    out.insert("idle_s".into(), json!(args.idle_s));
    let per_connection =
        |rss: u64, before: u64| round3(rss.saturating_sub(before) as f64 / n.max(1) as f64);
    if let (Some(before), Some(with)) = (rss_before, rss_connected) {
        out.insert("server_rss_before_kib".into(), json!(before));
        out.insert("server_rss_connected_kib".into(), json!(with));
        out.insert(
            "rss_per_connection_connected_kib".into(),
            json!(per_connection(with, before)),
        );
    }
    if let Some(rss) = rss_idle {
        out.insert("server_rss_after_idle_kib".into(), json!(rss));
        // The headline: what an idle connection costs once the server has settled (a server may
        // drop idle documents from memory during the idle period).
        if let Some(before) = rss_before {
            out.insert(
                "rss_per_connection_kib".into(),
                json!(per_connection(rss, before)),
            );
        }
    }
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        out.insert(
            "idle_cpu_percent".into(),
            json!(round3((b - a) / args.idle_s.max(1) as f64 * 100.0)),
        );
    }
    let dropped = closed.load(Ordering::Relaxed);
    out.insert("closed_while_idle".into(), json!(dropped));
    tasks.abort_all();
    if dropped > 0 {
        bail!("the server closed {dropped} of {n} idle connections");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_rss_and_parses_urls() {
        assert!(process_rss_kib(std::process::id()).is_some_and(|k| k > 0));
        assert_eq!(
            server_addr("ws://127.0.0.1:3030/").unwrap(),
            "127.0.0.1:3030".parse().unwrap()
        );
        assert!(server_addr("wss://example.com").is_err());
        assert!(server_addr("ws://localhost:3030").is_err());
    }
}
