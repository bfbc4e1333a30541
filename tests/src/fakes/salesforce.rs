//! A fake Salesforce org (REST API: replication endpoints, SOQL, sObject Collections; OAuth token
//! endpoint) on a loopback port, following the checklist of providers.md 4.6, with faults the
//! tests inject.
//!
//! Reproduced: 18-character ids with the object's key prefix; `SystemModstamp` on every write;
//! `sobjects/{o}/updated` and `deleted` with minute-truncated `start`/`end`, `INVALID_REPLICATION_DATE`
//! for a window older than 30 (updated) or 15 (deleted) days or whose start is not before its end,
//! `latestDateCovered` that lags `end` by an injectable amount (transactions in flight), an
//! `earliestDateAvailable` that moves up when the delete log is purged, `EXCEEDED_ID_LIMIT` over
//! an injectable id limit; SOQL (the subset bridges send: a field list checked against the
//! object's fields, `WHERE Id IN (...)` or `Field = 'literal'`, `ORDER BY`, `LIMIT`) answered in
//! batches (2,000 by default) chained by `nextRecordsUrl` over a snapshot taken when the query
//! ran; sObject Collections create / update / upsert-by-external-id / delete with `allOrNone`
//! (SaveResult arrays in request order; partial success, or every sibling
//! `ALL_OR_NONE_OPERATION_ROLLED_BACK`), required fields, email validation and injectable
//! validation rules; the OAuth refresh-token grant with sessions that expire (401
//! `INVALID_SESSION_ID`); injectable `REQUEST_LIMIT_EXCEEDED` (403), 503 with `Retry-After`, and
//! lost write answers (applied, then 504); a request log.
//!
//! Time: the org's clock is the real clock minus `clock_lag` (90 s by default), so every change is
//! already in a past minute when a bridge (on the real clock) asks for its window: the
//! replication endpoints truncate to minutes, and tests must not wait for the next one.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use driftless_bridges::salesforce::wire::{
    SObjectType, format_datetime_ms, parse_datetime_ms, truncate_to_minute,
};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

pub const OAUTH_CLIENT_ID: &str = "fake-sf-consumer-key";
pub const OAUTH_CLIENT_SECRET: &str = "fake-sf-consumer-secret";
pub const OAUTH_REFRESH_TOKEN: &str = "fake-sf-refresh-token";
/// The API version the fake serves (any `vNN.N` is accepted).
pub const API_VERSION: &str = "v62.0";
const DAY_MS: i64 = 86_400_000;

/// One request the fake answered.
#[derive(Debug, Clone)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub body: Value,
    pub status: u16,
}

impl LoggedRequest {
    /// A composite write (create, update, upsert, delete).
    pub fn is_write(&self) -> bool {
        self.path.contains("/composite/sobjects") && self.method != "GET"
    }

    pub fn is_token(&self) -> bool {
        self.path == "/services/oauth2/token"
    }
}

#[derive(Debug, Clone)]
struct Stored {
    fields: Map<String, Value>,
    created_ms: i64,
    modstamp_ms: i64,
    deleted_ms: Option<i64>,
}

#[derive(Debug, Clone)]
struct Rule {
    object: SObjectType,
    field: String,
    value: String,
    code: String,
    message: String,
}

#[derive(Debug)]
struct State {
    clock_lag_ms: i64,
    last_stamp_ms: i64,
    next_id: u64,
    records: BTreeMap<SObjectType, BTreeMap<String, Stored>>,
    /// Custom fields per object (beyond the standard ones), `true` when an external id.
    custom_fields: BTreeMap<SObjectType, BTreeMap<String, bool>>,
    /// Deletes before this are no longer in the log.
    purged_before_ms: i64,
    covered_lag_ms: i64,
    id_limit: usize,
    query_batch: usize,
    cursors: BTreeMap<String, Vec<Value>>,
    next_cursor: u64,
    tokens: BTreeMap<String, SystemTime>,
    session_lifetime: Duration,
    next_token: u64,
    request_limits: u32,
    unavailable: VecDeque<Option<u64>>,
    lose_write_answers: u32,
    rules: Vec<Rule>,
    log: Vec<LoggedRequest>,
}

/// The fake org. Dropping it stops the server.
pub struct FakeSalesforce {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for FakeSalesforce {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Arc<Mutex<State>>) -> MutexGuard<'_, State> {
    // A panicking handler poisons the lock; the state is still the best evidence we have.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn real_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

fn key_prefix(o: SObjectType) -> &'static str {
    match o {
        SObjectType::Contact => "003",
        SObjectType::Account => "001",
        SObjectType::Opportunity => "006",
    }
}

fn object_of_id(id: &str) -> Option<SObjectType> {
    SObjectType::ALL
        .into_iter()
        .find(|o| id.starts_with(key_prefix(*o)))
}

/// Fields every object has.
const SYSTEM_FIELDS: &[&str] = &[
    "Id",
    "IsDeleted",
    "CreatedDate",
    "LastModifiedDate",
    "SystemModstamp",
    "MasterRecordId",
    "OwnerId",
];

