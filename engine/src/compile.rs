//! Compile: the validated fleet becomes concrete desired resources, each with
//! an address, a provider spec, dependencies with reasons, sensitive paths and
//! rollout groups. Pure apart from reading the secrets that pull secrets embed.
//!
//! The dependency rules (docs/concepts.md lists them with their reasons):
//! - per host: firmware, BIOS, secure boot and boot override before power
//!   (settings take effect at the next power-on);
//! - Node knobs of a pool's hosts wait for the hosts' power (the node must be up);
//! - per tenant cluster: namespace → pull secret → (Network Operator policy →)
//!   GPU Operator ClusterPolicy → Node MIG/sharing labels → NIMCache → NIMService;
//!   the image tag must resolve (ngc) before anything that pulls it;
//! - management cluster: tenant namespace → BareMetalHost per host;
//! - Cluster API for NCP-managed tenants (`compile/capi.rs`): templates → control plane /
//!   Metal3Cluster → Cluster → MachineDeployment per pool (also after the pool's
//!   BareMetalHosts); the tenant cluster's objects wait for its Cluster.
//! - add-ons (`compile/addons.rs` and one file per target): a KAI Queue waits for its parent
//!   queue; a DPUSet for its BFB, DPUFlavor and hosts' power, and the NicClusterPolicy for the
//!   DPUSets; namespaced objects for their namespace; a ResourceClaimTemplate for its DeviceClass.
//!
//! Size: over 1,000 lines because the host, tenant, pool and NIM compilers still live here;
//! newer targets are files of their own under `compile/`, and moving these four out is part of
//! issue 16's pipeline layout (not done yet).

mod addons;
mod capi;
mod charts;
mod dpf;
mod dra;
mod kai;
mod karpenter;
mod kyverno;
mod labels;
mod nico;
mod observability;
mod operands;
mod placement;
mod sharing_configs;

pub use charts::{ChartRelease, Dependent, merge as merge_values, upstream_repository};

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::diag::Diagnostic;
use crate::manifest::{
    Fleet, GpuSharing, Host, MigConfig, MigLayout, NimService, NodePool, Tenant,
};
use crate::resource::{Desired, Origin, ResourceId, RolloutGroup};
use crate::secret::SecretResolver;
use crate::sharing::{self, DraClass};

/// The name fleetform gives the management cluster in addresses.
pub const MANAGEMENT_CLUSTER: &str = "mgmt";

/// Label put on every Kubernetes object fleetform creates, naming the fleet.
pub const FLEET_LABEL: &str = "app.kubernetes.io/managed-by";

/// How to reach one Kubernetes cluster named in addresses (part of the provider contract).
pub use fleetform_contract::registry::ClusterRef;

/// The output of compile.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Desired resources, sorted by address.
    pub resources: Vec<Desired>,
    /// Clusters the kube resources live in.
    pub clusters: BTreeMap<String, ClusterRef>,
    /// Helm chart releases, expanded into `kube:` resources before planning
    /// (`fleetform-charts`); sorted by cluster and name.
    pub releases: Vec<ChartRelease>,
}

/// Compiles a validated fleet. Secrets are read only to build pull secrets; a
/// secret that cannot be read is a diagnostic naming the manifest line.
pub fn compile(fleet: &Fleet, secrets: &dyn SecretResolver) -> Result<Compiled, Vec<Diagnostic>> {
    let mut cx = Cx {
        fleet,
        secrets,
        out: BTreeMap::new(),
        releases: BTreeMap::new(),
        diags: Vec::new(),
    };
    let mut clusters = BTreeMap::new();
    let mgmt = &fleet.fleet.spec.management_cluster;
    clusters.insert(
        MANAGEMENT_CLUSTER.to_string(),
        ClusterRef {
            kubeconfig: mgmt.kubeconfig.clone(),
            context: mgmt.context.clone(),
        },
    );

    let pool_of: BTreeMap<&str, &NodePool> = fleet
        .pools
        .iter()
        .flat_map(|p| fleet.members(p.name()).iter().map(move |h| (h.as_str(), p)))
        .collect();
    for host in &fleet.hosts {
        cx.host(host, pool_of.get(host.name()).copied());
    }
    cx.nico();
    for tenant in &fleet.tenants {
        clusters.insert(
            tenant.name().to_string(),
            ClusterRef {
                kubeconfig: tenant.spec.kubernetes.kubeconfig.clone(),
                context: None,
            },
        );
        cx.tenant(tenant);
    }
    cx.hand_over_release_waits();
    if cx.diags.is_empty() {
        Ok(Compiled {
            resources: cx.out.into_values().collect(),
            clusters,
            releases: cx.releases.into_values().collect(),
        })
    } else {
        crate::diag::sort(&mut cx.diags);
        Err(cx.diags)
    }
}

struct Cx<'a> {
    fleet: &'a Fleet,
    secrets: &'a dyn SecretResolver,
    out: BTreeMap<ResourceId, Desired>,
    /// Chart releases by (cluster, release name).
    releases: BTreeMap<(String, String), ChartRelease>,
    diags: Vec<Diagnostic>,
}

/// API of the sriov-network-operator's policies (shared/fixtures/crds/sriov-network-operator, v1.6.0).
pub const SRIOV_API: &str = "sriovnetwork.openshift.io/v1";
/// Name of the one SriovNetworkNodePolicy fleetform compiles per tenant.
pub const SRIOV_POLICY: &str = "fleetform-sriov";
/// Device-plugin resource of its VFs: pods ask for `openshift.io/sriov_rdma`.
pub const SRIOV_RESOURCE: &str = "sriov_rdma";

/// The address of a Kubernetes object: the contract's `address::kube_object_id`, which the kube provider uses too.
pub fn kube_id(cluster: &str, object: &Value) -> ResourceId {
    fleetform_contract::address::kube_object_id(cluster, object)
}

