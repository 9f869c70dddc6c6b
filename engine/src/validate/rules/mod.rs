//! The rules a schema cannot say, over a typed and resolved [`Fleet`]; each pushes
//! its diagnostics into the shared context. No rule changes the fleet.

use std::collections::BTreeMap;

use super::Cx;
use crate::catalog;
use crate::manifest::*;

mod addons;
mod compat;
mod endpoints;
mod fleet;
mod hosts;
mod names;
mod nico;
mod nims;
mod operators;
mod pools;
mod quotas;
mod sharing;
mod tenants;

pub use tenants::parse_cidr;

impl Cx<'_> {
    /// Every rule, in an order that does not matter for the result: they only read the
    /// fleet (resolved before them) and the diagnostics are sorted at the end.
    pub(super) fn rules(&mut self, f: &Fleet) {
        self.names(f);
        self.fleet_settings(f);
        self.hosts(f);
        self.nico(f);
        self.endpoints(f);
        self.operators(f);
        self.tenants(f);
        self.pools(f);
        self.nims(f);
        self.quotas(f);
        self.addons(f);
    }

    /// An error unless `url` is an http(s) URL with a host.
    fn url(&mut self, i: usize, ptr: &str, url: &str) {
        let ok = ["http://", "https://"].iter().any(|p| {
            url.strip_prefix(p)
                .is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        });
        if !ok {
            let e = self
                .err("url", i, ptr, format!("`{}` is not an http(s) URL", url))
                .hint("write it as https://HOST[:PORT]");
            self.push(e);
        }
    }
}

impl Fleet {
    /// A pool's member hosts, as resolved.
    fn members_from<'a>(&'a self, p: &'a NodePool) -> impl Iterator<Item = &'a Host> + 'a {
        self.members(p.name()).iter().filter_map(|h| self.host(h))
    }
}

/// MIG devices per profile a pool offers (sum over its hosts of
/// [`crate::sharing::mig_devices`]); empty when the pool has no MIG.
fn mig_capacity(f: &Fleet, p: &NodePool) -> BTreeMap<String, u64> {
    let mut total: BTreeMap<String, u64> = BTreeMap::new();
    let Some(GpuSharing::Mig(m)) = &p.spec.gpu_sharing else {
        return total;
    };
    for h in f.members_from(p) {
        let Some(geo) = catalog::mig(h.spec.gpu.model) else {
            continue;
        };
        for (profile, n) in crate::sharing::mig_devices(&geo, &m.config, h.spec.gpu.count) {
            let e = total.entry(profile).or_default();
            *e = e.saturating_add(n);
        }
    }
    total
}
