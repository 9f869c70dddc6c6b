//! Which state store a command uses: a local directory (the default) or, for
//! `kubernetes://<namespace>/<fleet>`, Secrets and a Lease in the Kubernetes API
//! (fleetform-state-kube, docs/state.md).

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use fleetform_engine::state::{LocalStateStore, LockInfo, StateStore};
use fleetform_state_kube::{KubeStateStore, Location, Options};

/// Opens the store `state` names. For Kubernetes, the client comes from
/// `$FLEETFORM_STATE_KUBECONFIG` (and `$FLEETFORM_STATE_KUBE_CONTEXT`) when set, else from the
/// environment: the in-cluster service account, `$KUBECONFIG`, `~/.kube/config`. It is separate
/// from the kube provider's clusters so state can live in a management cluster.
pub async fn open(state: &Path) -> Result<Box<dyn StateStore>> {
    match state.to_str().and_then(Location::parse) {
        None => Ok(Box::new(LocalStateStore::open(state)?)),
        Some(location) => {
            let location = location.map_err(|e| anyhow!(e))?;
            let kubeconfig = std::env::var_os("FLEETFORM_STATE_KUBECONFIG").map(PathBuf::from);
            let context = std::env::var("FLEETFORM_STATE_KUBE_CONTEXT").ok();
            let client =
                fleetform_state_kube::client(kubeconfig.as_deref(), context.as_deref()).await?;
            Ok(Box::new(KubeStateStore::new(
                client,
                location,
                Options::default(),
            )))
        }
    }
}

/// `fleetform state migrate`: copies the state of `from` into the empty store `to`.
pub async fn migrate(from: &Path, to: &Path) -> Result<usize> {
    if from == to {
        return Err(anyhow!(
            "--from and --to are the same store ({})",
            from.display()
        ));
    }
    let source = open(from).await?;
    let destination = open(to).await?;
    let info = LockInfo::for_this_process("state migrate");
    Ok(fleetform_state_kube::migrate(source.as_ref(), destination.as_ref(), &info).await?)
}
