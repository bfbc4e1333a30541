//! Slot-keyed emails and phones: matching provider values onto stable slots, and folding slots
//! that hold the same normalized value.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Contact, ContactPoint};

/// Which slot map a value lives in; decides normalization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    Email,
    Phone,
}

impl SlotKind {
    /// The value two slots are compared by: a trimmed, lower-cased email; a phone's digits (with a
    /// leading `+` kept). Placeholder for phones until E.164 with `default_phone_region` lands.
    pub fn normalize(self, value: &str) -> String {
        match self {
            SlotKind::Email => value.trim().to_lowercase(),
            SlotKind::Phone => {
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
    let mut survivor_of: BTreeMap<String, String> = BTreeMap::new();
    let mut folds = Vec::new();
    // BTreeMap iterates in id order, so the first slot seen for a value has the smallest id.
    for (slot, point) in slots.iter() {
        let norm = kind.normalize(&point.value);
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
    let mut folds = fold_slots(&mut contact.emails, SlotKind::Email);
    folds.extend(fold_slots(&mut contact.phones, SlotKind::Phone));
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
    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    let mut placed: Vec<Option<&str>> = vec![None; incoming.len()];
    for (i, point) in incoming.iter().enumerate() {
        let norm = kind.normalize(&point.value);
        placed[i] = existing
            .iter()
            .find(|(slot, p)| !claimed.contains(slot.as_str()) && kind.normalize(&p.value) == norm)
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
