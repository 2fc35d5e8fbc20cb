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
//! | [`envelope`] | the wire contract: task body and headers, defensive decoding |
//! | [`outcome`] | error kinds and the pure [`outcome::decide`] function |
//! | [`handler`] | the [`Handler`] trait, the registry and the built-in handlers |
//! | [`http_handler`] | task types mapped to HTTP calls made for a channel |
//! | [`outbound`] | the policy for outbound HTTP that carries a secret: no redirects, https, bounded reads |
//! | [`channels`] | per-process channel status/token cache; revocation and refresh messages |
//! | [`topology`] | every exchange and queue, declared idempotently in one place |
//! | [`migrate`] | `warden topology migrate`: queues of an older warden brought to today's arguments |
//! | [`broker`] | connecting, with backoff |
//! | [`worker`] | the consumer loop: sessions, per-task isolation, the crash sandbox, settling, coalesced acks |
//! | [`publish`] | confirmed publishing for tasks, copies and the CLI |
//! | [`events`] | `task.*` lifecycle events |
//! | [`dlq`] | listing, replaying and purging dead letters |
//! | [`admin`] | `/livez`, `/readyz`, `/metrics` |
//! | [`metrics`] | the Prometheus registry |
//! | [`telemetry`] | log output and the OTLP trace pipeline |
//! | [`trace`] | W3C trace context in AMQP headers; the messaging spans |
//! | [`shutdown`] | signals to a cancellation token |
//! | [`provider`] | `warden demo-provider`: a simulated OAuth2 platform for tests, demo and rehearsal |
//! | [`reauth`] | login flows, the Playwright/Chromium driver, and the `warden reauth` consumer |
//! | [`store`] | channel tokens: SQLite/PostgreSQL, AES-256-GCM at rest, versions, leases |
//! | [`cli`], [`commands`], [`demo`] | the command line |
//! | [`bench`] | `warden bench`: the worker against a raw-client baseline, same run |

pub mod admin;
pub mod bench;
pub mod broker;
pub mod channels;
pub mod cli;
pub mod commands;
pub mod config;
pub mod demo;
pub mod dlq;
pub mod envelope;
pub mod events;
pub mod handler;
pub mod http_handler;
pub mod metrics;
pub mod migrate;
pub mod outbound;
pub mod outcome;
pub mod provider;
pub mod publish;
pub mod reauth;
pub mod shutdown;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod topology;
pub mod trace;
pub mod worker;

pub use config::Settings;
pub use envelope::Task;
pub use handler::{Handler, Registry, TaskContext};
pub use outcome::{ErrorKind, TaskError};