/// The part of a BMC's GPU `Model` that names the manifest's model (BMCs write e.g.
/// "H100 80GB HBM3" or "NVIDIA A100-SXM4-80GB").
fn bmc_gpu_model(model: crate::manifest::GpuModel) -> &'static str {
    use crate::manifest::GpuModel as M;
    match model {
        M::A100_40GB | M::A100_80GB => "A100",
        M::H100 | M::H100Nvl => "H100",
        M::RtxPro6000 => "RTX PRO 6000",
        other => other.as_str(),
    }
}

fn host_id(host: &str, aspect: &str) -> ResourceId {
    ResourceId::new("redfish", format!("host/{host}/{aspect}"))
}

impl Cx<'_> {
    fn origin(&self, doc: crate::manifest::DocId, pointer: &str, fallback: &Origin) -> Origin {
        self.fleet
            .nearest_span(doc, pointer)
            .map(|s| Origin {
                file: s.file,
                line: s.line,
                column: s.column,
            })
            .unwrap_or_else(|| fallback.clone())
    }

    fn add(&mut self, d: Desired) {
        self.out.insert(d.id.clone(), d);
    }

    fn kube(&mut self, cluster: &str, mut object: Value, origin: Origin) -> ResourceId {
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert(FLEET_LABEL.into(), json!("fleetform"));
            }
        }
        let id = kube_id(cluster, &object);
        let mut d = Desired::new(id.clone(), json!({ "cluster": cluster, "object": object }));
        d.origin = Some(origin);
        self.add(d);
        id
    }

    fn dep(&mut self, id: &ResourceId, on: &ResourceId, reason: impl Into<String>) {
        if let Some(d) = self.out.get_mut(id)
            && !d.deps.iter().any(|x| &x.on == on)
        {
            d.deps.push(crate::resource::Dependency {
                on: on.clone(),
                reason: reason.into(),
                origin: None,
            });
        }
    }

    /// Where an operator's settings are written: the tenant's override when it has one,
    /// otherwise the fleet's `operators`.
    fn operator_origin(&self, tenant: &Tenant, key: &str) -> Origin {
        let fleet = &self.fleet.fleet;
        let ptr = format!("/spec/operators/{key}");
        if self.fleet.nearest_span(tenant.doc, &ptr).is_some_and(|s| {
            tenant
                .spec
                .operators
                .as_ref()
                .is_some_and(|o| o.get(key).is_some())
                && s.line > 0
        }) {
            return self.origin(tenant.doc, &ptr, &tenant.origin);
        }
        self.origin(fleet.doc, &ptr, &fleet.origin)
    }

    /// Where each part of an operator's `values` is written: in the tenant's override when it
    /// sets that operator, otherwise in the Fleet's `operators`.
    fn operator_value_origins(
        &self,
        tenant: &Tenant,
        key: &str,
        values: Option<&Value>,
    ) -> Vec<(String, Origin)> {
        let own = tenant
            .spec
            .operators
            .as_ref()
            .and_then(|o| o.get(key))
            .is_some_and(|o| o.get("values").is_some());
        let doc = if own {
            tenant.doc
        } else {
            self.fleet.fleet.doc
        };
        self.value_origins(doc, &format!("/spec/operators/{key}/values"), values)
    }

    /// (pointer into `values`, manifest line) for every part of a `values` mapping written
    /// at `base` of document `doc`.
    fn value_origins(
        &self,
        doc: crate::manifest::DocId,
        base: &str,
        values: Option<&Value>,
    ) -> Vec<(String, Origin)> {
        fn walk(v: &Value, at: String, out: &mut Vec<String>) {
            if let Value::Object(m) = v {
                for (k, child) in m {
                    let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                    out.push(p.clone());
                    walk(child, p, out);
                }
            }
        }
        let Some(values) = values else {
            return Vec::new();
        };
        let mut pointers = Vec::new();
        walk(values, String::new(), &mut pointers);
        pointers
            .into_iter()
            .filter_map(|p| {
                let span = self.fleet.nearest_span(doc, &format!("{base}{p}"))?;
                let origin = Origin {
                    file: span.file,
                    line: span.line,
                    column: span.column,
                };
                Some((p, origin))
            })
            .collect()
    }

    /// How many of a tenant's GPU nodes the GPU Operator may take down at once for a driver
    /// change: the tightest `maxUnavailable` of its pools (the fleet's `rollout` where a pool
    /// sets none). The ClusterPolicy is one per cluster, so the strictest pool wins.
    fn driver_rollout_budget(&self, pools: &[&NodePool]) -> Option<u32> {
        let fleet = self.fleet.fleet.spec.rollout.max_unavailable;
        pools
            .iter()
            .map(|p| {
                p.spec
                    .rollout
                    .as_ref()
                    .and_then(|r| r.max_unavailable)
                    .unwrap_or(fleet)
            })
            .min()
    }

    /// Where a field of the Fleet document is written.
    fn fleet_origin(&self, pointer: &str) -> Origin {
        let fleet = &self.fleet.fleet;
        self.origin(fleet.doc, pointer, &fleet.origin)
    }

    /// The chart values of the release that renders `object` (the GPU Operator's values for
    /// its ClusterPolicy): settings of an object a chart renders go into the chart's values.
    fn policy_values(&mut self, object: &ResourceId) -> Option<&mut Value> {
        self.releases
            .values_mut()
            .find(|r| r.provides.contains(object))
            .map(|r| &mut r.values)
    }

    /// Orders the release that renders `object` after `on`.
    fn release_waits_for(&mut self, object: &ResourceId, on: &ResourceId, reason: String) {
        if let Some(r) = self
            .releases
            .values_mut()
            .find(|r| r.provides.contains(object))
            && !r.after.iter().any(|d| &d.on == on)
        {
            r.after.push(dependency(on, reason));
        }
    }

    fn add_release(&mut self, release: ChartRelease) {
        self.releases
            .insert((release.cluster.clone(), release.name.clone()), release);
    }

    /// A release in its own namespace, which compile creates and the release waits for.
    fn namespaced_release(&mut self, mut release: ChartRelease) {
        let ns = release.namespace.clone();
        let ns_id = self.kube(&release.cluster, namespace(&ns), release.origin.clone());
        release
            .after
            .push(dependency(&ns_id, format!("namespace {ns} first")));
        self.add_release(release);
    }

    /// The releases besides the GPU and Network Operators: NIM Operator, DRA driver, KAI,
    /// Grove, Kyverno and the tenant's CNI and CSI.
    fn operator_releases(
        &mut self,
        tenant: &Tenant,
        ops: &crate::manifest::Operators,
        pools: &[&NodePool],
    ) {
        let t = tenant.name().to_string();
        let spec = &self.fleet.fleet.spec;
        let defaults = spec.charts.clone();
        if let Some(nim) = &ops.nim_operator {
            let r = charts::release(
                &t,
                &defaults,
                charts::ReleaseSpec {
                    name: "nim-operator",
                    namespace: "nim-operator",
                    chart: "k8s-nim-operator",
                    version: &nim.version,
                    source: nim.chart.as_ref(),
                    typed: charts::nim_operator_values(),
                    user_values: nim.values.as_ref(),
                    origin: self.operator_origin(tenant, "nimOperator"),
                    value_origins: self.operator_value_origins(
                        tenant,
                        "nimOperator",
                        nim.values.as_ref(),
                    ),
                },
            );
            self.namespaced_release(r);
        }
        let dra_pools = pools
            .iter()
            .any(|p| matches!(p.spec.gpu_sharing, Some(GpuSharing::Dra(_))));
        if let (Some(dra), true) = (&ops.dra_driver, dra_pools) {
            let r = charts::release(
                &t,
                &defaults,
                charts::ReleaseSpec {
                    name: "nvidia-dra-driver-gpu",
                    namespace: "nvidia-dra-driver-gpu",
                    chart: "dra-driver-nvidia-gpu",
                    version: &dra.version,
                    source: dra.chart.as_ref(),
                    typed: charts::dra_driver_values(pools, !ops.gpu_operator.driver.enabled),
                    user_values: dra.values.as_ref(),
                    origin: self.operator_origin(tenant, "draDriver"),
                    value_origins: self.operator_value_origins(
                        tenant,
                        "draDriver",
                        dra.values.as_ref(),
                    ),
                },
            );
            // The DRA driver serves the ComputeDomain CRDs: its copy, not the GPU Operator's.
            if let Some(gpu) = self
                .releases
                .get_mut(&(t.clone(), "gpu-operator".to_string()))
            {
                gpu.yields_crds_to.push(r.name.clone());
            }
            self.namespaced_release(r);
        }
        if let Some(kai) = &spec.schedulers.kai {
            let r = charts::release(
                &t,
                &defaults,
                charts::ReleaseSpec {
                    name: "kai-scheduler",
                    namespace: "kai-scheduler",
                    chart: "kai-scheduler",
                    version: &kai.version,
                    source: kai.chart.as_ref(),
                    // Image tags follow the release (the chart's own version is a placeholder).
                    typed: json!({ "global": { "tag": kai.version } }),
                    user_values: kai.values.as_ref(),
                    origin: self.fleet_origin("/spec/schedulers/kai"),
                    value_origins: self.value_origins(
                        self.fleet.fleet.doc,
                        "/spec/schedulers/kai/values",
                        kai.values.as_ref(),
                    ),
                },
            );
            self.namespaced_release(r);
        }
        if let Some(grove) = &spec.schedulers.grove {
            let r = charts::release(
                &t,
                &defaults,
                charts::ReleaseSpec {
                    name: "grove",
                    namespace: "grove-system",
                    chart: "grove-charts",
                    version: &grove.version,
                    source: grove.chart.as_ref(),
                    typed: json!({}),
                    user_values: grove.values.as_ref(),
                    origin: self.fleet_origin("/spec/schedulers/grove"),
                    value_origins: self.value_origins(
                        self.fleet.fleet.doc,
                        "/spec/schedulers/grove/values",
                        grove.values.as_ref(),
                    ),
                },
            );
            self.namespaced_release(r);
        }
        if let Some(kyverno) = &spec.policies.kyverno {
            // The chart's `kyverno-api` subchart (policies.kyverno.io CRDs) is published apart
            // and not always reachable; it is installed only when the manifest turns it on.
            let r = charts::release(
                &t,
                &defaults,
                charts::ReleaseSpec {
                    name: "kyverno",
                    namespace: "kyverno",
                    chart: "kyverno",
                    version: kyverno.version.trim_start_matches('v'),
                    source: kyverno.chart.as_ref(),
                    typed: json!({}),
                    user_values: kyverno.values.as_ref(),
                    origin: self.fleet_origin("/spec/policies/kyverno"),
                    value_origins: self.value_origins(
                        self.fleet.fleet.doc,
                        "/spec/policies/kyverno/values",
                        kyverno.values.as_ref(),
                    ),
                },
            );
            self.namespaced_release(r);
        }
        for (key, addon) in [("cni", &tenant.spec.cni), ("csi", &tenant.spec.csi)] {
            let Some(addon) = addon else { continue };
            let origin = self.origin(tenant.doc, &format!("/spec/{key}"), &tenant.origin);
            let values_at = self.value_origins(
                tenant.doc,
                &format!("/spec/{key}/values"),
                addon.values.as_ref(),
            );
            if let Some(r) = charts::addon(tenant, &defaults, addon, origin, values_at) {
                self.add_release(r);
            }
        }
    }

    /// Edges to an object a release renders (the ClusterPolicy) cannot exist before the
    /// release is expanded: hand them to the release, which adds them back, with edges to
    /// its CRDs and workloads, once rendered. Without expansion nothing dangles.
    fn hand_over_release_waits(&mut self) {
        let provided: BTreeMap<ResourceId, (String, String)> = self
            .releases
            .iter()
            .flat_map(|(k, r)| r.provides.iter().map(move |id| (id.clone(), k.clone())))
            .filter(|(id, _)| !self.out.contains_key(id))
            .collect();
        let mut handed: Vec<((String, String), Dependent)> = Vec::new();
        for d in self.out.values_mut() {
            d.deps.retain(|dep| match provided.get(&dep.on) {
                Some(k) => {
                    handed.push((
                        k.clone(),
                        Dependent {
                            id: d.id.clone(),
                            reason: dep.reason.clone(),
                        },
                    ));
                    false
                }
                _ => true,
            });
        }
        for (k, dependent) in handed {
            if let Some(r) = self.releases.get_mut(&k) {
                r.dependents.push(dependent);
            }
        }
    }

    fn host(&mut self, host: &Host, pool: Option<&NodePool>) {
        let spec = &host.spec;
        // A host without a BMC is NICo's (compile/nico.rs): no redfish resources.
        let Some(b) = &spec.bmc else { return };
        let bmc = json!({
            "endpoint": b.endpoint,
            "system": b.system_id,
            "credentials": { "username": b.credentials.username, "password": b.credentials.password },
            "caBundle": b.ca_bundle,
            "insecure": b.insecure,
        });
        let rollout = pool.map(|p| {
            let defaults = &self.fleet.fleet.spec.rollout;
            let r = p.spec.rollout.as_ref();
            RolloutGroup {
                pool: format!("{}/{}", p.spec.tenant, p.name()),
                fault_domain: spec.rack.clone(),
                host: host.name().to_string(),
                max_unavailable: r
                    .and_then(|r| r.max_unavailable)
                    .unwrap_or(defaults.max_unavailable),
                max_unavailable_per_fault_domain: r
                    .and_then(|r| r.max_unavailable_per_fault_domain)
                    .unwrap_or(defaults.max_unavailable_per_fault_domain),
            }
        });
        let name = host.name();
        // A pool member is a node of its tenant's cluster: cordoned while a
        // change that reboots the host is applied.
        let node = pool.map(|p| {
            kube_id(
                &p.spec.tenant,
                &json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": name } }),
            )
        });
        let mut aspects: Vec<(ResourceId, &str)> = Vec::new();
        let mut push =
            |cx: &mut Self, aspect: &'static str, body: Value, pointer: &str, disruptive: bool| {
                let mut s = json!({ "bmc": bmc });
                if let (Some(o), Value::Object(b)) = (s.as_object_mut(), body) {
                    o.extend(b);
                }
                let mut d = Desired::new(host_id(name, aspect), s);
                d.origin = Some(cx.origin(host.doc, pointer, &host.origin));
                if disruptive {
                    d.rollout = rollout.clone();
                    d.maintenance = node.clone();
                }
                aspects.push((d.id.clone(), aspect));
                cx.add(d);
            };
        if !spec.firmware.is_empty() {
            let expected: BTreeMap<&String, &str> = spec
                .firmware
                .iter()
                .map(|(k, w)| (k, w.version()))
                .collect();
            let updates: BTreeMap<&String, Value> = spec
                .firmware
                .iter()
                .filter_map(|(k, w)| match w {
                    crate::manifest::FirmwareWant::Image(i) => {
                        let mut u = json!({ "image": i.image });
                        if let Some(p) = &i.transfer_protocol {
                            u["transferProtocol"] = json!(p);
                        }
                        if !i.targets.is_empty() {
                            u["targets"] = json!(i.targets);
                        }
                        Some((k, u))
                    }
                    crate::manifest::FirmwareWant::Version(_) => None,
                })
                .collect();
            let mut body = json!({ "expected": expected });
            if !updates.is_empty() {
                body["updates"] = json!(updates);
            }
            push(self, "firmware", body, "/spec/firmware", true);
        }
        if let Some(bios) = &spec.bios {
            push(
                self,
                "bios",
                json!({ "attributes": bios.attributes }),
                "/spec/bios",
                true,
            );
        }
        if let Some(enabled) = spec.secure_boot {
            push(
                self,
                "secure-boot",
                json!({ "enabled": enabled }),
                "/spec/secureBoot",
                true,
            );
        }
        if let Some(boot) = &spec.boot {
            push(
                self,
                "boot",
                json!({ "target": boot.target, "enabled": "Continuous", "mode": boot.mode }),
                "/spec/boot",
                false,
            );
        }
        // The GPUs the BMC reports must be the manifest's (read-only; a mismatch is a problem
        // of this host at plan time).
        if spec.gpu.verify {
            push(
                self,
                "inventory",
                json!({ "expect": { "gpuModel": bmc_gpu_model(spec.gpu.model), "gpuCount": spec.gpu.count } }),
                "/spec/gpu",
                false,
            );
        }
        // The host's one reset: BIOS and secure-boot settings are staged by their own
        // resources and made current by a single reset the power resource plans (disruptive,
        // so it is the step that is rolled out and cordoned).
        let mut power = json!({ "state": spec.power });
        let mut at_reset = serde_json::Map::new();
        if let Some(bios) = spec.bios.as_ref().filter(|b| !b.attributes.is_empty()) {
            at_reset.insert("bios".into(), json!(bios.attributes));
        }
        if let Some(enabled) = spec.secure_boot {
            at_reset.insert("secureBoot".into(), json!(enabled));
        }
        // Host firmware installed from an image activates at the host's reset too; the BMC's
        // own (named `BMC`, or installed through the manager) activates with the BMC's reset.
        let staged_firmware: BTreeMap<&String, &str> = spec
            .firmware
            .iter()
            .filter_map(|(k, w)| match w {
                crate::manifest::FirmwareWant::Image(i)
                    if k != "BMC" && !i.targets.iter().any(|t| t == "manager") =>
                {
                    Some((k, i.version.as_str()))
                }
                _ => None,
            })
            .collect();
        if !staged_firmware.is_empty() {
            at_reset.insert("firmware".into(), json!(staged_firmware));
        }
        if !at_reset.is_empty() && matches!(spec.power, crate::manifest::PowerState::On) {
            power["applyAtReset"] = Value::Object(at_reset);
        }
        push(self, "power", power, "/spec/power", true);
        let power = host_id(name, "power");
        for (id, aspect) in aspects {
            if aspect != "power" && aspect != "inventory" {
                self.dep(
                    &power,
                    &id,
                    format!("{aspect} settings of {name} take effect at the next power-on"),
                );
            }
        }
    }

    fn tenant(&mut self, tenant: &Tenant) {
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

    fn pool(&mut self, t: &str, pool: &NodePool, cluster_policy: &ResourceId) {
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

    fn pull_secret(
        &mut self,
        tenant: &Tenant,
        namespace: &str,
        ns_id: &ResourceId,
    ) -> Option<ResourceId> {
        let ngc = tenant.spec.ngc.as_ref()?;
        let key = match self.secrets.resolve(&ngc.api_key) {
            Ok(k) => k,
            Err(e) => {
                let span = self.fleet.nearest_span(tenant.doc, "/spec/ngc/apiKey");
                self.diags.push(
                    Diagnostic::error("secret-unreadable", format!("tenant {}: {e}", tenant.name()))
                        .at(span)
                        .field("spec.ngc.apiKey")
                        .hint("set the variable or create the file; the fleet only names where the key lives"),
                );
                return None;
            }
        };
        let registry = &self.fleet.fleet.spec.registries.ngc;
        let host = registry_host(&registry.endpoint);
        let user = registry.username.as_deref().unwrap_or("$oauthtoken");
        let auth =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", key.expose()));
        let config = json!({ "auths": { host: { "username": user, "password": key.expose(), "auth": auth } } });
        let data = base64::engine::general_purpose::STANDARD.encode(config.to_string());
        let obj = json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": { "name": "ngc-pull", "namespace": namespace },
            "data": { ".dockerconfigjson": data }
        });
        let origin = self.origin(tenant.doc, "/spec/ngc/apiKey", &tenant.origin);
        let id = self.kube(tenant.name(), obj, origin);
        if let Some(d) = self.out.get_mut(&id) {
            d.sensitive = vec!["/object/data/.dockerconfigjson".into()];
        }
        self.dep(&id, ns_id, format!("namespace {namespace} first"));
        Some(id)
    }

    fn nim(&mut self, tenant: &Tenant, nim: &NimService, cluster_policy: &ResourceId) {
        let t = tenant.name().to_string();
        let ns = nim.spec.namespace.clone();
        let origin = nim.origin.clone();
        let ns_id = self.kube(&t, namespace(&ns), origin.clone());
        let pull = self.pull_secret(tenant, &ns, &ns_id);
        if let Some(gpus) = tenant.spec.quotas.gpus {
            let q = json!({ "apiVersion": "v1", "kind": "ResourceQuota", "metadata": { "name": "gpu-quota", "namespace": ns }, "spec": { "hard": { "requests.nvidia.com/gpu": gpus.to_string() } } });
            let q_id = self.kube(&t, q, origin.clone());
            self.dep(&q_id, &ns_id, format!("namespace {ns} first"));
        }
        // The NGC API key the NIM uses to download models.
        let mut auth_id = None;
        if let Some(ngc) = &tenant.spec.ngc
            && let Ok(key) = self.secrets.resolve(&ngc.api_key)
        {
            let obj = json!({ "apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": { "name": "ngc-api", "namespace": ns }, "data": { "NGC_API_KEY": base64::engine::general_purpose::STANDARD.encode(key.expose()) } });
            let id = self.kube(&t, obj, origin.clone());
            if let Some(d) = self.out.get_mut(&id) {
                d.sensitive = vec!["/object/data/NGC_API_KEY".into()];
            }
            self.dep(&id, &ns_id, format!("namespace {ns} first"));
            auth_id = Some(id);
        }
        // The repository is named in the fleet's registry (validate refused any other), so
        // the object names exactly the repository whose digest is pinned and whose pull
        // secret it carries.
        let registry = &self.fleet.fleet.spec.registries.ngc;
        let parsed = ImageRef::parse(&nim.spec.image)
            .map_err(|e| e.to_string())
            .and_then(|i| fleet_image(&i, registry).map(|(h, p)| (i, h, p)));
        let (image, host, path) = match parsed {
            Ok(x) => x,
            Err(why) => {
                let span = self.fleet.nearest_span(nim.doc, "/spec/image");
                self.diags.push(
                    Diagnostic::error("image-ref", format!("NIM {}: {why}", nim.name()))
                        .at(span)
                        .field("spec.image"),
                );
                return;
            }
        };
        let repo = format!("{host}/{path}");
        let tag = image.operator_tag();
        let puller = match (&image.tag, &image.digest) {
            (_, Some(d)) if image.tag.is_none() => format!("{repo}@{d}"),
            (Some(t), Some(d)) => format!("{repo}:{t}@{d}"),
            (Some(t), None) => format!("{repo}:{t}"),
            (None, _) => repo.clone(),
        };
        let image_id = self.image(tenant, nim, &image, &host, &path);
        let mut cache_id = None;
        if let Some(cache) = &nim.spec.cache {
            let mut storage = json!({ "pvc": { "create": true, "size": cache.size, "volumeAccessMode": "ReadWriteOnce" } });
            if let Some(sc) = &cache.storage_class {
                storage["pvc"]["storageClass"] = json!(sc);
            }
            let c = json!({
                "apiVersion": "apps.nvidia.com/v1alpha1", "kind": "NIMCache", "metadata": { "name": nim.name(), "namespace": ns },
                "spec": { "source": { "ngc": { "modelPuller": puller, "pullSecret": "ngc-pull", "authSecret": "ngc-api" } }, "storage": storage }
            });
            let o = self.origin(nim.doc, "/spec/cache", &origin);
            let id = self.kube(&t, c, o);
            self.dep(
                &id,
                cluster_policy,
                "NIM workloads need the GPU Operator ready",
            );
            cache_id = Some(id);
        }
        let pool = self.fleet.pool(&nim.spec.pool);
        let request = sharing::request(
            pool.and_then(|p| p.spec.gpu_sharing.as_ref()),
            self.fleet.operators_for(&t).gpu_operator.mig_strategy,
            nim.spec.mig_profile.as_deref(),
            nim.spec.gpus_per_replica,
        );
        let (resources, dra) = gpu_request(&request);
        let mut spec = json!({
            "image": { "repository": repo, "tag": tag, "pullSecrets": ["ngc-pull"] },
            "authSecret": "ngc-api",
            "replicas": nim.spec.replicas,
            "resources": resources,
            "expose": { "service": { "type": "ClusterIP", "port": 8000 } },
        });
        if let Some(d) = dra {
            spec["draResources"] = d;
        }
        if cache_id.is_some() {
            spec["storage"] = json!({ "nimCache": { "name": nim.name() } });
        }
        let svc = json!({ "apiVersion": "apps.nvidia.com/v1alpha1", "kind": "NIMService", "metadata": { "name": nim.name(), "namespace": ns }, "spec": spec });
        let id = self.kube(&t, svc, origin);
        self.dep(
            &id,
            cluster_policy,
            "NIM workloads need the GPU Operator ready",
        );
        self.dep(&id, &ns_id, format!("namespace {ns} first"));
        // Only the service's image is pinned: the NIMCache's `modelPuller` is immutable
        // (NIM Operator CRD), so pinning it would turn every tag move into a destructive
        // replace of the model cache, for an image that only downloads the model once.
        self.pin(&id, "/object/spec/image/tag", &image_id, nim);
        for dep in [pull, auth_id, cache_id, image_id].into_iter().flatten() {
            let reason = match dep.provider() {
                "ngc" => format!("image tag {repo}:{tag} must resolve in the registry"),
                _ if dep.as_str().contains("NIMCache") => {
                    "the model cache is filled before the service starts".into()
                }
                _ => "credentials before anything that pulls from NGC".into(),
            };
            self.dep(&id, &dep, reason);
        }
    }

    /// With `registries.pinDigests`, records that the string at `path` of
    /// `id` gets the digest of `image` appended at plan time, and orders the
    /// image first so its digest is known before the object is observed.
    fn pin(&mut self, id: &ResourceId, path: &str, image: &Option<ResourceId>, nim: &NimService) {
        let Some(image) = image else { return };
        if !self.fleet.fleet.spec.registries.pin_digests {
            return;
        }
        let origin = self.origin(nim.doc, "/spec/image", &nim.origin);
        if let Some(d) = self.out.get_mut(id) {
            d.pins.push(crate::resource::Pin {
                path: path.into(),
                image: image.clone(),
                origin: Some(origin),
            });
        }
        self.dep(id, image, format!("pins the digest of {image}"));
    }

    /// An ngc image resource for a NIM's image, resolved against the fleet's registry endpoint.
    fn image(
        &mut self,
        tenant: &Tenant,
        nim: &NimService,
        image: &ImageRef,
        host: &str,
        repository: &str,
    ) -> Option<ResourceId> {
        let registry = &self.fleet.fleet.spec.registries.ngc;
        let tag = image.reference();
        let user = registry.username.as_deref().unwrap_or("$oauthtoken");
        // The tenant's own key, else the fleet-wide one: resolving a digest runs in fleetform,
        // so the fleet key never reaches a tenant cluster (pull secrets use tenant keys only).
        let credentials = tenant
            .spec
            .ngc
            .as_ref()
            .map(|n| &n.api_key)
            .or(registry.api_key.as_ref())
            .map(|key| json!({ "username": user, "password": key }));
        let spec = json!({
            "tenant": tenant.name(),
            "registry": { "endpoint": registry.endpoint, "insecure": registry.insecure, "caBundle": registry.ca_bundle },
            "repository": repository, "tag": tag, "credentials": credentials,
        });
        let id = ResourceId::new(
            "ngc",
            format!("image/{}/{host}/{repository}:{tag}", tenant.name()),
        );
        let mut d = Desired::new(id.clone(), strip_nulls(spec));
        d.origin = Some(self.origin(nim.doc, "/spec/image", &nim.origin));
        self.add(d);
        Some(id)
    }
}

