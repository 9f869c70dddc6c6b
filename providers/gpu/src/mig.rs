//! MIG profile catalogue and layout checks.
//!
//! Facts come from /work/shared/domain.md §3.1 (gpu-operator v26.7.0 default
//! mig-parted config + mig-parted v0.15.0 Hopper/Blackwell example, sizes
//! cross-checked there with NVIDIA's MIG user guide) and the configs under
//! shared/fixtures/mig. Profile names collide across models (`1g.24gb` is H100
//! NVL *and* RTX PRO), so every lookup is keyed by GPU model, never by name alone.
//!
//! [`fits`] checks the slice budget (compute slices ≤ the GPU's, memory slices
//! ≤ 8, per-profile maximum counts, at most one `+me`). That is necessary, not
//! sufficient: mig-parted still checks exact placements when it applies a layout.

use serde::{Deserialize, Serialize};

/// One MIG profile of one GPU model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MigProfile {
    /// Profile name as mig-parted and NVML spell it, e.g. `1g.10gb`.
    pub name: &'static str,
    /// Compute slices (the `Ng` part).
    pub compute_slices: u32,
    /// Memory slices out of [`MEMORY_SLICES`].
    pub memory_slices: u32,
    /// Most instances of this profile on one GPU.
    pub max_instances: u32,
}

/// Memory slices per MIG-capable GPU (all catalogued models have 8).
pub const MEMORY_SLICES: u32 = 8;
/// Compute slices per catalogued GPU (A100/H100/H200/B200/GB200: 7).
pub const COMPUTE_SLICES: u32 = 7;

const fn p(
    name: &'static str,
    compute_slices: u32,
    memory_slices: u32,
    max_instances: u32,
) -> MigProfile {
    MigProfile {
        name,
        compute_slices,
        memory_slices,
        max_instances,
    }
}

/// A catalogued GPU model.
#[derive(Debug, Clone, Copy)]
pub struct MigModel {
    /// Canonical key, e.g. `H100-80GB`.
    pub key: &'static str,
    /// PCI device+vendor ids (`0x233010DE`) from the mig-parted `device-filter` lines.
    pub device_ids: &'static [&'static str],
    /// Its profiles.
    pub profiles: &'static [MigProfile],
    /// The "balanced" layout of the default config (`all-balanced`), when it has one.
    pub balanced: &'static [&'static str],
}

const A100_40GB: &[MigProfile] = &[
    p("1g.5gb", 1, 1, 7),
    p("1g.5gb+me", 1, 1, 1),
    p("1g.10gb", 1, 2, 4),
    p("2g.10gb", 2, 2, 3),
    p("3g.20gb", 3, 4, 2),
    p("4g.20gb", 4, 4, 1),
    p("7g.40gb", 7, 8, 1),
];
const GB80: &[MigProfile] = &[
    p("1g.10gb", 1, 1, 7),
    p("1g.10gb+me", 1, 1, 1),
    p("1g.20gb", 1, 2, 4),
    p("2g.20gb", 2, 2, 3),
    p("3g.40gb", 3, 4, 2),
    p("4g.40gb", 4, 4, 1),
    p("7g.80gb", 7, 8, 1),
];
const H100_NVL_94GB: &[MigProfile] = &[
    p("1g.12gb", 1, 1, 7),
    p("1g.12gb+me", 1, 1, 1),
    p("1g.24gb", 1, 2, 4),
    p("2g.24gb", 2, 2, 3),
    p("3g.47gb", 3, 4, 2),
    p("4g.47gb", 4, 4, 1),
    p("7g.94gb", 7, 8, 1),
];
const H100_96GB: &[MigProfile] = &[
    p("1g.12gb", 1, 1, 7),
    p("1g.24gb", 1, 2, 4),
    p("2g.24gb", 2, 2, 3),
    p("3g.48gb", 3, 4, 2),
    p("4g.48gb", 4, 4, 1),
    p("7g.96gb", 7, 8, 1),
];
const H200_141GB: &[MigProfile] = &[
    p("1g.18gb", 1, 1, 7),
    p("1g.18gb+me", 1, 1, 1),
    p("1g.35gb", 1, 2, 4),
    p("2g.35gb", 2, 2, 3),
    p("3g.71gb", 3, 4, 2),
    p("4g.71gb", 4, 4, 1),
    p("7g.141gb", 7, 8, 1),
];
const B200_180GB: &[MigProfile] = &[
    p("1g.23gb", 1, 1, 7),
    p("1g.23gb+me", 1, 1, 1),
    p("1g.45gb", 1, 2, 4),
    p("2g.45gb", 2, 2, 3),
    p("3g.90gb", 3, 4, 2),
    p("4g.90gb", 4, 4, 1),
    p("7g.180gb", 7, 8, 1),
];
const GB200_186GB: &[MigProfile] = &[
    p("1g.23gb", 1, 1, 7),
    p("1g.23gb+me", 1, 1, 1),
    p("1g.47gb", 1, 2, 4),
    p("2g.47gb", 2, 2, 3),
    p("3g.93gb", 3, 4, 2),
    p("4g.93gb", 4, 4, 1),
    p("7g.186gb", 7, 8, 1),
];

