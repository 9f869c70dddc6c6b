//! What a pool expects of each of its nodes, and how an inventory differs.

use serde::{Deserialize, Serialize};

use crate::inventory::Inventory;
use crate::mig::{self, GpuMig, MigLayout};

/// What every node of a pool must have. Also the spec of `gpu:node/<node>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolExpectation {
    /// Pool name, e.g. `h100-train`.
    pub pool: String,
    /// GPU model every GPU must be: each of its words must be a word of the NVML
    /// name (`H100` matches `NVIDIA H100 80GB HBM3`, `A100-40GB` matches
    /// `NVIDIA A100-SXM4-40GB`; `B200` does not match `GB200`). See [`mig::model_matches`].
    pub gpu_model: String,
    /// GPUs per node.
    pub gpu_count: u32,
    /// Desired MIG layout; `None` = not managed (either mode is fine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig: Option<MigLayout>,
    /// Exact driver version, e.g. `595.91.07`; `None` = not managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_version: Option<String>,
    /// Active NVLinks per GPU (e.g. 18 on HGX H100); `None` = not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvlinks_per_gpu: Option<u32>,
}

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftKind {
    /// A GPU is not the expected model.
    Model,
    /// Fewer or more GPUs than expected.
    Count,
    /// Another driver version.
    Driver,
    /// MIG mode or MIG devices differ.
    Mig,
    /// Fewer active NVLinks than expected.
    NvLink,
}

/// One difference between a pool's expectation and a node's inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuDrift {
    /// The node.
    pub node: String,
    /// The pool.
    pub pool: String,
    /// The GPU index, when the drift is about one GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
    /// What kind.
    pub kind: DriftKind,
    /// JSON pointer into the spec, e.g. `/gpuCount` or `/mig/gpus/2`.
    pub path: String,
    /// What the pool expects.
    pub expected: serde_json::Value,
    /// What the node has (`None` when unknown).
    pub observed: Option<serde_json::Value>,
    /// A line for people, e.g. "pool h100-train expects all-1g.10gb on node r01-n03, GPU 2 has MIG disabled".
    pub message: String,
}

impl GpuDrift {
    /// True when fixing it changes MIG (drain + mig-manager, possibly a reboot).
    pub fn is_disruptive(&self) -> bool {
        matches!(self.kind, DriftKind::Mig)
    }
}

fn gpu_mig(inv_gpu: &crate::inventory::Gpu) -> Option<GpuMig> {
    let m = inv_gpu.mig.as_ref()?;
    if !m.current_enabled {
        return Some(GpuMig::Disabled);
    }
    let mut v: Vec<String> = m
        .devices
        .iter()
        .map(|d| d.profile.clone().unwrap_or_else(|| "unknown".to_string()))
        .collect();
    v.sort();
    Some(GpuMig::Enabled(v))
}

fn mig_json(m: &GpuMig) -> serde_json::Value {
    match m {
        GpuMig::Disabled => serde_json::json!({"enabled": false}),
        GpuMig::Enabled(v) => serde_json::json!({"enabled": true, "devices": v}),
    }
}

fn describe(m: &GpuMig) -> String {
    match m {
        GpuMig::Disabled => "MIG disabled".into(),
        GpuMig::Enabled(v) if v.is_empty() => "MIG enabled with no MIG devices".into(),
        GpuMig::Enabled(v) => format!("MIG devices [{}]", v.join(", ")),
    }
}

