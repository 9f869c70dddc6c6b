//! Where a NIM runs: its `pool`. Every NIMService gets `spec.nodeSelector`
//! `fleetform.dev/pool: <pool>` (the label compile puts on each of the pool's Nodes) and
//! tolerates the pool's taints, so its pods land on the pool validation sized it against
//! (nim-capacity, nim-mig) and nowhere else. No new objects, no new edges.

use serde_json::{Value, json};

use super::Cx;
use super::capi::POOL_LABEL;
use crate::manifest::Tenant;

impl Cx<'_> {
    /// Pins tenant `tenant`'s NIMServices to their pools.
    pub(super) fn placement(&mut self, tenant: &Tenant) {
        let t = tenant.name();
        for nim in self.fleet.nims.iter().filter(|n| n.spec.tenant == t) {
            let Some(pool) = self.fleet.pool(&nim.spec.pool) else {
                continue;
            };
            let tolerations: Vec<Value> = pool
                .spec
                .taints
                .iter()
                .map(|x| {
                    let mut v = json!({ "key": x.key, "effect": x.effect });
                    match &x.value {
                        Some(val) => {
                            v["operator"] = json!("Equal");
                            v["value"] = json!(val);
                        }
                        None => v["operator"] = json!("Exists"),
                    }
                    v
                })
                .collect();
            let id = super::kube_id(
                t,
                &json!({ "apiVersion": "apps.nvidia.com/v1alpha1", "kind": "NIMService",
                         "metadata": { "name": nim.name(), "namespace": nim.spec.namespace } }),
            );
            if let Some(spec) = self
                .out
                .get_mut(&id)
                .and_then(|d| d.spec.pointer_mut("/object/spec"))
            {
                spec["nodeSelector"] = json!({ POOL_LABEL: pool.name() });
                if !tolerations.is_empty() {
                    spec["tolerations"] = json!(tolerations);
                }
            }
        }
    }
}