/// An ordering edge with its reason.
fn dependency(on: &ResourceId, reason: impl Into<String>) -> crate::resource::Dependency {
    crate::resource::Dependency {
        on: on.clone(),
        reason: reason.into(),
        origin: None,
    }
}

fn namespace(name: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } })
}

/// The NIMService fields that ask for the GPUs of one replica: a device-plugin limit,
/// or a DRA claim the NIM Operator generates (`draResources`), as [`sharing::request`]
/// says the pool's sharing mode exposes them.
fn gpu_request(request: &sharing::Request) -> (Value, Option<Value>) {
    match request {
        sharing::Request::Extended { resource, count } => (
            json!({ "limits": { resource.as_str(): count.to_string() } }),
            None,
        ),
        sharing::Request::Dra {
            class,
            profile,
            count,
        } => {
            let mut device = json!({
                "name": class.device_type(), "deviceClassName": class.name(),
                "driverName": class.driver(), "count": count,
            });
            if let Some(p) = profile {
                device["attributeSelectors"] =
                    json!([{ "key": "profile", "op": "Equal", "value": { "stringValue": p } }]);
            }
            (
                json!({}),
                Some(json!([{ "claimCreationSpec": { "devices": [device] } }])),
            )
        }
    }
}

/// `host:port` of an endpoint URL.
pub fn registry_host(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// An image reference taken apart by the OCI distribution reference grammar
/// (`[domain/]path[:tag][@digest]`, as docker and containerd parse it): the first
/// `/`-separated component is a registry host only if it contains `.` or `:` or is
/// `localhost`; otherwise it is the first component of the repository path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host (and port) as written, when the reference names one.
    pub domain: Option<String>,
    /// The repository path within the registry (`nim/meta/llama`), exactly as written.
    pub path: String,
    /// The tag, when one is given.
    pub tag: Option<String>,
    /// The digest (`sha256:...`), when one is given.
    pub digest: Option<String>,
}

