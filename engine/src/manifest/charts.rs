//! Chart releases in the manifest: where an operator's Helm chart comes from and the values
//! added over the ones fleetform derives from the typed fields.

use serde::{Deserialize, Serialize};

use crate::secret::SecretRef;

/// `Fleet.spec.charts`: the default chart repository and release settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartDefaults {
    /// Where charts come from unless an operator's `chart.repository` says otherwise:
    /// `oci://host/path`, `https://host/path` (a Helm repository with an `index.yaml`), or a
    /// local directory relative to the fleet directory (holding `<chart>-<version>/`,
    /// `<chart>-<version>.tgz` or `<chart>/`). Default: each chart's upstream repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// Repository user (NGC: `$oauthtoken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Repository password or API key (a secret reference, never inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// Skip TLS verification (test repositories only).
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub insecure: bool,
    /// PEM bundle to trust, relative to the fleet directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
    /// Wait for each rendered workload (Deployment, DaemonSet, StatefulSet) to be ready before
    /// its dependents proceed (default true). Off only where no controllers run (a sandbox).
    #[serde(default = "super::yes")]
    pub wait: bool,
}

impl Default for ChartDefaults {
    fn default() -> Self {
        Self {
            repository: None,
            username: None,
            password: None,
            insecure: false,
            ca_bundle: None,
            wait: true,
        }
    }
}

/// An operator's `chart`: overrides of where its chart comes from. Credentials and TLS
/// settings given here replace the fleet default's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartSource {
    /// Repository (same forms as `Fleet.spec.charts.repository`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The chart's name in the repository, when it differs from the usual one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Repository user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Repository password or API key (a secret reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// Skip TLS verification (test repositories only).
    #[serde(default, skip_serializing_if = "super::is_false")]
    pub insecure: bool,
    /// PEM bundle to trust, relative to the fleet directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<String>,
}
