//! The authorization matrix against a live server on port 0: every refusal at its proper point.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{AutoCommit, ROOT, ReadDoc};
use driftless_client_protocol::{DocumentId, Message, PeerMetadata, decode, encode};
use driftless_server::Config;
use driftless_server::auth::{ClaimRole, Claims, Keys, Secret, unix_now};
use driftless_server::config::{AuthConfig, Limits};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "current-secret-0123456789-0123456789";
const PREVIOUS: &str = "previous-secret-0123456789-0123456789";
const RETIRED: &str = "retired-secret-0123456789-0123456789";

fn keys(secret: &str) -> Keys {
    Keys {
        current: Secret::new(secret.as_bytes().to_vec()),
        previous: None,
    }
}

fn token_with(
    secret: &str,
    ws: &str,
    role: ClaimRole,
    exp: u64,
    docs: Option<&[&DocumentId]>,
) -> String {
    keys(secret).sign(&Claims {
        sub: "tester".into(),
        ws: ws.into(),
        role,
        exp,
        docs: docs.map(|d| d.iter().map(|d| d.to_string()).collect()),
        tkt: None,
    })
}

fn token(ws: &str, role: ClaimRole) -> String {
    token_with(SECRET, ws, role, unix_now() + 3600, None)
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start(data_dir: &Path, limits: Limits) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut auth = AuthConfig::with_secret(SECRET.as_bytes().to_vec());
    auth.keys.previous = Some(Secret::new(PREVIOUS.as_bytes().to_vec()));
    let config = Config {
        data_dir: data_dir.to_owned(),
        auth: Some(auth),
        limits,
        ..Config::default()
    };
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
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// A minimal HTTP/1.1 request: (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
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

fn error_code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{body}"));
    v["error"]["code"].as_str().unwrap().to_owned()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects with an optional bearer token; `Err((status, body))` when the upgrade is refused.
async fn try_connect(
    addr: SocketAddr,
    path: &str,
    bearer: Option<&str>,
) -> Result<Ws, (u16, String)> {
    let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(t) = bearer {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((status, body))
        }
        Err(e) => panic!("unexpected connect error {e}"),
    }
}

/// A protocol peer over a raw WebSocket.
struct Peer {
    ws: Ws,
    id: String,
    server: String,
}

enum Received {
    Message(Message),
    Closed(u16, String),
    Quiet,
}

impl Peer {
    /// Joins; `Err` carries the close code when the server closes instead of answering `peer`.
    async fn join(mut ws: Ws, id: &str) -> Result<Peer, (u16, String)> {
        let join = Message::Join {
            sender_id: id.into(),
            supported_protocol_versions: Some(vec!["1".into()]),
            peer_metadata: Some(PeerMetadata {
                storage_id: None,
                is_ephemeral: true,
            }),
        };
        ws.send(tungstenite::Message::binary(encode(&join)))
            .await
            .unwrap();
        let mut peer = Peer {
            ws,
            id: id.into(),
            server: String::new(),
        };
        match peer.recv(Duration::from_secs(5)).await {
            Received::Message(Message::Peer { sender_id, .. }) => {
                peer.server = sender_id;
                Ok(peer)
            }
            Received::Closed(code, reason) => Err((code, reason)),
            Received::Message(other) => panic!("expected peer, got {other:?}"),
            Received::Quiet => panic!("no answer to join"),
        }
    }

    async fn recv(&mut self, wait: Duration) -> Received {
        loop {
            let next = match tokio::time::timeout(wait, self.ws.next()).await {
                Err(_) => return Received::Quiet,
                Ok(None) => return Received::Closed(1006, String::new()),
                Ok(Some(Err(_))) => return Received::Closed(1006, String::new()),
                Ok(Some(Ok(m))) => m,
            };
            match next {
                tungstenite::Message::Binary(b) => return Received::Message(decode(&b).unwrap()),
                tungstenite::Message::Close(frame) => {
                    let (code, reason) = frame
                        .map(|f| (u16::from(f.code), f.reason.to_string()))
                        .unwrap_or((1005, String::new()));
                    return Received::Closed(code, reason);
                }
                _ => {}
            }
        }
    }

    async fn send(&mut self, m: &Message) {
        self.ws
            .send(tungstenite::Message::binary(encode(m)))
            .await
            .unwrap();
    }

    fn sync_message(&self, doc: &DocumentId, data: Vec<u8>, request: bool) -> Message {
        let (sender_id, target_id, document_id) =
            (self.id.clone(), self.server.clone(), doc.clone());
        if request {
            Message::Request {
                sender_id,
                target_id,
                document_id,
                data,
            }
        } else {
            Message::Sync {
                sender_id,
                target_id,
                document_id,
                data,
            }
        }
    }

