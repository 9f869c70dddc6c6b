//! Report: one view per output format, all fed by the same plan data.
//! Text for people (colour only when asked, i.e. on a TTY), JSON (the plan
//! itself, versioned), Markdown for pull-request comments (totals first,
//! destructive changes called out, details folded, bounded in size).

use std::fmt::Write as _;

use serde_json::Value;
use similar::TextDiff;

use crate::apply::{ApplyReport, Outcome};
use crate::plan::{Plan, PlannedChange};
use crate::provider::{Action, Disruption, FieldChange};

/// GitHub rejects comments over 65,536 characters; stay well under.
pub const MARKDOWN_LIMIT: usize = 60_000;

fn symbol(a: Action) -> &'static str {
    match a {
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
        Action::NoOp => " ",
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Update => "update",
        Action::Replace => "replace",
        Action::Delete => "delete",
        Action::NoOp => "no-op",
    }
}

struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, s: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn action(&self, a: Action, s: &str) -> String {
        let code = match a {
            Action::Create => "32",
            Action::Update => "33",
            Action::Replace | Action::Delete => "31",
            Action::NoOp => "2",
        };
        self.wrap(code, s)
    }
}

/// The one-line totals.
pub fn totals(plan: &Plan) -> String {
    let s = &plan.summary;
    let mut line = format!(
        "{} to create, {} to update, {} to replace, {} to delete, {} unchanged",
        s.create, s.update, s.replace, s.delete, s.no_op
    );
    if s.destructive > 0 {
        let _ = write!(line, " ({} destructive)", s.destructive);
    }
    let classes: Vec<String> = Disruption::MOST_SEVERE_FIRST
        .iter()
        .filter(|d| !d.is_none())
        .filter_map(|d| s.by_disruption.get(d).map(|n| format!("{n} {d}")))
        .collect();
    if !classes.is_empty() {
        let _ = write!(line, " (disruption: {})", classes.join(", "));
    }
    line
}

/// The changes that disrupt running work, grouped by class, most severe first (changes
/// that disrupt nothing are left out: the totals count them).
fn by_class(plan: &Plan) -> Vec<(Disruption, Vec<&PlannedChange>)> {
    Disruption::MOST_SEVERE_FIRST
        .iter()
        .filter(|d| !d.is_none())
        .map(|d| {
            (
                *d,
                plan.actionable()
                    .filter(|c| c.disruption == *d)
                    .collect::<Vec<_>>(),
            )
        })
        .filter(|(_, cs)| !cs.is_empty())
        .collect()
}

/// What each class does, for people.
fn class_meaning(d: Disruption) -> &'static str {
    match d {
        Disruption::PowerCycle => "the host loses power",
        Disruption::HostReboot => "the host reboots",
        Disruption::NodeDrain => "the node's GPU work is evicted",
        Disruption::PodRestart => "pods are replaced",
        Disruption::None => "nothing running is touched",
    }
}

fn disruption_text(plan: &Plan, p: &Paint, out: &mut String) {
    let groups = by_class(plan);
    if groups.is_empty() && plan.budgets.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", p.wrap("1", "Disruption (most severe first):"));
    for (d, cs) in &groups {
        let _ = writeln!(out, "  {d} ({}; {}):", cs.len(), class_meaning(*d));
        for c in cs {
            let _ = writeln!(out, "    {} {}", symbol(c.action), c.id);
        }
    }
    for b in &plan.budgets {
        let _ = writeln!(
            out,
            "  {}",
            p.wrap("33", &format!("budget: {}", b.describe()))
        );
    }
}

fn disruption_markdown(plan: &Plan, out: &mut String) {
    let groups = by_class(plan);
    if groups.is_empty() && plan.budgets.is_empty() {
        return;
    }
    let _ = writeln!(out, "#### Disruption\n");
    if !groups.is_empty() {
        let _ = writeln!(
            out,
            "| class | what it does | changes | resources |\n| --- | --- | ---: | --- |"
        );
        for (d, cs) in &groups {
            // Bounded: a fleet-wide driver change lists its first few, the count says the rest.
            let shown: Vec<String> = cs.iter().take(10).map(|c| format!("`{}`", c.id)).collect();
            let more = if cs.len() > shown.len() {
                format!(" and {} more", cs.len() - shown.len())
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| **{d}** | {} | {} | {}{more} |",
                class_meaning(*d),
                cs.len(),
                shown.join(", ")
            );
        }
        out.push('\n');
    }
    for b in &plan.budgets {
        let _ = writeln!(out, "- ⏸️ {}", escape_md(&b.describe()));
    }
    if !plan.budgets.is_empty() {
        out.push('\n');
    }
}

