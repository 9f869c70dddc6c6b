//! The fleet's GPU expectations and observed GPU state, for the engine's
//! drift report and break/fix planning (`fleetform_engine::breakfix`).
//!
//! - [`expectations`]: what each pool member must have, from the manifest (the
//!   host's GPU model and count, the pool's MIG layout, the tenant's GPU Operator
//!   driver version).
//! - [`condition`]: one node's report → [`NodeCondition`]; a missing, unreadable,
//!   misaddressed or stale (older than `max_age`) report is `unknown`, never healthy.
//! - [`observe`]: reports of every pool member and spare from an [`InventorySource`].
//! - [`drift_findings`]: pool-vs-inventory differences as plan findings.

use std::collections::BTreeMap;

use fleetform_engine::breakfix::{Finding, FindingKind, NodeCondition, NodeState};
use fleetform_engine::manifest::{Fleet, GpuSharing, MigConfig};

use crate::health::{HealthState, node_health};
use crate::inventory::Inventory;
use crate::mig::MigLayout;
use crate::pool::{PoolExpectation, compare};
use crate::provider::InventorySource;

/// A report older than this is `unknown` (the reporter DaemonSet collects every
/// 5 minutes by default; three missed collections mean it is not reporting).
pub const DEFAULT_MAX_AGE_SECS: u64 = 15 * 60;

/// A report dated more than this in the future is `unknown` (clock skew beyond NTP's).
pub const MAX_CLOCK_SKEW_SECS: u64 = 5 * 60;

/// Seconds since the Unix epoch now (the `now` the functions below take; tests pass their own).
pub fn now_secs() -> u64 {
    crate::time::now_secs()
}

/// What every member of every pool must have, by host name.
pub fn expectations(fleet: &Fleet) -> BTreeMap<String, PoolExpectation> {
    let mut out = BTreeMap::new();
    for pool in &fleet.pools {
        let driver = fleet
            .operators_for(&pool.spec.tenant)
            .gpu_operator
            .driver
            .version
            .clone();
        for h in fleet.members(pool.name()) {
            let Some(host) = fleet.host(h) else {
                continue;
            };
            let count = host.spec.gpu.count;
            let mig = match &pool.spec.gpu_sharing {
                Some(GpuSharing::Mig(m)) => Some(mig_layout(&m.config, count)),
                _ => None,
            };
            let model = serde_json::to_value(host.spec.gpu.model)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            out.insert(
                h.clone(),
                PoolExpectation {
                    pool: pool.name().to_string(),
                    gpu_model: model,
                    gpu_count: count,
                    mig,
                    driver_version: Some(driver.clone()),
                    nvlinks_per_gpu: None,
                },
            );
        }
    }
    out
}

fn expand(counts: &BTreeMap<String, u32>) -> Vec<String> {
    counts
        .iter()
        .flat_map(|(p, n)| std::iter::repeat_n(p.clone(), *n as usize))
        .collect()
}

/// The manifest's MIG config in the provider's terms. GPUs past a per-GPU list are
/// MIG-disabled (the manifest's rule), i.e. an empty list here.
fn mig_layout(config: &MigConfig, gpus: u32) -> MigLayout {
    use fleetform_engine::manifest::MigLayout as M;
    match config {
        MigConfig::Named(n) => MigLayout::Named(n.clone()),
        MigConfig::Layout(M::All(counts)) => MigLayout::Uniform(expand(counts)),
        MigConfig::Layout(M::PerGpu(list)) => {
            let mut v: Vec<Vec<String>> = list.iter().map(expand).collect();
            v.resize(v.len().max(gpus as usize), Vec::new());
            MigLayout::PerGpu(v)
        }
    }
}

/// One node's condition from what its report source answered (`Err` = unreadable).
/// The Node's cordon fields are left for the caller, who reads the Node.
pub fn condition(
    node: &str,
    report: Result<Option<&Inventory>, String>,
    now: u64,
    max_age_secs: u64,
) -> NodeCondition {
    let unknown = |why: String| NodeCondition::new(node, NodeState::Unknown, vec![why]);
    let inv = match report {
        Err(e) => return unknown(format!("its GPU report is unreadable: {e}")),
        Ok(None) => return unknown("no GPU report".into()),
        Ok(Some(inv)) => inv,
    };
    if inv.node != node {
        return unknown(format!("its GPU report says it is from node {}", inv.node));
    }
    let Some(at) = crate::time::parse_rfc3339(&inv.collected_at) else {
        return unknown(format!(
            "its GPU report has an unreadable collectedAt {:?}",
            inv.collected_at
        ));
    };
    if at > now.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return unknown(format!(
            "its GPU report is dated in the future ({}): check the node's clock",
            inv.collected_at
        ));
    }
    let age = now.saturating_sub(at);
    if age > max_age_secs {
        return unknown(format!(
            "its GPU report is stale: collected {} ago at {}, older than {}",
            minutes(age),
            inv.collected_at,
            minutes(max_age_secs)
        ));
    }
    let v = node_health(inv);
    let state = match v.state {
        HealthState::Healthy => NodeState::Healthy,
        HealthState::Degraded => NodeState::Degraded,
        HealthState::Failed => NodeState::Failed,
    };
    NodeCondition::new(node, state, v.reasons)
}

fn minutes(secs: u64) -> String {
    if secs >= 120 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// Every pool member and spare, sorted.
pub fn gpu_nodes(fleet: &Fleet) -> Vec<String> {
    let mut v: Vec<String> = fleet
        .pools
        .iter()
        .flat_map(|p| {
            fleet
                .members(p.name())
                .iter()
                .chain(p.spec.spares.iter())
                .cloned()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Observed GPU state of the fleet: a condition for every pool member and spare,
/// and the fresh, well-addressed reports (for [`drift_findings`]).
pub async fn observe(
    fleet: &Fleet,
    source: &dyn InventorySource,
    now: u64,
    max_age_secs: u64,
) -> (Vec<NodeCondition>, BTreeMap<String, Inventory>) {
    let mut conditions = Vec::new();
    let mut fresh = BTreeMap::new();
    for node in gpu_nodes(fleet) {
        let report = source.load(&node).await;
        let c = match &report {
            Ok(inv) => condition(&node, Ok(inv.as_ref()), now, max_age_secs),
            Err(e) => condition(&node, Err(fleetform_engine::plan::error_chain(e)), now, 0),
        };
        if let (true, Ok(Some(inv))) = (c.state != NodeState::Unknown, report) {
            fresh.insert(node.clone(), inv);
        }
        conditions.push(c);
    }
    (conditions, fresh)
}

/// Pool-vs-inventory differences of every member with a fresh report.
pub fn drift_findings(fleet: &Fleet, inventories: &BTreeMap<String, Inventory>) -> Vec<Finding> {
    let mut out = Vec::new();
    for (node, exp) in expectations(fleet) {
        let Some(inv) = inventories.get(&node) else {
            continue;
        };
        for d in compare(&exp, inv) {
            out.push(Finding {
                node: node.clone(),
                kind: FindingKind::GpuDrift,
                pool: Some(exp.pool.clone()),
                message: d.message,
                suggestion: None,
                origin: None,
            });
        }
    }
    out.sort();
    out
}
