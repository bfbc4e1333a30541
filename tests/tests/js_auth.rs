//! Runs `tests/js/auth.mjs`: an unmodified automerge-repo client connected with `?ticket=` keeps
//! syncing after its connection drops and after a server restart, reconnecting on its own with the
//! same ticket URL.
//!
//! Client A reaches the server through a TCP proxy in this test, so its connections can be cut while
//! the server keeps running (and keeps the ticket's binding to A's peerId: the reconnect must pass
//! the binding check). Then the server restarts on the same port, which forgets the binding; A's
//! first join after it binds the ticket again. Client B connects directly with its own ticket.
//!
//! Needs Node 20+ and `npm ci --prefix tests/js`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use driftless_server::Config;
use driftless_server::auth::{ClaimRole, Claims, Keys, Secret, unix_now};
use driftless_server::config::AuthConfig;
use driftless_tests::{bind_with_retry, ensure_node_modules, js_dir, node_binary};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};

const SECRET: &str = "js-auth-test-secret-0123456789-0123456789";
const TIMEOUT: Duration = Duration::from_secs(90);

struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

fn start(listener: TcpListener, data_dir: &Path) -> Server {
    let config = Config {
        data_dir: data_dir.to_owned(),
        auth: Some(AuthConfig::with_secret(SECRET.as_bytes().to_vec())),
        ..Config::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(driftless_server::run(listener, config, async {
        let _ = stopped.await;
    }));
    Server { stop, task }
}

impl Server {
    async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .context("server did not stop within 10 s")??
    }
}

fn token() -> String {
    Keys {
        current: Secret::new(SECRET.as_bytes().to_vec()),
        previous: None,
    }
    .sign(&Claims {
        sub: "js".into(),
        ws: "js-workspace".into(),
        role: ClaimRole::Write,
        exp: unix_now() + 3600,
        docs: None,
        tkt: None,
    })
}

/// `POST /v1/tickets` with the bearer token; returns the ticket.
async fn ticket(addr: SocketAddr, token: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let request = format!(
        "POST /v1/tickets HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    s.read_to_string(&mut response).await?;
    ensure!(response.starts_with("HTTP/1.1 200"), "ticket: {response}");
    let body = response.split_once("\r\n\r\n").context("body")?.1;
    let v: serde_json::Value = serde_json::from_str(body)?;
    Ok(v["ticket"].as_str().context("ticket in body")?.to_owned())
}

async fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<f64> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0))
}

/// A TCP proxy to `target` whose connections can all be cut at once.
struct Proxy {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    live: Arc<Mutex<Vec<AbortHandle>>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let live: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let task = {
            let (accepted, live) = (accepted.clone(), live.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::Relaxed);
                    let pipe = tokio::spawn(async move {
                        // A server that is down (restarting) drops the client, which retries.
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    live.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(pipe.abort_handle());
                }
            })
        };
        Ok(Self {
            addr,
            accepted,
            live,
            task,
        })
    }

    /// Drops every proxied connection (both sockets close under the peers).
    fn cut(&self) -> usize {
        let live = std::mem::take(&mut *self.live.lock().unwrap_or_else(|p| p.into_inner()));
        let n = live.len();
        for pipe in live {
            pipe.abort();
        }
        n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_client_reconnects_with_its_ticket() -> anyhow::Result<()> {
    ensure_node_modules()?;
    let data_dir = tempfile::tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut server = Some(start(listener, data_dir.path()));
    let proxy = Proxy::start(addr).await?;

    let token = token();
    let url_a = format!(
        "ws://{}/?ticket={}",
        proxy.addr,
        ticket(addr, &token).await?
    );
    let url_b = format!("ws://{addr}/?ticket={}", ticket(addr, &token).await?);

    let mut child = tokio::process::Command::new(node_binary())
        .arg(js_dir().join("auth.mjs"))
        .arg(&url_a)
        .arg(&url_b)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("spawning node (is Node 20+ installed?)")?;
    let mut stdin = child.stdin.take().context("node stdin")?;
    let mut lines = BufReader::new(child.stdout.take().context("node stdout")?).lines();

    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut transcript = Vec::new();
    let mut cut = 0;
    while let Some(line) = tokio::time::timeout_at(deadline, lines.next_line())
        .await
        .context("auth.mjs did not finish in time")??
    {
        println!("[auth.mjs] {line}");
        transcript.push(line.clone());
        match line.as_str() {
            "DROP" => {
                cut = proxy.cut();
                ensure!(
                    cut >= 1,
                    "client A had no connection through the proxy to cut"
                );
                stdin.write_all(b"DROPPED\n").await?;
            }
            "ok reconnect-after-drop" => {
                // The reconnect went through the binding check, and passed it.
                ensure!(
                    proxy.accepted.load(Ordering::Relaxed) >= 2,
                    "client A did not open a new connection after the cut"
                );
                let mismatches = metric(
                    addr,
                    "driftless_refusals_total{kind=\"ticket_peer_mismatch\"}",
                )
                .await?;
                ensure!(mismatches == 0.0, "{mismatches} ticket/peer mismatches");
            }
            "RESTART" => {
                if let Some(s) = server.take() {
                    s.shutdown().await?;
                }
                let listener = bind_with_retry(addr).await?;
                server = Some(start(listener, data_dir.path()));
                stdin.write_all(b"RESTARTED\n").await?;
            }
            _ => {}
        }
        stdin.flush().await?;
    }
    let status = tokio::time::timeout_at(deadline, child.wait())
        .await
        .context("node did not exit")??;
    proxy.task.abort();
    if let Some(s) = server.take() {
        s.shutdown().await?;
    }
    let passed = |step: &str| transcript.iter().any(|l| l == &format!("ok {step}"));
    if !status.success()
        || ![
            "ticket-connect",
            "reconnect-after-drop",
            "reconnect-after-restart",
        ]
        .iter()
        .all(|s| passed(s))
    {
        bail!("auth.mjs failed ({status}):\n{}", transcript.join("\n"));
    }
    eprintln!("cut {cut} proxied connection(s) of client A");
    Ok(())
}
