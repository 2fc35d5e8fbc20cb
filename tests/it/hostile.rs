//! Hostile input: whatever a producer sends, decoding ends in a clear outcome,
//! never a panic, and forged headers never buy extra attempts.

use std::collections::HashMap;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use proptest::prelude::*;
use warden::amqp::envelope::{self, Task};
use warden::outcome::{ErrorKind, RetryPolicy, Verdict, decide};

use crate::support;

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
        let _ = warden::amqp::dlq::describe(b"{}", &props, "rk", 5);
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

    tap.assert_succeeded(&good);
    let dead: HashMap<String, String> = broker
        .dead_letters()
        .await
        .into_iter()
        .map(|d| (d.id, d.reason))
        .collect();
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

// ---------------------------------------------------------------------------------------------
// The command line: every input ends in a result or a clear error, never a panic (exit 101).
// ---------------------------------------------------------------------------------------------

/// A broker address nothing listens on: commands whose input is valid fail
/// with "unreachable" (69) instead of publishing anything.
const NO_BROKER: &str = "amqp://guest:guest@127.0.0.1:1/%2f";

fn assert_no_panic(what: &str, (code, out, err): &(i32, String, String)) {
    assert!(
        *code != 101 && !err.contains("panicked"),
        "{what}: exit {code}\n{out}\n{err}"
    );
}

/// A token store of its own: a SQLite file and a fresh key.
struct TokenEnv {
    dir: tempfile::TempDir,
    key: String,
}

impl TokenEnv {
    fn new() -> Self {
        use base64::Engine as _;
        Self {
            dir: tempfile::tempdir().unwrap(),
            key: base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>()),
        }
    }

    fn url(&self) -> String {
        format!("sqlite://{}/tokens.db", self.dir.path().display())
    }
}

#[test]
fn publish_refuses_ids_types_and_channels_the_wire_cannot_carry() {
    let env = [("WARDEN_AMQP_URL", NO_BROKER)];
    let long_type = "t".repeat(256);
    let out = support::run_cli(&["publish", "--type", &long_type], &env);
    assert_no_panic("--type", &out);
    assert_eq!(out.0, 1, "{out:?}");
    assert!(out.2.contains("`type` is longer than 255 bytes"), "{out:?}");

    let long_channel = "c".repeat(201);
    let out = support::run_cli(
        &[
            "publish",
            "--type",
            "builtin.noop",
            "--channel",
            &long_channel,
        ],
        &env,
    );
    assert_no_panic("--channel", &out);
    assert!(
        out.2.contains("`channel` is longer than 200 bytes"),
        "{out:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tasks.ndjson");
    std::fs::write(
        &file,
        format!(
            "{{\"type\":\"builtin.noop\"}}\n{{\"id\":\"{}\",\"type\":\"builtin.noop\"}}\n",
            "i".repeat(256)
        ),
    )
    .unwrap();
    let out = support::run_cli(&["publish", "--file", file.to_str().unwrap()], &env);
    assert_no_panic("--file", &out);
    assert_eq!(out.0, 1, "{out:?}");
    assert!(
        out.2.contains("tasks.ndjson:2") && out.2.contains("`id` is longer than 255 bytes"),
        "{out:?}"
    );
}

