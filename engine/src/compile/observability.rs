//! `observability`: there is no monitoring CRD among the CRDs fleetform compiles against
//! (`fixtures/crds` has no `monitoring.coreos.com`), so fleetform emits no ServiceMonitor of
//! its own; each setting goes to the component that consumes it.
//!
//! - `prometheus` → the GPU Operator's ClusterPolicy `dcgmExporter.serviceMonitor`
//!   (`enabled: true`, `interval`, `additionalLabels` = `labels`): the operator creates the
//!   DCGM exporter's ServiceMonitor where the Prometheus Operator is installed.
//! - `otel` → the environment of every NIMService (`spec.env`): `NIM_ENABLE_OTEL=1`,
//!   `OTEL_EXPORTER_OTLP_ENDPOINT`, OTLP trace and metric exporters, `OTEL_SERVICE_NAME` =
//!   the NIM's name, and `OTEL_EXPORTER_OTLP_INSECURE=true` with `insecure`.
//!
//! No new objects, so no new edges: the settings ride on objects that already have theirs.

use serde_json::{Value, json};

use super::Cx;
use crate::manifest::{Observability, Tenant};
use crate::resource::ResourceId;

/// The NIM environment for an OTLP endpoint.
pub fn otel_env(service: &str, endpoint: &str, insecure: bool) -> Vec<Value> {
    let mut env = vec![
        json!({ "name": "NIM_ENABLE_OTEL", "value": "1" }),
        json!({ "name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": endpoint }),
        json!({ "name": "OTEL_TRACES_EXPORTER", "value": "otlp" }),
        json!({ "name": "OTEL_METRICS_EXPORTER", "value": "otlp" }),
        json!({ "name": "OTEL_SERVICE_NAME", "value": service }),
    ];
    if insecure {
        env.push(json!({ "name": "OTEL_EXPORTER_OTLP_INSECURE", "value": "true" }));
    }
    env
}

impl Cx<'_> {
    /// Applies `obs` to tenant `tenant`'s ClusterPolicy `cluster_policy` and NIMServices.
    pub(super) fn observability(
        &mut self,
        tenant: &Tenant,
        obs: &Observability,
        cluster_policy: &ResourceId,
    ) {
        if let Some(p) = &obs.prometheus
            && let Some(exporter) = self
                .policy_values(cluster_policy)
                .and_then(|v| v.get_mut("dcgmExporter"))
                .and_then(Value::as_object_mut)
        {
            let mut sm = json!({ "enabled": true });
            if let Some(i) = &p.interval {
                sm["interval"] = json!(i);
            }
            if !p.labels.is_empty() {
                sm["additionalLabels"] = json!(p.labels);
            }
            exporter.insert("serviceMonitor".into(), sm);
        }
        let Some(otel) = &obs.otel else { return };
        let first = ResourceId::new("kube", format!("{}/", tenant.name()));
        let nims: Vec<ResourceId> = self
            .out
            .range(&first..)
            .take_while(|(id, _)| id.as_str().starts_with(first.as_str()))
            .filter(|(_, d)| d.spec["object"]["kind"] == "NIMService")
            .map(|(id, _)| id.clone())
            .collect();
        for id in nims {
            if let Some(object) = self.out.get_mut(&id).map(|d| &mut d.spec["object"]) {
                let name = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let ours = otel_env(&name, &otel.endpoint, otel.insecure);
                // Keep what compile's NIM put there; ours replace same-named entries.
                let mut env: Vec<Value> = object["spec"]["env"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|e| !ours.iter().any(|o| o["name"] == e["name"]))
                    .collect();
                env.extend(ours);
                object["spec"]["env"] = json!(env);
            }
        }
    }
}
