//! One meeting, one document, through the real server: three mailboxes (Alice organizes in
//! Google, Bob is invited in Outlook/Graph, Carol in Google) hold copies of one weekly series with
//! a moved and a cancelled instance.
//!
//! - Whatever order the mailboxes' rounds run in (also all at once), after a resync (410) of one
//!   of them and across a restart, the workspace has exactly one document with three links.
//! - The series shows up in Bob's Graph mailbox as Exchange would put it there (an `iCalUId`
//!   that is a global object id wrapping Google's UID) and is the same meeting; its occurrences
//!   come from `GET /v1/calendar/occurrences`.
//! - An app edit of a shared field reaches Alice's Google calendar only; an app edit of Bob's
//!   response reaches Bob's mailbox only (`POST .../accept`); Bob renaming his own copy is a
//!   conflict that is written nowhere; Bob removing the meeting only unlinks him, Alice deleting
//!   it tombstones it.
//! - Duplicated, reordered and lost webhooks change nothing in the outcome.
//!
//! Provider writes are counted in the fakes wherever a write must not happen.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{Datelike, NaiveDate, Utc};
use driftless_bridges::google::client::Secret;
use driftless_client_protocol::DocumentId;
use driftless_server::config::{BridgeConfig, BridgeKind, GoogleCalendarConfig, GraphBridgeConfig};
use driftless_tests::TestServer;
use driftless_tests::dav_bridge::{Api, app_edit_event, app_open};
use driftless_tests::fakes::google::GoogleFake;
use driftless_tests::fakes::graph::{CLIENT_ID, CLIENT_SECRET, FakeGraph, REFRESH_TOKEN};
use serde_json::{Value, json};

const CAL: &str = "primary";
const ALICE: &str = "google-alice";
const BOB: &str = "graph-bob";
const CAROL: &str = "google-carol";
const ALICE_MAIL: &str = "alice@example.org";
const BOB_MAIL: &str = "bob@example.com";
const CAROL_MAIL: &str = "carol@example.org";

fn google_bridge(id: &str, fake: &GoogleFake) -> BridgeConfig {
    let (client_id, secret, refresh) = fake.credentials();
    BridgeConfig {
        id: id.into(),
        kind: BridgeKind::GoogleCalendar,
        workspace: "default".into(),
        // Rounds are driven by the test (apart from the one at startup).
        poll_interval: Duration::from_secs(3600),
        max_delete_fraction: 1.0,
        url: String::new(),
        username: None,
        password: None,
        hubspot: None,
        salesforce: None,
        google: Some(GoogleCalendarConfig {
            calendar_id: CAL.into(),
            client_id,
            client_secret: Secret::new(secret),
            refresh_token: Secret::new(refresh),
            token_url: fake.token_url(),
            api_base: fake.api_base(),
        }),
        graph: None,
    }
}

fn graph_bridge(fake: &FakeGraph) -> BridgeConfig {
    BridgeConfig {
        id: BOB.into(),
        kind: BridgeKind::MicrosoftGraph,
        workspace: "default".into(),
        poll_interval: Duration::from_secs(3600),
        max_delete_fraction: 1.0,
        url: String::new(),
        username: None,
        password: None,
        google: None,
        hubspot: None,
        salesforce: None,
        graph: Some(GraphBridgeConfig {
            client_id: CLIENT_ID.into(),
            client_secret: Some(Secret::new(CLIENT_SECRET)),
            refresh_token: Secret::new(REFRESH_TOKEN),
            token_url: fake.token_url(),
            api_base: fake.api_base(),
            window_past: Duration::from_secs(30 * 86_400),
            window_future: Duration::from_secs(90 * 86_400),
            public_url: None,
        }),
    }
}

/// The day `n` days from today (UTC): Graph's window is around the real now.
fn day(n: i64) -> NaiveDate {
    Utc::now().date_naive() + chrono::TimeDelta::days(n)
}

/// The instance key of the 09:00 UTC instance on `d` (both providers' form).
fn key(d: NaiveDate) -> String {
    d.format("%Y%m%dT090000Z").to_string()
}

/// The series: weekly from day 7 at 09:00 UTC, six times; the second moved to 13:00 and
/// renamed, the third cancelled.
const TITLE: &str = "Quarterly planning";
const MOVED_TITLE: &str = "Quarterly planning (moved)";

fn first() -> NaiveDate {
    day(7)
}
fn moved() -> NaiveDate {
    day(14)
}
fn cancelled() -> NaiveDate {
    day(21)
}

