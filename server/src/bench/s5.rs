//! S5, provider burst (driftless only; the peers have no bridges): a fake provider process
//! (`burst_provider` of the tests crate: the fake Google Calendar) changes its events as fast as
//! a `google_calendar` bridge of a driftless server this scenario starts takes them, while S2
//! readers run on another document; then the server is killed (`SIGKILL`) mid-burst, restarted,
//! and every acknowledged change is looked for in its database.
//!
//! Definitions (also in docs/benchmarks.md):
//! - **Acknowledged (durable) delta**: the bridge stores its sync token only after every document
//!   change of the listing that produced it is durable (fsynced), and presents it in its next
//!   listing. The provider counts a change acknowledged once a presented token was issued at or
//!   after the change's change-log position. Durable deltas/s = burst deltas / time from the
//!   burst's start to the provider having seen all of them acknowledged.
//! - **Ceiling**: redb 4 `Durability::Immediate` write transactions, each inserting
//!   `--s5-ceiling-batch` values of `--s5-ceiling-value-bytes` bytes into one table, back to back
//!   for `--s5-ceiling-s` seconds, in a file next to the server's database (same disk), before the
//!   server starts: values/s is the batch ceiling the target compares with.
//! - **Missing after kill**: for every event whose change was acknowledged before the kill, the
//!   linked document (bridge link table, then the document) holds an older version, or the link
//!   or document is absent. Read from the database after the restarted server has run one bridge
//!   listing and been stopped.
//!
//! Must not: reach into the server process; it sees the server only through the provider's
//! requests, its WebSocket port and (once stopped) its database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::client::Client;
use super::{BenchArgs, Scenario, new_peer_id, process_cpu_seconds, round3};
use crate::bridge::record::Record;
use crate::bridge::store::BridgeStore;
use crate::config::BridgeKind;
use crate::storage::Storage;

/// The bridge's id in the generated config.
const BRIDGE: &str = "burst";
const SECRET_ENV: &str = "DRIFTLESS_S5_CLIENT_SECRET";
const REFRESH_ENV: &str = "DRIFTLESS_S5_REFRESH_TOKEN";

/// S5's options (prefixed, so they never collide with other scenarios').
#[derive(Debug, Clone, clap::Args)]
pub struct S5Args {
    /// S5: the `burst_provider` binary (tests crate).
    #[arg(long)]
    pub s5_provider_bin: Option<PathBuf>,
    /// S5: the `driftless` binary to start (default: this one).
    #[arg(long)]
    pub s5_server_bin: Option<PathBuf>,
    /// S5: scratch directory for the server's data and the ceiling file (default: a new one
    /// under the system temp dir, removed afterwards).
    #[arg(long)]
    pub s5_dir: Option<PathBuf>,
    /// S5: CPU list the server is pinned to with `taskset -c` (none: not pinned).
    #[arg(long)]
    pub s5_server_cpus: Option<String>,
    /// S5: provider records (events), imported before the burst.
    #[arg(long, default_value_t = 1000)]
    pub s5_records: usize,
    /// S5: provider changes per burst (the timed burst, then the one that is killed).
    #[arg(long, default_value_t = 20_000)]
    pub s5_deltas: usize,
    /// S5: unacknowledged changes the provider allows at once (at most the record count, so no
    /// change is folded into another).
    #[arg(long, default_value_t = 1000)]
    pub s5_window: usize,
    /// S5: the bridge's `poll_interval` in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub s5_poll_ms: u64,
    /// S5: values per write transaction of the ceiling measurement.
    #[arg(long, default_value_t = 100)]
    pub s5_ceiling_batch: usize,
    /// S5: bytes per value of the ceiling measurement (about one delta's document change, change
    /// log entry and link shadow).
    #[arg(long, default_value_t = 1024)]
    pub s5_ceiling_value_bytes: usize,
    /// S5: seconds the ceiling measurement runs.
    #[arg(long, default_value_t = 3.0)]
    pub s5_ceiling_s: f64,
    /// S5: fraction of the second burst acknowledged when the server is killed.
    #[arg(long, default_value_t = 0.5)]
    pub s5_kill_at: f64,
}

