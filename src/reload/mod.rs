//! Live reload (docs/operations.md, "Reloading"): on `SIGHUP` or `POST /reload` the
//! daemon reads the configuration file it was started with again. A file
//! that does not validate, or whose settings cannot be loaded, changes
//! nothing; a valid one replaces the live settings in one step.
//!
//! Applying is two parts. New work (sessions, delivery passes) takes the
//! new snapshot from [`Settings`]; work in flight keeps the one it began
//! with. The components that hold state sized by the settings — the lane
//! workers, destination limits and rates, the connection permits, the
//! free-space threshold, the log filter — are told the new values.

mod changes;

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::delivery::{DeliveryContext, Engine};
use crate::dkim::{Signers, SigningKeys};
use crate::live::{Live, Settings};
use crate::logging::LogLevel;
use crate::metrics::Metrics;
use crate::queue::Lane;
use crate::smtp::credentials::Loaded;
use crate::smtp::pressure::Pressure;
use crate::storage::FreeSpace;
use crate::systemd::Notifier;
pub use changes::Changes;

/// A reload that changed nothing, and why.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("relayq was started without a configuration file: there is nothing to reload")]
    NoFile,
    /// The file does not validate: its file, key and reason.
    #[error("{0}")]
    Invalid(#[from] ConfigError),
    /// The file validates but what it names cannot be loaded.
    #[error("{file}: {error:#}", file = .file.display())]
    Unusable { file: PathBuf, error: anyhow::Error },
}

/// What a successful reload did.
#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub file: PathBuf,
    #[serde(flatten)]
    pub changes: Changes,
}

/// The running components a reload updates.
pub struct Reloader {
    /// The file the daemon was started with.
    pub file: Option<PathBuf>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    pub engine: Engine,
    pub delivery: Arc<DeliveryContext>,
    pub pressure: Arc<Pressure>,
    pub free_space: FreeSpace,
    pub log_level: LogLevel,
    pub notifier: Arc<Notifier>,
    /// Listener certificates and the users file, re-read on every reload.
    pub credentials: Arc<Loaded>,
    /// The DKIM keys, re-read on every reload.
    pub dkim: Arc<SigningKeys>,
    /// One reload at a time: each compares with the settings the previous
    /// one left.
    pub serial: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Reads, validates and applies the configuration file; logs and counts
    /// the outcome (`relayq_config_reloads_total`).
    pub async fn reload(&self) -> Result<Report, ReloadError> {
        let _serial = self.serial.lock().await;
        self.notifier.reloading();
        let result = self.load_and_apply().await;
        match &result {
            Ok(report) => {
                self.metrics.config_reloaded(true);
                for key in &report.changes.restart {
                    tracing::warn!(
                        "{}: {key} changed: needs a restart, not applied",
                        report.file.display()
                    );
                }
                tracing::info!(
                    "configuration reloaded from {}: {}",
                    report.file.display(),
                    summary(&report.changes)
                );
            }
            Err(error) => {
                self.metrics.config_reloaded(false);
                tracing::error!("reload failed, configuration unchanged: {error}");
            }
        }
        self.notifier.notify("READY=1\nSTATUS=accepting mail");
        result
    }

    async fn load_and_apply(&self) -> Result<Report, ReloadError> {
        let file = self.file.clone().ok_or(ReloadError::NoFile)?;
        let running = self.settings.snapshot();
        let metrics = self.metrics.clone();
        let credentials = self.credentials.clone();
        let tracker = self.delivery.tracker().clone();
        let path = file.clone();
        // Reading files (the configuration, resolv.conf, keys) blocks.
        let built = tokio::task::spawn_blocking(
            move || -> Result<(Live, Changes, Signers), ReloadError> {
                let config = Config::load(&path)?;
                let changes = changes::compare(&running.config, &config);
                let config = changes::keep_restart_keys(&running.config, config);
                let live = Live::build(config, Some(&running), &metrics, &tracker)
                    .map_err(|error| ReloadError::Unusable { file: path, error })?;
                let signers = Signers::load_for(&live.config)?;
                // Last, because it replaces the certificates and the users file
                // as soon as all of them load.
                credentials.reload(&live.config)?;
                Ok((live, changes, signers))
            },
        )
        .await
        .map_err(|error| ReloadError::Unusable {
            file: file.clone(),
            error: anyhow::anyhow!("reload task failed: {error}"),
        })?;
        let (live, changes, signers) = built?;
        self.dkim.replace(signers);
        self.apply(live, &changes);
        Ok(Report { file, changes })
    }

    /// Makes `live` current and tells the stateful components. Infallible:
    /// everything that can fail happened in [`Live::build`].
    fn apply(&self, live: Live, changes: &Changes) {
        let config = live.config.clone();
        self.settings.replace(live);
        self.delivery.destinations.reconfigure(
            config.delivery.destination_concurrency,
            &config.destinations,
        );
        for lane in Lane::ALL {
            self.engine
                .set_width(lane, config.lanes.get(lane).concurrency);
        }
        self.pressure
            .set_max_connections(config.smtp.max_connections);
        self.free_space.set_minimum(config.spool.min_free_space);
        if changes.applied.contains(&"log.level")
            && !self.log_level.set(config.log.level.as_deref())
        {
            tracing::info!("log.level changed, but RUST_LOG is set and decides the log level");
        }
    }
}

/// `changed: a, b` or `no changes`.
fn summary(changes: &Changes) -> String {
    let mut parts = Vec::new();
    if !changes.applied.is_empty() {
        parts.push(format!("changed: {}", changes.applied.join(", ")));
    }
    if !changes.restart.is_empty() {
        parts.push(format!(
            "needs a restart (not applied): {}",
            changes.restart.join(", ")
        ));
    }
    if parts.is_empty() {
        "no changes".to_owned()
    } else {
        parts.join("; ")
    }
}

/// Reloads on every `SIGHUP` until `shutdown`. `hangup` is registered at
/// start, before anything else, so an early SIGHUP does not end the process.
pub async fn on_hangup(
    reloader: Arc<Reloader>,
    mut hangup: tokio::signal::unix::Signal,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            received = hangup.recv() => if received.is_none() { return },
            _ = shutdown.cancelled() => return,
        }
        tracing::info!("SIGHUP: reloading the configuration");
        // The outcome is logged and counted by `reload`.
        let _ = reloader.reload().await;
    }
}
