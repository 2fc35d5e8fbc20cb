//! The bench's own corner of the broker: a `bench-<uuid>` prefix with the
//! worker's full topology, a publisher for prefills, polling helpers, and the
//! cleanup that deletes it all.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use lapin::options::{
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection};

use warden::amqp::envelope::Task;
use warden::amqp::publish::Publisher;
use warden::amqp::topology::Topology;
use warden::config::Settings;

/// How long a condition may make no progress before the bench gives up.
pub const STALL: Duration = Duration::from_secs(60);

/// Confirms kept in flight while prefilling.
const PREFILL_WINDOW: usize = 512;

/// The task every drain runs.
pub const NOOP: &str = "builtin.noop";

/// A throwaway prefix on the broker and the connections the bench drives it with.
pub struct BenchEnv {
    /// The settings every worker of the bench starts from (prefix replaced).
    pub settings: Settings,
    /// Its topology.
    pub topology: Topology,
    conn: Connection,
    ch: Channel,
    publisher: Publisher,
    /// Steps that left messages behind: reported with the figures.
    leftovers: std::sync::Mutex<Vec<String>>,
}

impl std::fmt::Debug for BenchEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchEnv")
            .field("prefix", &self.settings.prefix)
            .finish_non_exhaustive()
    }
}

/// A fresh `bench-<uuid>` prefix based on `base`.
#[must_use]
pub fn bench_settings(base: &Settings) -> Settings {
    let mut s = base.clone();
    s.prefix = format!("bench-{}", uuid::Uuid::new_v4().simple());
    s
}

/// The queue that stands in for an event consumer (a dashboard) while events
/// are on, so that events are stored as they would be in production rather
/// than dropped as unroutable.
#[must_use]
pub fn events_sink(settings: &Settings) -> String {
    format!("{}.bench-events", settings.prefix)
}

impl BenchEnv {
    /// Connects and declares the topology of `settings.prefix`.
    ///
    /// # Errors
    /// The broker is unreachable or refuses the declarations.
    pub async fn open(settings: Settings) -> anyhow::Result<Self> {
        let conn =
            warden::amqp::broker::connect(&settings, "bench", Duration::from_secs(5)).await?;
        let ch = conn.create_channel().await?;
        let topology = Topology::new(&settings);
        topology.declare(&ch).await?;
        let mut quorum = FieldTable::default();
        quorum.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString("quorum".into()),
        );
        ch.queue_declare(
            events_sink(&settings).into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            quorum,
        )
        .await?;
        ch.queue_bind(
            events_sink(&settings).into(),
            topology.events().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        let publisher = Publisher::connect(&settings).await?;
        Ok(Self {
            settings,
            topology,
            conn,
            ch,
            publisher,
            leftovers: std::sync::Mutex::default(),
        })
    }

