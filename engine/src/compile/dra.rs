//! Multi-node NVLink for NVL72 pools with `gpuSharing.dra.computeDomains`: a `ComputeDomain`
//! (`resource.nvidia.com/v1beta1`, CRD in `fixtures/crds/k8s-dra-driver-gpu`) and a
//! `ResourceClaimTemplate` (`resource.k8s.io/v1`) for all GPUs of one node, in each of the
//! tenant's `namespaces` (`default` when it lists none), where its workloads run. The DRA
//! driver chart is a chart release (compile/charts.rs).
//!
//! - `ComputeDomain <pool>`: `numNodes` = the pool's members, IMEX channel claims from the
//!   template `<pool>-channel`. The driver's controller creates that channel
//!   `ResourceClaimTemplate` itself, so fleetform does not (it would fight the controller).
//! - `ResourceClaimTemplate <pool>-gpus`: every GPU of one tray (`ExactCount` = the hosts'
//!   `gpu.count`) from the pool's first non-ComputeDomain device class; a pod of a multi-node
//!   job claims it plus the channel.
//!
//! Edges: both → their namespace; the claim template → the DeviceClass it allocates from.
//! validate.rs refuses `computeDomains` on pools outside `faultDomain: nvl72` racks.

use serde_json::json;

use super::{Cx, kube_id, namespace};
use crate::manifest::{DraSharing, NodePool, Tenant};

/// `apiVersion` of `ComputeDomain`.
pub const COMPUTE_DOMAIN_API: &str = "resource.nvidia.com/v1beta1";

impl Cx<'_> {
    /// Emits the ComputeDomain objects of `pool` (tenant `tenant`), when it asks for them.
    pub(super) fn compute_domains(&mut self, tenant: &Tenant, pool: &NodePool, dra: &DraSharing) {
        if !dra.compute_domains {
            return;
        }
        let t = tenant.name();
        let p = pool.name();
        let members = self.fleet.members(p).to_vec();
        let gpus = members
            .first()
            .and_then(|h| self.fleet.host(h))
            .map_or(1, |h| h.spec.gpu.count);
        let class = dra
            .device_classes
            .iter()
            .find(|c| !c.contains("compute-domain"))
            .cloned();
        let origin = self.origin(
            pool.doc,
            "/spec/gpuSharing/dra/computeDomains",
            &pool.origin,
        );
        let namespaces = if tenant.spec.namespaces.is_empty() {
            vec!["default".to_string()]
        } else {
            tenant.spec.namespaces.clone()
        };
        for ns in namespaces {
            let ns_id =
                (ns != "default").then(|| self.kube(t, namespace(&ns), tenant.origin.clone()));
            let cd = json!({
                "apiVersion": COMPUTE_DOMAIN_API, "kind": "ComputeDomain",
                "metadata": { "name": p, "namespace": ns },
                "spec": { "numNodes": members.len(), "channel": { "resourceClaimTemplate": { "name": format!("{p}-channel") } } },
            });
            let cd_id = self.kube(t, cd, origin.clone());
            let mut ids = vec![cd_id];
            if let Some(class) = &class {
                let rct = json!({
                    "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                    "metadata": { "name": format!("{p}-gpus"), "namespace": ns },
                    "spec": { "spec": { "devices": { "requests": [ {
                        "name": "gpus",
                        "exactly": { "deviceClassName": class, "allocationMode": "ExactCount", "count": gpus },
                    } ] } } },
                });
                let rct_id = self.kube(t, rct, origin.clone());
                let dc = kube_id(
                    t,
                    &json!({ "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": { "name": class } }),
                );
                self.dep(
                    &rct_id,
                    &dc,
                    format!("claims of {p}-gpus are allocated from DeviceClass {class}"),
                );
                ids.push(rct_id);
            }
            if let Some(ns_id) = ns_id {
                for id in ids {
                    self.dep(&id, &ns_id, format!("namespace {ns} first"));
                }
            }
        }
    }
}
