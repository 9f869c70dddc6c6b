//! Rules for NICo-managed hosts: `managedBy: nico` needs `Fleet.spec.nico` and `Host.spec.nico`
//! and has no BMC; every other host needs one; names the hosts use exist; label limits hold.

use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::{Fleet, ManagedBy};
use crate::validate::Cx;

/// NICo's `Labels.maxProperties` less fleetform's ownership label.
const MAX_LABELS: usize = 9;

impl Cx<'_> {
    pub(super) fn nico(&mut self, f: &Fleet) {
        let site = f.fleet.spec.nico.as_ref();
        let fi = f.fleet.doc.0;
        if let Some(s) = site {
            self.url(fi, "/spec/nico/endpoint", &s.endpoint);
            let mut seen = BTreeSet::new();
            for (i, t) in s.instance_types.iter().enumerate() {
                self.nico_labels(
                    fi,
                    &format!("/spec/nico/instanceTypes/{i}/labels"),
                    t.labels.len(),
                );
                if !seen.insert(t.name.as_str()) {
                    let e = self.err(
                        "duplicate-name",
                        fi,
                        &format!("/spec/nico/instanceTypes/{i}/name"),
                        format!(
                            "instance type `{}` is declared twice; NICo names are unique per site",
                            t.name
                        ),
                    );
                    self.push(e);
                }
            }
            for (i, a) in s.allocations.iter().enumerate() {
                if !seen.contains(a.instance_type.as_str()) {
                    let e = self.err("unknown-reference", fi, &format!("/spec/nico/allocations/{i}/instanceType"),
                        format!("allocation `{}` reserves instance type `{}`, which `nico.instanceTypes` does not declare", a.name, a.instance_type));
                    self.push(e);
                }
            }
            for (i, v) in s.vpcs.iter().enumerate() {
                self.nico_labels(fi, &format!("/spec/nico/vpcs/{i}/labels"), v.labels.len());
            }
        }
        let vpcs: BTreeMap<&str, Vec<&str>> = site
            .map(|s| {
                s.vpcs
                    .iter()
                    .map(|v| {
                        (
                            v.name.as_str(),
                            v.subnets.iter().map(|n| n.name.as_str()).collect(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let types: BTreeSet<&str> = site
            .map(|s| s.instance_types.iter().map(|t| t.name.as_str()).collect())
            .unwrap_or_default();
        let mut machines: BTreeMap<&str, &str> = BTreeMap::new();
        for h in &f.hosts {
            let i = h.doc.0;
            let nico = h.spec.managed_by == Some(ManagedBy::Nico);
            if !nico {
                if h.spec.bmc.is_none() {
                    let e = self.err("missing-bmc", i, "/spec", format!("host `{}` has no `bmc`", h.name()))
                        .hint("give it a `bmc`, or `managedBy: nico` with `nico.machineId` when NICo manages it");
                    self.push(e);
                }
                if h.spec.nico.is_some() {
                    let e = self
                        .err(
                            "nico-without-managed-by",
                            i,
                            "/spec/nico",
                            format!(
                                "host `{}` has `nico` but is not `managedBy: nico`",
                                h.name()
                            ),
                        )
                        .hint("add `managedBy: nico`, or remove `nico`");
                    self.push(e);
                }
                continue;
            }
            if site.is_none() {
                let e = self.err("missing-nico-site", i, "/spec/managedBy", format!("host `{}` is managed by NICo, but the Fleet has no `spec.nico`", h.name()))
                    .hint("declare the site: Fleet.spec.nico {endpoint, org, site, siteId, tenantId, token}");
                self.push(e);
            }
            if h.spec.bmc.is_some() {
                let e = self
                    .err(
                        "nico-host-with-bmc",
                        i,
                        "/spec/bmc",
                        format!(
                            "host `{}` is managed by NICo and must not name a BMC",
                            h.name()
                        ),
                    )
                    .hint("in a NICo site fleetform never talks to BMCs: remove `bmc`");
                self.push(e);
            }
            let Some(n) = &h.spec.nico else {
                let e = self.err("missing-nico", i, "/spec/managedBy", format!("host `{}` is managed by NICo but has no `nico` (machineId, instanceType, vpc, subnet)", h.name()));
                self.push(e);
                continue;
            };
            self.nico_labels(i, "/spec/nico/labels", n.labels.len());
            if let Some(other) = machines.insert(n.machine_id.as_str(), h.name()) {
                let e = self.err(
                    "duplicate-machine",
                    i,
                    "/spec/nico/machineId",
                    format!(
                        "host `{}` has the same NICo machine as host `{other}`",
                        h.name()
                    ),
                );
                self.push(e);
            }
            if site.is_some() && !types.contains(n.instance_type.as_str()) {
                let e = self.err("unknown-reference", i, "/spec/nico/instanceType",
                    format!("host `{}` names instance type `{}`, which `Fleet.spec.nico.instanceTypes` does not declare", h.name(), n.instance_type));
                self.push(e);
            }
            match vpcs.get(n.vpc.as_str()) {
                None if site.is_some() => {
                    let e = self.err("unknown-reference", i, "/spec/nico/vpc",
                        format!("host `{}` names VPC `{}`, which `Fleet.spec.nico.vpcs` does not declare", h.name(), n.vpc));
                    self.push(e);
                }
                Some(subnets) if !subnets.contains(&n.subnet.as_str()) => {
                    let e = self.err(
                        "unknown-reference",
                        i,
                        "/spec/nico/subnet",
                        format!(
                            "host `{}` names subnet `{}`, which VPC `{}` does not have",
                            h.name(),
                            n.subnet,
                            n.vpc
                        ),
                    );
                    self.push(e);
                }
                _ => {}
            }
        }
    }

    fn nico_labels(&mut self, i: usize, ptr: &str, n: usize) {
        if n > MAX_LABELS {
            let e = self
                .err(
                    "nico-labels",
                    i,
                    ptr,
                    format!(
                        "{n} labels; NICo allows 10, and fleetform's ownership label takes one"
                    ),
                )
                .hint(format!("keep at most {MAX_LABELS}"));
            self.push(e);
        }
    }
}