fn value(v: &Option<Value>) -> String {
    match v {
        None => "(absent)".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(v) => v.to_string(),
    }
}

fn field_lines(f: &FieldChange, indent: &str, out: &mut String) {
    let by = f
        .changed_by
        .as_ref()
        .map(|m| format!("  [changed by {m}]"))
        .unwrap_or_default();
    let multi = |v: &Option<Value>| match v {
        Some(Value::String(s)) => s.contains('\n'),
        Some(Value::Object(_) | Value::Array(_)) => true,
        _ => false,
    };
    if !f.sensitive && (multi(&f.before) || multi(&f.after)) {
        let pretty = |v: &Option<Value>| match v {
            Some(Value::String(s)) => s.clone(),
            Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
            None => String::new(),
        };
        let (a, b) = (pretty(&f.before), pretty(&f.after));
        let _ = writeln!(out, "{indent}{}:{by}", f.path);
        let diff = TextDiff::from_lines(&a, &b);
        for change in diff.iter_all_changes() {
            let sign = match change.tag() {
                similar::ChangeTag::Delete => "-",
                similar::ChangeTag::Insert => "+",
                similar::ChangeTag::Equal => " ",
            };
            let _ = write!(out, "{indent}  {sign} {change}");
            if change.missing_newline() {
                out.push('\n');
            }
        }
    } else {
        let _ = writeln!(
            out,
            "{indent}{}: {} -> {}{by}",
            f.path,
            value(&f.before),
            value(&f.after)
        );
    }
}

/// The plan for people. `color` adds ANSI colours (only on a TTY).
pub fn plan_text(plan: &Plan, color: bool) -> String {
    let p = Paint(color);
    let mut out = String::new();
    let _ = writeln!(out, "Plan: {}", totals(plan));
    if let Some(rev) = &plan.revision {
        let _ = writeln!(out, "Revision: {rev}");
    }
    releases_text(plan, &mut out);
    disruption_text(plan, &p, &mut out);
    let mut wave = usize::MAX;
    for c in plan.actionable() {
        if c.wave != wave {
            wave = c.wave;
            let _ = writeln!(out, "\nWave {wave}:");
        }
        change_text(c, &p, &mut out);
    }
    for id in &plan.forget {
        let _ = writeln!(
            out,
            "\n  forget {id} (already gone; removed from the inventory)"
        );
    }
    if !plan.problems.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            p.wrap("31;1", &format!("{} problem(s):", plan.problems.len()))
        );
        for pr in &plan.problems {
            let at = pr
                .origin
                .as_ref()
                .map(|o| format!("{o}: "))
                .unwrap_or_default();
            let id = pr.id.as_ref().map(|i| format!("{i}: ")).unwrap_or_default();
            let tr = if pr.transient {
                " (transient: retrying later may succeed)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {at}error: {id}{}{tr}",
                pr.id
                    .as_ref()
                    .map_or(pr.message.as_str(), |i| without_id(i, &pr.message))
            );
        }
    }
    if !plan.skipped.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            p.wrap(
                "33;1",
                &format!(
                    "{} skipped (not observable now; everything else is planned):",
                    plan.skipped.len()
                )
            )
        );
        for s in &plan.skipped {
            let at = s
                .origin
                .as_ref()
                .map(|o| format!("{o}: "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {at}skipped: {}: {}",
                s.id,
                without_id(&s.id, &s.reason)
            );
        }
    }
    findings_text(plan, &p, &mut out);
    if !plan.summary.has_changes() && plan.problems.is_empty() && plan.skipped.is_empty() {
        let _ = writeln!(out, "\nNo changes. Live state matches the manifest.");
    }
    out
}

