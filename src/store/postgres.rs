//! PostgreSQL backend, for replicas that share one store.
//!
//! Every timestamp that decides something (lease expiry) comes from the database's clock,
//! `now()`, never a replica's. Replicas on different hosts may disagree about the time; the
//! database is the one clock they share.
//!
//! Concurrency relies on PostgreSQL's row locking under READ COMMITTED: concurrent `UPDATE`s of
//! one row queue up, and each re-checks its `WHERE` against the row the previous one committed.
//! So of fifty concurrent `mark_pending` calls for one version, the first flips the status and
//! the other forty-nine find it no longer `active`.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection as _, Executor as _, Row};

use super::crypto::Sealed;
use super::{
    ChannelRecord, ConnectOptions, Keyring, MAX_LEASE_TTL, StoreError, TokenSet, TokenStore,
    clip_error, open, seal, status_from_db, stored_expiry, version_from_db, version_to_db,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const RECORD_COLUMNS: &str = "channel, provider, version, status, last_error, \
     token_ciphertext IS NOT NULL AS has_token, token_expires_at, lease_holder, \
     lease_expires_at, updated_at";

fn record(row: &PgRow) -> Result<ChannelRecord, StoreError> {
    let channel: String = row.try_get("channel")?;
    Ok(ChannelRecord {
        provider: row.try_get("provider")?,
        version: version_from_db(&channel, row.try_get("version")?)?,
        status: status_from_db(&channel, row.try_get("status")?)?,
        last_error: row.try_get("last_error")?,
        has_token: row.try_get("has_token")?,
        token_expires_at: row.try_get("token_expires_at")?,
        lease_holder: row.try_get("lease_holder")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        updated_at: row.try_get("updated_at")?,
        channel,
    })
}

fn is_plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) struct PgStore {
    pool: PgPool,
    keys: Keyring,
}

impl PgStore {
    pub(super) async fn connect(
        url: &str,
        keys: Keyring,
        options: &ConnectOptions,
    ) -> Result<Self, StoreError> {
        let mut connect = PgConnectOptions::from_str(url)?;
        if let Some(schema) = &options.postgres_schema {
            if !is_plain_identifier(schema) {
                return Err(StoreError::InvalidSchema(schema.clone()));
            }
            let mut conn = sqlx::PgConnection::connect_with(&connect).await?;
            // Safe to interpolate: checked to be a plain identifier above, and quoted.
            conn.execute(sqlx::AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )))
            .await?;
            conn.close().await?;
            // A startup parameter rather than a `SET` after connect: it applies to every
            // pooled connection, including ones opened after a reconnect.
            connect = connect.options([("search_path", format!("\"{schema}\""))]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.unwrap_or(5))
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, keys })
    }

    async fn ensure_exists(&self, channel: &str) -> Result<(), StoreError> {
        let found = sqlx::query("SELECT 1 FROM warden_channels WHERE channel = $1")
            .bind(channel)
            .fetch_optional(&self.pool)
            .await?;
        match found {
            Some(_) => Ok(()),
            None => Err(StoreError::UnknownChannel(channel.to_owned())),
        }
    }
}

