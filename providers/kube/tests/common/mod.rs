//! What the kube provider's peer tests share: finding the running
//! kube-apiserver (tests/peers/kube.sh start), an admin client, unique names.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The peer's admin kubeconfig; `None` (test skipped) when it is not running,
/// a failure when FLEETFORM_REQUIRE_PEERS=1.
pub fn kubeconfig() -> Option<PathBuf> {
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

/// A cluster-admin client for setting up and checking what the provider did.
pub async fn admin_client(kubeconfig: &Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{}-{:x}{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}
