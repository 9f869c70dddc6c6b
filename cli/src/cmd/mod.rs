//! The commands, one file each: each parses nothing (clap did), runs the engine's
//! session or a stage, renders through `report/` and returns the outcome the exit status is
//! decided from (`Outcome::exit_code`). Shared here: loading, the session, signals.

pub(crate) mod apply;
pub(crate) mod dev;
pub(crate) mod drift;
pub(crate) mod gpu_inventory;
pub(crate) mod graph;
pub(crate) mod plan;
pub(crate) mod serve;
pub(crate) mod validate;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use clap::Args;
use fleetform_engine::ResourceId;
use fleetform_engine::observe::Providers;
use fleetform_engine::plan::PlanOptions;
use fleetform_engine::session::{Incomplete, Outcome, Session};
use fleetform_engine::state::StateStore;

use crate::Format;
use crate::fleet::{LoadFailure, Loaded, SourceArgs};
use crate::gpu;

#[derive(Debug, Clone, Args)]
pub(crate) struct StateArgs {
    /// State directory (inventory, journal, lock), or kubernetes://<namespace>/<fleet> for
    /// state in the Kubernetes API (docs/state.md).
    #[arg(long, env = "FLEETFORM_STATE_DIR", default_value = ".fleetform/state")]
    pub(crate) state: PathBuf,
}

pub(crate) fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Prints located diagnostics and turns them into the command's error.
pub(crate) fn invalid(
    diags: &[fleetform_engine::diag::Diagnostic],
    files: &[fleetform_engine::load::SourceFile],
    format: Format,
) -> anyhow::Error {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({ "valid": false, "diagnostics": diags })
        ),
        _ => eprint!("{}", fleetform_engine::validate::render_text(diags, files)),
    }
    let errors = diags
        .iter()
        .filter(|d| d.severity == fleetform_engine::diag::Severity::Error)
        .count();
    anyhow::anyhow!("the fleet is invalid: {errors} error(s)")
}

pub(crate) async fn load(
    source: &SourceArgs,
    reference: Option<&str>,
    format: Format,
) -> Result<Loaded> {
    load_as(source, reference, format, true).await
}

/// Loads the fleet and expands its chart releases against the live clusters (`live`) or the
/// versions the manifest declares.
pub(crate) async fn load_as(
    source: &SourceArgs,
    reference: Option<&str>,
    format: Format,
    live: bool,
) -> Result<Loaded> {
    match source.load_expanded(reference, live).await {
        Ok(l) => Ok(l),
        Err(LoadFailure::Invalid(d, files)) => Err(invalid(&d, &files, format)),
        Err(LoadFailure::Other(e)) => Err(e),
    }
}

pub(crate) fn plan_options(
    loaded: &Loaded,
    targets: Vec<ResourceId>,
    allow_mass_delete: bool,
) -> PlanOptions {
    PlanOptions {
        targets,
        max_delete_fraction: loaded.fleet.fleet.spec.prune.max_delete_fraction,
        allow_mass_delete,
        inputs_digest: loaded.charts_digest(),
        ..PlanOptions::default()
    }
}

/// The providers for the loaded fleet and this run's GPU reports (`--gpu-inventory`): the
/// registered `gpu` provider and the break/fix hook read the same reports.
pub(crate) async fn providers(
    source: &SourceArgs,
    gpu: &gpu::GpuArgs,
    loaded: &Loaded,
) -> Result<(Providers, Option<Arc<gpu::GpuInventory>>)> {
    let inventory = gpu::connect(
        gpu,
        &source.secrets_base(),
        &loaded.fleet,
        &loaded.compiled.clusters,
    )
    .await?;
    let providers = source.providers(&loaded.compiled, inventory.as_ref())?;
    Ok((providers, inventory))
}

/// A session for the loaded revision against `store`, with the GPU inventory hook when
/// `--gpu-inventory` is given: the engine's one orchestration path.
pub(crate) fn session<'a>(
    store: &'a dyn StateStore,
    providers: &'a Providers,
    gpu: Option<&Arc<gpu::GpuInventory>>,
    loaded: &'a Loaded,
    options: PlanOptions,
) -> Session<'a> {
    Session::new(
        store,
        providers,
        &loaded.compiled.resources,
        options,
        Some(loaded.revision.clone()),
    )
    .with_hooks(gpu::GpuHook::hook(gpu, &loaded.fleet))
}

/// Says on stderr why an incomplete outcome is not a success (`what` is the plan, the
/// apply, drift detection…); the exit status is the outcome's.
pub(crate) fn told(outcome: Outcome, what: &str) -> Outcome {
    match outcome {
        // A plan alone applies nothing anyway; an apply or a heal says that it did not.
        Outcome::Incomplete(Incomplete::Problems(n)) if what == "the plan" => {
            eprintln!("error: the plan has {n} problem(s)")
        }
        Outcome::Incomplete(Incomplete::Problems(n)) => {
            eprintln!("error: the plan has {n} problem(s); nothing was applied")
        }
        Outcome::Incomplete(Incomplete::Skipped(n)) => eprintln!(
            "error: {n} resource(s) were skipped because they could not be observed now; the rest went ahead"
        ),
        Outcome::Incomplete(Incomplete::Failed) => eprintln!("error: {what} did not complete"),
        Outcome::Interrupted => {
            eprintln!("error: {what} was interrupted; calls in flight were recorded")
        }
        Outcome::Clean | Outcome::Changes => {}
    }
    outcome
}

pub(crate) fn cancel_on_signals() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!(
            "\nInterrupted: letting calls in flight finish and recording them (interrupt again to abort)..."
        );
        let _ = tx.send(true);
        wait_for_signal().await;
        std::process::exit(130);
    });
    rx
}

/// SIGINT or SIGTERM.
pub(crate) async fn wait_for_signal() {
    let term = async {
        #[cfg(unix)]
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
