//! Break/fix as planned changes: GPU node health (observed state, from each
//! node's GPU inventory report) becomes cordons of adopted `Node`s, proposed
//! spare swaps and findings, all shown in the plan and applied only through
//! the normal plan → apply path.
//!
//! Pure: [`assess`] takes the validated fleet and one [`NodeCondition`] per
//! node (the gpu provider computes them from inventories; a stale or missing
//! report is [`NodeState::Unknown`]) and returns a [`BreakFix`]. The caller then
//! plans `BreakFix::desired(&compiled)` instead of the compiled resources and
//! calls [`BreakFix::annotate`] on the plan. The rules (docs/providers/gpu.md):
//!
//! - **failed** → the Node gets `spec.unschedulable: true` and the annotation
//!   [`CORDON_REASON_ANNOTATION`] (the GPUs and findings), while the pool's
//!   `maxUnavailable` and the fault domain's `maxUnavailablePerFaultDomain`
//!   allow, counting Nodes already cordoned by anyone; beyond → a
//!   `budget-exhausted` finding, no cordon.
//! - **degraded** and **unknown** → findings only. A cordon fleetform set before
//!   is *held* (never released on a degraded or unknown report).
//! - **healthy** (a fresh report) → fleetform's cordon claim is dropped; server-side
//!   apply then removes `unschedulable` only if fleetform alone set it (a
//!   cordon someone else owns stays).
//! - a failed member out of service → a `swap-proposed` finding naming a spare
//!   from the pool's `spares` with a suggested manifest edit. Swaps are never
//!   applied automatically: pool membership lives in git. Spares in the same rack
//!   first; a rack-scale NVLink domain (`faultDomain: nvl72`) only swaps with a
//!   spare of the same domain, so no pool gains or loses a member across NVLink
//!   domains. The suggested edit swaps the two hosts between `hosts` and
//!   `spares`; the failed host, now a spare under repair, keeps fleetform's
//!   cordon (its Node is kept as an adopted object carrying only the cordon)
//!   until a fresh healthy report releases it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::manifest::{FaultDomainKind, Fleet, NodePool};
use crate::resource::{Desired, Origin, ResourceId};

/// The Node annotation that says why fleetform cordoned it (set with the cordon,
/// so `kubectl describe node` shows the reason too).
pub const CORDON_REASON_ANNOTATION: &str = "gpu.fleetform.dev/cordon-reason";

/// A node's GPU health as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// A fresh report with healthy GPUs.
    Healthy,
    /// Works, needs attention at the next maintenance window: reported, not cordoned.
    Degraded,
    /// Must not take work: cordoned (within budgets).
    Failed,
    /// No report, a stale one, or an unreadable one: never treated as healthy.
    Unknown,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Healthy => "healthy",
            NodeState::Degraded => "degraded",
            NodeState::Failed => "failed",
            NodeState::Unknown => "unknown",
        })
    }
}

/// One node's observed condition: the input of [`assess`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCondition {
    /// Node (host) name.
    pub node: String,
    /// Health from its GPU inventory report.
    pub state: NodeState,
    /// The findings behind the state, e.g. `GPU 2: 3 uncorrectable volatile ECC errors`.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// The Node is cordoned now (`spec.unschedulable`), by anyone.
    #[serde(default)]
    pub cordoned: bool,
    /// The value of [`CORDON_REASON_ANNOTATION`] on the Node now: fleetform cordoned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cordon_reason: Option<String>,
}

impl NodeCondition {
    /// A condition with no cordon observed.
    pub fn new(node: impl Into<String>, state: NodeState, reasons: Vec<String>) -> Self {
        Self {
            node: node.into(),
            state,
            reasons,
            cordoned: false,
            cordon_reason: None,
        }
    }
}

/// What kind of finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// A node's GPUs differ from its pool's expectation (model, count, MIG, driver).
    GpuDrift,
    /// A node's GPUs failed (the plan cordons it, or a budget stops that).
    Failed,
    /// A node's GPUs are degraded: reported, not cordoned.
    Degraded,
    /// No fresh GPU report for a node: its health is unknown.
    Unknown,
    /// A failed node is not cordoned because the pool or fault domain budget is used up.
    BudgetExhausted,
    /// A spare could stand in for a failed node (a manifest edit to accept).
    SwapProposed,
    /// A failed node has no qualified spare.
    NoSpare,
}

