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

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use playwright_rs::protocol::AcceptDownloads;
use playwright_rs::{
    Browser, BrowserContext, BrowserContextOptions, GotoOptions, LaunchOptions, Page, Playwright,
    ScreenshotOptions, WaitForOptions, WaitForState, WaitUntil,
};
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;
use tokio::sync::{Semaphore, watch};
use tokio::time::{timeout, timeout_at};
use url::Url;

use super::flow::{
    AuthorizationCode, ChannelCredentials, FillValue, OAuthProvider, Pkce, Step, TOTP_SECRET,
};

/// Environment variable that marks the Chromium processes of one [`LoginDriver`].
pub const INSTANCE_ENV: &str = "WARDEN_BROWSER_INSTANCE";

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

/// Bound on closing a context or a browser. A close that takes longer means the driver is
/// wedged, and the browser is relaunched for the next login.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on closing a context after the browser crashed.
const CRASHED_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Bound on taking the failure screenshot and HTML.
const ARTIFACT_TIMEOUT: Duration = Duration::from_secs(5);
/// Login artifacts kept at most: the newest this many directories...
const MAX_ARTIFACT_DIRS: usize = 50;
/// ...and none older than this. Screenshots of login pages are sensitive; they are for
/// looking into a recent failure, not an archive.
const ARTIFACT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Runs in the page before the screenshot: every form field that holds text shows a mask
/// instead, so no typed value (password, TOTP code) is ever drawn into the image.
const MASK_FIELDS: &str = "document.querySelectorAll('input, textarea').forEach(e => { \
     if (e.type !== 'hidden' && e.type !== 'submit' && e.type !== 'button' && e.value) \
     { e.value = '********'; } })";
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

/// What went wrong with a login, as the re-auth consumer needs to decide on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginErrorKind {
    /// The provider showed its error element: wrong password, username or TOTP seed.
    /// Retrying with the same credentials will not help.
    BadCredentials,
    /// The login did not finish within its timeout.
    Timeout,
    /// The flow tried to load something from a host outside `allowed_hosts`.
    BlockedNavigation,
    /// Chromium or the Playwright driver died; the next login relaunches them.
    BrowserCrashed,
    /// Anything else: a missing selector, a missing credential, a provider error redirect.
    Other,
}

impl std::fmt::Display for LoginErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::BadCredentials => "bad credentials",
            Self::Timeout => "timeout",
            Self::BlockedNavigation => "blocked navigation",
            Self::BrowserCrashed => "browser crashed",
            Self::Other => "login failed",
        })
    }
}

/// A failed login. The message never contains a secret: text from Playwright passes through
/// the channel's redactor first.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct LoginError {
    kind: LoginErrorKind,
    detail: String,
    artifacts: Option<PathBuf>,
}

impl LoginError {
    fn new(kind: LoginErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            artifacts: None,
        }
    }

    /// The kind of failure.
    pub fn kind(&self) -> LoginErrorKind {
        self.kind
    }

    /// What happened, in words.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The directory holding `page.png`, `page.html` and `error.txt`, when saved.
    pub fn artifacts(&self) -> Option<&Path> {
        self.artifacts.as_deref()
    }

    /// The provider rejected the credentials.
    pub fn is_bad_credentials(&self) -> bool {
        self.kind == LoginErrorKind::BadCredentials
    }

    /// The login ran out of time.
    pub fn is_timeout(&self) -> bool {
        self.kind == LoginErrorKind::Timeout
    }

    /// The flow left the allowlist.
    pub fn is_blocked_navigation(&self) -> bool {
        self.kind == LoginErrorKind::BlockedNavigation
    }

    /// The browser or driver died during the login.
    pub fn is_browser_crashed(&self) -> bool {
        self.kind == LoginErrorKind::BrowserCrashed
    }

    /// Whether trying again unchanged may succeed. Bad credentials and a flow that leaves
    /// the allowlist fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self.kind,
            LoginErrorKind::BadCredentials | LoginErrorKind::BlockedNavigation
        )
    }
}

/// The running Playwright driver and browser; replaced as a whole when either dies.
struct Running {
    playwright: Playwright,
    browser: Browser,
    /// Set when a login saw the driver misbehave (a close that hung); the next login
    /// relaunches instead of reusing it.
    poisoned: Arc<AtomicBool>,
    /// Turns true when Playwright reports the browser disconnected.
    gone: watch::Receiver<bool>,
    /// The hosts its `--host-resolver-rules` let it resolve.
    hosts: BTreeSet<String>,
}

/// What a login needs of the running browser.
struct Handles {
    browser: Browser,
    poisoned: Arc<AtomicBool>,
    gone: watch::Receiver<bool>,
}

impl Running {
    fn handles(&self) -> Handles {
        Handles {
            browser: self.browser.clone(),
            poisoned: Arc::clone(&self.poisoned),
            gone: self.gone.clone(),
        }
    }
}

