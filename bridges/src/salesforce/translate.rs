//! Pure translation between Salesforce records and the canonical records of
//! `driftless-crdt-model`: Contact <-> `contact`, Account <-> `company`, Opportunity <-> `deal`,
//! behind one [`Canonical`] type so callers are parameterised by the sObject type.
//!
//! # Invariants
//! - Reading never fails: blank values read as absent; values that do not parse (a date) are left
//!   out where the canonical field is not text.
//! - Writing sends only what differs: [`update_fields`] compares the canonical value with the
//!   shadow's field **in canonical space** (emails case-insensitive, websites as domains, amounts
//!   as decimals, dates as dates), so a record read and written back unchanged is an empty update.
//! - Fields driftless does not map are never sent: they stay in the shadow and at Salesforce.
//!
//! Lossy (docs/providers/salesforce.md): a Contact has one `Email` and five phone fields (`Phone`,
//! `MobilePhone`, `HomePhone`, `OtherPhone`, `Fax`), so further entries stay in driftless only;
//! `LastName` is required, so a contact without a family name sends its full name's last word (or
//! its given name) there; `organization` and references (`AccountId`) are not mapped here.

use std::collections::BTreeMap;

use driftless_crdt_model::{Company, Contact, ContactPoint, Deal, Name, SlotKind};
use serde_json::Value;

use super::wire::{Fields, SObject, SObjectType};
use crate::hubspot::translate::{date_of, normalize_domain, place, same_decimal};

/// Phone fields of a Contact and the vCard TYPE label each reads as (as the CardDAV and HubSpot
/// bridges label them). `Phone` is the primary one.
pub const CONTACT_PHONES: &[(&str, &str)] = &[
    ("Phone", "work"),
    ("MobilePhone", "cell"),
    ("HomePhone", "home"),
    ("OtherPhone", "other"),
    ("Fax", "fax"),
];

const CONTACT_FIELDS: &[&str] = &[
    "FirstName",
    "LastName",
    "Email",
    "Phone",
    "MobilePhone",
    "HomePhone",
    "OtherPhone",
    "Fax",
    "Title",
    "Description",
];
const ACCOUNT_FIELDS: &[&str] = &[
    "Name",
    "Website",
    "Industry",
    "Description",
    "Phone",
    "BillingStreet",
    "BillingCity",
    "BillingState",
    "BillingPostalCode",
    "BillingCountry",
];
const OPPORTUNITY_FIELDS: &[&str] = &["Name", "StageName", "Amount", "CloseDate", "Description"];

/// Read alongside the mapped fields (not written): identity, change stamps, references.
const SYSTEM_FIELDS: &[&str] = &["Id", "SystemModstamp", "LastModifiedDate"];

/// The fields driftless maps for `object` (the ones it may write).
pub fn mapped_fields(object: SObjectType) -> &'static [&'static str] {
    match object {
        SObjectType::Contact => CONTACT_FIELDS,
        SObjectType::Account => ACCOUNT_FIELDS,
        SObjectType::Opportunity => OPPORTUNITY_FIELDS,
    }
}

/// The `SELECT` list for `object`: identity and stamps, the mapped fields, references the runner
/// resolves, and the external-id field holding the document id when one is configured.
pub fn fields_to_read(object: SObjectType, id_field: Option<&str>) -> Vec<String> {
    let references: &[&str] = match object {
        SObjectType::Contact | SObjectType::Opportunity => &["AccountId"],
        SObjectType::Account => &[],
    };
    SYSTEM_FIELDS
        .iter()
        .chain(mapped_fields(object))
        .chain(references)
        .map(|s| (*s).to_owned())
        .chain(id_field.map(str::to_owned))
        .collect()
}

/// A canonical record of one of the three types.
#[derive(Debug, Clone, PartialEq)]
pub enum Canonical {
    Contact(Box<Contact>),
    Company(Box<Company>),
    Deal(Box<Deal>),
}

/// The canonical value does not belong to the sObject type it is written to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {record_type} record cannot be written as a Salesforce {object}")]
pub struct WrongType {
    pub record_type: &'static str,
    pub object: &'static str,
}

