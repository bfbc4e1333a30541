//! `company` and `deal` documents: round trips, minimal diffs, concurrent edits, unknown fields.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use automerge::{ObjType, ROOT, ReadDoc};
use common::*;
use driftless_crdt_model::*;
use serde_json::json;

fn sample_company() -> Company {
    Company {
        name: Some("Acme GmbH".into()),
        domain: Some("acme.example".into()),
        industry: Some("MANUFACTURING".into()),
        description: Some("Makes anvils.\nShips worldwide.".into()),
        phones: BTreeMap::from([("p1".into(), point("+49 30 1234567", Some("main"), true))]),
        address: Address {
            street: Some("Hauptstr. 1".into()),
            city: Some("Berlin".into()),
            postal_code: Some("10115".into()),
            country: Some("DE".into()),
            ..Address::default()
        },
        links: BTreeMap::from([(
            "hubspot-main".into(),
            Link {
                id: "9001".into(),
                ..Link::default()
            },
        )]),
        ..Company::default()
    }
}

fn sample_deal() -> Deal {
    Deal {
        name: Some("Anvils for Road Runner Inc.".into()),
        stage: Some("appointmentscheduled".into()),
        pipeline: Some("default".into()),
        amount: Some("12500.00".into()),
        currency: Some("EUR".into()),
        close_date: Some("2026-12-15".into()),
        description: Some("Two hundred anvils.".into()),
        company: Some("automerge:4NMNnkMhL8jXrdJ9jamS58PAVdXu".into()),
        contacts: BTreeMap::from([(
            "automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ".into(),
            DealContact {
                primary: true,
                ..DealContact::default()
            },
        )]),
        ..Deal::default()
    }
}

#[test]
fn company_and_deal_round_trip_with_the_documented_shapes() {
    let company = sample_company();
    let mut d = doc(BASE);
    create_company(&mut d, &company).unwrap();
    d.commit();
    assert_eq!(read_company(&d).unwrap(), company);
    assert_eq!(
        to_json(&d).unwrap(),
        serde_json::to_value(&company).unwrap()
    );
    assert_eq!(record_type(&d).as_deref(), Some(COMPANY));
    let (address, _) = d.get(ROOT, "address").unwrap().unwrap();
    assert_eq!(address, automerge::Value::Object(ObjType::Map));
    let (name, _) = d.get(ROOT, "name").unwrap().unwrap();
    assert_eq!(name, automerge::Value::Object(ObjType::Text));

    let deal = sample_deal();
    let mut d = doc(BASE);
    create_deal(&mut d, &deal).unwrap();
    d.commit();
    assert_eq!(read_deal(&d).unwrap(), deal);
    let json = to_json(&d).unwrap();
    assert_eq!(json["type"], json!("deal"));
    assert_eq!(json["amount"], json!("12500.00"));
    assert_eq!(
        json["contacts"]["automerge:2j9knpCseyhnK8izDmLpGP5WMdZQ"],
        json!({"primary": true})
    );
    // A deal is not a company.
    assert!(read_company(&d).is_err());
}

#[test]
fn equal_values_write_nothing_and_a_change_writes_only_its_field() {
    let deal = sample_deal();
    let mut d = doc(BASE);
    create_deal(&mut d, &deal).unwrap();
    d.commit();
    let heads = d.get_heads();
    assert!(apply_deal_diff(&mut d, &deal, &deal).unwrap().is_empty());
    assert_eq!(d.commit(), None);
    assert_eq!(d.get_heads(), heads);

    let mut won = deal.clone();
    won.stage = Some("closedwon".into());
    let summary = apply_deal_diff(&mut d, &deal, &won).unwrap();
    assert_eq!(summary.written, vec!["stage".to_owned()]);
}

#[test]
fn concurrent_edits_of_different_fields_and_contacts_merge() {
    let deal = sample_deal();
    let mut app = doc(APP);
    create_deal(&mut app, &deal).unwrap();
    app.commit();
    let mut crm = fork(&mut app, BRIDGE);

    let mut by_app = deal.clone();
    by_app.amount = Some("13000.00".into());
    by_app.contacts.insert(
        "automerge:3Hu5bQk1yW7kLx6vQjD2Xg9Tz8Ns".into(),
        DealContact::default(),
    );
    apply_deal_diff(&mut app, &deal, &by_app).unwrap();
    app.commit();

    let mut by_crm = deal.clone();
    by_crm.stage = Some("contractsent".into());
    by_crm.contacts.insert(
        "automerge:3Hu5bQk1yW7kLx6vQjD2Xg9Tz8Ns".into(),
        DealContact::default(),
    );
    apply_deal_diff(&mut crm, &deal, &by_crm).unwrap();
    crm.commit();

    merge_both(&mut app, &mut crm);
    let merged = read_deal(&app).unwrap();
    assert_eq!(merged, read_deal(&crm).unwrap());
    assert_eq!(merged.amount.as_deref(), Some("13000.00"));
    assert_eq!(merged.stage.as_deref(), Some("contractsent"));
    // The same contact added on both sides is one entry.
    assert_eq!(merged.contacts.len(), 2);
}

#[test]
fn concurrent_edits_of_one_address_field_are_a_listed_conflict() {
    let company = sample_company();
    let mut app = doc(APP);
    create_company(&mut app, &company).unwrap();
    app.commit();
    let mut crm = fork(&mut app, BRIDGE);
    let mut a = company.clone();
    a.address.city = Some("Potsdam".into());
    apply_company_diff(&mut app, &company, &a).unwrap();
    app.commit();
    let mut b = company.clone();
    b.address.city = Some("Hamburg".into());
    b.address.street = Some("Elbchaussee 2".into());
    apply_company_diff(&mut crm, &company, &b).unwrap();
    crm.commit();
    merge_both(&mut app, &mut crm);
    let merged = read_company(&app).unwrap();
    assert_eq!(merged, read_company(&crm).unwrap());
    assert_eq!(merged.address.street.as_deref(), Some("Elbchaussee 2"));
    let conflicts = field_conflicts(&app, source).unwrap();
    assert_eq!(
        conflicts
            .iter()
            .map(|c| c.field.as_str())
            .collect::<Vec<_>>(),
        vec!["address.city"]
    );
}

#[test]
fn unknown_fields_survive_a_read_modify_write() {
    let mut deal = sample_deal();
    deal.extra.insert("probability".into(), json!("0.4"));
    let mut d = doc(BASE);
    create_deal(&mut d, &deal).unwrap();
    d.commit();
    let read = read_deal(&d).unwrap();
    assert_eq!(read.extra.get("probability"), Some(&json!("0.4")));
    let mut next = read.clone();
    next.name = Some("Renamed".into());
    apply_deal_diff(&mut d, &read, &next).unwrap();
    d.commit();
    assert_eq!(
        read_deal(&d).unwrap().extra.get("probability"),
        Some(&json!("0.4"))
    );
}
