//! A samod 0.16 client and an automerge-repo 2.5.6 JS client exchange documents through the
//! server, in both directions.
//!
//! Needs Node 20+ and `npm ci --prefix tests/js`. With `DRIFTLESS_TEST_SERVER_URL=ws://...` it
//! runs against that server instead of starting driftless (used to validate the test against
//! the reference servers).

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, Automerge, ObjType, ROOT};
use driftless_tests::{
    TestServer, doc_to_json, ensure_node_modules, external_server_url, run_interop_helper,
};
use samod::{AutomergeUrl, BackoffConfig, ConnectionId, DocumentId, Repo, Url};
use serde_json::json;

const STEP: Duration = Duration::from_secs(10);
const NODE_TIMEOUT: Duration = Duration::from_secs(60);

/// The server under test: driftless on port 0 unless an external URL is given.
async fn server() -> anyhow::Result<(Option<TestServer>, String)> {
    if let Some(url) = external_server_url() {
        return Ok((None, url));
    }
    let s = TestServer::start().await?;
    s.wait_ready(Duration::from_secs(5)).await?;
    let url = s.url();
    Ok((Some(s), url))
}

/// A samod repo connected to `url`, and the id of its connection to the server.
async fn samod_client(url: &str) -> anyhow::Result<(Repo, ConnectionId)> {
    let repo = Repo::build_tokio().load().await;
    let dialer = repo
        .dial_websocket(Url::parse(url)?, BackoffConfig::default())
        .map_err(|_| anyhow!("samod repo stopped"))?;
    let peer = tokio::time::timeout(STEP, dialer.established())
        .await
        .context("samod: handshake with the server did not complete within 10 s")?
        .map_err(|e| anyhow!("samod: dialer failed: {e:?}"))?;
    let conn = tokio::time::timeout(STEP, repo.when_connected(peer.peer_id.clone()))
        .await
        .context("samod: connection to the server not reported")?
        .map_err(|_| anyhow!("samod repo stopped"))?;
    Ok((repo, conn.id()))
}

/// Strings as text objects, as automerge 3.x JS clients create them.
fn samod_content() -> anyhow::Result<Automerge> {
    let mut doc = AutoCommit::new();
    let title = doc.put_object(ROOT, "title", ObjType::Text)?;
    doc.splice_text(&title, 0, 0, "from samod")?;
    let items = doc.put_object(ROOT, "items", ObjType::List)?;
    for (i, s) in ["x", "y"].into_iter().enumerate() {
        let t = doc.insert_object(&items, i, ObjType::Text)?;
        doc.splice_text(&t, 0, 0, s)?;
    }
    doc.put(ROOT, "n", 3_i64)?;
    Ok(Automerge::load(&doc.save())?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_finds_a_document_created_by_samod() -> anyhow::Result<()> {
    ensure_node_modules()?;
    let (mut server, url) = server().await?;
    let (repo, conn) = samod_client(&url).await?;

    let handle = repo
        .create(samod_content()?)
        .await
        .map_err(|_| anyhow!("samod repo stopped"))?;
    tokio::time::timeout(STEP, handle.they_have_our_changes(conn))
        .await
        .context("samod: server did not acknowledge the new document within 10 s")?;
    let doc_url = handle.url().to_string();

    let out = run_interop_helper(&[&url, "find-json", &doc_url], NODE_TIMEOUT).await?;
    let line = out.lines().last().context("find-json printed nothing")?;
    let got: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("find-json output {line:?}"))?;
    let want = json!({"title": "from samod", "items": ["x", "y"], "n": 3});
    if got != want {
        bail!("JS client sees {got} for the samod document, expected {want}");
    }

    repo.stop().await;
    if let Some(s) = server.as_mut() {
        s.stop().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samod_finds_a_document_created_by_js() -> anyhow::Result<()> {
    ensure_node_modules()?;
    let (mut server, url) = server().await?;

    let content = json!({"title": "from js", "items": ["a", "b"], "n": 7});
    let out =
        run_interop_helper(&[&url, "create-json", &content.to_string()], NODE_TIMEOUT).await?;
    let doc_url = out
        .lines()
        .last()
        .context("create-json printed nothing")?
        .trim()
        .to_string();
    let doc_url: AutomergeUrl = doc_url
        .parse()
        .map_err(|e| anyhow!("create-json printed {doc_url:?}, not an automerge URL: {e:?}"))?;
    let doc_id: DocumentId = doc_url.document_id().clone();

    let (repo, _conn) = samod_client(&url).await?;
    let handle = tokio::time::timeout(STEP, repo.find(doc_id))
        .await
        .context("samod: find did not finish within 10 s")?
        .map_err(|_| anyhow!("samod repo stopped"))?
        .context("samod: the server says the JS-created document is unavailable")?;
    let got = handle.with_document(|d| doc_to_json(d))?;
    if got != content {
        bail!("samod sees {got} for the JS document, expected {content}");
    }

    repo.stop().await;
    if let Some(s) = server.as_mut() {
        s.stop().await?;
    }
    Ok(())
}