/// Something a person should know or decide that is not a change fleetform
/// makes by itself. Stable order: node, kind, message.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The node it is about.
    pub node: String,
    /// What kind.
    pub kind: FindingKind,
    /// The pool, when the node serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// A line for people.
    pub message: String,
    /// What to do about it (e.g. the manifest edit that accepts a swap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suggestion: Option<String>,
    /// The manifest line to change, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// A cordon the plan will carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cordon {
    /// The tenant cluster's Node resource.
    pub id: ResourceId,
    /// The pool.
    pub pool: String,
    /// The annotation value (why).
    pub reason: String,
    /// True when an earlier cordon is only kept (degraded or unknown report).
    pub held: bool,
}

/// The outcome of [`assess`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakFix {
    /// Cordons by node.
    pub cordons: BTreeMap<String, Cordon>,
    /// Nodes fleetform may uncordon (fresh healthy report), by Node resource.
    pub released: BTreeMap<ResourceId, String>,
    /// Findings, sorted.
    pub findings: Vec<Finding>,
}

/// The address of the adopted Node of `host` in `tenant`'s cluster (as compile makes it).
pub fn node_id(tenant: &str, host: &str) -> ResourceId {
    crate::address::kube_node_id(tenant, host)
}

fn cordon_text(node: &str, reasons: &[String]) -> String {
    if reasons.is_empty() {
        format!("node {node} failed")
    } else {
        format!("node {node} failed: {}", reasons.join("; "))
    }
}

