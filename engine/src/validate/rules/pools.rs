//! Node pools (membership is resolved already): their tenant, spares, dedicated hosts,
//! GPUs, one GPU model, sharing, autoscaling, rollout budgets and rail alignment.

use std::collections::{BTreeSet, HashMap};

use crate::manifest::*;
use crate::validate::Cx;
use crate::validate::suggest::did_you_mean;

impl Cx<'_> {
    pub(super) fn pools(&mut self, f: &Fleet) {
        self.pool_tenants(f);
        self.spares_and_dedicated_hosts(f);
        self.pool_hosts_have_gpus(f);
        for p in &f.pools {
            self.pool_shape(f, p);
        }
    }

    /// A pool's tenant exists.
    fn pool_tenants(&mut self, f: &Fleet) {
        let tenants: Vec<&str> = f.tenants.iter().map(|t| t.name()).collect();
        for p in &f.pools {
            let i = p.doc.0;
            if f.tenant(&p.spec.tenant).is_none() {
                let mut e = self.err(
                    "unknown-reference",
                    i,
                    "/spec/tenant",
                    format!(
                        "pool `{}` names tenant `{}`, which is not defined",
                        p.name(),
                        p.spec.tenant
                    ),
                );
                if let Some(m) = did_you_mean(&p.spec.tenant, tenants.iter().copied()) {
                    e = e.hint(format!("did you mean `{m}`?"));
                }
                self.push(e);
            }
        }
    }

    /// Spares are defined and `spare: true`; a dedicated tenant's hosts and spares serve no
    /// other tenant.
    fn spares_and_dedicated_hosts(&mut self, f: &Fleet) {
        let host_names: Vec<&str> = f.hosts.iter().map(|h| h.name()).collect();
        let mut users: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for p in &f.pools {
            for h in f.members(p.name()) {
                if let Some(host) = f.host(h) {
                    users
                        .entry(host.name())
                        .or_default()
                        .insert(p.spec.tenant.as_str());
                }
            }
        }
        for p in &f.pools {
            let i = p.doc.0;
            for (n, s) in p.spec.spares.iter().enumerate() {
                let ptr = format!("/spec/spares/{n}");
                match f.host(s) {
                    None => {
                        let mut e = self.err(
                            "unknown-reference",
                            i,
                            &ptr,
                            format!(
                                "pool `{}` lists spare `{s}`, which is not defined",
                                p.name()
                            ),
                        );
                        if let Some(m) = did_you_mean(s, host_names.iter().copied()) {
                            e = e.hint(format!("did you mean `{m}`?"));
                        }
                        self.push(e);
                    }
                    Some(h) if !h.spec.spare => {
                        self.push(self.err("spare-misuse", i, &ptr, format!("pool `{}` lists `{s}` as a spare, but the host is not `spare: true`", p.name())).hint("set `spare: true` on the host so no pool counts it as capacity"));
                    }
                    Some(h) => {
                        users
                            .entry(h.name())
                            .or_default()
                            .insert(p.spec.tenant.as_str());
                    }
                }
            }
        }
        for p in &f.pools {
            let i = p.doc.0;
            let Some(t) = f.tenant(&p.spec.tenant) else {
                continue;
            };
            if t.spec.isolation != Isolation::DedicatedHosts {
                continue;
            }
            for h in p.spec.spares.iter().chain(f.members(p.name())) {
                if let Some(u) = users.get(h.as_str())
                    && let Some(other) = u.iter().find(|o| **o != t.name())
                {
                    let ptr = p
                        .spec
                        .spares
                        .iter()
                        .position(|s| s == h)
                        .map_or("/spec".to_string(), |n| format!("/spec/spares/{n}"));
                    self.push(self.err("dedicated-hosts", i, &ptr, format!("tenant `{}` has dedicated hosts, but host `{h}` also serves tenant `{other}`", t.name())).hint("give the dedicated tenant its own hosts and spares"));
                }
            }
        }
    }

    /// A pool's members have GPUs.
    fn pool_hosts_have_gpus(&mut self, f: &Fleet) {
        for p in &f.pools {
            for h in f.members(p.name()) {
                if let Some(h) = f.host(h).filter(|h| h.spec.gpu.count == 0) {
                    self.push(
                        self.err(
                            "gpu-count",
                            h.doc.0,
                            "/spec/gpu/count",
                            format!("host `{}` has 0 GPUs but is a member of node pool `{}`", h.name(), p.name()),
                        )
                        .hint("a node pool's hosts have at least one GPU; a host with no GPU stays out of pools"),
                    );
                }
            }
        }
    }

    /// One pool's members and settings agree: one GPU model, sharing that fits it,
    /// autoscaling bounds, non-zero budgets, the same NIC rails when rail-aligned.
    fn pool_shape(&mut self, f: &Fleet, p: &NodePool) {
        let i = p.doc.0;
        let hosts: Vec<&Host> = f.members_from(p).collect();
        let models: BTreeSet<GpuModel> = hosts.iter().map(|h| h.spec.gpu.model).collect();
        if models.len() > 1 {
            let list: Vec<String> = models.iter().map(|m| m.to_string()).collect();
            self.push(self.err_key("mixed-gpu-models", i, if p.spec.hosts.is_empty() { "/spec/selector" } else { "/spec/hosts" }, format!("pool `{}` mixes GPU models: {}", p.name(), list.join(", "))).hint("split it into one pool per GPU model (drivers, MIG profiles and NIM profiles are per model)"));
        }
        let model = models.iter().next().copied();
        let min_count = hosts.iter().map(|h| h.spec.gpu.count).min().unwrap_or(0);
        if let (Some(model), Some(sharing)) = (model, &p.spec.gpu_sharing) {
            self.diags
                .extend(self.sharing(f, p, model, min_count, sharing));
        }
        if let Some(a) = &p.spec.autoscaling
            && a.min > a.max
        {
            self.push(self.err(
                "autoscaling",
                i,
                "/spec/autoscaling/min",
                format!("autoscaling min {} is above max {}", a.min, a.max),
            ));
        }
        if let Some(r) = &p.spec.rollout {
            for (v, k) in [
                (r.max_unavailable, "maxUnavailable"),
                (
                    r.max_unavailable_per_fault_domain,
                    "maxUnavailablePerFaultDomain",
                ),
            ] {
                if v == Some(0) {
                    self.push(
                        self.err(
                            "rollout-budget",
                            i,
                            &format!("/spec/rollout/{k}"),
                            "a disruption budget of 0 blocks every disruptive change forever",
                        )
                        .hint("use at least 1; to pause changes, stop applying instead"),
                    );
                }
            }
        }
        if p.spec.topology.rail_aligned {
            let rails: BTreeSet<Vec<(String, NicType, String)>> = hosts
                .iter()
                .map(|h| {
                    h.spec
                        .nics
                        .iter()
                        .map(|n| (n.name.clone(), n.kind, n.speed.clone()))
                        .collect()
                })
                .collect();
            if rails.len() > 1 || hosts.iter().any(|h| h.spec.nics.is_empty()) {
                self.push(self.err("rail-aligned", i, "/spec/topology/railAligned", format!("pool `{}` is rail-aligned but its hosts do not all have the same NIC rails", p.name())).hint("give every member the same `nics` (name, type, speed), or drop railAligned"));
            }
        }
    }
}
