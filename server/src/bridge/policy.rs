//! `[[policies]]` as the bridges apply them: whether a bridge is a record type's delete authority,
//! and, for a field with a conflict, which of the concurrent values its authority bridge wrote.
//! Pure (no I/O): the runner writes the resolutions, the conflicts endpoint reports the winners.
//!
//! A policy names a top-level field (`phones`); it governs every conflict inside it
//! (`phones.<slot>.value`). `authority = "latest"` picks the newest of the concurrent values by
//! the time the caller gives each (provider modification time, or the server's time for app
//! edits; see `latest.rs`); equal or unknown times keep Automerge's own resolution.

use driftless_crdt_model::{ConflictValue, FieldConflict};
use serde_json::Value;

use crate::config::{Authority, Policy};

/// The configured policies (validated at startup against the bridges).
#[derive(Debug, Clone, Default)]
pub struct Policies {
    entries: Vec<Policy>,
}

impl Policies {
    pub fn new(entries: &[Policy]) -> Self {
        Self {
            entries: entries.to_vec(),
        }
    }

    /// The bridge that decides `field` (a top-level field) of `record_type`, if one does.
    pub fn authority(&self, record_type: &str, field: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|p| p.record_type == record_type && p.field == field)
            .and_then(|p| match &p.authority {
                Authority::Bridge(id) => Some(id.as_str()),
                Authority::Latest => None,
            })
    }

    /// Whether `field` (a top-level field) of `record_type` is decided by `latest`.
    fn is_latest(&self, record_type: &str, field: &str) -> bool {
        self.entries.iter().any(|p| {
            p.record_type == record_type && p.field == field && p.authority == Authority::Latest
        })
    }

    /// Whether any field of `record_type` is decided by `latest`.
    pub fn has_latest_for(&self, record_type: &str) -> bool {
        self.entries.iter().any(|p| {
            p.record_type == record_type && p.field != "deleted" && p.authority == Authority::Latest
        })
    }

    /// For each conflict of a `latest` field: the newest value by `time_of` (unix ms), as
    /// `(field path, value)`, when it is not already Automerge's winner. A value without a time
    /// never wins; when the newest time is shared by different values, Automerge's winner stays
    /// if it is one of them, else the first of them in Automerge's order.
    pub fn latest_resolutions(
        &self,
        record_type: &str,
        conflicts: &[FieldConflict],
        time_of: impl Fn(&ConflictValue) -> Option<u64>,
    ) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for c in conflicts {
            let top = c.field.split('.').next().unwrap_or_default();
            if !self.is_latest(record_type, top) {
                continue;
            }
            let timed: Vec<(u64, &Value)> = c
                .values
                .iter()
                .filter_map(|v| time_of(v).map(|t| (t, &v.value)))
                .collect();
            let Some(newest) = timed.iter().map(|(t, _)| *t).max() else {
                continue;
            };
            let candidates: Vec<&Value> = timed
                .iter()
                .filter(|(t, _)| *t == newest)
                .map(|(_, v)| *v)
                .collect();
            if candidates.contains(&&c.winner) {
                continue;
            }
            if let Some(value) = candidates.first() {
                out.push((c.field.clone(), (*value).clone()));
            }
        }
        out
    }

    /// Whether any field of `record_type` has a bridge as its authority.
    pub fn has_authority_for(&self, record_type: &str) -> bool {
        self.entries.iter().any(|p| {
            p.record_type == record_type
                && p.field != "deleted"
                && matches!(p.authority, Authority::Bridge(_))
        })
    }

    /// Whether a provider delete from `bridge` tombstones a `record_type` record even while other
    /// bridges still hold it (contracts, Deletes).
    pub fn is_delete_authority(&self, record_type: &str, bridge: &str) -> bool {
        self.authority(record_type, "deleted") == Some(bridge)
    }

    /// For each conflict of a `record_type` document whose field has an authority bridge that
    /// wrote one of the values: the conflict's index and that value (the last the authority wrote,
    /// in Automerge's order). Conflicts without such a value keep Automerge's winner.
    fn authority_values<'c>(
        &self,
        record_type: &str,
        conflicts: &'c [FieldConflict],
    ) -> Vec<(usize, &'c Value)> {
        conflicts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let top = c.field.split('.').next().unwrap_or_default();
                let authority = self.authority(record_type, top)?;
                let value = c.values.iter().rev().find(|v| v.source == authority)?;
                Some((i, &value.value))
            })
            .collect()
    }

    /// Sets the `winner` of every conflict an authority decides to the authority's value.
    pub fn apply_winners(&self, record_type: &str, conflicts: &mut [FieldConflict]) {
        let winners: Vec<(usize, Value)> = self
            .authority_values(record_type, conflicts)
            .into_iter()
            .map(|(i, v)| (i, v.clone()))
            .collect();
        for (i, value) in winners {
            conflicts[i].winner = value;
        }
    }

    /// What the document must be told so that every reader sees the authority's value: `(field
    /// path, value)` for each decided conflict whose Automerge winner is another value.
    pub fn resolutions(
        &self,
        record_type: &str,
        conflicts: &[FieldConflict],
    ) -> Vec<(String, Value)> {
        self.authority_values(record_type, conflicts)
            .into_iter()
            .filter(|(i, v)| conflicts[*i].winner != **v)
            .map(|(i, v)| (conflicts[i].field.clone(), v.clone()))
            .collect()
    }
}

