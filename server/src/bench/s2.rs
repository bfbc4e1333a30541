//! S2, live fan-out: one writer, R readers on one document, small edits one at a time; per edit
//! the time from the writer's commit to the last reader having applied it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use automerge::sync::{self, SyncDoc as _};
use automerge::transaction::Transactable as _;
use automerge::{Automerge, AutomergeError, ChangeHash, ROOT};
use driftless_client_protocol::{DocumentId, Message};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::client::Client;
use super::{
    BenchArgs, contact_doc, new_document_id, new_peer_id, percentile, process_cpu_seconds, round3,
};

/// What reader tasks tell the coordinator.
enum Event {
    /// Reader `reader` holds `heads` since `at` (taken right after applying a sync message), which
    /// arrived at `arrived` (taken when the frame came off the socket, before decoding it).
    Heads {
        reader: usize,
        heads: Vec<ChangeHash>,
        arrived: Instant,
        at: Instant,
        /// Time this reader spent decoding and applying the message (generator-side cost).
        apply: Duration,
    },
    Failed {
        reader: usize,
        error: anyhow::Error,
    },
}

/// Runs S2 and fills `out`.
pub async fn run(args: &BenchArgs, out: &mut Map<String, Value>) -> anyhow::Result<()> {
    let timeout = args.phase_timeout();
    let mut writer = Client::connect(&args.url, new_peer_id("s2-writer"), timeout)
        .await
        .context("writer connect")?;
    let id = new_document_id();
    let mut doc = contact_doc(7)?;
    let mut state = sync::State::new();

    // Phase 1: the writer pushes the document until the server acknowledges it.
    if let Some(m) = doc.generate_sync_message(&mut state) {
        writer.send_sync(&id, m.encode(), false)?;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    while state.their_heads.as_ref() != Some(&doc.get_heads()) {
        let message = recv_until(&mut writer, deadline)
            .await
            .context("creating the document")?;
        writer_handle(&writer, &id, &mut doc, &mut state, message)?;
    }

    // Phase 2: readers connect, request the document and sync until they hold it.
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut readers = JoinSet::new();
    for reader in 0..args.readers {
        let url = args.url.clone();
        let tx = events_tx.clone();
        let id = id.clone();
        readers.spawn(async move {
            if let Err(error) = read_loop(reader, &url, &id, timeout, &tx).await {
                let _ = tx.send(Event::Failed { reader, error });
            }
        });
    }
    drop(events_tx);
    let mut latest: Vec<Vec<ChangeHash>> = vec![Vec::new(); args.readers];
    let target = doc.get_heads();
    let deadline = tokio::time::Instant::now() + timeout;
    while latest.iter().any(|h| *h != target) {
        let have = latest.iter().filter(|h| **h == target).count();
        tokio::select! {
            message = recv_until(&mut writer, deadline) => {
                let message = message.context("readers joining")?;
                writer_handle(&writer, &id, &mut doc, &mut state, message)?;
            }
            event = next_event(&mut events, deadline) => {
                match event.with_context(|| format!("readers joining: {have}/{} hold the document", args.readers))? {
                    Event::Heads { reader, heads, .. } => latest[reader] = heads,
                    Event::Failed { reader, error } => {
                        return Err(error.context(format!("reader {reader} while joining")));
                    }
                }
            }
        }
    }

    // Phase 3: edits.
    let interval = Duration::from_millis(args.edit_interval_ms);
    let total = args.warmup_edits + args.edits;
    // Per edit: until the last reader received the frame that brought it (arrival), and until the
    // last reader had applied it (apply-inclusive).
    let mut arrival_ms = Vec::with_capacity(args.edits);
    let mut latencies_ms = Vec::with_capacity(args.edits);
    // Per edit, the readers' summed decode+apply time: the generator's own serial share.
    let mut apply_ms = Vec::with_capacity(args.edits);
    let mut cpu0 = None;
    let mut measured_since = None;
    let mut last_start: Option<tokio::time::Instant> = None;
    for edit in 0..total {
        if edit == args.warmup_edits {
            cpu0 = args.server_pid.and_then(process_cpu_seconds);
            measured_since = Some(Instant::now());
        }
        if let Some(t) = last_start {
            tokio::time::sleep_until(t + interval).await;
        }
        last_start = Some(tokio::time::Instant::now());
        doc.transact::<_, _, AutomergeError>(|tx| {
            tx.put(ROOT, "edit", edit as i64)?;
            Ok(())
        })
        .map_err(|f| f.error)?;
        let heads = doc.get_heads();
        let Some(hash) = heads.first().copied() else {
            bail!("document has no heads after an edit");
        };
        let t0 = Instant::now();
        if let Some(m) = doc.generate_sync_message(&mut state) {
            writer.send_sync(&id, m.encode(), false)?;
        }
        let mut waiting = latest.iter().filter(|h| !h.contains(&hash)).count();
        let mut last_at = t0;
        let mut last_arrived = t0;
        let mut apply_total = Duration::ZERO;
        let deadline = tokio::time::Instant::now() + timeout;
        while waiting > 0 {
            tokio::select! {
                message = recv_until(&mut writer, deadline) => {
                    let message = message.with_context(|| format!("edit {edit}"))?;
                    writer_handle(&writer, &id, &mut doc, &mut state, message)?;
                }
                event = next_event(&mut events, deadline) => {
                    match event.with_context(|| format!("edit {edit}: {waiting}/{} readers still waiting", args.readers))? {
                        Event::Heads { reader, heads, arrived, at, apply } => {
                            apply_total += apply;
                            let had = latest[reader].contains(&hash);
                            if !had && heads.contains(&hash) {
                                waiting -= 1;
                                last_at = last_at.max(at);
                                last_arrived = last_arrived.max(arrived);
                            }
                            latest[reader] = heads;
                        }
                        Event::Failed { reader, error } => {
                            return Err(error.context(format!("reader {reader} during edit {edit}")));
                        }
                    }
                }
            }
        }
        if edit >= args.warmup_edits {
            arrival_ms.push(last_arrived.duration_since(t0).as_secs_f64() * 1000.0);
            latencies_ms.push(last_at.duration_since(t0).as_secs_f64() * 1000.0);
            apply_ms.push(apply_total.as_secs_f64() * 1000.0);
        }
    }
    let elapsed = measured_since.map(|t| t.elapsed().as_secs_f64());
    let cpu1 = args.server_pid.and_then(process_cpu_seconds);
    readers.abort_all();

    // Headline: arrival-based (the server's fan-out latency); `applied_*`: including the
    // generator's own serial decode+apply of every reader.
    for (prefix, values) in [("", &mut arrival_ms), ("applied_", &mut latencies_ms)] {
        values.sort_by(f64::total_cmp);
        for (name, q) in [("p50_ms", 0.5), ("p99_ms", 0.99), ("max_ms", 1.0)] {
            out.insert(
                format!("{prefix}{name}"),
                json!(round3(percentile(values, q))),
            );
        }
    }
    apply_ms.sort_by(f64::total_cmp);
    out.insert(
        "generator_apply_ms_per_edit_p50".into(),
        json!(round3(percentile(&apply_ms, 0.5))),
    );
    if let Some(s) = elapsed {
        out.insert("edit_phase_s".into(), json!(round3(s)));
    }
    if let (Some(a), Some(b)) = (cpu0, cpu1)
        && args.edits > 0
    {
        out.insert(
            "server_cpu_ms_per_edit".into(),
            json!(round3((b - a) * 1000.0 / args.edits as f64)),
        );
    }
    Ok(())
}

async fn recv_until(
    client: &mut Client,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Message> {
    match tokio::time::timeout_at(deadline, client.recv()).await {
        Ok(m) => m,
        Err(_) => bail!("timed out"),
    }
}

async fn next_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    deadline: tokio::time::Instant,
) -> anyhow::Result<Event> {
    match tokio::time::timeout_at(deadline, events.recv()).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => bail!("all readers stopped"),
        Err(_) => bail!("timed out"),
    }
}

