//! Observability against the real broker, the real binary and a real OTLP
//! collector: one trace across a retry, metrics that add up, readiness and
//! liveness that tell the truth, a dashboard that queries real metrics.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::support;
use crate::support::otel::{Collector, attr, event_attr, summary};
use crate::support::{TestBroker, WardenProc, eventually, run_cli};
use base64::Engine as _;
use fake_opentelemetry_collector::ExportedSpan;
use lapin::types::{AMQPValue, FieldTable};
use nix::sys::signal::Signal;
use serde_json::json;

const READY: Duration = Duration::from_secs(20);

fn by_name<'a>(spans: &'a [ExportedSpan], name: &str) -> Vec<&'a ExportedSpan> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn attempt_of(span: &ExportedSpan) -> Option<String> {
    attr(span, "warden.task.attempt")
}

#[tokio::test]
async fn a_task_that_fails_once_is_one_trace_from_its_producer_through_the_retry() {
    let broker = TestBroker::with("trace", |s| {
        s.retry.base_delay = Duration::from_millis(100);
        s.retry.tiers = 1;
    })
    .await;
    let mut collector = Collector::start().await;
    let tap = broker.tap().await;
    let worker = broker.spawn_worker(&collector.env());
    worker.wait_ready(READY).await;

    // A foreign producer, mid-trace: its span is the parent of everything warden does.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let producer_span = "00f067aa0ba902b7";
    let mut headers = FieldTable::default();
    headers.insert(
        "traceparent".into(),
        AMQPValue::LongString(format!("00-{trace_id}-{producer_span}-01").into()),
    );
    headers.insert(
        "tracestate".into(),
        AMQPValue::LongString("vendor=abc".into()),
    );
    let body = json!({
        "id": "traced-1",
        "type": "builtin.fail",
        "channel": "acme-main",
        "payload": {"times": 1, "kind": "transient"},
    })
    .to_string();
    broker
        .publish_raw_with_headers("builtin.fail", body.as_bytes(), "traced-1", headers)
        .await;
    tap.wait_terminal(&["traced-1".to_owned()], Duration::from_secs(20))
        .await;

    let tasks = broker.topology.tasks();
    let delay = broker.topology.delay_exchange();
    let process_name = format!("process {tasks}");
    let publish_delay = format!("publish {delay}");
    collector
        .collect_until(
            Duration::from_secs(20),
            "both attempts and the retry copy",
            |spans| {
                by_name(spans, &process_name).len() == 2
                    && by_name(spans, &publish_delay).len() == 1
            },
        )
        .await;
    let spans = &collector.spans;
    let all = summary(spans);
    assert!(
        spans.iter().all(|s| s.trace_id == trace_id),
        "one trace id throughout:\n{all}"
    );
    assert_eq!(spans.len(), 3, "nothing else was traced:\n{all}");

    let process = by_name(spans, &process_name);
    let first = *process
        .iter()
        .find(|s| attempt_of(s).as_deref() == Some("1"))
        .expect("attempt 1");
    let second = *process
        .iter()
        .find(|s| attempt_of(s).as_deref() == Some("2"))
        .expect("attempt 2");
    let retry_copy = by_name(spans, &publish_delay)[0];

    // Parent links: producer → process(1) → publish retry copy → process(2).
    assert_eq!(first.parent_span_id, producer_span, "{all}");
    assert_eq!(first.trace_state, "vendor=abc", "tracestate travels too");
    assert_eq!(retry_copy.parent_span_id, first.span_id, "{all}");
    assert_eq!(second.parent_span_id, retry_copy.span_id, "{all}");
    // Each lifecycle event carries the context of the attempt it reports on.
    let mut carried: Vec<(String, Option<String>)> = tap
        .traceparents
        .lock()
        .unwrap()
        .iter()
        .map(|(rk, _, tp)| (rk.clone(), tp.clone()))
        .collect();
    carried.sort();
    assert_eq!(
        carried,
        [
            (
                "task.retrying".to_owned(),
                Some(format!("00-{trace_id}-{}-01", first.span_id))
            ),
            (
                "task.succeeded".to_owned(),
                Some(format!("00-{trace_id}-{}-01", second.span_id))
            ),
        ]
    );

    // Kinds and semantic-convention attributes.
    assert_eq!(first.kind, "SPAN_KIND_CONSUMER");
    assert_eq!(second.kind, "SPAN_KIND_CONSUMER");
    assert_eq!(retry_copy.kind, "SPAN_KIND_PRODUCER");
    let expect = |span: &ExportedSpan, key: &str, value: &str| {
        assert_eq!(
            attr(span, key).as_deref(),
            Some(value),
            "{} {key}: {:#?}",
            span.name,
            span.attributes
        );
    };
    for p in [first, second] {
        expect(p, "messaging.system", "rabbitmq");
        expect(p, "messaging.destination.name", &tasks);
        expect(p, "messaging.operation.name", "process");
        expect(p, "messaging.operation.type", "process");
        expect(
            p,
            "messaging.rabbitmq.destination.routing_key",
            "builtin.fail",
        );
        expect(p, "messaging.message.id", "traced-1");
        expect(p, "messaging.message.body.size", &body.len().to_string());
        expect(p, "warden.task.type", "builtin.fail");
        expect(p, "warden.channel", "acme-main");
        assert!(attr(p, "messaging.rabbitmq.message.delivery_tag").is_some());
    }
    expect(first, "warden.outcome", "retried");
    expect(first, "error.type", "transient");
    assert_eq!(
        first.status.as_ref().map(|s| s.code.as_str()),
        Some("STATUS_CODE_ERROR")
    );
    expect(second, "warden.outcome", "succeeded");
    assert_eq!(attr(second, "error.type"), None);
    expect(retry_copy, "messaging.system", "rabbitmq");
    expect(retry_copy, "messaging.destination.name", &delay);
    expect(retry_copy, "messaging.operation.name", "publish");
    expect(retry_copy, "messaging.operation.type", "send");
    expect(
        retry_copy,
        "messaging.rabbitmq.destination.routing_key",
        "builtin.fail",
    );
    expect(retry_copy, "messaging.message.id", "traced-1");
    expect(
        retry_copy,
        "messaging.message.body.size",
        &body.len().to_string(),
    );
    // Settling is an event on the process span.
    for (p, outcome) in [(first, "retried"), (second, "succeeded")] {
        assert_eq!(
            event_attr(p, "settle", "messaging.operation.type").as_deref(),
            Some("settle"),
            "{:#?}",
            p.events
        );
        assert_eq!(
            event_attr(p, "settle", "warden.outcome").as_deref(),
            Some(outcome)
        );
    }

    // The log line of the retry is inside the first process span, and says so.
    let logs = worker.logs();
    let retry_line: serde_json::Value = logs
        .lines()
        .find(|l| l.contains("retrying after a delay"))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no retry log line:\n{logs}"));
    assert_eq!(retry_line["trace_id"], trace_id, "{retry_line}");
    assert_eq!(
        retry_line["span_id"],
        first.span_id.as_str(),
        "{retry_line}"
    );
    assert_eq!(retry_line["span"]["messaging.message.id"], "traced-1");
    assert_eq!(retry_line["span"]["warden.task.attempt"], 1);
}