/// The Exchange global object id that wraps `uid` (`vCal-Uid`), as Graph shows a meeting that
/// was organized elsewhere ([MS-OXOCAL] 2.2.1.27).
fn global_object_id(uid: &str) -> String {
    let mut bytes: Vec<u8> = vec![
        0x04, 0x00, 0x00, 0x00, 0x82, 0x00, 0xE0, 0x00, 0x74, 0xC5, 0xB7, 0x10, 0x1A, 0x82, 0xE0,
        0x08,
    ];
    bytes.extend([0u8; 4]); // instance date: the series
    bytes.extend([0x00, 0x8E, 0x54, 0x2A, 0x6B, 0x5E, 0xDB, 0x01]); // creation time
    bytes.extend([0u8; 8]);
    let mut data = b"vCal-Uid\x01\x00\x00\x00".to_vec();
    data.extend(uid.as_bytes());
    data.push(0);
    bytes.extend((data.len() as u32).to_le_bytes());
    bytes.extend(data);
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn google_time(d: NaiveDate, hour: u32) -> Value {
    json!({"dateTime": format!("{d}T{hour:02}:00:00Z"), "timeZone": "UTC"})
}

/// Alice's copy: she organizes, Bob and Carol are invited.
fn alice_series() -> Value {
    json!({
        "summary": TITLE,
        "location": "Room 4",
        "description": "Numbers first.",
        "start": google_time(first(), 9),
        "end": google_time(first(), 10),
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=6"],
        "organizer": {"email": ALICE_MAIL, "displayName": "Alice", "self": true},
        "attendees": [
            {"email": ALICE_MAIL, "displayName": "Alice", "organizer": true, "self": true, "responseStatus": "accepted"},
            {"email": BOB_MAIL, "displayName": "Bob", "responseStatus": "needsAction"},
            {"email": CAROL_MAIL, "displayName": "Carol", "responseStatus": "needsAction"},
        ],
    })
}

/// Carol's copy of the same invitation in her own Google calendar.
fn carol_series(uid: &str) -> Value {
    json!({
        "iCalUID": uid,
        "summary": TITLE,
        "location": "Room 4",
        "description": "Numbers first.",
        "start": google_time(first(), 9),
        "end": google_time(first(), 10),
        "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=6"],
        "organizer": {"email": ALICE_MAIL, "displayName": "Alice"},
        "attendees": [
            {"email": ALICE_MAIL, "displayName": "Alice", "organizer": true, "responseStatus": "accepted"},
            {"email": BOB_MAIL, "displayName": "Bob", "responseStatus": "needsAction"},
            {"email": CAROL_MAIL, "displayName": "Carol", "self": true, "responseStatus": "accepted"},
        ],
    })
}

fn graph_time(d: NaiveDate, hour: u32) -> Value {
    json!({"dateTime": format!("{d}T{hour:02}:00:00.0000000"), "timeZone": "UTC"})
}

/// Bob's copy as Exchange delivers the invitation: not his to organize, not answered yet.
fn bob_series(uid: &str) -> Value {
    let weekday = match first().weekday() {
        chrono::Weekday::Mon => "monday",
        chrono::Weekday::Tue => "tuesday",
        chrono::Weekday::Wed => "wednesday",
        chrono::Weekday::Thu => "thursday",
        chrono::Weekday::Fri => "friday",
        chrono::Weekday::Sat => "saturday",
        chrono::Weekday::Sun => "sunday",
    };
    json!({
        "subject": TITLE,
        "body": {"contentType": "text", "content": "Numbers first."},
        "location": {"displayName": "Room 4"},
        "start": graph_time(first(), 9),
        "end": graph_time(first(), 10),
        "originalStartTimeZone": "UTC",
        "originalEndTimeZone": "UTC",
        "iCalUId": global_object_id(uid),
        "isOrganizer": false,
        "responseStatus": {"response": "none", "time": "0001-01-01T00:00:00Z"},
        "organizer": {"emailAddress": {"name": "Alice", "address": ALICE_MAIL}},
        "attendees": [
            {"type": "required", "status": {"response": "none"}, "emailAddress": {"name": "Bob", "address": BOB_MAIL}},
            {"type": "required", "status": {"response": "none"}, "emailAddress": {"name": "Carol", "address": CAROL_MAIL}},
        ],
        "recurrence": {
            "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": [weekday], "firstDayOfWeek": "sunday"},
            "range": {"type": "numbered", "startDate": first().to_string(), "numberOfOccurrences": 6}
        }
    })
}

