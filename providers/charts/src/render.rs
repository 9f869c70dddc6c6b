//! Rendering with Helm's own engine: the `fleetform-chart-renderer` helper (Go, Helm v4 SDK,
//! built from `providers/charts/renderer`) takes a batch of requests on stdin and answers with
//! one result per request. It never reaches a cluster or a network; fleetform hands it the
//! chart on disk and the target cluster's version and API list.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

/// Environment variable naming the renderer binary.
pub const RENDERER_ENV: &str = "FLEETFORM_CHART_RENDERER";
/// The renderer's file name.
pub const RENDERER_BIN: &str = "fleetform-chart-renderer";

/// One release to render.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderRequest {
    /// The chart directory or package.
    pub chart: PathBuf,
    /// `.Release.Name`.
    pub release: String,
    /// `.Release.Namespace`.
    pub namespace: String,
    /// User-supplied values.
    pub values: Value,
    /// `.Capabilities.KubeVersion`, e.g. `v1.34.4`.
    pub kube_version: String,
    /// `.Capabilities.APIVersions` (`apps/v1`, `apps/v1/Deployment`, ...).
    pub api_versions: Vec<String>,
    /// Replaces Chart.yaml's version (unpackaged checkouts with placeholder versions).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Replaces Chart.yaml's appVersion.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_version: Option<String>,
    /// Render as an upgrade of an installed release.
    pub upgrade: bool,
}

/// A rendered object and the template it came from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RenderedObject {
    /// The template (`gpu-operator/templates/operator.yaml`) or CRD file.
    pub source: String,
    /// The object.
    pub object: Value,
}

/// A rendered Helm hook.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenderedHook {
    /// The template.
    pub source: String,
    /// The object.
    pub object: Value,
    /// `pre-install`, `post-upgrade`, `test`, ...
    pub events: Vec<String>,
    /// `helm.sh/hook-weight`.
    #[serde(default)]
    pub weight: i64,
    /// `helm.sh/hook-delete-policy`.
    #[serde(default)]
    pub delete_policies: Vec<String>,
}

/// What one release rendered to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rendered {
    /// The chart's name.
    #[serde(default)]
    pub chart: String,
    /// The chart version rendered.
    #[serde(default)]
    pub version: String,
    /// The chart's appVersion.
    #[serde(default)]
    pub app_version: String,
    /// `crds/` of the chart and its enabled subcharts.
    #[serde(default)]
    pub crds: Vec<RenderedObject>,
    /// The templates' objects.
    #[serde(default)]
    pub objects: Vec<RenderedObject>,
    /// Hooks.
    #[serde(default)]
    pub hooks: Vec<RenderedHook>,
    /// Dependencies Helm dropped (disabled by their condition, or absent from `charts/`).
    #[serde(default)]
    pub disabled: Vec<String>,
}

/// Why a release did not render.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RenderFailure {
    /// load, kube-version, dependencies, values, template, parse.
    pub stage: String,
    /// Helm's message.
    pub message: String,
}

#[derive(Deserialize)]
struct Answer {
    results: Vec<AnswerResult>,
}

#[derive(Deserialize)]
struct AnswerResult {
    #[serde(default)]
    error: Option<RenderFailure>,
    #[serde(flatten)]
    rendered: Value,
}

/// The renderer could not run at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RendererError(pub String);

/// Finds the renderer: `$FLEETFORM_CHART_RENDERER`, next to the running executable, then
/// `~/.cache/fleetform/bin` (where `scripts/build-renderer.sh` puts it).
pub fn locate() -> Result<PathBuf, RendererError> {
    if let Some(p) = std::env::var_os(RENDERER_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(RendererError(format!(
                "{RENDERER_ENV}={} does not name a file",
                p.display()
            )))
        };
    }
    let mut tried = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        tried.push(dir.join(RENDERER_BIN));
    }
    let cache = std::env::var_os("FLEETFORM_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/fleetform")));
    if let Some(c) = cache {
        tried.push(c.join("bin").join(RENDERER_BIN));
    }
    tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        RendererError(format!(
            "the chart renderer ({RENDERER_BIN}) is not installed: run scripts/build-renderer.sh \
             (needs Go) or set {RENDERER_ENV}; looked in {}",
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Renders a batch of releases with one run of the renderer; one result per request.
pub async fn render(
    renderer: &std::path::Path,
    requests: &[RenderRequest],
) -> Result<Vec<Result<Rendered, RenderFailure>>, RendererError> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let input = serde_json::to_vec(&serde_json::json!({ "renders": requests }))
        .map_err(|e| RendererError(format!("encoding the render request: {e}")))?;
    let mut child = tokio::process::Command::new(renderer)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RendererError(format!("cannot run {}: {e}", renderer.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&input)
            .await
            .map_err(|e| RendererError(format!("writing to the renderer: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| RendererError(format!("waiting for the renderer: {e}")))?;
    if !out.status.success() {
        return Err(RendererError(format!(
            "the chart renderer failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let answer: Answer = serde_json::from_slice(&out.stdout)
        .map_err(|e| RendererError(format!("the renderer's answer is not JSON: {e}")))?;
    if answer.results.len() != requests.len() {
        return Err(RendererError(format!(
            "the renderer answered {} results for {} requests",
            answer.results.len(),
            requests.len()
        )));
    }
    Ok(answer
        .results
        .into_iter()
        .map(|r| match r.error {
            Some(f) => Err(f),
            None => serde_json::from_value::<Rendered>(r.rendered).map_err(|e| RenderFailure {
                stage: "parse".into(),
                message: format!("the renderer's result is malformed: {e}"),
            }),
        })
        .collect())
}
