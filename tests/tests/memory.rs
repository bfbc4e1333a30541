//! Bounded memory: a server whose documents go idle stores many more documents than it keeps
//! resident, and its resident set size stops growing with the number stored.
//!
//! Runs the real `driftless` binary (built by `scripts/test.sh`; `DRIFTLESS_BIN` overrides) with
//! `doc_idle_evict = "1s"`, writes several batches of small documents from clients that then leave,
//! and reads the server's RSS from /proc and its resident-document gauge from /metrics.

use std::time::Duration;

use anyhow::Context as _;
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT};
use driftless_client_protocol::DocumentId;
use driftless_tests::process::{metric, rss_kib, spawn_server};
use driftless_tests::rust_client::RustClient;

const BATCHES: usize = 4;
const DOCS_PER_BATCH: usize = 1500;

fn contact(n: usize) -> anyhow::Result<AutoCommit> {
    let mut d = AutoCommit::new();
    d.put(ROOT, "type", "contact")?;
    d.put(ROOT, "name", format!("Person {n}"))?;
    d.put(ROOT, "email", format!("person{n}@example.com"))?;
    d.put(ROOT, "phone", format!("+1555{n:07}"))?;
    let tags = d.put_object(ROOT, "tags", ObjType::List)?;
    d.insert(&tags, 0, "lead")?;
    Ok(d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_memory_stays_bounded_as_documents_accumulate() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("driftless.toml");
    std::fs::write(&config, "doc_idle_evict = \"1s\"\n")?;
    let port = driftless_tests::process::free_port()?;
    let mut server = spawn_server(port, &dir.path().join("data"), Some(&config), "warn").await?;
    let pid = server.id().context("server pid")?;
    let url = format!("ws://127.0.0.1:{port}");

    let mut rss_after = Vec::new();
    let mut early = None;
    for batch in 0..BATCHES {
        let mut client = RustClient::connect(&url, &format!("writer-{batch}")).await?;
        let ids: Vec<DocumentId> = (0..DOCS_PER_BATCH)
            .map(|_| DocumentId::generate(rand::random()))
            .collect();
        for (i, id) in ids.iter().enumerate() {
            client.add(id.clone(), contact(batch * DOCS_PER_BATCH + i)?);
        }
        client.sync_until_quiet(Duration::from_millis(500)).await?;
        for id in &ids {
            assert!(client.acknowledged(id), "document {id} acknowledged");
        }
        if early.is_none() {
            let id = ids[0].clone();
            let json = serde_json::to_value(automerge::AutoSerde::from(&client.docs[&id].doc))?;
            early = Some((id, json));
        }
        assert!(metric(port, "driftless_resident_documents").await? >= DOCS_PER_BATCH as f64);
        drop(client);
        // Idle for longer than doc_idle_evict, plus a tick.
        let mut resident = f64::MAX;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            resident = metric(port, "driftless_resident_documents").await?;
            if resident == 0.0 {
                break;
            }
        }
        assert_eq!(resident, 0.0, "batch {batch}: idle documents were evicted");
        rss_after.push(rss_kib(pid)?);
    }
    eprintln!("RSS after each batch (KiB): {rss_after:?}");
    // Every batch must fit in the memory the first one left behind: growth after the first batch
    // (allocator slack, redb cache) stays below the first batch's own footprint.
    let first = rss_after[0];
    let last = *rss_after.last().expect("batches ran");
    assert!(
        last < first + first / 2,
        "RSS grew from {first} KiB to {last} KiB over {BATCHES} batches of {DOCS_PER_BATCH} documents"
    );

    // Evicted documents are still served: they load on demand.
    let (id, json) = early.expect("first batch");
    let mut reader = RustClient::connect(&url, "reader").await?;
    reader.add(id.clone(), AutoCommit::new());
    reader.sync_until_quiet(Duration::from_millis(500)).await?;
    assert_eq!(
        serde_json::to_value(automerge::AutoSerde::from(&reader.docs[&id].doc))?,
        json
    );
    server.kill().await?;
    Ok(())
}
