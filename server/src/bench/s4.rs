//! S4, restart and reconnect storm (`performance.md`), in two runs of the generator around a
//! server restart that the caller (`scripts/bench.sh`) does:
//!
//! 1. `--scenario s4-seed`: pushes `--small-docs` contact documents and `--large-docs` long-history
//!    text documents (`--large-ops` typed characters, one change per 10) to the server until each
//!    is acknowledged, and writes them to `--state-file` (one JSON line per document: id, kind,
//!    saved bytes).
//! 2. The caller restarts the server on the same data.
//! 3. `--scenario s4`: `--clients` clients, each up to date with `--docs-per-client` documents (one
//!    large document, shared by a tenth of the clients, and the rest small, each held by one client),
//!    connect at once, each with a fresh sync state per document as after a reconnect, and sync
//!    until the server's message reports heads equal to theirs. Reports the time until every
//!    document of every client is in sync, the protocol bytes per up-to-date document (both
//!    directions; small and large separately), and, where the server exposes
//!    `driftless_storage_loads_total` on `/metrics`, how many documents it loaded (only the
//!    requested ones should be).
//!
//! Byte counts are WebSocket payloads (the encoded protocol messages), without WebSocket or TCP
//! headers.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use automerge::sync::{self, SyncDoc as _};
use automerge::transaction::Transactable as _;
use automerge::{ActorId, Automerge, AutomergeError, ChangeHash, ObjType, ROOT};
use base64::Engine as _;
use driftless_client_protocol::{DocumentId, Message};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::client::Client;
use super::{
    BenchArgs, contact_doc, new_document_id, new_peer_id, percentile, process_cpu_seconds, round3,
};

/// One seeded document as the state file holds it.
#[derive(Clone)]
pub struct Seeded {
    pub id: DocumentId,
    pub large: bool,
    pub doc: Automerge,
}

/// A long-history text document: `ops` characters typed in changes of 10, by a fixed actor.
pub fn large_doc(n: u64, ops: usize) -> Result<Automerge, AutomergeError> {
    let mut actor = [0u8; 16];
    actor[..4].copy_from_slice(b"larg");
    actor[8..].copy_from_slice(&n.to_be_bytes());
    let mut doc = Automerge::new().with_actor(ActorId::from(&actor[..]));
    let text = doc
        .transact::<_, _, AutomergeError>(|tx| tx.put_object(ROOT, "text", ObjType::Text))
        .map_err(|f| f.error)?
        .result;
    let mut typed = 0;
    while typed < ops {
        let burst = (ops - typed).min(10);
        doc.transact::<_, _, AutomergeError>(|tx| {
            for i in 0..burst {
                let c = char::from(b'a' + ((typed + i) % 26) as u8);
                tx.splice_text(&text, typed + i, 0, &c.to_string())?;
            }
            Ok(())
        })
        .map_err(|f| f.error)?;
        typed += burst;
    }
    Ok(doc)
}

/// Which documents client `c` holds: one large one (shared by every `large`-th client) and the
/// rest small ones, each small one held by exactly one client. Indexes into the small and large
/// lists. Fails when there are not enough small documents.
pub fn assignment(
    clients: usize,
    per_client: usize,
    small: usize,
    large: usize,
) -> anyhow::Result<Vec<(Vec<usize>, Option<usize>)>> {
    let small_each = if large > 0 {
        per_client.saturating_sub(1)
    } else {
        per_client
    };
    if clients * small_each > small {
        bail!(
            "{clients} clients x {small_each} small documents need {} small documents; {small} seeded",
            clients * small_each
        );
    }
    Ok((0..clients)
        .map(|c| {
            let smalls = (c * small_each..(c + 1) * small_each).collect();
            let large = (large > 0 && per_client > 0).then(|| c % large);
            (smalls, large)
        })
        .collect())
}

fn write_state(path: &Path, docs: &[Seeded]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("creating the state file {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for d in docs {
        let line = json!({
            "id": d.id.to_string(),
            "large": d.large,
            "doc": base64::engine::general_purpose::STANDARD.encode(d.doc.save()),
        });
        writeln!(out, "{line}")?;
    }
    out.flush()
        .with_context(|| format!("writing the state file {}", path.display()))
}

fn read_state(path: &Path) -> anyhow::Result<Vec<Seeded>> {
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "opening the state file {} (run --scenario s4-seed first)",
            path.display()
        )
    })?;
    let mut docs = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        let what = || format!("state file {} line {}", path.display(), n + 1);
        let v: Value = serde_json::from_str(&line).with_context(what)?;
        let id = v["id"]
            .as_str()
            .with_context(what)?
            .parse::<DocumentId>()
            .map_err(|e| anyhow::anyhow!("{}: bad document id: {e}", what()))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["doc"].as_str().with_context(what)?)
            .with_context(what)?;
        docs.push(Seeded {
            id,
            large: v["large"].as_bool().unwrap_or(false),
            doc: Automerge::load(&bytes).with_context(what)?,
        });
    }
    Ok(docs)
}

