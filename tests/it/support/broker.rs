//! A prefix of its own on the real broker: its topology, publishing as any
//! producer would, and the queue questions tests ask.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use warden::Settings;
use warden::amqp::topology::Topology;

use super::{EventTap, WardenProc, amqp_url, connect, eventually, settings, unique_prefix};

/// Owns a prefix on the real broker; declares its topology and deletes it all
/// when dropped, even when the test panics.
pub struct TestBroker {
    pub prefix: String,
    pub settings: Settings,
    pub topology: Topology,
    pub conn: Connection,
    pub ch: Channel,
}

impl TestBroker {
    pub async fn new(test: &str) -> Self {
        Self::with(test, |_| {}).await
    }

    pub async fn with(test: &str, tweak: impl FnOnce(&mut Settings)) -> Self {
        let prefix = unique_prefix(test);
        let mut settings = settings(&prefix);
        tweak(&mut settings);
        let topology = Topology::new(&settings);
        let (conn, ch) = connect().await;
        topology.declare(&ch).await.expect("declare topology");
        Self {
            prefix,
            settings,
            topology,
            conn,
            ch,
        }
    }

    /// Publishes a body exactly as a producer in any language would: a bare
    /// AMQP publish, no warden code involved.
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8], message_id: &str) {
        self.publish_bare(routing_key, body, message_id, None).await;
    }

    /// [`Self::publish_raw`] with AMQP headers, as a producer that propagates
    /// trace context (or anything else) would send them.
    pub async fn publish_raw_with_headers(
        &self,
        routing_key: &str,
        body: &[u8],
        message_id: &str,
        headers: FieldTable,
    ) {
        self.publish_bare(routing_key, body, message_id, Some(headers))
            .await;
    }

    async fn publish_bare(
        &self,
        routing_key: &str,
        body: &[u8],
        message_id: &str,
        headers: Option<FieldTable>,
    ) {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id(message_id.into());
        let properties = match headers {
            Some(headers) => properties.with_headers(headers),
            None => properties,
        };
        self.ch
            .basic_publish(
                self.topology.tasks().into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// Publishes a task body `{"id","type","payload"}` and returns its id.
    pub async fn publish(&self, kind: &str, payload: serde_json::Value) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let body = serde_json::json!({"id": id, "type": kind, "payload": payload});
        self.publish_raw(kind, body.to_string().as_bytes(), &id)
            .await;
        id
    }

    pub async fn queue_len(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.unwrap();
        let n = message_count(&ch, queue).await.expect("queue exists");
        let _ = ch.close(200, "".into()).await;
        n
    }

    /// Every letter in `{prefix}.dead`, read the way `warden dlq list` reads them.
    pub async fn dead_letters(&self) -> Vec<warden::amqp::dlq::DeadLetter> {
        let dq = warden::amqp::dlq::DeadQueue::open(&self.settings)
            .await
            .expect("open the dead-letter queue");
        let letters = dq.list(None).await.expect("list the dead letters");
        dq.close().await;
        letters
    }

    /// Publishes a re-auth request for `channel`, as a worker that saw its
    /// token at `failed_version` refused would (or as anyone could forge one).
    pub async fn publish_reauth_request(&self, channel: &str, failed_version: u64, task_id: &str) {
        let body = serde_json::json!({
            "channel": channel,
            "failed_version": failed_version,
            "task_id": task_id,
            "at": chrono::Utc::now(),
        });
        self.ch
            .basic_publish(
                "".into(),
                self.topology.reauth().into(),
                BasicPublishOptions::default(),
                body.to_string().as_bytes(),
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }

    /// Asserts that `queue` comes to hold `n` ready messages within `within`:
    /// the broker counts returned and acked messages a moment late.
    pub async fn assert_queue_len(&self, queue: &str, n: u32, within: Duration) {
        let settled = eventually(within, async || self.queue_len(queue).await == n).await;
        assert!(
            settled,
            "{queue} holds {} messages, not {n}, after {within:?}",
            self.queue_len(queue).await
        );
    }

    pub async fn tap(&self) -> EventTap {
        EventTap::start(&self.conn, &self.topology).await
    }

    /// Environment for a worker child process on this prefix.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("WARDEN_AMQP_URL".into(), amqp_url().to_owned()),
            ("WARDEN_PREFIX".into(), self.prefix.clone()),
            ("WARDEN_FAULT_HANDLERS".into(), "true".into()),
            (
                "WARDEN_DELIVERY_LIMIT".into(),
                self.settings.delivery_limit.to_string(),
            ),
            (
                "WARDEN_RETRY__BASE_DELAY".into(),
                humantime::format_duration(self.settings.retry.base_delay).to_string(),
            ),
            (
                "WARDEN_RETRY__FACTOR".into(),
                self.settings.retry.factor.to_string(),
            ),
            (
                "WARDEN_RETRY__TIERS".into(),
                self.settings.retry.tiers.to_string(),
            ),
            (
                "WARDEN_RETRY__MAX_ATTEMPTS".into(),
                self.settings.retry.max_attempts.to_string(),
            ),
            (
                "WARDEN_TASK_TIMEOUT".into(),
                humantime::format_duration(self.settings.task_timeout).to_string(),
            ),
        ]
    }

    pub fn spawn_worker(&self, extra: &[(&str, &str)]) -> WardenProc {
        self.spawn_worker_wrapped(&[], extra)
    }

    /// A worker started under `wrapper` (see [`WardenProc::spawn_wrapped`]).
    pub fn spawn_worker_wrapped(&self, wrapper: &[&str], extra: &[(&str, &str)]) -> WardenProc {
        let mut env = self.env();
        env.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        WardenProc::spawn_wrapped(wrapper, &["worker"], &env)
    }

    /// Publishes `n` tasks of `kind` in one go (one confirm wait at the end)
    /// and returns their ids.
    pub async fn publish_many(
        &self,
        kind: &str,
        payload: serde_json::Value,
        n: usize,
    ) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        let mut confirms = Vec::with_capacity(n);
        for _ in 0..n {
            let id = uuid::Uuid::new_v4().to_string();
            let body = serde_json::json!({"id": id, "type": kind, "payload": payload});
            let confirm = self
                .ch
                .basic_publish(
                    self.topology.tasks().into(),
                    kind.into(),
                    BasicPublishOptions::default(),
                    body.to_string().as_bytes(),
                    BasicProperties::default()
                        .with_content_type("application/json".into())
                        .with_delivery_mode(2)
                        .with_message_id(id.clone().into()),
                )
                .await
                .expect("publish");
            confirms.push(confirm);
            ids.push(id);
        }
        for c in confirms {
            c.await.expect("confirm");
        }
        ids
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let topology = self.topology.clone();
        let _ = block_on_aside(async move {
            let (conn, ch) = connect().await;
            let _ = topology.delete(&ch).await;
            let _ = conn.close(200, "".into()).await;
        });
    }
}