/// A line per chart release that changes: the version and what its rendered objects do.
fn release_line(r: &crate::plan::ReleaseSummary) -> Option<String> {
    if r.create + r.change + r.delete == 0 {
        return None;
    }
    let mut line = format!(
        "release {} ({} {}): {} to create, {} to change, {} to remove",
        r.release, r.chart, r.version, r.create, r.change, r.delete
    );
    if !r.new_images.is_empty() {
        let _ = write!(line, "; new images: {}", r.new_images.join(", "));
    }
    Some(line)
}

fn releases_text(plan: &Plan, out: &mut String) {
    let lines: Vec<String> = plan.releases.iter().filter_map(release_line).collect();
    if !lines.is_empty() {
        let _ = writeln!(out, "\nChart releases:");
        for l in lines {
            let _ = writeln!(out, "  {l}");
        }
    }
}

/// GPU drift and break/fix findings: not changes, but things a person decides.
fn findings_text(plan: &Plan, p: &Paint, out: &mut String) {
    if plan.findings.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{}",
        p.wrap("1", &format!("GPU findings ({}):", plan.findings.len()))
    );
    for f in &plan.findings {
        let kind = serde_json::to_value(f.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(out, "  [{kind}] {}", f.message);
        if let Some(s) = &f.suggestion {
            let at = f
                .origin
                .as_ref()
                .map(|o| format!(" ({o})"))
                .unwrap_or_default();
            let _ = writeln!(out, "      suggested edit{at}: {s}");
        }
    }
}

fn findings_markdown(plan: &Plan, out: &mut String) {
    if plan.findings.is_empty() {
        return;
    }
    let _ = writeln!(out, "#### GPU findings ({})\n", plan.findings.len());
    for f in &plan.findings {
        let kind = serde_json::to_value(f.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = writeln!(out, "- **{kind}** {}", escape_md(&f.message));
        if let Some(s) = &f.suggestion {
            let at = f
                .origin
                .as_ref()
                .map(|o| format!(" (`{o}`)"))
                .unwrap_or_default();
            let _ = writeln!(out, "  - suggested edit{at}: {}", escape_md(s));
        }
    }
    out.push('\n');
}

fn change_text(c: &PlannedChange, p: &Paint, out: &mut String) {
    let flag = match (c.destructive, c.disruption) {
        (true, Disruption::None) => " [destructive]".to_string(),
        (true, d) => format!(" [destructive, {d}]"),
        (false, Disruption::None) => String::new(),
        (false, d) => format!(" [{d}]"),
    };
    let _ = writeln!(
        out,
        "  {} {}  ({}){}",
        p.action(c.action, symbol(c.action)),
        p.action(c.action, c.id.as_str()),
        c.reason.describe(),
        flag
    );
    if let Some(o) = &c.origin {
        let _ = writeln!(out, "      from {o}");
    }
    for f in &c.fields {
        field_lines(f, "      ", out);
    }
    for (path, v) in pinned_in(c) {
        let _ = writeln!(out, "      pinned {path}: {v:?}");
    }
}

/// The image references pinned to a digest (`tag@sha256:...`) in a create's spec,
/// with their JSON pointers: what will run, shown in every rendering (an update shows
/// a moved digest as a field change already).
fn pinned_in(c: &PlannedChange) -> Vec<(String, String)> {
    fn walk(v: &Value, ptr: &mut String, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let len = ptr.len();
                    ptr.push('/');
                    ptr.push_str(&k.replace('~', "~0").replace('/', "~1"));
                    walk(x, ptr, out);
                    ptr.truncate(len);
                }
            }
            Value::Array(a) => {
                for (n, x) in a.iter().enumerate() {
                    let len = ptr.len();
                    let _ = write!(ptr, "/{n}");
                    walk(x, ptr, out);
                    ptr.truncate(len);
                }
            }
            Value::String(s)
                if s.rsplit_once('@')
                    .is_some_and(|(_, d)| crate::compile::is_digest(d)) =>
            {
                out.push((ptr.clone(), s.clone()));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if c.action == Action::Create
        && let Some(spec) = &c.spec
    {
        walk(spec, &mut String::new(), &mut out);
    }
    out
}

/// The plan as versioned JSON (the plan data itself).
pub fn plan_json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).unwrap_or_default()
}

