//! A real database for one test, SQLite or PostgreSQL, and plain SQL against
//! it from outside the store: what an operator or an attacker with access to
//! the table could read and write.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::{Connection as _, Row as _};
use warden::store::{ConnectOptions, Keyring, StoreError, TokenStore, connect, connect_with};

use crate::support::block_on_aside;

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub(super) fn pg_url() -> String {
    std::env::var("WARDEN_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A connection to this test's SQLite file.
pub(super) async fn sqlite_raw(path: &Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&sqlite_url(path))
        .await
        .expect("open the SQLite file")
}

/// A connection to this test's PostgreSQL schema.
async fn pg_raw(schema: &str) -> sqlx::PgConnection {
    let options: sqlx::postgres::PgConnectOptions = pg_url().parse().unwrap();
    sqlx::PgConnection::connect_with(&options.options([("search_path", schema)]))
        .await
        .expect("connect to PostgreSQL")
}

/// Runs `$body` with `$conn` a plain connection to `$db`'s database, whichever
/// its dialect, and closes it: the same statements, typed per dialect.
macro_rules! with_raw_conn {
    ($db:expr, |$conn:ident| $body:expr) => {
        match $db {
            Backend::Sqlite { path, .. } => {
                let mut $conn = sqlite_raw(path).await;
                let out = $body;
                $conn.close().await.unwrap();
                out
            }
            Backend::Postgres { schema } => {
                let mut $conn = pg_raw(schema).await;
                let out = $body;
                $conn.close().await.unwrap();
                out
            }
        }
    };
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A real database for one test.
pub(super) enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        schema: String,
    },
}

impl Backend {
    pub(super) fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens.db");
        Self::Sqlite { _dir: dir, path }
    }

    pub(super) fn postgres() -> Self {
        Self::Postgres {
            schema: format!("warden_store_test_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    pub(super) async fn open(&self, keys: Keyring) -> Arc<dyn TokenStore> {
        self.try_open(keys).await.expect("open store")
    }

    pub(super) async fn try_open(&self, keys: Keyring) -> Result<Arc<dyn TokenStore>, StoreError> {
        match self {
            Self::Sqlite { path, .. } => connect(&sqlite_url(path), keys).await,
            Self::Postgres { schema } => {
                connect_with(
                    &pg_url(),
                    keys,
                    ConnectOptions::default().postgres_schema(schema.clone()),
                )
                .await
            }
        }
    }

    /// The store's URL as `WARDEN_TOKEN_STORE` takes it (PostgreSQL: this test's schema).
    pub(super) fn cli_url(&self) -> String {
        match self {
            Self::Sqlite { path, .. } => sqlite_url(path),
            Self::Postgres { schema } => {
                format!("{}?options=-c%20search_path%3D{schema}", pg_url())
            }
        }
    }

    /// Runs raw SQL that both dialects accept (no bind parameters).
    pub(super) async fn exec(&self, sql: String) {
        with_raw_conn!(self, |conn| {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
        });
    }

    /// The key id stored next to a channel's ciphertext, read with plain SQL.
    pub(super) async fn raw_key_id(&self, channel: &str) -> String {
        let sql = format!("SELECT token_key_id FROM warden_channels WHERE channel = '{channel}'");
        with_raw_conn!(self, |conn| sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await
            .unwrap())
    }

    /// Everything the database holds for the table, as bytes: every column of every row
    /// rendered as text (bytes as hex and as lossy UTF-8), and for SQLite also the raw database
    /// and WAL files.
    pub(super) async fn raw_dump(&self) -> Vec<u8> {
        match self {
            Self::Sqlite { path, .. } => sqlite_dump(path).await,
            Self::Postgres { schema } => pg_dump(schema).await,
        }
    }

    /// Writes a row exactly as warden did before HMAC key ids and version-bound associated
    /// data: the AES key check value as id, `warden/token/v1/<channel>` as associated data.
    pub(super) async fn put_legacy_row(&self, key: &[u8; 32], channel: &str, access: &str) {
        use aes_gcm::aead::{Aead as _, Payload};
        use aes_gcm::aes::cipher::{BlockEncrypt as _, KeyInit as _};
        use aes_gcm::{Aes256Gcm, Nonce};
        let mut block = [0u8; 16].into();
        aes_gcm::aes::Aes256::new(key.into()).encrypt_block(&mut block);
        let key_id = hex(&block[..8]);
        let nonce = rand::random::<[u8; 12]>();
        let aad = format!("warden/token/v1/{channel}");
        let payload = serde_json::json!({"v": 1, "access_token": access}).to_string();
        let mut blob = nonce.to_vec();
        blob.extend(
            Aes256Gcm::new(key.into())
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: payload.as_bytes(),
                        aad: aad.as_bytes(),
                    },
                )
                .unwrap(),
        );
        let hex = hex(&blob);
        let blob_sql = match self {
            Self::Sqlite { .. } => format!("X'{hex}'"),
            Self::Postgres { .. } => format!("'\\x{hex}'::bytea"),
        };
        self.exec(format!(
            "UPDATE warden_channels SET version = 1, status = 'active', token_key_id = '{key_id}', \
             token_ciphertext = {blob_sql} WHERE channel = '{channel}'"
        ))
        .await;
    }
}

/// [`Backend::raw_dump`] of a SQLite file.
async fn sqlite_dump(path: &Path) -> Vec<u8> {
    let mut conn = sqlite_raw(path).await;
    let rows = sqlx::query("SELECT * FROM warden_channels")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let mut dump = Vec::new();
    for row in &rows {
        for i in 0..row.len() {
            if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                dump.extend(v.unwrap_or_default().into_bytes());
            } else if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                dump.extend(format!("{v:?}").into_bytes());
            } else {
                let v: Option<Vec<u8>> = row.try_get(i).expect("text, integer or blob");
                let v = v.unwrap_or_default();
                dump.extend(hex(&v).into_bytes());
                dump.extend(&v);
            }
            dump.push(b'|');
        }
        dump.push(b'\n');
    }
    for file in [path.to_owned(), path.with_extension("db-wal")] {
        if let Ok(bytes) = std::fs::read(&file) {
            dump.extend(bytes);
        }
    }
    dump
}

/// [`Backend::raw_dump`] of a PostgreSQL schema.
async fn pg_dump(schema: &str) -> Vec<u8> {
    let mut conn = pg_raw(schema).await;
    // row_to_json renders every column, bytea as \x-hex.
    let text: String = sqlx::query_scalar(
        "SELECT coalesce(string_agg(row_to_json(c)::text, E'\\n'), '') \
         FROM warden_channels c",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    let blobs: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT token_ciphertext FROM warden_channels WHERE token_ciphertext IS NOT NULL",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    let mut dump = text.into_bytes();
    for blob in blobs {
        dump.extend(blob);
    }
    dump
}

impl Drop for Backend {
    /// Drops the test's schema, also when the test panicked.
    fn drop(&mut self) {
        let Self::Postgres { schema } = self else {
            return;
        };
        let schema = schema.clone();
        let cleanup = block_on_aside(async move {
            let options: sqlx::postgres::PgConnectOptions = pg_url().parse().unwrap();
            let mut conn = sqlx::PgConnection::connect_with(&options).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&mut conn)
            .await?;
            conn.close().await
        });
        if let Ok(Err(e)) = cleanup {
            eprintln!("could not drop test schema: {e}");
        }
    }
}
