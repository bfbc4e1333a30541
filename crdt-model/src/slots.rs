//! Slot-keyed emails and phones: matching provider values onto stable slots, and folding slots
//! that hold the same normalized value.
//!
//! Phones compare by their E.164 form read in `default_phone_region` (so "+1 415-555-0100" and
//! "(415) 555-0100" in the US are one slot); a value libphonenumber does not accept as a valid
//! number falls back to its digits (a leading `+` kept). The `*_in` functions take the region;
//! the others read phones in the default region (US), for translators that have none.

use std::collections::{BTreeMap, BTreeSet};

use crate::identity::{PhoneRegion, normalize_phone};
use crate::model::{Contact, ContactPoint};

/// Which slot map a value lives in; decides normalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    Email,
    Phone,
}

impl SlotKind {
    /// [`SlotKind::normalize_in`] with phones read in the default region (US).
    pub fn normalize(self, value: &str) -> String {
        self.normalize_in(value, PhoneRegion::default())
    }

    /// The value two slots are compared by: a trimmed, lower-cased email; a phone's E.164 form
    /// read in `region`, or, for what is not a valid number, its digits (a leading `+` kept).
    pub fn normalize_in(self, value: &str, region: PhoneRegion) -> String {
        match self {
            SlotKind::Email => value.trim().to_lowercase(),
            SlotKind::Phone => {
                if let Some(e164) = normalize_phone(value, region) {
                    return e164;
                }
                let trimmed = value.trim();
                let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
                if trimmed.starts_with('+') && !digits.is_empty() {
                    format!("+{digits}")
                } else {
                    digits
                }
            }
        }
    }
}

/// One slot folded into another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fold {
    pub absorbed: String,
    pub into: String,
}

/// Folds slots with the same normalized value into the one with the smallest id. The survivor keeps
/// its value and label (taking the absorbed label if it had none), is primary if either was, and
/// gains extra keys it lacked. Empty values are never folded.
pub fn fold_slots(slots: &mut BTreeMap<String, ContactPoint>, kind: SlotKind) -> Vec<Fold> {
    fold_slots_in(slots, kind, PhoneRegion::default())
}

/// [`fold_slots`] with phones read in `region`.
pub fn fold_slots_in(
    slots: &mut BTreeMap<String, ContactPoint>,
    kind: SlotKind,
    region: PhoneRegion,
) -> Vec<Fold> {
    let mut survivor_of: BTreeMap<String, String> = BTreeMap::new();
    let mut folds = Vec::new();
    // BTreeMap iterates in id order, so the first slot seen for a value has the smallest id.
    for (slot, point) in slots.iter() {
        let norm = kind.normalize_in(&point.value, region);
        if norm.is_empty() {
            continue;
        }
        match survivor_of.get(&norm) {
            Some(into) => folds.push(Fold {
                absorbed: slot.clone(),
                into: into.clone(),
            }),
            None => {
                survivor_of.insert(norm, slot.clone());
            }
        }
    }
    for fold in &folds {
        let Some(absorbed) = slots.remove(&fold.absorbed) else {
            continue;
        };
        if let Some(into) = slots.get_mut(&fold.into) {
            into.primary |= absorbed.primary;
            if into.label.is_none() {
                into.label = absorbed.label;
            }
            for (k, v) in absorbed.extra {
                into.extra.entry(k).or_insert(v);
            }
        }
    }
    folds
}

/// Folds both `emails` and `phones` of a contact; `apply_contact_diff` then deletes the absorbed
/// slots and edits the survivors key by key.
pub fn fold_contact(contact: &mut Contact) -> Vec<Fold> {
    fold_contact_in(contact, PhoneRegion::default())
}

/// [`fold_contact`] with phones read in `region` (`default_phone_region`).
pub fn fold_contact_in(contact: &mut Contact, region: PhoneRegion) -> Vec<Fold> {
    let mut folds = fold_slots_in(&mut contact.emails, SlotKind::Email, region);
    folds.extend(fold_slots_in(&mut contact.phones, SlotKind::Phone, region));
    folds
}

