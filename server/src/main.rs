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
    /// Development tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print a signed token (the secret comes from the variable named by `[auth] secret_env` in
    /// the config file, else from DRIFTLESS_SECRET).
    Issue(IssueArgs),
}

#[derive(Debug, clap::Args)]
struct IssueArgs {
    /// Workspace the token grants.
    #[arg(long)]
    workspace: String,
    /// `read` or `write`.
    #[arg(long, value_parser = ["read", "write"])]
    role: String,
    /// Lifetime, e.g. 30m, 1h.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Limit the token to this document (repeatable).
    #[arg(long = "doc", value_name = "DOCUMENT_ID")]
    docs: Vec<String>,
    /// Subject (who the token is for).
    #[arg(long, default_value = "dev")]
    sub: String,
    /// Config file naming the secret's environment variable.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
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
    /// Without [auth], allow listening on a non-loopback address (anyone who can connect can read
    /// and write everything).
    #[arg(long)]
    allow_anonymous: bool,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let overrides = Overrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            allow_anonymous: self.allow_anonymous,
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
    let directives = log_directives(std::env::var("RUST_LOG").ok().as_deref());
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&directives)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_directives(None))),
        )
        .init();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Token(TokenCommand::Issue(args)) => {
            println!("{}", issue(&args, &|name| std::env::var(name).ok())?);
            Ok(())
        }
        Command::Bench(_) => Ok(()),
    }
}

/// A signed token for `args`; `env` is the process environment.
fn issue(args: &IssueArgs, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<String> {
    use driftless_server::auth::{ClaimRole, Claims, Keys, MIN_SECRET_BYTES, Secret};
    let var = match &args.config {
        Some(path) => {
            let config = Config::load(Some(path), Overrides::default())?;
            match config.auth {
                Some(auth) => auth.secret_env,
                None => anyhow::bail!("{} has no [auth] section", path.display()),
            }
        }
        None => "DRIFTLESS_SECRET".to_owned(),
    };
    let secret = env(&var)
        .with_context(|| format!("environment variable {var} (the signing secret) is not set"))?;
    anyhow::ensure!(
        secret.len() >= MIN_SECRET_BYTES,
        "the secret in {var} is shorter than {MIN_SECRET_BYTES} bytes"
    );
    let ttl = driftless_server::config::parse_duration(&args.ttl)
        .map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    anyhow::ensure!(!args.workspace.is_empty(), "--workspace must not be empty");
    for doc in &args.docs {
        doc.parse::<driftless_client_protocol::DocumentId>()
            .map_err(|e| anyhow::anyhow!("--doc {doc}: {e}"))?;
    }
    let claims = Claims {
        sub: args.sub.clone(),
        ws: args.workspace.clone(),
        role: if args.role == "read" {
            ClaimRole::Read
        } else {
            ClaimRole::Write
        },
        exp: driftless_server::auth::unix_now().saturating_add(ttl.as_secs().max(1)),
        docs: (!args.docs.is_empty()).then(|| args.docs.clone()),
        tkt: None,
    };
    let keys = Keys {
        current: Secret::new(secret.into_bytes()),
        previous: None,
    };
    Ok(keys.sign(&claims))
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

/// The log filter: `RUST_LOG` (default `info`), with automerge held at `warn` unless `RUST_LOG`
/// names it. automerge's `load_changes` is an INFO-level `#[instrument]` span whose fields include
/// the document's whole change graph, formatted with `Debug` every time changes are applied: with
/// the span enabled that formatting was half the server's CPU on a 20k-change document
/// (docs/benchmarks.md, S3).
fn log_directives(env: Option<&str>) -> String {
    match env.map(str::trim).filter(|e| !e.is_empty()) {
        Some(e) if e.contains("automerge") => e.to_owned(),
        Some(e) => format!("{e},automerge=warn"),
        None => "info,automerge=warn".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn automerge_spans_stay_off_unless_asked_for() {
        assert_eq!(log_directives(None), "info,automerge=warn");
        assert_eq!(log_directives(Some("")), "info,automerge=warn");
        assert_eq!(log_directives(Some("debug")), "debug,automerge=warn");
        assert_eq!(
            log_directives(Some("info,automerge=trace")),
            "info,automerge=trace"
        );
    }

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
            panic!("serve")
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
            panic!("serve")
        };
        let config = args.config().unwrap();
        assert_eq!(config.listen, Config::default().listen);
        assert!(!config.allow_anonymous);
        let cli = Cli::try_parse_from(["driftless", "serve", "--allow-anonymous"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert!(args.config().unwrap().allow_anonymous);
    }

    #[test]
    fn token_issue_signs_the_contract_format() {
        let secret = "x".repeat(40);
        let doc = driftless_client_protocol::DocumentId::from_bytes(&[3; 16]).to_string();
        let cli = Cli::try_parse_from([
            "driftless",
            "token",
            "issue",
            "--workspace",
            "acme",
            "--role",
            "read",
            "--ttl",
            "1h",
            "--doc",
            &doc,
        ])
        .unwrap();
        let Command::Token(TokenCommand::Issue(args)) = cli.command else {
            panic!("token issue")
        };
        let env = |name: &str| (name == "DRIFTLESS_SECRET").then(|| secret.clone());
        let token = issue(&args, &env).unwrap();
        let keys = driftless_server::auth::Keys {
            current: driftless_server::auth::Secret::new(secret.clone().into_bytes()),
            previous: None,
        };
        let claims = keys
            .verify_token(&token, driftless_server::auth::unix_now())
            .unwrap();
        assert_eq!(claims.ws, "acme");
        assert_eq!(claims.role, driftless_server::auth::ClaimRole::Read);
        assert_eq!(claims.docs, Some(vec![doc]));
        let left = claims.exp - driftless_server::auth::unix_now();
        assert!((3590..=3600).contains(&left), "{left}");
        // No secret: a clear error.
        let err = issue(&args, &|_| None).unwrap_err().to_string();
        assert!(err.contains("DRIFTLESS_SECRET"), "{err}");
        assert!(
            Cli::try_parse_from([
                "driftless",
                "token",
                "issue",
                "--workspace",
                "w",
                "--role",
                "admin"
            ])
            .is_err()
        );
    }
}