impl Default for S5Args {
    fn default() -> Self {
        Self {
            s5_provider_bin: None,
            s5_server_bin: None,
            s5_dir: None,
            s5_server_cpus: None,
            s5_records: 1000,
            s5_deltas: 20_000,
            s5_window: 1000,
            s5_poll_ms: 20,
            s5_ceiling_batch: 100,
            s5_ceiling_value_bytes: 1024,
            s5_ceiling_s: 3.0,
            s5_kill_at: 0.5,
        }
    }
}

/// The `Durability::Immediate` batch ceiling (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    pub commits_per_s: f64,
    pub values_per_s: f64,
}

/// Commits `batch` values of `value_bytes` per `Durability::Immediate` transaction into a fresh
/// redb file at `path` for `seconds`.
pub fn immediate_batch_ceiling(
    path: &Path,
    batch: usize,
    value_bytes: usize,
    seconds: f64,
) -> anyhow::Result<Ceiling> {
    const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("ceiling");
    let _ = std::fs::remove_file(path);
    let db = redb::Database::create(path)
        .with_context(|| format!("ceiling: cannot create {}", path.display()))?;
    let value: Vec<u8> = (0..value_bytes).map(|i| (i * 131 % 251) as u8).collect();
    let started = Instant::now();
    let (mut commits, mut key) = (0u64, 0u64);
    while started.elapsed().as_secs_f64() < seconds || commits == 0 {
        let mut txn = db.begin_write().context("ceiling: begin")?;
        txn.set_durability(redb::Durability::Immediate)
            .context("ceiling: durability")?;
        {
            let mut table = txn.open_table(TABLE).context("ceiling: table")?;
            for _ in 0..batch.max(1) {
                table
                    .insert(key, value.as_slice())
                    .context("ceiling: insert")?;
                key += 1;
            }
        }
        txn.commit().context("ceiling: commit")?;
        commits += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(db);
    let _ = std::fs::remove_file(path);
    Ok(Ceiling {
        commits_per_s: commits as f64 / elapsed,
        values_per_s: key as f64 / elapsed,
    })
}

/// The server's config file for a bridge to the provider described by `ready` (its first line).
pub fn server_config(
    listen: &str,
    data_dir: &Path,
    ready: &Value,
    poll_ms: u64,
) -> anyhow::Result<String> {
    let field = |k: &str| -> anyhow::Result<String> {
        ready
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("the provider's ready line has no {k:?}"))
    };
    let quote = |s: &str| Value::String(s.to_owned()).to_string();
    Ok(format!(
        "listen = {listen}\ndata_dir = {data_dir}\n\n[[bridges]]\nid = {id}\nkind = \"google_calendar\"\n\
         workspace = \"default\"\ncalendar_id = {cal}\nclient_id = {client}\n\
         client_secret_env = {secret_env}\nrefresh_token_env = {refresh_env}\ntoken_url = {token_url}\n\
         api_base = {api_base}\npoll_interval = \"{poll_ms}ms\"\nmax_delete_fraction = 1.0\n",
        listen = quote(listen),
        data_dir = quote(&data_dir.to_string_lossy()),
        id = quote(BRIDGE),
        cal = quote(&field("calendar_id")?),
        client = quote(&field("client_id")?),
        secret_env = quote(SECRET_ENV),
        refresh_env = quote(REFRESH_ENV),
        token_url = quote(&field("token_url")?),
        api_base = quote(&field("api_base")?),
    ))
}

/// The version in a summary the provider wrote (`burst <record> v<version>`).
pub fn summary_version(summary: &str) -> Option<u64> {
    summary.rsplit_once(" v")?.1.parse().ok()
}

