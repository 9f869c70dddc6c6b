//! The provider contract: how the engine observes, diffs, applies and checks
//! the health of resources it does not understand itself.
//!
//! A provider owns every resource whose address starts with its name. The
//! engine calls `observe` (concurrently, bounded), then `diff` (pure), then,
//! when applying, `apply` and `health`. Errors say whether they are transient
//! (the engine retries with backoff) or permanent (the branch stops).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::resource::{Desired, ResourceId};

/// What the engine asks a provider to observe: one resource and the spec that
/// describes it (the desired spec when the manifest has it, otherwise the spec
/// last applied, e.g. for a resource about to be pruned).
#[derive(Debug, Clone)]
pub struct ObserveRequest<'a> {
    /// The resource.
    pub id: &'a ResourceId,
    /// Desired spec (plan) or last-applied spec (prune, drift).
    pub spec: &'a serde_json::Value,
    /// True when `spec` is what the manifest wants now; false when it is only
    /// the last-applied record (a provider must then not dry-run it).
    pub desired: bool,
    /// True when fleetform's last successful apply of this resource was this
    /// very spec (the inventory's digest matches). A provider may then skip an
    /// expensive check (a server-side dry-run) if it can prove from live state
    /// alone that nobody changed the resource since.
    pub unchanged: bool,
}

/// The live state of one resource as its provider sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observed {
    /// The resource.
    pub id: ResourceId,
    /// The live state, normalised by the provider into the shape of the desired spec.
    pub state: serde_json::Value,
    /// Provider data carried from observe to diff and apply (e.g. the server's
    /// dry-run result, an ETag, field managers); opaque to the engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private: Option<serde_json::Value>,
}

/// What applying a change does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Nothing to do: live state matches.
    NoOp,
    /// The resource does not exist yet.
    Create,
    /// Some fields differ and can be changed in place.
    Update,
    /// A field that cannot change in place differs: delete and create.
    Replace,
    /// The resource left the manifest and is in the inventory.
    Delete,
}

impl Action {
    /// True for the actions that destroy something.
    pub fn is_destructive(self) -> bool {
        matches!(self, Action::Replace | Action::Delete)
    }
}

/// One field that differs between the desired and the live state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// JSON pointer of the field, e.g. `/spec/driver/version`.
    pub path: String,
    /// Live value (`None` when absent). `"(sensitive)"` for secret fields.
    pub before: Option<serde_json::Value>,
    /// Desired value (`None` when it will be removed). `"(sensitive)"` for secret fields.
    pub after: Option<serde_json::Value>,
    /// The value is secret: `before`/`after` hold only `"(sensitive)"`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sensitive: bool,
    /// Who last changed the live value, when the provider knows (e.g. a
    /// Kubernetes field manager), so an operator's change can be told from a human's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_by: Option<String>,
}

/// The provider's verdict on one resource: what to do and which fields differ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// The resource.
    pub id: ResourceId,
    /// What to do.
    pub action: Action,
    /// Per-field differences (empty for `NoOp`; the whole spec for `Create`/`Delete` is not listed).
    #[serde(default)]
    pub fields: Vec<FieldChange>,
    /// Paths whose change forces a replacement.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires_replace: Vec<String>,
    /// What applying it does to the work running on the host (the provider's rule, see
    /// [`Disruption`]); `none` for a `NoOp`.
    #[serde(default, skip_serializing_if = "Disruption::is_none")]
    pub disruption: Disruption,
}

impl Change {
    /// A change with no field detail.
    pub fn new(id: ResourceId, action: Action) -> Self {
        Self {
            id,
            action,
            fields: Vec::new(),
            requires_replace: Vec::new(),
            disruption: Disruption::None,
        }
    }

    /// True when applying it takes a node out of service (a drain or worse): such a change
    /// is bounded by its rollout group and cordons its node first.
    pub fn is_disruptive(&self) -> bool {
        self.action != Action::NoOp && self.disruption.takes_node_down()
    }
}

/// What a change does to the work running where it lands, from least to most severe (the
/// derived order is the severity, so `max` picks the worse of two).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Disruption {
    /// Nothing running is touched (a ConfigMap, a label, a staged BIOS setting).
    #[default]
    None,
    /// Pods are replaced by their controller (a Deployment's pod template changed); the
    /// node keeps running its other work.
    PodRestart,
    /// A node's GPU workloads are evicted (MIG reconfiguration, a driver reload): the node
    /// is out of service until it is done, the host keeps running.
    NodeDrain,
    /// The host reboots (a staged BIOS, boot or secure-boot change made current, firmware
    /// activation, an OS reprovision).
    HostReboot,
    /// The host loses power (powered off, or off and on again).
    PowerCycle,
}

