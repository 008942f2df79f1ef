//! AUTH in a session (RFC 4954): the command, the SASL exchange's response
//! lines, the password check on the blocking pool, and the budgets of
//! failed attempts (`auth::failures`). Neither the response lines nor the
//! password are ever logged.

use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;

use super::super::auth::failures::{self, Attempt, Scope};
use super::super::auth::sasl::{self, Credentials, Exchange, Mechanism, Progress, SaslError};
use super::super::pressure::Interruption;
use super::super::reply::{self, Reply};
use super::{Next, Session};
use crate::config::ListenerAuth;
use crate::metrics::ShedReason;

/// How the wait for a password check ended.
enum Turn {
    /// The attempt counts in its budgets, and a blocking thread is free.
    Granted(Attempt, OwnedSemaphorePermit),
    Refused(Scope),
    /// The idle timeout passed first.
    Expired,
    /// The session was shed for a waiting client.
    Shed,
}

impl<S> Session<S> {
    /// Whether EHLO lists AUTH: only under TLS (RFC 4954 §4).
    pub(super) fn offers_auth(&self) -> bool {
        self.secure && self.security.auth != ListenerAuth::None && self.shared.users.is_some()
    }

    /// `auth = "required"` and the client has not authenticated yet.
    pub(super) fn needs_auth(&self) -> bool {
        self.security.auth == ListenerAuth::Required && self.auth_user.is_none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
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

    /// Refuses AUTH while the client's network is locked out, before the
    /// client sends a password in vain.
    fn locked_out(&mut self) -> bool {
        let locked = self
            .shared
            .auth_failures
            .is_locked_out(self.client_ip(), Instant::now());
        if locked {
            self.reply_error(refused(Scope::Network));
        }
        locked
    }

    async fn check(&mut self, credentials: Credentials) -> Next {
        let Some(users) = self.shared.users.as_ref().map(|current| current.get()) else {
            return self.after_error();
        };
        let Credentials {
            user,
            password,
            other_identity,
        } = credentials;
        let (attempt, permit) = match self.password_check_turn(&user).await {
            Turn::Granted(attempt, permit) => (attempt, permit),
            Turn::Refused(scope) => {
                self.reply_error(refused(scope));
                return self.after_error();
            }
            Turn::Expired => {
                self.reply(Reply::new(
                    454,
                    "4.7.0",
                    "Temporary authentication failure, try again later",
                ));
                return Next::Continue;
            }
            Turn::Shed => {
                self.shared.metrics.session_shed(ShedReason::Pressure);
                self.reply(reply::shed());
                return Next::Close;
            }
        };
        let verified = !other_identity && {
            let user = user.clone();
            tokio::task::spawn_blocking(move || {
                let _permit = permit;
                users.verify(&user, &password)
            })
            .await
            .unwrap_or(false)
        };
        let client = self.client_ip();
        let network = attempt.network();
        if verified {
            attempt.succeeded(Instant::now());
            tracing::info!(%client, "authenticated as {user:?}");
            self.auth_user = Some(user);
            self.reply(Reply::new(235, "2.7.0", "Authentication successful"));
            return Next::Continue;
        }
        let locked = attempt.failed(Instant::now());
        tracing::warn!(%client, "authentication failed for {user:?}");
        for scope in &locked {
            self.shared.metrics.auth_lockout(*scope);
            let (budget, what) = match scope {
                Scope::Network => (failures::NETWORK, format!("from network {network}")),
                Scope::User => (
                    failures::USER,
                    format!("as user {user:?} from networks without a recent success"),
                ),
                Scope::Global => (
                    failures::GLOBAL,
                    "from networks without a recent success".to_owned(),
                ),
            };
            tracing::warn!(
                %client,
                scope = scope.as_str(),
                "AUTH lockout: {} failed attempts within {} minutes; AUTH {what} refused for {} minutes",
                budget.failures,
                budget.window.as_secs() / 60,
                budget.lockout.as_secs() / 60,
            );
        }
        if locked.contains(&Scope::Network) {
            self.reply(Reply::new(
                421,
                "4.7.0",
                "Too many failed authentication attempts, closing connection",
            ));
            return Next::Close;
        }
        self.reply_error(Reply::new(
            535,
            "5.7.8",
            "Authentication credentials invalid",
        ));
        self.after_error()
    }

    /// Waits until the attempt fits its budgets (attempts in flight count:
    /// ARCHITECTURE.md, "AUTH budgets") and a blocking thread is free for
    /// the check, then checks the lockouts again. The client waits on the server here, but the wait is
    /// bounded all the same: by the idle timeout in force, and the session
    /// may be shed meanwhile like one idle since the wait began.
    async fn password_check_turn(&mut self, user: &str) -> Turn {
        let failures = self.shared.auth_failures.clone();
        let checks = self.shared.password_checks.clone();
        let client = self.client_ip();
        let started = tokio::time::Instant::now();
        let deadline = started + self.timeout();
        let turn = async {
            let attempt = match failures.admit(client, user).await {
                Ok(attempt) => attempt,
                Err(scope) => return Turn::Refused(scope),
            };
            let Ok(permit) = checks.acquire_owned().await else {
                // The semaphore is never closed; were it, no check could run.
                return Turn::Expired;
            };
            match attempt.locked_out(Instant::now()) {
                Some(scope) => Turn::Refused(scope),
                None => Turn::Granted(attempt, permit),
            }
        };
        tokio::pin!(turn);
        self.lease.waiting(started);
        let turn = loop {
            tokio::select! {
                turn = &mut turn => break turn,
                _ = tokio::time::sleep_until(deadline) => break Turn::Expired,
                interruption = self.lease.interrupted() => {
                    if interruption == Interruption::Shed {
                        break Turn::Shed;
                    }
                }
            }
        };
        self.lease.working();
        turn
    }
}

/// RFC 4954 §6's `454 4.7.0` while a budget is locked out: a temporary
/// failure that does not ask the user for another password; no password is
/// checked meanwhile.
fn refused(scope: Scope) -> Reply {
    let text = match scope {
        Scope::User => {
            "Temporary authentication failure: too many failed attempts for this user, try again later"
        }
        Scope::Network | Scope::Global => {
            "Temporary authentication failure: too many failed attempts, try again later"
        }
    };
    Reply::new(454, "4.7.0", text)
}
