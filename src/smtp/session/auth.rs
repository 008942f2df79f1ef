//! AUTH in a session (RFC 4954): the command, the SASL exchange's response
//! lines, the password check on the blocking pool, and the per-address
//! lockout. Neither the response lines nor the password are ever logged.

use std::time::Instant;

use super::super::auth::failures::AfterFailure;
use super::super::auth::sasl::{self, Credentials, Exchange, Mechanism, Progress, SaslError};
use super::super::reply::{self, Reply};
use super::{Next, Session};
use crate::config::ListenerAuth;

impl<S> Session<S> {
    /// Whether EHLO lists AUTH: only under TLS (RFC 4954 §4).
    pub(super) fn offers_auth(&self) -> bool {
        self.secure && self.security.auth != ListenerAuth::None && self.shared.users.is_some()
    }

    /// `auth = "required"` and the client has not authenticated yet.
    pub(super) fn needs_auth(&self) -> bool {
        self.security.auth == ListenerAuth::Required && self.auth_user.is_none()
    }

    pub(super) async fn auth(
        &mut self,
        mechanism: Option<Mechanism>,
        initial_response: Option<&str>,
    ) -> Next {
        if self.security.auth == ListenerAuth::None || self.shared.users.is_none() {
            self.reply_error(Reply::new(502, "5.5.1", "Error: AUTH not implemented"));
            return self.after_error();
        }
        if !self.secure {
            // RFC 4954 §6.
            self.reply_error(Reply::new(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            ));
            return self.after_error();
        }
        let refusal = if !self.extended {
            Some("Error: send EHLO first")
        } else if self.auth_user.is_some() {
            Some("Error: already authenticated")
        } else if self.transaction.is_some() {
            Some("Error: AUTH not allowed in a mail transaction")
        } else {
            None
        };
        if let Some(text) = refusal {
            self.reply_error(reply::bad_sequence(text));
            return self.after_error();
        }
        if self.locked_out() {
            return self.after_error();
        }
        let Some(mechanism) = mechanism else {
            self.reply_error(Reply::new(504, "5.5.4", "Unrecognized authentication type"));
            return self.after_error();
        };
        self.progress(sasl::start(mechanism, initial_response))
            .await
    }

    /// A response line of an exchange in progress.
    pub(super) async fn auth_response(&mut self, exchange: Exchange, line: &[u8]) -> Next {
        self.progress(exchange.step(line)).await
    }

    async fn progress(&mut self, step: Result<Progress, SaslError>) -> Next {
        match step {
            Ok(Progress::Challenge(exchange, challenge)) => {
                self.sasl = Some(exchange);
                self.reply(Reply::new(334, "", challenge));
                Next::Continue
            }
            Ok(Progress::Done(credentials)) => self.check(credentials).await,
            Err(SaslError::Cancelled) => {
                self.reply_error(Reply::new(501, "5.7.0", "Authentication cancelled"));
                self.after_error()
            }
            Err(error) => {
                self.reply_error(Reply::new(501, "5.5.2", format!("Error: {error}")));
                self.after_error()
            }
        }
    }

    /// Refuses AUTH while the client's address is locked out: RFC 4954 §6's
    /// `454 4.7.0`, a temporary failure that does not ask the user for
    /// another password, and no password is checked meanwhile.
    fn locked_out(&mut self) -> bool {
        let locked = self
            .shared
            .auth_failures
            .is_locked_out(self.client_ip(), Instant::now());
        if locked {
            self.reply_error(Reply::new(
                454,
                "4.7.0",
                "Temporary authentication failure: too many failed attempts, try again later",
            ));
        }
        locked
    }

    async fn check(&mut self, credentials: Credentials) -> Next {
        if self.locked_out() {
            return self.after_error();
        }
        let Some(users) = self.shared.users.as_ref().map(|current| current.get()) else {
            return self.after_error();
        };
        let Credentials {
            user,
            password,
            other_identity,
        } = credentials;
        let verified = !other_identity && {
            let user = user.clone();
            let checks = self.shared.password_checks.clone();
            match checks.acquire_owned().await {
                Ok(permit) => tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    users.verify(&user, &password)
                })
                .await
                .unwrap_or(false),
                Err(_) => false,
            }
        };
        let client = self.client_ip();
        if verified {
            self.shared.auth_failures.succeeded(client);
            tracing::info!(%client, "authenticated as {user:?}");
            self.auth_user = Some(user);
            self.reply(Reply::new(235, "2.7.0", "Authentication successful"));
            return Next::Continue;
        }
        let after = self.shared.auth_failures.failed(client, Instant::now());
        tracing::warn!(%client, "authentication failed for {user:?}");
        match after {
            AfterFailure::Counted => {
                self.reply_error(Reply::new(
                    535,
                    "5.7.8",
                    "Authentication credentials invalid",
                ));
                self.after_error()
            }
            AfterFailure::LockedOut => {
                tracing::warn!(%client, "too many failed AUTH attempts: AUTH refused for 15 minutes");
                self.reply(Reply::new(
                    421,
                    "4.7.0",
                    "Too many failed authentication attempts, closing connection",
                ));
                Next::Close
            }
        }
    }
}
