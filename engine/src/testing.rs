//! An in-memory provider with real semantics, for engine tests (not a
//! call-recording mock): objects exist or not, creating an existing object is
//! an error as a real API would say, and failures, transient errors, latency
//! and slow health are scripted per resource. It can persist its world to a
//! directory so crash tests can kill the process and look again.

mod diff;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::provider::{
    Action, Applied, ApplyContext, ApplyRequest, Change, Cordon, Disruption, Health,
    NodeAvailability, NodeMaintenance, ObserveRequest, Observed, Provider, ProviderError,
};
use crate::resource::{Desired, ResourceId};
use diff::desired_subset;

/// A scripted behaviour for one resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Script {
    /// Every apply fails permanently with this message.
    pub fail: Option<String>,
    /// The first N applies fail transiently.
    pub transient_failures: u32,
    /// Each apply takes this long.
    pub latency_ms: u64,
    /// Health reports Progressing this many times before Ready.
    pub slow_health: u32,
    /// Observe fails transiently.
    pub observe_fails: bool,
    /// Draining this node fails permanently with this message.
    pub drain_fails: Option<String>,
    /// This node is out of service, for this reason (`NotReady`, `cordoned`): what
    /// [`NodeMaintenance::availability`] reports, as a real cluster would.
    pub node_down: Option<String>,
    /// Reading this node's state fails.
    pub availability_fails: bool,
    /// The transient failures carry this `Retry-After`, as a throttling API says it.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    /// Draining this node takes this long (pods slow to evict).
    #[serde(default)]
    pub drain_ms: u64,
    /// Health checks of this resource take this long to answer.
    #[serde(default)]
    pub health_latency_ms: u64,
}

/// The persisted world: live objects and how often each was created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct World {
    /// Live objects.
    pub objects: BTreeMap<ResourceId, serde_json::Value>,
    /// Creates per resource (more than one without a delete between is a duplicate).
    pub creates: BTreeMap<ResourceId, u32>,
    /// Applies attempted per resource.
    pub attempts: BTreeMap<ResourceId, u32>,
    /// Health polls per resource.
    pub health_polls: BTreeMap<ResourceId, u32>,
    /// The most hosts disrupted at once per rollout pool, as seen by the provider.
    pub max_concurrent_disruptive: u32,
    /// How many disruptive applies are in flight now.
    pub disruptive_in_flight: u32,
    /// Nodes cordoned for maintenance now, with the reason.
    #[serde(default)]
    pub cordoned: BTreeMap<ResourceId, String>,
    /// For each disruptive apply, the nodes that were cordoned while it ran.
    #[serde(default)]
    pub cordoned_during: BTreeMap<ResourceId, Vec<ResourceId>>,
    /// Nodes drained, in order.
    #[serde(default)]
    pub drained: Vec<ResourceId>,
    /// For each disruptive apply, the nodes drained before it ran.
    #[serde(default)]
    pub drained_before: BTreeMap<ResourceId, Vec<ResourceId>>,
}

/// The in-memory provider. Its name is `test`.
#[derive(Debug, Default)]
pub struct MemoryProvider {
    name: Option<&'static str>,
    world: Mutex<World>,
    scripts: Mutex<BTreeMap<ResourceId, Script>>,
    persist: Option<PathBuf>,
}

impl MemoryProvider {
    /// An empty world.
    pub fn new() -> Self {
        Self::default()
    }

    /// A world persisted to `file` after every change (loaded if it exists).
    pub fn persistent(file: impl Into<PathBuf>) -> Self {
        let file = file.into();
        let world = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            name: None,
            world: Mutex::new(world),
            scripts: Mutex::default(),
            persist: Some(file),
        }
    }

    /// An empty world answering for another provider's addresses (e.g. `kube`),
    /// so compiled fleets can be planned without peers (benchmarks).
    pub fn named(name: &'static str) -> Self {
        Self {
            name: Some(name),
            ..Self::default()
        }
    }

    /// Scripts a behaviour for a resource.
    pub fn script(&self, id: &ResourceId, script: Script) {
        self.lock_scripts().insert(id.clone(), script);
    }

    /// A copy of the world.
    pub fn world(&self) -> World {
        self.lock_world().clone()
    }

    /// Puts a live object in the world, as if something else made it (an image
    /// already in a registry, an object created by hand).
    pub fn put(&self, id: &ResourceId, object: serde_json::Value) {
        let mut w = self.lock_world();
        w.objects.insert(id.clone(), object);
        self.save(&w);
    }

    /// Changes a live object behind fleetform's back (out-of-band edit).
    pub fn tamper(&self, id: &ResourceId, f: impl FnOnce(&mut serde_json::Value)) {
        let mut w = self.lock_world();
        if let Some(v) = w.objects.get_mut(id) {
            f(v);
        }
        self.save(&w);
    }

    /// Deletes a live object behind fleetform's back (out-of-band delete).
    pub fn remove(&self, id: &ResourceId) {
        let mut w = self.lock_world();
        w.objects.remove(id);
        self.save(&w);
    }

    fn lock_world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_scripts(&self) -> std::sync::MutexGuard<'_, BTreeMap<ResourceId, Script>> {
        self.scripts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, w: &World) {
        if let Some(file) = &self.persist {
            let bytes = serde_json::to_vec(w).unwrap_or_default();
            let _ = crate::state::write_atomic(file, &bytes);
        }
    }
}

