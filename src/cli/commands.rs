//! The operator commands: `topology`, `publish`, `dlq` and `config`. Each prints
//! its result on stdout (tables for people, `--json` for scripts); logs go to
//! stderr.

use std::io::{BufRead, IsTerminal, Write};

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use indicatif::{ProgressBar, ProgressStyle};

use tokio_util::sync::CancellationToken;

use crate::amqp::dlq::{DeadLetter, DeadQueue, Filter};
use crate::amqp::envelope::Task;
use crate::amqp::publish::{Publisher, read_ndjson};
use crate::cli::{Command, ConfigCommand, DlqCommand, DlqFilter, PublishArgs, TopologyCommand};
use crate::config::Settings;
use crate::outcome::DeadReason;

/// Runs one subcommand to completion; `shutdown` is cancelled on SIGTERM/SIGINT.
///
/// # Errors
/// Whatever the command reports; see [`exit_code`].
pub async fn run(
    command: Command,
    settings: Settings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match command {
        Command::Worker => crate::worker::serve(settings, shutdown).await,
        Command::Reauth => reauth(settings, shutdown).await,
        Command::Channels { json } => channels(&settings, json).await,
        Command::Token { command } => token(&settings, command).await,
        Command::Topology {
            json,
            command: Some(TopologyCommand::Migrate),
        } => migrate(&settings, json).await,
        Command::Topology {
            json,
            command: None,
        } => topology(&settings, json).await,
        Command::Publish(args) => publish(&settings, args).await,
        Command::Dlq { command } => dlq(&settings, command).await,
        Command::Config { command } => config(&settings, &command),
    }
}

/// Above this many tasks `publish` shows a progress bar.
const PROGRESS_THRESHOLD: usize = 1000;

/// `warden topology`: declare, then show each queue.
///
/// # Errors
/// Broker unreachable or refusing the declarations.
pub async fn topology(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let crate::amqp::ToolSession { conn, ch, topology } =
        crate::amqp::ToolSession::open(settings, "topology", false).await?;
    let queues = topology.describe(&ch).await?;
    let _ = conn.close(200, "bye".into()).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&queues)?);
        return Ok(());
    }
    println!(
        "Topology of prefix {:?} on {}",
        settings.prefix,
        settings.amqp_url_redacted()
    );
    println!(
        "exchanges: {} (topic), {} (headers), {} (fanout), {} (topic)",
        topology.tasks(),
        topology.delay_exchange(),
        topology.dead(),
        topology.events()
    );
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "queue",
        "role",
        "ready messages",
        "consumers",
    ]);
    for q in queues {
        table.add_row([
            q.name,
            q.role,
            q.messages.to_string(),
            q.consumers.to_string(),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// `warden topology migrate`.
///
/// # Errors
/// A queue still has consumers, or the broker refuses.
pub async fn migrate(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let migrated = crate::amqp::migrate::run(settings).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&migrated)?);
    } else if migrated.is_empty() {
        println!(
            "every queue of prefix {:?} already has the current arguments",
            settings.prefix
        );
    } else {
        for m in &migrated {
            println!(
                "{}: {} {} -> {}; {} message(s) moved aside and back",
                m.queue, m.argument, m.from, m.to, m.messages
            );
        }
    }
    Ok(())
}

/// `warden publish`.
///
/// # Errors
/// Bad arguments (nothing is published then), or the broker refusing.
pub async fn publish(settings: &Settings, args: PublishArgs) -> anyhow::Result<()> {
    // Validate everything before connecting: bad input publishes nothing.
    let tasks: Vec<Task> = if let Some(path) = &args.file {
        read_ndjson(path)?
    } else {
        let kind = args.kind.clone().unwrap_or_default();
        let payload: serde_json::Value = match &args.payload {
            Some(p) => serde_json::from_str(p)
                .map_err(|e| anyhow::anyhow!("--payload is not valid JSON: {e}"))?,
            None => serde_json::Value::Object(serde_json::Map::new()),
        };
        (0..args.count)
            .map(|_| Task {
                channel: args.channel.clone(),
                ..Task::new(kind.clone(), payload.clone())
            })
            .collect()
    };
    if tasks.is_empty() {
        anyhow::bail!("nothing to publish");
    }
    // The limits the worker enforces, checked here so that a task the broker
    // could not carry (an id or type over 255 bytes) is a clear error, not a
    // panic in the AMQP encoder.
    for (i, task) in tasks.iter().enumerate() {
        task.check()
            .map_err(|e| anyhow::anyhow!("task {}: {e}", i + 1))?;
    }
    let total = tasks.len();
    let publisher = Publisher::connect(settings).await?;
    let bar = if total >= PROGRESS_THRESHOLD && std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} publishing [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let started = std::time::Instant::now();
    let ids: Vec<String> = if total <= 10 {
        tasks.iter().map(|t| t.id.clone()).collect()
    } else {
        Vec::new()
    };
    let result = publisher.publish_all(tasks, 256, || bar.inc(1)).await;
    bar.finish_and_clear();
    publisher.close().await;
    let done = result?;
    let secs = started.elapsed().as_secs_f64();
    for id in ids {
        println!("{id}");
    }
    eprintln!(
        "published {done} task(s) to {}.tasks in {secs:.2}s, all confirmed",
        settings.prefix
    );
    Ok(())
}

