//! driftless-server: the only crate that does I/O.
pub mod config;
pub mod loader;
pub mod metrics;
pub mod storage;
pub mod writer;

pub use config::{Config, Durability};

/// Serves on `listener` until `shutdown` resolves, then drains and returns.
pub async fn run(
    _listener: tokio::net::TcpListener,
    _config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    shutdown.await;
    Ok(())
}
