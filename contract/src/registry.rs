//! The provider registry: providers register a factory under their name, and
//! whoever runs the engine (the CLI, `serve`) builds every registered provider
//! from one [`ProviderConfig`]. The engine itself never names a provider.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::provider::Provider;
use crate::secret::{SecretRef, SecretResolver};

/// How to reach one Kubernetes cluster named in addresses (the management
/// cluster or a tenant's), as compile found it in the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRef {
    /// The kubeconfig (a file reference).
    pub kubeconfig: SecretRef,
    /// The kubeconfig context.
    pub context: Option<String>,
}

/// What a provider is built from: the fleet's configuration as compiled, and
/// how to read secrets.
#[derive(Clone)]
pub struct ProviderConfig {
    /// The Kubernetes clusters named in addresses, by name.
    pub clusters: BTreeMap<String, ClusterRef>,
    /// Resolves secret references (BMC passwords, registry tokens).
    pub secrets: Arc<dyn SecretResolver>,
    /// Where relative `file` references (secrets, kubeconfigs) are resolved.
    pub secrets_base: PathBuf,
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("clusters", &self.clusters)
            .field("secrets_base", &self.secrets_base)
            .finish_non_exhaustive()
    }
}

/// Why a provider could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    /// The provider.
    pub provider: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
    /// The underlying cause.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BuildError {
    /// An error building `provider`.
    pub fn new(provider: &str, message: impl Into<String>) -> Self {
        Self {
            provider: provider.to_string(),
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }
}

/// Builds one provider from the configuration.
pub type Factory =
    Arc<dyn Fn(&ProviderConfig) -> Result<Arc<dyn Provider>, BuildError> + Send + Sync>;

/// Provider factories by name (the address prefix each provider owns).
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, Factory>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the factory of the provider `name`; a later registration of
    /// the same name replaces the earlier one (tests swap in their own).
    pub fn register(
        &mut self,
        name: &str,
        factory: impl Fn(&ProviderConfig) -> Result<Arc<dyn Provider>, BuildError>
        + Send
        + Sync
        + 'static,
    ) -> &mut Self {
        self.factories.insert(name.to_string(), Arc::new(factory));
        self
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// Builds every registered provider, in name order. The first failure stops.
    pub fn build(&self, config: &ProviderConfig) -> Result<Vec<Arc<dyn Provider>>, BuildError> {
        self.factories.values().map(|f| f(config)).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::provider::{
        Applied, ApplyContext, ApplyRequest, Change, ObserveRequest, Observed, ProviderError,
    };
    use crate::resource::Desired;
    use crate::secret::LocalSecrets;

    struct Named(&'static str);

    #[async_trait]
    impl Provider for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        async fn observe(
            &self,
            requests: &[ObserveRequest<'_>],
        ) -> Vec<Result<Option<Observed>, ProviderError>> {
            requests.iter().map(|_| Ok(None)).collect()
        }
        fn diff(&self, desired: &Desired, _: Option<&Observed>) -> Result<Change, ProviderError> {
            Ok(Change::new(
                desired.id.clone(),
                crate::provider::Action::Create,
            ))
        }
        async fn apply(
            &self,
            request: &ApplyRequest<'_>,
            _: &ApplyContext,
        ) -> Result<Applied, ProviderError> {
            Err(ProviderError::permanent(&request.change.id, "read-only"))
        }
    }

    fn config() -> ProviderConfig {
        ProviderConfig {
            clusters: BTreeMap::new(),
            secrets: Arc::new(LocalSecrets::default()),
            secrets_base: PathBuf::from("."),
        }
    }

    #[test]
    fn builds_every_registered_provider_by_name() {
        let mut r = Registry::new();
        r.register("b", |_| Ok(Arc::new(Named("b"))))
            .register("a", |_| Ok(Arc::new(Named("a"))));
        assert_eq!(r.names().collect::<Vec<_>>(), ["a", "b"]);
        let built = r.build(&config()).unwrap();
        let names: Vec<_> = built.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["a", "b"]);
        // The capabilities a provider does not have default to none.
        assert!(built[0].maintenance().is_none());
    }

    #[test]
    fn a_failing_factory_says_which_provider_and_why() {
        let mut r = Registry::new();
        r.register("kube", |_| Err(BuildError::new("kube", "no kubeconfig")));
        let err = r.build(&config()).err().unwrap();
        assert_eq!(
            (err.provider.as_str(), err.to_string().as_str()),
            ("kube", "no kubeconfig")
        );
    }
}
