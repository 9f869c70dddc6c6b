//! Rollout budgets that count nodes already down: before a change that takes a node out of
//! service is admitted in its pool's rollout group, the pool's (and the fault domain's)
//! nodes that are already out of service (cordoned, NotReady, under a maintenance claim, as
//! the provider that owns the nodes reads them live) are added to the changes in flight. A
//! pool with `maxUnavailable: 1` and one NotReady node admits nothing until that node is
//! back; the plan says so ([`annotate`]) and apply waits, then gives up with the reason.
//!
//! Pool membership comes from the manifest (every desired resource's [`RolloutGroup`] and
//! the node it disrupts); node state comes from [`NodeMaintenance::availability`], never
//! from a guess: a node whose state cannot be read counts as down.

use std::collections::{BTreeMap, BTreeSet};

use crate::observe::Providers;
use crate::plan::{Plan, PoolBudget, error_chain};
use crate::resource::{Desired, ResourceId, RolloutGroup};

/// The node a desired resource disrupts: its maintenance node (a BMC aspect of a host that
/// is a cluster node), or the resource itself when it is a Kubernetes Node (a MIG label).
pub fn node_of(d: &Desired) -> Option<ResourceId> {
    if let Some(n) = &d.maintenance {
        return Some(n.clone());
    }
    let is_node = fleetform_contract::address::kube_cluster(&d.id).is_some()
        && d.id.path().split('/').nth(2) == Some("Node")
        && d.id.path().split('/').nth(1) == Some("v1");
    is_node.then(|| d.id.clone())
}

/// One pool's rollout limits and members, from the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    /// `maxUnavailable` of the pool.
    pub max_unavailable: u32,
    /// `maxUnavailablePerFaultDomain` of the pool.
    pub max_unavailable_per_fault_domain: u32,
    /// Host → (fault domain, node).
    pub members: BTreeMap<String, (String, ResourceId)>,
}

/// Every rollout pool of a desired set, by pool name.
pub fn pools<'a>(desired: impl IntoIterator<Item = &'a Desired>) -> BTreeMap<String, Pool> {
    let mut out: BTreeMap<String, Pool> = BTreeMap::new();
    for d in desired {
        let (Some(g), Some(node)) = (&d.rollout, node_of(d)) else {
            continue;
        };
        let p = out.entry(g.pool.clone()).or_default();
        p.max_unavailable = g.max_unavailable;
        p.max_unavailable_per_fault_domain = g.max_unavailable_per_fault_domain;
        p.members
            .entry(g.host.clone())
            .or_insert_with(|| (g.fault_domain.clone(), node));
    }
    out
}

/// Nodes out of service now, with why. Read through each node's provider; a node whose
/// state could not be read is down ("state unknown: ..."), so a budget never assumes a
/// node it cannot see is serving.
pub async fn read_down(
    pools: &BTreeMap<String, Pool>,
    providers: &Providers,
) -> BTreeMap<ResourceId, Vec<String>> {
    let mut by_provider: BTreeMap<&str, Vec<ResourceId>> = BTreeMap::new();
    for p in pools.values() {
        for (_, node) in p.members.values() {
            by_provider
                .entry(node.provider())
                .or_default()
                .push(node.clone());
        }
    }
    let mut down = BTreeMap::new();
    for (name, mut nodes) in by_provider {
        nodes.sort();
        nodes.dedup();
        let why = format!("state unknown: provider `{name}` cannot read node state");
        let Some(m) = providers.for_id(&nodes[0]).and_then(|p| p.maintenance()) else {
            for n in nodes {
                down.insert(n, vec![why.clone()]);
            }
            continue;
        };
        let answers = m.availability(&nodes).await;
        for (i, n) in nodes.into_iter().enumerate() {
            match answers.get(i) {
                Some(Ok(a)) if a.is_down() => {
                    down.insert(n, a.down.clone());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    down.insert(n, vec![format!("state unknown: {}", error_chain(e))]);
                }
                None => {
                    down.insert(n, vec!["state unknown: the provider gave no answer".into()]);
                }
            }
        }
    }
    down
}

/// The admission state of apply: pools, nodes already down and changes in flight.
#[derive(Debug, Default)]
pub struct Budget {
    pools: BTreeMap<String, Pool>,
    down: BTreeMap<ResourceId, Vec<String>>,
    pool_in_use: BTreeMap<String, u32>,
    domain_in_use: BTreeMap<(String, String), u32>,
    /// Hosts with a change in flight (a count: a host may have several): their node is
    /// counted once, as in flight, even when the change itself cordoned it.
    hosts_in_flight: BTreeMap<(String, String), u32>,
}

impl Budget {
    /// A budget over `pools`, with the nodes down now.
    pub fn new(pools: BTreeMap<String, Pool>, down: BTreeMap<ResourceId, Vec<String>>) -> Self {
        Self {
            pools,
            down,
            ..Self::default()
        }
    }

    /// Replaces the nodes known to be down (a fresh read).
    pub fn set_down(&mut self, down: BTreeMap<ResourceId, Vec<String>>) {
        self.down = down;
    }

    /// Records `node` as down (apply knows it left the node cordoned), until the next read.
    pub fn mark_down(&mut self, node: &ResourceId, why: &str) {
        self.down
            .entry(node.clone())
            .or_default()
            .push(why.to_string());
    }

    /// The pools it knows.
    pub fn pools(&self) -> &BTreeMap<String, Pool> {
        &self.pools
    }