/// Places a provider's list of values onto slots: a value keeps the slot that already holds it
/// (by normalized value), else takes over an unmatched slot with the same label (so a changed
/// phone is an edit of `value` inside its slot), else gets a new slot id from `new_slot` (random in
/// production, fixed in tests). Slots matching nothing are left out: the provider removed them.
/// Extra keys of a reused slot are kept.
pub fn assign_slots(
    existing: &BTreeMap<String, ContactPoint>,
    incoming: &[ContactPoint],
    kind: SlotKind,
    new_slot: &mut dyn FnMut() -> String,
) -> BTreeMap<String, ContactPoint> {
    assign_slots_in(existing, incoming, kind, PhoneRegion::default(), new_slot)
}

/// [`assign_slots`] with phones read in `region`.
pub fn assign_slots_in(
    existing: &BTreeMap<String, ContactPoint>,
    incoming: &[ContactPoint],
    kind: SlotKind,
    region: PhoneRegion,
    new_slot: &mut dyn FnMut() -> String,
) -> BTreeMap<String, ContactPoint> {
    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    let mut placed: Vec<Option<&str>> = vec![None; incoming.len()];
    for (i, point) in incoming.iter().enumerate() {
        let norm = kind.normalize_in(&point.value, region);
        placed[i] = existing
            .iter()
            .find(|(slot, p)| {
                !claimed.contains(slot.as_str()) && kind.normalize_in(&p.value, region) == norm
            })
            .map(|(slot, _)| slot.as_str());
        if let Some(slot) = placed[i] {
            claimed.insert(slot);
        }
    }
    for (i, point) in incoming.iter().enumerate() {
        if placed[i].is_some() || point.label.is_none() {
            continue;
        }
        placed[i] = existing
            .iter()
            .find(|(slot, p)| !claimed.contains(slot.as_str()) && p.label == point.label)
            .map(|(slot, _)| slot.as_str());
        if let Some(slot) = placed[i] {
            claimed.insert(slot);
        }
    }
    let mut out = BTreeMap::new();
    for (point, slot) in incoming.iter().zip(placed) {
        let mut point = point.clone();
        let slot = match slot {
            Some(slot) => {
                if let Some(old) = existing.get(slot) {
                    for (k, v) in &old.extra {
                        point.extra.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                slot.to_owned()
            }
            None => loop {
                let id = new_slot();
                if !existing.contains_key(&id) && !out.contains_key(&id) {
                    break id;
                }
            },
        };
        out.insert(slot, point);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(value: &str, label: Option<&str>) -> ContactPoint {
        ContactPoint {
            value: value.to_owned(),
            label: label.map(str::to_owned),
            ..ContactPoint::default()
        }
    }

    fn region(s: &str) -> PhoneRegion {
        s.parse().expect("region")
    }

    #[test]
    fn one_phone_written_two_ways_is_one_slot_in_its_region() {
        let us = region("US");
        assert_eq!(
            SlotKind::Phone.normalize_in("+1 415-555-0100", us),
            SlotKind::Phone.normalize_in("(415) 555-0100", us)
        );
        // Read in Germany, the national form is another number.
        assert_ne!(
            SlotKind::Phone.normalize_in("+1 415-555-0100", region("DE")),
            SlotKind::Phone.normalize_in("(415) 555-0100", region("DE"))
        );
        // Not a valid number: its digits, so equal digits still fold.
        assert_eq!(SlotKind::Phone.normalize_in("ext. 12", us), "12");

        let mut slots = BTreeMap::from([
            ("b".to_owned(), point("(415) 555-0100", Some("work"))),
            ("a".to_owned(), point("+1 415-555-0100", None)),
        ]);
        let folds = fold_slots_in(&mut slots, SlotKind::Phone, us);
        assert_eq!(
            folds,
            vec![Fold {
                absorbed: "b".into(),
                into: "a".into()
            }]
        );
        assert_eq!(slots.len(), 1);
        assert_eq!(slots["a"].label.as_deref(), Some("work"));

        // A provider's differently formatted copy keeps the existing slot.
        let existing = BTreeMap::from([("a".to_owned(), point("+1 415-555-0100", None))]);
        let placed = assign_slots_in(
            &existing,
            &[point("(415) 555-0100", Some("mobile"))],
            SlotKind::Phone,
            us,
            &mut || "new".to_owned(),
        );
        assert_eq!(placed.keys().collect::<Vec<_>>(), vec!["a"]);
    }
}
