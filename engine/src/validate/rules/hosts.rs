//! Hosts: their rack exists, their GPU count fits the model, one BMC per host.

use std::collections::HashMap;

use crate::catalog;
use crate::manifest::*;
use crate::validate::Cx;
use crate::validate::suggest::did_you_mean;

impl Cx<'_> {
    pub(super) fn hosts(&mut self, f: &Fleet) {
        let racks: Vec<&str> = f.racks.iter().map(|r| r.name()).collect();
        let mut bmcs: HashMap<(String, Option<String>), &Host> = HashMap::new();
        for h in &f.hosts {
            let i = h.doc.0;
            if f.rack(&h.spec.rack).is_none() {
                let mut e = self.err(
                    "unknown-reference",
                    i,
                    "/spec/rack",
                    format!(
                        "host `{}` is in rack `{}`, which is not defined",
                        h.name(),
                        h.spec.rack
                    ),
                );
                if let Some(m) = did_you_mean(&h.spec.rack, racks.iter().copied()) {
                    e = e.hint(format!("did you mean `{m}`?"));
                }
                self.push(e);
            }
            // A host with no GPU (`count: 0`: a CPU or service node) is fine on its own; a
            // node pool is GPU capacity, so its members need GPUs (checked in `pools`).
            let model = h.spec.gpu.model;
            let max = catalog::max_gpus_per_host(model);
            if h.spec.gpu.count > max {
                let e = self
                    .err(
                        "gpu-count",
                        i,
                        "/spec/gpu/count",
                        format!(
                            "host `{}` has {} {model} GPUs; {model} ships on {}",
                            h.name(),
                            h.spec.gpu.count,
                            catalog::form_factor(model)
                        ),
                    )
                    .hint(format!("a {model} host has at most {max} GPUs"));
                self.push(e);
            }
            // A NICo-managed host has no BMC (checked in validate/nico.rs).
            let Some(bmc) = &h.spec.bmc else { continue };
            self.url(i, "/spec/bmc/endpoint", &bmc.endpoint);
            let key = (
                bmc.endpoint.trim_end_matches('/').to_string(),
                bmc.system_id.clone(),
            );
            if let Some(other) = bmcs.get(&key) {
                let e = self
                    .err(
                        "duplicate-bmc",
                        i,
                        "/spec/bmc/endpoint",
                        format!(
                            "host `{}` has the same BMC as host `{}`",
                            h.name(),
                            other.name()
                        ),
                    )
                    .hint("two hosts on one Redfish service need different `systemId`s");
                self.push(e);
            } else {
                bmcs.insert(key, h);
            }
        }
    }
}
