//! Operators: singletons hold on every effective set (the Fleet's and each tenant's).

use serde_json::Value;

use crate::manifest::*;
use crate::validate::{Cx, field_path};

impl Cx<'_> {
    pub(super) fn operators(&mut self, f: &Fleet) {
        // Singletons: checked on every effective set (fleet and each tenant).
        let mut sets: Vec<(usize, &str, Operators)> =
            vec![(f.fleet.doc.0, "", f.fleet.spec.operators.clone())];
        for t in &f.tenants {
            if t.spec.operators.is_some()
                && let Some(o) = f.tenant_operators.get(t.name())
            {
                sets.push((t.doc.0, "", o.clone()));
            }
        }
        for (i, _, ops) in sets {
            if let Some(n) = &ops.network_operator {
                if n.policy_name != "nic-cluster-policy" {
                    let e = self
                        .err("singleton", i, "/spec/operators/networkOperator/policyName", format!("NicClusterPolicy `{}` would be ignored by the Network Operator", n.policy_name))
                        .hint("the operator reconciles only the policy named `nic-cluster-policy` (network-operator pkg/consts)");
                    self.push(e);
                }
                // The chart `values` escape hatch wins over the field (compile merges it last),
                // so the owner is whichever of the two says so last.
                let owner = |field: bool, values: &Option<Value>, base: &str| -> (bool, String) {
                    match values
                        .as_ref()
                        .and_then(|v| v.pointer("/nfd/enabled"))
                        .and_then(Value::as_bool)
                    {
                        Some(b) => (b, format!("{base}/values/nfd/enabled")),
                        None => (field, format!("{base}/nfd")),
                    }
                };
                let (gpu_nfd, gpu_at) = owner(
                    ops.gpu_operator.nfd,
                    &ops.gpu_operator.values,
                    "/spec/operators/gpuOperator",
                );
                let (net_nfd, net_at) = owner(n.nfd, &n.values, "/spec/operators/networkOperator");
                if gpu_nfd && net_nfd {
                    let e = self
                        .err("singleton", i, &net_at, format!("Node Feature Discovery has two owners: the GPU Operator (`{}`) and the Network Operator (`{}`)", field_path(&gpu_at), field_path(&net_at)))
                        .hint(format!("one NFD per cluster: turn one off (`networkOperator.nfd: false` is the default); {}", crate::compat::ONE_NFD));
                    self.push(e);
                }
            }
        }
    }
}
