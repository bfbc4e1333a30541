//! A Microsoft Graph fake (axum, loopback) for the bridge tests, after `providers.md` 2.7:
//!
//! - `GET /v1.0/me/calendarView/delta?startDateTime&endDateTime`: windowed delta. The fake keeps
//!   what each delta token has seen, so a later round lists exactly what changed: new and changed
//!   rows, `@removed` (reason `deleted`) for items deleted **and** for items that left the window
//!   (Graph reports both alike). Series masters are never listed; occurrences are expanded from
//!   the master's recurrence (daily and weekly patterns) and sent stripped to 7 fields; exceptions
//!   are full rows. Pages follow `Prefer: odata.maxpagesize` with opaque `$skiptoken` /
//!   `$deltatoken` links that encode the window server-side: a link with extra query parameters
//!   (a rebuilt URL) is a 400, as are `$select`/`$filter`/`$orderby`/`$expand`.
//! - `GET /v1.0/me/contacts/delta`: the same without a window.
//! - `GET|PATCH|DELETE /v1.0/me/{events,contacts}/{id}`, `POST /v1.0/me/{events,contacts}`:
//!   full rows (a GET of an occurrence is completed from its master), `If-Match` against the
//!   current `@odata.etag` (412 `ErrorIrresolvableConflict`), PATCH of an occurrence turns it into
//!   an exception, DELETE of an occurrence cancels it. Times written in a named zone are stored in
//!   UTC with the zone kept in `originalStartTimeZone`, as Graph answers without `Prefer:
//!   outlook.timezone`.
//! - `POST /v1.0/me/events/{id}/{accept,decline,tentativelyAccept}` (202; only on a copy the
//!   mailbox does not organize) and `GET /v1.0/me` (the owner's address).
//! - `POST /oauth2/v2.0/token`: the refresh-token grant; API calls need a current access token.
//! - `POST|PATCH|DELETE /v1.0/subscriptions[/{id}]`: `clientState` required, lifetime at most
//!   10,080 minutes, and the validation handshake on the notification (and lifecycle) URL before
//!   answering 201: a POST with `?validationToken=` that must be echoed as `text/plain` within the
//!   time budget (10 s). [`FakeGraph::notify`] / [`FakeGraph::lifecycle`] deliver batches carrying
//!   `clientState`; [`FakeGraph::deliver_raw`] sends anything (forged or duplicated batches).
//!
//! - Creates honour `transactionId` (event resource docs: "to avoid redundant POST operations in
//!   case of client retries"): a POST whose `transactionId` an existing event already carries
//!   creates nothing and answers that event (201; the status of that answer is not documented).
//!   `transactionId` is returned on the event once set.
//!
//! Faults from the tests: [`FakeGraph::expire_delta_tokens`] (410 `SyncStateNotFound`),
//! [`FakeGraph::lose_next_create_answer`] (the event is created, the answer is a 504),
//! [`FakeGraph::edit_before_next_write`] (an Outlook edit lands between the client's read and its
//! PATCH: 412), [`FakeGraph::cap_subscription_lifetime`] (subscriptions granted for less than
//! asked),
//! [`FakeGraph::replay_rows`] (every row sent twice),
//! [`FakeGraph::throttle_next`] (429 with `Retry-After`), [`FakeGraph::revoke_access_tokens`]
//! (401). Every request is logged ([`FakeGraph::requests`], [`FakeGraph::write_count`]).
//! Mailbox edits "made in Outlook" go through the `put_*` / `patch_*` / `delete_*` methods.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta, TimeZone};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const CLIENT_ID: &str = "fake-client-id";
pub const CLIENT_SECRET: &str = "fake-client-secret";
pub const REFRESH_TOKEN: &str = "fake-refresh-token";

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The `If-Match` header, when sent.
    pub if_match: Option<String>,
    pub status: u16,
    /// The JSON body of a PATCH or POST to the mailbox (`None` otherwise).
    pub body: Option<Value>,
}

#[derive(Debug, Clone)]
struct Stored {
    row: Value,
    version: u64,
    deleted: bool,
}

