//! The version-compatibility table the validator enforces (`validate/compat.rs`), one row per
//! claim, each with the page (URL and section) or shared chart file it was read from.
//!
//! Only rows read from a source block a plan. The older table "as recalled" (minimum driver
//! branch and GPU Operator release for every GPU model) is kept in [`UNVERIFIED`] so the docs
//! can show what is *not* checked; nothing reads it to refuse a fleet. When a row is verified
//! against a source, move it into the blocking tables with its citation.
//!
//! Versions compare per component: driver `570.133.20` as (570, 133, 20), a bare branch
//! (`570`, `570-signed`) only by branch; GPU and Network Operator `v25.3.4` as (25, 3); NIM
//! Operator `v3.1.2` as (3, 1); Kubernetes `1.34.2` as (1, 34).

use crate::manifest::GpuModel;

/// Where a row was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The page (or the shared fixture file).
    pub url: &'static str,
    /// The section or key on it.
    pub section: &'static str,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} § {}", self.url, self.section)
    }
}

const GPU_OP_PLATFORM: &str =
    "https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/platform-support.html";
const GPU_OP_RELEASE_NOTES: &str =
    "https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/release-notes.html";
const GPU_OP_PRECOMPILED: &str =
    "https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/latest/precompiled-drivers.html";

/// A GPU model needs at least this driver (container) version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverFloor {
    /// Row id, named in diagnostics.
    pub id: &'static str,
    /// Models the row covers.
    pub models: &'static [GpuModel],
    /// Lowest driver version, as NVIDIA writes it.
    pub min: &'static str,
    /// Where it is stated.
    pub source: Source,
}

/// Driver floors read from NVIDIA's pages.
pub const DRIVER_FLOORS: &[DriverFloor] = &[DriverFloor {
    id: "b200-driver",
    models: &[GpuModel::B200],
    min: "570.133.20",
    source: Source {
        url: GPU_OP_PLATFORM,
        section: "Supported NVIDIA Data Center GPUs and Systems, note: \"HGX B200 requires a driver container version of 570.133.20 or later\" (also the 25.3.0 release notes; NVIDIA/cloud-native-docs#184)",
    },
}];

/// A GPU model needs at least this GPU Operator release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperatorFloor {
    /// Row id.
    pub id: &'static str,
    /// Models the row covers.
    pub models: &'static [GpuModel],
    /// Lowest release `(YY, MM)`.
    pub min: (u32, u32),
    /// Where it is stated.
    pub source: Source,
}

/// GPU Operator floors read from NVIDIA's release notes.
pub const GPU_OPERATOR_FLOORS: &[OperatorFloor] = &[OperatorFloor {
    id: "blackwell-gpu-operator",
    models: &[GpuModel::B200, GpuModel::GB200],
    min: (25, 3),
    source: Source {
        url: GPU_OP_RELEASE_NOTES,
        section: "25.3.0, New Features: \"Added support for NVIDIA HGX GB200 NVL and NVIDIA HGX B200\"",
    },
}];

/// A NIM Operator release range needs at least this GPU Operator release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NimOperatorRow {
    /// Row id.
    pub id: &'static str,
    /// Lowest NIM Operator release `(major, minor)` the row covers (and every later one).
    pub from: (u32, u32),
    /// Lowest GPU Operator release `(YY, MM)`.
    pub min_gpu_operator: (u32, u32),
    /// Where it is stated.
    pub source: Source,
}

/// NIM Operator × GPU Operator. The 1.0.x page states the floor; the part of the 3.1.2 page
/// read here names none. The floor is carried forward to later releases: an assumption (a
/// later NIM Operator supporting an *older* GPU Operator than 1.0 did), said so in the docs.
pub const NIM_OPERATOR: &[NimOperatorRow] = &[NimOperatorRow {
    id: "nim-operator-gpu-operator",
    from: (1, 0),
    min_gpu_operator: (24, 3),
    source: Source {
        url: "https://docs.nvidia.com/nim-operator/1.0.1/platform-support.html",
        section: "Operating Systems and Kubernetes Platforms: \"NVIDIA NIM Operator supports NVIDIA GPU Operator v24.3.0 or higher\"",
    },
}];

