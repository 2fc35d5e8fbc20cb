//! The one token-store implementation, [`SqlStore`], over any database that has a [`Dialect`].
//!
//! Both databases run the same statements. sqlx's SQLite driver binds `$1`, `$2`, … by number,
//! just as PostgreSQL does, so the statements need no translation. What really differs is time: a
//! [`Dialect`] says how a timestamp column is stored and how SQL spells "now" and "now plus some
//! seconds", and each statement splices those fragments in. Every value still travels as a bound
//! parameter; the fragments are constants of this crate.
//!
//! The store is generic over the sqlx driver rather than built on sqlx's `Any` driver: `Any`
//! decodes no timestamps and cannot carry SQLite's WAL and busy-timeout options or PostgreSQL's
//! `search_path`. Generic code keeps every bind and column type checked against each driver,
//! and the statements stay in one place, written out in full.
//!
//! Every timestamp that decides something (lease expiry) comes from the database's clock, never
//! a replica's: replicas on different hosts may disagree about the time, and the database is the
//! one clock they share. Every multi-writer operation is one statement, so its atomicity comes
//! from the database: PostgreSQL queues concurrent `UPDATE`s of one row under READ COMMITTED and
//! re-checks each `WHERE` against the row the previous one committed, and SQLite runs one writer
//! at a time. Either way, of fifty concurrent `mark_pending` calls for one version, the first
//! flips the status and the other forty-nine find it no longer `active`.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Database, Decode, Encode, Executor, FromRow, IntoArguments, Pool, Type};

use super::channel::{ChannelRecord, ChannelStatus, ParseStatusError, TokenSet, stored_expiry};
use super::crypto::{Keyring, Sealed};
use super::error::StoreError;
use super::sealing::{open, seal};
use super::{MAX_ERROR_LEN, MAX_LEASE_TTL, TokenStore};

/// What differs between the databases the store runs on.
pub(super) trait Dialect: Database {
    /// The backend's name as [`TokenStore::backend`] reports it.
    const BACKEND: &'static str;

    /// SQL for the database's current time, in the form the timestamp columns hold.
    const NOW: &'static str;

    /// How a timestamp column is bound and read.
    type Time: for<'q> Encode<'q, Self> + for<'r> Decode<'r, Self> + Type<Self> + Send + Unpin;

    /// SQL for the database's time `seconds` from now, where `seconds` is the `$N` bind
    /// parameter holding a float.
    fn now_plus_seconds(seconds: &str) -> String;

    /// A timestamp as its column holds it.
    fn time_to_db(time: DateTime<Utc>) -> Self::Time;

    /// A timestamp read from `channel`'s row.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the column holds something the store never writes.
    fn time_from_db(channel: &str, time: Self::Time) -> Result<DateTime<Utc>, StoreError>;

