//! load + validate on synthetic fleets (see BENCHMARKS.md).
fn main() {}
