//! The ngc provider against real registries on loopback (tests/peers/registry.sh start):
//! a distribution registry with htpasswd auth and one with token auth behind the test token
//! issuer. Each test pushes its own image (POST upload, PUT with digest, PUT manifest) to a
//! unique repository.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use fleetform_contract::provider::{ApplyContext, ApplyRequest, ErrorKind};
use fleetform_contract::secret::{LocalSecrets, SecretRef};
use fleetform_contract::{
    Action, Desired, ObserveRequest, Provider, ProviderError, ResourceId, Sensitive,
};
use fleetform_ngc::registry::BasicCredentials;
use fleetform_ngc::{
    AccessSpec, Credentials, ImageSpec, NgcProvider, PULL_SECRET_SENSITIVE_POINTER, RegistryClient,
    RegistrySpec, dockerconfigjson, pull_secret_object,
};
use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::Digest as _;

// ---------------------------------------------------------------- peer environment

struct Peer {
    basic_url: String,
    basic_user: String,
    basic_password_file: PathBuf,
    token_url: String,
    acme_key_file: PathBuf,
    globex_key_file: PathBuf,
    admin_key_file: PathBuf,
}

impl Peer {
    fn secrets(&self) -> Vec<String> {
        [
            &self.basic_password_file,
            &self.acme_key_file,
            &self.globex_key_file,
            &self.admin_key_file,
        ]
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap().trim().to_string())
        .collect()
    }
}

/// Reads the peer's variables from the environment, or else from the env file that
/// `tests/peers/registry.sh start` writes (so a bare `cargo test -p fleetform-ngc` works).
fn peer() -> Option<Peer> {
    let mut vars: std::collections::HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("FLEETFORM_REGISTRY_"))
        .collect();
    if !vars.contains_key("FLEETFORM_REGISTRY_BASIC_URL") {
        let dir = std::env::var("FLEETFORM_PEERS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| {
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/peers")
            });
        if let Ok(text) = std::fs::read_to_string(dir.join("registry.env")) {
            for line in text.lines() {
                if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                    vars.insert(k.to_string(), v.trim_matches('\'').to_string());
                }
            }
        }
    }
    let get = |k: &str| vars.get(k).cloned();
    match (
        get("FLEETFORM_REGISTRY_BASIC_URL"),
        get("FLEETFORM_REGISTRY_BASIC_USERNAME"),
        get("FLEETFORM_REGISTRY_BASIC_PASSWORD_FILE"),
        get("FLEETFORM_REGISTRY_TOKEN_URL"),
        get("FLEETFORM_REGISTRY_TOKEN_ACME_KEY_FILE"),
        get("FLEETFORM_REGISTRY_TOKEN_GLOBEX_KEY_FILE"),
        get("FLEETFORM_REGISTRY_TOKEN_ADMIN_KEY_FILE"),
    ) {
        (Some(bu), Some(us), Some(pw), Some(tu), Some(ak), Some(gk), Some(adm)) => Some(Peer {
            basic_url: bu,
            basic_user: us,
            basic_password_file: pw.into(),
            token_url: tu,
            acme_key_file: ak.into(),
            globex_key_file: gk.into(),
            admin_key_file: adm.into(),
        }),
        _ if std::env::var("FLEETFORM_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!(
                "registry peer not running: run tests/peers/registry.sh start (FLEETFORM_REQUIRE_PEERS=1)"
            )
        }
        _ => {
            eprintln!("skipped: registry not running (tests/peers/registry.sh start)");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}/t{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn host(url: &str) -> String {
    url.split_once("://")
        .unwrap()
        .1
        .trim_end_matches('/')
        .to_string()
}

// ---------------------------------------------------------------- pushing test images

fn pusher(endpoint: &str, username: &str, password_file: &PathBuf) -> RegistryClient {
    let password = std::fs::read_to_string(password_file)
        .unwrap()
        .trim()
        .to_string();
    RegistryClient::new(
        &RegistrySpec::new(endpoint),
        Some(BasicCredentials {
            username: username.into(),
            password: Sensitive::new(password),
        }),
        Arc::new(tokio::sync::Semaphore::new(4)),
    )
    .unwrap()
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

async fn push_blob(c: &RegistryClient, endpoint: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let (status, headers, _) = c
        .send(
            Method::POST,
            &format!("{endpoint}/v2/{repo}/blobs/uploads/"),
            repo,
            "pull,push",
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "upload start for {repo}");
    let location = headers
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let location = if location.starts_with('/') {
        format!("{endpoint}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let (status, _, _) = c
        .send_with_body(
            Method::PUT,
            &format!("{location}{sep}digest={digest}"),
            repo,
            "pull,push",
            Some("application/octet-stream"),
            Some(data.to_vec()),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "blob PUT for {repo}");
    digest
}

/// Pushes a one-layer OCI image under `repo:tag`; returns the manifest digest.
async fn push_image(c: &RegistryClient, endpoint: &str, repo: &str, tag: &str) -> String {
    let layer = format!(
        "fleetform test layer {repo} {tag} {:?}",
        std::time::SystemTime::now()
    )
    .into_bytes();
    let config = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]}})
        .to_string()
        .into_bytes();
    let layer_digest = push_blob(c, endpoint, repo, &layer).await;
    let config_digest = push_blob(c, endpoint, repo, &config).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string()
    .into_bytes();
    let (status, headers, _) = c
        .send_with_body(
            Method::PUT,
            &format!("{endpoint}/v2/{repo}/manifests/{tag}"),
            repo,
            "pull,push",
            Some("application/vnd.oci.image.manifest.v1+json"),
            Some(manifest.clone()),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "manifest PUT for {repo}:{tag}");
    let digest = sha256(&manifest);
    assert_eq!(
        headers
            .get("docker-content-digest")
            .unwrap()
            .to_str()
            .unwrap(),
        digest
    );
    digest
}

