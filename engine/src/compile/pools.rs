//! One node pool in its tenant cluster: node labels, taints and sharing, after the hosts'
//! power.

use super::{Cx, host_id, kube_id};
use crate::manifest::{GpuSharing, MigConfig, MigLayout, NodePool};
use crate::resource::{Desired, ResourceId, RolloutGroup};
use crate::sharing::{self, DraClass};
use serde_json::{Value, json};
use std::collections::BTreeMap;

impl Cx<'_> {
    pub(super) fn pool(&mut self, t: &str, pool: &NodePool, cluster_policy: &ResourceId) {
        let mut labels: BTreeMap<String, String> = pool.spec.labels.clone();
        labels.insert("fleetform.dev/pool".into(), pool.name().into());
        let mut disruptive = false;
        match &pool.spec.gpu_sharing {
            Some(GpuSharing::Mig(m)) => {
                let config = match &m.config {
                    MigConfig::Named(n) => n.clone(),
                    MigConfig::Layout(MigLayout::All(_) | MigLayout::PerGpu(_)) => {
                        format!("fleetform-{}", pool.name())
                    }
                };
                labels.insert("nvidia.com/mig.config".into(), config);
                disruptive = true;
            }
            Some(GpuSharing::Mps(_)) => {
                labels.insert(
                    "nvidia.com/device-plugin.config".into(),
                    format!("{}-mps", pool.name()),
                );
            }
            Some(GpuSharing::TimeSlicing(_)) => {
                labels.insert(
                    "nvidia.com/device-plugin.config".into(),
                    format!("{}-time-slicing", pool.name()),
                );
            }
            Some(GpuSharing::Dra(dra)) => {
                // The DRA driver's chart publishes its DeviceClasses: with that release they
                // are the chart's (one owner per object), and it must render each class the
                // pool names; without it, compile writes them. Validate refused class names
                // the driver does not publish.
                let release = (t.to_string(), "nvidia-dra-driver-gpu".to_string());
                for class in dra.device_classes.iter().filter_map(|c| DraClass::parse(c)) {
                    let dc = json!({
                        "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": { "name": class.name() },
                        "spec": { "selectors": [ { "cel": { "expression": class.cel() } } ] }
                    });
                    if let Some(r) = self.releases.get_mut(&release) {
                        let id = kube_id(t, &dc);
                        if !r.provides.contains(&id) {
                            r.provides.push(id);
                        }
                        continue;
                    }
                    let o = self.origin(pool.doc, "/spec/gpuSharing/dra", &pool.origin);
                    self.kube(t, dc, o);
                }
            }
            None => {}
        }
        for (k, v) in sharing::node_labels(pool.spec.gpu_sharing.as_ref()) {
            labels.insert(k.into(), v.into());
        }
        let taints: Vec<Value> = pool
            .spec
            .taints
            .iter()
            .map(|x| {
                let mut v = json!({ "key": x.key, "effect": x.effect });
                if let Some(val) = &x.value {
                    v["value"] = json!(val);
                }
                v
            })
            .collect();
        for h in self.fleet.members(pool.name()).to_vec() {
            let Some(host) = self.fleet.host(&h) else {
                continue;
            };
            // Where the host stands (Fleet and Rack labels, the rack's location) under the
            // pool's and fleetform's own labels, which win.
            let mut node_labels = self.topology_labels(host);
            node_labels.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            let mut node = json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": h, "labels": node_labels } });
            if !taints.is_empty() {
                node["spec"] = json!({ "taints": taints });
            }
            let id = kube_id(t, &node);
            let mut d = Desired::new(
                id.clone(),
                json!({ "cluster": t, "object": node, "adopt": true }),
            );
            d.origin = Some(self.origin(pool.doc, "/spec/gpuSharing", &pool.origin));
            if disruptive {
                let defaults = &self.fleet.fleet.spec.rollout;
                let r = pool.spec.rollout.as_ref();
                d.rollout = Some(RolloutGroup {
                    pool: format!("{t}/{}", pool.name()),
                    fault_domain: host.spec.rack.clone(),
                    host: h.clone(),
                    max_unavailable: r
                        .and_then(|r| r.max_unavailable)
                        .unwrap_or(defaults.max_unavailable),
                    max_unavailable_per_fault_domain: r
                        .and_then(|r| r.max_unavailable_per_fault_domain)
                        .unwrap_or(defaults.max_unavailable_per_fault_domain),
                });
            }
            self.add(d);
            self.dep(
                &id,
                cluster_policy,
                "MIG manager and device plugin act on node labels once the GPU Operator is ready",
            );
            self.dep(
                &id,
                &host_id(&h, "power"),
                format!("pool {} needs host {h} powered on", pool.name()),
            );
        }
    }
}
