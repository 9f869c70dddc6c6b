//! Digest pinning (`registries.pinDigests`, engine/src/plan/pins.rs) against real peers: the
//! htpasswd registry of tests/peers/registry.sh and the kube-apiserver of
//! tests/peers/kube.sh (with the NIM Operator CRDs). Plan and apply go through the
//! engine's `make_plan` / `run_apply` with the real ngc and kube providers, as the CLI does.
//! Steps, on a NIMService whose `image.tag` is pinned: push an image → plan shows the digest
//! → apply (the server accepts `tag@digest`) → re-plan is empty → push another manifest
//! under the same tag → re-plan is one update from the old digest to the new → apply →
//! re-plan is empty. Nothing runs the NIM Operator here, so the test sets the Ready
//! condition the provider's health check waits for, as the operator would.
//! Needs both peers; without them it is skipped, or fails with FLEETFORM_REQUIRE_PEERS=1.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleetform_engine::apply::ApplyOptions;
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::reconcile::{ObserveOptions, Planned, make_plan, run_apply};
use fleetform_engine::resource::Pin;
use fleetform_engine::secret::LocalSecrets;
use fleetform_engine::state::{LocalStateStore, StateStore};
use fleetform_engine::{Action, Desired, Origin, ResourceId, Sensitive};
use fleetform_kube::{ClusterConfig, KubeProvider, object_id};
use fleetform_ngc::registry::BasicCredentials;
use fleetform_ngc::{NgcProvider, RegistryClient, RegistrySpec};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;

const CLUSTER: &str = "acme";
const REQUIRE: &str = "FLEETFORM_REQUIRE_PEERS";

fn required() -> bool {
    std::env::var(REQUIRE).as_deref() == Ok("1")
}

/// The htpasswd registry: (url, user, password file), from the environment or the env file
/// `tests/peers/registry.sh start` writes.
fn registry() -> Option<(String, String, PathBuf)> {
    let mut vars: BTreeMap<String, String> = std::env::vars()
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
    ) {
        (Some(u), Some(n), Some(p)) => Some((u, n, p.into())),
        _ if required() => {
            panic!("registry peer not running: run tests/peers/registry.sh start ({REQUIRE}=1)")
        }
        _ => {
            eprintln!("skipped: registry not running (tests/peers/registry.sh start)");
            None
        }
    }
}

