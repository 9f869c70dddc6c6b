//! What each GPU sharing mode exposes to the scheduler, in one place. The
//! validator's rules (`nim-mig`, `nim-capacity`, `dra-device-class`,
//! `dra-device-plugin`) and the compiled requests, labels and DeviceClasses are
//! all derived from these functions, so what validate accepts is what compile
//! can make schedulable.
//!
//! - Device plugin, whole GPUs, MPS and time-slicing: `nvidia.com/gpu`.
//! - MIG under `migStrategy: single`: every MIG device of a node is advertised as
//!   `nvidia.com/gpu` (one profile per node); under `mixed`: each profile is its own
//!   resource `nvidia.com/mig-<profile>` (k8s-device-plugin, GPU Operator docs).
//! - DRA: the NVIDIA DRA driver (`gpu.nvidia.com`) publishes GPUs and MIG devices in
//!   ResourceSlices with the attribute `type` (`gpu`, `mig`, `vfio`) and, for MIG,
//!   `profile`; ComputeDomain channels and daemons come from `compute-domain.nvidia.com`.
//!   The device plugin must be off on the pool's nodes (GPU Operator node label
//!   `nvidia.com/gpu.deploy.device-plugin=false`), or both would hand out the same GPUs.

use std::collections::BTreeMap;

use crate::catalog::{self, MigGeometry};
use crate::manifest::{GpuSharing, MigConfig, MigLayout, MigStrategy};

/// The extended resource of a whole GPU (and of a MIG device under `single`).
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// The GPU Operator's per-node switch for its device plugin.
pub const DEVICE_PLUGIN_LABEL: &str = "nvidia.com/gpu.deploy.device-plugin";

/// The extended resource a MIG device of `profile` is advertised as.
pub fn mig_resource(strategy: MigStrategy, profile: &str) -> String {
    match strategy {
        MigStrategy::Single => GPU_RESOURCE.to_string(),
        MigStrategy::Mixed => format!("nvidia.com/mig-{profile}"),
    }
}

/// What one replica of a workload asks the scheduler for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A device-plugin extended resource (`resources.limits`).
    Extended {
        /// Resource name, e.g. `nvidia.com/gpu`, `nvidia.com/mig-1g.10gb`.
        resource: String,
        /// How many.
        count: u32,
    },
    /// A DRA device request (a claim from a DeviceClass).
    Dra {
        /// The DeviceClass.
        class: DraClass,
        /// The MIG profile, for `mig.nvidia.com`.
        profile: Option<String>,
        /// How many devices.
        count: u32,
    },
}

/// The request of one replica that wants `gpus` whole GPUs, or `gpus` MIG devices of
/// `mig_profile`, on a pool shared as `sharing` whose tenant runs `strategy`.
pub fn request(
    sharing: Option<&GpuSharing>,
    strategy: MigStrategy,
    mig_profile: Option<&str>,
    gpus: u32,
) -> Request {
    match (sharing, mig_profile) {
        (Some(GpuSharing::Dra(_)), Some(p)) => Request::Dra {
            class: DraClass::Mig,
            profile: Some(p.to_string()),
            count: gpus,
        },
        (Some(GpuSharing::Dra(_)), None) => Request::Dra {
            class: DraClass::Gpu,
            profile: None,
            count: gpus,
        },
        (_, Some(p)) => Request::Extended {
            resource: mig_resource(strategy, p),
            count: gpus,
        },
        (_, None) => Request::Extended {
            resource: GPU_RESOURCE.into(),
            count: gpus,
        },
    }
}

/// Labels a pool's nodes need for the devices of its sharing mode to be advertised
/// by exactly one component.
pub fn node_labels(sharing: Option<&GpuSharing>) -> Vec<(&'static str, &'static str)> {
    match sharing {
        Some(GpuSharing::Dra(_)) => vec![(DEVICE_PLUGIN_LABEL, "false")],
        _ => vec![],
    }
}

/// The DeviceClasses of the NVIDIA DRA driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DraClass {
    /// `gpu.nvidia.com`: whole GPUs.
    Gpu,
    /// `mig.nvidia.com`: MIG devices.
    Mig,
    /// `vfio.gpu.nvidia.com`: GPUs bound to vfio-pci for passthrough.
    Vfio,
    /// `compute-domain-daemon.nvidia.com`: IMEX daemons of a ComputeDomain.
    ComputeDomainDaemon,
    /// `compute-domain-default-channel.nvidia.com`: a ComputeDomain's IMEX channel.
    ComputeDomainChannel,
}

impl DraClass {
    /// Every class.
    pub const ALL: [DraClass; 5] = [
        DraClass::Gpu,
        DraClass::Mig,
        DraClass::Vfio,
        DraClass::ComputeDomainDaemon,
        DraClass::ComputeDomainChannel,
    ];

