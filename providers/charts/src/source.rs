//! Fetching a chart at a pinned version from where the manifest says it lives: a local
//! directory, an HTTP chart repository (`index.yaml` + packaged charts) or an OCI registry
//! (Helm's OCI artifact: one `application/vnd.cncf.helm.chart.content.v1.tar+gzip` layer).
//!
//! Every fetched chart has a digest (sha256 of the package, or of a directory's files), which
//! goes into the plan so a chart republished under the same version is seen. Packages are
//! kept in a cache by digest; repository indexes and OCI manifests are read on every plan.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleetform_engine::compile::ChartRelease;
use fleetform_engine::secret::SecretResolver;
use fleetform_ngc::{RegistryClient, RegistryError, RegistrySpec};
use reqwest::Method;
use sha2::{Digest as _, Sha256};

/// Helm's OCI media types.
const HELM_CHART_LAYER: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// A chart ready to render: a directory or a `.tgz` on local disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedChart {
    /// The directory or package.
    pub path: PathBuf,
    /// `sha256:<hex>` of the package, or of the directory's files.
    pub digest: String,
    /// Where it came from, for messages (`oci://…/gpu-operator:v26.7.0`, a directory, a URL).
    pub origin: String,
    /// True when the chart is an unpackaged directory whose `Chart.yaml` carries another
    /// version (a checkout at the release tag): the renderer stamps the pinned version.
    pub stamp_version: bool,
}

/// Why a chart could not be fetched. Messages never contain a credential.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No such chart or version where the manifest says.
    #[error("{0}")]
    NotFound(String),
    /// The repository refused the credentials (or wants some).
    #[error("{0}")]
    Unauthorized(String),
    /// Anything else (I/O, a malformed index, an unreachable server).
    #[error("{0}")]
    Other(String),
}

/// Fetches charts; one per plan, shared by every release.
pub struct Fetcher {
    /// Where relative repository paths and CA bundles resolve (the fleet directory).
    base: PathBuf,
    /// Where packages are cached by digest.
    cache: PathBuf,
    secrets: Arc<dyn SecretResolver>,
}

impl Fetcher {
    /// A fetcher resolving relative paths against `base`, caching under `cache`.
    pub fn new(base: PathBuf, cache: PathBuf, secrets: Arc<dyn SecretResolver>) -> Self {
        Self {
            base,
            cache,
            secrets,
        }
    }

    /// Fetches the release's chart at its pinned version.
    pub async fn fetch(&self, r: &ChartRelease) -> Result<FetchedChart, FetchError> {
        let repo = match &r.repository {
            Some(repo) => repo.clone(),
            None => fleetform_engine::compile::upstream_repository(&r.chart)
                .ok_or_else(|| {
                    FetchError::NotFound(format!(
                        "chart {} has no known upstream repository: set `chart.repository`",
                        r.chart
                    ))
                })?
                .to_string(),
        };
        if let Some(rest) = repo.strip_prefix("oci://") {
            self.oci(r, rest).await
        } else if repo.starts_with("https://") || repo.starts_with("http://") {
            self.http(r, &repo).await
        } else {
            let dir = if Path::new(&repo).is_absolute() {
                PathBuf::from(&repo)
            } else {
                self.base.join(&repo)
            };
            let (chart, version) = (r.chart.clone(), r.version.clone());
            tokio::task::spawn_blocking(move || local(&dir, &chart, &version))
                .await
                .map_err(|e| FetchError::Other(format!("reading the chart: {e}")))?
        }
    }

    fn password(&self, r: &ChartRelease) -> Result<Option<String>, FetchError> {
        match &r.password {
            None => Ok(None),
            Some(p) => self
                .secrets
                .resolve(p)
                .map(|s| Some(s.expose().to_string()))
                .map_err(|e| FetchError::Unauthorized(format!("repository password: {e}"))),
        }
    }

    fn registry_spec(&self, r: &ChartRelease, endpoint: String) -> RegistrySpec {
        RegistrySpec {
            endpoint,
            insecure: r.insecure,
            ca_bundle: r.ca_bundle.as_ref().map(|c| self.base.join(c)),
        }
    }

