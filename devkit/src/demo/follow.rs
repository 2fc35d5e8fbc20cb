//! Following the demo live: its `task.*` and `reauth.*` events, from before
//! the first publish until every task has settled. Halfway through the
//! channel's posts, the platform revokes its token.

use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use lapin::options::BasicAckOptions;
use lapin::{Channel, Connection, Consumer};
use warden::amqp::events::Event;
use warden::amqp::publish::Publisher;
use warden::amqp::topology::Topology;
use warden::config::Settings;

use super::reauth::{POSTS, ReauthDemo};
use super::tally::Tally;

/// How long the demo waits for the batch to settle before giving up.
const DEADLINE: Duration = Duration::from_secs(180);

/// The demo's topology and a private queue of its events.
pub(super) struct Listener {
    conn: Connection,
    ch: Channel,
    /// The demo prefix's topology.
    pub(super) topology: Topology,
    events: Consumer,
}

impl Listener {
    /// Declares the topology and listens to the events before anything is
    /// published, so none is missed.
    pub(super) async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let conn = warden::amqp::broker::connect(settings, "demo", Duration::from_secs(5)).await?;
        let ch = conn.create_channel().await?;
        let topology = Topology::new(settings);
        topology.declare(&ch).await?;
        let events = warden::amqp::topology::private_consumer(
            &ch,
            &topology.events(),
            &["task.#", "reauth.#"],
            false,
        )
        .await?;
        Ok(Self {
            conn,
            ch,
            topology,
            events,
        })
    }

    /// Deletes everything the demo declared unless it is to be `kept`.
    pub(super) async fn close(self, kept: bool, prefix: &str) -> anyhow::Result<()> {
        if kept {
            println!(
                "kept prefix {prefix}; inspect it with WARDEN_PREFIX={prefix} warden topology"
            );
        } else {
            self.topology.delete(&self.ch).await?;
            println!("cleaned up: deleted every queue and exchange of {prefix}");
        }
        let _ = self.conn.close(200, "bye".into()).await;
        Ok(())
    }
}

/// How the re-auth ended.
pub(super) struct Healed {
    /// `reauth.succeeded` or `reauth.failed`.
    pub(super) outcome: String,
    /// How: refresh grant or browser login.
    pub(super) mode: Option<String>,
    /// How long it took.
    pub(super) ms: u64,
}

/// What following saw.
pub(super) struct Followed {
    /// From the first event awaited to the last task settled.
    pub(super) elapsed: Duration,
    /// The re-auth's end, if one finished.
    pub(super) healed: Option<Healed>,
}

/// Counts events into `tally` until every task it expects has settled,
/// revoking the channel's token (with `reauth`) once its first posts are
/// through, and publishing as many again.
///
/// # Errors
/// The batch does not settle within [`DEADLINE`], or the broker fails.
pub(super) async fn until_settled(
    listener: &mut Listener,
    tally: &mut Tally,
    reauth: Option<&ReauthDemo>,
    publisher: &Publisher,
) -> anyhow::Result<Followed> {
    let bar = bar(tally.total());
    let started = Instant::now();
    let (mut revoked, mut healed) = (false, None);
    while tally.settled() < tally.total() {
        let left = DEADLINE.saturating_sub(started.elapsed());
        let Ok(Some(Ok(delivery))) = tokio::time::timeout(left, listener.events.next()).await
        else {
            bar.abandon();
            anyhow::bail!(
                "the batch did not settle within {}s ({} of {} done)",
                DEADLINE.as_secs(),
                tally.settled(),
                tally.total()
            );
        };
        delivery.ack(BasicAckOptions::default()).await?;
        let Ok(event) = serde_json::from_slice::<Event>(&delivery.data) else {
            continue;
        };
        let key = delivery.routing_key.as_str();
        if key.starts_with("reauth.") {
            if key != warden::reauth::consumer::STARTED {
                bar.println(format!(
                    "  {key} for channel acme-main ({} ms)",
                    event.duration_ms
                ));
                healed = Some(Healed {
                    outcome: key.to_owned(),
                    mode: event.reason,
                    ms: event.duration_ms,
                });
            }
            continue;
        }
        tally.record(key, event);
        // Halfway through the channel's work, the platform revokes its token.
        if let Some(r) = reauth
            && !revoked
            && tally.posts_ok() == POSTS
        {
            revoked = true;
            revoke_halfway(r, publisher, tally, &bar).await?;
        }
        bar.set_position(tally.settled() as u64);
        bar.set_message(tally.progress());
    }
    bar.finish_and_clear();
    Ok(Followed {
        elapsed: started.elapsed(),
        healed,
    })
}

/// The platform revokes `acme-main`'s token; its next posts meet the dead
/// token, park, and run once the re-auth consumer has healed it.
async fn revoke_halfway(
    reauth: &ReauthDemo,
    publisher: &Publisher,
    tally: &mut Tally,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    reauth.provider.state.revoke("acme-main");
    bar.println(format!(
        "  the platform revoked channel acme-main's token; publishing its next {POSTS} posts"
    ));
    publisher
        .publish_all(ReauthDemo::posts(POSTS), 256, || {})
        .await?;
    tally.expect("post.publish", POSTS);
    bar.set_length(tally.total() as u64);
    Ok(())
}

fn bar(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} settled {pos}/{len} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
