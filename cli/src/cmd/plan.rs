//! `fleetform plan` (and the pull-request plan): the session's plan, rendered.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use fleetform_engine::ResourceId;
use fleetform_engine::plan::{Plan, PlanOptions};
use fleetform_engine::report;
use fleetform_engine::session::Outcome;

use super::{StateArgs, color, load, plan_options, providers, session, told};
use crate::Format;
use crate::fleet::{self, Loaded, SourceArgs};
use crate::gpu;

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    #[command(flatten)]
    pub(crate) state: StateArgs,
    #[command(flatten)]
    pub(crate) gpu: gpu::GpuArgs,
    /// Limit to these resources and what they depend on (repeatable).
    #[arg(long = "target", value_parser = ResourceId::parse)]
    pub(crate) targets: Vec<ResourceId>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// Save the plan to apply later with `fleetform apply FILE`.
    #[arg(short = 'o', long = "out")]
    pub(crate) out: Option<PathBuf>,
    /// Allow deleting more than the fleet's prune.maxDeleteFraction of managed resources.
    #[arg(long)]
    pub(crate) allow_mass_delete: bool,
    /// Pull-request mode: the base revision (e.g. main); requires --repo.
    #[arg(long, requires = "head")]
    pub(crate) base: Option<String>,
    /// Pull-request mode: the head revision (the PR branch or commit).
    #[arg(long, requires = "base")]
    pub(crate) head: Option<String>,
}

pub(crate) async fn plan_against_live(
    source: &SourceArgs,
    state_dir: &std::path::Path,
    gpu: &gpu::GpuArgs,
    loaded: &Loaded,
    options: &PlanOptions,
) -> Result<Plan> {
    let store = crate::state::open(state_dir).await?;
    let (providers, inventory) = providers(source, gpu, loaded).await?;
    let sp = session(
        store.as_ref(),
        &providers,
        inventory.as_ref(),
        loaded,
        options.clone(),
    )
    .plan()
    .await?;
    let mut plan = sp.planned.plan;
    plan.releases = fleet::release_summaries(&loaded.releases, &plan, &sp.state);
    Ok(plan)
}

pub(crate) async fn plan(args: PlanArgs) -> Result<Outcome> {
    if let (Some(base), Some(head)) = (&args.base, &args.head) {
        return pr_plan(&args, base, head).await;
    }
    let loaded = load(&args.source, None, args.format).await?;
    let options = plan_options(&loaded, args.targets.clone(), args.allow_mass_delete);
    let plan = plan_against_live(
        &args.source,
        &args.state.state,
        &args.gpu,
        &loaded,
        &options,
    )
    .await?;
    emit_plan(&plan, args.format, "fleetform plan", &[]);
    if let Some(out) = &args.out {
        fleetform_engine::state::write_atomic(out, report::plan_json(&plan).as_bytes())?;
        eprintln!(
            "Saved the plan to {}; apply it with `fleetform apply {}`.",
            out.display(),
            out.display()
        );
    }
    Ok(told(Outcome::of_plan(&plan), "the plan"))
}

pub(crate) fn emit_plan(plan: &Plan, format: Format, title: &str, intro: &[String]) {
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
pub(crate) async fn pr_plan(args: &PlanArgs, base: &str, head: &str) -> Result<Outcome> {
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
    let head_plan = plan_against_live(
        &args.source,
        &args.state.state,
        &args.gpu,
        &head_loaded,
        &options,
    )
    .await?;
    let base_plan = plan_against_live(
        &args.source,
        &args.state.state,
        &args.gpu,
        &base_loaded,
        &plan_options(&base_loaded, args.targets.clone(), true),
    )
    .await?;
    let already: std::collections::BTreeSet<&ResourceId> =
        base_plan.actionable().map(|c| &c.id).collect();
    let from_pr: Vec<&ResourceId> = head_plan
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
        &head_plan,
        args.format,
        "fleetform plan for this pull request",
        &intro,
    );
    Ok(told(Outcome::of_plan(&head_plan), "the plan"))
}
