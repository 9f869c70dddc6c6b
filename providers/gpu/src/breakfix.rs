//! Break/fix: from health verdicts to remediations, as plain data.
//!
//! These are proposals, not actions, over explicit `PoolMembers`/`Spare` lists.
//! The CLI's planning uses `fleetform_engine::breakfix` instead, which reads the
//! fleet itself and adds per-fault-domain budgets, observed cordons, held and
//! released cordons and the nvl72 rule (docs/providers/gpu.md, "Break/fix").
//! Nothing here touches a node.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::health::{HealthState, node_health};
use crate::inventory::Inventory;
use crate::pool::PoolExpectation;

/// Where a host sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostPlacement {
    /// Node name.
    pub node: String,
    /// Rack (or other fault domain) label.
    pub fault_domain: String,
    /// Rack-scale NVLink domain (NVL72 and similar), when the host is in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvl_domain: Option<String>,
}

/// A pool's members and disruption budget, for break/fix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolMembers {
    /// What each member must have (its `pool` names the pool).
    pub expectation: PoolExpectation,
    /// The hosts serving it.
    pub members: Vec<HostPlacement>,
    /// At most this many members unavailable at once (cordoned or down).
    pub max_unavailable: u32,
    /// Members already unavailable (cordoned, in repair) before this run.
    #[serde(default)]
    pub unavailable: Vec<String>,
    /// Fault domains a spare may come from; empty = the domains of the members.
    #[serde(default)]
    pub allowed_fault_domains: Vec<String>,
}

/// A spare host and the pools it may stand in for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spare {
    /// Where it sits.
    pub host: HostPlacement,
    /// Pools it is qualified for.
    pub pools: Vec<String>,
}

/// One proposed remediation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Remediation {
    /// Stop scheduling onto a failed node.
    #[serde(rename_all = "camelCase")]
    Cordon {
        /// The node.
        node: String,
        /// Its pool.
        pool: String,
        /// The health findings behind it.
        reasons: Vec<String>,
    },
    /// Put a spare into the pool in place of a failed node.
    #[serde(rename_all = "camelCase")]
    SwapIn {
        /// The spare host.
        spare: String,
        /// The pool it joins.
        pool: String,
        /// The failed node it stands in for.
        replacing: String,
        /// Why this spare (e.g. "same NVL domain nvl-a").
        reason: String,
    },
    /// A failed node is left as it is because the pool's budget is used up;
    /// a person decides (many nodes failing at once is often the monitor, not the nodes).
    #[serde(rename_all = "camelCase")]
    BudgetExhausted {
        /// The node.
        node: String,
        /// Its pool.
        pool: String,
        /// Members unavailable, counting those cordoned in this run.
        unavailable: u32,
        /// The pool's budget.
        max_unavailable: u32,
    },
    /// A failed node has no qualified spare in an allowed fault domain.
    #[serde(rename_all = "camelCase")]
    NoSpare {
        /// The failed node.
        node: String,
        /// Its pool.
        pool: String,
    },
}

/// Proposes remediations for failed nodes: each failed member is cordoned
/// while the pool's `max_unavailable` allows (members already unavailable
/// count), otherwise a `BudgetExhausted` finding; each failed member that is
/// out of service gets a spare when one qualifies, preferring the same NVL
/// domain, then the same fault domain, then any allowed fault domain. A spare
/// is used once. Degraded nodes get nothing (they wait for a maintenance
/// window). Output order is deterministic: pools in input order, nodes by name.
pub fn break_fix(
    inventories: &[Inventory],
    pools: &[PoolMembers],
    spares: &[Spare],
) -> Vec<Remediation> {
    let mut out = Vec::new();
    let mut used_spares: BTreeSet<String> = BTreeSet::new();
    // A spare that is itself failed is no spare.
    let failed_nodes: BTreeSet<&str> = inventories
        .iter()
        .filter(|i| node_health(i).state == HealthState::Failed)
        .map(|i| i.node.as_str())
        .collect();

    for pool in pools {
        let name = &pool.expectation.pool;
        let mut unavailable: BTreeSet<String> = pool.unavailable.iter().cloned().collect();
        let allowed: BTreeSet<&str> = if pool.allowed_fault_domains.is_empty() {
            pool.members
                .iter()
                .map(|m| m.fault_domain.as_str())
                .collect()
        } else {
            pool.allowed_fault_domains
                .iter()
                .map(String::as_str)
                .collect()
        };
        let mut members: Vec<&HostPlacement> = pool.members.iter().collect();
        members.sort_by(|a, b| a.node.cmp(&b.node));
        for m in members {
            let Some(inv) = inventories.iter().find(|i| i.node == m.node) else {
                continue;
            };
            let verdict = node_health(inv);
            if verdict.state != HealthState::Failed {
                continue;
            }
            let out_of_service = if unavailable.contains(&m.node) {
                true
            } else if (unavailable.len() as u32) < pool.max_unavailable {
                unavailable.insert(m.node.clone());
                out.push(Remediation::Cordon {
                    node: m.node.clone(),
                    pool: name.clone(),
                    reasons: verdict.reasons,
                });
                true
            } else {
                out.push(Remediation::BudgetExhausted {
                    node: m.node.clone(),
                    pool: name.clone(),
                    unavailable: unavailable.len() as u32,
                    max_unavailable: pool.max_unavailable,
                });
                false
            };
            if !out_of_service {
                continue;
            }
            let candidates: Vec<&Spare> = spares
                .iter()
                .filter(|s| s.pools.iter().any(|p| p == name))
                .filter(|s| allowed.contains(s.host.fault_domain.as_str()))
                .filter(|s| !used_spares.contains(&s.host.node))
                .filter(|s| !failed_nodes.contains(s.host.node.as_str()))
                .collect();
            let rank = |s: &Spare| -> (u8, String) {
                let same_nvl = m.nvl_domain.is_some() && s.host.nvl_domain == m.nvl_domain;
                let same_fd = s.host.fault_domain == m.fault_domain;
                (
                    if same_nvl {
                        0
                    } else if same_fd {
                        1
                    } else {
                        2
                    },
                    s.host.node.clone(),
                )
            };
            match candidates.into_iter().min_by_key(|s| rank(s)) {
                Some(s) => {
                    let reason = match rank(s).0 {
                        0 => format!(
                            "same NVL domain {}",
                            s.host.nvl_domain.as_deref().unwrap_or("")
                        ),
                        1 => format!("same fault domain {}", s.host.fault_domain),
                        _ => format!("allowed fault domain {}", s.host.fault_domain),
                    };
                    used_spares.insert(s.host.node.clone());
                    out.push(Remediation::SwapIn {
                        spare: s.host.node.clone(),
                        pool: name.clone(),
                        replacing: m.node.clone(),
                        reason,
                    });
                }
                None => out.push(Remediation::NoSpare {
                    node: m.node.clone(),
                    pool: name.clone(),
                }),
            }
        }
    }
    out
}
