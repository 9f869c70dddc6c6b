//! Draining a node before a disruptive change to its host, as `kubectl drain` does: every pod
//! bound to the node is evicted through the eviction API, so PodDisruptionBudgets hold, except
//! DaemonSet pods (their controller would put them straight back, and they tolerate the cordon)
//! and static pods (the kubelet owns them); then the drain waits until the evicted pods are
//! gone. Pods that already finished are left alone: they hold nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, EvictParams, ListParams};
use tokio::time::Instant;

/// How often a drain looks again while pods remain.
const POLL: Duration = Duration::from_secs(1);

/// Evicts what runs on `node` and waits, at most `timeout`, until it is gone. The error says
/// which pods remain and why (a disruption budget refusing, a pod still terminating).
pub(crate) async fn drain(client: &Client, node: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let all: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
    // Why each pod still there could not be evicted yet, by namespace/name.
    let mut blocked: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let remaining: Vec<Pod> = match all.list(&on_node).await {
            Ok(list) => list.items.into_iter().filter(evictable).collect(),
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(format!("cannot list the pods on node {node}: {e}"));
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        if remaining.is_empty() {
            return Ok(());
        }
        blocked.retain(|k, _| remaining.iter().any(|p| key(p) == *k));
        for pod in &remaining {
            let (Some(ns), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_some() {
                blocked.insert(key(pod), "terminating".into());
                continue;
            }
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            match api.evict(name, &EvictParams::default()).await {
                Ok(_) => {
                    blocked.insert(key(pod), "evicted, terminating".into());
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    blocked.remove(&key(pod));
                }
                // 429: a PodDisruptionBudget does not allow it now; try again later.
                Err(kube::Error::Api(s)) if s.code == 429 => {
                    blocked.insert(key(pod), format!("eviction refused: {}", s.message));
                }
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    return Err(format!(
                        "cannot evict pod {} from node {node}: forbidden ({}); fleetform's identity needs `create` on pods/eviction",
                        key(pod),
                        s.message
                    ));
                }
                Err(e) => {
                    blocked.insert(key(pod), format!("eviction failed: {e}"));
                }
            }
        }
        if Instant::now() >= deadline {
            let left: Vec<String> = remaining
                .iter()
                .map(|p| {
                    let k = key(p);
                    let why = blocked.get(&k).map_or("still there", String::as_str);
                    format!("{k} ({why})")
                })
                .collect();
            return Err(format!(
                "node {node} not drained within {} s: {} pod(s) remain: {}",
                timeout.as_secs(),
                left.len(),
                left.join(", ")
            ));
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// `namespace/name` of a pod.
fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// A pod the drain must evict: not a DaemonSet's, not a static (mirror) pod, not finished.
fn evictable(pod: &Pod) -> bool {
    let daemon = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    let mirror = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let finished = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    !daemon && !mirror && !finished
}