fn sorted(mut heads: Vec<ChangeHash>) -> Vec<ChangeHash> {
    heads.sort();
    heads
}

/// Pushes `docs` over one connection, `window` at a time, until the server reports each one's
/// heads; `acked` counts progress.
pub(crate) async fn push(
    client: &mut Client,
    docs: &mut [Seeded],
    window: usize,
    timeout: Duration,
    acked: &mut usize,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut in_flight: HashMap<DocumentId, (usize, sync::State)> = HashMap::new();
    let mut next = 0;
    let mut done = 0;
    while done < docs.len() {
        while in_flight.len() < window.max(1) && next < docs.len() {
            let mut state = sync::State::new();
            if let Some(m) = docs[next].doc.generate_sync_message(&mut state) {
                client.send_sync(&docs[next].id, m.encode(), false)?;
            }
            in_flight.insert(docs[next].id.clone(), (next, state));
            next += 1;
        }
        let message = match tokio::time::timeout_at(deadline, client.recv()).await {
            Ok(m) => m?,
            Err(_) => bail!("timed out after {timeout:?}"),
        };
        match message {
            Message::Sync {
                document_id, data, ..
            } => {
                let Some((index, state)) = in_flight.get_mut(&document_id) else {
                    continue;
                };
                let doc = &mut docs[*index].doc;
                let m = sync::Message::decode(&data).context("bad sync message from server")?;
                doc.receive_sync_message(state, m)?;
                let ours = sorted(doc.get_heads());
                if state.their_heads.clone().map(sorted) == Some(ours) {
                    in_flight.remove(&document_id);
                    done += 1;
                    *acked += 1;
                } else if let Some(reply) = doc.generate_sync_message(state) {
                    client.send_sync(&document_id, reply.encode(), false)?;
                }
            }
            Message::DocUnavailable { document_id, .. } if in_flight.contains_key(&document_id) => {
                bail!("server sent doc-unavailable for {document_id} while we pushed it")
            }
            Message::Error { message, .. } => bail!("server error: {message}"),
            _ => {}
        }
    }
    Ok(())
}

/// `--scenario s4-seed`: creates and pushes the documents, writes the state file.
pub async fn seed(args: &BenchArgs, out: &mut Map<String, Value>) -> anyhow::Result<()> {
    let path = args
        .state_file
        .as_deref()
        .context("s4-seed needs --state-file")?;
    let timeout = args.phase_timeout();
    let built = Instant::now();
    let mut docs = Vec::with_capacity(args.small_docs + args.large_docs);
    for n in 0..args.large_docs {
        docs.push(Seeded {
            id: new_document_id(),
            large: true,
            doc: large_doc(n as u64, args.large_ops)?,
        });
    }
    for n in 0..args.small_docs {
        docs.push(Seeded {
            id: new_document_id(),
            large: false,
            doc: contact_doc(n as u64)?,
        });
    }
    out.insert(
        "build_s".into(),
        json!(round3(built.elapsed().as_secs_f64())),
    );
    let mut client = Client::connect(&args.url, new_peer_id("s4-seed"), timeout)
        .await
        .context("seed connect")?;
    let started = Instant::now();
    let mut acked = 0;
    let total = docs.len();
    // Large documents one at a time (each is one big message), then the small ones in a window.
    let (large, small) = docs.split_at_mut(args.large_docs);
    let result = async {
        push(&mut client, large, 1, timeout, &mut acked).await?;
        push(&mut client, small, args.window, timeout, &mut acked).await
    }
    .await;
    out.insert("seeded".into(), json!(acked));
    result.with_context(|| format!("seeding: {acked}/{total} acknowledged"))?;
    out.insert(
        "seed_s".into(),
        json!(round3(started.elapsed().as_secs_f64())),
    );
    write_state(path, &docs)?;
    out.insert("small_docs".into(), json!(args.small_docs));
    out.insert("large_docs".into(), json!(args.large_docs));
    out.insert("large_ops".into(), json!(args.large_ops));
    Ok(())
}

/// What one reconnecting client measured, per document.
struct DocResult {
    large: bool,
    synced_after: Duration,
    bytes_sent: u64,
    bytes_received: u64,
}

