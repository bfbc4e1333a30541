//! A fault-injecting HTTP proxy between driftless and a DAV server (Radicale, Xandikos) for the
//! bridge tests: it forwards every request as is, records each one (method, path, the upstream's
//! status), and lets a test act on the requests a rule matches:
//! - [`DavProxy::before`]: run an async closure (e.g. edit the resource directly at the server)
//!   and then forward;
//! - [`DavProxy::hold`]: park the request until the test decides ([`Held`]): forward it, forward
//!   it and close the connection instead of answering, or close the connection without
//!   forwarding;
//! - [`DavProxy::drop_response`]: forward, then close the connection without answering;
//! - [`DavProxy::answer`]: answer with a canned response ([`Canned`]: a 403 for one resource, a
//!   503 with `Retry-After` for every PUT...) without reaching the upstream.
//!
//! Must not: alter what it forwards (only hop-by-hop headers are dropped), follow redirects, or
//! answer anything itself except a canned answer a test asked for, or a 502 when the upstream
//! cannot be reached.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::future::BoxFuture;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderName, TRANSFER_ENCODING};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

/// One request the proxy received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// When the request arrived (tests measure retry delays with it).
    pub at: Instant,
    pub method: String,
    /// Path and query, as sent.
    pub path: String,
    /// The request body (lossy UTF-8).
    pub body: String,
    /// The upstream's status; `None` when the request was never forwarded or the upstream was
    /// unreachable.
    pub status: Option<u16>,
    /// The client got no answer: the proxy closed the connection instead.
    pub answer_dropped: bool,
    /// Answered by a [`DavProxy::answer`] rule; the upstream never saw it.
    pub canned: bool,
}

/// Which requests a rule applies to: a method (`None`: any), a path prefix and optionally a path
/// suffix (`/a.ics`).
#[derive(Debug, Clone)]
pub struct Match {
    method: Option<String>,
    path_prefix: String,
    path_suffix: Option<String>,
}

impl Match {
    /// `method` requests whose path starts with `path_prefix`.
    pub fn new(method: &str, path_prefix: &str) -> Self {
        Self {
            method: Some(method.to_ascii_uppercase()),
            path_prefix: path_prefix.to_owned(),
            path_suffix: None,
        }
    }

    /// `method` requests whose path (without the query) ends with `suffix`.
    pub fn ending(method: &str, suffix: &str) -> Self {
        Self {
            path_suffix: Some(suffix.to_owned()),
            ..Self::new(method, "")
        }
    }

    /// Requests of any method whose path starts with `path_prefix`.
    pub fn any_method(path_prefix: &str) -> Self {
        Self {
            method: None,
            path_prefix: path_prefix.to_owned(),
            path_suffix: None,
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        let without_query = path.split('?').next().unwrap_or(path);
        self.method.as_deref().is_none_or(|m| m == method)
            && path.starts_with(&self.path_prefix)
            && self
                .path_suffix
                .as_deref()
                .is_none_or(|s| without_query.ends_with(s))
    }
}

/// An answer the proxy gives itself (see [`DavProxy::answer`]).
#[derive(Debug, Clone)]
pub struct Canned {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Canned {
    /// `status` with an empty body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: &str) -> Self {
        self.body = body.to_owned();
        self
    }

