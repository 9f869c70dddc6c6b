//! What a change to a Kubernetes object does to running work (the rule behind
//! [`Disruption`], documented in docs/providers/kube.md), and whether a Node is in service.
//!
//! - a workload (Deployment, DaemonSet, StatefulSet, ReplicaSet) whose pod template changes,
//!   or that is replaced or deleted: its pods are replaced, a **pod restart**;
//! - a Node whose `nvidia.com/mig.config` label changes: the GPU Operator's MIG manager
//!   evicts the node's GPU pods and repartitions the GPUs, a **node drain**;
//! - a ClusterPolicy whose driver version, image or repository changes: the driver
//!   DaemonSet reloads the kernel module on every GPU node, evicting GPU pods, a **node drain**;
//! - anything else (ConfigMaps, Services, a cordon, other labels, a create): **none**.

use fleetform_contract::provider::{Action, Disruption, FieldChange, NodeAvailability};
use fleetform_contract::resource::ResourceId;
use serde_json::Value;

/// Kinds whose pods are rebuilt when their pod template changes.
const WORKLOADS: &[&str] = &["Deployment", "DaemonSet", "StatefulSet", "ReplicaSet"];

/// The label the GPU Operator's MIG manager watches (`/` escaped as in a JSON pointer).
const MIG_CONFIG_LABEL: &str = "/metadata/labels/nvidia.com~1mig.config";

/// ClusterPolicy fields that select the driver the nodes load.
const DRIVER_FIELDS: &[&str] = &[
    "/spec/driver/version",
    "/spec/driver/image",
    "/spec/driver/repository",
];

/// True when `path` is `prefix` or lies inside it.
fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The disruption class of a change to an object of `kind` (the rule in the module doc).
pub fn classify(
    api_version: &str,
    kind: &str,
    action: Action,
    fields: &[FieldChange],
) -> Disruption {
    let touches = |prefix: &str| fields.iter().any(|f| under(&f.path, prefix));
    match (kind, action) {
        (_, Action::NoOp | Action::Create) => Disruption::None,
        (k, Action::Replace | Action::Delete) if WORKLOADS.contains(&k) => Disruption::PodRestart,
        (k, Action::Update) if WORKLOADS.contains(&k) && touches("/spec/template") => {
            Disruption::PodRestart
        }
        ("Node", Action::Update) if api_version == "v1" && touches(MIG_CONFIG_LABEL) => {
            Disruption::NodeDrain
        }
        ("ClusterPolicy", Action::Update | Action::Replace)
            if api_version.starts_with("nvidia.com/")
                && DRIVER_FIELDS.iter().any(|p| touches(p)) =>
        {
            Disruption::NodeDrain
        }
        _ => Disruption::None,
    }
}

/// The class of deleting the object at `id` (`kube:<cluster>/<apiVersion>/<Kind>[/<ns>]/<name>`):
/// the kind is the first segment that starts upper-case (cluster, group, version and
/// namespace names are lower-case DNS names).
pub fn of_delete(id: &ResourceId) -> Disruption {
    let kind = id
        .path()
        .split('/')
        .find(|s| s.chars().next().is_some_and(char::is_uppercase));
    classify("", kind.unwrap_or(""), Action::Delete, &[])
}

