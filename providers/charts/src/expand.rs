//! From rendered releases to desired `kube:` resources: namespaces filled in, ownership
//! labels, and every ordering as an edge with a reason (CRDs before their custom resources,
//! pre-install/pre-upgrade hooks before the release, post hooks after it, the release after
//! what it waits for, and the compiled resources that wait for the release after its CRDs,
//! workloads and the objects it `provides`).

use std::collections::{BTreeMap, BTreeSet};

use fleetform_engine::compile::{ChartRelease, FLEET_LABEL, kube_id};
use fleetform_engine::resource::{Dependency, Desired, ResourceId};
use serde_json::{Value, json};

use crate::render::Rendered;

/// Label naming the release an object was rendered from (`<namespace>/<release>`).
pub const RELEASE_LABEL: &str = "fleetform.dev/release";

/// Kinds that are cluster-scoped in every Kubernetes, for objects whose kind neither the
/// cluster nor a release's CRDs describe (a cluster not reachable, or offline rendering).
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "PriorityClass",
    "RuntimeClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingAdmissionPolicy",
    "MutatingAdmissionPolicyBinding",
    "APIService",
    "DeviceClass",
    "IngressClass",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "FlowSchema",
    "PriorityLevelConfiguration",
    "CertificateSigningRequest",
];

/// How each hook event is treated (docs/providers/charts.md says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPhase {
    /// `pre-install`/`pre-upgrade`: applied before the release's other objects.
    Before,
    /// `post-install`/`post-upgrade`: applied after them.
    After,
    /// `test`, `*-delete`, `*-rollback`: not applied (fleetform neither runs `helm test`,
    /// nor deletes or rolls back through Helm).
    Skipped,
}

/// True for a Helm hook whose delete policy includes `before-hook-creation`: Helm deletes the
/// previous one before creating it on every install or upgrade.
pub fn recreated_by_helm(object: &Value) -> bool {
    object
        .pointer("/metadata/annotations/helm.sh~1hook-delete-policy")
        .and_then(Value::as_str)
        .is_some_and(|p| p.split(',').any(|x| x.trim() == "before-hook-creation"))
        && object
            .pointer("/metadata/annotations/helm.sh~1hook")
            .is_some()
}

/// The phase of a hook from its events: any install/upgrade event makes it applied.
pub fn hook_phase(events: &[String]) -> HookPhase {
    if events
        .iter()
        .any(|e| e == "pre-install" || e == "pre-upgrade")
    {
        HookPhase::Before
    } else if events
        .iter()
        .any(|e| e == "post-install" || e == "post-upgrade")
    {
        HookPhase::After
    } else {
        HookPhase::Skipped
    }
}

/// Scope lookup for one cluster: discovery first, then CRDs of its releases, then the
/// built-in list.
#[derive(Debug, Default, Clone)]
pub struct Scopes {
    /// (apiVersion or group, kind) → namespaced.
    known: BTreeMap<(String, String), bool>,
}

impl Scopes {
    /// Kinds a cluster serves: (apiVersion, kind, namespaced).
    pub fn from_kinds(kinds: &[(String, String, bool)]) -> Self {
        let mut known = BTreeMap::new();
        for (av, kind, ns) in kinds {
            known.insert((group_of(av).to_string(), kind.clone()), *ns);
        }
        Self { known }
    }

    fn learn_crd(&mut self, crd: &Value) {
        if let (Some(group), Some(kind)) = (
            crd.pointer("/spec/group").and_then(Value::as_str),
            crd.pointer("/spec/names/kind").and_then(Value::as_str),
        ) {
            let ns = crd.pointer("/spec/scope").and_then(Value::as_str) != Some("Cluster");
            self.known.insert((group.to_string(), kind.to_string()), ns);
        }
    }