/// Why a string is not an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefError {
    /// Nothing, or only a tag or digest.
    #[error("the image reference is empty")]
    Empty,
    /// Upper-case letters, `..`, a leading `/` and the like in the repository path.
    #[error(
        "`{0}` is not a valid repository path component (lowercase letters and digits, separated by `.`, `_`, `__` or `-`)"
    )]
    Path(String),
    /// A registry host that is not a host name, IP address or `host:port`.
    #[error("`{0}` is not a registry host[:port]")]
    Domain(String),
    /// A tag that is empty, too long or has characters other than `[A-Za-z0-9_.-]`.
    #[error(
        "`{0}` is not a tag (1 to 128 of letters, digits, `_`, `.`, `-`, not starting with `.` or `-`)"
    )]
    Tag(String),
    /// A digest that is not `algorithm:hex` (sha256: 64 lowercase hex digits).
    #[error("`{0}` is not a digest (`sha256:` and 64 lowercase hex digits)")]
    Digest(String),
    /// The name is longer than the registry protocol allows.
    #[error("the repository name is {0} characters long, over 255")]
    TooLong(usize),
}

fn is_path_component(c: &str) -> bool {
    // alnum+ ( ( "." | "_" | "__" | "-"+ ) alnum+ )*
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut k = 0;
    while k < b.len() {
        if alnum(b[k]) {
            k += 1;
            continue;
        }
        let sep_start = k;
        while k < b.len() && !alnum(b[k]) {
            k += 1;
        }
        let sep = &c[sep_start..k];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn is_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        // [IPv6]:port
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port
        && (p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err())
    {
        return false;
    }
    if d.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || b"_.-".contains(x))
}