#[test]
fn token_set_refuses_an_absurd_expires_in_and_channels_keeps_listing() {
    let store = TokenEnv::new();
    let url = store.url();
    let env = [
        ("WARDEN_TOKEN_STORE", url.as_str()),
        ("WARDEN_TOKEN_KEY", store.key.as_str()),
    ];
    let set = ["token", "set", "--channel", "acme", "--provider", "demo"];
    for expires_in in [
        "1000000000000000",
        "300000000000",
        "-5",
        "9223372036854775807",
    ] {
        let out = support::run_cli_with_stdin(
            &set,
            &env,
            &format!(r#"{{"access_token":"a","expires_in":{expires_in}}}"#),
        );
        assert_no_panic(expires_in, &out);
        assert_eq!(out.0, 1, "{expires_in}: {out:?}");
        assert!(out.2.contains("out of range"), "{expires_in}: {out:?}");
    }
    let out = support::run_cli_with_stdin(&set, &env, r#"{"access_token":"a","expires_in":3600}"#);
    assert_eq!(out.0, 0, "{out:?}");
    let out = support::run_cli(&["channels", "--json"], &env);
    assert_eq!(out.0, 0, "{out:?}");
    assert!(out.1.contains("\"channel\":\"acme\""), "{out:?}");
}

proptest! {
    // Each case runs the real binary a few times: a few dozen cases cover the
    // boundaries (empty, 255/256 bytes, multi-byte characters, huge numbers).
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_cli_input_makes_warden_panic(
        kind in "[a-z.é]{0,300}",
        id in "[a-z0-9é]{0,300}",
        channel in "[a-z.é]{0,300}",
        expires_in in prop_oneof![any::<i64>().prop_map(|n| n.to_string()), Just("1e300".to_owned())],
    ) {
        let env = [("WARDEN_AMQP_URL", NO_BROKER)];
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tasks.ndjson");
        let line = serde_json::json!({"id": id, "type": kind, "channel": channel});
        std::fs::write(&file, format!("{line}\n")).unwrap();
        let out = support::run_cli(&["publish", "--file", file.to_str().unwrap()], &env);
        assert_no_panic("publish --file", &out);
        let out = support::run_cli(
            &["publish", "--type", &kind, "--channel", &channel, "--count", "1"],
            &env,
        );
        assert_no_panic("publish --type", &out);

        let store = TokenEnv::new();
        let url = store.url();
        let token_env = [
            ("WARDEN_TOKEN_STORE", url.as_str()),
            ("WARDEN_TOKEN_KEY", store.key.as_str()),
        ];
        let out = support::run_cli_with_stdin(
            &["token", "set", "--channel", &channel, "--provider", &kind],
            &token_env,
            &format!(r#"{{"access_token":"{id}x","expires_in":{expires_in}}}"#),
        );
        assert_no_panic("token set", &out);
        let out = support::run_cli(&["channels"], &token_env);
        assert_no_panic("channels", &out);
        prop_assert_eq!(out.0, 0, "{:?}", out);

        // The dead-letter commands' filters and the topology commands, with no
        // broker to reach: argument handling must fail cleanly first.
        for args in [
            vec!["dlq", "list", "--limit", &expires_in],
            vec!["dlq", "replay", "--reason", &kind, "--type", &id, "--channel", &channel, "--dry-run"],
            vec!["dlq", "purge", "--reason", &id, "--type", &kind, "--yes"],
            vec!["topology", "migrate"],
        ] {
            let out = support::run_cli(&args, &env);
            assert_no_panic(&args.join(" "), &out);
        }
        // Any value in any setting: a clear configuration error (64) or a
        // valid configuration, never a crash.
        let out = support::run_cli(
            &["config", "check", "--skip-secrets"],
            &[
                ("WARDEN_PREFIX", kind.as_str()),
                ("WARDEN_CONCURRENCY", expires_in.as_str()),
                ("WARDEN_SANDBOX_MEMORY", id.as_str()),
                ("WARDEN_TASK_TYPES", channel.as_str()),
                ("WARDEN_DELIVERY_LIMIT", expires_in.as_str()),
                ("WARDEN_AMQP_URL", &format!("amqp://{id}@{kind}:{expires_in}/")),
            ],
        );
        assert_no_panic("config check", &out);
        prop_assert!(out.0 == 0 || out.0 == 64, "{:?}", out);
    }
}

#[tokio::test]
async fn dlq_replay_ignores_a_forged_routing_key_header() {
    use lapin::options::BasicPublishOptions;
    let broker = support::TestBroker::new("forgedkey").await;
    let mut headers = FieldTable::default();
    envelope::set_text(&mut headers, envelope::REASON_HEADER, "permanent");
    envelope::set_text(&mut headers, envelope::ROUTING_KEY_HEADER, &"k".repeat(300));
    let task = Task::new("builtin.noop", serde_json::json!({}));
    broker
        .ch
        .basic_publish(
            broker.topology.dead().into(),
            "builtin.noop".into(),
            BasicPublishOptions::default(),
            &task.to_body(),
            BasicProperties::default()
                .with_message_id(task.id.clone().into())
                .with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let env = [("WARDEN_PREFIX", broker.prefix.as_str())];
    broker
        .assert_queue_len(&broker.topology.dead(), 1, Duration::from_secs(10))
        .await;
    let out = support::run_cli(&["dlq", "replay"], &env);
    assert_no_panic("dlq replay", &out);
    assert_eq!(out.0, 0, "{out:?}");
    assert!(out.1.contains("replayed 1"), "{out:?}");
    assert_eq!(broker.queue_len(&broker.topology.tasks()).await, 1);
}

#[tokio::test]
async fn a_channel_name_past_the_cap_is_dead_as_malformed_and_the_worker_lives() {
    let broker = support::TestBroker::new("longchan").await;
    let tap = broker.tap().await;
    let worker = broker.spawn_worker(&[]);
    worker.wait_ready(Duration::from_secs(20)).await;
    let mut ids = Vec::new();
    for len in [envelope::MAX_CHANNEL_BYTES + 1, 300, 1 << 16] {
        let mut task = Task::new("builtin.noop", serde_json::json!({}));
        task.channel = Some("c".repeat(len));
        broker
            .publish_raw("builtin.noop", &task.to_body(), &task.id)
            .await;
        ids.push(task.id);
    }
    let fine = broker.publish("builtin.noop", serde_json::json!({})).await;
    ids.push(fine.clone());
    tap.wait_terminal(&ids, Duration::from_secs(30)).await;
    let endings = tap.endings();
    for id in &ids[..3] {
        assert_eq!(
            endings[id],
            [("task.dead".to_owned(), Some("malformed".to_owned()))],
            "{id}"
        );
    }
    assert_eq!(tap.terminal()[&fine], ["task.succeeded"]);
    assert!(worker.ready().await);
}
