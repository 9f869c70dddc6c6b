//! NIM services: an image compile accepts, their tenant and pool, MIG profiles, and
//! GPU and MIG capacity per pool.

use std::collections::{BTreeMap, HashMap};

use super::mig_capacity;
use crate::catalog;
use crate::manifest::*;
use crate::sharing;
use crate::validate::Cx;
use crate::validate::suggest::did_you_mean;

impl Cx<'_> {
    pub(super) fn nims(&mut self, f: &Fleet) {
        let tenants: Vec<&str> = f.tenants.iter().map(|t| t.name()).collect();
        let pools: Vec<&str> = f.pools.iter().map(|p| p.name()).collect();
        // pool -> (whole GPUs, MIG devices per profile); u64 and saturating: replicas
        // and gpusPerReplica are u32s from the manifest.
        let mut demand: HashMap<&str, (u64, BTreeMap<String, u64>)> = HashMap::new();
        for n in &f.nims {
            let i = n.doc.0;
            // The same parser and registry rule compile uses, so plan never meets an
            // image validate let through.
            let image = crate::compile::ImageRef::parse(&n.spec.image)
                .map_err(|e| e.to_string())
                .and_then(|r| crate::compile::fleet_image(&r, &f.fleet.spec.registries.ngc));
            if let Err(why) = image {
                let e = self
                    .err(
                        "image-ref",
                        i,
                        "/spec/image",
                        format!("NIM `{}`: {why}", n.name()),
                    )
                    .hint("write [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST], e.g. nvcr.io/nim/meta/llama-3.1-8b-instruct:1.8; without a registry the fleet's registries.ngc.endpoint applies");
                self.push(e);
            }
            if f.tenant(&n.spec.tenant).is_none() {
                let mut e = self.err(
                    "unknown-reference",
                    i,
                    "/spec/tenant",
                    format!(
                        "NIM `{}` names tenant `{}`, which is not defined",
                        n.name(),
                        n.spec.tenant
                    ),
                );
                if let Some(m) = did_you_mean(&n.spec.tenant, tenants.iter().copied()) {
                    e = e.hint(format!("did you mean `{m}`?"));
                }
                self.push(e);
            }
            let Some(p) = f.pool(&n.spec.pool) else {
                let mut e = self.err(
                    "unknown-reference",
                    i,
                    "/spec/pool",
                    format!(
                        "NIM `{}` runs on pool `{}`, which is not defined",
                        n.name(),
                        n.spec.pool
                    ),
                );
                if let Some(m) = did_you_mean(&n.spec.pool, pools.iter().copied()) {
                    e = e.hint(format!("did you mean `{m}`?"));
                }
                self.push(e);
                continue;
            };
            if p.spec.tenant != n.spec.tenant {
                let e = self
                    .err(
                        "nim-tenant",
                        i,
                        "/spec/pool",
                        format!(
                            "NIM `{}` of tenant `{}` runs on pool `{}` of tenant `{}`",
                            n.name(),
                            n.spec.tenant,
                            p.name(),
                            p.spec.tenant
                        ),
                    )
                    .hint("a NIM runs on a pool of its own tenant");
                self.push(e);
            }
            let mig = matches!(p.spec.gpu_sharing, Some(GpuSharing::Mig(_)));
            match (&n.spec.mig_profile, mig) {
                (Some(prof), false) => {
                    let e = self
                        .err(
                            "nim-mig",
                            i,
                            "/spec/migProfile",
                            format!(
                                "NIM `{}` asks for MIG profile `{prof}` but pool `{}` has no MIG",
                                n.name(),
                                p.name()
                            ),
                        )
                        .hint("drop migProfile to use whole GPUs, or run it on a MIG pool");
                    self.push(e);
                }
                (None, true) => {
                    let e = self.err("nim-mig", i, "/spec/pool", format!("NIM `{}` needs whole GPUs but pool `{}` partitions its GPUs with MIG", n.name(), p.name())).hint("set `migProfile` to one of the pool's profiles, or use a pool without MIG");
                    self.push(e);
                }
                (Some(prof), true) => {
                    let model = f
                        .members(p.name())
                        .first()
                        .and_then(|h| f.host(h))
                        .map(|h| h.spec.gpu.model);
                    if let Some(geo) = model.and_then(catalog::mig)
                        && geo.profile(prof).is_none()
                    {
                        let e = self
                            .err(
                                "mig-profile",
                                i,
                                "/spec/migProfile",
                                format!(
                                    "MIG profile `{prof}` does not exist on {}",
                                    model.map(|m| m.to_string()).unwrap_or_default()
                                ),
                            )
                            .hint(format!("profiles: {}", geo.names().join(", ")));
                        self.push(e);
                    } else if let Some(GpuSharing::Mig(m)) = &p.spec.gpu_sharing
                        && model.is_some()
                    {
                        let offered = mig_capacity(f, p);
                        if !offered.contains_key(prof.as_str()) {
                            let have: Vec<&str> = offered.keys().map(String::as_str).collect();
                            let layout = match &m.config {
                                MigConfig::Named(c) => format!("`{c}`"),
                                MigConfig::Layout(_) => "layout".to_string(),
                            };
                            let e = self
                                .err(
                                    "nim-mig",
                                    i,
                                    "/spec/migProfile",
                                    format!(
                                        "NIM `{}` asks for MIG profile `{prof}`, but pool `{}`'s MIG {layout} makes no `{prof}` devices",
                                        n.name(),
                                        p.name()
                                    ),
                                )
                                .hint(if have.is_empty() {
                                    "the pool's layout makes no MIG devices; give it a layout with this profile".to_string()
                                } else {
                                    format!("the pool offers: {}", have.join(", "))
                                });
                            self.push(e);
                        }
                    }
                    let per = demand.entry(p.name()).or_default();
                    let c = per.1.entry(prof.clone()).or_default();
                    *c = c.saturating_add(u64::from(n.spec.replicas));
                }
                (None, false) => {
                    if let Some(GpuSharing::Dra(d)) = &p.spec.gpu_sharing
                        && let sharing::Request::Dra { class, .. } = sharing::request(
                            p.spec.gpu_sharing.as_ref(),
                            MigStrategy::Single,
                            None,
                            n.spec.gpus_per_replica,
                        )
                        && !d.device_classes.iter().any(|c| c == class.name())
                    {
                        let e = self
                            .err(
                                "dra-device-class",
                                i,
                                "/spec/pool",
                                format!(
                                    "NIM `{}` needs whole GPUs, but DRA pool `{}` offers no `{}` DeviceClass",
                                    n.name(),
                                    p.name(),
                                    class.name()
                                ),
                            )
                            .hint(format!("add `{}` to the pool's dra.deviceClasses", class.name()));
                        self.push(e);
                    }
                    let need = u64::from(n.spec.replicas)
                        .saturating_mul(u64::from(n.spec.gpus_per_replica));
                    let per_host = f
                        .members(p.name())
                        .iter()
                        .filter_map(|h| f.host(h))
                        .map(|h| h.spec.gpu.count)
                        .max()
                        .unwrap_or(0);
                    if n.spec.gpus_per_replica > per_host {
                        let e = self.err("nim-capacity", i, "/spec/gpusPerReplica", format!("NIM `{}` needs {} GPUs per replica; hosts of pool `{}` have {per_host}", n.name(), n.spec.gpus_per_replica, p.name())).hint("a replica runs on one host; multi-node NIMs are not modelled yet");
                        self.push(e);
                    } else {
                        let per = demand.entry(p.name()).or_default();
                        per.0 = per.0.saturating_add(need);
                    }
                }
            }
        }
        let mut last_nim: HashMap<&str, &NimService> = HashMap::new();
        for n in &f.nims {
            last_nim.insert(n.spec.pool.as_str(), n);
        }
        let mut demand: Vec<_> = demand.into_iter().collect();
        demand.sort_by(|a, b| a.0.cmp(b.0));
        for (pool, (gpus, mig_devices)) in demand {
            let Some(p) = f.pool(pool) else { continue };
            let cap = gpu_capacity(f, pool);
            let mig_cap = mig_capacity(f, p);
            let last = last_nim.get(pool).copied();
            if let Some(n) = last {
                if gpus > cap {
                    let e = self.err("nim-capacity", n.doc.0, "/spec/replicas", format!("NIMs on pool `{pool}` need {gpus} GPUs (replicas × gpusPerReplica); the pool has {cap}")).hint("lower replicas or add hosts to the pool");
                    self.push(e);
                }
                for (profile, need) in mig_devices {
                    // A profile the layout lacks is reported on the NIM (`nim-mig`).
                    let Some(&have) = mig_cap.get(&profile) else {
                        continue;
                    };
                    if need > have {
                        let e = self.err("nim-capacity", n.doc.0, "/spec/replicas", format!("NIMs on pool `{pool}` need {need} MIG devices of profile {profile}; the pool's layout has {have}")).hint("lower replicas or add hosts to the pool");
                        self.push(e);
                    }
                }
            }
        }
    }
}

/// Whole GPUs of a pool's members (saturating).
fn gpu_capacity(f: &Fleet, pool: &str) -> u64 {
    f.members(pool)
        .iter()
        .filter_map(|h| f.host(h))
        .fold(0u64, |a, h| a.saturating_add(u64::from(h.spec.gpu.count)))
}
