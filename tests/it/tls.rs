//! `amqps://` with a private CA and a client certificate, through a
//! TLS-terminating proxy in front of the real broker. The proxy runs on the
//! test's runtime while `run_cli` blocks a thread, hence two worker threads.

use std::time::Duration;

use crate::support::tls::TlsProxy;
use crate::support::{TestBroker, run_cli};
use serde_json::json;

const BROKER: &str = "127.0.0.1:5672";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_runs_tasks_over_amqps_with_a_private_ca_and_a_client_certificate() {
    let broker = TestBroker::new("tls").await;
    let tap = broker.tap().await;
    let proxy = TlsProxy::start(BROKER.parse().unwrap(), true).await;
    let (cert, key) = proxy.client_files();
    let (url, ca) = (proxy.amqps_url(), proxy.ca_file().display().to_string());
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let worker = broker.spawn_worker(&[
        ("WARDEN_AMQP_URL", url.as_str()),
        ("WARDEN_TLS__CA_FILE", ca.as_str()),
        ("WARDEN_TLS__CERT_FILE", cert.as_str()),
        ("WARDEN_TLS__KEY_FILE", key.as_str()),
    ]);
    worker.wait_ready(Duration::from_secs(20)).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(broker.publish("builtin.noop", json!({})).await);
    }
    tap.wait_terminal(&ids, Duration::from_secs(30)).await;
    tap.assert_succeeded(&ids);
    assert!(proxy.handshakes() >= 1);
    assert_eq!(proxy.refused(), 0);
    // The CLI takes the same settings.
    let env = broker.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.extend([
        ("WARDEN_AMQP_URL", url.as_str()),
        ("WARDEN_TLS__CA_FILE", ca.as_str()),
        ("WARDEN_TLS__CERT_FILE", cert.as_str()),
        ("WARDEN_TLS__KEY_FILE", key.as_str()),
    ]);
    let (code, out, err) = run_cli(&["topology"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&broker.topology.tasks()), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_broker_certificate_or_a_missing_client_certificate_is_refused_clearly() {
    let broker = TestBroker::new("tlsbad").await;
    let proxy = TlsProxy::start(BROKER.parse().unwrap(), true).await;
    let url = proxy.amqps_url();
    let ca = proxy.ca_file().display().to_string();
    let prefix = broker.prefix.clone();
    let base = [
        ("WARDEN_PREFIX", prefix.as_str()),
        ("WARDEN_AMQP_URL", url.as_str()),
    ];

    // The system roots do not know the private CA.
    let (code, _, err) = run_cli(&["topology"], &base);
    assert_eq!(code, 69, "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.contains("guest:guest"), "no password in errors: {err}");

    // Trusting the CA is not enough when the broker wants a client certificate.
    let mut with_ca = base.to_vec();
    with_ca.push(("WARDEN_TLS__CA_FILE", ca.as_str()));
    let (code, _, err) = run_cli(&["topology"], &with_ca);
    assert_eq!(code, 69, "{err}");

    // A certificate without its key is a configuration error, named.
    let (cert, _) = proxy.client_files();
    let cert = cert.display().to_string();
    let mut half = with_ca.clone();
    half.push(("WARDEN_TLS__CERT_FILE", cert.as_str()));
    let (code, _, err) = run_cli(&["topology"], &half);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("tls.key_file"), "{err}");

    // A CA file that does not exist is a configuration error, with its path.
    let missing = [
        ("WARDEN_PREFIX", prefix.as_str()),
        ("WARDEN_AMQP_URL", url.as_str()),
        ("WARDEN_TLS__CA_FILE", "/nonexistent/ca.pem"),
    ];
    let (code, _, err) = run_cli(&["topology"], &missing);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    assert!(proxy.refused() >= 2, "the proxy refused the handshakes");
}
