//! `--state kubernetes://<namespace>/<fleet>` and `fleetform state migrate` through the binary,
//! against the real kube-apiserver (tests/peers/kube.sh start; skipped when it is not running,
//! a failure when FLEETFORM_REQUIRE_PEERS=1).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fleetform_engine::resource::ResourceId;
use fleetform_engine::state::{
    InventoryEntry, JournalEntry, LocalStateStore, LockInfo, State, StateStore,
};
use fleetform_state_kube::{KubeStateStore, Location, Options};

fn kubeconfig() -> Option<PathBuf> {
    match std::env::var_os("FLEETFORM_TEST_KUBECONFIG") {
        Some(p) => Some(PathBuf::from(p)),
        None if std::env::var("FLEETFORM_REQUIRE_PEERS").as_deref() == Ok("1") => {
            panic!(
                "FLEETFORM_TEST_KUBECONFIG is not set: run tests/peers/kube.sh start and source target/peers/kube.env"
            )
        }
        None => {
            eprintln!("skipped: kube not running (tests/peers/kube.sh start)");
            None
        }
    }
}

fn fleetform(args: &[&str], kc: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fleetform"))
        .args(args)
        .env("FLEETFORM_STATE_KUBECONFIG", kc)
        .output()
        .unwrap()
}

fn url() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("kubernetes://default/cli-{}-{nanos:x}", std::process::id())
}

fn entry(n: usize) -> InventoryEntry {
    InventoryEntry {
        spec: Some(serde_json::json!({"z": n, "a": {"nested": [n, "x"]}})),
        spec_digest: Some(format!("sha256:{n:064x}")),
        sensitive: vec!["a.nested".into()],
        deps: vec![],
        prevent_destroy: false,
        pending: false,
        revision: Some("r1".into()),
    }
}

#[tokio::test]
async fn state_migrate_local_to_kubernetes_and_back_gives_a_byte_identical_state_file() {
    let Some(kc) = kubeconfig() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (src, back) = (dir.path().join("src"), dir.path().join("back"));
    let local = LocalStateStore::open(&src).unwrap();
    let mut state = State {
        last_applied_revision: Some("0123".into()),
        last_applied_at: Some("2026-12-02T12:00:00Z".into()),
        ..State::default()
    };
    for n in 0..300 {
        state
            .resources
            .insert(ResourceId::new("kube", format!("ns/app-{n}")), entry(n));
    }
    local.compact(&state).await.unwrap();
    let original = std::fs::read(src.join("state.json")).unwrap();
    let to = url();

    let out = fleetform(
        &[
            "state",
            "migrate",
            "--from",
            src.to_str().unwrap(),
            "--to",
            &to,
        ],
        &kc,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("300 resource(s)"));
    let out = fleetform(
        &[
            "state",
            "migrate",
            "--from",
            &to,
            "--to",
            back.to_str().unwrap(),
        ],
        &kc,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(back.join("state.json")).unwrap() == original);
}

#[tokio::test]
async fn a_kubernetes_lock_held_elsewhere_stops_migrate_and_force_unlock_clears_it() {
    let Some(kc) = kubeconfig() else { return };
    let to = url();
    let location = Location::parse(&to).unwrap().unwrap();
    let client = fleetform_state_kube::client(Some(&kc), None).await.unwrap();
    let holder = KubeStateStore::new(client, location, Options::default());
    let info = LockInfo::for_this_process("apply");
    holder.lock(&info).await.unwrap();
    holder
        .record(&JournalEntry::Applied {
            id: ResourceId::new("kube", "ns/a"),
            entry: entry(1),
        })
        .await
        .unwrap();
    drop(holder);

    let dir = tempfile::tempdir().unwrap();
    let out = fleetform(
        &[
            "state",
            "migrate",
            "--from",
            &to,
            "--to",
            dir.path().to_str().unwrap(),
        ],
        &kc,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&info.id) && err.contains("force-unlock"),
        "{err}"
    );

    let out = fleetform(&["force-unlock", &info.id, "--state", &to], &kc);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fleetform(
        &[
            "state",
            "migrate",
            "--from",
            &to,
            "--to",
            dir.path().to_str().unwrap(),
        ],
        &kc,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = LocalStateStore::open(dir.path())
        .unwrap()
        .load()
        .await
        .unwrap();
    assert_eq!(back.resources.len(), 1);
}

