//! Shared pieces of the end-to-end tests: a live driftless server on a loopback port with a
//! temporary data directory (stoppable and restartable on the same port), and helpers to run
//! the JS interop script in `tests/js`.

pub mod dav_bridge;
pub mod dav_proxy;
pub mod fakes;
pub mod process;
pub mod radicale;
pub mod rust_client;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Environment variable: run the interop tests against this already running server
/// (`ws://HOST:PORT`) instead of starting driftless. Used to validate the tests against the
/// reference servers.
pub const EXTERNAL_SERVER_ENV: &str = "DRIFTLESS_TEST_SERVER_URL";

/// How long a stopping server may take to drain before the test fails.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Changes a test makes to the server's configuration (applied at every start).
pub type Customize = std::sync::Arc<dyn Fn(&mut driftless_server::Config) + Send + Sync>;

/// A driftless server running in a tokio task on `127.0.0.1:<port>`.
///
/// Dropping it signals shutdown and aborts the task; call [`TestServer::stop`] to wait for a
/// clean shutdown and see the server's result.
pub struct TestServer {
    addr: SocketAddr,
    data_dir: tempfile::TempDir,
    max_message_bytes: Option<usize>,
    customize: Option<Customize>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a server on an OS-assigned port with a fresh temporary data directory and the
    /// default configuration.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None).await
    }

    /// Like [`TestServer::start`], overriding `max_message_bytes` when given.
    pub async fn start_with(max_message_bytes: Option<usize>) -> anyhow::Result<Self> {
        Self::start_custom(max_message_bytes, None).await
    }

    /// Starts a server whose configuration `customize` edits (e.g. adds `[[bridges]]`), on every
    /// start including restarts.
    pub async fn start_with_config(
        customize: impl Fn(&mut driftless_server::Config) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        Self::start_custom(None, Some(std::sync::Arc::new(customize))).await
    }

    async fn start_custom(
        max_message_bytes: Option<usize>,
        customize: Option<Customize>,
    ) -> anyhow::Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("driftless-test-")
            .tempdir()
            .context("creating the server's temporary data directory")?;
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let mut server = Self {
            addr,
            data_dir,
            max_message_bytes,
            customize,
            shutdown: None,
            task: None,
        };
        server.spawn(listener);
        Ok(server)
    }

    fn config(&self) -> driftless_server::Config {
        let defaults = driftless_server::Config::default();
        let data_dir = self.data_dir.path().to_path_buf();
        let max_message_bytes = self.max_message_bytes.unwrap_or(defaults.max_message_bytes);
        let mut config = driftless_server::Config {
            data_dir,
            max_message_bytes,
            // What the server is reachable at (the listener is bound already), so a test's
            // customization can build `public_url` from it.
            listen: self.addr,
            ..defaults
        };
        if let Some(customize) = &self.customize {
            customize(&mut config);
        }
        config
    }

    /// `http://127.0.0.1:<port>`
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spawn(&mut self, listener: TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            // Either an explicit signal or the sender being dropped stops the server.
            let _ = rx.await;
        };
        let config = self.config();
        self.shutdown = Some(tx);
        self.task = Some(tokio::spawn(driftless_server::run(
            listener, config, shutdown,
        )));
    }

    /// `ws://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The `max_message_bytes` the server runs with.
    pub fn max_message_bytes(&self) -> usize {
        self.config().max_message_bytes
    }

    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }

    /// Signals shutdown and waits (bounded) for the server task to finish. Returns the
    /// server's own error, if it failed. A no-op if it is not running.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(STOP_TIMEOUT, task).await {
            Err(_) => bail!(
                "driftless server on {} did not stop within {STOP_TIMEOUT:?} of the shutdown signal",
                self.addr
            ),
            Ok(Err(join)) => Err(anyhow::anyhow!(join).context("driftless server task panicked")),
            Ok(Ok(result)) => result.context("driftless_server::run returned an error"),
        }
    }

    /// Stops the server (if running) and starts a new one on the SAME port with the SAME data
    /// directory.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        let listener = bind_with_retry(self.addr).await?;
        self.spawn(listener);
        Ok(())
    }

    /// Fails clearly unless the server completes a WebSocket upgrade within `within`.
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        wait_for_websocket(&self.url(), within).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds `addr` again, retrying for a few seconds while the previous listener goes away.
pub async fn bind_with_retry(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    Err(anyhow::anyhow!(
        "could not bind {addr} again for the restarted server: {last:?}"
    ))
}

/// Fails clearly unless a WebSocket upgrade at `url` succeeds within `within`.
pub async fn wait_for_websocket(url: &str, within: Duration) -> anyhow::Result<()> {
    match tokio::time::timeout(within, tokio_tungstenite::connect_async(url)).await {
        Ok(Ok((mut ws, _response))) => {
            let _ = ws.close(None).await;
            Ok(())
        }
        Ok(Err(e)) => bail!("server at {url} refused the WebSocket upgrade: {e}"),
        Err(_) => bail!(
            "server at {url} did not complete a WebSocket upgrade within {within:?} \
             (is driftless_server::run implemented yet?)"
        ),
    }
}

/// The server URL from [`EXTERNAL_SERVER_ENV`], if set and non-empty.
pub fn external_server_url() -> Option<String> {
    std::env::var(EXTERNAL_SERVER_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// `tests/js` in the source tree.
pub fn js_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// `tests/js/interop.mjs`.
pub fn interop_script() -> PathBuf {
    js_dir().join("interop.mjs")
}

/// Fails with instructions unless the JS dependencies are installed.
pub fn ensure_node_modules() -> anyhow::Result<()> {
    let dir = js_dir().join("node_modules").join("@automerge");
    if !dir.join("automerge-repo").is_dir() {
        bail!(
            "JS dependencies are missing ({} not found): run `npm ci --prefix tests/js` \
             from the repository root first",
            dir.join("automerge-repo").display()
        );
    }
    Ok(())
}

/// The node binary: `$NODE` or `node` on the PATH.
pub fn node_binary() -> String {
    std::env::var("NODE").unwrap_or_else(|_| "node".to_string())
}

/// Runs `node tests/js/interop.mjs <args>` to completion (bounded by `timeout`), with stderr
/// passed through, and returns its stdout. Fails if it exits non-zero.
pub async fn run_interop_helper(args: &[&str], timeout: Duration) -> anyhow::Result<String> {
    ensure_node_modules()?;
    let child = tokio::process::Command::new(node_binary())
        .arg(interop_script())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("spawning node (is Node 20+ installed?)")?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(out) => out.context("waiting for node")?,
        Err(_) => bail!("node interop.mjs {args:?} did not finish within {timeout:?}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "node interop.mjs {args:?} failed ({}); stdout:\n{stdout}",
            out.status
        );
    }
    Ok(stdout)
}

/// The whole document as JSON (maps, lists, text as strings, scalars).
pub fn doc_to_json(doc: &automerge::Automerge) -> anyhow::Result<serde_json::Value> {
    serde_json::to_value(automerge::AutoSerde::from(doc)).context("serializing the document")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn restart_keeps_port_and_data_dir() -> anyhow::Result<()> {
        let mut s = TestServer::start().await?;
        let (addr, dir) = (s.addr(), s.data_dir().to_path_buf());
        s.stop().await?;
        assert!(!s.is_running());
        s.restart().await?;
        assert!(s.is_running());
        assert_eq!(s.addr(), addr);
        assert_eq!(s.data_dir(), dir);
        s.stop().await?;
        Ok(())
    }
}
