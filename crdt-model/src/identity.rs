//! One contact across systems: normalized keys and the matching rules that decide whether a
//! provider's contact is a record driftless already holds.
//!
//! Order of evidence (issue #8): an existing link, then a normalized email, then a normalized
//! phone together with the same name. Only unambiguous evidence links automatically; everything
//! else becomes a suggestion for a person to confirm (`GET /v1/identity/suggestions`), because
//! wrongly merging two people is far worse than showing a duplicate.
//!
//! Pure: the caller gathers the workspace's contacts and passes them in. Must not: write
//! documents or decide merges on its own beyond [`resolve`]'s documented rules.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use phonenumber::Mode;
use phonenumber::country::Id as CountryId;

use crate::model::{Contact, Name};

/// The region phone numbers without a country code are read in (`default_phone_region`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhoneRegion(CountryId);

impl FromStr for PhoneRegion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        CountryId::from_str(&upper).map(PhoneRegion).map_err(|_| {
            format!("unknown phone region {s:?} (expected an ISO 3166-1 alpha-2 code such as \"US\" or \"DE\")")
        })
    }
}

impl Default for PhoneRegion {
    fn default() -> Self {
        PhoneRegion(CountryId::US)
    }
}

/// A trimmed, lower-cased email; None when it is not an address (`a@b` at least).
pub fn normalize_email(value: &str) -> Option<String> {
    let email = value.trim().trim_start_matches("mailto:").to_lowercase();
    let (local, domain) = email.split_once('@')?;
    if local.is_empty() || domain.is_empty() || domain.contains('@') || email.contains(' ') {
        return None;
    }
    Some(email)
}

/// The E.164 form (`+4930123456`) of a valid phone number, read in `region` when it has no
/// country code; None for anything libphonenumber's metadata does not accept as valid.
pub fn normalize_phone(value: &str, region: PhoneRegion) -> Option<String> {
    let trimmed = value.trim().trim_start_matches("tel:");
    if trimmed.is_empty() {
        return None;
    }
    let number = phonenumber::parse(Some(region.0), trimmed).ok()?;
    if !phonenumber::is_valid(&number) {
        return None;
    }
    Some(number.format().mode(Mode::E164).to_string())
}

/// A name reduced for comparison: lower-cased alphanumeric words, sorted (so "Smith, Jane" and
/// "jane smith" agree). Built from `full`, else from `given` and `family`.
pub fn normalize_name(name: &Name) -> Option<String> {
    let source = match &name.full {
        Some(full) if !full.trim().is_empty() => full.clone(),
        _ => [name.given.as_deref(), name.family.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
    };
    let mut words: Vec<String> = source
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    if words.is_empty() {
        return None;
    }
    words.sort();
    Some(words.join(" "))
}

/// What a contact is matched by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityKeys {
    /// Live links: (bridge id, external id).
    pub links: BTreeSet<(String, String)>,
    pub emails: BTreeSet<String>,
    pub phones: BTreeSet<String>,
    pub name: Option<String>,
}

impl IdentityKeys {
    /// The keys of `contact`; values that do not normalize are left out.
    pub fn of(contact: &Contact, region: PhoneRegion) -> Self {
        IdentityKeys {
            links: contact
                .links
                .iter()
                .filter(|(_, l)| !l.removed && !l.id.is_empty())
                .map(|(bridge, l)| (bridge.clone(), l.id.clone()))
                .collect(),
            emails: contact
                .emails
                .values()
                .filter_map(|p| normalize_email(&p.value))
                .collect(),
            phones: contact
                .phones
                .values()
                .filter_map(|p| normalize_phone(&p.value, region))
                .collect(),
            name: normalize_name(&contact.name),
        }
    }

    /// Bridges this record is linked at.
    fn bridges(&self) -> BTreeSet<&str> {
        self.links.iter().map(|(b, _)| b.as_str()).collect()
    }
}

/// Why two records are thought to be one person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MatchReason {
    Link,
    Email,
    PhoneAndName,
    /// Same phone, different or missing names: never automatic.
    PhoneOnly,
}

impl MatchReason {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchReason::Link => "link",
            MatchReason::Email => "email",
            MatchReason::PhoneAndName => "phone_and_name",
            MatchReason::PhoneOnly => "phone",
        }
    }

    /// Confidence shown with a suggestion.
    pub fn score(self) -> f64 {
        match self {
            MatchReason::Link => 1.0,
            MatchReason::Email => 0.9,
            MatchReason::PhoneAndName => 0.8,
            MatchReason::PhoneOnly => 0.5,
        }
    }
}

