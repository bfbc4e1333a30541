//! `burst_provider`: the fake Google Calendar (`fakes::google`) as a process, for benchmark S5
//! (`driftless bench --scenario s5`, which spawns it). It holds `--records` events in calendar
//! `primary` and, on command, changes them as fast as the bridge takes the changes, and reports
//! which changes the bridge has acknowledged.
//!
//! Acknowledged: the bridge stores its sync token only after every document of the listing that
//! produced it is durable, and presents it in its next `events.list`. So a change is acknowledged
//! once the bridge has asked for "changes since" a token issued at or after the change's
//! change-log position. The fake sees that on the wire, as Google would; nothing is asked of the
//! server.
//!
//! Protocol: one JSON line on stdout when ready (the API base, token URL and OAuth credentials);
//! then one command per line on stdin, each answered by one JSON line on stdout:
//! - `burst N WINDOW`: start changing `N` events (round robin over the records, the `summary`
//!   becomes `burst <record> v<version>`), never more than `WINDOW` unacknowledged at once (with
//!   `WINDOW` at most the record count, no two unacknowledged changes touch the same event, so
//!   none is folded into another). Answers `{"started": N}`.
//! - `status`: `{"written", "acked", "ack_seq", "listings"}` (changes written and acknowledged
//!   since start, initial creates included).
//! - `acked`: like `status`, plus `"versions"`: per event id, the highest acknowledged version.
//!
//! Must not: depend on the server's internals; everything it knows comes from HTTP requests.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use driftless_tests::fakes::google::GoogleFake;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};

const CALENDAR: &str = "primary";

/// One change the fake made: its change-log position, the event and the version it wrote.
struct Change {
    seq: u64,
    event: String,
    version: u64,
}

#[derive(Default)]
struct Ledger {
    /// Every change in the order made (so by `seq`).
    changes: Vec<Change>,
    /// How many of `changes` are acknowledged (a prefix, since tokens cover a prefix of the log).
    acked: usize,
    ack_seq: u64,
    /// Incremental listings seen (`events.list` with a `syncToken`, first page).
    listings: u64,
    /// Per event, the highest acknowledged version.
    versions: BTreeMap<String, u64>,
    /// Per record (index), the version it holds now.
    current: Vec<u64>,
    /// The record the next change goes to (round robin).
    next_record: usize,
}

impl Ledger {
    fn acknowledge(&mut self, seq: u64) {
        if seq <= self.ack_seq {
            return;
        }
        self.ack_seq = seq;
        while let Some(c) = self.changes.get(self.acked) {
            if c.seq > seq {
                break;
            }
            let v = self.versions.entry(c.event.clone()).or_default();
            *v = (*v).max(c.version);
            self.acked += 1;
        }
    }

    fn status(&self) -> Value {
        json!({
            "written": self.changes.len(),
            "acked": self.acked,
            "ack_seq": self.ack_seq,
            "listings": self.listings,
        })
    }
}

fn event_body(record: usize, version: u64) -> Value {
    // Distinct days so events never look alike; the summary carries the version.
    let day = 1 + record % 28;
    let hour = 8 + record % 10;
    json!({
        "summary": format!("burst {record} v{version}"),
        "start": {"dateTime": format!("2026-12-{day:02}T{hour:02}:00:00+01:00"), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": format!("2026-12-{day:02}T{hour:02}:30:00+01:00"), "timeZone": "Europe/Berlin"},
    })
}

/// The token an incremental listing presents, if this request is the first page of one.
fn presented_token(query: &str) -> Option<String> {
    let mut token = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "pageToken" => return None,
            "syncToken" => token = Some(v.into_owned()),
            _ => {}
        }
    }
    token
}

