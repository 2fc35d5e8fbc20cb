//! One token-store suite, run against both real backends: a SQLite file in a temp dir, and
//! PostgreSQL at 127.0.0.1:5432 (override with `WARDEN_TEST_POSTGRES_URL`).
//!
//! Each PostgreSQL test gets its own schema, which a guard drops when the test ends, passed or
//! failed. So tests run in parallel and leave nothing behind.

mod backend;
mod keys;
mod lifecycle;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use warden::store::{
    ConnectOptions, DecryptError, Keyring, StoreError, TokenSet, TokenStore, connect_with,
};

use backend::{Backend, hex, pg_url};
use keys::*;
use lifecycle::*;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// `access` (and `refresh`) as a token set expiring at the start of 2030.
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

/// Stores `access` as `channel`'s token (provider `demo`); returns its version.
async fn put(store: &Arc<dyn TokenStore>, channel: &str, access: &str) -> u64 {
    store
        .put_token(channel, "demo", &tokens(access, None))
        .await
        .unwrap()
}

/// Stores `access` and `refresh` as acme's tokens; returns their version.
async fn put_pair(store: &Arc<dyn TokenStore>, access: &str, refresh: &str) -> u64 {
    store
        .put_token("acme", "demo", &tokens(access, Some(refresh)))
        .await
        .unwrap()
}

/// Whether `holder` holds acme's lease for `ttl` now (taken or renewed).
async fn lease(store: &Arc<dyn TokenStore>, holder: &str, ttl: Duration) -> bool {
    store.try_acquire_lease("acme", holder, ttl).await.unwrap()
}

async fn access_token(store: &Arc<dyn TokenStore>, channel: &str) -> (String, u64) {
    let (set, version) = store.token(channel).await.unwrap().expect("a token");
    (set.access_token.expose_secret().to_owned(), version)
}

/// Asserts that each `(channel, access token, version)` reads back from `store`.
async fn assert_tokens(store: &Arc<dyn TokenStore>, expected: &[(&str, &str, u64)]) {
    for &(channel, access, version) in expected {
        assert_eq!(
            access_token(store, channel).await,
            (access.to_owned(), version),
            "{channel}"
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts that reading a token failed its authentication: the ciphertext is
/// not the one its row was sealed with.
fn assert_tampered(err: &StoreError) {
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

/// Each suite function as a test on each backend: `sqlite::name` and
/// `postgres::name`.
macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        store_suite!(@on sqlite: $($test),*);
        store_suite!(@on postgres: $($test),*);
    };
    (@on $backend:ident: $($test:ident),*) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(&super::Backend::$backend()).await;
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
    let mut conn = backend::sqlite_raw(path).await;
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
