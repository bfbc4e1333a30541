//! The recurrence engine against an independent reference, and the occurrences endpoint end to
//! end.
//!
//! The expected occurrences are computed at test time by `tests/py/recurrence_reference.py` with
//! python-dateutil's rrule/rruleset and the standard library's zoneinfo (a pinned venv under
//! `target/test-venv`), from the same canonical event JSON the Rust engine reads. The two share
//! no code, only the semantics documented in docs/record-model.md ("Recurrence").

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use automerge::AutoCommit;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use driftless_client_protocol::DocumentId;
use driftless_crdt_model::recurrence::{ExpandOptions, expand};
use driftless_crdt_model::{CalendarEvent, Contact, create_contact, create_event};
use driftless_server::occurrences::occurrence_json;
use driftless_tests::TestServer;
use driftless_tests::radicale::ensure_pip_venv;
use driftless_tests::rust_client::RustClient;
use serde_json::{Value, json};

const DATEUTIL: (&str, &str) = ("python-dateutil", "2.9.0.post0");
/// zoneinfo reads the system's tz database first; this one is used where there is none.
const TZDATA: &str = "tzdata==2025.2";

struct Case {
    name: &'static str,
    event: Value,
    from: &'static str,
    to: &'static str,
    tz: &'static str,
}

fn case(
    name: &'static str,
    event: Value,
    from: &'static str,
    to: &'static str,
    tz: &'static str,
) -> Case {
    Case {
        name,
        event,
        from,
        to,
        tz,
    }
}

fn event(title: &str, start: &str, end: Option<&str>, rules: &[&str]) -> Value {
    let mut e = json!({"type": "calendar_event", "schema": 1, "title": title, "start": start});
    if let Some(end) = end {
        e["end"] = json!(end);
    }
    if !rules.is_empty() {
        let rules: BTreeMap<String, &str> = rules
            .iter()
            .enumerate()
            .map(|(i, r)| (i.to_string(), *r))
            .collect();
        e["recurrence"] = json!({"rules": rules, "exdates": {}, "rdates": {}});
    }
    e
}

fn with(mut e: Value, path: &[&str], value: Value) -> Value {
    let mut at = &mut e;
    for key in &path[..path.len() - 1] {
        if at.get(*key).is_none() {
            at[*key] = json!({});
        }
        at = &mut at[*key];
    }
    at[path[path.len() - 1]] = value;
    e
}

