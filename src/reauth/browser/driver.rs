//! The login driver: one browser for every login, a fresh context per login, and the
//! relaunch when the browser dies or cannot resolve a provider's hosts.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use playwright_rs::{BrowserContext, Page};
use tokio::sync::{Semaphore, watch};
use tokio::time::timeout_at;

use super::artifacts;
use super::config::LoginDriverConfig;
use super::context::{CLOSE_TIMEOUT, CRASHED_CLOSE_TIMEOUT, ContextGuard, context_options};
use super::error::{Failure, LoginError, LoginErrorKind};
use super::launch::{
    self, Handles, INSTANCE_ENV, Running, resolvable_hosts, resolver_host, teardown,
};
use super::processes::{BrowserProcess, find_browser_processes, kill_process};
use super::session::Session;
use crate::reauth::flow::{AuthorizationCode, ChannelCredentials, OAuthProvider};

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
        let _permit = timeout_at(deadline, self.permits.acquire())
            .await
            .map_err(|_| LoginError::timed_out(timeout))?
            .map_err(|_| LoginError::shut_down())?;
        let (context, handles) = self.open_context(provider, deadline, timeout).await?;
        let guard = ContextGuard::new(context.clone(), Arc::clone(&self.open_contexts));
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis(),
            "login context opened"
        );
        let result = self
            .run_session(&context, &handles, provider, credentials, deadline, timeout)
            .await;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis(),
            "login flow finished"
        );
        close(guard, &handles.poisoned, &result).await;
        log_outcome(credentials, started, &result);
        result
    }

    /// Opens the login's fresh context. A dead browser is only discovered when a context
    /// cannot be opened; then it is relaunched once, so one crash costs one login, not two.
    async fn open_context(
        &self,
        provider: &OAuthProvider,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<(BrowserContext, Handles), LoginError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let handles = timeout_at(deadline, self.handles(&resolvable_hosts(provider)))
                .await
                .map_err(|_| LoginError::timed_out(timeout))??;
            let opened = timeout_at(
                deadline,
                handles.browser.new_context_with_options(context_options()),
            )
            .await;
            match opened {
                Ok(Ok(context)) => return Ok((context, handles)),
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
                    return Err(LoginError::timed_out(timeout));
                }
            }
        }
    }

    /// Runs one login in `context` until `deadline`, racing it against a browser crash, and
    /// judges a failure.
    async fn run_session(
        &self,
        context: &BrowserContext,
        handles: &Handles,
        provider: &OAuthProvider,
        credentials: &ChannelCredentials,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<AuthorizationCode, LoginError> {
        let mut session = Session::new(provider, credentials);
        let outcome = tokio::select! {
            biased;
            finished = timeout_at(deadline, session.run(context, deadline)) => match finished {
                Ok(outcome) => outcome,
                Err(_) => Err(Failure::Timeout),
            },
            // Playwright does not always fail the calls in flight when Chromium dies, so the
            // crash is watched for on its own.
            () = self.crashed(handles.gone.clone()) => Err(Failure::Crashed(
                "the browser process exited during the login".to_owned(),
            )),
        };
        match outcome {
            Ok(code) => Ok(code),
            Err(failure) => {
                let page = session.page();
                Err(self
                    .judge(
                        failure,
                        context,
                        page,
                        credentials,
                        timeout,
                        &handles.poisoned,
                    )
                    .await)
            }
        }
    }

    /// Turns a failure into the caller's error: a crash poisons the browser, anything else
    /// leaves artifacts when configured.
    async fn judge(
        &self,
        failure: Failure,
        context: &BrowserContext,
        page: Option<&Page>,
        credentials: &ChannelCredentials,
        timeout: Duration,
        poisoned: &AtomicBool,
    ) -> LoginError {
        // A dead driver reports nothing (its pending calls just never answer), so a timeout
        // with no browser process left is a crash too.
        let crashed = failure.is_crash()
            || context.browser().is_some_and(|b| !b.is_connected())
            || (matches!(failure, Failure::Timeout) && !self.browser_alive());
        let mut error = failure.into_error(credentials, timeout, crashed);
        if error.kind() == LoginErrorKind::BrowserCrashed {
            poisoned.store(true, Ordering::SeqCst);
        } else if let Some(page) = page
            && let Some(root) = &self.config.artifacts_dir
        {
            error.set_artifacts(artifacts::save(root, page, credentials, &error).await);
        }
        error
    }

    /// The running browser, (re)launching it when there is none, it disconnected, a login
    /// poisoned it, or it cannot resolve one of `hosts`.
    async fn handles(&self, hosts: &BTreeSet<String>) -> Result<Handles, LoginError> {
        let mut running = self.running.lock().await;
        if self.closed.load(Ordering::SeqCst) {
            return Err(LoginError::shut_down());
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
        let (playwright, browser) = launch::start(&self.config, &self.instance, &hosts).await?;
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
        Ok(Running::watch(playwright, browser, hosts).await)
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
}

/// Closes the login's context. After a crash the browser is gone and a dead driver would never
/// answer, so the close is not waited for long; a context that cannot be closed in time means
/// the driver is wedged, and the next login relaunches it.
async fn close(
    guard: ContextGuard,
    poisoned: &AtomicBool,
    result: &Result<AuthorizationCode, LoginError>,
) {
    let crashed = matches!(result, Err(e) if e.is_browser_crashed());
    let limit = if crashed {
        CRASHED_CLOSE_TIMEOUT
    } else {
        CLOSE_TIMEOUT
    };
    if !guard.close(limit).await {
        poisoned.store(true, Ordering::SeqCst);
    }
}

fn log_outcome(
    credentials: &ChannelCredentials,
    started: Instant,
    result: &Result<AuthorizationCode, LoginError>,
) {
    match result {
        Ok(_) => tracing::info!(
            channel = credentials.channel(),
            elapsed_ms = started.elapsed().as_millis(),
            "browser login captured an authorization code"
        ),
        Err(e) => tracing::warn!(
            channel = credentials.channel(),
            kind = %e.kind(),
            elapsed_ms = started.elapsed().as_millis(),
            error = %e,
            "browser login failed"
        ),
    }
}
