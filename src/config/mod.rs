//! Typed, layered configuration.
//!
//! Layers, last wins: built-in defaults, then an optional TOML file (`--config` or
//! `WARDEN_CONFIG`), then `WARDEN_*` environment variables, with `__` separating
//! nested keys (`WARDEN_RETRY__MAX_ATTEMPTS=8`). Everything is validated once, at
//! start, so the rest of the program can trust it; an invalid value is reported as
//! one line naming the key, and the binary exits 64 (`EX_USAGE`).

mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// `WARDEN_*` variables read directly rather than through [`Settings`]: the
/// config file's path, and the token key (read by
/// [`crate::store::Keyring::from_env`] so it never sits in a settings struct).
const NON_SETTINGS_ENV: &[&str] = &[
    "CONFIG",
    "TOKEN_KEY",
    "TOKEN_KEY_FILE",
    "TOKEN_KEY_PREVIOUS",
];

/// The most deliveries the default prefetch holds beyond the handler slots
/// (see [`Settings::prefetch`]).
pub const REFILL_WINDOW: u16 = 256;

/// The complete, validated configuration of a warden process.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    /// Broker URL (`amqp://` or `amqps://`). Holds a password, so it is never logged
    /// as is; see [`Settings::amqp_url_redacted`].
    #[serde(serialize_with = "serialize_exposed")]
    pub amqp_url: SecretString,
    /// TLS for `amqps://`: a private CA, a client certificate.
    pub tls: TlsSettings,
    /// Name prefix of every exchange and queue (`{prefix}.tasks`, ...).
    pub prefix: String,
    /// How many handlers run at once in one process.
    pub concurrency: u16,
    /// How many unacknowledged deliveries the broker may hand this process
    /// (the AMQP prefetch); at least `concurrency`. Unset, [`Settings::prefetch`]:
    /// the handler slots plus a refill window, so a finished task waiting for
    /// its publisher confirms and its ack frees its slot at once and the next
    /// deliveries are already here. Bodies held are bounded by
    /// `prefetch x max_body_bytes`.
    pub prefetch: Option<u16>,
    /// Longest a handler may run before the attempt counts as a transient failure.
    #[serde(with = "humantime_serde")]
    pub task_timeout: Duration,
    /// Bodies above this many bytes are dead-lettered as `too_large` unread.
    pub max_body_bytes: usize,
    /// How long in-flight tasks may run after SIGTERM before they are left to the
    /// broker for redelivery.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How often one message may be handed out before the worker dead-letters
    /// it as `delivery_limit` without running it, read from the broker's
    /// `x-delivery-count`. A message that kills the worker is ended by the
    /// sandbox after one crash; this only stops worker processes that keep
    /// dying for some other reason. At most [`BROKER_DELIVERY_LIMIT`], the
    /// queue's fixed backstop.
    pub delivery_limit: u32,
    /// Memory limit of the sandbox process that runs suspect tasks (its
    /// private writable memory, `RLIMIT_DATA`), e.g. `512MiB`; unset, no limit.
    /// A task that allocates past it dies alone, as `crashed`.
    pub sandbox_memory: Option<bytesize::ByteSize>,
    /// A shared sandbox process with nothing to run stops after this long; the
    /// next suspect starts a new one.
    #[serde(with = "humantime_serde")]
    pub sandbox_idle: Duration,
    /// Settings per task type, e.g. `[task_types."pdf.render"] isolation = "always"`.
    pub task_types: BTreeMap<String, TaskTypeSettings>,
    /// The retry schedule.
    pub retry: RetrySettings,
    /// How long a parked task waits in `{prefix}.parked` before it is checked
    /// again (it comes back at once when its channel's token is refreshed).
    #[serde(with = "humantime_serde")]
    pub park_ttl: Duration,
    /// A task parked longer than this is dead-lettered as `reauth_failed`.
    #[serde(with = "humantime_serde")]
    pub max_park: Duration,
    /// Publish `task.*` lifecycle events to `{prefix}.events`.
    pub events: bool,
    /// Register the fault-injection handlers (`builtin.fail`, `builtin.panic`,
    /// `builtin.abort`). Off by default: they exist for demos and tests.
    pub fault_handlers: bool,
    /// Address of the admin HTTP server (`/livez`, `/readyz`, `/metrics`).
    pub admin_addr: SocketAddr,
    /// `/livez` fails when the consumer loop has not ticked for this long.
    #[serde(with = "humantime_serde")]
    pub liveness_limit: Duration,
    /// AMQP heartbeat; a blackholed connection is noticed within about twice this.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Log format: `json`, `pretty`, or `auto` (pretty on a terminal).
    pub log_format: LogFormat,
    /// Token store URL: `sqlite://path.db` or `postgres://…`. Needed by
    /// `warden reauth` and by workers that run tasks for channels; when unset
    /// those use `sqlite://warden.db`. A PostgreSQL URL can hold a password,
    /// so it is a secret like the broker URL: see [`Settings::redacted_json`].
    #[serde(serialize_with = "serialize_exposed_opt")]
    pub token_store: Option<SecretString>,
    /// OAuth providers by name (TOML only), with their login flows.
    pub providers: BTreeMap<String, crate::reauth::flow::OAuthProvider>,
    /// Channels (third-party accounts) by name (TOML only).
    pub channels: BTreeMap<String, ChannelConfig>,
    /// Task types handled by an HTTP call made for the task's channel (TOML only).
    pub handlers: BTreeMap<String, crate::handler::http::config::HttpHandlerConfig>,
    /// The re-auth consumer.
    pub reauth: ReauthSettings,
}

