//! A fake Google Calendar v3 server (axum, loopback) reproducing what the bridge relies on
//! (shared notes, providers.md 1.7):
//!
//! - `events.list` with paging (`maxResults`, default 250, max 2500; a page may be empty and
//!   still carry `nextPageToken`), `nextSyncToken` only on the last page, a monotonic change
//!   log per calendar, opaque sync tokens that expire by age or on demand (410
//!   `fullSyncRequired`), 400 on the parameters forbidden with `syncToken`;
//! - `singleEvents=false` listings with masters, exceptions and cancelled instances
//!   (`showDeleted` as documented), instance ids `<master>_<utc basic>` sharing the master's
//!   iCalUID; deleted events kept as cancelled tombstones;
//! - etags that change on every write, `If-Match` 412 `conditionNotMet`, insert with a client id
//!   (base32hex) and 409 `duplicate`, DELETE of a deleted event 410 `deleted`;
//! - injectable 403 `rateLimitExceeded` / `userRateLimitExceeded` / 429 with `Retry-After` / 503,
//!   and "the write happened but the answer was lost"; an edit "made elsewhere" applied just
//!   before the next PATCH of an event ([`GoogleFake::edit_before_next_write`], a 412 race);
//! - an OAuth2 token endpoint (`POST /token`, refresh-token grant) and Bearer checks (401);
//! - watch channels (`events.watch`, `channels/stop`): a `sync` message (number 1) when a channel
//!   opens, then an `exists` message per change with growing, non-contiguous numbers, until the
//!   channel expires or is stopped; notifications can be dropped or duplicated on demand.
//!
//! Every request is logged (method, path, query, status) so tests count writes.
//! Not reproduced: recurrence expansion (`singleEvents=true` is refused with 400, and an
//! instance id is accepted when its time of day matches the series' start).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use driftless_bridges::google::translate::{apply_patch, is_valid_event_id};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The path prefix of the API (`api_base` is `http://<addr>/calendar/v3/`).
pub const API_PREFIX: &str = "/calendar/v3/";

/// A fault the next calendar API requests answer with.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 403 `usageLimits/rateLimitExceeded`
    RateLimit403,
    /// 403 `usageLimits/userRateLimitExceeded`
    UserRateLimit403,
    /// 429 `rateLimitExceeded`, with `Retry-After: <secs>` when given.
    TooMany429 { retry_after: Option<u64> },
    /// 503 `backendError`.
    Unavailable,
    /// The request is carried out, then answered 503 as if the answer were lost on the way.
    LoseResponse,
}

/// One logged request.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub if_match: Option<String>,
    pub status: u16,
}

impl LoggedRequest {
    /// An insert, import, patch, update, move or delete of an event (`.../events`,
    /// `.../events/{id}[/move]`, `.../events/import`); not the opening of a push channel
    /// (`POST .../events/watch`: Google event ids are base32hex, so no event is called `watch`).
    pub fn is_event_write(&self) -> bool {
        let mut segments = self.path.trim_end_matches('/').split('/');
        if !segments.any(|s| s == "events") {
            return false;
        }
        let after: Vec<&str> = segments.collect();
        after != ["watch"] && matches!(self.method.as_str(), "POST" | "PATCH" | "PUT" | "DELETE")
    }
}

#[cfg(test)]
mod tests {
    use super::LoggedRequest;

    fn request(method: &str, path: &str) -> LoggedRequest {
        LoggedRequest {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            if_match: None,
            status: 200,
        }
    }

    #[test]
    fn opening_a_channel_is_no_event_write() {
        let events = "/calendar/v3/calendars/primary/events";
        assert!(request("POST", events).is_event_write());
        assert!(request("PATCH", &format!("{events}/abc123")).is_event_write());
        assert!(request("DELETE", &format!("{events}/abc123_20261207T090000Z")).is_event_write());
        assert!(request("POST", &format!("{events}/abc123/move")).is_event_write());
        assert!(request("POST", &format!("{events}/import")).is_event_write());
        assert!(!request("POST", &format!("{events}/watch")).is_event_write());
        assert!(!request("GET", &format!("{events}/abc123")).is_event_write());
        assert!(!request("POST", "/calendar/v3/channels/stop").is_event_write());
    }
}

#[derive(Debug, Clone)]
struct StoredEvent {
    value: Value,
    /// Change-log position of the last change.
    seq: u64,
}

#[derive(Debug, Clone)]
struct Calendar {
    time_zone: String,
    owner: String,
    events: BTreeMap<String, StoredEvent>,
}

#[derive(Debug, Clone)]
struct SyncToken {
    calendar: String,
    seq: u64,
    issued: Instant,
    generation: u64,
}

#[derive(Debug, Clone)]
struct PageCursor {
    calendar: String,
    ids: Vec<String>,
    offset: usize,
    /// The change-log position when the listing started: the next sync token's.
    seq: u64,
    /// The syncToken / filters of the listing, which every page request must repeat.
    fingerprint: String,
}

#[derive(Debug, Clone)]
struct FakeChannel {
    calendar: String,
    address: String,
    token: Option<String>,
    resource_id: String,
    /// Unix milliseconds.
    expiration: u64,
    number: u64,
    stopped: bool,
}