/// The standard fields of each object the fake knows besides [`SYSTEM_FIELDS`] (a SELECT or a
/// write naming another is refused).
fn standard_fields(o: SObjectType) -> &'static [&'static str] {
    match o {
        SObjectType::Contact => &[
            "FirstName",
            "LastName",
            "Email",
            "Phone",
            "MobilePhone",
            "HomePhone",
            "OtherPhone",
            "Fax",
            "Title",
            "Department",
            "Description",
            "AccountId",
            "LeadSource",
        ],
        SObjectType::Account => &[
            "Name",
            "Website",
            "Industry",
            "Description",
            "Phone",
            "BillingStreet",
            "BillingCity",
            "BillingState",
            "BillingPostalCode",
            "BillingCountry",
            "Rating",
        ],
        SObjectType::Opportunity => &[
            "Name",
            "StageName",
            "Amount",
            "CloseDate",
            "Description",
            "AccountId",
            "Probability",
        ],
    }
}

fn required_fields(o: SObjectType) -> &'static [&'static str] {
    match o {
        SObjectType::Contact => &["LastName"],
        SObjectType::Account => &["Name"],
        SObjectType::Opportunity => &["Name", "StageName", "CloseDate"],
    }
}

const READ_ONLY: &[&str] = &[
    "Id",
    "IsDeleted",
    "CreatedDate",
    "LastModifiedDate",
    "SystemModstamp",
    "MasterRecordId",
];

fn errors(status: u16, code: &str, message: &str) -> (u16, Value) {
    (status, json!([{"message": message, "errorCode": code}]))
}

fn save_error(code: &str, message: &str, fields: &[&str]) -> Value {
    json!({"success": false, "errors": [{"statusCode": code, "message": message, "fields": fields}]})
}

impl State {
    /// The org's clock: never behind a stamp it has issued (tests write faster than 1 ms).
    fn now_ms(&self) -> i64 {
        (real_now_ms() - self.clock_lag_ms).max(self.last_stamp_ms + 1)
    }

    /// A strictly increasing stamp on the org's clock.
    fn stamp(&mut self) -> i64 {
        let t = self.now_ms().max(self.last_stamp_ms + 1);
        self.last_stamp_ms = t;
        t
    }

    fn new_id(&mut self, o: SObjectType) -> String {
        self.next_id += 1;
        format!("{}5g00{:08}AAQ", key_prefix(o), self.next_id)
    }

    fn knows_field(&self, o: SObjectType, field: &str) -> bool {
        SYSTEM_FIELDS.contains(&field)
            || standard_fields(o).contains(&field)
            || self
                .custom_fields
                .get(&o)
                .is_some_and(|c| c.contains_key(field))
    }

    fn view(&self, o: SObjectType, id: &str, stored: &Stored, select: &[String]) -> Value {
        let mut out = Map::new();
        out.insert(
            "attributes".into(),
            json!({"type": o.name(), "url": format!("/services/data/{API_VERSION}/sobjects/{}/{id}", o.name())}),
        );
        for f in select {
            let v = match f.as_str() {
                "Id" => json!(id),
                "SystemModstamp" | "LastModifiedDate" => {
                    json!(format_datetime_ms(stored.modstamp_ms))
                }
                "CreatedDate" => json!(format_datetime_ms(stored.created_ms)),
                "IsDeleted" => json!(stored.deleted_ms.is_some()),
                other => stored.fields.get(other).cloned().unwrap_or(Value::Null),
            };
            out.insert(f.clone(), v);
        }
        Value::Object(out)
    }

    /// Checks a record's writable fields; the SaveResult error, if any.
    fn validate(
        &self,
        o: SObjectType,
        fields: &Map<String, Value>,
        creating: bool,
    ) -> Option<Value> {
        for (k, _) in fields {
            if k == "attributes" {
                continue;
            }
            if !self.knows_field(o, k) {
                return Some(save_error(
                    "INVALID_FIELD",
                    &format!("No such column '{k}' on sobject of type {}", o.name()),
                    &[k],
                ));
            }
            if (creating || k != "Id") && READ_ONLY.contains(&k.as_str()) {
                return Some(save_error(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    &format!("Unable to create/update fields: {k}."),
                    &[k],
                ));
            }
        }
        if creating {
            for f in required_fields(o) {
                if fields.get(*f).is_none_or(|v| v.is_null() || v == "") {
                    return Some(save_error(
                        "REQUIRED_FIELD_MISSING",
                        &format!("Required fields are missing: [{f}]"),
                        &[f],
                    ));
                }
            }
        } else {
            for f in required_fields(o) {
                if fields.get(*f).is_some_and(|v| v.is_null() || v == "") {
                    return Some(save_error(
                        "REQUIRED_FIELD_MISSING",
                        &format!("Required fields are missing: [{f}]"),
                        &[f],
                    ));
                }
            }
        }
        if let Some(Value::String(email)) = fields.get("Email")
            && !email.is_empty()
            && !email.contains('@')
        {
            return Some(save_error(
                "INVALID_EMAIL_ADDRESS",
                &format!("Email: invalid email address: {email}"),
                &["Email"],
            ));
        }
        for rule in self.rules.iter().filter(|r| r.object == o) {
            if fields.get(&rule.field).and_then(Value::as_str) == Some(rule.value.as_str()) {
                return Some(save_error(&rule.code, &rule.message, &[&rule.field]));
            }
        }
        None
    }
}