/// The table: DST transitions, "third Thursday", "last weekday", all-day, COUNT/UNTIL, EXDATE,
/// RDATE, several rules, moved (into and out of the window) and cancelled instances.
fn cases() -> Vec<Case> {
    let berlin_weekly = event(
        "Berlin Mon/Thu",
        "2026-03-02T10:00:00+01:00[Europe/Berlin]",
        Some("2026-03-02T11:00:00+01:00[Europe/Berlin]"),
        &["RRULE:FREQ=WEEKLY;BYDAY=MO,TH"],
    );
    let new_york = event(
        "NY Mondays",
        "2026-10-05T09:00:00-04:00[America/New_York]",
        Some("2026-10-05T09:30:00-04:00[America/New_York]"),
        &["RRULE:FREQ=WEEKLY;BYDAY=MO;UNTIL=20261130T235959Z"],
    );
    let standup = event(
        "Standup",
        "2026-11-02T10:00:00+01:00[Europe/Berlin]",
        Some("2026-11-02T11:00:00+01:00[Europe/Berlin]"),
        &["RRULE:FREQ=WEEKLY;BYDAY=MO"],
    );
    let standup = with(
        standup,
        &["overrides"],
        json!({
            // Moved into the window from before it.
            "20261109T090000Z": {"start": "2026-12-10T15:00:00+01:00[Europe/Berlin]",
                                 "end": "2026-12-10T16:00:00+01:00[Europe/Berlin]",
                                 "title": "Standup (moved in)"},
            // Moved out of the window (only the start: the series' hour long).
            "20261214T090000Z": {"start": "2027-01-12T10:00:00+01:00[Europe/Berlin]"},
            "20261221T090000Z": {"cancelled": true},
            "20261228T090000Z": {"title": "Year-end standup", "status": "tentative"},
            // Moved into the window from after it.
            "20270104T090000Z": {"start": "2026-12-30T10:00:00+01:00[Europe/Berlin]",
                                 "end": "2026-12-30T10:30:00+01:00[Europe/Berlin]"},
            // Stale: no instance starts then (a Tuesday), so it is ignored.
            "20261208T090000Z": {"start": "2026-12-15T10:00:00+01:00[Europe/Berlin]"}
        }),
    );
    let exdates_rdates = with(
        with(
            event(
                "Exdates and rdates",
                "2026-05-04T08:00:00+02:00[Europe/Berlin]",
                Some("2026-05-04T08:45:00+02:00[Europe/Berlin]"),
                &["RRULE:FREQ=DAILY;COUNT=10"],
            ),
            &["recurrence", "exdates"],
            json!({
                "20260506T060000Z": "2026-05-06T08:00:00+02:00[Europe/Berlin]",
                "20260509T060000Z": "2026-05-09T06:00:00Z"
            }),
        ),
        &["recurrence", "rdates"],
        json!({
            "20260520T120000Z": "2026-05-20T14:00:00+02:00[Europe/Berlin]",
            "20260601T060000Z": "2026-06-01T06:00:00Z"
        }),
    );
    let birthday = with(
        event(
            "Birthday",
            "2020-05-17",
            Some("2020-05-18"),
            &["RRULE:FREQ=YEARLY"],
        ),
        &["overrides"],
        json!({
            "20260517": {"start": "2026-05-16", "end": "2026-05-17", "title": "Birthday (early)"},
            "20270517": {"cancelled": true}
        }),
    );
    vec![
        case(
            "dst_berlin_spring_weekly",
            berlin_weekly.clone(),
            "2026-03-15T00:00:00Z",
            "2026-04-10T00:00:00Z",
            "Europe/Berlin",
        ),
        case(
            "dst_berlin_autumn_weekly_in_new_york",
            berlin_weekly,
            "2026-10-15T00:00:00Z",
            "2026-11-10T00:00:00Z",
            "America/New_York",
        ),
        case(
            "dst_berlin_spring_gap_daily_0230",
            event(
                "Night job",
                "2026-03-26T02:30:00+01:00[Europe/Berlin]",
                Some("2026-03-26T03:00:00+01:00[Europe/Berlin]"),
                &["RRULE:FREQ=DAILY;COUNT=6"],
            ),
            "2026-03-01T00:00:00Z",
            "2026-04-30T00:00:00Z",
            "Europe/Berlin",
        ),
        case(
            "dst_berlin_autumn_ambiguous_daily_0230",
            event(
                "Night job",
                "2026-10-22T02:30:00+02:00[Europe/Berlin]",
                Some("2026-10-22T02:45:00+02:00[Europe/Berlin]"),
                &["RRULE:FREQ=DAILY;UNTIL=20261027T000000Z"],
            ),
            "2026-10-01T00:00:00Z",
            "2026-11-01T00:00:00Z",
            "UTC",
        ),
        case(
            "dst_new_york_until",
            new_york.clone(),
            "2026-10-15T00:00:00Z",
            "2026-12-31T00:00:00Z",
            "America/New_York",
        ),
        case(
            "dst_new_york_seen_from_berlin",
            new_york,
            "2026-10-15T00:00:00Z",
            "2026-12-31T00:00:00Z",
            "Europe/Berlin",
        ),
        case(
            "third_thursday",
            event(
                "Budget review",
                "2026-01-15T18:30:00+01:00[Europe/Berlin]",
                Some("2026-01-15T20:00:00+01:00[Europe/Berlin]"),
                &["RRULE:FREQ=MONTHLY;BYDAY=3TH"],
            ),
            "2026-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
            "Europe/Berlin",
        ),
        case(
            "last_weekday",
            event(
                "Payroll",
                "2026-01-30T17:00:00-05:00[America/New_York]",
                Some("2026-01-30T17:15:00-05:00[America/New_York]"),
                &["RRULE:FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1"],
            ),
            "2026-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
            "America/New_York",
        ),
        case(
            "fourth_thursday_of_november_yearly",
            event(
                "Thanksgiving",
                "2026-11-26",
                Some("2026-11-27"),
                &["RRULE:FREQ=YEARLY;BYMONTH=11;BYDAY=4TH"],
            ),
            "2027-01-01T00:00:00Z",
            "2027-12-31T00:00:00Z",
            "America/Chicago",
        ),
        case(
            "day_31_skips_short_months",
            event(
                "Month end",
                "2026-01-31T16:00:00-05:00[America/New_York]",
                None,
                &["RRULE:FREQ=MONTHLY;BYMONTHDAY=31;COUNT=5"],
            ),
            "2026-01-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
            "America/New_York",
        ),
        case(
            "all_day_yearly_leap_day",
            event(
                "Leap day",
                "2024-02-29",
                Some("2024-03-01"),
                &["RRULE:FREQ=YEARLY;COUNT=5"],
            ),
            "2027-06-01T00:00:00Z",
            "2028-06-01T00:00:00Z",
            "America/Los_Angeles",
        ),
        case(
            "all_day_multi_day_yearly_overlapping_the_window",
            event(
                "Holidays",
                "2025-12-24",
                Some("2025-12-27"),
                &["RRULE:FREQ=YEARLY;UNTIL=20281224"],
            ),
            "2026-12-25T12:00:00Z",
            "2027-12-25T00:00:00Z",
            "Asia/Tokyo",
        ),
        case(
            "all_day_moved_and_cancelled",
            birthday,
            "2026-01-01T00:00:00Z",
            "2027-12-31T00:00:00Z",
            "Europe/Berlin",
        ),
        case(
            "count_exdate_rdate",
            exdates_rdates,
            "2026-05-01T00:00:00Z",
            "2026-07-01T00:00:00Z",
            "Europe/Berlin",
        ),
        case(
            "until_equal_to_an_instance_is_inclusive",
            event(
                "Until",
                "2026-11-02T10:00:00+01:00[Europe/Berlin]",
                None,
                &["RRULE:FREQ=WEEKLY;UNTIL=20261214T090000Z"],
            ),
            "2026-11-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
            "UTC",
        ),
        case(
            "two_rules",
            event(
                "Two rules",
                "2026-02-02T12:00:00+01:00[Europe/Berlin]",
                Some("2026-02-02T13:00:00+01:00[Europe/Berlin]"),
                &[
                    "RRULE:FREQ=MONTHLY;BYDAY=1MO",
                    "RRULE:FREQ=MONTHLY;BYDAY=-1WE",
                ],
            ),
            "2026-02-01T00:00:00Z",
            "2026-07-01T00:00:00Z",
            "Europe/Berlin",
        ),
        case(
            "overrides_moved_in_moved_out_cancelled_changed",
            standup,
            "2026-12-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
            "Europe/Berlin",
        ),
        case(
            "floating_keeps_wall_time_in_the_viewer_zone",
            event(
                "Gym",
                "2026-03-26T07:00:00",
                Some("2026-03-26T08:00:00"),
                &["RRULE:FREQ=DAILY;COUNT=5"],
            ),
            "2026-03-20T00:00:00Z",
            "2026-04-20T00:00:00Z",
            "Europe/Berlin",
        ),
        case(
            "utc_start_shifts_in_the_viewer_zone",
            event(
                "UTC sync",
                "2026-03-26T09:00:00Z",
                Some("2026-03-26T09:30:00Z"),
                &["RRULE:FREQ=DAILY;INTERVAL=2;COUNT=4"],
            ),
            "2026-03-20T00:00:00Z",
            "2026-04-20T00:00:00Z",
            "Europe/Berlin",
        ),
        case(
            "dtstart_off_the_rule_is_an_instance",
            event(
                "Off rule",
                "2026-06-03T09:00:00+02:00[Europe/Berlin]",
                Some("2026-06-03T10:00:00+02:00[Europe/Berlin]"),
                &["RRULE:FREQ=WEEKLY;BYDAY=FR;COUNT=3"],
            ),
            "2026-06-01T00:00:00Z",
            "2026-07-01T00:00:00Z",
            "Europe/Berlin",
        ),
        case(
            "single_event_overlapping_the_window_start",
            event(
                "Overnight",
                "2026-06-30T22:00:00+02:00[Europe/Berlin]",
                Some("2026-07-01T06:00:00+02:00[Europe/Berlin]"),
                &[],
            ),
            "2026-07-01T00:00:00Z",
            "2026-07-02T00:00:00Z",
            "Europe/Berlin",
        ),
        case(
            "no_end_is_an_instant",
            event(
                "Reminder",
                "2026-07-01T00:00:00Z",
                None,
                &["RRULE:FREQ=DAILY;COUNT=3"],
            ),
            "2026-07-01T00:00:00Z",
            "2026-07-03T00:00:00Z",
            "UTC",
        ),
    ]
}