/// A notification to POST once the state lock is released.
#[derive(Debug, Clone)]
struct Delivery {
    address: String,
    headers: Vec<(&'static str, String)>,
}

struct State {
    calendars: BTreeMap<String, Calendar>,
    channels: BTreeMap<String, FakeChannel>,
    outbox: Vec<Delivery>,
    drop_notifications: u32,
    duplicate_notifications: bool,
    /// Longest channel lifetime granted (Google: about a week for events).
    channel_lifetime: Duration,
    seq: u64,
    counter: u64,
    sync_tokens: BTreeMap<String, SyncToken>,
    cursors: BTreeMap<String, PageCursor>,
    token_generation: u64,
    token_max_age: Option<Duration>,
    page_cap: usize,
    empty_pages: u32,
    faults: Vec<Fault>,
    log: Vec<LoggedRequest>,
    client_id: String,
    client_secret: String,
    refresh_token: String,
    access_tokens: BTreeSet<String>,
    access_token_lifetime: u64,
    token_requests: u32,
    /// `(calendar, event id)` to an edit "made elsewhere" applied just before the next PATCH or
    /// PUT of that event is handled (so its `If-Match` meets a newer etag).
    before_next_write: BTreeMap<(String, String), Value>,
}

/// The fake server; dropping it stops it.
pub struct GoogleFake {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    http: reqwest::Client,
    task: JoinHandle<()>,
}

impl Drop for GoogleFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn envelope(status: u16, domain: &str, reason: &str, message: &str) -> Response {
    let body = json!({"error": {"errors": [{"domain": domain, "reason": reason, "message": message}],
                                "code": status, "message": message}});
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn bad_request(reason: &str, message: &str) -> Response {
    envelope(400, "global", reason, message)
}

impl GoogleFake {
    /// Starts the fake on `127.0.0.1:0` with one calendar, `primary` (zone Europe/Berlin, owner
    /// `owner@example.org`), and OAuth client `client-1` / `secret-1` with refresh token
    /// `refresh-1`.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let mut calendars = BTreeMap::new();
        calendars.insert(
            "primary".to_owned(),
            Calendar {
                time_zone: "Europe/Berlin".into(),
                owner: "owner@example.org".into(),
                events: BTreeMap::new(),
            },
        );
        let state = Arc::new(Mutex::new(State {
            calendars,
            channels: BTreeMap::new(),
            outbox: Vec::new(),
            drop_notifications: 0,
            duplicate_notifications: false,
            channel_lifetime: Duration::from_secs(7 * 24 * 3600),
            seq: 0,
            counter: 0,
            sync_tokens: BTreeMap::new(),
            cursors: BTreeMap::new(),
            token_generation: 0,
            token_max_age: None,
            page_cap: 2500,
            empty_pages: 0,
            faults: Vec::new(),
            log: Vec::new(),
            client_id: "client-1".into(),
            client_secret: "secret-1".into(),
            refresh_token: "refresh-1".into(),
            access_tokens: BTreeSet::new(),
            access_token_lifetime: 3599,
            token_requests: 0,
            before_next_write: BTreeMap::new(),
        }));
        let shared = state.clone();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let sender = http.clone();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                let sender = sender.clone();
                async move {
                    let (response, deliveries) = handle(&state, method, uri, headers, body);
                    deliver(&sender, deliveries);
                    response
                }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(GoogleFake {
            addr,
            state,
            http,
            task,
        })
    }

    /// Sends what changes made outside HTTP (the helpers below) notified.
    fn flush(&self) {
        let deliveries = std::mem::take(&mut self.lock().outbox);
        deliver(&self.http, deliveries);
    }

    /// The next `n` notifications are lost.
    pub fn drop_notifications(&self, n: u32) {
        self.lock().drop_notifications += n;
    }

    /// Every notification is sent twice (same message number), or not.
    pub fn duplicate_notifications(&self, on: bool) {
        self.lock().duplicate_notifications = on;
    }

    /// Channels opened from now on live at most `lifetime` (to test renewal).
    pub fn set_channel_lifetime(&self, lifetime: Duration) {
        self.lock().channel_lifetime = lifetime;
    }

    /// The callback address a channel was registered with.
    pub fn channel_address(&self, id: &str) -> Option<String> {
        self.lock().channels.get(id).map(|c| c.address.clone())
    }

