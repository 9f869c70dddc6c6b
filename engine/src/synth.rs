//! Synthetic fleets for benchmarks and scale tests.
