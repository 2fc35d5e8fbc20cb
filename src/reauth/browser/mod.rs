//! The login driver: one Playwright driver and one Chromium per process, a fresh browser
//! context per login, and the authorization code read off the redirect.
//!
//! Environment (see `scripts/setup-playwright.sh`, which prints both):
//! - `PLAYWRIGHT_DRIVER_PATH`: a directory holding `node` and `package/` (playwright-core
//!   1.64.0). playwright-rs reads it from the environment only, and starts the driver with
//!   warden's whole environment (it offers no way to set it), so the script's `node` is a
//!   shim that runs Node with an allowlisted environment instead.
//! - `PLAYWRIGHT_NO_SIGNAL_HANDLER=1`: otherwise playwright-rs installs a SIGINT handler that
//!   exits with 130, skipping warden's graceful shutdown.
//!
//! Why it is built the way it is:
//! - Every Playwright call is bounded by a tokio timeout. When the node driver dies, the
//!   crate's pending calls never resolve, so the driver's own timeouts are not enough.
//! - The authorization code is read from `context.on_request`, which sees every redirect hop,
//!   rather than from `route()`, which does not see the 302 that carries the code.
//! - Navigation is restricted three times: `route("**/*")` aborts requests to hosts outside
//!   the allowlist, `on_request` fails the login if a redirect hop (invisible to `route`)
//!   heads elsewhere, and Chromium's own resolver resolves no host outside the allowlists
//!   (`--host-resolver-rules`), so a redirect hop fails before a byte leaves. WebSockets,
//!   which `route` does not see either, go through `route_web_socket` and the same check.
//! - Chromium is launched with a marker in its environment, so the driver can find its own
//!   processes (and only those) to report them or to kill stragglers after a teardown.
//!
//! One file per role: the configuration, the errors, launching Chromium (launch), the driver
//! that serves logins and watches for crashes (driver), a login's browser context (context),
//! one login (session) and its network watchers (network), the failure artifacts, and the
//! process table (processes).

mod artifacts;
mod config;
mod context;
mod driver;
mod error;
mod launch;
mod network;
mod processes;
mod session;

pub use config::{CHROMIUM_FLAGS, LoginDriverConfig};
pub use driver::LoginDriver;
pub use error::{LoginError, LoginErrorKind};
pub use launch::INSTANCE_ENV;