    /// Syncs `local` with the server until nothing moves; returns everything received.
    async fn sync(
        &mut self,
        doc: &DocumentId,
        local: &mut AutoCommit,
        state: &mut sync::State,
    ) -> Vec<Message> {
        let mut received = Vec::new();
        for _ in 0..50 {
            let request = local.get_heads().is_empty();
            if let Some(m) = local.sync().generate_sync_message(state) {
                let m = self.sync_message(doc, m.encode(), request);
                self.send(&m).await;
            }
            match self.recv(Duration::from_millis(500)).await {
                Received::Message(m) => {
                    if let Message::Sync {
                        document_id, data, ..
                    } = &m
                        && document_id == doc
                    {
                        let msg = sync::Message::decode(data).unwrap();
                        local.sync().receive_sync_message(state, msg).unwrap();
                    }
                    let unavailable = matches!(m, Message::DocUnavailable { .. });
                    received.push(m);
                    if unavailable {
                        return received;
                    }
                }
                Received::Closed(code, reason) => panic!("closed {code} {reason}"),
                Received::Quiet => {
                    if local
                        .sync()
                        .generate_sync_message(&mut state.clone())
                        .is_none()
                    {
                        return received;
                    }
                }
            }
        }
        received
    }
}

fn doc_id(n: u8) -> DocumentId {
    DocumentId::from_bytes(&[n; 16])
}

/// No message carries document changes.
fn no_document_bytes(messages: &[Message]) -> bool {
    messages.iter().all(|m| match m {
        Message::Sync { data, .. } | Message::Request { data, .. } => {
            sync::Message::decode(data).unwrap().changes.is_empty()
        }
        _ => true,
    })
}

