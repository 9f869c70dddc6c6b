//! Pure JSON work for the diff: cleaning server-owned fields, projecting a live object onto the
//! shape of the desired one, comparing two objects field by field, and reading `managedFields`
//! (`fieldsV1`) to find which field manager owns a path.

use fleetform_contract::sensitive::digest_bytes;
use serde_json::{Map, Value};

/// Metadata the server owns; never compared, never sent.
const SERVER_METADATA: &[&str] = &[
    "managedFields",
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "selfLink",
];

/// Removes `status` and the server-owned metadata from an object.
pub fn clean(object: &mut Value) {
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in SERVER_METADATA {
                meta.remove(*k);
            }
            if meta
                .get("annotations")
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
            {
                meta.remove("annotations");
            }
        }
    }
}

/// True for a core/v1 Secret.
pub fn is_secret(object: &Value) -> bool {
    object.get("apiVersion").and_then(Value::as_str) == Some("v1")
        && object.get("kind").and_then(Value::as_str) == Some("Secret")
}

/// Replaces every value of a Secret's `data` with its digest, so observations never carry the
/// secret and diffs still see a change.
pub fn digest_secret_data(object: &mut Value) {
    if !is_secret(object) {
        return;
    }
    if let Some(data) = object.get_mut("data").and_then(Value::as_object_mut) {
        for v in data.values_mut() {
            let bytes = v.as_str().unwrap_or_default().as_bytes().to_vec();
            *v = Value::String(digest_bytes(&bytes));
        }
    }
}

/// Escapes one JSON-pointer segment.
fn escape(seg: &str) -> String {
    seg.replace('~', "~0").replace('/', "~1")
}

/// Splits a JSON pointer into unescaped segments.
pub fn segments(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// The element of `candidates` that corresponds to `element` of another list: the one with the same
/// `name` when list elements are named (containers, env, volumes), otherwise the one at `index`.
fn counterpart<'a>(element: &Value, index: usize, candidates: &'a [Value]) -> Option<&'a Value> {
    match element.get("name").and_then(Value::as_str) {
        Some(name) => candidates
            .iter()
            .find(|c| c.get("name").and_then(Value::as_str) == Some(name)),
        None => candidates.get(index),
    }
}

/// `actual` restricted to the fields `shape` has (the desired object's fields), so server
/// defaults and other managers' fields do not show. Named list elements are matched by name.
pub fn project(actual: &Value, shape: &Value) -> Value {
    match (actual, shape) {
        (Value::Object(a), Value::Object(s)) => {
            let mut out = Map::new();
            for (k, sv) in s {
                if let Some(av) = a.get(k) {
                    out.insert(k.clone(), project(av, sv));
                }
            }
            Value::Object(out)
        }
        (Value::Array(a), Value::Array(s)) => {
            let named = !s.is_empty()
                && s.iter()
                    .all(|e| e.get("name").and_then(Value::as_str).is_some());
            if named {
                Value::Array(
                    s.iter()
                        .enumerate()
                        .filter_map(|(i, se)| counterpart(se, i, a).map(|ae| project(ae, se)))
                        .collect(),
                )
            } else if a.len() == s.len() {
                Value::Array(a.iter().zip(s).map(|(ae, se)| project(ae, se)).collect())
            } else {
                actual.clone()
            }
        }
        _ => actual.clone(),
    }
}

/// True when the desired object sets the field at `pointer` (of the object `reference`, whose list
/// indexes the pointer uses), or a parent of it that is a leaf (scalar or list) in the desired object.
pub fn covered(desired: &Value, reference: &Value, pointer: &str) -> bool {
    let mut d = desired;
    let mut r = Some(reference);
    for seg in segments(pointer) {
        match d {
            Value::Object(dm) => match dm.get(&seg) {
                Some(next) => {
                    d = next;
                    r = r.and_then(|r| r.get(&seg));
                }
                None => return false,
            },
            Value::Array(da) => {
                let Ok(i) = seg.parse::<usize>() else {
                    return false;
                };
                let element = r.and_then(|r| r.get(i));
                let next = match element {
                    Some(e) => counterpart(e, i, da),
                    None => da.get(i),
                };
                match next {
                    Some(next) => {
                        d = next;
                        r = element;
                    }
                    // An element the desired list does not have: a change of the list itself
                    // only matters when the list is not named (then it is replaced whole).
                    None => return !da.iter().any(|e| e.get("name").is_some()),
                }
            }
            _ => return true,
        }
    }
    true
}

