//! The in-memory provider's field-level comparison (each real provider has its own).
//!
//! The rule throughout fleetform: only fields the manifest sets are compared;
//! fields the live system adds (defaults, status) are not drift.

use serde_json::Value;

use crate::provider::FieldChange;

/// Compares `desired` with `live` over the fields `desired` sets, returning one
/// change per differing leaf, with JSON pointers. Objects recurse; arrays and
/// scalars compare whole.
pub fn desired_subset(desired: &Value, live: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", desired, Some(live), &mut out);
    out
}

fn walk(path: &str, desired: &Value, live: Option<&Value>, out: &mut Vec<FieldChange>) {
    match (desired, live) {
        (Value::Object(d), Some(Value::Object(l))) => {
            for (k, dv) in d {
                let p = format!("{path}/{}", escape(k));
                walk(&p, dv, l.get(k), out);
            }
        }
        (d, l) => {
            if l != Some(d) && !(d.is_null() && l.is_none()) {
                out.push(FieldChange {
                    path: if path.is_empty() {
                        "/".into()
                    } else {
                        path.into()
                    },
                    before: l.cloned(),
                    after: Some(d.clone()),
                    sensitive: false,
                    changed_by: None,
                });
            }
        }
    }
}

/// Escapes a key for a JSON pointer (RFC 6901).
pub fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_the_live_side_adds_are_not_changes() {
        let d = json!({"spec": {"a": 1}});
        let l = json!({"spec": {"a": 1, "defaulted": true}, "status": {"ready": true}});
        assert!(desired_subset(&d, &l).is_empty());
    }

    #[test]
    fn a_changed_leaf_is_reported_with_its_pointer() {
        let d = json!({"spec": {"driver": {"version": "570"}, "x/y": 1}});
        let l = json!({"spec": {"driver": {"version": "550"}, "x/y": 1}});
        let c = desired_subset(&d, &l);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].path, "/spec/driver/version");
        assert_eq!(c[0].before, Some(json!("550")));
    }

    #[test]
    fn keys_with_slashes_are_escaped() {
        let d = json!({"labels": {"nvidia.com/mig.config": "all-1g.10gb"}});
        let c = desired_subset(&d, &json!({"labels": {}}));
        assert_eq!(c[0].path, "/labels/nvidia.com~1mig.config");
    }
}
