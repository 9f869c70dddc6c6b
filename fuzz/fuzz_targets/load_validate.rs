//! Any bytes through load and validate (and the text renderer): never a panic.
#![no_main]

use fleetform_engine::load::{self, SourceFile};
use fleetform_engine::validate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let files = [SourceFile { path: "fuzz.yaml".into(), bytes: data.to_vec() }];
    let (docs, diags) = load::load(&files);
    let _ = validate::render_text(&diags, &files);
    if let Err(d) = validate::validate(&docs) {
        let _ = validate::render_text(&d, &files);
    }
});