/// Logs channels in with one Chromium driven by Playwright.
///
/// Cheap to share behind an `Arc`; logins may run concurrently up to
/// [`LoginDriverConfig::max_concurrent_logins`]. Call [`LoginDriver::shutdown`] before
/// dropping it, so the browser and driver exit without blocking a runtime thread.
pub struct LoginDriver {
    config: LoginDriverConfig,
    instance: String,
    running: tokio::sync::Mutex<Option<Running>>,
    permits: Semaphore,
    closed: AtomicBool,
    launches: AtomicU64,
    open_contexts: Arc<AtomicUsize>,
    /// Profile directories of the browsers launched so far, to recognise their processes.
    profiles: Mutex<Vec<String>>,
}

impl std::fmt::Debug for LoginDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginDriver")
            .field("instance", &self.instance)
            .field("launches", &self.launches())
            .field("open_contexts", &self.open_contexts())
            .finish_non_exhaustive()
    }
}

impl LoginDriver {
    /// A driver that launches the browser lazily, on the first login or [`warm_up`].
    ///
    /// [`warm_up`]: LoginDriver::warm_up
    pub fn new(config: LoginDriverConfig) -> Self {
        let permits = Semaphore::new(config.max_concurrent_logins.max(1));
        Self {
            config,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            running: tokio::sync::Mutex::new(None),
            permits,
            closed: AtomicBool::new(false),
            launches: AtomicU64::new(0),
            open_contexts: Arc::new(AtomicUsize::new(0)),
            profiles: Mutex::new(Vec::new()),
        }
    }

    /// The value of [`INSTANCE_ENV`] in this driver's Chromium processes.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// How many times the browser has been launched (1 after the first login; more after
    /// relaunches).
    pub fn launches(&self) -> u64 {
        self.launches.load(Ordering::SeqCst)
    }

    /// Browser contexts currently open; 0 whenever no login is running.
    pub fn open_contexts(&self) -> usize {
        self.open_contexts.load(Ordering::SeqCst)
    }

    /// Pids of this driver's Chromium processes (browser, crash handlers, zygotes, renderers),
    /// found by the instance marker in their environment or their browser's profile directory
    /// in their command line. Linux only; empty elsewhere.
    pub fn browser_pids(&self) -> Vec<u32> {
        self.scan().into_iter().map(|p| p.pid).collect()
    }

    fn scan(&self) -> Vec<BrowserProcess> {
        let mut profiles = self
            .profiles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        find_browser_processes(&format!("{INSTANCE_ENV}={}", self.instance), &mut profiles)
    }

    /// Starts the driver and the browser now, so the first login does not pay for it.
    ///
    /// # Errors
    /// Returns [`LoginErrorKind::Other`] when the driver or browser cannot start.
    pub async fn warm_up(&self) -> Result<(), LoginError> {
        self.handles(&BTreeSet::new()).await.map(|_| ())
    }

    /// Pid of this driver's main Chromium process (the one Playwright launched), if running.
    /// Linux only.
    pub fn browser_main_pid(&self) -> Option<u32> {
        self.scan().into_iter().find(|p| p.main).map(|p| p.pid)
    }

