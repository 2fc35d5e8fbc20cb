//! One trace from a foreign producer through a retry, against a real OTLP
//! collector; a CLI publish continued by the worker; no secret in any span.

use std::time::Duration;

use fake_opentelemetry_collector::ExportedSpan;
use lapin::types::{AMQPValue, FieldTable};
use serde_json::json;

use super::READY;
use crate::support;
use crate::support::otel::{Collector, attr, event_attr, summary};
use crate::support::{TestBroker, run_cli};

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
    let body = publish_mid_trace(&broker, trace_id, producer_span).await;
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

    let attempts = Attempts {
        first,
        second,
        retry_copy,
    };
    assert_conventions(&attempts, &tasks, &delay, body.len());
    assert_retry_logged_in(&worker.logs(), trace_id, first);
}

/// Publishes a `builtin.fail` task (fails once) as a foreign producer in the
/// middle of trace `trace_id`, under its span `producer_span`; returns the body.
async fn publish_mid_trace(broker: &TestBroker, trace_id: &str, producer_span: &str) -> String {
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
    body
}

/// The spans of a task that failed once: both attempts' process spans and
/// the publish of the retry copy between them.
struct Attempts<'a> {
    first: &'a ExportedSpan,
    second: &'a ExportedSpan,
    retry_copy: &'a ExportedSpan,
}

/// Asserts that `span` carries each `(key, value)` attribute.
fn assert_attrs(span: &ExportedSpan, expected: &[(&str, &str)]) {
    for (key, value) in expected {
        assert_eq!(
            attr(span, key).as_deref(),
            Some(*value),
            "{} {key}: {:#?}",
            span.name,
            span.attributes
        );
    }
}

/// Kinds, semantic-convention attributes and the settle events of the
/// spans of `traced-1`, a task of `body_len` bytes on queue `tasks`, retried
/// through exchange `delay`.
fn assert_conventions(spans: &Attempts, tasks: &str, delay: &str, body_len: usize) {
    let Attempts {
        first,
        second,
        retry_copy,
    } = *spans;
    assert_eq!(first.kind, "SPAN_KIND_CONSUMER");
    assert_eq!(second.kind, "SPAN_KIND_CONSUMER");
    assert_eq!(retry_copy.kind, "SPAN_KIND_PRODUCER");
    let size = body_len.to_string();
    let message = [
        ("messaging.system", "rabbitmq"),
        ("messaging.rabbitmq.destination.routing_key", "builtin.fail"),
        ("messaging.message.id", "traced-1"),
        ("messaging.message.body.size", size.as_str()),
    ];
    for p in [first, second] {
        assert_attrs(p, &message);
        assert_attrs(
            p,
            &[
                ("messaging.destination.name", tasks),
                ("messaging.operation.name", "process"),
                ("messaging.operation.type", "process"),
                ("warden.task.type", "builtin.fail"),
                ("warden.channel", "acme-main"),
            ],
        );
        assert!(attr(p, "messaging.rabbitmq.message.delivery_tag").is_some());
    }
    assert_attrs(
        first,
        &[("warden.outcome", "retried"), ("error.type", "transient")],
    );
    assert_eq!(
        first.status.as_ref().map(|s| s.code.as_str()),
        Some("STATUS_CODE_ERROR")
    );
    assert_attrs(second, &[("warden.outcome", "succeeded")]);
    assert_eq!(attr(second, "error.type"), None);
    assert_attrs(retry_copy, &message);
    assert_attrs(
        retry_copy,
        &[
            ("messaging.destination.name", delay),
            ("messaging.operation.name", "publish"),
            ("messaging.operation.type", "send"),
        ],
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
}

/// Asserts that the worker's log line of the retry lies inside the first
/// attempt's process span of trace `trace_id`, and says so.
fn assert_retry_logged_in(logs: &str, trace_id: &str, first: &ExportedSpan) {
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
