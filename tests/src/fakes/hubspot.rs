//! A fake HubSpot CRM (v3 objects, search, batch, merge; v4 associations) on a loopback port,
//! following the checklist of providers.md 3.7, with faults the tests inject.
//!
//! Reproduced: string-typed properties; `lastmodifieddate` for contacts and `hs_lastmodifieddate`
//! for companies and deals; search with filter groups, one sort, offset paging, at most 200 per
//! page, a result cap (10,000 by default; paging past it is a 400), 5 searches per second (a 429
//! `TEN_SECONDLY_ROLLING`) and a configurable lag before a write shows in search; archived
//! records never in search, listed only with `archived=true`, restorable; batch create/update with
//! 207 partial failures keyed by `objectWriteTraceId`; 409 "Contact already exists. Existing ID:
//! N"; merges that keep (or newly create) a survivor with `hs_merged_object_ids`, whose absorbed
//! ids answer GETs with the survivor; injectable `DAILY` / `TEN_SECONDLY_ROLLING` 429s and lost
//! create responses; a request log; and signed webhook deliveries the test can duplicate and
//! reorder.
//!
//! Time: record times come from a fake clock (epoch ms, starting at the real time) that moves 1 ms
//! per write and when the test advances it; search lag is measured on that clock, so scenarios are deterministic. The search
//! rate limit uses real time, as HubSpot does.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use driftless_bridges::hubspot::signature::{SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_v3};
use driftless_bridges::hubspot::translate::{format_time_ms, parse_time_ms};
use driftless_bridges::hubspot::webhook::ObjectType;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The access token the fake accepts.
pub const TOKEN: &str = "pat-fake-hubspot-token";
/// OAuth client of the fake's token endpoint (`POST /oauth/v1/token`).
pub const OAUTH_CLIENT_ID: &str = "fake-client-id";
pub const OAUTH_CLIENT_SECRET: &str = "fake-oauth-client-secret";
pub const OAUTH_REFRESH_TOKEN: &str = "fake-refresh-token";
/// The portal (account) id in webhooks.
pub const PORTAL_ID: u64 = 62515;
/// A fixed time for batch envelopes' `startedAt` / `completedAt`: 2026-01-01T00:00:00Z.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

/// One request the fake answered.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: Value,
    pub status: u16,
}

impl LoggedRequest {
    /// Whether it is a write (anything but GET, search and batch read).
    pub fn is_write(&self) -> bool {
        self.method != "GET"
            && !self.path.ends_with("/search")
            && !self.path.ends_with("/batch/read")
    }
}

#[derive(Debug, Clone)]
struct View {
    props: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
struct Stored {
    id: u64,
    props: BTreeMap<String, String>,
    created_ms: i64,
    modified_ms: i64,
    archived_ms: Option<i64>,
    /// Absorbed by a merge into this id.
    merged_into: Option<u64>,
    /// What search sees now, and the newer version waiting for the index.
    search_view: Option<View>,
    pending_view: Option<(i64, View)>,
}

#[derive(Debug, Clone)]
struct InjectedLimit {
    policy: &'static str,
    retry_after_secs: Option<u64>,
}

#[derive(Debug)]
struct State {
    clock_ms: i64,
    next_id: u64,
    objects: BTreeMap<ObjectType, BTreeMap<u64, Stored>>,
    /// (from type, from id, to type, to id, type id).
    associations: BTreeSet<(ObjectType, u64, ObjectType, u64, u32)>,
    search_cap: u64,
    searches_per_second: usize,
    search_lag_ms: i64,
    search_times: VecDeque<Instant>,
    results_carry_trace_ids: bool,
    merge_creates_new_id: bool,
    limits: VecDeque<InjectedLimit>,
    fail_trace_ids: BTreeSet<String>,
    lose_create_responses: u32,
    log: Vec<LoggedRequest>,
    events: Vec<Value>,
    next_event_id: u64,
}

/// The fake. Dropping it stops the server.
pub struct FakeHubSpot {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeHubSpot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Arc<Mutex<State>>) -> MutexGuard<'_, State> {
    // A panicking handler poisons the lock; the state is still the best evidence we have.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn last_modified(o: ObjectType) -> &'static str {
    o.last_modified_property()
}