/// One Network Operator release's platform support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetworkOperatorRow {
    /// Row id.
    pub id: &'static str,
    /// The release `(YY, MM)` the page describes.
    pub release: (u32, u32),
    /// Supported Kubernetes `(major, minor)`, both ends included.
    pub kubernetes: ((u32, u32), (u32, u32)),
    /// Lowest GPU Operator release for GPU workloads and GPUDirect RDMA, when stated.
    pub min_gpu_operator: Option<(u32, u32)>,
    /// Where it is stated.
    pub source: Source,
    /// The node OSes the release was validated on (`ubuntu24.04`, `rhel9.4`; `rhcos` for any
    /// CoreOS release), with where that list is; empty when no list was read.
    pub os: &'static [&'static str],
    /// Where the OS list is stated.
    pub os_source: Option<Source>,
}

/// Network Operator × Kubernetes × GPU Operator, per release page read. Releases without a
/// row here (e.g. 26.4) are not checked.
pub const NETWORK_OPERATOR: &[NetworkOperatorRow] = &[
    NetworkOperatorRow {
        id: "network-operator-24.10",
        release: (24, 10),
        // The page says `<=1.30.4`; per minor that is 1.30.
        kubernetes: ((1, 27), (1, 30)),
        min_gpu_operator: None,
        source: Source {
            url: "https://docs.nvidia.com/networking/display/kubernetes2410/platform-support.html",
            section: "component table: Kubernetes >=1.27 and <=1.30.4",
        },
        os: &[],
        os_source: None,
    },
    NetworkOperatorRow {
        id: "network-operator-25.4",
        release: (25, 4),
        kubernetes: ((1, 29), (1, 32)),
        min_gpu_operator: Some((25, 3)),
        source: Source {
            url: "https://docs.nvidia.com/networking/display/kubernetes2540/platform-support.html",
            section: "component table: Kubernetes >=1.29 and <=1.32; \"NVIDIA GPU Operator v25.3.x or newer - required for workloads that use NVIDIA GPUs and GPUDirect RDMA\"",
        },
        os: &[
            "ubuntu24.04",
            "ubuntu22.04",
            "rhcos",
            "rhel9.4",
            "rhel9.2",
            "rhel8.10",
            "rhel8.8",
            "sles15sp6",
        ],
        os_source: Some(Source {
            url: "https://docs.nvidia.com/networking/display/kubernetes2540/platform-support.html",
            section: "Supported Operating Systems and Kubernetes Platforms (Ubuntu 24.04 / 22.04 LTS, Red Hat CoreOS, RHEL 9.4 / 9.2, RHEL 8.10 / 8.8, SLES 15 SP6; Mellanox/network-operator-docs#215)",
        }),
    },
    NetworkOperatorRow {
        id: "network-operator-26.1",
        release: (26, 1),
        kubernetes: ((1, 31), (1, 35)),
        min_gpu_operator: Some((25, 3)),
        source: Source {
            url: "https://docs.nvidia.com/networking/display/kubernetes2612/platform-support.html",
            section: "component table: Kubernetes >=1.31 and <=1.35; \"NVIDIA GPU Operator v25.3.x or newer - required for workloads that use NVIDIA GPUs and GPUDirect RDMA\"",
        },
        os: &[
            "ubuntu24.04",
            "ubuntu22.04",
            "rhcos",
            "rhel10.0",
            "rhel9.6",
            "rhel9.4",
            "rhel8.10",
            "rhel8.8",
            "sles15sp7",
        ],
        os_source: Some(Source {
            url: "https://docs.nvidia.com/networking/display/kubernetes2612/platform-support.html",
            section: "Supported Operating Systems and Kubernetes Platforms (Ubuntu 24.04 / 22.04 LTS, Red Hat CoreOS, RHEL 10.0 / 9.6 / 9.4, RHEL 8.10 / 8.8, SLES 15 SP7)",
        }),
    },
];

/// GPU models whose hosts are Arm (Grace CPU): no NVIDIA precompiled driver containers.
pub const ARM_MODELS: &[GpuModel] = &[GpuModel::GB200, GpuModel::GB300, GpuModel::GH200];

