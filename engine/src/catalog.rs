//! What the validator knows about GPU models: MIG profiles per model and form factors.
//! The version-compatibility table lives in `crate::compat`, row by row with its source;
//! docs/manifest.md shows both.
//!
//! MIG profiles: /work/shared/domain.md §3.1 (from gpu-operator v26.7.0's default
//! mig-parted config and mig-parted v0.15.0's Hopper/Blackwell example, sizes
//! cross-checked there with NVIDIA's MIG user guide). The node-inventory catalogue in
//! providers/gpu is separate: this one only answers "does this layout fit this model".
//!
//! The fit check is an approximation of MIG placement: per GPU, the compute slices and
//! memory slices of the requested instances must not exceed the GPU's, no profile
//! may exceed its maximum count, and at most one `+me` instance. Real placement has a
//! few more slot rules; the layouts it accepts include every "balanced" and "all-*"
//! layout of the default config.

use crate::manifest::GpuModel;

/// One MIG profile of one GPU model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigProfile {
    /// Profile name, e.g. `1g.10gb`.
    pub name: &'static str,
    /// Compute slices it takes.
    pub compute: u32,
    /// Memory slices it takes.
    pub memory: u32,
    /// Most instances of it on one GPU.
    pub max: u32,
}

/// MIG geometry of a GPU model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigGeometry {
    /// Compute slices per GPU (7, or 4 on A30 / RTX PRO 6000).
    pub compute_slices: u32,
    /// Memory slices per GPU (8, or 4).
    pub memory_slices: u32,
    /// Profiles, smallest first.
    pub profiles: Vec<MigProfile>,
    /// The default config's `all-balanced` layout, when it has one.
    pub balanced: Vec<(&'static str, u32)>,
}

impl MigGeometry {
    /// A profile by name.
    pub fn profile(&self, name: &str) -> Option<&MigProfile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// Profile names, for hints.
    pub fn names(&self) -> Vec<&'static str> {
        self.profiles.iter().map(|p| p.name).collect()
    }
}

