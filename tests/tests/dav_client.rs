//! The DAV client against real servers: Radicale 3.9.0 (and Xandikos 0.4.10), installed into
//! `target/test-venv/` on first use.

use driftless_bridges::dav::client::{
    DavClient, DeleteOutcome, Precondition, PutOutcome, SyncOutcome,
};
use driftless_bridges::dav::wire::{Fetched, SyncPage};
use driftless_tests::radicale::{DavServer, DavServerKind};

const EVENT: &str = "BEGIN:VCALENDAR\r\n\
VERSION:2.0\r\n\
PRODID:-//driftless//tests//EN\r\n\
BEGIN:VEVENT\r\n\
UID:ev-1@driftless.test\r\n\
DTSTAMP:20260101T000000Z\r\n\
DTSTART;TZID=Europe/Berlin:20261119T100000\r\n\
DTEND;TZID=Europe/Berlin:20261119T110000\r\n\
SUMMARY:Planning\r\n\
LOCATION:Room 1\r\n\
X-CUSTOM;X-PARAM=keep:custom value\r\n\
END:VEVENT\r\n\
END:VCALENDAR\r\n";

const CONTACT: &str = "BEGIN:VCARD\r\n\
VERSION:3.0\r\n\
UID:c-1@driftless.test\r\n\
FN:Ada Lovelace\r\n\
N:Lovelace;Ada;;;\r\n\
EMAIL;TYPE=work:ada@example.com\r\n\
X-CUSTOM:keep me\r\n\
END:VCARD\r\n";

fn page(outcome: SyncOutcome) -> SyncPage {
    match outcome {
        SyncOutcome::Page(p) => p,
        SyncOutcome::TokenInvalid => panic!("unexpected TokenInvalid"),
    }
}

fn written(outcome: PutOutcome) -> Option<String> {
    match outcome {
        PutOutcome::Written { etag } => etag,
        PutOutcome::PreconditionFailed => panic!("unexpected 412"),
    }
}

/// Creates, conflicts, syncs incrementally, deletes and rejects a garbage token on one
/// collection; `edit` turns the body into an edited one.
async fn sync_lifecycle(
    server: &DavServer,
    client: &DavClient,
    name: &str,
    body: &str,
    edit: impl Fn(&str) -> String,
) -> anyhow::Result<()> {
    let kind = server.kind();
    // Create; a second create is refused.
    let etag = written(client.put(name, body, Precondition::IfNoneMatch).await?);
    assert!(etag.is_some(), "{kind:?} returned no ETag on PUT");
    assert_eq!(
        client.put(name, body, Precondition::IfNoneMatch).await?,
        PutOutcome::PreconditionFailed
    );

    // Initial sync lists it with its etag and a token.
    let first = page(client.sync_collection(None).await?);
    assert_eq!(first.changed.len(), 1, "{first:?}");
    assert!(first.changed[0].href.ends_with(name), "{first:?}");
    let listed_etag = first.changed[0].etag.clone();
    assert!(first.removed.is_empty());
    assert!(!first.sync_token.is_empty());
    assert!(!first.truncated);
    // GET agrees with the listed etag.
    let got = client.get(name).await?.expect("resource exists");
    assert_eq!(got.etag, listed_etag);

    // Quiet round: nothing changed, nothing listed.
    let quiet = page(client.sync_collection(Some(&first.sync_token)).await?);
    assert!(
        quiet.changed.is_empty() && quiet.removed.is_empty(),
        "{quiet:?}"
    );

    // A second member, then an edit of the first: the incremental sync lists only the edit.
    let other = format!("other-{name}");
    let other_body = body.replace("ev-1@", "ev-2@").replace("c-1@", "c-2@");
    written(
        client
            .put(&other, &other_body, Precondition::IfNoneMatch)
            .await?,
    );
    let after_other = page(client.sync_collection(Some(&first.sync_token)).await?);
    assert_eq!(after_other.changed.len(), 1, "{after_other:?}");
    assert!(after_other.changed[0].href.ends_with(&other));

    let listed_etag = listed_etag.expect("sync listed an etag");
    let edited = edit(&got.body);
    let new_etag = written(
        client
            .put(name, &edited, Precondition::IfMatch(&listed_etag))
            .await?,
    );
    // The old etag is stale now.
    assert_eq!(
        client
            .put(name, &edited, Precondition::IfMatch(&listed_etag))
            .await?,
        PutOutcome::PreconditionFailed
    );
    let incr = page(
        client
            .sync_collection(Some(&after_other.sync_token))
            .await?,
    );
    assert_eq!(incr.changed.len(), 1, "{incr:?}");
    assert!(incr.changed[0].href.ends_with(name));
    if new_etag.is_some() {
        assert_eq!(incr.changed[0].etag, new_etag);
    }
    assert!(incr.removed.is_empty());

    // Multiget returns both bodies.
    let hrefs: Vec<String> = vec![
        incr.changed[0].href.clone(),
        after_other.changed[0].href.clone(),
    ];
    let fetched = client.multiget(&hrefs).await?;
    assert_eq!(fetched.len(), 2, "{fetched:?}");
    for f in &fetched {
        match f {
            Fetched::Found { body, etag, .. } => {
                assert!(etag.is_some());
                assert!(body.starts_with("BEGIN:"), "{body:?}");
            }
            Fetched::Missing { href } => panic!("{href} missing"),
        }
    }

    // Delete with a stale etag is refused; with the current one it goes; sync lists it as
    // removed.
    assert_eq!(
        client.delete(name, Some(&listed_etag)).await?,
        DeleteOutcome::PreconditionFailed
    );
    let current = incr.changed[0].etag.clone().expect("etag");
    assert_eq!(
        client.delete(name, Some(&current)).await?,
        DeleteOutcome::Deleted
    );
    assert_eq!(client.delete(name, None).await?, DeleteOutcome::NotFound);
    let gone = page(client.sync_collection(Some(&incr.sync_token)).await?);
    assert!(gone.changed.is_empty(), "{gone:?}");
    assert_eq!(gone.removed.len(), 1, "{gone:?}");
    assert!(gone.removed[0].ends_with(name));
    assert!(client.get(name).await?.is_none());

    // A forged token asks for a full resync.
    for bad in [
        "http://radicale.org/ns/sync/0000000000000000000000000000000000000000000000000000000000000000",
        "garbage",
        "0123456789abcdef0123456789abcdef01234567",
    ] {
        assert_eq!(
            client.sync_collection(Some(bad)).await?,
            SyncOutcome::TokenInvalid,
            "{kind:?} token {bad}"
        );
    }
    Ok(())
}