/// Events whose acknowledged version is not in the database: `(event id, found version)`.
/// `found` maps event id to the version its linked document holds (absent: no link/document).
pub fn missing_acknowledged(
    acked: &BTreeMap<String, u64>,
    found: &BTreeMap<String, u64>,
) -> Vec<(String, Option<u64>)> {
    acked
        .iter()
        .filter_map(|(event, &version)| match found.get(event) {
            Some(&v) if v >= version => None,
            other => Some((event.clone(), other.copied())),
        })
        .collect()
}

/// The provider process and its command channel.
struct Provider {
    /// Held so that dropping the provider ends the process (`kill_on_drop`).
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Provider {
    async fn start(bin: &Path, records: usize) -> anyhow::Result<(Self, Value)> {
        let mut child = Command::new(bin)
            .arg("--records")
            .arg(records.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the provider {}", bin.display()))?;
        let stdin = child.stdin.take().context("provider stdin")?;
        let stdout = child.stdout.take().context("provider stdout")?;
        let mut provider = Self {
            _child: child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        };
        let ready = provider.read_line().await.context("provider start")?;
        Ok((provider, ready))
    }

    async fn read_line(&mut self) -> anyhow::Result<Value> {
        let line = self
            .lines
            .next_line()
            .await?
            .context("the provider exited")?;
        serde_json::from_str(&line).with_context(|| format!("provider said {line:?}"))
    }

    async fn ask(&mut self, command: &str) -> anyhow::Result<Value> {
        self.stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .context("provider stdin")?;
        self.stdin.flush().await?;
        let answer = self.read_line().await?;
        if let Some(e) = answer.get("error") {
            bail!("provider refused {command:?}: {e}");
        }
        Ok(answer)
    }

    async fn acked(&mut self) -> anyhow::Result<u64> {
        let s = self.ask("status").await?;
        s.get("acked")
            .and_then(Value::as_u64)
            .context("provider status without `acked`")
    }
}

/// The server under test: a child process on a fixed config.
struct Server {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    cpus: Option<String>,
    ready: Value,
    child: Option<Child>,
}

impl Server {
    fn spawn(&mut self) -> anyhow::Result<u32> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        let mut command = match &self.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let secret = self.ready["client_secret"].as_str().unwrap_or_default();
        let refresh = self.ready["refresh_token"].as_str().unwrap_or_default();
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env(SECRET_ENV, secret)
            .env(REFRESH_ENV, refresh)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the server {}", self.bin.display()))?;
        let pid = child.id().context("server pid")?;
        self.child = Some(child);
        Ok(pid)
    }

    /// `SIGKILL`, and wait for the process to be gone.
    async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().context("kill -9 the server")?;
            child.wait().await?;
        }
        Ok(())
    }

    /// `SIGTERM` (a clean stop), then `SIGKILL` after 20 s.
    async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(pid.to_string())
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                child.start_kill()?;
                child.wait().await?;
            }
        }
        Ok(())
    }
}

