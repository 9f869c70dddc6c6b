//! `Fleet.spec.registries`: where images come from (NGC, or a mirror standing in for it).

use serde::{Deserialize, Serialize};

use super::is_false;
use crate::secret::SecretRef;

/// `registries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[derive(Default)]
pub struct Registries {
    /// NGC (`nvcr.io`); default `https://nvcr.io`.
    #[serde(default)]
    pub ngc: Registry,
    /// Apply image references pinned to the digest their tag resolved to at
    /// plan time (`repo:tag@sha256:...`), so a tag moving upstream changes a
    /// cluster only through a planned update.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pin_digests: bool,
}

/// One registry endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registry {
    /// `https://host[:port]`.
    pub endpoint: String,
    /// Skip TLS verification (test registries only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure: bool,
    /// PEM bundle to trust, a path relative to the fleet directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Registry user (NGC: `$oauthtoken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Fleet-wide pull credential (e.g. the NGC API key for operator images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretRef>,
}

impl Default for Registry {
    fn default() -> Self {
        Self {
            endpoint: "https://nvcr.io".into(),
            insecure: false,
            ca_bundle: None,
            username: None,
            api_key: None,
        }
    }
}
