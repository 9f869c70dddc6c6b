//! What a NICo object is to the diff and to a request: the ownership mark and adoption by
//! name, the live object projected into the desired spec's shape, and the request body built
//! from a spec (references resolved to ids, the fleet's mark added).

use super::*;

/// True when `obj` carries this fleet's ownership mark (another fleet's is not enough).
pub(super) fn owned(k: &Kind, obj: &Value, spec: &NicoSpec) -> bool {
    match k.owner {
        Owner::Label => {
            obj.pointer(&format!("/labels/{}", OWNER_LABEL.replace('/', "~1")))
                == Some(&json!(spec.owner_value()))
        }
        Owner::Site => true,
        Owner::Description => obj
            .get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| d.ends_with(spec.owner_mark().trim_start())),
    }
}

/// Finds the objects named `name` (and, when both say, on the same site).
pub(super) fn by_name<'a>(objects: &'a [Value], spec: &NicoSpec) -> Vec<&'a Value> {
    let site = spec.fields.get("siteId");
    // A machine's name in fleetform is its NICo id.
    let key = if spec.kind == "machine" { "id" } else { "name" };
    objects
        .iter()
        .filter(|o| o.get(key).and_then(Value::as_str) == Some(spec.name.as_str()))
        .filter(|o| match (site, o.get("siteId")) {
            (Some(a), Some(b)) if !b.is_null() => a == b,
            _ => true,
        })
        .collect()
}

pub(super) fn conflict(id: &ResourceId, k: &Kind, obj: &Value, spec: &NicoSpec) -> ProviderError {
    let how = match k.owner {
        Owner::Label => format!("label {OWNER_LABEL}={}", spec.owner_value()),
        Owner::Description => {
            format!("description ending in `{}`", spec.owner_mark().trim_start())
        }
        Owner::Site => String::new(),
    };
    ProviderError::permanent(
        id,
        format!(
            "conflict: NICo already has a {} named `{}` (id {}) that fleetform did not create (no {how}); rename it in the manifest, or mark the existing one to let fleetform adopt it",
            k.name,
            obj.get("name").and_then(Value::as_str).unwrap_or("?"),
            obj.get("id").and_then(Value::as_str).unwrap_or("?"),
        ),
    )
}

/// The live value in the shape of the desired one: objects keep only the keys the desired
/// value names (the server owns the rest); arrays are compared element by element.
pub(super) fn project(desired: &Value, live: Option<&Value>) -> Value {
    match (desired, live) {
        (_, None) => Value::Null,
        (Value::Object(d), Some(Value::Object(l))) => Value::Object(
            d.iter()
                .map(|(k, dv)| (k.clone(), project(dv, l.get(k))))
                .collect(),
        ),
        (Value::Array(d), Some(Value::Array(l))) => Value::Array(
            l.iter()
                .enumerate()
                .map(|(i, lv)| match d.get(i) {
                    Some(dv) => project(dv, Some(lv)),
                    None => lv.clone(),
                })
                .collect(),
        ),
        (_, Some(l)) => l.clone(),
    }
}

/// The live object in the desired spec's shape: `{fields, refs}`.
pub(super) fn observed_state(
    k: &Kind,
    spec: &NicoSpec,
    obj: &Value,
    names: &HashMap<String, HashMap<String, String>>,
) -> Value {
    let mut fields = Map::new();
    for (key, want) in &spec.fields {
        let live = obj.get(key);
        let v = match key.as_str() {
            // A PATCH replaces labels whole: compare them whole, less the ownership label.
            "labels" => {
                let mut l = live.cloned().unwrap_or(json!({}));
                if let Some(m) = l.as_object_mut() {
                    m.remove(OWNER_LABEL);
                }
                l
            }
            // Maintenance mode shows as the machine's status.
            "maintenance" if k.owner == Owner::Site => project(
                want,
                Some(&json!({
                    "enabled": obj.get("status").and_then(Value::as_str) == Some("Maintenance"),
                    "message": obj.get("maintenanceMessage").cloned().unwrap_or(Value::Null),
                })),
            ),
            "description" if k.owner == Owner::Description => live
                .and_then(Value::as_str)
                .map(|d| {
                    json!(
                        d.strip_suffix(spec.owner_mark().trim_start())
                            .unwrap_or(d)
                            .trim_end()
                    )
                })
                .unwrap_or(Value::Null),
            _ => project(want, live),
        };
        fields.insert(key.clone(), v);
    }
    let mut refs = Map::new();
    for (ptr, r) in &spec.refs {
        let name = obj
            .pointer(ptr)
            .and_then(Value::as_str)
            .and_then(|id| names.get(&r.kind).and_then(|m| m.get(id)))
            .map_or(Value::Null, |n| json!({"kind": r.kind, "name": n}));
        refs.insert(ptr.clone(), name);
    }
    json!({"fields": fields, "refs": refs})
}

