//! Pure translation between HubSpot property bags (every value a string) and the canonical
//! `contact`, `company` and `deal` records of `driftless-crdt-model`.
//!
//! # Invariants
//! - Reading never fails: HubSpot strings that do not parse (a date, an email) are kept as text
//!   where the canonical field is text, or left out where it is not, and empty strings read as
//!   absent.
//! - Writing sends only what differs: [`contact_update`] / [`company_update`] / [`deal_update`]
//!   compare the canonical value with what the shadow's properties say **in canonical space**
//!   (dates as dates, emails case-insensitive, amounts as decimals), so a record read from HubSpot
//!   and written back unchanged produces an empty update, and a quiet round writes nothing.
//! - Properties driftless does not map are never sent: they stay in the bridge's shadow (the raw
//!   property bag) and at HubSpot untouched.
//!
//! Lossy (documented in docs/providers/hubspot.md): HubSpot has one `phone`, one `mobilephone`
//! and one `fax` per contact, so further phones stay in driftless only; `name.full` is derived
//! from `firstname` + `lastname` and written back only by splitting it when neither part is set.
//! Associations (contact -> company, deal -> contact/company) are references between documents
//! that the runner resolves; see [`super::sync::association_plan`].

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use driftless_crdt_model::{Company, Contact, ContactPoint, Deal, Name, SlotKind, assign_slots};

use super::webhook::ObjectType;
use super::wire::{CrmObject, Properties, WriteProperties, split_multi};

/// Contact properties driftless maps (requested on every read).
pub const CONTACT_PROPERTIES: &[&str] = &[
    "firstname",
    "lastname",
    "email",
    "hs_additional_emails",
    "phone",
    "mobilephone",
    "fax",
    "company",
    "jobtitle",
    "lastmodifieddate",
    "createdate",
    "hs_object_id",
    "hs_merged_object_ids",
];
/// Company properties driftless maps.
pub const COMPANY_PROPERTIES: &[&str] = &[
    "name",
    "domain",
    "industry",
    "description",
    "phone",
    "address",
    "city",
    "state",
    "zip",
    "country",
    "hs_lastmodifieddate",
    "createdate",
    "hs_object_id",
    "hs_merged_object_ids",
];
/// Deal properties driftless maps.
pub const DEAL_PROPERTIES: &[&str] = &[
    "dealname",
    "dealstage",
    "pipeline",
    "amount",
    "deal_currency_code",
    "closedate",
    "description",
    "hs_lastmodifieddate",
    "createdate",
    "hs_object_id",
    "hs_merged_object_ids",
];

/// The properties to request for `object_type`, plus the driftless id property when configured.
pub fn properties_to_read(object_type: ObjectType, id_property: Option<&str>) -> Vec<String> {
    let base = match object_type {
        ObjectType::Contact => CONTACT_PROPERTIES,
        ObjectType::Company => COMPANY_PROPERTIES,
        ObjectType::Deal => DEAL_PROPERTIES,
    };
    base.iter()
        .map(|s| (*s).to_owned())
        .chain(id_property.map(str::to_owned))
        .collect()
}

/// Labels given to HubSpot's phone properties (vCard TYPE names, as the CardDAV bridge uses).
pub const PHONE_LABEL: &str = "work";
pub const MOBILE_LABEL: &str = "cell";
pub const FAX_LABEL: &str = "fax";

// ---------------------------------------------------------------------------------------------
// Times
// ---------------------------------------------------------------------------------------------

/// A HubSpot time value (epoch milliseconds, RFC 3339, or a bare date at UTC midnight) as epoch
/// milliseconds.
pub fn parse_time_ms(value: &str) -> Option<i64> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) || (v.starts_with('-') && v.len() > 1) {
        return v.parse().ok();
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(v) {
        return Some(dt.timestamp_millis());
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S%.f") {
        return Some(Utc.from_utc_datetime(&dt).timestamp_millis());
    }
    NaiveDate::parse_from_str(v, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| Utc.from_utc_datetime(&dt).timestamp_millis())
}