async fn calendar_lifecycle(kind: DavServerKind) -> anyhow::Result<()> {
    let server = DavServer::start(kind).await?;
    let client = server.calendar()?;
    sync_lifecycle(&server, &client, "ev-1.ics", EVENT, |body| {
        body.replace("SUMMARY:Planning", "SUMMARY:Planning (moved)")
    })
    .await
}

async fn contacts_lifecycle(kind: DavServerKind) -> anyhow::Result<()> {
    let server = DavServer::start(kind).await?;
    let client = server.addressbook()?;
    sync_lifecycle(&server, &client, "c-1.vcf", CONTACT, |body| {
        body.replace("FN:Ada Lovelace", "FN:Ada King")
    })
    .await
}

#[tokio::test]
async fn radicale_calendar_lifecycle() -> anyhow::Result<()> {
    calendar_lifecycle(DavServerKind::Radicale).await
}

#[tokio::test]
async fn radicale_contacts_lifecycle() -> anyhow::Result<()> {
    contacts_lifecycle(DavServerKind::Radicale).await
}

#[tokio::test]
async fn xandikos_calendar_lifecycle() -> anyhow::Result<()> {
    calendar_lifecycle(DavServerKind::Xandikos).await
}

#[tokio::test]
async fn xandikos_contacts_lifecycle() -> anyhow::Result<()> {
    contacts_lifecycle(DavServerKind::Xandikos).await
}

#[tokio::test]
async fn requests_are_counted() -> anyhow::Result<()> {
    let server = DavServer::radicale().await?;
    let client = server.calendar()?;
    assert_eq!(client.request_count(), 0);
    let first = page(client.sync_collection(None).await?);
    let _ = client.sync_collection(Some(&first.sync_token)).await?;
    assert_eq!(client.request_count(), 2);
    // Clones share the counter.
    let clone = client.clone();
    let _ = clone.get("nothing.ics").await?;
    assert_eq!(client.request_count(), 3);
    // An empty multiget sends nothing.
    let none: [&str; 0] = [];
    assert!(client.multiget(&none).await?.is_empty());
    assert_eq!(client.request_count(), 3);
    Ok(())
}