/// One reconnecting client: connect, one fresh sync per document, answer until every document's
/// heads are confirmed by the server.
async fn reconnect(
    url: &str,
    client_no: usize,
    mut docs: Vec<Seeded>,
    t0: Instant,
    deadline: tokio::time::Instant,
    progress: &std::cell::Cell<usize>,
) -> anyhow::Result<Vec<DocResult>> {
    let timeout = deadline.saturating_duration_since(tokio::time::Instant::now());
    let mut client = Client::connect(url, new_peer_id(&format!("s4-client{client_no}")), timeout)
        .await
        .with_context(|| format!("client {client_no} connect"))?;
    let index: HashMap<DocumentId, usize> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.clone(), i))
        .collect();
    let mut states: Vec<sync::State> = docs.iter().map(|_| sync::State::new()).collect();
    let mut results: Vec<DocResult> = docs
        .iter()
        .map(|d| DocResult {
            large: d.large,
            synced_after: Duration::ZERO,
            bytes_sent: 0,
            bytes_received: 0,
        })
        .collect();
    let mut synced = vec![false; docs.len()];
    for (i, d) in docs.iter_mut().enumerate() {
        if let Some(m) = d.doc.generate_sync_message(&mut states[i]) {
            let before = client.sent_bytes();
            client.send_sync(&d.id, m.encode(), false)?;
            results[i].bytes_sent += client.sent_bytes() - before;
        }
    }
    let mut remaining = docs.len();
    while remaining > 0 {
        let before = client.received_bytes();
        let message = match tokio::time::timeout_at(deadline, client.recv()).await {
            Ok(m) => m.with_context(|| format!("client {client_no}"))?,
            Err(_) => bail!("client {client_no}: {remaining} documents not in sync at the timeout"),
        };
        let size = client.received_bytes() - before;
        match message {
            Message::Sync {
                document_id, data, ..
            } => {
                let Some(&i) = index.get(&document_id) else {
                    continue;
                };
                results[i].bytes_received += size;
                let doc = &mut docs[i].doc;
                let m = sync::Message::decode(&data).context("bad sync message from server")?;
                doc.receive_sync_message(&mut states[i], m)?;
                if let Some(reply) = doc.generate_sync_message(&mut states[i]) {
                    let before = client.sent_bytes();
                    client.send_sync(&document_id, reply.encode(), false)?;
                    results[i].bytes_sent += client.sent_bytes() - before;
                }
                let ours = sorted(doc.get_heads());
                if !synced[i] && states[i].their_heads.clone().map(sorted) == Some(ours) {
                    synced[i] = true;
                    results[i].synced_after = t0.elapsed();
                    remaining -= 1;
                    progress.set(progress.get() + 1);
                }
            }
            Message::DocUnavailable { document_id, .. } => {
                bail!(
                    "client {client_no}: server says document {document_id} is unavailable after the restart"
                )
            }
            Message::Error { message, .. } => {
                bail!("client {client_no}: server error: {message}")
            }
            _ => {}
        }
    }
    Ok(results)
}

/// `driftless_storage_loads_total` from the server's `/metrics`, when it has one.
async fn storage_loads(url: &str) -> Option<f64> {
    let host = url.strip_prefix("ws://")?.split('/').next()?.to_owned();
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(&host).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix("driftless_storage_loads_total "))?
            .trim()
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
}