impl Canonical {
    pub fn record_type(&self) -> &'static str {
        match self {
            Canonical::Contact(_) => driftless_crdt_model::CONTACT,
            Canonical::Company(_) => driftless_crdt_model::COMPANY,
            Canonical::Deal(_) => driftless_crdt_model::DEAL,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

/// A field value as text (numbers and booleans in their JSON spelling); "" when absent or null.
fn value_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn text(record: &SObject, field: &str) -> Option<String> {
    Some(value_text(record.fields.get(field))).filter(|s| !s.is_empty())
}

fn nonempty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn string_or_null(v: Option<&str>) -> Value {
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => Value::String(s.to_owned()),
        None => Value::Null,
    }
}

/// Whether Salesforce's `have` already says `want` for `field` (compared in canonical space).
fn same_value(field: &str, have: Option<&Value>, want: &Value) -> bool {
    let (have, want) = (value_text(have), value_text(Some(want)));
    if have.is_empty() || want.is_empty() {
        return have.is_empty() && want.is_empty();
    }
    match field {
        "Email" => have.eq_ignore_ascii_case(&want),
        "Website" => normalize_domain(&have) == normalize_domain(&want),
        "Amount" => same_decimal(&have, &want),
        "CloseDate" => date_of(&have).is_some_and(|d| Some(d) == date_of(&want)) || have == want,
        _ => have == want,
    }
}

/// The entries of `wanted` whose value differs from the shadow's.
fn changed(shadow: &SObject, wanted: Fields) -> Fields {
    wanted
        .into_iter()
        .filter(|(k, v)| !same_value(k, shadow.fields.get(k), v))
        .collect()
}

/// Whether two versions of a record say the same in every mapped field: a polled record equal
/// to the shadow in this sense is the bridge's own write (or an edit of unmapped fields) and is
/// not news.
pub fn same_mapped(object: SObjectType, a: &SObject, b: &SObject) -> bool {
    mapped_fields(object).iter().all(|f| {
        let want = b.fields.get(*f).cloned().unwrap_or(Value::Null);
        same_value(f, a.fields.get(*f), &want)
    })
}

/// The shadow after a successful write: the old record with the written values applied.
pub fn apply_written(shadow: &SObject, written: &Fields) -> SObject {
    let mut out = shadow.clone();
    for (k, v) in written {
        out.fields.insert(k.clone(), v.clone());
    }
    out
}

fn point(value: String, label: &str, primary: bool) -> ContactPoint {
    ContactPoint {
        value,
        label: Some(label.to_owned()),
        primary,
        ..ContactPoint::default()
    }
}

/// The slot written to a single-valued field: the primary one, else the smallest slot id.
fn pick<'a>(points: &[&'a ContactPoint]) -> Option<&'a ContactPoint> {
    points
        .iter()
        .find(|p| p.primary)
        .or_else(|| points.first())
        .copied()
}

// ---------------------------------------------------------------------------------------------
// Generic entry points
// ---------------------------------------------------------------------------------------------

/// `record` (of type `object`) as a canonical record. `existing` keeps slot ids, spellings and
/// extras; `new_slot` makes ids for new emails and phones.
pub fn from_sobject(
    object: SObjectType,
    record: &SObject,
    existing: Option<&Canonical>,
    new_slot: &mut dyn FnMut() -> String,
) -> Canonical {
    match object {
        SObjectType::Contact => {
            let existing = match existing {
                Some(Canonical::Contact(c)) => Some(c.as_ref()),
                _ => None,
            };
            Canonical::Contact(Box::new(contact_from(record, existing, new_slot)))
        }
        SObjectType::Account => {
            let existing = match existing {
                Some(Canonical::Company(c)) => Some(c.as_ref()),
                _ => None,
            };
            Canonical::Company(Box::new(company_from(record, existing, new_slot)))
        }
        SObjectType::Opportunity => {
            let existing = match existing {
                Some(Canonical::Deal(d)) => Some(d.as_ref()),
                _ => None,
            };
            Canonical::Deal(Box::new(deal_from(record, existing)))
        }
    }
}

fn wanted(object: SObjectType, canonical: &Canonical) -> Result<Fields, WrongType> {
    match (object, canonical) {
        (SObjectType::Contact, Canonical::Contact(c)) => Ok(contact_wanted(c)),
        (SObjectType::Account, Canonical::Company(c)) => Ok(company_wanted(c)),
        (SObjectType::Opportunity, Canonical::Deal(d)) => Ok(deal_wanted(d)),
        _ => Err(WrongType {
            record_type: canonical.record_type(),
            object: object.name(),
        }),
    }
}