/// The apiserver's admin kubeconfig.
fn kubeconfig() -> Option<PathBuf> {
    match std::env::var_os("FLEETFORM_TEST_KUBECONFIG") {
        Some(p) => Some(PathBuf::from(p)),
        None if required() => panic!(
            "FLEETFORM_TEST_KUBECONFIG is not set: run tests/peers/kube.sh start and source target/peers/kube.env ({REQUIRE}=1)"
        ),
        None => {
            eprintln!("skipped: kube not running (tests/peers/kube.sh start)");
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

// ---------------------------------------------------------------- pushing (as tests/registry.rs)

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
    let location = headers.get("location").unwrap().to_str().unwrap();
    let location = if location.starts_with('/') {
        format!("{endpoint}{location}")
    } else {
        location.to_string()
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

/// Pushes a one-layer image (its layer unique per call) under `repo:tag`; returns its digest.
async fn push_image(c: &RegistryClient, endpoint: &str, repo: &str, tag: &str) -> String {
    let layer = format!(
        "fleetform pin test {repo} {tag} {:?}",
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
    let (status, _, _) = c
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
    sha256(&manifest)
}

// ---------------------------------------------------------------- the fleet, by hand

fn kube(object: Value) -> Desired {
    let spec = json!({"cluster": CLUSTER, "object": object});
    Desired::new(object_id(CLUSTER, &spec["object"]), spec)
}

fn pinned(mut d: Desired, path: &str, image: &ResourceId, ns: &ResourceId) -> Desired {
    d.pins.push(Pin {
        path: path.into(),
        image: image.clone(),
        origin: Some(Origin {
            file: "nims.yaml".into(),
            line: 7,
            column: 10,
        }),
    });
    d.depends_on(image.clone(), format!("pins the digest of {image}"))
        .depends_on(ns.clone(), "namespace first")
}

struct Peers {
    providers: Providers,
    store: LocalStateStore,
    _dir: tempfile::TempDir,
}

impl Peers {
    async fn plan(&self, desired: &[Desired]) -> Planned {
        let state = self.store.load().await.unwrap();
        let planned = make_plan(
            desired,
            &state,
            &self.providers,
            &PlanOptions::default(),
            ObserveOptions::default(),
            Some("pin-test".into()),
        )
        .await
        .unwrap();
        assert!(
            planned.plan.problems.is_empty(),
            "{:?}",
            planned.plan.problems
        );
        planned
    }

    async fn apply(&self, desired: &[Desired]) {
        let planned = self.plan(desired).await;
        let mut state = self.store.load().await.unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let options = ApplyOptions {
            health_poll: Duration::from_millis(100),
            health_timeout: Duration::from_secs(20),
            ..ApplyOptions::default()
        };
        let report = run_apply(
            &planned,
            desired,
            &mut state,
            &self.store,
            &self.providers,
            &options,
            None,
            rx,
        )
        .await
        .unwrap();
        assert!(report.succeeded(), "{report:?}");
    }
}

/// Plays the NIM Operator: marks the NIMService Ready as soon as it exists, until `stop`.
fn operator(
    kubeconfig: PathBuf,
    namespace: String,
    name: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(
            "apps.nvidia.com",
            "v1alpha1",
            "NIMService",
        ));
        let api: Api<DynamicObject> = Api::namespaced_with(client, &namespace, &ar);
        let status = json!({"status": {"state": "Ready", "conditions": [{
            "type": "Ready", "status": "True", "reason": "Ready", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
        while !*stop.borrow() {
            let _ = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn field<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or_default()
}

#[tokio::test]
async fn a_tag_moved_in_the_registry_reaches_the_cluster_only_as_a_planned_digest_update() {
    let (Some((url, user, password_file)), Some(kubeconfig)) = (registry(), kubeconfig()) else {
        return;
    };
    let host = url
        .split_once("://")
        .unwrap()
        .1
        .trim_end_matches('/')
        .to_string();
    let repo = format!("acme/{}", unique("nim"));
    let password = std::fs::read_to_string(&password_file)
        .unwrap()
        .trim()
        .to_string();
    let pusher = RegistryClient::new(
        &RegistrySpec::new(&url),
        Some(BasicCredentials {
            username: user.clone(),
            password: Sensitive::new(password),
        }),
        Arc::new(tokio::sync::Semaphore::new(4)),
    )
    .unwrap();
    let d1 = push_image(&pusher, &url, &repo, "1.0").await;

    let image_id = ResourceId::new("ngc", format!("image/acme/{host}/{repo}:1.0"));
    let image = Desired::new(
        image_id.clone(),
        json!({"tenant": "acme", "registry": {"endpoint": url}, "repository": repo, "tag": "1.0",
               "credentials": {"username": user, "password": {"file": password_file}}}),
    );
    let name = unique("pin");
    let ns = kube(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
    let cache = kube(json!({
            "apiVersion": "apps.nvidia.com/v1alpha1", "kind": "NIMCache",
            "metadata": {"name": "llama", "namespace": name},
            "spec": {"source": {"ngc": {"modelPuller": format!("{host}/{repo}:1.0"), "pullSecret": "ngc-pull", "authSecret": "ngc-api"}},
                     "storage": {"pvc": {"create": true, "size": "1Gi", "volumeAccessMode": "ReadWriteOnce"}}}
        }))
    .depends_on(ns.id.clone(), "namespace first");
    let service = pinned(
        kube(json!({
            "apiVersion": "apps.nvidia.com/v1alpha1", "kind": "NIMService",
            "metadata": {"name": "llama", "namespace": name},
            "spec": {"image": {"repository": format!("{host}/{repo}"), "tag": "1.0", "pullSecrets": ["ngc-pull"]},
                     "authSecret": "ngc-api", "replicas": 1, "expose": {"service": {"type": "ClusterIP", "port": 8000}}}
        })),
        "/object/spec/image/tag",
        &image_id,
        &ns.id,
    );
    let dir = tempfile::tempdir().unwrap();
    let peers = Peers {
        providers: Providers::new()
            .with(Arc::new(NgcProvider::new(
                Arc::new(LocalSecrets::default()),
            )))
            .with(Arc::new(KubeProvider::new(BTreeMap::from([(
                CLUSTER.to_string(),
                ClusterConfig::new(kubeconfig.clone()),
            )])))),
        store: LocalStateStore::open(dir.path().join("state")).unwrap(),
        _dir: dir,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let op = operator(kubeconfig, name.clone(), "llama".into(), stopped);
    // The cache keeps its tag (its modelPuller is immutable): only the service is pinned.
    let fleet = vec![ns.clone(), image.clone(), cache.clone(), service.clone()];
    let tag = "/object/spec/image/tag";

    // 1. The first plan creates the service with the digest, not the tag.
    let first = peers.plan(&fleet).await;
    let c = first
        .plan
        .changes
        .iter()
        .find(|c| c.id == service.id)
        .unwrap();
    assert_eq!(c.action, Action::Create);
    assert_eq!(field(c.spec.as_ref().unwrap(), tag), format!("1.0@{d1}"));
    assert!(c.waits_for.iter().any(|w| w.on == image_id));

    // 2. Apply (the apiserver accepts tag@digest); what is recorded is what was planned,
    //    and a re-plan is empty.
    peers.apply(&fleet).await;
    let state = peers.store.load().await.unwrap();
    let recorded = state.resources[&service.id].spec.as_ref().unwrap();
    assert_eq!(field(recorded, tag), format!("1.0@{d1}"));
    let again = peers.plan(&fleet).await.plan;
    assert!(
        !again.summary.has_changes(),
        "{:?}",
        again.actionable().collect::<Vec<_>>()
    );

    // 3. Another manifest under the same tag: one planned update, old digest to new.
    let d2 = push_image(&pusher, &url, &repo, "1.0").await;
    assert_ne!(d1, d2);
    let moved = peers.plan(&fleet).await.plan;
    let changes: Vec<_> = moved.actionable().collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].id, service.id);
    assert_eq!(changes[0].action, Action::Update);
    let f = changes[0]
        .fields
        .iter()
        .find(|f| f.path.ends_with("/image/tag"))
        .unwrap_or_else(|| panic!("{:?}", changes[0].fields));
    let text = |v: &Option<Value>| {
        v.as_ref()
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(text(&f.before), format!("1.0@{d1}"), "{f:?}");
    assert_eq!(text(&f.after), format!("1.0@{d2}"), "{f:?}");
    assert_ne!(
        moved.digest, again.digest,
        "a plan saved before the move is refused"
    );

    // 4. Apply the move; the recorded spec has the new digest and a re-plan is empty.
    peers.apply(&fleet).await;
    let state = peers.store.load().await.unwrap();
    let recorded = state.resources[&service.id].spec.as_ref().unwrap();
    assert_eq!(field(recorded, tag), format!("1.0@{d2}"));
    assert!(!peers.plan(&fleet).await.plan.summary.has_changes());
    stop.send(true).unwrap();
    op.await.unwrap();
}