// ---------------------------------------------------------------- provider helpers

fn provider() -> NgcProvider {
    NgcProvider::new(Arc::new(LocalSecrets::default()))
}

fn image_spec(
    tenant: &str,
    endpoint: &str,
    repo: &str,
    tag: &str,
    creds: Option<(&str, &PathBuf)>,
) -> ImageSpec {
    ImageSpec {
        tenant: tenant.into(),
        registry: RegistrySpec::new(endpoint),
        repository: repo.into(),
        tag: tag.into(),
        credentials: creds.map(|(u, f)| Credentials {
            username: u.into(),
            password: SecretRef::File(f.clone()),
        }),
    }
}

async fn observe_one(
    p: &NgcProvider,
    id: &ResourceId,
    spec: &serde_json::Value,
) -> Result<Option<fleetform_contract::Observed>, ProviderError> {
    let mut out = p
        .observe(&[ObserveRequest {
            id,
            spec,
            desired: true,
            unchanged: false,
        }])
        .await;
    out.pop().unwrap()
}

/// Every rendering of an error: Display, Debug and the source chain.
fn renderings(e: &ProviderError) -> String {
    let mut s = format!("{e}\n{e:?}");
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!("\n{c}\n{c:?}"));
        src = c.source();
    }
    s
}

fn assert_no_secret(text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!s.is_empty());
        assert!(!text.contains(s.as_str()), "a secret leaked into: {text}");
        let b64 = STANDARD.encode(s);
        assert!(!text.contains(&b64), "a base64 secret leaked into: {text}");
    }
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn tag_resolves_to_the_digest_of_the_pushed_manifest_and_plans_noop() {
    let Some(peer) = peer() else { return };
    let repo = unique("acme");
    let c = pusher(&peer.basic_url, &peer.basic_user, &peer.basic_password_file);
    let pushed = push_image(&c, &peer.basic_url, &repo, "v1").await;

    let spec = image_spec(
        "acme",
        &peer.basic_url,
        &repo,
        "v1",
        Some((&peer.basic_user, &peer.basic_password_file)),
    );
    let id = spec.id().unwrap();
    assert_eq!(
        id.as_str(),
        format!("ngc:image/acme/{}/{repo}:v1", host(&peer.basic_url))
    );
    let desired = Desired::new(id.clone(), serde_json::to_value(&spec).unwrap());
    let p = provider();

    // observe -> diff: NoOp, the digest in the observed state.
    let observed = observe_one(&p, &id, &desired.spec).await.unwrap().unwrap();
    assert_eq!(observed.state, json!({"digest": pushed}));
    let change = p.diff(&desired, Some(&observed)).unwrap();
    assert_eq!(change.action, Action::NoOp);
    assert!(change.fields.is_empty());

    // apply (NoOp) -> re-observe -> still NoOp with the same digest.
    let applied = p
        .apply(
            &ApplyRequest {
                change: &change,
                desired: Some(&desired),
                last_applied: None,
                observed: Some(&observed),
            },
            &ApplyContext::default(),
        )
        .await
        .unwrap();
    assert_eq!(applied.spec, desired.spec);
    let again = observe_one(&p, &id, &desired.spec).await.unwrap().unwrap();
    assert_eq!(again, observed);
    assert_eq!(p.diff(&desired, Some(&again)).unwrap().action, Action::NoOp);

    // Out of band: the tag is re-pushed. Only the observed digest moves.
    let repushed = push_image(&c, &peer.basic_url, &repo, "v1").await;
    assert_ne!(repushed, pushed);
    let moved = observe_one(&p, &id, &desired.spec).await.unwrap().unwrap();
    assert_eq!(moved.state, json!({"digest": repushed}));

    // The exported helper agrees.
    let d = fleetform_ngc::resolve_digest(&spec, Arc::new(LocalSecrets::default()))
        .await
        .unwrap();
    assert_eq!(d, repushed);
}