#[derive(Debug, Clone, Default)]
struct SeriesState {
    /// Instance keys (UTC basic form) deleted.
    cancelled: BTreeSet<String>,
    /// Instance key to the exception's id.
    exceptions: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collection {
    Calendar,
    Contacts,
}

#[derive(Debug, Clone)]
struct Cursor {
    collection: Collection,
    window: Option<(NaiveDateTime, NaiveDateTime)>,
    seen: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
struct Pending {
    next: Cursor,
    rows: VecDeque<Value>,
}

#[derive(Debug, Default)]
struct Throttle {
    remaining: u32,
    retry_after_secs: u64,
    status: u16,
}

#[derive(Debug, Default)]
struct FakeState {
    base: String,
    counter: u64,
    events: BTreeMap<String, Stored>,
    series: BTreeMap<String, SeriesState>,
    contacts: BTreeMap<String, Stored>,
    cursors: HashMap<String, Cursor>,
    pending: HashMap<String, Pending>,
    throttle: Throttle,
    access_tokens: BTreeSet<String>,
    token_requests: u64,
    log: Vec<Logged>,
    default_page_size: usize,
    subscriptions: BTreeMap<String, Value>,
    validation_timeout: std::time::Duration,
    /// The mailbox owner's address (`GET /me`, meeting responses).
    owner: String,
    /// Send every row of the next delta rounds twice (Graph replays, even within a response).
    replay_rows: bool,
    /// Item id (event or contact) to an Outlook edit applied just before its next PATCH.
    before_next_write: BTreeMap<String, Value>,
    /// The next event create is carried out but answered 504, as if the answer were lost.
    lose_next_create_answer: bool,
    /// Subscriptions are granted for at most this long (Graph's answer is authoritative).
    subscription_lifetime_cap: Option<TimeDelta>,
}

type Shared = Arc<Mutex<FakeState>>;

fn lock(s: &Shared) -> MutexGuard<'_, FakeState> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running fake.
pub struct FakeGraph {
    addr: SocketAddr,
    state: Shared,
    task: JoinHandle<()>,
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------------------------

fn parse_wall(s: &str) -> Option<NaiveDateTime> {
    NaiveDateTime::parse_from_str(s.trim(), "%Y-%m-%dT%H:%M:%S%.f").ok()
}

fn wall(t: &NaiveDateTime) -> String {
    t.format("%Y-%m-%dT%H:%M:%S.0000000").to_string()
}

fn key_of(t: &NaiveDateTime) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A `dateTimeTimeZone` as a UTC wall time (zones by IANA or Windows name).
fn to_utc(v: &Value) -> Option<NaiveDateTime> {
    let t = parse_wall(v.get("dateTime")?.as_str()?)?;
    let zone = v.get("timeZone").and_then(Value::as_str).unwrap_or("UTC");
    if zone.eq_ignore_ascii_case("UTC") {
        return Some(t);
    }
    let tz = driftless_bridges::graph::tz::windows_to_iana(zone)?;
    let local = tz.from_local_datetime(&t).earliest()?;
    Some(local.naive_utc())
}

fn utc_value(t: &NaiveDateTime) -> Value {
    json!({"dateTime": wall(t), "timeZone": "UTC"})
}

fn parse_iso(s: &str) -> Option<NaiveDateTime> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.naive_utc())
}

fn overlaps(start: NaiveDateTime, end: NaiveDateTime, w: (NaiveDateTime, NaiveDateTime)) -> bool {
    start < w.1 && end.max(start + TimeDelta::seconds(1)) > w.0
}

fn weekday_name(d: NaiveDate) -> &'static str {
    match d.weekday() {
        chrono::Weekday::Sun => "sunday",
        chrono::Weekday::Mon => "monday",
        chrono::Weekday::Tue => "tuesday",
        chrono::Weekday::Wed => "wednesday",
        chrono::Weekday::Thu => "thursday",
        chrono::Weekday::Fri => "friday",
        chrono::Weekday::Sat => "saturday",
    }
}

