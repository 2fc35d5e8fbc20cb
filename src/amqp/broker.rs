//! Connecting to RabbitMQ.
//!
//! lapin's own auto-recovery is young, so warden supervises connections itself:
//! [`connect_with_backoff`] waits for the broker with exponential backoff and
//! jitter (via `backon`), logging the outage once rather than on every attempt,
//! and the worker rebuilds everything on top of a fresh connection.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use rand::seq::SliceRandom;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;

use crate::config::{Settings, TlsSettings};

/// The broker could not be reached or refused us.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach the broker at {url}: {detail}. Is RabbitMQ running, and is WARDEN_AMQP_URL right?"
)]
pub struct Unreachable {
    /// The redacted URL.
    pub url: String,
    /// What went wrong, without secrets.
    pub detail: String,
}

/// Why one address did not give a connection; its text never holds a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The address is not an AMQP URI (lapin's parser says why).
    #[error("{0}")]
    Uri(String),
    /// A TLS file named in the settings cannot be used.
    #[error("{key} {path}: {why}")]
    Tls {
        /// The setting, e.g. `tls.ca_file`.
        key: &'static str,
        /// The file.
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// The broker refused the connection or the handshake failed.
    #[error("{0}")]
    Refused(#[from] lapin::Error),
    /// Nothing answered in time.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
}

/// Opens one connection, failing after `timeout` per address.
///
/// `settings.amqp_url` may list several addresses ([`crate::config::addresses`]); they are
/// tried in a shuffled order, and the first that answers wins. Shuffling on
/// every connect rather than rotating from a fixed start spreads replicas
/// that all start at once, and after a node dies the survivors take its
/// clients in about equal shares.
///
/// `role` names the connection in the broker's management views
/// (`warden-worker@host:pid`), so an operator, or a chaos test, can find it.
///
/// # Errors
/// [`Unreachable`] with the redacted URL(s) and each address's failure.
pub async fn connect(
    settings: &Settings,
    role: &str,
    timeout: Duration,
) -> Result<Connection, Unreachable> {
    let raw = settings.amqp_url.expose_secret();
    let mut order = crate::config::addresses(raw);
    order.shuffle(&mut rand::rng());
    let mut failures = Vec::with_capacity(order.len());
    for address in &order {
        match connect_one(settings, address, role, timeout).await {
            Ok(conn) => return Ok(conn),
            Err(e) if order.len() == 1 => {
                return Err(Unreachable {
                    url: settings.amqp_url_redacted(),
                    detail: e.to_string(),
                });
            }
            Err(e) => failures.push(format!("{}: {e}", crate::config::redact_url(address))),
        }
    }
    Err(Unreachable {
        url: settings.amqp_url_redacted(),
        detail: if failures.is_empty() {
            "no broker address given".into()
        } else {
            failures.join("; ")
        },
    })
}

/// Opens a connection to one address.
async fn connect_one(
    settings: &Settings,
    address: &str,
    role: &str,
    timeout: Duration,
) -> Result<Connection, ConnectError> {
    let mut uri: AMQPUri = address.parse().map_err(ConnectError::Uri)?;
    uri.query.heartbeat = Some(u16::try_from(settings.heartbeat.as_secs()).unwrap_or(u16::MAX));
    uri.query.connection_timeout = Some(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
    // The frame size is the broker's: asking for less made the connection
    // refuse any message whose headers the broker had accepted but did not
    // fit our frame, and every task in flight on it was returned with it.
    // lapin sizes its two 32-frame rings from what we ask for *before* the
    // handshake and, when the broker's frame is larger, grows them by
    // writing zeros, which makes both resident at once (8 MiB at RabbitMQ's
    // 128 KiB). Asked for up front, they are allocated zeroed by the kernel
    // and only the pages traffic reaches become resident. So a short-lived
    // probe learns the broker's frame first (its buffers are freed with it).
    if uri.query.frame_max.is_none() {
        let probe = open(settings, uri.clone(), role, timeout).await?;
        let frame_max = probe.configuration().frame_max();
        let _ = probe.close(200, "frame size learned".into()).await;
        uri.query.frame_max = Some(frame_max);
    }
    open(settings, uri, role, timeout).await
}

async fn open(
    settings: &Settings,
    uri: AMQPUri,
    role: &str,
    timeout: Duration,
) -> Result<Connection, ConnectError> {
    let props = ConnectionProperties::default()
        .with_connection_name(connection_name(settings, role).into());
    let tls = tls_config(&settings.tls)?;
    let runtime = lapin::runtime::default_runtime()?;
    let connecting = Connection::connect_uri_with_config(uri, props, tls, runtime);
    match tokio::time::timeout(timeout, connecting).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}

/// The TLS material of `tls`, read from its files (the system roots are
/// always trusted too). Errors name the setting and the path, never contents.
fn tls_config(tls: &TlsSettings) -> Result<OwnedTLSConfig, ConnectError> {
    let bad = |key, path: &std::path::Path, why: String| ConnectError::Tls {
        key,
        path: path.display().to_string(),
        why,
    };
    let read = |key, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| bad(key, path, format!("cannot be read: {e}")))
    };
    let cert_chain = match &tls.ca_file {
        Some(path) => Some(
            String::from_utf8(read("tls.ca_file", path)?)
                .map_err(|_| bad("tls.ca_file", path, "is not PEM text".into()))?,
        ),
        None => None,
    };
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
            pem: read("tls.cert_file", cert)?,
            key: read("tls.key_file", key)?,
        }),
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// `warden-<role>.<prefix>@<host>:<pid>`.
#[must_use]
pub fn connection_name(settings: &Settings, role: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!(
        "warden-{role}.{}@{host}:{}",
        settings.prefix,
        std::process::id()
    )
}

