//! `relayq reload`: asks the running daemon to re-read its configuration
//! file (`POST /reload`) and prints what changed. Exit 0 when applied, 64
//! when the file was refused (nothing changed), 69 when no daemon answers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::client::{self, ClientError};
use super::{EXIT_NOPERM, EXIT_SOFTWARE, EXIT_UNAVAILABLE, EXIT_USAGE, load_config};
use crate::config::Config;

/// The daemon's answer to `POST /reload`.
#[derive(Debug, serde::Deserialize)]
struct Report {
    file: PathBuf,
    applied: Vec<String>,
    restart: Vec<String>,
}

pub fn run(config: Option<&Path>) -> ExitCode {
    let socket = control_socket(config);
    let answer = client::request(&socket, "POST", "/reload", None).and_then(|body| {
        serde_json::from_slice::<Report>(&body)
            .map_err(|error| ClientError::Protocol(error.to_string()))
    });
    match answer {
        Ok(report) => {
            print!("{}", describe(&report));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("relayq reload: {error}");
            ExitCode::from(match error {
                ClientError::Unavailable { .. } => EXIT_UNAVAILABLE,
                ClientError::Permission { .. } => EXIT_NOPERM,
                ClientError::Refused { status, .. } if (400..500).contains(&status) => EXIT_USAGE,
                ClientError::Refused { .. } | ClientError::Protocol(_) => EXIT_SOFTWARE,
            })
        }
    }
}

/// The control socket named by the configuration. A file being reloaded
/// may not validate — the daemon is the one to say so, and count it — so
/// the socket is then taken from the keys that decide it alone.
fn control_socket(explicit: Option<&Path>) -> PathBuf {
    if let Ok(config) = load_config(explicit) {
        return config.control.socket;
    }
    let path = explicit.unwrap_or(Path::new(super::SYSTEM_CONFIG));
    let table: toml::Table = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_default();
    let string =
        |section: &str, key: &str| table.get(section)?.get(key)?.as_str().map(PathBuf::from);
    string("control", "socket")
        .or_else(|| string("spool", "path").map(|spool| spool.join("control.sock")))
        .unwrap_or_else(|| Config::builtin().control.socket)
}

fn describe(report: &Report) -> String {
    let mut text = format!("reloaded {}\n", report.file.display());
    if report.applied.is_empty() && report.restart.is_empty() {
        text.push_str("no changes\n");
    }
    if !report.applied.is_empty() {
        text.push_str(&format!("changed: {}\n", report.applied.join(", ")));
    }
    if !report.restart.is_empty() {
        text.push_str(&format!(
            "needs a restart (not applied): {}\n",
            report.restart.join(", ")
        ));
    }
    text
}
