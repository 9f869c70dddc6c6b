//! The configs the GPU Operator needs for a pool's GPU sharing: compile's `pool` labels each
//! Node with the name of a config (`nvidia.com/mig.config`, `nvidia.com/device-plugin.config`);
//! this file makes those names exist, in namespace `gpu-operator` of the tenant cluster.
//!
//! - MPS / time-slicing pools → ConfigMap `fleetform-device-plugin-config` with one key per
//!   pool (`<pool>-mps`, `<pool>-time-slicing`: `sharing.{mps,timeSlicing}.resources` with
//!   the pool's `replicas` of `nvidia.com/gpu`) and a plain `default`; the ClusterPolicy's
//!   `devicePlugin.config` names it.
//! - MIG pools with an explicit layout (`{all: ...}`, `{perGpu: [...]}`) → ConfigMap
//!   `fleetform-mig-parted-config` (`config.yaml`, mig-parted v1) with `fleetform-<pool>` for
//!   each layout (GPUs past a `perGpu` list are MIG-disabled), every named config the
//!   tenant's other MIG pools use (expanded for their GPU model from the catalogue, since
//!   the operator's default config is no longer read) and `all-disabled`; the ClusterPolicy's
//!   `migManager.config` names it. With named configs only, the operator's default config
//!   serves them and nothing is emitted.
//!
//! Edges: ConfigMap → namespace `gpu-operator`; ClusterPolicy → ConfigMap (the operator reads
//! the configs it names).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Cx, kube_id, namespace};
use crate::catalog;
use crate::diag::Diagnostic;
use crate::manifest::{GpuSharing, MigConfig, MigLayout, NodePool};
use crate::resource::ResourceId;

/// Name of the device plugin's ConfigMap.
pub const DEVICE_PLUGIN_CONFIG: &str = "fleetform-device-plugin-config";
/// Name of the MIG manager's ConfigMap.
pub const MIG_PARTED_CONFIG: &str = "fleetform-mig-parted-config";

fn devices(layout: &BTreeMap<String, u32>) -> Value {
    json!(layout)
}

