//! Getting from command-line arguments to compiled resources and providers:
//! read the fleet (a directory or a git revision), validate, compile, and
//! build the providers the resources need.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use fleetform_engine::compile::{self, Compiled};
use fleetform_engine::diag::Diagnostic;
use fleetform_engine::load::{self, SourceFile};
use fleetform_engine::manifest::Fleet;
use fleetform_engine::observe::Providers;
use fleetform_engine::registry::{ProviderConfig, Registry};
use fleetform_engine::secret::{LocalSecrets, SecretRef, SecretResolver};
use fleetform_engine::source::{GitRef, GitSource, SourceSpec};
use fleetform_engine::validate;

/// Where the fleet comes from.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// A fleet directory on disk (ignored when --repo is given).
    #[arg(long, default_value = ".", env = "FLEETFORM_FLEET")]
    pub fleet: PathBuf,
    /// A git repository (path, file://, https://, ssh://) to read the fleet from.
    #[arg(long, env = "FLEETFORM_REPO")]
    pub repo: Option<String>,
    /// Branch, `tag:NAME`, or a commit id to read from --repo.
    #[arg(long = "ref", default_value = "main")]
    pub reference: String,
    /// The fleet's directory inside the repository.
    #[arg(long, default_value = "")]
    pub path: String,
    /// Where relative secret and kubeconfig file references are resolved
    /// (default: the fleet directory; the current directory with --repo).
    #[arg(long, env = "FLEETFORM_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Cache of fetched repositories.
    #[arg(long, env = "FLEETFORM_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// A fleet read, validated and compiled at one revision.
pub struct Loaded {
    /// The revision: a commit id, or `dir:<digest>` for a directory.
    pub revision: String,
    /// The validated model.
    pub fleet: Fleet,
    /// The compiled resources (chart releases expanded once [`expand_releases`] ran).
    pub compiled: Compiled,
    /// The chart releases expanded into `compiled.resources`.
    pub releases: Vec<fleetform_charts::ReleaseInfo>,
}

impl Loaded {
    /// Digest of the chart packages the releases were rendered from (for the plan digest).
    pub fn charts_digest(&self) -> Option<String> {
        (!self.releases.is_empty()).then(|| fleetform_charts::charts_digest(&self.releases))
    }
}

/// Capabilities read from the live clusters (plan time), and the versions the manifest
/// declares for servers that report no release version (an API server built from source
/// says `v0.0.0-master+...`).
struct LiveClusters(fleetform_kube::KubeProvider, BTreeMap<String, String>);

#[async_trait::async_trait]
impl fleetform_charts::ClusterInfo for LiveClusters {
    async fn capabilities(&self, cluster: &str) -> Result<fleetform_charts::Capabilities, String> {
        let declared = fleetform_charts::Declared(self.1.clone());
        let c = match self.0.capabilities(cluster).await {
            Ok(c) => c,
            // A cluster that cannot be reached cannot be observed either: the plan says so for
            // each of its objects. Rendering for its declared version keeps the rest planned.
            Err(e) => {
                tracing::warn!(
                    cluster,
                    error = %fleetform_engine::plan::error_chain(&e),
                    "cannot read what the cluster serves; rendering its charts for the Kubernetes version the manifest declares"
                );
                return declared.capabilities(cluster).await;
            }
        };
        let kube_version = if c.kube_version.starts_with("v0.0.0") {
            declared.capabilities(cluster).await?.kube_version
        } else {
            c.kube_version
        };
        Ok(fleetform_charts::Capabilities {
            kube_version,
            api_versions: c.api_versions,
            kinds: c.kinds,
        })
    }
}