/// The seven-slice family (A100/H100/H200/B200/GB200/B300/GB300): names of
/// 1g small, 1g+me, 1g large, 2g, 3g, 4g, 7g.
fn seven(n: [&'static str; 7]) -> MigGeometry {
    MigGeometry {
        compute_slices: 7,
        memory_slices: 8,
        profiles: vec![
            MigProfile {
                name: n[0],
                compute: 1,
                memory: 1,
                max: 7,
            },
            MigProfile {
                name: n[1],
                compute: 1,
                memory: 1,
                max: 1,
            },
            MigProfile {
                name: n[2],
                compute: 1,
                memory: 2,
                max: 4,
            },
            MigProfile {
                name: n[3],
                compute: 2,
                memory: 2,
                max: 3,
            },
            MigProfile {
                name: n[4],
                compute: 3,
                memory: 4,
                max: 2,
            },
            MigProfile {
                name: n[5],
                compute: 4,
                memory: 4,
                max: 1,
            },
            MigProfile {
                name: n[6],
                compute: 7,
                memory: 8,
                max: 1,
            },
        ],
        balanced: vec![(n[0], 2), (n[3], 1), (n[4], 1)],
    }
}

/// MIG geometry of a model; `None` when the model has no MIG (L40S, L40, A40).
pub fn mig(model: GpuModel) -> Option<MigGeometry> {
    use GpuModel::*;
    Some(match model {
        A100_40GB => {
            let mut g = seven([
                "1g.5gb",
                "1g.5gb+me",
                "1g.10gb",
                "2g.10gb",
                "3g.20gb",
                "4g.20gb",
                "7g.40gb",
            ]);
            g.balanced = vec![("1g.5gb", 2), ("2g.10gb", 1), ("3g.20gb", 1)];
            g
        }
        A100_80GB | H100 => seven([
            "1g.10gb",
            "1g.10gb+me",
            "1g.20gb",
            "2g.20gb",
            "3g.40gb",
            "4g.40gb",
            "7g.80gb",
        ]),
        H100Nvl => seven([
            "1g.12gb",
            "1g.12gb+me",
            "1g.24gb",
            "2g.24gb",
            "3g.47gb",
            "4g.47gb",
            "7g.94gb",
        ]),
        H200 => seven([
            "1g.18gb",
            "1g.18gb+me",
            "1g.35gb",
            "2g.35gb",
            "3g.71gb",
            "4g.71gb",
            "7g.141gb",
        ]),
        B200 => seven([
            "1g.23gb",
            "1g.23gb+me",
            "1g.45gb",
            "2g.45gb",
            "3g.90gb",
            "4g.90gb",
            "7g.180gb",
        ]),
        GB200 => seven([
            "1g.23gb",
            "1g.23gb+me",
            "1g.47gb",
            "2g.47gb",
            "3g.93gb",
            "4g.93gb",
            "7g.186gb",
        ]),
        B300 => seven([
            "1g.34gb",
            "1g.34gb+me",
            "1g.67gb",
            "2g.67gb",
            "3g.135gb",
            "4g.135gb",
            "7g.269gb",
        ]),
        GB300 => seven([
            "1g.35gb",
            "1g.35gb+me",
            "1g.70gb",
            "2g.70gb",
            "3g.139gb",
            "4g.139gb",
            "7g.278gb",
        ]),
        A30 => MigGeometry {
            compute_slices: 4,
            memory_slices: 4,
            profiles: vec![
                MigProfile {
                    name: "1g.6gb",
                    compute: 1,
                    memory: 1,
                    max: 4,
                },
                MigProfile {
                    name: "1g.6gb+me",
                    compute: 1,
                    memory: 1,
                    max: 1,
                },
                MigProfile {
                    name: "2g.12gb",
                    compute: 2,
                    memory: 2,
                    max: 2,
                },
                MigProfile {
                    name: "2g.12gb+me",
                    compute: 2,
                    memory: 2,
                    max: 1,
                },
                MigProfile {
                    name: "4g.24gb",
                    compute: 4,
                    memory: 4,
                    max: 1,
                },
            ],
            balanced: vec![],
        },
        RtxPro6000 => MigGeometry {
            compute_slices: 4,
            memory_slices: 4,
            profiles: vec![
                MigProfile {
                    name: "1g.24gb",
                    compute: 1,
                    memory: 1,
                    max: 4,
                },
                MigProfile {
                    name: "1g.24gb+gfx",
                    compute: 1,
                    memory: 1,
                    max: 4,
                },
                MigProfile {
                    name: "2g.48gb",
                    compute: 2,
                    memory: 2,
                    max: 2,
                },
                MigProfile {
                    name: "2g.48gb+gfx",
                    compute: 2,
                    memory: 2,
                    max: 2,
                },
                MigProfile {
                    name: "4g.96gb",
                    compute: 4,
                    memory: 4,
                    max: 1,
                },
                MigProfile {
                    name: "4g.96gb+gfx",
                    compute: 4,
                    memory: 4,
                    max: 1,
                },
            ],
            balanced: vec![],
        },
        // GH200 96GB (MIG user guide's GH200 table, as recalled: verify before relying on it).
        GH200 => seven([
            "1g.12gb",
            "1g.12gb+me",
            "1g.24gb",
            "2g.24gb",
            "3g.48gb",
            "4g.48gb",
            "7g.96gb",
        ]),
        L40S | L40 | A40 => return None,
    })
}

/// Why a per-GPU layout does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// A profile name the model does not have.
    UnknownProfile(String),
    /// More instances of a profile than the model allows.
    TooMany {
        /// Profile.
        profile: String,
        /// Asked.
        count: u32,
        /// Allowed.
        max: u32,
    },
    /// Compute slices exceeded.
    Compute {
        /// Asked.
        used: u32,
        /// Available.
        available: u32,
    },
    /// Memory slices exceeded.
    Memory {
        /// Asked.
        used: u32,
        /// Available.
        available: u32,
    },
    /// More than one media-engine (`+me`) instance.
    MediaEngines,
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutError::UnknownProfile(p) => write!(f, "profile `{p}` does not exist on this GPU"),
            LayoutError::TooMany {
                profile,
                count,
                max,
            } => {
                write!(f, "{count}× {profile} exceeds the maximum of {max} per GPU")
            }
            LayoutError::Compute { used, available } => {
                write!(f, "needs {used} compute slices, the GPU has {available}")
            }
            LayoutError::Memory { used, available } => {
                write!(f, "needs {used} memory slices, the GPU has {available}")
            }
            LayoutError::MediaEngines => write!(f, "at most one +me instance per GPU"),
        }
    }
}

/// Checks one GPU's layout (profile → count).
pub fn check_layout<'a>(
    geo: &MigGeometry,
    layout: impl IntoIterator<Item = (&'a str, u32)>,
) -> Result<(), LayoutError> {
    let (mut compute, mut memory, mut me) = (0u32, 0u32, 0u32);
    for (name, count) in layout {
        let p = geo
            .profile(name)
            .ok_or_else(|| LayoutError::UnknownProfile(name.to_string()))?;
        if count > p.max {
            return Err(LayoutError::TooMany {
                profile: name.to_string(),
                count,
                max: p.max,
            });
        }
        compute = compute.saturating_add(p.compute.saturating_mul(count));
        memory = memory.saturating_add(p.memory.saturating_mul(count));
        if name.ends_with("+me") {
            me = me.saturating_add(count);
        }
    }
    if compute > geo.compute_slices {
        return Err(LayoutError::Compute {
            used: compute,
            available: geo.compute_slices,
        });
    }
    if memory > geo.memory_slices {
        return Err(LayoutError::Memory {
            used: memory,
            available: geo.memory_slices,
        });
    }
    if me > 1 {
        return Err(LayoutError::MediaEngines);
    }
    Ok(())
}

