//! Test support shared by every crate (feature `testing`): where the upstream
//! data lives. The real CRDs and recorded BMC trees are kept once, in the
//! `shared` directory beside the checkout (`../shared/fixtures/{crds,redfish}`),
//! never copied into the repository.

use std::path::{Path, PathBuf};

/// The environment variable that overrides where the shared directory is.
pub const SHARED_DIR_ENV: &str = "FLEETFORM_SHARED_DIR";

/// The shared directory: `$FLEETFORM_SHARED_DIR`, or `../shared` beside the
/// repository root. `repo_root` is any crate's `CARGO_MANIFEST_DIR` or the
/// root itself: the root is found as the nearest directory holding `Cargo.lock`.
pub fn shared_dir(repo_root: &Path) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(SHARED_DIR_ENV) {
        let dir = PathBuf::from(dir);
        return if dir.is_dir() {
            Ok(dir)
        } else {
            Err(format!(
                "{SHARED_DIR_ENV}={} is not a directory: point it at the shared data (fixtures/crds, fixtures/redfish)",
                dir.display()
            ))
        };
    }
    let root = repo_root
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(repo_root);
    let dir = root.join("../shared");
    if dir.is_dir() {
        Ok(dir)
    } else {
        Err(format!(
            "the shared data directory {} is missing: check out `shared` beside the repository, or set {SHARED_DIR_ENV}",
            dir.display()
        ))
    }
}

/// A directory under the shared fixtures, e.g. `shared_fixture(env!("CARGO_MANIFEST_DIR"), "crds")`.
/// Panics with a clear message when it is missing: tests cannot run without it.
#[allow(clippy::panic)]
pub fn shared_fixture(repo_root: impl AsRef<Path>, name: &str) -> PathBuf {
    let dir = match shared_dir(repo_root.as_ref()) {
        Ok(d) => d.join("fixtures").join(name),
        Err(e) => panic!("{e}"),
    };
    assert!(
        dir.is_dir(),
        "{} is missing from the shared data directory",
        dir.display()
    );
    dir
}