    fn namespaced(&self, api_version: &str, kind: &str) -> bool {
        self.known
            .get(&(group_of(api_version).to_string(), kind.to_string()))
            .copied()
            .unwrap_or_else(|| !CLUSTER_SCOPED.contains(&kind))
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn text<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// One release expanded: its resources and what the plan says about it.
#[derive(Debug, Clone)]
pub struct Expanded {
    /// Desired resources, CRDs included.
    pub resources: Vec<Desired>,
    /// CRDs of the release: (group, kind) → address.
    pub crds: BTreeMap<(String, String), ResourceId>,
    /// Addresses dependents wait for: CRDs, workloads (when waiting) and `provides`.
    pub gates: Vec<ResourceId>,
    /// Images the rendered objects run.
    pub images: BTreeSet<String>,
    /// Hooks left out, as `Kind/name (events)`.
    pub skipped_hooks: Vec<String>,
}

/// Turns one rendered release into desired resources.
pub fn release(r: &ChartRelease, rendered: &Rendered, scopes: &mut Scopes) -> Expanded {
    let mut out = Expanded {
        resources: Vec::new(),
        crds: BTreeMap::new(),
        gates: Vec::new(),
        images: BTreeSet::new(),
        skipped_hooks: Vec::new(),
    };
    let label = format!("{}/{}", r.namespace, r.name);
    // The release's own CRDs (in crds/ or, as kyverno does, in templates) say their scope.
    for o in rendered.crds.iter().chain(&rendered.objects) {
        if text(&o.object, "/kind") == "CustomResourceDefinition" {
            scopes.learn_crd(&o.object);
        }
    }
    let scopes = &*scopes;
    let desired = |object: Value, source: &str, out: &mut Expanded| -> ResourceId {
        let mut object = object;
        let kind = text(&object, "/kind").to_string();
        let av = text(&object, "/apiVersion").to_string();
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            let namespaced = scopes.namespaced(&av, &kind);
            if namespaced && !meta.contains_key("namespace") {
                meta.insert("namespace".into(), json!(r.namespace));
            } else if !namespaced {
                // Helm leaves a namespace on cluster-scoped objects alone; the API server would
                // ignore it, but fleetform's address must not carry it.
                meta.remove("namespace");
            }
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert(FLEET_LABEL.into(), json!("fleetform"));
                l.insert(RELEASE_LABEL.into(), json!(label.replace('/', ".")));
            }
        }
        collect_images(&object, &mut out.images);
        let workload = matches!(
            (group_of(&av), kind.as_str()),
            ("apps", "Deployment" | "DaemonSet" | "StatefulSet")
        );
        let id = kube_id(&r.cluster, &object);
        let mut spec = json!({ "cluster": r.cluster, "object": object });
        // A release owns its CRDs: fields another manager set on them (an earlier install by
        // hand, `kubectl apply`) are taken over, as `helm upgrade` would overwrite them.
        if kind == "CustomResourceDefinition" {
            spec["force"] = json!(true);
        }
        // Without waiting, nothing but a CRD (established by the API server itself) waits
        // for readiness: no controller would ever report it where none runs.
        if !r.wait && kind != "CustomResourceDefinition" {
            spec["wait"] = json!(false);
        }
        // A hook Helm deletes before creating it again on each install or upgrade may be
        // recreated when its immutable fields change (a Job's template), without consent.
        if recreated_by_helm(&object) {
            spec["recreate"] = json!(true);
        }
        let mut d = Desired::new(id.clone(), spec);
        d.origin = Some(r.origin.clone());
        d.deps = r.after.clone();
        let _ = source;
        if workload && r.wait {
            out.gates.push(id.clone());
        }
        out.resources.push(d);
        id
    };

