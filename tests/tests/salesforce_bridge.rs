//! The Salesforce provider layer (`driftless_bridges::salesforce`: client, sans-IO round,
//! collection writes, translation) against the fake org: full syncs paged by `nextRecordsUrl`,
//! incremental rounds over the `updated`/`deleted` windows, `latestDateCovered` lag, purged
//! delete logs and old cursors (merging full resyncs), `EXCEEDED_ID_LIMIT`, partial success of
//! collection writes, idempotent upserts after a lost answer, throttles and session expiry.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use driftless_bridges::salesforce::client::{DriveError, SalesforceClient, SalesforceConfig};
use driftless_bridges::salesforce::sync::{
    PendingWrite, Request, ResyncReason, Round, RoundConfig, RoundOutcome, SyncCursor, Throttle,
    WriteOp, is_news, plan_collections,
};
use driftless_bridges::salesforce::translate::{
    Canonical, create_fields, fields_to_read, from_sobject, update_fields,
};
use driftless_bridges::salesforce::wire::{Fields, SObjectType};
use driftless_bridges::secret::Secret;
use driftless_tests::fakes::salesforce::{
    FakeSalesforce, OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, OAUTH_REFRESH_TOKEN,
};
use serde_json::json;

const CONTACT: SObjectType = SObjectType::Contact;
const ID_FIELD: &str = "Driftless_Id__c";
const MIN: i64 = 60_000;
const DAY: i64 = 86_400_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn client_with(fake: &FakeSalesforce, refresh_token: &str) -> SalesforceClient {
    SalesforceClient::new(SalesforceConfig {
        instance_url: fake.instance_url(),
        api_version: "v62.0".into(),
        token_url: fake.token_url(),
        client_id: OAUTH_CLIENT_ID.into(),
        client_secret: Some(Secret::new(OAUTH_CLIENT_SECRET)),
        refresh_token: Secret::new(refresh_token),
        timeout: Duration::from_secs(10),
    })
    .expect("client")
}

fn client(fake: &FakeSalesforce) -> SalesforceClient {
    client_with(fake, OAUTH_REFRESH_TOKEN)
}

fn half() -> f64 {
    0.5
}

async fn pull(
    client: &SalesforceClient,
    cursor: Option<SyncCursor>,
) -> Result<RoundOutcome, DriveError> {
    let round = Round::new(
        CONTACT,
        RoundConfig::new(fields_to_read(CONTACT, None)),
        cursor,
        now_ms(),
    );
    client.run_round(round, 3, &mut half).await
}

fn ids(out: &RoundOutcome) -> Vec<String> {
    out.records
        .iter()
        .filter_map(|r| r.id().map(str::to_owned))
        .collect()
}

fn contact(last: &str, email: &str) -> serde_json::Value {
    json!({"FirstName": "Test", "LastName": last, "Email": email, "Custom__c": "x"})
}

#[tokio::test]
async fn a_first_sync_lists_everything_in_batches_chained_by_next_records_url() -> anyhow::Result<()>
{
    let fake = FakeSalesforce::start().await?;
    fake.set_query_batch(2);
    let mut all: Vec<String> = (0..5)
        .map(|i| {
            fake.insert(
                CONTACT,
                contact(&format!("P{i}"), &format!("p{i}@example.com")),
            )
        })
        .collect();
    let c = client(&fake);
    let out = pull(&c, None).await?;
    let mut got = ids(&out);
    got.sort();
    all.sort();
    assert_eq!(got, all);
    assert!(out.complete);
    assert_eq!(out.resync, Some(ResyncReason::Initial));
    let queries: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/query"))
        .collect();
    assert_eq!(queries.len(), 3, "one query and two nextRecordsUrl batches");
    assert!(queries[0].query["q"].ends_with("FROM Contact ORDER BY SystemModstamp, Id"));
    assert!(queries[1].path.contains("/query/01gFAKE"));
    Ok(())
}

