//! Readiness of a live object, for the engine's health gates. Pure: takes the live object.

use fleetform_contract::provider::Health;
use serde_json::Value;

fn int(v: &Value, p: &str) -> Option<i64> {
    v.pointer(p).and_then(Value::as_i64)
}

fn text<'a>(v: &'a Value, p: &str) -> Option<&'a str> {
    v.pointer(p).and_then(Value::as_str)
}

/// The status of condition `kind` (`"True"`, `"False"`, ...) and its message.
fn condition<'a>(v: &'a Value, kind: &str) -> Option<(&'a str, &'a str)> {
    v.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find_map(|c| {
            (c.get("type")?.as_str()? == kind).then(|| {
                (
                    c.get("status").and_then(Value::as_str).unwrap_or(""),
                    c.get("message").and_then(Value::as_str).unwrap_or(""),
                )
            })
        })
}

/// Whether the controller has seen the latest spec.
fn observed_latest(v: &Value) -> bool {
    int(v, "/status/observedGeneration").unwrap_or(0) >= int(v, "/metadata/generation").unwrap_or(0)
}

/// Whether readiness of this kind depends on the live object (a rule in [`of`]). Every other
/// kind is Ready once its apply succeeded, so health needs no read of it.
pub fn has_rule(api_version: &str, kind: &str) -> bool {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    matches!(
        (group, kind),
        ("apps", "Deployment" | "DaemonSet" | "StatefulSet")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("", "Namespace")
            | ("nvidia.com", "ClusterPolicy")
            | ("mellanox.com", "NicClusterPolicy")
            | ("apps.nvidia.com", "NIMService")
    )
}