/// A record that may be the same person.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<Id> {
    pub doc: Id,
    pub reason: MatchReason,
    pub score: f64,
}

/// The decision for one incoming contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution<Id> {
    /// Link to this record (None: create a new one).
    pub matched: Option<(Id, MatchReason)>,
    /// Possible matches a person should look at (never merged automatically).
    pub suggestions: Vec<Candidate<Id>>,
}

/// Decides where an incoming provider contact belongs among `known` records.
///
/// 1. A record already linked to the same (bridge, external id) is it.
/// 2. Else exactly one record sharing a normalized email is it; several are suggestions.
/// 3. Else exactly one record sharing a phone and the same normalized name is it; several, or a
///    shared phone with another name, are suggestions.
///
/// A record that is already linked at the incoming contact's bridge (under another external id)
/// is never matched automatically: one document holds one link per bridge, and two records in one
/// system sharing an email are that system's duplicates, for a person to merge.
pub fn resolve<Id: Clone + Ord>(
    incoming: &IdentityKeys,
    known: &[(Id, IdentityKeys)],
) -> Resolution<Id> {
    if let Some((doc, _)) = known
        .iter()
        .find(|(_, k)| k.links.intersection(&incoming.links).next().is_some())
    {
        return Resolution {
            matched: Some((doc.clone(), MatchReason::Link)),
            suggestions: Vec::new(),
        };
    }
    let incoming_bridges = incoming.bridges();
    let blocked = |k: &IdentityKeys| !k.bridges().is_disjoint(&incoming_bridges);

    let mut by_reason: BTreeMap<MatchReason, BTreeSet<Id>> = BTreeMap::new();
    for (doc, k) in known {
        let reason = if !k.emails.is_disjoint(&incoming.emails) {
            MatchReason::Email
        } else if !k.phones.is_disjoint(&incoming.phones) {
            if incoming.name.is_some() && k.name == incoming.name {
                MatchReason::PhoneAndName
            } else {
                MatchReason::PhoneOnly
            }
        } else {
            continue;
        };
        by_reason.entry(reason).or_default().insert(doc.clone());
    }

    let mut matched = None;
    let mut suggestions = Vec::new();
    for (reason, docs) in by_reason {
        let automatic = matches!(reason, MatchReason::Email | MatchReason::PhoneAndName);
        let sole = docs.len() == 1;
        for doc in docs {
            let keys = known.iter().find(|(d, _)| *d == doc).map(|(_, k)| k);
            let can_link = automatic && sole && matched.is_none() && !keys.is_some_and(blocked);
            if can_link {
                matched = Some((doc, reason));
            } else {
                suggestions.push(Candidate {
                    doc,
                    reason,
                    score: reason.score(),
                });
            }
        }
    }
    Resolution {
        matched,
        suggestions,
    }
}

/// A pair of records that may be one person.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion<Id> {
    pub a: Id,
    pub b: Id,
    pub reason: MatchReason,
    pub score: f64,
}

/// Pairs among `known` that share an email or a phone, strongest reason per pair, best first.
/// Pairs in `dismissed` (either order) are left out.
pub fn suggestions<Id: Clone + Ord>(
    known: &[(Id, IdentityKeys)],
    dismissed: &BTreeSet<(Id, Id)>,
) -> Vec<Suggestion<Id>> {
    let mut by_email: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut by_phone: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (_, k)) in known.iter().enumerate() {
        for e in &k.emails {
            by_email.entry(e).or_default().push(i);
        }
        for p in &k.phones {
            by_phone.entry(p).or_default().push(i);
        }
    }
    let mut best: BTreeMap<(usize, usize), MatchReason> = BTreeMap::new();
    let mut note = |i: usize, j: usize, reason: MatchReason| {
        let key = (i.min(j), i.max(j));
        let entry = best.entry(key).or_insert(reason);
        if reason < *entry {
            *entry = reason;
        }
    };
    for group in by_email.values() {
        for (n, &i) in group.iter().enumerate() {
            for &j in &group[n + 1..] {
                note(i, j, MatchReason::Email);
            }
        }
    }
    for group in by_phone.values() {
        for (n, &i) in group.iter().enumerate() {
            for &j in &group[n + 1..] {
                let (a, b) = (&known[i].1, &known[j].1);
                let same_name = a.name.is_some() && a.name == b.name;
                note(
                    i,
                    j,
                    if same_name {
                        MatchReason::PhoneAndName
                    } else {
                        MatchReason::PhoneOnly
                    },
                );
            }
        }
    }
    let mut out: Vec<Suggestion<Id>> = best
        .into_iter()
        .filter(|((i, j), _)| known[*i].0 != known[*j].0)
        .map(|((i, j), reason)| {
            let (a, b) = if known[i].0 <= known[j].0 {
                (known[i].0.clone(), known[j].0.clone())
            } else {
                (known[j].0.clone(), known[i].0.clone())
            };
            Suggestion {
                a,
                b,
                reason,
                score: reason.score(),
            }
        })
        .filter(|s| {
            !dismissed.contains(&(s.a.clone(), s.b.clone()))
                && !dismissed.contains(&(s.b.clone(), s.a.clone()))
        })
        .collect();
    out.sort_by(|x, y| {
        x.reason
            .cmp(&y.reason)
            .then_with(|| x.a.cmp(&y.a))
            .then_with(|| x.b.cmp(&y.b))
    });
    out
}