/// Decides cordons, swaps and findings for every pool member and spare that has
/// a condition. Nodes without one are left alone. Deterministic: pools and
/// nodes in name order.
pub fn assess(fleet: &Fleet, conditions: &[NodeCondition]) -> BreakFix {
    let by_node: BTreeMap<&str, &NodeCondition> =
        conditions.iter().map(|c| (c.node.as_str(), c)).collect();
    let rack_of = |h: &str| rack_of(fleet, h);
    let mut out = BreakFix::default();
    let mut used_spares: BTreeSet<String> = BTreeSet::new();
    let defaults = &fleet.fleet.spec.rollout;

    for pool in &fleet.pools {
        let name = pool.name();
        let tenant = pool.spec.tenant.as_str();
        let r = pool.spec.rollout.as_ref();
        let max = r
            .and_then(|r| r.max_unavailable)
            .unwrap_or(defaults.max_unavailable) as usize;
        let max_fd = r
            .and_then(|r| r.max_unavailable_per_fault_domain)
            .unwrap_or(defaults.max_unavailable_per_fault_domain) as usize;
        let members = fleet.members(name);
        // Unavailable = cordoned now, by whoever did it.
        let mut unavailable: BTreeSet<&str> = members
            .iter()
            .map(String::as_str)
            .filter(|m| by_node.get(m).is_some_and(|c| c.cordoned))
            .collect();
        let in_rack =
            |set: &BTreeSet<&str>, rack: &str| set.iter().filter(|n| rack_of(n) == rack).count();
        let finding = |node: &str, kind, message: String| Finding {
            node: node.to_string(),
            kind,
            pool: Some(name.to_string()),
            message,
            suggestion: None,
            origin: None,
        };
        for m in members {
            let Some(c) = by_node.get(m.as_str()) else {
                continue;
            };
            let id = node_id(tenant, m);
            let hold = |out: &mut BreakFix| {
                if let Some(reason) = &c.cordon_reason {
                    out.cordons.insert(
                        m.clone(),
                        Cordon {
                            id: id.clone(),
                            pool: name.to_string(),
                            reason: reason.clone(),
                            held: true,
                        },
                    );
                }
            };
            match c.state {
                NodeState::Healthy => {
                    if c.cordon_reason.is_some() {
                        out.released.insert(
                            id.clone(),
                            format!("uncordon: node {m} reports healthy GPUs again"),
                        );
                    }
                }
                NodeState::Degraded => {
                    hold(&mut out);
                    out.findings.push(finding(
                        m,
                        FindingKind::Degraded,
                        format!(
                            "node {m} (pool {name}) is degraded: {}; not cordoned, repair at the next maintenance window",
                            c.reasons.join("; ")
                        ),
                    ));
                }
                NodeState::Unknown => {
                    hold(&mut out);
                    out.findings.push(finding(
                        m,
                        FindingKind::Unknown,
                        format!(
                            "node {m} (pool {name}): GPU health unknown ({}); nothing is cordoned or released on it",
                            c.reasons.join("; ")
                        ),
                    ));
                }
                NodeState::Failed => {
                    let rack = rack_of(m);
                    let reason = cordon_text(m, &c.reasons);
                    let out_of_service = if c.cordoned {
                        true
                    } else if unavailable.len() >= max {
                        out.findings.push(finding(
                            m,
                            FindingKind::BudgetExhausted,
                            format!(
                                "node {m} failed but is not cordoned: pool {name} already has {} of at most {max} node(s) unavailable ({}); a person decides (many failures at once are often the monitor, not the nodes)",
                                unavailable.len(),
                                unavailable.iter().copied().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                        false
                    } else if in_rack(&unavailable, rack) >= max_fd {
                        out.findings.push(finding(
                            m,
                            FindingKind::BudgetExhausted,
                            format!(
                                "node {m} failed but is not cordoned: fault domain {rack} already has {} of at most {max_fd} node(s) of pool {name} unavailable",
                                in_rack(&unavailable, rack)
                            ),
                        ));
                        false
                    } else {
                        true
                    };
                    out.findings.push(finding(
                        m,
                        FindingKind::Failed,
                        format!(
                            "{reason}{}",
                            if c.cordoned {
                                "; cordoned"
                            } else if out_of_service {
                                "; cordon planned"
                            } else {
                                ""
                            }
                        ),
                    ));
                    if !out_of_service {
                        continue;
                    }
                    unavailable.insert(m.as_str());
                    out.cordons.insert(
                        m.clone(),
                        Cordon {
                            id: id.clone(),
                            pool: name.to_string(),
                            reason: format!("cordon: {reason}"),
                            held: false,
                        },
                    );
                    out.findings
                        .push(swap(fleet, pool, m, &by_node, &mut used_spares));
                }
            }
        }
        // A failed node swapped out becomes a spare under repair: its Node left the
        // compiled pool, so fleetform keeps its own cordon on it here until a fresh
        // healthy report (otherwise pruning the Node would release the cordon).
        for s in &pool.spec.spares {
            let Some(c) = by_node.get(s.as_str()) else {
                continue;
            };
            let Some(reason) = &c.cordon_reason else {
                if c.state == NodeState::Failed {
                    out.findings.push(finding(
                        s,
                        FindingKind::Failed,
                        format!(
                            "spare {s} of pool {name} failed: {}; it is no candidate for swaps",
                            c.reasons.join("; ")
                        ),
                    ));
                }
                continue;
            };
            let id = node_id(tenant, s);
            if c.state == NodeState::Healthy {
                out.released.insert(
                    id,
                    format!(
                        "uncordon: spare {s} reports healthy GPUs again; fleetform releases its cordon, the Node stays"
                    ),
                );
            } else {
                out.cordons.insert(
                    s.clone(),
                    Cordon {
                        id,
                        pool: name.to_string(),
                        reason: reason.clone(),
                        held: true,
                    },
                );
            }
        }
    }
    out.findings.sort();
    out
}

fn rack_of<'a>(fleet: &'a Fleet, host: &str) -> &'a str {
    fleet.host(host).map_or("", |h| h.spec.rack.as_str())
}

/// The spare proposal (or its absence) for a failed member `m` of `pool`.
fn swap(
    fleet: &Fleet,
    pool: &NodePool,
    m: &str,
    by_node: &BTreeMap<&str, &NodeCondition>,
    used: &mut BTreeSet<String>,
) -> Finding {
    let rack_of = |h: &str| rack_of(fleet, h);
    let nvl = |rack: &str| {
        fleet
            .rack(rack)
            .is_some_and(|r| r.spec.fault_domain == FaultDomainKind::Nvl72)
    };
    let name = pool.name();
    let rack = rack_of(m);
    let mut candidates: Vec<(u8, &str)> = pool
        .spec
        .spares
        .iter()
        .map(String::as_str)
        .filter(|s| fleet.host(s).is_some() && !used.contains(*s))
        // A spare that is itself failed or degraded is no spare.
        .filter(|s| {
            by_node
                .get(s)
                .is_none_or(|c| matches!(c.state, NodeState::Healthy | NodeState::Unknown))
        })
        // An NVLink domain is one fabric: a host joins or leaves it only with its rack.
        .filter(|s| {
            let sr = rack_of(s);
            sr == rack || (!nvl(rack) && !nvl(sr))
        })
        .map(|s| (u8::from(rack_of(s) != rack), s))
        .collect();
    candidates.sort();
    let origin = fleet
        .nearest_span(pool.doc, "/spec/spares")
        .map(|s| Origin {
            file: s.file,
            line: s.line,
            column: s.column,
        })
        .or_else(|| Some(pool.origin.clone()));
    let Some(&(rank, spare)) = candidates.first() else {
        let why = if nvl(rack) {
            format!(" (rack {rack} is an nvl72 NVLink domain: only a spare of that rack qualifies)")
        } else {
            String::new()
        };
        return Finding {
            node: m.to_string(),
            kind: FindingKind::NoSpare,
            pool: Some(name.to_string()),
            message: format!(
                "no qualified spare for failed node {m} in pool {name}{why}: the pool runs one node short until it is repaired"
            ),
            suggestion: None,
            origin,
        };
    };
    used.insert(spare.to_string());
    let domain = if rank == 0 {
        if nvl(rack) {
            format!("same NVLink domain {rack}")
        } else {
            format!("same rack {rack}")
        }
    } else {
        format!("rack {}", rack_of(spare))
    };
    let unreported = by_node
        .get(spare)
        .is_none_or(|c| c.state == NodeState::Unknown);
    let edit = if pool.spec.hosts.is_empty() {
        format!(
            "pool {name} selects its members: set `spare: false` on host {spare} and `spare: true` on host {m}, and swap them in `spares`; {m} stays cordoned as a spare under repair"
        )
    } else {
        format!(
            "in NodePool {name}, swap {m} and {spare} between `hosts` and `spares`, and set `spare: false` on host {spare} and `spare: true` on host {m}; {m} stays cordoned as a spare under repair; then plan and apply as usual"
        )
    };
    Finding {
        node: m.to_string(),
        kind: FindingKind::SwapProposed,
        pool: Some(name.to_string()),
        message: format!(
            "spare {spare} ({domain}) can stand in for failed node {m} in pool {name}{}; not applied automatically",
            if unreported {
                " (it has no fresh GPU report: check it first)"
            } else {
                ""
            }
        ),
        suggestion: Some(edit),
        origin,
    }
}

impl BreakFix {
    /// The compiled resources with the cordons in place: each cordoned node's
    /// adopted `Node` gets `spec.unschedulable: true` and the reason annotation.
    /// Plan and apply both use this list, so a saved plan's digest matches.
    pub fn desired(&self, resources: &[Desired]) -> Vec<Desired> {
        let by_id: BTreeMap<&ResourceId, &Cordon> =
            self.cordons.values().map(|c| (&c.id, c)).collect();
        let mut out: Vec<Desired> = resources
            .iter()
            .map(|d| {
                let mut d = d.clone();
                if let (Some(c), Some(obj)) = (by_id.get(&d.id), d.spec.get_mut("object")) {
                    cordon_object(obj, &c.reason);
                }
                d
            })
            .collect();
        let present: BTreeSet<ResourceId> = out.iter().map(|d| d.id.clone()).collect();
        for (node, c) in &self.cordons {
            if present.contains(&c.id) {
                continue;
            }
            // A spare under repair: its Node as an adopted object carrying only the cordon.
            let cluster = c.id.path().split('/').next().unwrap_or_default();
            let mut object =
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}});
            cordon_object(&mut object, &c.reason);
            out.push(Desired::new(
                c.id.clone(),
                json!({"cluster": cluster, "adopt": true, "object": object}),
            ));
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

fn cordon_object(obj: &mut Value, reason: &str) {
    let Some(o) = obj.as_object_mut() else {
        return;
    };
    let spec = o.entry("spec").or_insert_with(|| json!({}));
    if let Some(s) = spec.as_object_mut() {
        s.insert("unschedulable".into(), Value::Bool(true));
    }
    let meta = o.entry("metadata").or_insert_with(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        let ann = m.entry("annotations").or_insert_with(|| json!({}));
        if let Some(a) = ann.as_object_mut() {
            a.insert(
                CORDON_REASON_ANNOTATION.into(),
                Value::String(reason.into()),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::plan::{PLAN_FORMAT_VERSION, Plan, PlannedChange, Reason, Summary};
    use crate::provider::Action;

    fn plan_with(change: PlannedChange) -> Plan {
        Plan {
            format_version: PLAN_FORMAT_VERSION,
            revision: Some("rev".into()),
            changes: vec![change],
            forget: Vec::new(),
            summary: Summary {
                update: 1,
                ..Summary::default()
            },
            problems: Vec::new(),
            skipped: Vec::new(),
            findings: Vec::new(),
            releases: Vec::new(),
            budgets: Vec::new(),
            digest: "d".into(),
        }
    }

    fn bf() -> BreakFix {
        let id = node_id("acme", "r01-n03");
        BreakFix {
            cordons: BTreeMap::from([(
                "r01-n03".to_string(),
                Cordon {
                    id,
                    pool: "train".into(),
                    reason: "cordon: node r01-n03 failed: GPU 2: 3 uncorrectable volatile ECC errors"
                        .into(),
                    held: false,
                },
            )]),
            released: BTreeMap::new(),
            findings: vec![Finding {
                node: "r01-n03".into(),
                kind: FindingKind::SwapProposed,
                pool: Some("train".into()),
                message: "spare r01-s01 (same rack r01) can stand in for failed node r01-n03 in pool train; not applied automatically".into(),
                suggestion: Some("in NodePool train, replace r01-n03 with r01-s01 in `hosts`".into()),
                origin: Some(Origin { file: "pools.yaml".into(), line: 9, column: 3 }),
            }],
        }
    }

    #[test]
    fn the_cordon_reason_and_findings_reach_every_rendering_without_changing_the_digest() {
        let mut change = PlannedChange {
            id: node_id("acme", "r01-n03"),
            action: Action::Update,
            reason: Reason::FieldsDiffer,
            fields: Vec::new(),
            spec: None,
            destructive: false,
            disruptive: false,
            disruption: crate::provider::Disruption::None,
            wave: 0,
            waits_for: Vec::new(),
            origin: None,
        };
        change.fields.push(crate::provider::FieldChange {
            path: "/spec/unschedulable".into(),
            before: None,
            after: Some(Value::Bool(true)),
            sensitive: false,
            changed_by: None,
        });
        let mut plan = plan_with(change);
        let digest = plan.digest.clone();
        plan.annotate_breakfix(&bf());
        assert_eq!(plan.digest, digest);
        assert_eq!(
            plan.changes[0].reason,
            Reason::BreakFix {
                detail: "cordon: node r01-n03 failed: GPU 2: 3 uncorrectable volatile ECC errors"
                    .into()
            }
        );

        let text = crate::report::plan_text(&plan, false);
        assert!(
            text.contains("~ kube:acme/v1/Node/r01-n03  (cordon: node r01-n03 failed: GPU 2:"),
            "{text}"
        );
        assert!(
            text.contains("GPU findings (1):\n  [swap-proposed] spare r01-s01"),
            "{text}"
        );
        assert!(
            text.contains("suggested edit (pools.yaml:9:3): in NodePool train"),
            "{text}"
        );

        let md = crate::report::plan_markdown(&plan, "fleetform plan", &[]);
        assert!(md.contains("#### GPU findings (1)"), "{md}");
        assert!(md.contains("- **swap-proposed** spare r01-s01"), "{md}");

        let json: Value =
            serde_json::from_str(&crate::report::plan_json(&plan)).unwrap_or_default();
        assert_eq!(json["changes"][0]["reason"]["kind"], "break-fix");
        assert_eq!(json["findings"][0]["kind"], "swap-proposed");
        assert_eq!(json["findings"][0]["origin"]["line"], 9);
    }

    #[test]
    fn the_cordon_lands_on_the_adopted_node_and_nothing_else() {
        let node = Desired::new(
            node_id("acme", "r01-n03"),
            json!({"cluster": "acme", "adopt": true, "object": {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "r01-n03", "labels": {"fleetform.dev/pool": "train"}},
                "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}}}),
        );
        let other = Desired::new(node_id("acme", "r01-n04"), json!({"object": {}}));
        let out = bf().desired(&[node, other.clone()]);
        let o = &out[0].spec["object"];
        assert_eq!(o["spec"]["unschedulable"], true);
        assert_eq!(
            o["spec"]["taints"][0]["key"], "nvidia.com/gpu",
            "taints kept"
        );
        assert_eq!(
            o["metadata"]["annotations"][CORDON_REASON_ANNOTATION],
            "cordon: node r01-n03 failed: GPU 2: 3 uncorrectable volatile ECC errors"
        );
        assert_eq!(out[1], other);
    }
}