#[tokio::test]
async fn incremental_rounds_see_edits_creates_and_deletes_once() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    let a = fake.insert(CONTACT, contact("A", "a@example.com"));
    let b = fake.insert(CONTACT, contact("B", "b@example.com"));
    let c = client(&fake);
    let first = pull(&c, None).await?;

    assert!(fake.edit(CONTACT, &a, json!({"Title": "CEO"})));
    let new = fake.insert(CONTACT, contact("N", "n@example.com"));
    assert!(fake.delete(CONTACT, &b));
    let second = pull(&c, Some(first.cursor)).await?;
    assert!(!second.complete);
    let mut got = ids(&second);
    got.sort();
    let mut want = vec![a.clone(), new.clone()];
    want.sort();
    assert_eq!(got, want);
    assert_eq!(second.deleted, vec![b.clone()]);
    let edited = second.records.iter().find(|r| r.id() == Some(&a)).unwrap();
    assert_eq!(edited.text("Title"), Some("CEO"));
    assert!(second.cursor.updated_from_ms > first.cursor.updated_from_ms);
    let paths: Vec<String> = fake.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths
            .iter()
            .any(|p| p.contains("/sobjects/Contact/updated")),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.contains("/sobjects/Contact/deleted")),
        "{paths:?}"
    );

    // Nothing happened since: what comes back (the minute-truncated window overlaps) is no news.
    let third = pull(&c, Some(second.cursor)).await?;
    // A delete seen again is harmless (the record is no longer linked); nothing new is deleted.
    assert!(
        third.deleted.iter().all(|d| second.deleted.contains(d)),
        "{third:?}"
    );
    for r in &third.records {
        let shadow = second.records.iter().find(|s| s.id() == r.id());
        assert!(!is_news(CONTACT, shadow, r), "{r:?}");
    }
    Ok(())
}

#[tokio::test]
async fn the_next_window_starts_at_latest_date_covered_not_at_end() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    fake.insert(CONTACT, contact("A", "a@example.com"));
    let c = client(&fake);
    let first = pull(&c, None).await?;
    let a = fake.insert(CONTACT, contact("Late", "late@example.com"));
    // A transaction in flight: Salesforce covers only up to ten minutes ago.
    fake.set_covered_lag(Duration::from_secs(600));
    let lagging = pull(&c, Some(first.cursor)).await?;
    assert!(lagging.records.is_empty(), "not covered yet: {lagging:?}");
    fake.set_covered_lag(Duration::ZERO);
    let caught_up = pull(&c, Some(lagging.cursor)).await?;
    assert!(
        ids(&caught_up).contains(&a),
        "found once the window covers it"
    );
    Ok(())
}

#[tokio::test]
async fn a_purged_delete_log_means_a_merging_full_resync() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    let keep = fake.insert(CONTACT, contact("Keep", "keep@example.com"));
    let gone = fake.insert(CONTACT, contact("Gone", "gone@example.com"));
    let c = client(&fake);
    let first = pull(&c, None).await?;
    fake.delete(CONTACT, &gone);
    fake.purge_delete_log();
    let out = pull(&c, Some(first.cursor)).await?;
    assert_eq!(out.resync, Some(ResyncReason::DeletedHorizon));
    assert!(out.complete, "a complete listing the runner merges by id");
    assert_eq!(ids(&out), vec![keep]);
    // The resync's cursor is fresh: the round after it is incremental again.
    let next = pull(&c, Some(out.cursor)).await?;
    assert_eq!(next.resync, None);
    Ok(())
}

#[tokio::test]
async fn windows_older_than_the_horizons_are_refused_and_never_asked_for() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    fake.insert(CONTACT, contact("A", "a@example.com"));
    let c = client(&fake);
    // The org refuses an `updated` window starting 31 days back...
    let now = now_ms();
    let answer = c
        .execute(&Request::Updated {
            object: CONTACT,
            start_ms: now - 31 * DAY,
            end_ms: now,
        })
        .await?;
    assert_eq!(answer.status, 400);
    assert!(String::from_utf8_lossy(&answer.body).contains("INVALID_REPLICATION_DATE"));
    // ...and a `deleted` one 16 days back.
    let answer = c
        .execute(&Request::Deleted {
            object: CONTACT,
            start_ms: now - 16 * DAY,
            end_ms: now,
        })
        .await?;
    assert_eq!(answer.status, 400);
    // A round from such a cursor goes straight to the listing.
    let before = fake.requests().len();
    let old = SyncCursor {
        updated_from_ms: now - 20 * DAY,
        deleted_from_ms: now - 20 * DAY,
        listed_at_ms: 0,
    };
    let out = pull(&c, Some(old)).await?;
    assert_eq!(out.resync, Some(ResyncReason::DeletedHorizon));
    assert_eq!(out.records.len(), 1);
    let asked: Vec<String> = fake.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .filter(|p| !p.ends_with("/token"))
        .collect();
    assert!(asked.iter().all(|p| p.ends_with("/query")), "{asked:?}");
    Ok(())
}

