//! `fleetform dev generate`: a synthetic, valid fleet of any size (benchmarks).

use std::path::PathBuf;

use anyhow::{Context, Result};
use fleetform_engine::session::Outcome;

/// Writes a synthetic fleet of `hosts` hosts and `tenants` tenants under `out`.
pub(crate) fn generate(hosts: usize, tenants: usize, out: PathBuf) -> Result<Outcome> {
    let files = fleetform_engine::synth::synthetic_fleet(hosts, tenants);
    for f in &files {
        let path = out.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "Wrote {} files ({hosts} hosts, {tenants} tenants) to {}",
        files.len(),
        out.display()
    );
    Ok(Outcome::Clean)
}
