//! Provider-independent sync decisions (sans-IO): which listed members to fetch, what a pulled page
//! means for the link table (create, update, relink by UID, remove), the delete-fraction guard, what
//! a provider delete does to a record, retry backoff, whose failure a provider error is (the whole
//! provider's or one record's), and when a failed outbound job is retried.
//!
//! The server's bridge runner owns the I/O (provider requests, redb, the engine) and asks this
//! module every question whose answer is a rule of the contracts, so each rule has a unit test here.
//! Identifiers are plain strings: `href` is the provider's external id, `doc` a document id.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A member of the provider collection the bridge has a shadow of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub href: String,
    pub doc: String,
    pub etag: Option<String>,
    /// The record's UID at the provider (iCalendar / vCard `UID`), used to re-match after a resync.
    pub uid: Option<String>,
}

/// A member a sync page listed as changed (or present, in a complete listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub href: String,
    pub etag: Option<String>,
}

/// A listed member whose body was fetched and parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedMember {
    pub href: String,
    pub uid: Option<String>,
}

/// The hrefs whose bodies must be fetched: members the bridge does not know, or whose etag differs
/// from the shadow's (a member without an etag is always fetched). A member listed with the
/// shadow's etag is the bridge's own write coming back and is never re-imported.
pub fn to_fetch(known: &[Known], listed: &[Listed]) -> Vec<String> {
    let by_href: BTreeMap<&str, &Known> = known.iter().map(|k| (k.href.as_str(), k)).collect();
    listed
        .iter()
        .filter(|m| match by_href.get(m.href.as_str()) {
            None => true,
            Some(k) => m.etag.is_none() || k.etag != m.etag,
        })
        .map(|m| m.href.clone())
        .collect()
}

/// What one pulled round does to the link table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullPlan {
    /// New at the provider: becomes a new document.
    pub creates: Vec<String>,
    /// `(href, doc)`: changed at the provider; diff against the shadow and write the difference.
    pub updates: Vec<(String, String)>,
    /// `(doc, old href, new href)`: a known record (same UID) now lives at another href.
    pub relinks: Vec<(String, String, String)>,
    /// `(href, doc)`: gone at the provider.
    pub removals: Vec<(String, String)>,
}

/// Decides a pulled round.
///
/// - `fetched`: members fetched this round (see [`to_fetch`]).
/// - `removed`: hrefs the provider reported deleted (404 members).
/// - `complete`: the page is a full listing (initial sync or resync after an invalid token), so a
///   known member that `listed` does not contain is gone too. A partial (incremental) page never
///   implies a delete by omission.
pub fn plan_pull(
    known: &[Known],
    listed: &[Listed],
    fetched: &[FetchedMember],
    removed: &[String],
    complete: bool,
) -> PullPlan {
    let by_href: BTreeMap<&str, &Known> = known.iter().map(|k| (k.href.as_str(), k)).collect();
    let listed_hrefs: BTreeSet<&str> = listed.iter().map(|m| m.href.as_str()).collect();
    let mut gone: BTreeSet<&str> = removed
        .iter()
        .map(String::as_str)
        .filter(|h| by_href.contains_key(h) && !listed_hrefs.contains(h))
        .collect();
    if complete {
        gone.extend(
            known
                .iter()
                .map(|k| k.href.as_str())
                .filter(|h| !listed_hrefs.contains(h)),
        );
    }
    let mut plan = PullPlan::default();
    let mut relinked: BTreeSet<&str> = BTreeSet::new();
    for member in fetched {
        if let Some(k) = by_href.get(member.href.as_str()) {
            plan.updates.push((member.href.clone(), k.doc.clone()));
            continue;
        }
        // Unknown href: the same record (by UID) at a new href is a move, not a new record.
        let moved = member.uid.as_deref().and_then(|uid| {
            known.iter().find(|k| {
                k.uid.as_deref() == Some(uid)
                    && gone.contains(k.href.as_str())
                    && !relinked.contains(k.href.as_str())
            })
        });
        match moved {
            Some(k) => {
                relinked.insert(k.href.as_str());
                plan.relinks
                    .push((k.doc.clone(), k.href.clone(), member.href.clone()));
            }
            None => plan.creates.push(member.href.clone()),
        }
    }
    for href in gone {
        if relinked.contains(href) {
            continue;
        }
        if let Some(k) = by_href.get(href) {
            plan.removals.push((href.to_owned(), k.doc.clone()));
        }
    }
    plan
}

