//! `warden reauth`: heals revoked channel tokens, once per revoked version,
//! across any number of replicas.
//!
//! It consumes `{prefix}.reauth` with manual acks. For each request:
//! 1. ack it without a login (a warning and a metric) unless the channel is
//!    `reauth_pending` at exactly the request's version: a healed or failed
//!    channel, a stale or forged request, or a channel configured elsewhere;
//! 2. take the channel's lease in the token store (single-flight across
//!    processes *and* across the requests one process handles at once) and
//!    check the version again under it; a request that finds the lease held
//!    waits for it, so a holder that dies mid-login delays the heal by at most
//!    the lease TTL instead of losing it;
//! 3. try the refresh-token grant, and only if the provider refuses it a
//!    browser login (fresh context per login). A failure is typed
//!    ([`HealError`]): only a credential failure the provider states fails
//!    the channel; an unavailable provider, token store or browser is tried
//!    again with backoff and jitter until `max_park`, the tasks still parked;
//! 4. store the new token (version + 1, `active`), tell every worker on
//!    `{prefix}.tokens`, publish `reauth.succeeded`, and move the parked tasks
//!    back to `{prefix}.tasks`; or, on a credential failure, mark the channel
//!    `reauth_failed`, tell the workers, publish `reauth.failed`, dead-letter
//!    the request, and move the parked tasks back so workers dead-letter them
//!    too;
//! 5. ack.
//!
//! It runs in its own process (its own Deployment), so a browser that crashes
//! or hangs can never touch a worker.
//!
//! One file per role: [`run`] and the broker session (run, session), one
//! request from delivery to ack (request), the decision and its retries (heal,
//! lease, retry), one try (attempt: stored tokens, the refresh grant, or a
//! browser login, which login runs and judges), what is published (notify,
//! parked), and the outcome and error types.

mod attempt;
mod context;
mod error;
mod heal;
mod lease;
mod login;
mod notify;
mod outcome;
mod parked;
mod request;
mod retry;
mod run;
mod session;

pub use error::HealError;
pub use notify::{FAILED, STARTED, SUCCEEDED, announce};
pub use outcome::Handled;
pub use run::run;