    for crd in &rendered.crds {
        let group = text(&crd.object, "/spec/group").to_string();
        let kind = text(&crd.object, "/spec/names/kind").to_string();
        let id = desired(crd.object.clone(), &crd.source, &mut out);
        out.crds.insert((group, kind), id.clone());
        out.gates.push(id);
    }
    let mut before = Vec::new();
    let mut after = Vec::new();
    let mut plain = Vec::new();
    for h in &rendered.hooks {
        match hook_phase(&h.events) {
            HookPhase::Before => before.push(desired(h.object.clone(), &h.source, &mut out)),
            HookPhase::After => after.push(desired(h.object.clone(), &h.source, &mut out)),
            HookPhase::Skipped => out.skipped_hooks.push(format!(
                "{}/{} ({})",
                text(&h.object, "/kind"),
                text(&h.object, "/metadata/name"),
                h.events.join(",")
            )),
        }
    }
    for o in &rendered.objects {
        let id = desired(o.object.clone(), &o.source, &mut out);
        if text(&o.object, "/kind") == "CustomResourceDefinition" {
            let group = text(&o.object, "/spec/group").to_string();
            let kind = text(&o.object, "/spec/names/kind").to_string();
            out.crds.insert((group, kind), id.clone());
            out.gates.push(id.clone());
        }
        plain.push(id);
    }
    let by_id: BTreeMap<ResourceId, usize> = out
        .resources
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.clone(), i))
        .collect();
    // A namespace the chart renders itself (kai-scheduler's kai-resource-reservation) comes
    // before the objects in it: without the edge they raced it and the apply failed with
    // `namespaces "..." not found` when they lost. Pre-install hooks are left out: the
    // namespace, a plain object, already waits for them.
    let namespaces: BTreeMap<String, ResourceId> = plain
        .iter()
        .filter_map(|id| {
            let o = &out.resources[by_id[id]].spec["object"];
            (text(o, "/kind") == "Namespace" && text(o, "/apiVersion") == "v1")
                .then(|| (text(o, "/metadata/name").to_string(), id.clone()))
        })
        .collect();
    let ns_edges: Vec<(ResourceId, ResourceId, String)> = if namespaces.is_empty() {
        Vec::new()
    } else {
        plain
            .iter()
            .chain(&after)
            .filter_map(|id| {
                let ns = text(
                    &out.resources[by_id[id]].spec["object"],
                    "/metadata/namespace",
                );
                namespaces
                    .get(ns)
                    .map(|n| (id.clone(), n.clone(), ns.to_string()))
            })
            .collect()
    };
    let mut edge = |from: &ResourceId, on: &ResourceId, reason: String| {
        if from == on {
            return;
        }
        if let Some(&i) = by_id.get(from) {
            let deps = &mut out.resources[i].deps;
            if !deps.iter().any(|d| &d.on == on) {
                deps.push(Dependency {
                    on: on.clone(),
                    reason,
                    origin: None,
                });
            }
        }
    };
    for id in &plain {
        for h in &before {
            edge(
                id,
                h,
                format!("Helm pre-install/pre-upgrade hook of release {label} first"),
            );
        }
    }
    for h in &after {
        for id in &plain {
            edge(
                h,
                id,
                format!("Helm post-install/post-upgrade hook of release {label} runs after it"),
            );
        }
    }
    for (id, ns_id, ns) in ns_edges {
        edge(
            &id,
            &ns_id,
            format!("namespace {ns} (rendered by release {label}) first"),
        );
    }
    for p in &r.provides {
        out.gates.push(p.clone());
    }
    out.gates.sort();
    out.gates.dedup();
    out
}

/// Image references in a rendered object's pod templates (`image:` fields anywhere).
fn collect_images(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("image", Value::String(s)) if s.contains('/') || s.contains(':') => {
                        out.insert(s.clone());
                    }
                    _ => collect_images(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_images(x, out)),
        _ => {}
    }
}

/// The CRDs releases define in one cluster: (group, kind) → (CRD address, release, whether the
/// release waits).
pub type ClusterCrds = BTreeMap<(String, String), (ResourceId, String, bool)>;

