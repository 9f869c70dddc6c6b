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
    /// Shard the fleet's tenants over the replicas (needs --state kubernetes://): N tenant
    /// shards plus a fleet shard for what belongs to no tenant, each with its own Lease and
    /// state; this replica reconciles only the shards it owns (docs/state.md). Fixed for a
    /// fleet: changing it moves tenants between shards' state.
    #[arg(
        long,
        env = "FLEETFORM_SERVE_SHARDS",
        value_name = "N",
        requires = "state"
    )]
    pub(crate) shards: Option<u32>,
    /// This replica's name among the shards' owners, a DNS label (the pod name).
    #[arg(
        long,
        env = "POD_NAME",
        value_name = "NAME",
        default_value_t = default_replica()
    )]
    pub(crate) replica: String,
    /// How long a replica's Leases (the state lock, its shards) stay valid without renewal;
    /// a replica that dies is replaced after about this long.
    #[arg(
        long,
        env = "FLEETFORM_STATE_LEASE_SECONDS",
        value_name = "SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub(crate) lease_seconds: u64,
    #[command(flatten)]
    pub(crate) gpu: gpu::GpuArgs,
}

/// The replica name when none is given: the host name (a pod's name), lowercased.
fn default_replica() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "serve".into())
}

/// The Kubernetes location `state` names, if it names one.
fn kube_location(state: &std::path::Path) -> Result<Option<fleetform_state_kube::Location>> {
    state
        .to_str()
        .and_then(fleetform_state_kube::Location::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))
}

/// The state's client, as `crate::state::open` builds it.
async fn state_client() -> Result<kube::Client> {
    let kubeconfig = std::env::var_os("FLEETFORM_STATE_KUBECONFIG").map(PathBuf::from);
    let context = std::env::var("FLEETFORM_STATE_KUBE_CONTEXT").ok();
    Ok(fleetform_state_kube::client(kubeconfig.as_deref(), context.as_deref()).await?)
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
    let lease = std::time::Duration::from_secs(args.lease_seconds);
    if let Some(store) = &args.state {
        daemon = match kube_location(store)? {
            None if args.shards.is_some() => {
                bail!("--shards needs --state kubernetes://<namespace>/<fleet>")
            }
            None => daemon.with_state_store(crate::state::open(store).await?),
            Some(location) => {
                let client = state_client().await?;
                let options = fleetform_state_kube::Options {
                    lease_duration: lease,
                    ..fleetform_state_kube::Options::default()
                };
                // A failed reconcile (a shard or the lock still held by a replica that died)
                // is retried well within the lease duration, so takeover is not delayed.
                let retry = fleetform_engine::serve::notify::Backoff {
                    initial: (lease / 4).min(std::time::Duration::from_secs(5)),
                    max: lease.max(std::time::Duration::from_secs(1)),
                };
                let daemon = daemon.with_retry(retry);
                match args.shards {
                    Some(n) => {
                        let shards = fleetform_state_kube::shard::ShardSet::start(
                            client,
                            &location,
                            &args.replica,
                            n,
                            options,
                        )
                        .await?;
                        daemon.with_shards(std::sync::Arc::new(shards))
                    }
                    None => daemon.with_state_store(Box::new(
                        fleetform_state_kube::KubeStateStore::new(client, location, options),
                    )),
                }
            }
        };
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