/// Epoch milliseconds as HubSpot's ISO form (`2026-11-19T10:00:00.123Z`).
pub fn format_time_ms(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// The object's last modification (its per-type last-modified property, else `updatedAt`).
pub fn modified_at_ms(object_type: ObjectType, object: &CrmObject) -> Option<i64> {
    object
        .property(object_type.last_modified_property())
        .and_then(parse_time_ms)
        .or_else(|| object.updated_at.as_deref().and_then(parse_time_ms))
}

/// A date or date-time value as `YYYY-MM-DD` (the UTC date: HubSpot stores dates at UTC midnight).
pub fn date_of(value: &str) -> Option<String> {
    let ms = parse_time_ms(value)?;
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d").to_string())
}

/// `YYYY-MM-DD` as the epoch milliseconds of its UTC midnight (what HubSpot stores for dates).
fn date_to_ms_string(date: &str) -> Option<String> {
    NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| Utc.from_utc_datetime(&dt).timestamp_millis().to_string())
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

fn text(props: &Properties, name: &str) -> Option<String> {
    props
        .get(name)
        .and_then(|v| v.as_deref())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn point(value: String, label: Option<&str>, primary: bool) -> ContactPoint {
    ContactPoint {
        value,
        label: label.map(str::to_owned),
        primary,
        ..ContactPoint::default()
    }
}

/// `assign_slots`, except that a changed primary value keeps the primary slot: HubSpot's `email`
/// is one property, so a new value there is an edit of that slot, not a new entry. (Salesforce's
/// single-valued fields use it too.)
pub(crate) fn place(
    existing: Option<&BTreeMap<String, ContactPoint>>,
    incoming: &[ContactPoint],
    kind: SlotKind,
    new_slot: &mut dyn FnMut() -> String,
) -> BTreeMap<String, ContactPoint> {
    let mut base = existing.cloned().unwrap_or_default();
    let incoming_norms: BTreeSet<String> =
        incoming.iter().map(|p| kind.normalize(&p.value)).collect();
    if let Some(primary) = incoming.iter().find(|p| p.primary) {
        let norm = kind.normalize(&primary.value);
        let known = base.values().any(|e| kind.normalize(&e.value) == norm);
        if !known
            && let Some(slot) = base
                .values_mut()
                .find(|e| e.primary && !incoming_norms.contains(&kind.normalize(&e.value)))
        {
            slot.value = primary.value.clone();
        }
    }
    assign_slots(&base, incoming, kind, new_slot)
}

/// Decimal strings equal as numbers (`"12500"` and `"12500.00"`), compared without floats.
pub fn same_decimal(a: &str, b: &str) -> bool {
    fn canon(s: &str) -> String {
        let s = s.trim();
        let (neg, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let body = format!("{}.{}", if int.is_empty() { "0" } else { int }, frac);
        if neg && body != "0." {
            format!("-{body}")
        } else {
            body
        }
    }
    a.trim() == b.trim() || canon(a) == canon(b)
}

/// A web domain reduced to its host, lower-case (`https://Example.com/x` -> `example.com`).
pub fn normalize_domain(value: &str) -> Option<String> {
    let v = value.trim().to_lowercase();
    let v = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .unwrap_or(&v);
    let host = v
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("")
        .trim_end_matches('.');
    (!host.is_empty()).then(|| host.to_owned())
}

// ---------------------------------------------------------------------------------------------
// Contacts
// ---------------------------------------------------------------------------------------------

/// A HubSpot contact's properties as a canonical contact. `existing`: the record's current
/// canonical contact (its slot ids, `name.full` spelling and extras are kept); `new_slot` makes
/// ids for new emails and phones.
pub fn contact_from_properties(
    props: &Properties,
    existing: Option<&Contact>,
    new_slot: &mut dyn FnMut() -> String,
) -> Contact {
    let mut contact = existing.cloned().unwrap_or_default();
    let given = text(props, "firstname");
    let family = text(props, "lastname");
    let derived_full = match (&given, &family) {
        (None, None) => None,
        (g, f) => Some(
            [g.as_deref(), f.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" "),
        ),
    };
    let keep_full = existing.is_some_and(|e| {
        e.name.given == given && e.name.family == family && nonempty(&e.name.full).is_some()
    });
    contact.name = Name {
        full: if keep_full {
            existing.and_then(|e| e.name.full.clone())
        } else {
            derived_full
        },
        given,
        family,
        extra: existing.map(|e| e.name.extra.clone()).unwrap_or_default(),
    };
    contact.organization = text(props, "company");
    contact.job_title = text(props, "jobtitle");

    let mut emails = Vec::new();
    if let Some(e) = text(props, "email") {
        emails.push(point(e, None, true));
    }
    for e in split_multi(props.get("hs_additional_emails").and_then(|v| v.as_deref())) {
        if !emails.iter().any(|p: &ContactPoint| {
            SlotKind::Email.normalize(&p.value) == SlotKind::Email.normalize(&e)
        }) {
            emails.push(point(e, None, false));
        }
    }
    contact.emails = place(
        existing.map(|e| &e.emails),
        &emails,
        SlotKind::Email,
        new_slot,
    );

    let mut phones = Vec::new();
    if let Some(p) = text(props, "phone") {
        phones.push(point(p, Some(PHONE_LABEL), true));
    }
    if let Some(p) = text(props, "mobilephone") {
        phones.push(point(p, Some(MOBILE_LABEL), phones.is_empty()));
    }
    if let Some(p) = text(props, "fax") {
        phones.push(point(p, Some(FAX_LABEL), false));
    }
    contact.phones = place(
        existing.map(|e| &e.phones),
        &phones,
        SlotKind::Phone,
        new_slot,
    );
    contact
}

/// The slot written to a single-valued property: the primary one, else the smallest slot id.
fn pick<'a>(points: impl Iterator<Item = &'a ContactPoint> + Clone) -> Option<&'a ContactPoint> {
    points
        .clone()
        .find(|p| p.primary)
        .or_else(|| points.clone().next())
}

/// The property values a canonical contact stands for (absent values as `""`, which clears).
fn contact_wanted(contact: &Contact) -> WriteProperties {
    let mut w = WriteProperties::new();
    let (mut given, mut family) = (
        nonempty(&contact.name.given).map(str::to_owned),
        nonempty(&contact.name.family).map(str::to_owned),
    );
    if given.is_none()
        && family.is_none()
        && let Some(full) = nonempty(&contact.name.full)
    {
        // Only a full name: HubSpot has no such property, so split it at the last space.
        match full.rsplit_once(' ') {
            Some((g, f)) => {
                given = Some(g.trim().to_owned());
                family = Some(f.trim().to_owned());
            }
            None => given = Some(full.to_owned()),
        }
    }
    w.insert("firstname".into(), given.unwrap_or_default());
    w.insert("lastname".into(), family.unwrap_or_default());
    w.insert(
        "company".into(),
        nonempty(&contact.organization).unwrap_or("").to_owned(),
    );
    w.insert(
        "jobtitle".into(),
        nonempty(&contact.job_title).unwrap_or("").to_owned(),
    );

    let emails: Vec<&ContactPoint> = contact
        .emails
        .values()
        .filter(|p| !p.value.trim().is_empty())
        .collect();
    let primary = pick(emails.iter().copied());
    w.insert(
        "email".into(),
        primary
            .map(|p| p.value.trim().to_owned())
            .unwrap_or_default(),
    );
    let additional: Vec<String> = emails
        .iter()
        .filter(|p| !primary.is_some_and(|q| std::ptr::eq(**p, q)))
        .map(|p| p.value.trim().to_owned())
        .collect();
    w.insert("hs_additional_emails".into(), additional.join(";"));

    let phones: Vec<&ContactPoint> = contact
        .phones
        .values()
        .filter(|p| !p.value.trim().is_empty())
        .collect();
    let labelled = |labels: &[&str]| {
        phones.iter().copied().find(|p| {
            p.label
                .as_deref()
                .is_some_and(|l| labels.iter().any(|x| l.eq_ignore_ascii_case(x)))
        })
    };
    let mobile = labelled(&[MOBILE_LABEL, "mobile"]);
    let fax = labelled(&[FAX_LABEL]);
    let is_taken = |p: &ContactPoint| {
        mobile.is_some_and(|m| std::ptr::eq(m, p)) || fax.is_some_and(|f| std::ptr::eq(f, p))
    };
    let main = pick(phones.iter().copied().filter(|p| !is_taken(p)));
    let value = |p: Option<&ContactPoint>| p.map(|p| p.value.trim().to_owned()).unwrap_or_default();
    w.insert("phone".into(), value(main));
    w.insert("mobilephone".into(), value(mobile));
    w.insert("fax".into(), value(fax));
    w
}

/// Whether HubSpot's current value `have` already says `want` for `property`.
fn same_value(property: &str, have: Option<&str>, want: &str) -> bool {
    let have = have.unwrap_or("").trim();
    let want = want.trim();
    match property {
        "email" => have.eq_ignore_ascii_case(want),
        "hs_additional_emails" => {
            let set = |s: &str| -> BTreeSet<String> {
                split_multi(Some(s))
                    .into_iter()
                    .map(|e| e.to_lowercase())
                    .collect()
            };
            set(have) == set(want)
        }
        "domain" => normalize_domain(have) == normalize_domain(want),
        "closedate" => match (date_of(have), date_of(want)) {
            (Some(a), Some(b)) => a == b,
            _ => have == want,
        },
        "amount" => {
            if have.is_empty() || want.is_empty() {
                have == want
            } else {
                same_decimal(have, want)
            }
        }
        _ => have == want,
    }
}

/// The properties of `wanted` whose value differs from the shadow's.
fn changed(shadow: &Properties, wanted: WriteProperties) -> WriteProperties {
    wanted
        .into_iter()
        .filter(|(k, v)| !same_value(k, shadow.get(k).and_then(|v| v.as_deref()), v))
        .collect()
}

/// The PATCH / batch-update properties that bring HubSpot (`shadow`: its last known property bag)
/// to `contact`: only changed properties, values as strings, `""` to clear.
pub fn contact_update(shadow: &Properties, contact: &Contact) -> WriteProperties {
    // HubSpot may list the primary email among the additional ones; read that way, it is one.
    let mut seen_by_reader = shadow.clone();
    if let Some(Some(additional)) = shadow.get("hs_additional_emails") {
        let primary = text(shadow, "email").unwrap_or_default().to_lowercase();
        let rest: Vec<String> = split_multi(Some(additional))
            .into_iter()
            .filter(|e| e.to_lowercase() != primary)
            .collect();
        seen_by_reader.insert("hs_additional_emails".into(), Some(rest.join(";")));
    }
    changed(&seen_by_reader, contact_wanted(contact))
}

/// The properties of a new HubSpot contact (empty values left out).
pub fn contact_create(contact: &Contact) -> WriteProperties {
    contact_wanted(contact)
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Companies
// ---------------------------------------------------------------------------------------------

/// A HubSpot company's properties as a canonical company (`existing` keeps slot ids and extras).
pub fn company_from_properties(
    props: &Properties,
    existing: Option<&Company>,
    new_slot: &mut dyn FnMut() -> String,
) -> Company {
    let mut company = existing.cloned().unwrap_or_default();
    company.name = text(props, "name");
    company.domain = text(props, "domain").map(|d| normalize_domain(&d).unwrap_or(d));
    company.industry = text(props, "industry");
    company.description = text(props, "description");
    let phones: Vec<ContactPoint> = text(props, "phone")
        .map(|p| point(p, Some(PHONE_LABEL), true))
        .into_iter()
        .collect();
    company.phones = place(
        existing.map(|e| &e.phones),
        &phones,
        SlotKind::Phone,
        new_slot,
    );
    company.address.street = text(props, "address");
    company.address.city = text(props, "city");
    company.address.region = text(props, "state");
    company.address.postal_code = text(props, "zip");
    company.address.country = text(props, "country");
    company
}

fn company_wanted(company: &Company) -> WriteProperties {
    let s = |v: &Option<String>| nonempty(v).unwrap_or("").to_owned();
    let mut w = WriteProperties::new();
    w.insert("name".into(), s(&company.name));
    w.insert("domain".into(), s(&company.domain));
    w.insert("industry".into(), s(&company.industry));
    w.insert("description".into(), s(&company.description));
    let phone = pick(
        company
            .phones
            .values()
            .filter(|p| !p.value.trim().is_empty()),
    );
    w.insert(
        "phone".into(),
        phone.map(|p| p.value.trim().to_owned()).unwrap_or_default(),
    );
    w.insert("address".into(), s(&company.address.street));
    w.insert("city".into(), s(&company.address.city));
    w.insert("state".into(), s(&company.address.region));
    w.insert("zip".into(), s(&company.address.postal_code));
    w.insert("country".into(), s(&company.address.country));
    w
}

/// Only the company properties that differ from the shadow's.
pub fn company_update(shadow: &Properties, company: &Company) -> WriteProperties {
    changed(shadow, company_wanted(company))
}

/// The properties of a new HubSpot company.
pub fn company_create(company: &Company) -> WriteProperties {
    company_wanted(company)
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Deals
// ---------------------------------------------------------------------------------------------

/// A HubSpot deal's properties as a canonical deal. The amount keeps `existing`'s spelling when it
/// is the same number (HubSpot may answer `12500` for `12500.00`); never a float.
pub fn deal_from_properties(props: &Properties, existing: Option<&Deal>) -> Deal {
    let mut deal = existing.cloned().unwrap_or_default();
    deal.name = text(props, "dealname");
    deal.stage = text(props, "dealstage");
    deal.pipeline = text(props, "pipeline");
    deal.amount = match (
        text(props, "amount"),
        existing.and_then(|e| e.amount.clone()),
    ) {
        (Some(new), Some(old)) if same_decimal(&new, &old) => Some(old),
        (new, _) => new,
    };
    deal.currency = text(props, "deal_currency_code");
    deal.close_date = text(props, "closedate").and_then(|v| date_of(&v));
    deal.description = text(props, "description");
    deal
}

fn deal_wanted(deal: &Deal) -> WriteProperties {
    let s = |v: &Option<String>| nonempty(v).unwrap_or("").to_owned();
    let mut w = WriteProperties::new();
    w.insert("dealname".into(), s(&deal.name));
    w.insert("dealstage".into(), s(&deal.stage));
    w.insert("pipeline".into(), s(&deal.pipeline));
    w.insert("amount".into(), s(&deal.amount));
    w.insert("deal_currency_code".into(), s(&deal.currency));
    let close = nonempty(&deal.close_date)
        .map(|d| date_to_ms_string(d).unwrap_or_else(|| d.to_owned()))
        .unwrap_or_default();
    w.insert("closedate".into(), close);
    w.insert("description".into(), s(&deal.description));
    w
}

/// Only the deal properties that differ from the shadow's.
pub fn deal_update(shadow: &Properties, deal: &Deal) -> WriteProperties {
    changed(shadow, deal_wanted(deal))
}

/// The properties of a new HubSpot deal.
pub fn deal_create(deal: &Deal) -> WriteProperties {
    deal_wanted(deal)
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// The shadow after a successful write: the old bag with the written values applied (HubSpot's
/// answer, when there is one, replaces it instead).
pub fn apply_written(shadow: &Properties, written: &WriteProperties) -> Properties {
    let mut out = shadow.clone();
    for (k, v) in written {
        out.insert(k.clone(), (!v.is_empty()).then(|| v.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
            .collect()
    }

    fn slots() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("s{n:02}")
        }
    }

    #[test]
    fn times_in_every_hubspot_form() {
        assert_eq!(parse_time_ms("1763546400000"), Some(1_763_546_400_000));
        assert_eq!(
            parse_time_ms("2025-11-19T10:00:00.000Z"),
            Some(1_763_546_400_000)
        );
        assert_eq!(
            parse_time_ms("2025-11-19T10:00:00Z"),
            Some(1_763_546_400_000)
        );
        assert_eq!(parse_time_ms("2025-11-19"), Some(1_763_510_400_000));
        assert_eq!(parse_time_ms("soon"), None);
        assert_eq!(date_of("1763546400000").as_deref(), Some("2025-11-19"));
        assert_eq!(
            date_of("2025-11-19T23:30:00Z").as_deref(),
            Some("2025-11-19")
        );
        assert_eq!(
            format_time_ms(1_763_546_400_123),
            "2025-11-19T10:00:00.123Z"
        );
    }

    #[test]
    fn contact_reads_names_emails_and_phones_onto_slots() {
        let p = props(&[
            ("firstname", "Jane"),
            ("lastname", "Doe"),
            ("email", "Jane@Example.com"),
            (
                "hs_additional_emails",
                "j@work.example; jane@example.com ;x@y.z",
            ),
            ("phone", "+1 415 555 0100"),
            ("mobilephone", "+1 415 555 0199"),
            ("company", "Acme"),
            ("jobtitle", "CTO"),
            ("hs_custom", "kept in the shadow only"),
        ]);
        let c = contact_from_properties(&p, None, &mut slots());
        assert_eq!(c.name.full.as_deref(), Some("Jane Doe"));
        assert_eq!(c.organization.as_deref(), Some("Acme"));
        assert_eq!(c.job_title.as_deref(), Some("CTO"));
        let emails: Vec<_> = c
            .emails
            .values()
            .map(|e| (e.value.as_str(), e.primary))
            .collect();
        assert_eq!(
            emails,
            vec![
                ("Jane@Example.com", true),
                ("j@work.example", false),
                ("x@y.z", false)
            ]
        );
        assert_eq!(c.phones.len(), 2);
        assert!(
            c.extra.is_empty(),
            "unknown properties never enter the record"
        );
        // Read back unchanged: an empty update.
        assert_eq!(contact_update(&p, &c), WriteProperties::new());
    }

    #[test]
    fn an_edited_hubspot_value_stays_in_its_slot() {
        let p = props(&[("email", "a@x.com"), ("phone", "+14155550100")]);
        let c = contact_from_properties(&p, None, &mut slots());
        let email_slot = c.emails.keys().next().unwrap().clone();
        let phone_slot = c.phones.keys().next().unwrap().clone();
        let p2 = props(&[("email", "b@x.com"), ("phone", "+14155550111")]);
        let c2 = contact_from_properties(&p2, Some(&c), &mut slots());
        assert_eq!(c2.emails.keys().collect::<Vec<_>>(), vec![&email_slot]);
        assert_eq!(c2.emails[&email_slot].value, "b@x.com");
        assert_eq!(c2.phones[&phone_slot].value, "+14155550111");
    }

    #[test]
    fn contact_update_sends_only_changed_properties_as_strings() {
        let p = props(&[
            ("firstname", "Jane"),
            ("lastname", "Doe"),
            ("email", "jane@example.com"),
            ("phone", "+14155550100"),
            ("jobtitle", "CTO"),
            ("hs_custom", "x"),
        ]);
        let mut c = contact_from_properties(&p, None, &mut slots());
        let slot = c.phones.keys().next().unwrap().clone();
        c.phones.get_mut(&slot).unwrap().value = "+14155550123".into();
        c.job_title = None;
        c.emails.insert(
            "zz".into(),
            ContactPoint {
                value: "second@example.com".into(),
                ..ContactPoint::default()
            },
        );
        let update = contact_update(&p, &c);
        let expected: WriteProperties = [
            ("phone", "+14155550123"),
            ("jobtitle", ""),
            ("hs_additional_emails", "second@example.com"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(update, expected);
        assert!(!update.contains_key("hs_custom"));
    }

    #[test]
    fn a_full_name_alone_is_split_for_hubspot() {
        let mut c = Contact::default();
        c.name.full = Some("Ada King Lovelace".into());
        let create = contact_create(&c);
        assert_eq!(create["firstname"], "Ada King");
        assert_eq!(create["lastname"], "Lovelace");
        assert!(!create.contains_key("email"));
    }

    #[test]
    fn company_round_trip_and_domain_normalization() {
        let p = props(&[
            ("name", "Acme"),
            ("domain", "HTTPS://Acme.example/about"),
            ("industry", "COMPUTER_SOFTWARE"),
            ("phone", "+49 30 123456"),
            ("city", "Berlin"),
            ("state", "BE"),
            ("zip", "10115"),
            ("country", "DE"),
        ]);
        let c = company_from_properties(&p, None, &mut slots());
        assert_eq!(c.domain.as_deref(), Some("acme.example"));
        assert_eq!(c.address.city.as_deref(), Some("Berlin"));
        assert_eq!(c.address.region.as_deref(), Some("BE"));
        assert_eq!(company_update(&p, &c), WriteProperties::new());
        let mut c2 = c.clone();
        c2.address.city = Some("Potsdam".into());
        assert_eq!(
            company_update(&p, &c2).into_iter().collect::<Vec<_>>(),
            vec![("city".to_owned(), "Potsdam".to_owned())]
        );
    }

    #[test]
    fn deal_amount_stays_exact_and_close_date_is_a_date() {
        let p = props(&[
            ("dealname", "Big one"),
            ("amount", "12500.10"),
            ("closedate", "2026-12-01T00:00:00.000Z"),
            ("dealstage", "appointmentscheduled"),
            ("pipeline", "default"),
        ]);
        let d = deal_from_properties(&p, None);
        assert_eq!(d.amount.as_deref(), Some("12500.10"));
        assert_eq!(d.close_date.as_deref(), Some("2026-12-01"));
        assert_eq!(deal_update(&p, &d), WriteProperties::new());
        // HubSpot answering "12500.1" keeps the canonical spelling.
        let p2 = props(&[("amount", "12500.1")]);
        assert_eq!(
            deal_from_properties(&p2, Some(&d)).amount.as_deref(),
            Some("12500.10")
        );
        let mut d2 = d.clone();
        d2.close_date = Some("2026-12-24".into());
        d2.amount = Some("99999999999999999999.99".into());
        let u = deal_update(&p, &d2);
        assert_eq!(u["closedate"], "1798070400000");
        assert_eq!(u["amount"], "99999999999999999999.99");
        assert_eq!(u.len(), 2);
        // The epoch-ms form reads back as the same date.
        assert_eq!(date_of(&u["closedate"]).as_deref(), Some("2026-12-24"));
    }

    #[test]
    fn decimals_compare_without_floats() {
        assert!(same_decimal("12500", "12500.00"));
        assert!(same_decimal("0.10", ".1"));
        assert!(same_decimal("-0", "0"));
        assert!(!same_decimal("12500.01", "12500.1"));
        assert!(!same_decimal("-1", "1"));
    }

    #[test]
    fn apply_written_clears_with_empty_strings() {
        let p = props(&[("jobtitle", "CTO"), ("x", "y")]);
        let w: WriteProperties = [("jobtitle".to_owned(), String::new())].into();
        let out = apply_written(&p, &w);
        assert_eq!(out["jobtitle"], None);
        assert_eq!(out["x"].as_deref(), Some("y"));
    }
}