    fn response(&self) -> Response<Full<Bytes>> {
        let mut builder = Response::builder().status(self.status);
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        builder
            .body(Full::new(Bytes::from(self.body.clone())))
            .unwrap_or_else(|e| bad_gateway(format!("canned answer {}: {e}", self.status)))
    }
}

/// The closure of [`DavProxy::before`].
pub type BeforeHook = Box<dyn FnMut() -> BoxFuture<'static, anyhow::Result<()>> + Send>;

enum Action {
    Before(BeforeHook),
    Hold,
    DropResponse,
    Answer(Canned),
}

struct Rule {
    matcher: Match,
    action: Action,
    /// Matching requests it still applies to.
    remaining: usize,
}

/// What happens to a held request.
enum Decision {
    Forward,
    ForwardAndDrop,
    DropUnforwarded,
}

/// A request parked by a [`DavProxy::hold`] rule. Dropping it closes the client's connection
/// without forwarding the request.
pub struct Held {
    pub method: String,
    pub path: String,
    pub body: String,
    decide: oneshot::Sender<(Decision, oneshot::Sender<Option<u16>>)>,
}

impl Held {
    async fn release(self, decision: Decision) -> anyhow::Result<Option<u16>> {
        let (done, status) = oneshot::channel();
        let what = format!("{} {}", self.method, self.path);
        self.decide
            .send((decision, done))
            .map_err(|_| anyhow::anyhow!("held {what}: the client went away meanwhile"))?;
        status
            .await
            .with_context(|| format!("held {what}: the proxy stopped"))
    }

    /// Forwards the request; returns the upstream's status once it answered (the answer is then
    /// relayed to the client).
    pub async fn forward(self) -> anyhow::Result<u16> {
        let what = format!("{} {}", self.method, self.path);
        self.release(Decision::Forward)
            .await?
            .with_context(|| format!("{what}: the upstream did not answer"))
    }

    /// Forwards the request and, once the upstream answered, closes the client's connection
    /// without relaying the answer. Returns the upstream's status.
    pub async fn forward_and_drop(self) -> anyhow::Result<u16> {
        let what = format!("{} {}", self.method, self.path);
        self.release(Decision::ForwardAndDrop)
            .await?
            .with_context(|| format!("{what}: the upstream did not answer"))
    }

    /// Closes the client's connection (if it is still open); the request never reaches the
    /// upstream.
    pub fn drop_unforwarded(self) {
        let (done, _) = oneshot::channel();
        let _ = self.decide.send((Decision::DropUnforwarded, done));
    }
}

struct Inner {
    upstream: String,
    client: reqwest::Client,
    seen: Mutex<Vec<Seen>>,
    rules: Mutex<Vec<Rule>>,
    hook_errors: Mutex<Vec<String>>,
    held: mpsc::UnboundedSender<Held>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The proxy, listening on a loopback port until dropped.
pub struct DavProxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    held: tokio::sync::Mutex<mpsc::UnboundedReceiver<Held>>,
    task: JoinHandle<()>,
}

impl DavProxy {
    /// A proxy to `upstream` (`http://host:port`, no path).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the proxy to 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .context("building the proxy's HTTP client")?;
        let (held_tx, held_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client,
            seen: Mutex::new(Vec::new()),
            rules: Mutex::new(Vec::new()),
            hook_errors: Mutex::new(Vec::new()),
            held: held_tx,
        });
        let task = tokio::spawn(accept_loop(listener, inner.clone()));
        Ok(Self {
            addr,
            inner,
            held: tokio::sync::Mutex::new(held_rx),
            task,
        })
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `url` (on the upstream) as reached through the proxy.
    pub fn proxied(&self, url: &str) -> String {
        match url.strip_prefix(&self.inner.upstream) {
            Some(rest) => format!("{}{rest}", self.base_url()),
            None => url.to_owned(),
        }
    }

    fn add(&self, matcher: Match, action: Action, times: usize) {
        lock(&self.inner.rules).push(Rule {
            matcher,
            action,
            remaining: times,
        });
    }

    /// Runs `hook` before forwarding each of the next `times` matching requests. A failing hook
    /// is recorded (see [`DavProxy::check_hooks`]) and the request is forwarded anyway.
    pub fn before(
        &self,
        matcher: Match,
        times: usize,
        hook: impl FnMut() -> BoxFuture<'static, anyhow::Result<()>> + Send + 'static,
    ) {
        self.add(matcher, Action::Before(Box::new(hook)), times);
    }

