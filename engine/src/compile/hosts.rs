//! One host's Redfish resources: firmware, BIOS, secure boot and boot override before its
//! power (settings take effect at the next power-on).

use super::{Cx, host_id, kube_id};
use crate::manifest::{Host, NodePool};
use crate::resource::{Desired, ResourceId, RolloutGroup};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The part of a BMC's GPU `Model` that names the manifest's model (BMCs write e.g.
/// "H100 80GB HBM3" or "NVIDIA A100-SXM4-80GB").
fn bmc_gpu_model(model: crate::manifest::GpuModel) -> &'static str {
    use crate::manifest::GpuModel as M;
    match model {
        M::A100_40GB | M::A100_80GB => "A100",
        M::H100 | M::H100Nvl => "H100",
        M::RtxPro6000 => "RTX PRO 6000",
        other => other.as_str(),
    }
}

impl Cx<'_> {
    pub(super) fn host(&mut self, host: &Host, pool: Option<&NodePool>) {
        let spec = &host.spec;
        // A host without a BMC is NICo's (compile/nico.rs): no redfish resources.
        let Some(b) = &spec.bmc else { return };
        let bmc = json!({
            "endpoint": b.endpoint,
            "system": b.system_id,
            "credentials": { "username": b.credentials.username, "password": b.credentials.password },
            "caBundle": b.ca_bundle,
            "insecure": b.insecure,
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
            let expected: BTreeMap<&String, &str> = spec
                .firmware
                .iter()
                .map(|(k, w)| (k, w.version()))
                .collect();
            let updates: BTreeMap<&String, Value> = spec
                .firmware
                .iter()
                .filter_map(|(k, w)| match w {
                    crate::manifest::FirmwareWant::Image(i) => {
                        let mut u = json!({ "image": i.image });
                        if let Some(p) = &i.transfer_protocol {
                            u["transferProtocol"] = json!(p);
                        }
                        if !i.targets.is_empty() {
                            u["targets"] = json!(i.targets);
                        }
                        Some((k, u))
                    }
                    crate::manifest::FirmwareWant::Version(_) => None,
                })
                .collect();
            let mut body = json!({ "expected": expected });
            if !updates.is_empty() {
                body["updates"] = json!(updates);
            }
            push(self, "firmware", body, "/spec/firmware", true);
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
        if let Some(enabled) = spec.secure_boot {
            push(
                self,
                "secure-boot",
                json!({ "enabled": enabled }),
                "/spec/secureBoot",
                true,
            );
        }
        if let Some(boot) = &spec.boot {
            push(
                self,
                "boot",
                json!({ "target": boot.target, "enabled": "Continuous", "mode": boot.mode }),
                "/spec/boot",
                false,
            );
        }
        // The GPUs the BMC reports must be the manifest's (read-only; a mismatch is a problem
        // of this host at plan time).
        if spec.gpu.verify {
            push(
                self,
                "inventory",
                json!({ "expect": { "gpuModel": bmc_gpu_model(spec.gpu.model), "gpuCount": spec.gpu.count } }),
                "/spec/gpu",
                false,
            );
        }
        // The host's one reset: BIOS and secure-boot settings are staged by their own
        // resources and made current by a single reset the power resource plans (disruptive,
        // so it is the step that is rolled out and cordoned).
        let mut power = json!({ "state": spec.power });
        let mut at_reset = serde_json::Map::new();
        if let Some(bios) = spec.bios.as_ref().filter(|b| !b.attributes.is_empty()) {
            at_reset.insert("bios".into(), json!(bios.attributes));
        }
        if let Some(enabled) = spec.secure_boot {
            at_reset.insert("secureBoot".into(), json!(enabled));
        }
        // Host firmware installed from an image activates at the host's reset too; the BMC's
        // own (named `BMC`, or installed through the manager) activates with the BMC's reset.
        let staged_firmware: BTreeMap<&String, &str> = spec
            .firmware
            .iter()
            .filter_map(|(k, w)| match w {
                crate::manifest::FirmwareWant::Image(i)
                    if k != "BMC" && !i.targets.iter().any(|t| t == "manager") =>
                {
                    Some((k, i.version.as_str()))
                }
                _ => None,
            })
            .collect();
        if !staged_firmware.is_empty() {
            at_reset.insert("firmware".into(), json!(staged_firmware));
        }
        if !at_reset.is_empty() && matches!(spec.power, crate::manifest::PowerState::On) {
            power["applyAtReset"] = Value::Object(at_reset);
        }
        push(self, "power", power, "/spec/power", true);
        let power = host_id(name, "power");
        for (id, aspect) in aspects {
            if aspect != "power" && aspect != "inventory" {
                self.dep(
                    &power,
                    &id,
                    format!("{aspect} settings of {name} take effect at the next power-on"),
                );
            }
        }
    }
}