    /// Closes the browser and the driver, and kills any of this driver's Chromium processes
    /// still alive. Later logins fail.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::SeqCst);
        // Logins waiting for a permit fail now instead of after their timeout.
        self.permits.close();
        let running = self.running.lock().await.take();
        if let Some(running) = running {
            teardown(running).await;
        }
        self.kill_stragglers();
    }

    /// Logs the channel in and returns the authorization code from the redirect.
    ///
    /// The browser context is fresh and is closed on every path: success, error, timeout,
    /// and cancellation (dropping the future closes it in the background).
    ///
    /// # Errors
    /// See [`LoginErrorKind`]. On failure, artifacts are saved when configured.
    pub async fn login(
        &self,
        provider: &OAuthProvider,
        credentials: &ChannelCredentials,
        timeout: Duration,
    ) -> Result<AuthorizationCode, LoginError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || {
            LoginError::new(
                LoginErrorKind::Timeout,
                format!("no authorization code within {timeout:?}"),
            )
        };
        let _permit = timeout_at(deadline, self.permits.acquire())
            .await
            .map_err(|_| timed_out())?
            .map_err(|_| LoginError::new(LoginErrorKind::Other, "login driver is shut down"))?;

        // A dead browser is only discovered when a context cannot be opened; then relaunch
        // once, so one crash costs one login, not two.
        let mut attempt = 0;
        let (context, handles) = loop {
            attempt += 1;
            let handles = timeout_at(deadline, self.handles(&resolvable_hosts(provider)))
                .await
                .map_err(|_| timed_out())??;
            let opened = timeout_at(
                deadline,
                handles.browser.new_context_with_options(context_options()),
            )
            .await;
            match opened {
                Ok(Ok(context)) => break (context, handles),
                Ok(Err(e)) if attempt == 1 => {
                    tracing::warn!(error = %e, "cannot open a browser context; relaunching");
                    handles.poisoned.store(true, Ordering::SeqCst);
                }
                Ok(Err(e)) => {
                    handles.poisoned.store(true, Ordering::SeqCst);
                    return Err(LoginError::new(
                        LoginErrorKind::BrowserCrashed,
                        format!("cannot open a browser context: {e}"),
                    ));
                }
                Err(_) => {
                    handles.poisoned.store(true, Ordering::SeqCst);
                    return Err(timed_out());
                }
            }
        };
        let poisoned = Arc::clone(&handles.poisoned);
        let guard = ContextGuard::new(context.clone(), Arc::clone(&self.open_contexts));
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis(),
            "login context opened"
        );

        let mut session = Session::new(provider, credentials);
        let outcome = tokio::select! {
            biased;
            finished = timeout_at(deadline, session.run(&context, deadline)) => match finished {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::Timeout),
            },
            // Playwright does not always fail the calls in flight when Chromium dies, so the
            // crash is watched for on its own.
            () = self.crashed(handles.gone.clone()) => Err(Failure::Crashed(
                "the browser process exited during the login".to_owned(),
            )),
        };

        let result = match outcome {
            Ok(code) => Ok(code),
            Err(failure) => {
                // A dead driver reports nothing (its pending calls just never answer), so a
                // timeout with no browser process left is a crash too.
                let crashed = failure.is_crash()
                    || context.browser().is_some_and(|b| !b.is_connected())
                    || (matches!(failure, Failure::Timeout) && !self.browser_alive());
                let mut error = failure.into_error(credentials, timeout, crashed);
                if error.kind == LoginErrorKind::BrowserCrashed {
                    poisoned.store(true, Ordering::SeqCst);
                } else if let Some(page) = &session.page {
                    error.artifacts = self.save_artifacts(page, credentials, &error).await;
                }
                Err(error)
            }
        };
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis(),
            "login flow finished"
        );
        // After a crash the browser is gone and a dead driver would never answer, so do not
        // wait long for the close.
        let crashed = matches!(&result, Err(e) if e.is_browser_crashed());
        let limit = if crashed {
            CRASHED_CLOSE_TIMEOUT
        } else {
            CLOSE_TIMEOUT
        };
        if !guard.close(limit).await {
            // A context that cannot be closed in time means the driver is wedged.
            poisoned.store(true, Ordering::SeqCst);
        }
        match &result {
            Ok(_) => tracing::info!(
                channel = credentials.channel(),
                elapsed_ms = started.elapsed().as_millis(),
                "browser login captured an authorization code"
            ),
            Err(e) => tracing::warn!(
                channel = credentials.channel(),
                kind = %e.kind,
                elapsed_ms = started.elapsed().as_millis(),
                error = %e,
                "browser login failed"
            ),
        }
        result
    }

    /// The running browser, (re)launching it when there is none, it disconnected, a login
    /// poisoned it, or it cannot resolve one of `hosts`.
    async fn handles(&self, hosts: &BTreeSet<String>) -> Result<Handles, LoginError> {
        let mut running = self.running.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(LoginError::new(
                LoginErrorKind::Other,
                "login driver is shut down",
            ));
        }
        if let Some(r) = running.as_ref()
            && r.browser.is_connected()
            && !r.poisoned.load(Ordering::SeqCst)
            && hosts.is_subset(&r.hosts)
        {
            return Ok(r.handles());
        }
        let mut wanted: BTreeSet<String> = self
            .config
            .resolvable_hosts
            .iter()
            .filter_map(|h| resolver_host(h))
            .collect();
        wanted.extend(hosts.iter().cloned());
        if let Some(old) = running.take() {
            if hosts.is_subset(&old.hosts) {
                tracing::warn!("browser or driver died; relaunching");
            } else {
                tracing::info!("a provider names hosts the browser cannot resolve; relaunching");
            }
            wanted.extend(old.hosts.iter().cloned());
            teardown(old).await;
            self.kill_stragglers();
        }
        let fresh = self.launch(wanted).await?;
        let handles = fresh.handles();
        *running = Some(fresh);
        Ok(handles)
    }

    async fn launch(&self, hosts: BTreeSet<String>) -> Result<Running, LoginError> {
        let started = Instant::now();
        let limit = self.config.launch_timeout;
        let launch_error = |what: &str, e: &dyn std::fmt::Display| {
            LoginError::new(LoginErrorKind::Other, format!("cannot start {what}: {e}"))
        };
        let playwright = match timeout(limit, Playwright::launch()).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(launch_error("the Playwright driver", &e)),
            Err(_) => return Err(launch_error("the Playwright driver", &"timed out")),
        };
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--host-resolver-rules={}", resolver_rules(&hosts)));
        args.extend(self.config.extra_args.iter().cloned());
        let mut env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| BROWSER_ENV.contains(&k.as_str()) || k.starts_with("LC_"))
            .collect();
        env.insert(INSTANCE_ENV.to_owned(), self.instance.clone());
        let options = LaunchOptions::new()
            .executable_path(self.config.chromium_path.display().to_string())
            .headless(true)
            .chromium_sandbox(false)
            .args(args)
            .env(env)
            .timeout(duration_ms(limit));
        let browser = match timeout(limit, playwright.chromium().launch_with_options(options)).await
        {
            Ok(Ok(b)) => b,
            failed => {
                let _ = timeout(CLOSE_TIMEOUT * 2, playwright.shutdown()).await;
                return Err(match failed {
                    Ok(Err(e)) => launch_error(
                        &format!("Chromium ({})", self.config.chromium_path.display()),
                        &e,
                    ),
                    _ => launch_error("Chromium", &"timed out"),
                });
            }
        };
        let launches = self.launches.fetch_add(1, Ordering::SeqCst) + 1;
        // Learn the new browser's profile directory while its process is surely alive.
        let processes = self.browser_pids().len();
        tracing::info!(
            launches,
            processes,
            version = browser.version(),
            elapsed_ms = started.elapsed().as_millis(),
            "browser launched"
        );
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
        Ok(Running {
            playwright,
            browser,
            poisoned: Arc::new(AtomicBool::new(false)),
            gone,
            hosts,
        })
    }

    /// Whether this driver's main Chromium process is running. `true` where processes cannot
    /// be inspected, so nothing is misreported as a crash there.
    fn browser_alive(&self) -> bool {
        !cfg!(target_os = "linux") || self.browser_main_pid().is_some()
    }

    /// Resolves when the browser is gone during a login: Playwright reports it disconnected
    /// (Chromium crashed or was killed), or, since a dead driver reports nothing at all, the
    /// browser process has disappeared.
    async fn crashed(&self, mut gone: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut events = true;
        loop {
            tokio::select! {
                changed = gone.wait_for(|g| *g), if events => match changed {
                    Ok(_) => return,
                    // The sender went away with the Browser; rely on the process check.
                    Err(_) => events = false,
                },
                _ = tick.tick() => {
                    if !self.browser_alive() {
                        return;
                    }
                }
            }
        }
    }

    /// Kills this driver's Chromium processes that outlived a teardown (e.g. renderers
    /// orphaned when the browser process was killed).
    fn kill_stragglers(&self) {
        for pid in self.browser_pids() {
            kill_process(pid);
        }
    }

    async fn save_artifacts(
        &self,
        page: &Page,
        credentials: &ChannelCredentials,
        error: &LoginError,
    ) -> Option<PathBuf> {
        let root = self.config.artifacts_dir.as_ref()?;
        let dir = match artifact_dir(root, credentials.channel(), error.kind) {
            Ok(dir) => dir,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create the login artifacts directory");
                return None;
            }
        };
        // Masked first: without it, a field typed into shows its value (or a password's
        // length) in the image. If masking fails, no screenshot is taken.
        let masked = matches!(
            timeout(ARTIFACT_TIMEOUT, page.evaluate_expression(MASK_FIELDS)).await,
            Ok(Ok(()))
        );
        let screenshot = if masked {
            Some(
                timeout(
                    ARTIFACT_TIMEOUT,
                    page.screenshot(
                        ScreenshotOptions::builder()
                            .full_page(true)
                            .timeout(duration_ms(ARTIFACT_TIMEOUT))
                            .build(),
                    ),
                )
                .await,
            )
        } else {
            None
        };
        if let Some(Ok(Ok(png))) = screenshot {
            write_private(&dir.join("page.png"), &png);
        }
        if let Ok(Ok(html)) = timeout(ARTIFACT_TIMEOUT, page.content()).await
            && let Some(html) = redact_html(&html, credentials)
        {
            write_private(&dir.join("page.html"), html.as_bytes());
        }
        let summary = format!(
            "channel: {}\nkind: {}\nurl: {}\nerror: {}\n",
            credentials.channel(),
            error.kind,
            credentials.redact(&page.url()),
            error.detail
        );
        write_private(&dir.join("error.txt"), summary.as_bytes());
        tracing::info!(dir = %dir.display(), "saved login failure artifacts");
        prune_artifacts(root, MAX_ARTIFACT_DIRS, ARTIFACT_MAX_AGE);
        Some(dir)
    }
}