impl FakeHubSpot {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            // Starts at the real time: webhook receivers judge events' age by their own clock.
            clock_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(EPOCH_MS, |d| {
                    i64::try_from(d.as_millis()).unwrap_or(EPOCH_MS)
                }),
            next_id: 1001,
            objects: BTreeMap::new(),
            associations: BTreeSet::new(),
            search_cap: 10_000,
            searches_per_second: 5,
            search_lag_ms: 0,
            search_times: VecDeque::new(),
            results_carry_trace_ids: true,
            merge_creates_new_id: false,
            limits: VecDeque::new(),
            fail_trace_ids: BTreeSet::new(),
            lose_create_responses: 0,
            log: Vec::new(),
            events: Vec::new(),
            next_event_id: 1,
        }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = state.clone();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = shared.clone();
                async move { handle(&state, method, uri, headers, body) }
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeHubSpot { addr, state, task })
    }

    /// `http://127.0.0.1:<port>`: the bridge's `api_base`.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    // --- configuration and faults ---

    /// Results one search query can page through (HubSpot: 10,000).
    pub fn set_search_cap(&self, cap: u64) {
        self.state().search_cap = cap;
    }

    /// Searches allowed per second before a 429 (HubSpot: 5).
    pub fn set_searches_per_second(&self, n: usize) {
        self.state().searches_per_second = n;
    }

    /// Fake-clock milliseconds before a later write shows in search.
    pub fn set_search_lag(&self, ms: i64) {
        self.state().search_lag_ms = ms;
    }

    /// Whether batch results carry `objectWriteTraceId` (newer API versions do).
    pub fn set_results_carry_trace_ids(&self, on: bool) {
        self.state().results_carry_trace_ids = on;
    }

    /// Whether a merge creates a new survivor id instead of keeping the primary's.
    pub fn set_merge_creates_new_id(&self, on: bool) {
        self.state().merge_creates_new_id = on;
    }

    /// The next `count` API requests get a 429 with `policy` (`TEN_SECONDLY_ROLLING` or `DAILY`).
    pub fn inject_rate_limit(
        &self,
        policy: &'static str,
        count: usize,
        retry_after_secs: Option<u64>,
    ) {
        let mut s = self.state();
        for _ in 0..count {
            s.limits.push_back(InjectedLimit {
                policy,
                retry_after_secs,
            });
        }
    }

    /// The next batch input carrying this `objectWriteTraceId` fails (once) with a validation error.
    pub fn fail_batch_input(&self, trace_id: &str) {
        self.state().fail_trace_ids.insert(trace_id.to_owned());
    }

    /// The next `count` single creates are applied but answered with a 504 (a lost response).
    pub fn lose_create_responses(&self, count: u32) {
        self.state().lose_create_responses = count;
    }

    // --- the clock ---

    pub fn now_ms(&self) -> i64 {
        self.state().clock_ms
    }

    pub fn advance(&self, ms: i64) {
        self.state().clock_ms += ms;
    }

    // --- direct edits (what a person in HubSpot's UI would do) ---

    /// Creates an object with `props`; returns its id.
    pub fn insert(&self, object: ObjectType, props: &[(&str, &str)]) -> String {
        let mut s = self.state();
        let props = props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        s.create(object, props, "CRM_UI").to_string()
    }

    /// Creates `count` objects that all share one modification instant (ties for the cursor).
    pub fn insert_many_at_one_instant(
        &self,
        object: ObjectType,
        count: usize,
        prefix: &str,
    ) -> Vec<String> {
        let mut s = self.state();
        let at = s.clock_ms;
        let mut ids = Vec::new();
        for i in 0..count {
            s.clock_ms = at;
            let props = BTreeMap::from([("firstname".to_owned(), format!("{prefix}{i}"))]);
            let id = s.create(object, props, "CRM_UI");
            ids.push(id.to_string());
        }
        s.clock_ms = at + 1;
        ids
    }

    /// Edits properties of an object (empty string clears).
    pub fn edit(&self, object: ObjectType, id: &str, props: &[(&str, &str)]) {
        let mut s = self.state();
        let Ok(id) = id.parse() else { return };
        let props = props
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        s.update(object, id, &props, "CRM_UI");
    }

    /// Archives (deletes) an object.
    pub fn archive(&self, object: ObjectType, id: &str) -> bool {
        let Ok(id) = id.parse() else { return false };
        self.state().archive(object, id)
    }

    /// Restores an archived object.
    pub fn restore(&self, object: ObjectType, id: &str) -> bool {
        let Ok(id) = id.parse() else { return false };
        self.state().restore(object, id)
    }

    /// Merges `other` into `primary`; returns the survivor's id.
    pub fn merge(&self, object: ObjectType, primary: &str, other: &str) -> Option<String> {
        let (Ok(p), Ok(o)) = (primary.parse(), other.parse()) else {
            return None;
        };
        self.state().merge(object, p, o).map(|id| id.to_string())
    }

    /// An object's properties as the API would show them (None: unknown, archived or merged).
    pub fn get(&self, object: ObjectType, id: &str) -> Option<BTreeMap<String, String>> {
        let id: u64 = id.parse().ok()?;
        let s = self.state();
        let o = s.objects.get(&object)?.get(&id)?;
        (o.archived_ms.is_none() && o.merged_into.is_none()).then(|| s.visible_props(object, o))
    }

    /// Live (neither archived nor merged) objects of a type.
    pub fn live_count(&self, object: ObjectType) -> usize {
        self.state().objects.get(&object).map_or(0, |m| {
            m.values()
                .filter(|o| o.archived_ms.is_none() && o.merged_into.is_none())
                .count()
        })
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state().log.clone()
    }

    /// Requests to the OAuth token endpoint so far.
    pub fn token_requests(&self) -> usize {
        self.state()
            .log
            .iter()
            .filter(|r| r.path == "/oauth/v1/token")
            .count()
    }

    /// Write requests so far.
    pub fn write_count(&self) -> usize {
        self.state().log.iter().filter(|r| r.is_write()).count()
    }

    /// The inputs of every batch call to `path_suffix` (e.g. `batch/create`), flattened.
    pub fn logged_inputs(&self, path_suffix: &str) -> Vec<Value> {
        self.state()
            .log
            .iter()
            .filter(|r| r.path.ends_with(path_suffix))
            .flat_map(|r| r.body["inputs"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Webhook events produced so far (taken: the next call returns only newer ones).
    pub fn take_webhook_events(&self) -> Vec<Value> {
        std::mem::take(&mut self.state().events)
    }

    /// Associates `from`/`id` with `to`/`to_id` under HubSpot-defined `type_id`, as a HubSpot
    /// user would (no request is logged). False when either object is unknown.
    pub fn associate(
        &self,
        from: ObjectType,
        id: &str,
        to: ObjectType,
        to_id: &str,
        type_id: u32,
    ) -> bool {
        let (Ok(id), Ok(to_id)) = (id.parse::<u64>(), to_id.parse::<u64>()) else {
            return false;
        };
        let mut s = self.state();
        if s.live(from, id).is_none() || s.live(to, to_id).is_none() {
            return false;
        }
        s.associations.insert((from, id, to, to_id, type_id));
        true
    }

    /// Associated ids (v4) of `from`/`id` with objects of `to`.
    pub fn associated(&self, from: ObjectType, id: &str, to: ObjectType) -> Vec<String> {
        let Ok(id) = id.parse::<u64>() else {
            return vec![];
        };
        let s = self.state();
        let mut out: Vec<String> = s
            .associations
            .iter()
            .filter(|(f, fi, t, _, _)| *f == from && *fi == id && *t == to)
            .map(|(_, _, _, ti, _)| ti.to_string())
            .collect();
        out.dedup();
        out
    }
}

/// Posts `events` (a JSON array, in the given order, each with `attemptNumber = attempt`) to
/// `url`, signed with v3 as HubSpot does; returns the answer's status.
pub async fn deliver_webhook(
    url: &str,
    client_secret: &str,
    events: &[Value],
    attempt: u32,
) -> anyhow::Result<u16> {
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e["attemptNumber"] = json!(attempt);
            e
        })
        .collect();
    let body = serde_json::to_vec(&events)?;
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        .to_string();
    let signature = sign_v3(client_secret.as_bytes(), "POST", url, &body, &timestamp);
    let resp = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(TIMESTAMP_HEADER, timestamp)
        .body(body)
        .send()
        .await?;
    Ok(resp.status().as_u16())
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

fn subscription(object: ObjectType, action: &str) -> String {
    let o = match object {
        ObjectType::Contact => "contact",
        ObjectType::Company => "company",
        ObjectType::Deal => "deal",
    };
    format!("{o}.{action}")
}

impl State {
    fn tick(&mut self) -> i64 {
        self.clock_ms += 1;
        self.clock_ms
    }

    fn event(&mut self, object: ObjectType, action: &str, fields: Value) {
        let mut e = json!({
            "eventId": self.next_event_id,
            "subscriptionId": 4000 + u64::from(object.type_id().as_bytes()[2]),
            "portalId": PORTAL_ID,
            "appId": 77,
            "occurredAt": self.clock_ms,
            "subscriptionType": subscription(object, action),
            "attemptNumber": 0,
            "changeSource": "CRM",
        });
        self.next_event_id += 1;
        if let (Some(map), Value::Object(extra)) = (e.as_object_mut(), fields) {
            map.extend(extra);
        }
        self.events.push(e);
    }

    fn visible_props(&self, object: ObjectType, o: &Stored) -> BTreeMap<String, String> {
        let mut props = o.props.clone();
        props.insert("hs_object_id".into(), o.id.to_string());
        props.insert("createdate".into(), format_time_ms(o.created_ms));
        props.insert(last_modified(object).into(), format_time_ms(o.modified_ms));
        props
    }

    fn reindex(&mut self, object: ObjectType, id: u64) {
        let lag = self.search_lag_ms;
        let now = self.clock_ms;
        let Some(o) = self.objects.get(&object).and_then(|m| m.get(&id)).cloned() else {
            return;
        };
        let view = View {
            props: self.visible_props(object, &o),
        };
        if let Some(stored) = self.objects.get_mut(&object).and_then(|m| m.get_mut(&id)) {
            if lag <= 0 {
                stored.search_view = Some(view);
                stored.pending_view = None;
            } else {
                stored.pending_view = Some((now + lag, view));
            }
        }
    }

    fn create(&mut self, object: ObjectType, props: BTreeMap<String, String>, source: &str) -> u64 {
        let now = self.tick();
        let id = self.next_id;
        self.next_id += 1;
        let props: BTreeMap<String, String> =
            props.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        self.objects.entry(object).or_default().insert(
            id,
            Stored {
                id,
                props,
                created_ms: now,
                modified_ms: now,
                archived_ms: None,
                merged_into: None,
                search_view: None,
                pending_view: None,
            },
        );
        self.reindex(object, id);
        self.event(
            object,
            "creation",
            json!({"objectId": id, "changeSource": source}),
        );
        id
    }

    fn live(&self, object: ObjectType, id: u64) -> Option<&Stored> {
        self.objects
            .get(&object)?
            .get(&id)
            .filter(|o| o.archived_ms.is_none() && o.merged_into.is_none())
    }

    /// Follows merges to the survivor.
    fn resolve(&self, object: ObjectType, mut id: u64) -> u64 {
        for _ in 0..16 {
            match self
                .objects
                .get(&object)
                .and_then(|m| m.get(&id))
                .and_then(|o| o.merged_into)
            {
                Some(next) => id = next,
                None => break,
            }
        }
        id
    }

    fn update(
        &mut self,
        object: ObjectType,
        id: u64,
        props: &BTreeMap<String, String>,
        source: &str,
    ) -> bool {
        if self.live(object, id).is_none() {
            return false;
        }
        let now = self.tick();
        let mut changed = Vec::new();
        if let Some(o) = self.objects.get_mut(&object).and_then(|m| m.get_mut(&id)) {
            for (k, v) in props {
                let old = o.props.get(k).cloned().unwrap_or_default();
                if old != *v {
                    changed.push((k.clone(), v.clone()));
                }
                if v.is_empty() {
                    o.props.remove(k);
                } else {
                    o.props.insert(k.clone(), v.clone());
                }
            }
            // HubSpot bumps the modification time on every accepted write.
            o.modified_ms = now;
        }
        self.reindex(object, id);
        for (k, v) in changed {
            self.event(
                object,
                "propertyChange",
                json!({"objectId": id, "propertyName": k, "propertyValue": v, "changeSource": source}),
            );
        }
        true
    }

    fn archive(&mut self, object: ObjectType, id: u64) -> bool {
        if self.live(object, id).is_none() {
            return false;
        }
        let now = self.tick();
        if let Some(o) = self.objects.get_mut(&object).and_then(|m| m.get_mut(&id)) {
            o.archived_ms = Some(now);
            o.search_view = None;
            o.pending_view = None;
        }
        self.event(object, "deletion", json!({"objectId": id}));
        true
    }

    fn restore(&mut self, object: ObjectType, id: u64) -> bool {
        let archived = self
            .objects
            .get(&object)
            .and_then(|m| m.get(&id))
            .is_some_and(|o| o.archived_ms.is_some());
        if !archived {
            return false;
        }
        let now = self.tick();
        if let Some(o) = self.objects.get_mut(&object).and_then(|m| m.get_mut(&id)) {
            o.archived_ms = None;
            o.modified_ms = now;
        }
        self.reindex(object, id);
        self.event(object, "restore", json!({"objectId": id}));
        true
    }

    fn merge(&mut self, object: ObjectType, primary: u64, other: u64) -> Option<u64> {
        let p = self.live(object, primary)?.clone();
        let o = self.live(object, other)?.clone();
        if primary == other {
            return None;
        }
        let now = self.tick();
        let mut props = o.props.clone();
        let mut moved = 0;
        for (k, v) in &p.props {
            props.insert(k.clone(), v.clone());
        }
        for k in o.props.keys() {
            if !p.props.contains_key(k) {
                moved += 1;
            }
        }
        let mut absorbed: Vec<String> = Vec::new();
        for src in [&p, &o] {
            absorbed.extend(
                src.props
                    .get("hs_merged_object_ids")
                    .map(|v| v.split(';').map(str::to_owned).collect::<Vec<_>>())
                    .unwrap_or_default(),
            );
        }
        let survivor = if self.merge_creates_new_id {
            let id = self.next_id;
            self.next_id += 1;
            absorbed.push(primary.to_string());
            absorbed.push(other.to_string());
            id
        } else {
            absorbed.push(other.to_string());
            primary
        };
        absorbed.retain(|a| !a.is_empty());
        absorbed.sort();
        absorbed.dedup();
        props.insert("hs_merged_object_ids".into(), absorbed.join(";"));
        let objects = self.objects.entry(object).or_default();
        objects.insert(
            survivor,
            Stored {
                id: survivor,
                props,
                created_ms: p.created_ms,
                modified_ms: now,
                archived_ms: None,
                merged_into: None,
                search_view: None,
                pending_view: None,
            },
        );
        for gone in [primary, other] {
            if gone != survivor
                && let Some(g) = objects.get_mut(&gone)
            {
                g.merged_into = Some(survivor);
                g.search_view = None;
                g.pending_view = None;
            }
        }
        self.reindex(object, survivor);
        let new_object_id = (survivor != primary).then_some(survivor);
        self.event(
            object,
            "merge",
            json!({"objectId": survivor, "primaryObjectId": primary, "mergedObjectIds": [other],
                   "newObjectId": new_object_id, "numberOfPropertiesMoved": moved}),
        );
        Some(survivor)
    }

    fn object_json(&self, object: ObjectType, o: &Stored, properties: Option<&[String]>) -> Value {
        let all = self.visible_props(object, o);
        Self::render(object, o, &all, properties)
    }

    fn render(
        object: ObjectType,
        o: &Stored,
        all: &BTreeMap<String, String>,
        properties: Option<&[String]>,
    ) -> Value {
        let mut props = serde_json::Map::new();
        match properties {
            Some(wanted) if !wanted.is_empty() => {
                for w in wanted {
                    props.insert(w.clone(), all.get(w).map_or(Value::Null, |v| json!(v)));
                }
                for always in ["hs_object_id", "createdate", last_modified(object)] {
                    props.insert(
                        always.into(),
                        all.get(always).map_or(Value::Null, |v| json!(v)),
                    );
                }
            }
            _ => {
                for (k, v) in all {
                    props.insert(k.clone(), json!(v));
                }
            }
        }
        let mut v = json!({
            "id": o.id.to_string(),
            "properties": props,
            "createdAt": format_time_ms(o.created_ms),
            "updatedAt": format_time_ms(o.modified_ms),
            "archived": o.archived_ms.is_some(),
        });
        if let Some(at) = o.archived_ms {
            v["archivedAt"] = json!(format_time_ms(at));
        }
        v
    }

    fn duplicate_email(&self, object: ObjectType, props: &BTreeMap<String, String>) -> Option<u64> {
        if object != ObjectType::Contact {
            return None;
        }
        let email = props.get("email")?.trim().to_lowercase();
        if email.is_empty() {
            return None;
        }
        self.objects.get(&object)?.values().find_map(|o| {
            (o.archived_ms.is_none()
                && o.merged_into.is_none()
                && o.props
                    .get("email")
                    .is_some_and(|e| e.trim().to_lowercase() == email))
            .then_some(o.id)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

fn reply(status: u16, body: Value) -> (u16, Value) {
    (status, body)
}

fn error(status: u16, category: &str, message: &str) -> (u16, Value) {
    reply(
        status,
        json!({"status": "error", "message": message, "correlationId": "fake-correlation",
               "category": category}),
    )
}

fn handle(
    state: &Arc<Mutex<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut s = lock(state);
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {TOKEN}"));
    let mut extra_headers: Vec<(&'static str, String)> = Vec::new();
    let (status, answer) = if path == "/oauth/v1/token" {
        oauth_token(&body)
    } else if !authorized {
        error(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found.",
        )
    } else if let Some(limit) = s.limits.pop_front() {
        if let Some(secs) = limit.retry_after_secs {
            extra_headers.push(("retry-after", secs.to_string()));
        }
        if limit.policy == "DAILY" {
            extra_headers.push(("x-hubspot-ratelimit-daily", "250000".into()));
            extra_headers.push(("x-hubspot-ratelimit-daily-remaining", "0".into()));
        }
        reply(
            429,
            json!({"status": "error", "message": "You have reached your rate limit.",
                   "errorType": "RATE_LIMIT", "correlationId": "fake-correlation",
                   "policyName": limit.policy, "category": "RATE_LIMITS"}),
        )
    } else {
        route(&mut s, &method, &path, &query, &json_body)
    };
    s.log.push(LoggedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().unwrap_or("").to_owned(),
        body: json_body,
        status,
    });
    drop(s);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = if status == 204 {
        code.into_response()
    } else {
        (code, axum::Json(answer)).into_response()
    };
    for (k, v) in extra_headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// HubSpot's token endpoint: a form-encoded refresh-token grant.
fn oauth_token(body: &[u8]) -> (u16, Value) {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str);
    if field("grant_type") != Some("refresh_token")
        || field("client_id") != Some(OAUTH_CLIENT_ID)
        || field("client_secret") != Some(OAUTH_CLIENT_SECRET)
        || field("refresh_token") != Some(OAUTH_REFRESH_TOKEN)
    {
        return reply(
            400,
            json!({"status": "BAD_REFRESH_TOKEN", "message": "missing or unknown refresh token"}),
        );
    }
    reply(
        200,
        json!({"token_type": "bearer", "access_token": TOKEN, "refresh_token": OAUTH_REFRESH_TOKEN,
               "expires_in": 1800}),
    )
}

fn props_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        Value::Null => String::new(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn requested_properties(query: &BTreeMap<String, String>) -> Option<Vec<String>> {
    query.get("properties").map(|p| {
        p.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

fn route(
    s: &mut State,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &Value,
) -> (u16, Value) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["crm", "v3", "objects", o, rest @ ..] => {
            let Some(object) = ObjectType::from_path(o) else {
                return error(404, "OBJECT_NOT_FOUND", &format!("Unknown object type {o}"));
            };
            match (method.as_str(), rest) {
                ("GET", []) => list(s, object, query),
                ("POST", []) => create_one(s, object, body),
                ("POST", ["search"]) => search(s, object, body),
                ("POST", ["merge"]) => merge_http(s, object, body),
                ("POST", ["batch", "create"]) => batch_create(s, object, body),
                ("POST", ["batch", "update"]) => batch_update(s, object, body),
                ("GET", [id]) => get_one(s, object, id, query),
                ("PATCH", [id]) => patch_one(s, object, id, body),
                ("DELETE", [id]) => match id.parse().ok().map(|id| s.archive(object, id)) {
                    Some(true) => reply(204, Value::Null),
                    _ => error(404, "OBJECT_NOT_FOUND", "Object not found"),
                },
                _ => error(404, "NOT_FOUND", &format!("no route {method} {path}")),
            }
        }
        [
            "crm",
            "v4",
            "objects",
            from,
            from_id,
            "associations",
            to,
            rest @ ..,
        ] => {
            let (Some(from), Some(to), Ok(from_id)) = (
                ObjectType::from_path(from),
                ObjectType::from_path(to),
                from_id.parse::<u64>(),
            ) else {
                return error(400, "VALIDATION_ERROR", "bad association path");
            };
            match (method.as_str(), rest) {
                ("PUT", [to_id]) => {
                    let Ok(to_id) = to_id.parse::<u64>() else {
                        return error(400, "VALIDATION_ERROR", "bad id");
                    };
                    if s.live(from, from_id).is_none() || s.live(to, to_id).is_none() {
                        return error(404, "OBJECT_NOT_FOUND", "Object not found");
                    }
                    let types: Vec<u32> = body
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|t| t["associationTypeId"].as_u64())
                                .filter_map(|t| u32::try_from(t).ok())
                                .collect()
                        })
                        .unwrap_or_default();
                    for t in &types {
                        s.associations.insert((from, from_id, to, to_id, *t));
                    }
                    reply(
                        200,
                        json!({"fromObjectId": from_id, "toObjectId": to_id, "labels": []}),
                    )
                }
                ("GET", []) => {
                    let mut by_target: BTreeMap<u64, Vec<Value>> = BTreeMap::new();
                    for (f, fi, t, ti, ty) in &s.associations {
                        if *f == from && *fi == from_id && *t == to {
                            by_target.entry(*ti).or_default().push(
                                json!({"category": "HUBSPOT_DEFINED", "typeId": ty, "label": null}),
                            );
                        }
                    }
                    let results: Vec<Value> = by_target
                        .into_iter()
                        .map(|(id, types)| json!({"toObjectId": id, "associationTypes": types}))
                        .collect();
                    reply(200, json!({"results": results}))
                }
                _ => error(404, "NOT_FOUND", "no such association route"),
            }
        }
        _ => error(404, "NOT_FOUND", &format!("no route {method} {path}")),
    }
}

fn list(s: &mut State, object: ObjectType, query: &BTreeMap<String, String>) -> (u16, Value) {
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let after: u64 = query.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let archived = query.get("archived").is_some_and(|a| a == "true");
    let properties = requested_properties(query);
    let matching: Vec<&Stored> = s
        .objects
        .get(&object)
        .map(|m| {
            m.values()
                .filter(|o| {
                    o.merged_into.is_none() && o.archived_ms.is_some() == archived && o.id >= after
                })
                .collect()
        })
        .unwrap_or_default();
    let page: Vec<Value> = matching
        .iter()
        .take(limit)
        .map(|o| s.object_json(object, o, properties.as_deref()))
        .collect();
    let mut answer = json!({"results": page});
    if let Some(next) = matching.get(limit) {
        answer["paging"] = json!({"next": {"after": next.id.to_string(), "link": "?after="}});
    }
    reply(200, answer)
}

fn get_one(
    s: &mut State,
    object: ObjectType,
    id: &str,
    query: &BTreeMap<String, String>,
) -> (u16, Value) {
    let properties = requested_properties(query);
    let found = match query.get("idProperty") {
        Some(prop) => s.objects.get(&object).and_then(|m| {
            m.values().find(|o| {
                o.archived_ms.is_none()
                    && o.merged_into.is_none()
                    && o.props.get(prop).is_some_and(|v| v == id)
            })
        }),
        None => id
            .parse()
            .ok()
            .map(|id| s.resolve(object, id))
            .and_then(|id| s.live(object, id)),
    };
    match found {
        Some(o) => reply(200, s.object_json(object, o, properties.as_deref())),
        None => error(404, "OBJECT_NOT_FOUND", "Object not found"),
    }
}

fn create_one(s: &mut State, object: ObjectType, body: &Value) -> (u16, Value) {
    let props = props_of(&body["properties"]);
    if let Some(existing) = s.duplicate_email(object, &props) {
        return error(
            409,
            "CONFLICT",
            &format!("Contact already exists. Existing ID: {existing}"),
        );
    }
    let id = s.create(object, props, "INTEGRATION");
    if s.lose_create_responses > 0 {
        s.lose_create_responses -= 1;
        return error(
            504,
            "GATEWAY_TIMEOUT",
            "The upstream timed out (the write happened)",
        );
    }
    let o = s.live(object, id).cloned();
    match o {
        Some(o) => reply(201, s.object_json(object, &o, None)),
        None => error(500, "INTERNAL", "vanished"),
    }
}

fn patch_one(s: &mut State, object: ObjectType, id: &str, body: &Value) -> (u16, Value) {
    let Ok(id) = id.parse() else {
        return error(404, "OBJECT_NOT_FOUND", "Object not found");
    };
    let id = s.resolve(object, id);
    let props = props_of(&body["properties"]);
    if !s.update(object, id, &props, "INTEGRATION") {
        return error(404, "OBJECT_NOT_FOUND", "Object not found");
    }
    let o = s.live(object, id).cloned();
    match o {
        Some(o) => reply(200, s.object_json(object, &o, None)),
        None => error(500, "INTERNAL", "vanished"),
    }
}

fn merge_http(s: &mut State, object: ObjectType, body: &Value) -> (u16, Value) {
    let primary = body["primaryObjectId"]
        .as_str()
        .and_then(|v| v.parse().ok());
    let other = body["objectIdToMerge"]
        .as_str()
        .and_then(|v| v.parse().ok());
    let (Some(p), Some(o)) = (primary, other) else {
        return error(
            400,
            "VALIDATION_ERROR",
            "primaryObjectId and objectIdToMerge are required",
        );
    };
    match s
        .merge(object, p, o)
        .and_then(|id| s.live(object, id).cloned())
    {
        Some(o) => reply(200, s.object_json(object, &o, None)),
        None => error(400, "VALIDATION_ERROR", "cannot merge these objects"),
    }
}

fn batch_times() -> Value {
    json!(format_time_ms(EPOCH_MS))
}

fn input_error(trace: Option<&str>, id: Option<&str>, category: &str, message: &str) -> Value {
    let mut context = serde_json::Map::new();
    if let Some(t) = trace {
        context.insert("objectWriteTraceId".into(), json!([t]));
    }
    if let Some(id) = id {
        context.insert("ids".into(), json!([id]));
    }
    json!({"status": "error", "category": category, "message": message, "context": context})
}

fn batch_create(s: &mut State, object: ObjectType, body: &Value) -> (u16, Value) {
    let inputs = body["inputs"].as_array().cloned().unwrap_or_default();
    if inputs.len() > 100 {
        return error(
            400,
            "VALIDATION_ERROR",
            "Batch size exceeds the limit of 100",
        );
    }
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in &inputs {
        let trace = input["objectWriteTraceId"].as_str();
        if let Some(t) = trace
            && s.fail_trace_ids.remove(t)
        {
            errors.push(input_error(
                Some(t),
                None,
                "VALIDATION_ERROR",
                "Property values were not valid (injected)",
            ));
            continue;
        }
        let props = props_of(&input["properties"]);
        if let Some(existing) = s.duplicate_email(object, &props) {
            errors.push(input_error(
                trace,
                None,
                "CONFLICT",
                &format!("Contact already exists. Existing ID: {existing}"),
            ));
            continue;
        }
        let id = s.create(object, props, "INTEGRATION");
        if let Some(o) = s.live(object, id).cloned() {
            let mut v = s.object_json(object, &o, None);
            if s.results_carry_trace_ids
                && let Some(t) = trace
            {
                v["objectWriteTraceId"] = json!(t);
            }
            results.push(v);
        }
    }
    batch_answer(results, errors, 201)
}

fn batch_update(s: &mut State, object: ObjectType, body: &Value) -> (u16, Value) {
    let inputs = body["inputs"].as_array().cloned().unwrap_or_default();
    if inputs.len() > 100 {
        return error(
            400,
            "VALIDATION_ERROR",
            "Batch size exceeds the limit of 100",
        );
    }
    let mut results = Vec::new();
    let mut errors = Vec::new();
    for input in &inputs {
        let trace = input["objectWriteTraceId"].as_str();
        let id_text = input["id"].as_str().unwrap_or("");
        if let Some(t) = trace
            && s.fail_trace_ids.remove(t)
        {
            errors.push(input_error(
                Some(t),
                Some(id_text),
                "VALIDATION_ERROR",
                "Property values were not valid (injected)",
            ));
            continue;
        }
        let id = id_text.parse().ok().map(|id| s.resolve(object, id));
        let props = props_of(&input["properties"]);
        match id {
            Some(id) if s.update(object, id, &props, "INTEGRATION") => {
                if let Some(o) = s.live(object, id).cloned() {
                    let mut v = s.object_json(object, &o, None);
                    if s.results_carry_trace_ids
                        && let Some(t) = trace
                    {
                        v["objectWriteTraceId"] = json!(t);
                    }
                    results.push(v);
                }
            }
            _ => errors.push(input_error(
                trace,
                Some(id_text),
                "OBJECT_NOT_FOUND",
                "Object not found",
            )),
        }
    }
    batch_answer(results, errors, 200)
}

fn batch_answer(results: Vec<Value>, errors: Vec<Value>, ok: u16) -> (u16, Value) {
    let mut answer = json!({"status": "COMPLETE", "results": results, "startedAt": batch_times(),
                            "completedAt": batch_times()});
    if errors.is_empty() {
        return reply(ok, answer);
    }
    answer["numErrors"] = json!(errors.len());
    answer["errors"] = json!(errors);
    reply(207, answer)
}

fn compare(
    property: &str,
    have: Option<&str>,
    operator: &str,
    value: Option<&str>,
    values: &[String],
) -> bool {
    let numeric = |v: &str| -> Option<i128> {
        if property.contains("date") || property == "closedate" {
            parse_time_ms(v).map(i128::from)
        } else {
            v.trim().parse::<i128>().ok()
        }
    };
    let ord = |have: &str, want: &str| match (numeric(have), numeric(want)) {
        (Some(a), Some(b)) => a.cmp(&b),
        _ => have.to_lowercase().cmp(&want.to_lowercase()),
    };
    match operator {
        "HAS_PROPERTY" => have.is_some_and(|h| !h.is_empty()),
        "NOT_HAS_PROPERTY" => have.is_none_or(str::is_empty),
        "IN" => have.is_some_and(|h| values.iter().any(|v| ord(h, v).is_eq())),
        "NOT_IN" => !have.is_some_and(|h| values.iter().any(|v| ord(h, v).is_eq())),
        _ => {
            let (Some(h), Some(v)) = (have, value) else {
                return operator == "NEQ";
            };
            let o = ord(h, v);
            match operator {
                "EQ" => o.is_eq(),
                "NEQ" => o.is_ne(),
                "LT" => o.is_lt(),
                "LTE" => o.is_le(),
                "GT" => o.is_gt(),
                "GTE" => o.is_ge(),
                "CONTAINS_TOKEN" => h.to_lowercase().contains(&v.to_lowercase()),
                _ => false,
            }
        }
    }
}

fn search(s: &mut State, object: ObjectType, body: &Value) -> (u16, Value) {
    // 5 requests per second per account (real time).
    let now = Instant::now();
    while s
        .search_times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
    {
        s.search_times.pop_front();
    }
    if s.search_times.len() >= s.searches_per_second {
        return reply(
            429,
            json!({"status": "error", "message": "You have reached your secondly limit.",
                   "errorType": "RATE_LIMIT", "correlationId": "fake-correlation",
                   "policyName": "TEN_SECONDLY_ROLLING", "category": "RATE_LIMITS"}),
        );
    }
    s.search_times.push_back(now);
    let limit = body["limit"].as_u64().unwrap_or(10);
    if limit > 200 {
        return error(400, "VALIDATION_ERROR", "limit must be at most 200");
    }
    let offset: u64 = body["after"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    if offset >= s.search_cap {
        return error(
            400,
            "VALIDATION_ERROR",
            &format!("Paging past {} results is not supported", s.search_cap),
        );
    }
    // The index catches up with writes older than the lag.
    let clock = s.clock_ms;
    if let Some(objects) = s.objects.get_mut(&object) {
        for o in objects.values_mut() {
            if let Some((visible_at, _)) = &o.pending_view
                && *visible_at <= clock
                && let Some((_, view)) = o.pending_view.take()
            {
                o.search_view = Some(view);
            }
        }
    }
    let groups = body["filterGroups"].as_array().cloned().unwrap_or_default();
    let mut hits: Vec<(&Stored, &View)> = s
        .objects
        .get(&object)
        .map(|m| {
            m.values()
                .filter(|o| o.archived_ms.is_none() && o.merged_into.is_none())
                .filter_map(|o| o.search_view.as_ref().map(|v| (o, v)))
                .filter(|(_, view)| {
                    groups.is_empty()
                        || groups.iter().any(|g| {
                            g["filters"].as_array().is_none_or(|fs| {
                                fs.iter().all(|f| {
                                    let name = f["propertyName"].as_str().unwrap_or("");
                                    let values: Vec<String> = f["values"]
                                        .as_array()
                                        .map(|a| {
                                            a.iter()
                                                .filter_map(|v| v.as_str().map(str::to_owned))
                                                .collect()
                                        })
                                        .unwrap_or_default();
                                    compare(
                                        name,
                                        view.props.get(name).map(String::as_str),
                                        f["operator"].as_str().unwrap_or("EQ"),
                                        f["value"].as_str(),
                                        &values,
                                    )
                                })
                            })
                        })
                })
                .collect()
        })
        .unwrap_or_default();
    let sort = body["sorts"][0]["propertyName"]
        .as_str()
        .unwrap_or("hs_object_id")
        .to_owned();
    let descending = body["sorts"][0]["direction"].as_str() == Some("DESCENDING");
    hits.sort_by(|(a, va), (b, vb)| {
        let key = |v: &View| {
            let raw = v.props.get(&sort).cloned().unwrap_or_default();
            parse_time_ms(&raw)
                .map(i128::from)
                .or_else(|| raw.parse::<i128>().ok())
        };
        let o = key(va).cmp(&key(vb));
        let o = if descending { o.reverse() } else { o };
        // Ties come back in no documented order: newest id first, to catch cursors that assume one.
        o.then(b.id.cmp(&a.id))
    });
    let total = hits.len() as u64;
    let end = (offset + limit).min(total).min(s.search_cap);
    let properties: Option<Vec<String>> = body["properties"].as_array().map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    });
    let results: Vec<Value> = hits
        .iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(end.saturating_sub(offset)).unwrap_or(0))
        .map(|(o, view)| State::render(object, o, &view.props, properties.as_deref()))
        .collect();
    let mut answer = json!({"total": total, "results": results});
    if end < total {
        answer["paging"] = json!({"next": {"after": end.to_string()}});
    }
    reply(200, answer)
}