/// The catalogue (domain.md §3.1). GH200, B300, GB300, A30 and RTX PRO 6000 are
/// listed there but not yet catalogued here.
pub const MODELS: &[MigModel] = &[
    MigModel {
        key: "A100-40GB",
        device_ids: &["0x20B010DE", "0x20B110DE", "0x20F110DE", "0x20F610DE"],
        profiles: A100_40GB,
        balanced: &["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"],
    },
    MigModel {
        key: "A100-80GB",
        device_ids: &["0x20B210DE", "0x20B510DE", "0x20F310DE", "0x20F510DE"],
        profiles: GB80,
        balanced: &["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"],
    },
    MigModel {
        key: "H100-80GB",
        device_ids: &["0x233010DE", "0x233110DE", "0x232210DE", "0x232410DE"],
        profiles: GB80,
        balanced: &["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"],
    },
    MigModel {
        key: "H100-NVL-94GB",
        device_ids: &["0x232110DE", "0x233A10DE"],
        profiles: H100_NVL_94GB,
        balanced: &[],
    },
    MigModel {
        key: "H100-96GB",
        device_ids: &["0x233D10DE"],
        profiles: H100_96GB,
        balanced: &[],
    },
    MigModel {
        key: "H200-141GB",
        device_ids: &["0x233510DE", "0x233B10DE"],
        profiles: H200_141GB,
        balanced: &["1g.18gb", "1g.18gb", "2g.35gb", "3g.71gb"],
    },
    MigModel {
        key: "B200-180GB",
        device_ids: &["0x290110DE"],
        profiles: B200_180GB,
        balanced: &["1g.23gb", "1g.23gb", "2g.45gb", "3g.90gb"],
    },
    MigModel {
        key: "GB200-186GB",
        device_ids: &["0x294110DE"],
        profiles: GB200_186GB,
        balanced: &["1g.23gb", "1g.23gb", "2g.47gb", "3g.93gb"],
    },
];

/// Upper-cases and drops spaces, dashes and the `NVIDIA` prefix:
/// `NVIDIA H100 80GB HBM3` → `H10080GBHBM3`.
fn squash(s: &str) -> String {
    s.to_ascii_uppercase()
        .replace("NVIDIA", "")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect()
}

/// True when `token` occurs in `hay` not preceded by a letter or digit
/// (`B200` in `GB200` does not count).
pub(crate) fn contains_model_token(hay: &str, token: &str) -> bool {
    let hay = hay.to_ascii_uppercase();
    let token = token.to_ascii_uppercase();
    if token.is_empty() {
        return false;
    }
    let mut from = 0;
    while let Some(pos) = hay[from..].find(&token) {
        let at = from + pos;
        let before_ok = at == 0 || !hay.as_bytes()[at - 1].is_ascii_alphanumeric();
        if before_ok {
            return true;
        }
        from = at + 1;
    }
    false
}

/// True when every word of `model` (split on spaces, `-` and `_`) is a word of
/// the NVML `name`, case-insensitively: `H100` and `H100 80GB` match
/// `NVIDIA H100 80GB HBM3`, `A100-40GB` matches `NVIDIA A100-SXM4-40GB`, and
/// `B200` does not match `NVIDIA GB200`.
pub fn model_matches(name: &str, model: &str) -> bool {
    let words = |s: &str| -> Vec<String> {
        s.split([' ', '-', '_'])
            .filter(|w| !w.is_empty())
            .map(|w| w.to_ascii_uppercase())
            .collect()
    };
    let have = words(name);
    let want = words(model);
    !want.is_empty() && want.iter().all(|w| have.contains(w))
}

