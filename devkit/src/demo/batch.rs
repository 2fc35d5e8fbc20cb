//! The demo's workload: a mixed batch of built-in tasks (successes, slow
//! tasks, transient failures that recover, permanent failures, panics,
//! timeouts, a task that aborts its process, an unknown type), the channel's
//! posts, and one body that is not a task at all.

use lapin::types::FieldTable;
use serde_json::json;
use warden::amqp::envelope::Task;
use warden::amqp::publish::{Outgoing, Publisher, publish_confirmed, task_properties};
use warden::amqp::topology::Topology;

use super::reauth::{POSTS, ReauthDemo};
use super::tally::{MALFORMED, MALFORMED_ROW, Tally};

/// The built-in mix, with `noop` `builtin.noop` tasks.
fn tasks(noop: usize) -> Vec<Task> {
    let mut tasks = Vec::new();
    let mut add = |n: usize, kind: &str, payload: serde_json::Value| {
        for _ in 0..n {
            tasks.push(Task::new(kind, payload.clone()));
        }
    };
    add(noop, "builtin.noop", json!({}));
    for ms in [20, 50, 100, 200, 400] {
        add(8, "builtin.sleep", json!({ "ms": ms }));
    }
    add(
        15,
        "builtin.fail",
        json!({ "times": 1, "kind": "transient" }),
    );
    add(
        5,
        "builtin.fail",
        json!({ "times": 2, "kind": "transient" }),
    );
    add(
        5,
        "builtin.fail",
        json!({ "times": 1, "kind": "permanent" }),
    );
    add(10, "builtin.panic", json!({ "times": 1 }));
    add(2, "builtin.panic", json!({ "times": 99 }));
    add(2, "builtin.sleep", json!({ "ms": 3000 }));
    add(1, "builtin.abort", json!({}));
    add(1, "report.generate", json!({}));
    tasks
}

/// Publishes the batch, the channel's first posts (`with_posts`) and the
/// malformed body; the tally of what is expected to settle.
pub(super) async fn publish(
    publisher: &Publisher,
    topology: &Topology,
    noop: usize,
    with_posts: bool,
) -> anyhow::Result<Tally> {
    let tasks = tasks(noop);
    let mut tally = Tally::default();
    for t in &tasks {
        tally.expect(&t.kind, 1);
    }
    publisher.publish_all(tasks, 256, || {}).await?;
    if with_posts {
        publisher
            .publish_all(ReauthDemo::posts(POSTS), 256, || {})
            .await?;
        tally.expect("post.publish", POSTS);
    }
    // One body that is not a task at all, published raw like a buggy producer would.
    publish_confirmed(
        publisher.channel(),
        Outgoing {
            exchange: &topology.tasks(),
            routing_key: "post.publish",
            body: b"{\"id\": \"oops\", \"type\": ",
            properties: task_properties(MALFORMED, FieldTable::default()),
            mandatory: true,
        },
    )
    .await?;
    tally.expect(MALFORMED_ROW, 1);
    Ok(tally)
}