/// Precompiled GPU driver containers exist for x86_64 only.
pub const PRECOMPILED_X86_ONLY: Source = Source {
    url: GPU_OP_PRECOMPILED,
    section: "Limitations and Restrictions: \"limited to hosts with the x86_64 architecture\"; seen on GB200 arm64 as \"No R580 ARM64 precompiled available\" (NVIDIA/gpu-operator#1726, shared/ops-pains.md P6)",
};

/// Secure Boot loads only signed kernel modules: the driver container's on-node build is
/// unsigned.
pub const SECURE_BOOT: Source = Source {
    url: "https://docs.nvidia.com/datacenter/cloud-native/gpu-operator/install-precompiled-signed-drivers.html",
    section: "\"This is required when nodes are enabled with Secure Boot\" (NVIDIA/gpu-operator#1142)",
};

/// Precompiled GPU driver containers for one OS: the kernel lines, flavours and driver
/// branches NVIDIA publishes them for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrecompiledDriverRow {
    /// Row id.
    pub id: &'static str,
    /// The OS, as the image tags write it (`ubuntu22.04`).
    pub os: &'static str,
    /// Kernel `(major, minor)` lines.
    pub kernels: &'static [(u32, u32)],
    /// Kernel flavours (the `uname -r` suffix: `generic`, `nvidia`, `aws`, ...).
    pub flavors: &'static [&'static str],
    /// Lowest driver branch.
    pub min_branch: u32,
    /// Where it is stated.
    pub source: Source,
}

const PRECOMPILED_TABLE: &str = "Supported Precompiled Drivers: operating system, kernel flavor (Generic, NVIDIA, Azure, AWS, Oracle), kernel version and CUDA driver branch (NVIDIA/cloud-native-docs#167)";

/// Precompiled drivers exist for these OSes only; every other OS builds the driver on the node.
pub const PRECOMPILED_DRIVERS: &[PrecompiledDriverRow] = &[
    PrecompiledDriverRow {
        id: "precompiled-ubuntu22.04",
        os: "ubuntu22.04",
        // The table lists 5.15; NVIDIA also publishes 6.8 (HWE) builds for 22.04, e.g.
        // `driver:580-6.8.0-111-generic-ubuntu22.04` (NVIDIA/gpu-driver-container#767).
        kernels: &[(5, 15), (6, 8)],
        flavors: &["generic", "nvidia", "azure", "aws", "oracle"],
        min_branch: 535,
        source: Source {
            url: GPU_OP_PLATFORM,
            section: PRECOMPILED_TABLE,
        },
    },
    PrecompiledDriverRow {
        id: "precompiled-ubuntu24.04",
        os: "ubuntu24.04",
        kernels: &[(6, 8)],
        flavors: &["generic", "nvidia", "azure", "aws", "oracle"],
        min_branch: 550,
        source: Source {
            url: GPU_OP_PLATFORM,
            section: PRECOMPILED_TABLE,
        },
    },
];

/// Precompiled GPU drivers: Ubuntu only (the rows above).
pub const PRECOMPILED_OS: Source = Source {
    url: GPU_OP_PRECOMPILED,
    section: "Limitations and Restrictions: precompiled driver containers are limited to Ubuntu hosts (the supported OS and kernel rows are in the platform-support table)",
};

const NETWORK_OPERATOR_DOCS: &str =
    "https://docs.nvidia.com/networking/display/kubernetes2612/platform-support.html";

/// Precompiled DOCA-OFED driver containers: the OSes and kernel flavours NVIDIA builds.
pub const DOCA_PRECOMPILED_OS: &[&str] = &["ubuntu24.04", "ubuntu22.04"];
/// Kernel flavours with precompiled DOCA-OFED containers.
pub const DOCA_PRECOMPILED_FLAVORS: &[&str] = &["generic", "nvidia", "aws", "azure", "oracle"];
/// Where the two lists above are stated.
pub const DOCA_PRECOMPILED: Source = Source {
    url: NETWORK_OPERATOR_DOCS,
    section: "Supported Precompiled Container Images for DOCA-OFED Drivers: Supported Operating Systems (Ubuntu 24.04, 22.04) and Limitations (\"generic, nvidia, aws, azure, and oracle kernel flavors\")",
};

/// Precompiled DOCA-OFED containers are unsigned, and the on-node build is too: neither loads
/// under Secure Boot.
pub const DOCA_UNSIGNED: Source = Source {
    url: NETWORK_OPERATOR_DOCS,
    section: "Supported Precompiled Container Images for DOCA-OFED Drivers, Limitations: \"Precompiled driver containers are currently unsigned\"",
};