    /// The next notification of channel `id` (advancing its message number as a change
    /// would), for a test to deliver, repeat or forge itself: the address and the headers.
    pub fn next_notification(
        &self,
        id: &str,
        state: &str,
    ) -> Option<(String, Vec<(&'static str, String)>)> {
        let mut s = self.lock();
        s.counter += 1;
        let step = 1 + s.counter % 3;
        let c = s.channels.get_mut(id)?;
        c.number += step;
        let c = c.clone();
        let d = channel_delivery(id, &c, state);
        Some((d.address, d.headers))
    }

    /// Open (not stopped, not expired) channel ids of a calendar.
    pub fn open_channels(&self, calendar: &str) -> Vec<String> {
        let now = now_ms();
        self.lock()
            .channels
            .iter()
            .filter(|(_, c)| c.calendar == calendar && !c.stopped && c.expiration > now)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `http://127.0.0.1:<port>/calendar/v3/`
    pub fn api_base(&self) -> String {
        format!("http://{}{API_PREFIX}", self.addr)
    }

    /// `http://127.0.0.1:<port>/token`
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The OAuth client id, secret and refresh token the token endpoint accepts.
    pub fn credentials(&self) -> (String, String, String) {
        let s = self.lock();
        (
            s.client_id.clone(),
            s.client_secret.clone(),
            s.refresh_token.clone(),
        )
    }

    /// Calls the next `n` calendar API requests answer with `fault` (queued after earlier ones).
    pub fn inject(&self, fault: Fault, n: usize) {
        let mut s = self.lock();
        s.faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Every sync token issued so far answers 410 `fullSyncRequired`.
    pub fn expire_sync_tokens(&self) {
        self.lock().token_generation += 1;
    }

    /// Sync tokens older than `age` answer 410.
    pub fn set_sync_token_max_age(&self, age: Option<Duration>) {
        self.lock().token_max_age = age;
    }

    /// Every access token issued so far answers 401.
    pub fn revoke_access_tokens(&self) {
        self.lock().access_tokens.clear();
    }

    /// At most `n` items per page, whatever `maxResults` says.
    pub fn set_page_cap(&self, n: usize) {
        self.lock().page_cap = n.max(1);
    }

    /// The next `n` list pages come back empty (with `nextPageToken`).
    pub fn inject_empty_pages(&self, n: u32) {
        self.lock().empty_pages += n;
    }

    /// Token endpoint calls so far.
    pub fn token_requests(&self) -> u32 {
        self.lock().token_requests
    }

    pub fn log(&self) -> Vec<LoggedRequest> {
        self.lock().log.clone()
    }

    /// Event writes (insert / patch / update / delete) answered so far, whatever the status.
    pub fn write_requests(&self) -> usize {
        self.lock()
            .log
            .iter()
            .filter(|r| r.is_event_write())
            .count()
    }

    pub fn clear_log(&self) {
        self.lock().log.clear();
    }

    /// Takes the log (what `log` then `clear_log` would give, without a race between them).
    pub fn take_log(&self) -> Vec<LoggedRequest> {
        std::mem::take(&mut self.lock().log)
    }

    /// The change-log position a sync token was issued at (every change at or before it is in
    /// the listings that led to the token). `None`: not a token this fake issued.
    pub fn sync_token_seq(&self, token: &str) -> Option<u64> {
        self.lock().sync_tokens.get(token).map(|t| t.seq)
    }

    /// The change-log position of an event's last change.
    pub fn event_seq(&self, calendar: &str, id: &str) -> Option<u64> {
        self.lock()
            .calendars
            .get(calendar)
            .and_then(|c| c.events.get(id))
            .map(|e| e.seq)
    }

    /// An event as stored (exceptions included), cancelled ones too.
    pub fn event(&self, calendar: &str, id: &str) -> Option<Value> {
        self.lock()
            .calendars
            .get(calendar)
            .and_then(|c| c.events.get(id))
            .map(|e| e.value.clone())
    }

    /// Every stored event of a calendar (cancelled ones too), by id.
    pub fn events(&self, calendar: &str) -> BTreeMap<String, Value> {
        self.lock()
            .calendars
            .get(calendar)
            .map(|c| {
                c.events
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Inserts an event as another client would (no auth, no faults). Returns it as stored.
    pub fn insert(&self, calendar: &str, body: Value) -> anyhow::Result<Value> {
        let result = {
            let mut s = self.lock();
            insert_event(&mut s, calendar, body)
        };
        self.flush();
        result.map_err(|(status, reason)| anyhow::anyhow!("fake insert refused: {status} {reason}"))
    }

    /// Patches an event (or materializes and patches an instance) as another client would.
    pub fn patch(&self, calendar: &str, id: &str, patch: Value) -> anyhow::Result<Value> {
        let result = {
            let mut s = self.lock();
            patch_event(&mut s, calendar, id, None, &patch, false)
        };
        self.flush();
        result.map_err(|(status, reason)| anyhow::anyhow!("fake patch refused: {status} {reason}"))
    }

    /// Arms a race: just before the next PATCH or PUT of event `id` is handled, `edit` is applied
    /// as another client's patch (new etag), so that write's `If-Match` is stale (412) and the
    /// client must merge both edits.
    pub fn edit_before_next_write(&self, calendar: &str, id: &str, edit: Value) {
        self.lock()
            .before_next_write
            .insert((calendar.to_owned(), id.to_owned()), edit);
    }

    /// Deletes an event (an instance id cancels that instance) as another client would.
    pub fn delete(&self, calendar: &str, id: &str) -> anyhow::Result<()> {
        let result = {
            let mut s = self.lock();
            delete_event(&mut s, calendar, id, None)
        };
        self.flush();
        result.map_err(|(status, reason)| anyhow::anyhow!("fake delete refused: {status} {reason}"))
    }
}

type Refusal = (u16, &'static str);

fn next_etag(s: &mut State) -> String {
    s.counter += 1;
    format!("\"{}\"", 3_181_161_784_712_000u64 + s.counter * 2_000)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn channel_delivery(id: &str, c: &FakeChannel, state: &str) -> Delivery {
    let expiration = Utc
        .timestamp_millis_opt(i64::try_from(c.expiration).unwrap_or(i64::MAX))
        .single()
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default();
    let mut headers = vec![
        ("X-Goog-Channel-ID", id.to_owned()),
        ("X-Goog-Message-Number", c.number.to_string()),
        ("X-Goog-Resource-ID", c.resource_id.clone()),
        ("X-Goog-Resource-State", state.to_owned()),
        (
            "X-Goog-Resource-URI",
            format!(
                "https://www.googleapis.com/calendar/v3/calendars/{}/events?alt=json",
                c.calendar
            ),
        ),
        ("X-Goog-Channel-Expiration", expiration),
    ];
    if let Some(t) = &c.token {
        headers.push(("X-Goog-Channel-Token", t.clone()));
    }
    Delivery {
        address: c.address.clone(),
        headers,
    }
}

/// Queues an `exists` message on every open channel of `calendar`.
fn notify(s: &mut State, calendar: &str) {
    let now = now_ms();
    let ids: Vec<String> = s
        .channels
        .iter()
        .filter(|(_, c)| c.calendar == calendar && !c.stopped && c.expiration > now)
        .map(|(id, _)| id.clone())
        .collect();
    for id in ids {
        s.counter += 1;
        // Numbers grow but are not contiguous.
        let step = 1 + s.counter % 3;
        let Some(c) = s.channels.get_mut(&id) else {
            continue;
        };
        c.number += step;
        let c = c.clone();
        let d = channel_delivery(&id, &c, "exists");
        if s.drop_notifications > 0 {
            s.drop_notifications -= 1;
            continue;
        }
        if s.duplicate_notifications {
            s.outbox.push(d.clone());
        }
        s.outbox.push(d);
    }
}

/// POSTs notifications (bodiless, like Google) from background tasks.
fn deliver(http: &reqwest::Client, deliveries: Vec<Delivery>) {
    for d in deliveries {
        let mut req = http.post(&d.address);
        for (name, value) in &d.headers {
            req = req.header(*name, value);
        }
        tokio::spawn(async move {
            let _ = req.send().await;
        });
    }
}

fn watch(s: &mut State, calendar: &str, body: &Value) -> Result<Value, Refusal> {
    if !s.calendars.contains_key(calendar) {
        return Err((404, "notFound"));
    }
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 64)
        .ok_or((400, "invalid"))?
        .to_owned();
    if body.get("type").and_then(Value::as_str) != Some("web_hook") {
        return Err((400, "invalid"));
    }
    let address = body
        .get("address")
        .and_then(Value::as_str)
        .ok_or((400, "required"))?
        .to_owned();
    if s.channels.contains_key(&id) {
        return Err((400, "channelIdNotUnique"));
    }
    let token = body.get("token").and_then(Value::as_str).map(str::to_owned);
    // A week (or the lifetime a test set) unless asked for less.
    let longest = now_ms() + u64::try_from(s.channel_lifetime.as_millis()).unwrap_or(u64::MAX);
    let expiration = body
        .get("expiration")
        .and_then(|e| match e {
            Value::String(v) => v.parse::<u64>().ok(),
            other => other.as_u64(),
        })
        .map_or(longest, |e| e.min(longest));
    let resource_id = opaque("res", s);
    let channel = FakeChannel {
        calendar: calendar.to_owned(),
        address,
        token: token.clone(),
        resource_id: resource_id.clone(),
        expiration,
        number: 1,
        stopped: false,
    };
    let sync = channel_delivery(&id, &channel, "sync");
    s.outbox.push(sync);
    s.channels.insert(id.clone(), channel);
    let mut answer = json!({
        "kind": "api#channel",
        "id": id,
        "resourceId": resource_id,
        "resourceUri": format!("https://www.googleapis.com/calendar/v3/calendars/{calendar}/events?alt=json"),
        "expiration": expiration.to_string(),
    });
    if let Some(t) = token {
        answer["token"] = json!(t);
    }
    Ok(answer)
}

fn stop_channel(s: &mut State, body: &Value) -> Result<(), Refusal> {
    let id = body
        .get("id")
        .and_then(Value::as_str)
        .ok_or((400, "required"))?;
    let resource = body.get("resourceId").and_then(Value::as_str);
    match s.channels.get_mut(id) {
        Some(c) if Some(c.resource_id.as_str()) == resource && !c.stopped => {
            c.stopped = true;
            Ok(())
        }
        _ => Err((404, "notFound")),
    }
}

fn bump(s: &mut State, value: &mut Value) -> u64 {
    s.seq += 1;
    let etag = next_etag(s);
    if let Value::Object(m) = value {
        m.insert("etag".into(), json!(etag));
        m.insert("updated".into(), json!(now_rfc3339()));
    }
    s.seq
}

fn opaque(prefix: &str, s: &mut State) -> String {
    s.counter += 1;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}{:x}{:08x}w", s.counter, nanos)
}

/// The instant and zone form of an EventDateTime, for instances.
fn parse_edt(edt: &Value) -> Option<(DateTime<Utc>, Option<Tz>, bool)> {
    if let Some(d) = edt.get("date").and_then(Value::as_str) {
        let day = NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?;
        return Some((
            Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0)?),
            None,
            true,
        ));
    }
    let dt = edt.get("dateTime").and_then(Value::as_str)?;
    let zone = edt
        .get("timeZone")
        .and_then(Value::as_str)
        .and_then(|z| z.parse::<Tz>().ok());
    let instant = match DateTime::parse_from_rfc3339(dt) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => {
            let local = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S").ok()?;
            zone?
                .from_local_datetime(&local)
                .earliest()?
                .with_timezone(&Utc)
        }
    };
    Some((instant, zone, false))
}

fn edt_at(instant: DateTime<Utc>, zone: Option<Tz>, all_day: bool) -> Value {
    if all_day {
        return json!({"date": instant.format("%Y-%m-%d").to_string()});
    }
    match zone {
        Some(tz) => json!({
            "dateTime": instant.with_timezone(&tz).to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            "timeZone": tz.name(),
        }),
        None => json!({"dateTime": instant.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}),
    }
}

/// The instance `<master>_<key>` of a recurring master, as Google would show it before it
/// becomes an exception.
fn virtual_instance(master: &Value, key: &str) -> Option<Value> {
    master
        .get("recurrence")?
        .as_array()
        .filter(|r| !r.is_empty())?;
    let (start, zone, all_day) = parse_edt(master.get("start")?)?;
    let (end, _, _) = parse_edt(master.get("end")?)?;
    let original = if all_day {
        let d = NaiveDate::parse_from_str(key, "%Y%m%d").ok()?;
        Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0)?)
    } else {
        let t = NaiveDateTime::parse_from_str(key.strip_suffix('Z')?, "%Y%m%dT%H%M%S").ok()?;
        Utc.from_utc_datetime(&t)
    };
    // Without a recurrence engine: an instance starts no earlier than the series, at the
    // series' wall-clock time of day.
    let wall = |t: DateTime<Utc>| match zone {
        Some(tz) => t.with_timezone(&tz).time(),
        None => t.time(),
    };
    if original < start || wall(original) != wall(start) {
        return None;
    }
    let master_id = master.get("id")?.as_str()?;
    let mut inst = master.clone();
    let m = inst.as_object_mut()?;
    m.remove("recurrence");
    m.insert("id".into(), json!(format!("{master_id}_{key}")));
    m.insert("recurringEventId".into(), json!(master_id));
    m.insert("originalStartTime".into(), edt_at(original, zone, all_day));
    m.insert("start".into(), edt_at(original, zone, all_day));
    m.insert(
        "end".into(),
        edt_at(original + (end - start), zone, all_day),
    );
    Some(inst)
}

fn split_instance_id(id: &str) -> Option<(&str, &str)> {
    let (master, key) = id.rsplit_once('_')?;
    (!master.is_empty() && (key.len() == 8 || key.len() == 16)).then_some((master, key))
}

fn insert_event(s: &mut State, calendar: &str, mut body: Value) -> Result<Value, Refusal> {
    let cal = s.calendars.get(calendar).ok_or((404, "notFound"))?;
    let owner = cal.owner.clone();
    let Value::Object(m) = &mut body else {
        return Err((400, "parseError"));
    };
    let given = m.get("id").and_then(Value::as_str).map(str::to_owned);
    if given.is_some() && m.contains_key("iCalUID") {
        return Err((400, "invalid"));
    }
    if m.get("recurrence")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty())
        && m.get("start")
            .is_some_and(|st| st.get("dateTime").is_some() && st.get("timeZone").is_none())
    {
        return Err((400, "invalid"));
    }
    if m.get("start").is_none() || m.get("end").is_none() {
        return Err((400, "required"));
    }
    let id = match given {
        Some(id) if !is_valid_event_id(&id) => return Err((400, "invalid")),
        Some(id) => id,
        None => {
            let mut id = opaque("", s);
            id.retain(|c| c.is_ascii_digit() || ('a'..='v').contains(&c));
            format!("ev{id}")
        }
    };
    let cal = s.calendars.get(calendar).ok_or((404, "notFound"))?;
    // Ids of deleted events stay taken.
    if cal.events.contains_key(&id) {
        return Err((409, "duplicate"));
    }
    m.insert("kind".into(), json!("calendar#event"));
    m.insert("id".into(), json!(id));
    m.entry("status").or_insert(json!("confirmed"));
    m.entry("iCalUID")
        .or_insert(json!(format!("{id}@google.com")));
    m.insert("created".into(), json!(now_rfc3339()));
    m.insert("sequence".into(), json!(0));
    m.insert(
        "htmlLink".into(),
        json!(format!("https://www.google.com/calendar/event?eid={id}")),
    );
    m.entry("organizer")
        .or_insert(json!({"email": owner, "self": true}));
    m.entry("creator")
        .or_insert(json!({"email": owner, "self": true}));
    let seq = bump(s, &mut body);
    if let Some(cal) = s.calendars.get_mut(calendar) {
        cal.events.insert(
            id,
            StoredEvent {
                value: body.clone(),
                seq,
            },
        );
    }
    notify(s, calendar);
    Ok(body)
}

/// The stored event, or a virtual instance of a stored master.
fn lookup(s: &State, calendar: &str, id: &str) -> Result<(Value, bool), Refusal> {
    let cal = s.calendars.get(calendar).ok_or((404, "notFound"))?;
    if let Some(e) = cal.events.get(id) {
        return Ok((e.value.clone(), true));
    }
    let (master_id, key) = split_instance_id(id).ok_or((404, "notFound"))?;
    let master = cal.events.get(master_id).ok_or((404, "notFound"))?;
    if master.value.get("status").and_then(Value::as_str) == Some("cancelled") {
        return Err((404, "notFound"));
    }
    let inst = virtual_instance(&master.value, key).ok_or((404, "notFound"))?;
    Ok((inst, false))
}

fn check_if_match(current: &Value, stored: bool, if_match: Option<&str>) -> Result<(), Refusal> {
    let Some(want) = if_match else {
        return Ok(());
    };
    if want == "*" {
        return Ok(());
    }
    let have = current.get("etag").and_then(Value::as_str);
    if !stored || have != Some(want) {
        return Err((412, "conditionNotMet"));
    }
    Ok(())
}

/// Fields the server keeps whatever a PATCH or PUT says.
const READ_ONLY: &[&str] = &[
    "kind",
    "id",
    "etag",
    "created",
    "updated",
    "htmlLink",
    "iCalUID",
    "organizer",
    "creator",
    "recurringEventId",
    "originalStartTime",
];

/// Applies the edit armed with [`GoogleFake::edit_before_next_write`] for this event, if any.
fn before_write(s: &mut State, calendar: &str, id: &str) -> Result<(), Refusal> {
    match s
        .before_next_write
        .remove(&(calendar.to_owned(), id.to_owned()))
    {
        Some(edit) => patch_event(s, calendar, id, None, &edit, false).map(|_| ()),
        None => Ok(()),
    }
}

fn patch_event(
    s: &mut State,
    calendar: &str,
    id: &str,
    if_match: Option<&str>,
    patch: &Value,
    replace: bool,
) -> Result<Value, Refusal> {
    let (mut current, stored) = lookup(s, calendar, id)?;
    check_if_match(&current, stored, if_match)?;
    let Value::Object(p) = patch else {
        return Err((400, "parseError"));
    };
    let before = current.clone();
    if replace {
        let keep: serde_json::Map<String, Value> = current
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| READ_ONLY.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        current = Value::Object(keep);
    }
    let mut writable = p.clone();
    writable.retain(|k, _| !READ_ONLY.contains(&k.as_str()));
    apply_patch(&mut current, &Value::Object(writable));
    let moved =
        before.get("start") != current.get("start") || before.get("end") != current.get("end");
    if moved && let Some(Value::Number(n)) = current.get("sequence").cloned() {
        current["sequence"] = json!(n.as_i64().unwrap_or(0) + 1);
    }
    let seq = bump(s, &mut current);
    if let Some(cal) = s.calendars.get_mut(calendar) {
        cal.events.insert(
            id.to_owned(),
            StoredEvent {
                value: current.clone(),
                seq,
            },
        );
    }
    notify(s, calendar);
    Ok(current)
}

fn delete_event(
    s: &mut State,
    calendar: &str,
    id: &str,
    if_match: Option<&str>,
) -> Result<(), Refusal> {
    let (current, stored) = lookup(s, calendar, id)?;
    if current.get("status").and_then(Value::as_str) == Some("cancelled") {
        return Err((410, "deleted"));
    }
    check_if_match(&current, stored, if_match)?;
    let is_instance = current.get("recurringEventId").is_some();
    let mut tomb = json!({"kind": "calendar#event", "id": id, "status": "cancelled"});
    if is_instance {
        tomb["recurringEventId"] = current["recurringEventId"].clone();
        tomb["originalStartTime"] = current["originalStartTime"].clone();
    }
    let seq = bump(s, &mut tomb);
    let mut exceptions = Vec::new();
    if let Some(cal) = s.calendars.get_mut(calendar) {
        cal.events
            .insert(id.to_owned(), StoredEvent { value: tomb, seq });
        if !is_instance {
            exceptions = cal
                .events
                .iter()
                .filter(|(_, e)| {
                    e.value.get("recurringEventId").and_then(Value::as_str) == Some(id)
                        && e.value.get("status").and_then(Value::as_str) != Some("cancelled")
                })
                .map(|(k, _)| k.clone())
                .collect();
        }
    }
    // Deleting a series deletes its exceptions too.
    for ex in exceptions {
        let _ = delete_event(s, calendar, &ex, None);
    }
    notify(s, calendar);
    Ok(())
}

fn query_map(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

const FORBIDDEN_WITH_SYNC_TOKEN: &[&str] = &[
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
];

fn list_events(s: &mut State, calendar: &str, q: &BTreeMap<String, String>) -> Response {
    let Some(cal) = s.calendars.get(calendar) else {
        return envelope(404, "global", "notFound", "Not Found");
    };
    let time_zone = cal.time_zone.clone();
    let max_results: usize = match q.get("maxResults").map(|v| v.parse::<usize>()) {
        None => 250,
        Some(Ok(n)) if (1..=2500).contains(&n) => n,
        Some(_) => return bad_request("invalid", "Invalid maxResults"),
    };
    if q.get("singleEvents").map(String::as_str) == Some("true") {
        return bad_request(
            "invalid",
            "the fake does not expand series (singleEvents=true)",
        );
    }
    let show_deleted = q.get("showDeleted").map(String::as_str) == Some("true");
    let sync_token = q.get("syncToken").cloned();
    if sync_token.is_some() {
        if FORBIDDEN_WITH_SYNC_TOKEN.iter().any(|p| q.contains_key(*p)) {
            return bad_request(
                "syncTokenWithRequestRestrictions",
                "Sync token cannot be used with other request restrictions.",
            );
        }
        if q.get("showDeleted").map(String::as_str) == Some("false") {
            return bad_request("invalid", "showDeleted=false is not allowed with syncToken");
        }
    }
    let mut fingerprint: Vec<String> = q
        .iter()
        .filter(|(k, _)| k.as_str() != "pageToken" && k.as_str() != "maxResults")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    fingerprint.sort();
    let fingerprint = fingerprint.join("&");

    let cursor_key = match q.get("pageToken") {
        Some(page) => match s.cursors.get(page) {
            Some(c) if c.calendar == calendar && c.fingerprint == fingerprint => page.clone(),
            _ => return bad_request("invalid", "Invalid page token value."),
        },
        None => {
            let since = match &sync_token {
                Some(token) => {
                    let valid = s.sync_tokens.get(token).filter(|t| {
                        t.calendar == calendar
                            && t.generation == s.token_generation
                            && s.token_max_age.is_none_or(|age| t.issued.elapsed() <= age)
                    });
                    match valid {
                        Some(t) => Some(t.seq),
                        None => {
                            return envelope(
                                410,
                                "calendar",
                                "fullSyncRequired",
                                "Sync token is no longer valid, a full sync is required.",
                            );
                        }
                    }
                }
                None => None,
            };
            let time_min = q
                .get("timeMin")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok());
            let mut matching: Vec<(&String, &StoredEvent)> = cal
                .events
                .iter()
                .filter(|(_, e)| match since {
                    // Incremental: every change since the token, deletions included.
                    Some(seq) => e.seq > seq,
                    None => {
                        let cancelled =
                            e.value.get("status").and_then(Value::as_str) == Some("cancelled");
                        let instance = e.value.get("recurringEventId").is_some();
                        // showDeleted=false still returns cancelled instances of series.
                        (show_deleted || !cancelled || instance)
                            && time_min.is_none_or(|min| {
                                // timeMin bounds an event's end (exclusive); open series pass.
                                e.value.get("recurrence").is_some()
                                    || e.value
                                        .get("end")
                                        .and_then(parse_edt)
                                        .is_none_or(|(end, _, _)| end > min)
                            })
                    }
                })
                .collect();
            matching.sort_by_key(|(id, e)| (e.seq, (*id).clone()));
            let cursor = PageCursor {
                calendar: calendar.to_owned(),
                ids: matching.iter().map(|(id, _)| (*id).clone()).collect(),
                offset: 0,
                seq: s.seq,
                fingerprint,
            };
            let key = opaque("CiAK", s);
            s.cursors.insert(key.clone(), cursor);
            key
        }
    };
    let mut page = json!({
        "kind": "calendar#events",
        "etag": format!("\"p{}\"", s.seq),
        "summary": calendar,
        "timeZone": time_zone,
        "updated": now_rfc3339(),
        "accessRole": "owner",
        "defaultReminders": [],
        "items": [],
    });
    if s.empty_pages > 0 {
        s.empty_pages -= 1;
        page["nextPageToken"] = json!(cursor_key);
        return json_response(StatusCode::OK, &page);
    }
    let page_size = max_results.min(s.page_cap);
    let Some(cursor) = s.cursors.get(&cursor_key).cloned() else {
        return bad_request("invalid", "Invalid page token value.");
    };
    let end = (cursor.offset + page_size).min(cursor.ids.len());
    let items: Vec<Value> = cursor.ids[cursor.offset..end]
        .iter()
        .filter_map(|id| {
            s.calendars
                .get(calendar)
                .and_then(|c| c.events.get(id))
                .map(|e| e.value.clone())
        })
        .collect();
    page["items"] = Value::Array(items);
    s.cursors.remove(&cursor_key);
    if end < cursor.ids.len() {
        let next = opaque("CiAK", s);
        s.cursors.insert(
            next.clone(),
            PageCursor {
                offset: end,
                ..cursor
            },
        );
        page["nextPageToken"] = json!(next);
    } else {
        let token = opaque("CPjT", s);
        s.sync_tokens.insert(
            token.clone(),
            SyncToken {
                calendar: calendar.to_owned(),
                seq: cursor.seq,
                issued: Instant::now(),
                generation: s.token_generation,
            },
        );
        page["nextSyncToken"] = json!(token);
    }
    json_response(StatusCode::OK, &page)
}

fn refusal(r: Refusal) -> Response {
    let (status, reason) = r;
    let domain = if status == 412 || status == 409 || status == 410 {
        "global"
    } else {
        "calendar"
    };
    let message = match reason {
        "duplicate" => "The requested identifier already exists.",
        "conditionNotMet" => "Precondition Failed",
        "deleted" => "Resource has been deleted",
        "notFound" => "Not Found",
        _ => "Bad Request",
    };
    envelope(status, domain, reason, message)
}

fn token_endpoint(s: &mut State, body: &[u8]) -> Response {
    s.token_requests += 1;
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |k: &str| form.get(k).map(String::as_str);
    if get("grant_type") != Some("refresh_token") {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "unsupported_grant_type"}),
        );
    }
    if get("client_id") != Some(s.client_id.as_str())
        || get("client_secret") != Some(s.client_secret.as_str())
    {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client", "error_description": "Unauthorized"}),
        );
    }
    if get("refresh_token") != Some(s.refresh_token.as_str()) {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "invalid_grant", "error_description": "Bad Request"}),
        );
    }
    let token = opaque("ya29.", s);
    s.access_tokens.insert(token.clone());
    json_response(
        StatusCode::OK,
        &json!({"access_token": token, "expires_in": s.access_token_lifetime,
                "token_type": "Bearer", "scope": "https://www.googleapis.com/auth/calendar"}),
    )
}

