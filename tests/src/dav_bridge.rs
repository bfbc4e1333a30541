//! Shared pieces of the CalDAV/CardDAV bridge tests (`tests/caldav_bridge.rs`,
//! `tests/carddav_bridge.rs`): a real DAV server with driftless in front of it (in-process,
//! optionally through the fault proxy of [`crate::dav_proxy`]), driftless's bridge HTTP API,
//! provider-side edits made directly at the DAV server, and app clients (the Rust protocol client
//! and an unmodified JS automerge-repo client) editing records as a well-behaved client does.
//!
//! Must not: reach into driftless's state other than through its public HTTP and WebSocket API
//! (tests that need more do it themselves), or hide a failed step.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use automerge::AutoCommit;
use driftless_bridges::dav::client::{DavClient, Precondition, PutOutcome, SyncOutcome};
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::{
    CalendarEvent, Contact, apply_contact_diff, apply_event_diff, read_contact, read_event,
};
use driftless_server::config::{BridgeConfig, BridgeKind};
use serde_json::Value;

use crate::TestServer;
use crate::dav_proxy::DavProxy;
use crate::radicale::{DavServer, DavServerKind, PASSWORD, USER};
use crate::rust_client::RustClient;

/// How long a client waits for more frames before it calls the exchange finished.
pub const QUIET: Duration = Duration::from_millis(300);

/// A `[[bridges]]` entry as the tests use it: rounds are driven by the test
/// (`POST /v1/bridges/{id}/sync`), apart from the one every bridge runs at startup.
pub fn bridge_config(
    id: &str,
    kind: BridgeKind,
    url: String,
    max_delete_fraction: f64,
) -> BridgeConfig {
    BridgeConfig {
        id: id.into(),
        kind,
        workspace: "default".into(),
        poll_interval: Duration::from_secs(3600),
        max_delete_fraction,
        url,
        username: Some(USER.into()),
        password: Some(PASSWORD.into()),
        hubspot: None,
        google: None,
        graph: None,
        salesforce: None,
    }
}

/// The same entry as `config.toml` text, for the real binary.
pub fn bridge_toml(config: &BridgeConfig) -> String {
    let kind = config.kind.as_str();
    format!(
        "[[bridges]]\nid = \"{}\"\nkind = \"{kind}\"\nworkspace = \"{}\"\nurl = \"{}\"\n\
         username = \"{USER}\"\npassword = \"{PASSWORD}\"\npoll_interval = \"{}s\"\n\
         max_delete_fraction = {:?}\n",
        config.id,
        config.workspace,
        config.url,
        config.poll_interval.as_secs(),
        config.max_delete_fraction,
    )
}

