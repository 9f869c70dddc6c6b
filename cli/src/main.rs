//! `fleetform`: plan and apply a GPU fleet manifest from git against live
//! BMCs, Kubernetes clusters and registries.
//!
//! Exit status (decided in one place, `main`): 0 = success and no changes,
//! 2 = success and changes present (plan, drift), 1 = error (including usage errors).
//!
//! Size: the commands still live here; the thin `cmd/` + `report/` layout is part of issue 16,
//! not done yet.

mod fleet;
mod gpu;
mod state;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use fleetform_engine::ResourceId;
use fleetform_engine::apply::{ApplyEvent, ApplyOptions};
use fleetform_engine::plan::{Plan, PlanOptions};
use fleetform_engine::reconcile::{ObserveOptions, Planned, make_plan, run_apply};
use fleetform_engine::report;
use fleetform_engine::state::{LockInfo, StateStore};

use crate::fleet::{LoadFailure, Loaded, SourceArgs};

/// GitOps reconciliation for GPU fleets: racks, hosts and BMCs, tenant
/// Kubernetes clusters, NVIDIA operators and NGC access, from one manifest in git.
///
/// Exit status: 0 no changes, 2 changes present (plan, drift), 1 error.
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
enum Format {
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
enum GraphFormat {
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

#[derive(Debug, Clone, Args)]
struct StateArgs {
    /// State directory (inventory, journal, lock), or kubernetes://<namespace>/<fleet> for
    /// state in the Kubernetes API (docs/state.md).
    #[arg(long, env = "FLEETFORM_STATE_DIR", default_value = ".fleetform/state")]
    state: PathBuf,
}

#[derive(Debug, Args)]
struct PlanArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    gpu: gpu::GpuArgs,
    /// Limit to these resources and what they depend on (repeatable).
    #[arg(long = "target", value_parser = ResourceId::parse)]
    targets: Vec<ResourceId>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Save the plan to apply later with `fleetform apply FILE`.
    #[arg(short = 'o', long = "out")]
    out: Option<PathBuf>,
    /// Allow deleting more than the fleet's prune.maxDeleteFraction of managed resources.
    #[arg(long)]
    allow_mass_delete: bool,
    /// Pull-request mode: the base revision (e.g. main); requires --repo.
    #[arg(long, requires = "head")]
    base: Option<String>,
    /// Pull-request mode: the head revision (the PR branch or commit).
    #[arg(long, requires = "base")]
    head: Option<String>,
}

#[derive(Debug, Args)]
struct ApplyArgs {
    /// A plan saved with `plan -o`; refused if the revision or live state moved since.
    plan: Option<PathBuf>,
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    gpu: gpu::GpuArgs,
    /// Limit to these resources and what they depend on (repeatable).
    #[arg(long = "target", value_parser = ResourceId::parse)]
    targets: Vec<ResourceId>,
    /// Consent to deleting or replacing resources.
    #[arg(long)]
    allow_destroy: bool,
    /// Allow deleting more than the fleet's prune.maxDeleteFraction of managed resources.
    #[arg(long)]
    allow_mass_delete: bool,
    /// Provider calls in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds a resource may take to become healthy.
    #[arg(long, default_value_t = 600)]
    health_timeout: u64,
    /// Seconds draining a node may take before a disruptive change to its host (pods are
    /// evicted as `kubectl drain` does; what remains at the deadline stops that change).
    #[arg(long, default_value_t = 900)]
    drain_timeout: u64,
    /// Seconds a disruptive change waits for nodes already down in its pool (cordoned,
    /// NotReady, under maintenance) to come back when they alone fill its rollout budget;
    /// after that it fails naming them.
    #[arg(long, default_value_t = 600)]
    budget_wait: u64,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The serve config file (docs/serve.md, examples/serve.yaml).
    #[arg(long, env = "FLEETFORM_SERVE_CONFIG")]
    config: PathBuf,
    /// Reconcile once (and check drift once when the config schedules it), then exit:
    /// 0 when it succeeded, 1 when it failed.
    #[arg(long)]
    once: bool,
    /// Keep state in kubernetes://<namespace>/<fleet> (Secrets and a Lease, docs/state.md)
    /// instead of the config's stateDir, so several replicas share it; stateDir then only
    /// holds the git cache.
    #[arg(long, env = "FLEETFORM_SERVE_STATE", value_name = "URL")]
    state: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DriftArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    state: StateArgs,
    #[command(flatten)]
    gpu: gpu::GpuArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Fix drift through the normal plan/apply path. Kubernetes fields another
    /// field manager took over are taken back (server-side apply with force).
    #[arg(long)]
    remediate: bool,
}

/// What a command found, mapped to the exit status in one place.
enum Done {
    /// Nothing to change / nothing drifted.
    Clean,
    /// Changes present (plan) or drift found.
    Changes,
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
        Ok(Done::Clean) => 0,
        Ok(Done::Changes) => 2,
        Err(e) => {
            // The chain is printed once, here, each cause on its own line.
            eprintln!("error: {e}");
            let mut seen = vec![e.to_string()];
            for cause in e.chain().skip(1) {
                let msg = cause.to_string();
                if !seen.iter().any(|s| s.contains(&msg)) {
                    eprintln!("  caused by: {msg}");
                }
                seen.push(msg);
            }
            1
        }
    };
    std::process::exit(code);
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

async fn run(cli: Cli) -> Result<Done> {
    match cli.command {
        Command::Validate {
            dir,
            format,
            fetch_charts,
        } => validate(dir, format, fetch_charts).await,
        Command::Plan(args) => plan(args).await,
        Command::Apply(args) => apply(args).await,
        Command::Drift(args) => drift(args).await,
        Command::Graph { source, format } => graph(source, format).await,
        Command::Serve(args) => serve(args).await,
        Command::ForceUnlock { id, state } => {
            state::open(&state).await?.force_unlock(&id).await?;
            println!("Lock {id} removed.");
            Ok(Done::Clean)
        }
        Command::State(StateCommand::Migrate { from, to }) => {
            let n = state::migrate(&from, &to).await?;
            println!(
                "Moved the state of {n} resource(s) from {} to {}.",
                from.display(),
                to.display()
            );
            Ok(Done::Clean)
        }
        Command::Gpu(GpuCommand::Inventory {
            format,
            node,
            from,
            publish,
            kubeconfig,
            context,
        }) => gpu_inventory(format, node, from, publish.then_some((kubeconfig, context))).await,
        Command::Dev(DevCommand::Generate {
            hosts,
            tenants,
            out,
        }) => {
            let files = fleetform_engine::synth::synthetic_fleet(hosts, tenants);
            for f in &files {
                let path = out.join(&f.path);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, &f.bytes)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            println!(
                "Wrote {} files ({hosts} hosts, {tenants} tenants) to {}",
                files.len(),
                out.display()
            );
            Ok(Done::Clean)
        }
    }
}

fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Prints located diagnostics and turns them into the command's error.
fn invalid(
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

async fn load(source: &SourceArgs, reference: Option<&str>, format: Format) -> Result<Loaded> {
    load_as(source, reference, format, true).await
}

/// Loads the fleet and expands its chart releases against the live clusters (`live`) or the
/// versions the manifest declares.
async fn load_as(
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

async fn validate(dir: PathBuf, format: Format, fetch_charts: bool) -> Result<Done> {
    let source = SourceArgs {
        fleet: dir,
        repo: None,
        reference: "main".into(),
        path: String::new(),
        secrets_dir: None,
        cache_dir: None,
    };
    let (_, files) = match source.read(None) {
        Ok(x) => x,
        Err(LoadFailure::Invalid(d, f)) => return Err(invalid(&d, &f, format)),
        Err(LoadFailure::Other(e)) => return Err(e),
    };
    let (docs, mut diags) = fleetform_engine::load::load(&files);
    if diags.is_empty() {
        match fleetform_engine::validate::validate(&docs) {
            Err(d) => diags = d,
            Ok(fleet) => {
                diags = fleetform_engine::validate::warnings(&docs);
                diags.extend(
                    fleet::check_chart_values(&fleet, &source.secrets_base(), fetch_charts).await,
                );
            }
        }
    }
    fleetform_engine::diag::sort(&mut diags);
    if diags
        .iter()
        .any(|d| d.severity == fleetform_engine::diag::Severity::Error)
    {
        return Err(invalid(&diags, &files, format));
    }
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({ "valid": true, "documents": docs.len(), "diagnostics": diags })
        ),
        _ => {
            if !diags.is_empty() {
                eprint!(
                    "{}",
                    fleetform_engine::validate::render_text(&diags, &files)
                );
            }
            println!(
                "The fleet is valid: {} documents in {} files.",
                docs.len(),
                files.len()
            );
        }
    }
    Ok(Done::Clean)
}

fn plan_options(loaded: &Loaded, targets: Vec<ResourceId>, allow_mass_delete: bool) -> PlanOptions {
    PlanOptions {
        targets,
        max_delete_fraction: loaded.fleet.fleet.spec.prune.max_delete_fraction,
        allow_mass_delete,
        inputs_digest: loaded.charts_digest(),
        ..PlanOptions::default()
    }
}

/// The compiled resources with break/fix cordons in place (plan and apply both use it).
fn desired_with(loaded: &Loaded, gpu: Option<&gpu::GpuObserved>) -> Vec<fleetform_engine::Desired> {
    match gpu {
        Some(g) => g.breakfix.desired(&loaded.compiled.resources),
        None => loaded.compiled.resources.clone(),
    }
}

/// Break/fix reasons on the plan's Node changes, and the GPU findings.
fn annotate(plan: &mut Plan, gpu: Option<&gpu::GpuObserved>) {
    if let Some(g) = gpu {
        plan.annotate_breakfix(&g.breakfix);
        plan.findings.extend(g.drift.iter().cloned());
        plan.findings.sort();
    }
}

async fn plan_against_live(
    source: &SourceArgs,
    state_dir: &Path,
    loaded: &Loaded,
    options: &PlanOptions,
    gpu: Option<&gpu::GpuObserved>,
) -> Result<Planned> {
    let store = state::open(state_dir).await?;
    let state = store.load().await?;
    let providers = source.providers(&loaded.compiled)?;
    let mut planned = make_plan(
        &desired_with(loaded, gpu),
        &state,
        &providers,
        options,
        ObserveOptions::default(),
        Some(loaded.revision.clone()),
    )
    .await?;
    annotate(&mut planned.plan, gpu);
    planned.plan.releases = fleet::release_summaries(&loaded.releases, &planned.plan, &state);
    Ok(planned)
}

async fn plan(args: PlanArgs) -> Result<Done> {
    if let (Some(base), Some(head)) = (&args.base, &args.head) {
        return pr_plan(&args, base, head).await;
    }
    let loaded = load(&args.source, None, args.format).await?;
    let options = plan_options(&loaded, args.targets.clone(), args.allow_mass_delete);
    let gpu = gpu::observe(&args.gpu, &args.source, &loaded).await?;
    let planned = plan_against_live(
        &args.source,
        &args.state.state,
        &loaded,
        &options,
        gpu.as_ref(),
    )
    .await?;
    emit_plan(&planned.plan, args.format, "fleetform plan", &[]);
    if let Some(out) = &args.out {
        fleetform_engine::state::write_atomic(out, report::plan_json(&planned.plan).as_bytes())?;
        eprintln!(
            "Saved the plan to {}; apply it with `fleetform apply {}`.",
            out.display(),
            out.display()
        );
    }
    plan_outcome(&planned.plan)
}

fn plan_outcome(plan: &Plan) -> Result<Done> {
    if !plan.problems.is_empty() {
        bail!("the plan has {} problem(s)", plan.problems.len());
    }
    skipped_outcome(plan)?;
    Ok(if plan.summary.has_changes() {
        Done::Changes
    } else {
        Done::Clean
    })
}

/// Exit 1 when resources were left out because they could not be observed (a BMC down):
/// the rest was planned (and applied), but the run is not complete.
fn skipped_outcome(plan: &Plan) -> Result<()> {
    if !plan.skipped.is_empty() {
        bail!(
            "{} resource(s) were skipped because they could not be observed now; the rest went ahead",
            plan.skipped.len()
        );
    }
    Ok(())
}

fn emit_plan(plan: &Plan, format: Format, title: &str, intro: &[String]) {
    match format {
        Format::Text => {
            for line in intro {
                println!("{line}");
            }
            print!("{}", report::plan_text(plan, color()));
        }
        Format::Json => println!("{}", report::plan_json(plan)),
        Format::Markdown => print!("{}", report::plan_markdown(plan, title, intro)),
    }
}

/// Pull-request plan: what the PR changes in the manifest, the head planned
/// against live state, and which changes come from the PR versus were already pending.
async fn pr_plan(args: &PlanArgs, base: &str, head: &str) -> Result<Done> {
    let Some(url) = &args.source.repo else {
        bail!("--base/--head need --repo (the fleet repository)")
    };
    let base_loaded = load(&args.source, Some(base), args.format).await?;
    let head_loaded = load(&args.source, Some(head), args.format).await?;
    let git = fleetform_engine::source::GitSource::new(
        args.source.cache_dir.clone().unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/fleetform/git")
        }),
    );
    let repo = git.open(url)?;
    let changed = repo.diff_paths(
        &base_loaded.revision,
        &head_loaded.revision,
        &args.source.path,
    )?;
    let options = plan_options(&head_loaded, args.targets.clone(), args.allow_mass_delete);
    let head_gpu = gpu::observe(&args.gpu, &args.source, &head_loaded).await?;
    let head_plan = plan_against_live(
        &args.source,
        &args.state.state,
        &head_loaded,
        &options,
        head_gpu.as_ref(),
    )
    .await?;
    let base_gpu = gpu::observe(&args.gpu, &args.source, &base_loaded).await?;
    let base_plan = plan_against_live(
        &args.source,
        &args.state.state,
        &base_loaded,
        &plan_options(&base_loaded, args.targets.clone(), true),
        base_gpu.as_ref(),
    )
    .await?;
    let already: std::collections::BTreeSet<&ResourceId> =
        base_plan.plan.actionable().map(|c| &c.id).collect();
    let from_pr: Vec<&ResourceId> = head_plan
        .plan
        .actionable()
        .map(|c| &c.id)
        .filter(|id| !already.contains(id))
        .collect();
    let short = |c: &str| c.chars().take(12).collect::<String>();
    let mut intro = vec![format!(
        "This pull request ({} → {}) changes {} manifest file(s): {}.",
        short(&base_loaded.revision),
        short(&head_loaded.revision),
        changed.len(),
        changed
            .iter()
            .map(|c| format!("`{}`", c.path))
            .collect::<Vec<_>>()
            .join(", ")
    )];
    intro.push(format!("{} change(s) come from this pull request; {} were already pending or drifting on the base.", from_pr.len(), already.len()));
    if !already.is_empty() {
        let list: Vec<String> = already.iter().take(20).map(|i| format!("`{i}`")).collect();
        intro.push(format!(
            "Already pending before this PR: {}{}.",
            list.join(", "),
            if already.len() > 20 { ", …" } else { "" }
        ));
    }
    emit_plan(
        &head_plan.plan,
        args.format,
        "fleetform plan for this pull request",
        &intro,
    );
    plan_outcome(&head_plan.plan)
}