#[tokio::test]
async fn missing_tag_is_a_permanent_error_naming_the_image() {
    let Some(peer) = peer() else { return };
    let repo = unique("acme");
    let c = pusher(&peer.basic_url, &peer.basic_user, &peer.basic_password_file);
    push_image(&c, &peer.basic_url, &repo, "v1").await;

    let spec = image_spec(
        "acme",
        &peer.basic_url,
        &repo,
        "v2",
        Some((&peer.basic_user, &peer.basic_password_file)),
    );
    let id = spec.id().unwrap();
    let err = observe_one(&provider(), &id, &serde_json::to_value(&spec).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    let h = host(&peer.basic_url);
    assert_eq!(
        err.message,
        format!("image {h}/{repo}:v2 not found in {h} (tag v2)")
    );
    assert_no_secret(&renderings(&err), &peer.secrets());
}

#[tokio::test]
async fn wrong_credentials_name_tenant_and_registry_never_the_key() {
    let Some(peer) = peer() else { return };
    let dir = tempfile::tempdir().unwrap();
    let wrong_key = format!("nvapi-wrong-{}", std::process::id());
    let wrong = dir.path().join("wrong-key");
    std::fs::write(&wrong, format!("{wrong_key}\n")).unwrap();
    let mut secrets = peer.secrets();
    secrets.push(wrong_key);
    let p = provider();

    // Basic-auth registry: the right user, a wrong password.
    let spec = image_spec(
        "acme",
        &peer.basic_url,
        "acme/anything",
        "v1",
        Some((&peer.basic_user, &wrong)),
    );
    let err = observe_one(
        &p,
        &spec.id().unwrap(),
        &serde_json::to_value(&spec).unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("tenant acme") && err.message.contains(&host(&peer.basic_url)),
        "{}",
        err.message
    );
    assert_no_secret(&renderings(&err), &secrets);

    // Token-auth registry: `$oauthtoken` with a key the token service does not know.
    let spec = image_spec(
        "acme",
        &peer.token_url,
        "acme/anything",
        "v1",
        Some(("$oauthtoken", &wrong)),
    );
    let access = AccessSpec {
        tenant: "acme".into(),
        registry: spec.registry.clone(),
        credentials: spec.credentials.clone(),
        images: vec!["acme/anything:v1".into()],
    };
    for (id, value) in [
        (spec.id().unwrap(), serde_json::to_value(&spec).unwrap()),
        (access.id().unwrap(), serde_json::to_value(&access).unwrap()),
    ] {
        let err = observe_one(&p, &id, &value).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Permanent);
        assert!(
            err.message.contains("tenant acme") && err.message.contains(&host(&peer.token_url)),
            "{}",
            err.message
        );
        assert_no_secret(&renderings(&err), &secrets);
    }
    assert_no_secret(&format!("{p:?} {spec:?} {access:?}"), &secrets);
}

