//! `metadata.labels` of a document are copied onto what it compiles into, where one object
//! stands for it: a Tenant's onto its namespaces (management `tenant-<t>` and its own
//! `namespaces`), a Host's onto its BareMetalHost, a NodePool's onto its MachineDeployment and
//! Karpenter NodePool, a NIMService's onto its NIMService and NIMCache. Labels fleetform sets
//! itself win over copied ones. Racks and the Fleet stand for no single object.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Cx, MANAGEMENT_CLUSTER, kube_id, namespace};
use crate::manifest::{NodePool, Tenant};
use crate::resource::ResourceId;

impl Cx<'_> {
    fn copy_labels(&mut self, id: &ResourceId, labels: &BTreeMap<String, String>) {
        if labels.is_empty() {
            return;
        }
        let Some(meta) = self
            .out
            .get_mut(id)
            .and_then(|d| d.spec.pointer_mut("/object/metadata"))
            .and_then(Value::as_object_mut)
        else {
            return;
        };
        if let Some(l) = meta
            .entry("labels")
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            for (k, v) in labels {
                l.entry(k.clone()).or_insert_with(|| json!(v));
            }
        }
    }

    /// Copies the labels of `tenant`, its pools `pools`, their hosts and its NIMs. Call last.
    pub(super) fn document_labels(&mut self, tenant: &Tenant, pools: &[&NodePool]) {
        let t = tenant.name();
        let mgmt_ns = format!("tenant-{t}");
        let tl = tenant.metadata.labels.clone();
        self.copy_labels(&kube_id(MANAGEMENT_CLUSTER, &namespace(&mgmt_ns)), &tl);
        for ns in &tenant.spec.namespaces {
            self.copy_labels(&kube_id(t, &namespace(ns)), &tl);
        }
        for pool in pools {
            let p = pool.name();
            let labels = pool.metadata.labels.clone();
            let md = json!({ "apiVersion": super::capi::CLUSTER_API, "kind": "MachineDeployment", "metadata": { "name": p, "namespace": mgmt_ns } });
            self.copy_labels(&kube_id(MANAGEMENT_CLUSTER, &md), &labels);
            let np = json!({ "apiVersion": super::karpenter::NODEPOOL_API, "kind": "NodePool", "metadata": { "name": p } });
            self.copy_labels(&kube_id(t, &np), &labels);
            for h in self.fleet.members(p).to_vec() {
                let Some(host) = self.fleet.host(&h) else {
                    continue;
                };
                let labels = host.metadata.labels.clone();
                let bmh = json!({ "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost", "metadata": { "name": h, "namespace": mgmt_ns } });
                self.copy_labels(&kube_id(MANAGEMENT_CLUSTER, &bmh), &labels);
            }
        }
        let nims: Vec<(String, String, BTreeMap<String, String>)> = self
            .fleet
            .nims
            .iter()
            .filter(|n| n.spec.tenant == t)
            .map(|n| {
                (
                    n.name().to_string(),
                    n.spec.namespace.clone(),
                    n.metadata.labels.clone(),
                )
            })
            .collect();
        for (name, ns, labels) in nims {
            for kind in ["NIMService", "NIMCache"] {
                let o = json!({ "apiVersion": "apps.nvidia.com/v1alpha1", "kind": kind, "metadata": { "name": name, "namespace": ns } });
                self.copy_labels(&kube_id(t, &o), &labels);
            }
        }
    }
}