/// Holds the state lock for the life of a command.
struct Locked {
    store: Box<dyn StateStore>,
    info: LockInfo,
}

impl Locked {
    async fn take(dir: &Path, operation: &str) -> Result<Self> {
        let store = state::open(dir).await?;
        let info = LockInfo::for_this_process(operation);
        store.lock(&info).await?;
        Ok(Self { store, info })
    }
    async fn release(self) -> Result<()> {
        self.store.unlock(&self.info).await?;
        Ok(())
    }
}

fn cancel_on_signals() -> tokio::sync::watch::Receiver<bool> {
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

/// Prints apply progress as plain lines (coloured on a TTY).
fn progress() -> (
    tokio::sync::mpsc::UnboundedSender<ApplyEvent>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let tty = color();
    let paint = move |code: &str, s: String| {
        if tty {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s
        }
    };
    let handle = tokio::spawn(async move {
        let start = Instant::now();
        while let Some(e) = rx.recv().await {
            let t = format!("[{:>6.1}s]", start.elapsed().as_secs_f64());
            let line = match e {
                ApplyEvent::Started { id, action } => format!("{t} {:?} {id} ...", action),
                ApplyEvent::Retrying {
                    id,
                    attempt,
                    error,
                    delay_ms,
                } => paint(
                    "33",
                    format!("{t} retry {id} after attempt {attempt} in {delay_ms} ms: {error}"),
                ),
                ApplyEvent::WaitingHealthy { id, message } => {
                    format!("{t} waiting for {id} to be healthy: {message}")
                }
                ApplyEvent::WaitingRollout { id, pool, reason } => {
                    format!("{t} {id} waits for room in rollout group {pool}: {reason}")
                }
                ApplyEvent::Succeeded { id, elapsed_ms, .. } => paint(
                    "32",
                    format!("{t} done {id} ({:.1}s)", elapsed_ms as f64 / 1000.0),
                ),
                ApplyEvent::Failed { id, error } => paint(
                    "31",
                    format!("{t} FAILED {id}: {}", report::without_id(&id, &error)),
                ),
                ApplyEvent::Skipped { id, root } => {
                    paint("2", format!("{t} skipped {id} (waits for failed {root})"))
                }
                ApplyEvent::Maintenance { id, node, cordoned } => {
                    if cordoned {
                        format!("{t} cordoned {node} while {id} changes")
                    } else {
                        format!("{t} released the cordon on {node}")
                    }
                }
            };
            eprintln!("{line}");
        }
    });
    (tx, handle)
}

async fn apply(args: ApplyArgs) -> Result<Done> {
    let loaded = load(&args.source, None, Format::Text).await?;
    let saved: Option<Plan> = match &args.plan {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading saved plan {}", path.display()))?;
            let plan: Plan = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a fleetform plan", path.display()))?;
            if plan.revision.as_deref() != Some(loaded.revision.as_str()) {
                bail!(
                    "the saved plan was made from revision {}, but the fleet is now at {}: plan again",
                    plan.revision.as_deref().unwrap_or("?"),
                    loaded.revision
                );
            }
            Some(plan)
        }
        None => None,
    };
    let lock = Locked::take(&args.state.state, "apply").await?;
    let result = apply_locked(&args, &loaded, saved.as_ref(), lock.store.as_ref()).await;
    lock.release().await?;
    result
}

