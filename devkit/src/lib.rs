//! warden's dev kit: what tests, demos and measurements need around warden,
//! kept out of the production library and the production image.
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`provider`] | a simulated OAuth2 platform (login pages, token endpoint, bearer API, `/admin`): the integration tests, the demo and compose log in to it |
//! | [`demo`] | `warden-dev demo`: a worker in this process against a mixed batch and a revoked token, step by step |
//! | [`bench`] | `warden-dev bench`: the shipped worker against the real broker and a raw-client baseline, one file per scenario |
//! | [`shipped`] | finding the shipped `warden` binary that the bench runs as worker processes |
//! | [`cli`] | the `warden-dev` command line |
//!
//! It depends on `warden` like any user of the library does, and `warden`'s
//! integration tests depend on it for the simulated provider.

pub mod bench;
pub mod cli;
pub mod demo;
pub mod provider;
pub mod shipped;
