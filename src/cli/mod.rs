//! Command-line clients of the daemon: `relayq queue …` (and `mailq`),
//! `relayq webhook …`, `relayq suppression …`, `relayq reload`; and what is
//! generated from the command's definitions (man pages, shell completions).
//! They find the daemon through the configuration, resolved as `serve`
//! resolves it.

pub(crate) mod client;
pub(crate) mod format;
pub mod generate;
pub mod queue;
pub mod reload;
pub mod sendmail;
pub mod suppression;
pub mod webhook;

use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};

/// Configuration used when no `--config` is given and it exists.
pub const SYSTEM_CONFIG: &str = "/etc/relayq/relayq.toml";

/// sysexits.h EX_USAGE.
pub const EXIT_USAGE: u8 = 64;
/// sysexits.h EX_UNAVAILABLE: the daemon is not running.
pub const EXIT_UNAVAILABLE: u8 = 69;
/// sysexits.h EX_SOFTWARE.
pub const EXIT_SOFTWARE: u8 = 70;
/// sysexits.h EX_TEMPFAIL: the daemon cannot do it yet (the queue is being
/// rebuilt after a start); try again.
pub const EXIT_TEMPFAIL: u8 = 75;
/// sysexits.h EX_NOPERM.
pub const EXIT_NOPERM: u8 = 77;

/// `--config F`, else `/etc/relayq/relayq.toml` if present, else the
/// built-in defaults (as `relayq serve`).
pub fn load_config(explicit: Option<&Path>) -> Result<Config, ConfigError> {
    match explicit {
        Some(path) => Config::load(path),
        None if Path::new(SYSTEM_CONFIG).exists() => Config::load(Path::new(SYSTEM_CONFIG)),
        None => Ok(Config::builtin()),
    }
}

/// The arguments of `relayq queue list` when invoked as `mailq`.
pub fn mailq_arguments(rest: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut arguments: Vec<std::ffi::OsString> =
        vec!["relayq".into(), "queue".into(), "list".into()];
    arguments.extend(rest);
    arguments
}

/// True when the program was invoked under the name `mailq`.
pub fn invoked_as_mailq(argv0: Option<&std::ffi::OsStr>) -> bool {
    argv0
        .map(PathBuf::from)
        .and_then(|path| path.file_name().map(|name| name == "mailq"))
        .unwrap_or(false)
}
