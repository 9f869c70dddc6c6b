//! fleetform's `nico` provider: in a site that NVIDIA Infra Controller (NICo) manages,
//! fleetform never talks to BMCs; it declares instance types, allocations, VPCs, subnets,
//! SSH key groups, operating systems and instances through NICo's REST API
//! (`/v2/org/{org}/nico/...`, API 1.5.0).
//!
//! - Addresses: `nico:<site>/<kind>/<name>` ([`nico_id`]); the spec is [`NicoSpec`].
//! - Observe lists each kind once per call, page by page, and finds objects by name.
//! - Apply creates or adopts by name (only an object carrying fleetform's ownership mark),
//!   updates in place with PATCH, and deletes (202, then polled until gone).
//! - Health is the object's status reaching its ready state.
//!
//! See docs/providers/nico.md.
#![warn(missing_docs)]

pub mod client;
pub mod kinds;
pub mod provider;
pub mod spec;

pub use client::{ApiError, NicoClient, RateLimiter};
pub use kinds::{KINDS, Kind, OWNER_LABEL, OWNER_MARK, OWNER_VALUE, Owner};
pub use provider::NicoProvider;
pub use spec::{NicoSpec, ObjectRef, PROVIDER, nico_id};

/// Registers the nico provider: tokens are read through the configuration's secrets.
pub fn register(registry: &mut fleetform_contract::Registry) {
    registry.register(PROVIDER, |config| {
        Ok(std::sync::Arc::new(NicoProvider::new(
            config.secrets.clone(),
        )))
    });
}
