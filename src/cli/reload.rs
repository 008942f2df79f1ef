//! `relayq reload`: asks the running daemon to re-read its configuration
//! file (`POST /reload`) and prints what changed. Exit 0 when applied, 64
//! when the file was refused (nothing changed), 69 when no daemon answers.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::client::{self, ClientError};
use super::load_config;
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
            ExitCode::from(error.exit_code())
        }
    }
}

/// The control socket named by the configuration. A file being reloaded
/// may not validate, or not even be TOML — the daemon is the one to say
/// so, and count it — so the socket is then found from the lines that
/// decide it alone.
fn control_socket(explicit: Option<&Path>) -> PathBuf {
    if let Ok(config) = load_config(explicit) {
        return config.control.socket;
    }
    let path = explicit.unwrap_or(Path::new(super::SYSTEM_CONFIG));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (socket, spool) = scan_socket(&text);
    socket
        .or_else(|| spool.map(|spool| spool.join("control.sock")))
        .unwrap_or_else(|| Config::builtin().control.socket)
}

/// `control.socket` and `spool.path` as written on their own lines
/// (`key = "value"`), whatever the rest of the text is.
fn scan_socket(text: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let mut section = "";
    let (mut socket, mut spool) = (None, None);
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.trim_matches(['[', ']']).trim();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value
            .trim()
            .strip_prefix('"')
            .and_then(|rest| rest.split_once('"'))
            .map(|(value, _)| PathBuf::from(value));
        match (section, key.trim()) {
            ("control", "socket") => socket = value,
            ("spool", "path") => spool = value,
            _ => {}
        }
    }
    (socket, spool)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_found_in_a_file_that_is_not_valid() {
        let text = "[spool]\npath = \"/srv/spool\"  # comment\n[smtp\nrelay_networks = [\n";
        assert_eq!(scan_socket(text), (None, Some(PathBuf::from("/srv/spool"))));
        let text = "[control]\nsocket = \"/run/relayq/c.sock\"\n[spool]\npath = \"/srv\"\n";
        assert_eq!(
            scan_socket(text),
            (
                Some(PathBuf::from("/run/relayq/c.sock")),
                Some(PathBuf::from("/srv"))
            )
        );
        assert_eq!(scan_socket("[[listener]]\naddress = \"x\"\n"), (None, None));
    }
}
