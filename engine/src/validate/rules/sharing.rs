//! GPU sharing of one pool: DRA labels and classes, replicas, MIG configs and layouts.

use std::collections::BTreeSet;

use crate::catalog;
use crate::diag::Diagnostic;
use crate::load::escape_segment;
use crate::manifest::*;
use crate::sharing;
use crate::validate::Cx;
use crate::validate::suggest::did_you_mean;

impl Cx<'_> {
    pub(super) fn sharing(
        &self,
        f: &Fleet,
        p: &NodePool,
        model: GpuModel,
        gpus: u32,
        s: &GpuSharing,
    ) -> Vec<Diagnostic> {
        let i = p.doc.0;
        let mut out = Vec::new();
        // Labels the sharing mode sets on the pool's nodes must not be overridden.
        for (k, v) in sharing::node_labels(Some(s)) {
            if let Some(given) = p.spec.labels.get(k)
                && given != v
            {
                out.push(
                    self.err(
                        "dra-device-plugin",
                        i,
                        &format!("/spec/labels/{}", escape_segment(k)),
                        format!(
                            "pool `{}` uses DRA, but its label `{k}: {given}` would run the device plugin too; both would hand out the same GPUs",
                            p.name()
                        ),
                    )
                    .hint(format!("remove the label: fleetform sets `{k}: \"{v}\"` on DRA pools")),
                );
            }
        }
        match s {
            GpuSharing::Mps(r) | GpuSharing::TimeSlicing(r) => {
                if r.replicas < 2 {
                    let k = if matches!(s, GpuSharing::Mps(_)) {
                        "mps"
                    } else {
                        "timeSlicing"
                    };
                    out.push(
                        self.err(
                            "sharing-replicas",
                            i,
                            &format!("/spec/gpuSharing/{k}/replicas"),
                            format!("{} replicas per GPU shares nothing", r.replicas),
                        )
                        .hint("use 2 or more, or drop gpuSharing for whole GPUs"),
                    );
                }
            }
            GpuSharing::Dra(d) => {
                for (n, c) in d.device_classes.iter().enumerate() {
                    if sharing::DraClass::parse(c).is_none() {
                        let names: Vec<&str> =
                            sharing::DraClass::ALL.iter().map(|c| c.name()).collect();
                        let mut e = self.err(
                            "dra-device-class",
                            i,
                            &format!("/spec/gpuSharing/dra/deviceClasses/{n}"),
                            format!("`{c}` is not a DeviceClass of the NVIDIA DRA driver"),
                        );
                        e = match did_you_mean(c, names.iter().copied()) {
                            Some(m) => e.hint(format!("did you mean `{m}`?")),
                            None => e.hint(format!("one of: {}", names.join(", "))),
                        };
                        out.push(e);
                    }
                }
                if d.compute_domains {
                    let non_nvl: Vec<&str> = f
                        .members_from(p)
                        .filter_map(|h| f.rack(&h.spec.rack))
                        .filter(|r| r.spec.fault_domain != FaultDomainKind::Nvl72)
                        .map(|r| r.name())
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    if !non_nvl.is_empty() {
                        out.push(self.err("compute-domains", i, "/spec/gpuSharing/dra/computeDomains", format!("ComputeDomains need multi-node NVLink, but rack(s) {} are not nvl72", non_nvl.join(", "))).hint("use computeDomains only on pools in `faultDomain: nvl72` racks (GB200/GB300 NVL72)"));
                    }
                }
            }
            GpuSharing::Mig(m) => {
                let Some(geo) = catalog::mig(model) else {
                    out.push(
                        self.err(
                            "mig-unsupported",
                            i,
                            "/spec/gpuSharing/mig",
                            format!("{model} has no MIG"),
                        )
                        .hint("use time-slicing or MPS on this model"),
                    );
                    return out;
                };
                let strategy = f.operators_for(&p.spec.tenant).gpu_operator.mig_strategy;
                let base = "/spec/gpuSharing/mig/config";
                let layouts: Vec<(String, Vec<(String, u32)>)> = match &m.config {
                    MigConfig::Named(n) => match catalog::named_layout(&geo, n) {
                        Some(l) => vec![(
                            base.to_string(),
                            l.into_iter().map(|(a, b)| (a.to_string(), b)).collect(),
                        )],
                        None => {
                            let names: Vec<String> = geo
                                .profiles
                                .iter()
                                .map(|p| format!("all-{}", p.name))
                                .chain(["all-disabled".into(), "all-balanced".into()])
                                .collect();
                            let mut e = self.err(
                                "mig-profile",
                                i,
                                base,
                                format!("`{n}` is not a MIG config for {model}"),
                            );
                            e = match did_you_mean(n, names.iter().map(String::as_str)) {
                                Some(s) => e.hint(format!(
                                    "did you mean `{s}`? {model} profiles: {}",
                                    geo.names().join(", ")
                                )),
                                None => {
                                    e.hint(format!("{model} profiles: {}", geo.names().join(", ")))
                                }
                            };
                            out.push(e);
                            vec![]
                        }
                    },
                    MigConfig::Layout(MigLayout::All(l)) => vec![(
                        format!("{base}/all"),
                        l.iter().map(|(a, b)| (a.clone(), *b)).collect(),
                    )],
                    MigConfig::Layout(MigLayout::PerGpu(v)) => {
                        if v.len() as u64 > u64::from(gpus) {
                            out.push(
                                self.err(
                                    "mig-layout",
                                    i,
                                    &format!("{base}/perGpu"),
                                    format!(
                                        "{} per-GPU layouts for hosts with {gpus} GPUs",
                                        v.len()
                                    ),
                                )
                                .hint("one entry per GPU index, at most the GPU count"),
                            );
                        }
                        v.iter()
                            .enumerate()
                            .map(|(n, l)| {
                                (
                                    format!("{base}/perGpu/{n}"),
                                    l.iter().map(|(a, b)| (a.clone(), *b)).collect(),
                                )
                            })
                            .collect()
                    }
                };
                let mut all_profiles = BTreeSet::new();
                for (ptr, layout) in &layouts {
                    for (name, count) in layout {
                        if *count > 0 {
                            all_profiles.insert(name.clone());
                        }
                    }
                    match catalog::check_layout(&geo, layout.iter().map(|(a, b)| (a.as_str(), *b)))
                    {
                        Ok(()) => {}
                        Err(catalog::LayoutError::UnknownProfile(pn)) => {
                            let at = format!("{ptr}/{}", escape_segment(&pn));
                            let mut e = self.err_key(
                                "mig-profile",
                                i,
                                &at,
                                format!("MIG profile `{pn}` does not exist on {model}"),
                            );
                            e = match did_you_mean(&pn, geo.names()) {
                                Some(s) => e.hint(format!(
                                    "did you mean `{s}`? {model} profiles: {}",
                                    geo.names().join(", ")
                                )),
                                None => {
                                    e.hint(format!("{model} profiles: {}", geo.names().join(", ")))
                                }
                            };
                            out.push(e);
                        }
                        Err(err) => {
                            out.push(self.err("mig-layout", i, ptr, format!("MIG layout does not fit one {model}: {err}")).hint("see the profile table in docs/manifest.md (compute and memory slices per profile)"));
                        }
                    }
                }
                if strategy == MigStrategy::Single && all_profiles.len() > 1 {
                    out.push(self.err("mig-strategy", i, base, format!("layout mixes profiles {} but the tenant's migStrategy is `single`", all_profiles.into_iter().collect::<Vec<_>>().join(", "))).hint("set `operators.gpuOperator.migStrategy: mixed` for this tenant, or use one profile"));
                }
            }
        }
        out
    }
}
