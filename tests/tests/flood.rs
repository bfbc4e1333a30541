//! Slowloris and flood against a live server: sockets that never join, peers that send far over
//! their rate, and a peer that never reads. Through all of it a control client keeps syncing, and
//! the server's memory stays bounded.
//!
//! Runs the real `driftless` binary (built by `scripts/test.sh`; `DRIFTLESS_BIN` overrides) so its
//! resident set size can be read from /proc without the test's own sockets in it, with small
//! `[limits]` from a TOML file. Loopback only; every phase has a deadline. The control client's
//! latency is printed, not asserted (`driftless bench` measures it properly).
//!
//! The join timeout is the engine's fixed 10 s (not configurable), so the slowloris phase takes
//! about 11 s; the flood and slow-reader phases run while those sockets wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT};
use driftless_client_protocol::{DocumentId, Message, PeerMetadata, encode};
use driftless_tests::process::{metric, rss_kib, spawn_server};
use driftless_tests::rust_client::RustClient;
use futures::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Sockets that connect and never join.
const IDLE_SOCKETS: usize = 200;
/// Peers that send frames as fast as TCP lets them.
const FLOODERS: usize = 4;
const MESSAGES_PER_SECOND: u32 = 100;
const OUTBOUND_QUEUE: usize = 16;
/// How much the server's RSS may grow over the whole run (see `rss_bound`).
const RSS_SLACK_KIB: u64 = 64 * 1024;

fn limit_hits(limit: &str) -> String {
    format!("driftless_limit_hits_total{{limit=\"{limit}\"}}")
}

fn join(peer: &str) -> Vec<u8> {
    encode(&Message::Join {
        sender_id: peer.to_owned(),
        supported_protocol_versions: Some(vec!["1".to_owned()]),
        peer_metadata: Some(PeerMetadata {
            storage_id: None,
            is_ephemeral: true,
        }),
    })
}

