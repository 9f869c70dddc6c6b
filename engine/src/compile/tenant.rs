//! One tenant cluster: its namespaces, pull secret, operators, node knobs, pools and NIMs.

use super::charts;
use super::{
    Cx, MANAGEMENT_CLUSTER, SRIOV_API, SRIOV_POLICY, SRIOV_RESOURCE, dependency, host_id, kube_id,
    namespace,
};
use crate::manifest::{NimService, NodePool, Tenant};
use serde_json::json;

impl Cx<'_> {
    pub(super) fn tenant(&mut self, tenant: &Tenant) {
        let t = tenant.name().to_string();
        let ops = self.fleet.operators_for(&t).clone();
        let origin = tenant.origin.clone();

        // Management cluster: a namespace per NCP-managed tenant and a BareMetalHost per host.
        let ncp = matches!(tenant.spec.flavor, crate::manifest::Flavor::NcpManaged);
        let pools: Vec<&NodePool> = self
            .fleet
            .pools
            .iter()
            .filter(|p| p.spec.tenant == t)
            .collect();
        if ncp {
            let ns = self.kube(
                MANAGEMENT_CLUSTER,
                namespace(&format!("tenant-{t}")),
                origin.clone(),
            );
            for p in &pools {
                for h in self.fleet.members(p.name()).to_vec() {
                    let Some(host) = self.fleet.host(&h) else {
                        continue;
                    };
                    // A NICo-managed host has no BMC for metal3 to drive.
                    let Some(bmc) = &host.spec.bmc else { continue };
                    let system = bmc.system_id.clone().unwrap_or_else(|| h.clone());
                    let bmh = json!({
                        "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
                        "metadata": { "name": h, "namespace": format!("tenant-{t}"), "labels": { "fleetform.dev/pool": p.name() } },
                        "spec": {
                            "online": matches!(host.spec.power, crate::manifest::PowerState::On),
                            "bmc": { "address": format!("redfish+{}/redfish/v1/Systems/{system}", bmc.endpoint), "credentialsName": format!("{h}-bmc") },
                        }
                    });
                    let o = self.origin(host.doc, "/spec/bmc", &host.origin);
                    let id = self.kube(MANAGEMENT_CLUSTER, bmh, o);
                    self.dep(&id, &ns, format!("namespace tenant-{t} first"));
                    self.dep(
                        &id,
                        &host_id(&h, "power"),
                        format!("host {h} configured through its BMC first"),
                    );
                }
            }
        }

        // Tenant cluster: the GPU Operator and what depends on it.
        let gpu_ns = self.kube(&t, namespace("gpu-operator"), origin.clone());
        let pull = self.pull_secret(tenant, "gpu-operator", &gpu_ns);
        let mut nic_policy = None;
        if let Some(net) = &ops.network_operator {
            let ns = self.kube(&t, namespace("nvidia-network-operator"), origin.clone());
            let mut spec = json!({});
            if let Some(ofed) = &net.ofed_driver {
                spec["ofedDriver"] = json!({ "image": "doca-driver", "repository": "nvcr.io/nvidia/mellanox", "version": ofed.version });
            }
            if let Some(rdma) = net.rdma_shared_device_plugin.as_ref().filter(|r| r.enabled) {
                spec["rdmaSharedDevicePlugin"] = json!({
                    "image": "k8s-rdma-shared-dev-plugin", "repository": "nvcr.io/nvidia/mellanox", "version": net.version,
                    "config": serde_json::to_string(&json!({"configList": [{"resourceName": rdma.resource_name, "rdmaHcaMax": rdma.rdma_hca_max, "selectors": {"vendors": ["15b3"]}}]})).unwrap_or_default(),
                });
            }
            let obj = json!({ "apiVersion": "mellanox.com/v1alpha1", "kind": "NicClusterPolicy", "metadata": { "name": net.policy_name }, "spec": spec });
            let id = self.kube(&t, obj, origin.clone());
            self.dep(&id, &ns, "namespace nvidia-network-operator first");
            let mut release = charts::release(
                &t,
                &self.fleet.fleet.spec.charts,
                charts::ReleaseSpec {
                    name: "network-operator",
                    namespace: "nvidia-network-operator",
                    chart: "network-operator",
                    version: &net.version,
                    source: net.chart.as_ref(),
                    typed: charts::network_operator_values(net),
                    user_values: net.values.as_ref(),
                    origin: self.operator_origin(tenant, "networkOperator"),
                    value_origins: self.operator_value_origins(
                        tenant,
                        "networkOperator",
                        net.values.as_ref(),
                    ),
                },
            );
            release
                .after
                .push(dependency(&ns, "namespace nvidia-network-operator first"));
            release.dependents.push(charts::Dependent {
                id: id.clone(),
                reason: "the Network Operator reconciles its NicClusterPolicy".into(),
            });
            // SR-IOV virtual functions: one SriovNetworkNodePolicy for the tenant's NVIDIA
            // NICs (vendor 15b3) on the nodes NFD marks SR-IOV capable. It lives in the
            // operator's namespace (the sriov-network-operator only reads policies there) and
            // its CRD comes with the chart's sriov-network-operator subchart.
            if let Some(sriov) = net.sriov.as_ref().filter(|s| s.enabled)
                && let Some(vfs) = sriov.num_vfs.filter(|n| *n > 0)
            {
                let policy = json!({
                    "apiVersion": SRIOV_API, "kind": "SriovNetworkNodePolicy",
                    "metadata": { "name": SRIOV_POLICY, "namespace": "nvidia-network-operator" },
                    "spec": {
                        "resourceName": SRIOV_RESOURCE,
                        "numVfs": vfs,
                        "nodeSelector": { "feature.node.kubernetes.io/network-sriov.capable": "true" },
                        "nicSelector": { "vendor": "15b3" },
                        "deviceType": "netdevice",
                        "isRdma": true,
                    }
                });
                let o = self.operator_origin(tenant, "networkOperator");
                let pid = self.kube(&t, policy, o);
                self.dep(&pid, &ns, "namespace nvidia-network-operator first");
                release.dependents.push(charts::Dependent {
                    id: pid,
                    reason: "the chart's sriov-network-operator serves SriovNetworkNodePolicy"
                        .into(),
                });
            }
            self.add_release(release);
            nic_policy = Some(id);
        }
        // The GPU Operator itself: its chart renders the operator and the ClusterPolicy
        // (`cluster-policy`, from the typed fields), which pool labels and NIMs wait for.
        let cp_id = kube_id(
            &t,
            &json!({ "apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "metadata": { "name": "cluster-policy" } }),
        );
        let defaults = &self.fleet.fleet.spec.charts;
        let g = &ops.gpu_operator;
        let mut gpu = charts::release(
            &t,
            defaults,
            charts::ReleaseSpec {
                name: "gpu-operator",
                namespace: "gpu-operator",
                chart: "gpu-operator",
                version: &g.version,
                source: g.chart.as_ref(),
                typed: charts::with_driver_rollout(
                    charts::gpu_operator_values(&ops, pull.as_ref().map(|_| "ngc-pull")),
                    self.driver_rollout_budget(&pools),
                ),
                user_values: g.values.as_ref(),
                origin: self.operator_origin(tenant, "gpuOperator"),
                value_origins: self.operator_value_origins(
                    tenant,
                    "gpuOperator",
                    g.values.as_ref(),
                ),
            },
        );
        gpu.after
            .push(dependency(&gpu_ns, "namespace gpu-operator first"));
        if let Some(p) = &pull {
            gpu.after.push(dependency(
                p,
                "pull secret before anything that pulls from NGC",
            ));
        }
        if let Some(nic) = &nic_policy {
            gpu.after.push(dependency(
                nic,
                "Network Operator first: GPUDirect RDMA needs its drivers",
            ));
        }
        gpu.provides.push(cp_id.clone());
        self.add_release(gpu);
        self.operator_releases(tenant, &ops, &pools);

        for p in &pools {
            self.pool(&t, p, &cp_id);
        }
        let nims: Vec<&NimService> = self
            .fleet
            .nims
            .iter()
            .filter(|n| n.spec.tenant == t)
            .collect();
        for n in nims {
            self.nim(tenant, n, &cp_id);
        }
        self.addons(tenant, &pools, &cp_id, nic_policy.as_ref());
        if ncp {
            self.capi(tenant, &pools);
            self.autoscaler_bounds(&t, &pools);
        }
        self.document_labels(tenant, &pools);
    }
}
