//! Synthetic fleets for benchmarks and scale tests.
pub fn synthetic_fleet(_h: usize, _t: usize) -> Vec<crate::load::SourceFile> { Vec::new() }