/// Adds "waits for CRD" edges: every resource whose kind a release's CRD in its own cluster
/// defines (`crds` is keyed by cluster).
///
/// Such a custom resource is made ready by the release's operator: where the release does not
/// wait (`charts.wait: false`, no controllers run), neither does the resource.
///
/// One pass over the resources for all clusters: a pass per cluster made a fleet of many
/// tenants quadratic (100 tenants: 100 × 17,500 resources read).
pub fn crd_edges(resources: &mut [Desired], crds: &BTreeMap<String, ClusterCrds>) {
    if crds.values().all(BTreeMap::is_empty) {
        return;
    }
    for d in resources.iter_mut() {
        if d.id.provider() != "kube" {
            continue;
        }
        let Some(crds) = crds.get(text(&d.spec, "/cluster")) else {
            continue;
        };
        let key = (
            group_of(text(&d.spec, "/object/apiVersion")).to_string(),
            text(&d.spec, "/object/kind").to_string(),
        );
        if let Some((crd, release, wait)) = crds.get(&key)
            && &d.id != crd
            && !d.deps.iter().any(|x| &x.on == crd)
        {
            if !wait {
                d.spec["wait"] = json!(false);
            }
            d.deps.push(Dependency {
                on: crd.clone(),
                reason: format!(
                    "waits for CRD {} (release {release}) to be established",
                    crd.as_str().rsplit('/').next().unwrap_or_default()
                ),
                origin: None,
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn objects_wait_for_a_namespace_their_own_release_renders() {
        // kai-scheduler renders Namespace kai-resource-reservation and objects in it.
        let r: ChartRelease = serde_json::from_value(json!({
            "cluster": "t1", "name": "kai-scheduler", "namespace": "kai-scheduler",
            "chart": "kai-scheduler", "version": "v0.13.0", "repository": null,
            "username": null, "password": null, "insecure": false, "caBundle": null,
            "values": {}, "wait": false, "after": [], "provides": [], "dependents": [],
            "origin": {"file": "fleet.yaml", "line": 1, "column": 1},
        }))
        .unwrap();
        let obj = |o: Value| json!({"source": "t.yaml", "object": o});
        let rendered: Rendered = serde_json::from_value(json!({"objects": [
            obj(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "rr", "namespace": "kai-resource-reservation"}})),
            obj(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "kai-resource-reservation"}})),
            obj(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "op"}})),
        ]}))
        .unwrap();
        let x = release(&r, &rendered, &mut Scopes::default());
        let deps = |suffix: &str| -> Vec<String> {
            let d = x
                .resources
                .iter()
                .find(|d| d.id.as_str().ends_with(suffix))
                .unwrap();
            d.deps.iter().map(|d| d.on.to_string()).collect()
        };
        assert_eq!(
            deps("/RoleBinding/kai-resource-reservation/rr"),
            ["kube:t1/v1/Namespace/kai-resource-reservation"]
        );
        // An object in the release namespace (compiled, not rendered) gets no such edge.
        assert!(deps("/ServiceAccount/kai-scheduler/op").is_empty());
    }

    #[test]
    fn only_hooks_helm_deletes_before_creating_are_recreated() {
        let hook = |policy: &str| {
            json!({"metadata": {"annotations": {"helm.sh/hook": "pre-upgrade",
                "helm.sh/hook-delete-policy": policy}}})
        };
        assert!(recreated_by_helm(&hook(
            "hook-succeeded, before-hook-creation"
        )));
        assert!(!recreated_by_helm(&hook("hook-succeeded")));
        assert!(
            !recreated_by_helm(
                &json!({"metadata": {"annotations": {"helm.sh/hook-delete-policy": "before-hook-creation"}}})
            ),
            "not a hook: an ordinary object is never recreated"
        );
    }

    #[test]
    fn hooks_run_on_install_or_upgrade_and_never_on_delete_rollback_or_test() {
        let p = |e: &[&str]| hook_phase(&e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&["pre-install", "pre-upgrade"]), HookPhase::Before);
        assert_eq!(p(&["pre-upgrade"]), HookPhase::Before);
        assert_eq!(p(&["post-upgrade"]), HookPhase::After);
        assert_eq!(p(&["post-delete"]), HookPhase::Skipped);
        assert_eq!(p(&["pre-delete"]), HookPhase::Skipped);
        assert_eq!(p(&["pre-rollback"]), HookPhase::Skipped);
        assert_eq!(p(&["test"]), HookPhase::Skipped);
    }

    #[test]
    fn scope_comes_from_discovery_then_crds_then_the_built_in_list() {
        let mut s = Scopes::from_kinds(&[("example.com/v1".into(), "Thing".into(), false)]);
        assert!(!s.namespaced("example.com/v1", "Thing"));
        assert!(s.namespaced("apps/v1", "Deployment"));
        assert!(!s.namespaced("rbac.authorization.k8s.io/v1", "ClusterRole"));
        s.learn_crd(&json!({"spec": {"group": "nvidia.com", "scope": "Cluster", "names": {"kind": "ClusterPolicy"}}}));
        assert!(!s.namespaced("nvidia.com/v1", "ClusterPolicy"));
    }

    #[test]
    fn images_are_found_in_pod_templates_and_containers() {
        let mut out = BTreeSet::new();
        collect_images(
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "nvcr.io/nvidia/gpu-operator:v26.7.0"}], "initContainers": [{"image": "busybox:1"}]}}}}),
            &mut out,
        );
        assert_eq!(out.len(), 2);
    }
}