async fn apply_locked(
    args: &ApplyArgs,
    loaded: &Loaded,
    saved: Option<&Plan>,
    store: &dyn StateStore,
) -> Result<Done> {
    let mut state = store.load().await?;
    let providers = args.source.providers(&loaded.compiled)?;
    let options = plan_options(loaded, args.targets.clone(), args.allow_mass_delete);
    let gpu = gpu::observe(&args.gpu, &args.source, loaded).await?;
    let desired = desired_with(loaded, gpu.as_ref());
    let mut planned = make_plan(
        &desired,
        &state,
        &providers,
        &options,
        ObserveOptions::default(),
        Some(loaded.revision.clone()),
    )
    .await?;
    annotate(&mut planned.plan, gpu.as_ref());
    if let Some(saved) = saved {
        if saved.digest != planned.plan.digest {
            bail!(
                "live state changed since the plan was saved ({} now vs {} then): plan again and review",
                report::totals(&planned.plan),
                report::totals(saved)
            );
        }
    } else {
        print!("{}", report::plan_text(&planned.plan, color()));
    }
    if !planned.plan.problems.is_empty() {
        if saved.is_some() {
            print!("{}", report::plan_text(&planned.plan, color()));
        }
        bail!(
            "the plan has {} problem(s); nothing was applied",
            planned.plan.problems.len()
        );
    }
    if !planned.plan.summary.has_changes() && planned.plan.forget.is_empty() {
        skipped_outcome(&planned.plan)?;
        // Record the revision even when nothing changed, so drift compares with it.
        if state.last_applied_revision.as_deref() != Some(loaded.revision.as_str()) {
            let (tx, rx) = tokio::sync::watch::channel(false);
            run_apply(
                &planned,
                &desired,
                &mut state,
                store,
                &providers,
                &ApplyOptions::default(),
                None,
                rx,
            )
            .await?;
            drop(tx);
        }
        return Ok(Done::Clean);
    }
    let opts = ApplyOptions {
        concurrency: args.concurrency,
        allow_destroy: args.allow_destroy,
        health_timeout: std::time::Duration::from_secs(args.health_timeout),
        drain_timeout: std::time::Duration::from_secs(args.drain_timeout),
        budget_wait: std::time::Duration::from_secs(args.budget_wait),
        ..ApplyOptions::default()
    };
    let cancel = cancel_on_signals();
    let (tx, printer) = progress();
    let report = run_apply(
        &planned,
        &desired,
        &mut state,
        store,
        &providers,
        &opts,
        Some(tx),
        cancel,
    )
    .await;
    let _ = printer.await;
    let report = report?;
    print!("{}", report::apply_text(&report));
    if report.succeeded() {
        println!("Applied revision {}.", loaded.revision);
        skipped_outcome(&planned.plan)?;
        Ok(Done::Clean)
    } else {
        bail!("the apply did not complete")
    }
}

