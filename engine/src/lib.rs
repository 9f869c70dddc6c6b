//! fleetform's engine: everything between a fleet manifest in git and a
//! changed world, independent of any particular provider.
//!
//! The modules follow the flow of data (see DESIGN.md), one folder a stage:
//! `load` → `validate` (into the `manifest` model) → `compile` → `observe` → `plan`
//! (with `graph`, `pins` and `breakfix`) → `apply`, with `state` beside them; `session`
//! runs them in order for the CLI and `serve`. Only `apply` and the providers touch the network;
//! every other stage is a plain function.
#![warn(missing_docs)]

pub mod catalog;
pub mod compat;
pub mod diag;
pub mod load;
pub mod manifest;
pub mod serve;
pub mod sharing;
pub mod source;
pub mod synth;
pub mod validate;

// The provider contract lives in its own crate (no I/O; what providers
// compile against); these re-exports keep the engine's paths.
pub use fleetform_contract::{address, provider, registry, resource, secret, sensitive};
pub use provider::{
    Action, Applied, ApplyContext, Change, Cordon, FieldChange, Health, ObserveRequest, Observed,
    Provider, ProviderError,
};
pub use resource::{Dependency, Desired, Origin, ResourceId, RolloutGroup};
pub use sensitive::Sensitive;
pub mod apply;
pub mod compile;
pub mod observe;
pub mod plan;
pub use plan::{breakfix, graph, pins};
pub mod reconcile;
pub mod report;
pub mod session;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