/// Fetches, renders and expands the compiled chart releases into kube resources. With
/// `live`, the renderer sees each target cluster's real version and API list; without, the
/// versions the manifest declares (commands that must not reach a cluster, e.g. `graph`).
pub async fn expand_releases(
    fleet: &Fleet,
    compiled: &mut Compiled,
    secrets_base: &Path,
    secrets: Arc<dyn SecretResolver>,
    live: bool,
) -> Result<Vec<fleetform_charts::ReleaseInfo>, Vec<Diagnostic>> {
    if compiled.releases.is_empty() {
        return Ok(Vec::new());
    }
    let cache = fleetform_charts::default_cache();
    let expander = fleetform_charts::Expander::new(
        fleetform_charts::Fetcher::new(
            secrets_base.to_path_buf(),
            cache.join("charts"),
            secrets.clone(),
        ),
        None,
        Some(cache.join("renders")),
    );
    let declared: BTreeMap<String, String> = fleet
        .tenants
        .iter()
        .map(|t| (t.name().to_string(), t.spec.kubernetes.version.clone()))
        .collect();
    let result = if live {
        let mut clusters = BTreeMap::new();
        for (name, c) in &compiled.clusters {
            if let Ok(path) = kubeconfig_path(&c.kubeconfig, secrets_base) {
                let mut cfg = fleetform_kube::ClusterConfig::new(path);
                cfg.context = c.context.clone();
                clusters.insert(name.clone(), cfg);
            }
        }
        let info = LiveClusters(fleetform_kube::KubeProvider::new(clusters), declared);
        expander.expand(compiled, &info).await
    } else {
        expander
            .expand(compiled, &fleetform_charts::Declared(declared))
            .await
    };
    result.map_err(|errors| {
        errors
            .into_iter()
            .map(|e| {
                Diagnostic::error("chart-release", e.to_string())
                    .at(Some(fleetform_engine::diag::Span {
                        file: e.origin.file.clone(),
                        line: e.origin.line,
                        column: e.origin.column,
                    }))
                    .hint("nothing of this release is planned; fix the chart source, version or values")
            })
            .collect()
    })
}

/// `validate`'s chart check: each operator's values against its chart's `values.schema.json`
/// (and its enabled subcharts'), located at the manifest line that sets the value. Charts in
/// local directories are always read; remote ones only with `fetch_remote` (validate stays
/// offline by default, and says what it left to plan). No secret is read: a remote chart
/// that needs credentials is reported as not checked.
pub async fn check_chart_values(fleet: &Fleet, base: &Path, fetch_remote: bool) -> Vec<Diagnostic> {
    let placeholders = fleetform_engine::secret::Placeholders;
    let Ok(compiled) = compile::compile(fleet, &placeholders) else {
        return Vec::new();
    };
    let (local, remote): (Vec<_>, Vec<_>) = compiled.releases.into_iter().partition(|r| {
        r.repository.as_deref().is_some_and(|repo| {
            !repo.starts_with("oci://")
                && !repo.starts_with("http://")
                && !repo.starts_with("https://")
        })
    });
    let mut releases = local;
    let mut out = Vec::new();
    if fetch_remote {
        releases.extend(remote);
    } else if !remote.is_empty() {
        out.push(Diagnostic::warning(
            "chart-values-unchecked",
            format!(
                "{} chart release(s) come from remote repositories and were not checked against their values schemas",
                remote.len()
            ),
        )
        .hint("pass --fetch-charts to fetch them now; plan checks them in any case"));
    }
    if releases.is_empty() {
        return out;
    }
    let cache = fleetform_charts::default_cache();
    let expander = fleetform_charts::Expander::new(
        fleetform_charts::Fetcher::new(
            base.to_path_buf(),
            cache.join("charts"),
            Arc::new(placeholders),
        ),
        None,
        None,
    );
    let span = |o: &fleetform_engine::resource::Origin| fleetform_engine::diag::Span {
        file: o.file.clone(),
        line: o.line,
        column: o.column,
    };
    let (rejected, unchecked) = expander.check_values(&releases).await;
    for e in rejected {
        out.push(
            Diagnostic::error("chart-values", e.to_string())
                .at(Some(span(&e.origin)))
                .hint("change or remove the value; the chart's values.schema.json says what it accepts"),
        );
    }
    for e in unchecked {
        out.push(
            Diagnostic::warning("chart-values-unchecked", format!("not checked: {e}"))
                .at(Some(span(&e.origin))),
        );
    }
    out
}

