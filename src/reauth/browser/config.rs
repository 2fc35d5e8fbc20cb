//! What the login driver is configured with: `[reauth.browser]` and the Chromium flags.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Chromium flags: headless, no sandbox (containers rarely allow one), and none of the
/// background traffic (updates, sync, QUIC probes) that would leave the allowlist.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Configuration of the login driver (`[reauth.browser]` in warden's TOML).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoginDriverConfig {
    /// The Chromium binary. Debian's by default; Playwright's own browser downloads are not
    /// used.
    pub chromium_path: PathBuf,
    /// Flags added after [`CHROMIUM_FLAGS`].
    pub extra_args: Vec<String>,
    /// Where a failed login leaves a screenshot and the page HTML, in a directory only the
    /// owner can read. `None` switches artifacts off.
    pub artifacts_dir: Option<PathBuf>,
    /// Bound on starting the driver and the browser.
    #[serde(with = "humantime_serde")]
    pub launch_timeout: Duration,
    /// Logins running at once; further ones wait (within their own timeout).
    pub max_concurrent_logins: usize,
    /// Hosts Chromium resolves (`allowed_hosts` entries, ports ignored): those of every
    /// configured provider, so one browser serves them all. A login whose provider names
    /// another host relaunches the browser with that host added. Chromium resolves nothing
    /// else, so a redirect hop off the allowlist fails before a request leaves.
    pub resolvable_hosts: Vec<String>,
}

impl Default for LoginDriverConfig {
    fn default() -> Self {
        Self {
            chromium_path: PathBuf::from("/usr/bin/chromium"),
            extra_args: Vec::new(),
            artifacts_dir: None,
            launch_timeout: Duration::from_secs(30),
            max_concurrent_logins: 2,
            resolvable_hosts: Vec::new(),
        }
    }
}
