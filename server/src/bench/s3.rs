//! S3, hot long-history document (`performance.md`): one document of `--s3-ops` typed characters
//! (one change each, like the automerge-perf editing trace), then typists typing 6 characters per
//! second each into it with 4 readers per typist; the typist count goes through `--typists` step
//! by step, `--step-s` seconds each, until a step's p99 exceeds 250 ms.
//!
//! **How the generator stays cheap.** Applying one remote change to a 260k-operation document costs
//! ~14 ms, so the generator cannot hold a real replica per typist and reader. Instead:
//! - One *editor* document in the generator holds everything: every keystroke is a local change on
//!   it (with the typist's own actor), so the history is linear, as when every typist sees the
//!   others' text; the typist's connection sends that change.
//! - Typists and readers are light protocol clients: they send well-formed sync messages whose
//!   heads and `have` say what the editor holds (true: every change the server has came from the
//!   editor), acknowledge every server message by echoing its heads, and never apply anything. The
//!   server does all its real work (apply, persist, generate one message per peer); the peers'
//!   acknowledgements are as cheap as possible.
//! - A keystroke has reached a reader when the reader gets a sync message whose heads contain that
//!   keystroke or a later one (the history is linear, so later heads imply it).
//!
//! Latency of a keystroke: from the editor's commit to the last of its typist's 4 readers having
//! received it (arrival, before decoding). Keystrokes in the first second of a step are warm-up.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use automerge::sync::{self, BloomFilter, ChunkList, Have, MessageVersion};
use automerge::transaction::Transactable as _;
use automerge::{ActorId, Automerge, AutomergeError, ChangeHash, ObjId, ObjType, ROOT};
use driftless_client_protocol::{DocumentId, Message};
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use super::client::Client;
use super::s4::{Seeded, push};
use super::{BenchArgs, new_document_id, new_peer_id, percentile, process_cpu_seconds, round3};

/// Keystrokes per second of one typist.
pub const CHARS_PER_SECOND: f64 = 6.0;
/// Readers per typist.
pub const READERS_PER_TYPIST: usize = 4;
/// The latency a step may have at p99 and still count as sustained.
pub const P99_LIMIT_MS: f64 = 250.0;
/// Keystrokes in the first part of a step are not counted.
const WARMUP: Duration = Duration::from_secs(1);
/// After a step's last keystroke, how long readers may take before the rest count as lost.
const GRACE: Duration = Duration::from_secs(3);

/// The long-history text: `ops` characters, one change each.
pub fn long_history_doc(ops: usize) -> Result<(Automerge, ObjId), AutomergeError> {
    let mut doc = Automerge::new().with_actor(ActorId::from(&b"s3-trace-author!"[..]));
    let text = doc
        .transact::<_, _, AutomergeError>(|tx| tx.put_object(ROOT, "text", ObjType::Text))
        .map_err(|f| f.error)?
        .result;
    for i in 0..ops {
        let c = char::from(b'a' + (i % 26) as u8).to_string();
        // At the front: a position needs no walk through the text, so building stays linear.
        doc.transact::<_, _, AutomergeError>(|tx| tx.splice_text(&text, 0, 0, &c))
            .map_err(|f| f.error)?;
    }
    Ok((doc, text))
}

/// Where typist `i` of at most `max` types after `typed` keystrokes of each typist: typists are
/// spread evenly over the text and each one's insertions shift the regions after it.
pub fn cursor(base_len: usize, max: usize, i: usize, typed: &[usize]) -> usize {
    let offset = base_len * (i + 1) / (max + 1);
    offset + typed[..=i].iter().sum::<usize>()
}