#[async_trait]
impl Provider for MemoryProvider {
    fn name(&self) -> &'static str {
        self.name.unwrap_or("test")
    }

    async fn observe(
        &self,
        requests: &[ObserveRequest<'_>],
    ) -> Vec<Result<Option<Observed>, ProviderError>> {
        let scripts = self.lock_scripts().clone();
        let w = self.lock_world();
        requests
            .iter()
            .map(|r| {
                if scripts.get(r.id).is_some_and(|s| s.observe_fails) {
                    return Err(ProviderError::transient(r.id, "endpoint unreachable"));
                }
                Ok(w.objects.get(r.id).map(|v| Observed {
                    id: r.id.clone(),
                    state: v.clone(),
                    private: None,
                }))
            })
            .collect()
    }

    fn diff(
        &self,
        desired: &Desired,
        observed: Option<&Observed>,
    ) -> Result<Change, ProviderError> {
        let Some(o) = observed else {
            return Ok(Change::new(desired.id.clone(), Action::Create));
        };
        let fields = desired_subset(&desired.spec, &o.state);
        // A field named `immutable` cannot change in place, like a Kubernetes selector.
        let requires_replace: Vec<String> = fields
            .iter()
            .filter(|f| f.path.starts_with("/immutable"))
            .map(|f| f.path.clone())
            .collect();
        let action = match (fields.is_empty(), requires_replace.is_empty()) {
            (true, _) => Action::NoOp,
            (false, true) => Action::Update,
            (false, false) => Action::Replace,
        };
        let disruption = if action == Action::NoOp {
            Disruption::None
        } else {
            fields
                .iter()
                .map(|f| disruption_of(&f.path))
                .max()
                .unwrap_or_default()
        };
        Ok(Change {
            id: desired.id.clone(),
            action,
            fields,
            requires_replace,
            disruption,
        })
    }

    async fn apply(
        &self,
        request: &ApplyRequest<'_>,
        _cx: &ApplyContext,
    ) -> Result<Applied, ProviderError> {
        let id = &request.change.id;
        let script = self.lock_scripts().get(id).cloned().unwrap_or_default();
        let disruptive = request.change.is_disruptive();
        let attempt = {
            let mut w = self.lock_world();
            let n = w.attempts.entry(id.clone()).or_default();
            *n += 1;
            let n = *n;
            if disruptive {
                w.disruptive_in_flight += 1;
                w.max_concurrent_disruptive =
                    w.max_concurrent_disruptive.max(w.disruptive_in_flight);
                let cordoned = w.cordoned.keys().cloned().collect();
                w.cordoned_during.insert(id.clone(), cordoned);
                let drained = w.drained.clone();
                w.drained_before.insert(id.clone(), drained);
            }
            self.save(&w);
            n
        };
        if script.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(script.latency_ms)).await;
        }
        let mut w = self.lock_world();
        if disruptive {
            w.disruptive_in_flight -= 1;
        }
        if let Some(msg) = script.fail {
            return Err(ProviderError::permanent(id, msg));
        }
        if attempt <= script.transient_failures {
            let mut e = ProviderError::transient(
                id,
                format!("503 service unavailable (attempt {attempt})"),
            );
            e.retry_after = script.retry_after_ms.map(Duration::from_millis);
            return Err(e);
        }
        let spec = request.desired.map(|d| d.spec.clone());
        match (request.change.action, spec) {
            (Action::Create, Some(spec)) => {
                if w.objects.contains_key(id) {
                    return Err(ProviderError::permanent(id, "already exists"));
                }
                w.objects.insert(id.clone(), spec.clone());
                *w.creates.entry(id.clone()).or_default() += 1;
                self.save(&w);
                Ok(Applied {
                    id: id.clone(),
                    spec,
                })
            }
            (Action::Update | Action::NoOp, Some(spec)) => {
                let live = w
                    .objects
                    .get_mut(id)
                    .ok_or_else(|| ProviderError::permanent(id, "not found"))?;
                merge(live, &spec);
                self.save(&w);
                Ok(Applied {
                    id: id.clone(),
                    spec,
                })
            }
            (Action::Replace, Some(spec)) => {
                w.objects.insert(id.clone(), spec.clone());
                *w.creates.entry(id.clone()).or_default() += 1;
                self.save(&w);
                Ok(Applied {
                    id: id.clone(),
                    spec,
                })
            }
            (Action::Delete, _) => {
                w.objects.remove(id);
                w.creates.remove(id);
                self.save(&w);
                Ok(Applied {
                    id: id.clone(),
                    spec: serde_json::Value::Null,
                })
            }
            (_, None) => Err(ProviderError::permanent(id, "no desired spec")),
        }
    }

    async fn health(
        &self,
        id: &ResourceId,
        _spec: &serde_json::Value,
    ) -> Result<Health, ProviderError> {
        let (slow, latency) = self
            .lock_scripts()
            .get(id)
            .map_or((0, 0), |s| (s.slow_health, s.health_latency_ms));
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let mut w = self.lock_world();
        let n = w.health_polls.entry(id.clone()).or_default();
        *n += 1;
        Ok(if *n <= slow {
            Health::Progressing(format!("starting ({n}/{slow})"))
        } else {
            Health::Ready
        })
    }

    fn maintenance(&self) -> Option<&dyn NodeMaintenance> {
        Some(self)
    }
}