/// Why the fleet could not be loaded: located diagnostics, or another error.
pub enum LoadFailure {
    /// Problems in the manifest, with the files to render snippets from.
    Invalid(Vec<Diagnostic>, Vec<SourceFile>),
    /// Anything else (git, I/O).
    Other(anyhow::Error),
}

impl From<anyhow::Error> for LoadFailure {
    fn from(e: anyhow::Error) -> Self {
        LoadFailure::Other(e)
    }
}

/// Parses `--ref`: a 40-hex commit, `tag:NAME`, or a branch.
pub fn git_ref(s: &str) -> GitRef {
    if s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        GitRef::Commit(s.to_string())
    } else if let Some(t) = s.strip_prefix("tag:") {
        GitRef::Tag(t.to_string())
    } else {
        GitRef::Branch(s.strip_prefix("refs/heads/").unwrap_or(s).to_string())
    }
}

impl SourceArgs {
    /// The secret resolver for this invocation.
    pub fn secrets(&self) -> Arc<dyn SecretResolver> {
        Arc::new(LocalSecrets::new(self.secrets_base()))
    }

    /// The directory relative secret references are resolved against.
    pub fn secrets_base(&self) -> PathBuf {
        match (&self.secrets_dir, &self.repo) {
            (Some(d), _) => d.clone(),
            (None, Some(_)) => PathBuf::from("."),
            (None, None) => self.fleet.clone(),
        }
    }

    fn cache(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| {
            std::env::var_os("HOME").map_or_else(
                || PathBuf::from(".fleetform/cache"),
                |h| PathBuf::from(h).join(".cache/fleetform/git"),
            )
        })
    }

    /// Reads the fleet's files at `reference` (or the directory), with the revision id.
    pub fn read(&self, reference: Option<&str>) -> Result<(String, Vec<SourceFile>), LoadFailure> {
        match &self.repo {
            Some(url) => {
                let git = GitSource::new(self.cache());
                let spec = SourceSpec {
                    url: url.clone(),
                    reference: git_ref(reference.unwrap_or(&self.reference)),
                    path: self.path.clone(),
                    auth: None,
                };
                let rev = git
                    .fetch(&spec, self.secrets().as_ref())
                    .with_context(|| format!("fetching {}", spec.reference))?;
                let repo = git.open(url).context("opening the fetched repository")?;
                let files = repo
                    .read_tree(&rev.commit, &self.path)
                    .context("reading the fleet at that commit")?;
                Ok((rev.commit, files))
            }
            None => {
                let files =
                    load::read_dir(&self.fleet).map_err(|d| LoadFailure::Invalid(d, Vec::new()))?;
                Ok((dir_revision(&files), files))
            }
        }
    }

    /// Reads, validates and compiles.
    pub fn load(&self, reference: Option<&str>) -> Result<Loaded, LoadFailure> {
        let (revision, files) = self.read(reference)?;
        let (fleet, compiled) = compile_files(&files, self.secrets().as_ref())?;
        Ok(Loaded {
            revision,
            fleet,
            compiled,
            releases: Vec::new(),
        })
    }

    /// Reads, validates, compiles and expands chart releases (see [`expand_releases`]).
    pub async fn load_expanded(
        &self,
        reference: Option<&str>,
        live: bool,
    ) -> Result<Loaded, LoadFailure> {
        let mut loaded = self.load(reference)?;
        let (_, files) = self.read(reference)?;
        loaded.releases = expand_releases(
            &loaded.fleet,
            &mut loaded.compiled,
            &self.secrets_base(),
            self.secrets(),
            live,
        )
        .await
        .map_err(|d| LoadFailure::Invalid(d, files))?;
        Ok(loaded)
    }

    /// The providers the compiled resources need.
    pub fn providers(
        &self,
        compiled: &Compiled,
        gpu: Option<&Arc<crate::gpu::GpuInventory>>,
    ) -> Result<Providers> {
        providers_for(compiled, &self.secrets_base(), self.secrets(), gpu)
    }
}

