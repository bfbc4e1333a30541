//! driftless-server: the only crate that does I/O.
//!
//! Owns the host around the sans-IO engine of `driftless-client-protocol`: WebSocket sockets
//! (axum), the redb database with its group-commit writer, document loads, the HTTP API, metrics,
//! config and the `driftless` binary. [`run`] serves on a bound listener until a shutdown future
//! resolves, so tests start real servers on port 0.
//!
//! Invariants: a change is acknowledged only after the engine saw its `WriteDurable`, which the
//! writer reports only after the commit returned; a failed commit is reported as `WriteFailed`,
//! never swallowed. The engine thread never blocks on a socket or the disk.
//! Must not: implement protocol logic (that is the engine's), or let one connection's behaviour
//! stall the others.

pub mod auth;
pub mod bench;
pub mod bridge;
pub mod config;
pub mod host;
pub mod http;
pub mod identity;
pub mod limits;
pub mod loader;
pub mod metrics;
pub mod occurrences;
pub mod records;
pub mod storage;
pub mod writer;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::Context as _;
use driftless_client_protocol::engine::{Engine, EngineConfig};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

pub use config::{Config, ConfigError, Durability, Overrides};

use crate::metrics::Metrics;
use crate::storage::Storage;

/// Inputs from connections and HTTP waiting for the engine before senders have to wait.
const NETWORK_QUEUE: usize = 4096;
/// Threads loading documents from storage.
const LOADER_THREADS: usize = 2;
/// How long shutdown waits for the HTTP server to finish its requests.
const HTTP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The server's PeerId: stable for a data directory on a host.
pub fn server_peer_id(storage_id: &str) -> String {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let short: String = storage_id.chars().take(8).collect();
    format!("driftless-{host}-{short}")
}

/// Serves on `listener` until `shutdown` resolves, then drains and returns.
///
/// Shutdown: stop accepting, let queued writes commit and their acks go out (up to 5 s), close
/// every WebSocket with 1001 "server shutting down", join the engine, writer and loader threads.
/// When this returns the database is closed and the data directory can be reopened at once.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_engine(listener, config, shutdown, Engine::new).await
}

