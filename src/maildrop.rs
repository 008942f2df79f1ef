//! The maildrop (`control.maildrop`): where `sendmail` leaves a message when
//! the listener cannot take it, and where the daemon picks it up.
//!
//! A maildrop file is a small text envelope, an empty line, and the message
//! (CRLF lines, not dot-stuffed):
//!
//! ```text
//! relayq-maildrop 1
//! sender app@example.com
//! recipient root
//! recipient user@example.org
//! notify SUCCESS,FAILURE
//! user www-data
//!
//! Subject: ...
//! ```
//!
//! `sender` may be empty (`<>`); `notify` and `user` are optional. Writers
//! create `.tmp-NAME`, fsync it, rename it to `NAME` and fsync the
//! directory, so a file without a leading dot is always complete. The daemon
//! imports each file through an SMTP session over an in-memory pipe, exactly
//! like mail from a local client, and deletes it only after the spool
//! committed it. The message claims its file's name in the same commit
//! (docs/idempotency.md), so a file offered again after a crash between the
//! commit and its removal is answered as a duplicate and removed, not
//! queued twice; a message whose `Idempotency-Key` was already used is
//! deduplicated like one submitted over SMTP. A file it cannot parse, or
//! that intake refuses with 5xx, is moved to `bad/` and logged; nothing is
//! dropped silently.
//!
//! Permissions: the daemon creates the directory with mode 3733 (like
//! Postfix's world-writable maildrop of old): every local user may drop a
//! file but nobody may list the directory; the sticky bit stops users from
//! removing each other's files, and set-group-id makes every file belong to
//! the daemon's group, so the 0640 files are readable by the daemon. Local
//! users can submit through the loopback listener anyway, so this grants
//! nothing new. To restrict it to one group: `chgrp GROUP` and `chmod 3730`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::queue::Lane;
use crate::smtp::session::{Session, SessionShared};
use crate::submission::{self, Outcome, Submission, Timeouts};

const MAGIC: &str = "relayq-maildrop 1";
/// Prefix of files still being written; the importer skips them.
const TEMPORARY_PREFIX: &str = ".tmp-";
/// Subdirectory for files that cannot be imported.
const BAD: &str = "bad";
/// Mode of a maildrop directory the daemon creates (see the module docs).
const DIRECTORY_MODE: u32 = 0o3733;
const FILE_MODE: u32 = 0o640;
/// How often the daemon looks for new files.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The longest wait before a file that got a temporary refusal is retried.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);
/// Room for the envelope lines on top of the message size limit.
const ENVELOPE_ALLOWANCE: u64 = 1024 * 1024;

/// One parsed maildrop file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub submission: Submission,
    /// The local user who ran `sendmail`, for the logs.
    pub user: Option<String>,
    pub message: Vec<u8>,
}

/// Why a maildrop file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaildropError {
    #[error("not a relayq maildrop file")]
    NotMaildrop,
    #[error("no empty line after the envelope")]
    Truncated,
    #[error("bad envelope line {0:?}")]
    BadLine(String),
    #[error("no recipients")]
    NoRecipients,
    #[error("no sender line")]
    NoSender,
}

/// Serialises an envelope and message; `Err` when a field cannot be written
/// in this format (a line break or control character in it) or when [`parse`]
/// would refuse the file (no recipient, an empty recipient or NOTIFY), so that
/// a file `sendmail` leaves is never one the daemon must set aside.
pub fn encode(dropped: &Dropped) -> Result<Vec<u8>, String> {
    let submission = &dropped.submission;
    if submission.recipients.is_empty() {
        return Err("no recipients".to_owned());
    }
    if submission.recipients.iter().any(String::is_empty) {
        return Err("an empty recipient".to_owned());
    }
    if submission.notify.as_deref() == Some("") {
        return Err("an empty notify value".to_owned());
    }
    let mut out = String::from(MAGIC);
    out.push('\n');
    let mut field = |key: &str, value: &str| -> Result<(), String> {
        if value.chars().any(char::is_control) {
            return Err(format!("{key} {value:?} contains a control character"));
        }
        out.push_str(key);
        out.push(' ');
        out.push_str(value);
        out.push('\n');
        Ok(())
    };
    field("sender", &submission.sender)?;
    for recipient in &submission.recipients {
        field("recipient", recipient)?;
    }
    if let Some(notify) = &submission.notify {
        field("notify", notify)?;
    }
    if let Some(user) = &dropped.user {
        field("user", user)?;
    }
    out.push('\n');
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&dropped.message);
    Ok(bytes)
}

