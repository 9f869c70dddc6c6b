//! fleetform's gpu provider: node-side GPU inventory through NVML, read-only.
//!
//! - [`collect()`] reads this node's GPUs through NVML (dlopened at run time;
//!   [`GpuError::NvmlUnavailable`] without a driver or GPU). It never calls a setter.
//! - [`Inventory`] is the versioned report (`fleetform.dev/v1alpha1`, `GpuInventory`),
//!   stored per node in the ConfigMap `gpu-inventory/<node>` (see docs/providers/gpu.md);
//!   [`Inventory::from_json`] reads it back and [`render_text`] prints it for people.
//! - [`node_health`] / [`gpu_health`] give healthy / degraded / failed verdicts with reasons.
//! - [`compare`] lists [`GpuDrift`]s between a [`PoolExpectation`] and an inventory.
//! - [`mig_profiles`], [`fits`] and [`layout_fits`] are the MIG catalogue the
//!   manifest validator reuses.
//! - `fleet` (feature `fleet`, off by default, needs the engine): the manifest's pool
//!   expectations, node conditions with staleness, and GPU drift findings for the engine's
//!   plan and drift.
//! - `GpuProvider` (feature `provider`, on by default) is the `gpu` provider over an
//!   `InventorySource`; it depends on the provider contract only.
#![warn(missing_docs)]

pub mod collect;
#[cfg(feature = "fleet")]
pub mod fleet;
pub mod health;
pub mod inventory;
pub mod mig;
pub mod pool;
#[cfg(feature = "provider")]
pub mod provider;
pub mod render;
mod time;

pub use collect::{CollectOptions, GpuError, collect, collect_with};
pub use health::{HealthState, Verdict, gpu_health, node_health, xid_severity};
pub use inventory::{Gpu, Inventory, InventoryError};
pub use mig::{GpuMig, MigLayout, MigProfile, fits, layout_fits, mig_profiles, model_matches};
pub use pool::{DriftKind, GpuDrift, PoolExpectation, compare};
#[cfg(feature = "provider")]
pub use provider::{DirSource, GpuProvider, InventorySource, SourceError, register};
pub use render::render_text;