/// The typist counts to try, parsed from "1 2 4 8" (spaces or commas), ascending.
pub fn parse_steps(s: &str) -> anyhow::Result<Vec<usize>> {
    let mut steps = s
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("--typists: {t:?} is not a positive number"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if steps.is_empty() {
        bail!("--typists is empty");
    }
    steps.sort_unstable();
    steps.dedup();
    Ok(steps)
}

/// A sync message that says "I hold `heads`" (and, with `changes`, "here are these").
fn light_message(heads: Vec<ChangeHash>, changes: Vec<Vec<u8>>) -> sync::Message {
    sync::Message {
        have: vec![Have {
            last_sync: heads.clone(),
            bloom: BloomFilter::default(),
        }],
        heads,
        need: Vec::new(),
        changes: ChunkList::from(changes),
        flags: None,
        version: MessageVersion::V1,
    }
}

/// What light clients tell the coordinator.
enum Event {
    /// Reader `reader` got a message with these heads at `at`.
    Heads {
        reader: usize,
        heads: Vec<ChangeHash>,
        at: Instant,
    },
    Failed {
        who: String,
        error: anyhow::Error,
    },
}

/// A light client's loop: sends what the coordinator hands it (typists), acknowledges every server
/// message by echoing its heads, and reports the heads (readers).
async fn light_client(
    mut client: Client,
    doc: DocumentId,
    reader: Option<usize>,
    mut keystrokes: mpsc::UnboundedReceiver<(Vec<ChangeHash>, Vec<u8>)>,
    events: mpsc::UnboundedSender<Event>,
) -> anyhow::Result<()> {
    let mut acked: Vec<ChangeHash> = Vec::new();
    loop {
        tokio::select! {
            k = keystrokes.recv() => {
                let Some((heads, change)) = k else { return Ok(()) };
                // Heads claimed: the editor's (it holds the acknowledged ones too).
                let m = light_message(heads, vec![change]);
                client.send_sync(&doc, m.encode(), false)?;
            }
            m = client.recv_at() => {
                let (message, at) = m?;
                match message {
                    Message::Sync { document_id, data, .. } if document_id == doc => {
                        let m = sync::Message::decode(&data).context("bad sync message from server")?;
                        let mut heads = m.heads;
                        heads.sort();
                        if heads != acked && !heads.is_empty() {
                            let reply = light_message(heads.clone(), Vec::new());
                            client.send_sync(&doc, reply.encode(), false)?;
                            acked = heads.clone();
                        }
                        if let Some(reader) = reader
                            && events.send(Event::Heads { reader, heads, at }).is_err()
                        {
                            return Ok(());
                        }
                    }
                    Message::DocUnavailable { .. } => bail!("server says the document is unavailable"),
                    Message::Error { message, .. } => bail!("server error: {message}"),
                    _ => {}
                }
            }
        }
    }
}

/// One keystroke being timed.
struct Keystroke {
    typist: usize,
    at: Instant,
    counted: bool,
    arrived: usize,
    last: Instant,
}

/// The coordinator's view of one step.
struct Step {
    typists: usize,
    latencies_ms: Vec<f64>,
    undelivered: usize,
    keystrokes: usize,
    server_cpu_s: Option<f64>,
}

/// Runs S3 and fills `out`.
pub async fn run(args: &BenchArgs, out: &mut Map<String, Value>) -> anyhow::Result<()> {
    let steps = parse_steps(&args.typists)?;
    let max = *steps.last().unwrap_or(&1);
    let timeout = args.phase_timeout();
    out.insert("s3_ops".into(), json!(args.s3_ops));
    let built = Instant::now();
    let (base, text) = long_history_doc(args.s3_ops)?;
    out.insert(
        "build_s".into(),
        json!(round3(built.elapsed().as_secs_f64())),
    );

    // Preload: push the document and wait for the acknowledgement.
    let doc_id = new_document_id();
    let mut seeder = Client::connect(&args.url, new_peer_id("s3-seed"), timeout)
        .await
        .context("seed connect")?;
    let mut seeded = [Seeded {
        id: doc_id.clone(),
        large: true,
        doc: base,
    }];
    let preload = Instant::now();
    let mut acked = 0;
    push(&mut seeder, &mut seeded, 1, timeout, &mut acked)
        .await
        .context("preloading the long-history document")?;
    out.insert(
        "preload_s".into(),
        json!(round3(preload.elapsed().as_secs_f64())),
    );
    drop(seeder);
    let [
        Seeded {
            doc: mut editor, ..
        },
    ] = seeded;
    let base_len = args.s3_ops;

    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let mut typist_tx: Vec<mpsc::UnboundedSender<(Vec<ChangeHash>, Vec<u8>)>> = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut typed: Vec<usize> = vec![0; max];
    let mut keystrokes: Vec<Keystroke> = Vec::new();
    let mut seq_of: HashMap<ChangeHash, usize> = HashMap::new();
    let mut reader_progress: Vec<usize> = Vec::new();
    let mut results: Vec<Step> = Vec::new();

    for &k in &steps {
        // Connect the new typists and their readers; each subscribes by saying what it holds.
        let heads = editor.get_heads();
        while typist_tx.len() < k {
            let t = typist_tx.len();
            for r in 0..READERS_PER_TYPIST {
                let reader = t * READERS_PER_TYPIST + r;
                let client = Client::connect(
                    &args.url,
                    new_peer_id(&format!("s3-reader{reader}")),
                    timeout,
                )
                .await
                .with_context(|| format!("reader {reader} connect"))?;
                client.send_sync(
                    &doc_id,
                    light_message(heads.clone(), Vec::new()).encode(),
                    false,
                )?;
                let (_tx, rx) = mpsc::unbounded_channel();
                let events = events_tx.clone();
                let id = doc_id.clone();
                tasks.spawn(async move {
                    if let Err(error) =
                        light_client(client, id, Some(reader), rx, events.clone()).await
                    {
                        let _ = events.send(Event::Failed {
                            who: format!("reader {reader}"),
                            error,
                        });
                    }
                    drop(_tx);
                });
                // Everything before the reader joined counts as held.
                reader_progress.push(keystrokes.len());
            }
            let client = Client::connect(&args.url, new_peer_id(&format!("s3-typist{t}")), timeout)
                .await
                .with_context(|| format!("typist {t} connect"))?;
            client.send_sync(
                &doc_id,
                light_message(heads.clone(), Vec::new()).encode(),
                false,
            )?;
            let (tx, rx) = mpsc::unbounded_channel();
            let events = events_tx.clone();
            let id = doc_id.clone();
            tasks.spawn(async move {
                if let Err(error) = light_client(client, id, None, rx, events.clone()).await {
                    let _ = events.send(Event::Failed {
                        who: format!("typist {t}"),
                        error,
                    });
                }
            });
            typist_tx.push(tx);
        }

        // Type for the step's duration: keystrokes round-robin, k * 6 per second in all.
        let step_start = Instant::now();
        let first = keystrokes.len();
        let cpu0 = args.server_pid.and_then(process_cpu_seconds);
        let interval = Duration::from_secs_f64(1.0 / (CHARS_PER_SECOND * k as f64));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let step_len = Duration::from_secs(args.step_s.max(2));
        let mut next_typist = 0;
        let mut typing = true;
        let mut grace_end: Option<tokio::time::Instant> = None;
        loop {
            let pending = keystrokes[first..]
                .iter()
                .any(|ks| ks.arrived < READERS_PER_TYPIST);
            if !typing && (!pending || grace_end.is_some_and(|g| tokio::time::Instant::now() >= g))
            {
                break;
            }
            let grace_sleep = async {
                match grace_end {
                    Some(g) => tokio::time::sleep_until(g).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = ticker.tick(), if typing => {
                    if step_start.elapsed() >= step_len {
                        typing = false;
                        grace_end = Some(tokio::time::Instant::now() + GRACE);
                        continue;
                    }
                    let t = next_typist;
                    next_typist = (next_typist + 1) % k;
                    let pos = cursor(base_len, max, t, &typed);
                    let actor = format!("s3-typist-{t:07}");
                    editor.set_actor(ActorId::from(actor.as_bytes()));
                    let c = char::from(b'a' + (typed[t] % 26) as u8).to_string();
                    editor
                        .transact::<_, _, AutomergeError>(|tx| tx.splice_text(&text, pos, 0, &c))
                        .map_err(|f| f.error)?;
                    typed[t] += 1;
                    let at = Instant::now();
                    let Some(change) = editor.get_last_local_change() else {
                        bail!("typist {t}: no change after typing");
                    };
                    let hash = change.hash();
                    seq_of.insert(hash, keystrokes.len());
                    keystrokes.push(Keystroke {
                        typist: t,
                        at,
                        counted: step_start.elapsed() >= WARMUP,
                        arrived: 0,
                        last: at,
                    });
                    let _ = typist_tx[t].send((editor.get_heads(), change.raw_bytes().to_vec()));
                }
                _ = grace_sleep => {}
                e = events.recv() => {
                    match e {
                        Some(Event::Heads { reader, heads, at }) => {
                            let Some(top) = heads.iter().filter_map(|h| seq_of.get(h)).max().map(|s| s + 1) else {
                                continue;
                            };
                            let group = reader / READERS_PER_TYPIST;
                            let from = reader_progress[reader];
                            if top > from {
                                for ks in &mut keystrokes[from..top] {
                                    if ks.typist == group {
                                        ks.arrived += 1;
                                        ks.last = ks.last.max(at);
                                    }
                                }
                                reader_progress[reader] = top;
                            }
                        }
                        Some(Event::Failed { who, error }) => {
                            return Err(error.context(format!("{who} during the step with {k} typists")));
                        }
                        None => bail!("every client task ended"),
                    }
                }
            }
        }
        let cpu1 = args.server_pid.and_then(process_cpu_seconds);
        let mut step = Step {
            typists: k,
            latencies_ms: Vec::new(),
            undelivered: 0,
            keystrokes: keystrokes.len() - first,
            server_cpu_s: cpu0.zip(cpu1).map(|(a, b)| b - a),
        };
        for ks in keystrokes[first..].iter().filter(|ks| ks.counted) {
            if ks.arrived >= READERS_PER_TYPIST {
                step.latencies_ms
                    .push(ks.last.duration_since(ks.at).as_secs_f64() * 1000.0);
            } else {
                step.undelivered += 1;
            }
        }
        step.latencies_ms.sort_by(f64::total_cmp);
        let p99 = if step.undelivered > 0 {
            f64::INFINITY
        } else {
            percentile(&step.latencies_ms, 0.99)
        };
        let stop = p99.is_nan() || p99 > P99_LIMIT_MS;
        results.push(step);
        if stop {
            break;
        }
    }
    tasks.abort_all();

    let report: Vec<Value> = results
        .iter()
        .map(|s| {
            let p = |q| {
                if s.undelivered > 0 || s.latencies_ms.is_empty() {
                    Value::Null
                } else {
                    json!(round3(percentile(&s.latencies_ms, q)))
                }
            };
            json!({
                "typists": s.typists,
                "keystrokes": s.keystrokes,
                "undelivered": s.undelivered,
                "p50_ms": p(0.5),
                "p99_ms": p(0.99),
                "max_ms": p(1.0),
                "server_cpu_s": s.server_cpu_s.map(round3),
            })
        })
        .collect();
    let sustained = results.iter().rev().find(|s| {
        s.undelivered == 0
            && !s.latencies_ms.is_empty()
            && percentile(&s.latencies_ms, 0.99) <= P99_LIMIT_MS
    });
    out.insert(
        "sustained_typists".into(),
        json!(sustained.map_or(0, |s| s.typists)),
    );
    if let Some(s) = sustained {
        out.insert(
            "sustained_p99_ms".into(),
            json!(round3(percentile(&s.latencies_ms, 0.99))),
        );
    }
    out.insert("steps".into(), Value::Array(report));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::ReadDoc as _;

    #[test]
    fn the_long_history_has_one_change_per_character() {
        let (doc, text) = long_history_doc(50).unwrap();
        assert_eq!(doc.text(&text).unwrap().len(), 50);
        assert_eq!(doc.get_changes(&[]).len(), 51);
    }

    #[test]
    fn cursors_stay_in_their_own_region() {
        // 3 typists over 100 characters start at 25, 50 and 75; typing shifts the later ones.
        assert_eq!(cursor(100, 3, 0, &[0, 0, 0]), 25);
        assert_eq!(cursor(100, 3, 2, &[0, 0, 0]), 75);
        assert_eq!(cursor(100, 3, 1, &[4, 2, 0]), 50 + 6);
        assert_eq!(cursor(100, 3, 0, &[4, 2, 0]), 29);
    }

    #[test]
    fn steps_parse_sorted_and_refuse_nonsense() {
        assert_eq!(parse_steps("4 1,2  8").unwrap(), vec![1, 2, 4, 8]);
        assert!(parse_steps("").is_err());
        assert!(parse_steps("1 x").is_err());
        assert!(parse_steps("0").is_err());
    }

    #[test]
    fn a_light_message_round_trips() {
        let (doc, _) = long_history_doc(3).unwrap();
        let heads = doc.get_heads();
        let m = light_message(heads.clone(), Vec::new());
        let back = sync::Message::decode(&m.encode()).unwrap();
        assert_eq!(back.heads, heads);
        assert_eq!(back.have[0].last_sync, heads);
        assert!(back.changes.is_empty());
    }
}
