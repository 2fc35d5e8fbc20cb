//! Test support: unique prefixes against the real broker, the real binary
//! spawned as a child process, an event tap, and a TCP proxy that can cut the
//! worker's connection on command.
#![allow(dead_code, missing_docs)]

pub mod endings;
pub mod otel;
pub mod provider_browser;
pub mod provider_http;
pub mod proxy;
pub mod stack;
pub mod tls;

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use warden::Settings;
use warden::amqp::events::Event;
use warden::amqp::topology::Topology;

pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

static BROKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Points every helper of this test binary at another broker: a cluster's
/// comma-separated address list (`scripts/cluster.sh url`). Set once, before
/// the first [`TestBroker`]; workers spawned from it get the list too.
pub fn use_broker(urls: &str) {
    assert!(
        BROKER.set(urls.to_owned()).is_ok(),
        "use_broker is set once"
    );
}

/// The broker the helpers use: [`AMQP_URL`] unless [`use_broker`] said otherwise.
pub fn amqp_url() -> &'static str {
    BROKER.get().map_or(AMQP_URL, String::as_str)
}

/// A unique prefix per test, so tests never see each other's messages.
pub fn unique_prefix(test: &str) -> String {
    format!(
        "t-{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

pub fn settings(prefix: &str) -> Settings {
    Settings {
        prefix: prefix.to_owned(),
        amqp_url: amqp_url().to_owned().into(),
        ..Settings::default()
    }
}

/// How often [`eventually`] asks again.
const POLL: Duration = Duration::from_millis(25);

/// Asks `cond` every [`POLL`] until it holds or `within` has passed, and says
/// whether it held: the one way tests wait for a condition instead of sleeping
/// a fixed time. The caller asserts on the answer, with whatever it wants the
/// failure to show (a log, the state it waited on).
#[must_use = "assert that the condition held"]
pub async fn eventually(within: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn connect() -> (Connection, Channel) {
    // The first node of a cluster that answers (a test may have one down).
    let mut conn = None;
    for url in warden::config::addresses(amqp_url()) {
        if let Ok(c) = Connection::connect(url, ConnectionProperties::default()).await {
            conn = Some(c);
            break;
        }
    }
    let conn = conn.unwrap_or_else(|| panic!("no broker answers at {}", amqp_url()));
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

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

/// (routing key, event id, `traceparent` header) of one event.
pub type CarriedContext = (String, String, Option<String>);

/// Collects lifecycle events from `{prefix}.events` in the background.
pub struct EventTap {
    pub events: Arc<Mutex<Vec<(String, Event)>>>,
    /// (routing key, event id, `traceparent` header) of every event.
    pub traceparents: Arc<Mutex<Vec<CarriedContext>>>,
}

impl EventTap {
    async fn start(conn: &Connection, topology: &Topology) -> Self {
        let ch = conn.create_channel().await.unwrap();
        let mut consumer =
            warden::amqp::topology::private_consumer(&ch, &topology.events(), &["#"], false)
                .await
                .unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let traceparents = Arc::new(Mutex::new(Vec::new()));
        let (sink, tp_sink) = (events.clone(), traceparents.clone());
        tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let _ = d.ack(BasicAckOptions::default()).await;
                if let Ok(e) = serde_json::from_slice::<Event>(&d.data) {
                    let tp = d.properties.headers().as_ref().and_then(|h| {
                        match h.inner().get("traceparent") {
                            Some(lapin::types::AMQPValue::LongString(s)) => Some(s.to_string()),
                            _ => None,
                        }
                    });
                    tp_sink
                        .lock()
                        .unwrap()
                        .push((d.routing_key.to_string(), e.id.clone(), tp));
                    sink.lock().unwrap().push((d.routing_key.to_string(), e));
                }
            }
            drop(ch);
        });
        Self {
            events,
            traceparents,
        }
    }

    /// Terminal state per id: the routing keys of its `task.succeeded` / `task.dead` events.
    pub fn terminal(&self) -> HashMap<String, Vec<String>> {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (rk, e) in self.events.lock().unwrap().iter() {
            if rk == "task.succeeded" || rk == "task.dead" {
                m.entry(e.id.clone()).or_default().push(rk.clone());
            }
        }
        m
    }

    /// Every terminal event per id: its routing key and dead-letter reason.
    pub fn endings(&self) -> endings::Endings {
        let mut m = endings::Endings::new();
        for (rk, e) in self.events.lock().unwrap().iter() {
            if rk == "task.succeeded" || rk == "task.dead" {
                m.entry(e.id.clone())
                    .or_default()
                    .push((rk.clone(), e.reason.clone()));
            }
        }
        m
    }

    pub fn count(&self, routing_key: &str) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(rk, _)| rk == routing_key)
            .count()
    }

    /// The first event published with `routing_key`.
    pub fn first(&self, routing_key: &str) -> Option<Event> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(rk, _)| rk == routing_key)
            .map(|(_, e)| e.clone())
    }

    /// Asserts that each of `ids` ended exactly once, as `task.succeeded`.
    pub fn assert_succeeded(&self, ids: &[String]) {
        let terminal = self.terminal();
        let other: Vec<_> = ids
            .iter()
            .filter(|id| terminal.get(*id).is_none_or(|t| t != &["task.succeeded"]))
            .map(|id| (id, terminal.get(id)))
            .collect();
        assert!(
            other.is_empty(),
            "{} of {} tasks did not simply succeed: {:?}",
            other.len(),
            ids.len(),
            &other[..other.len().min(10)]
        );
    }

    pub fn of(&self, id: &str) -> Vec<(String, Event)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| e.id == id)
            .cloned()
            .collect()
    }

    /// Waits until every id in `ids` has reached a terminal event.
    pub async fn wait_terminal(&self, ids: &[String], timeout: Duration) {
        let ended = async || {
            let t = self.terminal();
            ids.iter().all(|id| t.contains_key(id))
        };
        assert!(
            eventually(timeout, ended).await,
            "not all {} tasks reached a terminal state within {timeout:?}",
            ids.len()
        );
    }
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

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `warden` binary as a child process; SIGKILLed on drop.
pub struct WardenProc {
    pub child: Child,
    pub admin_port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WardenProc {
    pub fn spawn(args: &[&str], env: &[(String, String)]) -> Self {
        Self::spawn_wrapped(&[], args, env)
    }

    /// [`Self::spawn`] under `wrapper`, a command that execs the rest (e.g.
    /// `prlimit --data=N --`, a container's memory limit): the process is
    /// still warden's own.
    pub fn spawn_wrapped(wrapper: &[&str], args: &[&str], env: &[(String, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let admin_port = free_port();
        let bin = env!("CARGO_BIN_EXE_warden");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(args)
            .env_remove("WARDEN_CONFIG")
            .env("WARDEN_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
            .env("WARDEN_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,lapin=off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn warden");
        Self {
            child,
            admin_port,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.admin_port);
        let r = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.unwrap_or_default()))
    }

    /// `/metrics` as sample → value (`name{labels}` exactly as exported).
    pub async fn metrics(&self) -> HashMap<String, f64> {
        let (status, text) = self.get("/metrics").await.expect("/metrics answers");
        assert_eq!(status, 200);
        parse_metrics(&text)
    }

    pub async fn ready(&self) -> bool {
        matches!(self.get("/readyz").await, Some((200, _)))
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        assert!(
            eventually(timeout, async || self.ready().await).await,
            "worker not ready after {timeout:?}; log:\n{}",
            self.logs()
        );
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut status = None;
        let child = &mut self.child;
        let exited = eventually(timeout, async || {
            status = child.try_wait().unwrap();
            status.is_some()
        })
        .await;
        assert!(
            exited,
            "warden did not exit within {timeout:?}; log:\n{}",
            self.logs()
        );
        status.expect("exited")
    }
}

impl Drop for WardenProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion with `args` and env, returning (code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.args(args)
        .env_remove("WARDEN_CONFIG")
        .env("WARDEN_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,lapin=off");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run warden");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses Prometheus/OpenMetrics text into sample → value; comments skipped.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}
