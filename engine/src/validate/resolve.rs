//! Resolve: what the rules read besides the documents, decided once before any rule runs.
//! Each tenant's effective operators (the Fleet's with the tenant's overrides merged in) and
//! each pool's members (explicit `hosts` first, then selectors in pool-name order).

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::Cx;
use super::suggest::did_you_mean;
use crate::manifest::*;

/// The resolved parts of a fleet; `validate` stores them in [`Fleet::tenant_operators`] and
/// [`Fleet::pool_members`] before the rules read them.
pub(super) struct Resolved {
    /// Effective operators by tenant name; a tenant whose overrides do not merge is absent
    /// (and reported), so [`Fleet::operators_for`] falls back to the Fleet's.
    pub tenant_operators: BTreeMap<String, Operators>,
    /// Members by pool name, host names sorted.
    pub pool_members: BTreeMap<String, Vec<String>>,
}

impl Cx<'_> {
    /// Resolves operators and pool membership, reporting what cannot be resolved.
    pub(super) fn resolve(&mut self, f: &Fleet) -> Resolved {
        Resolved {
            tenant_operators: self.tenant_operators(f),
            pool_members: self.pool_members(f),
        }
    }

    /// Each tenant's operators: the Fleet's raw `operators` with the tenant's overrides
    /// merged in (RFC 7386), then typed.
    fn tenant_operators(&mut self, f: &Fleet) -> BTreeMap<String, Operators> {
        let fleet_raw = self.docs[f.fleet.doc.0]
            .value
            .pointer("/spec/operators")
            .cloned()
            .unwrap_or(Value::Null);
        let mut out = BTreeMap::new();
        for t in &f.tenants {
            let ops = match &t.spec.operators {
                None => f.fleet.spec.operators.clone(),
                Some(patch) => {
                    let mut merged = fleet_raw.clone();
                    merge_patch(&mut merged, patch);
                    match serde_path_to_error::deserialize::<_, Operators>(&merged) {
                        Ok(o) => o,
                        Err(e) => {
                            let p = e.path().to_string();
                            let d = self.err(
                                "schema",
                                t.doc.0,
                                "/spec/operators",
                                format!(
                                    "operator overrides do not merge into valid operators: {p}: {}",
                                    e.inner()
                                ),
                            );
                            self.push(d);
                            continue;
                        }
                    }
                }
            };
            out.insert(t.name().to_string(), ops);
        }
        out
    }

    /// Each pool's members: explicit `hosts` first, then selectors in pool-name order, so a
    /// selector only picks hosts no pool has claimed yet.
    fn pool_members(&mut self, f: &Fleet) -> BTreeMap<String, Vec<String>> {
        let host_names: Vec<&str> = f.hosts.iter().map(|h| h.name()).collect();
        let racks: Vec<&str> = f.racks.iter().map(|r| r.name()).collect();
        let mut owner: HashMap<String, (String, usize)> = HashMap::new(); // host -> (pool, doc)
        let mut members: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut diags = Vec::new();
        // Explicit members first, then selectors in pool-name order.
        for p in &f.pools {
            let i = p.doc.0;
            match (p.spec.hosts.is_empty(), &p.spec.selector) {
                (true, None) => diags.push(
                    self.err_key(
                        "pool-members",
                        i,
                        "/spec",
                        format!("pool `{}` has neither `hosts` nor `selector`", p.name()),
                    )
                    .hint("list its hosts, or give `selector: {count: N}`"),
                ),
                (false, Some(_)) => diags.push(
                    self.err_key(
                        "pool-members",
                        i,
                        "/spec/selector",
                        format!("pool `{}` has both `hosts` and `selector`", p.name()),
                    )
                    .hint("use one of them"),
                ),
                _ => {}
            }
            let mut list = Vec::new();
            for (n, h) in p.spec.hosts.iter().enumerate() {
                let ptr = format!("/spec/hosts/{n}");
                let Some(host) = f.host(h) else {
                    let mut e = self.err(
                        "unknown-reference",
                        i,
                        &ptr,
                        format!("pool `{}` lists host `{h}`, which is not defined", p.name()),
                    );
                    if let Some(m) = did_you_mean(h, host_names.iter().copied()) {
                        e = e.hint(format!("did you mean `{m}`?"));
                    }
                    diags.push(e);
                    continue;
                };
                if host.spec.spare {
                    diags.push(
                        self.err(
                            "spare-misuse",
                            i,
                            &ptr,
                            format!(
                                "host `{h}` is a spare and cannot be a member of pool `{}`",
                                p.name()
                            ),
                        )
                        .hint("list it under `spares`, or set `spare: false` on the host"),
                    );
                    continue;
                }
                if let Some((other, _)) = owner.get(h.as_str()) {
                    diags.push(
                        self.err(
                            "host-pool-conflict",
                            i,
                            &ptr,
                            format!("host `{h}` is already in pool `{other}`"),
                        )
                        .hint("a host belongs to at most one pool"),
                    );
                    continue;
                }
                owner.insert(h.clone(), (p.name().to_string(), i));
                list.push(h.clone());
            }
            members.insert(p.name().to_string(), list);
        }
        for p in &f.pools {
            let Some(sel) = &p.spec.selector else {
                continue;
            };
            let i = p.doc.0;
            if let Some(r) = &sel.rack
                && f.rack(r).is_none()
            {
                let mut e = self.err(
                    "unknown-reference",
                    i,
                    "/spec/selector/rack",
                    format!(
                        "pool `{}` selects rack `{r}`, which is not defined",
                        p.name()
                    ),
                );
                if let Some(m) = did_you_mean(r, racks.iter().copied()) {
                    e = e.hint(format!("did you mean `{m}`?"));
                }
                diags.push(e);
                continue;
            }
            let picked: Vec<String> = f
                .hosts
                .iter()
                .filter(|h| !h.spec.spare && !owner.contains_key(h.name()))
                .filter(|h| sel.rack.as_ref().is_none_or(|r| &h.spec.rack == r))
                .filter(|h| sel.gpu_model.is_none_or(|m| h.spec.gpu.model == m))
                .take(sel.count as usize)
                .map(|h| h.name().to_string())
                .collect();
            if picked.len() < sel.count as usize {
                diags.push(
                    self.err(
                        "selector-capacity",
                        i,
                        "/spec/selector/count",
                        format!(
                            "pool `{}` selects {} hosts but only {} free ones match",
                            p.name(),
                            sel.count,
                            picked.len()
                        ),
                    )
                    .hint("lower `count`, widen the selector, or add hosts"),
                );
            }
            for h in &picked {
                owner.insert(h.clone(), (p.name().to_string(), i));
            }
            members.insert(p.name().to_string(), picked);
        }
        self.diags.extend(diags);
        for v in members.values_mut() {
            v.sort();
        }
        members
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = Value::Object(serde_json::Map::new());
        }
        if let Value::Object(t) = target {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
    } else {
        *target = patch.clone();
    }
}