fn print_line(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}")?;
    out.flush()?;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut records = 1000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--records" => {
                records = args
                    .next()
                    .context("--records needs a number")?
                    .parse()
                    .context("--records")?;
            }
            other => bail!("unknown argument {other:?} (usage: burst_provider [--records N])"),
        }
    }
    let fake = Arc::new(GoogleFake::start().await?);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut ids = Vec::with_capacity(records);
    for r in 0..records {
        let stored = fake.insert(CALENDAR, event_body(r, 0))?;
        let id = stored["id"]
            .as_str()
            .context("the fake's insert answered without an id")?
            .to_owned();
        let seq = fake
            .event_seq(CALENDAR, &id)
            .context("inserted event is missing")?;
        lock(&ledger).changes.push(Change {
            seq,
            event: id.clone(),
            version: 0,
        });
        ids.push(id);
        lock(&ledger).current.push(0);
    }
    let ids = Arc::new(ids);

    // Watches the bridge's requests for presented sync tokens.
    {
        let fake = fake.clone();
        let ledger = ledger.clone();
        tokio::spawn(async move {
            loop {
                for request in fake.take_log() {
                    if request.method != "GET" || !request.path.ends_with("/events") {
                        continue;
                    }
                    if let Some(token) = presented_token(&request.query) {
                        let seq = fake.sync_token_seq(&token);
                        let mut l = lock(&ledger);
                        l.listings += 1;
                        if let Some(seq) = seq {
                            l.acknowledge(seq);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
    }

    let (client_id, client_secret, refresh_token) = fake.credentials();
    print_line(&json!({
        "ready": true,
        "api_base": fake.api_base(),
        "token_url": fake.token_url(),
        "calendar_id": CALENDAR,
        "client_id": client_id,
        "client_secret": client_secret,
        "refresh_token": refresh_token,
        "records": records,
    }))?;

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["burst", n, window] => {
                let n: usize = n.parse().context("burst N")?;
                let window: usize = window.parse().context("burst WINDOW")?;
                let fake = fake.clone();
                let ledger = ledger.clone();
                let ids = ids.clone();
                tokio::spawn(async move {
                    if let Err(e) = burst(&fake, &ledger, &ids, n, window).await {
                        eprintln!("burst_provider: burst failed: {e:#}");
                    }
                });
                print_line(&json!({"started": n}))?;
            }
            ["status"] => {
                let status = lock(&ledger).status();
                print_line(&status)?;
            }
            ["acked"] => {
                let l = lock(&ledger);
                let mut v = l.status();
                v["versions"] = json!(l.versions);
                drop(l);
                print_line(&v)?;
            }
            _ => print_line(&json!({"error": format!("unknown command {line:?}")}))?,
        }
    }
    Ok(())
}

/// Makes `n` changes, round robin over the records (each change raises its record's version by
/// one), keeping at most `window` unacknowledged.
async fn burst(
    fake: &GoogleFake,
    ledger: &Mutex<Ledger>,
    ids: &[String],
    n: usize,
    window: usize,
) -> anyhow::Result<()> {
    if ids.is_empty() {
        bail!("no records to change");
    }
    let mut made = 0usize;
    while made < n {
        let (written, acked) = {
            let l = lock(ledger);
            (l.changes.len(), l.acked)
        };
        if written - acked >= window.max(1) {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let room = (window.max(1) - (written - acked)).min(n - made);
        for _ in 0..room {
            let (record, v) = {
                let mut l = lock(ledger);
                let record = l.next_record % ids.len();
                l.next_record = record + 1;
                l.current[record] += 1;
                (record, l.current[record])
            };
            let id = &ids[record];
            // A patch carries only the summary, as a user renaming the event would.
            let body = json!({"summary": format!("burst {record} v{v}")});
            fake.patch(CALENDAR, id, body)?;
            let seq = fake
                .event_seq(CALENDAR, id)
                .with_context(|| format!("event {id} is missing after a patch"))?;
            lock(ledger).changes.push(Change {
                seq,
                event: id.clone(),
                version: v,
            });
            made += 1;
        }
        tokio::task::yield_now().await;
    }
    Ok(())
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_page_of_an_incremental_listing_presents_a_token() {
        assert_eq!(
            presented_token("syncToken=CPjT%2Bab&maxResults=250").as_deref(),
            Some("CPjT+ab")
        );
        assert_eq!(presented_token("syncToken=x&pageToken=y"), None);
        assert_eq!(presented_token("maxResults=250"), None);
    }

    #[test]
    fn a_token_acknowledges_the_prefix_of_the_log_up_to_its_position() {
        let mut l = Ledger::default();
        for (seq, event, version) in [(1, "a", 0), (2, "b", 0), (3, "a", 1), (5, "b", 1)] {
            l.changes.push(Change {
                seq,
                event: event.into(),
                version,
            });
        }
        l.acknowledge(3);
        assert_eq!(l.acked, 3);
        assert_eq!(l.versions.get("a"), Some(&1));
        assert_eq!(l.versions.get("b"), Some(&0));
        l.acknowledge(2);
        assert_eq!(l.acked, 3, "an older token acknowledges nothing new");
        l.acknowledge(9);
        assert_eq!(l.acked, 4);
        assert_eq!(l.versions.get("b"), Some(&1));
    }
}