    /// A Helm repository: read `index.yaml`, find the version, download the package.
    async fn http(&self, r: &ChartRelease, repo: &str) -> Result<FetchedChart, FetchError> {
        let repo = repo.trim_end_matches('/');
        let http = fleetform_ngc::registry::http_client(&self.registry_spec(r, repo.into()))
            .map_err(|e| FetchError::Other(e.to_string()))?;
        let auth = |req: reqwest::RequestBuilder| -> Result<reqwest::RequestBuilder, FetchError> {
            Ok(match (&r.username, self.password(r)?) {
                (Some(u), p) => req.basic_auth(u, p),
                (None, Some(p)) => req.basic_auth("", Some(p)),
                (None, None) => req,
            })
        };
        let index_url = format!("{repo}/index.yaml");
        let body = get(auth(http.get(&index_url))?, &index_url).await?;
        let index: Index = serde_saphyr::from_slice(&body)
            .map_err(|e| FetchError::Other(format!("{index_url} is not a chart index: {e}")))?;
        let entries = index.entries.get(&r.chart).ok_or_else(|| {
            FetchError::NotFound(format!("chart {} is not in {index_url}", r.chart))
        })?;
        let entry = entries
            .iter()
            .find(|e| same_version(&e.version, &r.version))
            .ok_or_else(|| {
                let mut known: Vec<&str> = entries.iter().map(|e| e.version.as_str()).collect();
                known.truncate(8);
                FetchError::NotFound(format!(
                    "chart {} has no version {} in {index_url} (it has {})",
                    r.chart,
                    r.version,
                    known.join(", ")
                ))
            })?;
        let url = entry.urls.first().ok_or_else(|| {
            FetchError::Other(format!(
                "{index_url}: {} {} lists no URL",
                r.chart, r.version
            ))
        })?;
        // URLs in an index may be relative to the repository.
        let url = if url.contains("://") {
            url.clone()
        } else {
            format!("{repo}/{}", url.trim_start_matches('/'))
        };
        let package = get(auth(http.get(&url))?, &url).await?;
        let digest = sha256(&package);
        if let Some(expected) = entry.digest.as_deref().filter(|d| !d.is_empty())
            && digest.trim_start_matches("sha256:") != expected.trim_start_matches("sha256:")
        {
            return Err(FetchError::Other(format!(
                "{url}: the package's digest {digest} is not the index's sha256:{expected}"
            )));
        }
        let path = self.store(&digest, &package)?;
        Ok(FetchedChart {
            path,
            digest,
            origin: format!("{repo} {}@{}", r.chart, r.version),
            stamp_version: false,
        })
    }

    /// An OCI registry: `oci://host[:port]/path` holds `<chart>:<version>`.
    async fn oci(&self, r: &ChartRelease, rest: &str) -> Result<FetchedChart, FetchError> {
        let rest = rest.trim_end_matches('/');
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        // Like Helm's --plain-http for local registries: loopback registries speak HTTP.
        let scheme = if is_loopback(host) { "http" } else { "https" };
        let repository = if path.is_empty() {
            r.chart.clone()
        } else {
            format!("{path}/{}", r.chart)
        };
        // OCI tags cannot hold `+`; Helm pushes `1.0.0+meta` as `1.0.0_meta`.
        let tag = r.version.replace('+', "_");
        let credentials = match (&r.username, self.password(r)?) {
            (Some(u), Some(p)) => Some(fleetform_ngc::registry::BasicCredentials {
                username: u.clone(),
                password: fleetform_engine::sensitive::Sensitive::new(p),
            }),
            _ => None,
        };
        let spec = self.registry_spec(r, format!("{scheme}://{host}"));
        let client =
            RegistryClient::new(&spec, credentials, Arc::new(tokio::sync::Semaphore::new(4)))
                .map_err(|e| FetchError::Other(e.to_string()))?;
        let base = format!("{scheme}://{host}/v2/{repository}");
        let what = format!("oci://{host}/{repository}:{tag}");
        let manifest = oci_get(
            &client,
            &format!("{base}/manifests/{tag}"),
            &repository,
            &what,
        )
        .await?;
        let manifest: serde_json::Value = serde_json::from_slice(&manifest)
            .map_err(|e| FetchError::Other(format!("{what}: the manifest is not JSON: {e}")))?;
        let layer = manifest
            .get("layers")
            .and_then(serde_json::Value::as_array)
            .and_then(|layers| {
                layers.iter().find(|l| {
                    l.get("mediaType").and_then(serde_json::Value::as_str) == Some(HELM_CHART_LAYER)
                })
            })
            .and_then(|l| l.get("digest").and_then(serde_json::Value::as_str))
            .ok_or_else(|| {
                FetchError::Other(format!(
                    "{what} is not a Helm chart (no {HELM_CHART_LAYER} layer)"
                ))
            })?
            .to_string();
        let cached = self.cache.join(format!("{}.tgz", layer.replace(':', "-")));
        if cached.is_file() {
            return Ok(FetchedChart {
                path: cached,
                digest: layer,
                origin: what,
                stamp_version: false,
            });
        }
        let package = oci_get(
            &client,
            &format!("{base}/blobs/{layer}"),
            &repository,
            &what,
        )
        .await?;
        let digest = sha256(&package);
        if digest != layer {
            return Err(FetchError::Other(format!(
                "{what}: the chart layer's content has digest {digest}, not {layer}"
            )));
        }
        let path = self.store(&digest, &package)?;
        Ok(FetchedChart {
            path,
            digest,
            origin: what,
            stamp_version: false,
        })
    }