/// One differing field: pointer, value before, value after.
pub type Difference = (String, Option<Value>, Option<Value>);

/// Every leaf where `before` and `after` differ, as JSON pointers. Lists of equal length are compared
/// element by element; otherwise the whole list is one difference.
pub fn differences(
    before: Option<&Value>,
    after: Option<&Value>,
    pointer: &str,
    out: &mut Vec<Difference>,
) {
    match (before, after) {
        (Some(Value::Object(b)), Some(Value::Object(a))) => {
            let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                differences(b.get(k), a.get(k), &format!("{pointer}/{}", escape(k)), out);
            }
        }
        (Some(Value::Array(b)), Some(Value::Array(a))) if a.len() == b.len() => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                differences(Some(bv), Some(av), &format!("{pointer}/{i}"), out);
            }
        }
        (b, a) if b != a => out.push((pointer.to_string(), b.cloned(), a.cloned())),
        _ => {}
    }
}

/// The `f:<key>` member of a fieldsV1 map, without allocating for the usual short keys.
fn field<'a>(fm: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    let mut buf = [0u8; 128];
    let n = key.len() + 2;
    if n > buf.len() {
        return fm.get(&format!("f:{key}"));
    }
    buf[..2].copy_from_slice(b"f:");
    buf[2..n].copy_from_slice(key.as_bytes());
    std::str::from_utf8(&buf[..n]).ok().and_then(|k| fm.get(k))
}

/// True when the `fieldsV1` set `fields` contains the field at `pointer` of `live` (or a parent
/// that is a leaf of the set, such as an atomic list).
fn fields_contain<S: AsRef<str>>(fields: &Value, live: &Value, segs: &[S]) -> bool {
    let Some(fm) = fields.as_object() else {
        return false;
    };
    let Some((seg, rest)) = segs.split_first() else {
        return true;
    };
    let seg = seg.as_ref();
    if fm.is_empty() {
        // A leaf of the set owns everything under it.
        return true;
    }
    match live {
        Value::Object(lm) => match (field(fm, seg), lm.get(seg)) {
            (Some(f), Some(l)) => fields_contain(f, l, rest),
            (Some(f), None) => rest.is_empty() || f.as_object().is_some_and(Map::is_empty),
            _ => false,
        },
        Value::Array(la) => {
            let Ok(i) = seg.parse::<usize>() else {
                return false;
            };
            let Some(element) = la.get(i) else {
                return false;
            };
            for (key, sub) in fm {
                let hit = if let Some(k) = key.strip_prefix("k:") {
                    serde_json::from_str::<Map<String, Value>>(k)
                        .is_ok_and(|km| km.iter().all(|(kk, kv)| element.get(kk) == Some(kv)))
                } else if let Some(v) = key.strip_prefix("v:") {
                    serde_json::from_str::<Value>(v).is_ok_and(|v| &v == element)
                } else if let Some(ix) = key.strip_prefix("i:") {
                    ix.parse::<usize>() == Ok(i)
                } else {
                    false
                };
                if hit {
                    return fields_contain(sub, element, rest);
                }
            }
            false
        }
        _ => false,
    }
}

/// `(manager, fieldsV1)` of each `metadata.managedFields` entry, status subresource entries
/// excluded.
fn field_sets(managed_fields: &Value) -> impl Iterator<Item = (&str, &Value)> {
    managed_fields
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e.get("subresource")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        })
        .filter_map(|e| Some((e.get("manager")?.as_str()?, e.get("fieldsV1")?)))
}

/// The field managers (from `metadata.managedFields` of `live`) that own the field at `pointer`,
/// status subresource entries excluded.
pub fn owners(live: &Value, managed_fields: &Value, pointer: &str) -> Vec<String> {
    let segs = segments(pointer);
    let mut out: Vec<String> = Vec::new();
    for (manager, fields) in field_sets(managed_fields) {
        if fields_contain(fields, live, &segs) && !out.iter().any(|m| m == manager) {
            out.push(manager.to_string());
        }
    }
    out
}

