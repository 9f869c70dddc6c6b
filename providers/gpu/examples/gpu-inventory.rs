//! Prints this node's GPU inventory (read-only NVML) as JSON, or text with
//! `--format text`. Stand-in for `fleetform gpu inventory` until the CLI has it;
//! tests/device/nvml-check.sh runs it on a real GPU.
//!
//! Usage: gpu-inventory [--format json|text] [--node NAME] [--xid-poll-ms N]
//! Exit codes: 0 inventory printed; 3 NVML not available (no driver/GPU);
//! 1 any other error; 2 usage error.

use std::process::ExitCode;
use std::time::Duration;

use fleetform_gpu::{CollectOptions, GpuError, collect_with, render_text};

fn main() -> ExitCode {
    let mut format = "json".to_string();
    let mut opts = CollectOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let r = match a.as_str() {
            "--format" => value("--format").map(|v| format = v),
            "--node" => value("--node").map(|v| opts.node = Some(v)),
            "--xid-poll-ms" => value("--xid-poll-ms").and_then(|v| {
                let ms: u64 = v
                    .parse()
                    .map_err(|_| format!("--xid-poll-ms: `{v}` is not a number"))?;
                opts.xid_poll = (ms > 0).then(|| Duration::from_millis(ms));
                Ok(())
            }),
            "-h" | "--help" => {
                println!(
                    "usage: gpu-inventory [--format json|text] [--node NAME] [--xid-poll-ms N]"
                );
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument `{other}`")),
        };
        if let Err(e) = r {
            eprintln!("gpu-inventory: {e}");
            return ExitCode::from(2);
        }
    }
    if format != "json" && format != "text" {
        eprintln!("gpu-inventory: --format must be json or text");
        return ExitCode::from(2);
    }
    match collect_with(&opts) {
        Ok(inv) => {
            if format == "json" {
                println!("{}", inv.to_json());
            } else {
                print!("{}", render_text(&inv));
            }
            ExitCode::SUCCESS
        }
        Err(e @ GpuError::NvmlUnavailable(_)) => {
            eprintln!("gpu-inventory: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("gpu-inventory: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                eprintln!("  caused by: {s}");
                src = s.source();
            }
            ExitCode::from(1)
        }
    }
}