/// What an identity merge could not carry over as a plain field: links both records held at the
/// same bridge (the survivor's stays; the absorbed one is reported so the caller can unlink it
/// there without deleting anything).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergeReport {
    /// Bridges where both records were linked: (bridge id, the absorbed record's external id).
    pub duplicate_links: Vec<(String, String)>,
}

/// The survivor after absorbing `absorbed` (`POST /v1/identity/merge`): every field is kept.
/// Atomic fields the survivor lacks are taken from the absorbed record; emails and phones are
/// unioned by normalized value (the absorbed slots keep their ids; primary stays with the
/// survivor's); notes are joined; links the survivor lacks move over (a bridge both are linked at
/// keeps the survivor's link and is reported); unknown keys the survivor lacks are copied.
/// Deletes nothing and touches no provider.
pub fn merge_contacts(
    survivor: &Contact,
    absorbed: &Contact,
    region: PhoneRegion,
) -> (Contact, MergeReport) {
    let mut out = survivor.clone();
    let mut report = MergeReport::default();
    let fill = |mine: &mut Option<String>, theirs: &Option<String>| {
        if mine.as_deref().is_none_or(|v| v.trim().is_empty()) && theirs.is_some() {
            mine.clone_from(theirs);
        }
    };
    fill(&mut out.name.full, &absorbed.name.full);
    fill(&mut out.name.given, &absorbed.name.given);
    fill(&mut out.name.family, &absorbed.name.family);
    fill(&mut out.organization, &absorbed.organization);
    fill(&mut out.job_title, &absorbed.job_title);
    fill(&mut out.company, &absorbed.company);
    match (&out.notes, &absorbed.notes) {
        (Some(mine), Some(theirs))
            if !theirs.trim().is_empty() && !mine.contains(theirs.as_str()) =>
        {
            out.notes = Some(format!("{mine}\n\n{theirs}"));
        }
        (None, Some(theirs)) => out.notes = Some(theirs.clone()),
        _ => {}
    }
    union_points(&mut out.emails, &absorbed.emails, normalize_email);
    union_points(&mut out.phones, &absorbed.phones, |v| {
        normalize_phone(v, region)
    });
    for (bridge, link) in &absorbed.links {
        match out.links.get(bridge) {
            None => {
                out.links.insert(bridge.clone(), link.clone());
            }
            Some(mine) if mine.id != link.id && !link.removed && !link.id.is_empty() => {
                report
                    .duplicate_links
                    .push((bridge.clone(), link.id.clone()));
            }
            Some(_) => {}
        }
    }
    for (key, value) in &absorbed.name.extra {
        out.name
            .extra
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
    for (key, value) in &absorbed.extra {
        out.extra
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
    (out, report)
}

fn union_points(
    mine: &mut BTreeMap<String, crate::model::ContactPoint>,
    theirs: &BTreeMap<String, crate::model::ContactPoint>,
    normalize: impl Fn(&str) -> Option<String>,
) {
    let key = |v: &str| normalize(v).unwrap_or_else(|| v.trim().to_lowercase());
    let present: BTreeSet<String> = mine.values().map(|p| key(&p.value)).collect();
    for (slot, point) in theirs {
        if point.value.trim().is_empty() || present.contains(&key(&point.value)) {
            continue;
        }
        let mut point = point.clone();
        point.primary = false;
        let mut id = slot.clone();
        while mine.contains_key(&id) {
            id.push('m');
        }
        mine.insert(id, point);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ContactPoint, Link};

    fn region(s: &str) -> PhoneRegion {
        s.parse().expect("region")
    }

    fn contact(full: &str, emails: &[&str], phones: &[&str], links: &[(&str, &str)]) -> Contact {
        let point = |v: &&str| ContactPoint {
            value: (*v).to_owned(),
            ..ContactPoint::default()
        };
        Contact {
            name: Name {
                full: Some(full.to_owned()),
                ..Name::default()
            },
            emails: emails
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("e{i}"), point(v)))
                .collect(),
            phones: phones
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("p{i}"), point(v)))
                .collect(),
            links: links
                .iter()
                .map(|(b, id)| {
                    (
                        (*b).to_owned(),
                        Link {
                            id: (*id).to_owned(),
                            ..Link::default()
                        },
                    )
                })
                .collect(),
            ..Contact::default()
        }
    }

    fn keys(c: &Contact) -> IdentityKeys {
        IdentityKeys::of(c, region("US"))
    }

    #[test]
    fn phones_normalize_to_e164_in_the_default_region() {
        let us = region("us");
        assert_eq!(
            normalize_phone("(650) 253-0000", us).as_deref(),
            Some("+16502530000")
        );
        assert_eq!(
            normalize_phone("+1 650 253 0000", us).as_deref(),
            Some("+16502530000")
        );
        assert_eq!(
            normalize_phone("tel:+16502530000", us).as_deref(),
            Some("+16502530000")
        );
        let de = region("DE");
        assert_eq!(
            normalize_phone("030 1234567", de).as_deref(),
            Some("+49301234567")
        );
        assert_eq!(
            normalize_phone("+49 30 1234567", us).as_deref(),
            Some("+49301234567")
        );
        // The same national digits mean different numbers in different regions.
        assert_ne!(
            normalize_phone("030 1234567", de),
            normalize_phone("030 1234567", us)
        );
        assert_eq!(normalize_phone("12", us), None);
        assert_eq!(normalize_phone("call me", us), None);
        assert_eq!(normalize_phone("", us), None);
        assert!("Atlantis".parse::<PhoneRegion>().is_err());
    }

    #[test]
    fn emails_and_names_normalize() {
        assert_eq!(
            normalize_email(" Jane.Doe@Example.COM ").as_deref(),
            Some("jane.doe@example.com")
        );
        assert_eq!(normalize_email("mailto:a@b").as_deref(), Some("a@b"));
        assert_eq!(normalize_email("no-at-sign"), None);
        assert_eq!(normalize_email("a@b@c"), None);
        assert_eq!(normalize_email("@b"), None);
        let n = |full: Option<&str>, given: Option<&str>, family: Option<&str>| Name {
            full: full.map(str::to_owned),
            given: given.map(str::to_owned),
            family: family.map(str::to_owned),
            ..Name::default()
        };
        assert_eq!(
            normalize_name(&n(Some("Smith, Jane"), None, None)).as_deref(),
            Some("jane smith")
        );
        assert_eq!(
            normalize_name(&n(None, Some("Jane"), Some("SMITH"))).as_deref(),
            Some("jane smith")
        );
        assert_eq!(normalize_name(&n(Some("  "), None, None)), None);
    }

    #[test]
    fn an_existing_link_wins_over_everything() {
        let incoming = keys(&contact("X", &["x@x.com"], &[], &[("hubspot", "42")]));
        let known = vec![
            ("a", keys(&contact("Other", &["x@x.com"], &[], &[]))),
            ("b", keys(&contact("X", &[], &[], &[("hubspot", "42")]))),
        ];
        let r = resolve(&incoming, &known);
        assert_eq!(r.matched, Some(("b", MatchReason::Link)));
    }

    #[test]
    fn one_shared_email_links_and_several_only_suggest() {
        let incoming = keys(&contact(
            "Jane",
            &["JANE@example.com"],
            &[],
            &[("hubspot", "1")],
        ));
        let known = vec![(
            "a",
            keys(&contact(
                "Jane D",
                &["jane@example.com"],
                &[],
                &[("salesforce", "003")],
            )),
        )];
        assert_eq!(
            resolve(&incoming, &known).matched,
            Some(("a", MatchReason::Email))
        );

        let two = vec![
            ("a", keys(&contact("Jane", &["jane@example.com"], &[], &[]))),
            ("b", keys(&contact("Jane", &["jane@example.com"], &[], &[]))),
        ];
        let r = resolve(&incoming, &two);
        assert_eq!(r.matched, None);
        assert_eq!(r.suggestions.len(), 2);
    }

    #[test]
    fn a_record_already_linked_at_the_same_bridge_is_never_matched_automatically() {
        let incoming = keys(&contact(
            "Jane",
            &["jane@example.com"],
            &[],
            &[("hubspot", "2")],
        ));
        let known = vec![(
            "a",
            keys(&contact(
                "Jane",
                &["jane@example.com"],
                &[],
                &[("hubspot", "1")],
            )),
        )];
        let r = resolve(&incoming, &known);
        assert_eq!(r.matched, None);
        assert_eq!(
            r.suggestions.iter().map(|c| c.doc).collect::<Vec<_>>(),
            vec!["a"]
        );
    }

    #[test]
    fn a_phone_links_only_together_with_the_same_name() {
        let incoming = keys(&contact(
            "Jane Smith",
            &[],
            &["650-253-0000"],
            &[("carddav", "/j.vcf")],
        ));
        let same = vec![(
            "a",
            keys(&contact("Smith Jane", &[], &["+1 (650) 253-0000"], &[])),
        )];
        assert_eq!(
            resolve(&incoming, &same).matched,
            Some(("a", MatchReason::PhoneAndName))
        );
        let household = vec![(
            "a",
            keys(&contact("John Smith", &[], &["+16502530000"], &[])),
        )];
        let r = resolve(&incoming, &household);
        assert_eq!(r.matched, None);
        assert_eq!(r.suggestions[0].reason, MatchReason::PhoneOnly);
        assert_eq!(
            resolve(
                &incoming,
                &[("z", keys(&contact("Jane Smith", &[], &[], &[])))]
            )
            .matched,
            None
        );
    }

    #[test]
    fn suggestions_list_each_pair_once_with_its_strongest_reason() {
        let known = vec![
            (
                "a",
                keys(&contact("Jane", &["jane@x.com"], &["6502530000"], &[])),
            ),
            (
                "b",
                keys(&contact("Jane", &["JANE@x.com"], &["+16502530000"], &[])),
            ),
            ("c", keys(&contact("John", &[], &["650 253 0000"], &[]))),
            ("d", keys(&contact("Nobody", &["n@x.com"], &[], &[]))),
        ];
        let s = suggestions(&known, &BTreeSet::new());
        let pairs: Vec<(&str, &str, &str)> =
            s.iter().map(|s| (s.a, s.b, s.reason.as_str())).collect();
        assert_eq!(
            pairs,
            vec![
                ("a", "b", "email"),
                ("a", "c", "phone"),
                ("b", "c", "phone")
            ]
        );
        let dismissed = BTreeSet::from([("c", "a")]);
        assert_eq!(suggestions(&known, &dismissed).len(), 2);
    }

    #[test]
    fn a_merge_keeps_every_field_and_link_and_reports_a_shared_bridge() {
        let mut survivor = contact(
            "Jane Smith",
            &["jane@x.com"],
            &["650 253 0000"],
            &[("hubspot", "1")],
        );
        survivor.notes = Some("met at the fair".into());
        survivor.emails.get_mut("e0").unwrap().primary = true;
        let mut absorbed = contact(
            "J. Smith",
            &["JANE@x.com", "jane@home.example"],
            &["+1 650-253-0000", "+49 30 1234567"],
            &[("salesforce", "003A"), ("hubspot", "2")],
        );
        absorbed.job_title = Some("CTO".into());
        absorbed.notes = Some("prefers email".into());
        absorbed.emails.get_mut("e1").unwrap().primary = true;
        absorbed
            .extra
            .insert("x_app_color".into(), serde_json::json!("teal"));
        let (merged, report) = merge_contacts(&survivor, &absorbed, region("US"));
        assert_eq!(merged.name.full.as_deref(), Some("Jane Smith"));
        assert_eq!(merged.job_title.as_deref(), Some("CTO"));
        assert_eq!(
            merged.notes.as_deref(),
            Some("met at the fair\n\nprefers email")
        );
        let mut emails: Vec<(&str, bool)> = merged
            .emails
            .values()
            .map(|p| (p.value.as_str(), p.primary))
            .collect();
        emails.sort();
        assert_eq!(
            emails,
            vec![("jane@home.example", false), ("jane@x.com", true)]
        );
        assert_eq!(merged.phones.len(), 2, "{:?}", merged.phones);
        assert_eq!(
            merged.links.get("salesforce").map(|l| l.id.as_str()),
            Some("003A")
        );
        assert_eq!(
            merged.links.get("hubspot").map(|l| l.id.as_str()),
            Some("1")
        );
        assert_eq!(
            report.duplicate_links,
            vec![("hubspot".to_owned(), "2".to_owned())]
        );
        assert_eq!(
            merged.extra.get("x_app_color"),
            Some(&serde_json::json!("teal"))
        );
        // Merging again changes nothing.
        let (twice, _) = merge_contacts(&merged, &absorbed, region("US"));
        assert_eq!(twice, merged);
    }
}
