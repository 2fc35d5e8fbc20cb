//! warden: a RabbitMQ task worker that never falls over.
//!
//! Producers publish JSON tasks to `{prefix}.tasks`; `warden worker` replicas
//! consume them with manual acks, retry transient failures through broker-side
//! delay queues, and dead-letter what cannot succeed with the reason attached.
//!
//! # Layout
//!
//! | module | role |
//! |---|---|
//! | [`config`] | typed, layered settings; validated once at start |
//! | [`outcome`] | error kinds and the pure [`outcome::decide`] function |
//! | [`amqp`] | connecting, the topology and its migration, the wire contract ([`amqp::envelope`]), confirmed publishing, `task.*` events, dead-letter tools |
//! | [`handler`] | the [`Handler`] trait, the registry, the built-in handlers and HTTP task types ([`handler::http`]) |
//! | [`outbound`] | the policy for outbound HTTP that carries a secret: no redirects, https, bounded reads |
//! | [`channels`] | per-process channel status/token cache; revocation and refresh messages |
//! | [`supervisor`] | one broker session at a time, reconnecting with backoff: the skeleton of `worker` and `reauth` |
//! | [`worker`] | the consumer loop: per-task isolation, the crash sandbox, settling, coalesced acks |
//! | [`reauth`] | the `warden reauth` consumer: login flows, the Playwright/Chromium driver, the OAuth client |
//! | [`store`] | channel tokens: SQLite/PostgreSQL, AES-256-GCM at rest, versions, leases |
//! | [`observe`] | `/livez`, `/readyz`, `/metrics`, logs and the OTLP trace pipeline |
//! | [`shutdown`] | signals to a cancellation token |
//! | [`cli`] | the command line: arguments, one function per command, and the life of a binary built on the library |
//!
//! The simulated OAuth provider, the bench and the demo are not here: they
//! are the dev kit, the workspace's `devkit/` crate (`warden-dev`), so they
//! are neither part of this library's API nor of the production image.

pub mod amqp;
pub mod channels;
pub mod cli;
pub mod config;
pub mod handler;
pub mod observe;
pub mod outbound;
pub mod outcome;
pub mod reauth;
pub mod shutdown;
pub mod store;
pub mod supervisor;
pub mod worker;

pub use amqp::envelope::Task;
pub use config::Settings;
pub use handler::{Handler, Registry, TaskContext};
pub use outcome::{ErrorKind, TaskError};