/// The host part of an `allowed_hosts` entry (`host`, `host:port`, `*.domain`, `[v6]:port`),
/// lower-cased, as Chromium's resolver rules name hosts.
fn resolver_host(entry: &str) -> Option<String> {
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
fn resolvable_hosts(provider: &OAuthProvider) -> BTreeSet<String> {
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

async fn teardown(running: Running) {
    let _ = timeout(CLOSE_TIMEOUT, running.browser.close()).await;
    // shutdown() closes the driver's stdin, which makes it close its browsers and exit; it
    // waits 5 s and then kills the driver.
    let _ = timeout(CLOSE_TIMEOUT * 2, running.playwright.shutdown()).await;
}

fn context_options() -> BrowserContextOptions {
    BrowserContextOptions::builder()
        .accept_downloads(AcceptDownloads::Deny)
        // A service worker could fetch outside the context's route handler.
        .service_workers("block".to_owned())
        .locale("en-US".to_owned())
        .build()
}

fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Closes its context exactly once: explicitly through [`ContextGuard::close`], or in the
/// background when dropped (the login future was cancelled).
struct ContextGuard {
    context: Option<BrowserContext>,
    open: Arc<AtomicUsize>,
}

impl ContextGuard {
    fn new(context: BrowserContext, open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        Self {
            context: Some(context),
            open,
        }
    }

    /// Closes the context; false when closing hung.
    async fn close(mut self, limit: Duration) -> bool {
        match self.context.take() {
            Some(context) => close_context(context, Arc::clone(&self.open), limit).await,
            None => true,
        }
    }
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        if let Some(context) = self.context.take() {
            let open = Arc::clone(&self.open);
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(close_context(context, open, CLOSE_TIMEOUT));
                }
                Err(_) => {
                    // No runtime left: the driver's teardown closes the browser with it.
                    open.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }
}

async fn close_context(context: BrowserContext, open: Arc<AtomicUsize>, limit: Duration) -> bool {
    let result = timeout(limit, context.close()).await;
    open.fetch_sub(1, Ordering::SeqCst);
    // An error means the context or browser is already gone, which is closed enough.
    result.is_ok()
}

// ----- one login -------------------------------------------------------------------------------

/// What the network watchers saw.
#[derive(Clone, Debug)]
enum Signal {
    Code { code: String, state: Option<String> },
    ProviderError(String),
    Blocked(String),
}

/// Why a login failed, before it becomes a [`LoginError`].
enum Failure {
    BadCredentials,
    Timeout,
    Blocked(String),
    Crashed(String),
    Other(String),
}

impl Failure {
    fn from_playwright(step: &str, e: &playwright_rs::Error) -> Self {
        let text = e.to_string();
        let closed = matches!(
            e,
            playwright_rs::Error::TargetClosed { .. }
                | playwright_rs::Error::ChannelClosed
                | playwright_rs::Error::TransportError(_)
        ) || text.contains("has been closed")
            || text.contains("Target closed")
            || text.contains("Browser closed");
        if closed {
            Self::Crashed(format!("{step}: {text}"))
        } else {
            Self::Other(format!("{step}: {text}"))
        }
    }

    fn is_crash(&self) -> bool {
        matches!(self, Self::Crashed(_))
    }

    fn into_error(
        self,
        credentials: &ChannelCredentials,
        timeout: Duration,
        browser_gone: bool,
    ) -> LoginError {
        let (kind, detail) = match self {
            _ if browser_gone => (
                LoginErrorKind::BrowserCrashed,
                "the browser disconnected during the login".to_owned(),
            ),
            Self::BadCredentials => (
                LoginErrorKind::BadCredentials,
                "the provider showed its error element after the credentials were submitted"
                    .to_owned(),
            ),
            Self::Timeout => (
                LoginErrorKind::Timeout,
                format!("no authorization code within {timeout:?}"),
            ),
            Self::Blocked(host) => (
                LoginErrorKind::BlockedNavigation,
                format!("the flow tried to load {host}, which is not in allowed_hosts"),
            ),
            Self::Crashed(detail) => (LoginErrorKind::BrowserCrashed, detail),
            Self::Other(detail) => (LoginErrorKind::Other, detail),
        };
        LoginError::new(kind, credentials.redact(&detail))
    }
}

struct Session<'a> {
    provider: &'a OAuthProvider,
    credentials: &'a ChannelCredentials,
    state: String,
    pkce: Option<Pkce>,
    page: Option<Page>,
}

impl<'a> Session<'a> {
    fn new(provider: &'a OAuthProvider, credentials: &'a ChannelCredentials) -> Self {
        Self {
            provider,
            credentials,
            state: uuid::Uuid::new_v4().simple().to_string(),
            pkce: provider.pkce.then(Pkce::generate),
            page: None,
        }
    }

    async fn run(
        &mut self,
        context: &BrowserContext,
        deadline: tokio::time::Instant,
    ) -> Result<AuthorizationCode, Failure> {
        let remaining = || deadline.saturating_duration_since(tokio::time::Instant::now());
        context.set_default_timeout(duration_ms(remaining())).await;
        context
            .set_default_navigation_timeout(duration_ms(remaining()))
            .await;
        let (signal_tx, mut signal_rx) = watch::channel(None::<Signal>);
        let signal_tx = Arc::new(signal_tx);
        // Independent round trips to the driver; the page navigates only after both.
        let (watching, page) =
            tokio::join!(self.watch_network(context, &signal_tx), context.new_page());
        watching?;
        let page = page.map_err(|e| Failure::from_playwright("open page", &e))?;
        self.page = Some(page.clone());
        tracing::debug!("login page opened");

        let steps = self.run_steps(&page, remaining);
        let bad_credentials = watch_error_element(&page, self.provider.error_selector.as_deref());
        let signalled = async {
            loop {
                if let Some(signal) = signal_rx.borrow_and_update().clone() {
                    return signal;
                }
                if signal_rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::pin!(steps, bad_credentials, signalled);
        let mut steps_done = false;
        loop {
            tokio::select! {
                biased;
                signal = &mut signalled => return self.conclude(signal),
                () = &mut bad_credentials => return Err(Failure::BadCredentials),
                result = &mut steps, if !steps_done => {
                    steps_done = true;
                    if let Err(failure) = result {
                        // A step failing is often the *effect* of something the watchers
                        // saw (an aborted navigation, a redirect that took the page away):
                        // give them a moment to report the cause first.
                        let grace = tokio::time::sleep(Duration::from_millis(300));
                        tokio::select! {
                            biased;
                            signal = &mut signalled => return self.conclude(signal),
                            () = &mut bad_credentials => return Err(Failure::BadCredentials),
                            () = grace => return Err(failure),
                        }
                    }
                    // All steps ran; the code may still be on its way (a slow redirect).
                }
            }
        }
    }

    fn conclude(&self, signal: Signal) -> Result<AuthorizationCode, Failure> {
        match signal {
            Signal::Code { code, state } => {
                if state.as_deref() != Some(self.state.as_str()) {
                    return Err(Failure::Other(
                        "the redirect's state does not match the request (possible CSRF)".into(),
                    ));
                }
                let code = SecretString::from(code);
                Ok(match &self.pkce {
                    Some(pkce) => AuthorizationCode::with_verifier(code, pkce.verifier().clone()),
                    None => AuthorizationCode::new(code),
                })
            }
            Signal::ProviderError(error) => Err(Failure::Other(format!(
                "the provider redirected with error={error}"
            ))),
            Signal::Blocked(host) => Err(Failure::Blocked(host)),
        }
    }

    /// Installs the two network watchers: `on_request` (sees redirect hops: catches the code
    /// and escapes) and `route` (aborts disallowed requests before they leave).
    async fn watch_network(
        &self,
        context: &BrowserContext,
        signal: &Arc<watch::Sender<Option<Signal>>>,
    ) -> Result<(), Failure> {
        let provider = Arc::new(self.provider.clone());
        let send = {
            let signal = Arc::clone(signal);
            move |s: Signal| {
                // First signal wins: a code followed by the aborted callback load must not be
                // overwritten.
                signal.send_if_modified(|current| {
                    if current.is_none() {
                        *current = Some(s);
                        true
                    } else {
                        false
                    }
                });
            }
        };
        let send = Arc::new(send);

        let (p, tx) = (Arc::clone(&provider), Arc::clone(&send));
        context
            .on_request(move |request| {
                let (p, tx) = (Arc::clone(&p), Arc::clone(&tx));
                async move {
                    if let Some(signal) = classify_request(&p, request.url()) {
                        tx(signal);
                    }
                    Ok(())
                }
            })
            .await
            .map_err(|e| Failure::from_playwright("watch requests", &e))?;

        // `route` never sees WebSockets: they get their own handler and the same check.
        let (p, tx) = (Arc::clone(&provider), Arc::clone(&send));
        context
            .route_web_socket("**/*", move |ws| {
                let (p, tx) = (Arc::clone(&p), Arc::clone(&tx));
                async move {
                    let parsed = Url::parse(ws.url()).ok();
                    let allowed = parsed.as_ref().is_some_and(|u| {
                        // The allowlist is written for http(s); ws(s) is the same origin.
                        let mut http = u.clone();
                        let scheme = if u.scheme() == "wss" { "https" } else { "http" };
                        http.set_scheme(scheme).is_ok() && p.url_allowed(&http)
                    });
                    if allowed {
                        return ws.connect_to_server().await;
                    }
                    let host = parsed
                        .and_then(|u| u.host_str().map(str::to_owned))
                        .unwrap_or_else(|| "a non-ws URL".to_owned());
                    tracing::warn!(%host, "blocked a WebSocket outside allowed_hosts");
                    tx(Signal::Blocked(host));
                    ws.close(None).await
                }
            })
            .await
            .map_err(|e| Failure::from_playwright("restrict WebSockets", &e))?;

        let (p, tx) = (provider, send);
        context
            .route("**/*", move |route| {
                let (p, tx) = (Arc::clone(&p), Arc::clone(&tx));
                async move {
                    let url = route.request().url().to_owned();
                    match Url::parse(&url) {
                        // The callback is never loaded: the code is already captured, and
                        // the client's redirect endpoint need not even be running.
                        Ok(u) if p.is_redirect(&u) => route.abort(Some("aborted")).await,
                        Ok(u) if p.url_allowed(&u) => route.continue_(None).await,
                        parsed => {
                            let host = parsed
                                .ok()
                                .and_then(|u| u.host_str().map(str::to_owned))
                                .unwrap_or_else(|| "a non-http URL".to_owned());
                            tracing::warn!(%host, "blocked a request outside allowed_hosts");
                            tx(Signal::Blocked(host));
                            route.abort(Some("blockedbyclient")).await
                        }
                    }
                }
            })
            .await
            .map_err(|e| Failure::from_playwright("restrict navigation", &e))
    }

    async fn run_steps(
        &self,
        page: &Page,
        remaining: impl Fn() -> Duration,
    ) -> Result<(), Failure> {
        let authorize = self
            .provider
            .authorization_url(&self.state, self.pkce.as_ref());
        let starts_with_goto = matches!(self.provider.login_flow.first(), Some(Step::Goto { .. }));
        if !starts_with_goto {
            goto(page, authorize.as_str(), remaining()).await?;
            tracing::debug!("authorization request loaded");
        }
        for (i, step) in self.provider.login_flow.iter().enumerate() {
            let label = format!("step {} ({})", i + 1, step.describe());
            tracing::debug!(channel = self.credentials.channel(), step = %label, "login step");
            let pw = |e: playwright_rs::Error| Failure::from_playwright(&label, &e);
            match step {
                Step::Goto { url } => {
                    let url = url.replace("{authorize_url}", authorize.as_str());
                    goto(page, &url, remaining()).await?;
                }
                Step::Fill { selector, value } => {
                    let text = match value {
                        FillValue::Secret(name) => self
                            .credentials
                            .get(name)
                            .ok_or_else(|| {
                                Failure::Other(format!(
                                    "{label}: channel has no credential named {name}"
                                ))
                            })?
                            .clone(),
                        FillValue::Text(text) => SecretString::from(text.clone()),
                    };
                    page.locator(selector.as_str())
                        .fill(text.expose_secret(), None)
                        .await
                        .map_err(pw)?;
                }
                Step::Click { selector } => {
                    page.locator(selector.as_str())
                        .click(None)
                        .await
                        .map_err(pw)?;
                }
                Step::ClickIfPresent { selector, within } => {
                    let locator = page.locator(selector.as_str());
                    let wait = WaitForOptions::builder()
                        .state(WaitForState::Visible)
                        .timeout(duration_ms((*within).min(remaining())))
                        .build();
                    if locator.wait_for(wait).await.is_ok() {
                        locator.click(None).await.map_err(pw)?;
                    }
                }
                Step::WaitFor { selector } => {
                    page.locator(selector.as_str())
                        .wait_for(None)
                        .await
                        .map_err(pw)?;
                }
                Step::Totp { selector, submit } => {
                    let Some(seed) = self.credentials.get(TOTP_SECRET) else {
                        continue;
                    };
                    let code = self
                        .provider
                        .totp
                        .current_code(seed)
                        .map_err(|e| Failure::Other(format!("{label}: {e}")))?;
                    page.locator(selector.as_str())
                        .fill(code.expose_secret(), None)
                        .await
                        .map_err(pw)?;
                    if let Some(submit) = submit {
                        page.locator(submit.as_str())
                            .click(None)
                            .await
                            .map_err(pw)?;
                    }
                }
            }
        }
        Ok(())
    }
}

async fn goto(page: &Page, url: &str, remaining: Duration) -> Result<(), Failure> {
    // The steps wait for their own elements, so there is no need to wait for `load`.
    let options = GotoOptions::new()
        .timeout(remaining)
        .wait_until(WaitUntil::DomContentLoaded);
    page.goto(url, options)
        .await
        .map(|_| ())
        .map_err(|e| Failure::from_playwright(&format!("goto {}", strip_query(url)), &e))
}

/// A URL without its query, for messages: queries may carry state or codes.
fn strip_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// Resolves when the provider's error element becomes visible; never, without a selector
/// or when waiting fails (the page went away, which the other watchers report).
async fn watch_error_element(page: &Page, selector: Option<&str>) {
    if let Some(selector) = selector
        && page.locator(selector).wait_for(None).await.is_ok()
    {
        return;
    }
    std::future::pending::<()>().await;
}

/// What a request the browser issued means for the login.
fn classify_request(provider: &OAuthProvider, url: &str) -> Option<Signal> {
    let url = Url::parse(url).ok()?;
    if provider.is_redirect(&url) {
        let pairs: HashMap<String, String> = url.query_pairs().into_owned().collect();
        if let Some(code) = pairs.get("code") {
            return Some(Signal::Code {
                code: code.clone(),
                state: pairs.get("state").cloned(),
            });
        }
        if let Some(error) = pairs.get("error") {
            return Some(Signal::ProviderError(error.clone()));
        }
        return None;
    }
    // data:, blob: and about: never reach the network.
    if matches!(url.scheme(), "data" | "blob" | "about") || provider.url_allowed(&url) {
        return None;
    }
    Some(Signal::Blocked(
        url.host_str().unwrap_or("a non-http URL").to_owned(),
    ))
}

// ----- artifacts -------------------------------------------------------------------------------

/// The page's HTML with every form value and script body replaced, found by parsing the
/// HTML (a string search misses a secret that the page escaped or encoded), then with any
/// credential still in the text replaced too. `None` when the page cannot be parsed: then
/// nothing is saved rather than something unredacted.
fn redact_html(html: &str, credentials: &super::flow::ChannelCredentials) -> Option<String> {
    use lol_html::html_content::ContentType;
    use lol_html::{RewriteStrSettings, element, rewrite_str};
    const MASK: &str = "[REDACTED]";
    let settings = RewriteStrSettings::new()
        // What a field holds, typed or put there by the page (CSRF tokens, state).
        .append_element_content_handler(element!("[value]", |el| {
            el.set_attribute("value", MASK)?;
            Ok(())
        }))
        .append_element_content_handler(element!("textarea, script", |el| {
            el.set_inner_content(MASK, ContentType::Text);
            Ok(())
        }));
    let rewritten = rewrite_str(html, settings).ok()?;
    Some(credentials.redact(&rewritten))
}

/// Deletes artifact directories under `root` beyond the newest `keep`, and any older than
/// `max_age`. Names start with a UTC timestamp, so they sort by age.
fn prune_artifacts(root: &Path, keep: usize, max_age: Duration) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut dirs: Vec<(String, PathBuf, Option<std::time::SystemTime>)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path(),
                modified,
            )
        })
        .collect();
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (i, (_, path, modified)) in dirs.iter().enumerate() {
        let too_old = modified
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if (i >= keep || too_old)
            && let Err(e) = std::fs::remove_dir_all(path)
        {
            tracing::warn!(dir = %path.display(), error = %e, "cannot prune a login artifacts directory");
        }
    }
}

