//! The platform API's side of the provider's state: bearer tokens checked and counted, and
//! the faults injected in front of them.

use std::time::Instant;

use super::{BearerCheck, Fault, ProviderState};

impl ProviderState {
    /// Checks a bearer token, for `channel` when given, and counts the outcome.
    pub(in crate::provider) fn check_bearer(
        &self,
        token: Option<&str>,
        channel: Option<&str>,
    ) -> BearerCheck {
        let mut data = self.data();
        let check = match token {
            None => BearerCheck::Missing,
            Some(token) => match data.access.get(token) {
                None => BearerCheck::Invalid("The access token is invalid or was revoked"),
                Some(t) if t.expires <= Instant::now() => {
                    BearerCheck::Invalid("The access token expired")
                }
                Some(t) if channel.is_some_and(|c| c != t.channel) => BearerCheck::WrongChannel,
                Some(t) => BearerCheck::Valid {
                    channel: t.channel.clone(),
                    scope: t.scope.clone(),
                },
            },
        };
        let counted = match (&check, channel) {
            (BearerCheck::Valid { channel, .. }, _) => Some((channel.clone(), true)),
            (_, Some(channel)) => Some((channel.to_owned(), false)),
            (_, None) => None,
        };
        match counted {
            Some((channel, true)) => {
                data.stats.api_ok += 1;
                data.stats.channel(&channel).api_ok += 1;
            }
            Some((channel, false)) => {
                data.stats.api_rejected += 1;
                data.stats.channel(&channel).api_rejected += 1;
                data.last_rejected.insert(channel, Instant::now());
            }
            None => data.stats.api_rejected += 1,
        }
        check
    }

    /// Takes one injected fault for `channel`, if any is pending.
    pub(in crate::provider) fn take_fault(&self, channel: &str) -> Option<Fault> {
        let mut data = self.data();
        let fault = data.faults.get_mut(channel)?;
        let taken = fault.clone();
        match fault.times {
            0 => {}
            1 => {
                data.faults.remove(channel);
            }
            _ => fault.times -= 1,
        }
        data.stats.channel(channel).api_faults += 1;
        Some(taken)
    }
}
