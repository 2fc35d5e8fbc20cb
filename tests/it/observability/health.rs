//! Readiness and liveness that tell the truth: `/readyz` on a cut and on
//! SIGTERM before the drain, `/livez` on a stalled loop and not on a broker
//! outage, for the worker and for `warden reauth`.

use std::time::{Duration, Instant};

use base64::Engine as _;
use nix::sys::signal::Signal;
use serde_json::json;

use super::READY;
use crate::support;
use crate::support::{TestBroker, WardenProc, eventually};

#[tokio::test]
async fn cutting_the_broker_connection_turns_readyz_false_until_the_worker_is_back() {
    let broker = TestBroker::new("readyz").await;
    let proxy = support::proxy::TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = proxy.amqp_url();
    let worker = broker.spawn_worker(&[
        ("WARDEN_AMQP_URL", url.as_str()),
        ("WARDEN_LIVENESS_LIMIT", "1s"),
    ]);
    livez_holds_during_a_broker_outage(&worker, &proxy).await;
    // And it really consumes again.
    let tap = broker.tap().await;
    let id = broker.publish("builtin.noop", json!({})).await;
    tap.wait_terminal(&[id], Duration::from_secs(10)).await;
}

#[tokio::test]
async fn warden_reauth_keeps_livez_through_a_broker_outage_and_consumes_again() {
    let broker = TestBroker::new("reauthlivez").await;
    let proxy = support::proxy::TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = proxy.amqp_url();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}/warden.db", dir.path().display());
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let mut env = broker.env();
    env.extend(
        [
            ("WARDEN_AMQP_URL", url.as_str()),
            ("WARDEN_LIVENESS_LIMIT", "1s"),
            ("WARDEN_TOKEN_STORE", store.as_str()),
            ("WARDEN_TOKEN_KEY", key.as_str()),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let reauth = WardenProc::spawn(&["reauth"], &env);
    livez_holds_during_a_broker_outage(&reauth, &proxy).await;
    // And it really consumes again: a request for a channel it does not know
    // is acked and counted.
    broker.publish_reauth_request("nobody", 1, "t").await;
    assert!(
        eventually(Duration::from_secs(10), async || {
            reauth
                .metrics()
                .await
                .get(r#"warden_reauth_requests_ignored_total{why="not_configured"}"#)
                == Some(&1.0)
        })
        .await,
        "timed out waiting for the request to be handled"
    );
}

/// Cuts `role`'s broker connection for several times its liveness limit:
/// `/readyz` turns false, `/livez` stays true throughout (reconnecting is not a
/// hang, so Kubernetes must not restart the replica for it), and once the
/// broker is back the role is ready again.
async fn livez_holds_during_a_broker_outage(role: &WardenProc, proxy: &support::proxy::TcpProxy) {
    role.wait_ready(READY).await;
    proxy.down(true);
    assert!(
        eventually(Duration::from_secs(10), async || { !role.ready().await }).await,
        "timed out waiting for readyz to turn false"
    );
    let m = role.metrics().await;
    assert_eq!(m.get("warden_consumer_up"), Some(&0.0));
    let outage = Instant::now();
    let tries = proxy.accepted();
    // Live at every probe, for 3 s and two more connection attempts at least.
    let outage_lasted = async || {
        let (live, _) = role.get("/livez").await.expect("admin answers");
        assert_eq!(live, 200, "livez failed while waiting for the broker");
        assert!(!role.ready().await);
        outage.elapsed() >= Duration::from_secs(3) && proxy.accepted() >= tries + 2
    };
    assert!(
        eventually(Duration::from_secs(30), outage_lasted).await,
        "fewer than two connection attempts in 30 s of outage"
    );

    proxy.down(false);
    role.wait_ready(Duration::from_secs(30)).await;
    let m = role.metrics().await;
    assert_eq!(m.get("warden_consumer_up"), Some(&1.0));
    assert!(m.get("warden_broker_reconnects_total") >= Some(&1.0));
}

#[tokio::test]
async fn sigterm_turns_readyz_false_before_the_drain_finishes() {
    let broker = TestBroker::new("drain").await;
    let tap = broker.tap().await;
    let mut worker = broker.spawn_worker(&[("WARDEN_SHUTDOWN_GRACE", "20s")]);
    worker.wait_ready(READY).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(broker.publish("builtin.sleep", json!({"ms": 3000})).await);
    }
    assert!(
        eventually(Duration::from_secs(10), async || {
            worker.metrics().await.get("warden_tasks_in_flight") == Some(&3.0)
        })
        .await,
        "timed out waiting for 3 tasks in flight"
    );

    worker.signal(Signal::SIGTERM);
    assert!(
        eventually(Duration::from_secs(2), async || { !worker.ready().await }).await,
        "timed out waiting for readyz to turn false"
    );
    let m = worker.metrics().await;
    assert_eq!(
        m.get("warden_tasks_in_flight"),
        Some(&3.0),
        "readiness fell while the drain was still running"
    );
    assert!(tap.terminal().is_empty(), "no task had finished yet");

    let status = worker.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}\n{}", worker.logs());
    tap.wait_terminal(&ids, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_stalled_consumer_loop_fails_livez_within_the_liveness_limit() {
    let broker = TestBroker::new("stall").await;
    let worker = broker.spawn_worker(&[("WARDEN_LIVENESS_LIMIT", "1s")]);
    worker.wait_ready(READY).await;
    let limit = Duration::from_secs(1);
    // Quiet, the loop still beats on its tick: live at every probe for well
    // over the limit.
    let quiet = Instant::now();
    let live_throughout = async || {
        assert_eq!(worker.get("/livez").await.map(|r| r.0), Some(200));
        quiet.elapsed() >= 3 * limit
    };
    assert!(eventually(10 * limit, live_throughout).await);

    broker.publish("builtin.stall", json!({})).await;
    let stalled = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), async || {
            worker.get("/livez").await.map(|r| r.0) == Some(503)
        })
        .await,
        "timed out waiting for livez to fail"
    );
    // The loop stops at its next turn, a heartbeat tick (a quarter of the limit)
    // at most after the stall task ran, and /livez fails once that last beat is
    // `limit` old.
    let took = stalled.elapsed();
    assert!(
        took <= limit + Duration::from_millis(750),
        "livez failed {took:?} after the stall, limit {limit:?}"
    );
    assert!(worker.logs().contains("hangs here on purpose"));
    // The admin server itself is fine: only the loop is stuck.
    assert_eq!(worker.get("/metrics").await.map(|r| r.0), Some(200));
}
