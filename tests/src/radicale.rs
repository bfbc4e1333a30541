//! Real CalDAV/CardDAV servers for the DAV bridge tests: Radicale 3.9.0 and Xandikos 0.4.10,
//! installed from PyPI into virtualenvs under `target/test-venv/` on first use, started on a
//! free loopback port with a temporary storage folder, and killed on drop.
//!
//! Venv creation is guarded by an exclusive file lock, so concurrent test processes install
//! once and the others wait and reuse it. A `.installed` marker is written last, so an
//! interrupted install is redone rather than trusted.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use driftless_bridges::dav::client::{DavClient, DavClientConfig};
use driftless_bridges::dav::wire::CollectionKind;

pub const RADICALE_VERSION: &str = "3.9.0";
pub const XANDIKOS_VERSION: &str = "0.4.10";

/// How long a started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The user the collections belong to (Radicale with `--auth-type none` takes any password).
pub const USER: &str = "alice";
pub const PASSWORD: &str = "secret";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DavServerKind {
    Radicale,
    Xandikos,
}

impl DavServerKind {
    fn package(self) -> (&'static str, &'static str) {
        match self {
            Self::Radicale => ("radicale", RADICALE_VERSION),
            Self::Xandikos => ("xandikos", XANDIKOS_VERSION),
        }
    }
}

/// `<workspace>/target` (or `$CARGO_TARGET_DIR`).
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .join("target")
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Makes sure `target/test-venv/<package>-<version>/` holds the pinned server and returns the
/// venv's directory. Blocking; safe to call from several processes at once.
pub fn ensure_venv(kind: DavServerKind) -> anyhow::Result<PathBuf> {
    let (package, version) = kind.package();
    ensure_pip_venv(package, version, &[])
}