async fn drift(args: DriftArgs) -> Result<Done> {
    let store = state::open(&args.state.state).await?;
    let state = store.load().await?;
    // Compare with the revision last applied, not whatever the branch says now.
    let reference = if args.source.repo.is_some() {
        state.last_applied_revision.clone()
    } else {
        None
    };
    let loaded = load(&args.source, reference.as_deref(), args.format).await?;
    // GPU drift compares reports with the manifest, so it needs no earlier apply.
    if state.resources.is_empty() && args.gpu.source.is_none() {
        println!("Nothing is managed yet: run `fleetform apply` first.");
        return Ok(Done::Clean);
    }
    let providers = args.source.providers(&loaded.compiled)?;
    let options = PlanOptions {
        inventory_only: true,
        no_prune: true,
        ..plan_options(&loaded, Vec::new(), false)
    };
    let mut planned = make_plan(
        &loaded.compiled.resources,
        &state,
        &providers,
        &options,
        ObserveOptions::default(),
        Some(loaded.revision.clone()),
    )
    .await?;
    // GPU state is compared with the manifest (not with the last apply): pool
    // expectations vs inventories, and node health. Cordons are plan's business.
    let gpu = gpu::observe(&args.gpu, &args.source, &loaded).await?;
    if let Some(g) = &gpu {
        planned.plan.findings = g.findings();
    }
    let gpu_drift = planned.plan.findings.iter().any(|f| {
        matches!(
            f.kind,
            fleetform_engine::breakfix::FindingKind::GpuDrift
                | fleetform_engine::breakfix::FindingKind::Failed
        )
    });
    match args.format {
        Format::Text => print!("{}", report::drift_text(&planned.plan, color())),
        Format::Json => println!(
            "{}",
            serde_json::json!({ "formatVersion": 1, "drifted": planned.plan.actionable().collect::<Vec<_>>(), "problems": planned.plan.problems, "gpu": planned.plan.findings })
        ),
        Format::Markdown => print!(
            "{}",
            report::plan_markdown(&planned.plan, "fleetform drift", &[])
        ),
    }
    if !planned.plan.problems.is_empty() {
        bail!(
            "drift detection had {} problem(s)",
            planned.plan.problems.len()
        );
    }
    if !planned.plan.summary.has_changes() {
        return Ok(if gpu_drift {
            Done::Changes
        } else {
            Done::Clean
        });
    }
    if args.remediate {
        eprintln!("Remediating through plan/apply...");
        let lock = Locked::take(&args.state.state, "drift --remediate").await?;
        let mut state = lock.store.load().await?;
        let cancel = cancel_on_signals();
        let (tx, printer) = progress();
        // Healing means taking drifted fields back from whoever changed them.
        let desired = fleetform_engine::reconcile::remediation(
            &loaded.compiled.resources,
            &planned.plan,
            &providers,
        );
        let result = run_apply(
            &planned,
            &desired,
            &mut state,
            lock.store.as_ref(),
            &providers,
            &ApplyOptions::default(),
            Some(tx),
            cancel,
        )
        .await;
        let _ = printer.await;
        lock.release().await?;
        let report = result?;
        print!("{}", report::apply_text(&report));
        if !report.succeeded() {
            bail!("remediation did not complete");
        }
    }
    Ok(Done::Changes)
}

