//! The `driftless` binary: parses the command line, sets up logging and runs the server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use driftless_server::{Config, Overrides};

#[derive(Debug, Parser)]
#[command(
    name = "driftless",
    version,
    about = "An automerge-repo compatible sync server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sync server. Flags override the config file, which overrides the defaults.
    Serve(ServeArgs),
    /// Drive an automerge-repo WebSocket server with a benchmark scenario; prints one JSON line.
    Bench(driftless_server::bench::BenchArgs),
    // The `token` subcommand comes with its issue.
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML config file (optional).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:3030.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory holding the database.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let overrides = Overrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
        };
        Ok(Config::load(self.config.as_deref(), overrides)?)
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Bench(args) = &cli.command {
        // stdout carries the result line only.
        std::process::exit(driftless_server::bench::main(args));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Bench(_) => Ok(()),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        println!("driftless listening on {addr}");
        driftless_server::run(listener, config, shutdown_signal()).await
    })
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:4000\"\nmax_message_bytes = 2048\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "driftless",
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--listen",
            "127.0.0.1:5000",
            "--data-dir",
            "/tmp/x",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        let config = args.config().unwrap();
        assert_eq!(config.listen, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(config.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(config.max_message_bytes, 2048);
    }

    #[test]
    fn serve_needs_no_config() {
        let cli = Cli::try_parse_from(["driftless", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        let config = args.config().unwrap();
        assert_eq!(config.listen, Config::default().listen);
    }
}