/// Runs the Python reference over every case.
fn reference(cases: &[Case]) -> anyhow::Result<Value> {
    let venv = ensure_pip_venv(DATEUTIL.0, DATEUTIL.1, &[TZDATA])?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/recurrence_reference.py");
    let input = json!({"cases": cases.iter().map(|c| json!({
        "name": c.name, "event": c.event, "from": c.from, "to": c.to, "tz": c.tz
    })).collect::<Vec<_>>()});
    let mut child = Command::new(venv.join("bin").join("python"))
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", script.display()))?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().context("python stdin")?;
        stdin.write_all(input.to_string().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "reference script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("reference output is not JSON")
}

fn instant(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("window bound")
        .with_timezone(&Utc)
}

/// The engine's occurrences of one case in the reference's shape.
fn engine(c: &Case) -> anyhow::Result<Value> {
    let event: CalendarEvent = serde_json::from_value(c.event.clone())?;
    let zone: Tz = c.tz.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let options = ExpandOptions {
        zone,
        ..ExpandOptions::default()
    };
    let expansion = expand(&event, instant(c.from), instant(c.to), &options)
        .with_context(|| format!("case {}", c.name))?;
    assert!(!expansion.truncated, "{}", c.name);
    Ok(Value::Array(
        expansion
            .occurrences
            .iter()
            .map(|o| {
                let mut v = occurrence_json("", o, zone);
                v.as_object_mut().map(|m| m.remove("url"));
                v
            })
            .collect(),
    ))
}

#[test]
fn expansion_matches_python_dateutil() -> anyhow::Result<()> {
    let cases = cases();
    let expected = reference(&cases)?;
    let mut failures = Vec::new();
    for c in &cases {
        let want = &expected[c.name];
        let got = engine(c)?;
        // Every case must list something, or it would test nothing.
        assert!(
            want.as_array().is_some_and(|a| !a.is_empty()),
            "{}: the reference lists nothing",
            c.name
        );
        if &got != want {
            failures.push(format!(
                "case {}:\n  engine:    {}\n  reference: {}",
                c.name,
                serde_json::to_string_pretty(&got)?,
                serde_json::to_string_pretty(want)?
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Spot checks, so a shared misunderstanding of the table would still show.
    let starts = |name: &str| -> Vec<String> {
        expected[name]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| o["start"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let spring = starts("dst_berlin_spring_weekly");
    assert!(spring.contains(&"2026-03-26T10:00:00+01:00".to_owned()));
    assert!(spring.contains(&"2026-03-30T10:00:00+02:00".to_owned()));
    let gap = starts("dst_berlin_spring_gap_daily_0230");
    assert!(
        gap.contains(&"2026-03-29T03:30:00+02:00".to_owned()),
        "{gap:?}"
    );
    assert!(starts("third_thursday").contains(&"2026-03-19T18:30:00+01:00".to_owned()));
    assert!(starts("last_weekday").contains(&"2026-05-29T17:00:00-04:00".to_owned()));
    assert!(starts("last_weekday").contains(&"2026-10-30T17:00:00-04:00".to_owned()));
    assert_eq!(
        starts("fourth_thursday_of_november_yearly"),
        vec!["2027-11-25".to_owned()]
    );
    assert_eq!(
        starts("all_day_yearly_leap_day"),
        vec!["2028-02-29".to_owned()]
    );
    assert_eq!(
        starts("overrides_moved_in_moved_out_cancelled_changed"),
        [
            "2026-12-07T10:00:00+01:00",
            "2026-12-10T15:00:00+01:00",
            "2026-12-28T10:00:00+01:00",
            "2026-12-30T10:00:00+01:00"
        ]
    );
    Ok(())
}

#[test]
fn bad_data_is_an_error_naming_the_field() {
    let window = (
        instant("2026-01-01T00:00:00Z"),
        instant("2026-02-01T00:00:00Z"),
    );
    let check = |e: Value, field: &str| {
        let event: CalendarEvent = serde_json::from_value(e).expect("event JSON");
        let err = expand(&event, window.0, window.1, &ExpandOptions::default())
            .expect_err("bad data must not expand");
        assert_eq!(err.field, field, "{err}");
    };
    check(
        event("x", "2026-01-05T10:00:00[Mars/Olympus]", None, &[]),
        "start",
    );
    check(
        event("x", "2026-01-05T10:00:00Z", None, &["RRULE:FREQ=SOMETIMES"]),
        "recurrence.rules.0",
    );
    check(
        event("x", "2026-01-05T10:00:00Z", None, &["VEVENT:nonsense"]),
        "recurrence.rules.0",
    );
    check(
        with(
            event("x", "2026-01-05", None, &["RRULE:FREQ=DAILY"]),
            &["recurrence", "exdates"],
            json!({"20260106T100000Z": "2026-01-06T10:00:00Z"}),
        ),
        "recurrence.exdates.20260106T100000Z",
    );
    check(
        event(
            "x",
            "2026-01-05T10:00:00Z",
            Some("2026-01-05T09:00:00Z"),
            &[],
        ),
        "end",
    );
}

#[test]
fn runaway_rules_are_cut_and_say_so() {
    let event: CalendarEvent = serde_json::from_value(event(
        "Every second",
        "2026-01-01T00:00:00Z",
        None,
        &["RRULE:FREQ=SECONDLY"],
    ))
    .expect("event JSON");
    let options = ExpandOptions::default();
    // Far from the start: the generation cap stops it.
    let far = expand(
        &event,
        instant("2026-06-01T00:00:00Z"),
        instant("2026-06-02T00:00:00Z"),
        &options,
    )
    .expect("expands");
    assert!(far.truncated);
    assert!(far.occurrences.is_empty());
    // Near the start: the per-window cap stops it.
    let near = expand(
        &event,
        instant("2026-01-01T00:00:00Z"),
        instant("2026-01-02T00:00:00Z"),
        &options,
    )
    .expect("expands");
    assert!(near.truncated);
    assert_eq!(near.occurrences.len(), options.max_occurrences);
}

async fn get(http: &reqwest::Client, url: String) -> anyhow::Result<(u16, Value)> {
    let resp = http.get(url).send().await?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await?;
    Ok((status, serde_json::from_slice(&body)?))
}

/// Documents created by a client, expanded by the server, equal the reference's table.
#[tokio::test]
async fn occurrences_endpoint_lists_the_workspace_events() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    server.wait_ready(Duration::from_secs(10)).await?;
    let mut app = RustClient::connect(&server.url(), "calendar-app").await?;

    let all = cases();
    let picked: Vec<&Case> = all
        .iter()
        .filter(|c| {
            [
                "overrides_moved_in_moved_out_cancelled_changed",
                "third_thursday",
                "all_day_moved_and_cancelled",
            ]
            .contains(&c.name)
        })
        .collect();
    let mut ids = Vec::new();
    let mut add = |app: &mut RustClient, event: CalendarEvent| -> anyhow::Result<DocumentId> {
        let mut doc = AutoCommit::new();
        create_event(&mut doc, &event)?;
        doc.commit();
        let id = DocumentId::from_bytes(&rand::random::<[u8; 16]>());
        app.add(id.clone(), doc);
        ids.push(id.clone());
        Ok(id)
    };
    let mut urls = BTreeMap::new();
    for c in &picked {
        let id = add(&mut app, serde_json::from_value(c.event.clone())?)?;
        urls.insert(c.name, format!("automerge:{id}"));
    }
    // A deleted event, a broken one and a contact are not listed.
    let mut deleted: CalendarEvent = serde_json::from_value(picked[0].event.clone())?;
    deleted.deleted = true;
    add(&mut app, deleted)?;
    let broken: CalendarEvent = serde_json::from_value(event(
        "Broken",
        "2026-12-01T10:00:00Z",
        None,
        &["RRULE:FREQ=FORTNIGHTLY"],
    ))?;
    let broken_id = add(&mut app, broken)?;
    let mut contact_doc = AutoCommit::new();
    create_contact(&mut contact_doc, &Contact::default())?;
    contact_doc.commit();
    let contact_id = DocumentId::from_bytes(&rand::random::<[u8; 16]>());
    app.add(contact_id.clone(), contact_doc);
    ids.push(contact_id);
    for _ in 0..100 {
        app.sync_until_quiet(Duration::from_millis(100)).await?;
        if ids.iter().all(|id| app.acknowledged(id)) {
            break;
        }
    }
    assert!(
        ids.iter().all(|id| app.acknowledged(id)),
        "documents stored"
    );

    let (from, to, tz) = (
        "2026-12-01T00:00:00Z",
        "2027-01-01T00:00:00Z",
        "Europe/Berlin",
    );
    let http = reqwest::Client::new();
    let (status, body) = get(
        &http,
        format!(
            "{}/v1/calendar/occurrences?from={from}&to={to}&tz={tz}",
            server.http_url()
        ),
    )
    .await?;
    assert_eq!(status, 200, "{body}");

    // The reference for the same events and window, merged and sorted like the endpoint.
    let window_cases: Vec<Case> = picked
        .iter()
        .map(|c| case(c.name, c.event.clone(), from, to, tz))
        .collect();
    let expected = reference(&window_cases)?;
    let mut want: Vec<Value> = Vec::new();
    for c in &window_cases {
        for o in expected[c.name].as_array().into_iter().flatten() {
            let mut o = o.clone();
            o["url"] = json!(urls[c.name]);
            want.push(o);
        }
    }
    let got = body["occurrences"].as_array().cloned().unwrap_or_default();
    let sort_key = |o: &Value| {
        let start = o["start"].as_str().unwrap_or_default();
        let at = if start.len() == 10 {
            // All-day: midnight in Berlin.
            let tz: Tz = tz.parse().expect("zone");
            let date = chrono::NaiveDate::parse_from_str(start, "%Y-%m-%d").expect("date");
            chrono::TimeZone::from_local_datetime(&tz, &date.and_time(chrono::NaiveTime::MIN))
                .earliest()
                .expect("midnight")
                .with_timezone(&Utc)
        } else {
            instant(start)
        };
        (
            at,
            o["original_start"].as_str().unwrap_or_default().to_owned(),
        )
    };
    want.sort_by_key(sort_key);
    assert!(want.len() >= 5, "{want:?}");
    assert_eq!(got, want, "endpoint vs reference");
    let keys: Vec<_> = got.iter().map(sort_key).collect();
    assert!(keys.windows(2).all(|w| w[0] <= w[1]), "sorted by start");

    let warnings = body["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0]["url"], json!(format!("automerge:{broken_id}")));
    assert_eq!(warnings[0]["code"], json!("invalid_event"));
    assert!(
        warnings[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("recurrence.rules.0")),
        "{warnings:?}"
    );

    // Default zone is UTC; all-day values stay dates.
    let (status, body) = get(
        &http,
        format!(
            "{}/v1/calendar/occurrences?from=2026-12-01T00:00:00%2B01:00&to=2026-12-08T00:00:00Z",
            server.http_url()
        ),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["occurrences"][0]["start"],
        json!("2026-12-07T09:00:00Z"),
        "{body}"
    );

    // Bad queries: 400 with the contracts' error JSON.
    for (query, code) in [
        ("to=2027-01-01T00:00:00Z", "invalid_from"),
        ("from=2026-12-01T00:00:00Z", "invalid_to"),
        ("from=yesterday&to=2027-01-01T00:00:00Z", "invalid_from"),
        (
            "from=2026-12-01T00:00:00Z&to=2027-01-01T00:00:00Z&tz=Europe/Atlantis",
            "invalid_tz",
        ),
        (
            "from=2026-01-01T00:00:00Z&to=2027-06-01T00:00:00Z",
            "window_too_long",
        ),
        (
            "from=2027-01-01T00:00:00Z&to=2026-12-01T00:00:00Z",
            "invalid_window",
        ),
    ] {
        let (status, body) = get(
            &http,
            format!("{}/v1/calendar/occurrences?{query}", server.http_url()),
        )
        .await?;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], json!(code), "{query}: {body}");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    Ok(())
}

/// With `[auth]`, the endpoint wants a bearer token like every `/v1` route.
#[tokio::test]
async fn occurrences_endpoint_needs_a_token_when_auth_is_on() -> anyhow::Result<()> {
    use driftless_server::auth::{ClaimRole, Claims, Keys, Secret, unix_now};
    use driftless_server::config::AuthConfig;
    const SECRET: &str = "occurrences-test-secret-0123456789abcdef";
    let server = TestServer::start_with_config(|c| {
        c.auth = Some(AuthConfig::with_secret(SECRET.as_bytes().to_vec()));
    })
    .await?;
    let http = reqwest::Client::new();
    // Not `wait_ready`: its WebSocket probe has no token.
    let healthz = format!("{}/healthz", server.http_url());
    for _ in 0..100 {
        if http.get(&healthz).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!(
        "{}/v1/calendar/occurrences?from=2026-12-01T00:00:00Z&to=2027-01-01T00:00:00Z",
        server.http_url()
    );
    let (status, body) = get(&http, url.clone()).await?;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    let token = Keys {
        current: Secret::new(SECRET.as_bytes().to_vec()),
        previous: None,
    }
    .sign(&Claims {
        sub: "calendar-app".into(),
        ws: "acme".into(),
        role: ClaimRole::Read,
        exp: unix_now() + 3600,
        docs: None,
        tkt: None,
    });
    let resp = http.get(url).bearer_auth(token).send().await?;
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = serde_json::from_slice(&resp.bytes().await?)?;
    assert_eq!(body["occurrences"], json!([]), "{body}");
    Ok(())
}