/// `--scenario s4`: the reconnect storm against a freshly restarted server.
pub async fn run(args: &BenchArgs, out: &mut Map<String, Value>) -> anyhow::Result<()> {
    let path = args
        .state_file
        .as_deref()
        .context("s4 needs --state-file")?;
    let seeded = read_state(path)?;
    let (large, small): (Vec<Seeded>, Vec<Seeded>) = seeded.into_iter().partition(|d| d.large);
    let plan = assignment(args.clients, args.docs_per_client, small.len(), large.len())?;
    // Every client's own copy of its documents, made before the clock starts.
    let per_client: Vec<Vec<Seeded>> = plan
        .iter()
        .map(|(smalls, l)| {
            l.iter()
                .map(|&l| large[l].clone())
                .chain(smalls.iter().map(|&s| small[s].clone()))
                .collect()
        })
        .collect();
    let requested = per_client.iter().flatten().map(|d| d.id.clone());
    let distinct: std::collections::HashSet<DocumentId> = requested.collect();
    let total_docs: usize = per_client.iter().map(Vec::len).sum();
    out.insert("clients".into(), json!(args.clients));
    out.insert("docs_per_client".into(), json!(args.docs_per_client));
    out.insert("stored_docs".into(), json!(small.len() + large.len()));
    out.insert("requested_docs".into(), json!(distinct.len()));

    let loads0 = storage_loads(&args.url).await;
    let cpu0 = args.server_pid.and_then(process_cpu_seconds);
    let progress = std::cell::Cell::new(0usize);
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + args.phase_timeout();
    let clients = per_client
        .into_iter()
        .enumerate()
        .map(|(c, docs)| reconnect(&args.url, c, docs, t0, deadline, &progress));
    // All on this thread, interleaved: the storm arrives at once.
    let results = futures::future::join_all(clients).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = args.server_pid.and_then(process_cpu_seconds);
    out.insert("docs_in_sync".into(), json!(progress.get()));
    let mut docs = Vec::with_capacity(total_docs);
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(d) => docs.extend(d),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if let Some(first) = errors.first() {
        bail!(
            "{}/{total_docs} documents in sync after {elapsed:.1} s; {} of {} clients failed, first: {first}",
            progress.get(),
            errors.len(),
            args.clients
        );
    }
    let all_synced = docs
        .iter()
        .map(|d| d.synced_after)
        .max()
        .unwrap_or_default();
    out.insert(
        "all_in_sync_s".into(),
        json!(round3(all_synced.as_secs_f64())),
    );
    let mut times: Vec<f64> = docs
        .iter()
        .map(|d| d.synced_after.as_secs_f64() * 1000.0)
        .collect();
    times.sort_by(f64::total_cmp);
    out.insert(
        "doc_sync_p50_ms".into(),
        json!(round3(percentile(&times, 0.5))),
    );
    out.insert(
        "doc_sync_p99_ms".into(),
        json!(round3(percentile(&times, 0.99))),
    );
    for (kind, is_large) in [("small", false), ("large", true)] {
        let mut bytes: Vec<f64> = docs
            .iter()
            .filter(|d| d.large == is_large)
            .map(|d| (d.bytes_sent + d.bytes_received) as f64)
            .collect();
        if bytes.is_empty() {
            continue;
        }
        bytes.sort_by(f64::total_cmp);
        let received: u64 = docs
            .iter()
            .filter(|d| d.large == is_large)
            .map(|d| d.bytes_received)
            .sum();
        out.insert(
            format!("{kind}_doc_bytes_p50"),
            json!(percentile(&bytes, 0.5)),
        );
        out.insert(
            format!("{kind}_doc_bytes_max"),
            json!(percentile(&bytes, 1.0)),
        );
        out.insert(
            format!("{kind}_doc_bytes_from_server_mean"),
            json!(round3(received as f64 / bytes.len() as f64)),
        );
    }
    if let (Some(a), Some(b)) = (loads0, storage_loads(&args.url).await) {
        out.insert("docs_loaded".into(), json!(b - a));
    }
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        out.insert("server_cpu_s".into(), json!(round3(b - a)));
    }
    if let Some(rss) = args.server_pid.and_then(super::s6::process_rss_kib) {
        out.insert("server_rss_kib".into(), json!(rss));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::ReadDoc as _;

    #[test]
    fn every_client_gets_one_large_and_its_own_small_documents() {
        let plan = assignment(200, 20, 10_000, 10).unwrap();
        assert_eq!(plan.len(), 200);
        let mut seen = std::collections::HashSet::new();
        for (c, (smalls, large)) in plan.iter().enumerate() {
            assert_eq!(smalls.len(), 19);
            assert_eq!(*large, Some(c % 10));
            for s in smalls {
                assert!(seen.insert(*s), "small document {s} held by two clients");
            }
        }
        assert_eq!(seen.len(), 3800);
        // Without large documents every slot is a small one.
        let plan = assignment(3, 4, 12, 0).unwrap();
        assert!(plan.iter().all(|(s, l)| s.len() == 4 && l.is_none()));
        // Too few small documents is an error, not a silent overlap.
        assert!(assignment(200, 20, 100, 10).is_err());
    }

    #[test]
    fn the_state_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s4.jsonl");
        let docs = vec![
            Seeded {
                id: new_document_id(),
                large: true,
                doc: large_doc(1, 30).unwrap(),
            },
            Seeded {
                id: new_document_id(),
                large: false,
                doc: contact_doc(2).unwrap(),
            },
        ];
        write_state(&path, &docs).unwrap();
        let back = read_state(&path).unwrap();
        assert_eq!(back.len(), 2);
        for (a, b) in docs.iter().zip(&back) {
            assert_eq!(a.id, b.id);
            assert_eq!(a.large, b.large);
            assert_eq!(a.doc.get_heads(), b.doc.get_heads());
        }
        assert!(read_state(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn large_docs_have_the_asked_history() {
        let doc = large_doc(1, 95).unwrap();
        let text = doc.get(ROOT, "text").unwrap().unwrap().1;
        assert_eq!(doc.text(&text).unwrap().len(), 95);
        // One change for the text object, then one per 10 characters.
        assert_eq!(doc.get_changes(&[]).len(), 1 + 10);
    }
}