/// Validates and compiles a fleet's files.
pub fn compile_files(
    files: &[SourceFile],
    secrets: &dyn SecretResolver,
) -> Result<(Fleet, Compiled), LoadFailure> {
    let (docs, mut diags) = load::load(files);
    if !diags.is_empty() {
        fleetform_engine::diag::sort(&mut diags);
        return Err(LoadFailure::Invalid(diags, files.to_vec()));
    }
    let fleet = validate::validate(&docs).map_err(|d| LoadFailure::Invalid(d, files.to_vec()))?;
    let compiled =
        compile::compile(&fleet, secrets).map_err(|d| LoadFailure::Invalid(d, files.to_vec()))?;
    Ok((fleet, compiled))
}

/// Every provider this binary links, by name. Adding a provider adds one line here
/// (and its crate); the engine never names a provider. The `gpu` provider is registered when
/// the run reads GPU reports (`--gpu-inventory`), over the same source break/fix reads.
pub fn registry(gpu: Option<&Arc<crate::gpu::GpuInventory>>) -> Registry {
    let mut r = Registry::new();
    fleetform_kube::register(&mut r);
    fleetform_redfish::register(&mut r);
    fleetform_ngc::register(&mut r);
    fleetform_nico::register(&mut r);
    if let Some(g) = gpu {
        fleetform_gpu::register(&mut r, g.source());
    }
    r
}

/// The providers compiled resources need, built through the [`registry`] from
/// the compiled configuration; relative kubeconfig paths are resolved against
/// `secrets_base`.
pub fn providers_for(
    compiled: &Compiled,
    secrets_base: &Path,
    secrets: Arc<dyn SecretResolver>,
    gpu: Option<&Arc<crate::gpu::GpuInventory>>,
) -> Result<Providers> {
    let config = ProviderConfig {
        clusters: compiled.clusters.clone(),
        secrets,
        secrets_base: secrets_base.to_path_buf(),
    };
    Providers::from_registry(&registry(gpu), &config).map_err(anyhow::Error::new)
}

/// The serve daemon's pipeline: the same validate → compile → providers path
/// as the CLI commands, for files fetched by the daemon.
pub struct ServePipeline {
    /// Where relative secret and kubeconfig references are resolved.
    pub secrets_base: PathBuf,
    /// GPU inventory reports for break/fix and GPU drift, as for `apply`.
    pub gpu: crate::gpu::GpuArgs,
}