struct Mailboxes {
    alice: GoogleFake,
    carol: GoogleFake,
    bob: FakeGraph,
    /// Event ids: Alice's and Carol's series, Bob's master.
    alice_id: String,
    carol_id: String,
    bob_id: String,
    uid: String,
}

impl Mailboxes {
    async fn start() -> anyhow::Result<Self> {
        let (alice, carol, bob) = (
            GoogleFake::start().await?,
            GoogleFake::start().await?,
            FakeGraph::start().await?,
        );
        bob.set_owner(BOB_MAIL);
        Ok(Self {
            alice,
            carol,
            bob,
            alice_id: String::new(),
            carol_id: String::new(),
            bob_id: String::new(),
            uid: String::new(),
        })
    }

    /// Alice creates the series (and moves and cancels an instance); Google and Exchange put
    /// the invitation into Carol's and Bob's calendars.
    fn invite(&mut self) -> anyhow::Result<()> {
        let master = self.alice.insert(CAL, alice_series())?;
        self.alice_id = master["id"].as_str().context("id")?.to_owned();
        self.uid = master["iCalUID"].as_str().context("iCalUID")?.to_owned();
        let moved_patch = json!({"summary": MOVED_TITLE,
            "start": google_time(moved(), 13), "end": google_time(moved(), 14)});
        self.alice.patch(
            CAL,
            &format!("{}_{}", self.alice_id, key(moved())),
            moved_patch.clone(),
        )?;
        self.alice
            .delete(CAL, &format!("{}_{}", self.alice_id, key(cancelled())))?;

        let copy = self.carol.insert(CAL, carol_series(&self.uid))?;
        self.carol_id = copy["id"].as_str().context("id")?.to_owned();
        self.carol.patch(
            CAL,
            &format!("{}_{}", self.carol_id, key(moved())),
            moved_patch,
        )?;
        self.carol
            .delete(CAL, &format!("{}_{}", self.carol_id, key(cancelled())))?;

        self.bob_id = self.bob.put_event(bob_series(&self.uid));
        let occurrence = self.bob.occurrence_id(&self.bob_id, &key(moved()));
        self.bob
            .patch_event(
                &occurrence,
                json!({"subject": MOVED_TITLE,
                       "start": graph_time(moved(), 13), "end": graph_time(moved(), 14)}),
            )
            .context("moving Bob's occurrence")?;
        if !self
            .bob
            .delete_event(&self.bob.occurrence_id(&self.bob_id, &key(cancelled())))
        {
            bail!("the Graph fake did not delete the occurrence");
        }
        Ok(())
    }

    fn configs(&self) -> Vec<BridgeConfig> {
        vec![
            google_bridge(ALICE, &self.alice),
            graph_bridge(&self.bob),
            google_bridge(CAROL, &self.carol),
        ]
    }

    /// Write requests each mailbox received since the logs were cleared: (Alice, Bob, Carol).
    fn writes(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        let google = |fake: &GoogleFake| {
            fake.log()
                .into_iter()
                .filter(|r| r.is_event_write())
                .map(|r| format!("{} {}", r.method, r.path))
                .collect()
        };
        let bob = self
            .bob
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/v1.0/me/") && r.method != "GET")
            .map(|r| format!("{} {} {}", r.method, r.path, r.status))
            .collect();
        (google(&self.alice), bob, google(&self.carol))
    }

    fn clear_logs(&self) {
        self.alice.clear_log();
        self.bob.clear_log();
        self.carol.clear_log();
    }
}

struct Env {
    mail: Mailboxes,
    server: TestServer,
    api: Api,
}

impl Env {
    /// Empty mailboxes and driftless with a bridge to each; the rounds at startup are over
    /// before this returns, so the test decides the order in which the copies arrive.
    async fn start(webhooks: bool) -> anyhow::Result<Self> {
        let mail = Mailboxes::start().await?;
        let configs = mail.configs();
        let server = TestServer::start_with_config(move |c| {
            let mut configs = configs.clone();
            if webhooks {
                let public_url = format!("http://{}", c.listen);
                for config in &mut configs {
                    if let Some(graph) = config.graph.as_mut() {
                        graph.public_url = Some(public_url.clone());
                    }
                }
                c.public_url = Some(public_url);
            }
            c.bridges = configs;
        })
        .await?;
        server.wait_ready(Duration::from_secs(10)).await?;
        let api = Api::new(server.http_url());
        for bridge in [ALICE, BOB, CAROL] {
            api.sync(bridge).await?;
        }
        Ok(Self { mail, server, api })
    }