    /// Parks the next `times` matching requests; take them with [`DavProxy::next_held`].
    pub fn hold(&self, matcher: Match, times: usize) {
        self.add(matcher, Action::Hold, times);
    }

    /// Forwards the next `times` matching requests and closes the connection instead of answering.
    pub fn drop_response(&self, matcher: Match, times: usize) {
        self.add(matcher, Action::DropResponse, times);
    }

    /// Answers the next `times` matching requests with `canned` (use `usize::MAX` for "until
    /// [`DavProxy::clear_rules`]"); the upstream never sees them.
    pub fn answer(&self, matcher: Match, times: usize, canned: Canned) {
        self.add(matcher, Action::Answer(canned), times);
    }

    /// Removes every rule that has not been used up.
    pub fn clear_rules(&self) {
        lock(&self.inner.rules).clear();
    }

    /// The next request a [`DavProxy::hold`] rule parked, waiting up to `within`.
    pub async fn next_held(&self, within: Duration) -> anyhow::Result<Held> {
        let mut rx = self.held.lock().await;
        match tokio::time::timeout(within, rx.recv()).await {
            Ok(Some(held)) => Ok(held),
            Ok(None) => bail!("the proxy stopped"),
            Err(_) => bail!(
                "no request was held within {within:?}; requests so far: {:?}",
                self.requests()
            ),
        }
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        lock(&self.inner.seen).clone()
    }

    /// Requests received with `method` and a path starting with `path_prefix`.
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        let m = Match::new(method, path_prefix);
        lock(&self.inner.seen)
            .iter()
            .filter(|s| m.matches(&s.method, &s.path))
            .count()
    }

    /// Requests received with `method` and a path (without the query) ending in `suffix`.
    pub fn seen_ending(&self, method: &str, suffix: &str) -> Vec<Seen> {
        let m = Match::ending(method, suffix);
        lock(&self.inner.seen)
            .iter()
            .filter(|s| m.matches(&s.method, &s.path))
            .cloned()
            .collect()
    }

    /// Requests that change something at the server (PUT, DELETE, MOVE, COPY, PROPPATCH,
    /// MKCOL, MKCALENDAR), received so far.
    pub fn writes(&self) -> usize {
        lock(&self.inner.seen)
            .iter()
            .filter(|s| {
                matches!(
                    s.method.as_str(),
                    "PUT" | "DELETE" | "MOVE" | "COPY" | "PROPPATCH" | "MKCOL" | "MKCALENDAR"
                )
            })
            .count()
    }

    /// Fails with the errors of [`DavProxy::before`] hooks, if any failed.
    pub fn check_hooks(&self) -> anyhow::Result<()> {
        let errors = lock(&self.inner.hook_errors);
        if !errors.is_empty() {
            bail!("proxy hooks failed: {errors:?}");
        }
        Ok(())
    }
}

impl Drop for DavProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let inner = inner.clone();
        connections.spawn(async move {
            // Set by a handler that wants the connection closed without an answer: dropping
            // the connection future closes the socket.
            let close = Arc::new(Notify::new());
            let service = {
                let close = close.clone();
                service_fn(move |req| {
                    let (inner, close) = (inner.clone(), close.clone());
                    async move { Ok::<_, Infallible>(handle(inner, close, req).await) }
                })
            };
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = close.notified() => {}
            }
        });
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
}