/// A writer of workspace `acme` creates `doc` with `title = "secret plans"`; returns it connected.
async fn create_doc(addr: SocketAddr, doc: &DocumentId) -> (Peer, AutoCommit, sync::State) {
    let ws = try_connect(addr, "/", Some(&token("acme", ClaimRole::Write)))
        .await
        .unwrap();
    let mut alice = Peer::join(ws, "alice").await.unwrap();
    let mut local = AutoCommit::new();
    local.put(ROOT, "title", "secret plans").unwrap();
    let mut state = sync::State::new();
    alice.sync(doc, &mut local, &mut state).await;
    assert_eq!(
        state.their_heads.clone().unwrap(),
        local.get_heads(),
        "server has it"
    );
    (alice, local, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_are_refused_before_the_websocket_exists() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    let addr = server.addr;
    let now = unix_now();
    let expired = token_with(SECRET, "acme", ClaimRole::Write, now - 1, None);
    let forged = {
        let good = token("acme", ClaimRole::Write);
        let (payload, _) = good.split_once('.').unwrap();
        format!("{payload}.{}", "A".repeat(43))
    };
    let retired = token_with(RETIRED, "acme", ClaimRole::Write, now + 3600, None);
    let good = token("acme", ClaimRole::Write);
    let ticket_json = http(addr, "POST", "/v1/tickets", Some(&good)).await.1;
    let ticket: serde_json::Value = serde_json::from_str(&ticket_json).unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();

    let cases: Vec<(&str, String, Option<&str>, &str)> = vec![
        ("no token", "/".into(), None, "missing_credentials"),
        (
            "expired by 1 s",
            "/".into(),
            Some(&expired),
            "token_expired",
        ),
        ("bad signature", "/".into(), Some(&forged), "bad_signature"),
        (
            "rotated-out secret",
            "/".into(),
            Some(&retired),
            "bad_signature",
        ),
        ("garbage", "/".into(), Some("not-a-token"), "invalid_token"),
        (
            "long-lived token in the URL",
            format!("/?token={good}"),
            None,
            "token_in_url",
        ),
        (
            "token as ticket",
            format!("/?ticket={good}"),
            None,
            "token_in_url",
        ),
        (
            "ticket as bearer",
            "/".into(),
            Some(&ticket),
            "ticket_as_bearer",
        ),
    ];
    for (what, path, bearer, code) in &cases {
        match try_connect(addr, path, *bearer).await {
            Ok(_) => panic!("{what}: upgraded"),
            Err((status, body)) => {
                assert_eq!(status, 401, "{what}: {body}");
                assert_eq!(error_code(&body), *code, "{what}");
            }
        }
    }
    // The same on the HTTP API.
    let doc = doc_id(1).to_string();
    for (what, bearer, code) in [
        ("no token", None, "missing_credentials"),
        ("expired by 1 s", Some(expired.as_str()), "token_expired"),
        ("bad signature", Some(forged.as_str()), "bad_signature"),
        (
            "rotated-out secret",
            Some(retired.as_str()),
            "bad_signature",
        ),
    ] {
        for (method, path) in [
            ("GET", format!("/v1/docs/{doc}")),
            ("POST", "/v1/tickets".into()),
        ] {
            let (status, body) = http(addr, method, &path, bearer).await;
            assert_eq!(status, 401, "{what} {method} {path}: {body}");
            assert_eq!(error_code(&body), code, "{what}");
        }
    }
    // Open endpoints stay open and reveal nothing about documents.
    assert_eq!(
        http(addr, "GET", "/healthz", None).await,
        (200, "ok".into())
    );
    let (status, metrics) = http(addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("driftless_auth_failures_total{reason=\"bad_signature\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains(&doc));
    // A good token and the previous secret both work.
    let previous = token_with(PREVIOUS, "acme", ClaimRole::Write, now + 3600, None);
    for t in [&good, &previous] {
        let ws = try_connect(addr, "/", Some(t)).await.unwrap();
        Peer::join(ws, "ok").await.unwrap();
    }
    assert_eq!(
        http(addr, "GET", &format!("/v1/docs/{doc}"), Some(&previous))
            .await
            .0,
        404
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_workspaces_and_out_of_scope_documents_are_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    let addr = server.addr;
    let (a, b) = (doc_id(1), doc_id(2));
    let (_alice, _, _) = create_doc(addr, &a).await;
    let (_alice_b, _, _) = create_doc(addr, &b).await;

    // Another workspace: `request` and a `sync` with changes both get doc-unavailable, no bytes.
    let ws = try_connect(addr, "/", Some(&token("other", ClaimRole::Write)))
        .await
        .unwrap();
    let mut eve = Peer::join(ws, "eve").await.unwrap();
    let mut empty = AutoCommit::new();
    let got = eve.sync(&a, &mut empty, &mut sync::State::new()).await;
    assert!(
        matches!(got.last(), Some(Message::DocUnavailable { .. })),
        "{got:?}"
    );
    assert!(no_document_bytes(&got));
    let mut hers = AutoCommit::new();
    hers.put(ROOT, "title", "overwritten").unwrap();
    let got = eve.sync(&a, &mut hers, &mut sync::State::new()).await;
    assert!(
        matches!(got.last(), Some(Message::DocUnavailable { .. })),
        "{got:?}"
    );
    assert!(no_document_bytes(&got));

    // A token scoped to document A, used for B.
    let scoped = token_with(
        SECRET,
        "acme",
        ClaimRole::Write,
        unix_now() + 3600,
        Some(&[&a]),
    );
    let ws = try_connect(addr, "/", Some(&scoped)).await.unwrap();
    let mut carol = Peer::join(ws, "carol").await.unwrap();
    let got = carol
        .sync(&b, &mut AutoCommit::new(), &mut sync::State::new())
        .await;
    assert!(
        matches!(got.last(), Some(Message::DocUnavailable { .. })),
        "{got:?}"
    );
    assert!(no_document_bytes(&got));
    // ...while A works.
    let mut copy = AutoCommit::new();
    carol.sync(&a, &mut copy, &mut sync::State::new()).await;
    assert_eq!(
        copy.get(ROOT, "title").unwrap().unwrap().0.to_string(),
        "\"secret plans\""
    );

    // The HTTP API agrees: another workspace or another document is 404; the right token reads it.
    let path = format!("/v1/docs/{a}");
    assert_eq!(
        http(addr, "GET", &path, Some(&token("other", ClaimRole::Read)))
            .await
            .0,
        404
    );
    assert_eq!(
        http(addr, "GET", &format!("/v1/docs/{b}"), Some(&scoped))
            .await
            .0,
        404
    );
    let (status, body) = http(addr, "GET", &path, Some(&token("acme", ClaimRole::Read))).await;
    assert_eq!(status, 200);
    assert!(body.contains("secret plans"), "{body}");
    assert!(!body.contains("overwritten"), "eve's push was not applied");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_writes_never_reach_storage_or_other_peers() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    let addr = server.addr;
    let a = doc_id(1);
    let (mut alice, mut alice_doc, mut alice_state) = create_doc(addr, &a).await;

    let ws = try_connect(addr, "/", Some(&token("acme", ClaimRole::Read)))
        .await
        .unwrap();
    let mut rita = Peer::join(ws, "rita").await.unwrap();
    let mut copy = AutoCommit::new();
    let mut state = sync::State::new();
    rita.sync(&a, &mut copy, &mut state).await;
    assert!(copy.get(ROOT, "title").unwrap().is_some(), "she reads");

    // She edits and pushes the change itself (as an old or hostile client would).
    copy.put(ROOT, "title", "vandalized").unwrap();
    let mut mirror = AutoCommit::new();
    let (mut s_mine, mut s_mirror) = (sync::State::new(), sync::State::new());
    let with_changes = loop {
        let m = copy.sync().generate_sync_message(&mut s_mine).unwrap();
        if !m.changes.is_empty() {
            break m;
        }
        mirror
            .sync()
            .receive_sync_message(&mut s_mirror, m)
            .unwrap();
        let reply = mirror.sync().generate_sync_message(&mut s_mirror).unwrap();
        copy.sync()
            .receive_sync_message(&mut s_mine, reply)
            .unwrap();
    };
    let m = rita.sync_message(&a, with_changes.encode(), false);
    rita.send(&m).await;
    rita.sync(&a, &mut copy, &mut state).await;

    // Alice hears nothing of it.
    let got = alice.sync(&a, &mut alice_doc, &mut alice_state).await;
    assert!(no_document_bytes(&got), "{got:?}");
    assert_eq!(
        alice_doc.get(ROOT, "title").unwrap().unwrap().0.to_string(),
        "\"secret plans\""
    );
    let (status, metrics) = http(addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("driftless_refusals_total{kind=\"read_only_changes\"}"),
        "{metrics}"
    );
    drop((alice, rita));
    server.shutdown().await;

    // Not in storage either.
    let storage = driftless_server::storage::Storage::open(dir.path()).unwrap();
    let stored = storage.load_document(&a).unwrap().unwrap();
    let json = serde_json::to_string(&automerge::AutoSerde::from(&stored)).unwrap();
    assert!(
        json.contains("secret plans") && !json.contains("vandalized"),
        "{json}"
    );
    assert_eq!(storage.workspace(&a).unwrap().as_deref(), Some("acme"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_serves_its_first_peer_and_refuses_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), Limits::default()).await;
    let addr = server.addr;
    let (status, body) = http(
        addr,
        "POST",
        "/v1/tickets",
        Some(&token("acme", ClaimRole::Write)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ticket = answer["ticket"].as_str().unwrap().to_owned();
    let expires_at = answer["expires_at"].as_str().unwrap();
    assert!(
        expires_at.ends_with('Z') && expires_at.len() == 20,
        "{expires_at}"
    );
    let path = format!("/sync?ticket={ticket}");

    let first = Peer::join(
        try_connect(addr, &path, None).await.unwrap(),
        "peer-browser",
    )
    .await
    .unwrap();
    drop(first);
    // The JS client's reconnect: same URL, same peer id.
    let again = Peer::join(
        try_connect(addr, &path, None).await.unwrap(),
        "peer-browser",
    )
    .await
    .unwrap();
    // Someone else holding the ticket is closed at its join.
    let ws = try_connect(addr, &path, None).await.unwrap();
    match Peer::join(ws, "peer-thief").await {
        Ok(_) => panic!("a second peer id joined on the ticket"),
        Err((code, reason)) => {
            assert_eq!(code, 1008);
            assert!(reason.contains("ticket"), "{reason}");
        }
    }
    drop(again);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_refuse_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_connections_per_ip: 2,
        ..Limits::default()
    };
    let server = start(dir.path(), limits).await;
    let addr = server.addr;
    let t = token("acme", ClaimRole::Write);
    let one = try_connect(addr, "/", Some(&t)).await.unwrap();
    let two = try_connect(addr, "/", Some(&t)).await.unwrap();
    let (status, body) = try_connect(addr, "/", Some(&t)).await.err().unwrap();
    assert_eq!(status, 429);
    assert_eq!(error_code(&body), "too_many_connections");
    assert!(body.contains("connections_per_ip"), "{body}");
    let (_, metrics) = http(addr, "GET", "/metrics", None).await;
    assert!(
        metrics.contains("driftless_limit_hits_total{limit=\"connections_per_ip\"} 1"),
        "{metrics}"
    );
    // A place frees up when a connection ends.
    drop(one);
    let mut freed = false;
    for _ in 0..50 {
        if try_connect(addr, "/", Some(&t)).await.is_ok() {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed);
    drop(two);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_mode_stays_on_loopback_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let err = driftless_server::run(listener, config.clone(), async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--allow-anonymous") && err.contains("[auth]"),
        "{err}"
    );
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let allowed = Config {
        allow_anonymous: true,
        ..config
    };
    driftless_server::run(listener, allowed, async {})
        .await
        .unwrap();
}
