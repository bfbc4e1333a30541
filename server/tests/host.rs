//! The host carrying out effects, driven by a scripted engine (the real engine is tested in its crate).
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use automerge::Automerge;
use automerge::transaction::Transactable;
use driftless_client_protocol::DocumentId;
use driftless_client_protocol::engine::{
    CloseReason, ConnectionId, Effect, Input, LoadResult, PersistOp, WriteId,
};
use driftless_server::Config;
use driftless_server::host::SyncEngine;
use driftless_server::storage::Storage;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

fn doc_id() -> DocumentId {
    DocumentId::from_bytes(&[9; 16])
}

/// Frames are commands: `persist:<bytes>`, `close`, `flood`, `load`.
struct Script {
    log: Arc<Mutex<Vec<String>>>,
    next_write: WriteId,
    writes: HashMap<WriteId, ConnectionId>,
    loads: Vec<ConnectionId>,
    resident: Automerge,
}

impl Script {
    fn new(log: Arc<Mutex<Vec<String>>>) -> Self {
        let mut doc = automerge::AutoCommit::new();
        doc.put(automerge::ROOT, "resident", true).unwrap();
        Self {
            log,
            next_write: 1,
            writes: HashMap::new(),
            loads: Vec::new(),
            resident: doc.document().clone(),
        }
    }
}

impl SyncEngine for Script {
    fn handle(&mut self, _now: Instant, input: Input, out: &mut Vec<Effect>) {
        let send = |conn, frame: &[u8]| Effect::Send {
            conn,
            frame: frame.to_vec(),
        };
        match input {
            Input::Connected { conn, .. } => {
                self.log.lock().unwrap().push(format!("connected {conn}"))
            }
            Input::Disconnected { conn } => self
                .log
                .lock()
                .unwrap()
                .push(format!("disconnected {conn}")),
            Input::FrameReceived { conn, frame } => {
                if let Some(bytes) = frame.strip_prefix(b"persist:") {
                    let write = self.next_write;
                    self.next_write += 1;
                    self.writes.insert(write, conn);
                    out.push(Effect::Persist {
                        write,
                        doc: doc_id(),
                        workspace: "default".into(),
                        op: PersistOp::Append(bytes.to_vec()),
                    });
                } else if frame == b"close" {
                    out.push(send(conn, b"bye1"));
                    out.push(send(conn, b"bye2"));
                    out.push(Effect::Close {
                        conn,
                        reason: CloseReason {
                            code: 4000,
                            reason: "scripted close".into(),
                        },
                    });
                    out.push(send(conn, b"after close"));
                } else if frame == b"flood" {
                    for _ in 0..20_000 {
                        out.push(send(conn, &[7; 100]));
                    }
                } else if frame == b"load" {
                    self.loads.push(conn);
                    out.push(Effect::Load { doc: doc_id() });
                }
            }
            Input::WriteDurable { write } => {
                if let Some(conn) = self.writes.remove(&write) {
                    out.push(send(conn, format!("ack:{write}").as_bytes()));
                }
            }
            Input::WriteFailed { write, .. } => {
                if let Some(conn) = self.writes.remove(&write) {
                    out.push(send(conn, b"failed"));
                }
            }
            Input::StorageLoaded { result, .. } => {
                let answer: &[u8] = match result {
                    LoadResult::Found { .. } => b"found",
                    LoadResult::NotFound => b"notfound",
                    LoadResult::Failed(_) => b"loadfailed",
                };
                for conn in self.loads.drain(..) {
                    out.push(send(conn, answer));
                }
            }
            Input::Tick | Input::LocalChange { .. } => {}
        }
    }
    fn resident_document_count(&self) -> usize {
        1
    }
    fn document(&self, doc: &DocumentId) -> Option<&Automerge> {
        (*doc == DocumentId::from_bytes(&[1; 16])).then_some(&self.resident)
    }
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    log: Arc<Mutex<Vec<String>>>,
}

async fn start(data_dir: &Path) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    let log = Arc::new(Mutex::new(Vec::new()));
    let engine_log = log.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(driftless_server::run_with_engine(
        listener,
        config,
        async {
            let _ = stopped.await;
        },
        move |_| Script::new(engine_log),
    ));
    Server {
        addr,
        stop: Some(stop),
        task,
        log,
    }
}

