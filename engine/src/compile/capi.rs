//! Cluster API + Metal3 objects in the management cluster for an NCP-managed tenant: the
//! tenant's `Cluster`, its `KubeadmControlPlane` (sized from `kubernetes.ha`), the Metal3
//! infrastructure (`Metal3Cluster`, `Metal3MachineTemplate`s) and, per node pool, a
//! `MachineDeployment` with its `KubeadmConfigTemplate`.
//!
//! API versions are the storage versions the fixture CRDs serve (`../shared/fixtures/crds/cluster-api`,
//! `../shared/fixtures/crds/cluster-api-provider-metal3`: v1beta2; v1beta1 is served but deprecated).
//!
//! Edges (each with its reason, as the rest of compile does):
//! - every object → the tenant's namespace `tenant-<t>` in the management cluster;
//! - `KubeadmControlPlane` → the control plane's `Metal3MachineTemplate` (machines are cloned
//!   from it);
//! - `Cluster` → `Metal3Cluster` and `KubeadmControlPlane` (what it references exists first);
//! - `MachineDeployment` → `Cluster`, its `KubeadmConfigTemplate`, its `Metal3MachineTemplate`
//!   and every `BareMetalHost` of the pool (a machine can only claim a registered host);
//! - tenant cluster: every object without another dependency in that cluster → the `Cluster`
//!   (the cluster must be provisioned before anything is applied to it), and each pool's Node
//!   knobs → the pool's `MachineDeployment` (the node joins through it).

use serde_json::{Value, json};

use super::{Cx, MANAGEMENT_CLUSTER, kube_id};
use crate::manifest::{NodeOs, NodePool, Tenant};
use crate::resource::ResourceId;

/// `apiVersion` of `Cluster` and `MachineDeployment`.
pub const CLUSTER_API: &str = "cluster.x-k8s.io/v1beta2";
/// `apiVersion` of `KubeadmControlPlane`.
pub const CONTROL_PLANE_API: &str = "controlplane.cluster.x-k8s.io/v1beta2";
/// `apiVersion` of `KubeadmConfigTemplate`.
pub const BOOTSTRAP_API: &str = "bootstrap.cluster.x-k8s.io/v1beta2";
/// `apiVersion` of `Metal3Cluster` and `Metal3MachineTemplate`.
pub const METAL3_API: &str = "infrastructure.cluster.x-k8s.io/v1beta2";
/// The label that ties a `BareMetalHost` to its pool (compile puts it on every host).
pub const POOL_LABEL: &str = "fleetform.dev/pool";
/// The label a `BareMetalHost` must carry to be picked for the control plane: the manifest
/// does not name control-plane hosts, so they are labelled outside fleetform.
pub const CONTROL_PLANE_LABEL: &str = "fleetform.dev/role";

/// Control-plane replicas for the manifest's `kubernetes.ha`: an HA control plane has three
/// members (etcd quorum survives one loss), otherwise one.
pub fn control_plane_replicas(ha: bool) -> u32 {
    if ha { 3 } else { 1 }
}

/// The version Cluster API wants (`v` + full semver): `1.34` → `v1.34.0`, `1.34.2` → `v1.34.2`.
/// The manifest allows `MAJOR.MINOR`; the first patch release is the one it means then.
pub fn capi_version(version: &str) -> String {
    let v = version.trim().trim_start_matches('v');
    if v.split('.').count() == 2 {
        format!("v{v}.0")
    } else {
        format!("v{v}")
    }
}

/// `spec.template.spec` of a `Metal3MachineTemplate`: the node OS image and which hosts it may
/// claim. A `byo` OS has no image: Metal3 only claims the host.
fn machine_spec(os: &NodeOs, host_labels: Value) -> Value {
    let mut spec = json!({ "hostSelector": { "matchLabels": host_labels } });
    if let Some(url) = os.image() {
        let lower = url.to_ascii_lowercase();
        // An ISO boots live (Metal3 `live-iso`, no checksum); a disk image is written with the
        // checksum published next to it (`<url>.sha256sum`).
        spec["image"] = if lower.ends_with(".iso") {
            json!({ "url": url, "checksum": "", "diskFormat": "live-iso" })
        } else {
            let format = if lower.ends_with(".qcow2") {
                "qcow2"
            } else {
                "raw"
            };
            json!({ "url": url, "checksum": format!("{url}.sha256sum"), "checksumType": "sha256", "diskFormat": format })
        };
    }
    spec
}