    async fn sync_in(&self, order: &[&str]) -> anyhow::Result<()> {
        for bridge in order {
            let report = self.api.sync(bridge).await?;
            if report["state"] != "idle" {
                bail!("bridge {bridge}: {report}");
            }
        }
        Ok(())
    }

    async fn sync_all(&self) -> anyhow::Result<()> {
        self.sync_in(&[ALICE, BOB, CAROL]).await
    }

    /// The only calendar_event document (fails on a duplicate).
    async fn only_event(&self) -> anyhow::Result<(DocumentId, Value)> {
        let all = self.api.records("calendar_event").await?;
        match all.as_slice() {
            [one] => Ok(one.clone()),
            _ => bail!(
                "expected exactly one calendar_event, got {}: {}",
                all.len(),
                serde_json::to_string_pretty(&all.iter().map(|(_, r)| r).collect::<Vec<_>>())?
            ),
        }
    }

    /// The one document, linked to all three copies, Alice's as the organizer's.
    async fn one_meeting(&self) -> anyhow::Result<(DocumentId, Value)> {
        let (doc, record) = self.only_event().await?;
        let links = &record["links"];
        let expected = [
            (ALICE, self.mail.alice_id.as_str(), true),
            (BOB, self.mail.bob_id.as_str(), false),
            (CAROL, self.mail.carol_id.as_str(), false),
        ];
        for (bridge, id, organizer) in expected {
            if links[bridge]["id"] != id || links[bridge]["organizer"] != organizer {
                bail!("link of {bridge} should be {id} (organizer: {organizer}): {record}");
            }
        }
        Ok((doc, record))
    }
}

/// The shared fields as the organizer has them, with the moved and the cancelled instance under
/// one key each.
fn assert_organizers_meeting(record: &Value) {
    assert_eq!(record["title"], TITLE, "{record}");
    assert_eq!(record["location"], "Room 4", "{record}");
    assert_eq!(
        record["recurrence"]["rules"]["0"], "RRULE:FREQ=WEEKLY;COUNT=6",
        "{record}"
    );
    let overrides = record["overrides"].as_object().cloned().unwrap_or_default();
    assert_eq!(
        overrides.keys().cloned().collect::<Vec<_>>(),
        vec![key(moved()), key(cancelled())],
        "{record}"
    );
    assert_eq!(overrides[&key(moved())]["title"], MOVED_TITLE, "{record}");
    assert_eq!(overrides[&key(cancelled())]["cancelled"], true, "{record}");
    assert_eq!(
        record["attendees"][CAROL_MAIL]["response"], "accepted",
        "{record}"
    );
    assert_eq!(
        record["attendees"][BOB_MAIL]["response"], "needs_action",
        "{record}"
    );
    assert_eq!(
        record["ical_uid"]
            .as_str()
            .map(|u| u.ends_with("@google.com")),
        Some(true)
    );
}

#[tokio::test]
async fn three_mailboxes_make_one_document_in_any_order_after_a_resync_and_a_restart()
-> anyhow::Result<()> {
    let orders: [&[&str]; 3] = [
        &[ALICE, BOB, CAROL],
        &[BOB, CAROL, ALICE],
        &[CAROL, ALICE, BOB],
    ];
    for order in orders {
        let mut env = Env::start(false).await?;
        env.mail.invite()?;
        env.sync_in(order).await?;
        let (doc, record) = env
            .one_meeting()
            .await
            .with_context(|| format!("order {order:?}"))?;
        assert_organizers_meeting(&record);
        // Whoever came first, the shared fields are the organizer's and nothing is written.
        env.mail.clear_logs();
        env.sync_in(order).await?;
        let writes = env.mail.writes();
        assert_eq!(writes, Default::default(), "order {order:?}");

        // A resync of one mailbox (410) matches its copy again instead of importing it anew.
        env.mail.bob.expire_delta_tokens();
        env.mail.carol.expire_sync_tokens();
        env.sync_in(order).await?;
        let (after, _) = env.one_meeting().await?;
        assert_eq!(
            after, doc,
            "order {order:?}: a resync made another document"
        );

        // Across a restart, with every mailbox listing everything again.
        env.server.restart().await?;
        env.server.wait_ready(Duration::from_secs(10)).await?;
        env.mail.alice.expire_sync_tokens();
        env.mail.bob.expire_delta_tokens();
        env.mail.carol.expire_sync_tokens();
        env.sync_in(order).await?;
        let (after, record) = env.one_meeting().await?;
        assert_eq!(
            after, doc,
            "order {order:?}: a restart made another document"
        );
        assert_organizers_meeting(&record);
        assert_eq!(env.mail.writes(), Default::default(), "order {order:?}");
    }

    // All three at once: the index claim decides, the others attach.
    let mut env = Env::start(false).await?;
    env.mail.invite()?;
    let (a, b, c) = tokio::join!(env.api.sync(ALICE), env.api.sync(BOB), env.api.sync(CAROL));
    for report in [a?, b?, c?] {
        assert_eq!(report["state"], "idle", "{report}");
    }
    env.sync_all().await?;
    let (_, record) = env.one_meeting().await?;
    assert_organizers_meeting(&record);
    Ok(())
}