#[tokio::test]
async fn token_auth_registry_resolves_and_grants_the_tenants_own_images() {
    let Some(peer) = peer() else { return };
    let admin = pusher(&peer.token_url, "$oauthtoken", &peer.admin_key_file);
    let repo_a = unique("acme");
    let repo_b = unique("acme");
    let da = push_image(&admin, &peer.token_url, &repo_a, "1.0").await;
    let db = push_image(&admin, &peer.token_url, &repo_b, "2.0").await;
    let p = provider();

    let spec = image_spec(
        "acme",
        &peer.token_url,
        &repo_a,
        "1.0",
        Some(("$oauthtoken", &peer.acme_key_file)),
    );
    let id = spec.id().unwrap();
    let value = serde_json::to_value(&spec).unwrap();
    let observed = observe_one(&p, &id, &value).await.unwrap().unwrap();
    assert_eq!(observed.state, json!({"digest": da}));
    assert_eq!(
        p.diff(&Desired::new(id.clone(), value.clone()), Some(&observed))
            .unwrap()
            .action,
        Action::NoOp
    );
    // A second observe reuses the cached token (same answer).
    assert_eq!(
        observe_one(&p, &id, &value).await.unwrap().unwrap(),
        observed
    );

    let access = AccessSpec {
        tenant: "acme".into(),
        registry: RegistrySpec::new(&peer.token_url),
        credentials: spec.credentials.clone(),
        images: vec![format!("{repo_a}:1.0"), format!("{repo_b}:2.0")],
    };
    let aid = access.id().unwrap();
    assert_eq!(
        aid.as_str(),
        format!("ngc:access/acme/{}", host(&peer.token_url))
    );
    let avalue = serde_json::to_value(&access).unwrap();
    let observed = observe_one(&p, &aid, &avalue).await.unwrap().unwrap();
    assert_eq!(
        observed.state,
        json!({"images": {format!("{repo_a}:1.0"): da, format!("{repo_b}:2.0"): db}})
    );
    assert_eq!(
        p.diff(&Desired::new(aid, avalue), Some(&observed))
            .unwrap()
            .action,
        Action::NoOp
    );
    assert_no_secret(&format!("{p:?} {observed:?}"), &peer.secrets());
}

