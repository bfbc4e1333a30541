//! A fault-injecting HTTP proxy in front of a real DAV server (Radicale or Xandikos).
//!
//! Every request is forwarded unchanged (method, path, headers, body) and the server's answer is
//! returned unchanged, so the bridge speaks real WebDAV to real software. Only a request matching
//! a fault the test injected gets the fault's canned answer instead (a 403 for one resource, a 503
//! with `Retry-After` for everything...), without reaching the server. Every request is logged
//! with its arrival time and the status answered, so tests count provider requests and measure
//! retry delays.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Largest request body the proxy forwards.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// A canned answer for the requests it matches (all of them unless narrowed).
#[derive(Debug, Clone)]
pub struct Fault {
    method: Option<String>,
    path_suffix: Option<String>,
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Fault {
    /// Answers `status` with an empty body.
    pub fn status(status: u16) -> Self {
        Self {
            method: None,
            path_suffix: None,
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// Only requests with this method (`PUT`, `REPORT`...).
    pub fn method(mut self, method: &str) -> Self {
        self.method = Some(method.to_owned());
        self
    }

    /// Only requests whose path ends with `suffix` (`/a.ics`).
    pub fn path_ends_with(mut self, suffix: &str) -> Self {
        self.path_suffix = Some(suffix.to_owned());
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self
                .path_suffix
                .as_deref()
                .is_none_or(|s| path.ends_with(s))
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Answered by a fault (never reached the server).
    pub injected: bool,
}

#[derive(Default)]
struct Shared {
    faults: Vec<Fault>,
    log: Vec<Logged>,
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    shared: Arc<Mutex<Shared>>,
}

/// The proxy, listening on a loopback port until dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    upstream: String,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl FaultProxy {
    /// Proxies to `upstream` (`http://127.0.0.1:<port>`).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the fault proxy to 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            shared: shared.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(state);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            upstream: upstream.trim_end_matches('/').to_owned(),
            shared,
            task,
        })
    }

    /// `http://127.0.0.1:<port>` of the proxy.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `url` of the upstream server, reached through the proxy.
    pub fn proxied(&self, url: &str) -> String {
        match url.strip_prefix(&self.upstream) {
            Some(path) => format!("{}{path}", self.base_url()),
            None => url.to_owned(),
        }
    }

    /// Adds a fault; the first matching fault answers a request.
    pub fn inject(&self, fault: Fault) {
        lock(&self.shared).faults.push(fault);
    }

    /// Removes every fault: everything reaches the server again.
    pub fn clear(&self) {
        lock(&self.shared).faults.clear();
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        lock(&self.shared).log.clone()
    }

    /// Requests so far with `method` and a path ending in `suffix`.
    pub fn requests(&self, method: &str, suffix: &str) -> Vec<Logged> {
        self.log()
            .into_iter()
            .filter(|l| l.method == method && l.path.ends_with(suffix))
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(state): State<ProxyState>, request: Request) -> Response {
    let at = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), ToString::to_string);
    let injected = lock(&state.shared)
        .faults
        .iter()
        .find(|f| f.matches(method.as_str(), &path))
        .cloned();
    let (response, status, was_injected) = match injected {
        Some(fault) => (canned(&fault), fault.status, true),
        None => {
            let response = relay(&state, request, &path_and_query).await;
            let status = response.status().as_u16();
            (response, status, false)
        }
    };
    lock(&state.shared).log.push(Logged {
        at,
        method: method.to_string(),
        path,
        status,
        injected: was_injected,
    });
    response
}

fn canned(fault: &Fault) -> Response {
    let mut response = Response::new(Body::from(fault.body.clone()));
    *response.status_mut() =
        StatusCode::from_u16(fault.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &fault.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

fn bad_gateway(what: String) -> Response {
    let mut response = Response::new(Body::from(what));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

async fn relay(state: &ProxyState, request: Request, path_and_query: &str) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return bad_gateway(format!("fault proxy: reading the request body: {e}")),
    };
    let mut headers = parts.headers.clone();
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    let upstream = state
        .http
        .request(parts.method, format!("{}{path_and_query}", state.upstream))
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match upstream {
        Ok(r) => r,
        Err(e) => return bad_gateway(format!("fault proxy: upstream: {e}")),
    };
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    let bytes = match upstream.bytes().await {
        Ok(b) => b,
        Err(e) => return bad_gateway(format!("fault proxy: upstream body: {e}")),
    };
    for hop in [
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::CONTENT_LENGTH,
    ] {
        headers.remove(hop);
    }
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}
