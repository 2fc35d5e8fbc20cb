//! Starting the Playwright driver and Chromium, restricted to the hosts its logins need, and
//! stopping them again.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use playwright_rs::{Browser, LaunchOptions, Playwright};
use tokio::sync::watch;
use tokio::time::timeout;

use super::config::{CHROMIUM_FLAGS, LoginDriverConfig};
use super::context::{CLOSE_TIMEOUT, duration_ms};
use super::error::{LoginError, LoginErrorKind};
use crate::reauth::flow::OAuthProvider;

/// Environment variable that marks the Chromium processes of one [`LoginDriver`](super::LoginDriver).
pub const INSTANCE_ENV: &str = "WARDEN_BROWSER_INSTANCE";

/// Environment variables Chromium keeps; the rest of warden's environment (token keys,
/// channel passwords referenced by `env:`) is not handed to the process that runs web pages.
const BROWSER_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "FONTCONFIG_PATH",
    "FONTCONFIG_FILE",
    "XDG_CONFIG_HOME",
    "XDG_CACHE_HOME",
    "XDG_DATA_HOME",
    "XDG_RUNTIME_DIR",
];

/// The running Playwright driver and browser; replaced as a whole when either dies.
pub(super) struct Running {
    playwright: Playwright,
    pub(super) browser: Browser,
    /// Set when a login saw the driver misbehave (a close that hung); the next login
    /// relaunches instead of reusing it.
    pub(super) poisoned: Arc<AtomicBool>,
    /// Turns true when Playwright reports the browser disconnected.
    gone: watch::Receiver<bool>,
    /// The hosts its `--host-resolver-rules` let it resolve.
    pub(super) hosts: BTreeSet<String>,
}

/// What a login needs of the running browser.
pub(super) struct Handles {
    pub(super) browser: Browser,
    pub(super) poisoned: Arc<AtomicBool>,
    pub(super) gone: watch::Receiver<bool>,
}

impl Running {
    /// Wraps a freshly launched browser, watching for it to disconnect.
    pub(super) async fn watch(
        playwright: Playwright,
        browser: Browser,
        hosts: BTreeSet<String>,
    ) -> Self {
        let (gone_tx, gone) = watch::channel(false);
        let gone_tx = Arc::new(gone_tx);
        let _ = browser
            .on_disconnected(move || {
                let gone_tx = Arc::clone(&gone_tx);
                async move {
                    gone_tx.send_replace(true);
                    Ok(())
                }
            })
            .await;
        Self {
            playwright,
            browser,
            poisoned: Arc::new(AtomicBool::new(false)),
            gone,
            hosts,
        }
    }

    pub(super) fn handles(&self) -> Handles {
        Handles {
            browser: self.browser.clone(),
            poisoned: Arc::clone(&self.poisoned),
            gone: self.gone.clone(),
        }
    }
}

/// Starts the Playwright driver and a Chromium that resolves only `hosts`, marked with
/// `instance` in its environment, each within `config.launch_timeout`.
pub(super) async fn start(
    config: &LoginDriverConfig,
    instance: &str,
    hosts: &BTreeSet<String>,
) -> Result<(Playwright, Browser), LoginError> {
    let limit = config.launch_timeout;
    let launch_error = |what: &str, e: &dyn std::fmt::Display| {
        LoginError::new(LoginErrorKind::Other, format!("cannot start {what}: {e}"))
    };
    let playwright = match timeout(limit, Playwright::launch()).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err(launch_error("the Playwright driver", &e)),
        Err(_) => return Err(launch_error("the Playwright driver", &"timed out")),
    };
    let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
    args.push(format!("--host-resolver-rules={}", resolver_rules(hosts)));
    args.extend(config.extra_args.iter().cloned());
    let mut env: HashMap<String, String> = std::env::vars()
        .filter(|(k, _)| BROWSER_ENV.contains(&k.as_str()) || k.starts_with("LC_"))
        .collect();
    env.insert(INSTANCE_ENV.to_owned(), instance.to_owned());
    let options = LaunchOptions::new()
        .executable_path(config.chromium_path.display().to_string())
        .headless(true)
        .chromium_sandbox(false)
        .args(args)
        .env(env)
        .timeout(duration_ms(limit));
    match timeout(limit, playwright.chromium().launch_with_options(options)).await {
        Ok(Ok(browser)) => Ok((playwright, browser)),
        failed => {
            let _ = timeout(CLOSE_TIMEOUT * 2, playwright.shutdown()).await;
            Err(match failed {
                Ok(Err(e)) => launch_error(
                    &format!("Chromium ({})", config.chromium_path.display()),
                    &e,
                ),
                _ => launch_error("Chromium", &"timed out"),
            })
        }
    }
}

/// The host part of an `allowed_hosts` entry (`host`, `host:port`, `*.domain`, `[v6]:port`),
/// lower-cased, as Chromium's resolver rules name hosts.
pub(super) fn resolver_host(entry: &str) -> Option<String> {
    let entry = entry.trim().to_ascii_lowercase();
    let host = if let Some(rest) = entry.strip_prefix('[') {
        format!("[{}]", rest.split(']').next()?)
    } else {
        match entry.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_owned(),
            _ => entry,
        }
    };
    // Commas and spaces separate rules: such an entry names no host anyway.
    (!host.is_empty() && !host.contains([',', ' '])).then_some(host)
}

/// The hosts a login with `provider` needs resolved: its allowlist, and the redirect URI's
/// host (the code is read off that hop, so it must at least be attempted).
pub(super) fn resolvable_hosts(provider: &OAuthProvider) -> BTreeSet<String> {
    provider
        .allowed_hosts
        .iter()
        .filter_map(|h| resolver_host(h))
        .chain(provider.redirect_uri.host_str().and_then(resolver_host))
        .collect()
}

/// `--host-resolver-rules`: nothing resolves except `hosts`.
fn resolver_rules(hosts: &BTreeSet<String>) -> String {
    std::iter::once("MAP * ~NOTFOUND".to_owned())
        .chain(hosts.iter().map(|h| format!("EXCLUDE {h}")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Closes the browser and stops the driver, each bounded.
pub(super) async fn teardown(running: Running) {
    let _ = timeout(CLOSE_TIMEOUT, running.browser.close()).await;
    // shutdown() closes the driver's stdin, which makes it close its browsers and exit; it
    // waits 5 s and then kills the driver.
    let _ = timeout(CLOSE_TIMEOUT * 2, running.playwright.shutdown()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chromium_resolves_only_the_allowed_hosts() {
        let hosts: BTreeSet<String> = [
            "id.example.com:443",
            "*.cdn.example.com",
            "[::1]:8080",
            "127.0.0.1",
        ]
        .iter()
        .filter_map(|h| resolver_host(h))
        .collect();
        assert_eq!(
            resolver_rules(&hosts),
            "MAP * ~NOTFOUND, EXCLUDE *.cdn.example.com, EXCLUDE 127.0.0.1, EXCLUDE [::1], EXCLUDE id.example.com"
        );
        assert_eq!(resolver_host("a, MAP * 1.2.3.4"), None);
    }
}
