//! `NIMService.spec`: an NVIDIA NIM served on a pool.

use serde::{Deserialize, Serialize};

use super::one;

/// `NIMService.spec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NimServiceSpec {
    /// Owning tenant.
    pub tenant: String,
    /// Pool it runs on (the tenant's).
    pub pool: String,
    /// NIM image, e.g. `nvcr.io/nim/meta/llama-3.1-8b-instruct:1.8`.
    pub image: String,
    /// Model name, when the image serves several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Replicas (default 1).
    #[serde(default = "one")]
    pub replicas: u32,
    /// Whole GPUs per replica (default 1); ignored when `migProfile` is set.
    #[serde(default = "one")]
    pub gpus_per_replica: u32,
    /// One MIG device of this profile per replica (MIG pools only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mig_profile: Option<String>,
    /// Namespace in the tenant cluster (default `nim`).
    #[serde(default = "nim_namespace")]
    pub namespace: String,
    /// Model cache (NIMCache PVC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<NimCache>,
}

fn nim_namespace() -> String {
    "nim".into()
}

/// NIMCache storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NimCache {
    /// PVC size, e.g. `200Gi`.
    pub size: String,
    /// StorageClass; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}
