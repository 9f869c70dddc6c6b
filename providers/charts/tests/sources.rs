//! Chart sources against real servers on 127.0.0.1: an HTTP chart repository (index.yaml and
//! packaged charts, with and without basic auth) served by this test, and Helm OCI artifacts
//! pushed to the Debian distribution registry of the ngc tests (tests/peers/registry.sh), with
//! and without the right credentials. Every fetched chart is then rendered by Helm's engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleetform_charts::source::{FetchError, Fetcher};
use fleetform_engine::Sensitive;
use fleetform_engine::compile::ChartRelease;
use fleetform_engine::resource::Origin;
use fleetform_engine::secret::{LocalSecrets, SecretRef};
use fleetform_ngc::registry::BasicCredentials;
use fleetform_ngc::{RegistryClient, RegistrySpec};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::Digest as _;

/// The DRA driver chart (small, self-contained) from ../shared, packaged with `tar` as `helm
/// package` lays it out (`<name>/...` inside the archive).
fn package(dir: &Path) -> Vec<u8> {
    let shared = std::env::var_os("FLEETFORM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let src = shared.join("fixtures/charts/dra-driver-nvidia-gpu-0.4.0");
    assert!(
        src.is_dir(),
        "{} missing: ../shared must sit beside the checkout",
        src.display()
    );
    let stage = dir.join("stage");
    std::fs::create_dir_all(&stage).unwrap();
    let ok = std::process::Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(stage.join("dra-driver-nvidia-gpu"))
        .status()
        .unwrap();
    assert!(ok.success());
    let tgz = dir.join("chart.tgz");
    let ok = std::process::Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&stage)
        .arg("dra-driver-nvidia-gpu")
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::read(tgz).unwrap()
}

fn release(
    repository: &str,
    version: &str,
    username: Option<&str>,
    password: Option<SecretRef>,
) -> ChartRelease {
    ChartRelease {
        cluster: "t".into(),
        name: "dra".into(),
        namespace: "dra".into(),
        chart: "dra-driver-nvidia-gpu".into(),
        version: version.into(),
        repository: Some(repository.into()),
        username: username.map(str::to_string),
        password,
        insecure: false,
        ca_bundle: None,
        values: json!({"resources": {"gpus": {"enabled": false}}}),
        wait: false,
        after: Vec::new(),
        provides: Vec::new(),
        dependents: Vec::new(),
        value_origins: Vec::new(),
        yields_crds_to: Vec::new(),
        origin: Origin {
            file: "fleet.yaml".into(),
            line: 1,
            column: 1,
        },
    }
}

fn fetcher(dir: &Path) -> Fetcher {
    Fetcher::new(
        dir.to_path_buf(),
        dir.join("cache"),
        Arc::new(LocalSecrets::new(dir)),
    )
}

/// The fetched chart renders with Helm's engine.
async fn renders(path: PathBuf) {
    let Ok(renderer) = fleetform_charts::render::locate() else {
        panic!("the chart renderer is not built: scripts/build-renderer.sh");
    };
    let req = fleetform_charts::render::RenderRequest {
        chart: path,
        release: "dra".into(),
        namespace: "dra".into(),
        values: json!({"resources": {"gpus": {"enabled": false}}}),
        kube_version: "v1.34.0".into(),
        api_versions: Vec::new(),
        version: None,
        app_version: None,
        upgrade: false,
    };
    let out = fleetform_charts::render::render(&renderer, &[req])
        .await
        .unwrap();
    let rendered = out.into_iter().next().unwrap().expect("renders");
    assert_eq!(rendered.chart, "dra-driver-nvidia-gpu");
    assert!(!rendered.objects.is_empty());
}