/// driftless's HTTP API at `base` (`http://127.0.0.1:<port>`).
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::new(),
        }
    }

    pub async fn get_json(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("GET {path}"))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: not JSON"))
    }

    /// One round of bridge `id`: the HTTP status and the answer (a report, or an error body).
    pub async fn try_sync(&self, id: &str) -> anyhow::Result<(u16, Value)> {
        let resp = self
            .http
            .post(format!("{}/v1/bridges/{id}/sync", self.base))
            .send()
            .await
            .with_context(|| format!("sync {id}"))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await?;
        let value = serde_json::from_slice(&body).with_context(|| {
            format!(
                "sync {id}: {status}: not JSON: {}",
                String::from_utf8_lossy(&body)
            )
        })?;
        Ok((status, value))
    }

    /// One round of bridge `id` (`query` like `?confirm_deletes=true`); its report.
    pub async fn sync_with(&self, id: &str, query: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}/v1/bridges/{id}/sync{query}", self.base))
            .send()
            .await
            .with_context(|| format!("sync {id}"))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            bail!("sync {id}: {status}: {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).with_context(|| format!("sync {id}: not JSON"))
    }

    pub async fn sync(&self, id: &str) -> anyhow::Result<Value> {
        self.sync_with(id, "").await
    }

    /// Runs a round of bridge `id` and fails unless it pulled, pushed and deleted nothing.
    pub async fn quiet_round(&self, id: &str) -> anyhow::Result<()> {
        let report = self.sync(id).await?;
        for key in ["pulled", "pushed", "deleted"] {
            if report[key].as_u64() != Some(0) {
                bail!("bridge {id}: expected a quiet round, got {report}");
            }
        }
        Ok(())
    }

    /// Every record of `record_type` (tombstones too), as (document id, record).
    pub async fn records(&self, record_type: &str) -> anyhow::Result<Vec<(DocumentId, Value)>> {
        let v = self
            .get_json(&format!(
                "/v1/records?type={record_type}&include_deleted=true"
            ))
            .await?;
        let mut out = Vec::new();
        for r in v["records"]
            .as_array()
            .context("`records` in /v1/records")?
        {
            let url = r["url"].as_str().context("`url` of a record")?;
            let id: DocumentId = url
                .trim_start_matches("automerge:")
                .parse()
                .with_context(|| format!("record url {url}"))?;
            out.push((id, r["record"].clone()));
        }
        Ok(out)
    }

    /// The only record of `record_type` for which `pred` holds (`what` names it in errors).
    pub async fn record_where(
        &self,
        record_type: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<(DocumentId, Value)> {
        let all = self.records(record_type).await?;
        let mut found = all.into_iter().filter(|(_, r)| pred(r));
        let first = found
            .next()
            .with_context(|| format!("no {record_type} record {what}"))?;
        if let Some(second) = found.next() {
            bail!(
                "more than one {record_type} record {what}: {} and {}",
                first.1,
                second.1
            );
        }
        Ok(first)
    }

    /// The record of document `id`.
    pub async fn record(&self, record_type: &str, id: &DocumentId) -> anyhow::Result<Value> {
        self.records(record_type)
            .await?
            .into_iter()
            .find(|(i, _)| i == id)
            .map(|(_, r)| r)
            .with_context(|| format!("no {record_type} record for document {id}"))
    }

    pub async fn bridge_status(&self, id: &str) -> anyhow::Result<Value> {
        let v = self.get_json("/v1/bridges").await?;
        v["bridges"]
            .as_array()
            .and_then(|b| b.iter().find(|b| b["id"] == id).cloned())
            .with_context(|| format!("bridge {id} not listed: {v}"))
    }

    /// `GET /v1/records/{id}/conflicts`: the `conflicts` list.
    pub async fn conflicts(&self, id: &DocumentId) -> anyhow::Result<Vec<Value>> {
        let v = self
            .get_json(&format!("/v1/records/{id}/conflicts"))
            .await?;
        Ok(v["conflicts"]
            .as_array()
            .with_context(|| format!("conflicts of {id}: {v}"))?
            .clone())
    }
}

/// A DAV server, optionally the fault proxy, and driftless in-process with bridges to them.
pub struct Env {
    pub dav: DavServer,
    pub proxy: Option<DavProxy>,
    pub server: TestServer,
    pub api: Api,
}

impl Env {
    /// driftless with the bridges `bridges` makes, talking to the DAV server directly.
    pub async fn start(
        kind: DavServerKind,
        bridges: impl FnOnce(&DavServer) -> Vec<BridgeConfig>,
    ) -> anyhow::Result<Self> {
        let dav = DavServer::start(kind).await?;
        let bridges = bridges(&dav);
        Self::with(dav, None, bridges).await
    }

    /// driftless talking to the DAV server through a [`DavProxy`]; `bridges` gets both to build
    /// URLs (`proxy.proxied(&dav.calendar_url())`).
    pub async fn start_proxied(
        kind: DavServerKind,
        bridges: impl FnOnce(&DavServer, &DavProxy) -> Vec<BridgeConfig>,
    ) -> anyhow::Result<Self> {
        let dav = DavServer::start(kind).await?;
        let proxy = DavProxy::start(&dav.base_url()).await?;
        let bridges = bridges(&dav, &proxy);
        Self::with(dav, Some(proxy), bridges).await
    }