/// True when every field `desired` sets is present in `live` and owned by
/// fleetform alone. Called only when fleetform's last successful apply was this
/// very object: then the live values are what that apply produced, because
/// anyone who changed or removed such a field since (an update, a forced apply)
/// would own it now or have dropped it from fleetform's set. A list counts as
/// one field when fleetform owns it atomically (`{}` in its fieldsV1). A list
/// owned element by element (containers, ports, CRD versions) counts when nobody
/// else owns any part of it and the live list, projected onto the desired one
/// (named elements matched by name, server defaults dropped), equals it: an
/// element someone removed leaves no trace in anyone's set but shows there, and
/// then the caller keeps the server's dry-run.
pub fn untouched_since_applied(desired: &Value, live: &Value, managed_fields: &Value) -> bool {
    let mut path = Vec::new();
    untouched_under(desired, live, managed_fields, &mut path)
}

/// [`untouched_since_applied`] for the part of `desired` at `path` (map keys only: a list is
/// a leaf), walked without building pointer strings.
fn untouched_under<'a>(
    desired: &'a Value,
    live: &Value,
    managed_fields: &Value,
    path: &mut Vec<&'a str>,
) -> bool {
    match desired {
        Value::Object(m) if !m.is_empty() => m.iter().all(|(k, child)| {
            path.push(k);
            let untouched = untouched_under(child, live, managed_fields, path);
            path.pop();
            untouched
        }),
        _ if IDENTITY.contains(&path.as_slice()) => true,
        _ => {
            let Some(here) = at(live, path) else {
                // Applied as a zero value the server does not store (omitempty). An empty
                // string, list or map means the same as none. `false` and `0` may not (a
                // pointer field keeps them), so they count only while still in fleetform's
                // set alone (`hostNetwork: false`): had someone removed one, it would have
                // left that set.
                return is_zero(desired)
                    || ((matches!(desired, Value::Bool(false)) || desired.as_f64() == Some(0.0))
                        && sole_owner(live, managed_fields, path, super::FIELD_MANAGER));
            };
            sole_owner(live, managed_fields, path, super::FIELD_MANAGER)
                && (!desired.is_array()
                    || owned_atomically(managed_fields, super::FIELD_MANAGER, path)
                    // A list kept element by element (containers, ports, CRD versions): nobody
                    // else owns any part of it (sole_owner), so it is as last applied unless an
                    // element was removed or rewritten without taking ownership; the projection
                    // shows both. Server defaults inside elements are projected away.
                    || as_applied(&project(here, desired), desired))
        }
    }
}

/// True when `live` (already projected onto `desired`) is what applying `desired` leaves:
/// equal, except that an empty string, null, `{}` or `[]` the desired object sets may be
/// absent, because the API server drops such zero values (`omitempty`) when it stores the
/// object (`env: [{name: X, value: ""}]` comes back as `{name: X}`).
fn as_applied(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => as_applied(lv, dv),
            None => is_zero(dv),
        }),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| as_applied(lv, dv))
        }
        _ => live == desired,
    }
}

/// A value the API server may drop when storing an object.
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The value at `path` (map keys) of `v`.
fn at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |node, key| node.get(key))
}

/// True when `manager` owns the field at `path` of `live` and no other manager does (status
/// subresource entries aside).
fn sole_owner(live: &Value, managed_fields: &Value, path: &[&str], manager: &str) -> bool {
    let mut owned = false;
    for (name, fields) in field_sets(managed_fields) {
        if fields_contain(fields, live, path) {
            if name != manager {
                return false;
            }
            owned = true;
        }
    }
    owned
}

/// The fields every object names to say which object it is: not owned by anyone.
const IDENTITY: [&[&str]; 4] = [
    &["apiVersion"],
    &["kind"],
    &["metadata", "name"],
    &["metadata", "namespace"],
];

/// True when `manager`'s (non-subresource) fieldsV1 holds the field at
/// `path` (map keys) as a leaf: an atomic value it owns whole.
fn owned_atomically(managed_fields: &Value, manager: &str, path: &[&str]) -> bool {
    field_sets(managed_fields)
        .filter(|(name, _)| *name == manager)
        .any(|(_, fields)| {
            let mut node = Some(fields);
            for key in path {
                node = node.and_then(Value::as_object).and_then(|m| field(m, key));
            }
            node.and_then(Value::as_object).is_some_and(Map::is_empty)
        })
}

