//! `warden-dev demo`: the whole worker story in one command, on a throwaway prefix.
//!
//! It starts a worker in this process, publishes a mixed batch (successes,
//! slow tasks, transient failures that recover, permanent failures, panics,
//! timeouts, a task that aborts its process, a malformed body and an unknown
//! type), follows the lifecycle
//! events live, then prints the outcomes and the dead letters with their reasons,
//! and deletes everything it declared.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use lapin::options::BasicAckOptions;
use lapin::types::FieldTable;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use warden::amqp::envelope::Task;
use warden::amqp::events::Event;
use warden::amqp::publish::{Publisher, publish_confirmed, task_properties};
use warden::amqp::topology::Topology;
use warden::channels::Channels;
use warden::config::Settings;
use warden::handler::Registry;
use warden::reauth::flow::SecretRef;
use warden::worker::Worker;

/// `post.publish` tasks for channel `acme-main` before, and again after, the revocation.
const POSTS: usize = 20;

/// The re-auth half of the demo: a simulated provider in this process, a
/// throwaway SQLite token store with a throwaway key, and channel `acme-main`.
///
/// `warden-dev bench --scenarios reauth` measures the same setup.
pub(crate) struct ReauthDemo {
    pub(crate) provider: crate::provider::RunningProvider,
    pub(crate) store: Arc<dyn warden::store::TokenStore>,
    _stop: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

impl ReauthDemo {
    pub(crate) const WHY_SKIPPED: &'static str = "Chromium and the Playwright driver are not set up (run `make run`, or `eval \"$(scripts/setup-playwright.sh)\"` first)";

    /// Whether a browser login can run here.
    pub(crate) fn browser_ready(settings: &Settings) -> bool {
        std::env::var_os("PLAYWRIGHT_DRIVER_PATH").is_some()
            && settings.reauth.chromium_path.exists()
    }

    /// Configures `settings` for the re-auth story: a provider in this
    /// process, channel `acme-main` with a valid token in a throwaway store
    /// (with a throwaway key), and the `post.publish` HTTP handler.
    pub(crate) async fn start(settings: &mut Settings) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let stop = CancellationToken::new();
        let password = uuid::Uuid::new_v4().to_string();
        let client_secret = uuid::Uuid::new_v4().to_string();
        let mut pc = crate::provider::ProviderConfig::new("warden-demo", client_secret.clone())
            .with_account(
                "acme-main",
                crate::provider::Account::new("acme", password.clone()),
            );
        pc.bind = "127.0.0.1:0".parse()?;
        let provider = crate::provider::start(pc, stop.clone()).await?;
        // Secrets live in owner-only files, referenced from the configuration.
        let secret = |name: &str, value: &str| -> anyhow::Result<SecretRef> {
            let path = dir.path().join(name);
            std::fs::write(&path, value)?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            Ok(SecretRef::File(path))
        };
        let oauth = crate::provider::oauth_client(
            &provider.base_url(),
            "warden-demo",
            secret("client-secret", &client_secret)?,
        )?;
        settings.providers.insert("demo".into(), oauth);
        let mut credentials = warden::reauth::flow::CredentialRefs::new();
        credentials.insert("username".into(), secret("username", "acme")?);
        credentials.insert("password".into(), secret("password", &password)?);
        settings.channels.insert(
            "acme-main".into(),
            warden::config::ChannelConfig {
                provider: "demo".into(),
                credentials,
            },
        );
        settings.handlers.insert(
            "post.publish".into(),
            warden::handler::http::HttpHandlerConfig {
                method: "POST".into(),
                url: format!("{}/api/channels/{{channel}}/posts", provider.base_url()),
                timeout: Duration::from_secs(10),
                plain_http: false,
                idempotency_header: "Idempotency-Key".into(),
                revocation_in_body: false,
            },
        );
        let url = format!("sqlite://{}/demo.db", dir.path().display());
        settings.token_store = Some(secrecy::SecretString::from(url.clone()));
        let store = warden::store::connect(&url, warden::store::Keyring::generate()).await?;
        let t = provider
            .state
            .mint_tokens("acme-main")
            .ok_or_else(|| anyhow::anyhow!("provider has no acme-main"))?;
        store
            .put_token(
                "acme-main",
                "demo",
                &warden::store::TokenSet::new(secrecy::SecretString::from(t.access_token)),
            )
            .await?;
        Ok(Self {
            provider,
            store,
            _stop: stop.drop_guard(),
            _dir: dir,
        })
    }

    /// `n` `post.publish` tasks for channel `acme-main`.
    pub(crate) fn posts(n: usize) -> Vec<Task> {
        (0..n)
            .map(|i| Task {
                channel: Some("acme-main".into()),
                ..Task::new("post.publish", json!({ "text": format!("hello {i}") }))
            })
            .collect()
    }
}