impl FakeSalesforce {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start() -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(State {
            clock_lag_ms: 90_000,
            last_stamp_ms: 0,
            next_id: 0,
            records: BTreeMap::new(),
            custom_fields: BTreeMap::new(),
            purged_before_ms: 0,
            covered_lag_ms: 0,
            id_limit: 600_000,
            query_batch: 2000,
            cursors: BTreeMap::new(),
            next_cursor: 0,
            tokens: BTreeMap::new(),
            session_lifetime: Duration::from_secs(7200),
            next_token: 0,
            request_limits: 0,
            unavailable: VecDeque::new(),
            lose_write_answers: 0,
            rules: Vec::new(),
            log: Vec::new(),
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
        Ok(FakeSalesforce { addr, state, task })
    }

    /// `http://127.0.0.1:<port>`: the bridge's `instance_url`.
    pub fn instance_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The OAuth token endpoint.
    pub fn token_url(&self) -> String {
        format!("http://{}/services/oauth2/token", self.addr)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    // --- the org's data, as users edit it in Salesforce ---

    /// Declares a custom field (`external_id`: usable for upserts).
    pub fn define_field(&self, object: SObjectType, field: &str, external_id: bool) {
        self.state()
            .custom_fields
            .entry(object)
            .or_default()
            .insert(field.to_owned(), external_id);
    }

    /// Creates a record; its id.
    pub fn insert(&self, object: SObjectType, fields: Value) -> String {
        let mut s = self.state();
        let id = s.new_id(object);
        let t = s.stamp();
        let fields = fields.as_object().cloned().unwrap_or_default();
        s.records.entry(object).or_default().insert(
            id.clone(),
            Stored {
                fields,
                created_ms: t,
                modstamp_ms: t,
                deleted_ms: None,
            },
        );
        id
    }

    /// Edits fields of a live record (a Salesforce user's edit); false when there is none.
    pub fn edit(&self, object: SObjectType, id: &str, fields: Value) -> bool {
        let mut s = self.state();
        let t = s.stamp();
        let Some(r) = s
            .records
            .get_mut(&object)
            .and_then(|m| m.get_mut(id))
            .filter(|r| r.deleted_ms.is_none())
        else {
            return false;
        };
        for (k, v) in fields.as_object().cloned().unwrap_or_default() {
            r.fields.insert(k, v);
        }
        r.modstamp_ms = t;
        true
    }

    /// Sets a record's `SystemModstamp` (a change made at `ms` on the org's clock, e.g. to spread
    /// changes over minutes or days).
    pub fn backdate(&self, object: SObjectType, id: &str, ms: i64) -> bool {
        let mut s = self.state();
        match s.records.get_mut(&object).and_then(|m| m.get_mut(id)) {
            Some(r) => {
                r.modstamp_ms = ms;
                if let Some(d) = r.deleted_ms.as_mut() {
                    *d = ms;
                }
                true
            }
            None => false,
        }
    }

    /// Deletes a record (to the recycle bin; it shows in the `deleted` endpoint).
    pub fn delete(&self, object: SObjectType, id: &str) -> bool {
        let mut s = self.state();
        let t = s.stamp();
        match s.records.get_mut(&object).and_then(|m| m.get_mut(id)) {
            Some(r) if r.deleted_ms.is_none() => {
                r.deleted_ms = Some(t);
                r.modstamp_ms = t;
                true
            }
            _ => false,
        }
    }

    /// Empties the delete log up to now: `earliestDateAvailable` moves to the present, so a
    /// cursor from before cannot know what was deleted.
    pub fn purge_delete_log(&self) {
        let mut s = self.state();
        s.purged_before_ms = s.stamp();
    }

    /// A live record's fields (with `Id` and `SystemModstamp`).
    pub fn get(&self, object: SObjectType, id: &str) -> Option<Value> {
        let s = self.state();
        let r = s.records.get(&object)?.get(id)?;
        if r.deleted_ms.is_some() {
            return None;
        }
        let mut v = Value::Object(r.fields.clone());
        v["Id"] = json!(id);
        v["SystemModstamp"] = json!(format_datetime_ms(r.modstamp_ms));
        Some(v)
    }

    /// Live records of `object`, by id.
    pub fn live(&self, object: SObjectType) -> BTreeMap<String, Value> {
        let ids: Vec<String> = self
            .state()
            .records
            .get(&object)
            .map(|m| {
                m.iter()
                    .filter(|(_, r)| r.deleted_ms.is_none())
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default();
        ids.into_iter()
            .filter_map(|id| self.get(object, &id).map(|v| (id, v)))
            .collect()
    }

    /// The org's clock (epoch ms).
    pub fn now_ms(&self) -> i64 {
        self.state().now_ms()
    }

    // --- behaviour and faults ---

    /// How far the org's clock is behind the real one (90 s by default; see the module docs).
    pub fn set_clock_lag(&self, lag: Duration) {
        self.state().clock_lag_ms = i64::try_from(lag.as_millis()).unwrap_or(0);
    }

    /// Records per query batch before `nextRecordsUrl` (Salesforce: 2,000).
    pub fn set_query_batch(&self, n: usize) {
        self.state().query_batch = n.max(1);
    }

    /// How far `latestDateCovered` stays behind the org's clock (transactions in flight).
    pub fn set_covered_lag(&self, lag: Duration) {
        self.state().covered_lag_ms = i64::try_from(lag.as_millis()).unwrap_or(i64::MAX);
    }

    /// Ids an `updated` answer may hold before `EXCEEDED_ID_LIMIT` (Salesforce: 600,000).
    pub fn set_id_limit(&self, n: usize) {
        self.state().id_limit = n;
    }

    /// How long an issued access token stays valid.
    pub fn set_session_lifetime(&self, d: Duration) {
        self.state().session_lifetime = d;
    }

    /// Ends every session now (the org's timeout, or an admin revoking them).
    pub fn expire_sessions(&self) {
        self.state().tokens.clear();
    }

    /// The next `n` API requests get 403 `REQUEST_LIMIT_EXCEEDED`.
    pub fn inject_request_limit(&self, n: u32) {
        self.state().request_limits += n;
    }

    /// The next `n` API requests get 503 (with `Retry-After: secs` when given).
    pub fn inject_unavailable(&self, n: u32, retry_after_secs: Option<u64>) {
        let mut s = self.state();
        for _ in 0..n {
            s.unavailable.push_back(retry_after_secs);
        }
    }

    /// The next `n` composite writes are applied but answered 504 (the answer is lost).
    pub fn lose_write_answers(&self, n: u32) {
        self.state().lose_write_answers += n;
    }

    /// A validation rule: writing `value` into `field` of `object` fails that record with
    /// `FIELD_CUSTOM_VALIDATION_EXCEPTION`.
    pub fn reject_value(&self, object: SObjectType, field: &str, value: &str) {
        self.state().rules.push(Rule {
            object,
            field: field.to_owned(),
            value: value.to_owned(),
            code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
            message: format!("{field} may not be {value:?} (validation rule)"),
        });
    }

    /// Drops every validation rule.
    pub fn clear_rules(&self) {
        self.state().rules.clear();
    }

    // --- observation ---

    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state().log.clone()
    }

    /// Composite writes so far.
    pub fn writes(&self) -> Vec<LoggedRequest> {
        self.requests()
            .into_iter()
            .filter(LoggedRequest::is_write)
            .collect()
    }

    pub fn token_requests(&self) -> usize {
        self.state().log.iter().filter(|r| r.is_token()).count()
    }
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

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
    let mut extra: Vec<(&'static str, String)> = Vec::new();
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let session_ok = bearer
        .as_ref()
        .and_then(|t| s.tokens.get(t))
        .is_some_and(|expires| SystemTime::now() < *expires);
    let mut logged_body = json_body.clone();
    let (status, answer) = if path == "/services/oauth2/token" && method == Method::POST {
        let form: BTreeMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        // The form carries the refresh token and secret: keep them out of the log.
        logged_body = json!({"grant_type": form.get("grant_type")});
        token(&mut s, &form)
    } else if !path.starts_with("/services/data/") {
        errors(404, "NOT_FOUND", "The requested resource does not exist")
    } else if !session_ok {
        errors(401, "INVALID_SESSION_ID", "Session expired or invalid")
    } else if s.request_limits > 0 {
        s.request_limits -= 1;
        errors(
            403,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        )
    } else if let Some(retry) = s.unavailable.pop_front() {
        if let Some(secs) = retry {
            extra.push(("retry-after", secs.to_string()));
        }
        (
            503,
            json!([{"message": "Server is temporarily unavailable", "errorCode": "SERVER_UNAVAILABLE"}]),
        )
    } else {
        route(&mut s, &method, &path, &query, &json_body)
    };
    let now = s.now_ms();
    s.log.push(LoggedRequest {
        method: method.to_string(),
        path: path.clone(),
        query,
        body: logged_body,
        status,
    });
    drop(s);
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (code, axum::Json(answer)).into_response();
    let date = httpdate_of(now);
    extra.push(("date", date));
    for (k, v) in extra {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

fn httpdate_of(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
        .unwrap_or_default()
}

fn token(s: &mut State, form: &BTreeMap<String, String>) -> (u16, Value) {
    let get = |k: &str| form.get(k).map(String::as_str);
    if get("grant_type") != Some("refresh_token")
        || get("client_id") != Some(OAUTH_CLIENT_ID)
        || get("client_secret") != Some(OAUTH_CLIENT_SECRET)
    {
        return (
            400,
            json!({"error": "invalid_client_id", "error_description": "client identifier invalid"}),
        );
    }
    if get("refresh_token") != Some(OAUTH_REFRESH_TOKEN) {
        return (
            400,
            json!({"error": "invalid_grant", "error_description": "expired access/refresh token"}),
        );
    }
    s.next_token += 1;
    let access = format!("00Dfake!session{}", s.next_token);
    let expires = SystemTime::now() + s.session_lifetime;
    s.tokens.insert(access.clone(), expires);
    // No `expires_in`: a Salesforce session lasts until the org's timeout.
    (
        200,
        json!({"access_token": access, "instance_url": "https://fake.my.salesforce.com",
               "id": "https://login.salesforce.com/id/00Dfake/005fake", "token_type": "Bearer",
               "issued_at": real_now_ms().to_string(), "signature": "ZmFrZQ=="}),
    )
}

fn route(
    s: &mut State,
    method: &Method,
    path: &str,
    query: &BTreeMap<String, String>,
    body: &Value,
) -> (u16, Value) {
    // /services/data/vNN.N/<rest>
    let rest = path.trim_start_matches("/services/data/");
    let Some((version, rest)) = rest.split_once('/') else {
        return errors(404, "NOT_FOUND", "The requested resource does not exist");
    };
    if !version.starts_with('v') {
        return errors(404, "NOT_FOUND", "The requested resource does not exist");
    }
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["sobjects", o, kind @ ("updated" | "deleted")]) => {
            let Some(object) = SObjectType::from_name(o) else {
                return errors(
                    404,
                    "NOT_FOUND",
                    &format!("sObject type '{o}' is not supported."),
                );
            };
            replication(s, object, kind, query)
        }
        ("GET", ["query"]) => match query.get("q") {
            Some(q) => run_query(s, q),
            None => errors(400, "MALFORMED_QUERY", "q is required"),
        },
        ("GET", ["query", locator]) => query_more(s, locator),
        ("POST", ["composite", "sobjects"]) => collection_create(s, body),
        ("PATCH", ["composite", "sobjects"]) => collection_update(s, body),
        ("PATCH", ["composite", "sobjects", o, field]) => collection_upsert(s, o, field, body),
        ("DELETE", ["composite", "sobjects"]) => collection_delete(s, query),
        _ => errors(404, "NOT_FOUND", "The requested resource does not exist"),
    }
}

fn replication(
    s: &mut State,
    object: SObjectType,
    kind: &str,
    query: &BTreeMap<String, String>,
) -> (u16, Value) {
    let parse = |k: &str| query.get(k).and_then(|v| parse_datetime_ms(v));
    let (Some(start), Some(end)) = (parse("start"), parse("end")) else {
        return errors(
            400,
            "INVALID_REPLICATION_DATE",
            "start and end are required ISO 8601 date-times",
        );
    };
    let now = s.now_ms();
    let (start, end) = (truncate_to_minute(start), truncate_to_minute(end).min(now));
    if start >= end {
        return errors(
            400,
            "INVALID_REPLICATION_DATE",
            "startDate must chronologically precede endDate",
        );
    }
    let horizon = if kind == "updated" { 30 } else { 15 };
    if start < now - horizon * DAY_MS {
        return errors(
            400,
            "INVALID_REPLICATION_DATE",
            &format!("startDate cannot be more than {horizon} days ago"),
        );
    }
    let latest = end.min(now - s.covered_lag_ms).max(start);
    let records = s.records.get(&object).cloned().unwrap_or_default();
    if kind == "updated" {
        let ids: Vec<&String> = records
            .iter()
            .filter(|(_, r)| {
                r.deleted_ms.is_none() && r.modstamp_ms >= start && r.modstamp_ms < latest
            })
            .map(|(id, _)| id)
            .collect();
        if ids.len() > s.id_limit {
            return errors(
                400,
                "EXCEEDED_ID_LIMIT",
                "too many ids: choose a narrower window",
            );
        }
        (
            200,
            json!({"ids": ids, "latestDateCovered": format_datetime_ms(latest)}),
        )
    } else {
        // The first whole minute from which the log is complete.
        let purged = (now - 15 * DAY_MS).max(s.purged_before_ms);
        let earliest = truncate_to_minute(purged + 59_999);
        let deleted: Vec<Value> = records
            .iter()
            .filter_map(|(id, r)| r.deleted_ms.map(|d| (id, d)))
            .filter(|(_, d)| *d >= start.max(s.purged_before_ms) && *d < latest)
            .map(|(id, d)| json!({"id": id, "deletedDate": format_datetime_ms(d)}))
            .collect();
        (
            200,
            json!({"deletedRecords": deleted, "earliestDateAvailable": format_datetime_ms(earliest),
                   "latestDateCovered": format_datetime_ms(latest)}),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// SOQL (the subset bridges send)
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Condition {
    IdIn(Vec<String>),
    Equals(String, String),
}

/// Reads a `'...'` literal at the start of `s` (SOQL escapes); the value and the rest.
fn literal(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('\'')?.char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                other => out.push(other),
            },
            '\'' => return Some((out, &s[i + 2..])),
            c => out.push(c),
        }
    }
    None
}

fn parse_condition(c: &str) -> Option<Condition> {
    let c = c.trim();
    if let Some(list) = c.strip_prefix("Id IN (") {
        let mut rest = list.trim_start();
        let mut ids = Vec::new();
        loop {
            let (id, after) = literal(rest)?;
            ids.push(id);
            let after = after.trim_start();
            if let Some(next) = after.strip_prefix(',') {
                rest = next.trim_start();
            } else {
                return (after.trim() == ")").then_some(Condition::IdIn(ids));
            }
        }
    }
    let (field, value) = c.split_once(" = ")?;
    let (value, rest) = literal(value.trim())?;
    rest.trim()
        .is_empty()
        .then(|| Condition::Equals(field.trim().to_owned(), value))
}

fn run_query(s: &mut State, q: &str) -> (u16, Value) {
    let malformed = |why: &str| errors(400, "MALFORMED_QUERY", &format!("{why}: {q}"));
    let Some(rest) = q.strip_prefix("SELECT ") else {
        return malformed("expected SELECT");
    };
    let Some((fields, rest)) = rest.split_once(" FROM ") else {
        return malformed("expected FROM");
    };
    let (rest, limit) = match rest.rsplit_once(" LIMIT ") {
        Some((r, n)) => match n.trim().parse::<usize>() {
            Ok(n) => (r, Some(n)),
            Err(_) => return malformed("bad LIMIT"),
        },
        None => (rest, None),
    };
    let (rest, order) = match rest.split_once(" ORDER BY ") {
        Some((r, o)) => (r, Some(o.trim().to_owned())),
        None => (rest, None),
    };
    let (object, condition) = match rest.split_once(" WHERE ") {
        Some((o, c)) => match parse_condition(c) {
            Some(c) => (o.trim(), Some(c)),
            None => return malformed("unsupported WHERE"),
        },
        None => (rest.trim(), None),
    };
    let Some(object) = SObjectType::from_name(object) else {
        return errors(
            400,
            "INVALID_TYPE",
            &format!("sObject type '{object}' is not supported."),
        );
    };
    let select: Vec<String> = fields.split(',').map(|f| f.trim().to_owned()).collect();
    if let Some(bad) = select.iter().find(|f| !s.knows_field(object, f)) {
        return errors(
            400,
            "INVALID_FIELD",
            &format!("No such column '{bad}' on entity '{}'", object.name()),
        );
    }
    if let Some(Condition::Equals(f, _)) = &condition
        && !s.knows_field(object, f)
    {
        return errors(
            400,
            "INVALID_FIELD",
            &format!("No such column '{f}' on entity '{}'", object.name()),
        );
    }
    let records = s.records.get(&object).cloned().unwrap_or_default();
    let mut hits: Vec<(&String, &Stored)> = records
        .iter()
        .filter(|(_, r)| r.deleted_ms.is_none())
        .filter(|(id, r)| match &condition {
            None => true,
            Some(Condition::IdIn(ids)) => ids.iter().any(|x| x == *id),
            Some(Condition::Equals(f, v)) => {
                r.fields.get(f).and_then(Value::as_str).is_some_and(|x| {
                    // Text comparisons in SOQL are case-insensitive.
                    x.eq_ignore_ascii_case(v)
                })
            }
        })
        .collect();
    match order.as_deref() {
        None => {}
        Some("SystemModstamp, Id") => {
            hits.sort_by(|a, b| (a.1.modstamp_ms, a.0).cmp(&(b.1.modstamp_ms, b.0)))
        }
        Some("CreatedDate DESC") => hits.sort_by_key(|h| std::cmp::Reverse(h.1.created_ms)),
        Some(other) => return malformed(&format!("unsupported ORDER BY {other}")),
    }
    if let Some(n) = limit {
        hits.truncate(n);
    }
    let rows: Vec<Value> = hits
        .iter()
        .map(|(id, r)| s.view(object, id, r, &select))
        .collect();
    page(s, rows, 0)
}

/// The batch of `rows` at `offset`, with a `nextRecordsUrl` over the snapshot when more follow.
fn page(s: &mut State, rows: Vec<Value>, offset: usize) -> (u16, Value) {
    let total = rows.len();
    let end = (offset + s.query_batch).min(total);
    let batch: Vec<Value> = rows[offset.min(total)..end].to_vec();
    if end >= total {
        return (
            200,
            json!({"totalSize": total, "done": true, "records": batch}),
        );
    }
    s.next_cursor += 1;
    let locator = format!("01gFAKE{:06}", s.next_cursor);
    s.cursors.insert(locator.clone(), rows);
    (
        200,
        json!({"totalSize": total, "done": false,
               "nextRecordsUrl": format!("/services/data/{API_VERSION}/query/{locator}-{end}"),
               "records": batch}),
    )
}

fn query_more(s: &mut State, locator: &str) -> (u16, Value) {
    let Some((cursor, offset)) = locator.rsplit_once('-') else {
        return errors(400, "INVALID_QUERY_LOCATOR", "invalid query locator");
    };
    let (Some(rows), Ok(offset)) = (s.cursors.remove(cursor), offset.parse::<usize>()) else {
        return errors(400, "INVALID_QUERY_LOCATOR", "invalid query locator");
    };
    page(s, rows, offset)
}

// ---------------------------------------------------------------------------------------------
// sObject Collections
// ---------------------------------------------------------------------------------------------

/// The records and `allOrNone` of a collection body; an error answer when malformed.
/// A collection body's records and `allOrNone`.
type Collection = (Vec<Map<String, Value>>, bool);

fn collection_body(body: &Value) -> Result<Collection, (u16, Value)> {
    let malformed = || {
        errors(
            400,
            "JSON_PARSER_ERROR",
            "records must be an array of objects",
        )
    };
    let records = body
        .get("records")
        .and_then(Value::as_array)
        .ok_or_else(malformed)?;
    if records.len() > 200 {
        return Err(errors(
            400,
            "EXCEEDED_MAX_SIZE_REQUEST",
            "at most 200 records per request",
        ));
    }
    let records: Option<Vec<Map<String, Value>>> =
        records.iter().map(|r| r.as_object().cloned()).collect();
    Ok((
        records.ok_or_else(malformed)?,
        body.get("allOrNone")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    ))
}

fn record_type(r: &Map<String, Value>) -> Option<SObjectType> {
    r.get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
        .and_then(SObjectType::from_name)
}

/// Applies `plans` (one per record: `Ok(apply)` or `Err(SaveResult)`) under `allOrNone`.
type Apply = Box<dyn FnOnce(&mut State) -> Value>;

fn commit(s: &mut State, plans: Vec<Result<Apply, Value>>, all_or_none: bool) -> Vec<Value> {
    if all_or_none && plans.iter().any(Result::is_err) {
        return plans
            .into_iter()
            .map(|p| match p {
                Err(e) => e,
                Ok(_) => save_error(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was using AllOrNone header",
                    &[],
                ),
            })
            .collect();
    }
    plans
        .into_iter()
        .map(|p| match p {
            Ok(apply) => apply(s),
            Err(e) => e,
        })
        .collect()
}

fn answer_write(s: &mut State, results: Vec<Value>) -> (u16, Value) {
    if s.lose_write_answers > 0 {
        s.lose_write_answers -= 1;
        return errors(504, "GATEWAY_TIMEOUT", "upstream timed out");
    }
    (200, Value::Array(results))
}

fn fields_of(r: &Map<String, Value>) -> Map<String, Value> {
    r.iter()
        .filter(|(k, _)| k.as_str() != "attributes")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn create_plan(s: &State, object: SObjectType, fields: Map<String, Value>) -> Result<Apply, Value> {
    if fields.contains_key("Id") {
        return Err(save_error(
            "INVALID_FIELD",
            "cannot specify Id in an insert call",
            &["Id"],
        ));
    }
    if let Some(e) = s.validate(object, &fields, true) {
        return Err(e);
    }
    Ok(Box::new(move |s: &mut State| {
        let id = s.new_id(object);
        let t = s.stamp();
        let kept: Map<String, Value> = fields.into_iter().filter(|(_, v)| !v.is_null()).collect();
        s.records.entry(object).or_default().insert(
            id.clone(),
            Stored {
                fields: kept,
                created_ms: t,
                modstamp_ms: t,
                deleted_ms: None,
            },
        );
        json!({"id": id, "success": true, "errors": []})
    }))
}

fn update_plan(
    s: &State,
    object: SObjectType,
    id: String,
    mut fields: Map<String, Value>,
    created: Option<bool>,
) -> Result<Apply, Value> {
    fields.remove("Id");
    match s.records.get(&object).and_then(|m| m.get(&id)) {
        None => {
            return Err(save_error(
                "INVALID_CROSS_REFERENCE_KEY",
                &format!("invalid cross reference id {id}"),
                &[],
            ));
        }
        Some(r) if r.deleted_ms.is_some() => {
            return Err(save_error("ENTITY_IS_DELETED", "entity is deleted", &[]));
        }
        Some(_) => {}
    }
    if let Some(e) = s.validate(object, &fields, false) {
        return Err(e);
    }
    Ok(Box::new(move |s: &mut State| {
        let t = s.stamp();
        if let Some(r) = s.records.get_mut(&object).and_then(|m| m.get_mut(&id)) {
            for (k, v) in fields {
                if v.is_null() {
                    r.fields.remove(&k);
                } else {
                    r.fields.insert(k, v);
                }
            }
            r.modstamp_ms = t;
        }
        match created {
            Some(c) => json!({"id": id, "success": true, "errors": [], "created": c}),
            None => json!({"id": id, "success": true, "errors": []}),
        }
    }))
}

fn collection_create(s: &mut State, body: &Value) -> (u16, Value) {
    let (records, all_or_none) = match collection_body(body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let plans = records
        .iter()
        .map(|r| match record_type(r) {
            None => Err(save_error(
                "INVALID_TYPE",
                "attributes.type is required",
                &[],
            )),
            Some(o) => create_plan(s, o, fields_of(r)),
        })
        .collect();
    let results = commit(s, plans, all_or_none);
    answer_write(s, results)
}

fn collection_update(s: &mut State, body: &Value) -> (u16, Value) {
    let (records, all_or_none) = match collection_body(body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let plans = records
        .iter()
        .map(|r| {
            let id = r.get("Id").and_then(Value::as_str).map(str::to_owned);
            match (record_type(r), id) {
                (None, _) => Err(save_error(
                    "INVALID_TYPE",
                    "attributes.type is required",
                    &[],
                )),
                (_, None) => Err(save_error(
                    "MISSING_ARGUMENT",
                    "Id not specified in an update call",
                    &[],
                )),
                (Some(o), Some(id)) if object_of_id(&id) != Some(o) => Err(save_error(
                    "MALFORMED_ID",
                    &format!("{} ID: id value of incorrect type: {id}", o.name()),
                    &["Id"],
                )),
                (Some(o), Some(id)) => update_plan(s, o, id, fields_of(r), None),
            }
        })
        .collect();
    let results = commit(s, plans, all_or_none);
    answer_write(s, results)
}

fn collection_upsert(s: &mut State, o: &str, field: &str, body: &Value) -> (u16, Value) {
    let Some(object) = SObjectType::from_name(o) else {
        return errors(
            404,
            "NOT_FOUND",
            &format!("sObject type '{o}' is not supported."),
        );
    };
    let is_external = s
        .custom_fields
        .get(&object)
        .and_then(|c| c.get(field))
        .copied()
        .unwrap_or(false);
    if !is_external {
        return errors(
            404,
            "NOT_FOUND",
            &format!("Provided external ID field does not exist or is not accessible: {field}"),
        );
    }
    let (records, all_or_none) = match collection_body(body) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let plans = records
        .iter()
        .map(|r| {
            let Some(key) = r.get(field).and_then(Value::as_str).map(str::to_owned) else {
                return Err(save_error(
                    "MISSING_ARGUMENT",
                    &format!("{field} not specified"),
                    &[field],
                ));
            };
            let existing: Vec<String> = s
                .records
                .get(&object)
                .map(|m| {
                    m.iter()
                        .filter(|(_, x)| {
                            x.deleted_ms.is_none()
                                && x.fields.get(field).and_then(Value::as_str) == Some(key.as_str())
                        })
                        .map(|(id, _)| id.clone())
                        .collect()
                })
                .unwrap_or_default();
            match existing.as_slice() {
                [] => create_plan(s, object, fields_of(r)).map(|apply| -> Apply {
                    Box::new(move |s: &mut State| {
                        let mut v = apply(s);
                        v["created"] = json!(true);
                        v
                    })
                }),
                [id] => update_plan(s, object, id.clone(), fields_of(r), Some(false)),
                _ => Err(save_error(
                    "DUPLICATE_EXTERNAL_ID",
                    "more than one record has this external id",
                    &[field],
                )),
            }
        })
        .collect();
    let results = commit(s, plans, all_or_none);
    answer_write(s, results)
}

fn collection_delete(s: &mut State, query: &BTreeMap<String, String>) -> (u16, Value) {
    let ids: Vec<String> = query
        .get("ids")
        .map(|v| {
            v.split(',')
                .map(str::to_owned)
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() || ids.len() > 200 {
        return errors(400, "INVALID_BATCH_SIZE", "between 1 and 200 ids");
    }
    let all_or_none = query.get("allOrNone").is_some_and(|v| v == "true");
    let plans = ids
        .into_iter()
        .map(|id| {
            let object = object_of_id(&id);
            let found = object.and_then(|o| s.records.get(&o)).and_then(|m| m.get(&id));
            match (object, found) {
                (Some(o), Some(r)) if r.deleted_ms.is_none() => Ok(Box::new(move |s: &mut State| {
                    let t = s.stamp();
                    if let Some(r) = s.records.get_mut(&o).and_then(|m| m.get_mut(&id)) {
                        r.deleted_ms = Some(t);
                        r.modstamp_ms = t;
                    }
                    json!({"id": id, "success": true, "errors": []})
                }) as Apply),
                (_, Some(_)) => Err(json!({"id": id, "success": false, "errors": [{"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []}]})),
                _ => Err(json!({"id": id, "success": false, "errors": [{"statusCode": "INVALID_CROSS_REFERENCE_KEY", "message": "invalid cross reference id", "fields": []}]})),
            }
        })
        .collect();
    let results = commit(s, plans, all_or_none);
    answer_write(s, results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soql_literals_and_conditions() {
        assert_eq!(
            literal(r"'O\'Brien' rest"),
            Some(("O'Brien".to_owned(), " rest"))
        );
        assert!(matches!(
            parse_condition("Id IN ('a', 'b')"),
            Some(Condition::IdIn(ids)) if ids == ["a", "b"]
        ));
        assert!(matches!(
            parse_condition("Email = 'x@y.z'"),
            Some(Condition::Equals(f, v)) if f == "Email" && v == "x@y.z"
        ));
        assert!(parse_condition("Id IN ('a' OR 1=1").is_none());
    }
}
