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

/// Loads everything [`listener_acceptor`] and [`users`] would, for
/// `check-config`.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    for index in 0..config.listeners.len() {
        listener_acceptor(config, index)?;
    }
    users(config).map(drop)
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
