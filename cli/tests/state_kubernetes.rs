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