/// Polls the occurrences of the workspace in [day 0, day 60).
async fn occurrences(api: &Api) -> anyhow::Result<Vec<Value>> {
    let from = format!("{}T00:00:00Z", day(0));
    let to = format!("{}T00:00:00Z", day(60));
    let v = api
        .get_json(&format!("/v1/calendar/occurrences?from={from}&to={to}"))
        .await?;
    Ok(v["occurrences"].as_array().context("occurrences")?.clone())
}

#[tokio::test]
async fn a_google_series_is_one_meeting_with_its_graph_attendee_and_each_mailbox_gets_its_own()
-> anyhow::Result<()> {
    let mut env = Env::start(false).await?;
    env.mail.invite()?;
    // Bob's Outlook copy first: the organizer's copy takes over the shared fields later.
    env.sync_in(&[BOB, ALICE, CAROL]).await?;
    let (doc, record) = env.one_meeting().await?;
    assert_organizers_meeting(&record);

    // The expansion: six weekly instances, the third cancelled, the second moved to 13:00.
    let occ = occurrences(&env.api).await?;
    let url = format!("automerge:{doc}");
    assert!(occ.iter().all(|o| o["url"] == url.as_str()), "{occ:?}");
    let starts: Vec<&str> = occ.iter().filter_map(|o| o["start"].as_str()).collect();
    let expected: Vec<String> = [
        format!("{}T09:00:00Z", first()),
        format!("{}T13:00:00Z", moved()),
        format!("{}T09:00:00Z", day(28)),
        format!("{}T09:00:00Z", day(35)),
        format!("{}T09:00:00Z", day(42)),
    ]
    .into();
    assert_eq!(starts, expected, "{occ:?}");
    assert_eq!(occ[1]["title"], MOVED_TITLE, "{occ:?}");
    assert_eq!(occ[0]["title"], TITLE, "{occ:?}");

    // An app renames the meeting: only Alice's (the organizer's) calendar is written.
    let mut app = app_open(&env.server.url(), &doc, "meeting-app").await?;
    app_edit_event(&mut app, &doc, |e| {
        e.title = Some("Quarterly planning 2027".into())
    })
    .await?;
    env.mail.clear_logs();
    env.sync_all().await?;
    let (alice_w, bob_w, carol_w) = env.mail.writes();
    assert_eq!(
        alice_w,
        vec![format!(
            "PATCH /calendar/v3/calendars/{CAL}/events/{}",
            env.mail.alice_id
        )],
        "Alice's writes"
    );
    assert!(
        bob_w.is_empty(),
        "nothing shared is written to Bob's mailbox: {bob_w:?}"
    );
    assert!(carol_w.is_empty(), "nor to Carol's: {carol_w:?}");
    assert_eq!(
        env.mail
            .alice
            .event(CAL, &env.mail.alice_id)
            .context("Alice's event")?["summary"],
        "Quarterly planning 2027"
    );
    assert_eq!(
        env.mail
            .bob
            .event(&env.mail.bob_id)
            .context("Bob's event")?["subject"],
        TITLE
    );

    // Bob accepts in the app: his Graph mailbox answers the invitation, nobody else is written.
    app_edit_event(&mut app, &doc, |e| {
        if let Some(bob) = e.attendees.get_mut(BOB_MAIL) {
            bob.response = Some("accepted".into());
        }
    })
    .await?;
    env.mail.clear_logs();
    env.sync_all().await?;
    let (alice_w, bob_w, carol_w) = env.mail.writes();
    assert!(
        alice_w.is_empty(),
        "Bob's answer is not Alice's to write: {alice_w:?}"
    );
    assert!(carol_w.is_empty(), "{carol_w:?}");
    assert_eq!(
        bob_w,
        vec![format!(
            "POST /v1.0/me/events/{}/accept 202",
            env.mail.bob_id
        )],
        "Bob's writes"
    );
    let bob_event = env
        .mail
        .bob
        .event(&env.mail.bob_id)
        .context("Bob's event")?;
    assert_eq!(bob_event["responseStatus"]["response"], "accepted");
    // The answered invitation comes back in Bob's next round and changes nothing.
    env.mail.clear_logs();
    env.sync_all().await?;
    env.sync_all().await?;
    assert_eq!(env.mail.writes(), Default::default());
    let (_, record) = env.one_meeting().await?;
    assert_eq!(
        record["attendees"][BOB_MAIL]["response"], "accepted",
        "{record}"
    );

    // Carol answers "tentative" in the app: a PATCH of her own Google copy only.
    app_edit_event(&mut app, &doc, |e| {
        if let Some(carol) = e.attendees.get_mut(CAROL_MAIL) {
            carol.response = Some("tentative".into());
        }
    })
    .await?;
    env.mail.clear_logs();
    env.sync_all().await?;
    let (alice_w, bob_w, carol_w) = env.mail.writes();
    assert!(
        alice_w.is_empty() && bob_w.is_empty(),
        "{alice_w:?} {bob_w:?}"
    );
    // Her series, and its exception (Google keeps a response per instance).
    let series_path = format!(
        "PATCH /calendar/v3/calendars/{CAL}/events/{}",
        env.mail.carol_id
    );
    assert_eq!(carol_w.first(), Some(&series_path), "{carol_w:?}");
    assert!(
        carol_w.iter().all(|w| w.starts_with(&series_path)),
        "{carol_w:?}"
    );
    let carol_event = env
        .mail
        .carol
        .event(CAL, &env.mail.carol_id)
        .context("Carol's event")?;
    let carol_self = carol_event["attendees"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["email"] == CAROL_MAIL))
        .context("Carol's attendee entry")?;
    assert_eq!(carol_self["responseStatus"], "tentative");
    assert_eq!(
        carol_event["summary"], TITLE,
        "Carol's copy keeps its title"
    );

    // Bob renames his own copy in Outlook: a conflict, written nowhere.
    env.mail
        .bob
        .patch_event(&env.mail.bob_id, json!({"subject": "Bob's planning"}))
        .context("Bob's rename")?;
    env.mail.clear_logs();
    env.sync_in(&[BOB, ALICE, CAROL]).await?;
    env.sync_all().await?;
    assert_eq!(env.mail.writes(), Default::default());
    let (_, record) = env.one_meeting().await?;
    assert_eq!(record["title"], "Quarterly planning 2027", "{record}");
    let conflicts = env.api.conflicts(&doc).await?;
    let title = conflicts
        .iter()
        .find(|c| c["field"] == "title")
        .with_context(|| format!("no title conflict: {conflicts:?}"))?;
    assert_eq!(title["winner"], "Quarterly planning 2027", "{title}");
    let values = title["values"].as_array().context("values")?;
    assert!(
        values
            .iter()
            .any(|v| v["value"] == "Bob's planning" && v["source"] == BOB),
        "{title}"
    );
    assert!(
        values
            .iter()
            .any(|v| v["value"] == "Quarterly planning 2027" && v["source"] == ALICE),
        "{title}"
    );

    // Bob removes the meeting from his calendar: he is unlinked, the meeting stays.
    assert!(env.mail.bob.delete_event(&env.mail.bob_id));
    env.mail.clear_logs();
    env.sync_all().await?;
    let (_, record) = env.only_event().await?;
    assert_ne!(
        record["deleted"], true,
        "an attendee's delete only unlinks: {record}"
    );
    assert_eq!(record["links"][BOB]["removed"], true, "{record}");
    assert_eq!(env.mail.writes(), Default::default());

    // Alice (the organizer) deletes it: the meeting is deleted.
    env.mail.alice.delete(CAL, &env.mail.alice_id)?;
    env.sync_in(&[ALICE]).await?;
    let (_, record) = env.only_event().await?;
    assert_eq!(
        record["deleted"], true,
        "the organizer's delete tombstones: {record}"
    );
    Ok(())
}

