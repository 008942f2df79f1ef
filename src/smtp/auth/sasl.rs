//! SASL PLAIN (RFC 4616) and LOGIN as SMTP AUTH carries them (RFC 4954):
//! the exchange of base64 challenges and responses, pure.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A mechanism this server offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

/// What the client claims: a user name and a password, to be checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: Vec<u8>,
    /// PLAIN's authorization identity, when given and different from `user`
    /// (acting as another user, which this server never allows).
    pub other_identity: bool,
}

/// Never shows the password.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Why an exchange ended without credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    /// The client sent `*` (RFC 4954 §4).
    #[error("authentication cancelled")]
    Cancelled,
    #[error("response is not valid base64")]
    NotBase64,
    #[error("malformed {0} response")]
    Malformed(&'static str),
}

/// An exchange waiting for the client's next response line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exchange {
    /// PLAIN without an initial response: the one message comes next.
    Plain,
    LoginUser,
    LoginPassword {
        user: String,
    },
}

/// The next step: send a `334` challenge (base64 text) and wait, or check
/// the credentials.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    Challenge(Exchange, &'static str),
    Done(Credentials),
}

/// `Username:` and `Password:`, the LOGIN mechanism's prompts.
const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Starts an exchange from the AUTH command. `initial` is the initial
/// response (RFC 4954 §4), `=` standing for an empty one.
pub fn start(mechanism: Mechanism, initial: Option<&str>) -> Result<Progress, SaslError> {
    let initial = match initial {
        None => None,
        Some("=") => Some(Vec::new()),
        Some(text) => Some(decode(text.as_bytes())?),
    };
    match (mechanism, initial) {
        (Mechanism::Plain, None) => Ok(Progress::Challenge(Exchange::Plain, "")),
        (Mechanism::Plain, Some(message)) => plain(&message).map(Progress::Done),
        (Mechanism::Login, None) => Ok(Progress::Challenge(Exchange::LoginUser, LOGIN_USER_PROMPT)),
        (Mechanism::Login, Some(user)) => Ok(Progress::Challenge(
            Exchange::LoginPassword {
                user: login_user(user)?,
            },
            LOGIN_PASSWORD_PROMPT,
        )),
    }
}

impl Exchange {
    /// Takes the client's response line (without CRLF).
    pub fn step(self, line: &[u8]) -> Result<Progress, SaslError> {
        if line == b"*" {
            return Err(SaslError::Cancelled);
        }
        let response = decode(line)?;
        match self {
            Exchange::Plain => plain(&response).map(Progress::Done),
            Exchange::LoginUser => Ok(Progress::Challenge(
                Exchange::LoginPassword {
                    user: login_user(response)?,
                },
                LOGIN_PASSWORD_PROMPT,
            )),
            Exchange::LoginPassword { user } => Ok(Progress::Done(Credentials {
                user,
                password: response,
                other_identity: false,
            })),
        }
    }
}

fn decode(text: &[u8]) -> Result<Vec<u8>, SaslError> {
    STANDARD.decode(text).map_err(|_| SaslError::NotBase64)
}

fn login_user(response: Vec<u8>) -> Result<String, SaslError> {
    String::from_utf8(response).map_err(|_| SaslError::Malformed("LOGIN"))
}