/// Settings of one task type.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskTypeSettings {
    /// Where its tasks run.
    pub isolation: Isolation,
}

/// Where a task runs: in the worker process, or in a sandbox child process
/// that may die without taking the worker with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// In the worker, unless it is a suspect: redelivered after a worker's
    /// session ended (it may be what killed it), or a retry of a task that
    /// already ran in the sandbox.
    #[default]
    Auto,
    /// Always in the sandbox: for types known to be dangerous (native
    /// libraries, untrusted parsers, unbounded memory).
    Always,
}

/// The queue's own `x-delivery-limit` (returns, so one more delivery): a fixed
/// backstop that never changes with configuration, so that a rollout which
/// changes `delivery_limit` never meets a queue declared with other arguments.
pub const BROKER_DELIVERY_LIMIT: u32 = 20;

/// TLS for an `amqps://` broker beyond the system's trusted roots. Every
/// value is a file path: a private key never sits in the configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM file of CA certificates to trust besides the system roots (a
    /// private CA that signed the broker's certificate).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (with its chain), for brokers that verify clients.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// A channel: the account a task acts for.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Name of its provider in `[providers]`.
    pub provider: String,
    /// Login secrets by name (`username`, `password`, `totp`, …), each a
    /// reference `env:NAME` or `file:/path`; never the secret itself.
    #[serde(default)]
    pub credentials: crate::reauth::flow::CredentialRefs,
}

/// Settings of `warden reauth`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ReauthSettings {
    /// The Chromium binary (Debian's; Playwright's own downloads are not used).
    pub chromium_path: PathBuf,
    /// Where failed logins leave a screenshot and the page HTML (owner-only);
    /// unset switches artifacts off.
    pub artifacts_dir: Option<PathBuf>,
    /// Longest one browser login may take.
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
    /// Browser login attempts before the channel is `reauth_failed`.
    pub max_attempts: u32,
    /// Lease on a channel while one process heals it. It is renewed before
    /// every attempt, so it must outlast one attempt (a login, the token
    /// exchange and the pause before it); a holder that dies frees the channel
    /// for another process after at most this long.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Revocation requests handled at once.
    pub concurrency: u16,
    /// Longest pause between two tries of a re-auth that failed for a reason
    /// that is not the channel's (provider down, token store down, browser
    /// crash). Pauses double from 1 s up to this, with jitter, until
    /// `max_park`; never beyond `lease_ttl` minus `login_timeout`, so the
    /// lease renewed before a try still covers the pause before it.
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Shortest time between two re-auths of one channel by one process, so
    /// that a platform that keeps refusing fresh tokens cannot make warden log
    /// in over and over.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
}

impl Default for ReauthSettings {
    fn default() -> Self {
        Self {
            chromium_path: PathBuf::from("/usr/bin/chromium"),
            artifacts_dir: None,
            login_timeout: Duration::from_secs(30),
            max_attempts: 3,
            lease_ttl: Duration::from_secs(90),
            concurrency: 4,
            retry_max_delay: Duration::from_secs(30),
            min_interval: Duration::from_secs(60),
        }
    }
}

/// The retry schedule: exponential delay tiers living in the broker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RetrySettings {
    /// Attempts in total, the first one included. After the last, a transient
    /// failure is dead-lettered as `retries_exhausted`.
    pub max_attempts: u32,
    /// Delay before the first retry.
    #[serde(with = "humantime_serde")]
    pub base_delay: Duration,
    /// Each tier waits this many times longer than the one before.
    pub factor: u32,
    /// Number of delay tiers (queues); later retries reuse the longest.
    pub tiers: u32,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable, coloured when on a terminal.
    Pretty,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            amqp_url: SecretString::from("amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefix: "warden".into(),
            concurrency: 64,
            prefetch: None,
            task_timeout: Duration::from_secs(30),
            max_body_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(30),
            delivery_limit: 5,
            sandbox_memory: None,
            sandbox_idle: Duration::from_secs(30),
            task_types: BTreeMap::new(),
            retry: RetrySettings::default(),
            park_ttl: Duration::from_secs(30),
            max_park: Duration::from_secs(3600),
            events: true,
            fault_handlers: false,
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            liveness_limit: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            log_format: LogFormat::Auto,
            token_store: None,
            providers: BTreeMap::new(),
            channels: BTreeMap::new(),
            handlers: BTreeMap::new(),
            reauth: ReauthSettings::default(),
            tls: TlsSettings::default(),
        }
    }
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            factor: 4,
            tiers: 5,
        }
    }
}

