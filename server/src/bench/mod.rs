//! `driftless bench`: a load generator for any automerge-repo WebSocket server, given by URL.
//!
//! Scenarios (see `performance.md`):
//! - **S1** bulk small docs: one client creates N contact-like documents over one connection with a
//!   window of documents in flight, and counts a document acknowledged when the server's sync
//!   message reports heads equal to ours; then a fresh client `request`s every document and counts
//!   it fetched when it holds the creator's heads.
//! - **S2** live fan-out: one writer and R readers on one document; the writer makes small edits one
//!   at a time (the next one once every reader holds the previous one and at least
//!   `--edit-interval-ms` after it) and each edit's latency is the time from the writer's commit to
//!   the last reader having applied a sync message that brought the edit.
//! - **S3** hot long-history document: a document of ~260k one-character changes, typists at 6
//!   characters per second with 4 readers each, raised until p99 > 250 ms (see `s3`).
//! - **S4** restart and reconnect storm, in two runs around a server restart (`s4-seed`, then `s4`;
//!   see `s4`): time until every reconnecting client's documents are in sync, bytes per up-to-date
//!   document, documents loaded.
//! - **S6** idle connections: N connections each holding one synced document, left idle; memory
//!   per connection and idle CPU of the server (see `s6`).
//! - **S5** provider burst: starts a server with a bridge to a fake provider process, measures
//!   durable deltas/s against redb's batch ceiling, S2 during the burst, and kill -9 (see `s5`).
//!
//! Each run prints one JSON object on stdout (`"ok": true|false`, and `"error"` on failure); a
//! phase that makes no progress within `--phase-timeout-s` fails the run instead of hanging it.
//! Reuses the protocol crate's codec and ids; the client side of sync is plain `automerge`.

pub mod client;
pub mod flood;
pub mod s1;
pub mod s2;
pub mod s3;
pub mod s4;
pub mod s5;
pub mod s6;

use std::time::Duration;

use automerge::transaction::Transactable as _;
use automerge::{ActorId, Automerge, AutomergeError, ObjType, ROOT};
use driftless_client_protocol::DocumentId;
use serde_json::{Map, Value, json};

/// Which scenario to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    S1,
    S2,
    /// S2's edit loop as a control client while flooders and idle sockets load the server.
    Flood,
    /// Hot long-history document: sustained typists.
    S3,
    /// Restart storm, part 1: push the documents and write `--state-file`.
    #[value(name = "s4-seed")]
    S4Seed,
    /// Restart storm, part 2 (after the caller restarted the server): clients reconnect.
    S4,
    /// Idle connections: memory per connection and idle CPU.
    S6,
    /// Provider burst: durable deltas/s of a bridge, S2 during it, kill -9 (driftless only).
    S5,
}