    /// Writes a package into the cache (atomically: a crash never leaves half a chart).
    fn store(&self, digest: &str, bytes: &[u8]) -> Result<PathBuf, FetchError> {
        std::fs::create_dir_all(&self.cache).map_err(|e| {
            FetchError::Other(format!("cannot create {}: {e}", self.cache.display()))
        })?;
        let path = self.cache.join(format!("{}.tgz", digest.replace(':', "-")));
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| FetchError::Other(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }
}

async fn get(req: reqwest::RequestBuilder, url: &str) -> Result<Vec<u8>, FetchError> {
    let resp = req
        .send()
        .await
        .map_err(|e| FetchError::Other(format!("GET {url}: {}", transport(&e))))?;
    let status = resp.status();
    match status.as_u16() {
        200..=299 => {}
        401 | 403 => {
            return Err(FetchError::Unauthorized(format!(
                "GET {url}: HTTP {status}: the repository refused the credentials"
            )));
        }
        404 => return Err(FetchError::NotFound(format!("GET {url}: HTTP 404"))),
        _ => return Err(FetchError::Other(format!("GET {url}: HTTP {status}"))),
    }
    resp.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| FetchError::Other(format!("GET {url}: {}", transport(&e))))
}

fn transport(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    }
}

async fn oci_get(
    client: &RegistryClient,
    url: &str,
    repository: &str,
    what: &str,
) -> Result<Vec<u8>, FetchError> {
    match client.send(Method::GET, url, repository, "pull").await {
        Ok((status, _, body)) if status.is_success() => Ok(body),
        Ok((status, _, _)) if status.as_u16() == 404 => {
            Err(FetchError::NotFound(format!("{what} does not exist")))
        }
        Ok((status, _, _)) => Err(FetchError::Other(format!("{what}: HTTP {status}"))),
        Err(RegistryError::Unauthorized(m)) => {
            Err(FetchError::Unauthorized(format!("{what}: {m}")))
        }
        Err(RegistryError::InsufficientScope) => Err(FetchError::Unauthorized(format!(
            "{what}: the credentials do not grant pull"
        ))),
        Err(e) => Err(FetchError::Other(format!("{what}: {e}"))),
    }
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    matches!(h, "localhost" | "[::1]") || h.starts_with("127.")
}

