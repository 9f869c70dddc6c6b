//! `fleetform drift [--remediate]`: live state against the last applied revision; the heal
//! goes through the session (planned again under the lock).

use anyhow::{Result, bail};
use clap::Args;
use fleetform_engine::apply::ApplyOptions;
use fleetform_engine::report;
use fleetform_engine::session::{ApplyRun, Outcome};

use super::{StateArgs, cancel_on_signals, color, load, plan_options, providers, session, told};
use crate::Format;
use crate::fleet::SourceArgs;
use crate::gpu;
use crate::report::{Events, progress};

#[derive(Debug, Args)]
pub(crate) struct DriftArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) state: StateArgs,
    #[command(flatten)]
    pub(crate) gpu: gpu::GpuArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// Fix drift through the normal plan/apply path. Kubernetes fields another
    /// field manager took over are taken back (server-side apply with force).
    #[arg(long)]
    pub(crate) remediate: bool,
}

pub(crate) async fn drift(args: DriftArgs) -> Result<Outcome> {
    let store = crate::state::open(&args.state.state).await?;
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
        return Ok(Outcome::Clean);
    }
    let (providers, inventory) = providers(&args.source, &args.gpu, &loaded).await?;
    let options = plan_options(&loaded, Vec::new(), false);
    let session = session(
        store.as_ref(),
        &providers,
        inventory.as_ref(),
        &loaded,
        options,
    );
    let found = session.drift().await?;
    let plan = found.plan();
    let gpu_drift = plan.findings.iter().any(|f| {
        matches!(
            f.kind,
            fleetform_engine::breakfix::FindingKind::GpuDrift
                | fleetform_engine::breakfix::FindingKind::Failed
        )
    });
    match args.format {
        Format::Text => print!("{}", report::drift_text(plan, color())),
        Format::Json => println!("{}", report::drift_json(plan)),
        Format::Markdown => print!("{}", report::plan_markdown(plan, "fleetform drift", &[])),
    }
    if !plan.problems.is_empty() {
        bail!("drift detection had {} problem(s)", plan.problems.len());
    }
    if !plan.summary.has_changes() {
        return Ok(if gpu_drift {
            Outcome::Changes
        } else {
            Outcome::Clean
        });
    }
    if args.remediate {
        eprintln!("Remediating through plan/apply...");
        let (tx, printer) = progress(Events::Text);
        let run = ApplyRun {
            options: ApplyOptions::default(),
            events: Some(tx),
            cancel: cancel_on_signals(),
        };
        // Planned again under the lock: refused if the drift moved since it was shown.
        let result = session.heal("drift --remediate", plan, run).await;
        let _ = printer.await;
        let done = result?;
        if let Some(report) = &done.report {
            print!("{}", report::apply_text(report));
        }
        if done.outcome != Outcome::Clean {
            return Ok(told(done.outcome, "remediation"));
        }
    }
    Ok(Outcome::Changes)
}