/// The managers named in `metadata.managedFields`.
pub fn managers(managed_fields: &Value) -> Vec<String> {
    let mut out: Vec<String> = managed_fields
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("manager").and_then(Value::as_str).map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn projection_keeps_only_desired_fields_and_matches_named_elements() {
        let live = json!({"spec": {"a": 1, "default": true, "containers": [
            {"name": "sidecar", "image": "x"}, {"name": "app", "image": "y", "imagePullPolicy": "Always"}]}});
        let shape = json!({"spec": {"a": 0, "containers": [{"name": "app", "image": ""}]}});
        assert_eq!(
            project(&live, &shape),
            json!({"spec": {"a": 1, "containers": [{"name": "app", "image": "y"}]}})
        );
        assert_eq!(
            project(&json!({"dcgm": {"enabled": true}}), &json!({"dcgm": {}})),
            json!({"dcgm": {}})
        );
    }

    #[test]
    fn a_stored_object_may_lack_the_empty_values_it_was_applied_with() {
        let desired = json!([{"name": "a", "value": "", "opts": {}, "n": 0}]);
        assert!(as_applied(&json!([{"name": "a", "n": 0}]), &desired));
        // Zero numbers and false are kept by the server: their absence is a change.
        assert!(!as_applied(&json!([{"name": "a"}]), &desired));
        assert!(!as_applied(
            &json!([{"name": "a", "value": "x", "n": 0}]),
            &desired
        ));
        assert!(
            !as_applied(&json!([]), &desired),
            "a missing element is a change"
        );
    }

    #[test]
    fn differences_are_leaf_pointers() {
        let mut out = Vec::new();
        differences(
            Some(&json!({"data": {"a": "1", "b/c": "2"}, "l": [1, 2]})),
            Some(&json!({"data": {"a": "9", "b/c": "2", "n": "3"}, "l": [1, 2, 3]})),
            "",
            &mut out,
        );
        let paths: Vec<_> = out.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(paths, ["/data/a", "/data/n", "/l"]);
    }

    #[test]
    fn coverage_follows_the_desired_object_and_named_lists() {
        let desired = json!({"spec": {"dcgm": {}, "tags": ["a"], "containers": [{"name": "app", "image": "i"}]}});
        let reference = json!({"spec": {"containers": [{"name": "side"}, {"name": "app", "image": "j", "tty": false}]}});
        assert!(covered(&desired, &reference, "/spec/containers/1/image"));
        assert!(!covered(&desired, &reference, "/spec/containers/1/tty"));
        assert!(!covered(&desired, &reference, "/spec/containers/0/image"));
        assert!(!covered(&desired, &reference, "/spec/dcgm/enabled"));
        assert!(covered(&desired, &reference, "/spec/tags/0"));
    }

    #[test]
    fn owners_are_read_from_fields_v1() {
        let live = json!({"data": {"k": "v"}, "spec": {"containers": [{"name": "app", "image": "y"}], "taints": [{"key": "a"}]}});
        let mf = json!([
            {"manager": "fleetform", "operation": "Apply", "fieldsV1": {"f:spec": {"f:taints": {},
                "f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:name": {}}}}}},
            {"manager": "kubectl-edit", "operation": "Apply", "fieldsV1": {"f:data": {"f:k": {}},
                "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {"f:image": {}}}}}},
            {"manager": "kubelet", "operation": "Update", "subresource": "status", "fieldsV1": {"f:data": {"f:k": {}}}}
        ]);
        assert_eq!(owners(&live, &mf, "/data/k"), ["kubectl-edit"]);
        assert_eq!(
            owners(&live, &mf, "/spec/containers/0/image"),
            ["kubectl-edit"]
        );
        assert_eq!(owners(&live, &mf, "/spec/taints/0/key"), ["fleetform"]);
        assert_eq!(managers(&mf), ["fleetform", "kubectl-edit", "kubelet"]);
    }

    #[test]
    fn secret_data_is_replaced_by_digests() {
        let mut s = json!({"apiVersion": "v1", "kind": "Secret", "data": {"k": "c2VjcmV0"}});
        digest_secret_data(&mut s);
        let v = s.pointer("/data/k").and_then(Value::as_str).unwrap();
        assert!(v.starts_with("sha256:") && !v.contains("c2VjcmV0"));
    }
}
