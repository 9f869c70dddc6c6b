//! Health verdicts per GPU and per node, from an [`Inventory`].
//!
//! Thresholds are the consts below, each with its reason. Sources: NVIDIA's
//! Xid catalogue (docs.nvidia.com/deploy/xid-errors, "Resolution Bucket"
//! columns) and its A100/H100 GPU memory error management guide; the
//! ops-pains.md P10 notes (XID 94 is an application-level error that must not
//! retire a GPU for good; XID 79 is a GPU off the bus; AWS treats XID 64 as
//! "isolate"). /work/shared/domain.md has no XID table of its own, so nothing
//! here cites it for XIDs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::inventory::{Gpu, Inventory};

/// The three verdicts, ordered by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthState {
    /// Fit for work.
    Healthy,
    /// Works, but needs attention at the next maintenance window (reset pending, slowdown).
    Degraded,
    /// Must not take work: cordon and repair or replace.
    Failed,
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Failed => "failed",
        })
    }
}

/// A verdict with the reasons behind it (empty when healthy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The worst state found.
    pub state: HealthState,
    /// One line per finding, e.g. `GPU 3: 2 uncorrectable volatile ECC errors`.
    pub reasons: Vec<String>,
}

impl Verdict {
    fn healthy() -> Self {
        Self {
            state: HealthState::Healthy,
            reasons: Vec::new(),
        }
    }

    fn add(&mut self, state: HealthState, reason: String) {
        self.state = self.state.max(state);
        self.reasons.push(reason);
    }
}

/// Uncorrectable volatile ECC errors at or above this count fail the GPU: an
/// uncorrectable error since the driver loaded means data was lost or an
/// application was killed, and NVIDIA's guidance is to reset/drain before reuse.
pub const ECC_UNCORRECTABLE_VOLATILE_FAILED: u64 = 1;

/// A remap failure (no spare rows left for a bank) fails the GPU: its memory
/// can no longer protect itself (same condition as XID 64).
pub const REMAP_FAILURE_IS_FAILED: bool = true;

/// A pending remap or pending page retirement degrades the GPU: the repair
/// takes effect only after the next GPU reset, so schedule one (XID 63 class).
pub const REMAP_PENDING_IS_DEGRADED: bool = true;

/// Uncorrectable remapped rows at or above this count degrade the GPU even
/// without a pending remap: the memory is wearing. NVIDIA's memory guide asks
/// for an RMA review when a bank's spare rows run out, which shows up as a
/// remap failure (failed, above), so this is only an early signal.
pub const REMAPPED_UNCORRECTABLE_DEGRADED: u64 = 8;

/// At or above the GPU's own slowdown threshold the clocks are cut: degraded
/// (silent slowdown is one of the three failure classes in ops-pains §3).
/// When NVML does not report a slowdown threshold, no temperature verdict is made.
pub const TEMPERATURE_AT_SLOWDOWN_IS_DEGRADED: bool = true;

/// Throttle reasons that mean hardware protection kicked in (not policy such as
/// power caps or idle): degraded.
pub const DEGRADING_THROTTLE_REASONS: &[&str] = &[
    "hw-slowdown",
    "hw-thermal-slowdown",
    "hw-power-brake-slowdown",
];

/// XIDs that fail a GPU: the catalogue's immediate action is a GPU reset or
/// node reboot, so the GPU cannot serve until repaired.
/// 48 double-bit ECC error; 64 row remap / page retirement failure (AWS: isolate,
/// ops-pains P10); 74 NVLink error; 79 GPU fell off the bus (ops-pains P10);
/// 95 uncontained ECC error.
pub const XID_FAILED: &[u64] = &[48, 64, 74, 79, 95];

/// XIDs that degrade a GPU: it keeps serving, but a reset is due or the trend
/// matters. 63 row remap / page retirement recorded (applies at next reset);
/// 92 high single-bit ECC rate; 94 contained ECC error (only the affected
/// application dies; ops-pains P10: must not take the GPU out for good).
pub const XID_DEGRADED: &[u64] = &[63, 92, 94];

/// Classifies one XID: `Some(Failed)`, `Some(Degraded)`, or `None` (application
/// errors such as 13/31/43/45 say nothing about the GPU).
pub fn xid_severity(xid: u64) -> Option<HealthState> {
    if XID_FAILED.contains(&xid) {
        Some(HealthState::Failed)
    } else if XID_DEGRADED.contains(&xid) {
        Some(HealthState::Degraded)
    } else {
        None
    }
}

/// Errors recorded by `collect` that mean the GPU is gone.
const LOST_MARKERS: &[&str] = &["GpuLost", "GPU is lost", "fallen off the bus"];