#[tokio::test]
async fn another_tenants_repository_is_insufficient_scope_naming_the_repository() {
    let Some(peer) = peer() else { return };
    let admin = pusher(&peer.token_url, "$oauthtoken", &peer.admin_key_file);
    let own = unique("acme");
    let theirs = unique("globex");
    push_image(&admin, &peer.token_url, &own, "v1").await;
    push_image(&admin, &peer.token_url, &theirs, "v1").await;
    let p = provider();

    // globex can pull its own image.
    let g = image_spec(
        "globex",
        &peer.token_url,
        &theirs,
        "v1",
        Some(("$oauthtoken", &peer.globex_key_file)),
    );
    observe_one(&p, &g.id().unwrap(), &serde_json::to_value(&g).unwrap())
        .await
        .unwrap()
        .unwrap();

    // acme may not: its token carries no access to globex's repository.
    let access = AccessSpec {
        tenant: "acme".into(),
        registry: RegistrySpec::new(&peer.token_url),
        credentials: Some(Credentials {
            username: "$oauthtoken".into(),
            password: SecretRef::File(peer.acme_key_file.clone()),
        }),
        images: vec![format!("{own}:v1"), format!("{theirs}:v1")],
    };
    let err = observe_one(
        &p,
        &access.id().unwrap(),
        &serde_json::to_value(&access).unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("insufficient_scope"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains(&format!("repository {theirs}")),
        "{}",
        err.message
    );
    assert!(err.message.contains("tenant acme"), "{}", err.message);
    assert!(
        !err.message.contains(&format!("repository {own}")),
        "only the refused repository is named: {}",
        err.message
    );
    assert_no_secret(&renderings(&err), &peer.secrets());
}

#[tokio::test]
async fn anonymous_pull_from_an_authenticated_registry_is_refused_as_unauthorized() {
    let Some(peer) = peer() else { return };
    let spec = image_spec("acme", &peer.basic_url, "acme/anything", "v1", None);
    let err = observe_one(
        &provider(),
        &spec.id().unwrap(),
        &serde_json::to_value(&spec).unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("tenant acme") && err.message.contains("none are configured"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn server_errors_are_transient_with_retry_after_and_refused_connections_transient() {
    // A registry that answers 503 + Retry-After (no peer needed).
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "7")],
            "busy",
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let spec = image_spec("acme", &format!("http://{addr}"), "acme/x", "v1", None);
    let err = observe_one(
        &provider(),
        &spec.id().unwrap(),
        &serde_json::to_value(&spec).unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{}", err.message);
    assert_eq!(err.retry_after, Some(Duration::from_secs(7)));
    assert!(err.message.contains("HTTP 503"), "{}", err.message);

    // Nothing listening: transient, with the transport error as the source.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let spec = image_spec("acme", &format!("http://{closed}"), "acme/x", "v1", None);
    let err = observe_one(
        &provider(),
        &spec.id().unwrap(),
        &serde_json::to_value(&spec).unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{}", err.message);
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn ngc_resources_are_read_only() {
    let spec = image_spec(
        "acme",
        "https://nvcr.io",
        "nvidia/gpu-operator",
        "v25.3.0",
        None,
    );
    let desired = Desired::new(spec.id().unwrap(), serde_json::to_value(&spec).unwrap());
    let p = provider();
    assert_eq!(
        p.diff(&desired, None).unwrap_err().kind,
        ErrorKind::Permanent
    );
    let change = fleetform_contract::Change::new(desired.id.clone(), Action::Create);
    let err = p
        .apply(
            &ApplyRequest {
                change: &change,
                desired: Some(&desired),
                last_applied: None,
                observed: None,
            },
            &ApplyContext::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    // An address that does not match its spec is refused before any request.
    let other = ResourceId::new("ngc", "image/globex/nvcr.io/nvidia/gpu-operator:v25.3.0");
    let err = observe_one(&p, &other, &desired.spec).await.unwrap_err();
    assert!(err.message.contains("does not match"), "{}", err.message);
}

#[test]
fn dockerconfigjson_has_auths_with_base64_user_pass_and_a_rotated_key_changes_it() {
    let key = Sensitive::new("nvapi-test-key-0001".to_string());
    let content = dockerconfigjson("nvcr.io", "$oauthtoken", &key);
    let doc: serde_json::Value = serde_json::from_str(content.expose()).unwrap();
    let entry = &doc["auths"]["nvcr.io"];
    assert_eq!(entry["username"], "$oauthtoken");
    assert_eq!(entry["password"], "nvapi-test-key-0001");
    let auth = STANDARD.decode(entry["auth"].as_str().unwrap()).unwrap();
    assert_eq!(
        String::from_utf8(auth).unwrap(),
        "$oauthtoken:nvapi-test-key-0001"
    );
    assert_eq!(format!("{content:?} {content}"), "(sensitive) (sensitive)");

    let secret = pull_secret_object("gpu-operator", "ngc-pull", "nvcr.io", "$oauthtoken", &key);
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(
        secret["metadata"],
        json!({"namespace": "gpu-operator", "name": "ngc-pull"})
    );
    let data = secret
        .pointer(PULL_SECRET_SENSITIVE_POINTER)
        .unwrap()
        .as_str()
        .unwrap();
    assert_eq!(STANDARD.decode(data).unwrap(), content.expose().as_bytes());

    // Rotation: a new key gives a new secret content (an Update of that field for the kube provider).
    let rotated = Sensitive::new("nvapi-test-key-0002".to_string());
    let secret2 = pull_secret_object(
        "gpu-operator",
        "ngc-pull",
        "nvcr.io",
        "$oauthtoken",
        &rotated,
    );
    assert_ne!(
        secret.pointer(PULL_SECRET_SENSITIVE_POINTER),
        secret2.pointer(PULL_SECRET_SENSITIVE_POINTER)
    );
    assert_ne!(
        dockerconfigjson("nvcr.io", "$oauthtoken", &rotated).digest(),
        content.digest()
    );
    let mut a = secret.clone();
    let mut b = secret2.clone();
    a.as_object_mut().unwrap().remove("data");
    b.as_object_mut().unwrap().remove("data");
    assert_eq!(a, b, "only the sensitive field changes");
}

#[tokio::test]
async fn a_token_service_outage_is_transient_not_a_credentials_error() {
    // A registry whose token realm answers 503 + Retry-After: the same answer on a 401 would
    // mean "wrong key"; a 503 must be retried.
    let token = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "3")],
            "down",
        )
    });
    let tl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let realm = format!("http://{}/token", tl.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(tl, token).await.unwrap() });
    let registry = axum::Router::new().fallback(move || {
        let challenge = format!("Bearer realm=\"{realm}\",service=\"svc\"");
        async move {
            (
                axum::http::StatusCode::UNAUTHORIZED,
                [("www-authenticate", challenge)],
                "",
            )
        }
    });
    let rl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = rl.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(rl, registry).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "nvapi-outage-test-key").unwrap();
    let spec = image_spec(
        "acme",
        &format!("http://{addr}"),
        "acme/x",
        "v1",
        Some(("$oauthtoken", &key)),
    );
    let err = observe_one(
        &provider(),
        &spec.id().unwrap(),
        &serde_json::to_value(&spec).unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{}", err.message);
    assert_eq!(err.retry_after, Some(Duration::from_secs(3)));
    assert!(
        err.message.contains("token request") && err.message.contains("HTTP 503"),
        "{}",
        err.message
    );
    assert_no_secret(&renderings(&err), &["nvapi-outage-test-key".to_string()]);
}