/// Why a round stops before deleting: the counts for `GET /v1/bridges` and the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeedsConfirmation {
    /// Records the round would unlink or tombstone.
    pub removals: usize,
    /// Records linked to the bridge before the round.
    pub linked: usize,
}

/// The delete guard: a round that would remove more than `max_fraction` of the bridge's linked
/// records, or a complete listing that came back empty while records are linked, needs an
/// operator's confirmation (unless `confirmed`).
pub fn check_deletes(
    removals: usize,
    linked: usize,
    complete_and_empty: bool,
    max_fraction: f64,
    confirmed: bool,
) -> Option<NeedsConfirmation> {
    if confirmed || removals == 0 && !complete_and_empty {
        return None;
    }
    let too_many = linked > 0 && (removals as f64) > max_fraction * linked as f64;
    let emptied = complete_and_empty && linked > 0;
    (too_many || emptied).then_some(NeedsConfirmation { removals, linked })
}

/// What a provider delete does to the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Mark this bridge's link `removed`; the record lives on at its other providers.
    Unlink,
    /// Mark the link `removed` and tombstone the record (`deleted: true`).
    Tombstone,
}

/// Contracts, Deletes: tombstone only when no other live link remains or the deleting bridge is the
/// record's delete authority.
pub fn removal(other_live_links: usize, delete_authority: bool) -> Removal {
    if delete_authority || other_live_links == 0 {
        Removal::Tombstone
    } else {
        Removal::Unlink
    }
}

/// The delay before retry number `attempt` (0-based) of a failed round or job: exponential from
/// `base`, capped at `max`, with "equal jitter" (`jitter` in `[0, 1)` picks a point in the upper
/// half), and never shorter than a provider's `Retry-After`.
pub fn backoff(
    attempt: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.min(20)));
    let capped = exp.min(max);
    let half = capped / 2;
    let delay = half + half.mul_f64(jitter.clamp(0.0, 1.0));
    match retry_after {
        Some(r) if r > delay => r,
        _ => delay,
    }
}

/// The longest wait a provider's `Retry-After` is taken at its word for: a larger (or absurd)
/// value is read as this, so no arithmetic on it can overflow and a bridge is never parked for
/// longer than a day by one answer.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// A `Retry-After` header value (delay-seconds or an HTTP date, RFC 9110) as a wait from `now`,
/// at most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// The longest access-token lifetime believed from a token endpoint (`expires_in`): larger values
/// are read as this, so computing the expiry instant cannot overflow.
pub const MAX_TOKEN_LIFETIME_S: u64 = 86_400;

/// Whose problem a failed provider request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureScope {
    /// The provider as a whole (unreachable, overloaded, rate limiting, refusing our credentials):
    /// back off the whole round; every job stays queued.
    Provider,
    /// This one record (the provider refuses this resource): park it as a failed job and go on
    /// with the others.
    Record,
}

/// The scope of an HTTP status answered to a request about one record. 401/407 (credentials),
/// 408 (timeout), 429 and 5xx are provider-wide; other 4xx (400, 403, 404, 409, 413, 415, 422...)
/// refuse this record. 507 is the exception among 5xx: WebDAV servers answer it when one
/// resource does not fit (size or quota), and retrying the round would not help the others.
pub fn failure_scope(status: u16) -> FailureScope {
    match status {
        401 | 407 | 408 | 429 => FailureScope::Provider,
        507 => FailureScope::Record,
        500..=599 => FailureScope::Provider,
        _ => FailureScope::Record,
    }
}

/// First delay of a failed job's retries; the delay doubles per attempt up to [`JOB_RETRY_MAX`].
pub const JOB_RETRY_BASE: Duration = Duration::from_secs(1);
/// Longest delay between two attempts of a failed job (unless `Retry-After` asks for more).
pub const JOB_RETRY_MAX: Duration = Duration::from_secs(300);

/// Retry state of one outbound job (one record of one bridge) that failed on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobRetry {
    /// Failed attempts so far (at least 1).
    pub attempts: u32,
    /// Unix milliseconds before which the job is not tried again.
    pub next_attempt_ms: u64,
}

