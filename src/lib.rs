//! warden: a crash-proof RabbitMQ task worker.
//!
//! # Layout
//!
//! - [`provider`]: a simulated OAuth2 provider (login pages, token endpoint, a bearer-checked
//!   API, revocation) for tests, the demo and rehearsing login flows.
//! - [`reauth`]: re-authentication: login flow configuration ([`reauth::flow`]) and the
//!   Playwright/Chromium login driver ([`reauth::browser`]).

pub mod provider;
pub mod reauth;
