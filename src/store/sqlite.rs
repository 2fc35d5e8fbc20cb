//! SQLite, the embedded default: one file in WAL mode, owner-only.
//!
//! Timestamps are UTC text in one fixed-width format, so comparing strings compares times (the
//! lease check relies on it) and the file stays readable with the `sqlite3` shell. SQLite's own
//! clock writes them as `strftime` renders `'now'`: milliseconds, padded to the six digits that
//! timestamps from Rust carry. A SQLite file has one host, so that clock is this host's.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Sqlite;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};

use super::ConnectOptions;
use super::crypto::Keyring;
use super::error::StoreError;
use super::sql::{Dialect, SqlStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The stored timestamp format, as chrono writes it.
const TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

impl Dialect for Sqlite {
    const BACKEND: &'static str = "sqlite";
    const NOW: &'static str = "strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')";

    type Time = String;

    fn now_plus_seconds(seconds: &str) -> String {
        format!("strftime('%Y-%m-%dT%H:%M:%f000Z', 'now', printf('%+.3f seconds', {seconds}))")
    }

    fn time_to_db(time: DateTime<Utc>) -> String {
        time.format(TS_FORMAT).to_string()
    }

    fn time_from_db(channel: &str, time: String) -> Result<DateTime<Utc>, StoreError> {
        DateTime::parse_from_rfc3339(&time)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| StoreError::Corrupt {
                channel: channel.to_owned(),
                reason: format!("bad timestamp {time:?}"),
            })
    }

    fn rows_affected(done: &SqliteQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// Opens (creating if missing) the database file at `url` and runs its migrations.
pub(super) async fn connect(
    url: &str,
    keys: Keyring,
    options: &ConnectOptions,
) -> Result<SqlStore<Sqlite>, StoreError> {
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
    Ok(SqlStore::new(pool, keys))
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