/// The verdict for one GPU. `nvlink_peer_max` is the most active links any GPU
/// of the same node has (a GPU with fewer, on a node whose GPUs have them, is
/// degraded).
pub fn gpu_health(g: &Gpu, nvlink_peer_max: usize) -> Verdict {
    let mut v = Verdict::healthy();
    let at = format!("GPU {}", g.index);

    if g.errors
        .iter()
        .any(|e| LOST_MARKERS.iter().any(|m| e.contains(m)))
    {
        v.add(
            HealthState::Failed,
            format!("{at}: GPU is lost (fell off the bus)"),
        );
    }
    if let Some(n) = g
        .ecc
        .as_ref()
        .and_then(|e| e.volatile.as_ref())
        .and_then(|vol| vol.uncorrected)
        && n >= ECC_UNCORRECTABLE_VOLATILE_FAILED
    {
        v.add(
            HealthState::Failed,
            format!("{at}: {n} uncorrectable volatile ECC error(s)"),
        );
    }
    if let Some(r) = &g.remapped_rows {
        if REMAP_FAILURE_IS_FAILED && r.failure == Some(true) {
            v.add(
                HealthState::Failed,
                format!("{at}: row remapping failed (no spare rows)"),
            );
        }
        if REMAP_PENDING_IS_DEGRADED && r.pending == Some(true) {
            v.add(
                HealthState::Degraded,
                format!("{at}: row remap pending, needs a GPU reset"),
            );
        }
        if let Some(n) = r.uncorrectable
            && n >= REMAPPED_UNCORRECTABLE_DEGRADED
        {
            v.add(
                HealthState::Degraded,
                format!("{at}: {n} rows remapped for uncorrectable errors"),
            );
        }
    }
    if let Some(p) = &g.retired_pages
        && REMAP_PENDING_IS_DEGRADED
        && p.pending == Some(true)
    {
        v.add(
            HealthState::Degraded,
            format!("{at}: page retirement pending, needs a reboot"),
        );
    }
    if let (Some(t), Some(slow)) = (g.temperature_c, g.temperature_slowdown_c)
        && TEMPERATURE_AT_SLOWDOWN_IS_DEGRADED
        && t >= slow
    {
        v.add(
            HealthState::Degraded,
            format!("{at}: {t} C, at or above its slowdown threshold {slow} C"),
        );
    }
    if let Some(reasons) = &g.throttle_reasons {
        let hw: Vec<&str> = reasons
            .iter()
            .map(String::as_str)
            .filter(|r| DEGRADING_THROTTLE_REASONS.contains(r))
            .collect();
        if !hw.is_empty() {
            v.add(
                HealthState::Degraded,
                format!("{at}: clocks throttled by {}", hw.join(", ")),
            );
        }
    }
    if let Some(links) = &g.nvlinks {
        let active = links.iter().filter(|l| l.active).count();
        if nvlink_peer_max > 0 && active < nvlink_peer_max {
            let down: Vec<String> = links
                .iter()
                .filter(|l| !l.active)
                .map(|l| l.link.to_string())
                .collect();
            v.add(
                HealthState::Degraded,
                format!(
                    "{at}: {active} of {nvlink_peer_max} NVLinks active (down: {})",
                    if down.is_empty() {
                        "not reported".to_string()
                    } else {
                        down.join(",")
                    }
                ),
            );
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for x in &g.xid_events {
        if !seen.insert(x.xid) {
            continue;
        }
        if let Some(sev) = xid_severity(x.xid) {
            v.add(sev, format!("{at}: XID {}", x.xid));
        }
    }
    v
}

/// The most active NVLinks any GPU of the node reports.
pub fn nvlink_peer_max(inv: &Inventory) -> usize {
    inv.gpus
        .iter()
        .filter_map(|g| g.nvlinks.as_ref())
        .map(|l| l.iter().filter(|l| l.active).count())
        .max()
        .unwrap_or(0)
}

/// The node's verdict: the worst of its GPUs. A node whose NVML reports no GPU
/// at all is failed (the pool comparison reports the count).
pub fn node_health(inv: &Inventory) -> Verdict {
    let mut v = Verdict::healthy();
    if inv.gpus.is_empty() {
        v.add(HealthState::Failed, "no GPU reported".to_string());
        return v;
    }
    let peer = nvlink_peer_max(inv);
    for g in &inv.gpus {
        let gv = gpu_health(g, peer);
        if gv.state != HealthState::Healthy {
            v.state = v.state.max(gv.state);
            v.reasons.extend(gv.reasons);
        }
    }
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn xid_classes_follow_the_documented_tables() {
        for x in [48, 64, 74, 79, 95] {
            assert_eq!(xid_severity(x), Some(HealthState::Failed), "xid {x}");
        }
        for x in [63, 92, 94] {
            assert_eq!(xid_severity(x), Some(HealthState::Degraded), "xid {x}");
        }
        assert_eq!(xid_severity(13), None);
    }
}