/// The plan as a pull-request comment. `intro` lines (e.g. what the PR
/// changes in the manifest) go after the totals.
pub fn plan_markdown(plan: &Plan, title: &str, intro: &[String]) -> String {
    let mut out = String::new();
    let status = if !plan.problems.is_empty() {
        "❌ cannot be applied"
    } else if plan.summary.has_changes() {
        "changes"
    } else {
        "✅ no changes"
    };
    let _ = writeln!(out, "### {title}: {status}\n");
    let _ = writeln!(out, "**{}**\n", totals(plan));
    if let Some(rev) = &plan.revision {
        let _ = writeln!(out, "Revision `{rev}`\n");
    }
    for line in intro {
        let _ = writeln!(out, "{line}");
    }
    if !intro.is_empty() {
        out.push('\n');
    }
    let releases: Vec<String> = plan.releases.iter().filter_map(release_line).collect();
    if !releases.is_empty() {
        let _ = writeln!(out, "#### Chart releases\n");
        for l in releases {
            let _ = writeln!(out, "- {}", escape_md(&l));
        }
        out.push('\n');
    }
    if !plan.skipped.is_empty() {
        let _ = writeln!(out, "#### Skipped (not observable now)\n");
        for sk in &plan.skipped {
            let at = sk
                .origin
                .as_ref()
                .map(|o| format!("`{o}` "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "- {at}`{}`: {}",
                sk.id,
                escape_md(without_id(&sk.id, &sk.reason))
            );
        }
        out.push('\n');
    }
    if !plan.problems.is_empty() {
        let _ = writeln!(out, "#### Problems\n");
        for pr in &plan.problems {
            let at = pr
                .origin
                .as_ref()
                .map(|o| format!("`{o}` "))
                .unwrap_or_default();
            let id = pr
                .id
                .as_ref()
                .map(|i| format!("`{i}`: "))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "- {at}{id}{}",
                escape_md(
                    pr.id
                        .as_ref()
                        .map_or(pr.message.as_str(), |i| without_id(i, &pr.message))
                )
            );
        }
        out.push('\n');
    }
    findings_markdown(plan, &mut out);
    disruption_markdown(plan, &mut out);
    let destructive: Vec<&PlannedChange> = plan.actionable().filter(|c| c.destructive).collect();
    if !destructive.is_empty() {
        let _ = writeln!(out, "#### ⚠️ Destructive changes ({})\n", destructive.len());
        for c in &destructive {
            let _ = writeln!(
                out,
                "- **{}** `{}` ({})",
                verb(c.action),
                c.id,
                c.reason.describe()
            );
        }
        out.push('\n');
    }
    let changes: Vec<&PlannedChange> = plan.actionable().collect();
    if !changes.is_empty() {
        let _ = writeln!(out, "#### Changes, in apply order\n");
        let mut detail = String::new();
        let mut wave = usize::MAX;
        for c in &changes {
            if c.wave != wave {
                wave = c.wave;
                let _ = writeln!(detail, "\n**Wave {wave}**\n");
            }
            let _ = writeln!(
                detail,
                "<details><summary><code>{} {}</code> ({}){}</summary>\n",
                symbol(c.action),
                c.id,
                escape_md(&c.reason.describe()),
                if c.disruption.is_none() {
                    String::new()
                } else {
                    format!(" — {}", c.disruption)
                }
            );
            if let Some(o) = &c.origin {
                let _ = writeln!(detail, "From `{o}`.\n");
            }
            if !c.fields.is_empty() {
                detail.push_str("```diff\n");
                for f in &c.fields {
                    let by = f
                        .changed_by
                        .as_ref()
                        .map(|m| format!(" (changed by {m})"))
                        .unwrap_or_default();
                    let _ = writeln!(
                        detail,
                        "- {}: {}{by}\n+ {}: {}",
                        f.path,
                        value(&f.before),
                        f.path,
                        value(&f.after)
                    );
                }
                detail.push_str("```\n");
            }
            for (path, v) in pinned_in(c) {
                let _ = writeln!(detail, "Pinned `{path}`: `{v}`.\n");
            }
            if !c.waits_for.is_empty() {
                let waits: Vec<String> = c
                    .waits_for
                    .iter()
                    .map(|d| format!("`{}` ({})", d.on, d.reason))
                    .collect();
                let _ = writeln!(detail, "Waits for {}.\n", waits.join(", "));
            }
            detail.push_str("</details>\n");
        }
        if out.len() + detail.len() > MARKDOWN_LIMIT {
            // Too big for a comment: summarise per provider and action instead.
            let mut counts: std::collections::BTreeMap<(String, &str), usize> = Default::default();
            for c in &changes {
                *counts
                    .entry((c.id.provider().to_string(), verb(c.action)))
                    .or_default() += 1;
            }
            let _ = writeln!(
                out,
                "The full plan is too large for a comment ({} changes); by provider:\n",
                changes.len()
            );
            let _ = writeln!(
                out,
                "| provider | action | resources |\n| --- | --- | ---: |"
            );
            for ((prov, act), n) in counts {
                let _ = writeln!(out, "| {prov} | {act} | {n} |");
            }
            let _ = writeln!(
                out,
                "\nRun `fleetform plan --format json` for every change."
            );
        } else {
            out.push_str(&detail);
        }
    }
    out
}