    /// How many rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

/// The columns of [`ChannelRecord`]: metadata only, never the ciphertext itself.
const RECORD_COLUMNS: &str = "channel, provider, version, status, last_error, \
     token_ciphertext IS NOT NULL AS has_token, token_expires_at, lease_holder, \
     lease_expires_at, updated_at";

/// A row as [`RECORD_COLUMNS`] reads it, timestamps still in the dialect's form `T`.
#[derive(FromRow)]
pub(super) struct ChannelRow<T> {
    channel: String,
    provider: String,
    version: i64,
    status: String,
    last_error: Option<String>,
    has_token: bool,
    token_expires_at: Option<T>,
    lease_holder: Option<String>,
    lease_expires_at: Option<T>,
    updated_at: T,
}

impl<T> ChannelRow<T> {
    fn into_record<D: Dialect<Time = T>>(self) -> Result<ChannelRecord, StoreError> {
        let channel = self.channel;
        let time = |t: Option<T>| t.map(|t| D::time_from_db(&channel, t)).transpose();
        Ok(ChannelRecord {
            provider: self.provider,
            version: version_from_db(&channel, self.version)?,
            status: status_from_db(&channel, &self.status)?,
            last_error: self.last_error,
            has_token: self.has_token,
            token_expires_at: time(self.token_expires_at)?,
            lease_holder: self.lease_holder,
            lease_expires_at: time(self.lease_expires_at)?,
            updated_at: D::time_from_db(&channel, self.updated_at)?,
            channel,
        })
    }
}

/// A channel's sealed token and the version it was sealed for.
#[derive(FromRow)]
pub(super) struct SealedRow {
    channel: String,
    version: i64,
    token_key_id: String,
    token_ciphertext: Vec<u8>,
}

impl SealedRow {
    /// The version, and the sealed token as the keyring takes it.
    fn split(self) -> Result<(u64, Sealed), StoreError> {
        let version = version_from_db(&self.channel, self.version)?;
        let sealed = Sealed {
            key_id: self.token_key_id,
            blob: self.token_ciphertext,
        };
        Ok((version, sealed))
    }
}

/// The token store over one database `D`.
pub(super) struct SqlStore<D: Database> {
    pool: Pool<D>,
    keys: Keyring,
}

impl<D: Dialect> SqlStore<D> {
    /// A store over a pool whose migrations have run.
    pub(super) fn new(pool: Pool<D>, keys: Keyring) -> Self {
        Self { pool, keys }
    }
}

impl<D: Dialect> SqlStore<D>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments: IntoArguments<D>,
    for<'a> &'a str: Encode<'a, D> + Type<D>,
{
    /// Runs a conditional write of `channel`'s row. Returns whether it changed the row, or
    /// [`StoreError::UnknownChannel`] when it changed nothing because the channel has no row.
    async fn write_row(
        &self,
        channel: &str,
        write: Query<'_, D, D::Arguments>,
    ) -> Result<bool, StoreError> {
        let done = write.execute(&self.pool).await?;
        if D::rows_affected(&done) == 1 {
            return Ok(true);
        }
        let found = sqlx::query("SELECT 1 FROM warden_channels WHERE channel = $1")
            .bind(channel)
            .fetch_optional(&self.pool)
            .await?;
        match found {
            Some(_) => Ok(false),
            None => Err(StoreError::UnknownChannel(channel.to_owned())),
        }
    }
}

// The bounds name every type the statements bind or read. Rust does not carry such bounds from
// `Dialect`'s definition to its users, so they stand here once; SQLite and PostgreSQL meet them.
#[async_trait]
impl<D: Dialect> TokenStore for SqlStore<D>
where
    for<'c> &'c mut D::Connection: Executor<'c, Database = D>,
    D::Arguments: IntoArguments<D>,
    for<'a> &'a str: Encode<'a, D> + Type<D>,
    for<'a> Vec<u8>: Encode<'a, D> + Type<D>,
    for<'a> i64: Encode<'a, D> + Type<D>,
    for<'a> f64: Encode<'a, D> + Type<D>,
    for<'a> Option<D::Time>: Encode<'a, D>,
    for<'r> (i64,): FromRow<'r, D::Row>,
    for<'r> ChannelRow<D::Time>: FromRow<'r, D::Row>,
    for<'r> SealedRow: FromRow<'r, D::Row>,
{
    fn backend(&self) -> &'static str {
        D::BACKEND
    }