impl Cx<'_> {
    fn config_map(&mut self, t: &str, name: &str, data: Value, pool: &NodePool) -> ResourceId {
        let cm = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name, "namespace": "gpu-operator" }, "data": data });
        let o = self.origin(pool.doc, "/spec/gpuSharing", &pool.origin);
        let id = self.kube(t, cm, o);
        let ns = kube_id(t, &namespace("gpu-operator"));
        self.dep(&id, &ns, "namespace gpu-operator first");
        id
    }

    fn point_policy_at(
        &mut self,
        t: &str,
        policy: &ResourceId,
        key: &str,
        config: Value,
        cm: &ResourceId,
    ) {
        if let Some(spec) = self.policy_values(policy) {
            spec[key]["config"] = config;
        }
        let name = cm
            .as_str()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        self.release_waits_for(
            policy,
            cm,
            format!("the GPU Operator of {t} reads {key} configs from ConfigMap {name}"),
        );
    }

    /// Emits the sharing configs of tenant cluster `t`'s pools `pools`.
    pub(super) fn sharing_configs(&mut self, t: &str, pools: &[&NodePool], policy: &ResourceId) {
        // Device plugin: MPS and time-slicing.
        let mut plugin = serde_json::Map::new();
        let mut first = None;
        for pool in pools {
            let (key, kind, replicas) = match &pool.spec.gpu_sharing {
                Some(GpuSharing::Mps(r)) => (format!("{}-mps", pool.name()), "mps", r.replicas),
                Some(GpuSharing::TimeSlicing(r)) => (
                    format!("{}-time-slicing", pool.name()),
                    "timeSlicing",
                    r.replicas,
                ),
                _ => continue,
            };
            let config = json!({ "version": "v1", "sharing": { kind: { "resources": [ { "name": "nvidia.com/gpu", "replicas": replicas } ] } } });
            plugin.insert(key, json!(config.to_string()));
            first.get_or_insert(*pool);
        }
        if let Some(pool) = first {
            plugin.insert(
                "default".into(),
                json!(json!({ "version": "v1" }).to_string()),
            );
            let cm = self.config_map(t, DEVICE_PLUGIN_CONFIG, Value::Object(plugin), pool);
            self.point_policy_at(
                t,
                policy,
                "devicePlugin",
                json!({ "name": DEVICE_PLUGIN_CONFIG, "default": "default" }),
                &cm,
            );
        }

        // MIG manager: only when a layout needs a config of fleetform's own.
        let mig: Vec<&NodePool> = pools
            .iter()
            .copied()
            .filter(|p| matches!(p.spec.gpu_sharing, Some(GpuSharing::Mig(_))))
            .collect();
        let Some(first) = mig
            .iter()
            .find(|p| matches!(&p.spec.gpu_sharing, Some(GpuSharing::Mig(m)) if matches!(m.config, MigConfig::Layout(_))))
            .copied()
        else {
            return;
        };
        let mut configs: BTreeMap<String, (Value, String)> = BTreeMap::new();
        configs.insert(
            "all-disabled".into(),
            (
                json!([{ "devices": "all", "mig-enabled": false }]),
                String::new(),
            ),
        );
        for pool in mig {
            let Some(GpuSharing::Mig(m)) = &pool.spec.gpu_sharing else {
                continue;
            };
            let host = self
                .fleet
                .members(pool.name())
                .first()
                .and_then(|h| self.fleet.host(h));
            let Some(host) = host else { continue };
            let (model, count) = (host.spec.gpu.model, host.spec.gpu.count);
            let (key, entries) = match &m.config {
                MigConfig::Layout(MigLayout::All(l)) => (
                    format!("fleetform-{}", pool.name()),
                    json!([{ "devices": "all", "mig-enabled": true, "mig-devices": devices(l) }]),
                ),
                MigConfig::Layout(MigLayout::PerGpu(v)) => {
                    let mut e: Vec<Value> = v
                        .iter()
                        .enumerate()
                        .map(|(i, l)| json!({ "devices": [i], "mig-enabled": true, "mig-devices": devices(l) }))
                        .collect();
                    let rest: Vec<u32> = (v.len() as u32..count).collect();
                    if !rest.is_empty() {
                        e.push(json!({ "devices": rest, "mig-enabled": false }));
                    }
                    (format!("fleetform-{}", pool.name()), Value::Array(e))
                }
                MigConfig::Named(n) => {
                    let layout = catalog::mig(model).and_then(|g| {
                        catalog::named_layout(&g, n).map(|l| {
                            l.into_iter()
                                .map(|(p, c)| (p.to_string(), c))
                                .collect::<BTreeMap<String, u32>>()
                        })
                    });
                    let entries = match layout {
                        _ if n == "all-disabled" => continue,
                        Some(l) => {
                            json!([{ "devices": "all", "mig-enabled": true, "mig-devices": devices(&l) }])
                        }
                        None => continue, // validate refuses names the catalogue does not know
                    };
                    (n.clone(), entries)
                }
            };
            match configs.get(&key) {
                Some((other, by)) if *other != entries => {
                    let span = self
                        .fleet
                        .nearest_span(pool.doc, "/spec/gpuSharing/mig/config");
                    self.diags.push(
                        Diagnostic::error(
                            "mig-config-conflict",
                            format!("MIG config `{key}` of pool {} expands differently on its GPU model than on pool {by}'s, and one tenant cluster has one MIG config", pool.name()),
                        )
                        .at(span)
                        .field("spec.gpuSharing.mig.config")
                        .hint("give one of the pools an explicit layout ({all: {...}})"),
                    );
                }
                Some(_) => {}
                None => {
                    configs.insert(key, (entries, pool.name().to_string()));
                }
            }
        }
        let doc = json!({
            "version": "v1",
            "mig-configs": configs.into_iter().map(|(k, (v, _))| (k, v)).collect::<serde_json::Map<String, Value>>(),
        });
        let cm = self.config_map(
            t,
            MIG_PARTED_CONFIG,
            json!({ "config.yaml": doc.to_string() }),
            first,
        );
        self.point_policy_at(
            t,
            policy,
            "migManager",
            json!({ "name": MIG_PARTED_CONFIG, "default": "all-disabled" }),
            &cm,
        );
    }
}