/// The original starts of a master's occurrences (daily and weekly patterns), at most 1000.
fn expand(master: &Value) -> Vec<NaiveDateTime> {
    let Some(start) = master.get("start").and_then(to_utc) else {
        return Vec::new();
    };
    let pattern = master.pointer("/recurrence/pattern");
    let range = master.pointer("/recurrence/range");
    let kind = pattern
        .and_then(|p| p.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("daily");
    let interval = pattern
        .and_then(|p| p.get("interval"))
        .and_then(Value::as_i64)
        .unwrap_or(1)
        .max(1);
    let days: Vec<String> = pattern
        .and_then(|p| p.get("daysOfWeek"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_lowercase)
                .collect()
        })
        .unwrap_or_default();
    let range_type = range
        .and_then(|r| r.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("noEnd");
    let count = range
        .and_then(|r| r.get("numberOfOccurrences"))
        .and_then(Value::as_u64)
        .filter(|_| range_type == "numbered");
    let end_date = range
        .and_then(|r| r.get("endDate"))
        .and_then(Value::as_str)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        .filter(|_| range_type == "endDate");
    let mut out = Vec::new();
    let first_sunday =
        start.date() - TimeDelta::days(i64::from(start.date().weekday().num_days_from_sunday()));
    for day in 0..3660i64 {
        let t = start + TimeDelta::days(day);
        if end_date.is_some_and(|e| t.date() > e) {
            break;
        }
        let hit = match kind {
            "weekly" => {
                let week = (t.date() - first_sunday).num_days() / 7;
                week % interval == 0
                    && ((days.is_empty() && day % 7 == 0)
                        || days.iter().any(|d| d == weekday_name(t.date())))
            }
            _ => day % interval == 0,
        };
        if hit {
            out.push(t);
            if count.is_some_and(|c| out.len() as u64 >= c) || out.len() >= 1000 {
                break;
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

fn etag(version: u64) -> String {
    format!("W/\"CQAAAB{version:08}\"")
}

impl FakeState {
    fn bump(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    fn new_id(&mut self, prefix: &str) -> String {
        let n = self.bump();
        format!("AAMkAD{prefix}{n:06}=")
    }

    fn stamp(row: &mut Value, version: u64) {
        if let Some(obj) = row.as_object_mut() {
            obj.insert("@odata.etag".into(), json!(etag(version)));
            obj.insert("changeKey".into(), json!(format!("CQAAAB{version:08}")));
            obj.insert(
                "lastModifiedDateTime".into(),
                json!(format!("2026-01-01T00:00:{:02}Z", version % 60)),
            );
        }
    }

    /// Stores times given in a named zone in UTC, keeping the zone as Graph does.
    fn normalize_times(row: &mut Value) {
        for (field, original) in [
            ("start", "originalStartTimeZone"),
            ("end", "originalEndTimeZone"),
        ] {
            let Some(v) = row.get(field).cloned() else {
                continue;
            };
            let zone = v
                .get("timeZone")
                .and_then(Value::as_str)
                .unwrap_or("UTC")
                .to_owned();
            let all_day = row
                .get("isAllDay")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if all_day {
                continue;
            }
            if let (Some(utc), Some(obj)) = (to_utc(&v), row.as_object_mut()) {
                obj.insert(field.into(), utc_value(&utc));
                obj.entry(original.to_owned()).or_insert(json!(zone));
                if !zone.eq_ignore_ascii_case("UTC") {
                    obj.insert(original.into(), json!(zone));
                }
            }
        }
    }

    fn occurrence_id(master: &str, key: &str) -> String {
        format!("{}OCC{key}=", master.trim_end_matches('='))
    }

    /// Master id and key of an occurrence id the fake minted.
    fn parse_occurrence(&self, id: &str) -> Option<(String, String)> {
        let (m, key) = id.trim_end_matches('=').split_once("OCC")?;
        let master = format!("{m}=");
        self.events.get(&master)?;
        Some((master, key.to_owned()))
    }

    fn master_live(&self, id: &str) -> Option<&Stored> {
        self.events.get(id).filter(|s| {
            !s.deleted && s.row.get("type").and_then(Value::as_str) == Some("seriesMaster")
        })
    }

    /// The full row of a live occurrence.
    fn occurrence_row(&self, master_id: &str, key: &str, stripped: bool) -> Option<(Value, u64)> {
        let master = self.master_live(master_id)?;
        let series = self.series.get(master_id).cloned().unwrap_or_default();
        if series.cancelled.contains(key) || series.exceptions.contains_key(key) {
            return None;
        }
        let start = expand(&master.row).into_iter().find(|t| key_of(t) == key)?;
        let ms = master.row.get("start").and_then(to_utc)?;
        let me = master.row.get("end").and_then(to_utc)?;
        let end = start + (me - ms);
        let id = Self::occurrence_id(master_id, key);
        let etag = format!("W/\"CQAAAB{:08}{key}\"", master.version);
        let mut row = if stripped {
            json!({"@odata.type": "#microsoft.graph.event"})
        } else {
            let mut full = master.row.clone();
            if let Some(obj) = full.as_object_mut() {
                obj.remove("recurrence");
                obj.insert(
                    "originalStart".into(),
                    json!(start.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
            }
            full
        };
        if let Some(obj) = row.as_object_mut() {
            obj.insert("@odata.etag".into(), json!(etag));
            obj.insert("id".into(), json!(id));
            obj.insert("seriesMasterId".into(), json!(master_id));
            obj.insert("type".into(), json!("occurrence"));
            obj.insert("start".into(), utc_value(&start));
            obj.insert("end".into(), utc_value(&end));
        }
        Some((row, master.version))
    }

    /// Everything calendarView shows in `w`: id to (version, row).
    fn visible_events(&self, w: (NaiveDateTime, NaiveDateTime)) -> BTreeMap<String, (u64, Value)> {
        let mut out = BTreeMap::new();
        for (id, s) in &self.events {
            if s.deleted {
                continue;
            }
            let kind = s
                .row
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("singleInstance");
            if kind == "seriesMaster" {
                for start in expand(&s.row) {
                    let key = key_of(&start);
                    let Some((row, version)) = self.occurrence_row(id, &key, true) else {
                        continue;
                    };
                    let end = row.get("end").and_then(to_utc).unwrap_or(start);
                    if overlaps(start, end, w) {
                        out.insert(Self::occurrence_id(id, &key), (version, row));
                    }
                }
                continue;
            }
            if kind == "exception"
                && s.row
                    .get("seriesMasterId")
                    .and_then(Value::as_str)
                    .is_none_or(|m| self.master_live(m).is_none())
            {
                continue;
            }
            let (Some(start), Some(end)) = (
                s.row.get("start").and_then(to_utc),
                s.row.get("end").and_then(to_utc),
            ) else {
                continue;
            };
            if overlaps(start, end, w) {
                out.insert(id.clone(), (s.version, s.row.clone()));
            }
        }
        out
    }

    fn visible(&self, cursor: &Cursor) -> BTreeMap<String, (u64, Value)> {
        match (cursor.collection, cursor.window) {
            (Collection::Calendar, Some(w)) => self.visible_events(w),
            (Collection::Calendar, None) => BTreeMap::new(),
            (Collection::Contacts, _) => self
                .contacts
                .iter()
                .filter(|(_, s)| !s.deleted)
                .map(|(id, s)| (id.clone(), (s.version, s.row.clone())))
                .collect(),
        }
    }

    /// Starts a delta round from `cursor` (whose `seen` is what the client has).
    fn delta(&mut self, cursor: Cursor, page_size: usize) -> Value {
        let visible = self.visible(&cursor);
        let mut rows: VecDeque<Value> = VecDeque::new();
        for (id, (version, row)) in &visible {
            if cursor.seen.get(id) != Some(version) {
                rows.push_back(row.clone());
            }
        }
        let odata_type = match cursor.collection {
            Collection::Calendar => "#microsoft.graph.event",
            Collection::Contacts => "#microsoft.graph.contact",
        };
        for id in cursor.seen.keys() {
            if !visible.contains_key(id) {
                rows.push_back(json!({
                    "@odata.type": odata_type,
                    "id": id,
                    "@removed": {"reason": "deleted"}
                }));
            }
        }
        if self.replay_rows {
            let again: Vec<Value> = rows.iter().cloned().collect();
            rows.extend(again);
        }
        let next = Cursor {
            seen: visible.into_iter().map(|(id, (v, _))| (id, v)).collect(),
            ..cursor
        };
        self.page(Pending { next, rows }, page_size)
    }

    fn page(&mut self, mut pending: Pending, page_size: usize) -> Value {
        let take = page_size.max(1).min(pending.rows.len());
        let value: Vec<Value> = pending.rows.drain(..take).collect();
        let path = match pending.next.collection {
            Collection::Calendar => "me/calendarView/delta",
            Collection::Contacts => "me/contacts/delta",
        };
        let context = format!("{}/$metadata#Collection(event)", self.base);
        if pending.rows.is_empty() {
            let token = format!("dt{}", self.bump());
            self.cursors.insert(token.clone(), pending.next);
            json!({
                "@odata.context": context,
                "value": value,
                "@odata.deltaLink": format!("{}/{path}?$deltatoken={token}", self.base),
            })
        } else {
            let token = format!("sk{}", self.bump());
            self.pending.insert(token.clone(), pending);
            json!({
                "@odata.context": context,
                "value": value,
                "@odata.nextLink": format!("{}/{path}?$skiptoken={token}", self.base),
            })
        }
    }

    /// The full row of any event id (single, master, exception or occurrence).
    fn event_row(&self, id: &str) -> Option<Value> {
        if let Some(s) = self.events.get(id) {
            if s.deleted {
                return None;
            }
            if let Some(m) = s.row.get("seriesMasterId").and_then(Value::as_str)
                && self.master_live(m).is_none()
            {
                return None;
            }
            return Some(s.row.clone());
        }
        let (master, key) = self.parse_occurrence(id)?;
        self.occurrence_row(&master, &key, false).map(|(r, _)| r)
    }

    fn insert_event(&mut self, mut row: Value) -> String {
        let id = row
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| self.new_id("EV"));
        if let Some(obj) = row.as_object_mut() {
            obj.insert("id".into(), json!(id));
            obj.entry("type").or_insert(json!("singleInstance"));
            obj.entry("@odata.type")
                .or_insert(json!("#microsoft.graph.event"));
            obj.entry("isAllDay").or_insert(json!(false));
            obj.entry("isCancelled").or_insert(json!(false));
        }
        if row.get("recurrence").is_some_and(|r| !r.is_null())
            && let Some(obj) = row.as_object_mut()
        {
            obj.insert("type".into(), json!("seriesMaster"));
        }
        Self::normalize_times(&mut row);
        let version = self.bump();
        Self::stamp(&mut row, version);
        self.events.insert(
            id.clone(),
            Stored {
                row,
                version,
                deleted: false,
            },
        );
        id
    }

    fn current_etag(&self, id: &str) -> Option<String> {
        self.event_row(id).and_then(|r| {
            r.get("@odata.etag")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
    }

    /// PATCH semantics: top-level keys replaced; an occurrence becomes an exception.
    fn patch_event(&mut self, id: &str, patch: &Value) -> Option<Value> {
        if !self.events.contains_key(id) {
            let (master, key) = self.parse_occurrence(id)?;
            let mut row = self.occurrence_row(&master, &key, false)?.0;
            if let Some(obj) = row.as_object_mut() {
                obj.insert("type".into(), json!("exception"));
                obj.remove("recurrence");
            }
            self.series
                .entry(master.clone())
                .or_default()
                .exceptions
                .insert(key, id.to_owned());
            let version = self.bump();
            self.events.insert(
                id.to_owned(),
                Stored {
                    row,
                    version,
                    deleted: false,
                },
            );
        }
        let stored = self.events.get(id).filter(|s| !s.deleted)?.clone();
        let mut row = stored.row;
        if let (Some(obj), Some(p)) = (row.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                obj.insert(k.clone(), v.clone());
            }
        }
        Self::normalize_times(&mut row);
        let version = self.bump();
        Self::stamp(&mut row, version);
        self.events.insert(
            id.to_owned(),
            Stored {
                row: row.clone(),
                version,
                deleted: false,
            },
        );
        Some(row)
    }

    fn delete_event(&mut self, id: &str) -> bool {
        if let Some(s) = self.events.get(id).cloned() {
            if s.deleted {
                return false;
            }
            let version = self.bump();
            if let Some(stored) = self.events.get_mut(id) {
                stored.deleted = true;
                stored.version = version;
            }
            // A deleted exception is a cancelled instance.
            if let Some(master) = s.row.get("seriesMasterId").and_then(Value::as_str)
                && let Some(series) = self.series.get_mut(master)
                && let Some(key) = series
                    .exceptions
                    .iter()
                    .find(|(_, e)| e.as_str() == id)
                    .map(|(k, _)| k.clone())
            {
                series.exceptions.remove(&key);
                series.cancelled.insert(key);
            }
            return true;
        }
        let Some((master, key)) = self.parse_occurrence(id) else {
            return false;
        };
        if self.occurrence_row(&master, &key, true).is_none() {
            return false;
        }
        self.series.entry(master).or_default().cancelled.insert(key);
        true
    }

    /// `accept` / `decline` / `tentativelyAccept` by the mailbox owner.
    fn respond(&mut self, id: &str, action: &str) -> Option<Value> {
        let response = match action {
            "accept" => "accepted",
            "decline" => "declined",
            "tentativelyAccept" => "tentativelyAccepted",
            _ => return None,
        };
        let row = self.event_row(id)?;
        if row.get("isOrganizer").and_then(Value::as_bool) != Some(false) {
            return None; // the organizer does not answer their own meeting
        }
        let owner = self.owner.clone();
        let mut attendees = row.get("attendees").cloned().unwrap_or_else(|| json!([]));
        if let Some(list) = attendees.as_array_mut() {
            for a in list {
                let mine = a
                    .pointer("/emailAddress/address")
                    .and_then(Value::as_str)
                    .is_some_and(|x| x.eq_ignore_ascii_case(&owner));
                if mine {
                    a["status"] = json!({"response": response, "time": "2026-11-01T00:00:00Z"});
                }
            }
        }
        self.patch_event(
            id,
            &json!({
                "responseStatus": {"response": response, "time": "2026-11-01T00:00:00Z"},
                "attendees": attendees
            }),
        )
    }

    fn upsert_contact(&mut self, id: Option<&str>, patch: &Value) -> Option<Value> {
        let id = match id {
            Some(id) => id.to_owned(),
            None => self.new_id("CT"),
        };
        let mut row = match self.contacts.get(&id) {
            Some(s) if !s.deleted => s.row.clone(),
            Some(_) => return None,
            None => json!({"@odata.type": "#microsoft.graph.contact", "id": id}),
        };
        if let (Some(obj), Some(p)) = (row.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                obj.insert(k.clone(), v.clone());
            }
            obj.insert("id".into(), json!(id));
        }
        let version = self.bump();
        Self::stamp(&mut row, version);
        self.contacts.insert(
            id,
            Stored {
                row: row.clone(),
                version,
                deleted: false,
            },
        );
        Some(row)
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": {"code": code, "message": message, "innerError": {"request-id": "fake"}}})
            .to_string(),
    )
        .into_response()
}

fn ok_json(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// Logs, throttles and authenticates every request.
async fn gate(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let if_match = req
        .headers()
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let is_api = path.starts_with("/v1.0/");
    // Keep the JSON body of mailbox writes for the log (tests check what a PATCH carried).
    let (req, body) = if path.starts_with("/v1.0/me/") && req.method() != Method::GET {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        let logged = serde_json::from_slice::<Value>(&bytes).ok();
        (
            Request::from_parts(parts, axum::body::Body::from(bytes)),
            logged,
        )
    } else {
        (req, None)
    };
    let early = {
        let mut st = lock(&s);
        if is_api && st.throttle.remaining > 0 {
            st.throttle.remaining -= 1;
            let status =
                StatusCode::from_u16(st.throttle.status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            let mut resp = graph_error(status, "TooManyRequests", "Please retry again later.");
            if let Ok(v) = st.throttle.retry_after_secs.to_string().parse() {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Some(resp)
        } else if is_api {
            let bearer = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned);
            match bearer {
                Some(t) if st.access_tokens.contains(&t) => None,
                _ => Some(graph_error(
                    StatusCode::UNAUTHORIZED,
                    "InvalidAuthenticationToken",
                    "Access token has expired or is not yet valid.",
                )),
            }
        } else {
            None
        }
    };
    let resp = match early {
        Some(r) => r,
        None => next.run(req).await,
    };
    lock(&s).log.push(Logged {
        method,
        path,
        query,
        if_match,
        status: resp.status().as_u16(),
        body,
    });
    resp
}

async fn token(State(s): State<Shared>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let good = form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && form.get("refresh_token").map(String::as_str) == Some(REFRESH_TOKEN)
        && form.get("client_id").map(String::as_str) == Some(CLIENT_ID)
        && form.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
    if !good {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": "invalid_grant", "error_description": "AADSTS70000: bad grant"})
                .to_string(),
        )
            .into_response();
    }
    let mut st = lock(&s);
    st.token_requests += 1;
    let access = format!("at-{}", st.bump());
    st.access_tokens.insert(access.clone());
    ok_json(
        StatusCode::OK,
        &json!({"token_type": "Bearer", "expires_in": 3599, "access_token": access}),
    )
}

fn page_size(headers: &HeaderMap, default: usize) -> usize {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix("odata.maxpagesize="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(default)
}

fn delta(
    s: &Shared,
    collection: Collection,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let mut st = lock(s);
    let size = page_size(headers, st.default_page_size);
    for forbidden in ["$select", "$filter", "$orderby", "$expand", "$search"] {
        if collection == Collection::Calendar && query.contains_key(forbidden) {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidUrlQuery",
                &format!("{forbidden} is not supported on calendarView delta"),
            );
        }
    }
    let token = query
        .get("$skiptoken")
        .map(|t| (true, t))
        .or_else(|| query.get("$deltatoken").map(|t| (false, t)));
    if let Some((skip, token)) = token {
        // Links are replayed verbatim: they carry the token and nothing else.
        if query.len() != 1 {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ErrorInvalidUrlQuery",
                "a delta or skip token cannot be combined with other query parameters",
            );
        }
        if skip {
            return match st.pending.remove(token) {
                Some(p) if p.next.collection == collection => {
                    let v = st.page(p, size);
                    ok_json(StatusCode::OK, &v)
                }
                _ => graph_error(
                    StatusCode::GONE,
                    "SyncStateNotFound",
                    "The sync state generation is not found; the skip token expired.",
                ),
            };
        }
        return match st.cursors.get(token).cloned() {
            Some(c) if c.collection == collection => {
                let v = st.delta(c, size);
                ok_json(StatusCode::OK, &v)
            }
            _ => graph_error(
                StatusCode::GONE,
                "SyncStateNotFound",
                "The sync state generation is not found; the delta token expired.",
            ),
        };
    }
    let window = match collection {
        Collection::Contacts => None,
        Collection::Calendar => {
            let (Some(a), Some(b)) = (
                query.get("startDateTime").and_then(|s| parse_iso(s)),
                query.get("endDateTime").and_then(|s| parse_iso(s)),
            ) else {
                return graph_error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidParameter",
                    "startDateTime and endDateTime are required ISO 8601 values",
                );
            };
            Some((a, b))
        }
    };
    let cursor = Cursor {
        collection,
        window,
        seen: BTreeMap::new(),
    };
    let v = st.delta(cursor, size);
    ok_json(StatusCode::OK, &v)
}

async fn calendar_delta(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    delta(&s, Collection::Calendar, &q, &headers)
}

async fn contacts_delta(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    delta(&s, Collection::Contacts, &q, &headers)
}

fn if_match_fails(headers: &HeaderMap, current: Option<&str>) -> bool {
    match headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        None | Some("*") => false,
        Some(sent) => Some(sent) != current,
    }
}

fn conflict() -> Response {
    graph_error(
        StatusCode::PRECONDITION_FAILED,
        "ErrorIrresolvableConflict",
        "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.",
    )
}

fn not_found() -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ErrorItemNotFound",
        "The specified object was not found in the store.",
    )
}

/// The JSON object a write carries.
fn parse_body(body: &Bytes) -> Option<Value> {
    serde_json::from_slice::<Value>(body)
        .ok()
        .filter(Value::is_object)
}

fn bad_body() -> Response {
    graph_error(
        StatusCode::BAD_REQUEST,
        "RequestBodyRead",
        "the body is not a JSON object",
    )
}

async fn event_item(
    State(s): State<Shared>,
    method: Method,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&s);
    if method == Method::PATCH
        && let Some(edit) = st.before_next_write.remove(&id)
    {
        st.patch_event(&id, &edit);
    }
    let current = st.current_etag(&id);
    if current.is_none() {
        return not_found();
    }
    match method {
        Method::GET => match st.event_row(&id) {
            Some(row) => ok_json(StatusCode::OK, &row),
            None => not_found(),
        },
        Method::PATCH => {
            if if_match_fails(&headers, current.as_deref()) {
                return conflict();
            }
            let patch = match parse_body(&body) {
                Some(p) => p,
                None => return bad_body(),
            };
            match st.patch_event(&id, &patch) {
                Some(row) => ok_json(StatusCode::OK, &row),
                None => not_found(),
            }
        }
        Method::DELETE => {
            if if_match_fails(&headers, current.as_deref()) {
                return conflict();
            }
            if st.delete_event(&id) {
                StatusCode::NO_CONTENT.into_response()
            } else {
                not_found()
            }
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn event_action(
    State(s): State<Shared>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    let mut st = lock(&s);
    if st.event_row(&id).is_none() {
        return not_found();
    }
    match st.respond(&id, &action) {
        Some(_) => StatusCode::ACCEPTED.into_response(),
        None => graph_error(
            StatusCode::BAD_REQUEST,
            "ErrorInvalidRequest",
            "Your request can't be completed. You can't respond to this meeting.",
        ),
    }
}

async fn me(State(s): State<Shared>) -> Response {
    let owner = lock(&s).owner.clone();
    ok_json(
        StatusCode::OK,
        &json!({"id": "fake-user", "mail": owner, "userPrincipalName": owner}),
    )
}

async fn create_event(State(s): State<Shared>, body: Bytes) -> Response {
    let row = match parse_body(&body) {
        Some(p) => p,
        None => return bad_body(),
    };
    let mut st = lock(&s);
    // A retried create (same transactionId) answers the event the first one made.
    if let Some(transaction) = row.get("transactionId").and_then(Value::as_str) {
        let existing = st
            .events
            .iter()
            .find(|(_, e)| {
                !e.deleted
                    && e.row.get("transactionId").and_then(Value::as_str) == Some(transaction)
            })
            .map(|(id, _)| id.clone());
        if let Some(row) = existing.and_then(|id| st.event_row(&id)) {
            return ok_json(StatusCode::CREATED, &row);
        }
    }
    let mut row = row;
    if let Some(obj) = row.as_object_mut() {
        obj.remove("id");
        // Graph mints the iCalUId itself.
        let n = st.counter + 1;
        obj.insert(
            "iCalUId".into(),
            json!(format!(
                "040000008200E00074C5B7101A82E0080000000000000000000000000000000000000000{n:032X}"
            )),
        );
    }
    let id = st.insert_event(row);
    if std::mem::take(&mut st.lose_next_create_answer) {
        return graph_error(
            StatusCode::GATEWAY_TIMEOUT,
            "UnknownError",
            "the answer was lost on the way (fake fault)",
        );
    }
    match st.event_row(&id) {
        Some(row) => ok_json(StatusCode::CREATED, &row),
        None => not_found(),
    }
}

async fn contact_item(
    State(s): State<Shared>,
    method: Method,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut st = lock(&s);
    if method == Method::PATCH
        && let Some(edit) = st.before_next_write.remove(&id)
    {
        st.upsert_contact(Some(&id), &edit);
    }
    let Some(stored) = st.contacts.get(&id).filter(|c| !c.deleted).cloned() else {
        return not_found();
    };
    let current = stored.row.get("@odata.etag").and_then(Value::as_str);
    match method {
        Method::GET => ok_json(StatusCode::OK, &stored.row),
        Method::PATCH => {
            if if_match_fails(&headers, current) {
                return conflict();
            }
            let patch = match parse_body(&body) {
                Some(p) => p,
                None => return bad_body(),
            };
            match st.upsert_contact(Some(&id), &patch) {
                Some(row) => ok_json(StatusCode::OK, &row),
                None => not_found(),
            }
        }
        Method::DELETE => {
            if if_match_fails(&headers, current) {
                return conflict();
            }
            let version = st.bump();
            if let Some(c) = st.contacts.get_mut(&id) {
                c.deleted = true;
                c.version = version;
            }
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

async fn create_contact(State(s): State<Shared>, body: Bytes) -> Response {
    let row = match parse_body(&body) {
        Some(p) => p,
        None => return bad_body(),
    };
    match lock(&s).upsert_contact(None, &row) {
        Some(row) => ok_json(StatusCode::CREATED, &row),
        None => not_found(),
    }
}

// ---------------------------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------------------------

fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    format!("{url}{sep}{key}={encoded}")
}

/// Graph's validation handshake against one URL: `Ok(())` when it echoed the token in time.
async fn validate(url: &str, budget: std::time::Duration) -> Result<(), String> {
    let token = format!(
        "Validation: Testing client application reachability for subscription Request-Id: {}",
        rand::random::<u32>()
    );
    let http = reqwest::Client::builder()
        .timeout(budget)
        .build()
        .map_err(|e| e.to_string())?;
    let resp = http
        .post(with_query(url, "validationToken", &token))
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .send()
        .await
        .map_err(|e| format!("validation request to {url} failed: {e}"))?;
    let status = resp.status();
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let body = resp.text().await.map_err(|e| e.to_string())?;
    if status != StatusCode::OK || !plain || body != token {
        return Err(format!(
            "{url} answered {status} (text/plain: {plain}) with {body:?} instead of the token"
        ));
    }
    Ok(())
}

/// The requested `expirationDateTime`, or the `(code, message)` Graph refuses it with.
/// The expiration Graph grants for `requested`: at most `cap` from now.
fn granted_expiration(requested: String, cap: Option<TimeDelta>) -> String {
    let Some(cap) = cap else {
        return requested;
    };
    let latest = chrono::Utc::now() + cap;
    match parse_iso(&requested) {
        Some(at) if at > latest.naive_utc() => {
            latest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }
        _ => requested,
    }
}

fn expiration_ok(v: &Value) -> Result<String, (&'static str, &'static str)> {
    let exp = v
        .get("expirationDateTime")
        .and_then(Value::as_str)
        .ok_or(("InvalidRequest", "expirationDateTime is required"))?;
    let at = parse_iso(exp).ok_or(("InvalidRequest", "expirationDateTime is not ISO 8601"))?;
    let now = chrono::Utc::now().naive_utc();
    if at <= now || at > now + TimeDelta::minutes(10_080) {
        return Err((
            "ExtensionError",
            "Subscription expiration can only be 10080 minutes in the future.",
        ));
    }
    Ok(exp.to_owned())
}

async fn create_subscription(State(s): State<Shared>, body: Bytes) -> Response {
    let Some(mut sub) = parse_body(&body) else {
        return bad_body();
    };
    for required in ["changeType", "notificationUrl", "resource", "clientState"] {
        if sub
            .get(required)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequest",
                &format!("{required} is required"),
            );
        }
    }
    let requested = match expiration_ok(&sub) {
        Ok(e) => e,
        Err((code, message)) => return graph_error(StatusCode::BAD_REQUEST, code, message),
    };
    let budget = lock(&s).validation_timeout;
    let urls: Vec<String> = ["notificationUrl", "lifecycleNotificationUrl"]
        .iter()
        .filter_map(|k| sub.get(*k).and_then(Value::as_str).map(str::to_owned))
        .collect();
    for url in urls {
        if let Err(reason) = validate(&url, budget).await {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "ValidationError",
                &format!("Subscription validation request failed: {reason}"),
            );
        }
    }
    let mut st = lock(&s);
    let id = format!("sub-{}", st.bump());
    let granted = granted_expiration(requested, st.subscription_lifetime_cap);
    if let Some(obj) = sub.as_object_mut() {
        obj.insert("id".into(), json!(id));
        obj.insert("expirationDateTime".into(), json!(granted));
        obj.insert("applicationId".into(), json!(CLIENT_ID));
    }
    st.subscriptions.insert(id, sub.clone());
    ok_json(StatusCode::CREATED, &sub)
}

async fn subscription_item(
    State(s): State<Shared>,
    method: Method,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let mut st = lock(&s);
    if !st.subscriptions.contains_key(&id) {
        return graph_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "The object was not found.",
        );
    }
    match method {
        Method::PATCH => {
            let Some(patch) = parse_body(&body) else {
                return bad_body();
            };
            let exp = match expiration_ok(&patch) {
                Ok(e) => e,
                Err((code, message)) => {
                    return graph_error(StatusCode::BAD_REQUEST, code, message);
                }
            };
            let exp = granted_expiration(exp, st.subscription_lifetime_cap);
            let Some(sub) = st.subscriptions.get_mut(&id) else {
                return not_found();
            };
            sub["expirationDateTime"] = json!(exp);
            let sub = sub.clone();
            ok_json(StatusCode::OK, &sub)
        }
        Method::DELETE => {
            st.subscriptions.remove(&id);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Test API
// ---------------------------------------------------------------------------------------------

impl FakeGraph {
    /// Starts the fake on `127.0.0.1:0` (default page size 10, as Graph's calendarView).
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the Graph fake")?;
        let addr = listener.local_addr()?;
        let state: Shared = Arc::new(Mutex::new(FakeState {
            base: format!("http://{addr}/v1.0"),
            default_page_size: 10,
            validation_timeout: std::time::Duration::from_secs(10),
            owner: "me@example.com".into(),
            ..FakeState::default()
        }));
        let app = Router::new()
            .route("/oauth2/v2.0/token", post(token))
            .route("/v1.0/me/calendarView/delta", get(calendar_delta))
            .route("/v1.0/me/contacts/delta", get(contacts_delta))
            .route("/v1.0/me", get(me))
            .route("/v1.0/me/events", post(create_event))
            .route("/v1.0/me/events/{id}/{action}", post(event_action))
            .route(
                "/v1.0/me/events/{id}",
                get(event_item).patch(event_item).delete(event_item),
            )
            .route("/v1.0/me/contacts", post(create_contact))
            .route(
                "/v1.0/me/contacts/{id}",
                get(contact_item).patch(contact_item).delete(contact_item),
            )
            .route("/v1.0/subscriptions", post(create_subscription))
            .route(
                "/v1.0/subscriptions/{id}",
                axum::routing::patch(subscription_item).delete(subscription_item),
            )
            .layer(middleware::from_fn_with_state(state.clone(), gate))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    fn st(&self) -> MutexGuard<'_, FakeState> {
        lock(&self.state)
    }

    /// `http://127.0.0.1:<port>/v1.0`
    pub fn api_base(&self) -> String {
        format!("http://{}/v1.0", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/oauth2/v2.0/token", self.addr)
    }

    /// Adds an event (a series master when it has `recurrence`) as if created in Outlook;
    /// returns its id (the row's own `id`, or a new one).
    pub fn put_event(&self, row: Value) -> String {
        self.st().insert_event(row)
    }

    /// Edits an event (or an occurrence, which becomes an exception) as if in Outlook.
    pub fn patch_event(&self, id: &str, patch: Value) -> Option<Value> {
        self.st().patch_event(id, &patch)
    }

    /// Deletes an event (an occurrence: cancels that instance).
    pub fn delete_event(&self, id: &str) -> bool {
        self.st().delete_event(id)
    }

    /// The full row of an event, occurrence or exception.
    pub fn event(&self, id: &str) -> Option<Value> {
        self.st().event_row(id)
    }

    /// The id of a master's occurrence starting at `key` (UTC basic form).
    pub fn occurrence_id(&self, master: &str, key: &str) -> String {
        FakeState::occurrence_id(master, key)
    }

    pub fn put_contact(&self, row: Value) -> String {
        let id = row.get("id").and_then(Value::as_str).map(str::to_owned);
        let row = self.st().upsert_contact(id.as_deref(), &row);
        row.and_then(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_default()
    }

    pub fn patch_contact(&self, id: &str, patch: Value) -> Option<Value> {
        self.st().upsert_contact(Some(id), &patch)
    }

    pub fn delete_contact(&self, id: &str) -> bool {
        let mut st = self.st();
        let version = st.bump();
        match st.contacts.get_mut(id) {
            Some(c) if !c.deleted => {
                c.deleted = true;
                c.version = version;
                true
            }
            _ => false,
        }
    }

    pub fn contact(&self, id: &str) -> Option<Value> {
        self.st()
            .contacts
            .get(id)
            .filter(|c| !c.deleted)
            .map(|c| c.row.clone())
    }

    /// Arms a race: just before the next PATCH of item `id` (event, occurrence or contact) is
    /// handled, `edit` is applied as an edit made in Outlook (new change key), so that PATCH's
    /// `If-Match` is stale and answered 412 `ErrorIrresolvableConflict`.
    pub fn edit_before_next_write(&self, id: &str, edit: Value) {
        self.st().before_next_write.insert(id.to_owned(), edit);
    }

    /// The next `POST /me/events` creates the event but answers 504, as if the answer were lost.
    pub fn lose_next_create_answer(&self) {
        self.st().lose_next_create_answer = true;
    }

    /// Subscriptions (new or renewed) are granted for at most `cap`, whatever was asked.
    pub fn cap_subscription_lifetime(&self, cap: std::time::Duration) {
        self.st().subscription_lifetime_cap = TimeDelta::from_std(cap).ok();
    }

    /// Every live (not deleted) single event, series master and exception.
    pub fn events(&self) -> Vec<Value> {
        self.st()
            .events
            .values()
            .filter(|e| !e.deleted)
            .map(|e| e.row.clone())
            .collect()
    }

    /// Every delta and skip token now answers 410 `SyncStateNotFound`.
    pub fn expire_delta_tokens(&self) {
        let mut st = self.st();
        st.cursors.clear();
        st.pending.clear();
    }

    /// The next `n` API requests answer `status` (429 or 503) with `Retry-After: secs`.
    pub fn throttle_next(&self, n: u32, status: u16, retry_after_secs: u64) {
        self.st().throttle = Throttle {
            remaining: n,
            retry_after_secs,
            status,
        };
    }

    /// Every issued access token stops working (the client must refresh).
    pub fn revoke_access_tokens(&self) {
        self.st().access_tokens.clear();
    }

    /// Refresh-token grants served.
    pub fn token_requests(&self) -> u64 {
        self.st().token_requests
    }

    pub fn set_default_page_size(&self, n: usize) {
        self.st().default_page_size = n;
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.st().log.clone()
    }

    /// PATCH, POST and DELETE requests to the mailbox so far.
    pub fn write_count(&self) -> usize {
        self.st()
            .log
            .iter()
            .filter(|l| l.path.starts_with("/v1.0/me/") && l.method != "GET")
            .count()
    }

    pub fn clear_log(&self) {
        self.st().log.clear();
    }

    /// Sets the mailbox owner's address (default `me@example.com`).
    pub fn set_owner(&self, address: &str) {
        self.st().owner = address.to_owned();
    }

    /// From now on every delta round sends each row twice (`false` stops it).
    pub fn replay_rows(&self, on: bool) {
        self.st().replay_rows = on;
    }

    /// Live subscriptions.
    pub fn subscriptions(&self) -> Vec<Value> {
        self.st().subscriptions.values().cloned().collect()
    }

    pub fn set_validation_timeout(&self, budget: std::time::Duration) {
        self.st().validation_timeout = budget;
    }

    /// POSTs `body` to a subscription's notification URL (or its lifecycle URL); returns the
    /// receiver's status and how long it took to answer.
    pub async fn deliver_raw(
        &self,
        subscription: &str,
        lifecycle: bool,
        body: Value,
    ) -> anyhow::Result<(u16, std::time::Duration)> {
        let sub = self
            .st()
            .subscriptions
            .get(subscription)
            .cloned()
            .with_context(|| format!("no subscription {subscription}"))?;
        let url = lifecycle
            .then(|| sub.get("lifecycleNotificationUrl").and_then(Value::as_str))
            .flatten()
            .or_else(|| sub.get("notificationUrl").and_then(Value::as_str))
            .context("subscription without a URL")?
            .to_owned();
        let started = std::time::Instant::now();
        let resp = reqwest::Client::new()
            .post(&url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("delivering to {url}"))?;
        Ok((resp.status().as_u16(), started.elapsed()))
    }

    /// Delivers one change notification per `(subscription, changeType, event id)`, batched as
    /// Graph does, each carrying its subscription's `clientState`.
    pub async fn notify(
        &self,
        changes: &[(&str, &str, &str)],
    ) -> anyhow::Result<(u16, std::time::Duration)> {
        let Some((first, _, _)) = changes.first() else {
            anyhow::bail!("no changes to notify");
        };
        let value: Vec<Value> = {
            let st = self.st();
            changes
                .iter()
                .map(|(sub, change, id)| {
                    let s = st.subscriptions.get(*sub).cloned().unwrap_or_default();
                    json!({
                        "subscriptionId": sub,
                        "subscriptionExpirationDateTime": s.get("expirationDateTime"),
                        "changeType": change,
                        "resource": format!("Users/fake-user/Events/{id}"),
                        "resourceData": {
                            "@odata.type": "#Microsoft.Graph.Event",
                            "@odata.id": format!("Users/fake-user/Events/{id}"),
                            "id": id
                        },
                        "clientState": s.get("clientState"),
                        "tenantId": "fake-tenant"
                    })
                })
                .collect()
        };
        self.deliver_raw(first, false, json!({"value": value}))
            .await
    }

    /// Delivers a lifecycle event (`missed`, `subscriptionRemoved`, `reauthorizationRequired`)
    /// to the subscription's lifecycle URL.
    pub async fn lifecycle(
        &self,
        subscription: &str,
        event: &str,
    ) -> anyhow::Result<(u16, std::time::Duration)> {
        let s = self
            .st()
            .subscriptions
            .get(subscription)
            .cloned()
            .unwrap_or_default();
        let body = json!({"value": [{
            "subscriptionId": subscription,
            "subscriptionExpirationDateTime": s.get("expirationDateTime"),
            "tenantId": "fake-tenant",
            "clientState": s.get("clientState"),
            "lifecycleEvent": event
        }]});
        self.deliver_raw(subscription, true, body).await
    }

    /// The raw `Map` of a JSON object (for building rows in tests).
    pub fn object(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }
}