/// A configuration problem, reported as one line naming the key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// A configuration error with this explanation.
    pub fn new(why: impl Into<String>) -> Self {
        Self(why.into())
    }
}

/// Serialisation feeds figment's defaults layer, so it must be faithful; output
/// for people goes through [`Settings::redacted_json`] instead.
fn serialize_exposed<S: serde::Serializer>(url: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(url.expose_secret())
}

fn serialize_exposed_opt<S: serde::Serializer>(
    url: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_some(url.expose_secret()),
        None => s.serialize_none(),
    }
}

/// Replaces the password of a URL with `***`, for logs and `topology` output.
#[must_use]
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            // libpq also takes the password as a query parameter.
            if u.query_pairs().any(|(k, _)| k == "password") {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k == "password" {
                            "***".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "<unparseable url>".into(),
    }
}

impl Settings {
    /// Loads defaults, then `file` (or `WARDEN_CONFIG`) if given, then `WARDEN_*`
    /// environment variables, and validates the result.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the offending key.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let file: Option<PathBuf> = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("WARDEN_CONFIG").map(PathBuf::from));
        // Missing keys take their defaults through `#[serde(default)]`.
        let mut figment = Figment::new();
        if let Some(path) = &file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist or is not a file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(
            Env::prefixed("WARDEN_")
                .split("__")
                .ignore(NON_SETTINGS_ENV),
        );
        let settings: Settings = figment.extract().map_err(|e| ConfigError(one_line(&e)))?;
        settings.validate()?;
        Ok(settings)
    }

    /// The settings as JSON with every secret redacted, for `warden config check`.
    #[must_use]
    pub fn redacted_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        v["amqp_url"] = self.amqp_url_redacted().into();
        if let Some(url) = &self.token_store {
            v["token_store"] = redact_url(url.expose_secret()).into();
        }
        v
    }

    /// The broker URL with its password replaced, safe to log.
    #[must_use]
    pub fn amqp_url_redacted(&self) -> String {
        addresses(self.amqp_url.expose_secret())
            .into_iter()
            .map(redact_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The token store URL, with its embedded default.
    #[must_use]
    pub fn token_store_url(&self) -> &str {
        self.token_store
            .as_ref()
            .map_or("sqlite://warden.db", ExposeSecret::expose_secret)
    }

    /// Does this worker run tasks for channels (and so need the token store)?
    #[must_use]
    pub fn uses_channels(&self) -> bool {
        self.token_store.is_some() || !self.channels.is_empty() || !self.handlers.is_empty()
    }

    /// The AMQP prefetch: `prefetch`, or the handler slots plus a refill
    /// window of three deliveries per slot, at most [`REFILL_WINDOW`]
    /// (`concurrency + min(3 x concurrency, 256)`: 4, 64, 256, 512 at
    /// concurrency 1, 16, 64, 256).
    ///
    /// The window hides the broker's round trip: a slot that frees finds its
    /// next delivery already here. At concurrency 64 it is worth 20–30 % of
    /// the drain rate (256 vs 128, alternating runs). Beyond 256 waiting it
    /// measured no faster, only bigger: at concurrency 256, 512 drains as
    /// fast as 1024 and holds about 1 MiB less at its peak.
    #[must_use]
    pub fn prefetch(&self) -> u16 {
        self.prefetch.unwrap_or_else(|| {
            let refill = self.concurrency.saturating_mul(3).min(REFILL_WINDOW);
            self.concurrency.saturating_add(refill)
        })
    }

    /// Where tasks of `task_type` run when they are not suspects.
    #[must_use]
    pub fn isolation(&self, task_type: &str) -> Isolation {
        self.task_types
            .get(task_type)
            .map_or(Isolation::Auto, |t| t.isolation)
    }

    /// Every environment variable warden reads for its settings, for deployment
    /// checks (`warden config env-keys`). Providers, channels and handlers are
    /// tables of the TOML file and have no fixed variable names.
    #[must_use]
    pub fn env_keys() -> Vec<String> {
        let value = serde_json::to_value(Settings::default()).unwrap_or_default();
        let mut keys: Vec<String> = NON_SETTINGS_ENV
            .iter()
            .map(|k| format!("WARDEN_{k}"))
            .collect();
        collect_keys("WARDEN_", &value, &mut keys);
        keys.sort();
        keys
    }
}

fn collect_keys(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
    if let serde_json::Value::Object(map) = value {
        for (k, v) in map {
            let key = format!("{prefix}{}", k.to_ascii_uppercase());
            if v.is_object() {
                collect_keys(&format!("{key}__"), v, out);
            } else {
                out.push(key);
            }
        }
    }
}

impl RetrySettings {
    /// The delay of each tier: `base_delay * factor^i` for `i` in `0..tiers`.
    #[must_use]
    pub fn tier_delays(&self) -> Vec<Duration> {
        let mut delays = Vec::with_capacity(self.tiers as usize);
        let mut d = self.base_delay;
        for _ in 0..self.tiers {
            delays.push(d);
            d = d.saturating_mul(self.factor);
        }
        delays
    }
}

/// Figment errors can span several lines and name the env var; keep the first
/// line with its key path, which is what a user needs to fix it.
fn one_line(e: &figment::Error) -> String {
    let mut msg = e.to_string().replace('\n', " ");
    if !e.path.is_empty() && !msg.contains(&e.path.join(".")) {
        msg = format!("`{}`: {msg}", e.path.join("."));
    }
    msg
}

/// The broker addresses in `raw`: one AMQP URI, or several separated by
/// commas (the nodes of a cluster), each trimmed, empty entries dropped.
///
/// Several addresses are how warden reaches a RabbitMQ cluster without a load
/// balancer in front of it: each connect tries them in a fresh random order
/// (`amqp::broker::connect`), so replicas spread over the nodes and a dead node only costs
/// a refused attempt.
#[must_use]
pub fn addresses(raw: &str) -> Vec<&str> {
    raw.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect()
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its own error type
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().unwrap();
    }

    #[test]
    fn tiers_grow_exponentially() {
        let r = RetrySettings::default();
        let secs: Vec<u64> = r.tier_delays().iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![1, 4, 16, 64, 256]);
    }

    #[test]
    fn env_overrides_file_and_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("w.toml", "prefix = \"fromfile\"\nconcurrency = 3\n")?;
            jail.set_env("WARDEN_CONCURRENCY", "7");
            jail.set_env("WARDEN_RETRY__MAX_ATTEMPTS", "9");
            let s = Settings::load(Some(Path::new("w.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.prefix, "fromfile");
            assert_eq!(s.concurrency, 7);
            assert_eq!(s.retry.max_attempts, 9);
            Ok(())
        });
    }

    #[test]
    fn the_prefetch_defaults_to_the_slots_plus_a_bounded_refill_window_and_never_falls_below_them()
    {
        figment::Jail::expect_with(|jail| {
            for (concurrency, prefetch) in [(1, 4), (10, 40), (64, 256), (256, 512), (1000, 1256)] {
                jail.set_env("WARDEN_CONCURRENCY", concurrency);
                let s = Settings::load(None).map_err(|e| e.to_string())?;
                assert_eq!(s.prefetch(), prefetch, "at concurrency {concurrency}");
            }
            jail.set_env("WARDEN_CONCURRENCY", "10");
            jail.set_env("WARDEN_PREFETCH", "10");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.prefetch(), 10);
            jail.set_env("WARDEN_PREFETCH", "9");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(
                err.contains("prefetch") && err.contains("concurrency"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_its_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("WARDEN_CONCURRENCY", "lots");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("concurrency"), "{err}");
            assert!(!err.contains('\n'));
            Ok(())
        });
    }

    #[test]
    fn redaction_hides_the_password() {
        let s = redact_url("amqp://user:hunter2@host:5672/%2f");
        assert!(!s.contains("hunter2"));
        assert!(s.contains("user"));
    }

    #[test]
    fn config_check_redacts_the_token_store_password() {
        for url in [
            "postgres://warden:hunter2@db:5432/warden",
            "postgres://warden@db/warden?sslmode=require&password=hunter2",
        ] {
            let settings = Settings {
                token_store: Some(SecretString::from(url)),
                ..Settings::default()
            };
            let shown = settings.redacted_json().to_string();
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("db"), "{shown}");
            assert!(!format!("{settings:?}").contains("hunter2"));
        }
    }

    #[test]
    fn env_keys_lists_nested_keys() {
        let keys = Settings::env_keys();
        assert!(keys.contains(&"WARDEN_RETRY__MAX_ATTEMPTS".to_string()));
        assert!(keys.contains(&"WARDEN_AMQP_URL".to_string()));
        assert!(keys.contains(&"WARDEN_TOKEN_STORE".to_string()));
        assert!(keys.contains(&"WARDEN_TOKEN_KEY_FILE".to_string()));
        assert!(keys.contains(&"WARDEN_REAUTH__CHROMIUM_PATH".to_string()));
    }
}