#[async_trait]
impl TokenStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ensure_channel(&self, channel: &str, provider: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO warden_channels (channel, provider) VALUES ($1, $2)
             ON CONFLICT (channel) DO NOTHING",
        )
        .bind(channel)
        .bind(provider)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get(&self, channel: &str) -> Result<Option<ChannelRecord>, StoreError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM warden_channels WHERE channel = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(channel)
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    async fn list(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM warden_channels ORDER BY channel");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(record)
            .collect()
    }

    async fn token(&self, channel: &str) -> Result<Option<(TokenSet, u64)>, StoreError> {
        let row = sqlx::query(
            "SELECT version, token_key_id, token_ciphertext FROM warden_channels
             WHERE channel = $1 AND token_ciphertext IS NOT NULL",
        )
        .bind(channel)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed = Sealed {
            key_id: row.try_get("token_key_id")?,
            blob: row.try_get("token_ciphertext")?,
        };
        let version = version_from_db(channel, row.try_get("version")?)?;
        Ok(Some((
            open(&self.keys, channel, version, &sealed)?,
            version,
        )))
    }

    async fn put_token(
        &self,
        channel: &str,
        provider: &str,
        tokens: &TokenSet,
    ) -> Result<u64, StoreError> {
        // The version is part of the associated data, so it is chosen before sealing and the
        // write only lands if no other writer moved the row meanwhile (then seal again).
        loop {
            let read: i64 =
                sqlx::query_scalar("SELECT version FROM warden_channels WHERE channel = $1")
                    .bind(channel)
                    .fetch_optional(&self.pool)
                    .await?
                    .unwrap_or(0);
            let next = version_from_db(channel, read)? + 1;
            let sealed = seal(&self.keys, channel, next, tokens)?;
            let written: Option<i64> = sqlx::query_scalar(
                "INSERT INTO warden_channels
                     (channel, provider, version, status, token_key_id, token_ciphertext,
                      token_expires_at)
                 VALUES ($1, $2, $6, 'active', $3, $4, $5)
                 ON CONFLICT (channel) DO UPDATE SET
                     provider = excluded.provider,
                     version = excluded.version,
                     status = 'active',
                     last_error = NULL,
                     token_key_id = excluded.token_key_id,
                     token_ciphertext = excluded.token_ciphertext,
                     token_expires_at = excluded.token_expires_at,
                     lease_holder = NULL,
                     lease_expires_at = NULL,
                     updated_at = now()
                 WHERE warden_channels.version = $7
                 RETURNING version",
            )
            .bind(channel)
            .bind(provider)
            .bind(sealed.key_id)
            .bind(sealed.blob)
            .bind(stored_expiry(tokens.expires_at))
            .bind(version_to_db(next))
            .bind(read)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(version) = written {
                return version_from_db(channel, version);
            }
        }
    }

    async fn mark_pending(&self, channel: &str, failed_version: u64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE warden_channels SET status = 'reauth_pending', updated_at = now()
             WHERE channel = $1 AND version = $2 AND status = 'active'",
        )
        .bind(channel)
        .bind(version_to_db(failed_version))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        self.ensure_exists(channel).await?;
        Ok(false)
    }

    async fn mark_failed(&self, channel: &str, error: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE warden_channels
             SET status = 'reauth_failed', last_error = $2, lease_holder = NULL,
                 lease_expires_at = NULL, updated_at = now()
             WHERE channel = $1",
        )
        .bind(channel)
        .bind(clip_error(error))
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownChannel(channel.to_owned()));
        }
        Ok(())
    }

    async fn try_acquire_lease(
        &self,
        channel: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE warden_channels
             SET lease_holder = $2, lease_expires_at = now() + make_interval(secs => $3)
             WHERE channel = $1
               AND (lease_holder IS NULL OR lease_holder = $2 OR lease_expires_at <= now())",
        )
        .bind(channel)
        .bind(holder)
        .bind(ttl.min(MAX_LEASE_TTL).as_secs_f64())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        self.ensure_exists(channel).await?;
        Ok(false)
    }

    async fn release_lease(&self, channel: &str, holder: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE warden_channels SET lease_holder = NULL, lease_expires_at = NULL
             WHERE channel = $1 AND lease_holder = $2",
        )
        .bind(channel)
        .bind(holder)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            return Ok(true);
        }
        self.ensure_exists(channel).await?;
        Ok(false)
    }

    async fn reencrypt_all(&self) -> Result<u64, StoreError> {
        let rows = sqlx::query(
            "SELECT channel, version, token_key_id, token_ciphertext FROM warden_channels
             WHERE token_ciphertext IS NOT NULL AND token_key_id <> $1",
        )
        .bind(self.keys.current_id())
        .fetch_all(&self.pool)
        .await?;
        let mut rewritten = 0;
        for row in rows {
            let channel: String = row.try_get("channel")?;
            let old = Sealed {
                key_id: row.try_get("token_key_id")?,
                blob: row.try_get("token_ciphertext")?,
            };
            let version = version_from_db(&channel, row.try_get("version")?)?;
            let tokens = open(&self.keys, &channel, version, &old)?;
            let new = seal(&self.keys, &channel, version, &tokens)?;
            // Only replace exactly what was read: a token stored meanwhile is already current.
            let done = sqlx::query(
                "UPDATE warden_channels SET token_key_id = $2, token_ciphertext = $3
                 WHERE channel = $1 AND token_ciphertext = $4",
            )
            .bind(&channel)
            .bind(new.key_id)
            .bind(new.blob)
            .bind(old.blob)
            .execute(&self.pool)
            .await?;
            rewritten += done.rows_affected();
        }
        Ok(rewritten)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.pool.execute("SELECT 1").await?;
        Ok(())
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::is_plain_identifier;

    #[test]
    fn schema_names_must_be_plain_identifiers() {
        assert!(is_plain_identifier("warden_test_1"));
        for bad in [
            "",
            "1abc",
            "a-b",
            "a\"; DROP TABLE x; --",
            "a.b",
            &"x".repeat(64),
        ] {
            assert!(!is_plain_identifier(bad), "{bad}");
        }
    }
}