/// Connects, retrying with exponential backoff and jitter until it works or
/// `shutdown` is cancelled (then `None`). The first failure is logged at warn,
/// later ones at debug, and a recovery at info: one outage, a handful of lines.
pub async fn connect_with_backoff(
    settings: &Settings,
    role: &str,
    shutdown: &CancellationToken,
) -> Option<Connection> {
    let failures = AtomicU32::new(0);
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(15))
        .with_jitter()
        .without_max_times();
    let attempt = || connect(settings, role, Duration::from_secs(10));
    let retrying = attempt.retry(backoff).sleep(tokio::time::sleep).notify(|err: &Unreachable, wait| {
        let n = failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            tracing::warn!(error = %err, "broker unavailable; retrying with backoff until it is back");
        } else {
            tracing::debug!(error = %err, attempt = n, retry_in = ?wait, "broker still unavailable");
        }
    });
    tokio::select! {
        () = shutdown.cancelled() => None,
        conn = retrying => {
            let n = failures.load(Ordering::Relaxed);
            if n > 0 {
                tracing::info!(failed_attempts = n, "broker reachable again");
            }
            conn.ok()
        }
    }
}

/// Paces reconnects after lost sessions. A session that dies right after it
/// started (a refused declaration, a deleted queue) would otherwise spin and
/// flood the log; a session that ran for a while resets the streak.
#[derive(Debug, Default)]
pub struct SessionLosses {
    streak: u32,
}

/// A session that lasted at least this long counts as healthy and ends a
/// streak of losses. Sessions that die at once (a refused declaration, a
/// deleted queue) last milliseconds; a flaky network that cuts a working
/// session every few seconds must not push reconnects to the maximum pause.
pub const HEALTHY_SESSION: Duration = Duration::from_secs(5);

impl SessionLosses {
    const HEALTHY: Duration = HEALTHY_SESSION;
    /// Longest pause between two sessions.
    const MAX_PAUSE: Duration = Duration::from_secs(30);

    /// Records a lost session that ran for `lasted`, logs it (the first loss of
    /// a streak at warn, repeats at debug with a warn at each doubling), and
    /// returns how long to wait before reconnecting.
    pub fn lost(&mut self, why: &str, lasted: Duration) -> Duration {
        if lasted >= Self::HEALTHY {
            self.streak = 0;
        }
        self.streak += 1;
        let n = self.streak;
        if n == 1 {
            tracing::warn!(reason = %why, "broker session lost; reconnecting");
        } else if n.is_power_of_two() {
            tracing::warn!(reason = %why, losses_in_a_row = n, "broker session keeps failing; still retrying");
        } else {
            tracing::debug!(reason = %why, losses_in_a_row = n, "broker session lost again");
        }
        if n == 1 {
            Duration::ZERO
        } else {
            Duration::from_millis(500)
                .saturating_mul(1 << (n - 2).min(6))
                .min(Self::MAX_PAUSE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_pauses_double_while_sessions_keep_dying_and_reset_after_a_healthy_one() {
        let mut l = SessionLosses::default();
        let quick = Duration::from_millis(10);
        let pauses: Vec<u64> = (0..9)
            .map(|_| l.lost("x", quick).as_millis() as u64)
            .collect();
        assert_eq!(
            pauses,
            [0, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]
        );
        assert_eq!(l.lost("x", Duration::from_secs(60)), Duration::ZERO);
    }

    #[test]
    fn a_comma_separated_url_names_every_node_and_ignores_blanks() {
        assert_eq!(
            crate::config::addresses(" amqp://a:5672/%2f, amqp://b:5672/%2f,,amqp://c/ "),
            ["amqp://a:5672/%2f", "amqp://b:5672/%2f", "amqp://c/"]
        );
        assert_eq!(crate::config::addresses("amqp://one"), ["amqp://one"]);
        assert!(crate::config::addresses(" , ").is_empty());
    }

    #[tokio::test]
    async fn connect_tries_every_address_and_names_each_failure_without_passwords() {
        // Two ports nothing listens on (bound then dropped, so refused at once).
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        };
        let (a, b) = (free(), free());
        let settings = Settings {
            amqp_url: format!(
                "amqp://u:sekrit@127.0.0.1:{a}/%2f,amqp://u:sekrit@127.0.0.1:{b}/%2f"
            )
            .into(),
            ..Settings::default()
        };
        let err = connect(&settings, "test", Duration::from_secs(2))
            .await
            .expect_err("nothing listens");
        let text = err.to_string();
        assert!(
            text.contains(&format!(":{a}/")) && text.contains(&format!(":{b}/")),
            "{text}"
        );
        assert!(!text.contains("sekrit"), "{text}");
    }
}