/// Readiness of `live` (apiVersion and kind read from it).
pub fn of(live: &Value) -> Health {
    let api_version = text(live, "/apiVersion").unwrap_or("");
    let kind = text(live, "/kind").unwrap_or("");
    if !has_rule(api_version, kind) {
        return Health::Ready;
    }
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("apps", "Deployment") => {
            if !observed_latest(live) {
                return Health::Progressing("the deployment controller has not seen the latest spec yet".into());
            }
            let want = int(live, "/spec/replicas").unwrap_or(1);
            let updated = int(live, "/status/updatedReplicas").unwrap_or(0);
            let available = int(live, "/status/availableReplicas").unwrap_or(0);
            if updated >= want && available >= want {
                Health::Ready
            } else {
                Health::Progressing(format!("{updated}/{want} replicas updated, {available}/{want} available"))
            }
        }
        ("apps", "DaemonSet") => {
            if !observed_latest(live) {
                return Health::Progressing("the daemonset controller has not seen the latest spec yet".into());
            }
            let want = int(live, "/status/desiredNumberScheduled").unwrap_or(0);
            let updated = int(live, "/status/updatedNumberScheduled").unwrap_or(0);
            let available = int(live, "/status/numberAvailable").unwrap_or(0);
            if updated >= want && available >= want {
                Health::Ready
            } else {
                Health::Progressing(format!("{updated}/{want} pods updated, {available}/{want} available"))
            }
        }
        ("apps", "StatefulSet") => {
            if !observed_latest(live) {
                return Health::Progressing("the statefulset controller has not seen the latest spec yet".into());
            }
            let want = int(live, "/spec/replicas").unwrap_or(1);
            let ready = int(live, "/status/readyReplicas").unwrap_or(0);
            let updated = int(live, "/status/updatedReplicas").unwrap_or(0);
            if ready >= want && updated >= want {
                Health::Ready
            } else {
                Health::Progressing(format!("{ready}/{want} replicas ready, {updated}/{want} updated"))
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => match condition(live, "Established") {
            Some(("True", _)) => Health::Ready,
            _ => match condition(live, "NamesAccepted") {
                Some(("False", m)) => Health::Failed(format!("CRD names not accepted: {m}")),
                _ => Health::Progressing("CRD not Established yet".into()),
            },
        },
        ("", "Namespace") => match text(live, "/status/phase") {
            Some("Active") | None => Health::Ready,
            Some(p) => Health::Progressing(format!("namespace is {p}")),
        },
        ("nvidia.com", "ClusterPolicy") => match text(live, "/status/state") {
            Some("ready") => Health::Ready,
            Some("ignored") => Health::Failed(
                "the GPU operator ignores this ClusterPolicy: only the oldest ClusterPolicy is reconciled (keep a single one, \
                 named cluster-policy)"
                    .into(),
            ),
            Some(s) => Health::Progressing(format!("ClusterPolicy state is {s}")),
            None => Health::Progressing("the GPU operator has not reported a state yet".into()),
        },
        ("mellanox.com", "NicClusterPolicy") => match text(live, "/status/state") {
            Some("ready") => Health::Ready,
            Some("ignore") => Health::Failed(
                "the network operator ignores this NicClusterPolicy: it only reconciles the one named nic-cluster-policy".into(),
            ),
            Some(s) => Health::Progressing(format!("NicClusterPolicy state is {s}")),
            None => Health::Progressing("the network operator has not reported a state yet".into()),
        },
        ("apps.nvidia.com", "NIMService") => match (condition(live, "Ready"), text(live, "/status/state")) {
            (Some(("True", _)), _) => Health::Ready,
            (_, Some("Failed")) => Health::Failed(
                condition(live, "Failed").map_or_else(|| "NIMService failed".to_string(), |(_, m)| format!("NIMService failed: {m}")),
            ),
            (Some((_, m)), _) if !m.is_empty() => Health::Progressing(format!("NIMService not ready: {m}")),
            _ => Health::Progressing("NIMService not ready yet".into()),
        },
        _ => Health::Ready,
    }
}

/// The GPU Operator's upgrade controller records each node's place in a driver rollout here
/// (k8s-operator-libs `pkg/upgrade`, key `nvidia.com/%s-driver-upgrade-state`).
pub const DRIVER_UPGRADE_STATE: &str = "nvidia.com/gpu-driver-upgrade-state";

/// A ClusterPolicy that is itself ready is healthy only once its driver rollout is over: every
/// node the upgrade controller labelled is `upgrade-done`. A node in `upgrade-failed` fails the
/// change at once; any other state keeps it progressing, naming the nodes and their state, so
/// a node that stays there (stuck in `upgrade-required`, `validation-required`, ...) is named
/// when the health wait times out. `nodes` are (name, state).
pub fn driver_rollout(nodes: &[(String, String)]) -> Health {
    let failed: Vec<&str> = nodes
        .iter()
        .filter(|(_, s)| s == "upgrade-failed")
        .map(|(n, _)| n.as_str())
        .collect();
    if !failed.is_empty() {
        return Health::Failed(format!(
            "the GPU driver upgrade failed on {} (label {DRIVER_UPGRADE_STATE}=upgrade-failed): \
             see the node's nvidia-driver-daemonset pod; the operator retries once the label is removed",
            failed.join(", ")
        ));
    }
    let mut pending: Vec<String> = nodes
        .iter()
        .filter(|(_, s)| s != "upgrade-done" && !s.is_empty())
        .map(|(n, s)| format!("{n} ({s})"))
        .collect();
    if pending.is_empty() {
        return Health::Ready;
    }
    let total = pending.len();
    pending.truncate(5);
    Health::Progressing(format!(
        "GPU driver rollout: {} of {} node(s) done; waiting on {}{}",
        nodes.len() - total,
        nodes.len(),
        pending.join(", "),
        if total > 5 {
            format!(" and {} more", total - 5)
        } else {
            String::new()
        }
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deployment_is_ready_once_rolled_out() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"generation": 2},
            "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "updatedReplicas": 2, "availableReplicas": 2}});
        assert!(matches!(of(&d), Health::Progressing(_)));
        d["status"]["observedGeneration"] = json!(2);
        assert_eq!(of(&d), Health::Ready);
        d["status"]["availableReplicas"] = json!(1);
        assert_eq!(
            of(&d),
            Health::Progressing("2/2 replicas updated, 1/2 available".into())
        );
    }

    #[test]
    fn a_driver_rollout_is_done_when_every_labelled_node_is_and_fails_on_the_first_failed_node() {
        let n = |name: &str, s: &str| (name.to_string(), s.to_string());
        assert_eq!(driver_rollout(&[]), Health::Ready);
        assert_eq!(
            driver_rollout(&[n("a", "upgrade-done"), n("b", "upgrade-done")]),
            Health::Ready
        );
        let Health::Progressing(m) =
            driver_rollout(&[n("a", "upgrade-done"), n("b", "validation-required")])
        else {
            panic!()
        };
        assert!(
            m.contains("1 of 2") && m.contains("b (validation-required)"),
            "{m}"
        );
        let Health::Failed(m) =
            driver_rollout(&[n("a", "upgrade-failed"), n("b", "upgrade-required")])
        else {
            panic!()
        };
        assert!(m.contains("on a "), "{m}");
    }

    #[test]
    fn operator_singletons_report_ignored_as_failed() {
        let cp = json!({"apiVersion": "nvidia.com/v1", "kind": "ClusterPolicy", "status": {"state": "ignored"}});
        assert!(matches!(of(&cp), Health::Failed(_)));
        let ncp = json!({"apiVersion": "mellanox.com/v1alpha1", "kind": "NicClusterPolicy", "status": {"state": "ready"}});
        assert_eq!(of(&ncp), Health::Ready);
    }

    #[test]
    fn nimservice_waits_for_its_ready_condition() {
        let mut n = json!({"apiVersion": "apps.nvidia.com/v1alpha1", "kind": "NIMService",
            "status": {"conditions": [{"type": "Ready", "status": "False", "message": "pulling model"}]}});
        assert_eq!(
            of(&n),
            Health::Progressing("NIMService not ready: pulling model".into())
        );
        n["status"]["conditions"][0]["status"] = json!("True");
        assert_eq!(of(&n), Health::Ready);
    }

    #[test]
    fn only_kinds_with_a_readiness_rule_need_the_live_object() {
        for (v, k) in [
            ("apps/v1", "Deployment"),
            ("apps/v1", "DaemonSet"),
            ("apps/v1", "StatefulSet"),
            ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            ("v1", "Namespace"),
            ("nvidia.com/v1", "ClusterPolicy"),
            ("mellanox.com/v1alpha1", "NicClusterPolicy"),
            ("apps.nvidia.com/v1alpha1", "NIMService"),
        ] {
            assert!(has_rule(v, k), "{v} {k}");
        }
        for (v, k) in [
            ("v1", "ConfigMap"),
            ("v1", "Secret"),
            ("cluster.x-k8s.io/v1beta2", "Cluster"),
            ("apps/v1", "ReplicaSet"),
        ] {
            assert!(!has_rule(v, k), "{v} {k}");
        }
    }

    #[test]
    fn other_kinds_are_ready() {
        assert_eq!(
            of(&json!({"apiVersion": "v1", "kind": "ConfigMap"})),
            Health::Ready
        );
    }
}
