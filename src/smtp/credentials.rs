//! What intake reads from disk besides the configuration file: each TLS
//! listener's certificate and private key, and the users file. Built from a
//! [`Config`] by functions that a reload calls again; the results live in
//! [`Current`] values that a listener reads once per new connection.
//!
//! Errors are [`ConfigError`]s naming the configuration file, the key that
//! names the file read (`listener[0].certificate`, `smtp.users_file`), and a
//! reason that names that file, so `check-config` reports them like any other
//! configuration error.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::auth::Users;
use crate::config::{Config, ConfigError, ListenerTls, TlsFiles};

/// A value replaced as a whole on reload; readers take the one current when
/// they start (a session keeps what it started with).
pub struct Current<T> {
    value: RwLock<Arc<T>>,
}

impl<T> Current<T> {
    pub fn new(value: T) -> Current<T> {
        Current {
            value: RwLock::new(Arc::new(value)),
        }
    }

    pub fn get(&self) -> Arc<T> {
        self.value
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    pub fn replace(&self, value: T) {
        *self
            .value
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = Arc::new(value);
    }
}

/// Everything intake loaded from disk, as the sessions share it: what a
/// reload replaces.
pub struct Loaded {
    /// One per `[[listener]]`, in order; `None` for a plain listener.
    pub acceptors: Vec<Option<Arc<Current<TlsAcceptor>>>>,
    /// `None` when `smtp.users_file` is not set.
    pub users: Option<Arc<Current<Users>>>,
}

impl Loaded {
    pub fn load(config: &Config) -> Result<Loaded, ConfigError> {
        let acceptors = (0..config.listeners.len())
            .map(|index| {
                listener_acceptor(config, index)
                    .map(|acceptor| acceptor.map(|acceptor| Arc::new(Current::new(acceptor))))
            })
            .collect::<Result<_, _>>()?;
        let users = users(config)?.map(|users| Arc::new(Current::new(users)));
        Ok(Loaded { acceptors, users })
    }

    /// Reads the certificates and the users file `config` names again (even
    /// when their paths did not change) and puts them in place for new
    /// sessions; all or nothing. Listeners are matched by position, since a
    /// change to `[[listener]]` itself needs a restart; a value that had no
    /// place at start (a listener that became TLS, a users file that
    /// appeared) is left for that restart.
    pub fn reload(&self, config: &Config) -> Result<(), ConfigError> {
        let mut acceptors = Vec::new();
        for (index, current) in self.acceptors.iter().enumerate() {
            if let Some(current) = current
                && index < config.listeners.len()
                && let Some(acceptor) = listener_acceptor(config, index)?
            {
                acceptors.push((current, acceptor));
            }
        }
        let users = users(config)?;
        for (current, acceptor) in acceptors {
            current.replace(acceptor);
        }
        if let (Some(current), Some(users)) = (&self.users, users) {
            current.replace(users);
        }
        Ok(())
    }
}

/// The TLS acceptor of `config.listeners[index]`; `None` for a plain listener.
pub fn listener_acceptor(
    config: &Config,
    index: usize,
) -> Result<Option<TlsAcceptor>, ConfigError> {
    let listener = &config.listeners[index];
    let (ListenerTls::Starttls | ListenerTls::Implicit) = listener.tls else {
        return Ok(None);
    };
    let Some(files) = &listener.tls_files else {
        return Ok(None);
    };
    tls_acceptor(files).map(Some).map_err(|(field, reason)| {
        config_error(config, &format!("listener[{index}].{field}"), reason)
    })
}

/// The users file, when `smtp.users_file` is set.
pub fn users(config: &Config) -> Result<Option<Users>, ConfigError> {
    let Some(path) = &config.smtp.users_file else {
        return Ok(None);
    };
    Users::load(path)
        .map(Some)
        .map_err(|error| config_error(config, "smtp.users_file", error.to_string()))
}

/// Loads everything [`Loaded::load`] would, for `check-config`.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    Loaded::load(config).map(drop)
}

/// A rustls server configuration (ring provider) for a certificate chain
/// and key in PEM files. Errors: the key (`certificate` or `private_key`)
/// and a reason naming the file.
pub fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, (&'static str, String)> {
    let chain = read_certificates(&files.certificate).map_err(|reason| ("certificate", reason))?;
    let key = read_private_key(&files.private_key).map_err(|reason| ("private_key", reason))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ("certificate", format!("TLS protocol versions: {error}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|error| {
            (
                "private_key",
                format!(
                    "{} cannot be used with {}: {error}",
                    files.private_key.display(),
                    files.certificate.display()
                ),
            )
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("{}: bad PEM: {error}", path.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no CERTIFICATE in the PEM file",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| {
        format!(
            "{}: no usable PRIVATE KEY in the PEM file: {error}",
            path.display()
        )
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
}

fn config_error(config: &Config, key: &str, reason: String) -> ConfigError {
    ConfigError {
        file: config.source.clone().unwrap_or_default(),
        key: key.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA512_SECRET: &str = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";

    fn config(directory: &Path) -> Config {
        let text = format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n[smtp]\nusers_file = \"{}\"\n",
            directory.join("users").display()
        );
        Config::parse(&text, &directory.join("relayq.toml")).unwrap()
    }

    #[test]
    fn reload_rereads_the_users_file_and_keeps_the_old_one_on_error() {
        let directory = tempfile::tempdir().unwrap();
        let users_path = directory.path().join("users");
        std::fs::write(&users_path, format!("alice:{SHA512_SECRET}\n")).unwrap();
        let config = config(directory.path());
        let loaded = Loaded::load(&config).unwrap();
        assert!(loaded.acceptors.iter().all(Option::is_none));
        let users = loaded.users.as_ref().unwrap();
        let before = users.get();
        assert!(before.verify("alice", b"secret"));

        std::fs::write(&users_path, format!("bob:{SHA512_SECRET}\n")).unwrap();
        loaded.reload(&config).unwrap();
        assert!(users.get().verify("bob", b"secret"));
        assert!(!users.get().verify("alice", b"secret"));
        // A session that started before keeps what it took.
        assert!(before.verify("alice", b"secret"));

        std::fs::write(&users_path, "carol:plaintext\n").unwrap();
        let error = loaded.reload(&config).unwrap_err().to_string();
        assert!(
            error.contains("smtp.users_file: ") && error.contains("line 1: unknown hash format"),
            "{error}"
        );
        assert!(users.get().verify("bob", b"secret"));
    }
}