/// Unfolded lines of `after` that are not in `before`, and the reverse, each sorted (servers
/// order properties their own way, so new lines land where the server's order puts them).
fn line_diff(before: &str, after: &str) -> (Vec<String>, Vec<String>) {
    let unfold = |s: &str| s.replace("\r\n ", "");
    let (before, after) = (unfold(before), unfold(after));
    let b: Vec<&str> = before.split("\r\n").collect();
    let a: Vec<&str> = after.split("\r\n").collect();
    let mut added: Vec<String> = a
        .iter()
        .filter(|l| !b.contains(l))
        .map(|l| l.to_string())
        .collect();
    let mut removed: Vec<String> = b
        .iter()
        .filter(|l| !a.contains(l))
        .map(|l| l.to_string())
        .collect();
    added.sort();
    removed.sort();
    (added, removed)
}

/// A resource with what servers and clients add: VTIMEZONE, VALARM, X- properties, unusual
/// parameters, attendees.
const RICH_EVENT: &str = "BEGIN:VCALENDAR\r\n\
VERSION:2.0\r\n\
PRODID:-//driftless//tests//EN\r\n\
BEGIN:VTIMEZONE\r\n\
TZID:Europe/Berlin\r\n\
BEGIN:STANDARD\r\n\
DTSTART:19701025T030000\r\n\
TZOFFSETFROM:+0200\r\n\
TZOFFSETTO:+0100\r\n\
RRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\n\
END:STANDARD\r\n\
BEGIN:DAYLIGHT\r\n\
DTSTART:19700329T020000\r\n\
TZOFFSETFROM:+0100\r\n\
TZOFFSETTO:+0200\r\n\
RRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\n\
END:DAYLIGHT\r\n\
END:VTIMEZONE\r\n\
BEGIN:VEVENT\r\n\
UID:rich-1@driftless.test\r\n\
DTSTAMP:20260101T000000Z\r\n\
DTSTART;TZID=Europe/Berlin:20261119T100000\r\n\
DTEND;TZID=Europe/Berlin:20261119T110000\r\n\
RRULE:FREQ=WEEKLY;BYDAY=TH;COUNT=10\r\n\
EXDATE;TZID=Europe/Berlin:20261126T100000\r\n\
SUMMARY:Weekly sync\r\n\
LOCATION:Room 1\r\n\
DESCRIPTION:Agenda:\\n- one\\n- two\r\n\
ORGANIZER;CN=Ada:mailto:ada@example.com\r\n\
ATTENDEE;CN=Bob;PARTSTAT=ACCEPTED;X-NUM-GUESTS=0:mailto:bob@example.com\r\n\
X-MOZ-GENERATION:3\r\n\
BEGIN:VALARM\r\n\
ACTION:DISPLAY\r\n\
TRIGGER:-PT15M\r\n\
DESCRIPTION:Reminder\r\n\
END:VALARM\r\n\
END:VEVENT\r\n\
BEGIN:VEVENT\r\n\
UID:rich-1@driftless.test\r\n\
RECURRENCE-ID;TZID=Europe/Berlin:20261203T100000\r\n\
DTSTAMP:20260101T000000Z\r\n\
DTSTART;TZID=Europe/Berlin:20261203T120000\r\n\
DTEND;TZID=Europe/Berlin:20261203T130000\r\n\
SUMMARY:Weekly sync (moved)\r\n\
END:VEVENT\r\n\
END:VCALENDAR\r\n";

/// Fetches `name` through sync + multiget and returns (href, etag, body).
async fn fetch_via_sync(
    client: &DavClient,
    name: &str,
) -> anyhow::Result<(String, String, String)> {
    let p = page(client.sync_collection(None).await?);
    let member = p
        .changed
        .iter()
        .find(|m| m.href.ends_with(name))
        .expect("listed");
    for f in client.multiget(std::slice::from_ref(&member.href)).await? {
        if let Fetched::Found { href, etag, body } = f {
            return Ok((href, etag.expect("etag"), body));
        }
    }
    panic!("{name} not fetched");
}

