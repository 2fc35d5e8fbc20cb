//! A login's browser context: how it is opened, and the guard that closes it on every path.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use playwright_rs::protocol::AcceptDownloads;
use playwright_rs::{BrowserContext, BrowserContextOptions};
use tokio::time::timeout;

/// Bound on closing a context or a browser. A close that takes longer means the driver is
/// wedged, and the browser is relaunched for the next login.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on closing a context after the browser crashed.
pub(super) const CRASHED_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A fresh context per login refuses downloads and service workers.
pub(super) fn context_options() -> BrowserContextOptions {
    BrowserContextOptions::builder()
        .accept_downloads(AcceptDownloads::Deny)
        // A service worker could fetch outside the context's route handler.
        .service_workers("block".to_owned())
        .locale("en-US".to_owned())
        .build()
}

/// A duration as the milliseconds Playwright's options take.
pub(super) fn duration_ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Closes its context exactly once: explicitly through [`ContextGuard::close`], or in the
/// background when dropped (the login future was cancelled).
pub(super) struct ContextGuard {
    context: Option<BrowserContext>,
    open: Arc<AtomicUsize>,
}

impl ContextGuard {
    pub(super) fn new(context: BrowserContext, open: Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::SeqCst);
        Self {
            context: Some(context),
            open,
        }
    }

    /// Closes the context; false when closing hung.
    pub(super) async fn close(mut self, limit: Duration) -> bool {
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
