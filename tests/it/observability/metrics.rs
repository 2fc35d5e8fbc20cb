//! Metrics that add up over a mixed run, and a dashboard that queries only
//! metrics a real worker exports.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::json;

use super::READY;
use crate::support::{TestBroker, WardenProc, eventually};

/// What the mixed run must count, sample by sample. fail×1 transient: retried
/// once, then succeeded; fail×9: retried twice, dead. Unknown types and bodies
/// that are not tasks share the `unknown` label. Every attempt of a handler is
/// timed.
const EXPECTED: [(&str, f64); 15] = [
    (
        r#"warden_tasks_total{type="builtin.noop",outcome="succeeded"}"#,
        5.0,
    ),
    (
        r#"warden_tasks_total{type="builtin.fail",outcome="succeeded"}"#,
        1.0,
    ),
    (
        r#"warden_tasks_total{type="builtin.fail",outcome="retried"}"#,
        3.0,
    ),
    (
        r#"warden_tasks_total{type="builtin.fail",outcome="dead"}"#,
        3.0,
    ),
    (r#"warden_tasks_total{type="unknown",outcome="dead"}"#, 2.0),
    (r#"warden_dead_letters_total{reason="permanent"}"#, 2.0),
    (
        r#"warden_dead_letters_total{reason="retries_exhausted"}"#,
        1.0,
    ),
    (r#"warden_dead_letters_total{reason="unknown_type"}"#, 1.0),
    (r#"warden_dead_letters_total{reason="malformed"}"#, 1.0),
    (r#"warden_retries_total{tier="100ms"}"#, 3.0),
    ("warden_parked_total", 0.0),
    (
        r#"warden_task_duration_seconds_count{type="builtin.noop"}"#,
        5.0,
    ),
    (
        r#"warden_task_duration_seconds_count{type="builtin.fail"}"#,
        7.0,
    ),
    ("warden_consumer_up", 1.0),
    ("warden_broker_reconnects_total", 0.0),
];

#[tokio::test]
async fn metrics_count_every_outcome_of_a_mixed_run() {
    let broker = TestBroker::with("metrics", |s| {
        s.retry.base_delay = Duration::from_millis(100);
        s.retry.tiers = 1;
        s.retry.max_attempts = 3;
    })
    .await;
    let tap = broker.tap().await;
    let worker = broker.spawn_worker(&[]);
    worker.wait_ready(READY).await;

    // How many of each: plain successes, permanent failures, a transient one
    // that recovers, one that runs out of attempts, an unknown type.
    let mix = [
        ("builtin.noop", json!({}), 5),
        ("builtin.fail", json!({"times": 1, "kind": "permanent"}), 2),
        ("builtin.fail", json!({"times": 1, "kind": "transient"}), 1),
        ("builtin.fail", json!({"times": 9, "kind": "transient"}), 1),
        ("no.such.type", json!({}), 1),
    ];
    let mut ids = Vec::new();
    for (kind, payload, n) in mix {
        for _ in 0..n {
            ids.push(broker.publish(kind, payload.clone()).await);
        }
    }
    broker.publish_raw("junk", b"{not json", "junk-1").await;
    ids.push("junk-1".to_owned());
    tap.wait_terminal(&ids, Duration::from_secs(30)).await;

    // The acker may still be settling the last one; the counters are final once
    // nothing is in flight.
    assert!(
        eventually(Duration::from_secs(5), async || {
            worker.metrics().await.get("warden_tasks_in_flight") == Some(&0.0)
        })
        .await,
        "timed out waiting for nothing in flight"
    );
    let m: HashMap<String, f64> = worker.metrics().await;
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    let tasks = |t: &str, o: &str| {
        get(&format!(
            "warden_tasks_total{{type=\"{t}\",outcome=\"{o}\"}}"
        ))
    };
    let dump = || {
        let mut v: Vec<_> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
        v.sort();
        v.join("\n")
    };
    for (sample, value) in EXPECTED {
        assert_eq!(get(sample), value, "{sample}:\n{}", dump());
    }
    let terminal = tap.terminal();
    let succeeded = terminal
        .values()
        .filter(|v| v[0] == "task.succeeded")
        .count();
    let dead = terminal.values().filter(|v| v[0] == "task.dead").count();
    let counted_ok = tasks("builtin.noop", "succeeded") + tasks("builtin.fail", "succeeded");
    let counted_dead = tasks("builtin.fail", "dead") + tasks("unknown", "dead");
    assert_eq!((succeeded as f64, dead as f64), (counted_ok, counted_dead));
}

/// Every `warden_*` sample name a dashboard query uses.
fn dashboard_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k == "expr" {
                        if let Some(s) = v.as_str() {
                            out.push(s.to_owned());
                        }
                    } else {
                        walk(v, out);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    walk(dashboard, &mut exprs);
    assert!(exprs.len() >= 6, "the dashboard has queries: {exprs:?}");
    let mut names = BTreeSet::new();
    for e in exprs {
        let bytes = e.as_bytes();
        let mut i = 0;
        while let Some(at) = e[i..].find("warden_") {
            let start = i + at;
            let boundary = start == 0
                || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            let end = e[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(e.len(), |n| start + n);
            if boundary {
                names.insert(e[start..end].to_owned());
            }
            i = end;
        }
    }
    names
}

/// The sample names a scrape can contain, from its `# TYPE` lines: counters end
/// in `_total`, histograms export `_bucket`, `_sum` and `_count`.
fn exportable(metrics_text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in metrics_text.lines() {
        let mut parts = line.split_whitespace();
        if (parts.next(), parts.next()) != (Some("#"), Some("TYPE")) {
            continue;
        }
        let (Some(family), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                out.insert(format!("{family}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{family}{suffix}"));
                }
            }
            _ => {
                out.insert(family.to_owned());
            }
        }
    }
    out
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported_by_a_real_worker() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana/dashboards/warden.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard exists"))
            .expect("dashboard is JSON");
    let wanted = dashboard_metrics(&dashboard);
    for name in [
        "warden_tasks_total",
        "warden_dead_letters_total",
        "warden_reauth_attempts_total",
        "warden_tasks_in_flight",
        "warden_broker_reconnects_total",
    ] {
        assert!(
            wanted.contains(name),
            "the dashboard shows {name}: {wanted:?}"
        );
    }
    // Every panel and query reads the provisioned Prometheus datasource.
    let text = dashboard.to_string();
    assert!(
        !text.contains("${DS_"),
        "no import-time datasource variables"
    );
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "prometheus",
            "{}",
            panel["title"]
        );
        for t in panel["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "prometheus", "{}", panel["title"]);
        }
    }

    // A real worker that has run a success, a retry and a dead letter, so every
    // family has a series (prometheus-client leaves empty families out).
    let broker = TestBroker::with("dashboard", |s| {
        s.retry.base_delay = Duration::from_millis(100);
        s.retry.tiers = 1;
    })
    .await;
    let tap = broker.tap().await;
    let worker: WardenProc = broker.spawn_worker(&[]);
    worker.wait_ready(READY).await;
    let ids = vec![
        broker.publish("builtin.noop", json!({})).await,
        broker
            .publish("builtin.fail", json!({"times": 1, "kind": "transient"}))
            .await,
        broker.publish("no.such.type", json!({})).await,
    ];
    tap.wait_terminal(&ids, Duration::from_secs(20)).await;
    let (_, text) = worker.get("/metrics").await.unwrap();
    let exported = exportable(&text);
    let missing: Vec<_> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not export: {missing:?}\n{text}"
    );
}
