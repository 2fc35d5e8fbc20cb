//! [`Settings::validate`]: the invariants serde cannot express, one function
//! per section, each naming the first offending key.

use std::time::Duration;

use secrecy::ExposeSecret;

use super::{BROKER_DELIVERY_LIMIT, ConfigError, Settings, addresses};

/// `Err` naming `key` and what is wrong with it.
fn bad(key: &str, why: &str) -> Result<(), ConfigError> {
    Err(ConfigError(format!("`{key}` {why}")))
}

impl Settings {
    /// Checks the invariants serde cannot express.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_broker()?;
        self.validate_worker()?;
        self.validate_retry()?;
        self.validate_reauth()?;
        for (kind, handler) in &self.handlers {
            handler
                .check()
                .map_err(|e| ConfigError(format!("`handlers.{kind}`: {e}")))?;
        }
        Ok(())
    }

    /// `amqp_url` and `tls`.
    fn validate_broker(&self) -> Result<(), ConfigError> {
        let url = self.amqp_url.expose_secret();
        // A comma-separated list names the nodes of one cluster
        // ([`addresses`]): each must be a valid URI, and all of one
        // scheme, since the TLS settings apply to every connection.
        let addresses = addresses(url);
        if addresses.is_empty() {
            return bad("amqp_url", "must name at least one broker address");
        }
        for address in &addresses {
            if !(address.starts_with("amqp://") || address.starts_with("amqps://")) {
                return bad("amqp_url", "must start with amqp:// or amqps://");
            }
            if address.parse::<lapin::uri::AMQPUri>().is_err() {
                return bad("amqp_url", "is not a valid AMQP URI");
            }
        }
        let tls_url = url.trim_start().starts_with("amqps://");
        if addresses
            .iter()
            .any(|a| a.starts_with("amqps://") != tls_url)
        {
            return bad("amqp_url", "mixes amqp:// and amqps:// addresses");
        }
        if self.heartbeat.as_secs() == 0 || self.heartbeat.as_secs() > u64::from(u16::MAX) {
            return bad("heartbeat", "must be between 1s and 65535s");
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => return bad("tls.key_file", "is needed with tls.cert_file"),
            (None, Some(_)) => return bad("tls.cert_file", "is needed with tls.key_file"),
            _ => {}
        }
        for (key, path) in [
            ("tls.ca_file", &self.tls.ca_file),
            ("tls.cert_file", &self.tls.cert_file),
            ("tls.key_file", &self.tls.key_file),
        ] {
            if let Some(path) = path
                && let Err(e) = std::fs::File::open(path)
            {
                return bad(key, &format!("cannot read {}: {e}", path.display()));
            }
        }
        let tls_set = self.tls.ca_file.is_some() || self.tls.cert_file.is_some();
        if tls_set && !tls_url {
            return bad("tls", "is only used with an amqps:// amqp_url");
        }
        Ok(())
    }

    /// The consumer: names, concurrency, limits, the sandbox, liveness.
    fn validate_worker(&self) -> Result<(), ConfigError> {
        if self.prefix.is_empty()
            || self.prefix.len() > 100
            || !self
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return bad(
                "prefix",
                "must be 1-100 characters of letters, digits, '-', '_' or '.'",
            );
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if let Some(prefetch) = self.prefetch
            && prefetch < self.concurrency
        {
            return bad(
                "prefetch",
                "must be at least concurrency, or handler slots wait for deliveries that cannot come",
            );
        }
        if self.task_timeout.is_zero() {
            return bad("task_timeout", "must be greater than zero");
        }
        if self.max_body_bytes == 0 {
            return bad("max_body_bytes", "must be greater than zero");
        }
        if self.delivery_limit == 0 || self.delivery_limit > BROKER_DELIVERY_LIMIT {
            return bad(
                "delivery_limit",
                &format!(
                    "must be between 1 and {BROKER_DELIVERY_LIMIT} (the queue's fixed backstop)"
                ),
            );
        }
        if self
            .sandbox_memory
            .is_some_and(|m| m < bytesize::ByteSize::mib(32))
        {
            return bad(
                "sandbox_memory",
                "must be at least 32MiB (the sandbox process itself needs some)",
            );
        }
        if self.liveness_limit < Duration::from_secs(1) {
            return bad("liveness_limit", "must be at least 1s");
        }
        Ok(())
    }

    /// `retry.*`, `park_ttl` and `max_park`.
    fn validate_retry(&self) -> Result<(), ConfigError> {
        if self.retry.max_attempts == 0 {
            return bad("retry.max_attempts", "must be at least 1");
        }
        if self.retry.base_delay < Duration::from_millis(1) {
            return bad("retry.base_delay", "must be at least 1ms");
        }
        if self.retry.factor == 0 {
            return bad("retry.factor", "must be at least 1");
        }
        if self.retry.tiers == 0 || self.retry.tiers > 20 {
            return bad("retry.tiers", "must be between 1 and 20");
        }
        if self.retry.tier_delays().last().copied() > Some(Duration::from_secs(7 * 24 * 3600)) {
            return bad(
                "retry",
                "longest tier would exceed 7 days; lower factor or tiers",
            );
        }
        if self.park_ttl < Duration::from_millis(100) {
            return bad("park_ttl", "must be at least 100ms");
        }
        if self.max_park < self.park_ttl {
            return bad("max_park", "must be at least park_ttl");
        }
        Ok(())
    }

    /// The token store, providers, channels and `reauth.*`.
    fn validate_reauth(&self) -> Result<(), ConfigError> {
        if let Some(url) = self.token_store.as_ref().map(ExposeSecret::expose_secret)
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return bad("token_store", "must be sqlite://path or postgres://…");
        }
        for (name, provider) in &self.providers {
            provider
                .validate()
                .map_err(|e| ConfigError(format!("`providers.{name}`: {e}")))?;
        }
        for (name, channel) in &self.channels {
            if !self.providers.contains_key(&channel.provider) {
                return Err(ConfigError(format!(
                    "`channels.{name}.provider` names {:?}, which is not in [providers]",
                    channel.provider
                )));
            }
        }
        if self.reauth.max_attempts == 0 {
            return bad("reauth.max_attempts", "must be at least 1");
        }
        if self.reauth.concurrency == 0 {
            return bad("reauth.concurrency", "must be at least 1");
        }
        if self.reauth.lease_ttl <= self.reauth.login_timeout {
            return bad(
                "reauth.lease_ttl",
                "must be longer than reauth.login_timeout",
            );
        }
        Ok(())
    }
}