/// Drops a leading `ADDRESS: ` from a message that is printed after its address already.
pub fn without_id<'a>(id: &crate::resource::ResourceId, message: &'a str) -> &'a str {
    message
        .strip_prefix(id.as_str())
        .and_then(|m| m.strip_prefix(": "))
        .unwrap_or(message)
}

fn escape_md(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Drift, for people: the resources whose live state left what was applied.
pub fn drift_text(plan: &Plan, color: bool) -> String {
    let p = Paint(color);
    let mut out = String::new();
    let drifted: Vec<&PlannedChange> = plan.actionable().collect();
    if drifted.is_empty() && plan.problems.is_empty() {
        out.push_str("No drift: every managed resource matches what was last applied.\n");
        findings_text(plan, &p, &mut out);
        return out;
    }
    let _ = writeln!(
        out,
        "Drift: {} resource(s) differ from what was last applied",
        drifted.len()
    );
    for c in drifted {
        let what = match c.action {
            Action::Create => "missing (deleted out of band)".to_string(),
            _ => format!("{} field(s) changed", c.fields.len()),
        };
        let _ = writeln!(
            out,
            "  {} {}: {what}",
            p.action(c.action, symbol(c.action)),
            c.id
        );
        for f in &c.fields {
            field_lines(f, "      ", &mut out);
        }
    }
    for pr in &plan.problems {
        let id = pr.id.as_ref().map(|i| format!("{i}: ")).unwrap_or_default();
        let msg = pr
            .id
            .as_ref()
            .map_or(pr.message.as_str(), |i| without_id(i, &pr.message));
        let _ = writeln!(out, "  error: {id}{msg}");
    }
    findings_text(plan, &p, &mut out);
    out
}

/// Drift, for programs: `fleetform drift --format json`, versioned (`formatVersion: 1`): the
/// drifted changes, the problems and the GPU findings, one JSON object.
pub fn drift_json(plan: &Plan) -> String {
    serde_json::json!({
        "formatVersion": 1,
        "drifted": plan.actionable().collect::<Vec<_>>(),
        "problems": plan.problems,
        "gpu": plan.findings,
    })
    .to_string()
}

/// The outcome of an apply: successes counted, failures listed once with the
/// resources they caused to be skipped.
pub fn apply_text(report: &ApplyReport) -> String {
    let mut out = String::new();
    let applied = report
        .outcomes
        .values()
        .filter(|o| matches!(o, Outcome::Applied { .. }))
        .count();
    let failed = report
        .outcomes
        .values()
        .filter(|o| matches!(o, Outcome::Failed { .. }))
        .count();
    let skipped = report
        .outcomes
        .values()
        .filter(|o| matches!(o, Outcome::SkippedUpstream { .. }))
        .count();
    let not_started = report
        .outcomes
        .values()
        .filter(|o| matches!(o, Outcome::NotStarted))
        .count();
    let _ = writeln!(
        out,
        "Apply: {applied} applied, {failed} failed, {skipped} skipped, {not_started} not started"
    );
    for (root, (error, skipped)) in report.root_causes() {
        let _ = writeln!(out, "  failed {root}: {}", without_id(root, error));
        for s in skipped {
            let _ = writeln!(out, "    skipped {s} (waits for {root})");
        }
    }
    if report.interrupted {
        out.push_str("Interrupted: calls in flight finished and were recorded; run apply again to continue.\n");
    }
    out
}
