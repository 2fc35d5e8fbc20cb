//! What the demo prints once the batch has settled, after the tally: how the
//! re-auth went, and the dead letters with their reasons.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use warden::amqp::dlq::DeadQueue;
use warden::config::Settings;

use super::follow::Healed;
use super::reauth::ReauthDemo;

/// One line on the re-auth: how and how fast it healed the channel, and what
/// the provider saw.
pub(super) fn reauth(reauth: Option<&ReauthDemo>, healed: Option<Healed>) {
    match (reauth, healed) {
        (Some(r), Some(Healed { outcome, mode, ms })) => {
            let stats = r.provider.state.stats();
            let ch = stats.channels.get("acme-main").cloned().unwrap_or_default();
            println!(
                "Re-auth: {outcome} by {} in {ms} ms, {} browser login(s); {} call(s) with the dead token, then its parked tasks resumed.",
                mode.unwrap_or_default(),
                ch.logins,
                ch.api_rejected
            );
        }
        (Some(_), None) => println!("Re-auth: the token was revoked but no re-auth finished."),
        (None, _) => println!("Re-auth: skipped; {}", ReauthDemo::WHY_SKIPPED),
    }
}

/// The dead letters of the demo's prefix, each with its reason, and what the
/// crashed ones say about crash isolation.
///
/// # Errors
/// The broker fails.
pub(super) async fn dead_letters(settings: &Settings) -> anyhow::Result<()> {
    let dq = DeadQueue::open(settings).await?;
    let letters = dq.list(Some(50)).await?;
    dq.close().await;
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "dead letter",
        "type",
        "reason",
        "attempts",
        "error",
    ]);
    for d in &letters {
        table.add_row([
            d.id.clone(),
            d.kind.clone(),
            d.reason.clone(),
            d.attempts.to_string(),
            d.error.chars().take(70).collect(),
        ]);
    }
    println!(
        "\nDead letters in {}.dead, each with its reason:\n{table}",
        settings.prefix
    );
    let crashed = letters.iter().filter(|d| d.reason == "crashed").count();
    println!(
        "Crash isolation: {crashed} task(s) killed the sandbox process they ran in alone and are dead as `crashed`; \
         the worker (pid {}) kept running and no other task was charged for it.",
        std::process::id()
    );
    Ok(())
}
