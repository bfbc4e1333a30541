//! S1, bulk small docs: create N documents over one connection (a window in flight), then fetch
//! them all from a fresh client.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context as _, bail};
use automerge::sync::{self, SyncDoc as _};
use automerge::{Automerge, ChangeHash};
use driftless_client_protocol::{DocumentId, Message};
use serde_json::{Map, Value, json};

use super::client::Client;
use super::{BenchArgs, contact_doc, new_document_id, new_peer_id, process_cpu_seconds, round3};

/// One document being synced with the server.
struct InFlight {
    index: usize,
    doc: Automerge,
    state: sync::State,
}

/// Runs S1 and fills `out`.
pub async fn run(args: &BenchArgs, out: &mut Map<String, Value>) -> anyhow::Result<()> {
    let timeout = args.phase_timeout();
    let cpu = || args.server_pid.and_then(process_cpu_seconds);

    let creator = Client::connect(&args.url, new_peer_id("s1-creator"), timeout)
        .await
        .context("creator connect")?;
    let mut creator = creator;
    if args.warmup_docs > 0 {
        let mut progress = 0;
        create(
            &mut creator,
            1_000_000,
            args.warmup_docs,
            args.window,
            timeout,
            &mut progress,
        )
        .await
        .context("warm-up")?;
    }

    let cpu0 = cpu();
    let start = Instant::now();
    let mut acked = 0;
    let created = create(&mut creator, 0, args.docs, args.window, timeout, &mut acked).await;
    let ack_s = start.elapsed().as_secs_f64();
    out.insert("acked".into(), json!(acked));
    let created = created.with_context(|| {
        format!(
            "create phase: {acked}/{} acknowledged after {ack_s:.1} s ({:.0} docs/s)",
            args.docs,
            acked as f64 / ack_s
        )
    })?;
    let cpu1 = cpu();
    out.insert("ack_s".into(), json!(round3(ack_s)));
    out.insert(
        "ack_docs_per_s".into(),
        json!(round3(args.docs as f64 / ack_s)),
    );
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        out.insert("ack_server_cpu_s".into(), json!(round3(b - a)));
    }

    let mut fetcher = Client::connect(&args.url, new_peer_id("s1-fetcher"), timeout)
        .await
        .context("fetcher connect")?;
    let start = Instant::now();
    let mut fetched = 0;
    let result = fetch(&mut fetcher, &created, args.window, timeout, &mut fetched).await;
    let fetch_s = start.elapsed().as_secs_f64();
    out.insert("fetched".into(), json!(fetched));
    result.with_context(|| {
        format!(
            "fetch phase: {fetched}/{} fetched after {fetch_s:.1} s ({:.0} docs/s)",
            args.docs,
            fetched as f64 / fetch_s
        )
    })?;
    let cpu2 = cpu();
    out.insert("fetch_s".into(), json!(round3(fetch_s)));
    out.insert(
        "fetch_docs_per_s".into(),
        json!(round3(args.docs as f64 / fetch_s)),
    );
    if let (Some(a), Some(b)) = (cpu1, cpu2) {
        out.insert("fetch_server_cpu_s".into(), json!(round3(b - a)));
    }
    Ok(())
}

/// Creates `n` contact documents (actors derived from `first..first+n`) and syncs each until the
/// server reports our heads. Returns each document's id and heads; `acked` counts progress.
async fn create(
    client: &mut Client,
    first: u64,
    n: usize,
    window: usize,
    timeout: std::time::Duration,
    acked: &mut usize,
) -> anyhow::Result<Vec<(DocumentId, Vec<ChangeHash>)>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut done: Vec<Option<(DocumentId, Vec<ChangeHash>)>> = vec![None; n];
    let mut in_flight: HashMap<DocumentId, InFlight> = HashMap::new();
    let mut next = 0;
    while *acked < n {
        while in_flight.len() < window.max(1) && next < n {
            let doc = contact_doc(first + next as u64)?;
            let mut state = sync::State::new();
            let id = new_document_id();
            if let Some(message) = doc.generate_sync_message(&mut state) {
                client.send_sync(&id, message.encode(), false)?;
            }
            in_flight.insert(
                id,
                InFlight {
                    index: next,
                    doc,
                    state,
                },
            );
            next += 1;
        }
        let message = match tokio::time::timeout_at(deadline, client.recv()).await {
            Ok(message) => message?,
            Err(_) => bail!("timed out after {timeout:?}"),
        };
        match message {
            Message::Sync {
                document_id, data, ..
            } => {
                let Some(f) = in_flight.get_mut(&document_id) else {
                    continue;
                };
                let m = sync::Message::decode(&data).context("bad sync message from server")?;
                f.doc.receive_sync_message(&mut f.state, m)?;
                let heads = f.doc.get_heads();
                if f.state.their_heads.as_ref() == Some(&heads) {
                    let index = f.index;
                    in_flight.remove(&document_id);
                    done[index] = Some((document_id, heads));
                    *acked += 1;
                } else if let Some(reply) = f.doc.generate_sync_message(&mut f.state) {
                    client.send_sync(&document_id, reply.encode(), false)?;
                }
            }
            Message::DocUnavailable { document_id, .. } if in_flight.contains_key(&document_id) => {
                bail!("server sent doc-unavailable for {document_id} while we pushed it");
            }
            Message::Error { message, .. } => bail!("server error: {message}"),
            _ => {}
        }
    }
    Ok(done.into_iter().flatten().collect())
}

/// Requests every document from a fresh client until each holds the creator's heads.
async fn fetch(
    client: &mut Client,
    docs: &[(DocumentId, Vec<ChangeHash>)],
    window: usize,
    timeout: std::time::Duration,
    fetched: &mut usize,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut in_flight: HashMap<DocumentId, InFlight> = HashMap::new();
    let mut next = 0;
    while *fetched < docs.len() {
        while in_flight.len() < window.max(1) && next < docs.len() {
            let doc = Automerge::new();
            let mut state = sync::State::new();
            let id = &docs[next].0;
            if let Some(message) = doc.generate_sync_message(&mut state) {
                client.send_sync(id, message.encode(), true)?;
            }
            in_flight.insert(
                id.clone(),
                InFlight {
                    index: next,
                    doc,
                    state,
                },
            );
            next += 1;
        }
        let message = match tokio::time::timeout_at(deadline, client.recv()).await {
            Ok(message) => message?,
            Err(_) => bail!("timed out after {timeout:?}"),
        };
        match message {
            Message::Sync {
                document_id, data, ..
            } => {
                let Some(f) = in_flight.get_mut(&document_id) else {
                    continue;
                };
                let m = sync::Message::decode(&data).context("bad sync message from server")?;
                f.doc.receive_sync_message(&mut f.state, m)?;
                // Answer like a real client would (it tells the server what we now hold).
                if let Some(reply) = f.doc.generate_sync_message(&mut f.state) {
                    client.send_sync(&document_id, reply.encode(), false)?;
                }
                if f.doc.get_heads() == docs[f.index].1 {
                    in_flight.remove(&document_id);
                    *fetched += 1;
                }
            }
            Message::DocUnavailable { document_id, .. } if in_flight.contains_key(&document_id) => {
                bail!("server says acknowledged document {document_id} is unavailable");
            }
            Message::Error { message, .. } => bail!("server error: {message}"),
            _ => {}
        }
    }
    Ok(())
}