#[tokio::test]
async fn a_rotated_key_is_used_on_the_next_observe() {
    let Some(peer) = peer() else { return };
    let admin = pusher(&peer.token_url, "$oauthtoken", &peer.admin_key_file);
    let repo = unique("acme");
    let digest = push_image(&admin, &peer.token_url, &repo, "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("acme-key");
    std::fs::copy(&peer.acme_key_file, &key_file).unwrap();
    let spec = image_spec(
        "acme",
        &peer.token_url,
        &repo,
        "v1",
        Some(("$oauthtoken", &key_file)),
    );
    let (id, value) = (spec.id().unwrap(), serde_json::to_value(&spec).unwrap());
    let p = provider();
    assert_eq!(
        observe_one(&p, &id, &value).await.unwrap().unwrap().state,
        json!({"digest": digest})
    );

    // The key is rotated to one the token service does not know: the cached token is not reused.
    std::fs::write(&key_file, "nvapi-revoked-key").unwrap();
    let err = observe_one(&p, &id, &value).await.unwrap_err();
    assert!(
        err.message
            .contains("rejected the credentials of tenant acme"),
        "{}",
        err.message
    );

    // And back to a valid key.
    std::fs::copy(&peer.acme_key_file, &key_file).unwrap();
    assert_eq!(
        observe_one(&p, &id, &value).await.unwrap().unwrap().state,
        json!({"digest": digest})
    );
}

#[tokio::test]
async fn one_failing_image_does_not_fail_the_others_in_a_batch() {
    let Some(peer) = peer() else { return };
    let c = pusher(&peer.basic_url, &peer.basic_user, &peer.basic_password_file);
    let repo = unique("acme");
    let digest = push_image(&c, &peer.basic_url, &repo, "v1").await;
    let creds = Some((peer.basic_user.as_str(), &peer.basic_password_file));
    let specs: Vec<ImageSpec> = (0..12)
        .map(|i| {
            image_spec(
                "acme",
                &peer.basic_url,
                &repo,
                if i % 4 == 3 { "missing" } else { "v1" },
                creds,
            )
        })
        .collect();
    let ids: Vec<ResourceId> = specs.iter().map(|s| s.id().unwrap()).collect();
    let values: Vec<serde_json::Value> = specs
        .iter()
        .map(|s| serde_json::to_value(s).unwrap())
        .collect();
    let requests: Vec<ObserveRequest<'_>> = ids
        .iter()
        .zip(&values)
        .map(|(id, spec)| ObserveRequest {
            id,
            spec,
            desired: true,
            unchanged: false,
        })
        .collect();
    let results = provider().observe(&requests).await;
    assert_eq!(results.len(), 12);
    for (i, r) in results.iter().enumerate() {
        if i % 4 == 3 {
            assert!(r.as_ref().unwrap_err().message.contains("not found"), "{i}");
        } else {
            assert_eq!(
                r.as_ref().unwrap().as_ref().unwrap().state,
                json!({"digest": digest}),
                "{i}"
            );
        }
    }
}

#[tokio::test]
async fn debug_of_every_struct_hides_the_keys() {
    let Some(peer) = peer() else { return };
    let secrets = peer.secrets();
    let client = pusher(&peer.token_url, "$oauthtoken", &peer.admin_key_file);
    // Make it hold a cached token too.
    let repo = unique("acme");
    push_image(&client, &peer.token_url, &repo, "v1").await;
    let key = Sensitive::new(
        std::fs::read_to_string(&peer.acme_key_file)
            .unwrap()
            .trim()
            .to_string(),
    );
    let creds = BasicCredentials {
        username: "$oauthtoken".into(),
        password: key.clone(),
    };
    let spec = image_spec(
        "acme",
        &peer.token_url,
        &repo,
        "v1",
        Some(("$oauthtoken", &peer.acme_key_file)),
    );
    let p = provider();
    let observed = observe_one(
        &p,
        &spec.id().unwrap(),
        &serde_json::to_value(&spec).unwrap(),
    )
    .await
    .unwrap();
    let content = dockerconfigjson(&host(&peer.token_url), "$oauthtoken", &key);
    let text =
        format!("{client:?} {creds:?} {spec:?} {p:?} {observed:?} {content:?} {content} {key:?}");
    assert_no_secret(&text, &secrets);
    assert!(text.contains("(sensitive)"));
}

#[tokio::test]
async fn a_digest_the_manifest_pinned_is_checked_by_digest() {
    let Some(peer) = peer() else { return };
    let repo = unique("acme");
    let c = pusher(&peer.basic_url, &peer.basic_user, &peer.basic_password_file);
    let pushed = push_image(&c, &peer.basic_url, &repo, "v1").await;
    let creds = Some((peer.basic_user.as_str(), &peer.basic_password_file));
    let p = provider();

    let spec = image_spec("acme", &peer.basic_url, &repo, &pushed, creds);
    spec.validate().unwrap();
    assert!(spec.reference().ends_with(&format!("/{repo}@{pushed}")));
    let id = spec.id().unwrap();
    let desired = Desired::new(id.clone(), serde_json::to_value(&spec).unwrap());
    let observed = observe_one(&p, &id, &desired.spec).await.unwrap().unwrap();
    assert_eq!(observed.state, json!({"digest": pushed}));
    assert_eq!(
        p.diff(&desired, Some(&observed)).unwrap().action,
        Action::NoOp
    );

    // A digest the registry does not have is an error, like a missing tag.
    let missing = format!("sha256:{}", "0".repeat(64));
    let spec = image_spec("acme", &peer.basic_url, &repo, &missing, creds);
    let id = spec.id().unwrap();
    let err = observe_one(&p, &id, &serde_json::to_value(&spec).unwrap()).await;
    assert!(err.is_err(), "{err:?}");
    // Not a digest at all: refused before any request.
    let spec = image_spec("acme", &peer.basic_url, &repo, "sha256:xyz", creds);
    assert!(spec.validate().unwrap_err().contains("not a sha256 digest"));
}

#[tokio::test]
async fn a_tenant_without_credentials_is_told_it_has_none_not_that_they_do_not_grant_pull() {
    let Some(peer) = peer() else { return };
    let admin = pusher(&peer.token_url, "$oauthtoken", &peer.admin_key_file);
    let repo = unique("acme");
    push_image(&admin, &peer.token_url, &repo, "v1").await;
    let p = provider();
    let anonymous = image_spec("initech", &peer.token_url, &repo, "v1", None);
    let err = observe_one(
        &p,
        &anonymous.id().unwrap(),
        &serde_json::to_value(&anonymous).unwrap(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        !err.message.contains("credentials do not grant"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("tenant initech") && err.message.contains("no registry credentials"),
        "{}",
        err.message
    );
}
