//! Operand images and knobs of the operators' policies that the manifest sets but the
//! policies' first cut left out: each GPU Operator component's `version` / `repository`
//! (ClusterPolicy `toolkit`, `devicePlugin`, `dcgmExporter`, `migManager`: the operator
//! builds `repository/image:version`, so the image name goes with them), and the Network
//! Operator's `ofedDriver.forcePrecompiled` (NicClusterPolicy). No new objects, no new edges.

use serde_json::{Value, json};

use super::Cx;
use crate::manifest::{Component, Operators};
use crate::resource::ResourceId;

/// ClusterPolicy key, image name and default repository of each GPU Operator component
/// (gpu-operator v26.7.0 values.yaml).
const COMPONENTS: [(&str, &str, &str); 4] = [
    ("toolkit", "container-toolkit", "nvcr.io/nvidia/k8s"),
    ("devicePlugin", "k8s-device-plugin", "nvcr.io/nvidia"),
    ("dcgmExporter", "dcgm-exporter", "nvcr.io/nvidia/k8s"),
    (
        "migManager",
        "k8s-mig-manager",
        "nvcr.io/nvidia/cloud-native",
    ),
];

/// `{repository, image, version}` of a component that pins either; `None` keeps the
/// operator's defaults.
pub fn image(c: &Component, image: &str, default_repository: &str) -> Option<Value> {
    if c.version.is_none() && c.repository.is_none() {
        return None;
    }
    let mut v = json!({
        "repository": c.repository.as_deref().unwrap_or(default_repository),
        "image": image,
    });
    if let Some(version) = &c.version {
        v["version"] = json!(version);
    }
    Some(v)
}

impl Cx<'_> {
    /// Sets the operand images of `ops` on `cluster_policy` and its knobs on `nic`.
    pub(super) fn operands(
        &mut self,
        ops: &Operators,
        cluster_policy: &ResourceId,
        nic: Option<&ResourceId>,
    ) {
        let g = &ops.gpu_operator;
        let components = [
            &g.toolkit,
            &g.device_plugin,
            &g.dcgm_exporter,
            &g.mig_manager,
        ];
        if let Some(spec) = self.policy_values(cluster_policy) {
            for (c, (key, name, repo)) in components.into_iter().zip(COMPONENTS) {
                if let (Some(Value::Object(img)), Some(Value::Object(target))) =
                    (image(c, name, repo), spec.get_mut(key))
                {
                    target.extend(img);
                }
            }
        }
        let force = ops
            .network_operator
            .as_ref()
            .and_then(|n| n.ofed_driver.as_ref())
            .is_some_and(|o| o.force_precompiled);
        if let Some(ofed) = nic
            .and_then(|id| self.out.get_mut(id))
            .and_then(|d| d.spec.pointer_mut("/object/spec/ofedDriver"))
            .and_then(Value::as_object_mut)
            && force
        {
            ofed.insert("forcePrecompiled".into(), json!(true));
        }
    }
}