/// The fields that bring Salesforce (`shadow`: the record as last read or written) to
/// `canonical`: only changed mapped fields, `null` to clear.
pub fn update_fields(
    object: SObjectType,
    shadow: &SObject,
    canonical: &Canonical,
) -> Result<Fields, WrongType> {
    let mut want = wanted(object, canonical)?;
    // `LastName` cannot be cleared; an empty wanted value keeps Salesforce's.
    if object == SObjectType::Contact && want.get("LastName").is_some_and(Value::is_null) {
        want.remove("LastName");
    }
    Ok(changed(shadow, want))
}

/// The fields of a new record (empty values left out).
pub fn create_fields(object: SObjectType, canonical: &Canonical) -> Result<Fields, WrongType> {
    Ok(wanted(object, canonical)?
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .collect())
}

// ---------------------------------------------------------------------------------------------
// Contact
// ---------------------------------------------------------------------------------------------

fn contact_from(
    record: &SObject,
    existing: Option<&Contact>,
    new_slot: &mut dyn FnMut() -> String,
) -> Contact {
    let mut contact = existing.cloned().unwrap_or_default();
    let given = text(record, "FirstName");
    let family = text(record, "LastName");
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
    // An app's own spelling of the full name survives while the parts are unchanged.
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
    contact.job_title = text(record, "Title");
    contact.notes = text(record, "Description");

    let emails: Vec<ContactPoint> = text(record, "Email")
        .map(|e| ContactPoint {
            value: e,
            primary: true,
            ..ContactPoint::default()
        })
        .into_iter()
        .collect();
    contact.emails = place(
        existing.map(|e| &e.emails),
        &emails,
        SlotKind::Email,
        new_slot,
    );

    let mut phones: Vec<ContactPoint> = Vec::new();
    for (field, label) in CONTACT_PHONES {
        if let Some(value) = text(record, field) {
            // `Phone` is primary; without it the first phone present is.
            let primary = phones.is_empty() && *label != "fax";
            phones.push(point(value, label, primary));
        }
    }
    contact.phones = place(
        existing.map(|e| &e.phones),
        &phones,
        SlotKind::Phone,
        new_slot,
    );
    contact
}

/// `(FirstName, LastName)` for a contact's name: `LastName` is required by Salesforce, so a
/// name with only a full form is split at its last space, and a lone given name goes there.
fn contact_names(name: &Name) -> (Option<String>, Option<String>) {
    let given = nonempty(&name.given).map(str::to_owned);
    let family = nonempty(&name.family).map(str::to_owned);
    if family.is_some() {
        return (given, family);
    }
    if given.is_none()
        && let Some(full) = nonempty(&name.full)
    {
        return match full.rsplit_once(' ') {
            Some((g, f)) => (Some(g.trim().to_owned()), Some(f.trim().to_owned())),
            None => (None, Some(full.to_owned())),
        };
    }
    (None, given)
}

fn contact_wanted(contact: &Contact) -> Fields {
    let mut w = Fields::new();
    let (first, last) = contact_names(&contact.name);
    w.insert("FirstName".into(), string_or_null(first.as_deref()));
    w.insert("LastName".into(), string_or_null(last.as_deref()));
    w.insert("Title".into(), string_or_null(contact.job_title.as_deref()));
    w.insert(
        "Description".into(),
        string_or_null(contact.notes.as_deref()),
    );
    let emails: Vec<&ContactPoint> = contact
        .emails
        .values()
        .filter(|p| !p.value.trim().is_empty())
        .collect();
    w.insert(
        "Email".into(),
        string_or_null(pick(&emails).map(|p| p.value.as_str())),
    );

    // Each labelled phone goes to its field; the primary (or first) of the rest is `Phone`.
    let phones: Vec<&ContactPoint> = contact
        .phones
        .values()
        .filter(|p| !p.value.trim().is_empty())
        .collect();
    let mut taken = vec![false; phones.len()];
    let mut by_field: BTreeMap<&str, &ContactPoint> = BTreeMap::new();
    for (field, label) in CONTACT_PHONES.iter().filter(|(f, _)| *f != "Phone") {
        let aliases: &[&str] = match *label {
            "cell" => &["cell", "mobile"],
            "home" => &["home"],
            "other" => &["other"],
            _ => &["fax"],
        };
        let found = phones.iter().enumerate().find(|(i, p)| {
            !taken[*i]
                && p.label
                    .as_deref()
                    .is_some_and(|l| aliases.iter().any(|a| l.eq_ignore_ascii_case(a)))
        });
        if let Some((i, p)) = found {
            taken[i] = true;
            by_field.insert(field, p);
        }
    }
    let rest: Vec<&ContactPoint> = phones
        .iter()
        .enumerate()
        .filter(|(i, _)| !taken[*i])
        .map(|(_, p)| *p)
        .collect();
    if let Some(p) = pick(&rest) {
        by_field.insert("Phone", p);
    }
    for (field, _) in CONTACT_PHONES {
        w.insert(
            (*field).to_owned(),
            string_or_null(by_field.get(field).map(|p| p.value.as_str())),
        );
    }
    w
}

