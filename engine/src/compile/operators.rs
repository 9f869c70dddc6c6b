//! The operators of a tenant cluster as chart releases: where their settings are written,
//! their values, and the waits between releases and the objects they render.

use super::charts;
use super::{ChartRelease, Cx, Dependent, dependency, namespace};
use crate::manifest::{GpuSharing, NodePool, Tenant};
use crate::resource::{Origin, ResourceId};
use serde_json::{Value, json};
use std::collections::BTreeMap;

impl Cx<'_> {
    /// Where an operator's settings are written: the tenant's override when it has one,
    /// otherwise the fleet's `operators`.
    pub(super) fn operator_origin(&self, tenant: &Tenant, key: &str) -> Origin {
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
    pub(super) fn operator_value_origins(
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
    pub(super) fn value_origins(
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
    pub(super) fn driver_rollout_budget(&self, pools: &[&NodePool]) -> Option<u32> {
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

    /// The chart values of the release that renders `object` (the GPU Operator's values for
    /// its ClusterPolicy): settings of an object a chart renders go into the chart's values.
    pub(super) fn policy_values(&mut self, object: &ResourceId) -> Option<&mut Value> {
        self.releases
            .values_mut()
            .find(|r| r.provides.contains(object))
            .map(|r| &mut r.values)
    }

    /// Orders the release that renders `object` after `on`.
    pub(super) fn release_waits_for(
        &mut self,
        object: &ResourceId,
        on: &ResourceId,
        reason: String,
    ) {
        if let Some(r) = self
            .releases
            .values_mut()
            .find(|r| r.provides.contains(object))
            && !r.after.iter().any(|d| &d.on == on)
        {
            r.after.push(dependency(on, reason));
        }
    }

    pub(super) fn add_release(&mut self, release: ChartRelease) {
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
    pub(super) fn operator_releases(
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
    pub(super) fn hand_over_release_waits(&mut self) {
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
}