impl JobRetry {
    /// The state after another failed attempt at `now_ms`: one more attempt, next try after the
    /// exponential [`backoff`] for that attempt (jittered, never before `retry_after`).
    pub fn after_failure(
        previous: Option<&JobRetry>,
        now_ms: u64,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Self {
        let attempts = previous.map_or(0, |p| p.attempts);
        let delay = backoff(attempts, JOB_RETRY_BASE, JOB_RETRY_MAX, retry_after, jitter);
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        Self {
            attempts: attempts.saturating_add(1),
            next_attempt_ms: now_ms.saturating_add(delay_ms),
        }
    }

    /// Whether the job may be tried at `now_ms`.
    pub fn is_due(&self, now_ms: u64) -> bool {
        now_ms >= self.next_attempt_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_both_forms_and_capped() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("18446744073709551615", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        // A capped wait keeps every later computation in range.
        let d = backoff(
            3,
            Duration::from_secs(1),
            Duration::from_secs(300),
            parse_retry_after("18446744073709551615", now),
            0.5,
        );
        assert_eq!(d, MAX_RETRY_AFTER);
    }

    fn known(href: &str, doc: &str, etag: &str, uid: &str) -> Known {
        Known {
            href: href.into(),
            doc: doc.into(),
            etag: Some(etag.into()),
            uid: Some(uid.into()),
        }
    }
    fn listed(href: &str, etag: &str) -> Listed {
        Listed {
            href: href.into(),
            etag: Some(etag.into()),
        }
    }
    fn fetched(href: &str, uid: &str) -> FetchedMember {
        FetchedMember {
            href: href.into(),
            uid: Some(uid.into()),
        }
    }

    #[test]
    fn own_writes_coming_back_are_not_fetched() {
        let k = [known("/c/a.ics", "A", "\"1\"", "a")];
        let l = [
            listed("/c/a.ics", "\"1\""),
            listed("/c/b.ics", "\"9\""),
            Listed {
                href: "/c/c.ics".into(),
                etag: None,
            },
        ];
        assert_eq!(to_fetch(&k, &l), vec!["/c/b.ics", "/c/c.ics"]);
        let changed = [listed("/c/a.ics", "\"2\"")];
        assert_eq!(to_fetch(&k, &changed), vec!["/c/a.ics"]);
    }

    #[test]
    fn new_members_are_created_and_changed_ones_updated() {
        let k = [known("/c/a.ics", "A", "\"1\"", "a")];
        let l = [listed("/c/a.ics", "\"2\""), listed("/c/b.ics", "\"1\"")];
        let plan = plan_pull(
            &k,
            &l,
            &[fetched("/c/a.ics", "a"), fetched("/c/b.ics", "b")],
            &[],
            false,
        );
        assert_eq!(plan.creates, vec!["/c/b.ics"]);
        assert_eq!(plan.updates, vec![("/c/a.ics".into(), "A".into())]);
        assert!(plan.removals.is_empty() && plan.relinks.is_empty());
    }

    #[test]
    fn a_member_missing_from_a_partial_page_is_not_deleted() {
        let k = [
            known("/c/a.ics", "A", "\"1\"", "a"),
            known("/c/b.ics", "B", "\"1\"", "b"),
        ];
        let plan = plan_pull(&k, &[], &[], &[], false);
        assert_eq!(plan, PullPlan::default());
    }

    #[test]
    fn reported_deletes_remove_only_known_members() {
        let k = [known("/c/a.ics", "A", "\"1\"", "a")];
        let plan = plan_pull(
            &k,
            &[],
            &[],
            &["/c/a.ics".into(), "/c/unknown.ics".into()],
            false,
        );
        assert_eq!(plan.removals, vec![("/c/a.ics".into(), "A".into())]);
    }

    #[test]
    fn a_complete_listing_removes_what_it_does_not_list() {
        let k = [
            known("/c/a.ics", "A", "\"1\"", "a"),
            known("/c/b.ics", "B", "\"1\"", "b"),
        ];
        let plan = plan_pull(&k, &[listed("/c/a.ics", "\"1\"")], &[], &[], true);
        assert_eq!(plan.removals, vec![("/c/b.ics".into(), "B".into())]);
        assert!(plan.creates.is_empty() && plan.updates.is_empty());
    }

    #[test]
    fn a_resync_matches_a_moved_record_by_uid_instead_of_duplicating_it() {
        let k = [known("/c/old.ics", "A", "\"1\"", "uid-a")];
        let l = [listed("/c/new.ics", "\"5\"")];
        let plan = plan_pull(&k, &l, &[fetched("/c/new.ics", "uid-a")], &[], true);
        assert_eq!(
            plan.relinks,
            vec![("A".into(), "/c/old.ics".into(), "/c/new.ics".into())]
        );
        assert!(plan.creates.is_empty() && plan.removals.is_empty());
        // Without the old href being gone, the same UID elsewhere is a new member.
        let l2 = [listed("/c/old.ics", "\"1\""), listed("/c/new.ics", "\"5\"")];
        let plan = plan_pull(&k, &l2, &[fetched("/c/new.ics", "uid-a")], &[], true);
        assert_eq!(plan.creates, vec!["/c/new.ics"]);
    }

    #[test]
    fn a_member_deleted_and_listed_again_is_an_update() {
        // Deleted then recreated at the same href within one page: the listing wins.
        let k = [known("/c/a.ics", "A", "\"1\"", "a")];
        let l = [listed("/c/a.ics", "\"2\"")];
        let plan = plan_pull(
            &k,
            &l,
            &[fetched("/c/a.ics", "a")],
            &["/c/a.ics".into()],
            false,
        );
        assert!(plan.removals.is_empty());
        assert_eq!(plan.updates.len(), 1);
    }

    #[test]
    fn the_delete_guard() {
        assert_eq!(check_deletes(0, 10, false, 0.2, false), None);
        assert_eq!(check_deletes(2, 10, false, 0.2, false), None);
        assert_eq!(
            check_deletes(3, 10, false, 0.2, false),
            Some(NeedsConfirmation {
                removals: 3,
                linked: 10
            })
        );
        assert_eq!(check_deletes(3, 10, false, 0.2, true), None);
        assert_eq!(check_deletes(1, 1, false, 1.0, false), None);
        // An empty complete listing always asks, whatever the fraction.
        assert!(check_deletes(1, 1, true, 1.0, false).is_some());
        assert_eq!(check_deletes(0, 0, true, 0.2, false), None);
    }

    #[test]
    fn provider_delete_unlinks_while_other_links_live() {
        assert_eq!(removal(0, false), Removal::Tombstone);
        assert_eq!(removal(1, false), Removal::Unlink);
        assert_eq!(removal(2, true), Removal::Tombstone);
    }

    #[test]
    fn backoff_grows_caps_jitters_and_honours_retry_after() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(0, base, max, None, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(0, base, max, None, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, base, max, None, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(30, base, max, None, 1.0), max);
        assert_eq!(
            backoff(0, base, max, Some(Duration::from_secs(120)), 0.5),
            Duration::from_secs(120)
        );
        for attempt in 0..10 {
            let a = backoff(attempt, base, max, None, 0.0);
            let b = backoff(attempt, base, max, None, 0.999);
            assert!(a <= b && b <= max);
        }
    }

    #[test]
    fn provider_wide_and_per_record_failures() {
        for status in [401, 407, 408, 429, 500, 502, 503, 504] {
            assert_eq!(failure_scope(status), FailureScope::Provider, "{status}");
        }
        for status in [400, 403, 404, 409, 413, 415, 422, 507] {
            assert_eq!(failure_scope(status), FailureScope::Record, "{status}");
        }
    }

    #[test]
    fn failed_jobs_retry_with_growing_jittered_delays_and_honour_retry_after() {
        let now = 1_000_000;
        let first = JobRetry::after_failure(None, now, None, 0.0);
        assert_eq!(first.attempts, 1);
        assert_eq!(first.next_attempt_ms, now + 500);
        assert!(!first.is_due(now + 499) && first.is_due(now + 500));
        // Each further failure waits at least twice as long as the previous minimum.
        let mut job = first;
        let mut min_delay = 500;
        for attempt in 2..=6 {
            let at = job.next_attempt_ms;
            job = JobRetry::after_failure(Some(&job), at, None, 0.0);
            min_delay *= 2;
            assert_eq!(job.attempts, attempt);
            assert_eq!(job.next_attempt_ms - at, min_delay);
        }
        // Jitter picks a point in the upper half; the cap holds.
        let full = JobRetry::after_failure(Some(&job), now, None, 0.999);
        let delay = full.next_attempt_ms - now;
        assert!((32_000..64_000).contains(&delay), "{delay}");
        let capped = JobRetry {
            attempts: 40,
            next_attempt_ms: 0,
        };
        let next = JobRetry::after_failure(Some(&capped), now, None, 1.0);
        assert_eq!(next.next_attempt_ms - now, 300_000);
        assert_eq!(next.attempts, 41);
        // Retry-After longer than the backoff wins.
        let told = JobRetry::after_failure(None, now, Some(Duration::from_secs(90)), 0.5);
        assert_eq!(told.next_attempt_ms, now + 90_000);
    }
}
