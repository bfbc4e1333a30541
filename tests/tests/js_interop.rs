//! Runs `tests/js/interop.mjs` (unmodified `@automerge/automerge-repo` 2.5.6 clients) against a
//! live driftless server, driving the script's restart protocol.
//!
//! Needs Node 20+ and `npm ci --prefix tests/js`. With `DRIFTLESS_TEST_SERVER_URL=ws://...` it
//! runs against that server instead (restart skipped; set `DRIFTLESS_TEST_REFERENCE=1` when it
//! is the reference Node server).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use driftless_tests::{
    TestServer, ensure_node_modules, external_server_url, interop_script, node_binary,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The size limit the server runs with here; the script sends frames at and just above it.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

fn overall_timeout() -> Duration {
    let secs = std::env::var("DRIFTLESS_JS_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_automerge_repo_clients_interoperate() -> anyhow::Result<()> {
    ensure_node_modules()?;

    let external = external_server_url();
    let mut server = match &external {
        Some(_) => None,
        None => Some(TestServer::start_with(Some(MAX_MESSAGE_BYTES)).await?),
    };
    let url = match (&external, &server) {
        (Some(url), _) => url.clone(),
        (None, Some(s)) => s.url(),
        (None, None) => unreachable!("a server is started when no external URL is given"),
    };
    if let Some(s) = &server {
        s.wait_ready(Duration::from_secs(5)).await?;
    }

    let mut cmd = tokio::process::Command::new(node_binary());
    cmd.arg(interop_script()).arg(&url).arg("all");
    match &server {
        Some(s) => {
            cmd.arg("--max-message-bytes")
                .arg(s.max_message_bytes().to_string());
        }
        None => {
            cmd.arg("--no-restart");
        }
    }
    if std::env::var("DRIFTLESS_TEST_REFERENCE").is_ok_and(|v| v == "1") {
        cmd.arg("--reference");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("spawning node (is Node 20+ installed?)")?;
    let mut stdin = child.stdin.take().context("node stdin")?;
    let stdout = child.stdout.take().context("node stdout")?;
    let mut lines = BufReader::new(stdout).lines();

    let timeout = overall_timeout();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut failures = Vec::new();
    let mut transcript = Vec::new();
    loop {
        let line = match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Err(_) => {
                let _ = child.kill().await;
                bail!(
                    "node interop.mjs did not finish within {timeout:?} (killed). Output so far:\n{}",
                    transcript.join("\n")
                );
            }
            Ok(line) => line.context("reading node's stdout")?,
        };
        let Some(line) = line else { break };
        println!("[interop.mjs] {line}");
        transcript.push(line.clone());
        if line.starts_with("FAIL ") {
            failures.push(line.clone());
        }
        match line.as_str() {
            "RESTART_SERVER_STOP" => {
                let s = server
                    .as_mut()
                    .context("script asked for a restart but the server is external")?;
                s.stop()
                    .await
                    .context("stopping the server for the restart scenario")?;
                stdin.write_all(b"STOPPED\n").await?;
                stdin.flush().await?;
            }
            "RESTART_SERVER_START" => {
                let s = server
                    .as_mut()
                    .context("script asked for a restart but the server is external")?;
                s.restart()
                    .await
                    .context("restarting the server on the same port and data dir")?;
                stdin.write_all(b"STARTED\n").await?;
                stdin.flush().await?;
            }
            _ => {}
        }
    }
    let status = match tokio::time::timeout_at(deadline, child.wait()).await {
        Ok(status) => status.context("waiting for node")?,
        Err(_) => {
            let _ = child.kill().await;
            bail!("node interop.mjs closed stdout but did not exit before the deadline");
        }
    };
    if let Some(s) = server.as_mut() {
        s.stop().await?;
    }
    if !status.success() || !failures.is_empty() {
        bail!(
            "JS interop against {url} failed ({status}):\n{}\n(full transcript above; node's \
             diagnostics are on stderr)",
            if failures.is_empty() {
                transcript.join("\n")
            } else {
                failures.join("\n")
            }
        );
    }
    Ok(())
}
