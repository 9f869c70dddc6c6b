//! fleetform's provider contract: what every provider compiles against, and
//! nothing else.
//!
//! No I/O and no runtime: the [`Provider`] trait and its request and response
//! types, resources and their addresses ([`address`] has one function per
//! kind of address, used by compile and by the providers alike), [`Sensitive`]
//! values, secret references, the [`NodeMaintenance`] capability, and the
//! [`Registry`] through which providers are built by name from configuration.
//! The engine re-exports these modules at their old paths
//! (`fleetform_engine::provider`, `::resource`, `::sensitive`, `::secret`).
//!
//! The one exception to "no I/O" is [`secret::LocalSecrets`], which reads an
//! environment variable or a file with `std` alone: it is every provider's
//! default resolver, and moving it elsewhere would tie providers to the engine.
#![warn(missing_docs)]

pub mod address;
pub mod provider;
pub mod registry;
pub mod resource;
pub mod secret;
pub mod sensitive;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(feature = "work-counters")]
pub mod work;

pub use provider::{
    Action, Applied, ApplyContext, ApplyRequest, Change, Cordon, Disruption, ErrorKind,
    FieldChange, Health, NodeAvailability, NodeMaintenance, ObserveRequest, Observed, Provider,
    ProviderError,
};
pub use registry::{BuildError, ClusterRef, ProviderConfig, Registry};
pub use resource::{Dependency, Desired, Origin, Pin, ResourceId, RolloutGroup};
pub use sensitive::Sensitive;