async fn serve(args: ServeArgs) -> Result<Done> {
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
    let pipeline = std::sync::Arc::new(fleet::ServePipeline { secrets_base });
    let drift_scheduled = !matches!(
        config.drift.schedule,
        fleetform_engine::serve::DriftSchedule::Off
    );
    let mut daemon = Daemon::new(config, pipeline, resolver)?;
    if let Some(store) = &args.state {
        daemon = daemon.with_state_store(state::open(store).await?);
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
                        return Ok(Done::Changes);
                    }
                }
                Ok(_) => println!("No drift."),
                Err(f) => bail!("drift check: {f}"),
            }
        }
        return Ok(Done::Clean);
    }
    let addr = daemon.listen().await?;
    eprintln!("fleetform serve: listening on http://{addr} (/healthz, /status, /metrics)");
    daemon.run(cancel_on_signals()).await?;
    Ok(Done::Clean)
}

/// SIGINT or SIGTERM.
async fn wait_for_signal() {
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

async fn graph(source: SourceArgs, format: GraphFormat) -> Result<Done> {
    // The graph talks to no provider: secrets are not read (placeholders stand in), and chart
    // releases are rendered for the Kubernetes versions the manifest declares.
    let (fleet, mut compiled) = match source.read(None).and_then(|(_, files)| {
        fleet::compile_files(&files, &fleetform_engine::secret::Placeholders)
    }) {
        Ok(x) => x,
        Err(LoadFailure::Invalid(d, files)) => return Err(invalid(&d, &files, Format::Text)),
        Err(LoadFailure::Other(e)) => return Err(e),
    };
    if let Err(diags) = fleet::expand_releases(
        &fleet,
        &mut compiled,
        &source.secrets_base(),
        std::sync::Arc::new(fleetform_engine::secret::Placeholders),
        false,
    )
    .await
    {
        for d in &diags {
            eprintln!("warning: {} (its objects are not drawn)", d.summary);
        }
    }
    let graph = fleetform_engine::graph::Graph::build(&compiled.resources)?;
    match format {
        GraphFormat::Text => print!("{graph}"),
        GraphFormat::Dot => print!("{}", graph.to_dot()),
        GraphFormat::Mermaid => print!("{}", graph.to_mermaid()),
    }
    Ok(Done::Clean)
}

async fn gpu_inventory(
    format: Format,
    node: Option<String>,
    from: Option<PathBuf>,
    publish: Option<(Option<PathBuf>, Option<String>)>,
) -> Result<Done> {
    let inv = match from {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut inv = fleetform_gpu::Inventory::from_json(&text)
                .with_context(|| format!("{} is not a GPU inventory", path.display()))?;
            if let Some(n) = node {
                inv.node = n;
            }
            inv
        }
        None => {
            let options = fleetform_gpu::CollectOptions {
                node,
                ..Default::default()
            };
            match fleetform_gpu::collect_with(&options) {
                Ok(inv) => inv,
                Err(e) => bail!("{e}"),
            }
        }
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&inv)?),
        _ => print!("{}", fleetform_gpu::render_text(&inv)),
    }
    if let Some((kubeconfig, context)) = publish {
        let client = gpu::client(kubeconfig.as_deref(), context).await?;
        let bytes = gpu::publish(&client, &inv).await?;
        eprintln!(
            "Published the inventory of node {} to ConfigMap {}/{} ({bytes} bytes).",
            inv.node,
            fleetform_gpu::inventory::CONFIGMAP_NAMESPACE,
            inv.node
        );
    }
    Ok(Done::Clean)
}