fn reference(api_version: &str, kind: &str, name: &str) -> Value {
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    json!({ "apiGroup": group, "kind": kind, "name": name })
}

/// An object of tenant cluster `cluster` in its namespace, labelled with the cluster's name as
/// Cluster API labels what belongs to a cluster.
fn object(api_version: &str, kind: &str, name: &str, cluster: &str, spec: Value) -> Value {
    json!({
        "apiVersion": api_version, "kind": kind,
        "metadata": { "name": name, "namespace": format!("tenant-{cluster}"), "labels": { "cluster.x-k8s.io/cluster-name": cluster } },
        "spec": spec,
    })
}

impl Cx<'_> {
    /// Emits the Cluster API objects of NCP-managed tenant `tenant` (whose pools are `pools`)
    /// into the management cluster, and makes the tenant cluster's objects wait for its
    /// `Cluster`. Call after the tenant's other objects are emitted.
    pub(super) fn capi(&mut self, tenant: &Tenant, pools: &[&NodePool]) {
        let t = tenant.name();
        let ns = format!("tenant-{t}");
        let ns_id = kube_id(
            MANAGEMENT_CLUSTER,
            &json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } }),
        );
        let k8s = &tenant.spec.kubernetes;
        let version = capi_version(&k8s.version);
        let at = |cx: &Self, pointer: &str| cx.origin(tenant.doc, pointer, &tenant.origin);
        let ns_reason = format!("namespace {ns} first");

        // Infrastructure: the Metal3 cluster and the control plane's machine template.
        let m3c = object(METAL3_API, "Metal3Cluster", t, t, json!({}));
        let m3c_id = self.kube(MANAGEMENT_CLUSTER, m3c, at(self, "/spec/kubernetes"));
        self.dep(&m3c_id, &ns_id, ns_reason.clone());
        let cp_template = format!("{t}-control-plane");
        let cp_m3mt = object(
            METAL3_API,
            "Metal3MachineTemplate",
            &cp_template,
            t,
            json!({ "template": { "spec": machine_spec(&tenant.spec.node_os, json!({ CONTROL_PLANE_LABEL: "control-plane", "cluster.x-k8s.io/cluster-name": t })) } }),
        );
        let cp_m3mt_id = self.kube(MANAGEMENT_CLUSTER, cp_m3mt, at(self, "/spec/nodeOs"));
        self.dep(&cp_m3mt_id, &ns_id, ns_reason.clone());

        // Control plane: sized from `ha`, at the tenant's Kubernetes version.
        let cp_labels = json!({ "name": "node-labels", "value": format!("{CONTROL_PLANE_LABEL}=control-plane") });
        let kcp = object(
            CONTROL_PLANE_API,
            "KubeadmControlPlane",
            t,
            t,
            json!({
                "replicas": control_plane_replicas(k8s.ha),
                "version": version,
                "machineTemplate": { "spec": { "infrastructureRef": reference(METAL3_API, "Metal3MachineTemplate", &cp_template) } },
                // Control-plane nodes carry the role label (the schema wants a non-empty spec).
                "kubeadmConfigSpec": {
                    "initConfiguration": { "nodeRegistration": { "kubeletExtraArgs": [&cp_labels] } },
                    "joinConfiguration": { "nodeRegistration": { "kubeletExtraArgs": [&cp_labels] } },
                },
            }),
        );
        let kcp_id = self.kube(MANAGEMENT_CLUSTER, kcp, at(self, "/spec/kubernetes/ha"));
        self.dep(&kcp_id, &ns_id, ns_reason.clone());
        self.dep(
            &kcp_id,
            &cp_m3mt_id,
            format!(
                "control-plane machines of {t} are cloned from Metal3MachineTemplate {cp_template}"
            ),
        );

        // The Cluster, once what it references exists.
        let cluster = object(
            CLUSTER_API,
            "Cluster",
            t,
            t,
            json!({
                "clusterNetwork": {
                    "pods": { "cidrBlocks": [k8s.pod_cidr] },
                    "services": { "cidrBlocks": [k8s.service_cidr] },
                },
                "controlPlaneRef": reference(CONTROL_PLANE_API, "KubeadmControlPlane", t),
                "infrastructureRef": reference(METAL3_API, "Metal3Cluster", t),
            }),
        );
        let cluster_id = self.kube(MANAGEMENT_CLUSTER, cluster, at(self, "/spec/kubernetes"));
        self.dep(&cluster_id, &ns_id, ns_reason.clone());
        self.dep(
            &cluster_id,
            &m3c_id,
            format!("Cluster {t} runs on the infrastructure of Metal3Cluster {t}"),
        );
        self.dep(
            &cluster_id,
            &kcp_id,
            format!("Cluster {t} gets its control plane from KubeadmControlPlane {t}"),
        );

        // Workers: one MachineDeployment per pool, as many machines as the pool has hosts.
        let mut node_deps: Vec<(ResourceId, ResourceId, String)> = Vec::new();
        for pool in pools {
            let p = pool.name();
            let members = self.fleet.members(p).to_vec();
            let origin = self.origin(pool.doc, "/spec", &pool.origin);
            let m3mt = object(
                METAL3_API,
                "Metal3MachineTemplate",
                p,
                t,
                json!({ "template": { "spec": machine_spec(&tenant.spec.node_os, json!({ POOL_LABEL: p })) } }),
            );
            let m3mt_id = self.kube(MANAGEMENT_CLUSTER, m3mt, origin.clone());
            self.dep(&m3mt_id, &ns_id, ns_reason.clone());
            let kct = object(
                BOOTSTRAP_API,
                "KubeadmConfigTemplate",
                p,
                t,
                json!({ "template": { "spec": { "joinConfiguration": { "nodeRegistration": {
                    "kubeletExtraArgs": [ { "name": "node-labels", "value": format!("{POOL_LABEL}={p}") } ]
                } } } } }),
            );
            let kct_id = self.kube(MANAGEMENT_CLUSTER, kct, origin.clone());
            self.dep(&kct_id, &ns_id, ns_reason.clone());
            let selector = json!({ "cluster.x-k8s.io/cluster-name": t, POOL_LABEL: p });
            let md = object(
                CLUSTER_API,
                "MachineDeployment",
                p,
                t,
                json!({
                    "clusterName": t,
                    "replicas": members.len(),
                    "selector": { "matchLabels": selector },
                    "template": {
                        "metadata": { "labels": selector },
                        "spec": {
                            "clusterName": t,
                            "version": version,
                            "bootstrap": { "configRef": reference(BOOTSTRAP_API, "KubeadmConfigTemplate", p) },
                            "infrastructureRef": reference(METAL3_API, "Metal3MachineTemplate", p),
                        },
                    },
                }),
            );
            let md_id = self.kube(MANAGEMENT_CLUSTER, md, origin);
            self.dep(&md_id, &ns_id, ns_reason.clone());
            self.dep(
                &md_id,
                &cluster_id,
                format!("machines of pool {p} join Cluster {t}"),
            );
            self.dep(
                &md_id,
                &kct_id,
                format!("machines of pool {p} bootstrap from KubeadmConfigTemplate {p}"),
            );
            self.dep(
                &md_id,
                &m3mt_id,
                format!("machines of pool {p} are cloned from Metal3MachineTemplate {p}"),
            );
            for h in &members {
                let bmh = kube_id(
                    MANAGEMENT_CLUSTER,
                    &json!({ "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost", "metadata": { "name": h, "namespace": ns } }),
                );
                self.dep(
                    &md_id,
                    &bmh,
                    format!("BareMetalHost {h} registered before a machine of pool {p} claims it"),
                );
                let node = kube_id(
                    t,
                    &json!({ "apiVersion": "v1", "kind": "Node", "metadata": { "name": h } }),
                );
                node_deps.push((
                    node,
                    md_id.clone(),
                    format!("node {h} joins tenant cluster {t} through MachineDeployment {p}"),
                ));
            }
        }
        for (node, md, reason) in node_deps {
            self.dep(&node, &md, reason);
        }

        // The tenant cluster's own objects: those that wait for nothing else in the cluster
        // wait for the Cluster (the rest wait for them).
        // Addresses sort as strings, so the tenant's objects are one range of the map: a scan
        // of every compiled resource per tenant made a large fleet's compile quadratic.
        let first = ResourceId::new("kube", format!("{t}/"));
        let in_tenant = |id: &ResourceId| id.as_str().starts_with(first.as_str());
        let roots: Vec<ResourceId> = self
            .out
            .range(&first..)
            .take_while(|(id, _)| in_tenant(id))
            .filter(|(_, d)| !d.deps.iter().any(|x| in_tenant(&x.on)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in roots {
            self.dep(
                &id,
                &cluster_id,
                format!(
                    "tenant cluster {t} is provisioned by Cluster API (Cluster {ns}/{t}) first"
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::compile::{Compiled, compile};
    use crate::manifest::Fleet;
    use crate::secret::{SecretError, SecretRef, SecretResolver};
    use crate::sensitive::Sensitive;

    /// Every secret reads as the same test value (nothing is read from disk).
    struct FixedSecrets;
    impl SecretResolver for FixedSecrets {
        fn resolve(&self, _r: &SecretRef) -> Result<Sensitive<String>, SecretError> {
            Ok(Sensitive::new("test-secret".into()))
        }
    }

    /// examples/small: acme is NCP-managed (ha: true, pool acme-train of 2 hosts), beta is
    /// tenant-managed.
    fn small() -> Fleet {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/small");
        let files = crate::load::read_dir(&dir).expect("examples/small reads");
        let (docs, diags) = crate::load::load(&files);
        assert!(diags.is_empty(), "{diags:?}");
        crate::validate::validate(&docs).expect("examples/small is valid")
    }

    fn build(fleet: &Fleet) -> Compiled {
        compile(fleet, &FixedSecrets).expect("compiles")
    }

    fn mgmt(kind: &str, name: &str, api: &str) -> ResourceId {
        ResourceId::new("kube", format!("mgmt/{api}/{kind}/tenant-acme/{name}"))
    }

    fn find<'a>(c: &'a Compiled, id: &ResourceId) -> &'a crate::resource::Desired {
        c.resources
            .iter()
            .find(|d| &d.id == id)
            .unwrap_or_else(|| panic!("{id} not compiled"))
    }

    fn reason<'a>(d: &'a crate::resource::Desired, on: &ResourceId) -> &'a str {
        d.deps
            .iter()
            .find(|x| &x.on == on)
            .map(|x| x.reason.as_str())
            .unwrap_or_else(|| panic!("{} has no edge to {on}", d.id))
    }

    #[test]
    fn kubeadm_control_plane_has_three_replicas_when_ha_and_one_otherwise() {
        let mut fleet = small();
        let kcp = mgmt("KubeadmControlPlane", "acme", CONTROL_PLANE_API);
        let c = build(&fleet);
        let object = &find(&c, &kcp).spec["object"];
        assert_eq!(object["spec"]["replicas"], 3);
        assert_eq!(object["spec"]["version"], "v1.34.0");
        let acme = fleet
            .tenants
            .iter_mut()
            .find(|t| t.name() == "acme")
            .unwrap();
        acme.spec.kubernetes.ha = false;
        let c = build(&fleet);
        assert_eq!(find(&c, &kcp).spec["object"]["spec"]["replicas"], 1);
    }

    #[test]
    fn one_machine_deployment_per_pool_with_as_many_replicas_as_hosts() {
        let fleet = small();
        let c = build(&fleet);
        let mds: Vec<&crate::resource::Desired> = c
            .resources
            .iter()
            .filter(|d| d.id.path().contains("/MachineDeployment/"))
            .collect();
        let acme_pools: Vec<&str> = fleet
            .pools
            .iter()
            .filter(|p| p.spec.tenant == "acme")
            .map(|p| p.name())
            .collect();
        assert_eq!(mds.len(), acme_pools.len(), "only NCP-managed acme's pools");
        for p in acme_pools {
            let md = find(&c, &mgmt("MachineDeployment", p, CLUSTER_API));
            let spec = &md.spec["object"]["spec"];
            assert_eq!(spec["replicas"], fleet.members(p).len());
            assert_eq!(spec["clusterName"], "acme");
            assert_eq!(spec["template"]["spec"]["infrastructureRef"]["name"], p);
            assert_eq!(
                spec["template"]["spec"]["bootstrap"]["configRef"]["kind"],
                "KubeadmConfigTemplate"
            );
            find(&c, &mgmt("KubeadmConfigTemplate", p, BOOTSTRAP_API));
            find(&c, &mgmt("Metal3MachineTemplate", p, METAL3_API));
        }
    }

    #[test]
    fn tenants_not_managed_by_the_ncp_get_no_cluster_api_objects() {
        let c = build(&small());
        assert!(
            !c.resources
                .iter()
                .any(|d| d.id.as_str().contains("tenant-beta/")),
            "tenant-managed beta must get nothing in the management cluster"
        );
    }

    #[test]
    fn every_cluster_api_ordering_is_an_edge_with_a_reason() {
        let fleet = small();
        let c = build(&fleet);
        let ns = ResourceId::new("kube", "mgmt/v1/Namespace/tenant-acme");
        let cluster = mgmt("Cluster", "acme", CLUSTER_API);
        let kcp = mgmt("KubeadmControlPlane", "acme", CONTROL_PLANE_API);
        let m3c = mgmt("Metal3Cluster", "acme", METAL3_API);
        let cp_m3mt = mgmt("Metal3MachineTemplate", "acme-control-plane", METAL3_API);
        let md = mgmt("MachineDeployment", "acme-train", CLUSTER_API);

        assert_eq!(reason(find(&c, &m3c), &ns), "namespace tenant-acme first");
        assert!(reason(find(&c, &kcp), &cp_m3mt).contains("cloned from Metal3MachineTemplate"));
        assert!(reason(find(&c, &cluster), &kcp).contains("control plane"));
        assert!(reason(find(&c, &cluster), &m3c).contains("infrastructure"));
        let md = find(&c, &md);
        assert!(reason(md, &cluster).contains("join Cluster acme"));
        for h in fleet.members("acme-train") {
            let bmh = ResourceId::new(
                "kube",
                format!("mgmt/metal3.io/v1alpha1/BareMetalHost/tenant-acme/{h}"),
            );
            find(&c, &bmh);
            assert!(reason(md, &bmh).contains("registered"));
            let node = find(&c, &ResourceId::new("kube", format!("acme/v1/Node/{h}")));
            assert!(reason(node, &md.id).contains("MachineDeployment acme-train"));
        }
        // The tenant cluster's first objects wait for the Cluster; later ones wait through them.
        let gpu_ns = find(
            &c,
            &ResourceId::new("kube", "acme/v1/Namespace/gpu-operator"),
        );
        assert!(reason(gpu_ns, &cluster).contains("provisioned by Cluster API"));
        // The GPU Operator's release waits for its namespace, so through it for the Cluster.
        let gpu = c
            .releases
            .iter()
            .find(|r| r.cluster == "acme" && r.name == "gpu-operator")
            .expect("the GPU Operator is a release");
        assert!(gpu.after.iter().any(|d| d.on == gpu_ns.id));
        assert!(!gpu.after.iter().any(|d| d.on == cluster));
        // No cycle, and the Cluster comes after what it references.
        crate::graph::Graph::build(&c.resources).expect("acyclic");
    }

    #[test]
    fn cluster_api_versions_are_full_semver_with_a_v() {
        assert_eq!(capi_version("1.34"), "v1.34.0");
        assert_eq!(capi_version("1.34.2"), "v1.34.2");
        assert_eq!(capi_version("v1.35.1"), "v1.35.1");
    }

    #[test]
    fn an_iso_boots_live_and_a_disk_image_is_checked_against_its_published_checksum() {
        let iso = machine_spec(
            &NodeOs {
                image: Some("http://x/os.iso".into()),
                ..NodeOs::default()
            },
            json!({}),
        );
        assert_eq!(iso["image"]["diskFormat"], "live-iso");
        let disk = machine_spec(
            &NodeOs {
                image: Some("http://x/os.qcow2".into()),
                ..NodeOs::default()
            },
            json!({}),
        );
        assert_eq!(disk["image"]["checksum"], "http://x/os.qcow2.sha256sum");
        assert_eq!(disk["image"]["diskFormat"], "qcow2");
        let byo = machine_spec(
            &NodeOs {
                byo: Some(true),
                ..NodeOs::default()
            },
            json!({}),
        );
        assert!(byo.get("image").is_none());
    }
}
