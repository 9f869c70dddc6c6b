//! KAI scheduler `Queue`s (`scheduling.run.ai/v2`, cluster-scoped; CRD in
//! `fixtures/crds/kai-scheduler`): every queue of `schedulers.kai.queues` in every tenant
//! cluster. The KAI chart itself is a chart release (compile/charts.rs), not compiled here.
//!
//! Field mapping: `parent` → `spec.parentQueue`, `gpuQuota` / `gpuLimit` →
//! `spec.resources.gpu.{quota,limit}` (fractional GPUs, `-1` unlimited), `priority` →
//! `spec.priority`. Edge: a queue waits for its parent queue (KAI rejects a child whose
//! parent does not exist). validate.rs refuses unknown parents, cycles and children whose
//! quotas add up past their parent's.

use serde_json::{Value, json};

use super::{Cx, kube_id};
use crate::manifest::{Kai, KaiQueue, Tenant};

/// `apiVersion` of `Queue`.
pub const QUEUE_API: &str = "scheduling.run.ai/v2";

/// The `Queue` object of one manifest queue.
pub fn queue(q: &KaiQueue) -> Value {
    let mut gpu = serde_json::Map::new();
    if let Some(v) = q.gpu_quota {
        gpu.insert("quota".into(), json!(v));
    }
    if let Some(v) = q.gpu_limit {
        gpu.insert("limit".into(), json!(v));
    }
    let mut spec = json!({ "displayName": q.name });
    if !gpu.is_empty() {
        spec["resources"] = json!({ "gpu": gpu });
    }
    if let Some(p) = &q.parent {
        spec["parentQueue"] = json!(p);
    }
    if let Some(p) = q.priority {
        spec["priority"] = json!(p);
    }
    json!({ "apiVersion": QUEUE_API, "kind": "Queue", "metadata": { "name": q.name }, "spec": spec })
}

impl Cx<'_> {
    /// Emits `kai`'s queues into tenant cluster `tenant`.
    pub(super) fn kai(&mut self, tenant: &Tenant, kai: &Kai) {
        let t = tenant.name();
        let fleet = &self.fleet.fleet;
        for (i, q) in kai.queues.iter().enumerate() {
            let origin = self.origin(
                fleet.doc,
                &format!("/spec/schedulers/kai/queues/{i}"),
                &fleet.origin,
            );
            let id = self.kube(t, queue(q), origin);
            if let Some(parent) = &q.parent {
                let parent_id = kube_id(
                    t,
                    &json!({ "apiVersion": QUEUE_API, "kind": "Queue", "metadata": { "name": parent } }),
                );
                self.dep(
                    &id,
                    &parent_id,
                    format!("queue {} is a child of queue {parent}", q.name),
                );
            }
        }
    }
}
