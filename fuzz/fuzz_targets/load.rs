//! Any bytes: the loader returns documents or diagnostics, never panics, and stays
//! within its limits. `cargo +nightly fuzz run load -- -max_total_time=300`
#![no_main]

use fleetform_engine::load::{self, SourceFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let files = [SourceFile { path: "fuzz.yaml".into(), bytes: data.to_vec() }];
    let (docs, diags) = load::load(&files);
    for d in &docs {
        // Every document has a span for its root and its kind line.
        assert!(d.spans.span("").is_some());
        assert!(d.origin.line >= 1);
    }
    for d in &diags {
        let _ = d.to_string();
    }
});