async fn wait_for_websocket(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match Client::connect(url, new_peer_id("s5-probe"), Duration::from_secs(2)).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("server did not answer within {timeout:?}")));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Polls the provider until `target` changes are acknowledged; returns the time it took.
async fn wait_acked(
    provider: &mut Provider,
    target: u64,
    timeout: Duration,
    what: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let acked = provider.acked().await?;
        if acked >= target {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            bail!("{what}: {acked}/{target} acknowledged after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Free loopback port for the server.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Runs S5 and fills `out`.
pub async fn run(args: &BenchArgs, out: &mut Map<String, Value>) -> anyhow::Result<()> {
    let s5 = &args.s5;
    let dir = match &s5.s5_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("driftless-s5-{}", uuid::Uuid::new_v4())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let result = run_in(args, &dir, out).await;
    if s5.s5_dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_in(args: &BenchArgs, dir: &Path, out: &mut Map<String, Value>) -> anyhow::Result<()> {
    let s5 = &args.s5;
    let timeout = args.phase_timeout();
    out.insert("records".into(), json!(s5.s5_records));
    out.insert("deltas".into(), json!(s5.s5_deltas));
    out.insert("window".into(), json!(s5.s5_window));
    out.insert("poll_ms".into(), json!(s5.s5_poll_ms));
    out.insert("readers".into(), json!(args.readers));

    // 1. The ceiling, on the same disk, with nothing else of ours running.
    let (path, batch, bytes, secs) = (
        dir.join("ceiling.redb"),
        s5.s5_ceiling_batch,
        s5.s5_ceiling_value_bytes,
        s5.s5_ceiling_s,
    );
    let ceiling =
        tokio::task::spawn_blocking(move || immediate_batch_ceiling(&path, batch, bytes, secs))
            .await??;
    out.insert("ceiling_batch".into(), json!(batch));
    out.insert("ceiling_value_bytes".into(), json!(bytes));
    out.insert(
        "ceiling_commits_per_s".into(),
        json!(round3(ceiling.commits_per_s)),
    );
    out.insert(
        "ceiling_values_per_s".into(),
        json!(round3(ceiling.values_per_s)),
    );

    // 2. Provider and server.
    let provider_bin = s5
        .s5_provider_bin
        .clone()
        .context("--s5-provider-bin is required (the tests crate's burst_provider)")?;
    let server_bin = match &s5.s5_server_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe().context("cannot find this binary")?,
    };
    let (mut provider, ready) = Provider::start(&provider_bin, s5.s5_records).await?;
    let listen = format!("127.0.0.1:{}", free_port()?);
    let url = format!("ws://{listen}");
    let data_dir = dir.join("data");
    let config = dir.join("driftless.toml");
    std::fs::write(
        &config,
        server_config(&listen, &data_dir, &ready, s5.s5_poll_ms)?,
    )?;
    let mut server = Server {
        bin: server_bin,
        config,
        log: dir.join("server.log"),
        cpus: s5.s5_server_cpus.clone(),
        ready,
        child: None,
    };
    let pid = server.spawn()?;
    wait_for_websocket(&url, timeout).await?;
    let imported = wait_acked(&mut provider, s5.s5_records as u64, timeout, "import")
        .await
        .context("initial import")?;
    out.insert(
        "import_records_per_s".into(),
        json!(round3(s5.s5_records as f64 / imported.as_secs_f64())),
    );

    // 3. The timed burst, with S2 readers on another document.
    let mut s2_args = args.clone();
    s2_args.scenario = Scenario::S2;
    s2_args.url = url.clone();
    s2_args.server_pid = None;
    let base = provider.acked().await?;
    let cpu0 = process_cpu_seconds(pid);
    provider
        .ask(&format!("burst {} {}", s5.s5_deltas, s5.s5_window))
        .await?;
    let started = Instant::now();
    let s2 = tokio::spawn(async move {
        let mut o = Map::new();
        let r = super::s2::run(&s2_args, &mut o).await;
        (r, o, Instant::now())
    });
    let target = base + s5.s5_deltas as u64;
    loop {
        let acked = provider.acked().await?;
        if acked >= target {
            break;
        }
        if started.elapsed() > timeout {
            s2.abort();
            bail!(
                "burst: {}/{} acknowledged after {timeout:?}",
                acked - base,
                s5.s5_deltas
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let burst_s = started.elapsed().as_secs_f64();
    let cpu1 = process_cpu_seconds(pid);
    let rate = s5.s5_deltas as f64 / burst_s;
    let burst_end = Instant::now();
    out.insert("burst_s".into(), json!(round3(burst_s)));
    out.insert("durable_deltas_per_s".into(), json!(round3(rate)));
    out.insert(
        "ratio_to_ceiling".into(),
        json!(round3(rate / ceiling.values_per_s)),
    );
    if let (Some(a), Some(b)) = (cpu0, cpu1) {
        out.insert(
            "server_cpu_us_per_delta".into(),
            json!(round3((b - a) * 1e6 / s5.s5_deltas as f64)),
        );
    }
    let (s2_result, s2_out, s2_end) = s2.await.context("S2 task")?;
    match s2_result {
        Ok(()) => {
            for key in [
                "p50_ms",
                "p99_ms",
                "max_ms",
                "applied_p50_ms",
                "applied_p99_ms",
            ] {
                if let Some(v) = s2_out.get(key) {
                    out.insert(format!("s2_{key}"), v.clone());
                }
            }
            // The S2 figures describe the burst only if S2 ended while the burst still ran.
            out.insert("s2_within_burst".into(), json!(s2_end <= burst_end));
        }
        Err(e) => bail!("S2 during the burst: {e:#}"),
    }

    // 4. A second burst, killed mid-way; restart; look for every acknowledged change.
    let base = provider.acked().await?;
    provider
        .ask(&format!("burst {} {}", s5.s5_deltas, s5.s5_window))
        .await?;
    let kill_target = base + ((s5.s5_deltas as f64 * s5.s5_kill_at) as u64).max(1);
    wait_acked(&mut provider, kill_target, timeout, "burst before the kill").await?;
    server.kill9().await?;
    let acked = provider.ask("acked").await?;
    let acked_at_kill = acked["acked"].as_u64().unwrap_or(0);
    let listings_at_kill = acked["listings"].as_u64().unwrap_or(0);
    let versions: BTreeMap<String, u64> = serde_json::from_value(acked["versions"].clone())
        .context("provider `acked` without versions")?;
    out.insert("acked_at_kill".into(), json!(acked_at_kill));

    let restarted = Instant::now();
    server.spawn()?;
    wait_for_websocket(&url, timeout)
        .await
        .context("restart after kill -9")?;
    // The restarted bridge's first listing shows it read its durable token.
    loop {
        let s = provider.ask("status").await?;
        if s["listings"].as_u64().unwrap_or(0) > listings_at_kill {
            break;
        }
        if restarted.elapsed() > timeout {
            bail!("the restarted server's bridge did not list within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    out.insert(
        "restart_to_first_listing_s".into(),
        json!(round3(restarted.elapsed().as_secs_f64())),
    );
    server.stop().await?;
    drop(provider);

    let found = tokio::task::spawn_blocking(move || stored_versions(&data_dir)).await??;
    let missing = missing_acknowledged(&versions, &found);
    out.insert("checked_records".into(), json!(versions.len()));
    out.insert("missing_after_kill".into(), json!(missing.len()));
    if !missing.is_empty() {
        let sample: Vec<String> = missing
            .iter()
            .take(5)
            .map(|(e, v)| format!("{e}: acknowledged v{}, found {v:?}", versions[e]))
            .collect();
        bail!(
            "{} acknowledged change(s) missing after kill -9 and restart, e.g. {}",
            missing.len(),
            sample.join("; ")
        );
    }
    Ok(())
}

/// Per linked event id, the version its document's title holds.
fn stored_versions(data_dir: &Path) -> anyhow::Result<BTreeMap<String, u64>> {
    let storage = Storage::open(data_dir)
        .with_context(|| format!("cannot open the database in {}", data_dir.display()))?;
    let store = BridgeStore::open(storage).context("bridge tables")?;
    let links = store.links(BRIDGE).context("links")?;
    let mut found = BTreeMap::new();
    for (href, shadow) in links {
        let doc: driftless_client_protocol::DocumentId = shadow
            .doc
            .parse()
            .map_err(|e| anyhow::anyhow!("link {href}: bad document id: {e}"))?;
        let Some(stored) = store
            .storage()
            .load_stored(&doc)
            .with_context(|| format!("document {doc}"))?
        else {
            continue;
        };
        let Ok(record) = Record::read(BridgeKind::GoogleCalendar, &stored.document) else {
            continue;
        };
        let Some(title) = record.to_json()["title"].as_str().map(str::to_owned) else {
            continue;
        };
        if let Some(v) = summary_version(&title) {
            found.insert(href, v);
        }
    }
    Ok(found)
}