/// Runs `work` to its end on a runtime of its own on another thread: how a
/// `Drop`, which cannot await, cleans up after a test, also one that panicked.
pub fn block_on_aside<T: Send + 'static>(
    work: impl Future<Output = T> + Send + 'static,
) -> std::thread::Result<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
    })
    .join()
}

/// Declares `queue` a durable quorum queue bound to `exchange` with
/// `routing_key`: a record of events that outlives a broker restart or the
/// loss of a node, which a tap's exclusive queue would not.
pub async fn declare_durable_record(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
) -> lapin::Result<()> {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString("quorum".into()),
    );
    let durable = lapin::options::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), durable, args).await?;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        routing_key.into(),
        lapin::options::QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

/// `queue` as a passive declaration sees it; `None` if it does not exist
/// (which closes `ch`).
async fn passive(ch: &Channel, queue: &str) -> Option<lapin::Queue> {
    warden::amqp::topology::inspect(ch, queue).await.ok()
}

/// Ready messages in `queue`, asked on `ch`; `None` if it does not exist
/// (which closes `ch`).
pub async fn message_count(ch: &Channel, queue: &str) -> Option<u32> {
    passive(ch, queue).await.map(|q| q.message_count())
}

/// Consumers on `queue`; `None` if it does not exist. Asks on a channel of
/// its own, since a passive declaration of a missing queue closes it.
pub async fn consumer_count(conn: &Connection, queue: &str) -> Option<u32> {
    let ch = conn.create_channel().await.ok()?;
    let count = passive(&ch, queue).await.map(|q| q.consumer_count());
    let _ = ch.close(200, "bye".into()).await;
    count
}

/// Deletes `queue` under its consumers, so the broker cancels them
/// (`basic.cancel`). Declaring it again is the consumers' job: declared again
/// at once from here, RabbitMQ 3.10 can race its own clean-up of the old
/// quorum queue and lose the new queue's bindings.
pub async fn delete_queue(broker: &TestBroker, queue: &str) {
    broker
        .ch
        .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
        .await
        .expect("delete the queue");
}