pub(super) fn desired_state(spec: &NicoSpec) -> Value {
    let fields: Map<String, Value> = spec
        .fields
        .iter()
        .map(|(k, v)| {
            let v = if k == "description" {
                json!(v.as_str().unwrap_or("").trim_end())
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    let refs: Map<String, Value> = spec
        .refs
        .iter()
        .map(|(p, r)| (p.clone(), json!({"kind": r.kind, "name": r.name})))
        .collect();
    json!({"fields": fields, "refs": refs})
}

pub(super) fn escape(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Sets `value` at JSON pointer `ptr`, creating objects and array slots on the way.
pub(super) fn set_pointer(root: &mut Value, ptr: &str, value: Value) {
    let mut cur = root;
    let segs: Vec<String> = ptr
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        if let Ok(n) = seg.parse::<usize>()
            && let Value::Array(a) = cur
        {
            while a.len() <= n {
                a.push(json!({}));
            }
            if last {
                a[n] = value;
                return;
            }
            cur = &mut a[n];
            continue;
        }
        if !cur.is_object() {
            *cur = json!({});
        }
        let Value::Object(m) = cur else { return };
        if last {
            m.insert(seg.clone(), value);
            return;
        }
        let next_is_index = segs[i + 1].parse::<usize>().is_ok();
        cur = m
            .entry(seg.clone())
            .or_insert_with(|| if next_is_index { json!([]) } else { json!({}) });
    }
}

/// The full request body: fields, name, resolved references and the ownership mark.
pub(super) async fn body(
    id: &ResourceId,
    spec: &NicoSpec,
    k: &Kind,
    client: &NicoClient,
    deadline: Instant,
) -> Result<Value, ProviderError> {
    let mut b = Value::Object(spec.fields.clone());
    if k.owner != Owner::Site {
        b["name"] = json!(spec.name);
    }
    let mut lists: HashMap<&str, Vec<Value>> = HashMap::new();
    for (ptr, r) in &spec.refs {
        let rk = kind(&r.kind).ok_or_else(|| {
            ProviderError::permanent(id, format!("refs {ptr}: unknown kind `{}`", r.kind))
        })?;
        if !lists.contains_key(rk.name) {
            let l = client
                .list(rk.collection, deadline)
                .await
                .map_err(|e| api_err(id, spec, e))?;
            lists.insert(rk.name, l);
        }
        let target = lists[rk.name]
            .iter()
            .find(|o| o.get("name").and_then(Value::as_str) == Some(r.name.as_str()))
            .and_then(|o| o.get("id").cloned())
            .ok_or_else(|| {
                ProviderError::transient(
                    id,
                    format!(
                        "waits for {}: NICo has no {} named `{}` yet",
                        crate::spec::nico_id(&spec.site, &r.kind, &r.name),
                        r.kind,
                        r.name
                    ),
                )
            })?;
        set_pointer(&mut b, ptr, target);
    }
    match k.owner {
        Owner::Label => {
            if !b.get("labels").is_some_and(Value::is_object) {
                b["labels"] = json!({});
            }
            b["labels"][OWNER_LABEL] = json!(spec.owner_value());
        }
        Owner::Description => {
            let d = b.get("description").and_then(Value::as_str).unwrap_or("");
            let d = format!("{}{}", d.trim_end(), spec.owner_mark());
            b["description"] = json!(d.trim_start());
        }
        Owner::Site => {}
    }
    Ok(b)
}

pub(super) fn top_segment(path: &str) -> String {
    // `/fields/labels` → labels; `/refs/~1interfaces~10~1subnetId` → interfaces
    let mut it = path.split('/').skip(1);
    match it.next() {
        Some("fields") => it
            .next()
            .unwrap_or("")
            .replace("~1", "/")
            .replace("~0", "~"),
        Some("refs") => {
            let ptr = it
                .next()
                .unwrap_or("")
                .replace("~1", "/")
                .replace("~0", "~");
            ptr.split('/').nth(1).unwrap_or("").to_string()
        }
        _ => String::new(),
    }
}

pub(super) fn field_changes(desired: &Value, live: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    for section in ["fields", "refs"] {
        let empty = Map::new();
        let d = desired[section].as_object().unwrap_or(&empty);
        let l = live[section].as_object().unwrap_or(&empty);
        for (key, dv) in d {
            let lv = l.get(key).filter(|v| !v.is_null());
            if lv != Some(dv) {
                out.push(FieldChange {
                    path: format!("/{section}/{}", escape(key)),
                    before: lv.cloned(),
                    after: Some(dv.clone()),
                    sensitive: false,
                    changed_by: None,
                });
            }
        }
    }
    out
}
