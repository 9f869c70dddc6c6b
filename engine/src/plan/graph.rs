//! The dependency graph of desired resources: every ordering is an edge with a
//! reason a person can read; cycles are errors that name every resource in them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use petgraph::Direction;
use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::resource::{Dependency, Desired, Origin, ResourceId};

/// Why the graph cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// One or more dependency cycles; each cycle lists its members and the edges' reasons.
    #[error("dependency cycle{}: {}", if cycles.len() > 1 { "s" } else { "" }, render_cycles(cycles))]
    Cycle {
        /// Every cycle found, each as the edges that form it.
        cycles: Vec<Vec<CycleEdge>>,
    },
    /// A resource depends on one that the fleet does not define.
    #[error("{from} depends on {on}, which the fleet does not define ({reason})")]
    MissingDependency {
        /// The dependent.
        from: ResourceId,
        /// The missing resource.
        on: ResourceId,
        /// The edge's reason.
        reason: String,
        /// The manifest line of the dependent.
        origin: Option<Origin>,
    },
    /// Two resources compiled to the same address.
    #[error("two resources have the address {id}")]
    Duplicate {
        /// The address.
        id: ResourceId,
    },
}

/// One edge of a cycle: `from` waits for `on` because of `reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleEdge {
    /// The waiting resource.
    pub from: ResourceId,
    /// What it waits for.
    pub on: ResourceId,
    /// Why.
    pub reason: String,
    /// The manifest line that created the edge (or the dependent's line).
    pub origin: Option<Origin>,
}