impl fleetform_engine::serve::Pipeline for ServePipeline {
    fn prepare(
        &self,
        files: &[SourceFile],
    ) -> Result<fleetform_engine::serve::Prepared, fleetform_engine::serve::daemon::BoxError> {
        let secrets: Arc<dyn SecretResolver> = Arc::new(LocalSecrets::new(&self.secrets_base));
        let (fleet, compiled) = compile_files(files, secrets.as_ref()).map_err(|f| match f {
            LoadFailure::Invalid(diags, files) => {
                let errors = diags
                    .iter()
                    .filter(|d| d.severity == fleetform_engine::diag::Severity::Error)
                    .count();
                format!(
                    "the fleet is invalid: {errors} error(s)\n{}",
                    validate::render_text(&diags, &files)
                )
            }
            LoadFailure::Other(e) => format!("{e:#}"),
        })?;
        let mut compiled = compiled;
        // prepare runs on a blocking thread of the daemon's runtime: wait for the expansion there.
        let releases = tokio::runtime::Handle::current()
            .block_on(expand_releases(
                &fleet,
                &mut compiled,
                &self.secrets_base,
                secrets.clone(),
                true,
            ))
            .map_err(|diags| {
                format!(
                    "chart releases failed: {}",
                    diags
                        .iter()
                        .map(|d| d.summary.clone())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?;
        // The GPU reports, read by the registered `gpu` provider and the break/fix hook alike.
        let gpu = tokio::runtime::Handle::current()
            .block_on(crate::gpu::connect(
                &self.gpu,
                &self.secrets_base,
                &fleet,
                &compiled.clusters,
            ))
            .map_err(|e| format!("{e:#}"))?;
        let inputs_digest =
            (!releases.is_empty()).then(|| fleetform_charts::charts_digest(&releases));
        let providers = providers_for(&compiled, &self.secrets_base, secrets, gpu.as_ref())
            .map_err(|e| format!("{e:#}"))?;
        Ok(fleetform_engine::serve::Prepared {
            desired: compiled.resources,
            providers,
            plan_options: fleetform_engine::plan::PlanOptions {
                max_delete_fraction: fleet.fleet.spec.prune.max_delete_fraction,
                inputs_digest,
                ..Default::default()
            },
            hooks: crate::gpu::GpuHook::hook(gpu.as_ref(), &fleet)
                .into_iter()
                .collect(),
        })
    }
}

/// A kubeconfig reference is a file path (or an env var holding one).
pub(crate) fn kubeconfig_path(r: &SecretRef, base: &Path) -> Result<PathBuf> {
    fleetform_kube::kubeconfig_path(r, base).map_err(anyhow::Error::msg)
}

/// A directory has no commit: its revision is the digest of its files.
fn dir_revision(files: &[SourceFile]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for f in files {
        h.update(f.path.as_bytes());
        h.update([0]);
        h.update(&f.bytes);
        h.update([0]);
    }
    format!("dir:{}", &hex::encode(h.finalize())[..16])
}

/// One line per chart release for the plan: what its rendered objects would do, and which
/// images it brings. Removed objects are found through the release label of their
/// last-applied spec in the inventory.
pub fn release_summaries(
    releases: &[fleetform_charts::ReleaseInfo],
    plan: &fleetform_engine::plan::Plan,
    state: &fleetform_engine::state::State,
) -> Vec<fleetform_engine::plan::ReleaseSummary> {
    use fleetform_engine::provider::Action;
    let actions: BTreeMap<&fleetform_engine::ResourceId, Action> =
        plan.changes.iter().map(|c| (&c.id, c.action)).collect();
    releases
        .iter()
        .map(|r| {
            let mut s = fleetform_engine::plan::ReleaseSummary {
                release: r.release.clone(),
                chart: r.chart.clone(),
                version: r.version.clone(),
                digest: r.digest.clone(),
                create: 0,
                change: 0,
                delete: 0,
                images: r.images.clone(),
                new_images: Vec::new(),
            };
            for id in &r.resources {
                match actions.get(id) {
                    Some(Action::Create) => s.create += 1,
                    Some(Action::Update | Action::Replace) => s.change += 1,
                    _ => {}
                }
            }
            // `cluster/namespace/name` → cluster and the label value `namespace.name`.
            let mut parts = r.release.splitn(2, '/');
            let cluster = parts.next().unwrap_or_default();
            let label = parts.next().unwrap_or_default().replace('/', ".");
            let mut before = std::collections::BTreeSet::new();
            for (id, entry) in &state.resources {
                let Some(spec) = &entry.spec else { continue };
                let ours = spec.get("cluster").and_then(|c| c.as_str()) == Some(cluster)
                    && spec
                        .pointer("/object/metadata/labels")
                        .and_then(|l| l.get(fleetform_charts::RELEASE_LABEL))
                        .and_then(|v| v.as_str())
                        == Some(label.as_str());
                if !ours {
                    continue;
                }
                collect_images(spec, &mut before);
                if actions.get(id) == Some(&Action::Delete) {
                    s.delete += 1;
                }
            }
            s.new_images = r
                .images
                .iter()
                .filter(|i| !before.contains(*i))
                .cloned()
                .collect();
            s
        })
        .collect()
}

fn collect_images(v: &serde_json::Value, out: &mut std::collections::BTreeSet<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("image", serde_json::Value::String(s)) => {
                        out.insert(s.clone());
                    }
                    _ => collect_images(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_images(x, out)),
        _ => {}
    }
}
