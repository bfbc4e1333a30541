//! Nothing secret reaches the log: refused and accepted tokens, tickets and the secret itself, with
//! every log level on.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use driftless_server::Config;
use driftless_server::auth::{ClaimRole, Claims, Keys, Secret, unix_now};
use driftless_server::config::AuthConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "log-test-secret-0123456789-0123456789";

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn post(addr: std::net::SocketAddr, path: &str, bearer: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_tickets_and_secrets_never_appear_in_the_log() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        // Everything at trace, except the test client's own handshake (it prints the request it sends).
        .with_env_filter("trace,tungstenite::handshake::client=off")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

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

    let keys = Keys {
        current: Secret::new(SECRET.as_bytes().to_vec()),
        previous: None,
    };
    let claims = |exp| Claims {
        sub: "user".into(),
        ws: "acme".into(),
        role: ClaimRole::Write,
        exp,
        docs: None,
        tkt: None,
    };
    let good = keys.sign(&claims(unix_now() + 3600));
    let expired = keys.sign(&claims(unix_now() - 1));
    let answer: serde_json::Value =
        serde_json::from_str(&post(addr, "/v1/tickets", &good).await).unwrap();
    let ticket = answer["ticket"].as_str().unwrap().to_owned();

    for (path, bearer) in [
        ("/".to_owned(), Some(good.clone())),
        ("/".to_owned(), Some(expired.clone())),
        (format!("/?token={good}"), None),
        (format!("/?ticket={ticket}"), None),
        (format!("/?ticket={expired}"), None),
    ] {
        let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
        if let Some(t) = bearer {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        let _ = tokio_tungstenite::connect_async(request).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();

    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("WebSocket upgrade refused"),
        "the log is captured: {log}"
    );
    for (what, secret) in [
        ("secret", SECRET),
        ("token", good.as_str()),
        ("expired token", expired.as_str()),
        ("ticket", ticket.as_str()),
    ] {
        // Even a fragment of the signature is too much.
        let signature = secret.rsplit('.').next().unwrap();
        assert!(
            !log.contains(signature),
            "the {what} appears in the log:\n{log}"
        );
    }
}