// ---------------------------------------------------------------------------------------------
// Account
// ---------------------------------------------------------------------------------------------

fn company_from(
    record: &SObject,
    existing: Option<&Company>,
    new_slot: &mut dyn FnMut() -> String,
) -> Company {
    let mut company = existing.cloned().unwrap_or_default();
    company.name = text(record, "Name");
    company.domain = text(record, "Website").map(|w| normalize_domain(&w).unwrap_or(w));
    company.industry = text(record, "Industry");
    company.description = text(record, "Description");
    let phones: Vec<ContactPoint> = text(record, "Phone")
        .map(|p| point(p, "work", true))
        .into_iter()
        .collect();
    company.phones = place(
        existing.map(|e| &e.phones),
        &phones,
        SlotKind::Phone,
        new_slot,
    );
    company.address.street = text(record, "BillingStreet");
    company.address.city = text(record, "BillingCity");
    company.address.region = text(record, "BillingState");
    company.address.postal_code = text(record, "BillingPostalCode");
    company.address.country = text(record, "BillingCountry");
    company
}

fn company_wanted(company: &Company) -> Fields {
    let s = |v: &Option<String>| string_or_null(v.as_deref());
    let mut w = Fields::new();
    w.insert("Name".into(), s(&company.name));
    w.insert("Website".into(), s(&company.domain));
    w.insert("Industry".into(), s(&company.industry));
    w.insert("Description".into(), s(&company.description));
    let phones: Vec<&ContactPoint> = company
        .phones
        .values()
        .filter(|p| !p.value.trim().is_empty())
        .collect();
    w.insert(
        "Phone".into(),
        string_or_null(pick(&phones).map(|p| p.value.as_str())),
    );
    w.insert("BillingStreet".into(), s(&company.address.street));
    w.insert("BillingCity".into(), s(&company.address.city));
    w.insert("BillingState".into(), s(&company.address.region));
    w.insert("BillingPostalCode".into(), s(&company.address.postal_code));
    w.insert("BillingCountry".into(), s(&company.address.country));
    w
}

// ---------------------------------------------------------------------------------------------
// Opportunity
// ---------------------------------------------------------------------------------------------

fn deal_from(record: &SObject, existing: Option<&Deal>) -> Deal {
    let mut deal = existing.cloned().unwrap_or_default();
    deal.name = text(record, "Name");
    deal.stage = text(record, "StageName");
    // Salesforce answers a number (`12500.1` for `12500.10`): the canonical spelling is kept when
    // it is the same decimal.
    deal.amount = match (
        text(record, "Amount"),
        existing.and_then(|e| e.amount.clone()),
    ) {
        (Some(new), Some(old)) if same_decimal(&new, &old) => Some(old),
        (new, _) => new,
    };
    deal.close_date = text(record, "CloseDate").and_then(|v| date_of(&v));
    deal.description = text(record, "Description");
    deal
}