/// Command-line options of `driftless bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// WebSocket URL of the server, e.g. ws://127.0.0.1:3030
    #[arg(long)]
    pub url: String,
    /// Scenario to run.
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Server label written into the result line.
    #[arg(long, default_value = "server")]
    pub label: String,
    /// S1: documents created (and then fetched) in the timed phases.
    #[arg(long, default_value_t = 10_000)]
    pub docs: usize,
    /// S1: documents created and acknowledged before timing starts.
    #[arg(long, default_value_t = 200)]
    pub warmup_docs: usize,
    /// S1: documents in flight at once on one connection.
    #[arg(long, default_value_t = 500)]
    pub window: usize,
    /// S2: number of readers.
    #[arg(long, default_value_t = 20)]
    pub readers: usize,
    /// S2: timed edits.
    #[arg(long, default_value_t = 200)]
    pub edits: usize,
    /// S2: edits made before timing starts.
    #[arg(long, default_value_t = 10)]
    pub warmup_edits: usize,
    /// S2: minimum time between the starts of two edits (an edit also waits for the previous one
    /// to reach every reader).
    #[arg(long, default_value_t = 20)]
    pub edit_interval_ms: u64,
    /// Flood: connections that join and then send frames as fast as the socket takes them.
    #[arg(long, default_value_t = 8)]
    pub flooders: usize,
    /// Flood: sockets that complete the WebSocket handshake and never send `join`.
    #[arg(long, default_value_t = 100)]
    pub idle: usize,
    /// S6: connections opened (each joins and syncs one small document), then left idle.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// S6: how long the connections stay idle while the server's CPU is measured.
    #[arg(long, default_value_t = 120)]
    pub idle_s: u64,
    /// S6: comma-separated loopback source addresses the connections are spread over.
    #[arg(long, default_value = "127.0.0.1")]
    pub source_addrs: String,
    /// S6: documents each connection syncs before going idle (0: join only; shows what the
    /// connection itself costs).
    #[arg(long, default_value_t = 1)]
    pub connection_docs: usize,
    /// S6: connections being opened at once.
    #[arg(long, default_value_t = 100)]
    pub connect_parallel: usize,
    /// S3: characters (one change each) in the preloaded document.
    #[arg(long, default_value_t = 260_000)]
    pub s3_ops: usize,
    /// S3: typist counts to try, ascending (stops after the first step with p99 > 250 ms).
    #[arg(long, default_value = "1 2 4 8 16")]
    pub typists: String,
    /// S3: seconds of typing per step.
    #[arg(long, default_value_t = 20)]
    pub step_s: u64,
    /// S4: file the seed run writes its documents to and the reconnect run reads them from.
    #[arg(long)]
    pub state_file: Option<std::path::PathBuf>,
    /// S4: small (contact) documents stored.
    #[arg(long, default_value_t = 10_000)]
    pub small_docs: usize,
    /// S4: large (long-history text) documents stored.
    #[arg(long, default_value_t = 10)]
    pub large_docs: usize,
    /// S4: characters typed into each large document (one change per 10).
    #[arg(long, default_value_t = 20_000)]
    pub large_ops: usize,
    /// S4: clients reconnecting at once.
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// S4: documents each client holds (one large, the rest small).
    #[arg(long, default_value_t = 20)]
    pub docs_per_client: usize,
    /// A phase that has not finished after this many seconds fails the run.
    #[arg(long, default_value_t = 120)]
    pub phase_timeout_s: u64,
    /// Server process id: report its CPU time (utime+stime from /proc) per phase / per edit.
    #[arg(long)]
    pub server_pid: Option<u32>,
    #[command(flatten)]
    pub s5: Box<s5::S5Args>,
}

impl BenchArgs {
    /// Defaults for `scenario` against `url` (what the CLI gives without flags).
    pub fn new(url: impl Into<String>, scenario: Scenario) -> Self {
        Self {
            url: url.into(),
            scenario,
            label: "server".into(),
            docs: 10_000,
            warmup_docs: 200,
            window: 500,
            readers: 20,
            edits: 200,
            warmup_edits: 10,
            edit_interval_ms: 20,
            flooders: 8,
            idle: 100,
            connections: 10_000,
            idle_s: 120,
            source_addrs: "127.0.0.1".into(),
            connect_parallel: 100,
            connection_docs: 1,
            s3_ops: 260_000,
            typists: "1 2 4 8 16".into(),
            step_s: 20,
            state_file: None,
            small_docs: 10_000,
            large_docs: 10,
            large_ops: 20_000,
            clients: 200,
            docs_per_client: 20,
            phase_timeout_s: 120,
            server_pid: None,
            s5: Box::default(),
        }
    }

    fn phase_timeout(&self) -> Duration {
        Duration::from_secs(self.phase_timeout_s)
    }
}