/// How long the demo waits for the batch to settle before giving up.
const DEADLINE: Duration = Duration::from_secs(180);

fn batch(noop: usize) -> Vec<Task> {
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

/// `warden-dev demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many `builtin.noop` tasks to add to the mix.
    #[arg(long, default_value_t = 200)]
    pub noop: usize,
    /// Keep the demo's queues afterwards (for `warden topology`, `warden dlq list`).
    #[arg(long)]
    pub keep: bool,
}

/// Runs the demo against `settings`' broker.
///
/// # Errors
/// Broker unreachable, or the batch not settling within three minutes.
pub async fn run(base: &Settings, args: &DemoArgs) -> anyhow::Result<()> {
    let DemoArgs { noop, keep } = *args;
    let mut settings = base.clone();
    settings.prefix = format!(
        "warden-demo-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    settings.fault_handlers = true;
    settings.events = true;
    settings.task_timeout = Duration::from_secs(1);
    settings.retry.base_delay = Duration::from_millis(250);
    settings.retry.factor = 2;
    settings.retry.tiers = 3;
    settings.retry.max_attempts = 4;
    // The demo's worker runs inside this process: a task that aborts it must
    // run in the sandbox from the start. (A `warden worker` needs no such
    // setting: it dies once, and the redelivered task runs in the sandbox.)
    settings.task_types.insert(
        "builtin.abort".into(),
        warden::config::TaskTypeSettings {
            isolation: warden::config::Isolation::Always,
        },
    );
    println!(
        "warden-dev demo on {} with throwaway prefix {}",
        settings.amqp_url_redacted(),
        settings.prefix
    );

    let reauth = if ReauthDemo::browser_ready(&settings) {
        println!(
            "note: generated a throwaway token key for this demo's store; production refuses to start without WARDEN_TOKEN_KEY"
        );
        Some(ReauthDemo::start(&mut settings).await?)
    } else {
        println!("note: re-auth part skipped: {}", ReauthDemo::WHY_SKIPPED);
        None
    };

    // Listen to events before anything is published, so none is missed.
    let conn = warden::amqp::broker::connect(&settings, "demo", Duration::from_secs(5)).await?;
    let ch = conn.create_channel().await?;
    let topology = Topology::new(&settings);
    topology.declare(&ch).await?;
    let mut events = warden::amqp::topology::private_consumer(
        &ch,
        &topology.events(),
        &["task.#", "reauth.#"],
        false,
    )
    .await?;

    let shutdown = CancellationToken::new();
    let registry = Registry::from_settings(&settings)?;
    let mut worker = Worker::new(settings.clone(), registry);
    let mut reauth_task = None;
    if let Some(r) = &reauth {
        worker = worker.with_channels(Arc::new(Channels::new(r.store.clone())));
        let mut s = settings.clone();
        s.admin_addr = "127.0.0.1:0".parse()?;
        reauth_task = Some(tokio::spawn(warden::reauth::consumer::run(
            s,
            r.store.clone(),
            shutdown.clone(),
        )));
    }
    let worker_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { worker.run(shutdown).await }
    });

    let tasks = batch(noop);
    let mut published: BTreeMap<String, usize> = BTreeMap::new();
    for t in &tasks {
        *published.entry(t.kind.clone()).or_default() += 1;
    }
    let publisher = Publisher::connect(&settings).await?;
    let mut total = tasks.len() + 1;
    publisher.publish_all(tasks, 256, || {}).await?;
    if reauth.is_some() {
        publisher
            .publish_all(ReauthDemo::posts(POSTS), 256, || {})
            .await?;
        total += POSTS;
        *published.entry("post.publish".into()).or_default() += POSTS;
    }
    // One body that is not a task at all, published raw like a buggy producer would.
    publish_confirmed(
        publisher.channel(),
        &topology.tasks(),
        "post.publish",
        b"{\"id\": \"oops\", \"type\": ",
        task_properties("malformed-1", FieldTable::default()),
        true,
    )
    .await?;
    *published.entry("(malformed body)".into()).or_default() += 1;

    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} settled {pos}/{len} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut terminal: HashSet<String> = HashSet::new();
    let mut rows: BTreeMap<String, [usize; 3]> = BTreeMap::new(); // succeeded, retries, dead
    let (mut ok, mut retried, mut dead) = (0, 0, 0);
    let (mut posts_ok, mut revoked_at, mut healed) = (0, None, None);
    while terminal.len() < total {
        let next =
            tokio::time::timeout(DEADLINE.saturating_sub(started.elapsed()), events.next()).await;
        let Ok(Some(Ok(delivery))) = next else {
            bar.abandon();
            shutdown.cancel();
            anyhow::bail!(
                "the batch did not settle within {}s ({} of {total} done)",
                DEADLINE.as_secs(),
                terminal.len()
            );
        };
        delivery.ack(BasicAckOptions::default()).await?;
        let Ok(event) = serde_json::from_slice::<Event>(&delivery.data) else {
            continue;
        };
        if delivery.routing_key.as_str().starts_with("reauth.") {
            if delivery.routing_key.as_str() != warden::reauth::consumer::STARTED {
                healed = Some((
                    delivery.routing_key.to_string(),
                    event.reason.clone(),
                    event.duration_ms,
                ));
                bar.println(format!(
                    "  {} for channel acme-main ({} ms)",
                    delivery.routing_key, event.duration_ms
                ));
            }
            continue;
        }
        if event.kind == "post.publish"
            && delivery.routing_key.as_str() == warden::amqp::events::SUCCEEDED
        {
            posts_ok += 1;
        }
        // Halfway through the channel's work, the platform revokes its token.
        if let Some(r) = &reauth
            && revoked_at.is_none()
            && posts_ok == POSTS
        {
            r.provider.state.revoke("acme-main");
            revoked_at = Some(Instant::now());
            bar.println(
                "  the platform revoked channel acme-main's token; publishing its next 20 posts",
            );
            publisher
                .publish_all(ReauthDemo::posts(POSTS), 256, || {})
                .await?;
            total += POSTS;
            *published.entry("post.publish".into()).or_default() += POSTS;
            bar.set_length(total as u64);
        }
        let kind = if event.id == "malformed-1" {
            "(malformed body)".to_owned()
        } else {
            event.kind.clone()
        };
        let row = rows.entry(kind).or_default();
        match delivery.routing_key.as_str() {
            warden::amqp::events::SUCCEEDED => {
                if terminal.insert(event.id) {
                    row[0] += 1;
                    ok += 1;
                }
            }
            warden::amqp::events::DEAD => {
                if terminal.insert(event.id) {
                    row[2] += 1;
                    dead += 1;
                }
            }
            _ => {
                row[1] += 1;
                retried += 1;
            }
        }
        bar.set_position(terminal.len() as u64);
        bar.set_message(format!("{ok} succeeded, {retried} retries, {dead} dead"));
    }
    bar.finish_and_clear();
    publisher.close().await;
    let elapsed = started.elapsed();
    shutdown.cancel();
    worker_task.await?;
    if let Some(t) = reauth_task {
        t.await??;
    }

    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "task type",
        "published",
        "succeeded",
        "retries + parks",
        "dead",
    ]);
    for (kind, n) in &published {
        let r = rows.get(kind).copied().unwrap_or_default();
        table.add_row([
            kind.clone(),
            n.to_string(),
            r[0].to_string(),
            r[1].to_string(),
            r[2].to_string(),
        ]);
    }
    println!(
        "\nAll {total} tasks settled in {:.1}s: {ok} succeeded, {dead} dead-lettered, {retried} retries on the way.",
        elapsed.as_secs_f64()
    );
    println!("{table}");
    match (&reauth, healed) {
        (Some(r), Some((outcome, mode, ms))) => {
            let stats = r.provider.state.stats();
            let ch = stats.channels.get("acme-main").cloned().unwrap_or_default();
            println!(
                "Re-auth: {outcome} by {} in {ms} ms, {} browser login(s); {} call(s) with the dead token, then its parked tasks resumed.",
                mode.unwrap_or_default(),
                ch.logins,
                ch.api_rejected
            );
        }
        (Some(_), None) => println!("Re-auth: the token was revoked but no re-auth finished."),
        (None, _) => println!("Re-auth: skipped; {}", ReauthDemo::WHY_SKIPPED),
    }

    let dq = warden::amqp::dlq::DeadQueue::open(&settings).await?;
    let letters = dq.list(Some(50)).await?;
    dq.close().await;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "dead letter",
        "type",
        "reason",
        "attempts",
        "error",
    ]);
    for d in &letters {
        table.add_row([
            d.id.clone(),
            d.kind.clone(),
            d.reason.clone(),
            d.attempts.to_string(),
            d.error.chars().take(70).collect(),
        ]);
    }
    println!(
        "\nDead letters in {}.dead, each with its reason:\n{table}",
        settings.prefix
    );
    let crashed = letters.iter().filter(|d| d.reason == "crashed").count();
    println!(
        "Crash isolation: {crashed} task(s) killed the sandbox process they ran in alone and are dead as `crashed`; \
         the worker (pid {}) kept running and no other task was charged for it.",
        std::process::id()
    );

    if keep {
        println!(
            "kept prefix {}; inspect it with WARDEN_PREFIX={} warden topology",
            settings.prefix, settings.prefix
        );
    } else {
        topology.delete(&ch).await?;
        println!(
            "cleaned up: deleted every queue and exchange of {}",
            settings.prefix
        );
    }
    let _ = conn.close(200, "bye".into()).await;
    Ok(())
}
