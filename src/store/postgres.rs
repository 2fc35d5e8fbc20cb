//! PostgreSQL, for replicas that share one store: timestamps are `TIMESTAMPTZ`, and "now" is the
//! server's `now()`. An optional schema keeps several deployments (or tests) in one database.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgQueryResult};
use sqlx::{Connection as _, Executor as _, Postgres};

use super::ConnectOptions;
use super::crypto::Keyring;
use super::error::StoreError;
use super::sql::{Dialect, SqlStore};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Dialect for Postgres {
    const BACKEND: &'static str = "postgres";
    const NOW: &'static str = "now()";

    type Time = DateTime<Utc>;

    fn now_plus_seconds(seconds: &str) -> String {
        format!("now() + make_interval(secs => {seconds})")
    }

    fn time_to_db(time: DateTime<Utc>) -> DateTime<Utc> {
        time
    }

    fn time_from_db(_channel: &str, time: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
        Ok(time)
    }

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }
}

/// Connects to `url`, creating and selecting the configured schema, and runs the migrations.
pub(super) async fn connect(
    url: &str,
    keys: Keyring,
    options: &ConnectOptions,
) -> Result<SqlStore<Postgres>, StoreError> {
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
    Ok(SqlStore::new(pool, keys))
}

fn is_plain_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
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
