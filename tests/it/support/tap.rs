//! Lifecycle events of a prefix, collected in the background.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::Connection;
use lapin::options::BasicAckOptions;
use warden::amqp::events::Event;
use warden::amqp::topology::Topology;

use super::{endings, eventually};

/// (routing key, event id, `traceparent` header) of one event.
pub type CarriedContext = (String, String, Option<String>);

/// Collects lifecycle events from `{prefix}.events` in the background.
pub struct EventTap {
    pub events: Arc<Mutex<Vec<(String, Event)>>>,
    /// (routing key, event id, `traceparent` header) of every event.
    pub traceparents: Arc<Mutex<Vec<CarriedContext>>>,
}

impl EventTap {
    pub(super) async fn start(conn: &Connection, topology: &Topology) -> Self {
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
