//! driftless-server: the only crate that does I/O. (Interface fixed; implementation in progress.)

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Server settings: defaults, overridden by the TOML file, overridden by flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub max_message_bytes: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3030)),
            data_dir: PathBuf::from("./driftless-data"),
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Serves on `listener` until `shutdown` resolves, then drains and returns.
pub async fn run(
    _listener: tokio::net::TcpListener,
    _config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    shutdown.await;
    Ok(())
}