fn handle(
    state: &Mutex<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (Response, Vec<Delivery>) {
    let mut s = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = uri.path().to_owned();
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = route(&mut s, &method, &uri, &headers, &body, if_match.as_deref());
    s.log.push(LoggedRequest {
        method: method.to_string(),
        path,
        query: uri.query().unwrap_or_default().to_owned(),
        if_match,
        status: response.status().as_u16(),
    });
    let deliveries = std::mem::take(&mut s.outbox);
    (response, deliveries)
}

fn route(
    s: &mut State,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    if_match: Option<&str>,
) -> Response {
    if uri.path() == "/token" && *method == Method::POST {
        return token_endpoint(s, body);
    }
    let stop_path = format!("{API_PREFIX}channels/stop");
    let Some(rest) = uri.path().strip_prefix(API_PREFIX) else {
        return envelope(404, "global", "notFound", "Not Found");
    };
    let authorized = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| s.access_tokens.contains(t));
    if !authorized {
        return envelope(401, "global", "authError", "Invalid Credentials");
    }
    let segments: Vec<String> = rest
        .split('/')
        .map(|seg| {
            url::form_urlencoded::parse(format!("x={}", seg.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let lose_response = match s.faults.first().cloned() {
        None => false,
        Some(Fault::LoseResponse) => {
            s.faults.remove(0);
            true
        }
        Some(fault) => {
            s.faults.remove(0);
            return match fault {
                Fault::RateLimit403 => envelope(
                    403,
                    "usageLimits",
                    "rateLimitExceeded",
                    "Rate Limit Exceeded",
                ),
                Fault::UserRateLimit403 => envelope(
                    403,
                    "usageLimits",
                    "userRateLimitExceeded",
                    "User Rate Limit Exceeded",
                ),
                Fault::TooMany429 { retry_after } => {
                    let mut r = envelope(
                        429,
                        "usageLimits",
                        "rateLimitExceeded",
                        "Rate Limit Exceeded",
                    );
                    if let Some(secs) = retry_after
                        && let Ok(v) = HeaderValue::from_str(&secs.to_string())
                    {
                        r.headers_mut().insert(header::RETRY_AFTER, v);
                    }
                    r
                }
                _ => envelope(503, "global", "backendError", "Backend Error"),
            };
        }
    };
    // Unparseable JSON bodies answer 400 parseError.
    let parsed_body = || serde_json::from_slice::<Value>(body).ok();
    if uri.path() == stop_path && *method == Method::POST {
        return match parsed_body().map(|b| stop_channel(s, &b)) {
            Some(Ok(())) => StatusCode::NO_CONTENT.into_response(),
            Some(Err(r)) => refusal(r),
            None => bad_request("parseError", "Parse Error"),
        };
    }
    let result = match (method.as_str(), seg.as_slice()) {
        ("POST", ["calendars", cal, "events", "watch"]) => match parsed_body() {
            Some(b) => match watch(s, cal, &b) {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(r) => refusal(r),
            },
            None => bad_request("parseError", "Parse Error"),
        },
        ("GET", ["calendars", cal, "events"]) => {
            let q = query_map(uri);
            list_events(s, cal, &q)
        }
        ("POST", ["calendars", cal, "events"]) => match parsed_body() {
            Some(b) => match insert_event(s, cal, b) {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(r) => refusal(r),
            },
            None => bad_request("parseError", "Parse Error"),
        },
        ("GET", ["calendars", cal, "events", id]) => match lookup(s, cal, id) {
            Ok((v, _)) => json_response(StatusCode::OK, &v),
            Err(r) => refusal(r),
        },
        ("PATCH" | "PUT", ["calendars", cal, "events", id]) => match parsed_body() {
            Some(b) => match before_write(s, cal, id)
                .and_then(|()| patch_event(s, cal, id, if_match, &b, *method == Method::PUT))
            {
                Ok(v) => json_response(StatusCode::OK, &v),
                Err(r) => refusal(r),
            },
            None => bad_request("parseError", "Parse Error"),
        },
        ("DELETE", ["calendars", cal, "events", id]) => match delete_event(s, cal, id, if_match) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(r) => refusal(r),
        },
        _ => envelope(404, "global", "notFound", "Not Found"),
    };
    if lose_response {
        return envelope(503, "global", "backendError", "Backend Error");
    }
    result
}
