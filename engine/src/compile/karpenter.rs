//! Autoscaling of node pools.
//!
//! - `autoscaling.karpenter: true` → a Karpenter `NodePool` (`karpenter.sh/v1`, cluster-scoped;
//!   CRD in `fixtures/crds/karpenter`) named after the pool in the tenant cluster. Bare metal
//!   has no upstream Karpenter cloud provider; fleetform targets the Cluster API provider
//!   (kubernetes-sigs/karpenter-provider-cluster-api), whose node class is
//!   `ClusterAPINodeClass` (`karpenter.cluster.x-k8s.io`), named after the pool too. The
//!   NodePool carries the pool's labels and taints, the CPU architecture of its GPU model,
//!   `limits.nodes` = `max`, and a disruption budget of the pool's `maxUnavailable` nodes.
//! - `autoscaling.{min,max}` of an NCP-managed tenant's pool → the Cluster API autoscaler
//!   annotations on its `MachineDeployment`
//!   (`cluster.x-k8s.io/cluster-api-autoscaler-node-group-{min,max}-size`), which both the
//!   cluster-autoscaler and Karpenter's Cluster API provider read.
//!
//! validate.rs refuses Karpenter on a pool with an explicit `hosts` list (the autoscaler picks
//! hosts; a fixed list cannot grow) and `min > max`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Cx, MANAGEMENT_CLUSTER, kube_id};
use crate::manifest::{Autoscaling, GpuModel, NodePool};

/// `apiVersion` of Karpenter's `NodePool`.
pub const NODEPOOL_API: &str = "karpenter.sh/v1";
/// Group of the Cluster API provider's node class.
pub const NODECLASS_GROUP: &str = "karpenter.cluster.x-k8s.io";
/// Annotation with the smallest size of a Cluster API node group.
pub const MIN_SIZE: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size";
/// Annotation with the largest size of a Cluster API node group.
pub const MAX_SIZE: &str = "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size";

/// `kubernetes.io/arch` of the hosts of a GPU model (Grace-based superchips are Arm).
pub fn arch(model: GpuModel) -> &'static str {
    match model {
        GpuModel::GB200 | GpuModel::GB300 => "arm64",
        _ => "amd64",
    }
}

/// The Karpenter `NodePool` of `pool`.
pub fn node_pool(pool: &NodePool, a: &Autoscaling, arch: &str, max_unavailable: u32) -> Value {
    let mut labels: BTreeMap<String, String> = pool.spec.labels.clone();
    labels.insert(super::capi::POOL_LABEL.into(), pool.name().into());
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
    let mut spec = json!({
        "nodeClassRef": { "group": NODECLASS_GROUP, "kind": "ClusterAPINodeClass", "name": pool.name() },
        "requirements": [ { "key": "kubernetes.io/arch", "operator": "In", "values": [arch] } ],
    });
    if !taints.is_empty() {
        spec["taints"] = json!(taints);
    }
    json!({
        "apiVersion": NODEPOOL_API, "kind": "NodePool", "metadata": { "name": pool.name() },
        "spec": {
            "template": { "metadata": { "labels": labels }, "spec": spec },
            "limits": { "nodes": a.max.to_string() },
            "disruption": {
                "consolidationPolicy": "WhenEmpty",
                "consolidateAfter": "10m",
                "budgets": [ { "nodes": max_unavailable.to_string() } ],
            },
        },
    })
}

impl Cx<'_> {
    /// Emits the Karpenter `NodePool` of `pool` (tenant cluster `t`) when it asks for one.
    pub(super) fn karpenter(&mut self, t: &str, pool: &NodePool) {
        let Some(a) = pool.spec.autoscaling.as_ref().filter(|a| a.karpenter) else {
            return;
        };
        let model = self
            .fleet
            .members(pool.name())
            .first()
            .and_then(|h| self.fleet.host(h))
            .map(|h| h.spec.gpu.model)
            .or_else(|| pool.spec.selector.as_ref().and_then(|s| s.gpu_model));
        let max_unavailable = pool
            .spec
            .rollout
            .as_ref()
            .and_then(|r| r.max_unavailable)
            .unwrap_or(self.fleet.fleet.spec.rollout.max_unavailable);
        let object = node_pool(pool, a, model.map_or("amd64", arch), max_unavailable);
        let origin = self.origin(pool.doc, "/spec/autoscaling/karpenter", &pool.origin);
        self.kube(t, object, origin);
    }

    /// Puts the autoscaler bounds of NCP-managed tenant `t`'s pools on their
    /// `MachineDeployment`s. Call after compile/capi.rs emitted them.
    pub(super) fn autoscaler_bounds(&mut self, t: &str, pools: &[&NodePool]) {
        for pool in pools {
            let Some(a) = &pool.spec.autoscaling else {
                continue;
            };
            let md = kube_id(
                MANAGEMENT_CLUSTER,
                &json!({ "apiVersion": super::capi::CLUSTER_API, "kind": "MachineDeployment",
                         "metadata": { "name": pool.name(), "namespace": format!("tenant-{t}") } }),
            );
            if let Some(meta) = self
                .out
                .get_mut(&md)
                .and_then(|d| d.spec.pointer_mut("/object/metadata"))
                .and_then(Value::as_object_mut)
            {
                meta.insert(
                    "annotations".into(),
                    json!({ MIN_SIZE: a.min.to_string(), MAX_SIZE: a.max.to_string() }),
                );
            }
        }
    }
}
