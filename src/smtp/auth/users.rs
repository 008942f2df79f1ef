//! The users file (`smtp.users_file`): `user:HASH` lines, and checking a
//! password against them.
//!
//! Parsing is pure; [`Users::load`] reads the file. Verifying a password costs
//! milliseconds of CPU by design, so callers run [`Users::verify`] on the
//! blocking pool.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use argon2::PasswordVerifier as _;

/// The accounts allowed to authenticate. Holds hashes only, never passwords.
pub struct Users {
    by_name: HashMap<String, PasswordHash>,
}

/// One account's hash, in a format checked at load time.
enum PasswordHash {
    /// SHA-512-crypt, `$6$…` (`openssl passwd -6`).
    ShaCrypt(String),
    /// `$2a$`, `$2b$` or `$2y$`.
    Bcrypt(String),
    /// `$argon2id$…` (PHC string format).
    Argon2id(String),
}

/// Why a line of the users file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct UsersError {
    /// 1-based.
    pub line: usize,
    pub reason: String,
}

/// A users file that cannot be used: which file, and why.
#[derive(Debug, thiserror::Error)]
pub struct UsersFileError {
    pub file: PathBuf,
    /// `None` when the file cannot be read.
    pub error: Option<UsersError>,
    pub reason: String,
}

impl fmt::Display for UsersFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            Some(error) => write!(f, "{}: {error}", self.file.display()),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

impl Users {
    /// Reads and parses the users file at `path`.
    pub fn load(path: &Path) -> Result<Users, UsersFileError> {
        let text = std::fs::read_to_string(path).map_err(|error| UsersFileError {
            file: path.to_path_buf(),
            error: None,
            reason: format!("cannot read: {error}"),
        })?;
        Users::parse(&text).map_err(|error| UsersFileError {
            file: path.to_path_buf(),
            reason: error.to_string(),
            error: Some(error),
        })
    }

    /// Parses `user:HASH` lines. Empty lines and lines starting with `#` are
    /// skipped; a user may appear once.
    pub fn parse(text: &str) -> Result<Users, UsersError> {
        let mut by_name = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let invalid = |reason: String| UsersError {
                line: line_number,
                reason,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, hash)) = line.split_once(':') else {
                return Err(invalid("expected user:HASH".to_owned()));
            };
            if name.is_empty() {
                return Err(invalid("empty user name".to_owned()));
            }
            let hash = PasswordHash::parse(hash).map_err(invalid)?;
            if by_name.insert(name.to_owned(), hash).is_some() {
                return Err(invalid(format!("user {name:?} is listed twice")));
            }
        }
        Ok(Users { by_name })
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether `password` is `user`'s. For an unknown user another account's
    /// hash is still computed, so that the time taken does not tell which
    /// users exist. Blocking: costs as much CPU as the hash format asks.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        match self.by_name.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                if let Some(any) = self.by_name.values().next() {
                    let _ = any.verify(password);
                }
                false
            }
        }
    }
}

impl PasswordHash {
    fn parse(hash: &str) -> Result<PasswordHash, String> {
        if hash.starts_with("$6$") {
            sha_crypt::PasswordHashRef::new(hash)
                .map_err(|_| "malformed SHA-512-crypt ($6$) hash".to_owned())?;
            return Ok(PasswordHash::ShaCrypt(hash.to_owned()));
        }
        if ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|prefix| hash.starts_with(prefix))
        {
            hash.parse::<bcrypt::HashParts>()
                .map_err(|error| format!("malformed bcrypt hash: {error}"))?;
            return Ok(PasswordHash::Bcrypt(hash.to_owned()));
        }
        if hash.starts_with("$argon2id$") {
            argon2::password_hash::phc::PasswordHash::new(hash)
                .map_err(|error| format!("malformed argon2id hash: {error}"))?;
            return Ok(PasswordHash::Argon2id(hash.to_owned()));
        }
        Err(
            "unknown hash format: expected SHA-512-crypt ($6$…, `openssl passwd -6`), \
             bcrypt ($2b$…) or argon2id ($argon2id$…)"
                .to_owned(),
        )
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::ShaCrypt(hash) => sha_crypt::ShaCrypt::default()
                .verify_password(password, hash.as_str())
                .is_ok(),
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::Argon2id(hash) => argon2::Argon2::default()
                .verify_password(password, hash.as_str())
                .is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl passwd -6 -salt saltsalt secret`.
    const SHA512_SECRET: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

    #[test]
    fn sha512_crypt_from_openssl_verifies() {
        let users = Users::parse(&format!("alice:{SHA512_SECRET}\n")).unwrap();
        assert!(users.verify("alice", b"secret"));
        assert!(!users.verify("alice", b"Secret"));
        assert!(!users.verify("bob", b"secret"));
    }

    #[test]
    fn bcrypt_verifies() {
        let hash = bcrypt::hash("hunter2", 4).unwrap();
        assert!(hash.starts_with("$2b$"));
        let users = Users::parse(&format!("# comment\n\nbob:{hash}\n")).unwrap();
        assert!(users.verify("bob", b"hunter2"));
        assert!(!users.verify("bob", b"hunter3"));
    }

    #[test]
    fn argon2id_verifies() {
        use argon2::password_hash::PasswordHasher as _;
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        let hasher =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let hash = hasher
            .hash_password_with_salt(b"correct horse", b"0123456789abcdef")
            .unwrap()
            .to_string();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let users = Users::parse(&format!("carol:{hash}\n")).unwrap();
        assert!(users.verify("carol", b"correct horse"));
        assert!(!users.verify("carol", b"battery staple"));
    }

    #[test]
    fn bad_lines_name_the_line() {
        let error = |text: &str| Users::parse(text).err().unwrap().to_string();
        assert_eq!(error("\n\nnocolon\n"), "line 3: expected user:HASH");
        assert_eq!(
            error(&format!(":{SHA512_SECRET}")),
            "line 1: empty user name"
        );
        assert!(error("a:plaintext").starts_with("line 1: unknown hash format"));
        assert!(error("a:$1$md5$crypt").starts_with("line 1: unknown hash format"));
        assert!(error("a:$6$").starts_with("line 1: malformed SHA-512-crypt"));
        assert!(error("a:$2b$04$short").starts_with("line 1: malformed bcrypt"));
        assert!(error("a:$argon2id$garbage").starts_with("line 1: malformed argon2id"));
        assert_eq!(
            error(&format!("a:{SHA512_SECRET}\na:{SHA512_SECRET}\n")),
            "line 2: user \"a\" is listed twice"
        );
    }
}