/// Resolves a GPU model, as a person writes it (`H100`, `H100 80GB`, `A100-40GB`,
/// `H100 NVL`, `H200`, `B200`, `GB200`), as NVML names it
/// (`NVIDIA H100 80GB HBM3`, `NVIDIA A100-SXM4-40GB`), or as a PCI id
/// (`0x233010DE`), to a catalogue entry. `A100` alone is ambiguous (40 or 80 GB)
/// and resolves to nothing; so do GH200 and uncatalogued models.
pub fn model(gpu_model: &str) -> Option<&'static MigModel> {
    let raw = gpu_model.trim();
    if let Some(hex) = raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        let id = format!("0x{}", hex.to_ascii_uppercase());
        return MODELS
            .iter()
            .find(|m| m.device_ids.iter().any(|d| d.eq_ignore_ascii_case(&id)));
    }
    let s = squash(raw);
    let key = if s.contains("GH200") {
        return None;
    } else if contains_model_token(raw, "GB200") || s.starts_with("GB200") {
        "GB200-186GB"
    } else if contains_model_token(raw, "B200") || s.starts_with("B200") {
        "B200-180GB"
    } else if contains_model_token(raw, "H200") || s.starts_with("H200") {
        "H200-141GB"
    } else if s.contains("H100") || s.contains("H800") {
        if s.contains("NVL") || s.contains("94GB") {
            "H100-NVL-94GB"
        } else if s.contains("96GB") {
            "H100-96GB"
        } else {
            "H100-80GB"
        }
    } else if s.contains("A100") || s.contains("A800") {
        if s.contains("80GB") {
            "A100-80GB"
        } else if s.contains("40GB") {
            "A100-40GB"
        } else {
            return None;
        }
    } else {
        return None;
    };
    MODELS.iter().find(|m| m.key == key)
}

/// The MIG profiles of a GPU model (see [`model`] for the accepted spellings).
pub fn mig_profiles(gpu_model: &str) -> Option<&'static [MigProfile]> {
    model(gpu_model).map(|m| m.profiles)
}

/// A desired MIG layout, as a pool spec writes it.
///
/// Untagged in YAML/JSON: a string is a named config (`all-1g.10gb`), a list of
/// strings is the same profile list on every GPU, a list of lists is one list per
/// GPU index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MigLayout {
    /// A mig-parted config name from the default config (`all-disabled`,
    /// `all-enabled`, `all-<profile>`, `all-<profile>.me`, `all-balanced`).
    Named(String),
    /// These profiles on every GPU.
    Uniform(Vec<String>),
    /// One profile list per GPU index.
    PerGpu(Vec<Vec<String>>),
}

/// What a layout means on one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuMig {
    /// MIG mode off.
    Disabled,
    /// MIG mode on with exactly these profiles (sorted). Empty = enabled, no instances.
    Enabled(Vec<String>),
}

impl MigLayout {
    /// A short label for messages (`all-1g.10gb`, `[1g.10gb, 3g.40gb]`).
    pub fn label(&self) -> String {
        match self {
            MigLayout::Named(n) => n.clone(),
            MigLayout::Uniform(v) => format!("[{}]", v.join(", ")),
            MigLayout::PerGpu(v) => {
                let parts: Vec<String> = v.iter().map(|g| format!("[{}]", g.join(", "))).collect();
                format!("per-GPU {}", parts.join(" "))
            }
        }
    }

    /// The layout for GPU `index` of a `gpu_model`, expanded from a named config
    /// the way the gpu-operator default config defines it (`all-1g.10gb` =
    /// every GPU filled with the model's maximum count of `1g.10gb`).
    pub fn for_gpu(&self, gpu_model: &str, index: u32) -> Result<GpuMig, String> {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        match self {
            MigLayout::Uniform(v) => Ok(GpuMig::Enabled(sorted(v))),
            MigLayout::PerGpu(v) => match v.get(index as usize) {
                Some(g) if g.is_empty() => Ok(GpuMig::Disabled),
                Some(g) => Ok(GpuMig::Enabled(sorted(g))),
                None => Err(format!("the per-GPU layout has no entry for GPU {index}")),
            },
            MigLayout::Named(name) => expand_named(name, gpu_model).map(|g| match g {
                GpuMig::Enabled(v) => GpuMig::Enabled(sorted(&v)),
                d => d,
            }),
        }
    }
}