impl Disruption {
    /// Every class, most severe first (the order plans list them in).
    pub const MOST_SEVERE_FIRST: [Disruption; 5] = [
        Disruption::PowerCycle,
        Disruption::HostReboot,
        Disruption::NodeDrain,
        Disruption::PodRestart,
        Disruption::None,
    ];

    /// True for [`Disruption::None`] (for `skip_serializing_if`).
    pub fn is_none(&self) -> bool {
        *self == Disruption::None
    }

    /// True when the node is out of service while the change runs (drain or worse).
    pub fn takes_node_down(self) -> bool {
        self >= Disruption::NodeDrain
    }

    /// The kebab-case name, as in JSON plans (`host-reboot`).
    pub fn as_str(self) -> &'static str {
        match self {
            Disruption::None => "none",
            Disruption::PodRestart => "pod-restart",
            Disruption::NodeDrain => "node-drain",
            Disruption::HostReboot => "host-reboot",
            Disruption::PowerCycle => "power-cycle",
        }
    }
}

impl std::fmt::Display for Disruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the engine hands a provider when applying.
#[derive(Debug, Clone)]
pub struct ApplyContext {
    /// Every call must finish within this; the engine enforces it too.
    pub timeout: Duration,
    /// Apply for real (false) or only check that the server would accept it (true).
    pub dry_run: bool,
}

impl Default for ApplyContext {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            dry_run: false,
        }
    }
}

/// The request to apply one change: the change, the desired resource (absent
/// for a delete) and the last observation.
#[derive(Debug, Clone)]
pub struct ApplyRequest<'a> {
    /// What to do.
    pub change: &'a Change,
    /// The desired resource; `None` for `Delete`.
    pub desired: Option<&'a Desired>,
    /// The spec last applied (needed to delete what the manifest no longer names).
    pub last_applied: Option<&'a serde_json::Value>,
    /// What observe saw.
    pub observed: Option<&'a Observed>,
}

/// The result of a successful apply: the state the engine records as "last
/// applied" and compares against for drift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// The resource.
    pub id: ResourceId,
    /// The spec that was applied (what drift compares with).
    pub spec: serde_json::Value,
}

/// Whether an applied resource is ready for its dependents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "message", rename_all = "kebab-case")]
pub enum Health {
    /// Ready: dependents may proceed.
    Ready,
    /// Not ready yet; poll again.
    Progressing(String),
    /// Will not become ready without intervention.
    Failed(String),
}

/// Whether an error is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Retry with backoff (timeouts, 5xx, 429, connection refused).
    Transient,
    /// Do not retry: stop this branch (bad credentials, rejected object, unsupported feature).
    Permanent,
}