/// `algorithm:encoded` of the OCI image spec; the registered algorithms have fixed
/// lowercase-hex lengths (sha256: 64, sha512: 128).
pub fn is_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = !alg.is_empty()
        && alg.split(['+', '.', '_', '-']).all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphabetic()
                && b.iter().all(|x| x.is_ascii_alphanumeric())
        });
    let lower_hex = |n: usize| {
        hex.len() == n
            && hex
                .bytes()
                .all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x))
    };
    alg_ok
        && match alg {
            "sha256" => lower_hex(64),
            "sha512" => lower_hex(128),
            _ => hex.len() >= 32 && hex.bytes().all(|x| x.is_ascii_hexdigit()),
        }
}

impl ImageRef {
    /// Parses `[domain/]path[:tag][@digest]` by the distribution reference grammar.
    pub fn parse(image: &str) -> Result<Self, ImageRefError> {
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => {
                if !is_digest(digest) {
                    return Err(ImageRefError::Digest(digest.to_string()));
                }
                (name, Some(digest.to_string()))
            }
            None => (image, None),
        };
        // The tag follows the last `:` after the last `/` (a port is not a tag).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let t = &name[last_slash + i + 1..];
                if !is_tag(t) {
                    return Err(ImageRefError::Tag(t.to_string()));
                }
                (&name[..last_slash + i], Some(t.to_string()))
            }
            None => (name, None),
        };
        if name.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if name.len() > 255 {
            return Err(ImageRefError::TooLong(name.len()));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => {
                if !is_domain(first) {
                    return Err(ImageRefError::Domain(first.to_string()));
                }
                (Some(first.to_string()), rest)
            }
            _ => (None, name),
        };
        if let Some(bad) = path.split('/').find(|c| !is_path_component(c)) {
            return Err(ImageRefError::Path(bad.to_string()));
        }
        Ok(Self {
            domain,
            path: path.to_string(),
            tag,
            digest,
        })
    }

    /// The name as written: `domain/path`, or `path` when no registry is named.
    pub fn name(&self) -> String {
        match &self.domain {
            Some(d) => format!("{d}/{}", self.path),
            None => self.path.clone(),
        }
    }

    /// What a registry resolves: the digest when there is one (it is what will run), else the
    /// tag, else `latest`.
    pub fn reference(&self) -> String {
        self.digest
            .clone()
            .or_else(|| self.tag.clone())
            .unwrap_or_else(|| "latest".into())
    }

    /// The `tag` of an operator's `{repository, tag}` image: the tag with the digest appended
    /// (`1.8@sha256:...`, as digest pinning writes it), so `repository:tag` is the reference
    /// the manifest gave; `latest` when no tag is given.
    pub fn operator_tag(&self) -> String {
        let tag = self.tag.as_deref().unwrap_or("latest");
        match &self.digest {
            Some(d) => format!("{tag}@{d}"),
            None => tag.to_string(),
        }
    }
}

