//! `metadata.labels` of a document are copied onto what it compiles into, where one object
//! stands for it: a Tenant's onto its namespaces (management `tenant-<t>` and its own
//! `namespaces`), a Host's onto its BareMetalHost, a NodePool's onto its MachineDeployment and
//! Karpenter NodePool, a NIMService's onto its NIMService and NIMCache. Labels fleetform sets
//! itself win over copied ones. Racks and the Fleet stand for no single object: their labels,
//! and the rack's `location`, go onto the Node of every host they hold ([`topology_labels`]),
//! under the pool's labels.
//!
//! [`topology_labels`]: Cx::topology_labels

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Cx, MANAGEMENT_CLUSTER, kube_id, namespace};
use crate::manifest::{Host, NodePool, Tenant};
use crate::resource::ResourceId;

/// Node label keys of a rack's `location` (`topology.kubernetes.io/zone` names a failure
/// zone, not a room or a row, so fleetform uses its own prefix).
pub const SITE_LABEL: &str = "fleetform.dev/site";
/// See [`SITE_LABEL`].
pub const ROOM_LABEL: &str = "fleetform.dev/room";
/// See [`SITE_LABEL`].
pub const ROW_LABEL: &str = "fleetform.dev/row";
/// See [`SITE_LABEL`]: the rack's position in its row.
pub const RACK_POSITION_LABEL: &str = "fleetform.dev/rack-position";

impl Cx<'_> {
    /// The labels a host's Node gets from where it stands: the Fleet's `metadata.labels`, then
    /// its rack's (a rack label wins over a fleet one), then the rack's `location` as
    /// `fleetform.dev/{site,room,row,rack-position}`.
    pub(super) fn topology_labels(&self, host: &Host) -> BTreeMap<String, String> {
        let mut out = self.fleet.fleet.metadata.labels.clone();
        let Some(rack) = self.fleet.rack(&host.spec.rack) else {
            return out;
        };
        out.extend(
            rack.metadata
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        if let Some(loc) = &rack.spec.location {
            for (key, value) in [
                (SITE_LABEL, &loc.site),
                (ROOM_LABEL, &loc.room),
                (ROW_LABEL, &loc.row),
                (RACK_POSITION_LABEL, &loc.position),
            ] {
                if let Some(v) = value {
                    out.insert(key.to_string(), v.clone());
                }
            }
        }
        out
    }

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
