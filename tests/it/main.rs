//! The integration tests, as one binary: each module here was a test binary of
//! its own, and each linked the whole crate. They run against the real broker,
//! PostgreSQL, the real `warden` binary and (the browser tests) Chromium; each
//! test isolates itself by a prefix, a schema or a temp dir of its own, and the
//! tests that drive Chromium take turns (`support::provider_browser::browser_turn`).
//!
//! Three suites stay binaries of their own, because they must run alone: no
//! other test may share their process, nor, for the broker restart, the broker:
//! - `tests/broker_restart.rs` stops and starts the broker every other test uses;
//! - `tests/chaos.rs` SIGKILLs every Chromium this process started and measures
//!   a worker's memory under a steady load of faults (`make chaos` runs it as
//!   `--test chaos`);
//! - `tests/cluster.rs` points the process's helpers at a three-node cluster
//!   (`support::use_broker`, set once per process; `make cluster-chaos` runs it
//!   as `--test cluster`); what of clustering one broker can show is
//!   `cluster_client` here.
//!
//! They include this binary's support module by path.

mod support;

mod browser_login;
mod cluster_client;
mod hostile;
mod observability;
mod provider;
mod reauth;
mod resilience;
mod store;
mod tls;
mod worker;
