//! Credential references. The manifest never holds a secret, only where to
//! find one: an environment variable, a file, or a Kubernetes Secret.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sensitive::Sensitive;

/// Where a secret lives. Exactly one of the forms:
/// `{env: NGC_API_KEY}`, `{file: /run/secrets/bmc}`,
/// `{secret: {namespace: ..., name: ..., key: ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum SecretRef {
    /// An environment variable of the fleetform process.
    Env(String),
    /// A file; relative paths are relative to the fleet config's directory.
    File(PathBuf),
    /// A key of a Kubernetes Secret in the management cluster.
    Secret(KubeSecretRef),
}

/// A key of a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeSecretRef {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
    /// Key inside `data`.
    pub key: String,
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(v) => write!(f, "env:{v}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
            SecretRef::Secret(s) => write!(f, "secret:{}/{}#{}", s.namespace, s.name, s.key),
        }
    }
}

/// Why a secret could not be read. Names the reference, never the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable is unset or not UTF-8.
    #[error("secret reference {reference}: environment variable is not set")]
    EnvMissing {
        /// The reference.
        reference: String,
    },
    /// The file could not be read.
    #[error("secret reference {reference}: cannot read file")]
    File {
        /// The reference.
        reference: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No resolver for this kind of reference is configured.
    #[error("secret reference {reference}: {why}")]
    Unsupported {
        /// The reference.
        reference: String,
        /// Why it cannot be resolved here.
        why: String,
    },
}

/// Resolves secret references. The local resolver handles `env` and `file`;
/// a Kubernetes-backed one can be layered on top for `secret`.
pub trait SecretResolver: Send + Sync {
    /// Reads the secret behind a reference.
    fn resolve(&self, reference: &SecretRef) -> Result<Sensitive<String>, SecretError>;
}

/// Resolves `env` and `file` references on the local machine.
#[derive(Debug, Clone, Default)]
pub struct LocalSecrets {
    base: PathBuf,
}

impl LocalSecrets {
    /// Resolves relative `file` references against `base`.
    pub fn new(base: impl AsRef<Path>) -> Self {
        Self {
            base: base.as_ref().to_path_buf(),
        }
    }
}

impl SecretResolver for LocalSecrets {
    fn resolve(&self, reference: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        match reference {
            SecretRef::Env(name) => {
                std::env::var(name)
                    .map(Sensitive::new)
                    .map_err(|_| SecretError::EnvMissing {
                        reference: reference.to_string(),
                    })
            }
            SecretRef::File(path) => {
                let full = if path.is_absolute() {
                    path.clone()
                } else {
                    self.base.join(path)
                };
                std::fs::read_to_string(&full)
                    // Files written by `echo` end in a newline that is not part of the secret.
                    .map(|s| Sensitive::new(s.trim_end_matches(['\n', '\r']).to_string()))
                    .map_err(|source| SecretError::File {
                        reference: reference.to_string(),
                        source,
                    })
            }
            SecretRef::Secret(_) => Err(SecretError::Unsupported {
                reference: reference.to_string(),
                why: "Kubernetes Secret references need the kube provider's resolver".into(),
            }),
        }
    }
}

/// Resolves every reference to a placeholder naming it, reading nothing: for
/// commands that compile without talking to providers (`graph`), so they work
/// where the secrets are not readable. What it yields must never be applied.
#[derive(Debug, Clone, Copy, Default)]
pub struct Placeholders;

impl SecretResolver for Placeholders {
    fn resolve(&self, reference: &SecretRef) -> Result<Sensitive<String>, SecretError> {
        Ok(Sensitive::new(format!("(placeholder for {reference})")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_read_nothing_and_name_the_reference() {
        let s = Placeholders
            .resolve(&SecretRef::File("/surely/not/here".into()))
            .unwrap();
        assert_eq!(s.expose(), "(placeholder for file:/surely/not/here)");
    }

    #[test]
    fn file_reference_is_read_and_trailing_newline_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "s3cret\n").unwrap();
        let s = LocalSecrets::new(dir.path())
            .resolve(&SecretRef::File("key".into()))
            .unwrap();
        assert_eq!(s.expose(), "s3cret");
    }

    #[test]
    fn missing_env_reference_names_the_variable_not_a_value() {
        let err = LocalSecrets::default()
            .resolve(&SecretRef::Env("FLEETFORM_TEST_SURELY_UNSET".into()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "secret reference env:FLEETFORM_TEST_SURELY_UNSET: environment variable is not set"
        );
    }
}