#[test]
fn a_malformed_kubernetes_state_url_is_refused_with_the_expected_form() {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetform"))
        .args(["force-unlock", "x", "--state", "kubernetes://Prod"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("kubernetes://<namespace>/<fleet>") && err.contains("kubernetes://Prod"),
        "{err}"
    );
}

/// A fleet that validates and compiles to nothing to change (no hosts, no tenants): enough to
/// run plan, apply and serve through their state paths. The kubeconfig stays outside the fleet.
fn empty_fleet(root: &Path, kc: &Path) -> (PathBuf, PathBuf) {
    let charts = std::env::var_os("FLEETFORM_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"))
        .join("fixtures/charts");
    let fleet = root.join("repo/fleet");
    let secrets = root.join("secrets");
    std::fs::create_dir_all(&fleet).unwrap();
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::copy(kc, secrets.join("admin.kubeconfig")).unwrap();
    std::fs::write(
        fleet.join("fleet.yaml"),
        format!(
            "apiVersion: fleetform.dev/v1alpha1\nkind: Fleet\nmetadata: {{name: mini}}\nspec:\n  charts: {{repository: {}, wait: false}}\n  operators:\n    gpuOperator:\n      version: v26.7.0\n      driver: {{version: \"580.159.04\"}}\n  managementCluster:\n    kubeconfig: {{file: admin.kubeconfig}}\n",
            charts.display()
        ),
    )
    .unwrap();
    (fleet, secrets)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Alice")
        .env("GIT_AUTHOR_EMAIL", "alice@example.com")
        .env("GIT_COMMITTER_NAME", "Alice")
        .env("GIT_COMMITTER_EMAIL", "alice@example.com")
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn kube_store(kc: &Path, url: &str) -> KubeStateStore {
    let client = fleetform_state_kube::client(Some(kc), None).await.unwrap();
    KubeStateStore::new(
        client,
        Location::parse(url).unwrap().unwrap(),
        Options::default(),
    )
}

#[tokio::test]
async fn apply_and_serve_record_their_revision_in_kubernetes_and_release_the_lease() {
    let Some(kc) = kubeconfig() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (fleet, secrets) = empty_fleet(dir.path(), &kc);
    let to = url();
    let out = fleetform(
        &[
            "apply",
            "--fleet",
            fleet.to_str().unwrap(),
            "--secrets-dir",
            secrets.to_str().unwrap(),
            "--state",
            &to,
        ],
        &kc,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = kube_store(&kc, &to).await;
    let applied = store.load().await.unwrap().last_applied_revision.unwrap();
    assert!(applied.starts_with("dir:"), "{applied}");

    // serve --once from git, state in the same place.
    let repo = dir.path().join("repo");
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "fleet"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let config = dir.path().join("serve.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: fleetform.dev/v1alpha1\nkind: ServeConfig\nfleet: mini\nsource:\n  url: {}\n  ref: {{branch: main}}\n  path: fleet\nlisten: 127.0.0.1:0\nstateDir: {}\nsecretsDir: {}\n",
            repo.display(),
            dir.path().join("cache").display(),
            secrets.display()
        ),
    )
    .unwrap();
    let out = fleetform(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--once",
            "--state",
            &to,
        ],
        &kc,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        store.load().await.unwrap().last_applied_revision,
        Some(head)
    );
    // Both released the Lease: another process can take it at once.
    let info = LockInfo::for_this_process("check");
    store.lock(&info).await.unwrap();
    store.unlock(&info).await.unwrap();
    // No state directory was written for serve: only the git cache.
    assert!(!dir.path().join("cache/state.json").exists());
    assert!(!dir.path().join("cache/journal.jsonl").exists());
}

#[tokio::test]
async fn a_read_only_identity_can_plan_from_kubernetes_state_but_not_apply() {
    let Some(kc) = kubeconfig() else { return };
    let Some(tenant) = std::env::var_os("FLEETFORM_TEST_KUBE_TENANT_KUBECONFIG") else {
        panic!("FLEETFORM_TEST_KUBE_TENANT_KUBECONFIG is not set (tests/peers/kube.sh start)")
    };
    let dir = tempfile::tempdir().unwrap();
    let (fleet, secrets) = empty_fleet(dir.path(), &kc);
    // A namespace of its own: grants made by earlier runs in `default` must not help.
    let unique = url().rsplit('/').next().unwrap().to_string();
    let to = format!("kubernetes://ro-{unique}/{unique}");
    let location = Location::parse(&to).unwrap().unwrap();
    let admin = fleetform_state_kube::client(Some(&kc), None).await.unwrap();
    let namespace: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": location.namespace}}))
            .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .create(&kube::api::PostParams::default(), &namespace)
        .await
        .unwrap();
    // The state exists (written by the admin), and user tenant-acme may only get Secrets.
    kube_store(&kc, &to)
        .await
        .compact(&State {
            last_applied_revision: Some("r0".into()),
            ..State::default()
        })
        .await
        .unwrap();
    let name = format!("{}-reader", location.fleet);
    let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    }))
    .unwrap();
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "tenant-acme"}]
    }))
    .unwrap();
    let pp = kube::api::PostParams::default();
    kube::Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(admin.clone(), &location.namespace)
        .create(&pp, &role)
        .await
        .unwrap();
    kube::Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin, &location.namespace)
        .create(&pp, &binding)
        .await
        .unwrap();

    let args = |cmd: &'static str| {
        vec![
            cmd,
            "--fleet",
            fleet.to_str().unwrap(),
            "--secrets-dir",
            secrets.to_str().unwrap(),
            "--state",
            to.as_str(),
        ]
    };
    // RBAC caches refresh quickly but not instantly: give the binding a moment.
    let mut planned = fleetform(&args("plan"), Path::new(&tenant));
    for _ in 0..20 {
        if planned.status.code() != Some(1) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        planned = fleetform(&args("plan"), Path::new(&tenant));
    }
    assert_eq!(
        planned.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&planned.stderr)
    );
    let applied = fleetform(&args("apply"), Path::new(&tenant));
    let err = String::from_utf8_lossy(&applied.stderr);
    assert!(!applied.status.success());
    assert!(err.contains("leases") || err.contains("lock"), "{err}");
}