/// Expands a named mig-parted config (`all-disabled`, `all-enabled`, `all-balanced`,
/// `all-<profile>`) into one GPU's layout. `None` when the name is not one of these
/// for this model.
pub fn named_layout(geo: &MigGeometry, name: &str) -> Option<Vec<(&'static str, u32)>> {
    match name {
        "all-disabled" | "all-enabled" => Some(vec![]),
        "all-balanced" if !geo.balanced.is_empty() => Some(geo.balanced.clone()),
        _ => {
            let p = geo.profile(name.strip_prefix("all-")?)?;
            // `all-<profile>` fills the GPU with as many as fit.
            let n = p
                .max
                .min(geo.compute_slices / p.compute)
                .min(geo.memory_slices / p.memory);
            Some(vec![(p.name, n)])
        }
    }
}

/// The driver branch of a driver version (`595.91.07` → 595, `570-signed` → 570).
pub fn driver_branch(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// `(year, month)` of a GPU Operator version (`v26.7.0` → (26, 7)).
pub fn gpu_operator_release(version: &str) -> Option<(u32, u32)> {
    let v = version.strip_prefix('v').unwrap_or(version);
    let mut it = v.split(['.', '-']);
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    Some((a, b))
}

/// The most GPUs one host of a model can hold, by the form factor the model ships in:
/// HGX/DGX baseboards carry 8 SXM GPUs (A100, H100, H200, B200, B300); a GB200/GB300
/// NVL72 compute tray carries 4; PCIe cards (A30, H100 NVL, RTX PRO 6000, L40S) go in
/// servers with at most 10 double-width slots. The schema's `gpu.count` maximum is the
/// largest of these ([`MAX_GPUS_PER_HOST`]); the `gpu-count` rule applies the model's.
pub fn max_gpus_per_host(model: GpuModel) -> u32 {
    use GpuModel::*;
    match model {
        A100_40GB | A100_80GB | H100 | H200 | B200 | B300 => 8,
        GB200 | GB300 | GH200 => 4,
        A30 | H100Nvl | RtxPro6000 | L40S | L40 | A40 => 10,
    }
}

/// The largest [`max_gpus_per_host`] of any model (the schema's bound on `gpu.count`).
pub const MAX_GPUS_PER_HOST: u32 = 10;

/// The form factor behind [`max_gpus_per_host`], for messages.
pub fn form_factor(model: GpuModel) -> &'static str {
    use GpuModel::*;
    match model {
        A100_40GB | A100_80GB | H100 | H200 | B200 | B300 => "an HGX baseboard (8 GPUs)",
        GB200 | GB300 => "an NVL72 compute tray (4 GPUs)",
        GH200 => "a Grace Hopper node (at most 4 superchips)",
        A30 | H100Nvl | RtxPro6000 | L40S | L40 | A40 => "a PCIe server (at most 10 cards)",
    }
}

/// Lowest Kubernetes minor release a tenant cluster may run (DRA GA in 1.34).
pub const MIN_KUBERNETES: (u32, u32) = (1, 34);

/// `(major, minor)` of a Kubernetes version (`1.34`, `v1.34.2`).
pub fn kubernetes_minor(version: &str) -> Option<(u32, u32)> {
    let v = version.strip_prefix('v').unwrap_or(version);
    let mut it = v.split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    if let Some(p) = it.next() {
        p.parse::<u32>().ok()?;
    }
    if it.next().is_some() {
        return None;
    }
    Some((a, b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn h100_takes_seven_1g_10gb_but_not_eight() {
        let g = mig(GpuModel::H100).unwrap();
        assert!(check_layout(&g, [("1g.10gb", 7)]).is_ok());
        assert!(check_layout(&g, [("1g.10gb", 8)]).is_err());
    }

    #[test]
    fn balanced_and_all_layouts_of_every_model_fit() {
        for m in GpuModel::ALL {
            let Some(g) = mig(m) else { continue };
            for p in &g.profiles {
                let l = named_layout(&g, &format!("all-{}", p.name)).unwrap();
                assert!(
                    check_layout(&g, l.iter().copied()).is_ok(),
                    "{m} all-{}",
                    p.name
                );
            }
            if !g.balanced.is_empty() {
                assert!(
                    check_layout(&g, g.balanced.iter().copied()).is_ok(),
                    "{m} balanced"
                );
            }
        }
    }

    #[test]
    fn profile_names_are_per_model() {
        let h200 = mig(GpuModel::H200).unwrap();
        assert!(check_layout(&h200, [("1g.10gb", 1)]).is_err());
    }

    #[test]
    fn versions_parse() {
        assert_eq!(driver_branch("595.91.07"), Some(595));
        assert_eq!(gpu_operator_release("v26.7.0"), Some((26, 7)));
        assert_eq!(kubernetes_minor("1.34"), Some((1, 34)));
        assert_eq!(kubernetes_minor("v1.35.1"), Some((1, 35)));
        assert_eq!(kubernetes_minor("1.3x"), None);
    }
}
