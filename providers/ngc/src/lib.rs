//! fleetform's `ngc` provider: container images in OCI registries (nvcr.io and any
//! distribution-compatible registry) as data the fleet depends on.
//!
//! - `ngc:image/<tenant>/<registry-host>/<repository>:<tag>` ([`ImageSpec`]): resolves the tag
//!   to a manifest digest (`HEAD`, observed state `{digest}`); a missing tag is a permanent error.
//! - `ngc:access/<tenant>/<registry-host>` ([`AccessSpec`]): checks that the tenant's
//!   credentials can pull every listed image.
//! - Pull secrets for the kube provider: [`dockerconfigjson`], [`pull_secret_object`],
//!   [`PULL_SECRET_SENSITIVE_POINTER`].
//!
//! Credentials are secret references resolved per observe and held as `Sensitive`; no error,
//! log line or `Debug` output carries them. See docs/providers/ngc.md.
#![warn(missing_docs)]

pub mod provider;
pub mod pull_secret;
pub mod registry;
pub mod spec;

pub use provider::{NgcProvider, resolve_digest};
pub use pull_secret::{
    PULL_SECRET_SENSITIVE_POINTER, PULL_SECRET_TYPE, dockerconfigjson, pull_secret_object,
};
pub use registry::{MANIFEST_ACCEPT, RegistryClient, RegistryError};
pub use spec::{AccessSpec, Credentials, ImageSpec, PROVIDER, RegistrySpec};

/// Registers the ngc provider: registry credentials are read through the configuration's secrets.
pub fn register(registry: &mut fleetform_contract::Registry) {
    registry.register(PROVIDER, |config| {
        Ok(std::sync::Arc::new(NgcProvider::new(
            config.secrets.clone(),
        )))
    });
}