fn filter(f: DlqFilter) -> anyhow::Result<Filter> {
    if let Some(r) = f.reason.as_ref().filter(|r| DeadReason::parse(r).is_none()) {
        let all: Vec<&str> = DeadReason::ALL.iter().map(|r| r.as_str()).collect();
        anyhow::bail!("unknown reason {r:?}; expected one of {}", all.join(", "));
    }
    Ok(Filter {
        reason: f.reason,
        kind: f.kind,
        channel: f.channel,
        limit: f.limit,
    })
}

fn dead_table(letters: &[DeadLetter]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "id",
        "type",
        "channel",
        "reason",
        "attempts",
        "failed at",
        "error",
    ]);
    for d in letters {
        let mut error = d.error.clone();
        if error.chars().count() > 80 {
            error = error.chars().take(77).collect::<String>() + "...";
        }
        table.add_row([
            d.id.clone(),
            d.kind.clone(),
            d.channel.clone().unwrap_or_default(),
            d.reason.clone(),
            d.attempts.to_string(),
            d.failed_at.clone().unwrap_or_default(),
            error,
        ]);
    }
    table
}

/// `warden dlq …`.
///
/// # Errors
/// Broker errors, or a refused confirmation.
pub async fn dlq(settings: &Settings, command: DlqCommand) -> anyhow::Result<()> {
    let dead = DeadQueue::open(settings).await?;
    let result = dlq_inner(&dead, command).await;
    dead.close().await;
    result
}

async fn dlq_inner(dead: &DeadQueue, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { limit, json } => {
            let letters = dead.list(Some(limit)).await?;
            if json {
                for d in &letters {
                    println!("{}", serde_json::to_string(d)?);
                }
            } else if letters.is_empty() {
                println!("no dead letters");
            } else {
                println!("{}", dead_table(&letters));
            }
        }
        DlqCommand::Replay { filter: f, dry_run } => {
            let letters = dead.replay(&filter(f)?, dry_run).await?;
            if dry_run {
                if !letters.is_empty() {
                    println!("{}", dead_table(&letters));
                }
                println!(
                    "would replay {} dead letter(s) (dry run; nothing changed)",
                    letters.len()
                );
            } else {
                println!(
                    "replayed {} dead letter(s) to the task queue with attempts reset",
                    letters.len()
                );
            }
        }
        DlqCommand::Purge { filter: f, yes } => {
            let f = filter(f)?;
            if !yes {
                let matching = dead.purge(&f, true).await?.len();
                if matching == 0 {
                    println!("no matching dead letters");
                    return Ok(());
                }
                if !std::io::stdin().is_terminal() {
                    anyhow::bail!(
                        "refusing to delete {matching} dead letter(s) without confirmation; pass --yes"
                    );
                }
                eprint!("Delete {matching} dead letter(s) for good? [y/N] ");
                std::io::stderr().flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    println!("nothing deleted");
                    return Ok(());
                }
            }
            let n = dead.purge(&f, false).await?.len();
            println!("deleted {n} dead letter(s)");
        }
    }
    Ok(())
}

/// The exit code of a failed command: 64 (`EX_USAGE`) for configuration
/// errors, 69 (`EX_UNAVAILABLE`) when the broker cannot be reached, 1 otherwise.
#[must_use]
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.is::<crate::config::ConfigError>() {
        64 // EX_USAGE
    } else if e.is::<crate::amqp::broker::Unreachable>() {
        69 // EX_UNAVAILABLE
    } else {
        1
    }
}

/// `warden reauth`.
///
/// # Errors
/// No token key, or the store cannot be opened.
pub async fn reauth(
    settings: Settings,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let store = crate::channels::open_store(&settings).await?;
    crate::reauth::consumer::run(settings, store, shutdown).await
}

/// `warden channels`: configured and stored channels, never a token.
///
/// # Errors
/// The store cannot be opened.
pub async fn channels(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let store = crate::channels::open_store(settings).await?;
    let records = store.list().await?;
    if json {
        for r in &records {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    if records.is_empty() {
        println!(
            "no channels (configure [channels] in the TOML file, or `warden token set --channel C`)"
        );
        return Ok(());
    }
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "channel",
        "provider",
        "status",
        "version",
        "token",
        "expires",
        "last error",
    ]);
    for r in records {
        table.add_row([
            r.channel,
            r.provider,
            r.status.to_string(),
            r.version.to_string(),
            if r.has_token {
                "stored".into()
            } else {
                "none".into()
            },
            r.token_expires_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            r.last_error.unwrap_or_default(),
        ]);
    }
    println!("{table}");
    Ok(())
}

