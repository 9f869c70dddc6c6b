//! docs/cli.md is the `--help` of every command, verbatim: this test
//! regenerates it from the binary and fails when the page is stale.
//! Refresh it with `FLEETFORM_BLESS=1 cargo test -p fleetform --test cli_reference`.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Command;

fn help(path: &[String]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetform"));
    // clap prints the current value of an option's env var: the page must not
    // depend on the shell it was made in.
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FLEETFORM_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .args(path)
        .arg("--help")
        .env_remove("COLUMNS")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "fleetform {path:?} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands a help text lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

fn render() -> String {
    let mut out = String::from(
        "# CLI reference\n\n\
         Generated from `fleetform <command> --help`; `cargo test -p fleetform --test cli_reference`\n\
         fails when this page and the binary disagree (refresh it with `FLEETFORM_BLESS=1`).\n\n\
         Exit status of every command: **0** success and nothing to change, **2** success and changes\n\
         present (`plan`, `drift`), **1** an error (including usage errors) or an incomplete run\n\
         (plan problems, resources skipped because they could not be observed, failed changes),\n\
         **130** an apply or remediation interrupted by SIGINT/SIGTERM (calls in flight recorded).\n\n\
         `apply --events ndjson` writes one JSON object per apply event on stdout, flushed per line\n\
         (the plan and the summary go to stderr). Each has `event` and `id` (the resource address):\n\
         `started` (`action`), `retrying` (`attempt`, `error`, `delay_ms`), `waiting-healthy`\n\
         (`message`), `waiting-rollout` (`pool`, `reason`), `succeeded` (`action`, `elapsed_ms`),\n\
         `failed` (`error`), `skipped` (`root`: the failure it waited for), `maintenance` (`node`,\n\
         `cordoned`).\n",
    );
    let mut queue = vec![Vec::<String>::new()];
    while let Some(path) = queue.pop() {
        let text = help(&path);
        let name = if path.is_empty() {
            "fleetform".to_string()
        } else {
            format!("fleetform {}", path.join(" "))
        };
        out.push_str(&format!(
            "\n## `{name}`\n\n```text\n{}\n```\n",
            text.trim_end()
        ));
        let mut subs = subcommands(&text);
        subs.reverse();
        for s in subs {
            let mut p = path.clone();
            p.push(s);
            queue.push(p);
        }
    }
    out
}

#[test]
fn the_cli_reference_is_the_help_of_every_command() {
    let page = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/cli.md");
    let want = render();
    if std::env::var_os("FLEETFORM_BLESS").is_some() {
        std::fs::write(&page, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&page).unwrap_or_default();
    if have != want {
        let diff = similar::TextDiff::from_lines(&have, &want);
        panic!(
            "docs/cli.md is stale; refresh it with FLEETFORM_BLESS=1 cargo test -p fleetform --test cli_reference\n{}",
            diff.unified_diff().context_radius(2)
        );
    }
}

#[test]
fn every_command_is_in_the_reference() {
    let page = render();
    for cmd in [
        "validate",
        "plan",
        "apply",
        "drift",
        "graph",
        "serve",
        "force-unlock",
        "gpu inventory",
        "dev generate",
    ] {
        assert!(
            page.contains(&format!("## `fleetform {cmd}`")),
            "{cmd} missing"
        );
    }
}
