//! Benchmarks live in `benches/` (criterion) and `src/bin/` (the harness binaries).
//! [`harness`] is the library of the whole-system `bench` binary.

pub mod harness;