/// Sets the value at a dotted conflict path (`attendees.bob@example.com.response`) in a record's
/// JSON. Keys may contain dots, so at each level the longest key present wins. Returns whether the
/// path was found.
pub fn set_dotted(json: &mut Value, path: &str, value: Value) -> bool {
    let segments: Vec<&str> = path.split('.').collect();
    set_segments(json, &segments, value)
}

fn set_segments(json: &mut Value, segments: &[&str], value: Value) -> bool {
    let Value::Object(map) = json else {
        return false;
    };
    for n in (1..=segments.len()).rev() {
        let key = segments[..n].join(".");
        if !map.contains_key(&key) {
            continue;
        }
        if n == segments.len() {
            map.insert(key, value);
            return true;
        }
        if let Some(inner) = map.get_mut(&key) {
            return set_segments(inner, &segments[n..], value);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policies() -> Policies {
        Policies::new(&[
            Policy {
                record_type: "calendar_event".into(),
                field: "location".into(),
                authority: Authority::Bridge("cal".into()),
            },
            Policy {
                record_type: "calendar_event".into(),
                field: "deleted".into(),
                authority: Authority::Bridge("cal".into()),
            },
            Policy {
                record_type: "calendar_event".into(),
                field: "title".into(),
                authority: Authority::Latest,
            },
            Policy {
                record_type: "contact".into(),
                field: "phones".into(),
                authority: Authority::Bridge("crm".into()),
            },
        ])
    }

    fn conflict(field: &str, values: &[(&str, &str)], winner: &str) -> FieldConflict {
        FieldConflict {
            field: field.into(),
            values: values
                .iter()
                .map(|(v, s)| ConflictValue {
                    value: json!(v),
                    source: (*s).into(),
                    op: None,
                })
                .collect(),
            winner: json!(winner),
        }
    }

    #[test]
    fn the_delete_authority() {
        let p = policies();
        assert!(p.is_delete_authority("calendar_event", "cal"));
        assert!(!p.is_delete_authority("calendar_event", "other"));
        assert!(!p.is_delete_authority("contact", "cal"));
        assert!(!Policies::default().is_delete_authority("calendar_event", "cal"));
        assert!(p.has_authority_for("calendar_event") && p.has_authority_for("contact"));
        let only_deletes = Policies::new(&p.entries[1..2]);
        assert!(!only_deletes.has_authority_for("calendar_event"));
    }

    #[test]
    fn the_authority_value_wins_conflicts_of_its_field() {
        let p = policies();
        let mut conflicts = vec![
            conflict(
                "location",
                &[("App room", "app"), ("Cal room", "cal")],
                "App room",
            ),
            conflict("title", &[("A", "app"), ("B", "cal")], "A"),
            conflict(
                "status",
                &[("confirmed", "app"), ("tentative", "cal")],
                "confirmed",
            ),
            conflict("location", &[("x", "app"), ("y", "other")], "x"),
        ];
        assert_eq!(
            p.resolutions("calendar_event", &conflicts),
            vec![("location".to_owned(), json!("Cal room"))]
        );
        p.apply_winners("calendar_event", &mut conflicts);
        assert_eq!(conflicts[0].winner, json!("Cal room"));
        // "latest", no policy, or no value from the authority: Automerge's winner stays.
        assert_eq!(conflicts[1].winner, json!("A"));
        assert_eq!(conflicts[2].winner, json!("confirmed"));
        assert_eq!(conflicts[3].winner, json!("x"));
        // Already the winner: nothing to write.
        assert!(p.resolutions("calendar_event", &conflicts[..1]).is_empty());
        // A container policy covers the fields inside it; other record types are not affected.
        let phone = [conflict(
            "phones.s1.value",
            &[("+1", "crm"), ("+2", "app")],
            "+2",
        )];
        assert_eq!(
            p.resolutions("contact", &phone),
            vec![("phones.s1.value".to_owned(), json!("+1"))]
        );
        assert!(p.resolutions("calendar_event", &phone).is_empty());
    }

    #[test]
    fn dotted_paths_find_keys_with_dots() {
        let mut record = json!({
            "location": "a",
            "attendees": {"bob@example.com": {"response": "accepted"}},
        });
        assert!(set_dotted(&mut record, "location", json!("b")));
        assert!(set_dotted(
            &mut record,
            "attendees.bob@example.com.response",
            json!("declined")
        ));
        assert_eq!(record["location"], "b");
        assert_eq!(
            record["attendees"]["bob@example.com"]["response"],
            "declined"
        );
        assert!(!set_dotted(
            &mut record,
            "attendees.eve@example.com.response",
            json!("x")
        ));
    }

    #[test]
    fn latest_picks_the_newest_value_and_keeps_automerges_on_ties() {
        let p = Policies::new(&[Policy {
            record_type: "contact".into(),
            field: "phones".into(),
            authority: Authority::Latest,
        }]);
        assert!(p.has_latest_for("contact"));
        assert!(!p.has_latest_for("calendar_event"));
        assert!(!p.has_authority_for("contact"));
        let times = |pairs: &'static [(&'static str, u64)]| {
            move |v: &ConflictValue| {
                pairs
                    .iter()
                    .find(|(value, _)| v.value == json!(value))
                    .map(|(_, t)| *t)
            }
        };
        let c = vec![
            conflict("phones.p1.value", &[("+1", "app"), ("+2", "crm")], "+1"),
            conflict("name.full", &[("A", "app"), ("B", "crm")], "A"),
        ];
        // The CRM's edit is newer: it wins its phone; `name` has no policy.
        assert_eq!(
            p.latest_resolutions("contact", &c, times(&[("+1", 10), ("+2", 20), ("B", 99)])),
            vec![("phones.p1.value".to_owned(), json!("+2"))]
        );
        // The app's is newer: Automerge's winner already is it, nothing to write.
        assert!(
            p.latest_resolutions("contact", &c, times(&[("+1", 30), ("+2", 20)]))
                .is_empty()
        );
        // A tie keeps Automerge's winner; an untimed value never wins.
        assert!(
            p.latest_resolutions("contact", &c, times(&[("+1", 20), ("+2", 20)]))
                .is_empty()
        );
        assert!(
            p.latest_resolutions("contact", &c, times(&[("+1", 20)]))
                .is_empty()
        );
        assert_eq!(
            p.latest_resolutions("contact", &c, times(&[("+2", 1)])),
            vec![("phones.p1.value".to_owned(), json!("+2"))]
        );
    }
}