/// `v1.2.3` and `1.2.3` name the same chart version (NVIDIA tags with `v`, Helm often without).
fn same_version(a: &str, b: &str) -> bool {
    a.trim_start_matches('v') == b.trim_start_matches('v')
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// The part of a repository's `index.yaml` fleetform reads.
#[derive(serde::Deserialize)]
struct Index {
    #[serde(default)]
    entries: std::collections::BTreeMap<String, Vec<IndexEntry>>,
}

#[derive(serde::Deserialize)]
struct IndexEntry {
    version: String,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    digest: Option<String>,
}

/// A directory repository: `<chart>-<version>/`, `<chart>-<version>.tgz`, or `<chart>/`.
fn local(dir: &Path, chart: &str, version: &str) -> Result<FetchedChart, FetchError> {
    let bare = version.trim_start_matches('v');
    let candidates = [
        dir.join(format!("{chart}-{version}")),
        dir.join(format!("{chart}-v{bare}")),
        dir.join(format!("{chart}-{bare}")),
    ];
    for c in &candidates {
        if c.join("Chart.yaml").is_file() {
            return directory_chart(c, version);
        }
    }
    for c in &candidates {
        let tgz = PathBuf::from(format!("{}.tgz", c.display()));
        if tgz.is_file() {
            let bytes = std::fs::read(&tgz)
                .map_err(|e| FetchError::Other(format!("cannot read {}: {e}", tgz.display())))?;
            return Ok(FetchedChart {
                digest: sha256(&bytes),
                origin: tgz.display().to_string(),
                path: tgz,
                stamp_version: false,
            });
        }
    }
    let plain = dir.join(chart);
    if plain.join("Chart.yaml").is_file() {
        return directory_chart(&plain, version);
    }
    if !dir.is_dir() {
        return Err(FetchError::NotFound(format!(
            "chart repository directory {} does not exist",
            dir.display()
        )));
    }
    let mut have: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(chart))
                .collect()
        })
        .unwrap_or_default();
    have.sort();
    Err(FetchError::NotFound(format!(
        "no chart {chart} {version} in {} (looked for {chart}-{version}/, {chart}-{version}.tgz and {chart}/{})",
        dir.display(),
        if have.is_empty() {
            String::new()
        } else {
            format!("; it has {}", have.join(", "))
        }
    )))
}

/// A chart directory: its digest is over every file's path and content, in a stable order.
fn directory_chart(dir: &Path, version: &str) -> Result<FetchedChart, FetchError> {
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    let mut h = Sha256::new();
    for rel in &files {
        let bytes = std::fs::read(dir.join(rel)).map_err(|e| {
            FetchError::Other(format!("cannot read {}: {e}", dir.join(rel).display()))
        })?;
        h.update(rel.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    let chart_yaml = std::fs::read_to_string(dir.join("Chart.yaml")).unwrap_or_default();
    let declared = chart_yaml
        .lines()
        .find_map(|l| l.strip_prefix("version:"))
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .unwrap_or_default();
    Ok(FetchedChart {
        path: dir.to_path_buf(),
        digest: format!("sha256:{}", hex::encode(h.finalize())),
        origin: dir.display().to_string(),
        stamp_version: !same_version(&declared, version),
    })
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), FetchError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| FetchError::Other(format!("cannot read {}: {e}", dir.display())))?;
    for entry in rd {
        let entry = entry.map_err(|e| FetchError::Other(format!("{}: {e}", dir.display())))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(|e| FetchError::Other(format!("{}: {e}", path.display())))?;
        if kind.is_dir() {
            walk(root, &path, out)?;
        } else if kind.is_file()
            && let Ok(rel) = path.strip_prefix(root)
        {
            out.push(rel.to_string_lossy().into_owned());
        }
        // Symlinks are not followed: a chart directory never reaches outside itself.
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_checkout_with_a_placeholder_version_is_stamped_with_the_pinned_one() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("demo-v1.2.0");
        std::fs::create_dir_all(c.join("templates")).unwrap();
        std::fs::write(
            c.join("Chart.yaml"),
            "apiVersion: v2\nname: demo\nversion: 0.0.0\n",
        )
        .unwrap();
        let f = local(dir.path(), "demo", "v1.2.0").unwrap();
        assert!(f.stamp_version);
        std::fs::write(
            c.join("Chart.yaml"),
            "apiVersion: v2\nname: demo\nversion: 1.2.0\n",
        )
        .unwrap();
        let g = local(dir.path(), "demo", "v1.2.0").unwrap();
        assert!(!g.stamp_version);
        assert_ne!(f.digest, g.digest, "the digest covers the files' content");
    }

    #[test]
    fn a_missing_version_names_what_the_directory_has() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("demo-1.0.0")).unwrap();
        std::fs::write(
            dir.path().join("demo-1.0.0/Chart.yaml"),
            "name: demo\nversion: 1.0.0\n",
        )
        .unwrap();
        let e = local(dir.path(), "demo", "2.0.0").unwrap_err().to_string();
        assert!(
            e.contains("no chart demo 2.0.0") && e.contains("demo-1.0.0"),
            "{e}"
        );
    }

    #[test]
    fn loopback_hosts_are_recognised_with_and_without_a_port() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(!is_loopback("nvcr.io"));
        assert!(!is_loopback("registry.example:443"));
    }
}