/// Parses a maildrop file (pure).
pub fn parse(bytes: &[u8]) -> Result<Dropped, MaildropError> {
    let mut rest = bytes;
    let next_line = |rest: &mut &[u8]| -> Option<String> {
        let newline = rest.iter().position(|&byte| byte == b'\n')?;
        let line = String::from_utf8_lossy(&rest[..newline]).into_owned();
        *rest = &rest[newline + 1..];
        Some(line)
    };
    if next_line(&mut rest).as_deref() != Some(MAGIC) {
        return Err(MaildropError::NotMaildrop);
    }
    let mut sender = None;
    let mut recipients = Vec::new();
    let mut notify = None;
    let mut user = None;
    loop {
        let line = next_line(&mut rest).ok_or(MaildropError::Truncated)?;
        if line.is_empty() {
            break;
        }
        let (key, value) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let value = value.to_owned();
        match key {
            "sender" if sender.is_none() => sender = Some(value),
            "recipient" if !value.is_empty() => recipients.push(value),
            "notify" if !value.is_empty() => notify = Some(value),
            "user" => user = Some(value),
            _ => return Err(MaildropError::BadLine(line)),
        }
    }
    let sender = sender.ok_or(MaildropError::NoSender)?;
    if recipients.is_empty() {
        return Err(MaildropError::NoRecipients);
    }
    Ok(Dropped {
        submission: Submission {
            sender,
            recipients,
            notify,
        },
        user,
        message: rest.to_vec(),
    })
}

/// Writes `dropped` into the maildrop `directory` durably (temporary file,
/// fsync, rename, directory fsync) and returns the file's path.
pub fn write(directory: &Path, dropped: &Dropped) -> io::Result<PathBuf> {
    let bytes =
        encode(dropped).map_err(|reason| io::Error::new(io::ErrorKind::InvalidInput, reason))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let base = format!(
        "{}.{:09}.{}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id()
    );
    for attempt in 0..100u32 {
        let name = if attempt == 0 {
            base.clone()
        } else {
            format!("{base}.{attempt}")
        };
        let temporary = directory.join(format!("{TEMPORARY_PREFIX}{name}"));
        let final_path = directory.join(&name);
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temporary)
        {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(error),
        };
        let written = (|| {
            // The umask may have removed the group's read bit, which the
            // daemon needs when it runs as another user.
            file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            if final_path.exists() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(&temporary, &final_path)?;
            File::open(directory)?.sync_all()
        })();
        match written {
            Ok(()) => return Ok(final_path),
            Err(error) => {
                let _ = fs::remove_file(&temporary);
                if error.kind() == io::ErrorKind::AlreadyExists {
                    continue;
                }
                return Err(error);
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no unused file name in the maildrop",
    ))
}

