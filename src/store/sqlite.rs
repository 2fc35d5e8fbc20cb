//! SQLite backend: one file, WAL mode, the embedded default.
//!
//! Timestamps are stored as UTC text in one fixed-width format, so comparing strings compares
//! times (the lease check relies on it) and the file stays readable with the `sqlite3` shell.
//! The clock is this process's: a SQLite file has one host, so there is no skew to avoid.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Executor as _, Row};

use super::crypto::Sealed;
use super::{
    ChannelRecord, ConnectOptions, Keyring, MAX_LEASE_TTL, StoreError, TokenSet, TokenStore,
    clip_error, open, seal, status_from_db, stored_expiry, version_from_db, version_to_db,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Fixed-width, lexicographically ordered UTC timestamp format.
const TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

const RECORD_COLUMNS: &str = "channel, provider, version, status, last_error, \
     token_ciphertext IS NOT NULL AS has_token, token_expires_at, lease_holder, \
     lease_expires_at, updated_at";

fn ts(t: DateTime<Utc>) -> String {
    t.format(TS_FORMAT).to_string()
}

fn parse_ts(channel: &str, s: Option<String>) -> Result<Option<DateTime<Utc>>, StoreError> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| StoreError::Corrupt {
                channel: channel.to_owned(),
                reason: format!("bad timestamp {s:?}"),
            })
    })
    .transpose()
}

fn record(row: &SqliteRow) -> Result<ChannelRecord, StoreError> {
    let channel: String = row.try_get("channel")?;
    Ok(ChannelRecord {
        provider: row.try_get("provider")?,
        version: version_from_db(&channel, row.try_get("version")?)?,
        status: status_from_db(&channel, row.try_get("status")?)?,
        last_error: row.try_get("last_error")?,
        has_token: row.try_get("has_token")?,
        token_expires_at: parse_ts(&channel, row.try_get("token_expires_at")?)?,
        lease_holder: row.try_get("lease_holder")?,
        lease_expires_at: parse_ts(&channel, row.try_get("lease_expires_at")?)?,
        updated_at: parse_ts(&channel, Some(row.try_get("updated_at")?))?
            .expect("Some in, Some out"),
        channel,
    })
}

pub(super) struct SqliteStore {
    pool: SqlitePool,
    keys: Keyring,
}

impl SqliteStore {
    pub(super) async fn connect(
        url: &str,
        keys: Keyring,
        options: &ConnectOptions,
    ) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across application crashes in WAL mode; only an OS crash can
            // lose the last commits, and a lost token write only means one more re-auth.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let in_memory = connect.get_filename().as_os_str() == ":memory:"
            || url.contains(":memory:")
            || url.contains("mode=memory");
        if !in_memory {
            create_private_file(connect.get_filename())?;
        }
        let pool = SqlitePoolOptions::new()
            // Each in-memory connection is its own database, so one connection is the database.
            .max_connections(if in_memory {
                1
            } else {
                options.max_connections.unwrap_or(5)
            })
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, keys })
    }

    async fn ensure_exists(&self, channel: &str) -> Result<(), StoreError> {
        let found = sqlx::query("SELECT 1 FROM warden_channels WHERE channel = ?1")
            .bind(channel)
            .fetch_optional(&self.pool)
            .await?;
        match found {
            Some(_) => Ok(()),
            None => Err(StoreError::UnknownChannel(channel.to_owned())),
        }
    }
}

/// Creates the database file with owner-only permissions, so that even the metadata and the
/// sealed tokens are not world-readable. SQLite gives the `-wal` and `-shm` files the same mode.
fn create_private_file(path: &std::path::Path) -> Result<(), StoreError> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(sqlx::Error::Io(e))),
    }
}

#[async_trait]
impl TokenStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ensure_channel(&self, channel: &str, provider: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO warden_channels (channel, provider, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (channel) DO NOTHING",
        )
        .bind(channel)
        .bind(provider)
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get(&self, channel: &str) -> Result<Option<ChannelRecord>, StoreError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM warden_channels WHERE channel = ?1");
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
             WHERE channel = ?1 AND token_ciphertext IS NOT NULL",
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
                sqlx::query_scalar("SELECT version FROM warden_channels WHERE channel = ?1")
                    .bind(channel)
                    .fetch_optional(&self.pool)
                    .await?
                    .unwrap_or(0);
            let next = version_from_db(channel, read)? + 1;
            let sealed = seal(&self.keys, channel, next, tokens)?;
            let written: Option<i64> = sqlx::query_scalar(
                "INSERT INTO warden_channels
                     (channel, provider, version, status, token_key_id, token_ciphertext,
                      token_expires_at, updated_at)
                 VALUES (?1, ?2, ?7, 'active', ?3, ?4, ?5, ?6)
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
                     updated_at = excluded.updated_at
                 WHERE warden_channels.version = ?8
                 RETURNING version",
            )
            .bind(channel)
            .bind(provider)
            .bind(sealed.key_id)
            .bind(sealed.blob)
            .bind(stored_expiry(tokens.expires_at).map(ts))
            .bind(ts(Utc::now()))
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
            "UPDATE warden_channels SET status = 'reauth_pending', updated_at = ?3
             WHERE channel = ?1 AND version = ?2 AND status = 'active'",
        )
        .bind(channel)
        .bind(version_to_db(failed_version))
        .bind(ts(Utc::now()))
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
             SET status = 'reauth_failed', last_error = ?2, lease_holder = NULL,
                 lease_expires_at = NULL, updated_at = ?3
             WHERE channel = ?1",
        )
        .bind(channel)
        .bind(clip_error(error))
        .bind(ts(Utc::now()))
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
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(ttl.min(MAX_LEASE_TTL)).expect("a day fits");
        let expires = now + ttl;
        let done = sqlx::query(
            "UPDATE warden_channels SET lease_holder = ?2, lease_expires_at = ?3
             WHERE channel = ?1
               AND (lease_holder IS NULL OR lease_holder = ?2 OR lease_expires_at <= ?4)",
        )
        .bind(channel)
        .bind(holder)
        .bind(ts(expires))
        .bind(ts(now))
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
             WHERE channel = ?1 AND lease_holder = ?2",
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
             WHERE token_ciphertext IS NOT NULL AND token_key_id <> ?1",
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
                "UPDATE warden_channels SET token_key_id = ?2, token_ciphertext = ?3
                 WHERE channel = ?1 AND token_ciphertext = ?4",
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
