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

mod addons;
mod capi;
mod dpf;
mod dra;
mod kai;
mod karpenter;
mod kyverno;
mod labels;
mod observability;
mod operands;
mod placement;
mod sharing;

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::diag::Diagnostic;
use crate::manifest::{
    Fleet, GpuSharing, Host, MigConfig, MigLayout, NimService, NodePool, Tenant,
};
use crate::resource::{Desired, Origin, ResourceId, RolloutGroup};
use crate::secret::{SecretRef, SecretResolver};

/// The name fleetform gives the management cluster in addresses.
pub const MANAGEMENT_CLUSTER: &str = "mgmt";

/// Label put on every Kubernetes object fleetform creates, naming the fleet.
pub const FLEET_LABEL: &str = "app.kubernetes.io/managed-by";

/// How to reach one Kubernetes cluster named in addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRef {
    /// The kubeconfig (a file reference).
    pub kubeconfig: SecretRef,
    /// The kubeconfig context.
    pub context: Option<String>,
}

/// The output of compile.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// Desired resources, sorted by address.
    pub resources: Vec<Desired>,
    /// Clusters the kube resources live in.
    pub clusters: BTreeMap<String, ClusterRef>,
}

/// Compiles a validated fleet. Secrets are read only to build pull secrets; a
/// secret that cannot be read is a diagnostic naming the manifest line.
pub fn compile(fleet: &Fleet, secrets: &dyn SecretResolver) -> Result<Compiled, Vec<Diagnostic>> {
    let mut cx = Cx {
        fleet,
        secrets,
        out: BTreeMap::new(),
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
    if cx.diags.is_empty() {
        Ok(Compiled {
            resources: cx.out.into_values().collect(),
            clusters,
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
    diags: Vec<Diagnostic>,
}

/// The address of a Kubernetes object (same format as the kube provider's `object_id`).
pub fn kube_id(cluster: &str, object: &Value) -> ResourceId {
    let s = |p: &str| {
        object
            .pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or("_")
    };
    let mut path = format!("{cluster}/{}/{}", s("/apiVersion"), s("/kind"));
    if let Some(ns) = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
    {
        path.push('/');
        path.push_str(ns);
    }
    path.push('/');
    path.push_str(s("/metadata/name"));
    ResourceId::new("kube", path)
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

    fn host(&mut self, host: &Host, pool: Option<&NodePool>) {
        let spec = &host.spec;
        let bmc = json!({
            "endpoint": spec.bmc.endpoint,
            "system": spec.bmc.system_id,
            "credentials": { "username": spec.bmc.credentials.username, "password": spec.bmc.credentials.password },
            "caBundle": spec.bmc.ca_bundle,
            "insecure": spec.bmc.insecure,
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
            push(
                self,
                "firmware",
                json!({ "expected": spec.firmware }),
                "/spec/firmware",
                true,
            );
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
        push(
            self,
            "secure-boot",
            json!({ "enabled": spec.secure_boot }),
            "/spec/secureBoot",
            true,
        );
        if let Some(boot) = &spec.boot {
            push(
                self,
                "boot",
                json!({ "target": boot.target, "enabled": "Continuous", "mode": boot.mode }),
                "/spec/boot",
                false,
            );
        }
        push(
            self,
            "power",
            json!({ "state": spec.power }),
            "/spec/power",
            false,
        );
        let power = host_id(name, "power");
        for (id, aspect) in aspects {
            if aspect != "power" {
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
                    let system = host.spec.bmc.system_id.clone().unwrap_or_else(|| h.clone());
                    let bmh = json!({
                        "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
                        "metadata": { "name": h, "namespace": format!("tenant-{t}"), "labels": { "fleetform.dev/pool": p.name() } },
                        "spec": {
                            "online": matches!(host.spec.power, crate::manifest::PowerState::On),
                            "bmc": { "address": format!("redfish+{}/redfish/v1/Systems/{system}", host.spec.bmc.endpoint), "credentialsName": format!("{h}-bmc") },
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
            nic_policy = Some(id);
        }
        let g = &ops.gpu_operator;
        let mut driver = json!({ "enabled": g.driver.enabled, "version": g.driver.version, "usePrecompiled": g.driver.use_precompiled, "kernelModuleType": g.driver.kernel_module_type, "rdma": { "enabled": g.driver.rdma } });
        if let Some(repo) = &g.driver.repository {
            driver["repository"] = json!(repo);
        }
        if pull.is_some() {
            driver["imagePullSecrets"] = json!(["ngc-pull"]);
        }
        let cp = json!({
            "apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "metadata": { "name": "cluster-policy" },
            "spec": {
                "operator": { "defaultRuntime": "containerd" },
                "daemonsets": {},
                "driver": driver,
                "toolkit": { "enabled": g.toolkit.enabled },
                "devicePlugin": { "enabled": g.device_plugin.enabled },
                "dcgm": { "enabled": g.dcgm_exporter.enabled },
                "dcgmExporter": { "enabled": g.dcgm_exporter.enabled },
                "gfd": { "enabled": true },
                "mig": { "strategy": g.mig_strategy },
                "migManager": { "enabled": g.mig_manager.enabled },
                "nodeStatusExporter": { "enabled": false },
            }
        });
        let cp_id = self.kube(&t, cp, origin.clone());
        self.dep(&cp_id, &gpu_ns, "namespace gpu-operator first");
        if let Some(p) = &pull {
            self.dep(&cp_id, p, "pull secret before anything that pulls from NGC");
        }
        if let Some(nic) = &nic_policy {
            self.dep(
                &cp_id,
                nic,
                "Network Operator first: GPUDirect RDMA needs its drivers",
            );
        }

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
                for class in &dra.device_classes {
                    let dc = json!({
                        "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": { "name": class },
                        "spec": { "selectors": [ { "cel": { "expression": format!("device.driver == \"{}\"", dra_driver(class)) } } ] }
                    });
                    let o = self.origin(pool.doc, "/spec/gpuSharing/dra", &pool.origin);
                    self.kube(t, dc, o);
                }
            }
            None => {}
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
            let mut node = json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": h, "labels": labels } });
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
        let image = ImageRef::parse(&nim.spec.image);
        let (repo, tag) = (image.repository.clone(), image.operator_tag());
        let image_id = self.image(tenant, nim);
        let mut cache_id = None;
        if let Some(cache) = &nim.spec.cache {
            let mut storage = json!({ "pvc": { "create": true, "size": cache.size, "volumeAccessMode": "ReadWriteOnce" } });
            if let Some(sc) = &cache.storage_class {
                storage["pvc"]["storageClass"] = json!(sc);
            }
            let c = json!({
                "apiVersion": "apps.nvidia.com/v1alpha1", "kind": "NIMCache", "metadata": { "name": nim.name(), "namespace": ns },
                "spec": { "source": { "ngc": { "modelPuller": nim.spec.image, "pullSecret": "ngc-pull", "authSecret": "ngc-api" } }, "storage": storage }
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
        let mut spec = json!({
            "image": { "repository": repo, "tag": tag, "pullSecrets": ["ngc-pull"] },
            "authSecret": "ngc-api",
            "replicas": nim.spec.replicas,
            "resources": { "limits": { gpu_resource(nim): nim.spec.gpus_per_replica.to_string() } },
            "expose": { "service": { "type": "ClusterIP", "port": 8000 } },
        });
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
                "ngc" => format!(
                    "image tag {}:{tag} must resolve in the registry",
                    nim.spec
                        .image
                        .rsplit_once(':')
                        .map_or(&*nim.spec.image, |x| x.0)
                ),
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
    fn image(&mut self, tenant: &Tenant, nim: &NimService) -> Option<ResourceId> {
        let registry = &self.fleet.fleet.spec.registries.ngc;
        let image = ImageRef::parse(&nim.spec.image);
        let tag = image.reference();
        // The repository within the registry: the manifest's host is the fleet's endpoint.
        let repository = image
            .repository
            .split_once('/')
            .map_or(image.repository.as_str(), |(_, r)| r)
            .to_string();
        let host = registry_host(&registry.endpoint);
        let user = registry.username.as_deref().unwrap_or("$oauthtoken");
        let credentials = tenant
            .spec
            .ngc
            .as_ref()
            .map(|n| json!({ "username": user, "password": n.api_key }));
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

fn namespace(name: &str) -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } })
}

fn dra_driver(class: &str) -> &str {
    match class {
        "mig.nvidia.com" | "gpu.nvidia.com" => "gpu.nvidia.com",
        c if c.contains("compute-domain") => "compute-domain.nvidia.com",
        _ => "gpu.nvidia.com",
    }
}

fn gpu_resource(nim: &NimService) -> String {
    match &nim.spec.mig_profile {
        Some(p) => format!("nvidia.com/mig-{p}"),
        None => "nvidia.com/gpu".into(),
    }
}

/// `host:port` of an endpoint URL.
pub fn registry_host(endpoint: &str) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// An image reference taken apart: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Everything before the tag, registry (and its port) included.
    pub repository: String,
    /// The tag, when one is given.
    pub tag: Option<String>,
    /// The digest (`sha256:...`), when one is given.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses `repo[:tag][@digest]`; a registry port (`host:5000/...`) is not a tag.
    pub fn parse(image: &str) -> Self {
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => (name, Some(digest.to_string())),
            None => (image, None),
        };
        let last_slash = name.rfind('/').unwrap_or(0);
        let (repository, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                name[..last_slash + i].to_string(),
                Some(name[last_slash + i + 1..].to_string()),
            ),
            None => (name.to_string(), None),
        };
        Self {
            repository,
            tag,
            digest,
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

    #[test]
    fn image_references_split_at_the_tag_not_the_port() {
        let i = ImageRef::parse("127.0.0.1:5000/nim/llama:1.0");
        assert_eq!(
            (i.repository.as_str(), i.tag.as_deref()),
            ("127.0.0.1:5000/nim/llama", Some("1.0"))
        );
        assert_eq!(
            (i.reference(), i.operator_tag()),
            ("1.0".into(), "1.0".into())
        );
        let i = ImageRef::parse("nvcr.io/nim/llama");
        assert_eq!(i.repository, "nvcr.io/nim/llama");
        assert_eq!((&i.tag, &i.digest), (&None, &None));
        assert_eq!(
            (i.reference(), i.operator_tag()),
            ("latest".into(), "latest".into())
        );
        assert_eq!(registry_host("https://nvcr.io"), "nvcr.io");
    }

    #[test]
    fn a_digest_is_not_mistaken_for_a_tag() {
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let i = ImageRef::parse(&format!("nvcr.io/nim/llama:1.8@{d}"));
        assert_eq!(i.repository, "nvcr.io/nim/llama");
        assert_eq!(i.tag.as_deref(), Some("1.8"));
        assert_eq!(i.digest.as_deref(), Some(d));
        // The registry is asked for the digest; the operator gets tag@digest.
        assert_eq!(i.reference(), d);
        assert_eq!(i.operator_tag(), format!("1.8@{d}"));
        let i = ImageRef::parse(&format!("127.0.0.1:5000/nim/llama@{d}"));
        assert_eq!(
            (i.repository.as_str(), i.tag.as_deref()),
            ("127.0.0.1:5000/nim/llama", None)
        );
        assert_eq!(i.operator_tag(), format!("latest@{d}"));
    }
}
