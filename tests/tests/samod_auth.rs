//! samod 0.16 against an authenticated server: a small custom `Dialer` sends `Authorization: Bearer`
//! at the WebSocket upgrade (samod's built-in `dial_websocket` takes only a URL).
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{Automerge, ROOT, ReadDoc};
use driftless_server::Config;
use driftless_server::auth::{ClaimRole, Claims, Keys, Secret, unix_now};
use driftless_server::config::AuthConfig;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use samod::{BackoffConfig, DialError, Dialer, Repo, Transport, Url};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

const SECRET: &str = "samod-test-secret-0123456789-0123456789";

/// Dials a WebSocket URL with `Authorization: Bearer <token>` on every (re)connect.
struct BearerDialer {
    url: Url,
    token: String,
}

impl Dialer for BearerDialer {
    type Error = std::convert::Infallible;

    fn url(&self) -> Url {
        self.url.clone()
    }

    fn connect(&self) -> BoxFuture<'static, Result<Transport, DialError<Self::Error>>> {
        let (url, token) = (self.url.clone(), self.token.clone());
        Box::pin(async move {
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(DialError::transient)?;
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|e| DialError::transient(std::io::Error::other(format!("{e}"))))?;
            request.headers_mut().insert("authorization", value);
            let (ws, _) = tokio_tungstenite::connect_async(request)
                .await
                .map_err(DialError::transient)?;
            let (sink, stream) = ws.split();
            // Binary frames are protocol messages; pings and pongs are handled by tungstenite.
            let stream = stream.filter_map(|m| async move {
                match m {
                    Ok(tungstenite::Message::Binary(b)) => Some(Ok(b.to_vec())),
                    Ok(tungstenite::Message::Text(_)) => {
                        Some(Err(std::io::Error::other("unexpected text frame")))
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(std::io::Error::other(e))),
                }
            });
            let sink = sink.with(|bytes: Vec<u8>| async move {
                Ok::<_, tungstenite::Error>(tungstenite::Message::binary(bytes))
            });
            Ok(Transport::new(Box::pin(stream), Box::pin(sink)))
        })
    }
}

fn token(ws: &str, role: ClaimRole) -> String {
    Keys {
        current: Secret::new(SECRET.as_bytes().to_vec()),
        previous: None,
    }
    .sign(&Claims {
        sub: "samod".into(),
        ws: ws.into(),
        role,
        exp: unix_now() + 3600,
        docs: None,
        tkt: None,
    })
}

async fn repo_with_token(addr: std::net::SocketAddr, token: String) -> Repo {
    let repo = Repo::build_tokio().load().await;
    let dialer = Arc::new(BearerDialer {
        url: Url::parse(&format!("ws://{addr}/")).unwrap(),
        token,
    });
    let handle = repo.dial(BackoffConfig::default(), dialer).unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle.established())
        .await
        .expect("connected in time")
        .expect("connected");
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samod_with_a_bearer_dialer_sees_only_its_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        auth: Some(AuthConfig::with_secret(SECRET.as_bytes().to_vec())),
        ..Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(driftless_server::run(listener, config, async {
        let _ = stopped.await;
    }));

    let writer = repo_with_token(addr, token("acme", ClaimRole::Write)).await;
    let mut initial = Automerge::new();
    initial
        .transact(|tx| tx.put(ROOT, "title", "from samod"))
        .unwrap();
    let handle = writer.create(initial).await.unwrap();
    let id = handle.document_id().clone();

    // Another samod peer of the same workspace finds it (retry until the server has stored it).
    let reader = repo_with_token(addr, token("acme", ClaimRole::Read)).await;
    let mut found = None;
    for _ in 0..50 {
        if let Ok(Ok(Some(h))) =
            tokio::time::timeout(Duration::from_secs(5), reader.find(id.clone())).await
        {
            found = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let found = found.expect("same-workspace reader finds the document");
    let title = found.with_document(|d| d.get(ROOT, "title").unwrap().unwrap().0.to_string());
    assert_eq!(title, "\"from samod\"");

    // A peer of another workspace is told it is unavailable.
    let outsider = repo_with_token(addr, token("other", ClaimRole::Write)).await;
    let result = tokio::time::timeout(Duration::from_secs(10), outsider.find(id.clone()))
        .await
        .expect("answered in time")
        .unwrap();
    assert!(result.is_none(), "another workspace must not find it");

    for repo in [writer, reader, outsider] {
        repo.stop().await;
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