fn expand_named(name: &str, gpu_model: &str) -> Result<GpuMig, String> {
    match name {
        "all-disabled" => return Ok(GpuMig::Disabled),
        "all-enabled" => return Ok(GpuMig::Enabled(Vec::new())),
        _ => {}
    }
    let m = model(gpu_model)
        .ok_or_else(|| format!("no MIG profile catalogue for GPU model `{gpu_model}`"))?;
    if name == "all-balanced" {
        if m.balanced.is_empty() {
            return Err(format!("`all-balanced` is not defined for {}", m.key));
        }
        return Ok(GpuMig::Enabled(
            m.balanced.iter().map(|s| s.to_string()).collect(),
        ));
    }
    let Some(rest) = name.strip_prefix("all-") else {
        return Err(format!(
            "unknown MIG config `{name}`: expected all-disabled, all-enabled, all-balanced or all-<profile>"
        ));
    };
    // `all-1g.10gb.me` names the `1g.10gb+me` profile, one instance.
    let profile = match rest.strip_suffix(".me") {
        Some(base) => format!("{base}+me"),
        None => rest.to_string(),
    };
    let prof = m
        .profiles
        .iter()
        .find(|p| p.name == profile)
        .ok_or_else(|| {
            format!(
                "MIG config `{name}`: profile {profile} does not exist on {}",
                m.key
            )
        })?;
    Ok(GpuMig::Enabled(vec![
        prof.name.to_string();
        prof.max_instances as usize
    ]))
}

/// Checks that one GPU's profile list fits a GPU model: every profile exists,
/// no profile exceeds its maximum count, at most one `+me` profile, compute
/// slices ≤ 7 and memory slices ≤ 8. E.g. on H100 80GB, 7 × `1g.10gb` fits and
/// 8 do not.
pub fn fits(layout: &[String], gpu_model: &str) -> Result<(), String> {
    let m = model(gpu_model)
        .ok_or_else(|| format!("no MIG profile catalogue for GPU model `{gpu_model}`"))?;
    let mut compute = 0;
    let mut memory = 0;
    let mut me = 0;
    let mut counts: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
    for name in layout {
        let prof = m.profiles.iter().find(|p| p.name == name).ok_or_else(|| {
            let known: Vec<&str> = m.profiles.iter().map(|p| p.name).collect();
            format!(
                "MIG profile {name} does not exist on {} (profiles: {})",
                m.key,
                known.join(", ")
            )
        })?;
        compute += prof.compute_slices;
        memory += prof.memory_slices;
        if prof.name.contains("+me") {
            me += 1;
        }
        *counts.entry(prof.name).or_default() += 1;
    }
    for (name, n) in &counts {
        if let Some(prof) = m.profiles.iter().find(|p| p.name == *name)
            && *n > prof.max_instances
        {
            return Err(format!(
                "{n} × {name} does not fit {}: at most {} per GPU",
                m.key, prof.max_instances
            ));
        }
    }
    if me > 1 {
        return Err(format!(
            "{me} media-engine (+me) profiles on one {} GPU: at most 1",
            m.key
        ));
    }
    if compute > COMPUTE_SLICES {
        return Err(format!(
            "layout uses {compute} compute slices on {}: at most {COMPUTE_SLICES}",
            m.key
        ));
    }
    if memory > MEMORY_SLICES {
        return Err(format!(
            "layout uses {memory} memory slices on {}: at most {MEMORY_SLICES}",
            m.key
        ));
    }
    Ok(())
}

