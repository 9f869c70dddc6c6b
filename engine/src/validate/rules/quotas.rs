//! Tenant quotas against what their pools hold, and the quotas' sum against the fleet;
//! each tenant's versions against the compatibility rows (compat.rs) on the same hosts.

use std::collections::HashMap;

use crate::manifest::*;
use crate::validate::Cx;

impl Cx<'_> {
    pub(super) fn quotas(&mut self, f: &Fleet) {
        let mut pools_of: HashMap<&str, Vec<&NodePool>> = HashMap::new();
        for p in &f.pools {
            pools_of.entry(p.spec.tenant.as_str()).or_default().push(p);
        }
        let mut nims_of: HashMap<&str, u32> = HashMap::new();
        for n in &f.nims {
            *nims_of.entry(n.spec.tenant.as_str()).or_default() += 1;
        }
        for t in &f.tenants {
            let pools: Vec<&NodePool> = pools_of.get(t.name()).cloned().unwrap_or_default();
            let hosts: Vec<&Host> = pools
                .iter()
                .flat_map(|p| f.members(p.name()))
                .filter_map(|h| f.host(h))
                .collect();
            self.tenant_quotas(t, &hosts, nims_of.get(t.name()).copied().unwrap_or(0));
            // Versions, precompiled drivers and Secure Boot against cited rows (rules/compat.rs).
            self.compat(f, t, &hosts);
        }
        self.quota_sum(f);
    }

    /// One tenant's GPUs, hosts and NIMs within its quotas.
    fn tenant_quotas(&mut self, t: &Tenant, hosts: &[&Host], nims: u32) {
        let i = t.doc.0;
        let gpus: u64 = hosts
            .iter()
            .fold(0u64, |a, h| a.saturating_add(u64::from(h.spec.gpu.count)));
        if let Some(q) = t.spec.quotas.gpus
            && gpus > u64::from(q)
        {
            let e = self
                .err(
                    "quota-exceeded",
                    i,
                    "/spec/quotas/gpus",
                    format!(
                        "tenant `{}` has {gpus} GPUs in its pools, over its quota of {q}",
                        t.name()
                    ),
                )
                .hint("raise the quota or shrink the tenant's pools");
            self.push(e);
        }
        if let Some(q) = t.spec.quotas.hosts
            && hosts.len() as u64 > u64::from(q)
        {
            let e = self
                .err(
                    "quota-exceeded",
                    i,
                    "/spec/quotas/hosts",
                    format!(
                        "tenant `{}` has {} hosts in its pools, over its quota of {q}",
                        t.name(),
                        hosts.len()
                    ),
                )
                .hint("raise the quota or shrink the tenant's pools");
            self.push(e);
        }
        if let Some(q) = t.spec.quotas.nims {
            let n = nims;
            if n > q {
                let e = self
                    .err(
                        "quota-exceeded",
                        i,
                        "/spec/quotas/nims",
                        format!("tenant `{}` runs {n} NIMs, over its quota of {q}", t.name()),
                    )
                    .hint("raise the quota or remove NIMs");
                self.push(e);
            }
        }
    }

    /// GPU quotas add up to at most the fleet's non-spare GPUs (reported on the last
    /// tenant with a GPU quota).
    fn quota_sum(&mut self, f: &Fleet) {
        let capacity: u64 = f
            .hosts
            .iter()
            .filter(|h| !h.spec.spare)
            .fold(0u64, |a, h| a.saturating_add(u64::from(h.spec.gpu.count)));
        let mut total_quota: u64 = 0;
        let mut last_quota: Option<&Tenant> = None;
        for t in &f.tenants {
            if let Some(q) = t.spec.quotas.gpus {
                total_quota = total_quota.saturating_add(u64::from(q));
                last_quota = Some(t);
            }
        }
        if total_quota > capacity
            && let Some(t) = last_quota
        {
            let e = self.err("quota-capacity", t.doc.0, "/spec/quotas/gpus", format!("tenant GPU quotas add up to {total_quota}, more than the fleet's {capacity} non-spare GPUs")).hint("quotas are promises: keep their sum within capacity");
            self.push(e);
        }
    }
}