/// Creates the maildrop directory (mode 3733) and its `bad/` (mode 0700)
/// when missing. An existing directory keeps the mode the administrator gave it.
pub fn prepare_directory(directory: &Path) -> io::Result<()> {
    if !directory.is_dir() {
        if let Some(parent) = directory.parent() {
            fs::create_dir_all(parent)?;
        }
        match fs::DirBuilder::new().mode(0o700).create(directory) {
            Ok(()) => fs::set_permissions(directory, fs::Permissions::from_mode(DIRECTORY_MODE))?,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    let bad = directory.join(BAD);
    match fs::DirBuilder::new().mode(0o700).create(&bad) {
        Err(error) if error.kind() != io::ErrorKind::AlreadyExists => Err(error),
        _ => Ok(()),
    }
}

/// What the importer needs besides the sessions' shared state.
#[derive(Debug, Clone)]
pub struct ImportSettings {
    pub directory: PathBuf,
    /// The lane of the first listener: imported mail is treated as if it
    /// had arrived there.
    pub lane: Lane,
}

/// Spawns the importer: imports what is in the maildrop now, then polls
/// every second until `shutdown`.
pub fn spawn(
    settings: ImportSettings,
    shared: Arc<SessionShared>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) {
    tracker.spawn(async move {
        let mut importer = Importer {
            settings,
            shared,
            retry: std::collections::HashMap::new(),
        };
        loop {
            importer.pass(&shutdown).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    });
}

struct Importer {
    settings: ImportSettings,
    shared: Arc<SessionShared>,
    /// Files refused temporarily: when to try again and the current delay.
    retry: std::collections::HashMap<String, (tokio::time::Instant, Duration)>,
}

impl Importer {
    async fn pass(&mut self, shutdown: &CancellationToken) {
        let directory = self.settings.directory.clone();
        let names = match tokio::task::spawn_blocking(move || list(&directory)).await {
            Ok(Ok(names)) => names,
            Ok(Err(error)) => {
                tracing::warn!(
                    "maildrop {}: cannot list: {error}",
                    self.settings.directory.display()
                );
                return;
            }
            Err(_) => return,
        };
        let now = tokio::time::Instant::now();
        self.retry.retain(|name, _| names.contains(name));
        for name in names {
            if shutdown.is_cancelled() {
                return;
            }
            if self.retry.get(&name).is_some_and(|(at, _)| *at > now) {
                continue;
            }
            self.import(&name).await;
        }
    }

    async fn import(&mut self, name: &str) {
        let path = self.settings.directory.join(name);
        let max_message_size = self
            .shared
            .settings
            .snapshot()
            .config
            .spool
            .max_message_size;
        let limit = max_message_size + ENVELOPE_ALLOWANCE;
        let read_path = path.clone();
        let bytes = match tokio::task::spawn_blocking(move || read_bounded(&read_path, limit)).await
        {
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) => {
                self.set_aside(name, "larger than spool.max_message_size")
                    .await;
                return;
            }
            Ok(Err(error)) if error.kind() == io::ErrorKind::NotFound => return,
            Ok(Err(error)) => {
                tracing::warn!("maildrop {}: cannot read: {error}", path.display());
                self.later(name);
                return;
            }
            Err(_) => return,
        };
        let dropped = match parse(&bytes) {
            Ok(dropped) => dropped,
            Err(error) => {
                self.set_aside(name, &error.to_string()).await;
                return;
            }
        };
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        let client: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, 0).into();
        let session = Session::new(server_end, client, self.settings.lane, self.shared.clone())
            .with_maildrop_file(name);
        let (_, outcome) = tokio::join!(
            session.run(),
            submission::submit(
                client_end,
                "maildrop",
                &dropped.submission,
                &dropped.message,
                Timeouts::default(),
            )
        );
        let user = dropped.user.as_deref().unwrap_or("unknown");
        match outcome {
            Outcome::Accepted(_) => {
                let id = outcome.queue_id().unwrap_or("?").to_owned();
                let how = if outcome.is_duplicate() {
                    "was already queued (duplicate)"
                } else {
                    "imported"
                };
                let directory = self.settings.directory.clone();
                let removed = tokio::task::spawn_blocking(move || {
                    fs::remove_file(&path)?;
                    File::open(&directory)?.sync_all()
                })
                .await;
                match removed {
                    Ok(Ok(())) => tracing::info!(
                        queue_id = %id,
                        "{id}: {how} from maildrop file {name} (user {user})"
                    ),
                    // Stays in the maildrop, and its claim makes the next
                    // import a duplicate: say so.
                    Ok(Err(error)) => tracing::error!(
                        queue_id = %id,
                        "{id}: {how} from maildrop file {name}, but cannot remove it: {error}"
                    ),
                    Err(_) => {}
                }
                self.retry.remove(name);
            }
            Outcome::Temporary(reason) => {
                tracing::warn!(
                    "maildrop file {name} (user {user}): not imported, will retry: {reason}"
                );
                self.later(name);
            }
            Outcome::Permanent(reason) | Outcome::NoRecipients(reason) => {
                self.set_aside(name, &format!("refused by intake: {reason}"))
                    .await;
            }
        }
    }

    /// Backs off a file refused temporarily: 2 s, doubling, at most 5 min.
    fn later(&mut self, name: &str) {
        let delay = match self.retry.get(name) {
            Some((_, delay)) => (*delay * 2).min(MAX_RETRY_DELAY),
            None => POLL_INTERVAL * 2,
        };
        self.retry.insert(
            name.to_owned(),
            (tokio::time::Instant::now() + delay, delay),
        );
    }

    /// Moves a file that will never import into `bad/`, and says so.
    async fn set_aside(&mut self, name: &str, reason: &str) {
        let directory = self.settings.directory.clone();
        let file = name.to_owned();
        let moved = tokio::task::spawn_blocking(move || {
            let bad = directory.join(BAD);
            fs::create_dir_all(&bad)?;
            fs::rename(directory.join(&file), bad.join(&file))?;
            File::open(&bad)?.sync_all()?;
            File::open(&directory)?.sync_all()
        })
        .await;
        match moved {
            Ok(Ok(())) => tracing::error!(
                "maildrop file {name}: {reason}; moved to {}",
                self.settings.directory.join(BAD).join(name).display()
            ),
            Ok(Err(error)) => {
                tracing::error!(
                    "maildrop file {name}: {reason}; cannot move it to {BAD}/: {error}"
                );
                self.later(name);
            }
            Err(_) => {}
        }
    }
}

/// Names of complete files in the maildrop, oldest name first.
fn list(directory: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(directory)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if !name.starts_with('.') {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Reads a file of at most `limit` bytes; `None` when it is larger.
fn read_bounded(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let file = File::open(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Dropped {
        Dropped {
            submission: Submission {
                sender: "app@example.com".into(),
                recipients: vec!["root".into(), "user@example.org".into()],
                notify: Some("SUCCESS,FAILURE".into()),
            },
            user: Some("www-data".into()),
            message: b"Subject: hi\r\n\r\nbody\r\n".to_vec(),
        }
    }

    #[test]
    fn round_trip() {
        let encoded = encode(&sample()).unwrap();
        assert!(
            encoded.starts_with(b"relayq-maildrop 1\nsender app@example.com\nrecipient root\n")
        );
        assert_eq!(parse(&encoded).unwrap(), sample());
        let mut null_sender = sample();
        null_sender.submission.sender.clear();
        null_sender.submission.notify = None;
        null_sender.user = None;
        assert_eq!(parse(&encode(&null_sender).unwrap()).unwrap(), null_sender);
    }

    /// Found by the `maildrop` fuzz target: `encode` wrote files that
    /// `parse` refuses (no recipient line, or `recipient`/`notify` without a
    /// value), which the daemon would only have set aside in `bad/`.
    #[test]
    fn writes_only_what_it_can_read_back() {
        let mut no_recipients = sample();
        no_recipients.submission.recipients.clear();
        assert!(encode(&no_recipients).is_err());
        let mut empty_recipient = sample();
        empty_recipient.submission.recipients.push(String::new());
        assert!(encode(&empty_recipient).is_err());
        let mut empty_notify = sample();
        empty_notify.submission.notify = Some(String::new());
        assert!(encode(&empty_notify).is_err());
        let mut empty_user = sample();
        empty_user.user = Some(String::new());
        assert_eq!(parse(&encode(&empty_user).unwrap()), Ok(empty_user));
    }

    #[test]
    fn refuses_what_it_cannot_write_or_read() {
        let mut broken = sample();
        broken.submission.recipients.push("a\nrecipient b".into());
        assert!(encode(&broken).is_err());
        assert_eq!(parse(b"hello\n"), Err(MaildropError::NotMaildrop));
        assert_eq!(
            parse(b"relayq-maildrop 1\nsender a\nrecipient b\n"),
            Err(MaildropError::Truncated)
        );
        assert_eq!(
            parse(b"relayq-maildrop 1\nsender a\n\nx"),
            Err(MaildropError::NoRecipients)
        );
        assert_eq!(
            parse(b"relayq-maildrop 1\nrecipient b\n\nx"),
            Err(MaildropError::NoSender)
        );
        assert!(matches!(
            parse(b"relayq-maildrop 1\nsender a\nfoo bar\n\n"),
            Err(MaildropError::BadLine(_))
        ));
    }

    #[test]
    fn write_is_atomic_and_listed() {
        let directory = tempfile::tempdir().unwrap();
        let maildrop = directory.path().join("maildrop");
        prepare_directory(&maildrop).unwrap();
        let mode = fs::metadata(&maildrop).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, DIRECTORY_MODE);
        let first = write(&maildrop, &sample()).unwrap();
        let second = write(&maildrop, &sample()).unwrap();
        assert_ne!(first, second);
        let names = list(&maildrop).unwrap();
        assert_eq!(names.len(), 2);
        assert!(names.iter().all(|name| !name.starts_with('.')));
        let bytes = fs::read(&first).unwrap();
        assert_eq!(parse(&bytes).unwrap(), sample());
        let file_mode = fs::metadata(&first).unwrap().permissions().mode() & 0o777;
        assert_eq!(file_mode, FILE_MODE);
    }
}
