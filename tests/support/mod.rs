//! The integration tests' support module lives in `tests/it/support/`; this
//! path stays for the benches that include it by file (`mod support;` in
//! `tests/bench.rs`, `#[path = "../tests/support/mod.rs"]` in
//! `benches/tracing_overhead.rs`).

#[path = "../it/support/mod.rs"]
mod it_support;

pub use it_support::*;