/// What the matching rule (if any) asks for, taken under the lock.
enum Step {
    Forward,
    Before(BoxFuture<'static, anyhow::Result<()>>),
    Hold,
    DropResponse,
    Answer(Canned),
}

fn rule_step(inner: &Inner, method: &str, path: &str) -> Step {
    let mut rules = lock(&inner.rules);
    let Some(i) = rules
        .iter()
        .position(|r| r.remaining > 0 && r.matcher.matches(method, path))
    else {
        return Step::Forward;
    };
    let rule = &mut rules[i];
    rule.remaining -= 1;
    let step = match &mut rule.action {
        Action::Before(hook) => Step::Before(hook()),
        Action::Hold => Step::Hold,
        Action::DropResponse => Step::DropResponse,
        Action::Answer(canned) => Step::Answer(canned.clone()),
    };
    if rule.remaining == 0 {
        rules.remove(i);
    }
    step
}

async fn handle(
    inner: Arc<Inner>,
    close: Arc<Notify>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let method = parts.method.as_str().to_owned();
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return bad_gateway(format!("reading the request body: {e}")),
    };
    let index = {
        let mut seen = lock(&inner.seen);
        seen.push(Seen {
            at,
            method: method.clone(),
            path: path.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            status: None,
            answer_dropped: false,
            canned: false,
        });
        seen.len() - 1
    };

    let mut drop_answer = false;
    let mut done: Option<oneshot::Sender<Option<u16>>> = None;
    match rule_step(&inner, &method, &path) {
        Step::Forward => {}
        Step::Before(hook) => {
            if let Err(e) = hook.await {
                lock(&inner.hook_errors).push(format!("before {method} {path}: {e:#}"));
            }
        }
        Step::DropResponse => drop_answer = true,
        Step::Answer(canned) => {
            let mut seen = lock(&inner.seen);
            seen[index].status = Some(canned.status);
            seen[index].canned = true;
            return canned.response();
        }
        Step::Hold => {
            let (decide, decision) = oneshot::channel();
            let held = Held {
                method: method.clone(),
                path: path.clone(),
                body: String::from_utf8_lossy(&body).into_owned(),
                decide,
            };
            let decision = if inner.held.send(held).is_ok() {
                decision.await.ok()
            } else {
                None
            };
            match decision {
                Some((Decision::Forward, tx)) => done = Some(tx),
                Some((Decision::ForwardAndDrop, tx)) => {
                    done = Some(tx);
                    drop_answer = true;
                }
                Some((Decision::DropUnforwarded, tx)) => {
                    let _ = tx.send(None);
                    return close_without_answer(&inner, index, &close).await;
                }
                None => return close_without_answer(&inner, index, &close).await,
            }
        }
    }

    let upstream = forward(&inner, &parts, body).await;
    let status = upstream.as_ref().ok().map(|r| r.status().as_u16());
    lock(&inner.seen)[index].status = status;
    if let Some(tx) = done {
        let _ = tx.send(status);
    }
    if drop_answer {
        return close_without_answer(&inner, index, &close).await;
    }
    match upstream {
        Ok(resp) => resp,
        Err(e) => bad_gateway(e),
    }
}

/// Closes the client's connection; never returns (the connection task drops this future).
async fn close_without_answer(
    inner: &Inner,
    index: usize,
    close: &Notify,
) -> Response<Full<Bytes>> {
    lock(&inner.seen)[index].answer_dropped = true;
    close.notify_one();
    std::future::pending().await
}

fn hop_by_hop(name: &HeaderName) -> bool {
    name == HOST
        || name == CONNECTION
        || name == CONTENT_LENGTH
        || name == TRANSFER_ENCODING
        || name.as_str() == "keep-alive"
}

async fn forward(
    inner: &Inner,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<Response<Full<Bytes>>, String> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", inner.upstream);
    let mut request = inner.client.request(parts.method.clone(), &url).body(body);
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            request = request.header(name.clone(), value.clone());
        }
    }
    let resp = request
        .send()
        .await
        .map_err(|e| format!("{} {url}: {e}", parts.method))?;
    let mut out = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if !hop_by_hop(name) {
            out = out.header(name.clone(), value.clone());
        }
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| format!("{} {url}: reading the answer: {e}", parts.method))?;
    out.body(Full::new(bytes))
        .map_err(|e| format!("{} {url}: relaying the answer: {e}", parts.method))
}

fn bad_gateway(what: impl std::fmt::Display) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(format!("proxy: {what}"))));
    *resp.status_mut() = StatusCode::BAD_GATEWAY;
    resp
}
