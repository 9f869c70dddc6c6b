//! `fleetform`: plan and apply a GPU fleet manifest from git against live
//! BMCs, Kubernetes clusters and registries.
//!
//! Exit status (decided in one place, the engine's `session::Outcome::exit_code`):
//! 0 = success and no changes, 2 = success and changes present (plan, drift),
//! 1 = error (including usage errors) or incomplete run, 130 = interrupted.
//!
//! This file is the command line itself (arguments, logging, exit status); each command's
//! body is in `cmd/`, and the views of progress in `report/`.

mod cmd;
mod fleet;
mod gpu;
mod report;
mod state;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};
use fleetform_engine::session::Outcome;

use crate::cmd::apply::ApplyArgs;
use crate::cmd::drift::DriftArgs;
use crate::cmd::plan::PlanArgs;
use crate::cmd::serve::ServeArgs;
use crate::fleet::SourceArgs;

/// GitOps reconciliation for GPU fleets: racks, hosts and BMCs, tenant
/// Kubernetes clusters, NVIDIA operators and NGC access, from one manifest in git.
///
/// Exit status: 0 no changes, 2 changes present (plan, drift), 1 error or incomplete,
/// 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "fleetform", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human, env = "FLEETFORM_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a fleet manifest: syntax, schema and semantic rules, with every problem located.
    Validate {
        /// The fleet directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Also fetch charts from remote repositories (HTTP, OCI) to check the operators'
        /// values against their schemas; charts in local directories are always checked.
        #[arg(long)]
        fetch_charts: bool,
    },
    /// Show what apply would change, in dependency order. Exit 2 when there are changes.
    Plan(PlanArgs),
    /// Apply the fleet (or a saved plan) to live systems.
    Apply(ApplyArgs),
    /// Compare what was last applied with live state. Exit 2 when something drifted.
    Drift(DriftArgs),
    /// Draw the dependency graph.
    Graph {
        #[command(flatten)]
        source: SourceArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Keep the fleet reconciled to a git ref: poll, push webhooks, drift schedule, /metrics.
    Serve(ServeArgs),
    /// Remove a state lock left by a process that is gone.
    ForceUnlock {
        /// The lock id printed by the error.
        id: String,
        /// State directory, or kubernetes://<namespace>/<fleet>.
        #[arg(long, env = "FLEETFORM_STATE_DIR", default_value = ".fleetform/state")]
        state: PathBuf,
    },
    /// Move state between stores.
    #[command(subcommand)]
    State(StateCommand),
    /// Node-side GPU commands (NVML).
    #[command(subcommand)]
    Gpu(GpuCommand),
    /// Developer tools.
    #[command(subcommand)]
    Dev(DevCommand),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum GraphFormat {
    Text,
    Dot,
    Mermaid,
}

#[derive(Debug, Subcommand)]
enum GpuCommand {
    /// Read this node's GPUs through NVML (read-only) and print the inventory.
    Inventory {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Node name recorded in the report (default: the host name).
        #[arg(long, env = "NODE_NAME")]
        node: Option<String>,
        /// Read a recorded inventory (JSON) instead of NVML: to replay a report,
        /// and in tests (no GPU needed).
        #[arg(long, value_name = "FILE")]
        from: Option<PathBuf>,
        /// Also write the report to the ConfigMap gpu-inventory/<node> of the
        /// cluster (server-side apply, field manager fleetform-gpu-inventory).
        #[arg(long)]
        publish: bool,
        /// Kubeconfig for --publish (default: in-cluster, then $KUBECONFIG).
        #[arg(long, requires = "publish")]
        kubeconfig: Option<PathBuf>,
        /// Kubeconfig context for --publish.
        #[arg(long, requires = "kubeconfig")]
        context: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum StateCommand {
    /// Copy a fleet's state (inventory and journal) into an empty store, e.g. from a
    /// directory to kubernetes://<namespace>/<fleet> or back. Both are locked meanwhile;
    /// the source is left as it was.
    Migrate {
        /// The store to read: a directory or kubernetes://<namespace>/<fleet>.
        #[arg(long)]
        from: PathBuf,
        /// The store to write; refused when it already manages resources.
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum DevCommand {
    /// Write a synthetic, valid fleet of any size (for benchmarks).
    Generate {
        /// Hosts.
        #[arg(long, default_value_t = 1000)]
        hosts: usize,
        /// Tenants.
        #[arg(long, default_value_t = 100)]
        tenants: usize,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap exits 2 on usage errors, which would read as "changes present".
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(outcome) => outcome.exit_code(),
        Err(e) => {
            // The chain is printed once, here, each cause on its own line. Errors leave
            // their cause out of their own message, so nothing repeats.
            eprint!("{}", error_report(&e));
            1
        }
    };
    std::process::exit(code);
}

/// `error: …` and one `  caused by: …` line per cause, outermost first.
fn error_report(e: &anyhow::Error) -> String {
    let mut out = format!("error: {e}\n");
    for cause in e.chain().skip(1) {
        out.push_str(&format!("  caused by: {cause}\n"));
    }
    out
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLEETFORM_LOG")
        .unwrap_or_else(|_| "warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn run(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Validate {
            dir,
            format,
            fetch_charts,
        } => cmd::validate::validate(dir, format, fetch_charts).await,
        Command::Plan(args) => cmd::plan::plan(args).await,
        Command::Apply(args) => cmd::apply::apply(args).await,
        Command::Drift(args) => cmd::drift::drift(args).await,
        Command::Graph { source, format } => cmd::graph::graph(source, format).await,
        Command::Serve(args) => cmd::serve::serve(args).await,
        Command::ForceUnlock { id, state } => {
            state::open(&state).await?.force_unlock(&id).await?;
            println!("Lock {id} removed.");
            Ok(Outcome::Clean)
        }
        Command::State(StateCommand::Migrate { from, to }) => {
            let n = state::migrate(&from, &to).await?;
            println!(
                "Moved the state of {n} resource(s) from {} to {}.",
                from.display(),
                to.display()
            );
            Ok(Outcome::Clean)
        }
        Command::Gpu(GpuCommand::Inventory {
            format,
            node,
            from,
            publish,
            kubeconfig,
            context,
        }) => {
            cmd::gpu_inventory::gpu_inventory(
                format,
                node,
                from,
                publish.then_some((kubeconfig, context)),
            )
            .await
        }
        Command::Dev(DevCommand::Generate {
            hosts,
            tenants,
            out,
        }) => cmd::dev::generate(hosts, tenants, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_printed_with_each_cause_on_its_own_line() {
        let io = std::io::Error::other("No space left on device");
        let state = fleetform_engine::state::StateError::Io {
            path: "state/journal".into(),
            source: io,
        };
        let e = anyhow::Error::new(state).context("recording the apply");
        assert_eq!(
            error_report(&e),
            "error: recording the apply\n  caused by: state file state/journal\n  caused by: No space left on device\n"
        );
    }
}