/// Checks a whole [`MigLayout`] against a model and GPU count: every GPU's
/// expanded list must [`fits`].
pub fn layout_fits(layout: &MigLayout, gpu_model: &str, gpu_count: u32) -> Result<(), String> {
    for i in 0..gpu_count.max(1) {
        match layout.for_gpu(gpu_model, i)? {
            GpuMig::Disabled => {}
            GpuMig::Enabled(v) => fits(&v, gpu_model).map_err(|e| format!("GPU {i}: {e}"))?,
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn v(n: usize, p: &str) -> Vec<String> {
        vec![p.to_string(); n]
    }

    #[test]
    fn seven_1g10gb_fit_an_h100_and_eight_do_not() {
        assert!(fits(&v(7, "1g.10gb"), "H100").is_ok());
        let err = fits(&v(8, "1g.10gb"), "H100 80GB").unwrap_err();
        assert!(err.contains("at most 7"), "{err}");
    }

    #[test]
    fn balanced_layouts_fit_and_overfull_ones_do_not() {
        let bal: Vec<String> = ["1g.10gb", "1g.10gb", "2g.20gb", "3g.40gb"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(fits(&bal, "NVIDIA H100 80GB HBM3").is_ok());
        let two_3g_plus_1g: Vec<String> = ["3g.40gb", "3g.40gb", "1g.10gb"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(
            fits(&two_3g_plus_1g, "H100")
                .unwrap_err()
                .contains("memory slices")
        );
        assert!(fits(&v(2, "1g.10gb+me"), "H100").is_err());
    }

    #[test]
    fn profile_of_another_model_is_refused_with_the_known_list() {
        let err = fits(&v(1, "1g.18gb"), "H100").unwrap_err();
        assert!(err.contains("1g.10gb"), "{err}");
        assert!(fits(&v(7, "1g.18gb"), "H200").is_ok());
    }

    #[test]
    fn models_resolve_from_names_nvml_names_and_pci_ids() {
        assert_eq!(
            model("NVIDIA H100 80GB HBM3").map(|m| m.key),
            Some("H100-80GB")
        );
        assert_eq!(
            model("NVIDIA H100 NVL").map(|m| m.key),
            Some("H100-NVL-94GB")
        );
        assert_eq!(
            model("NVIDIA A100-SXM4-40GB").map(|m| m.key),
            Some("A100-40GB")
        );
        assert_eq!(model("NVIDIA H200").map(|m| m.key), Some("H200-141GB"));
        assert_eq!(model("NVIDIA B200").map(|m| m.key), Some("B200-180GB"));
        assert_eq!(model("NVIDIA GB200").map(|m| m.key), Some("GB200-186GB"));
        assert_eq!(model("0x233010de").map(|m| m.key), Some("H100-80GB"));
        assert!(model("A100").is_none(), "A100 alone is ambiguous");
        assert!(model("NVIDIA GH200 480GB").is_none());
        assert_eq!(mig_profiles("GB200").map(|p| p.len()), Some(7));
    }

    #[test]
    fn pool_models_match_nvml_names_by_whole_words() {
        assert!(model_matches("NVIDIA H100 80GB HBM3", "H100"));
        assert!(model_matches("NVIDIA H100 80GB HBM3", "h100 80gb"));
        assert!(model_matches("NVIDIA A100-SXM4-40GB", "A100-40GB"));
        assert!(!model_matches("NVIDIA A100-SXM4-80GB", "A100-40GB"));
        assert!(!model_matches("NVIDIA GB200", "B200"));
        assert!(!model_matches("NVIDIA H100 80GB HBM3", ""));
    }

    #[test]
    fn named_configs_expand_per_model() {
        let l = MigLayout::Named("all-1g.10gb".into());
        assert_eq!(
            l.for_gpu("H100", 0).unwrap(),
            GpuMig::Enabled(v(7, "1g.10gb"))
        );
        assert_eq!(
            l.for_gpu("A100-40GB", 0).unwrap(),
            GpuMig::Enabled(v(4, "1g.10gb"))
        );
        assert_eq!(
            MigLayout::Named("all-disabled".into())
                .for_gpu("H100", 3)
                .unwrap(),
            GpuMig::Disabled
        );
        assert_eq!(
            MigLayout::Named("all-1g.10gb.me".into())
                .for_gpu("H100", 0)
                .unwrap(),
            GpuMig::Enabled(v(1, "1g.10gb+me"))
        );
        assert!(
            MigLayout::Named("all-1g.10gb".into())
                .for_gpu("H200", 0)
                .is_err()
        );
        assert!(layout_fits(&MigLayout::Named("all-balanced".into()), "B200", 8).is_ok());
    }

    #[test]
    fn layouts_deserialise_untagged() {
        let l: MigLayout = serde_json::from_str(r#""all-1g.10gb""#).unwrap();
        assert_eq!(l, MigLayout::Named("all-1g.10gb".into()));
        let l: MigLayout = serde_json::from_str(r#"["3g.40gb","4g.40gb"]"#).unwrap();
        assert!(matches!(l, MigLayout::Uniform(_)));
        let l: MigLayout = serde_json::from_str(r#"[["7g.80gb"],[]]"#).unwrap();
        assert_eq!(l.for_gpu("H100", 1).unwrap(), GpuMig::Disabled);
    }
}
