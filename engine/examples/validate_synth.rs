//! Loads and validates a fleet directory, or a synthetic fleet, and prints timings.
//!
//! `cargo run --release -p fleetform-engine --example validate_synth -- 10000 1000`
//! `cargo run --release -p fleetform-engine --example validate_synth -- --dir examples/dsx`
use std::time::Instant;

use fleetform_engine::{load, synth, validate};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t0 = Instant::now();
    let files = if args.first().map(String::as_str) == Some("--dir") {
        let dir = args.get(1).cloned().unwrap_or_else(|| ".".into());
        match load::read_dir(std::path::Path::new(&dir)) {
            Ok(f) => f,
            Err(d) => {
                eprint!("{}", validate::render_text(&d, &[]));
                std::process::exit(1);
            }
        }
    } else {
        let hosts = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
        let tenants = args
            .get(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or(hosts / 10);
        synth::synthetic_fleet(hosts, tenants)
    };
    let bytes: usize = files.iter().map(|f| f.bytes.len()).sum();
    let t1 = Instant::now();
    let (docs, diags) = load::load(&files);
    let t2 = Instant::now();
    if !diags.is_empty() {
        eprint!("{}", validate::render_text(&diags, &files));
        std::process::exit(1);
    }
    let n = docs.len();
    match validate::validate(&docs) {
        Ok(f) => {
            let t3 = Instant::now();
            println!(
                "files={} bytes={} docs={} hosts={} tenants={} pools={} nims={} read={:?} load={:?} validate={:?} total={:?}",
                files.len(),
                bytes,
                n,
                f.hosts.len(),
                f.tenants.len(),
                f.pools.len(),
                f.nims.len(),
                t1 - t0,
                t2 - t1,
                t3 - t2,
                t3 - t1
            );
        }
        Err(d) => {
            eprint!("{}", validate::render_text(&d, &files));
            std::process::exit(1);
        }
    }
}