/// Waits until `check` holds (15 s).
async fn until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await? {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The document as it stands, without what differs between two runs of one scenario (link ids
/// and the UID are the fakes' own).
fn outcome(record: &Value) -> Value {
    let mut v = record.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("ical_uid");
    }
    if let Some(links) = v.get_mut("links").and_then(Value::as_object_mut) {
        for link in links.values_mut() {
            if let Some(l) = link.as_object_mut() {
                l.remove("id");
            }
        }
    }
    v
}

/// The organizer renames the meeting and the invitation updates reach Bob and Carol; the
/// mailboxes' webhooks are duplicated, reordered or lost (`lossy`) or not used at all. Returns
/// the final document and conflicts.
async fn rename_with_webhooks(lossy: bool) -> anyhow::Result<(Value, Vec<Value>)> {
    let mut env = Env::start(lossy).await?;
    env.mail.invite()?;
    env.sync_in(&[CAROL, BOB, ALICE]).await?;
    let (doc, _) = env.one_meeting().await?;
    // A round after the first one opens the channels and subscriptions.
    env.sync_all().await?;
    let subscription = if lossy {
        until("Google channels", || async {
            Ok(env.mail.alice.open_channels(CAL).len() == 1
                && env.mail.carol.open_channels(CAL).len() == 1)
        })
        .await?;
        let subs = env.mail.bob.subscriptions();
        let [sub] = subs.as_slice() else {
            bail!("expected one Graph subscription, got {subs:?}");
        };
        Some(sub["id"].as_str().context("subscription id")?.to_owned())
    } else {
        None
    };
    env.mail.clear_logs();
    if lossy {
        env.mail.alice.duplicate_notifications(true);
        env.mail.carol.drop_notifications(10);
    }

    // Alice renames and moves the room; Google and Exchange update the invitations.
    env.mail.alice.patch(
        CAL,
        &env.mail.alice_id,
        json!({"summary": "Planning, new room", "location": "Room 9"}),
    )?;
    env.mail.carol.patch(
        CAL,
        &env.mail.carol_id,
        json!({"summary": "Planning, new room", "location": "Room 9"}),
    )?;
    env.mail
        .bob
        .patch_event(
            &env.mail.bob_id,
            json!({"subject": "Planning, new room", "location": {"displayName": "Room 9"}}),
        )
        .context("Bob's update")?;
    if let Some(sub) = &subscription {
        // Graph: the same notification three times, and one about an older change after it.
        let occurrence = env.mail.bob.occurrence_id(&env.mail.bob_id, &key(day(28)));
        for _ in 0..3 {
            let (status, _) = env
                .mail
                .bob
                .notify(&[(sub.as_str(), "updated", env.mail.bob_id.as_str())])
                .await?;
            assert_eq!(status, 202);
        }
        let (status, _) = env
            .mail
            .bob
            .notify(&[(sub.as_str(), "created", occurrence.as_str())])
            .await?;
        assert_eq!(status, 202);
        // Alice's duplicated notifications alone bring the rename into the document.
        until("the webhook-driven rename", || async {
            let (_, record) = env.only_event().await?;
            Ok(record["title"] == "Planning, new room")
        })
        .await?;
        // Carol's were lost: polling (here: the next round) is what brings her copy.
    }
    env.sync_all().await?;
    env.sync_all().await?;
    let (after, record) = env.one_meeting().await?;
    assert_eq!(after, doc);
    assert_eq!(record["title"], "Planning, new room", "{record}");
    assert_eq!(record["location"], "Room 9", "{record}");
    let (alice_w, bob_w, carol_w) = env.mail.writes();
    assert!(
        alice_w.is_empty() && bob_w.is_empty() && carol_w.is_empty(),
        "the invitation updates write nothing back: {alice_w:?} {bob_w:?} {carol_w:?}"
    );
    let conflicts = env.api.conflicts(&doc).await?;
    Ok((outcome(&record), conflicts))
}

#[tokio::test]
async fn duplicated_reordered_and_lost_webhooks_change_nothing_in_the_outcome() -> anyhow::Result<()>
{
    let (polled, polled_conflicts) = rename_with_webhooks(false).await?;
    let (hooked, hooked_conflicts) = rename_with_webhooks(true).await?;
    assert_eq!(hooked, polled);
    assert_eq!(hooked_conflicts, polled_conflicts);
    assert!(hooked_conflicts.is_empty(), "{hooked_conflicts:?}");
    Ok(())
}

#[tokio::test]
async fn a_meeting_an_app_creates_takes_in_the_invitations_of_the_other_mailboxes()
-> anyhow::Result<()> {
    let mut env = Env::start(false).await?;
    // The app creates the meeting in Alice's calendar.
    let mut app =
        driftless_tests::rust_client::RustClient::connect(&env.server.url(), "planner").await?;
    let attendee = |name: &str, response: &str| driftless_crdt_model::Attendee {
        name: Some(name.into()),
        response: Some(response.into()),
        ..Default::default()
    };
    let event = driftless_crdt_model::CalendarEvent {
        title: Some("Kick-off".into()),
        start: Some(format!("{}T09:00:00Z", day(5))),
        end: Some(format!("{}T10:00:00Z", day(5))),
        attendees: [
            (BOB_MAIL.to_owned(), attendee("Bob", "needs_action")),
            (CAROL_MAIL.to_owned(), attendee("Carol", "needs_action")),
        ]
        .into(),
        links: [(ALICE.to_owned(), driftless_crdt_model::Link::default())].into(),
        ..Default::default()
    };
    let mut doc = automerge::AutoCommit::new();
    driftless_crdt_model::create_event(&mut doc, &event)?;
    let doc_id = driftless_tests::dav_bridge::app_add(&mut app, doc).await?;
    env.sync_in(&[ALICE]).await?;
    let alice_id = driftless_bridges::google::translate::event_id_for_document(doc_id.as_bytes());
    let created = env
        .mail
        .alice
        .event(CAL, &alice_id)
        .context("created in Alice's calendar")?;
    let uid = created["iCalUID"].as_str().context("iCalUID")?.to_owned();

    // Google and Exchange deliver the invitations.
    let carol = env.mail.carol.insert(
        CAL,
        json!({"iCalUID": uid, "summary": "Kick-off",
               "start": google_time(day(5), 9), "end": google_time(day(5), 10),
               "organizer": {"email": "owner@example.org"},
               "attendees": [{"email": BOB_MAIL, "responseStatus": "needsAction"},
                             {"email": CAROL_MAIL, "self": true, "responseStatus": "needsAction"}]}),
    )?;
    let bob = env.mail.bob.put_event(json!({
        "subject": "Kick-off",
        "start": graph_time(day(5), 9), "end": graph_time(day(5), 10),
        "originalStartTimeZone": "UTC", "originalEndTimeZone": "UTC",
        "iCalUId": global_object_id(&uid),
        "isOrganizer": false,
        "responseStatus": {"response": "none"},
        "organizer": {"emailAddress": {"address": "owner@example.org"}},
        "attendees": [{"type": "required", "status": {"response": "none"},
                       "emailAddress": {"address": BOB_MAIL}}],
    }));
    env.mail.clear_logs();
    env.sync_in(&[CAROL, BOB, ALICE]).await?;
    env.mail.alice_id = alice_id;
    env.mail.bob_id = bob;
    env.mail.carol_id = carol["id"].as_str().context("id")?.to_owned();
    let (one, record) = env.one_meeting().await?;
    assert_eq!(one, doc_id, "the invitations attach to the app's document");
    assert_eq!(record["title"], "Kick-off", "{record}");
    assert_eq!(env.mail.writes(), Default::default());
    Ok(())
}

#[tokio::test]
async fn documents_linked_before_the_index_are_indexed_at_start() -> anyhow::Result<()> {
    let mut env = Env::start(false).await?;
    env.mail.invite()?;
    // Alice's copy is imported (and its meeting claimed) while the other mailboxes wait.
    env.sync_in(&[ALICE]).await?;
    let (doc, _) = env.only_event().await?;

    // The store loses its meetings index (as one written before the index existed).
    env.server.stop().await?;
    {
        let storage = driftless_server::storage::Storage::open(env.server.data_dir())?;
        let txn = storage.database().begin_write()?;
        let wiped = txn.delete_table(redb::TableDefinition::<(&str, &str), &str>::new(
            "bridge_meetings",
        ))?;
        assert!(wiped, "the meetings index was not there to wipe");
        txn.commit()?;
    }
    env.server.restart().await?;
    env.server.wait_ready(Duration::from_secs(10)).await?;

    // Bob's and Carol's copies arrive: they attach to Alice's document.
    env.sync_in(&[BOB, CAROL]).await?;
    env.sync_all().await?;
    let (after, record) = env.one_meeting().await?;
    assert_eq!(after, doc);
    assert_organizers_meeting(&record);
    Ok(())
}