/// Only one Node Feature Discovery per cluster.
pub const ONE_NFD: Source = Source {
    url: "https://docs.nvidia.com/networking/display/kubernetes2612/platform-support.html",
    section: "Node Feature Discovery: \"ensure only one instance of Node Feature Discovery (NFD) is installed\"",
};

/// The shared chart defaults the examples pin (citable: byte-for-byte chart copies).
pub const CHART_DEFAULTS: &[(&str, &str, &str)] = &[
    (
        "gpu-operator v26.7.0 default driver",
        "595.91.07",
        "shared/fixtures/charts/gpu-operator-v26.7.0/values.yaml: driver.version",
    ),
    (
        "gpu-operator v26.3.3 default driver",
        "580.126.20",
        "shared/fixtures/charts/gpu-operator-v26.3.3/values.yaml: driver.version",
    ),
];

/// A row of the old table, as recalled and not verified: shown in the docs, never enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unverified {
    /// Model.
    pub model: GpuModel,
    /// Recalled lowest driver branch.
    pub min_driver_branch: u32,
    /// Recalled lowest GPU Operator release.
    pub min_gpu_operator: (u32, u32),
}

/// The recalled rows no source read here confirms (B200/GB200's are replaced by cited ones).
pub const UNVERIFIED: &[Unverified] = &[
    Unverified {
        model: GpuModel::A100_40GB,
        min_driver_branch: 450,
        min_gpu_operator: (1, 0),
    },
    Unverified {
        model: GpuModel::A100_80GB,
        min_driver_branch: 450,
        min_gpu_operator: (1, 0),
    },
    Unverified {
        model: GpuModel::A30,
        min_driver_branch: 460,
        min_gpu_operator: (1, 0),
    },
    Unverified {
        model: GpuModel::A40,
        min_driver_branch: 460,
        min_gpu_operator: (1, 0),
    },
    Unverified {
        model: GpuModel::L40S,
        min_driver_branch: 525,
        min_gpu_operator: (23, 3),
    },
    Unverified {
        model: GpuModel::L40,
        min_driver_branch: 525,
        min_gpu_operator: (23, 3),
    },
    Unverified {
        model: GpuModel::H100,
        min_driver_branch: 525,
        min_gpu_operator: (22, 9),
    },
    Unverified {
        model: GpuModel::H100Nvl,
        min_driver_branch: 535,
        min_gpu_operator: (23, 6),
    },
    Unverified {
        model: GpuModel::GH200,
        min_driver_branch: 535,
        min_gpu_operator: (23, 9),
    },
    Unverified {
        model: GpuModel::H200,
        min_driver_branch: 550,
        min_gpu_operator: (24, 3),
    },
    Unverified {
        model: GpuModel::GB200,
        min_driver_branch: 570,
        min_gpu_operator: (25, 3),
    },
    Unverified {
        model: GpuModel::RtxPro6000,
        min_driver_branch: 575,
        min_gpu_operator: (25, 3),
    },
    Unverified {
        model: GpuModel::B300,
        min_driver_branch: 580,
        min_gpu_operator: (25, 10),
    },
    Unverified {
        model: GpuModel::GB300,
        min_driver_branch: 580,
        min_gpu_operator: (25, 10),
    },
];

/// An OS as NVIDIA's image tags write it: `ubuntu24.04` → (`ubuntu`, `24.04`),
/// `sles15sp7` → (`sles`, `15sp7`), `rhcos4.17` → (`rhcos`, `4.17`).
pub fn os_parts(os: &str) -> Option<(&str, &str)> {
    let at = os.find(|c: char| c.is_ascii_digit())?;
    let (id, version) = os.split_at(at);
    let valid = !id.is_empty()
        && id.bytes().all(|b| b.is_ascii_lowercase())
        && version
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.');
    valid.then_some((id, version))
}

/// Whether `os` is in a list where `rhcos` stands for every CoreOS release.
pub fn os_listed(os: &str, list: &[&str]) -> bool {
    list.iter()
        .any(|l| *l == os || (*l == "rhcos" && os_parts(os).is_some_and(|(id, _)| id == "rhcos")))
}

