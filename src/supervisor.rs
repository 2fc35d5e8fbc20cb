//! The broker session supervisor that `warden worker` and `warden reauth`
//! share: connect with backoff, run one session, and on any loss pace the
//! reconnect and start over, until shutdown.
//!
//! One copy, so the two roles cannot drift apart again: in particular both
//! keep `/livez` beating while they wait for the broker (connecting, or
//! pausing between lost sessions). A broker outage is not a hang, and a
//! liveness probe that restarted every pod of a role for it would only add
//! cold starts to the outage.

use std::future::Future;
use std::time::{Duration, Instant};

use lapin::Connection;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::observe::admin::Health;
use crate::observe::metrics::Metrics;

/// One role's broker sessions.
pub trait Session {
    /// Runs one session on `conn`: `Ok` once `shutdown` was handled and the
    /// role has drained, `Err` with the reason when the session was lost or
    /// could not be set up (the supervisor then reconnects).
    fn session(
        &self,
        conn: &Connection,
        shutdown: &CancellationToken,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// Supervises `role`'s sessions until `shutdown`; returns once a session
/// ended gracefully or shutdown came while disconnected.
///
/// While not in a session, `health` keeps beating (liveness) but is not ready,
/// and `metrics` counts each lost session and shows the consumer down.
pub async fn supervise<S: Session + Sync>(
    settings: &Settings,
    role: &str,
    health: &Health,
    metrics: &Metrics,
    sessions: &S,
    shutdown: &CancellationToken,
) {
    let mut losses = crate::amqp::broker::SessionLosses::default();
    loop {
        health.beat();
        let connecting = crate::amqp::broker::connect_with_backoff(settings, role, shutdown);
        let Some(conn) = health.beating_while(connecting).await else {
            break;
        };
        let started = Instant::now();
        match sessions.session(&conn, shutdown).await {
            Ok(()) => {
                close(&conn).await;
                break;
            }
            Err(why) => {
                health.set_session(false, false, false);
                metrics.consumer_up.set(0);
                metrics.reconnects.inc();
                let pause = losses.lost(&why, started.elapsed());
                close(&conn).await;
                let waited = health.beating_while(async {
                    tokio::select! {
                        () = shutdown.cancelled() => false,
                        () = tokio::time::sleep(pause) => true,
                    }
                });
                if !waited.await {
                    break;
                }
            }
        }
    }
    health.set_draining();
}

/// Closes a connection, bounded: a broker that is gone does not answer.
async fn close(conn: &Connection) {
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.close(200, "bye".into())).await;
}
