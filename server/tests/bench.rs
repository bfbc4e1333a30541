//! `driftless bench` against an in-process driftless on port 0: both scenarios complete and report
//! plausible figures (no timing thresholds), and an unreachable server fails cleanly.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use driftless_server::Config;
use driftless_server::bench::{self, BenchArgs, Scenario};
use serde_json::Value;
use tokio::sync::oneshot;

async fn with_server<F, Fut>(f: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    with_server_config(Config::default(), f).await;
}

async fn with_server_config<F, Fut>(config: Config, f: F)
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let config = Config {
        data_dir: dir.path().join("data"),
        ..config
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(driftless_server::run(listener, config, async {
        let _ = stopped.await;
    }));
    f(url).await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

fn number(v: &Value, key: &str) -> f64 {
    v.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_creates_and_fetches_every_doc() {
    with_server(|url| async move {
        let args = BenchArgs {
            docs: 200,
            warmup_docs: 20,
            window: 50,
            phase_timeout_s: 60,
            label: "test".into(),
            server_pid: Some(std::process::id()),
            ..BenchArgs::new(url, Scenario::S1)
        };
        let result = bench::run(&args).await;
        assert_eq!(result["ok"], Value::Bool(true), "{result}");
        assert_eq!(result["scenario"], "s1");
        assert_eq!(result["label"], "test");
        assert_eq!(number(&result, "acked"), 200.0);
        assert_eq!(number(&result, "fetched"), 200.0);
        assert!(number(&result, "ack_docs_per_s") > 0.0);
        assert!(number(&result, "fetch_docs_per_s") > 0.0);
        assert!(number(&result, "ack_server_cpu_s") > 0.0, "{result}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_every_reader_gets_every_edit() {
    with_server(|url| async move {
        let args = BenchArgs {
            readers: 5,
            edits: 10,
            warmup_edits: 2,
            edit_interval_ms: 1,
            phase_timeout_s: 60,
            server_pid: Some(std::process::id()),
            ..BenchArgs::new(url, Scenario::S2)
        };
        let result = bench::run(&args).await;
        assert_eq!(result["ok"], Value::Bool(true), "{result}");
        assert_eq!(result["scenario"], "s2");
        assert_eq!(number(&result, "readers"), 5.0);
        let (p50, p99, max) = (
            number(&result, "p50_ms"),
            number(&result, "p99_ms"),
            number(&result, "max_ms"),
        );
        assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{result}");
        // Arrival comes before apply, edit by edit, so every arrival percentile is at most the
        // apply-inclusive one.
        assert!(p50 <= number(&result, "applied_p50_ms"), "{result}");
        assert!(max <= number(&result, "applied_max_ms"), "{result}");
        assert!(number(&result, "server_cpu_ms_per_edit") > 0.0, "{result}");
        assert!(number(&result, "generator_apply_ms_per_edit_p50") > 0.0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_control_client_completes_under_flood() {
    // A low message rate so the flooders are far over it.
    let mut config = Config::default();
    config.limits.messages_per_second = 50;
    config.limits.message_burst = 50;
    with_server_config(config, |url| async move {
        let args = BenchArgs {
            readers: 3,
            edits: 10,
            warmup_edits: 2,
            edit_interval_ms: 5,
            flooders: 2,
            idle: 5,
            phase_timeout_s: 60,
            server_pid: Some(std::process::id()),
            ..BenchArgs::new(url, Scenario::Flood)
        };
        let result = bench::run(&args).await;
        assert_eq!(result["ok"], Value::Bool(true), "{result}");
        assert_eq!(result["scenario"], "flood");
        assert_eq!(number(&result, "flooders_joined"), 2.0);
        assert_eq!(number(&result, "idle_connected"), 5.0);
        assert!(number(&result, "flood_frames_total") > 0.0, "{result}");
        let (p50, p99) = (number(&result, "p50_ms"), number(&result, "p99_ms"));
        assert!(p50 > 0.0 && p50 <= p99, "{result}");
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_server_is_a_failed_run() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let args = BenchArgs {
        docs: 10,
        ..BenchArgs::new(format!("ws://127.0.0.1:{port}"), Scenario::S1)
    };
    let result = bench::run(&args).await;
    assert_eq!(result["ok"], Value::Bool(false));
    assert!(
        result["error"].as_str().unwrap().contains("connect"),
        "{result}"
    );
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts TCP connections and never answers: the run must fail within the phase timeout.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let args = BenchArgs {
        docs: 10,
        phase_timeout_s: 1,
        ..BenchArgs::new(url, Scenario::S1)
    };
    let result = tokio::time::timeout(Duration::from_secs(20), bench::run(&args))
        .await
        .expect("the run must end by itself");
    assert_eq!(result["ok"], Value::Bool(false), "{result}");
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_idle_connections_stay_open_and_are_measured() {
    // Pings every 200 ms, so the idle second sees several that the clients must answer.
    let config = Config {
        ping_interval: Duration::from_millis(200),
        ..Config::default()
    };
    with_server_config(config, |url| async move {
        let args = BenchArgs {
            connections: 60,
            idle_s: 1,
            // Two source addresses, as the full runs spread over several.
            source_addrs: "127.0.0.1,127.0.0.2".into(),
            connect_parallel: 20,
            phase_timeout_s: 60,
            server_pid: Some(std::process::id()),
            ..BenchArgs::new(url, Scenario::S6)
        };
        let result = bench::run(&args).await;
        assert_eq!(result["ok"], Value::Bool(true), "{result}");
        assert_eq!(result["scenario"], "s6");
        assert_eq!(number(&result, "connections"), 60.0);
        assert_eq!(number(&result, "closed_while_idle"), 0.0);
        assert!(number(&result, "connections_per_s") > 0.0, "{result}");
        assert!(
            number(&result, "server_rss_connected_kib") > 0.0,
            "{result}"
        );
        assert!(number(&result, "idle_cpu_percent").is_finite(), "{result}");
    })
    .await;
}

#[tokio::test]
async fn s6_refuses_a_bad_source_address() {
    let args = BenchArgs {
        connections: 1,
        source_addrs: "not-an-ip".into(),
        ..BenchArgs::new("ws://127.0.0.1:1", Scenario::S6)
    };
    let result = bench::run(&args).await;
    assert_eq!(result["ok"], Value::Bool(false));
    assert!(
        result["error"].as_str().unwrap().contains("--source-addrs"),
        "{result}"
    );
}

/// Runs a server on `data_dir` until `f` is done.
async fn with_server_on<F, Fut, T>(data_dir: &std::path::Path, f: F) -> T
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(driftless_server::run(listener, config, async {
        let _ = stopped.await;
    }));
    let result = f(url).await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_reconnect_after_a_restart_loads_only_the_requested_documents() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let state = dir.path().join("s4.jsonl");
    let args = |url: String, scenario| BenchArgs {
        state_file: Some(state.clone()),
        small_docs: 60,
        large_docs: 2,
        large_ops: 200,
        clients: 10,
        docs_per_client: 4,
        window: 20,
        phase_timeout_s: 60,
        server_pid: Some(std::process::id()),
        ..BenchArgs::new(url, scenario)
    };
    let seeded = with_server_on(&data, |url| async move {
        bench::run(&args(url, Scenario::S4Seed)).await
    })
    .await;
    assert_eq!(seeded["ok"], Value::Bool(true), "{seeded}");
    assert_eq!(number(&seeded, "seeded"), 62.0);
    // The restart: a new server process state on the same data.
    let result = with_server_on(&data, |url| async move {
        bench::run(&args(url, Scenario::S4)).await
    })
    .await;
    assert_eq!(result["ok"], Value::Bool(true), "{result}");
    assert_eq!(result["scenario"], "s4");
    // 10 clients x (1 large + 3 small): 30 small documents and both large ones.
    assert_eq!(number(&result, "requested_docs"), 32.0);
    assert_eq!(number(&result, "docs_in_sync"), 40.0);
    assert_eq!(number(&result, "docs_loaded"), 32.0, "{result}");
    assert!(number(&result, "all_in_sync_s") > 0.0);
    // Up to date: a small document costs a few hundred bytes, not its content again.
    let small = number(&result, "small_doc_bytes_p50");
    assert!(small > 0.0 && small < 1024.0, "{result}");
    assert!(number(&result, "large_doc_bytes_p50") > 0.0);
}

#[tokio::test]
async fn s4_without_a_seed_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let args = BenchArgs {
        state_file: Some(dir.path().join("missing.jsonl")),
        ..BenchArgs::new("ws://127.0.0.1:1", Scenario::S4)
    };
    let result = bench::run(&args).await;
    assert_eq!(result["ok"], Value::Bool(false));
    assert!(
        result["error"].as_str().unwrap().contains("s4-seed"),
        "{result}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_typists_reach_their_readers_step_by_step() {
    with_server(|url| async move {
        let args = BenchArgs {
            s3_ops: 2_000,
            typists: "2 1".into(),
            step_s: 2,
            phase_timeout_s: 60,
            server_pid: Some(std::process::id()),
            ..BenchArgs::new(url, Scenario::S3)
        };
        let result = bench::run(&args).await;
        assert_eq!(result["ok"], Value::Bool(true), "{result}");
        assert_eq!(result["scenario"], "s3");
        let steps = result["steps"].as_array().unwrap();
        // Steps run ascending; each keystroke reached all 4 readers of its typist.
        assert_eq!(steps[0]["typists"], 1);
        for step in steps {
            assert_eq!(step["undelivered"], 0, "{result}");
            assert!(step["keystrokes"].as_u64().unwrap() > 0, "{result}");
            assert!(step["p99_ms"].as_f64().unwrap() > 0.0, "{result}");
        }
        assert!(number(&result, "sustained_typists") >= 1.0, "{result}");
    })
    .await;
}
