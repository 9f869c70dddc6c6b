//! Which changes may start, kept as counts of blockers.

use crate::plan::PlannedChange;
use crate::provider::Action;
use crate::resource::ResourceId;
use crate::state::State;
use std::collections::{BTreeMap, BTreeSet};

/// Which changes may start. Each change waits for the changes among its dependencies
/// (unchanged ones are satisfied); deletes also wait for every non-delete change, and for the
/// deletes of their dependents. Kept as counts, so a finished change costs its dependents,
/// not a rescan of the whole plan.
pub(super) struct Schedule<'a> {
    blockers: BTreeMap<&'a ResourceId, usize>,
    dependents: BTreeMap<&'a ResourceId, Vec<&'a ResourceId>>,
    /// Deletes in address order; they start once `non_deletes_left` is zero.
    deletes: Vec<&'a ResourceId>,
    non_deletes_left: usize,
    /// A non-delete failed or was skipped: no delete may start.
    deletes_blocked: bool,
    /// May start now, in address order.
    ready: BTreeSet<&'a ResourceId>,
    /// Ready, but their rollout group is full.
    parked: Vec<&'a ResourceId>,
    started: BTreeSet<&'a ResourceId>,
    /// Failed (root = itself) or skipped because of root.
    failed_root: BTreeMap<&'a ResourceId, ResourceId>,
}

impl<'a> Schedule<'a> {
    pub(super) fn new(todo: &BTreeMap<&'a ResourceId, &'a PlannedChange>, state: &State) -> Self {
        let mut waits: BTreeMap<&'a ResourceId, BTreeSet<&'a ResourceId>> =
            todo.keys().map(|id| (*id, BTreeSet::new())).collect();
        for (id, c) in todo {
            if c.action == Action::Delete {
                // A delete waits for the deletes of what depends on it.
                let deps = state.resources.get(*id).map(|e| e.deps.as_slice());
                for dep in deps.unwrap_or_default() {
                    if let Some((other, oc)) = todo.get_key_value(&dep.on)
                        && oc.action == Action::Delete
                        && other != id
                    {
                        waits.entry(other).or_default().insert(id);
                    }
                }
            } else {
                let on = c.waits_for.iter().filter_map(|d| todo.get_key_value(&d.on));
                let w = waits.entry(id).or_default();
                w.extend(on.map(|(k, _)| *k).filter(|k| k != id));
            }
        }
        let mut dependents: BTreeMap<&'a ResourceId, Vec<&'a ResourceId>> = BTreeMap::new();
        for (id, w) in &waits {
            for on in w {
                dependents.entry(on).or_default().push(id);
            }
        }
        let deletes: Vec<&ResourceId> = todo
            .iter()
            .filter(|(_, c)| c.action == Action::Delete)
            .map(|(id, _)| *id)
            .collect();
        let mut schedule = Self {
            blockers: waits.iter().map(|(id, w)| (*id, w.len())).collect(),
            dependents,
            non_deletes_left: todo.len() - deletes.len(),
            deletes,
            deletes_blocked: false,
            ready: BTreeSet::new(),
            parked: Vec::new(),
            started: BTreeSet::new(),
            failed_root: BTreeMap::new(),
        };
        let ready: Vec<&ResourceId> = todo
            .keys()
            .copied()
            .filter(|id| schedule.may_start(id))
            .collect();
        schedule.ready.extend(ready);
        schedule
    }

    fn is_delete(&self, id: &ResourceId) -> bool {
        self.deletes.binary_search(&id).is_ok()
    }

    fn may_start(&self, id: &ResourceId) -> bool {
        self.blockers.get(id) == Some(&0)
            && !self.started.contains(id)
            && !self.failed_root.contains_key(id)
            && (!self.is_delete(id) || (self.non_deletes_left == 0 && !self.deletes_blocked))
    }

    /// The next change that may start, in address order.
    pub(super) fn next(&mut self) -> Option<&'a ResourceId> {
        self.ready.pop_first()
    }

    /// The changes that may start after [`Schedule::next`], in the order it gives them.
    pub(super) fn upcoming(&self) -> impl Iterator<Item = &'a ResourceId> + '_ {
        self.ready.iter().copied()
    }

    /// `id` may start, but not before a rollout slot frees up.
    pub(super) fn park(&mut self, id: &'a ResourceId) {
        self.parked.push(id);
    }

    /// A rollout slot freed up: parked changes are tried again.
    pub(super) fn unpark(&mut self) {
        self.ready.extend(self.parked.drain(..));
    }

    /// True when some change waits for room in its rollout group.
    pub(super) fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// The parked changes, no longer parked (they are given up on).
    pub(super) fn take_parked(&mut self) -> Vec<&'a ResourceId> {
        let mut out = std::mem::take(&mut self.parked);
        out.sort();
        out.dedup();
        out
    }

    pub(super) fn start(&mut self, id: &'a ResourceId) {
        self.started.insert(id);
    }

    pub(super) fn succeeded(&mut self, id: &'a ResourceId) {
        let mut check: Vec<&'a ResourceId> = Vec::new();
        if !self.is_delete(id) {
            self.non_deletes_left -= 1;
            if self.non_deletes_left == 0 {
                check.extend(self.deletes.iter().copied());
            }
        }
        for d in self.dependents.get(id).into_iter().flatten() {
            if let Some(n) = self.blockers.get_mut(d) {
                *n = n.saturating_sub(1);
            }
            check.push(d);
        }
        for d in check {
            if self.may_start(d) {
                self.ready.insert(d);
            }
        }
    }

    /// `id` failed. With `propagate`, everything that waits for it, transitively, is skipped
    /// and returned in address order with the root cause.
    pub(super) fn failed(
        &mut self,
        id: &'a ResourceId,
        propagate: bool,
    ) -> Vec<(&'a ResourceId, ResourceId)> {
        self.failed_root.insert(id, id.clone());
        if !propagate {
            return Vec::new();
        }
        let mut skipped = BTreeSet::new();
        let mut stack = vec![id];
        while let Some(x) = stack.pop() {
            let mut next: Vec<&'a ResourceId> = self.dependents.get(x).cloned().unwrap_or_default();
            if !self.is_delete(x) && !self.deletes_blocked {
                self.deletes_blocked = true;
                next.extend(self.deletes.iter().copied());
            }
            for n in next {
                if self.started.contains(n) || self.failed_root.contains_key(n) {
                    continue;
                }
                self.failed_root.insert(n, id.clone());
                skipped.insert(n);
                stack.push(n);
            }
        }
        self.ready.retain(|r| !skipped.contains(r));
        self.parked.retain(|r| !skipped.contains(r));
        skipped.into_iter().map(|n| (n, id.clone())).collect()
    }
}