    /// driftless with `bridges`, in front of an already started (and prepared) DAV server.
    pub async fn with(
        dav: DavServer,
        proxy: Option<DavProxy>,
        bridges: Vec<BridgeConfig>,
    ) -> anyhow::Result<Self> {
        let server = TestServer::start_with_config(move |c| c.bridges = bridges.clone()).await?;
        server.wait_ready(Duration::from_secs(10)).await?;
        let api = Api::new(server.http_url());
        Ok(Self {
            dav,
            proxy,
            server,
            api,
        })
    }

    pub fn proxy(&self) -> anyhow::Result<&DavProxy> {
        self.proxy
            .as_ref()
            .context("this environment has no proxy (use Env::start_proxied)")
    }

    /// Stops driftless cleanly and starts it again on the same port and data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.server.restart().await?;
        self.server.wait_ready(Duration::from_secs(10)).await
    }
}

// -------------------------------------------------------------------------------------------------
// The provider side: edits made directly at the DAV server

/// Creates `name` in the collection (`If-None-Match: *`); returns its href.
pub async fn put_new(client: &DavClient, name: &str, body: &str) -> anyhow::Result<String> {
    let href = format!("{}{name}", client.collection_url().path());
    match client.put(&href, body, Precondition::IfNoneMatch).await? {
        PutOutcome::Written { .. } => Ok(href),
        PutOutcome::PreconditionFailed => bail!("{href} exists"),
    }
}

/// Replaces `from` with `to` in the resource at `href` (`If-Match` its current etag).
pub async fn provider_edit(
    client: &DavClient,
    href: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<()> {
    let res = client.get(href).await?.context("resource gone")?;
    if !res.body.contains(from) {
        bail!("{href} does not contain {from:?}:\n{}", res.body);
    }
    let body = res.body.replace(from, to);
    let etag = res.etag.context("no etag")?;
    match client
        .put(href, &body, Precondition::IfMatch(&etag))
        .await?
    {
        PutOutcome::Written { .. } => Ok(()),
        PutOutcome::PreconditionFailed => bail!("{href} changed meanwhile"),
    }
}

/// The body of the resource at `href`.
pub async fn provider_body(client: &DavClient, href: &str) -> anyhow::Result<String> {
    Ok(client
        .get(href)
        .await?
        .with_context(|| format!("{href} is gone"))?
        .body)
}

/// The paths of every member of the collection, from the server's own full listing.
pub async fn provider_hrefs(client: &DavClient) -> anyhow::Result<Vec<String>> {
    let mut hrefs = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let SyncOutcome::Page(page) = client.sync_collection(token.as_deref()).await? else {
            bail!("the server rejected a full listing's token");
        };
        for member in page.changed {
            // Servers answer with paths or full URLs; links hold paths.
            let url = client
                .resolve(&member.href)
                .with_context(|| format!("listed href {}", member.href))?;
            hrefs.push(url.path().to_owned());
        }
        if !page.truncated {
            hrefs.sort();
            return Ok(hrefs);
        }
        token = Some(page.sync_token);
    }
}

// -------------------------------------------------------------------------------------------------
// Apps: the Rust protocol client

/// An app holding document `id` (fetched from the server).
pub async fn app_open(ws_url: &str, id: &DocumentId, peer: &str) -> anyhow::Result<RustClient> {
    let mut app = RustClient::connect(ws_url, peer).await?;
    app.add(id.clone(), AutoCommit::new());
    app.sync_until_quiet(QUIET).await?;
    Ok(app)
}

