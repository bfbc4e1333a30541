//! Crash test: two Rust clients and a JS client write one document continuously while the server process is
//! killed with SIGKILL at random moments and restarted, at least 10 rounds. After each kill, before
//! the restart (so no client can resend anything), the data directory is opened directly and every
//! change whose heads the server had acknowledged to either client must be in it. At the end all
//! clients and a fresh one converge.
//!
//! Needs the `driftless` binary (`cargo build -p driftless-server --bin driftless`, done by
//! `scripts/test.sh`; `DRIFTLESS_BIN` overrides the path) and `npm ci --prefix tests/js`.
//! `CRASH_SEED=n` fixes the kill timing; `CRASH_ROUNDS=k` changes the number of rounds.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ChangeHash, ROOT, ReadDoc};
use driftless_client_protocol::DocumentId;
use driftless_server::storage::Storage;
use driftless_tests::process::spawn_server;
use driftless_tests::rust_client::RustClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;

fn js_heads(line: &str) -> anyhow::Result<Vec<ChangeHash>> {
    line.split(',')
        .filter(|s| !s.is_empty())
        .map(|h| {
            let bytes = bs58::decode(h).with_check(None).into_vec()?;
            Ok(ChangeHash::try_from(bytes.as_slice())?)
        })
        .collect()
}