/// Compares one node's inventory with its pool's expectation. Empty = matches.
/// Sorted: count, model, driver, then per GPU.
pub fn compare(exp: &PoolExpectation, inv: &Inventory) -> Vec<GpuDrift> {
    let mut out = Vec::new();
    let node = &inv.node;
    let pool = &exp.pool;
    let drift = |gpu: Option<u32>, kind, path: String, expected, observed, message| GpuDrift {
        node: node.clone(),
        pool: pool.clone(),
        gpu,
        kind,
        path,
        expected,
        observed,
        message,
    };

    let n = inv.gpus.len() as u32;
    if n != exp.gpu_count {
        out.push(drift(
            None,
            DriftKind::Count,
            "/gpuCount".into(),
            serde_json::json!(exp.gpu_count),
            Some(serde_json::json!(n)),
            format!(
                "pool {pool} expects {} GPUs on node {node}, NVML reports {n}",
                exp.gpu_count
            ),
        ));
    }
    for g in &inv.gpus {
        let ok = g
            .name
            .as_deref()
            .is_some_and(|name| mig::model_matches(name, &exp.gpu_model));
        if !ok {
            out.push(drift(
                Some(g.index),
                DriftKind::Model,
                format!("/gpuModel/gpus/{}", g.index),
                serde_json::json!(exp.gpu_model),
                g.name.as_ref().map(|n| serde_json::json!(n)),
                format!(
                    "pool {pool} expects {} GPUs on node {node}, GPU {} is {}",
                    exp.gpu_model,
                    g.index,
                    g.name.as_deref().unwrap_or("of unknown model")
                ),
            ));
        }
    }
    if let Some(want) = &exp.driver_version
        && inv.driver_version.as_deref() != Some(want.as_str())
    {
        out.push(drift(
            None,
            DriftKind::Driver,
            "/driverVersion".into(),
            serde_json::json!(want),
            inv.driver_version.as_ref().map(|d| serde_json::json!(d)),
            format!(
                "pool {pool} expects driver {want} on node {node}, it runs {}",
                inv.driver_version.as_deref().unwrap_or("an unknown driver")
            ),
        ));
    }
    if let Some(layout) = &exp.mig {
        for g in &inv.gpus {
            let model = g
                .pci_device_id
                .as_deref()
                .filter(|id| mig::model(id).is_some())
                .or(g.name.as_deref());
            let model = model.unwrap_or(&exp.gpu_model);
            let path = format!("/mig/gpus/{}", g.index);
            let want = match layout.for_gpu(model, g.index) {
                Ok(w) => w,
                Err(e) => {
                    out.push(drift(
                        Some(g.index),
                        DriftKind::Mig,
                        path,
                        serde_json::json!(layout.label()),
                        None,
                        format!(
                            "pool {pool} expects {} on node {node}, GPU {}: {e}",
                            layout.label(),
                            g.index
                        ),
                    ));
                    continue;
                }
            };
            let have = gpu_mig(g);
            if have.as_ref() == Some(&want) {
                continue;
            }
            let pending = g
                .mig
                .as_ref()
                .filter(|m| m.pending_enabled != m.current_enabled)
                .map(|m| {
                    if m.pending_enabled {
                        " (enable pending a reset)"
                    } else {
                        " (disable pending a reset)"
                    }
                })
                .unwrap_or("");
            let has = match &have {
                None => "no MIG support".to_string(),
                Some(h) => describe(h),
            };
            out.push(drift(
                Some(g.index),
                DriftKind::Mig,
                path,
                mig_json(&want),
                have.as_ref().map(mig_json),
                format!(
                    "pool {pool} expects {} on node {node}, GPU {} has {has}{pending}",
                    layout.label(),
                    g.index
                ),
            ));
        }
    }
    if let Some(want) = exp.nvlinks_per_gpu {
        for g in &inv.gpus {
            let active = g
                .nvlinks
                .as_ref()
                .map(|l| l.iter().filter(|l| l.active).count() as u32);
            if active != Some(want) {
                out.push(drift(
                    Some(g.index),
                    DriftKind::NvLink,
                    format!("/nvlinksPerGpu/gpus/{}", g.index),
                    serde_json::json!(want),
                    active.map(|a| serde_json::json!(a)),
                    format!(
                        "pool {pool} expects {want} active NVLinks per GPU on node {node}, GPU {} has {}",
                        g.index,
                        active.map_or("no NVLink information".to_string(), |a| a.to_string())
                    ),
                ));
            }
        }
    }
    out
}