/// RFC 4616 §2: `[authzid] NUL authcid NUL passwd`, UTF-8 names.
fn plain(message: &[u8]) -> Result<Credentials, SaslError> {
    let malformed = || SaslError::Malformed("PLAIN");
    let mut parts = message.splitn(3, |&byte| byte == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    if authcid.is_empty() || password.contains(&0) {
        return Err(malformed());
    }
    let user = std::str::from_utf8(authcid).map_err(|_| malformed())?;
    Ok(Credentials {
        user: user.to_owned(),
        password: password.to_vec(),
        other_identity: !authzid.is_empty() && authzid != authcid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    fn done(progress: Result<Progress, SaslError>) -> Credentials {
        match progress {
            Ok(Progress::Done(credentials)) => credentials,
            other => panic!("not done: {other:?}"),
        }
    }

    #[test]
    fn plain_with_initial_response() {
        let credentials = done(start(Mechanism::Plain, Some(&b64(b"\0alice\0s3cret"))));
        assert_eq!(credentials.user, "alice");
        assert_eq!(credentials.password, b"s3cret");
        assert!(!credentials.other_identity);
        let same = done(start(Mechanism::Plain, Some(&b64(b"alice\0alice\0pw"))));
        assert!(!same.other_identity);
        let other = done(start(Mechanism::Plain, Some(&b64(b"root\0alice\0pw"))));
        assert!(other.other_identity);
    }

    #[test]
    fn plain_without_initial_response_gets_an_empty_challenge() {
        let Ok(Progress::Challenge(exchange, challenge)) = start(Mechanism::Plain, None) else {
            panic!("no challenge");
        };
        assert_eq!(challenge, "");
        let credentials = done(exchange.step(b64(b"\0bob\0pw").as_bytes()));
        assert_eq!(credentials.user, "bob");
    }

    #[test]
    fn empty_initial_response_is_an_equals_sign() {
        // An empty PLAIN message has no NULs: malformed, not a crash.
        assert_eq!(
            start(Mechanism::Plain, Some("=")),
            Err(SaslError::Malformed("PLAIN"))
        );
        let Ok(Progress::Challenge(Exchange::LoginPassword { user }, _)) =
            start(Mechanism::Login, Some("="))
        else {
            panic!("LOGIN with an empty user name asks for the password");
        };
        assert_eq!(user, "");
    }

    #[test]
    fn login_asks_user_then_password() {
        let Ok(Progress::Challenge(exchange, prompt)) = start(Mechanism::Login, None) else {
            panic!("no challenge");
        };
        assert_eq!(STANDARD.decode(prompt).unwrap(), b"Username:");
        let Ok(Progress::Challenge(exchange, prompt)) = exchange.step(b64(b"carol").as_bytes())
        else {
            panic!("no password prompt");
        };
        assert_eq!(STANDARD.decode(prompt).unwrap(), b"Password:");
        let credentials = done(exchange.step(b64(b"pw").as_bytes()));
        assert_eq!(
            (credentials.user.as_str(), credentials.password.as_slice()),
            ("carol", &b"pw"[..])
        );
    }

    #[test]
    fn login_initial_response_is_the_user() {
        let Ok(Progress::Challenge(exchange, _)) = start(Mechanism::Login, Some(&b64(b"dave")))
        else {
            panic!("no password prompt");
        };
        assert_eq!(done(exchange.step(b64(b"x").as_bytes())).user, "dave");
    }

    #[test]
    fn cancel_and_garbage() {
        assert_eq!(Exchange::Plain.step(b"*"), Err(SaslError::Cancelled));
        assert_eq!(Exchange::LoginUser.step(b"*"), Err(SaslError::Cancelled));
        assert_eq!(
            Exchange::Plain.step(b"not base64!"),
            Err(SaslError::NotBase64)
        );
        assert_eq!(
            start(Mechanism::Plain, Some("%%%")),
            Err(SaslError::NotBase64)
        );
        for bad in [&b"alice"[..], b"\0alice", b"\0\0pw", b"\0alice\0pw\0more"] {
            assert_eq!(
                Exchange::Plain.step(b64(bad).as_bytes()),
                Err(SaslError::Malformed("PLAIN")),
                "{bad:?}"
            );
        }
        assert_eq!(
            Exchange::LoginUser.step(b64(&[0xff, 0xfe]).as_bytes()),
            Err(SaslError::Malformed("LOGIN"))
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let credentials = done(start(Mechanism::Plain, Some(&b64(b"\0alice\0s3cret"))));
        assert!(!format!("{credentials:?}").contains("s3cret"));
    }
}
