//! One login: open a page, run the provider's steps, and conclude from what the network
//! watchers and the provider's error element report.

use std::sync::Arc;
use std::time::Duration;

use playwright_rs::{BrowserContext, GotoOptions, Page, WaitForOptions, WaitForState, WaitUntil};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::watch;
use url::Url;

use super::context::duration_ms;
use super::error::Failure;
use super::network::{self, Signal};
use crate::reauth::flow::{
    AuthorizationCode, ChannelCredentials, FillValue, OAuthProvider, Pkce, Step, TOTP_SECRET,
};

/// One login in a fresh browser context: its OAuth `state`, its PKCE verifier, and the page
/// it opened (kept for the failure artifacts).
pub(super) struct Session<'a> {
    provider: &'a OAuthProvider,
    credentials: &'a ChannelCredentials,
    state: String,
    pkce: Option<Pkce>,
    page: Option<Page>,
}

impl<'a> Session<'a> {
    pub(super) fn new(provider: &'a OAuthProvider, credentials: &'a ChannelCredentials) -> Self {
        Self {
            provider,
            credentials,
            state: uuid::Uuid::new_v4().simple().to_string(),
            pkce: provider.pkce.then(Pkce::generate),
            page: None,
        }
    }

    /// The page the login opened, once it has one.
    pub(super) fn page(&self) -> Option<&Page> {
        self.page.as_ref()
    }

    /// Runs the login in `context` until the redirect carries a code, the provider shows its
    /// error element, the flow leaves the allowlist or a step fails; the caller bounds it by
    /// `deadline`.
    pub(super) async fn run(
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
        let (watching, page) = tokio::join!(
            network::watch(context, self.provider, &signal_tx),
            context.new_page()
        );
        watching?;
        let page = page.map_err(|e| Failure::from_playwright("open page", &e))?;
        self.page = Some(page.clone());
        tracing::debug!("login page opened");

        let steps = self.run_steps(&page, remaining);
        let bad_credentials = watch_error_element(&page, self.provider.error_selector.as_deref());
        let signalled = first_signal(&mut signal_rx);
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
            self.step(page, step, &label, &authorize, &remaining)
                .await?;
        }
        Ok(())
    }

    async fn step(
        &self,
        page: &Page,
        step: &Step,
        label: &str,
        authorize: &Url,
        remaining: &impl Fn() -> Duration,
    ) -> Result<(), Failure> {
        let pw = |e: playwright_rs::Error| Failure::from_playwright(label, &e);
        match step {
            Step::Goto { url } => {
                let url = url.replace("{authorize_url}", authorize.as_str());
                goto(page, &url, remaining()).await
            }
            Step::Fill { selector, value } => {
                let text = self.fill_text(value, label)?;
                page.locator(selector.as_str())
                    .fill(text.expose_secret(), None)
                    .await
                    .map_err(pw)
            }
            Step::Click { selector } => page
                .locator(selector.as_str())
                .click(None)
                .await
                .map_err(pw),
            Step::ClickIfPresent { selector, within } => {
                let locator = page.locator(selector.as_str());
                let wait = WaitForOptions::builder()
                    .state(WaitForState::Visible)
                    .timeout(duration_ms((*within).min(remaining())))
                    .build();
                if locator.wait_for(wait).await.is_ok() {
                    locator.click(None).await.map_err(pw)?;
                }
                Ok(())
            }
            Step::WaitFor { selector } => page
                .locator(selector.as_str())
                .wait_for(None)
                .await
                .map_err(pw),
            Step::Totp { selector, submit } => {
                self.totp(page, selector, submit.as_deref(), label).await
            }
        }
    }

    /// What a `fill` step types: the named credential, or the literal text.
    fn fill_text(&self, value: &FillValue, label: &str) -> Result<SecretString, Failure> {
        match value {
            FillValue::Secret(name) => self.credentials.get(name).cloned().ok_or_else(|| {
                Failure::Other(format!("{label}: channel has no credential named {name}"))
            }),
            FillValue::Text(text) => Ok(SecretString::from(text.clone())),
        }
    }

    /// Types the current one-time code and submits it; nothing for a channel without a seed.
    async fn totp(
        &self,
        page: &Page,
        selector: &str,
        submit: Option<&str>,
        label: &str,
    ) -> Result<(), Failure> {
        let Some(seed) = self.credentials.get(TOTP_SECRET) else {
            return Ok(());
        };
        let pw = |e: playwright_rs::Error| Failure::from_playwright(label, &e);
        let code = self
            .provider
            .totp
            .current_code(seed)
            .map_err(|e| Failure::Other(format!("{label}: {e}")))?;
        page.locator(selector)
            .fill(code.expose_secret(), None)
            .await
            .map_err(pw)?;
        if let Some(submit) = submit {
            page.locator(submit).click(None).await.map_err(pw)?;
        }
        Ok(())
    }
}

/// The first signal the network watchers send; never, if they are gone without one.
async fn first_signal(signal_rx: &mut watch::Receiver<Option<Signal>>) -> Signal {
    loop {
        if let Some(signal) = signal_rx.borrow_and_update().clone() {
            return signal;
        }
        if signal_rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
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