/// A Helm repository on 127.0.0.1, optionally behind basic auth (user `u`, password `p`).
async fn serve_repo(tgz: Vec<u8>, auth: bool) -> String {
    use axum::http::{HeaderMap, StatusCode as S};
    let digest = hex::encode(sha2::Sha256::digest(&tgz));
    let index = format!(
        "apiVersion: v1\nentries:\n  dra-driver-nvidia-gpu:\n  - name: dra-driver-nvidia-gpu\n    version: 0.4.0\n    digest: {digest}\n    urls: [charts/dra-driver-nvidia-gpu-0.4.0.tgz]\n  - name: dra-driver-nvidia-gpu\n    version: 0.3.0\n    urls: [charts/dra-driver-nvidia-gpu-0.3.0.tgz]\n"
    );
    let ok = move |h: &HeaderMap| {
        !auth || h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Basic dTpw") // u:p
    };
    let app = axum::Router::new()
        .route(
            "/index.yaml",
            axum::routing::get(move |h: HeaderMap| {
                let index = index.clone();
                async move {
                    if ok(&h) {
                        (S::OK, index.into_bytes())
                    } else {
                        (S::UNAUTHORIZED, Vec::new())
                    }
                }
            }),
        )
        .route(
            "/charts/dra-driver-nvidia-gpu-0.4.0.tgz",
            axum::routing::get(move |h: HeaderMap| {
                let tgz = tgz.clone();
                async move {
                    if ok(&h) {
                        (S::OK, tgz)
                    } else {
                        (S::UNAUTHORIZED, Vec::new())
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn an_http_repository_serves_the_pinned_version_checked_against_its_index_digest() {
    let dir = tempfile::tempdir().unwrap();
    let url = serve_repo(package(dir.path()), false).await;
    let f = fetcher(dir.path());
    let got = f.fetch(&release(&url, "0.4.0", None, None)).await.unwrap();
    assert!(got.digest.starts_with("sha256:"));
    renders(got.path).await;
    // A version the index does not list names what it has.
    let err = f
        .fetch(&release(&url, "9.9.9", None, None))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::NotFound(_)), "{err}");
    assert!(
        err.to_string().contains("0.4.0") && err.to_string().contains("0.3.0"),
        "{err}"
    );
}

#[tokio::test]
async fn an_http_repository_behind_basic_auth_needs_the_right_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let url = serve_repo(package(dir.path()), true).await;
    std::fs::write(dir.path().join("good"), "p").unwrap();
    std::fs::write(dir.path().join("bad"), "wrong").unwrap();
    let f = fetcher(dir.path());
    let good = release(
        &url,
        "0.4.0",
        Some("u"),
        Some(SecretRef::File("good".into())),
    );
    f.fetch(&good).await.unwrap();
    let bad = release(
        &url,
        "0.4.0",
        Some("u"),
        Some(SecretRef::File("bad".into())),
    );
    let err = f.fetch(&bad).await.unwrap_err();
    assert!(matches!(err, FetchError::Unauthorized(_)), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "a credential leaked: {err}"
    );
}

fn registry() -> Option<(String, String, PathBuf)> {
    match (
        std::env::var("FLEETFORM_REGISTRY_BASIC_URL"),
        std::env::var("FLEETFORM_REGISTRY_BASIC_USERNAME"),
        std::env::var_os("FLEETFORM_REGISTRY_BASIC_PASSWORD_FILE"),
    ) {
        (Ok(u), Ok(n), Some(p)) => Some((u, n, PathBuf::from(p))),
        _ if std::env::var("FLEETFORM_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!("the registry peer is not running: tests/peers/registry.sh start")
        }
        _ => {
            eprintln!("skipped: registry not running");
            None
        }
    }
}

/// Pushes `tgz` as Helm does: an OCI manifest with Helm's config and chart layer media types.
async fn push_chart(
    endpoint: &str,
    user: &str,
    password: &Path,
    repo: &str,
    tag: &str,
    tgz: &[u8],
) {
    let pw = std::fs::read_to_string(password)
        .unwrap()
        .trim()
        .to_string();
    let c = RegistryClient::new(
        &RegistrySpec::new(endpoint),
        Some(BasicCredentials {
            username: user.into(),
            password: Sensitive::new(pw),
        }),
        Arc::new(tokio::sync::Semaphore::new(4)),
    )
    .unwrap();
    let config = json!({"name": "dra-driver-nvidia-gpu", "version": tag, "apiVersion": "v2"})
        .to_string()
        .into_bytes();
    let mut descs = Vec::new();
    for data in [&config[..], tgz] {
        let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)));
        let (status, headers, _) = c
            .send(
                Method::POST,
                &format!("{endpoint}/v2/{repo}/blobs/uploads/"),
                repo,
                "pull,push",
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::ACCEPTED);
        let loc = headers
            .get("location")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let loc = if loc.starts_with('/') {
            format!("{endpoint}{loc}")
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let (status, _, _) = c
            .send_with_body(
                Method::PUT,
                &format!("{loc}{sep}digest={digest}"),
                repo,
                "pull,push",
                Some("application/octet-stream"),
                Some(data.to_vec()),
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::CREATED);
        descs.push((digest, data.len()));
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": descs[0].0, "size": descs[0].1},
        "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", "digest": descs[1].0, "size": descs[1].1}],
    })
    .to_string()
    .into_bytes();
    let (status, _, _) = c
        .send_with_body(
            Method::PUT,
            &format!("{endpoint}/v2/{repo}/manifests/{tag}"),
            repo,
            "pull,push",
            Some("application/vnd.oci.image.manifest.v1+json"),
            Some(manifest),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn an_oci_chart_is_fetched_with_the_registry_credentials_and_refused_with_bad_ones() {
    let Some((endpoint, user, password)) = registry() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tgz = package(dir.path());
    let ns = format!("charts{}", std::process::id());
    push_chart(
        &endpoint,
        &user,
        &password,
        &format!("{ns}/dra-driver-nvidia-gpu"),
        "0.4.0",
        &tgz,
    )
    .await;
    let host = endpoint.trim_start_matches("http://");
    let repo = format!("oci://{host}/{ns}");
    let f = fetcher(dir.path());
    let good = release(
        &repo,
        "0.4.0",
        Some(&user),
        Some(SecretRef::File(password.clone())),
    );
    let got = f.fetch(&good).await.unwrap();
    assert_eq!(
        got.digest,
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tgz)))
    );
    renders(got.path).await;
    // A version not pushed.
    let missing = release(
        &repo,
        "0.5.0",
        Some(&user),
        Some(SecretRef::File(password.clone())),
    );
    assert!(matches!(
        f.fetch(&missing).await.unwrap_err(),
        FetchError::NotFound(_)
    ));
    // Wrong password: refused, and the password is never in the message.
    std::fs::write(dir.path().join("bad"), "not-the-password").unwrap();
    let bad = release(
        &repo,
        "0.4.0",
        Some(&user),
        Some(SecretRef::File("bad".into())),
    );
    let err = f.fetch(&bad).await.unwrap_err();
    assert!(matches!(err, FetchError::Unauthorized(_)), "{err}");
    assert!(!err.to_string().contains("not-the-password"));
}
