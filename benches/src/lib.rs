//! fipstun-benches: criterion benchmarks and the head-to-head scorecard harness.
//!
//! The benchmarks live in `benches/` beside this file and run with `cargo bench -p
//! fipstun-benches`; they measure, they never assert timings. The library part will hold the
//! workload code shared by the benches and the `fipstun scorecard` command, generic over the
//! `Transport` trait once it exists (`../shared/DESIGN.md` §6).