// Multi-threaded: the collector must keep answering while `run_cli` blocks
// this thread waiting for the CLI, which flushes its spans before exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_publish_continues_into_the_worker_and_no_span_holds_the_broker_password() {
    let broker = TestBroker::new("secret").await;
    let mut collector = Collector::start().await;
    let mut env = collector.env();
    let password = "guest";
    let url = support::AMQP_URL;
    assert!(url.contains(&format!(":{password}@")));
    env.push(("WARDEN_AMQP_URL", url));
    let worker = broker.spawn_worker(&env);
    worker.wait_ready(READY).await;

    let mut cli_env = env.clone();
    cli_env.push(("WARDEN_PREFIX", &broker.prefix));
    let (code, out, err) = run_cli(
        &[
            "publish",
            "--type",
            "builtin.noop",
            "--channel",
            "acme-main",
        ],
        &cli_env,
    );
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();

    let tasks = broker.topology.tasks();
    let publish_name = format!("publish {tasks}");
    let process_name = format!("process {tasks}");
    collector
        .collect_until(
            Duration::from_secs(20),
            "the CLI's publish (flushed at exit) and the worker's process",
            |spans| {
                !by_name(spans, &publish_name).is_empty()
                    && !by_name(spans, &process_name).is_empty()
            },
        )
        .await;
    let spans = &collector.spans;
    let published = by_name(spans, &publish_name)[0];
    let processed = by_name(spans, &process_name)[0];
    assert_eq!(published.kind, "SPAN_KIND_PRODUCER");
    assert_eq!(
        attr(published, "messaging.message.id").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(processed.trace_id, published.trace_id, "{}", summary(spans));
    assert_eq!(processed.parent_span_id, published.span_id);

    // A process span is exported once settled: all of the task's spans are in.
    collector.drain().await;
    for span in &collector.spans {
        let mut texts = vec![span.name.clone()];
        texts.extend(span.attributes.iter().map(|(k, v)| format!("{k}={v}")));
        for e in &span.events {
            texts.push(e.name.clone());
            texts.extend(e.attributes.iter().map(|(k, v)| format!("{k}={v}")));
        }
        for t in texts {
            assert!(
                !t.contains(password) && !t.contains("amqp://"),
                "span {} leaks {t:?}",
                span.name
            );
        }
    }
}

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

    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(broker.publish("builtin.noop", json!({})).await);
    }
    for _ in 0..2 {
        ids.push(
            broker
                .publish("builtin.fail", json!({"times": 1, "kind": "permanent"}))
                .await,
        );
    }
    ids.push(
        broker
            .publish("builtin.fail", json!({"times": 1, "kind": "transient"}))
            .await,
    );
    ids.push(
        broker
            .publish("builtin.fail", json!({"times": 9, "kind": "transient"}))
            .await,
    );
    ids.push(broker.publish("no.such.type", json!({})).await);
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
    assert_eq!(tasks("builtin.noop", "succeeded"), 5.0, "{}", dump());
    // fail×1 transient: retried once, then succeeded; fail×9: retried twice, dead.
    assert_eq!(tasks("builtin.fail", "succeeded"), 1.0, "{}", dump());
    assert_eq!(tasks("builtin.fail", "retried"), 3.0, "{}", dump());
    assert_eq!(tasks("builtin.fail", "dead"), 3.0, "{}", dump());
    // Unknown types and bodies that are not tasks share the `unknown` label.
    assert_eq!(tasks("unknown", "dead"), 2.0, "{}", dump());
    assert_eq!(get("warden_dead_letters_total{reason=\"permanent\"}"), 2.0);
    assert_eq!(
        get("warden_dead_letters_total{reason=\"retries_exhausted\"}"),
        1.0
    );
    assert_eq!(
        get("warden_dead_letters_total{reason=\"unknown_type\"}"),
        1.0
    );
    assert_eq!(get("warden_dead_letters_total{reason=\"malformed\"}"), 1.0);
    assert_eq!(
        get("warden_retries_total{tier=\"100ms\"}"),
        3.0,
        "{}",
        dump()
    );
    assert_eq!(get("warden_parked_total"), 0.0);
    assert_eq!(
        get("warden_task_duration_seconds_count{type=\"builtin.noop\"}"),
        5.0
    );
    assert_eq!(
        get("warden_task_duration_seconds_count{type=\"builtin.fail\"}"),
        7.0,
        "every attempt of a handler is timed"
    );
    assert_eq!(get("warden_consumer_up"), 1.0);
    assert_eq!(get("warden_broker_reconnects_total"), 0.0);
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
