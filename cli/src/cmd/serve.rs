//! `fleetform serve`: the engine's daemon with the CLI's pipeline (compile, providers, GPU hook).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use fleetform_engine::session::Outcome;

use super::{cancel_on_signals, invalid};
use crate::Format;
use crate::fleet;
use crate::gpu;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The serve config file (docs/serve.md, examples/serve.yaml).
    #[arg(long, env = "FLEETFORM_SERVE_CONFIG")]
    pub(crate) config: PathBuf,
    /// Reconcile once (and check drift once when the config schedules it), then exit:
    /// 0 when it succeeded, 1 when it failed.
    #[arg(long)]
    pub(crate) once: bool,
    /// Keep state in kubernetes://<namespace>/<fleet> (Secrets and a Lease, docs/state.md)
    /// instead of the config's stateDir, so several replicas share it; stateDir then only
    /// holds the git cache.
    #[arg(long, env = "FLEETFORM_SERVE_STATE", value_name = "URL")]
    pub(crate) state: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub(crate) gpu: gpu::GpuArgs,
}

pub(crate) async fn serve(args: ServeArgs) -> Result<Outcome> {
    use fleetform_engine::serve::{Daemon, ServeConfig};
    let config = ServeConfig::read(&args.config).map_err(|diags| {
        let files = std::fs::read(&args.config)
            .map(|bytes| {
                vec![fleetform_engine::load::SourceFile {
                    path: args.config.display().to_string(),
                    bytes,
                }]
            })
            .unwrap_or_default();
        invalid(&diags, &files, Format::Text)
    })?;
    let secrets_base = if config.secrets_dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        config.secrets_dir.clone()
    };
    let resolver = std::sync::Arc::new(fleetform_engine::secret::LocalSecrets::new(&secrets_base));
    let pipeline = std::sync::Arc::new(fleet::ServePipeline {
        secrets_base,
        gpu: args.gpu.clone(),
    });
    let drift_scheduled = !matches!(
        config.drift.schedule,
        fleetform_engine::serve::DriftSchedule::Off
    );
    let mut daemon = Daemon::new(config, pipeline, resolver)?;
    if let Some(store) = &args.state {
        daemon = daemon.with_state_store(crate::state::open(store).await?);
    }
    if args.once {
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let outcome = daemon.reconcile(&rx).await;
        match &outcome {
            Ok(fleetform_engine::serve::daemon::Reconciled::UpToDate { commit }) => {
                println!("Up to date at {commit}.")
            }
            Ok(fleetform_engine::serve::daemon::Reconciled::Applied { commit, summary }) => {
                println!("Applied {commit}: {summary}.")
            }
            Err(f) => bail!("{f}"),
        }
        if drift_scheduled {
            match daemon.check_drift(&rx).await {
                Ok(Some(r)) if !r.drifted.is_empty() => {
                    println!(
                        "{} resource(s) drifted{}.",
                        r.drifted.len(),
                        if r.healed { " and were healed" } else { "" }
                    );
                    if !r.healed {
                        return Ok(Outcome::Changes);
                    }
                }
                Ok(_) => println!("No drift."),
                Err(f) => bail!("drift check: {f}"),
            }
        }
        return Ok(Outcome::Clean);
    }
    let addr = daemon.listen().await?;
    eprintln!("fleetform serve: listening on http://{addr} (/healthz, /status, /metrics)");
    daemon.run(cancel_on_signals()).await?;
    Ok(Outcome::Clean)
}