/// `warden token set`: seeds a token from stdin.
///
/// # Errors
/// Empty input, an unknown provider, or store errors.
pub async fn token(settings: &Settings, command: crate::cli::TokenCommand) -> anyhow::Result<()> {
    let (channel, provider) = match command {
        crate::cli::TokenCommand::Set { channel, provider } => (channel, provider),
        crate::cli::TokenCommand::Rekey => return token_rekey(settings).await,
    };
    let provider = provider
        .or_else(|| settings.channels.get(&channel).map(|c| c.provider.clone()))
        .ok_or_else(|| anyhow::anyhow!("channel {channel:?} is not configured; pass --provider"))?;
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
    let tokens = parse_token_input(&input)?;
    let store = crate::channels::open_store(settings).await?;
    let version = store.put_token(&channel, &provider, &tokens).await?;
    println!("stored a token for {channel} (version {version}, status active)");
    // Workers cache a failed channel for a while; without the notice a replay
    // right after this would meet the cached state and die again.
    if let Err(e) = crate::reauth::consumer::announce(settings, &channel, version).await {
        eprintln!(
            "warning: workers were not told ({e:#}); they use the new token within {}s",
            crate::channels::CACHE_TTL.as_secs()
        );
    }
    Ok(())
}

/// `warden token rekey`: every row under the current key, so the previous keys can go.
async fn token_rekey(settings: &Settings) -> anyhow::Result<()> {
    let store = crate::channels::open_store(settings).await?;
    let rewritten = store.reencrypt_all().await?;
    store.close().await;
    println!(
        "re-encrypted {rewritten} token(s) under key {}; every stored token is now under it, so {} can be emptied",
        crate::store::Keyring::from_env()?.current_id(),
        crate::store::crypto::KEY_PREVIOUS_ENV
    );
    Ok(())
}

fn parse_token_input(input: &str) -> anyhow::Result<crate::store::TokenSet> {
    use secrecy::SecretString;
    let input = input.trim();
    if input.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Json {
            access_token: String,
            refresh_token: Option<String>,
            expires_in: Option<i64>,
        }
        let j: Json = serde_json::from_str(input)
            .map_err(|e| anyhow::anyhow!("stdin is not a token response: {e}"))?;
        return Ok(crate::store::TokenSet {
            access_token: SecretString::from(j.access_token),
            refresh_token: j.refresh_token.map(SecretString::from),
            expires_at: j
                .expires_in
                .map(|s| {
                    u64::try_from(s)
                        .ok()
                        .map(std::time::Duration::from_secs)
                        .filter(|d| *d <= crate::store::MAX_TOKEN_LIFETIME)
                        .map(|d| crate::store::expiry_after(chrono::Utc::now(), d))
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "expires_in {s} is out of range (0 to {} seconds)",
                                crate::store::MAX_TOKEN_LIFETIME.as_secs()
                            )
                        })
                })
                .transpose()?,
        });
    }
    let mut lines = input.lines().map(str::trim).filter(|l| !l.is_empty());
    let access = lines.next().ok_or_else(|| {
        anyhow::anyhow!("no token on stdin (first line: access token; second: refresh token)")
    })?;
    Ok(crate::store::TokenSet {
        access_token: SecretString::from(access.to_owned()),
        refresh_token: lines.next().map(|l| SecretString::from(l.to_owned())),
        expires_at: None,
    })
}

/// Every `env:`/`file:` reference (channel credentials, provider client
/// secrets) that cannot be read now, each named with what is wrong. Values
/// are read and dropped, never printed.
fn unreadable_secrets(settings: &Settings) -> Vec<String> {
    let providers = settings.providers.iter().filter_map(|(name, p)| {
        p.client_secret
            .resolve()
            .err()
            .map(|e| format!("provider {name:?} client_secret: {e}"))
    });
    let credentials = settings.channels.iter().flat_map(|(channel, c)| {
        c.credentials.iter().filter_map(move |(name, r)| {
            r.resolve()
                .err()
                .map(|e| format!("channel {channel:?} credential {name:?}: {e}"))
        })
    });
    providers.chain(credentials).collect()
}

/// `warden config …`.
///
/// # Errors
/// `check`: a [`crate::config::ConfigError`] when a secret reference cannot
/// be read.
pub fn config(settings: &Settings, command: &ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check { skip_secrets } => {
            let unreadable = if *skip_secrets {
                Vec::new()
            } else {
                unreadable_secrets(settings)
            };
            if !unreadable.is_empty() {
                for line in &unreadable {
                    eprintln!("{line}");
                }
                return Err(crate::config::ConfigError::new(format!(
                    "{} secret reference(s) cannot be read (listed above)",
                    unreadable.len()
                ))
                .into());
            }
            println!("configuration is valid");
            let mut json = settings.redacted_json();
            // The store in use, default included, rather than `null`.
            json["token_store"] = crate::config::redact_url(settings.token_store_url()).into();
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        ConfigCommand::EnvKeys => {
            for k in Settings::env_keys() {
                println!("{k}");
            }
            for k in crate::observe::telemetry::ENV_KEYS {
                println!("{k}");
            }
        }
    }
    Ok(())
}