/// The writer's side of a message from the server: apply and answer.
fn writer_handle(
    writer: &Client,
    id: &DocumentId,
    doc: &mut Automerge,
    state: &mut sync::State,
    message: Message,
) -> anyhow::Result<()> {
    match message {
        Message::Sync {
            document_id, data, ..
        } if document_id == *id => {
            let m = sync::Message::decode(&data).context("bad sync message from server")?;
            doc.receive_sync_message(state, m)?;
            if let Some(reply) = doc.generate_sync_message(state) {
                writer.send_sync(id, reply.encode(), false)?;
            }
        }
        Message::Error { message, .. } => bail!("server error to the writer: {message}"),
        _ => {}
    }
    Ok(())
}

/// One reader: connect, request the document, then apply and answer every sync message,
/// reporting its heads after each.
async fn read_loop(
    reader: usize,
    url: &str,
    id: &DocumentId,
    timeout: Duration,
    events: &mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let mut client =
        Client::connect(url, new_peer_id(&format!("s2-reader{reader}")), timeout).await?;
    let mut doc = Automerge::new();
    let mut state = sync::State::new();
    if let Some(m) = doc.generate_sync_message(&mut state) {
        client.send_sync(id, m.encode(), true)?;
    }
    loop {
        let (message, arrived) = client.recv_at().await?;
        match message {
            Message::Sync {
                document_id, data, ..
            } if document_id == *id => {
                // Let every other reader whose frame is already here take its arrival time before
                // this one spends generator CPU on applying (the runtime is single-threaded).
                tokio::task::yield_now().await;
                let started = Instant::now();
                let m = sync::Message::decode(&data).context("bad sync message from server")?;
                doc.receive_sync_message(&mut state, m)?;
                let at = Instant::now();
                let apply = at.duration_since(started);
                if let Some(reply) = doc.generate_sync_message(&mut state) {
                    client.send_sync(id, reply.encode(), false)?;
                }
                let heads = doc.get_heads();
                let event = Event::Heads {
                    reader,
                    heads,
                    arrived,
                    at,
                    apply,
                };
                if events.send(event).is_err() {
                    return Ok(());
                }
            }
            Message::DocUnavailable { .. } => bail!("server says the document is unavailable"),
            Message::Error { message, .. } => bail!("server error: {message}"),
            _ => {}
        }
    }
}
