//! The suite's half on versions, the pending mark, leases and the schema: what
//! lets one re-auth run per revoked version across processes.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use warden::store::{ChannelStatus, Keyring, MAX_LEASE_TTL, StoreError, TokenSet};

use super::{Backend, access_token, lease, put, put_pair, tokens};
use crate::support::eventually;

pub(super) async fn versions_start_at_zero_and_increase_by_one_per_token_change(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    store.ensure_channel("acme", "demo").await.unwrap();
    let rec = store.get("acme").await.unwrap().unwrap();
    assert_eq!(
        (rec.version, rec.status, rec.has_token),
        (0, ChannelStatus::Active, false)
    );
    assert!(store.token("acme").await.unwrap().is_none());

    assert_eq!(put(&store, "acme", "t1").await, 1);
    assert_eq!(put(&store, "acme", "t2").await, 2);
    store.ensure_channel("acme", "demo").await.unwrap(); // must not reset anything
    assert_eq!(access_token(&store, "acme").await, ("t2".to_owned(), 2));
    let rec = store.get("acme").await.unwrap().unwrap();
    assert_eq!((rec.version, rec.has_token), (2, true));
    assert_eq!(rec.token_expires_at, tokens("x", None).expires_at);

    // put_token creates a missing row at version 1.
    assert_eq!(put(&store, "new", "n1").await, 1);
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

pub(super) async fn mark_pending_lets_exactly_one_of_fifty_concurrent_callers_win(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    let version = put(&store, "acme", "t1").await;
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

pub(super) async fn mark_pending_with_a_stale_version_loses_and_leaves_the_channel_active(
    db: &Backend,
) {
    let store = db.open(Keyring::generate()).await;
    put(&store, "acme", "t1").await;
    put(&store, "acme", "t2").await;
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

pub(super) async fn the_lease_goes_to_exactly_one_of_many_concurrent_holders_and_expires(
    db: &Backend,
) {
    let store = db.open(Keyring::generate()).await;
    store.ensure_channel("acme", "demo").await.unwrap();
    let contenders: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let holder = format!("replica-{i}");
                let won = lease(&store, &holder, Duration::from_secs(60)).await;
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
    assert!(lease(&store, winner, Duration::from_secs(60)).await);
    assert!(!lease(&store, "intruder", Duration::from_secs(60)).await);
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
    assert!(lease(&store, "crasher", Duration::from_millis(300)).await);
    assert!(!lease(&store, "next", Duration::from_secs(60)).await);
    let taken = async || lease(&store, "next", Duration::from_secs(60)).await;
    assert!(
        eventually(Duration::from_millis(700), taken).await,
        "the 300 ms lease did not expire within 700 ms"
    );
    // An absurd TTL is cut to the maximum instead of overflowing.
    assert!(store.release_lease("acme", "next").await.unwrap());
    assert!(lease(&store, "forever", Duration::MAX).await);
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

pub(super) async fn put_token_reactivates_the_channel_clears_the_error_and_releases_the_lease(
    db: &Backend,
) {
    let store = db.open(Keyring::generate()).await;
    let v1 = put(&store, "acme", "t1").await;
    assert!(store.mark_pending("acme", v1).await.unwrap());
    assert!(lease(&store, "reauth-1", Duration::from_secs(60)).await);
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

    assert!(lease(&store, "reauth-2", Duration::from_secs(60)).await);
    let v2 = put_pair(&store, "t2", "r2").await;
    assert_eq!(v2, v1 + 1);
    let rec = store.get("acme").await.unwrap().unwrap();
    assert_eq!(rec.status, ChannelStatus::Active);
    assert_eq!(rec.last_error, None);
    assert_eq!((rec.lease_holder, rec.lease_expires_at), (None, None));
    assert!(lease(&store, "someone-else", Duration::from_secs(1)).await);
    assert!(matches!(
        store.mark_failed("missing", "x").await,
        Err(StoreError::UnknownChannel(_))
    ));
}

pub(super) async fn reopening_runs_migrations_once_and_keeps_the_data(db: &Backend) {
    let keys = Keyring::generate();
    let store = db.open(keys.clone()).await;
    put(&store, "acme", "t").await;
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

pub(super) async fn an_expiry_past_year_9999_is_clamped_and_every_channel_still_lists(
    db: &Backend,
) {
    let store = db.open(Keyring::generate()).await;
    put(&store, "sane", "t").await;
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
