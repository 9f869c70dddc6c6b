//! fleetform's operator chart releases.
//!
//! Compile describes each release ([`ChartRelease`]: chart, pinned version, values, cluster);
//! this crate turns the releases into ordinary `kube:` desired resources before planning:
//!
//! 1. **fetch** ([`source`]): the chart from a directory, an HTTP repository or an OCI registry,
//!    with its digest;
//! 2. **capabilities**: the target cluster's version and API list ([`ClusterInfo`]), so charts
//!    that test `.Capabilities` render as they would on that cluster;
//! 3. **render** ([`render`]): Helm's own engine, through the `fleetform-chart-renderer`
//!    helper, with results cached by chart digest, values and capabilities;
//! 4. **expand** ([`expand`]): objects with namespaces and ownership labels, and edges with
//!    reasons (CRDs first, hooks in their phase, the release after what it waits for).
//!
//! The kube provider then applies, diffs, prunes and health-checks them like any object.
//! docs/providers/charts.md explains the choices (rendering vs running releases, hooks, CRDs).

pub mod expand;
pub mod render;
pub mod source;
pub mod values;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use fleetform_engine::compile::{ChartRelease, Compiled};
use fleetform_engine::resource::{Dependency, Desired, Origin, ResourceId};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use expand::RELEASE_LABEL;
pub use source::{FetchError, FetchedChart, Fetcher};

/// What a cluster serves, as the renderer needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `v1.34.4`.
    pub kube_version: String,
    /// `apps/v1`, `apps/v1/Deployment`, ...; empty means Helm's defaults (offline rendering).
    pub api_versions: Vec<String>,
    /// (apiVersion, kind, namespaced).
    pub kinds: Vec<(String, String, bool)>,
}

/// Where capabilities come from: the live cluster at plan time, or the manifest offline.
#[async_trait]
pub trait ClusterInfo: Send + Sync {
    /// The capabilities of `cluster` (a key of [`Compiled::clusters`]).
    async fn capabilities(&self, cluster: &str) -> Result<Capabilities, String>;
}

/// Offline capabilities: the Kubernetes version each cluster declares, Helm's default API list.
/// For commands that must not reach a cluster (`graph`).
pub struct Declared(pub BTreeMap<String, String>);

#[async_trait]
impl ClusterInfo for Declared {
    async fn capabilities(&self, cluster: &str) -> Result<Capabilities, String> {
        let v = self
            .0
            .get(cluster)
            .cloned()
            .unwrap_or_else(|| "1.34.0".into());
        let v = v.trim_start_matches('v');
        let v = if v.matches('.').count() == 1 {
            format!("v{v}.0")
        } else {
            format!("v{v}")
        };
        Ok(Capabilities {
            kube_version: v,
            ..Default::default()
        })
    }
}

/// A release as the plan shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseInfo {
    /// `cluster/namespace/name`.
    pub release: String,
    /// Chart name.
    pub chart: String,
    /// Pinned version.
    pub version: String,
    /// Digest of the chart package (or directory).
    pub digest: String,
    /// Where it was fetched from.
    pub source: String,
    /// The addresses it expanded to.
    pub resources: Vec<ResourceId>,
    /// Images its objects run.
    pub images: Vec<String>,
    /// Hooks not applied (delete, rollback and test hooks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_hooks: Vec<String>,
    /// Dependencies Helm dropped (disabled by a condition or absent from the chart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_dependencies: Vec<String>,
}

/// A release that could not be fetched, rendered or expanded: nothing of it is planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseError {
    /// `cluster/namespace/name`.
    pub release: String,
    /// Chart name.
    pub chart: String,
    /// Pinned version.
    pub version: String,
    /// The manifest line that pins it.
    pub origin: Origin,
    /// What went wrong (never a secret).
    pub message: String,
}

impl std::fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "release {} (chart {} {}): {}",
            self.release, self.chart, self.version, self.message
        )
    }
}