/// A kernel release as `uname -r` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// `(major, minor)`.
    pub line: (u32, u32),
    /// Ubuntu's flavour suffix (`generic`, `nvidia`, `azure-fde`, `generic-64k`); `None` where
    /// the release has none (RHEL's `5.14.0-427.13.1.el9_4.x86_64`).
    pub flavor: Option<String>,
}

/// Parse `6.8.0-49-generic`, `5.15.0-1063-nvidia`, `5.14.0-427.13.1.el9_4.x86_64`.
pub fn kernel_parts(release: &str) -> Option<Kernel> {
    let mut it = release.splitn(3, '-');
    let version = it.next()?;
    let mut v = version.split('.');
    let major = v.next()?.parse().ok()?;
    let minor = v.next()?.parse().ok()?;
    if v.any(|p| p.parse::<u32>().is_err()) {
        return None;
    }
    let abi = it.next();
    let rest = it.next();
    // Ubuntu: `<version>-<abi number>-<flavour>`; anything else carries no flavour.
    let flavor = match (abi, rest) {
        (Some(abi), Some(f)) if abi.bytes().all(|b| b.is_ascii_digit()) && !f.is_empty() => {
            Some(f.to_string())
        }
        _ => None,
    };
    Some(Kernel {
        line: (major, minor),
        flavor,
    })
}

/// The precompiled-driver row of an OS.
pub fn precompiled_driver_row(os: &str) -> Option<&'static PrecompiledDriverRow> {
    PRECOMPILED_DRIVERS.iter().find(|r| r.os == os)
}

/// Numeric components of a driver version (`570.133.20` → [570, 133, 20]; `570-signed` → [570]).
pub fn driver_parts(version: &str) -> Option<Vec<u32>> {
    let head = version.split(['-', '+']).next()?;
    let parts: Option<Vec<u32>> = head.split('.').map(|p| p.parse().ok()).collect();
    parts.filter(|p| !p.is_empty())
}

/// Whether `given` is below `min`. A bare branch (`570`) compares by branch only: it cannot
/// be told below `570.133.20`, so it is not refused.
pub fn driver_below(given: &str, min: &str) -> Option<bool> {
    let g = driver_parts(given)?;
    let m = driver_parts(min)?;
    let n = g.len().min(m.len());
    Some(g[..n] < m[..n])
}

/// `(major, minor)` of a `vX.Y.Z` / `X.Y` version (operators, Kubernetes).
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let v = version.strip_prefix('v').unwrap_or(version);
    let mut it = v.split(['.', '-']);
    let a = it.next()?.parse().ok()?;
    let b = it.next()?.parse().ok()?;
    Some((a, b))
}

/// The driver floor covering `model`, if a source states one.
pub fn driver_floor(model: GpuModel) -> Option<&'static DriverFloor> {
    DRIVER_FLOORS.iter().find(|r| r.models.contains(&model))
}

/// The GPU Operator floor covering `model`, if a source states one.
pub fn gpu_operator_floor(model: GpuModel) -> Option<&'static OperatorFloor> {
    GPU_OPERATOR_FLOORS
        .iter()
        .find(|r| r.models.contains(&model))
}

/// The NIM Operator row covering a release.
pub fn nim_operator_row(release: (u32, u32)) -> Option<&'static NimOperatorRow> {
    NIM_OPERATOR.iter().rev().find(|r| release >= r.from)
}