/// Runs the scenario and returns its result object (always with `ok`, and `error` when not ok).
pub async fn run(args: &BenchArgs) -> Value {
    let mut out = Map::new();
    out.insert("label".into(), json!(args.label));
    let outcome = match args.scenario {
        Scenario::S1 => {
            out.insert("scenario".into(), json!("s1"));
            out.insert("docs".into(), json!(args.docs));
            out.insert("window".into(), json!(args.window));
            s1::run(args, &mut out).await
        }
        Scenario::S2 => {
            out.insert("scenario".into(), json!("s2"));
            out.insert("readers".into(), json!(args.readers));
            out.insert("edits".into(), json!(args.edits));
            out.insert("edit_interval_ms".into(), json!(args.edit_interval_ms));
            s2::run(args, &mut out).await
        }
        Scenario::Flood => {
            out.insert("scenario".into(), json!("flood"));
            out.insert("readers".into(), json!(args.readers));
            out.insert("edits".into(), json!(args.edits));
            out.insert("edit_interval_ms".into(), json!(args.edit_interval_ms));
            out.insert("flooders".into(), json!(args.flooders));
            out.insert("idle".into(), json!(args.idle));
            flood::run(args, &mut out).await
        }
        Scenario::S3 => {
            out.insert("scenario".into(), json!("s3"));
            s3::run(args, &mut out).await
        }
        Scenario::S4Seed => {
            out.insert("scenario".into(), json!("s4-seed"));
            s4::seed(args, &mut out).await
        }
        Scenario::S4 => {
            out.insert("scenario".into(), json!("s4"));
            s4::run(args, &mut out).await
        }
        Scenario::S6 => {
            out.insert("scenario".into(), json!("s6"));
            s6::run(args, &mut out).await
        }
        Scenario::S5 => {
            out.insert("scenario".into(), json!("s5"));
            s5::run(args, &mut out).await
        }
    };
    match outcome {
        Ok(()) => {
            out.insert("ok".into(), json!(true));
        }
        Err(e) => {
            out.insert("ok".into(), json!(false));
            out.insert("error".into(), json!(format!("{e:#}")));
        }
    }
    Value::Object(out)
}

/// The CLI entry point: runs on one thread, prints the result line, returns the exit code.
pub fn main(args: &BenchArgs) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!(
                "{}",
                json!({"ok": false, "error": format!("cannot start tokio: {e}")})
            );
            return 2;
        }
    };
    let result = runtime.block_on(run(args));
    println!("{result}");
    if result.get("ok") == Some(&Value::Bool(true)) {
        0
    } else {
        1
    }
}

/// A fresh random document id.
pub(crate) fn new_document_id() -> DocumentId {
    DocumentId::generate(uuid::Uuid::new_v4().into_bytes())
}

/// A fresh peer id for one benchmark connection.
pub(crate) fn new_peer_id(role: &str) -> String {
    format!("bench-{role}-{}", uuid::Uuid::new_v4().simple())
}

/// A small contact-like document (4 fields and a list of 2 tags, as in `performance.md`),
/// written by a fixed actor derived from `n`.
pub(crate) fn contact_doc(n: u64) -> Result<Automerge, AutomergeError> {
    let mut actor = [0u8; 16];
    actor[..4].copy_from_slice(b"bnch");
    actor[8..].copy_from_slice(&n.to_be_bytes());
    let mut doc = Automerge::new().with_actor(ActorId::from(&actor[..]));
    doc.transact::<_, _, AutomergeError>(|tx| {
        tx.put(ROOT, "name", format!("Contact {n}"))?;
        tx.put(ROOT, "email", format!("contact{n}@example.com"))?;
        tx.put(
            ROOT,
            "phone",
            format!("+41 44 {:03} {:02} {:02}", n % 1000, n % 97, n % 89),
        )?;
        tx.put(ROOT, "company", "Example AG")?;
        let tags = tx.put_object(ROOT, "tags", ObjType::List)?;
        tx.insert(&tags, 0, "customer")?;
        tx.insert(&tags, 1, "2024")?;
        Ok(())
    })
    .map_err(|f| f.error)?;
    Ok(doc)
}

/// CPU time (utime+stime) of a process in seconds, from /proc/PID/stat. Assumes the usual
/// 100 clock ticks per second.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; fields after it are space-separated.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // After the name: state is field 3 (index 0 here), utime 14 (index 11), stime 15 (index 12).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Nearest-rank percentile of sorted values (`q` in 0..=1).
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Rounds to 3 decimals for the result line.
pub(crate) fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(process_cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn contact_docs_differ() {
        let a = contact_doc(1).unwrap();
        let b = contact_doc(2).unwrap();
        assert_ne!(a.get_heads(), b.get_heads());
        assert_eq!(a.get_heads().len(), 1);
    }
}