/// The control client: edits the shared document and waits for the server's acknowledgement, over
/// and over, until told to stop. Returns each round's latency.
async fn control_loop(
    mut client: RustClient,
    doc: DocumentId,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Duration>> {
    let mut latencies = Vec::new();
    let mut round = 0i64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let started = Instant::now();
        let d = &mut client.docs.get_mut(&doc).context("control doc")?.doc;
        d.put(ROOT, "control", round)?;
        client.flush_doc(&doc).await?;
        let deadline = started + Duration::from_secs(10);
        while !client.acknowledged(&doc) {
            ensure!(
                Instant::now() < deadline,
                "control round {round}: no acknowledgement within 10 s"
            );
            if let Some(Some(id)) = client.receive(Duration::from_millis(200)).await? {
                client.flush_doc(&id).await?;
            }
        }
        latencies.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(latencies)
}

/// Connects, never joins, reads until the server closes; returns the close code and reason.
async fn idle_socket(url: String) -> anyhow::Result<(u16, String, Duration)> {
    let started = Instant::now();
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
    // Reading answers the server's pings, so only the join timeout can close us.
    while let Some(frame) = ws.next().await {
        if let WsMessage::Close(Some(close)) = frame? {
            return Ok((
                u16::from(close.code),
                close.reason.to_string(),
                started.elapsed(),
            ));
        }
    }
    bail!("idle socket ended without a close frame")
}

/// Joins, then sends `type: "flood"` frames (ignored by the engine) as fast as the server lets it,
/// until `stop`. Returns how many frames it got out.
async fn flooder(url: String, n: usize, stop: Arc<AtomicBool>) -> anyhow::Result<u64> {
    let (ws, _) = tokio_tungstenite::connect_async(&url).await?;
    let (mut tx, mut rx) = ws.split();
    tx.send(WsMessage::binary(join(&format!("flooder-{n}"))))
        .await?;
    // Keep reading (pings, the peer message) so only the rate limit is in play.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    let frame = encode(&Message::Unknown {
        message_type: "flood".into(),
    });
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) {
        // A throttled server stops reading, so a send may wait for TCP; check `stop` regularly.
        match tokio::time::timeout(
            Duration::from_millis(200),
            tx.send(WsMessage::binary(frame.clone())),
        )
        .await
        {
            Ok(r) => {
                r?;
                sent += 1;
            }
            Err(_) => continue,
        }
    }
    reader.abort();
    Ok(sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_flood_and_slow_reader_leave_the_server_syncing_with_bounded_memory()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("driftless.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nmax_connections_per_ip = 1000\nmessages_per_second = {MESSAGES_PER_SECOND}\n\
             message_burst = {MESSAGES_PER_SECOND}\noutbound_queue = {OUTBOUND_QUEUE}\n"
        ),
    )?;
    let port = driftless_tests::process::free_port()?;
    let mut server = spawn_server(port, &dir.path().join("data"), Some(&config), "error").await?;
    let pid = server.id().context("server pid")?;
    let url = format!("ws://127.0.0.1:{port}");

    // The control client creates its document.
    let doc = DocumentId::generate(rand::random());
    let mut control = RustClient::connect(&url, "control").await?;
    let mut d = AutoCommit::new();
    d.put(ROOT, "title", "control")?;
    control.add(doc.clone(), d);
    control.sync_until_quiet(Duration::from_millis(300)).await?;
    ensure!(control.acknowledged(&doc), "control document acknowledged");
    let baseline = rss_kib(pid)?;
    let stop_control = Arc::new(AtomicBool::new(false));
    let control_task = tokio::spawn(control_loop(control, doc.clone(), stop_control.clone()));

    // (a) Slowloris: sockets that never join.
    let idle: Vec<_> = (0..IDLE_SOCKETS)
        .map(|_| tokio::spawn(idle_socket(url.clone())))
        .collect();
    let mut connections = 0.0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        connections = metric(port, "driftless_connections").await?;
        if connections > IDLE_SOCKETS as f64 {
            break;
        }
    }
    ensure!(
        connections >= IDLE_SOCKETS as f64,
        "{connections} connections open; expected the {IDLE_SOCKETS} idle sockets and the control"
    );
    let mut peak = rss_kib(pid)?;

    // (b) Flood: peers far over messages_per_second, while the idle sockets wait.
    let read_before = metric(port, "driftless_messages_in_total").await?;
    let flood_started = Instant::now();
    let stop_flood = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..FLOODERS)
        .map(|n| tokio::spawn(flooder(url.clone(), n, stop_flood.clone())))
        .collect();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        peak = peak.max(rss_kib(pid)?);
    }
    let throttled = metric(port, &limit_hits("messages_per_second")).await?;
    stop_flood.store(true, Ordering::Relaxed);
    let mut flooded = 0;
    for f in flooders {
        flooded += f.await??;
    }
    ensure!(
        throttled > 0.0,
        "flooders sent {flooded} frames in 3 s at a limit of {MESSAGES_PER_SECOND}/s but no \
         messages_per_second limit hit was counted"
    );
    // Throttled, not queued: the server read about rate × time + burst of them per flooder (the
    // rest waits in the kernel's socket buffers), plus the control client's few frames.
    let read = metric(port, "driftless_messages_in_total").await? - read_before;
    let secs = flood_started.elapsed().as_secs_f64() + 1.0;
    let allowed = FLOODERS as f64 * (f64::from(MESSAGES_PER_SECOND) * (secs + 1.0)) + 500.0;
    eprintln!(
        "flood: {FLOODERS} flooders wrote {flooded} frames in {secs:.1} s; the server read {read} \
         frames (allowed {allowed:.0}), {throttled} throttle hits"
    );
    ensure!(
        read <= allowed,
        "the server read {read} frames during the flood; the rate limit allows about {allowed:.0}"
    );

    // (c) A peer that never reads while a writer pushes changes to a document they share (not the
    // control's, so the control's acknowledgements stay easy to see).
    let shared = DocumentId::generate(rand::random());
    let mut pusher = RustClient::connect(&url, "pusher").await?;
    let mut d = AutoCommit::new();
    d.put(ROOT, "title", "pushed")?;
    pusher.add(shared.clone(), d);
    pusher.sync_until_quiet(Duration::from_millis(300)).await?;
    ensure!(pusher.acknowledged(&shared), "pushed document acknowledged");
    let socket = tokio::net::TcpSocket::new_v4()?;
    // A small receive window fills the path quickly; the server's bounded queue must then overflow.
    socket.set_recv_buffer_size(4096)?;
    let stream = socket.connect(([127, 0, 0, 1], port).into()).await?;
    let (mut slow, _) = tokio_tungstenite::client_async(url.as_str(), stream).await?;
    slow.send(WsMessage::binary(join("slow-reader"))).await?;
    // Read the peer message, ask for the shared document, then never read again.
    tokio::time::timeout(Duration::from_secs(5), slow.next())
        .await
        .context("no peer message for the slow reader")?;
    let mut want = AutoCommit::new();
    let request = want
        .sync()
        .generate_sync_message(&mut sync::State::new())
        .context("request message")?;
    slow.send(WsMessage::binary(encode(&Message::Request {
        sender_id: "slow-reader".into(),
        target_id: "server".into(),
        document_id: shared.clone(),
        data: request.encode(),
    })))
    .await?;
    let started = Instant::now();
    let mut pushes = 0;
    let overflowed = loop {
        if metric(port, &limit_hits("outbound_queue")).await? >= 1.0 {
            break true;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
        // 8 KiB of incompressible text per change.
        let text: String = (0..8192)
            .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
            .collect();
        let d = &mut pusher.docs.get_mut(&shared).context("pusher doc")?.doc;
        d.put(ROOT, "payload", text)?;
        pusher.flush_doc(&shared).await?;
        while pusher.receive(Duration::from_millis(5)).await?.is_some() {}
        pushes += 1;
    };
    ensure!(
        overflowed,
        "a peer that never reads was not closed as a slow reader after {pushes} pushes in 20 s"
    );
    eprintln!(
        "slow reader: closed after {pushes} pushes of 8 KiB in {:?}",
        started.elapsed()
    );
    drop(slow);
    drop(pusher);
    peak = peak.max(rss_kib(pid)?);

    // (a) again: every idle socket was closed by the join timeout (10 s).
    let mut closes = Vec::new();
    for task in idle {
        let result = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .context("an idle socket was not closed within 20 s")??;
        closes.push(result?);
    }
    for (code, reason, after) in &closes {
        ensure!(
            *code == u16::from(CloseCode::Policy) && reason.contains("no join"),
            "idle socket closed with {code} {reason:?} after {after:?}; expected 1008 no join"
        );
    }

    stop_control.store(true, Ordering::Relaxed);
    let mut latencies = control_task.await??;
    ensure!(
        latencies.len() >= 20,
        "the control client completed only {} rounds",
        latencies.len()
    );
    latencies.sort();
    eprintln!(
        "control: {} rounds under flood, median {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies.last().copied().unwrap_or_default()
    );

    // Everything is closed again (the control client's socket went with its task).
    let mut open = f64::MAX;
    for _ in 0..40 {
        open = metric(port, "driftless_connections").await?;
        if open == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(open == 0.0, "{open} connections still open after the flood");
    let after = rss_kib(pid)?;
    peak = peak.max(after);
    eprintln!("server RSS (KiB): baseline {baseline}, peak {peak}, after {after}");
    // The bound: what the server holds per connection is bounded (an outbound queue of
    // OUTBOUND_QUEUE frames, tungstenite's buffers, one slot in a bounded input channel; about
    // 180 KiB per connection measured here, so ~36 MiB for the 200 idle sockets), throttled
    // frames wait in the kernel's socket buffers rather than in the server, and the shared document
    // grew by at most 20 s of 8 KiB changes. 64 MiB over the baseline covers that with room for
    // allocator slack; an unbounded queue of the flood (hundreds of thousands of frames written)
    // or leaked connections would blow through it.
    ensure!(
        peak < baseline + RSS_SLACK_KIB,
        "server RSS peaked at {peak} KiB from a baseline of {baseline} KiB"
    );
    // Once the connections are gone, so is their memory (allocator slack aside).
    ensure!(
        after < baseline + RSS_SLACK_KIB / 2,
        "server RSS stayed at {after} KiB after the flood from a baseline of {baseline} KiB"
    );
    server.kill().await?;
    Ok(())
}
