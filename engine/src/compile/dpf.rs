//! DOCA Platform Framework objects for the hosts with DPUs (`provisioning.dpu.nvidia.com`
//! v1alpha1, the 2024-12 DPF snapshot in `fixtures/crds/doca-platform`; later DPF releases
//! changed this API, and fleetform targets this one). They go into the tenant cluster of the
//! pool the hosts belong to, namespace `dpf-operator-system`; the DPF operator chart and its
//! `DPFOperatorConfig` are a chart release (compile/charts.rs).
//!
//! - `operators.dpf.bfb` → one `BFB` (named after the bundle's file, since a BFB's spec is
//!   immutable: a new bundle is a new object, and the DPUSets move to it);
//! - each DPU `model` → a `DPUFlavor` that pins DPU mode (`INTERNAL_CPU_OFFLOAD_ENGINE=0`;
//!   changing it needs a host power cycle);
//! - per pool and model, a `DPUSet` selecting the pool's hosts whose DPUs are in `mode: dpu`
//!   (hostname node selector), rolling at the pool's `maxUnavailable`, draining a node before
//!   its DPU is flashed. DPUs in `mode: nic` are not DPF's: their hosts are left out.
//!
//! Edges: everything → the namespace; the DPUSet → its BFB and DPUFlavor (referenced by name)
//! and → each selected host's power (the host must be up for its DPU to be provisioned); the
//! tenant's NicClusterPolicy → the DPUSets (BFB and NIC mode settle before host networking).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Cx, host_id, namespace};
use crate::manifest::{Dpf, DpuMode, NodePool};
use crate::resource::ResourceId;

/// `apiVersion` of `BFB`, `DPUFlavor` and `DPUSet`.
pub const DPF_API: &str = "provisioning.dpu.nvidia.com/v1alpha1";
/// The namespace DPF's objects live in.
pub const DPF_NAMESPACE: &str = "dpf-operator-system";

/// A DNS-label form of `s`: lowercase, anything else than `[a-z0-9.-]` becomes `-`.
pub fn object_name(s: &str) -> String {
    let n: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    n.trim_matches(|c| c == '-' || c == '.').to_string()
}

/// The `BFB` name of a bundle URL: its file name without `.bfb`.
pub fn bfb_name(url: &str) -> String {
    let file = url.rsplit('/').next().unwrap_or(url);
    object_name(file.strip_suffix(".bfb").unwrap_or(file))
}

fn object(kind: &str, name: &str, spec: Value) -> Value {
    json!({ "apiVersion": DPF_API, "kind": kind, "metadata": { "name": name, "namespace": DPF_NAMESPACE }, "spec": spec })
}

impl Cx<'_> {
    /// Emits the DPF objects of `pool` (tenant cluster `t`) with `dpf` settings.
    pub(super) fn dpf(&mut self, t: &str, pool: &NodePool, dpf: &Dpf, nic: Option<&ResourceId>) {
        // Hosts with DPUs in DPU mode, grouped by DPU model.
        let mut by_model: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in self.fleet.members(pool.name()) {
            let Some(host) = self.fleet.host(h) else {
                continue;
            };
            for d in host.spec.dpus.iter().filter(|d| d.mode == DpuMode::Dpu) {
                let hosts = by_model.entry(d.model.clone()).or_default();
                if !hosts.contains(h) {
                    hosts.push(h.clone());
                }
            }
        }
        if by_model.is_empty() {
            return;
        }
        let fleet = &self.fleet.fleet;
        let ops_origin = self.origin(fleet.doc, "/spec/operators/dpf", &fleet.origin);
        let ns_id = self.kube(t, namespace(DPF_NAMESPACE), ops_origin.clone());
        let ns_reason = format!("namespace {DPF_NAMESPACE} first");
        let bfb = bfb_name(&dpf.bfb);
        let bfb_id = self.kube(
            t,
            object("BFB", &bfb, json!({ "url": dpf.bfb })),
            self.origin(fleet.doc, "/spec/operators/dpf/bfb", &fleet.origin),
        );
        self.dep(&bfb_id, &ns_id, ns_reason.clone());
        let max_unavailable = pool
            .spec
            .rollout
            .as_ref()
            .and_then(|r| r.max_unavailable)
            .unwrap_or(fleet.spec.rollout.max_unavailable);
        for (model, hosts) in by_model {
            let flavor = object_name(&model);
            let first = hosts.first().and_then(|h| self.fleet.host(h));
            let origin = first.map_or_else(
                || pool.origin.clone(),
                |h| self.origin(h.doc, "/spec/dpus", &h.origin),
            );
            let flavor_id = self.kube(
                t,
                object(
                    "DPUFlavor",
                    &flavor,
                    json!({ "nvconfig": [ { "device": "*", "parameters": ["INTERNAL_CPU_OFFLOAD_ENGINE=0"], "hostPowerCycleRequired": true } ] }),
                ),
                origin,
            );
            self.dep(&flavor_id, &ns_id, ns_reason.clone());
            let name = format!("{}-{flavor}", pool.name());
            let set = object(
                "DPUSet",
                &name,
                json!({
                    "nodeSelector": { "matchExpressions": [ { "key": "kubernetes.io/hostname", "operator": "In", "values": hosts } ] },
                    "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": max_unavailable } },
                    "dpuTemplate": { "spec": {
                        "bfb": { "name": bfb },
                        "dpuFlavor": flavor,
                        "nodeEffect": { "drain": { "automaticNodeReboot": true } },
                    } },
                }),
            );
            let set_id = self.kube(t, set, self.origin(pool.doc, "/spec", &pool.origin));
            self.dep(&set_id, &ns_id, ns_reason.clone());
            self.dep(
                &set_id,
                &bfb_id,
                format!("DPUs of DPUSet {name} are flashed with BFB {bfb}"),
            );
            self.dep(
                &set_id,
                &flavor_id,
                format!("DPUs of DPUSet {name} are configured by DPUFlavor {flavor}"),
            );
            for h in &hosts {
                self.dep(
                    &set_id,
                    &host_id(h, "power"),
                    format!("host {h} is powered on before its DPU is provisioned"),
                );
            }
            if let Some(nic) = nic {
                self.dep(
                    nic,
                    &set_id,
                    format!("DPUs of DPUSet {name} are flashed and in DPU mode before host networking is configured"),
                );
            }
        }
    }
}