    /// The DeviceClass name.
    pub fn name(self) -> &'static str {
        match self {
            DraClass::Gpu => "gpu.nvidia.com",
            DraClass::Mig => "mig.nvidia.com",
            DraClass::Vfio => "vfio.gpu.nvidia.com",
            DraClass::ComputeDomainDaemon => "compute-domain-daemon.nvidia.com",
            DraClass::ComputeDomainChannel => "compute-domain-default-channel.nvidia.com",
        }
    }

    /// A class by DeviceClass name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The DRA driver that publishes the class's devices.
    pub fn driver(self) -> &'static str {
        match self {
            DraClass::Gpu | DraClass::Mig | DraClass::Vfio => "gpu.nvidia.com",
            DraClass::ComputeDomainDaemon | DraClass::ComputeDomainChannel => {
                "compute-domain.nvidia.com"
            }
        }
    }

    /// The value of the driver's `type` device attribute the class selects.
    pub fn device_type(self) -> &'static str {
        match self {
            DraClass::Gpu => "gpu",
            DraClass::Mig => "mig",
            DraClass::Vfio => "vfio",
            DraClass::ComputeDomainDaemon => "daemon",
            DraClass::ComputeDomainChannel => "channel",
        }
    }

    /// The DeviceClass's CEL selector: the driver and the device type, so a
    /// whole-GPU class never matches a MIG device (and the other way round).
    pub fn cel(self) -> String {
        let d = self.driver();
        format!(
            "device.driver == \"{d}\" && device.attributes[\"{d}\"].type == \"{}\"",
            self.device_type()
        )
    }

    /// The class's request selector for a MIG profile (`mig.nvidia.com` only).
    pub fn profile_cel(self, profile: &str) -> Option<String> {
        (self == DraClass::Mig).then(|| {
            format!(
                "device.attributes[\"{}\"].profile == \"{profile}\"",
                self.driver()
            )
        })
    }
}

/// MIG devices per profile that one host with `gpus` GPUs offers under `config`
/// (profiles with no device left out). Sums are `u64` and saturate: layout counts
/// are `u32`s from the manifest, and a host's GPU count is multiplied in.
pub fn mig_devices(geo: &MigGeometry, config: &MigConfig, gpus: u32) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    let mut add = |name: &str, count: u32, times: u64| {
        if count == 0 || times == 0 {
            return;
        }
        let e = out.entry(name.to_string()).or_default();
        *e = e.saturating_add(u64::from(count).saturating_mul(times));
    };
    match config {
        MigConfig::Named(n) => {
            for (p, c) in catalog::named_layout(geo, n).unwrap_or_default() {
                add(p, c, u64::from(gpus));
            }
        }
        MigConfig::Layout(MigLayout::All(l)) => {
            for (p, c) in l {
                add(p, *c, u64::from(gpus));
            }
        }
        MigConfig::Layout(MigLayout::PerGpu(v)) => {
            // GPUs past the list are MIG-disabled; entries past the GPU count do not exist.
            for l in v.iter().take(usize::try_from(gpus).unwrap_or(usize::MAX)) {
                for (p, c) in l {
                    add(p, *c, 1);
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::manifest::{DraSharing, GpuModel, MigSharing};

    fn mig(config: MigConfig) -> GpuSharing {
        GpuSharing::Mig(MigSharing { config })
    }

    #[test]
    fn a_mig_request_names_the_resource_its_strategy_advertises() {
        let s = mig(MigConfig::Named("all-1g.10gb".into()));
        for (strategy, want) in [
            (MigStrategy::Single, "nvidia.com/gpu"),
            (MigStrategy::Mixed, "nvidia.com/mig-1g.10gb"),
        ] {
            assert_eq!(
                request(Some(&s), strategy, Some("1g.10gb"), 4),
                Request::Extended {
                    resource: want.into(),
                    count: 4
                },
                "{strategy:?}"
            );
        }
    }

    #[test]
    fn a_dra_pool_is_asked_through_claims_and_keeps_the_device_plugin_off() {
        let s = GpuSharing::Dra(DraSharing {
            device_classes: vec!["gpu.nvidia.com".into()],
            compute_domains: false,
        });
        for strategy in [MigStrategy::Single, MigStrategy::Mixed] {
            assert!(matches!(
                request(Some(&s), strategy, None, 4),
                Request::Dra {
                    class: DraClass::Gpu,
                    count: 4,
                    ..
                }
            ));
        }
        assert_eq!(node_labels(Some(&s)), [(DEVICE_PLUGIN_LABEL, "false")]);
        assert!(node_labels(None).is_empty());
    }

    #[test]
    fn every_device_class_selects_its_driver_and_device_type() {
        for c in DraClass::ALL {
            assert_eq!(DraClass::parse(c.name()), Some(c));
            let cel = c.cel();
            assert!(cel.contains(&format!("device.driver == \"{}\"", c.driver())));
            assert!(cel.contains(&format!(".type == \"{}\"", c.device_type())));
        }
        // No two classes select the same devices.
        let mut sel: Vec<_> = DraClass::ALL.iter().map(|c| c.cel()).collect();
        sel.sort();
        sel.dedup();
        assert_eq!(sel.len(), DraClass::ALL.len());
    }

    #[test]
    fn mig_devices_count_per_profile_and_saturate() {
        let geo = catalog::mig(GpuModel::H100).unwrap();
        let d = mig_devices(&geo, &MigConfig::Named("all-1g.10gb".into()), 8);
        assert_eq!(d.get("1g.10gb"), Some(&56));
        let huge = MigConfig::Layout(MigLayout::All(
            [("1g.10gb".to_string(), u32::MAX), ("2g.20gb".into(), 0)].into(),
        ));
        let d = mig_devices(&geo, &huge, u32::MAX);
        assert_eq!(
            d.get("1g.10gb"),
            Some(&(u64::from(u32::MAX) * u64::from(u32::MAX)))
        );
        assert_eq!(d.get("2g.20gb"), None);
        let per = MigConfig::Layout(MigLayout::PerGpu(vec![
            [("3g.40gb".to_string(), 2)].into(),
            [("7g.80gb".to_string(), 1)].into(),
        ]));
        assert_eq!(mig_devices(&geo, &per, 1).get("7g.80gb"), None);
    }
}
