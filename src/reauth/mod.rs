//! Re-authentication: how a provider's login is described, and the browser that performs it.

pub mod browser;
pub mod consumer;
pub mod flow;