    async fn ensure_channel(&self, channel: &str, provider: &str) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO warden_channels (channel, provider, updated_at) VALUES ($1, $2, {now})
             ON CONFLICT (channel) DO NOTHING",
            now = D::NOW,
        );
        sqlx::query(AssertSqlSafe(sql))
            .bind(channel)
            .bind(provider)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get(&self, channel: &str) -> Result<Option<ChannelRecord>, StoreError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM warden_channels WHERE channel = $1");
        sqlx::query_as::<_, ChannelRow<D::Time>>(AssertSqlSafe(sql))
            .bind(channel)
            .fetch_optional(&self.pool)
            .await?
            .map(ChannelRow::into_record::<D>)
            .transpose()
    }

    async fn list(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM warden_channels ORDER BY channel");
        sqlx::query_as::<_, ChannelRow<D::Time>>(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .into_iter()
            .map(ChannelRow::into_record::<D>)
            .collect()
    }

    async fn token(&self, channel: &str) -> Result<Option<(TokenSet, u64)>, StoreError> {
        let row = sqlx::query_as::<_, SealedRow>(
            "SELECT channel, version, token_key_id, token_ciphertext FROM warden_channels
             WHERE channel = $1 AND token_ciphertext IS NOT NULL",
        )
        .bind(channel)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let (version, sealed) = row.split()?;
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
        let sql = format!(
            "INSERT INTO warden_channels
                 (channel, provider, version, status, token_key_id, token_ciphertext,
                  token_expires_at, updated_at)
             VALUES ($1, $2, $6, 'active', $3, $4, $5, {now})
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
             WHERE warden_channels.version = $7
             RETURNING version",
            now = D::NOW,
        );
        loop {
            let read: i64 =
                sqlx::query_scalar("SELECT version FROM warden_channels WHERE channel = $1")
                    .bind(channel)
                    .fetch_optional(&self.pool)
                    .await?
                    .unwrap_or(0);
            let next = version_from_db(channel, read)? + 1;
            let sealed = seal(&self.keys, channel, next, tokens)?;
            let written: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
                .bind(channel)
                .bind(provider)
                .bind(sealed.key_id.as_str())
                .bind(sealed.blob)
                .bind(stored_expiry(tokens.expires_at).map(D::time_to_db))
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
        let sql = format!(
            "UPDATE warden_channels SET status = 'reauth_pending', updated_at = {now}
             WHERE channel = $1 AND version = $2 AND status = 'active'",
            now = D::NOW,
        );
        let write = sqlx::query(AssertSqlSafe(sql))
            .bind(channel)
            .bind(version_to_db(failed_version));
        self.write_row(channel, write).await
    }

    async fn mark_failed(&self, channel: &str, error: &str) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE warden_channels
             SET status = 'reauth_failed', last_error = $2, lease_holder = NULL,
                 lease_expires_at = NULL, updated_at = {now}
             WHERE channel = $1",
            now = D::NOW,
        );
        let write = sqlx::query(AssertSqlSafe(sql))
            .bind(channel)
            .bind(clip_error(error));
        self.write_row(channel, write).await?;
        Ok(())
    }

    async fn try_acquire_lease(
        &self,
        channel: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE warden_channels SET lease_holder = $2, lease_expires_at = {until}
             WHERE channel = $1
               AND (lease_holder IS NULL OR lease_holder = $2 OR lease_expires_at <= {now})",
            until = D::now_plus_seconds("$3"),
            now = D::NOW,
        );
        let write = sqlx::query(AssertSqlSafe(sql))
            .bind(channel)
            .bind(holder)
            .bind(ttl.min(MAX_LEASE_TTL).as_secs_f64());
        self.write_row(channel, write).await
    }

    async fn release_lease(&self, channel: &str, holder: &str) -> Result<bool, StoreError> {
        let write = sqlx::query(
            "UPDATE warden_channels SET lease_holder = NULL, lease_expires_at = NULL
             WHERE channel = $1 AND lease_holder = $2",
        )
        .bind(channel)
        .bind(holder);
        self.write_row(channel, write).await
    }

    async fn reencrypt_all(&self) -> Result<u64, StoreError> {
        let rows = sqlx::query_as::<_, SealedRow>(
            "SELECT channel, version, token_key_id, token_ciphertext FROM warden_channels
             WHERE token_ciphertext IS NOT NULL AND token_key_id <> $1",
        )
        .bind(self.keys.current_id())
        .fetch_all(&self.pool)
        .await?;
        let mut rewritten = 0;
        for row in rows {
            let channel = row.channel.clone();
            let (version, old) = row.split()?;
            let tokens = open(&self.keys, &channel, version, &old)?;
            let new = seal(&self.keys, &channel, version, &tokens)?;
            // Only replace exactly what was read: a token stored meanwhile is already current.
            let done = sqlx::query(
                "UPDATE warden_channels SET token_key_id = $2, token_ciphertext = $3
                 WHERE channel = $1 AND token_ciphertext = $4",
            )
            .bind(channel.as_str())
            .bind(new.key_id.as_str())
            .bind(new.blob)
            .bind(old.blob)
            .execute(&self.pool)
            .await?;
            rewritten += D::rows_affected(&done);
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

/// Cuts an error message to [`MAX_ERROR_LEN`] characters.
fn clip_error(error: &str) -> &str {
    error
        .char_indices()
        .nth(MAX_ERROR_LEN)
        .map_or(error, |(i, _)| &error[..i])
}

/// Converts a stored version (never negative, by a CHECK constraint) to the API's `u64`.
fn version_from_db(channel: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        channel: channel.to_owned(),
        reason: format!("negative version {v}"),
    })
}

/// Converts an API version to SQL's `BIGINT`. A version beyond `i64::MAX` cannot be stored, so
/// it can never match: map it to -1, which no row has.
fn version_to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(-1)
}

fn status_from_db(channel: &str, s: &str) -> Result<ChannelStatus, StoreError> {
    s.parse()
        .map_err(|e: ParseStatusError| StoreError::Corrupt {
            channel: channel.to_owned(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_clipped_on_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN + 10);
        assert_eq!(clip_error(&long).chars().count(), MAX_ERROR_LEN);
        assert_eq!(clip_error("short"), "short");
    }

    #[test]
    fn versions_beyond_the_column_never_match_a_row() {
        assert_eq!(version_to_db(u64::MAX), -1);
        assert!(matches!(
            version_from_db("c", -1),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
