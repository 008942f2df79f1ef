//! Log output: one line per event, text (Postfix-like) or JSON, written to
//! stderr in batches (`batched`). The level (`log.level`) can change while
//! running ([`LogLevel`], used by reload).

mod batched;

pub use batched::flush;

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::LogFormat;

/// Changes the filter of the installed subscriber.
#[derive(Clone)]
pub struct LogLevel {
    handle: Option<reload::Handle<EnvFilter, Registry>>,
    /// `RUST_LOG` was set at start: it keeps winning over `log.level`.
    from_environment: bool,
}

impl LogLevel {
    /// A handle that changes nothing (no subscriber of ours is installed).
    pub fn detached() -> LogLevel {
        LogLevel {
            handle: None,
            from_environment: false,
        }
    }

    /// Applies a reloaded `log.level` (already checked by the
    /// configuration). Returns false when `RUST_LOG` decides instead.
    pub fn set(&self, level: Option<&str>) -> bool {
        if self.from_environment {
            return false;
        }
        if let Some(handle) = &self.handle {
            let filter = EnvFilter::try_new(level.unwrap_or("info"))
                .unwrap_or_else(|_| EnvFilter::new("info"));
            if let Err(error) = handle.reload(filter) {
                tracing::warn!("cannot change the log level: {error}");
            }
        }
        true
    }
}

/// Installs the global subscriber. `RUST_LOG` wins over `log.level`; the
/// default is `info`. Logs go to stderr (journald picks them up under
/// systemd), in batches; call [`flush`] before the process exits.
pub fn init(format: LogFormat, level: Option<&str>) -> LogLevel {
    let from_environment = EnvFilter::try_from_default_env().is_ok();
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or("info")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(batched::BatchedStderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
        LogFormat::Text => registry.with(layer).try_init(),
    };
    // A second init (tests) keeps the first subscriber.
    LogLevel {
        handle: result.is_ok().then_some(handle),
        from_environment,
    }
}
