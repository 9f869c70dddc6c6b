//! What a tenant cluster gets beyond the GPU stack, one file per target (issue 15: every
//! manifest field compiles into something): the tenant's `namespaces`, KAI queues
//! (`kai.rs`), Kyverno policies (`kyverno.rs`), DPF objects for hosts with DPUs (`dpf.rs`),
//! ComputeDomains (`dra.rs`), Karpenter NodePools and autoscaler bounds (`karpenter.rs`) and
//! observability settings (`observability.rs`), and the operand images and knobs of the
//! operators' policies (`operands.rs`) NIM placement on their pool (`placement.rs`) and the
//! MIG / device-plugin configs pool nodes are labelled with (`sharing.rs`). Each file lists its edges and their reasons.

use super::{Cx, namespace};
use crate::manifest::{GpuSharing, NodePool, Tenant};
use crate::resource::ResourceId;

impl Cx<'_> {
    /// Emits the add-ons of `tenant` (pools `pools`, GPU Operator policy `cluster_policy`,
    /// Network Operator policy `nic`). Call after the tenant's NIMs and before Cluster API.
    pub(super) fn addons(
        &mut self,
        tenant: &Tenant,
        pools: &[&NodePool],
        cluster_policy: &ResourceId,
        nic: Option<&ResourceId>,
    ) {
        let t = tenant.name();
        for ns in &tenant.spec.namespaces {
            let id = super::kube_id(t, &namespace(ns));
            if !self.out.contains_key(&id) {
                let o = self.origin(tenant.doc, "/spec/namespaces", &tenant.origin);
                self.kube(t, namespace(ns), o);
            }
        }
        let spec = &self.fleet.fleet.spec;
        let (kai, policies, obs) = (
            spec.schedulers.kai.clone(),
            spec.policies.clone(),
            spec.observability.clone(),
        );
        if let Some(kai) = &kai {
            self.kai(tenant, kai);
        }
        self.kyverno(tenant, &policies);
        let dpf = self.fleet.operators_for(t).dpf.clone();
        for pool in pools {
            if let Some(dpf) = &dpf {
                self.dpf(t, pool, dpf, nic);
            }
            if let Some(GpuSharing::Dra(dra)) = &pool.spec.gpu_sharing {
                self.compute_domains(tenant, pool, dra);
            }
            self.karpenter(t, pool);
        }
        let ops = self.fleet.operators_for(t).clone();
        self.operands(&ops, cluster_policy, nic);
        self.sharing_configs(t, pools, cluster_policy);
        self.placement(tenant);
        self.observability(tenant, &obs, cluster_policy);
    }
}
