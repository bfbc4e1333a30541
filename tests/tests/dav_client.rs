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