/// Everything expansion needs besides the releases.
pub struct Expander {
    fetcher: Fetcher,
    renderer: Option<PathBuf>,
    cache: Option<PathBuf>,
}

impl Expander {
    /// An expander fetching with `fetcher`, rendering with the helper at `renderer` (found
    /// with [`render::locate`] when `None`), caching renders under `cache`.
    pub fn new(fetcher: Fetcher, renderer: Option<PathBuf>, cache: Option<PathBuf>) -> Self {
        Self {
            fetcher,
            renderer,
            cache,
        }
    }

    /// Fetches, renders and expands every release of `compiled` into `compiled.resources`.
    /// A release that fails is left out whole and reported; the others are expanded.
    pub async fn expand(
        &self,
        compiled: &mut Compiled,
        clusters: &dyn ClusterInfo,
    ) -> Result<Vec<ReleaseInfo>, Vec<ReleaseError>> {
        if compiled.releases.is_empty() {
            return Ok(Vec::new());
        }
        let releases = compiled.releases.clone();
        let fail = |r: &ChartRelease, message: String| ReleaseError {
            release: r.key(),
            chart: r.chart.clone(),
            version: r.version.clone(),
            origin: r.origin.clone(),
            message,
        };
        let mut errors = Vec::new();

        let fetched =
            futures::future::join_all(releases.iter().map(|r| self.fetcher.fetch(r))).await;
        let cluster_names: BTreeSet<&str> = releases.iter().map(|r| r.cluster.as_str()).collect();
        let caps: BTreeMap<&str, Result<Capabilities, String>> = futures::future::join_all(
            cluster_names
                .iter()
                .map(|c| async move { (*c, clusters.capabilities(c).await) }),
        )
        .await
        .into_iter()
        .collect();

        // Requests for the releases that could be fetched and whose cluster answered.
        let mut pending: Vec<(usize, FetchedChart, render::RenderRequest, String)> = Vec::new();
        for (i, (r, f)) in releases.iter().zip(fetched).enumerate() {
            let chart = match f {
                Ok(c) => c,
                Err(e) => {
                    errors.push(fail(r, e.to_string()));
                    continue;
                }
            };
            let cap = match caps.get(r.cluster.as_str()) {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    errors.push(fail(
                        r,
                        format!("cannot read what cluster {} serves: {e}", r.cluster),
                    ));
                    continue;
                }
                None => continue,
            };
            let req = render::RenderRequest {
                chart: chart.path.clone(),
                release: r.name.clone(),
                namespace: r.namespace.clone(),
                values: r.values.clone(),
                kube_version: cap.kube_version.clone(),
                api_versions: cap.api_versions.clone(),
                version: chart.stamp_version.then(|| r.version.clone()),
                app_version: chart.stamp_version.then(|| r.version.clone()),
                upgrade: false,
            };
            let key = cache_key(&chart.digest, &req);
            pending.push((i, chart, req, key));
        }