/// The Rust writer: edits every 20 ms, reconnecting whenever the server goes away, and publishes
/// the heads the server last reported. Returns its document once told to stop and synced.
async fn rust_writer(
    url: String,
    name: &'static str,
    id: DocumentId,
    mut doc: AutoCommit,
    acked: Arc<Mutex<Vec<ChangeHash>>>,
    mut stop: watch::Receiver<bool>,
) -> AutoCommit {
    let mut n: i64 = 0;
    loop {
        let Ok(mut client) = RustClient::connect(&url, name).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        client.add(id.clone(), doc);
        let result: anyhow::Result<bool> = async {
            loop {
                if *stop.borrow_and_update() {
                    client.sync_until_quiet(Duration::from_millis(500)).await?;
                    return Ok(true);
                }
                n += 1;
                if let Some(d) = client.docs.get_mut(&id) {
                    d.doc.put(ROOT, name, n)?;
                }
                client.flush().await?;
                while client.receive_one(Duration::from_millis(20)).await? {
                    client.flush().await?;
                }
                if let Some(d) = client.docs.get(&id)
                    && !d.server_heads.is_empty()
                {
                    *acked.lock().expect("acked lock") = d.server_heads.clone();
                }
            }
        }
        .await;
        doc = client.docs.remove(&id).expect("document kept").doc;
        match result {
            Ok(true) => return doc,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_changes_survive_sigkill() -> anyhow::Result<()> {
    driftless_tests::ensure_node_modules()?;
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    eprintln!("crash test seed {seed} ({rounds} rounds); replay with CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir()?;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let url = format!("ws://127.0.0.1:{port}");
    let mut server = spawn_server(port, dir.path(), None, "warn").await?;

    let id = DocumentId::generate(rand::random());
    let mut doc = AutoCommit::new().with_actor(automerge::ActorId::from(vec![7u8; 16]));
    doc.put(ROOT, "title", "crash test")?;
    let rust_acked = Arc::new(Mutex::new(Vec::new()));
    let rust2_acked = Arc::new(Mutex::new(Vec::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let second = AutoCommit::new().with_actor(automerge::ActorId::from(vec![8u8; 16]));
    let writer = tokio::spawn(rust_writer(
        url.clone(),
        "rust-a",
        id.clone(),
        doc,
        rust_acked.clone(),
        stop_rx.clone(),
    ));
    let writer2 = tokio::spawn(rust_writer(
        url.clone(),
        "rust-b",
        id.clone(),
        second,
        rust2_acked.clone(),
        stop_rx,
    ));

    // The JS client joins once the document exists on the server.
    for _ in 0..200 {
        if !rust_acked.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut js = Command::new(driftless_tests::node_binary())
        .arg(driftless_tests::js_dir().join("crash-writer.mjs"))
        .arg(&url)
        .arg(format!("automerge:{id}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut js_stdin = js.stdin.take().expect("stdin piped");
    let mut js_lines = BufReader::new(js.stdout.take().expect("stdout piped")).lines();
    let js_acked = Arc::new(Mutex::new(Vec::<ChangeHash>::new()));
    let js_state = Arc::new(Mutex::new(None::<serde_json::Value>));
    let (js_ready_tx, mut js_ready) = watch::channel(false);
    let reader = {
        let (js_acked, js_state) = (js_acked.clone(), js_state.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = js_lines.next_line().await {
                if line == "READY" {
                    let _ = js_ready_tx.send(true);
                } else if let Some(heads) = line.strip_prefix("ACK ") {
                    *js_acked.lock().unwrap() = js_heads(heads).expect("JS heads are bs58check");
                } else if let Some(state) = line.strip_prefix("STATE ") {
                    *js_state.lock().unwrap() =
                        Some(serde_json::from_str(state).expect("STATE json"));
                }
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(20), js_ready.wait_for(|r| *r))
        .await
        .context("JS client found the document")??;

    let mut checked = 0;
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1200))).await;
        server.kill().await?; // SIGKILL
        // Let lines the clients printed before the kill arrive; nothing new can be acknowledged now.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let claims = [
            ("rust-a", rust_acked.lock().unwrap().clone()),
            ("rust-b", rust2_acked.lock().unwrap().clone()),
            ("js", js_acked.lock().unwrap().clone()),
        ];
        {
            let storage = Storage::open(dir.path())?;
            let stored = storage
                .load_document(&id)?
                .context("document stored after the first acknowledgement")?;
            for (who, heads) in &claims {
                for h in heads {
                    assert!(
                        stored.get_change_by_hash(h).is_some(),
                        "seed {seed} round {round}: change {h} acknowledged to the {who} client is missing after SIGKILL"
                    );
                    checked += 1;
                }
            }
        }
        server = spawn_server(port, dir.path(), None, "warn").await?;
    }
    assert!(
        checked >= rounds,
        "every round checked acknowledged heads ({checked})"
    );

    // Heal: both stop writing and must converge with each other and with a fresh client.
    js_stdin.write_all(b"FINISH\n").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_tx.send(true)?;
    let mut rust_doc = tokio::time::timeout(Duration::from_secs(30), writer)
        .await
        .context("rust writer stops")??;
    let mut rust_heads = rust_doc.get_heads();
    rust_heads.sort();
    let mut rust2_doc = tokio::time::timeout(Duration::from_secs(30), writer2)
        .await
        .context("second rust writer stops")??;
    let mut rust2_heads = rust2_doc.get_heads();
    rust2_heads.sort();
    assert_eq!(
        rust2_heads, rust_heads,
        "seed {seed}: the Rust clients converge"
    );
    let rust_json = serde_json::to_value(automerge::AutoSerde::from(&rust_doc))?;

    let mut converged = false;
    for _ in 0..150 {
        if let Some(state) = js_state.lock().unwrap().clone() {
            let heads = js_heads(
                &state["heads"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|h| h.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default(),
            )?;
            let mut heads = heads;
            heads.sort();
            if heads == rust_heads {
                assert_eq!(
                    state["doc"], rust_json,
                    "seed {seed}: JS and Rust documents differ"
                );
                converged = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        converged,
        "seed {seed}: the JS client did not converge with the Rust client"
    );

    let mut fresh = RustClient::connect(&url, "crash-fresh").await?;
    fresh.add(id.clone(), AutoCommit::new());
    fresh.sync_until_quiet(Duration::from_millis(500)).await?;
    let fresh_doc = &mut fresh.docs.get_mut(&id).expect("doc").doc;
    let mut fresh_heads = fresh_doc.get_heads();
    fresh_heads.sort();
    assert_eq!(
        fresh_heads, rust_heads,
        "seed {seed}: a fresh client sees everything"
    );
    assert_eq!(
        serde_json::to_value(automerge::AutoSerde::from(&*fresh_doc))?,
        rust_json
    );
    for key in ["js", "rust-a", "rust-b"] {
        assert!(
            fresh_doc.get(ROOT, key)?.is_some(),
            "{key} edits are present"
        );
    }

    drop(js_stdin);
    let _ = tokio::time::timeout(Duration::from_secs(5), js.wait()).await;
    reader.abort();
    server.kill().await?;
    Ok(())
}

/// SIGTERM drains: writes in flight commit and are acknowledged before the sockets close with 1001,
/// the process exits 0, and every acknowledged document is in storage afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("ws://127.0.0.1:{port}");
    let mut server = spawn_server(port, dir.path(), None, "warn").await?;

    let mut client = RustClient::connect(&url, "sigterm-writer").await?;
    let ids: Vec<DocumentId> = (0..300)
        .map(|_| DocumentId::generate(rand::random()))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        let mut doc = AutoCommit::new();
        doc.put(ROOT, "n", i as i64)?;
        client.add(id.clone(), doc);
    }
    // Two rounds: the first message only announces heads; the server then asks for the changes.
    client.flush().await?;
    let mut answered = 0;
    while answered < ids.len() && client.receive(Duration::from_secs(5)).await?.is_some() {
        answered += 1;
    }
    client.flush().await?; // every document's changes are now on their way
    let pid = server.id().context("server pid")?;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(status.success());

    // Read until the server closes: acknowledgements first, then 1001.
    let close = loop {
        match client.receive(Duration::from_secs(10)).await {
            Ok(Some(_)) => {
                for id in &ids {
                    client.flush_doc(id).await.ok();
                }
            }
            Ok(None) => bail!("no close within 10 s of SIGTERM"),
            Err(e) => break e.to_string(),
        }
    };
    assert!(
        close.contains("1001") || close.contains("Away"),
        "closed with 1001: {close}"
    );
    let exit = tokio::time::timeout(Duration::from_secs(10), server.wait()).await??;
    assert!(exit.success(), "driftless exits 0 after SIGTERM: {exit}");

    let acked: Vec<&DocumentId> = ids.iter().filter(|id| client.acknowledged(id)).collect();
    eprintln!(
        "{} of {} documents acknowledged before the close",
        acked.len(),
        ids.len()
    );
    assert_eq!(
        acked.len(),
        ids.len(),
        "every change sent before SIGTERM is acknowledged"
    );
    let storage = Storage::open(dir.path())?;
    for id in acked {
        let stored = storage
            .load_document(id)?
            .context("acknowledged document stored")?;
        let mut heads = stored.get_heads();
        heads.sort();
        assert_eq!(heads, client.docs[id].server_heads);
    }
    Ok(())
}