/// A provider failure, typed for the retry policy. `Display` is this error's
/// own message; the cause is reachable through `source()` and printed once, at the edge.
#[derive(Debug, thiserror::Error)]
#[error("{id}: {message}")]
pub struct ProviderError {
    /// The resource (or endpoint) the error is about.
    pub id: ResourceId,
    /// Transient or permanent.
    pub kind: ErrorKind,
    /// What failed, in words a person can act on. Never contains a secret.
    pub message: String,
    /// Server-suggested delay before retrying (e.g. `Retry-After`).
    pub retry_after: Option<Duration>,
    /// The underlying cause.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ProviderError {
    /// A retryable error.
    pub fn transient(id: &ResourceId, message: impl Into<String>) -> Self {
        Self {
            id: id.clone(),
            kind: ErrorKind::Transient,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// A non-retryable error.
    pub fn permanent(id: &ResourceId, message: impl Into<String>) -> Self {
        Self {
            id: id.clone(),
            kind: ErrorKind::Permanent,
            message: message.into(),
            retry_after: None,
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Attaches a server-suggested retry delay.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// True when the engine should retry.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

/// A provider: the engine's hands on one kind of system.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The address prefix it owns: `kube`, `redfish`, `ngc`, `gpu`.
    fn name(&self) -> &'static str;

    /// Reads the live state of each requested resource. The result has one
    /// entry per request, in order: `Ok(None)` when the resource does not exist.
    /// One failing resource must not fail the others.
    async fn observe(
        &self,
        requests: &[ObserveRequest<'_>],
    ) -> Vec<Result<Option<Observed>, ProviderError>>;

    /// Compares desired with observed, ignoring what the server owns (defaults,
    /// status, other managers' fields), so a clean system shows `NoOp`. Pure.
    fn diff(&self, desired: &Desired, observed: Option<&Observed>)
    -> Result<Change, ProviderError>;

    /// Carries out one change. Must be idempotent: the engine may repeat it
    /// after a crash.
    async fn apply(
        &self,
        request: &ApplyRequest<'_>,
        cx: &ApplyContext,
    ) -> Result<Applied, ProviderError>;

    /// How many resources this provider wants per `observe` call, when it
    /// knows better than the engine's default (e.g. the Kubernetes provider
    /// reads a whole kind with one LIST, so it wants large batches).
    fn observe_batch(&self) -> Option<usize> {
        None
    }

    /// Whether an applied resource is ready for its dependents.
    async fn health(
        &self,
        id: &ResourceId,
        spec: &serde_json::Value,
    ) -> Result<Health, ProviderError> {
        let _ = (id, spec);
        Ok(Health::Ready)
    }

    /// The node-maintenance capability (cordon and drain), when this provider
    /// manages the nodes that [`Desired::maintenance`] names. The engine asks for
    /// it before a disruptive change; `None` (the default) makes such a change
    /// fail with "provider `x` cannot cordon nodes".
    fn maintenance(&self) -> Option<&dyn NodeMaintenance> {
        None
    }

    /// Adjusts the desired spec of a resource that drifted so that applying it
    /// takes the drifted fields back from whoever changed them (a heal is a
    /// deliberate override; a normal apply reports such conflicts instead).
    /// The default leaves the spec unchanged. The Kubernetes provider sets
    /// `force`, for a server-side apply that takes field ownership.
    fn prepare_heal(&self, spec: &mut serde_json::Value) {
        let _ = spec;
    }

    /// What deleting a resource of this provider does to running work (the plan asks when a
    /// resource left the manifest; `diff` is not called for deletes). The default: nothing.
    fn delete_disruption(&self, id: &ResourceId) -> Disruption {
        let _ = id;
        Disruption::None
    }

    /// The tenant a resource of this provider belongs to, for metric labels
    /// (e.g. the cluster of a Kubernetes object); `None` for fleet-wide ones.
    fn tenant<'a>(&self, id: &'a ResourceId) -> Option<&'a str> {
        let _ = id;
        None
    }
}

/// Cordon and drain of Kubernetes-like nodes around a disruptive change to
/// another resource (a BIOS change that reboots the host). A capability some
/// providers have, reached through [`Provider::maintenance`].
#[async_trait]
pub trait NodeMaintenance: Send + Sync {
    /// Cordons (`reason` given) or releases (`None`) a node for maintenance.
    /// The claim is the provider's own, separate from whatever the manifest
    /// says about the node, so releasing it never uncordons a node someone else
    /// (or break/fix) cordoned. A node that does not exist yet is not an error:
    /// nothing can be scheduled on it.
    async fn cordon(
        &self,
        node: &ResourceId,
        reason: Option<&str>,
    ) -> Result<Cordon, ProviderError>;

    /// Drains a node cordoned for maintenance: evicts what runs on it (as
    /// `kubectl drain` does: through the eviction API, so disruption budgets hold; pods of
    /// DaemonSets and static pods stay) and waits until it is gone, at most `timeout`. Called
    /// after [`NodeMaintenance::cordon`] and before the disruptive change. A node that does
    /// not exist has nothing to drain.
    async fn drain(&self, node: &ResourceId, timeout: Duration) -> Result<(), ProviderError>;

    /// Whether each node is out of service now, read from the live system (for a
    /// Kubernetes Node: cordoned, NotReady, or under a maintenance claim), so rollout budgets
    /// count nodes that are already down before taking more. One answer per node, in order;
    /// one failing node must not fail the others.
    async fn availability(
        &self,
        nodes: &[ResourceId],
    ) -> Vec<Result<NodeAvailability, ProviderError>>;
}

/// What [`NodeMaintenance::availability`] found for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAvailability {
    /// The node exists (a node not provisioned yet is not counted as down: it never served).
    pub exists: bool,
    /// Why it is out of service now, e.g. `cordoned`, `NotReady`, `under maintenance
    /// (fleetform: ...)`; empty when it serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub down: Vec<String>,
}

impl NodeAvailability {
    /// True when the node exists and is out of service.
    pub fn is_down(&self) -> bool {
        self.exists && !self.down.is_empty()
    }
}

/// What a [`NodeMaintenance::cordon`] call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cordon {
    /// The node exists and is now cordoned (or released).
    Done,
    /// There is no such node (not provisioned yet).
    NoSuchNode,
}