impl Server {
    fn begin_shutdown(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }
    async fn finish(self) -> Vec<String> {
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        Arc::try_unwrap(self.log).unwrap().into_inner().unwrap()
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(addr: SocketAddr) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap()
        .0
}

/// Every binary frame until the close frame, and the close code and reason.
async fn read_until_close(ws: &mut Ws) -> (Vec<Vec<u8>>, u16, String) {
    let read = async {
        let mut frames = Vec::new();
        while let Some(message) = ws.next().await {
            match message.unwrap() {
                Message::Binary(b) => frames.push(b.to_vec()),
                Message::Close(Some(frame)) => {
                    while let Some(Ok(_)) = ws.next().await {}
                    return (frames, u16::from(frame.code), frame.reason.to_string());
                }
                _ => {}
            }
        }
        panic!("no close frame");
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap()
}

async fn next_binary(ws: &mut Ws) -> Vec<u8> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Binary(b) = message {
            return b.to_vec();
        }
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_follow_durable_writes_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let mut ws = connect(server.addr).await;
    for i in 0..50 {
        ws.send(Message::binary(format!("persist:{i}").into_bytes()))
            .await
            .unwrap();
    }
    let mut acks = Vec::new();
    for _ in 0..50 {
        acks.push(String::from_utf8(next_binary(&mut ws).await).unwrap());
    }
    let expected: Vec<String> = (1..=50).map(|w| format!("ack:{w}")).collect();
    assert_eq!(acks, expected);

    // The scripted chunks are not Automerge bytes: the load is reported failed, not found.
    ws.send(Message::binary(b"load".to_vec())).await.unwrap();
    assert_eq!(next_binary(&mut ws).await, b"loadfailed");

    // Counters are bumped just after a frame is handed to the socket, so the client may see the
    // frame first: poll briefly.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = http_get(server.addr, "/metrics").await.1;
        if metrics.contains("driftless_messages_out_total 51") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        metrics.contains("driftless_storage_pending_writes 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("driftless_messages_in_total 51"),
        "{metrics}"
    );
    assert!(
        metrics.contains("driftless_messages_out_total 51"),
        "{metrics}"
    );
    assert!(metrics.contains("driftless_connections 1"), "{metrics}");
    assert!(
        metrics.contains("driftless_resident_documents 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("driftless_storage_load_failures_total 1"),
        "{metrics}"
    );

    // A write sent just before shutdown is acknowledged before the 1001 close.
    ws.send(Message::binary(b"persist:last".to_vec()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.begin_shutdown();
    let (frames, code, reason) = read_until_close(&mut ws).await;
    assert_eq!(frames, vec![b"ack:51".to_vec()]);
    assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    let log = server.finish().await;
    assert_eq!(log, vec!["connected 1", "disconnected 1"]);

    let storage = Storage::open(dir.path()).unwrap();
    let chunks = storage.load(&doc_id()).unwrap().unwrap();
    assert_eq!(chunks.len(), 51);
    assert_eq!(chunks[0], b"0");
    assert_eq!(chunks[50], b"last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_effect_flushes_earlier_sends_and_drops_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let mut ws = connect(server.addr).await;
    ws.send(Message::binary(b"close".to_vec())).await.unwrap();
    let (frames, code, reason) = read_until_close(&mut ws).await;
    assert_eq!(frames, vec![b"bye1".to_vec(), b"bye2".to_vec()]);
    assert_eq!((code, reason.as_str()), (4000, "scripted close"));

    let (status, body) = http_get(
        server.addr,
        &format!("/v1/docs/{}", DocumentId::from_bytes(&[1; 16])),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, r#"{"resident":true}"#));

    server.begin_shutdown();
    let log = server.finish().await;
    assert_eq!(log, vec!["connected 1", "disconnected 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_closed_and_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let mut slow = connect(server.addr).await;
    let mut other = connect(server.addr).await;
    slow.send(Message::binary(b"flood".to_vec())).await.unwrap();
    let (frames, code, reason) = read_until_close(&mut slow).await;
    assert!(frames.len() < 20_000, "got {} frames", frames.len());
    assert_eq!(code, 1008);
    assert!(reason.contains("too slow"), "{reason}");

    other.send(Message::binary(b"load".to_vec())).await.unwrap();
    assert_eq!(next_binary(&mut other).await, b"notfound");
    let (_, metrics) = http_get(server.addr, "/metrics").await;
    assert!(
        metrics.contains("driftless_slow_reader_closes_total 1"),
        "{metrics}"
    );

    server.begin_shutdown();
    let (_, code, _) = read_until_close(&mut other).await;
    assert_eq!(code, 1001);
    let mut log = server.finish().await;
    log.sort();
    assert_eq!(
        log,
        vec![
            "connected 1",
            "connected 2",
            "disconnected 1",
            "disconnected 2"
        ]
    );
}
