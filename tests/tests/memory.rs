//! Bounded memory: a server whose documents go idle stores many more documents than it keeps
//! resident, and its resident set size stops growing with the number stored.
//!
//! Runs the real `driftless` binary (built by `scripts/test.sh`; `DRIFTLESS_BIN` overrides) with
//! `doc_idle_evict = "1s"`, writes several batches of small documents from clients that then leave,
//! and reads the server's RSS from /proc and its resident-document gauge from /metrics.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ROOT};
use driftless_client_protocol::DocumentId;
use driftless_tests::rust_client::RustClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BATCHES: usize = 4;
const DOCS_PER_BATCH: usize = 1500;

fn driftless_bin() -> PathBuf {
    std::env::var_os("DRIFTLESS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/driftless"))
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS in /proc status")
}

async fn metric(port: u16, name: &str) -> anyhow::Result<f64> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("metric {name}"))
}

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
    let bin = driftless_bin();
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build -p driftless-server --bin driftless`",
            bin.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("driftless.toml");
    std::fs::write(&config, "doc_idle_evict = \"1s\"\n")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut server = tokio::process::Command::new(&bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = server.id().context("server pid")?;
    let url = format!("ws://127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

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