#[tokio::test]
async fn too_many_ids_narrow_the_updated_window() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    let now = fake.now_ms();
    let ids_made: Vec<String> = [50, 40, 10]
        .iter()
        .map(|ago| {
            let id = fake.insert(CONTACT, contact(&format!("T{ago}"), "t@example.com"));
            fake.backdate(CONTACT, &id, now - ago * MIN);
            id
        })
        .collect();
    fake.set_id_limit(2);
    let c = client(&fake);
    let cursor = SyncCursor {
        updated_from_ms: now - 60 * MIN,
        deleted_from_ms: now - 60 * MIN,
        listed_at_ms: 0,
    };
    let first = pull(&c, Some(cursor)).await?;
    let refused = fake
        .requests()
        .iter()
        .filter(|r| r.status == 400 && r.path.contains("/updated"))
        .count();
    assert_eq!(refused, 1, "EXCEEDED_ID_LIMIT once, then a narrower window");
    let mut got = ids(&first);
    got.sort();
    let mut want = ids_made[..2].to_vec();
    want.sort();
    assert_eq!(got, want);
    // The rest of the window is the next round's.
    let second = pull(&c, Some(first.cursor)).await?;
    assert_eq!(ids(&second), vec![ids_made[2].clone()]);
    Ok(())
}

fn update(key: &str, id: &str, fields: serde_json::Value) -> PendingWrite {
    PendingWrite {
        key: key.into(),
        op: WriteOp::Update {
            id: id.into(),
            fields: serde_json::from_value(fields).expect("fields are a JSON object"),
        },
    }
}

#[tokio::test]
async fn a_collection_write_succeeds_partially_record_by_record() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    let ok = fake.insert(CONTACT, contact("Ok", "ok@example.com"));
    let bad = fake.insert(CONTACT, contact("Bad", "bad@example.com"));
    let deleted = fake.insert(CONTACT, contact("Deleted", "d@example.com"));
    fake.delete(CONTACT, &deleted);
    fake.reject_value(CONTACT, "Title", "forbidden");
    let c = client(&fake);
    let writes = vec![
        update("doc-ok", &ok, json!({"Title": "CTO"})),
        update("doc-bad", &bad, json!({"Title": "forbidden"})),
        update("doc-deleted", &deleted, json!({"Title": "CFO"})),
    ];
    let calls = plan_collections(CONTACT, &writes, None);
    assert_eq!(calls.len(), 1, "one collection call for the three");
    let out = c.send_collection(&calls[0], 3, &mut half).await?;
    assert_eq!(out.written.keys().collect::<Vec<_>>(), vec!["doc-ok"]);
    assert_eq!(
        out.failed["doc-bad"][0].code(),
        "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    );
    assert!(out.gone.contains("doc-deleted"));
    // allOrNone=false: the valid record went through, the refused one changed nothing.
    assert_eq!(fake.get(CONTACT, &ok).unwrap()["Title"], "CTO");
    assert!(fake.get(CONTACT, &bad).unwrap().get("Title").is_none());
    let sent = &fake.writes()[0];
    assert_eq!(sent.method, "PATCH");
    assert_eq!(sent.body["allOrNone"], false);
    assert_eq!(sent.body["records"][0]["attributes"]["type"], "Contact");
    assert_eq!(
        sent.body["records"][0],
        json!({"attributes": {"type": "Contact"}, "Id": ok, "Title": "CTO"}),
        "only the changed field and the id"
    );
    // Retried alone once the rule is lifted.
    fake.clear_rules();
    let retry = plan_collections(CONTACT, &writes[1..2], None);
    let out = c.send_collection(&retry[0], 3, &mut half).await?;
    assert_eq!(out.written.len(), 1);
    assert_eq!(fake.get(CONTACT, &bad).unwrap()["Title"], "forbidden");
    Ok(())
}