/// The Network Operator row of a release.
pub fn network_operator_row(release: (u32, u32)) -> Option<&'static NetworkOperatorRow> {
    NETWORK_OPERATOR.iter().find(|r| r.release == release)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn driver_versions_compare_per_component_and_branches_only_by_branch() {
        assert_eq!(driver_below("570.124.06", "570.133.20"), Some(true));
        assert_eq!(driver_below("570.133.20", "570.133.20"), Some(false));
        assert_eq!(driver_below("595.91.07", "570.133.20"), Some(false));
        assert_eq!(driver_below("550.54.15", "570.133.20"), Some(true));
        assert_eq!(driver_below("570", "570.133.20"), Some(false));
        assert_eq!(driver_below("560-signed", "570.133.20"), Some(true));
        assert_eq!(driver_below("latest", "570.133.20"), None);
    }

    #[test]
    fn every_blocking_row_cites_a_page_and_a_section() {
        let sources = DRIVER_FLOORS
            .iter()
            .map(|r| r.source)
            .chain(GPU_OPERATOR_FLOORS.iter().map(|r| r.source))
            .chain(NIM_OPERATOR.iter().map(|r| r.source))
            .chain(NETWORK_OPERATOR.iter().map(|r| r.source))
            .chain(PRECOMPILED_DRIVERS.iter().map(|r| r.source))
            .chain(NETWORK_OPERATOR.iter().filter_map(|r| r.os_source))
            .chain([
                PRECOMPILED_X86_ONLY,
                SECURE_BOOT,
                ONE_NFD,
                PRECOMPILED_OS,
                DOCA_PRECOMPILED,
                DOCA_UNSIGNED,
            ]);
        for s in sources {
            assert!(s.url.starts_with("https://"), "{s}");
            assert!(s.section.len() > 10, "{s}");
        }
    }

    #[test]
    fn a_model_with_a_cited_row_is_not_also_unverified_for_that_claim() {
        // B200's recalled row was replaced by the cited ones.
        assert!(UNVERIFIED.iter().all(|u| u.model != GpuModel::B200));
        assert!(driver_floor(GpuModel::B200).is_some());
        assert!(driver_floor(GpuModel::H100).is_none());
    }

    #[test]
    fn the_cited_chart_defaults_are_what_the_shared_charts_say() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
        if !root.exists() {
            eprintln!("skipped: {} not found", root.display());
            return;
        }
        for (what, value, source) in CHART_DEFAULTS {
            let (file, key) = source.split_once(": ").unwrap();
            // The loader wants `apiVersion`/`kind` on every document; a chart's values.yaml is
            // one top-level mapping, so two keys in front make it loadable, otherwise unchanged.
            let mut bytes = b"apiVersion: v1\nkind: Values\n".to_vec();
            bytes.extend(std::fs::read(root.join(file.trim_start_matches("shared/"))).unwrap());
            let files = [crate::load::SourceFile {
                path: "values.yaml".into(),
                bytes,
            }];
            let (docs, diags) = crate::load::load(&files);
            assert_eq!(docs.len(), 1, "{what}: {diags:?}");
            let ptr = format!("/{}", key.replace('.', "/"));
            let got = docs[0].value.pointer(&ptr).and_then(|v| v.as_str());
            assert_eq!(got, Some(*value), "{what}");
        }
    }

    #[test]
    fn kernels_parse_into_line_and_ubuntu_flavour() {
        let k = kernel_parts("6.8.0-49-generic").unwrap();
        assert_eq!((k.line, k.flavor.as_deref()), ((6, 8), Some("generic")));
        let k = kernel_parts("6.8.0-1053-azure-fde").unwrap();
        assert_eq!(k.flavor.as_deref(), Some("azure-fde"));
        let k = kernel_parts("5.14.0-427.13.1.el9_4.x86_64").unwrap();
        assert_eq!((k.line, k.flavor), ((5, 14), None));
        assert_eq!(kernel_parts("6.8").unwrap().line, (6, 8));
        assert!(kernel_parts("six.eight").is_none());
        assert!(kernel_parts("6").is_none());
    }

    #[test]
    fn oses_parse_as_tags_write_them_and_rhcos_matches_any_release() {
        assert_eq!(os_parts("ubuntu24.04"), Some(("ubuntu", "24.04")));
        assert_eq!(os_parts("sles15sp7"), Some(("sles", "15sp7")));
        assert_eq!(os_parts("Ubuntu 24.04"), None);
        assert_eq!(os_parts("ubuntu"), None);
        assert!(os_listed("rhcos4.17", &["rhcos"]));
        assert!(!os_listed("rhel9.5", &["rhel9.4", "rhel9.6"]));
    }

    #[test]
    fn network_operator_rows_match_their_release_only() {
        assert_eq!(network_operator_row((26, 1)).unwrap().kubernetes.1, (1, 35));
        assert!(network_operator_row((26, 4)).is_none());
        assert_eq!(nim_operator_row((3, 1)).unwrap().min_gpu_operator, (24, 3));
        assert!(nim_operator_row((0, 9)).is_none());
    }
}