async fn calendar_round_trip(kind: DavServerKind) -> anyhow::Result<()> {
    use driftless_bridges::dav::ical::{Attendee, Calendar, TextProp};
    let server = DavServer::start(kind).await?;
    let client = server.calendar()?;
    written(
        client
            .put("rich-1.ics", RICH_EVENT, Precondition::IfNoneMatch)
            .await?,
    );
    let (href, etag, body) = fetch_via_sync(&client, "rich-1.ics").await?;

    // Unchanged: byte-identical, whatever normalization the server applied on store.
    let mut cal = Calendar::parse(&body)?;
    assert_eq!(cal.to_ical(), body);
    let master = cal.master().expect("master");
    let ev = cal.event(master)?;
    assert_eq!(ev.summary.as_deref(), Some("Weekly sync"));
    assert_eq!(ev.description.as_deref(), Some("Agenda:\n- one\n- two"));
    assert_eq!(ev.rrules.len(), 1);
    assert_eq!(ev.exdates.len(), 1);
    assert_eq!(cal.overrides().len(), 1);
    assert_eq!(ev.attendees.len(), 1);

    // Edited: only the touched lines change.
    cal.set_text(master, TextProp::Summary, Some("Weekly sync, renamed"));
    let mut attendees = ev.attendees.clone();
    attendees.push(Attendee {
        email: "carol@example.com".into(),
        name: Some("Carol".into()),
        partstat: Some("NEEDS-ACTION".into()),
        optional: true,
    });
    cal.set_attendees(master, &attendees);
    let edited = cal.to_ical();
    let (added, removed) = line_diff(&body, &edited);
    assert_eq!(removed, vec!["SUMMARY:Weekly sync".to_string()], "{edited}");
    assert_eq!(
        added,
        vec![
            "ATTENDEE;CN=Carol;ROLE=OPT-PARTICIPANT;PARTSTAT=NEEDS-ACTION:mailto:carol@example.com"
                .to_string(),
            "SUMMARY:Weekly sync\\, renamed".to_string(),
        ]
    );

    // The server takes the edit and gives it back.
    let new_etag = written(
        client
            .put(&href, &edited, Precondition::IfMatch(&etag))
            .await?,
    );
    let back = client.get(&href).await?.expect("exists");
    if new_etag.is_some() {
        assert_eq!(back.etag, new_etag);
    }
    let back_cal = Calendar::parse(&back.body)?;
    let back_ev = back_cal.event(back_cal.master().expect("master"))?;
    assert_eq!(back_ev.summary.as_deref(), Some("Weekly sync, renamed"));
    assert_eq!(back_ev.attendees, attendees);
    assert_eq!(back_cal.to_ical(), back.body);
    Ok(())
}

const RICH_CONTACT: &str = "BEGIN:VCARD\r\n\
VERSION:3.0\r\n\
PRODID:-//driftless//tests//EN\r\n\
UID:rich-c-1@driftless.test\r\n\
FN:Ada Lovelace\r\n\
N:Lovelace;Ada;;;\r\n\
ORG:Analytical Engines;Research\r\n\
TITLE:Countess\r\n\
item1.EMAIL;TYPE=INTERNET,WORK,pref:ada@example.com\r\n\
item1.X-ABLabel:_$!<Work>!$_\r\n\
TEL;TYPE=CELL:+44 20 7946 0018\r\n\
NOTE:First programmer\r\n\
X-SOCIALPROFILE;TYPE=twitter:https://twitter.com/ada\r\n\
END:VCARD\r\n";

