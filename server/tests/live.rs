//! A real server on port 0: HTTP endpoints, WebSocket close codes, shutdown and restart.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use automerge::transaction::Transactable;
use driftless_client_protocol::DocumentId;
use driftless_client_protocol::engine::PersistOp;
use driftless_server::storage::{PersistRequest, Storage};
use driftless_server::{Config, Durability};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start(listener: tokio::net::TcpListener, data_dir: &Path) -> Server {
    start_with(
        listener,
        Config {
            data_dir: data_dir.to_owned(),
            max_message_bytes: 1024,
            ..Config::default()
        },
    )
}

fn start_with(listener: tokio::net::TcpListener, config: Config) -> Server {
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(driftless_server::run(listener, config, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop: Some(stop),
        task,
    }
}

impl Server {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("run returns promptly after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// A minimal HTTP/1.1 GET: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr, path: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap();
    ws
}

/// Reads until a close frame arrives; returns its code and reason.
async fn expect_close(ws: &mut Ws) -> (u16, String) {
    let read = async {
        while let Some(message) = ws.next().await {
            if let Message::Close(frame) = message.unwrap() {
                let frame = frame.expect("close frame has a code");
                // Reading on sends our close reply and completes the handshake.
                while let Some(Ok(_)) = ws.next().await {}
                return (u16::from(frame.code), frame.reason.to_string());
            }
        }
        panic!("stream ended without a close frame");
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("close frame in time")
}

async fn assert_alive(ws: &mut Ws) {
    ws.send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("pong in time")
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(b"still there?".to_vec().into()));
}

fn seed_document(data_dir: &Path) -> DocumentId {
    let storage = Storage::open(data_dir).unwrap();
    let mut doc = automerge::AutoCommit::new();
    let title = doc
        .put_object(automerge::ROOT, "title", automerge::ObjType::Text)
        .unwrap();
    doc.splice_text(&title, 0, 0, "hello").unwrap();
    doc.put(automerge::ROOT, "count", automerge::ScalarValue::counter(3))
        .unwrap();
    let id = DocumentId::from_bytes(&[42; 16]);
    let req = PersistRequest {
        write: 1,
        doc: id.clone(),
        workspace: "default".into(),
        op: PersistOp::Snapshot(doc.save()),
    };
    storage.commit_batch(&[req], Durability::Immediate).unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let seeded = seed_document(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = start(listener, dir.path()).await;
    let addr = server.addr;

    assert_eq!(get(addr, "/healthz").await, (200, "ok".to_owned()));

    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "driftless_connections",
        "driftless_resident_documents",
        "driftless_messages_in_total",
        "driftless_messages_out_total",
        "driftless_storage_commits_total",
        "driftless_storage_commit_batch_size_bucket",
        "driftless_storage_commit_seconds_bucket",
        "driftless_storage_pending_writes",
    ] {
        assert!(body.contains(name), "{name} missing from:\n{body}");
    }

    let (status, body) = get(addr, &format!("/v1/docs/{seeded}")).await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json, serde_json::json!({"title": "hello", "count": 3}));

    let unknown = DocumentId::from_bytes(&[7; 16]);
    let (status, body) = get(addr, &format!("/v1/docs/{unknown}")).await;
    assert_eq!(status, 404);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "document_not_found");

    let (status, body) = get(addr, "/v1/docs/not-an-id!").await;
    assert_eq!(status, 400);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "invalid_document_id");

    let (status, body) = get(addr, "/no/such/path").await;
    assert_eq!(status, 404);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"]["code"], "not_found");

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection_and_shutdown_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = start(listener, dir.path()).await;
    let addr = server.addr;

    let mut texter = connect(addr, "/").await;
    let mut big = connect(addr, "/some/path").await;
    let mut bystander = connect(addr, "/").await;
    assert_alive(&mut bystander).await;

    texter.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        expect_close(&mut texter).await,
        (1003, "text frames are not supported".to_owned())
    );

    big.send(Message::binary(vec![0u8; 2000])).await.unwrap();
    assert_eq!(
        expect_close(&mut big).await,
        (1009, "message too large (limit 1024 bytes)".to_owned())
    );
    let (_, metrics) = get(addr, "/metrics").await;
    assert!(
        metrics.contains("driftless_limit_hits_total{limit=\"max_message_bytes\"} 1"),
        "{metrics}"
    );

    // A frame within the limit is fine, and the other connection carries on.
    let join = driftless_client_protocol::encode(&driftless_client_protocol::Message::Join {
        sender_id: "b".repeat(900),
        supported_protocol_versions: Some(vec!["1".into()]),
        peer_metadata: None,
    });
    assert!(join.len() < 1024);
    bystander.send(Message::binary(join)).await.unwrap();
    let peer = tokio::time::timeout(Duration::from_secs(5), bystander.next())
        .await
        .expect("peer in time")
        .unwrap()
        .unwrap();
    let peer = driftless_client_protocol::decode(&peer.into_data()).unwrap();
    assert_eq!(peer.type_name(), "peer");
    assert_alive(&mut bystander).await;

    let (_, metrics) = get(addr, "/metrics").await;
    assert!(
        metrics.contains("driftless_messages_in_total 1"),
        "{metrics}"
    );

    let mut server = server;
    let _ = server.stop.take().unwrap().send(());
    let (code, reason) = expect_close(&mut bystander).await;
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    assert_eq!(CloseCode::from(code), CloseCode::Away);
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .expect("run returns promptly")
        .unwrap()
        .unwrap();

    // The database is closed: it reopens at once, and the server restarts on the same port.
    Storage::open(dir.path()).unwrap();
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let server = start(listener, dir.path()).await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok".to_owned()));
    let mut again = connect(addr, "/").await;
    assert_alive(&mut again).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_pings_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = start_with(
        listener,
        Config {
            data_dir: dir.path().to_owned(),
            ping_interval: Duration::from_millis(200),
            ..Config::default()
        },
    );
    // tungstenite answers pings only while the stream is read: this one is read, that one is not.
    let mut silent = connect(server.addr, "/").await;
    let mut lively = connect(server.addr, "/").await;
    let reader = tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            match tokio::time::timeout(Duration::from_millis(100), lively.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => panic!("lively peer closed: {frame:?}"),
                Ok(None) => panic!("lively peer's stream ended"),
                _ => {}
            }
        }
        lively
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (code, reason) = expect_close(&mut silent).await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "keep-alive timeout: no pong")
    );
    let mut lively = reader.await.unwrap();
    assert_alive(&mut lively).await;
    server.shutdown().await;
}
