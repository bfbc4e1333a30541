//! The real `driftless` binary as a child process, for tests that kill it, restart it or measure its
//! memory. Built by `scripts/test.sh` (`cargo build -p driftless-server --bin driftless`);
//! `DRIFTLESS_BIN` overrides the path.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

pub fn driftless_bin() -> PathBuf {
    std::env::var_os("DRIFTLESS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/driftless"))
}

/// A free loopback port (bound and released; good enough for tests on one machine).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts `driftless serve` on 127.0.0.1:`port` and waits until it listens.
pub async fn spawn_server(
    port: u16,
    data_dir: &Path,
    config: Option<&Path>,
    log_level: &str,
) -> anyhow::Result<Child> {
    let bin = driftless_bin();
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build -p driftless-server --bin driftless` (scripts/test.sh does)",
            bin.display()
        );
    }
    let mut command = Command::new(&bin);
    command.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ]);
    command.arg(data_dir);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let child = command
        .env("RUST_LOG", log_level)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))?;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(child);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("server did not listen on port {port}")
}

/// Resident set size of a process, from /proc.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS in /proc status")
}

/// One sample of the server's /metrics, e.g. `driftless_limit_hits_total{limit="outbound_queue"}`;
/// 0 when the sample is absent (labelled counters appear on first use).
pub async fn metric(port: u16, name: &str) -> anyhow::Result<f64> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0))
}