/// The upstream NGC registry host.
pub const NGC_HOST: &str = "nvcr.io";

/// Where a NIM image is resolved and pulled from. The fleet pulls NIM images from one
/// registry, `registries.ngc.endpoint` (nvcr.io, or a mirror of it standing in for it):
/// an image that names no registry, names that endpoint's host, or names `nvcr.io`
/// is that endpoint's repository `path`, exactly as written (a mirror serves nvcr.io's
/// repositories under the same paths). Any other registry is refused: neither pull
/// secrets nor digest pinning would cover it. Returns `(endpoint host, path)`.
pub fn fleet_image(
    image: &ImageRef,
    registry: &crate::manifest::Registry,
) -> Result<(String, String), String> {
    let host = registry_host(&registry.endpoint);
    match image.domain.as_deref() {
        None => Ok((host, image.path.clone())),
        Some(d) if d == host || d == NGC_HOST => Ok((host, image.path.clone())),
        Some(d) => Err(format!(
            "the image names registry `{d}`, but NIM images are pulled from the fleet's registry `{host}` (registries.ngc.endpoint)"
        )),
    }
}

fn strip_nulls(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, x| !x.is_null());
        for x in m.values_mut() {
            *x = strip_nulls(x.take());
        }
    }
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (Option<String>, String, Option<String>, Option<String>) {
        let i = ImageRef::parse(s).unwrap();
        (i.domain, i.path, i.tag, i.digest)
    }

    fn own(
        d: Option<&str>,
        p: &str,
        t: Option<&str>,
        g: Option<&str>,
    ) -> (Option<String>, String, Option<String>, Option<String>) {
        (
            d.map(Into::into),
            p.into(),
            t.map(Into::into),
            g.map(Into::into),
        )
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_first_component_is_a_registry_only_with_a_dot_a_colon_or_localhost() {
        for (s, want) in [
            (
                "nvidia/nim/llama:1.0",
                own(None, "nvidia/nim/llama", Some("1.0"), None),
            ),
            ("nim/llama", own(None, "nim/llama", None, None)),
            ("llama:1.0", own(None, "llama", Some("1.0"), None)),
            (
                "nvcr.io/nim/llama:1.0",
                own(Some("nvcr.io"), "nim/llama", Some("1.0"), None),
            ),
            (
                "127.0.0.1:5000/nim/llama:1.0",
                own(Some("127.0.0.1:5000"), "nim/llama", Some("1.0"), None),
            ),
            (
                "localhost/nim/llama",
                own(Some("localhost"), "nim/llama", None, None),
            ),
            (
                "registry:5000/llama",
                own(Some("registry:5000"), "llama", None, None),
            ),
            (
                "[::1]:5000/a/b:c",
                own(Some("[::1]:5000"), "a/b", Some("c"), None),
            ),
            (
                &format!("nvcr.io/nim/llama:1.8@{D}")[..],
                own(Some("nvcr.io"), "nim/llama", Some("1.8"), Some(D)),
            ),
            (
                &format!("nim/llama@{D}")[..],
                own(None, "nim/llama", None, Some(D)),
            ),
            ("a__b/c--d/e.f_g", own(None, "a__b/c--d/e.f_g", None, None)),
        ] {
            assert_eq!(parts(s), want, "{s}");
        }
    }

    #[test]
    fn references_that_break_the_grammar_are_refused() {
        for s in [
            "",
            ":1.0",
            "../../v2/_catalog",
            "nim/../llama",
            "nim/e..f",
            "nim/a___b",
            "/nim/llama",
            "nim//llama",
            "nim/llama/",
            "Nvidia/nim",
            "nim/Llama",
            "nim/llama:",
            "nim/llama:.x",
            "nim/llama:-x",
            "nim/llama@sha256:abc",
            "nim/llama@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "nim/llama@",
            "nvcr.io:/nim/llama",
            "nvcr.io:99999/nim",
            "-bad.io/nim",
            "nim/llama:1.0 ",
            "nim/llama?x=1",
        ] {
            assert!(ImageRef::parse(s).is_err(), "{s:?} was accepted");
        }
        let long = format!("nim/{}", "a".repeat(300));
        assert!(matches!(
            ImageRef::parse(&long),
            Err(ImageRefError::TooLong(_))
        ));
    }

    #[test]
    fn the_registry_is_asked_for_the_digest_and_the_operator_gets_tag_at_digest() {
        let i = ImageRef::parse(&format!("nvcr.io/nim/llama:1.8@{D}")).unwrap();
        assert_eq!(i.reference(), D);
        assert_eq!(i.operator_tag(), format!("1.8@{D}"));
        let i = ImageRef::parse("nvcr.io/nim/llama").unwrap();
        assert_eq!(
            (i.reference(), i.operator_tag()),
            ("latest".into(), "latest".into())
        );
        let i = ImageRef::parse(&format!("127.0.0.1:5000/nim/llama@{D}")).unwrap();
        assert_eq!(i.operator_tag(), format!("latest@{D}"));
        assert_eq!(registry_host("https://nvcr.io"), "nvcr.io");
    }

    #[test]
    fn an_image_is_the_repository_written_in_the_fleet_registry() {
        let reg = |endpoint: &str| crate::manifest::Registry {
            endpoint: endpoint.into(),
            insecure: false,
            ca_bundle: None,
            username: None,
            api_key: None,
        };
        let mirror = reg("https://127.0.0.1:5000");
        for (image, want) in [
            ("nvidia/nim/llama:1.0", "nvidia/nim/llama"),
            ("nvcr.io/nim/llama:1.0", "nim/llama"),
            ("127.0.0.1:5000/nim/llama:1.0", "nim/llama"),
        ] {
            let i = ImageRef::parse(image).unwrap();
            assert_eq!(
                fleet_image(&i, &mirror).unwrap(),
                ("127.0.0.1:5000".to_string(), want.to_string()),
                "{image}"
            );
        }
        let i = ImageRef::parse("docker.io/library/llama:1.0").unwrap();
        assert!(fleet_image(&i, &mirror).is_err());
    }
}