fn artifact_dir(root: &Path, channel: &str, kind: LoginErrorKind) -> std::io::Result<PathBuf> {
    create_private_dir(root)?;
    let safe: String = channel
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let kind = kind.to_string().replace(' ', "-");
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let dir = root.join(format!("{stamp}-{safe}-{kind}-{suffix}"));
    create_private_dir(&dir)?;
    Ok(dir)
}

/// Creates `dir` (and parents) readable by the owner only, tightening it if it already
/// existed: screenshots of login pages are sensitive.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options.open(path).and_then(|mut f| f.write_all(bytes));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot write a login artifact");
    }
}

// ----- processes -------------------------------------------------------------------------------

/// This driver's Chromium processes: those whose environment carries `marker` (the browser
/// and its crash handlers) and those whose command line names the profile directory of one of
/// its browsers (zygotes, renderers and utilities, which Chromium starts with a scrubbed
/// environment). Profiles seen are added to `profiles`, so processes orphaned after the
/// browser process died are still recognised.
/// One Chromium process of a driver.
struct BrowserProcess {
    pid: u32,
    /// The browser process itself, not a helper (crash handler, zygote, renderer, utility).
    main: bool,
}

#[cfg(target_os = "linux")]
fn find_browser_processes(marker: &str, profiles: &mut Vec<String>) -> Vec<BrowserProcess> {
    const PROFILE_FLAG: &str = "--user-data-dir=";
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let marker = marker.as_bytes();
    let processes: Vec<(u32, Vec<String>, bool)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let marked = std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker));
            Some((pid, args, marked))
        })
        .collect();
    for (_, args, marked) in &processes {
        if *marked {
            for profile in args.iter().filter_map(|a| a.strip_prefix(PROFILE_FLAG)) {
                if !profiles.iter().any(|p| p == profile) {
                    profiles.push(profile.to_owned());
                }
            }
        }
    }
    let mut found: Vec<BrowserProcess> = processes
        .into_iter()
        .filter_map(|(pid, args, marked)| {
            let profile = args.iter().find_map(|a| a.strip_prefix(PROFILE_FLAG));
            let ours = marked || profile.is_some_and(|dir| profiles.iter().any(|p| p == dir));
            // The crash handler carries the marker too, but no profile; helpers carry a
            // profile and a --type.
            let main =
                marked && profile.is_some() && !args.iter().any(|a| a.starts_with("--type="));
            ours.then_some(BrowserProcess { pid, main })
        })
        .collect();
    found.sort_unstable_by_key(|p| p.pid);
    found
}