async fn contact_round_trip(kind: DavServerKind) -> anyhow::Result<()> {
    use driftless_bridges::dav::vcard::{Card, CardList, CardText, TypedValue};
    let server = DavServer::start(kind).await?;
    let client = server.addressbook()?;
    written(
        client
            .put("rich-c-1.vcf", RICH_CONTACT, Precondition::IfNoneMatch)
            .await?,
    );
    let (href, etag, body) = fetch_via_sync(&client, "rich-c-1.vcf").await?;

    let mut card = Card::parse(&body)?;
    assert_eq!(card.to_vcard(), body);
    let c = card.contact();
    assert_eq!(c.full_name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(c.organization.as_deref(), Some("Analytical Engines"));
    assert_eq!(c.emails.len(), 1);
    assert!(c.emails[0].pref);

    card.set_text(CardText::Title, Some("Countess of Lovelace"));
    let mut phones = c.phones.clone();
    phones.push(TypedValue {
        value: "+44 20 0000 0000".into(),
        types: vec!["work".into()],
        pref: false,
    });
    card.set_list(CardList::Phones, &phones);
    let edited = card.to_vcard();
    let (added, removed) = line_diff(&body, &edited);
    assert_eq!(removed, vec!["TITLE:Countess".to_string()], "{edited}");
    assert_eq!(
        added,
        vec![
            "TEL;TYPE=work:+44 20 0000 0000".to_string(),
            "TITLE:Countess of Lovelace".to_string(),
        ]
    );

    written(
        client
            .put(&href, &edited, Precondition::IfMatch(&etag))
            .await?,
    );
    let back = client.get(&href).await?.expect("exists");
    let back_card = Card::parse(&back.body)?;
    let bc = back_card.contact();
    assert_eq!(bc.title.as_deref(), Some("Countess of Lovelace"));
    assert_eq!(bc.phones.len(), 2);
    assert_eq!(back_card.to_vcard(), back.body);
    Ok(())
}

#[tokio::test]
async fn radicale_calendar_round_trip() -> anyhow::Result<()> {
    calendar_round_trip(DavServerKind::Radicale).await
}

#[tokio::test]
async fn radicale_contact_round_trip() -> anyhow::Result<()> {
    contact_round_trip(DavServerKind::Radicale).await
}

#[tokio::test]
async fn xandikos_calendar_round_trip() -> anyhow::Result<()> {
    calendar_round_trip(DavServerKind::Xandikos).await
}

#[tokio::test]
async fn xandikos_contact_round_trip() -> anyhow::Result<()> {
    contact_round_trip(DavServerKind::Xandikos).await
}

/// A one-shot HTTP server on loopback that answers every request with `response`.
async fn canned(response: &'static str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the request head and body (bounded); the answer does not depend on it.
                let mut buf = vec![0u8; 64 * 1024];
                let _ = tokio::time::timeout(
                    std::time::Duration::from_millis(200),
                    sock.read(&mut buf),
                )
                .await;
                let _ = sock.write_all(response.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok(format!("http://{addr}/cal/"))
}

fn canned_client(url: String) -> anyhow::Result<DavClient> {
    use driftless_bridges::dav::client::DavClientConfig;
    use driftless_bridges::dav::wire::CollectionKind;
    Ok(DavClient::new(
        DavClientConfig::new(url, CollectionKind::Calendar).basic_auth("u", "p"),
    )?)
}

#[tokio::test]
async fn throttling_and_odd_statuses_are_typed() -> anyhow::Result<()> {
    use driftless_bridges::dav::client::{HttpError, SyncError};
    use std::time::Duration;

    let c = canned_client(
        canned("HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?,
    )?;
    match c.sync_collection(None).await {
        Err(SyncError::Http(HttpError::RateLimited { retry_after, .. })) => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)))
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    let c = canned_client(
        canned("HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?,
    )?;
    assert!(matches!(
        c.put("x.ics", "x", Precondition::IfNoneMatch).await,
        Err(driftless_bridges::dav::client::WriteError::Http(
            HttpError::RateLimited {
                retry_after: None,
                ..
            }
        ))
    ));

    // 409 with the precondition element is a token problem too.
    const BODY_409: &str = "HTTP/1.1 409 Conflict\r\nContent-Type: application/xml\r\nContent-Length: 76\r\nConnection: close\r\n\r\n<?xml version=\"1.0\"?><D:error xmlns:D=\"DAV:\"><D:valid-sync-token/></D:error>";
    assert_eq!(BODY_409.split("\r\n\r\n").nth(1).map(str::len), Some(76));
    let c = canned_client(canned(BODY_409).await?)?;
    assert_eq!(
        c.sync_collection(Some("t")).await?,
        SyncOutcome::TokenInvalid
    );

    // 403 without it is not.
    let c = canned_client(
        canned("HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\nConnection: close\r\n\r\nForbidden")
            .await?,
    )?;
    assert!(matches!(
        c.sync_collection(Some("t")).await,
        Err(SyncError::Http(HttpError::Status { .. }))
    ));

    // A broken 207 is a parse error, not a panic.
    let c = canned_client(
        canned("HTTP/1.1 207 Multi-Status\r\nContent-Length: 24\r\nConnection: close\r\n\r\n<multistatus xmlns=\"DAV:").await?,
    )?;
    assert!(matches!(
        c.sync_collection(None).await,
        Err(SyncError::Parse(_))
    ));
    assert_eq!(c.request_count(), 1);
    Ok(())
}
