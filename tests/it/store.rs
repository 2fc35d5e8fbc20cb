//! One token-store suite, run against both real backends: a SQLite file in a temp dir, and
//! PostgreSQL at 127.0.0.1:5432 (override with `WARDEN_TEST_POSTGRES_URL`).
//!
//! Each PostgreSQL test gets its own schema, which a guard drops when the test ends, passed or
//! failed. So tests run in parallel and leave nothing behind.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::support::eventually;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use sqlx::{Connection as _, Row as _};
use warden::store::{
    ChannelStatus, ConnectOptions, DecryptError, Keyring, MAX_LEASE_TTL, StoreError, TokenKey,
    TokenSet, TokenStore, connect, connect_with,
};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn pg_url() -> String {
    std::env::var("WARDEN_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// A real database for one test.
enum Backend {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        schema: String,
    },
}

impl Backend {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens.db");
        Self::Sqlite { _dir: dir, path }
    }

    fn postgres() -> Self {
        Self::Postgres {
            schema: format!("warden_store_test_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    async fn open(&self, keys: Keyring) -> Arc<dyn TokenStore> {
        self.try_open(keys).await.expect("open store")
    }

    async fn try_open(&self, keys: Keyring) -> Result<Arc<dyn TokenStore>, StoreError> {
        match self {
            Self::Sqlite { path, .. } => {
                connect(&format!("sqlite://{}", path.display()), keys).await
            }
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

    /// Runs raw SQL that both dialects accept (no bind parameters).
    async fn exec(&self, sql: String) {
        match self {
            Self::Sqlite { path, .. } => {
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .unwrap();
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
            }
            Self::Postgres { schema } => {
                let mut conn = pg_raw(schema).await;
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.unwrap();
            }
        }
    }

    /// The key id stored next to a channel's ciphertext, read with plain SQL.
    async fn raw_key_id(&self, channel: &str) -> String {
        let sql = format!("SELECT token_key_id FROM warden_channels WHERE channel = '{channel}'");
        match self {
            Self::Sqlite { path, .. } => {
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .unwrap();
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
            Self::Postgres { schema } => {
                let mut conn = pg_raw(schema).await;
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
            }
        }
    }

    /// Everything the database holds for the table, as bytes: every column of every row
    /// rendered as text (bytes as hex and as lossy UTF-8), and for SQLite also the raw database
    /// and WAL files.
    async fn raw_dump(&self) -> Vec<u8> {
        match self {
            Self::Sqlite { path, .. } => {
                let mut conn =
                    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                        .await
                        .unwrap();
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
                for file in [path.clone(), path.with_extension("db-wal")] {
                    if let Ok(bytes) = std::fs::read(&file) {
                        dump.extend(bytes);
                    }
                }
                dump
            }
            Self::Postgres { schema } => {
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
        }
    }
}

async fn pg_raw(schema: &str) -> sqlx::PgConnection {
    let options: sqlx::postgres::PgConnectOptions = pg_url().parse().unwrap();
    sqlx::PgConnection::connect_with(&options.options([("search_path", schema)]))
        .await
        .expect("connect to PostgreSQL")
}

impl Drop for Backend {
    /// Drops the test's schema, also when the test panicked. `Drop` cannot await, so the
    /// cleanup runs on a small runtime of its own on another thread.
    fn drop(&mut self) {
        let Self::Postgres { schema } = self else {
            return;
        };
        let schema = schema.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let options: sqlx::postgres::PgConnectOptions = pg_url().parse().unwrap();
                let mut conn = sqlx::PgConnection::connect_with(&options).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                )))
                .execute(&mut conn)
                .await?;
                conn.close().await
            })
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!("could not drop test schema: {e}");
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn tokens(access: &str, refresh: Option<&str>) -> TokenSet {
    TokenSet {
        access_token: access.into(),
        refresh_token: refresh.map(Into::into),
        expires_at: Some(
            DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        ),
    }
}

async fn access_token(store: &Arc<dyn TokenStore>, channel: &str) -> (String, u64) {
    let (set, version) = store.token(channel).await.unwrap().expect("a token");
    (set.access_token.expose_secret().to_owned(), version)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

// ---------------------------------------------------------------------------------------------
// The suite. Each function gets a fresh backend.
// ---------------------------------------------------------------------------------------------

async fn versions_start_at_zero_and_increase_by_one_per_token_change(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    store.ensure_channel("acme", "demo").await.unwrap();
    let rec = store.get("acme").await.unwrap().unwrap();
    assert_eq!(
        (rec.version, rec.status, rec.has_token),
        (0, ChannelStatus::Active, false)
    );
    assert!(store.token("acme").await.unwrap().is_none());

    assert_eq!(
        store
            .put_token("acme", "demo", &tokens("t1", None))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .put_token("acme", "demo", &tokens("t2", None))
            .await
            .unwrap(),
        2
    );
    store.ensure_channel("acme", "demo").await.unwrap(); // must not reset anything
    assert_eq!(access_token(&store, "acme").await, ("t2".to_owned(), 2));
    let rec = store.get("acme").await.unwrap().unwrap();
    assert_eq!((rec.version, rec.has_token), (2, true));
    assert_eq!(rec.token_expires_at, tokens("x", None).expires_at);

    // put_token creates a missing row at version 1.
    assert_eq!(
        store
            .put_token("new", "demo", &tokens("n1", None))
            .await
            .unwrap(),
        1
    );
    assert!(store.get("missing").await.unwrap().is_none());
    let names: Vec<_> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.channel)
        .collect();
    assert_eq!(names, ["acme", "new"]);
}

async fn mark_pending_lets_exactly_one_of_fifty_concurrent_callers_win(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    let version = store
        .put_token("acme", "demo", &tokens("t1", None))
        .await
        .unwrap();
    let callers: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { store.mark_pending("acme", version).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for caller in callers {
        winners += usize::from(caller.await.unwrap());
    }
    assert_eq!(winners, 1);
    let rec = store.get("acme").await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.version),
        (ChannelStatus::ReauthPending, version)
    );
}

async fn mark_pending_with_a_stale_version_loses_and_leaves_the_channel_active(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    store
        .put_token("acme", "demo", &tokens("t1", None))
        .await
        .unwrap();
    store
        .put_token("acme", "demo", &tokens("t2", None))
        .await
        .unwrap();
    assert!(!store.mark_pending("acme", 1).await.unwrap());
    assert!(!store.mark_pending("acme", 3).await.unwrap());
    assert_eq!(
        store.get("acme").await.unwrap().unwrap().status,
        ChannelStatus::Active
    );
    assert!(store.mark_pending("acme", 2).await.unwrap());
    assert!(
        !store.mark_pending("acme", 2).await.unwrap(),
        "already pending"
    );
    assert!(matches!(
        store.mark_pending("missing", 0).await,
        Err(StoreError::UnknownChannel(_))
    ));
}

async fn the_lease_goes_to_exactly_one_of_many_concurrent_holders_and_expires(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    store.ensure_channel("acme", "demo").await.unwrap();
    let contenders: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let holder = format!("replica-{i}");
                let won = store
                    .try_acquire_lease("acme", &holder, Duration::from_secs(60))
                    .await
                    .unwrap();
                won.then_some(holder)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for c in contenders {
        winners.extend(c.await.unwrap());
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = &winners[0];
    let rec = store.get("acme").await.unwrap().unwrap();
    assert_eq!(rec.lease_holder.as_ref(), Some(winner));
    assert!(rec.lease_expires_at.unwrap() > Utc::now() + chrono::Duration::seconds(50));

    // The holder renews; others still lose; only the holder releases.
    assert!(
        store
            .try_acquire_lease("acme", winner, Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_acquire_lease("acme", "intruder", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(!store.release_lease("acme", "intruder").await.unwrap());
    assert!(store.release_lease("acme", winner).await.unwrap());
    assert!(
        store
            .get("acme")
            .await
            .unwrap()
            .unwrap()
            .lease_holder
            .is_none()
    );

    // A short lease expires by itself, so a crashed holder cannot wedge the channel.
    assert!(
        store
            .try_acquire_lease("acme", "crasher", Duration::from_millis(300))
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_acquire_lease("acme", "next", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        eventually(Duration::from_secs(5), async || store
            .try_acquire_lease("acme", "next", Duration::from_secs(60))
            .await
            .unwrap())
        .await,
        "the 300 ms lease did not expire"
    );
    // An absurd TTL is cut to the maximum instead of overflowing.
    assert!(store.release_lease("acme", "next").await.unwrap());
    assert!(
        store
            .try_acquire_lease("acme", "forever", Duration::MAX)
            .await
            .unwrap()
    );
    let until = store
        .get("acme")
        .await
        .unwrap()
        .unwrap()
        .lease_expires_at
        .unwrap();
    assert!(until <= Utc::now() + chrono::Duration::from_std(MAX_LEASE_TTL).unwrap());
    assert!(matches!(
        store
            .try_acquire_lease("missing", "x", Duration::from_secs(1))
            .await,
        Err(StoreError::UnknownChannel(_))
    ));
}

async fn put_token_reactivates_the_channel_clears_the_error_and_releases_the_lease(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    let v1 = store
        .put_token("acme", "demo", &tokens("t1", None))
        .await
        .unwrap();
    assert!(store.mark_pending("acme", v1).await.unwrap());
    assert!(
        store
            .try_acquire_lease("acme", "reauth-1", Duration::from_secs(60))
            .await
            .unwrap()
    );
    store
        .mark_failed("acme", "login failed: wrong password")
        .await
        .unwrap();
    let rec = store.get("acme").await.unwrap().unwrap();
    assert_eq!(rec.status, ChannelStatus::ReauthFailed);
    assert_eq!(
        rec.last_error.as_deref(),
        Some("login failed: wrong password")
    );
    assert!(rec.lease_holder.is_none(), "mark_failed releases the lease");
    assert_eq!(rec.version, v1, "a failure is not a token change");
    assert!(
        !store.mark_pending("acme", v1).await.unwrap(),
        "failed is not active"
    );

    assert!(
        store
            .try_acquire_lease("acme", "reauth-2", Duration::from_secs(60))
            .await
            .unwrap()
    );
    let v2 = store
        .put_token("acme", "demo", &tokens("t2", Some("r2")))
        .await
        .unwrap();
    assert_eq!(v2, v1 + 1);
    let rec = store.get("acme").await.unwrap().unwrap();
    assert_eq!(rec.status, ChannelStatus::Active);
    assert_eq!(rec.last_error, None);
    assert_eq!((rec.lease_holder, rec.lease_expires_at), (None, None));
    assert!(
        store
            .try_acquire_lease("acme", "someone-else", Duration::from_secs(1))
            .await
            .unwrap()
    );
    assert!(matches!(
        store.mark_failed("missing", "x").await,
        Err(StoreError::UnknownChannel(_))
    ));
}

async fn list_and_get_never_expose_a_token(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    let access = unique("access");
    let refresh = unique("refresh");
    store
        .put_token("acme", "demo", &tokens(&access, Some(&refresh)))
        .await
        .unwrap();
    let list = store.list().await.unwrap();
    let shown = format!(
        "{}\n{list:?}\n{:?}\n{:?}",
        serde_json::to_string(&list).unwrap(),
        store.get("acme").await.unwrap(),
        store.token("acme").await.unwrap(),
    );
    assert!(shown.contains("acme"));
    assert!(
        !shown.contains(&access) && !shown.contains(&refresh),
        "{shown}"
    );
}

async fn tokens_are_encrypted_at_rest(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    let access = unique("access");
    let refresh = unique("refresh");
    store
        .put_token("acme", "demo", &tokens(&access, Some(&refresh)))
        .await
        .unwrap();
    store
        .put_token("acme", "demo", &tokens(&access, Some(&refresh)))
        .await
        .unwrap();
    assert_eq!(
        access_token(&store, "acme").await.0,
        access,
        "the store can read it"
    );
    store.close().await;

    let dump = db.raw_dump().await;
    assert!(
        contains(&dump, b"acme"),
        "the dump must actually contain the row"
    );
    for secret in [&access, &refresh] {
        let needles = [
            secret.as_bytes().to_vec(),
            STANDARD
                .encode(secret)
                .trim_end_matches('=')
                .as_bytes()
                .to_vec(),
            URL_SAFE_NO_PAD.encode(secret).into_bytes(),
            hex(secret.as_bytes()).into_bytes(),
        ];
        for needle in needles {
            assert!(
                !contains(&dump, &needle),
                "found {:?} in the raw database",
                String::from_utf8_lossy(&needle)
            );
        }
    }
}

async fn key_rotation_reads_old_tokens_and_writes_with_the_new_key(db: &Backend) {
    let a = TokenKey::generate();
    let b = TokenKey::generate();
    let store = db.open(Keyring::new(a.clone())).await;
    store
        .put_token("acme", "demo", &tokens("old-token", None))
        .await
        .unwrap();
    store
        .put_token("other", "demo", &tokens("other-token", None))
        .await
        .unwrap();
    store.close().await;
    assert_eq!(db.raw_key_id("acme").await, a.id());

    // Rotate: B is current, A is still accepted for reading.
    let rotated = db
        .open(Keyring::new(b.clone()).with_previous([a.clone()]))
        .await;
    assert_eq!(
        access_token(&rotated, "acme").await,
        ("old-token".to_owned(), 1)
    );
    rotated
        .put_token("acme", "demo", &tokens("new-token", None))
        .await
        .unwrap();
    assert_eq!(db.raw_key_id("acme").await, b.id());
    assert_eq!(
        rotated.reencrypt_all().await.unwrap(),
        1,
        "only `other` was still on A"
    );
    assert_eq!(rotated.reencrypt_all().await.unwrap(), 0);
    assert_eq!(db.raw_key_id("other").await, b.id());
    assert_eq!(
        rotated.get("other").await.unwrap().unwrap().version,
        1,
        "re-sealing is not a token change"
    );
    rotated.close().await;

    // The rows now decrypt with B alone, and no longer with A.
    let only_b = db.open(Keyring::new(b.clone())).await;
    assert_eq!(
        access_token(&only_b, "acme").await,
        ("new-token".to_owned(), 2)
    );
    assert_eq!(
        access_token(&only_b, "other").await,
        ("other-token".to_owned(), 1)
    );
    only_b.close().await;
    let only_a = db.open(Keyring::new(a)).await;
    let err = only_a.token("acme").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Decrypt { source: DecryptError::UnknownKey { key_id, .. }, .. } if key_id == b.id()),
        "{err}"
    );
}

async fn a_wrong_key_gives_a_clear_error(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    store
        .put_token("acme", "demo", &tokens("t", None))
        .await
        .unwrap();
    store.close().await;
    let wrong = Keyring::generate();
    let wrong_id = wrong.current_id().to_owned();
    let store = db.open(wrong).await;
    let err = store.token("acme").await.unwrap_err();
    assert!(err.is_key_problem());
    let msg = err.to_string();
    assert!(
        msg.contains("\"acme\"") && msg.contains("not in the keyring"),
        "{msg}"
    );
    assert!(
        msg.contains(&wrong_id) && msg.contains("WARDEN_TOKEN_KEY_PREVIOUS"),
        "{msg}"
    );
    // Metadata stays readable without the key, so `channels list` still works.
    assert_eq!(store.list().await.unwrap().len(), 1);
}

async fn a_ciphertext_moved_to_another_channel_fails_authentication(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    store
        .put_token("victim", "demo", &tokens("victim-token", None))
        .await
        .unwrap();
    store
        .put_token("attacker", "demo", &tokens("attacker-token", None))
        .await
        .unwrap();
    db.exec(
        "UPDATE warden_channels SET \
           token_key_id = (SELECT token_key_id FROM warden_channels WHERE channel = 'victim'), \
           token_ciphertext = (SELECT token_ciphertext FROM warden_channels WHERE channel = 'victim') \
         WHERE channel = 'attacker'"
            .to_owned(),
    )
    .await;
    let err = store.token("attacker").await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Decrypt {
                source: DecryptError::Tampered,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(access_token(&store, "victim").await.0, "victim-token");
}

async fn reopening_runs_migrations_once_and_keeps_the_data(db: &Backend) {
    let keys = Keyring::generate();
    let store = db.open(keys.clone()).await;
    store
        .put_token("acme", "demo", &tokens("t", None))
        .await
        .unwrap();
    store.ping().await.unwrap();
    store.close().await;
    let again = db.open(keys).await;
    assert_eq!(access_token(&again, "acme").await, ("t".to_owned(), 1));
    assert_eq!(
        again.backend(),
        match db {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    );
}

async fn an_expiry_past_year_9999_is_clamped_and_every_channel_still_lists(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    store
        .put_token("sane", "demo", &tokens("t", None))
        .await
        .unwrap();
    // What `Utc::now() + expires_in` gave for an `expires_in` around 3e11.
    let far = TokenSet {
        expires_at: Some(DateTime::<Utc>::MAX_UTC),
        ..tokens("far", None)
    };
    store.put_token("far", "demo", &far).await.unwrap();
    let listed = store
        .list()
        .await
        .expect("one odd row must not break the listing");
    assert_eq!(listed.len(), 2);
    let expires = listed
        .iter()
        .find(|r| r.channel == "far")
        .and_then(|r| r.token_expires_at)
        .unwrap();
    assert!(
        expires <= Utc::now() + chrono::Duration::days(11 * 366),
        "{expires}"
    );
    let (set, _) = store.token("far").await.unwrap().unwrap();
    assert_eq!(
        set.expires_at.map(|t| t.timestamp()),
        Some(expires.timestamp())
    );
}

impl Backend {
    /// The store's URL as `WARDEN_TOKEN_STORE` takes it (PostgreSQL: this test's schema).
    fn cli_url(&self) -> String {
        match self {
            Self::Sqlite { path, .. } => format!("sqlite://{}", path.display()),
            Self::Postgres { schema } => {
                format!("{}?options=-c%20search_path%3D{schema}", pg_url())
            }
        }
    }

    /// Writes a row exactly as warden did before HMAC key ids and version-bound associated
    /// data: the AES key check value as id, `warden/token/v1/<channel>` as associated data.
    async fn put_legacy_row(&self, key: &[u8; 32], channel: &str, access: &str) {
        use aes_gcm::aead::{Aead as _, Payload};
        use aes_gcm::aes::cipher::{BlockEncrypt as _, KeyInit as _};
        use aes_gcm::{Aes256Gcm, Nonce};
        let mut block = [0u8; 16].into();
        aes_gcm::aes::Aes256::new(key.into()).encrypt_block(&mut block);
        let key_id: String = block[..8].iter().map(|b| format!("{b:02x}")).collect();
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
        let hex: String = blob.iter().map(|b| format!("{b:02x}")).collect();
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

async fn an_old_ciphertext_of_the_same_channel_cannot_be_rolled_back_into_its_row(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    store
        .put_token("acme", "demo", &tokens("revoked-token", None))
        .await
        .unwrap();
    db.exec(
        "CREATE TABLE saved AS SELECT token_key_id, token_ciphertext FROM warden_channels \
         WHERE channel = 'acme'"
            .to_owned(),
    )
    .await;
    store
        .put_token("acme", "demo", &tokens("fresh-token", None))
        .await
        .unwrap();
    // Someone with write access to the table puts the old ciphertext back.
    db.exec(
        "UPDATE warden_channels SET \
           token_key_id = (SELECT token_key_id FROM saved), \
           token_ciphertext = (SELECT token_ciphertext FROM saved) \
         WHERE channel = 'acme'"
            .to_owned(),
    )
    .await;
    let err = store.token("acme").await.unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Decrypt {
                source: DecryptError::Tampered,
                ..
            }
        ),
        "{err}"
    );
}

async fn rekey_lets_the_previous_key_go_and_every_channel_still_decrypts(db: &Backend) {
    let (a, b) = (rand::random::<[u8; 32]>(), rand::random::<[u8; 32]>());
    let store = db.open(Keyring::new(TokenKey::from_bytes(&a))).await;
    for channel in ["one", "two"] {
        store
            .put_token(channel, "demo", &tokens(&format!("{channel}-token"), None))
            .await
            .unwrap();
    }
    store
        .put_token("two", "demo", &tokens("two-token-v2", None))
        .await
        .unwrap();
    store.ensure_channel("legacy", "demo").await.unwrap();
    store.close().await;
    db.put_legacy_row(&a, "legacy", "legacy-token").await;

    let url = db.cli_url();
    let (key_b, key_a) = (STANDARD.encode(b), STANDARD.encode(a));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["token", "rekey"])
        .env_remove("WARDEN_CONFIG")
        .env("WARDEN_TOKEN_STORE", &url)
        .env("WARDEN_TOKEN_KEY", &key_b)
        .env("WARDEN_TOKEN_KEY_PREVIOUS", &key_a)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("re-encrypted 3 token(s)"), "{stdout}");

    // The previous key is gone: every channel opens with the current key alone.
    let only_b = db.open(Keyring::new(TokenKey::from_bytes(&b))).await;
    assert_eq!(
        access_token(&only_b, "one").await,
        ("one-token".to_owned(), 1)
    );
    assert_eq!(
        access_token(&only_b, "two").await,
        ("two-token-v2".to_owned(), 2)
    );
    assert_eq!(
        access_token(&only_b, "legacy").await,
        ("legacy-token".to_owned(), 1)
    );
    for channel in ["one", "two", "legacy"] {
        assert_eq!(db.raw_key_id(channel).await, TokenKey::from_bytes(&b).id());
    }
    only_b.close().await;
}

macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&super::Backend::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&super::Backend::postgres()).await;
                }
            )*
        }
    };
}