/// Nodes are objects of this provider: cordoning records the reason, draining records the node.
#[async_trait]
impl NodeMaintenance for MemoryProvider {
    async fn cordon(
        &self,
        node: &ResourceId,
        reason: Option<&str>,
    ) -> Result<Cordon, ProviderError> {
        let mut w = self.lock_world();
        if !w.objects.contains_key(node) {
            return Ok(Cordon::NoSuchNode);
        }
        match reason {
            Some(r) => w.cordoned.insert(node.clone(), r.to_string()),
            None => w.cordoned.remove(node),
        };
        self.save(&w);
        Ok(Cordon::Done)
    }

    async fn drain(
        &self,
        node: &ResourceId,
        _timeout: std::time::Duration,
    ) -> Result<(), ProviderError> {
        let script = self.lock_scripts().get(node).cloned().unwrap_or_default();
        if script.drain_ms > 0 {
            tokio::time::sleep(Duration::from_millis(script.drain_ms)).await;
        }
        if let Some(m) = script.drain_fails {
            return Err(ProviderError::permanent(node, m));
        }
        let mut w = self.lock_world();
        if w.objects.contains_key(node) {
            w.drained.push(node.clone());
            self.save(&w);
        }
        Ok(())
    }

    /// A node is down when scripted so (`node_down`) or cordoned for maintenance now.
    async fn availability(
        &self,
        nodes: &[ResourceId],
    ) -> Vec<Result<NodeAvailability, ProviderError>> {
        let scripts = self.lock_scripts().clone();
        let w = self.lock_world();
        nodes
            .iter()
            .map(|n| {
                let script = scripts.get(n);
                if script.is_some_and(|s| s.availability_fails) {
                    return Err(ProviderError::transient(n, "node state unreadable"));
                }
                let mut down: Vec<String> = script
                    .and_then(|s| s.node_down.clone())
                    .into_iter()
                    .collect();
                if let Some(reason) = w.cordoned.get(n) {
                    down.push(format!("cordoned: {reason}"));
                }
                Ok(NodeAvailability {
                    exists: w.objects.contains_key(n),
                    down,
                })
            })
            .collect()
    }
}

/// The in-memory provider's disruption rule, by the first segment of a changed field, like
/// the real providers' rules by field: `podTemplate` restarts pods, `migConfig` drains the
/// node, `bios` reboots the host, `power` power-cycles it; anything else disrupts nothing.
pub fn disruption_of(path: &str) -> Disruption {
    match path.trim_start_matches('/').split('/').next().unwrap_or("") {
        "podTemplate" => Disruption::PodRestart,
        "migConfig" => Disruption::NodeDrain,
        "bios" => Disruption::HostReboot,
        "power" => Disruption::PowerCycle,
        _ => Disruption::None,
    }
}

fn merge(live: &mut serde_json::Value, desired: &serde_json::Value) {
    match (live, desired) {
        (serde_json::Value::Object(l), serde_json::Value::Object(d)) => {
            for (k, v) in d {
                merge(l.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (l, d) => *l = d.clone(),
    }
}