        // Cached renders first; the rest in one run of the renderer. Releases with the same
        // key (the same chart, values and capabilities: one operator on many tenants) share
        // one render: each key is read from the cache or rendered once, not once per release.
        let mut by_key: BTreeMap<&str, render::Rendered> = BTreeMap::new();
        let mut misses: Vec<usize> = Vec::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for (n, (_, _, _, key)) in pending.iter().enumerate() {
            if !seen.insert(key.as_str()) {
                continue;
            }
            match self.cached(key) {
                Some(r) => {
                    by_key.insert(key, r);
                }
                None => misses.push(n),
            }
        }
        // Every pending release whose request has `key`.
        let with_key = |key: &str| -> Vec<(&ChartRelease, &FetchedChart)> {
            pending
                .iter()
                .filter(|p| p.3 == key)
                .map(|p| (&releases[p.0], &p.1))
                .collect()
        };
        // A new render first has its values checked against the chart's schemas here, so a
        // rejected value is reported at the manifest line that sets it (Helm would say only
        // which value). A cached render passed that check when it was made.
        let mut rejected: BTreeSet<usize> = BTreeSet::new();
        for n in &misses {
            let (_, chart, req, key) = &pending[*n];
            let (path, values) = (chart.path.clone(), req.values.clone());
            let checked = tokio::task::spawn_blocking(move || values::check(&path, &values))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            if let Ok(violations) = checked
                && !violations.is_empty()
            {
                rejected.insert(*n);
                for (r, _) in with_key(key) {
                    errors.extend(rejections(r, &violations));
                }
            }
            // A chart whose schema cannot be read is left to the renderer, which says why.
        }
        misses.retain(|n| !rejected.contains(n));
        if !misses.is_empty() {
            let renderer = match &self.renderer {
                Some(p) => p.clone(),
                None => match render::locate() {
                    Ok(p) => p,
                    Err(e) => {
                        for n in &misses {
                            for (r, _) in with_key(&pending[*n].3) {
                                errors.push(fail(r, e.to_string()));
                            }
                        }
                        return Err(errors);
                    }
                },
            };
            let requests: Vec<render::RenderRequest> =
                misses.iter().map(|n| pending[*n].2.clone()).collect();
            match render::render(&renderer, &requests).await {
                Ok(results) => {
                    for (n, result) in misses.iter().zip(results) {
                        let key = pending[*n].3.as_str();
                        match result {
                            Ok(out) => {
                                self.store(key, &out);
                                by_key.insert(key, out);
                            }
                            Err(f) => {
                                for (r, chart) in with_key(key) {
                                    errors.push(fail(
                                        r,
                                        format!(
                                            "{} ({}): {}",
                                            stage_words(&f.stage),
                                            chart.origin,
                                            f.message.trim()
                                        ),
                                    ));
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    for n in &misses {
                        for (r, _) in with_key(&pending[*n].3) {
                            errors.push(fail(r, e.to_string()));
                        }
                    }
                }
            }
        }
        let rendered: BTreeMap<usize, &render::Rendered> = pending
            .iter()
            .filter_map(|(i, _, _, key)| by_key.get(key.as_str()).map(|r| (*i, r)))
            .collect();

        // Expand, cluster by cluster, so CRD edges see every release of the cluster.
        let mut infos = Vec::new();
        let mut crds_by_cluster: BTreeMap<String, expand::ClusterCrds> = BTreeMap::new();
        let mut scopes: BTreeMap<String, expand::Scopes> = BTreeMap::new();
        let existing: BTreeSet<ResourceId> =
            compiled.resources.iter().map(|d| d.id.clone()).collect();
        let mut claimed: BTreeMap<ResourceId, (String, serde_json::Value)> = BTreeMap::new();
        let mut added = Vec::new();
        let mut gates_of: BTreeMap<usize, Vec<ResourceId>> = BTreeMap::new();
        let mut expanded = Vec::new();
        for (i, chart, _, _) in &pending {
            let Some(&out) = rendered.get(i) else {
                continue;
            };
            let r = &releases[*i];
            let s = scopes.entry(r.cluster.clone()).or_insert_with(|| {
                match caps.get(r.cluster.as_str()) {
                    Some(Ok(c)) => expand::Scopes::from_kinds(&c.kinds),
                    _ => expand::Scopes::default(),
                }
            });
            expanded.push((i, chart, out, expand::release(r, out, s)));
        }
        // CRDs a release leaves to another release of its cluster (`yields_crds_to`).
        let crds_of: BTreeMap<(&str, &str), BTreeSet<&ResourceId>> = expanded
            .iter()
            .map(|(i, _, _, x)| {
                let r = &releases[**i];
                (
                    (r.cluster.as_str(), r.name.as_str()),
                    x.crds.values().collect(),
                )
            })
            .collect();
        let yielded: Vec<BTreeSet<ResourceId>> = expanded
            .iter()
            .map(|(i, _, _, _)| {
                let r = &releases[**i];
                r.yields_crds_to
                    .iter()
                    .filter_map(|other| crds_of.get(&(r.cluster.as_str(), other.as_str())))
                    .flatten()
                    .map(|id| (*id).clone())
                    .collect()
            })
            .collect();
        for ((i, chart, out, mut x), yielded) in expanded.into_iter().zip(yielded) {
            let r = &releases[*i];
            x.resources.retain(|d| !yielded.contains(&d.id));
            x.crds.retain(|_, id| !yielded.contains(id));
            // One object, one owner: a release may not render what compile or another
            // release already defines (a Namespace compile creates for it is the exception).
            let mut conflict = None;
            let mut resources = Vec::new();
            for d in x.resources {
                let is_namespace = d.id.as_str().contains("/v1/Namespace/");
                if existing.contains(&d.id) {
                    if is_namespace {
                        continue;
                    }
                    conflict = Some(format!(
                        "it renders {}, which fleetform compiles itself",
                        d.id
                    ));
                    break;
                }
                if let Some((other, spec)) = claimed.get(&d.id) {
                    // Two charts may ship the same CRD (the GPU Operator and the DRA driver both
                    // carry ComputeDomain's): the first release applies it, the other's
                    // resources wait for it through the CRD edges.
                    if d.id.as_str().contains("/CustomResourceDefinition/")
                        && spec.pointer("/object/spec") == d.spec.pointer("/object/spec")
                    {
                        continue;
                    }
                    conflict = Some(format!(
                        "it renders {}, which release {other} renders too, differently (one owner per object)",
                        d.id
                    ));
                    break;
                }
                resources.push(d);
            }
            if let Some(c) = conflict {
                errors.push(fail(r, c));
                continue;
            }
            for p in &r.provides {
                if !resources.iter().any(|d| &d.id == p) {
                    errors.push(fail(
                        r,
                        format!("the chart no longer renders {p}, which other resources wait for (check its values)"),
                    ));
                }
            }
            for d in &resources {
                claimed.insert(d.id.clone(), (r.key(), d.spec.clone()));
            }
            let crds = crds_by_cluster.entry(r.cluster.clone()).or_default();
            for (k, id) in &x.crds {
                crds.insert(k.clone(), (id.clone(), r.key(), r.wait));
            }
            gates_of.insert(*i, x.gates.clone());
            let chart = chart.clone();
            infos.push(ReleaseInfo {
                release: r.key(),
                chart: r.chart.clone(),
                version: r.version.clone(),
                digest: chart.digest,
                source: chart.origin,
                resources: resources.iter().map(|d| d.id.clone()).collect(),
                images: x.images.into_iter().collect(),
                skipped_hooks: x.skipped_hooks,
                disabled_dependencies: out.disabled.clone(),
            });
            added.extend(resources);
        }
        if !errors.is_empty() {
            // Nothing is planned from a fleet whose releases cannot all be rendered: a missing
            // release would read as "delete everything it had".
            errors.sort_by(|a, b| a.release.cmp(&b.release));
            return Err(errors);
        }
        compiled.resources.extend(added);
        let unserved = unserved_versions(&compiled.resources, &crds_by_cluster, &releases);
        if !unserved.is_empty() {
            return Err(unserved);
        }
        expand::crd_edges(&mut compiled.resources, &crds_by_cluster);
        // Compiled resources that wait for a release wait for its gates.
        let index: BTreeMap<ResourceId, usize> = compiled
            .resources
            .iter()
            .enumerate()
            .map(|(n, d)| (d.id.clone(), n))
            .collect();
        for (i, gates) in &gates_of {
            let r = &releases[*i];
            for dep in &r.dependents {
                let Some(&n) = index.get(&dep.id) else {
                    continue;
                };
                for g in gates {
                    let deps = &mut compiled.resources[n].deps;
                    if g != &dep.id && !deps.iter().any(|x| &x.on == g) {
                        deps.push(Dependency {
                            on: g.clone(),
                            reason: format!("{} (release {})", dep.reason, r.key()),
                            origin: None,
                        });
                    }
                }
            }
        }
        compiled.resources.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(infos)
    }

    /// Checks every release's values against its chart's `values.schema.json` and those of
    /// its enabled subcharts, fetching the charts (cached by digest); for `fleetform validate`.
    /// Returns the values rejected, each at the manifest line that sets it, and the releases
    /// that could not be checked (chart not reachable now), which plan checks again.
    pub async fn check_values(
        &self,
        releases: &[ChartRelease],
    ) -> (Vec<ReleaseError>, Vec<ReleaseError>) {
        let fetched =
            futures::future::join_all(releases.iter().map(|r| self.fetcher.fetch(r))).await;
        let (mut rejected, mut unchecked) = (Vec::new(), Vec::new());
        for (r, f) in releases.iter().zip(fetched) {
            let unread = |message: String| ReleaseError {
                release: r.key(),
                chart: r.chart.clone(),
                version: r.version.clone(),
                origin: r.origin.clone(),
                message,
            };
            let chart = match f {
                Ok(c) => c,
                // Not there at all is an error at the pinning line; unreachable is a note.
                Err(source::FetchError::NotFound(m)) => {
                    rejected.push(unread(m));
                    continue;
                }
                Err(e) => {
                    unchecked.push(unread(e.to_string()));
                    continue;
                }
            };
            let (path, values) = (chart.path.clone(), r.values.clone());
            match tokio::task::spawn_blocking(move || values::check(&path, &values))
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            {
                Ok(violations) => rejected.extend(rejections(r, &violations)),
                Err(e) => unchecked.push(unread(e)),
            }
        }
        (rejected, unchecked)
    }

    fn cached(&self, key: &str) -> Option<render::Rendered> {
        let path = self.cache.as_ref()?.join(format!("{key}.json"));
        let bytes = std::fs::read(path).ok()?;
        serde_json::from_slice::<CachedRender>(&bytes)
            .ok()
            .map(|c| c.0)
    }

    fn store(&self, key: &str, rendered: &render::Rendered) {
        let Some(dir) = &self.cache else { return };
        // A cache write that fails costs a re-render next time, nothing else.
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let path = dir.join(format!("{key}.json"));
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if let Ok(bytes) = serde_json::to_vec(&CachedRenderRef(rendered))
            && std::fs::write(&tmp, bytes).is_ok()
        {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

/// Renders are cached as the renderer's own JSON result.
struct CachedRender(render::Rendered);

impl<'de> Deserialize<'de> for CachedRender {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        render::Rendered::deserialize(d).map(CachedRender)
    }
}

struct CachedRenderRef<'a>(&'a render::Rendered);

impl Serialize for CachedRenderRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let obj = |o: &render::RenderedObject| serde_json::json!({ "source": o.source, "object": o.object });
        serde_json::json!({
            "chart": r.chart, "version": r.version, "appVersion": r.app_version,
            "crds": r.crds.iter().map(obj).collect::<Vec<_>>(),
            "objects": r.objects.iter().map(obj).collect::<Vec<_>>(),
            "hooks": r.hooks.iter().map(|h| serde_json::json!({
                "source": h.source, "object": h.object, "events": h.events,
                "weight": h.weight, "deletePolicies": h.delete_policies,
            })).collect::<Vec<_>>(),
            "disabled": r.disabled,
        })
        .serialize(s)
    }
}

/// A render is the same when the chart, the values and the capabilities are.
fn cache_key(chart_digest: &str, req: &render::RenderRequest) -> String {
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(chart_digest.as_bytes());
    let mut req = req.clone();
    req.chart = PathBuf::new();
    h.update(serde_json::to_vec(&req).unwrap_or_default());
    hex::encode(h.finalize())
}

/// Objects whose kind a release's CRD defines but whose apiVersion that CRD does not serve:
/// the pinned chart moved the kind to another version (or dropped the one the object uses),
/// and the API server would refuse the object at apply, after the CRD was upgraded. Named at
/// the object's manifest line with the versions the CRD serves.
fn unserved_versions(
    resources: &[Desired],
    crds: &BTreeMap<String, expand::ClusterCrds>,
    releases: &[ChartRelease],
) -> Vec<ReleaseError> {
    let by_id: BTreeMap<&ResourceId, &Desired> = resources.iter().map(|d| (&d.id, d)).collect();
    let mut out = Vec::new();
    for d in resources {
        let (Some(cluster), Some(av), Some(kind)) = (
            d.spec.get("cluster").and_then(serde_json::Value::as_str),
            d.spec
                .pointer("/object/apiVersion")
                .and_then(serde_json::Value::as_str),
            d.spec
                .pointer("/object/kind")
                .and_then(serde_json::Value::as_str),
        ) else {
            continue;
        };
        let Some((group, version)) = av.split_once('/') else {
            continue;
        };
        let Some((crd_id, release, _)) = crds
            .get(cluster)
            .and_then(|c| c.get(&(group.to_string(), kind.to_string())))
        else {
            continue;
        };
        let Some(crd) = by_id.get(crd_id) else {
            continue;
        };
        let served: Vec<&str> = crd
            .spec
            .pointer("/object/spec/versions")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter(|v| v.get("served").and_then(serde_json::Value::as_bool) == Some(true))
            .filter_map(|v| v.get("name").and_then(serde_json::Value::as_str))
            .collect();
        if served.is_empty() || served.contains(&version) {
            continue;
        }
        let r = releases.iter().find(|r| &r.key() == release);
        out.push(ReleaseError {
            release: release.clone(),
            chart: r.map(|r| r.chart.clone()).unwrap_or_default(),
            version: r.map(|r| r.version.clone()).unwrap_or_default(),
            origin: d.origin.clone().or_else(|| r.map(|r| r.origin.clone())).unwrap_or(Origin {
                file: String::new(),
                line: 0,
                column: 0,
            }),
            message: format!(
                "{} is {av}, but the CRD {} this release installs serves {kind} only as {}: the API server would refuse it \
                 (pin a chart version that serves {version}, or write the object as one of those)",
                d.id,
                crd_id.as_str().rsplit('/').next().unwrap_or(""),
                served.iter().map(|v| format!("{group}/{v}")).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    out
}

/// One error per value the chart's schema rejects, at the manifest line that sets it.
fn rejections(r: &ChartRelease, violations: &[values::Violation]) -> Vec<ReleaseError> {
    violations
        .iter()
        .map(|v| ReleaseError {
            release: r.key(),
            chart: r.chart.clone(),
            version: r.version.clone(),
            origin: r.value_origin(&v.pointer).clone(),
            message: format!(
                "the chart's values schema rejects values{}: {}",
                if v.pointer.is_empty() { "" } else { &v.pointer },
                v.message
            ),
        })
        .collect()
}

fn stage_words(stage: &str) -> &'static str {
    match stage {
        "load" => "the chart cannot be loaded",
        "kube-version" => "the chart does not support the cluster's Kubernetes version",
        "dependencies" => "the chart's dependencies cannot be resolved",
        "values" => "the chart's values.schema.json rejects the values",
        "template" => "a template failed",
        _ => "the rendered output is not valid YAML",
    }
}

/// The digest of every release's chart, for the plan digest: a chart republished under the
/// same version changes the plan even where the rendered objects do not.
pub fn charts_digest(infos: &[ReleaseInfo]) -> String {
    let mut h = Sha256::new();
    for i in infos {
        h.update(i.release.as_bytes());
        h.update([0]);
        h.update(i.digest.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// The default cache directory (`~/.cache/fleetform`, or `$FLEETFORM_CACHE`).
pub fn default_cache() -> PathBuf {
    std::env::var_os("FLEETFORM_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fleetform")))
        .unwrap_or_else(|| Path::new(".fleetform/cache").to_path_buf())
}