store_suite!(
    versions_start_at_zero_and_increase_by_one_per_token_change,
    mark_pending_lets_exactly_one_of_fifty_concurrent_callers_win,
    mark_pending_with_a_stale_version_loses_and_leaves_the_channel_active,
    the_lease_goes_to_exactly_one_of_many_concurrent_holders_and_expires,
    put_token_reactivates_the_channel_clears_the_error_and_releases_the_lease,
    list_and_get_never_expose_a_token,
    tokens_are_encrypted_at_rest,
    key_rotation_reads_old_tokens_and_writes_with_the_new_key,
    a_wrong_key_gives_a_clear_error,
    a_ciphertext_moved_to_another_channel_fails_authentication,
    reopening_runs_migrations_once_and_keeps_the_data,
    an_expiry_past_year_9999_is_clamped_and_every_channel_still_lists,
    an_old_ciphertext_of_the_same_channel_cannot_be_rolled_back_into_its_row,
    rekey_lets_the_previous_key_go_and_every_channel_still_decrypts,
);

// ---------------------------------------------------------------------------------------------
// Backend-specific behaviour.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_sqlite_file_is_created_owner_only_and_in_wal_mode() {
    let db = Backend::sqlite();
    let Backend::Sqlite { path, .. } = &db else {
        unreachable!()
    };
    let store = db.open(Keyring::generate()).await;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    store.close().await;
}

#[tokio::test]
async fn a_postgres_schema_with_a_strange_name_is_refused() {
    let err = connect_with(
        &pg_url(),
        Keyring::generate(),
        ConnectOptions::default().postgres_schema("x\"; DROP SCHEMA public; --"),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, StoreError::InvalidSchema(_)), "{err}");
}

#[tokio::test]
async fn a_postgres_schema_keeps_two_deployments_apart() {
    let (one, two) = (Backend::postgres(), Backend::postgres());
    let (s1, s2) = (
        one.open(Keyring::generate()).await,
        two.open(Keyring::generate()).await,
    );
    s1.ensure_channel("acme", "demo").await.unwrap();
    assert!(s2.get("acme").await.unwrap().is_none());
    s1.close().await;
    s2.close().await;
}