    /// Nodes of `g`'s pool already down, other than `g`'s own host and hosts with a change
    /// in flight: `(host, fault domain, reasons)`.
    fn down_others(&self, g: &RolloutGroup) -> Vec<(&str, &str, &[String])> {
        let Some(p) = self.pools.get(&g.pool) else {
            return Vec::new();
        };
        p.members
            .iter()
            .filter(|(h, _)| **h != g.host)
            .filter(|(h, _)| {
                self.hosts_in_flight
                    .get(&(g.pool.clone(), (*h).clone()))
                    .is_none_or(|n| *n == 0)
            })
            .filter_map(|(h, (fd, node))| {
                self.down
                    .get(node)
                    .map(|why| (h.as_str(), fd.as_str(), why.as_slice()))
            })
            .collect()
    }

    /// `Ok` when `g`'s change may start now; otherwise why it waits, naming the nodes
    /// already down. `down + in flight` must stay below each limit (a limit of 0 is 1, as
    /// validate warns).
    pub fn admits(&self, g: &RolloutGroup) -> Result<(), String> {
        let in_pool = self.pool_in_use.get(&g.pool).copied().unwrap_or(0);
        let in_dom = self
            .domain_in_use
            .get(&(g.pool.clone(), g.fault_domain.clone()))
            .copied()
            .unwrap_or(0);
        let down = self.down_others(g);
        let down_dom: Vec<_> = down.iter().filter(|d| d.1 == g.fault_domain).collect();
        let max = g.max_unavailable.max(1);
        let max_dom = g.max_unavailable_per_fault_domain.max(1);
        let names = |d: &[&(&str, &str, &[String])]| {
            d.iter()
                .map(|(h, _, why)| format!("{h} ({})", why.join(", ")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if down.len() as u32 + in_pool >= max {
            let all: Vec<_> = down.iter().collect();
            return Err(format!(
                "pool {}: {} node(s) already down{}{} and {in_pool} change(s) in flight; maxUnavailable is {max}",
                g.pool,
                down.len(),
                if all.is_empty() { "" } else { ": " },
                names(&all),
            ));
        }
        if down_dom.len() as u32 + in_dom >= max_dom {
            return Err(format!(
                "pool {} fault domain {}: {} node(s) already down{}{} and {in_dom} change(s) in flight; maxUnavailablePerFaultDomain is {max_dom}",
                g.pool,
                g.fault_domain,
                down_dom.len(),
                if down_dom.is_empty() { "" } else { ": " },
                names(&down_dom),
            ));
        }
        Ok(())
    }

    /// True when nodes already down alone (nothing in flight) keep `g` out: waiting for
    /// changes in flight will not help, only those nodes coming back.
    pub fn blocked_by_down(&self, g: &RolloutGroup) -> bool {
        let in_pool = self.pool_in_use.get(&g.pool).copied().unwrap_or(0);
        in_pool == 0 && self.admits(g).is_err()
    }

    /// A change of `g` started.
    pub fn take(&mut self, g: &RolloutGroup) {
        *self.pool_in_use.entry(g.pool.clone()).or_default() += 1;
        *self
            .domain_in_use
            .entry((g.pool.clone(), g.fault_domain.clone()))
            .or_default() += 1;
        *self
            .hosts_in_flight
            .entry((g.pool.clone(), g.host.clone()))
            .or_default() += 1;
    }

    /// A change of `g` finished (either way).
    pub fn release(&mut self, g: &RolloutGroup) {
        for n in [
            self.pool_in_use.get_mut(&g.pool),
            self.domain_in_use
                .get_mut(&(g.pool.clone(), g.fault_domain.clone())),
            self.hosts_in_flight
                .get_mut(&(g.pool.clone(), g.host.clone())),
        ]
        .into_iter()
        .flatten()
        {
            *n = n.saturating_sub(1);
        }
    }
}

/// Reads the state of the nodes of every pool with a disruptive change in `plan` and
/// records, per pool with nodes already down, how many are down and whether its changes
/// will wait. Not part of the digest: node state is live and moves on its own.
pub async fn annotate(plan: &mut Plan, desired: &[&Desired], providers: &Providers) {
    let by_id: BTreeMap<&ResourceId, &Desired> = desired.iter().map(|d| (&d.id, *d)).collect();
    let mut changing: BTreeMap<String, BTreeSet<&ResourceId>> = BTreeMap::new();
    for c in plan.actionable().filter(|c| c.disruptive) {
        if let Some(g) = by_id.get(&c.id).and_then(|d| d.rollout.as_ref()) {
            changing.entry(g.pool.clone()).or_default().insert(&c.id);
        }
    }
    if changing.is_empty() {
        return;
    }
    let all = pools(desired.iter().copied());
    let pools: BTreeMap<String, Pool> = all
        .into_iter()
        .filter(|(name, _)| changing.contains_key(name))
        .collect();
    let down = read_down(&pools, providers).await;
    let mut notes = Vec::new();
    for (name, p) in &pools {
        let downs: Vec<String> = p
            .members
            .iter()
            .filter_map(|(h, (_, node))| down.get(node).map(|w| format!("{h} ({})", w.join(", "))))
            .collect();
        if downs.is_empty() {
            continue;
        }
        notes.push(PoolBudget {
            pool: name.clone(),
            max_unavailable: p.max_unavailable.max(1),
            can_start_now: p.max_unavailable.max(1).saturating_sub(downs.len() as u32),
            down: downs,
            disruptive_changes: changing.get(name).map_or(0, BTreeSet::len),
        });
    }
    plan.budgets = notes;
}