    /// What [`BenchEnv::expect_drained`] found left behind, step by step.
    #[must_use]
    pub fn leftovers(&self) -> Vec<String> {
        self.leftovers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The bench's own connection (direct to the broker).
    #[must_use]
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The warden publisher the prefills use.
    #[must_use]
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Ready messages in `queue`.
    ///
    /// # Errors
    /// Broker errors.
    pub async fn depth_of(&self, queue: &str) -> anyhow::Result<u32> {
        Ok(self.inspect(queue).await?.message_count())
    }

    /// Consumers on `queue`.
    ///
    /// # Errors
    /// Broker errors.
    pub async fn consumers_of(&self, queue: &str) -> anyhow::Result<u32> {
        Ok(self.inspect(queue).await?.consumer_count())
    }

    async fn inspect(&self, queue: &str) -> lapin::Result<lapin::Queue> {
        warden::amqp::topology::inspect(&self.ch, queue).await
    }

    /// Ready messages in `{p}.tasks`.
    ///
    /// # Errors
    /// Broker errors.
    pub async fn depth(&self) -> anyhow::Result<u32> {
        self.depth_of(&self.topology.tasks()).await
    }

    /// Empties `{p}.tasks` and the events sink.
    ///
    /// # Errors
    /// Broker errors.
    pub async fn purge(&self) -> anyhow::Result<()> {
        for q in [self.topology.tasks(), events_sink(&self.settings)] {
            self.ch
                .queue_purge(q.into(), QueuePurgeOptions::default())
                .await?;
        }
        Ok(())
    }

    /// Publishes `n` `builtin.noop` tasks with pipelined confirms (warden's
    /// own [`Publisher::publish_all`]) into an empty `{p}.tasks`, and waits
    /// until the queue reports all of them.
    ///
    /// # Errors
    /// Broker errors, or the queue not reaching `n`.
    pub async fn prefill(&self, n: u64, progress: impl FnMut()) -> anyhow::Result<()> {
        self.purge().await?;
        let tasks = (0..n).map(|_| Task::new(NOOP, serde_json::json!({})));
        self.publisher
            .publish_all(tasks, PREFILL_WINDOW, progress)
            .await
            .context("prefilling")?;
        let want = u32::try_from(n).unwrap_or(u32::MAX);
        let mut poll = Poller::new("the prefill to show in the queue", Duration::from_millis(5));
        let mut last = None;
        loop {
            let d = self.depth().await?;
            if d >= want {
                return Ok(());
            }
            poll.wait(last.replace(d) != Some(d)).await?;
        }
    }

    /// After a drain: everything should have been acknowledged. A consumer that
    /// went away with unacked messages hands them back, so a non-empty queue
    /// means acks that never reached the broker (the messages are not lost:
    /// they are delivered again). The figures stay valid, since the clock
    /// stopped at n settled tasks; the leftovers are reported with them and
    /// the next prefill starts from an empty queue.
    ///
    /// # Errors
    /// The broker cannot be asked.
    pub async fn expect_drained(&self, what: &str) -> anyhow::Result<()> {
        // A quorum queue's message count comes from statistics that trail its
        // log by a moment: right after a fast drain it can still show a few.
        // Messages really left behind stay, so look again for a while.
        let settle = Instant::now() + Duration::from_secs(3);
        let mut left = self.depth().await?;
        while left > 0 && Instant::now() < settle {
            tokio::time::sleep(Duration::from_millis(50)).await;
            left = self.depth().await?;
        }
        if left > 0 {
            let note = format!(
                "{what}: {left} message(s) were back in {} after the drain",
                self.topology.tasks()
            );
            tracing::warn!("{note}");
            self.leftovers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(note);
        }
        Ok(())
    }

    /// Deletes every queue and exchange of the prefix, on a fresh connection
    /// when the bench's own one is gone.
    ///
    /// # Errors
    /// The broker is unreachable or refuses.
    pub async fn cleanup(&self) -> anyhow::Result<()> {
        if self.delete_on(&self.ch).await.is_err() {
            let conn = warden::amqp::broker::connect(
                &self.settings,
                "bench-cleanup",
                Duration::from_secs(5),
            )
            .await?;
            self.delete_on(&conn.create_channel().await?).await?;
            let _ = conn.close(200, "bye".into()).await;
        }
        Ok(())
    }

    async fn delete_on(&self, ch: &Channel) -> lapin::Result<()> {
        self.topology.delete(ch).await?;
        ch.queue_delete(
            events_sink(&self.settings).into(),
            QueueDeleteOptions::default(),
        )
        .await?;
        Ok(())
    }

    /// Closes the bench's connections.
    pub async fn close(self) {
        self.publisher.close().await;
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

/// Waits between looks at a condition, and gives up when nothing has moved
/// for [`STALL`], however long the whole wait takes (a drain at concurrency 1
/// of a large backlog is slow, but moving).
///
/// ```ignore
/// let mut poll = Poller::new("the queue to drain", Duration::from_millis(5));
/// loop {
///     let depth = env.depth().await?;
///     if depth == 0 { break; }
///     poll.wait(depth != last).await?;
/// }
/// ```
#[derive(Debug)]
pub struct Poller {
    what: &'static str,
    tick: tokio::time::Interval,
    progress_at: Instant,
}

impl Poller {
    /// Looks every `every`.
    #[must_use]
    pub fn new(what: &'static str, every: Duration) -> Self {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Self {
            what,
            tick,
            progress_at: Instant::now(),
        }
    }

    /// Waits for the next look; `moved` says whether anything progressed
    /// since the last one.
    ///
    /// # Errors
    /// No progress for [`STALL`].
    pub async fn wait(&mut self, moved: bool) -> anyhow::Result<()> {
        if moved {
            self.progress_at = Instant::now();
        } else if self.progress_at.elapsed() > STALL {
            anyhow::bail!(
                "gave up waiting for {}: no progress for {STALL:?}",
                self.what
            );
        }
        self.tick.tick().await;
        Ok(())
    }

    /// Polls `count` (tasks done so far, and whether the work is finished)
    /// until it says finished, handing every new count to `progress`; `from`
    /// is the count before the work started.
    ///
    /// # Errors
    /// `count`'s error, or no progress for [`STALL`].
    pub async fn count_until_done<F, Fut>(
        &mut self,
        from: u64,
        mut count: F,
        mut progress: impl FnMut(u64),
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<(u64, bool)>>,
    {
        let mut last = from;
        loop {
            let (done, finished) = count().await?;
            if finished {
                return Ok(());
            }
            let moved = done != last;
            if moved {
                last = done;
                progress(done);
            }
            self.wait(moved).await?;
        }
    }
}
