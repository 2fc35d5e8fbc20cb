//! The suite's half on secrecy: tokens encrypted at rest, bound to their row,
//! never shown, and keys that can be rotated and retired.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use warden::store::{DecryptError, Keyring, StoreError, TokenKey};

use super::{
    Backend, access_token, assert_tampered, assert_tokens, contains, hex, put, put_pair, unique,
};
use crate::support::run_cli;

pub(super) async fn list_and_get_never_expose_a_token(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    let access = unique("access");
    let refresh = unique("refresh");
    put_pair(&store, &access, &refresh).await;
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

pub(super) async fn tokens_are_encrypted_at_rest(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    let access = unique("access");
    let refresh = unique("refresh");
    put_pair(&store, &access, &refresh).await;
    put_pair(&store, &access, &refresh).await;
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

pub(super) async fn key_rotation_reads_old_tokens_and_writes_with_the_new_key(db: &Backend) {
    let a = TokenKey::generate();
    let b = TokenKey::generate();
    let store = db.open(Keyring::new(a.clone())).await;
    put(&store, "acme", "old-token").await;
    put(&store, "other", "other-token").await;
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
    put(&rotated, "acme", "new-token").await;
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
    assert_tokens(
        &only_b,
        &[("acme", "new-token", 2), ("other", "other-token", 1)],
    )
    .await;
    only_b.close().await;
    let only_a = db.open(Keyring::new(a)).await;
    let err = only_a.token("acme").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Decrypt { source: DecryptError::UnknownKey { key_id, .. }, .. } if key_id == b.id()),
        "{err}"
    );
}

pub(super) async fn a_wrong_key_gives_a_clear_error(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    put(&store, "acme", "t").await;
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

pub(super) async fn a_ciphertext_moved_to_another_channel_fails_authentication(db: &Backend) {
    let store = db.open(Keyring::generate()).await;
    put(&store, "victim", "victim-token").await;
    put(&store, "attacker", "attacker-token").await;
    db.exec(
        "UPDATE warden_channels SET \
           token_key_id = (SELECT token_key_id FROM warden_channels WHERE channel = 'victim'), \
           token_ciphertext = (SELECT token_ciphertext FROM warden_channels WHERE channel = 'victim') \
         WHERE channel = 'attacker'"
            .to_owned(),
    )
    .await;
    let err = store.token("attacker").await.unwrap_err();
    assert_tampered(&err);
    assert_eq!(access_token(&store, "victim").await.0, "victim-token");
}

pub(super) async fn an_old_ciphertext_of_the_same_channel_cannot_be_rolled_back_into_its_row(
    db: &Backend,
) {
    let store = db.open(Keyring::generate()).await;
    put(&store, "acme", "revoked-token").await;
    db.exec(
        "CREATE TABLE saved AS SELECT token_key_id, token_ciphertext FROM warden_channels \
         WHERE channel = 'acme'"
            .to_owned(),
    )
    .await;
    put(&store, "acme", "fresh-token").await;
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
    assert_tampered(&err);
}

pub(super) async fn rekey_lets_the_previous_key_go_and_every_channel_still_decrypts(db: &Backend) {
    let (a, b) = (rand::random::<[u8; 32]>(), rand::random::<[u8; 32]>());
    let store = db.open(Keyring::new(TokenKey::from_bytes(&a))).await;
    for channel in ["one", "two"] {
        put(&store, channel, &format!("{channel}-token")).await;
    }
    put(&store, "two", "two-token-v2").await;
    store.ensure_channel("legacy", "demo").await.unwrap();
    store.close().await;
    db.put_legacy_row(&a, "legacy", "legacy-token").await;

    let url = db.cli_url();
    let (key_b, key_a) = (STANDARD.encode(b), STANDARD.encode(a));
    let (code, stdout, stderr) = run_cli(
        &["token", "rekey"],
        &[
            ("WARDEN_TOKEN_STORE", &url),
            ("WARDEN_TOKEN_KEY", &key_b),
            ("WARDEN_TOKEN_KEY_PREVIOUS", &key_a),
        ],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("re-encrypted 3 token(s)"), "{stdout}");

    // The previous key is gone: every channel opens with the current key alone.
    let only_b = db.open(Keyring::new(TokenKey::from_bytes(&b))).await;
    let expected = [
        ("one", "one-token", 1),
        ("two", "two-token-v2", 2),
        ("legacy", "legacy-token", 1),
    ];
    assert_tokens(&only_b, &expected).await;
    for channel in ["one", "two", "legacy"] {
        assert_eq!(db.raw_key_id(channel).await, TokenKey::from_bytes(&b).id());
    }
    only_b.close().await;
}