#[cfg(not(target_os = "linux"))]
fn find_browser_processes(_marker: &str, _profiles: &mut Vec<String>) -> Vec<BrowserProcess> {
    Vec::new()
}

#[cfg(unix)]
fn kill_process(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(not(unix))]
fn kill_process(_pid: u32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_redacted_by_parsing_not_by_string_search() {
        let credentials = ChannelCredentials::new("acme")
            .with("password", SecretString::from("p@ss<word>".to_owned()));
        // The page escaped the password, so replacing the raw string would miss it.
        let html = r#"<html><body><form>
            <input name="user" value="acme-user">
            <input type="password" name="password" value="p&#64;ss&lt;word&gt;">
            <input type="hidden" name="csrf" value="csrf-123">
            <textarea name="note">p@ss&lt;word&gt;</textarea>
            </form><script>var typed = "p@ss<word>";</script>
            <p>Signed in as p@ss<word></p></body></html>"#;
        let out = redact_html(html, &credentials).unwrap();
        for leaked in [
            "acme-user",
            "p&#64;ss",
            "csrf-123",
            "var typed",
            "p@ss<word>",
        ] {
            assert!(!out.contains(leaked), "{leaked} in {out}");
        }
        assert!(
            out.contains(r#"name="password" value="[REDACTED]""#),
            "{out}"
        );
        assert!(out.contains("Signed in as [REDACTED]"), "{out}");
    }

    #[test]
    fn artifacts_are_pruned_to_the_newest_and_the_recent() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::create_dir(root.path().join(format!("20260101T00000{i}.000Z-acme"))).unwrap();
        }
        prune_artifacts(root.path(), 3, Duration::from_secs(3600));
        let mut left: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "20260101T000002.000Z-acme",
                "20260101T000003.000Z-acme",
                "20260101T000004.000Z-acme"
            ]
        );
        prune_artifacts(root.path(), 3, Duration::ZERO);
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            0,
            "all older than 0s"
        );
    }

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