/// [`run`] with another engine: tests drive the host with scripted engines.
#[doc(hidden)]
pub async fn run_with_engine<E: host::SyncEngine>(
    listener: tokio::net::TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    make_engine: impl FnOnce(EngineConfig) -> E,
) -> anyhow::Result<()> {
    if config.durability == Durability::None {
        warn!(
            "DURABILITY IS OFF (durability = \"none\"): commits are not fsynced and acknowledged \
             changes can be lost in a crash. Use this only for like-for-like benchmarks."
        );
    }
    let local_addr = listener
        .local_addr()
        .context("listener has no local address")?;
    match &config.auth {
        None if !local_addr.ip().is_loopback() && !config.allow_anonymous => {
            anyhow::bail!(
                "refusing to listen on {local_addr} without authentication: add an [auth] section \
                 (see docs/security.md), listen on a loopback address, or pass --allow-anonymous"
            );
        }
        None => warn!(
            addr = %local_addr,
            "OPEN DEVELOPMENT MODE: no [auth] section, so no authentication: every peer can read and \
             write every document (all in workspace \"default\")"
        ),
        Some(auth) => info!(
            secret_env = %auth.secret_env,
            previous_secret = auth.keys.previous.is_some(),
            ticket_ttl_s = auth.ticket_ttl.as_secs(),
            "authentication on: tokens and tickets required"
        ),
    }
    let data_dir = config.data_dir.clone();
    let storage = tokio::task::spawn_blocking(move || Storage::open(&data_dir))
        .await
        .context("storage open task failed")??;
    let peer_id = server_peer_id(storage.storage_id());
    info!(peer_id = %peer_id, storage_id = %storage.storage_id(), data_dir = %config.data_dir.display(), "storage open");

    let metrics = Arc::new(Metrics::default());
    let (internal_tx, internal_rx) = mpsc::unbounded_channel();
    let (write_queue, write_rx) = writer::channel(metrics.clone());
    let writer_thread = {
        let tx = internal_tx.clone();
        writer::spawn(
            write_rx,
            storage.clone(),
            config.durability,
            metrics.clone(),
            move |input| {
                let _ = tx.send(input);
            },
        )
        .context("cannot start the writer thread")?
    };
    let loader = {
        let tx = internal_tx.clone();
        loader::Loader::spawn(
            storage.clone(),
            LOADER_THREADS,
            metrics.clone(),
            move |input| {
                let _ = tx.send(input);
            },
        )
        .context("cannot start the loader threads")?
    };
    let storage_id = storage.storage_id().to_owned();
    let (net_tx, net_rx) = mpsc::channel(NETWORK_QUEUE);
    // Bridges hold the database until `Bridges::shutdown`; the HTTP state until the server ends.
    let bridges = Arc::new(bridge::Bridges::start(
        &config.bridges,
        &config.policies,
        &storage,
        net_tx.clone(),
        config.public_url.as_deref(),
        config.phone_region(),
    )?);
    let http_storage = storage.clone();
    // The writer and loader threads now hold the database; ours goes, so that joining them closes it.
    drop(storage);

    let (stop_engine, stop) = oneshot::channel();
    let engine_thread = host::spawn(host::HostParts {
        engine: make_engine(EngineConfig {
            idle_evict: config.doc_idle_evict,
            small_idle_evict: config.small_doc_idle_evict.min(config.doc_idle_evict),
            max_document_bytes: Some(config.limits.max_document_bytes),
            ..EngineConfig::new(peer_id, storage_id)
        }),
        net_rx,
        internal_rx,
        internal_tx,
        writes: write_queue,
        loader,
        metrics: metrics.clone(),
        stop,
    })
    .context("cannot start the engine thread")?;

    let state = http::AppState {
        net_tx: net_tx.clone(),
        metrics: metrics.clone(),
        ws: ws::WsContext {
            net_tx,
            metrics,
            next_conn: Arc::new(AtomicU64::new(1)),
            max_message_bytes: config.max_message_bytes,
            ping_interval: config.ping_interval,
            limits: config.limits.clone(),
        },
        auth: config.auth.clone().map(Arc::new),
        admission: limits::Admission::new(&config.limits),
        bridges: bridges.clone(),
        records: records::RecordIndex::new(http_storage.clone()),
        storage: http_storage,
        phone_region: config.phone_region(),
        public_url: config.public_url.clone(),
    };
    let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
    let (stop_accepting, stop_accepting_rx) = oneshot::channel::<()>();
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_accepting_rx.await;
            })
            .await
    });
    info!(addr = %local_addr, "listening");

    let mut outcome = Ok(());
    tokio::select! {
        () = shutdown => info!("shutting down"),
        result = &mut server => {
            outcome = Err(match result {
                Ok(Ok(())) => anyhow::anyhow!("HTTP server stopped unexpectedly"),
                Ok(Err(e)) => anyhow::Error::new(e).context("HTTP server failed"),
                Err(e) => anyhow::Error::new(e).context("HTTP server task failed"),
            });
            error!("HTTP server ended early; shutting down");
        }
    }

    // Stop accepting and stop the bridges (what a round did not commit is redone after restart),
    // then drain the engine (writes, acks, closes) on its own thread.
    let _ = stop_accepting.send(());
    bridges.shutdown().await;
    let _ = stop_engine.send(());
    join_thread(engine_thread, "engine").await;
    // The engine dropped its write queue and loader; the writer finishes what is queued and exits.
    join_thread(writer_thread, "writer").await;

    if !server.is_finished() {
        match tokio::time::timeout(HTTP_SHUTDOWN_TIMEOUT, &mut server).await {
            Ok(_) => {}
            Err(_) => {
                warn!("HTTP requests still running after {HTTP_SHUTDOWN_TIMEOUT:?}; aborting them");
                server.abort();
                // Awaiting the aborted task drops its state (and its database handle).
                let _ = server.await;
            }
        }
    }
    info!("stopped");
    outcome
}

async fn join_thread(handle: std::thread::JoinHandle<()>, name: &str) {
    match tokio::task::spawn_blocking(move || handle.join()).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => error!("the {name} thread panicked"),
        Err(e) => error!(error = %e, "cannot join the {name} thread"),
    }
}
