//! Hostile input: whatever a producer sends, decoding ends in a clear outcome,
//! never a panic, and forged headers never buy extra attempts.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use proptest::prelude::*;
use warden::envelope::{self, Task};
use warden::outcome::{ErrorKind, RetryPolicy, Verdict, decide};

fn amqp_value() -> impl Strategy<Value = AMQPValue> {
    let leaf = prop_oneof![
        any::<i8>().prop_map(AMQPValue::ShortShortInt),
        any::<u8>().prop_map(AMQPValue::ShortShortUInt),
        any::<i16>().prop_map(AMQPValue::ShortInt),
        any::<u32>().prop_map(AMQPValue::LongUInt),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        any::<bool>().prop_map(AMQPValue::Boolean),
        any::<f64>().prop_map(AMQPValue::Double),
        any::<u64>().prop_map(AMQPValue::Timestamp),
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| AMQPValue::LongString(LongString::from(b))),
        Just(AMQPValue::Void),
    ];
    leaf.prop_recursive(3, 32, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| AMQPValue::FieldArray(FieldArray::from(v))),
            prop::collection::btree_map("[a-z-]{1,12}", inner, 0..4).prop_map(|m| {
                let mut t = FieldTable::default();
                for (k, v) in m {
                    t.insert(ShortString::from(k), v);
                }
                AMQPValue::FieldTable(t)
            }),
        ]
    })
}

fn headers() -> impl Strategy<Value = FieldTable> {
    let names = prop_oneof![
        Just("x-warden-attempts".to_owned()),
        Just("x-death".to_owned()),
        Just("x-warden-parked-at".to_owned()),
        Just("x-warden-reason".to_owned()),
        Just("x-delivery-count".to_owned()),
        "[a-z-]{1,20}",
    ];
    prop::collection::btree_map(names, amqp_value(), 0..8).prop_map(|m| {
        let mut t = FieldTable::default();
        for (k, v) in m {
            t.insert(ShortString::from(k), v);
        }
        t
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_decode_to_a_task_or_a_reason_never_a_panic(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Task::decode(&body, 1024);
    }

    #[test]
    fn json_shaped_garbage_decodes_or_is_rejected(id in ".{0,20}", kind in ".{0,300}", payload in ".{0,50}") {
        let body = format!(r#"{{"id":{id:?},"type":{kind:?},"payload":{payload:?}}}"#);
        if let Ok(t) = Task::decode(body.as_bytes(), 1 << 20) {
            prop_assert!(!t.id.trim().is_empty() && !t.kind.trim().is_empty() && t.kind.len() <= 255);
        }
    }

    #[test]
    fn forged_headers_never_grant_extra_attempts_or_skip_the_dead_letter_queue(h in headers()) {
        let attempt = envelope::attempt_of(Some(&h));
        prop_assert!(attempt >= 1);
        let policy = RetryPolicy { max_attempts: 5, tiers: 3 };
        // Whatever the headers say, a failing task is at most `max_attempts - attempt`
        // retries away from the dead-letter queue: attempts only ever grow.
        let outcome = decide(Verdict::Failed(ErrorKind::Transient), attempt, policy);
        if let warden::outcome::Outcome::Retry { next_attempt, .. } = outcome {
            prop_assert!(next_attempt > attempt && next_attempt <= policy.max_attempts);
        }
        let props = BasicProperties::default().with_headers(h);
        let _ = warden::dlq::describe(b"{}", &props, "rk", 5);
        let _ = envelope::broker_death_reason(props.headers().as_ref());
    }
}

#[test]
fn a_ten_megabyte_body_is_too_large_without_being_parsed() {
    let body = vec![b'{'; 10 * 1024 * 1024];
    assert!(matches!(
        Task::decode(&body, 1024 * 1024),
        Err(envelope::Reject::TooLarge { .. })
    ));
}

#[test]
fn invalid_utf8_in_strings_is_malformed() {
    let body = b"{\"id\":\"\xff\xfe\",\"type\":\"builtin.noop\"}";
    assert!(matches!(
        Task::decode(body, 1024),
        Err(envelope::Reject::Malformed(_))
    ));
}

/// One random hostile body: raw bytes, invalid UTF-8, JSON nested deeper than
/// any parser should follow, JSON missing its fields, or bytes that only look
/// like a task.
fn hostile_body(rng: &mut impl rand::Rng, i: usize) -> Vec<u8> {
    match i % 5 {
        0 => {
            let mut b = vec![0u8; rng.random_range(0..512)];
            rng.fill(&mut b[..]);
            b
        }
        1 => {
            let mut b = br#"{"id":"x","type":"builtin.noop","payload":""#.to_vec();
            b.extend([0xff, 0xfe, 0xc3, 0x28]);
            b.extend(br#""}"#);
            b
        }
        2 => {
            let depth = rng.random_range(100..5_000);
            let mut b = "[".repeat(depth).into_bytes();
            b.extend("]".repeat(depth).into_bytes());
            b
        }
        3 => serde_json::to_vec(&serde_json::json!({"payload": rng.random::<u64>()})).unwrap(),
        _ => format!(
            "{{\"id\": {}, \"type\": [\"builtin.noop\"], \"payload\": {{",
            rng.random::<u32>()
        )
        .into_bytes(),
    }
}

#[tokio::test]
async fn a_flood_of_ten_thousand_random_bodies_goes_dead_with_reasons_and_valid_tasks_between_them_succeed()
 {
    use rand::SeedableRng as _;
    const BAD: usize = 10_000;
    let seed: u64 = rand::random();
    eprintln!("body seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let broker = support::TestBroker::new("flood").await;
    let tap = broker.tap().await;
    let worker = broker.spawn_worker(&[("WARDEN_CONCURRENCY", "64")]);
    worker.wait_ready(Duration::from_secs(20)).await;

    let (mut bad, mut good) = (Vec::new(), Vec::new());
    for i in 0..BAD {
        let id = format!("flood-{i}");
        broker
            .publish_raw("builtin.noop", &hostile_body(&mut rng, i), &id)
            .await;
        bad.push(id);
        if i % 100 == 0 {
            good.push(broker.publish("builtin.noop", serde_json::json!({})).await);
        }
    }
    let mut all = bad.clone();
    all.extend(good.iter().cloned());
    tap.wait_terminal(&all, Duration::from_secs(300)).await;

    let terminal = tap.terminal();
    assert!(good.iter().all(|id| terminal[id] == ["task.succeeded"]));
    let dq = warden::dlq::DeadQueue::open(&broker.settings)
        .await
        .unwrap();
    let dead: HashMap<String, String> = dq
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.id, d.reason))
        .collect();
    dq.close().await;
    for id in &bad {
        let reason = dead
            .get(id)
            .unwrap_or_else(|| panic!("{id} is not in the dead-letter queue"));
        assert!(
            ["malformed", "too_large", "unknown_type"].contains(&reason.as_str()),
            "{id}: {reason}"
        );
    }
    let mut worker = worker;
    assert!(
        worker.child.try_wait().unwrap().is_none(),
        "the worker is alive"
    );
    assert!(worker.ready().await);
}
