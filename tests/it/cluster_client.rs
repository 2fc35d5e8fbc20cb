//! What a cluster asks of the client, shown on the machine's one broker: a
//! copy the broker refuses (a nack, as while a quorum queue elects a leader)
//! is sent again on the same channel with a bounded backoff, and
//! `WARDEN_AMQP_URL` takes a list of broker addresses. The cluster itself is
//! `tests/cluster.rs`.

use std::time::{Duration, Instant};

use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};

use crate::support;
use warden::amqp::publish::{Outgoing, publish_confirmed_untraced};

/// A queue on the machine's broker that holds one message and refuses more
/// (`reject-publish`: the broker nacks), already full; deleted with its channel.
async fn full_queue() -> (lapin::Connection, lapin::Channel, String) {
    let conn = Connection::connect(support::AMQP_URL, ConnectionProperties::default())
        .await
        .expect("broker at 127.0.0.1:5672");
    let ch = conn.create_channel().await.unwrap();
    ch.confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await
        .unwrap();
    let queue = support::unique_prefix("nack");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare(
        queue.as_str().into(),
        lapin::options::QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    publish_confirmed_untraced(&ch, &message(&queue, b"first"))
        .await
        .expect("an empty queue takes the first message");
    (conn, ch, queue)
}

/// `body` to `queue` through the default exchange, mandatory.
fn message<'a>(queue: &'a str, body: &'a [u8]) -> Outgoing<'a> {
    Outgoing {
        exchange: "",
        routing_key: queue,
        body,
        properties: Default::default(),
        mandatory: true,
    }
}

#[tokio::test]
async fn a_nacked_publish_is_retried_on_the_same_channel_until_the_broker_takes_it() {
    let (_conn, ch, queue) = full_queue().await;
    let drain = {
        let (ch, queue) = (ch.clone(), queue.clone());
        async move {
            // The refusal lasts about as long as a quorum leader election.
            tokio::time::sleep(Duration::from_millis(120)).await;
            let got = ch
                .basic_get(
                    queue.as_str().into(),
                    lapin::options::BasicGetOptions { no_ack: true },
                )
                .await
                .unwrap();
            assert!(got.is_some(), "the first message was there");
        }
    };
    let second = message(&queue, b"second");
    let t0 = Instant::now();
    let (published, ()) = tokio::join!(publish_confirmed_untraced(&ch, &second), drain);
    published.expect("taken once the queue had room, on the same channel");
    assert!(
        t0.elapsed() >= warden::amqp::publish::NACK_BACKOFF,
        "it was refused at least once first ({:?})",
        t0.elapsed()
    );
    assert!(ch.status().connected(), "the channel is still open");
}

#[tokio::test]
async fn a_broker_that_keeps_refusing_ends_in_nacked_after_the_bounded_backoff() {
    let (_conn, ch, queue) = full_queue().await;
    let t0 = Instant::now();
    let err = publish_confirmed_untraced(&ch, &message(&queue, b"second"))
        .await
        .expect_err("the queue stays full");
    assert!(
        matches!(err, warden::amqp::publish::PublishError::Nacked { .. }),
        "{err}"
    );
    let floor =
        warden::amqp::publish::NACK_BACKOFF * ((1 << warden::amqp::publish::NACK_RETRIES) - 1);
    assert!(
        t0.elapsed() >= floor && t0.elapsed() < floor + Duration::from_secs(5),
        "retried {} times over {:?} (backoff floor {floor:?})",
        warden::amqp::publish::NACK_RETRIES,
        t0.elapsed()
    );
}

#[test]
fn config_check_takes_a_list_of_broker_addresses_and_names_a_bad_one() {
    let list = "amqp://u:pw1@n1:5672/%2f, amqp://u:pw2@n2:5672/%2f,amqp://u:pw3@n3:5672/%2f";
    let (code, out, err) = support::run_cli(&["config", "check"], &[("WARDEN_AMQP_URL", list)]);
    assert_eq!(code, 0, "{err}");
    // Every address is shown, none with its password.
    for node in ["n1", "n2", "n3"] {
        assert!(out.contains(&format!("@{node}:5672")), "{out}");
    }
    assert!(!out.contains("pw1") && !out.contains("pw3"), "{out}");
    for (bad, why) in [
        ("amqp://n1:5672/%2f,http://n2", "must start with amqp://"),
        (
            "amqp://n1:5672/%2f,amqps://n2:5671/%2f",
            "mixes amqp:// and amqps://",
        ),
        (" , ", "at least one broker address"),
    ] {
        let (code, _, err) = support::run_cli(&["config", "check"], &[("WARDEN_AMQP_URL", bad)]);
        assert_eq!(code, 64, "{bad}: {err}");
        assert!(err.contains(why), "{bad}: {err}");
    }
}
