//! `fleetform apply [PLANFILE]`: the session under the lock, with progress as text or NDJSON.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use fleetform_engine::ResourceId;
use fleetform_engine::apply::ApplyOptions;
use fleetform_engine::plan::Plan;
use fleetform_engine::report;
use fleetform_engine::session::{ApplyRun, Locked, Outcome};

use super::{StateArgs, cancel_on_signals, color, load, plan_options, providers, session, told};
use crate::Format;
use crate::fleet::{Loaded, SourceArgs};
use crate::gpu;
use crate::report::{Events, progress};

#[derive(Debug, Args)]
pub(crate) struct ApplyArgs {
    /// A plan saved with `plan -o`; refused if the revision or live state moved since.
    pub(crate) plan: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) state: StateArgs,
    #[command(flatten)]
    pub(crate) gpu: gpu::GpuArgs,
    /// Limit to these resources and what they depend on (repeatable).
    #[arg(long = "target", value_parser = ResourceId::parse)]
    pub(crate) targets: Vec<ResourceId>,
    /// Consent to deleting or replacing resources.
    #[arg(long)]
    pub(crate) allow_destroy: bool,
    /// Allow deleting more than the fleet's prune.maxDeleteFraction of managed resources.
    #[arg(long)]
    pub(crate) allow_mass_delete: bool,
    /// Provider calls in flight at once.
    #[arg(long, default_value_t = 16)]
    pub(crate) concurrency: usize,
    /// Seconds a resource may take to become healthy.
    #[arg(long, default_value_t = 600)]
    pub(crate) health_timeout: u64,
    /// Seconds draining a node may take before a disruptive change to its host (pods are
    /// evicted as `kubectl drain` does; what remains at the deadline stops that change).
    #[arg(long, default_value_t = 900)]
    pub(crate) drain_timeout: u64,
    /// Seconds a disruptive change waits for nodes already down in its pool (cordoned,
    /// NotReady, under maintenance) to come back when they alone fill its rollout budget;
    /// after that it fails naming them.
    #[arg(long, default_value_t = 600)]
    pub(crate) budget_wait: u64,
    /// Progress view: `text` lines on stderr, or `ndjson`: one JSON object per apply event
    /// on stdout (for CI and UIs; the plan and the summary then go to stderr).
    #[arg(long, value_enum, default_value_t = Events::Text)]
    pub(crate) events: Events,
}

pub(crate) async fn apply(args: ApplyArgs) -> Result<Outcome> {
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
    let store = crate::state::open(&args.state.state).await?;
    let (providers, inventory) = providers(&args.source, &args.gpu, &loaded).await?;
    let options = plan_options(&loaded, args.targets.clone(), args.allow_mass_delete);
    let session = session(
        store.as_ref(),
        &providers,
        inventory.as_ref(),
        &loaded,
        options,
    );
    let locked = session.lock("apply").await?;
    let result = apply_locked(&args, &loaded, saved.as_ref(), &locked).await;
    locked.release().await?;
    result
}

/// Plans under the lock, checks a saved plan's digest against it, and applies.
pub(crate) async fn apply_locked(
    args: &ApplyArgs,
    loaded: &Loaded,
    saved: Option<&Plan>,
    locked: &Locked<'_, '_>,
) -> Result<Outcome> {
    let sp = locked.plan().await?;
    // With NDJSON, stdout carries the events alone: what people read goes to stderr.
    let ndjson = args.events == Events::Ndjson;
    let say = |text: &str| {
        if ndjson {
            eprint!("{text}")
        } else {
            print!("{text}")
        }
    };
    if let Some(saved) = saved {
        if saved.digest != sp.plan().digest {
            bail!(
                "live state changed since the plan was saved ({} now vs {} then): plan again and review",
                report::totals(sp.plan()),
                report::totals(saved)
            );
        }
        if !sp.plan().problems.is_empty() {
            say(&report::plan_text(sp.plan(), color() && !ndjson));
        }
    } else {
        say(&report::plan_text(sp.plan(), color() && !ndjson));
    }
    let (tx, printer) = progress(args.events);
    let run = ApplyRun {
        options: ApplyOptions {
            concurrency: args.concurrency,
            allow_destroy: args.allow_destroy,
            health_timeout: std::time::Duration::from_secs(args.health_timeout),
            drain_timeout: std::time::Duration::from_secs(args.drain_timeout),
            budget_wait: std::time::Duration::from_secs(args.budget_wait),
            ..ApplyOptions::default()
        },
        events: Some(tx),
        cancel: cancel_on_signals(),
    };
    let result = locked.apply(sp, run).await;
    let _ = printer.await;
    let done = result?;
    if let Some(report) = &done.report {
        say(&report::apply_text(report));
        if report.succeeded() {
            say(&format!("Applied revision {}.\n", loaded.revision));
        }
    }
    Ok(told(done.outcome, "the apply"))
}