fn render_cycles(cycles: &[Vec<CycleEdge>]) -> String {
    cycles
        .iter()
        .map(|c| {
            c.iter()
                .map(|e| {
                    let at = e
                        .origin
                        .as_ref()
                        .map(|o| format!(" at {o}"))
                        .unwrap_or_default();
                    format!("{} waits for {} ({}{at})", e.from, e.on, e.reason)
                })
                .collect::<Vec<_>>()
                .join(" -> ")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Edge payload: the reason and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeInfo {
    /// Why the dependent waits.
    pub reason: String,
    /// The manifest line that created the edge.
    pub origin: Option<Origin>,
}

/// A validated, acyclic dependency graph. Edges point from a dependency to
/// its dependent (the order things are applied in).
#[derive(Debug, Clone)]
pub struct Graph {
    g: DiGraph<ResourceId, EdgeInfo>,
    index: BTreeMap<ResourceId, NodeIndex>,
}

impl Graph {
    /// Builds the graph of the given resources, refusing duplicates, dangling
    /// dependencies and cycles.
    pub fn build(resources: &[Desired]) -> Result<Self, GraphError> {
        Self::from_edges(
            resources
                .iter()
                .map(|d| (&d.id, d.deps.as_slice(), d.origin.as_ref())),
        )
    }

    /// Builds a graph from `(id, dependencies, origin)` triples (desired resources or inventory entries).
    pub fn from_edges<'a>(
        nodes: impl IntoIterator<Item = (&'a ResourceId, &'a [Dependency], Option<&'a Origin>)> + Clone,
    ) -> Result<Self, GraphError> {
        let mut g = DiGraph::new();
        let mut index = BTreeMap::new();
        for (id, _, _) in nodes.clone() {
            if index.insert(id.clone(), g.add_node(id.clone())).is_some() {
                return Err(GraphError::Duplicate { id: id.clone() });
            }
        }
        // Edges seen so far: `update_edge` would scan the source's edges each time, which is
        // quadratic for a namespace or CRD with thousands of dependents.
        let mut edges: std::collections::HashMap<
            (NodeIndex, NodeIndex),
            petgraph::graph::EdgeIndex,
        > = std::collections::HashMap::new();
        for (id, deps, origin) in nodes {
            let to = index[id];
            for dep in deps {
                let Some(&from) = index.get(&dep.on) else {
                    return Err(GraphError::MissingDependency {
                        from: id.clone(),
                        on: dep.on.clone(),
                        reason: dep.reason.clone(),
                        origin: dep.origin.clone().or_else(|| origin.cloned()),
                    });
                };
                let info = EdgeInfo {
                    reason: dep.reason.clone(),
                    origin: dep.origin.clone().or_else(|| origin.cloned()),
                };
                match edges.entry((from, to)) {
                    std::collections::hash_map::Entry::Occupied(e) => g[*e.get()] = info,
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(g.add_edge(from, to, info));
                    }
                }
            }
        }
        let graph = Self { g, index };
        graph.check_acyclic()?;
        Ok(graph)
    }

    fn check_acyclic(&self) -> Result<(), GraphError> {
        let mut cycles = Vec::new();
        for scc in tarjan_scc(&self.g) {
            let self_loop = scc.len() == 1 && self.g.find_edge(scc[0], scc[0]).is_some();
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            let mut edges: Vec<CycleEdge> = Vec::new();
            for &n in &members {
                for e in self.g.edges_directed(n, Direction::Incoming) {
                    use petgraph::visit::EdgeRef;
                    if members.contains(&e.source()) {
                        edges.push(CycleEdge {
                            from: self.g[n].clone(),
                            on: self.g[e.source()].clone(),
                            reason: e.weight().reason.clone(),
                            origin: e.weight().origin.clone(),
                        });
                    }
                }
            }
            edges.sort_by(|a, b| (&a.from, &a.on).cmp(&(&b.from, &b.on)));
            cycles.push(edges);
        }
        cycles.sort_by(|a, b| a.first().map(|e| &e.from).cmp(&b.first().map(|e| &e.from)));
        if cycles.is_empty() {
            Ok(())
        } else {
            Err(GraphError::Cycle { cycles })
        }
    }

    /// Number of resources.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when there are no resources.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// True when the graph holds this resource.
    pub fn contains(&self, id: &ResourceId) -> bool {
        self.index.contains_key(id)
    }

    /// What `id` waits for, with reasons, sorted.
    pub fn dependencies(&self, id: &ResourceId) -> Vec<(&ResourceId, &EdgeInfo)> {
        self.neighbours(id, Direction::Incoming)
    }

    /// What waits for `id`, sorted.
    pub fn dependents(&self, id: &ResourceId) -> Vec<(&ResourceId, &EdgeInfo)> {
        self.neighbours(id, Direction::Outgoing)
    }

    fn neighbours(&self, id: &ResourceId, dir: Direction) -> Vec<(&ResourceId, &EdgeInfo)> {
        use petgraph::visit::EdgeRef;
        let Some(&n) = self.index.get(id) else {
            return Vec::new();
        };
        let mut out: Vec<_> = self
            .g
            .edges_directed(n, dir)
            .map(|e| {
                let other = if dir == Direction::Incoming {
                    e.source()
                } else {
                    e.target()
                };
                (&self.g[other], e.weight())
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(b.0));
        out
    }

    /// Resources grouped into waves: a resource's wave is one more than the
    /// latest wave of anything it depends on. Each wave is sorted, so the
    /// result is deterministic.
    pub fn waves(&self) -> Vec<Vec<ResourceId>> {
        let mut level: BTreeMap<NodeIndex, usize> = BTreeMap::new();
        let order = petgraph::algo::toposort(&self.g, None).unwrap_or_default();
        for n in order {
            let l = self
                .g
                .neighbors_directed(n, Direction::Incoming)
                .filter_map(|p| level.get(&p))
                .map(|l| l + 1)
                .max()
                .unwrap_or(0);
            level.insert(n, l);
        }
        let depth = level.values().copied().max().map_or(0, |m| m + 1);
        let mut waves = vec![Vec::new(); depth];
        for (n, l) in level {
            waves[l].push(self.g[n].clone());
        }
        for w in &mut waves {
            w.sort();
        }
        waves
    }

    /// The given resources and everything they (transitively) depend on: what `--target` selects.
    pub fn with_dependencies(&self, targets: &[ResourceId]) -> BTreeSet<ResourceId> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<NodeIndex> = targets
            .iter()
            .filter_map(|t| self.index.get(t).copied())
            .collect();
        while let Some(n) = stack.pop() {
            if out.insert(self.g[n].clone()) {
                stack.extend(self.g.neighbors_directed(n, Direction::Incoming));
            }
        }
        out
    }

    /// Everything that (transitively) depends on `id`.
    pub fn transitive_dependents(&self, id: &ResourceId) -> BTreeSet<ResourceId> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<NodeIndex> = self.index.get(id).into_iter().copied().collect();
        while let Some(n) = stack.pop() {
            for m in self.g.neighbors_directed(n, Direction::Outgoing) {
                if out.insert(self.g[m].clone()) {
                    stack.push(m);
                }
            }
        }
        out
    }

    /// Graphviz DOT: resources as nodes grouped by provider, edges labelled with reasons.
    pub fn to_dot(&self) -> String {
        let mut s = String::from(
            "digraph fleet {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\", fontsize=10];\n  edge [fontsize=8, color=\"#666666\"];\n",
        );
        let mut by_provider: BTreeMap<&str, Vec<&ResourceId>> = BTreeMap::new();
        for id in self.index.keys() {
            by_provider.entry(id.provider()).or_default().push(id);
        }
        for (p, ids) in by_provider {
            s.push_str(&format!(
                "  subgraph \"cluster_{p}\" {{\n    label=\"{p}\";\n"
            ));
            for id in ids {
                s.push_str(&format!("    \"{}\";\n", escape(id.as_str())));
            }
            s.push_str("  }\n");
        }
        for (from, to, info) in self.sorted_edges() {
            s.push_str(&format!(
                "  \"{}\" -> \"{}\" [label=\"{}\"];\n",
                escape(from.as_str()),
                escape(to.as_str()),
                escape(&info.reason)
            ));
        }
        s.push_str("}\n");
        s
    }

    /// Mermaid flowchart, for Markdown renderers that draw it.
    pub fn to_mermaid(&self) -> String {
        let ids: BTreeMap<&ResourceId, usize> = self
            .index
            .keys()
            .enumerate()
            .map(|(i, id)| (id, i))
            .collect();
        let mut s = String::from("flowchart LR\n");
        for (id, i) in &ids {
            s.push_str(&format!(
                "  n{i}[\"{}\"]\n",
                id.as_str().replace('"', "#quot;")
            ));
        }
        for (from, to, info) in self.sorted_edges() {
            s.push_str(&format!(
                "  n{} -->|\"{}\"| n{}\n",
                ids[from],
                info.reason.replace('"', "#quot;"),
                ids[to]
            ));
        }
        s
    }

    fn sorted_edges(&self) -> Vec<(&ResourceId, &ResourceId, &EdgeInfo)> {
        use petgraph::visit::EdgeRef;
        let mut edges: Vec<_> = self
            .g
            .edge_references()
            .map(|e| (&self.g[e.source()], &self.g[e.target()], e.weight()))
            .collect();
        edges.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        edges
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A stable text form: each resource, sorted, with its dependencies and reasons indented.
/// Used by `fleetform graph` and golden tests.
impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for id in self.index.keys() {
            writeln!(f, "{id}")?;
            for (dep, info) in self.dependencies(id) {
                writeln!(f, "  <- {dep} ({})", info.reason)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(name: &str) -> ResourceId {
        ResourceId::new("test", name)
    }

    fn d(name: &str, deps: &[&str]) -> Desired {
        let mut x = Desired::new(r(name), json!({}));
        for dep in deps {
            x = x.depends_on(r(dep), format!("{name} needs {dep}"));
        }
        x
    }

    #[test]
    fn waves_put_each_resource_after_everything_it_waits_for() {
        let g = Graph::build(&[d("c", &["b"]), d("b", &["a"]), d("a", &[]), d("x", &[])]).unwrap();
        assert_eq!(
            g.waves(),
            vec![vec![r("a"), r("x")], vec![r("b")], vec![r("c")]]
        );
    }

    #[test]
    fn a_cycle_names_every_member_and_reason() {
        let err = Graph::build(&[d("a", &["c"]), d("b", &["a"]), d("c", &["b"]), d("ok", &[])])
            .unwrap_err();
        let msg = err.to_string();
        for needle in [
            "test:a waits for test:c (a needs c)",
            "test:b waits for test:a",
            "test:c waits for test:b",
        ] {
            assert!(msg.contains(needle), "{msg}");
        }
        assert!(!msg.contains("test:ok"), "{msg}");
    }

    #[test]
    fn two_separate_cycles_are_both_reported() {
        let err = Graph::build(&[
            d("a", &["b"]),
            d("b", &["a"]),
            d("x", &["y"]),
            d("y", &["x"]),
        ])
        .unwrap_err();
        let GraphError::Cycle { cycles } = err else {
            panic!("expected cycle")
        };
        assert_eq!(cycles.len(), 2);
    }

    #[test]
    fn a_dependency_on_an_undefined_resource_is_an_error() {
        let err = Graph::build(&[d("a", &["ghost"])]).unwrap_err();
        assert!(matches!(err, GraphError::MissingDependency { .. }), "{err}");
    }

    #[test]
    fn targets_select_their_transitive_dependencies_only() {
        let g = Graph::build(&[d("c", &["b"]), d("b", &["a"]), d("a", &[]), d("x", &[])]).unwrap();
        let sel = g.with_dependencies(&[r("b")]);
        assert_eq!(sel.into_iter().collect::<Vec<_>>(), vec![r("a"), r("b")]);
    }

    #[test]
    fn text_form_is_sorted_and_shows_reasons() {
        let g = Graph::build(&[d("b", &["a"]), d("a", &[])]).unwrap();
        assert_eq!(g.to_string(), "test:a\ntest:b\n  <- test:a (b needs a)\n");
    }
}