/// Makes sure `target/test-venv/<package>-<version>/` holds `package==version` plus the pinned
/// `extra` requirements (`name==version`) and returns the venv's directory. Blocking; safe to
/// call from several processes at once.
pub fn ensure_pip_venv(package: &str, version: &str, extra: &[&str]) -> anyhow::Result<PathBuf> {
    let root = target_dir().join("test-venv");
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let venv = root.join(format!("{package}-{version}"));
    let marker = venv.join(".installed");
    if marker.exists() {
        return Ok(venv);
    }
    let lock_path = root.join(format!("{package}-{version}.lock"));
    let lock = File::create(&lock_path)
        .with_context(|| format!("creating the lock file {}", lock_path.display()))?;
    // Held until `lock` drops at the end of this function; released by the OS if we die.
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    if marker.exists() {
        return Ok(venv);
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv)
            .with_context(|| format!("removing the half-made {}", venv.display()))?;
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
    run(Command::new(&python).args(["-m", "venv"]).arg(&venv))
        .context("creating a Python venv (is python3 with the venv module installed?)")?;
    run(Command::new(venv.join("bin").join("pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .arg(format!("{package}=={version}"))
        .args(extra))
    .with_context(|| format!("pip install {package}=={version} {}", extra.join(" ")))?;
    std::fs::write(&marker, format!("{package}=={version}\n"))?;
    Ok(venv)
}

fn free_port() -> anyhow::Result<u16> {
    let l = StdListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A running DAV server with a calendar and an address book for [`USER`].
pub struct DavServer {
    kind: DavServerKind,
    child: Child,
    addr: SocketAddr,
    storage: tempfile::TempDir,
    calendar_path: String,
    addressbook_path: String,
}

impl DavServer {
    /// Radicale with a calendar `/alice/calendar/` and an address book `/alice/contacts/`.
    pub async fn radicale() -> anyhow::Result<Self> {
        Self::start(DavServerKind::Radicale).await
    }

    /// Xandikos with its default `/user/calendars/calendar/` and
    /// `/user/contacts/addressbook/`.
    pub async fn xandikos() -> anyhow::Result<Self> {
        Self::start(DavServerKind::Xandikos).await
    }

    pub async fn start(kind: DavServerKind) -> anyhow::Result<Self> {
        let venv = tokio::task::spawn_blocking(move || ensure_venv(kind)).await??;
        // The port is free when we look; another process could take it before the server
        // binds, so a server that does not come up is retried on a new port.
        let mut last_err = None;
        for _ in 0..3 {
            let storage = tempfile::Builder::new()
                .prefix("driftless-dav-")
                .tempdir()
                .context("creating the server's storage folder")?;
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let child = spawn(kind, &venv, storage.path(), addr)?;
            let mut server = Self {
                kind,
                child,
                addr,
                storage,
                calendar_path: String::new(),
                addressbook_path: String::new(),
            };
            match server.wait_ready().await {
                Ok(()) => {
                    server.create_collections().await?;
                    return Ok(server);
                }
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("{kind:?} did not start")))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{:?} exited on start ({status}); its log:\n{}",
                    self.kind,
                    self.log()
                );
            }
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{:?} did not listen on {} within {START_TIMEOUT:?}; its log:\n{}",
                    self.kind,
                    self.addr,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn create_collections(&mut self) -> anyhow::Result<()> {
        match self.kind {
            DavServerKind::Radicale => {
                self.calendar_path = format!("/{USER}/calendar/");
                self.addressbook_path = format!("/{USER}/contacts/");
                self.calendar()?
                    .create_collection("Calendar")
                    .await
                    .context("MKCALENDAR on Radicale")?;
                self.addressbook()?
                    .create_collection("Contacts")
                    .await
                    .context("extended MKCOL on Radicale")?;
            }
            DavServerKind::Xandikos => {
                // `--defaults` made both collections.
                self.calendar_path = "/user/calendars/calendar/".to_string();
                self.addressbook_path = "/user/contacts/addressbook/".to_string();
            }
        }
        Ok(())
    }

    pub fn kind(&self) -> DavServerKind {
        self.kind
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calendar_url(&self) -> String {
        format!("{}{}", self.base_url(), self.calendar_path)
    }

    pub fn addressbook_url(&self) -> String {
        format!("{}{}", self.base_url(), self.addressbook_path)
    }

    /// A fresh client (own request counter) for the calendar, as [`USER`].
    pub fn calendar(&self) -> anyhow::Result<DavClient> {
        self.client(self.calendar_url(), CollectionKind::Calendar)
    }

    /// A fresh client (own request counter) for the address book, as [`USER`].
    pub fn addressbook(&self) -> anyhow::Result<DavClient> {
        self.client(self.addressbook_url(), CollectionKind::AddressBook)
    }

    fn client(&self, url: String, kind: CollectionKind) -> anyhow::Result<DavClient> {
        Ok(DavClient::new(
            DavClientConfig::new(url, kind).basic_auth(USER, PASSWORD),
        )?)
    }

    /// The server's stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.storage.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for DavServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    kind: DavServerKind,
    venv: &Path,
    storage: &Path,
    addr: SocketAddr,
) -> anyhow::Result<Child> {
    let log = File::create(storage.join("server.log"))?;
    let log2 = log.try_clone()?;
    let bin = venv.join("bin");
    let mut cmd = match kind {
        DavServerKind::Radicale => {
            let mut c = Command::new(bin.join("python"));
            c.args(["-m", "radicale", "--config"])
                .arg("--server-hosts")
                .arg(addr.to_string())
                // 3.9.0 defaults to `denyall`; `none` accepts any Basic credentials and makes
                // the user name the principal.
                .args(["--auth-type", "none"])
                .arg("--storage-filesystem-folder")
                .arg(storage.join("collections"))
                .args(["--logging-level", "warning"]);
            c
        }
        DavServerKind::Xandikos => {
            let mut c = Command::new(bin.join("xandikos"));
            c.arg("serve")
                .arg("-d")
                .arg(storage.join("data"))
                .arg("--defaults")
                .args(["-l", "127.0.0.1"])
                .args(["-p", &addr.port().to_string()]);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .with_context(|| format!("starting {kind:?} from {}", venv.display()))
}