/// Syncs until the server has acknowledged the app's heads of `id` (it has them durably).
pub async fn app_wait_acknowledged(app: &mut RustClient, id: &DocumentId) -> anyhow::Result<()> {
    for _ in 0..50 {
        app.sync_until_quiet(Duration::from_millis(100)).await?;
        if app.acknowledged(id) {
            return Ok(());
        }
    }
    bail!("the server did not acknowledge the app's change to {id}")
}

/// Adds a document the app created (e.g. with `create_event`) and waits until the server has it.
pub async fn app_add(app: &mut RustClient, mut doc: AutoCommit) -> anyhow::Result<DocumentId> {
    doc.commit();
    let id = DocumentId::from_bytes(&rand::random::<[u8; 16]>());
    app.add(id.clone(), doc);
    app_wait_acknowledged(app, &id).await?;
    Ok(id)
}

/// Edits the app's copy of an event like a well-behaved client (only the changed fields),
/// without sending it yet (an offline edit).
pub fn app_local_edit_event(
    app: &mut RustClient,
    id: &DocumentId,
    edit: impl FnOnce(&mut CalendarEvent),
) -> anyhow::Result<()> {
    let d = app
        .docs
        .get_mut(id)
        .context("the app does not hold the document")?;
    let old = read_event(&d.doc)?;
    let mut new = old.clone();
    edit(&mut new);
    apply_event_diff(&mut d.doc, &old, &new)?;
    d.doc.commit();
    Ok(())
}

/// [`app_local_edit_event`], then waits until the server has the edit durably.
pub async fn app_edit_event(
    app: &mut RustClient,
    id: &DocumentId,
    edit: impl FnOnce(&mut CalendarEvent),
) -> anyhow::Result<()> {
    app_local_edit_event(app, id, edit)?;
    app_wait_acknowledged(app, id).await
}

/// [`app_edit_event`] for a contact.
pub async fn app_edit_contact(
    app: &mut RustClient,
    id: &DocumentId,
    edit: impl FnOnce(&mut Contact),
) -> anyhow::Result<()> {
    let d = app
        .docs
        .get_mut(id)
        .context("the app does not hold the document")?;
    let old = read_contact(&d.doc)?;
    let mut new = old.clone();
    edit(&mut new);
    apply_contact_diff(&mut d.doc, &old, &new)?;
    d.doc.commit();
    app_wait_acknowledged(app, id).await
}

/// The app's copy of event `id` after syncing.
pub async fn app_event(app: &mut RustClient, id: &DocumentId) -> anyhow::Result<CalendarEvent> {
    app.sync_until_quiet(QUIET).await?;
    Ok(read_event(
        &app.docs
            .get(id)
            .context("the app does not hold the document")?
            .doc,
    )?)
}

/// The app's copy of contact `id` after syncing.
pub async fn app_contact(app: &mut RustClient, id: &DocumentId) -> anyhow::Result<Contact> {
    app.sync_until_quiet(QUIET).await?;
    Ok(read_contact(
        &app.docs
            .get(id)
            .context("the app does not hold the document")?
            .doc,
    )?)
}

// -------------------------------------------------------------------------------------------------
// Apps: an unmodified JS automerge-repo client (`tests/js/record-set.mjs`)

/// Opens document `id` with a JS automerge-repo client, assigns the top-level atomic `fields`
/// (`d.key = value`; `{}` only reads), waits until the server acknowledged, and returns the
/// document as the JS client sees it.
pub async fn js_record(ws_url: &str, id: &DocumentId, fields: &Value) -> anyhow::Result<Value> {
    crate::ensure_node_modules()?;
    let script = crate::js_dir().join("record-set.mjs");
    let child = tokio::process::Command::new(crate::node_binary())
        .arg(&script)
        .arg(ws_url)
        .arg(format!("automerge:{id}"))
        .arg(fields.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawning node (is Node 20+ installed?)")?;
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .context("record-set.mjs did not finish within 60 s")?
        .context("waiting for node")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "record-set.mjs {id} {fields} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout.trim().lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("record-set.mjs printed {stdout:?}"))
}