/// Whether a live Node serves: out of service when cordoned (`spec.unschedulable`, with
/// fleetform's maintenance reason when it holds the cordon), when its `Ready` condition is
/// `False` or `Unknown` (NotReady), or when it carries a maintenance annotation.
pub fn availability(node: &Value, maintenance_annotation: &str) -> NodeAvailability {
    let mut down = Vec::new();
    let claim = node
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(maintenance_annotation))
        .and_then(Value::as_str);
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        down.push(match claim {
            Some(reason) => format!("cordoned for maintenance: {reason}"),
            None => "cordoned".to_string(),
        });
    } else if let Some(reason) = claim {
        down.push(format!("under maintenance: {reason}"));
    }
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        })
        .and_then(|c| c.get("status").and_then(Value::as_str));
    match ready {
        Some("True") => {}
        Some("False") => down.push("NotReady".into()),
        // `Unknown`: the kubelet stopped reporting, nothing can rely on the node.
        Some(other) => down.push(format!("Ready={other}")),
        // No Ready condition at all: no kubelet has reported yet (a node still joining, or
        // an object created ahead of its host), like a node that does not exist: it never
        // served, so taking it does not reduce what serves.
        None => {}
    }
    NodeAvailability { exists: true, down }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    fn f(path: &str) -> FieldChange {
        FieldChange {
            path: path.into(),
            before: None,
            after: Some(json!("x")),
            sensitive: false,
            changed_by: None,
        }
    }

    #[test]
    fn a_pod_template_change_restarts_pods_and_a_replica_count_does_not() {
        let tpl = [f("/spec/template/spec/containers/0/image")];
        assert_eq!(
            classify("apps/v1", "Deployment", Action::Update, &tpl),
            Disruption::PodRestart
        );
        assert_eq!(
            classify("apps/v1", "DaemonSet", Action::Update, &tpl),
            Disruption::PodRestart
        );
        assert_eq!(
            classify(
                "apps/v1",
                "StatefulSet",
                Action::Update,
                &[f("/spec/replicas")]
            ),
            Disruption::None
        );
        assert_eq!(
            classify("apps/v1", "Deployment", Action::Delete, &[]),
            Disruption::PodRestart
        );
        assert_eq!(
            classify("apps/v1", "Deployment", Action::Create, &tpl),
            Disruption::None
        );
        // A path that only starts with the same letters is not inside the template.
        assert_eq!(
            classify(
                "apps/v1",
                "Deployment",
                Action::Update,
                &[f("/spec/templateX")]
            ),
            Disruption::None
        );
    }

    #[test]
    fn deleting_a_workload_restarts_pods_and_deleting_a_config_map_does_not() {
        let del = |p: &str| of_delete(&ResourceId::new("kube", p));
        assert_eq!(
            del("acme/apps/v1/DaemonSet/gpu-operator/nvidia-dcgm"),
            Disruption::PodRestart
        );
        assert_eq!(
            del("acme/apps/v1/Deployment/ml/train"),
            Disruption::PodRestart
        );
        assert_eq!(del("acme/v1/ConfigMap/ml/settings"), Disruption::None);
        assert_eq!(del("acme/v1/Namespace/ml"), Disruption::None);
    }

    #[test]
    fn a_config_map_or_a_cordon_disrupts_nothing() {
        assert_eq!(
            classify("v1", "ConfigMap", Action::Update, &[f("/data/config.yaml")]),
            Disruption::None
        );
        assert_eq!(
            classify("v1", "Node", Action::Update, &[f("/spec/unschedulable")]),
            Disruption::None
        );
        assert_eq!(
            classify("v1", "Node", Action::Update, &[f("/metadata/labels/team")]),
            Disruption::None
        );
    }

    #[test]
    fn the_mig_config_label_and_the_driver_version_drain_nodes() {
        assert_eq!(
            classify(
                "v1",
                "Node",
                Action::Update,
                &[f("/metadata/labels/nvidia.com~1mig.config")]
            ),
            Disruption::NodeDrain
        );
        assert_eq!(
            classify(
                "nvidia.com/v1",
                "ClusterPolicy",
                Action::Update,
                &[f("/spec/driver/version")]
            ),
            Disruption::NodeDrain
        );
        assert_eq!(
            classify(
                "nvidia.com/v1",
                "ClusterPolicy",
                Action::Update,
                &[f("/spec/dcgmExporter/version")]
            ),
            Disruption::None
        );
    }

    #[test]
    fn a_node_is_down_when_cordoned_not_ready_or_claimed_for_maintenance() {
        let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(!availability(&ready, "m").is_down());
        let cordoned = json!({"spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(availability(&cordoned, "m").down, vec!["cordoned"]);
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
        assert_eq!(availability(&not_ready, "m").down, vec!["NotReady"]);
        let claimed = json!({"metadata": {"annotations": {"m": "fleetform: bios"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(
            availability(&claimed, "m").down,
            vec!["cordoned for maintenance: fleetform: bios", "Ready=Unknown"]
        );
    }
}