#[tokio::test]
async fn an_upsert_by_external_id_repeated_after_a_lost_answer_makes_one_record()
-> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    fake.define_field(CONTACT, ID_FIELD, true);
    let c = client(&fake);
    let mut k = driftless_crdt_model::Contact::default();
    k.name.given = Some("Ada".into());
    k.name.family = Some("Lovelace".into());
    let fields: Fields = create_fields(CONTACT, &Canonical::Contact(Box::new(k)))?;
    let writes = vec![PendingWrite {
        key: "doc-ada".into(),
        op: WriteOp::Create(fields),
    }];
    let calls = plan_collections(CONTACT, &writes, Some(ID_FIELD));
    fake.lose_write_answers(1);
    let lost = c.send_collection(&calls[0], 3, &mut half).await;
    assert!(lost.is_err(), "the answer was lost: {lost:?}");
    assert_eq!(fake.live(CONTACT).len(), 1, "applied all the same");
    let again = c.send_collection(&calls[0], 3, &mut half).await?;
    let result = &again.written["doc-ada"];
    assert_eq!(
        result.created,
        Some(false),
        "the repeat updated what the first made"
    );
    let live = fake.live(CONTACT);
    assert_eq!(live.len(), 1);
    let (id, stored) = live.into_iter().next().unwrap();
    assert_eq!(result.id.as_deref(), Some(id.as_str()));
    assert_eq!(stored[ID_FIELD], "doc-ada");
    Ok(())
}

#[tokio::test]
async fn a_record_read_and_written_back_unchanged_sends_nothing() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    let id = fake.insert(
        CONTACT,
        json!({"FirstName": "Jane", "LastName": "Doe", "Email": "Jane@Example.com",
               "Phone": "+1 415 555 0100", "MobilePhone": "+1 415 555 0199", "Title": "CTO",
               "Description": "Met at the fair", "Department": "R&D"}),
    );
    let c = client(&fake);
    let out = pull(&c, None).await?;
    let record = &out.records[0];
    let mut n = 0;
    let mut slot = || {
        n += 1;
        format!("slot{n}")
    };
    let canonical = from_sobject(CONTACT, record, None, &mut slot);
    assert!(update_fields(CONTACT, record, &canonical)?.is_empty());
    let Canonical::Contact(k) = &canonical else {
        panic!("{canonical:?}")
    };
    assert_eq!(k.notes.as_deref(), Some("Met at the fair"));
    assert_eq!(k.phones.len(), 2);
    assert_eq!(record.id(), Some(id.as_str()));
    Ok(())
}

#[tokio::test]
async fn request_limit_exceeded_ends_the_round_without_retrying() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    fake.insert(CONTACT, contact("A", "a@example.com"));
    let c = client(&fake);
    fake.inject_request_limit(1);
    let err = pull(&c, None).await.unwrap_err();
    assert_eq!(err.throttle(), Some(Throttle::RequestLimit), "{err}");
    let limited = fake.requests().iter().filter(|r| r.status == 403).count();
    assert_eq!(limited, 1, "no retry storm against a spent allowance");
    assert_eq!(pull(&c, None).await?.records.len(), 1);
    Ok(())
}

#[tokio::test]
async fn unavailable_answers_are_backed_off_and_retried() -> anyhow::Result<()> {
    let fake = FakeSalesforce::start().await?;
    fake.insert(CONTACT, contact("A", "a@example.com"));
    let c = client(&fake);
    fake.inject_unavailable(2, Some(1));
    let started = Instant::now();
    let out = pull(&c, None).await?;
    assert_eq!(out.records.len(), 1);
    assert_eq!(
        fake.requests().iter().filter(|r| r.status == 503).count(),
        2
    );
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After honoured: {:?}",
        started.elapsed()
    );
    // More than the retries allow: the round fails, naming the throttle.
    fake.inject_unavailable(5, None);
    let err = pull(&c, None).await.unwrap_err();
    assert!(
        matches!(err.throttle(), Some(Throttle::Busy { .. })),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn an_expired_session_is_refreshed_once_and_a_bad_grant_names_no_secret() -> anyhow::Result<()>
{
    let fake = FakeSalesforce::start().await?;
    fake.insert(CONTACT, contact("A", "a@example.com"));
    let c = client(&fake);
    pull(&c, None).await?;
    assert_eq!(fake.token_requests(), 1);
    fake.expire_sessions();
    pull(&c, None).await?;
    assert_eq!(fake.token_requests(), 2, "one refresh after the 401");
    let unauthorized = fake.requests().iter().filter(|r| r.status == 401).count();
    assert_eq!(unauthorized, 1);
    assert_eq!(c.refresh_count(), 2);

    let revoked = client_with(&fake, "revoked-refresh-token");
    let err = pull(&revoked, None).await.unwrap_err().to_string();
    assert!(err.contains("invalid_grant"), "{err}");
    assert!(
        !err.contains("revoked-refresh-token") && !err.contains(OAUTH_CLIENT_SECRET),
        "{err}"
    );
    Ok(())
}