fn deal_wanted(deal: &Deal) -> Fields {
    let s = |v: &Option<String>| string_or_null(v.as_deref());
    let mut w = Fields::new();
    w.insert("Name".into(), s(&deal.name));
    w.insert("StageName".into(), s(&deal.stage));
    // A currency field takes a JSON number; a value that is not a decimal is sent as text and
    // refused by Salesforce for this record only.
    let amount = match nonempty(&deal.amount) {
        Some(a) => serde_json::from_str::<serde_json::Number>(a)
            .map(Value::Number)
            .unwrap_or_else(|_| Value::String(a.to_owned())),
        None => Value::Null,
    };
    w.insert("Amount".into(), amount);
    w.insert("CloseDate".into(), s(&deal.close_date));
    w.insert("Description".into(), s(&deal.description));
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(v: Value) -> SObject {
        serde_json::from_value(v).unwrap()
    }

    fn slots() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("s{n:02}")
        }
    }

    fn contact(c: &Canonical) -> &Contact {
        match c {
            Canonical::Contact(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_contact_reads_onto_slots_and_writes_back_nothing() {
        let r = record(json!({
            "Id": "003xx0000001AAAAA2", "FirstName": "Jane", "LastName": "Doe",
            "Email": "Jane@Example.com", "Phone": "+1 415 555 0100", "MobilePhone": "+1 415 555 0199",
            "Fax": "+1 415 555 0111", "Title": "CTO", "Custom__c": "kept", "HomePhone": null
        }));
        let c = from_sobject(SObjectType::Contact, &r, None, &mut slots());
        let k = contact(&c);
        assert_eq!(k.name.full.as_deref(), Some("Jane Doe"));
        assert_eq!(k.job_title.as_deref(), Some("CTO"));
        assert_eq!(k.emails.len(), 1);
        let phones: Vec<(&str, Option<&str>, bool)> = k
            .phones
            .values()
            .map(|p| (p.value.as_str(), p.label.as_deref(), p.primary))
            .collect();
        assert_eq!(
            phones,
            vec![
                ("+1 415 555 0100", Some("work"), true),
                ("+1 415 555 0199", Some("cell"), false),
                ("+1 415 555 0111", Some("fax"), false)
            ]
        );
        assert!(k.extra.is_empty(), "unknown fields stay in the shadow");
        assert_eq!(
            update_fields(SObjectType::Contact, &r, &c).unwrap(),
            Fields::new()
        );
        // Case of an email and a trailing space are not changes.
        let mut r2 = r.clone();
        r2.fields.insert("Email".into(), json!("jane@example.com "));
        assert!(same_mapped(SObjectType::Contact, &r, &r2));
        r2.fields.insert("Title".into(), json!("CEO"));
        assert!(!same_mapped(SObjectType::Contact, &r, &r2));
    }

    #[test]
    fn a_changed_phone_stays_in_its_slot_and_is_the_only_field_sent() {
        let r = record(json!({"LastName": "Doe", "Phone": "+14155550100", "Title": "CTO"}));
        let c = from_sobject(SObjectType::Contact, &r, None, &mut slots());
        let slot = contact(&c).phones.keys().next().unwrap().clone();
        // Salesforce changes the phone: same slot.
        let r2 = record(json!({"LastName": "Doe", "Phone": "+14155550111", "Title": "CTO"}));
        let c2 = from_sobject(SObjectType::Contact, &r2, Some(&c), &mut slots());
        assert_eq!(contact(&c2).phones.keys().collect::<Vec<_>>(), vec![&slot]);
        // The app changes it and clears the title: exactly those fields, null clearing.
        let mut k = contact(&c2).clone();
        k.phones.get_mut(&slot).unwrap().value = "+14155550123".into();
        k.job_title = None;
        let update =
            update_fields(SObjectType::Contact, &r2, &Canonical::Contact(Box::new(k))).unwrap();
        assert_eq!(
            serde_json::to_value(&update).unwrap(),
            json!({"Phone": "+14155550123", "Title": null})
        );
    }

    #[test]
    fn labelled_phones_find_their_fields_and_last_name_is_always_sent() {
        let mut k = Contact::default();
        k.name.given = Some("Ada".into());
        for (slot, value, label, primary) in [
            ("a", "+1 1", "cell", false),
            ("b", "+1 2", "home", false),
            ("c", "+1 3", "work", true),
            ("d", "+1 4", "mobile", false),
        ] {
            k.phones.insert(
                slot.into(),
                ContactPoint {
                    value: value.into(),
                    label: Some(label.into()),
                    primary,
                    ..ContactPoint::default()
                },
            );
        }
        let create = create_fields(SObjectType::Contact, &Canonical::Contact(Box::new(k))).unwrap();
        assert_eq!(create["MobilePhone"], "+1 1");
        assert_eq!(create["HomePhone"], "+1 2");
        assert_eq!(create["Phone"], "+1 3");
        assert_eq!(
            create["LastName"], "Ada",
            "a lone given name becomes LastName"
        );
        assert!(!create.contains_key("FirstName"));
        let mut full = Contact::default();
        full.name.full = Some("Ada King Lovelace".into());
        let create =
            create_fields(SObjectType::Contact, &Canonical::Contact(Box::new(full))).unwrap();
        assert_eq!(create["FirstName"], "Ada King");
        assert_eq!(create["LastName"], "Lovelace");
        // A contact whose name was removed never clears the required LastName.
        let r = record(json!({"LastName": "Doe"}));
        let update = update_fields(
            SObjectType::Contact,
            &r,
            &Canonical::Contact(Box::default()),
        )
        .unwrap();
        assert!(!update.contains_key("LastName"), "{update:?}");
    }

    #[test]
    fn an_account_is_a_company() {
        let r = record(json!({
            "Name": "Acme", "Website": "https://Acme.example/about", "Industry": "Technology",
            "Phone": "+49 30 123456", "BillingCity": "Berlin", "BillingCountry": "DE", "Rating": "Hot"
        }));
        let c = from_sobject(SObjectType::Account, &r, None, &mut slots());
        let Canonical::Company(company) = &c else {
            panic!("{c:?}")
        };
        assert_eq!(company.domain.as_deref(), Some("acme.example"));
        assert_eq!(company.address.city.as_deref(), Some("Berlin"));
        assert_eq!(
            update_fields(SObjectType::Account, &r, &c).unwrap(),
            Fields::new()
        );
        let mut moved = company.clone();
        moved.address.city = Some("Potsdam".into());
        let update = update_fields(SObjectType::Account, &r, &Canonical::Company(moved)).unwrap();
        assert_eq!(
            serde_json::to_value(&update).unwrap(),
            json!({"BillingCity": "Potsdam"})
        );
        // A contact is not an account.
        assert!(
            update_fields(
                SObjectType::Account,
                &r,
                &Canonical::Contact(Box::default())
            )
            .is_err()
        );
    }

    #[test]
    fn an_opportunity_is_a_deal_with_an_exact_amount() {
        let r = record(json!({
            "Name": "Big one", "StageName": "Prospecting", "Amount": 12500.1,
            "CloseDate": "2026-12-01", "Probability": 10
        }));
        let existing = Canonical::Deal(Box::new(Deal {
            amount: Some("12500.10".into()),
            ..Deal::default()
        }));
        let d = from_sobject(SObjectType::Opportunity, &r, Some(&existing), &mut slots());
        let Canonical::Deal(deal) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(
            deal.amount.as_deref(),
            Some("12500.10"),
            "the spelling is kept"
        );
        assert_eq!(deal.close_date.as_deref(), Some("2026-12-01"));
        assert_eq!(
            update_fields(SObjectType::Opportunity, &r, &d).unwrap(),
            Fields::new()
        );
        let mut bigger = deal.clone();
        bigger.amount = Some("13000".into());
        bigger.close_date = Some("2026-12-24".into());
        let update = update_fields(SObjectType::Opportunity, &r, &Canonical::Deal(bigger)).unwrap();
        assert_eq!(
            serde_json::to_value(&update).unwrap(),
            json!({"Amount": 13000, "CloseDate": "2026-12-24"})
        );
    }

    #[test]
    fn the_select_list_names_the_id_field() {
        let f = fields_to_read(SObjectType::Contact, Some("Driftless_Id__c"));
        assert!(f.contains(&"SystemModstamp".to_owned()));
        assert!(f.contains(&"Driftless_Id__c".to_owned()));
        assert!(f.contains(&"AccountId".to_owned()));
        let written = apply_written(
            &record(json!({"Title": "CTO", "X__c": 1})),
            &[("Title".to_owned(), Value::Null)].into_iter().collect(),
        );
        assert_eq!(written.fields["Title"], Value::Null);
        assert_eq!(written.fields["X__c"], 1);
    }
}
