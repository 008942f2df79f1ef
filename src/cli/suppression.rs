//! `relayq suppression …`: list, show, add, remove, import and export the
//! suppression list, as requests to the daemon's control API. Exit codes
//! (sysexits), as the `queue` commands: 0 done, 64 usage (an address that
//! is not on the list too), 65 import lines that could not be read, 66 an
//! import file that cannot be opened, 69 daemon not available, 77 no
//! permission on the socket.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::client::{self, ClientError};
use super::queue::each_in_array;
use super::{EXIT_USAGE, load_config};
use crate::control::http::percent_encode;
use crate::control::suppression::{
    AddRequest, ImportEntry, ImportRequest, MAX_IMPORT_ENTRIES, SuppressionView,
};
use crate::suppression::csv::{self, ImportLine};

/// sysexits.h EX_DATAERR: import lines that could not be read.
const EXIT_DATAERR: u8 = 65;
/// sysexits.h EX_NOINPUT: the import file cannot be opened.
const EXIT_NOINPUT: u8 = 66;
/// Entries per import request (one spool commit each).
const IMPORT_CHUNK: usize = 5000;
/// Bytes of JSON per import request, below the control API's body cap.
const IMPORT_CHUNK_BYTES: usize = 768 * 1024;
/// Bad import lines shown one by one; the rest are counted.
const SHOWN_ERRORS: usize = 20;

#[derive(Debug, Args)]
pub struct SuppressionArgs {
    /// Configuration file, to find the control socket (default:
    /// /etc/relayq/relayq.toml if present, else built-in defaults).
    #[arg(long, short = 'c', env = "RELAYQ_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of text (list, show, add).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: SuppressionCommand,
}

#[derive(Debug, Subcommand)]
pub enum SuppressionCommand {
    /// The suppressed addresses, in address order.
    List {
        /// Only entries of this bounce class (e.g. invalid_recipient, admin).
        #[arg(long)]
        class: Option<String>,
        /// Stop after this many entries.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One address's entry: class, since, source, the reply that caused it.
    Show { address: String },
    /// Suppress an address (class admin, source admin).
    Add {
        address: String,
        /// Why, kept with the entry.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Mail the address again.
    Remove { address: String },
    /// Add the addresses of FILE ("-": standard input): one address per
    /// line, or CSV lines `address,class,reason`.
    Import { file: PathBuf },
    /// Print the list as CSV (`address,class,reason`), the format import reads.
    Export,
}

enum Failure {
    Usage(String),
    Data(String),
    NoInput(String),
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        Failure::Client(error)
    }
}

/// Runs a `suppression` command; prints its output and returns the exit code.
pub fn run(args: SuppressionArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("relayq: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let socket = config.control.socket;
    let json = args.json;
    let result = match args.command {
        SuppressionCommand::List { class, limit } => list(&socket, class, limit, json),
        SuppressionCommand::Show { address } => {
            let body = client::request(&socket, "GET", &target(&address), None);
            body.map_err(Failure::from)
                .and_then(|body| print_entry(&body, json))
        }
        SuppressionCommand::Add { address, reason } => add(&socket, &address, reason, json),
        SuppressionCommand::Remove { address } => {
            client::request(&socket, "DELETE", &target(&address), None)
                .map(|_| print(&format!("{address}: removed from the suppression list\n")))
                .map_err(Failure::from)
        }
        SuppressionCommand::Import { file } => import(&socket, &file),
        SuppressionCommand::Export => export(&socket),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("relayq suppression: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Data(message)) => {
            eprintln!("relayq suppression: {message}");
            ExitCode::from(EXIT_DATAERR)
        }
        Err(Failure::NoInput(message)) => {
            eprintln!("relayq suppression: {message}");
            ExitCode::from(EXIT_NOINPUT)
        }
        Err(Failure::Client(error)) => {
            eprintln!("relayq suppression: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn target(address: &str) -> String {
    format!("/suppression/{}", percent_encode(address))
}

fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn unexpected(error: impl std::fmt::Display) -> Failure {
    Failure::Client(ClientError::Protocol(format!("unexpected answer: {error}")))
}

fn print_entry(body: &[u8], json: bool) -> Result<(), Failure> {
    if json {
        print(&String::from_utf8_lossy(body));
        return Ok(());
    }
    let entry: SuppressionView = serde_json::from_slice(body).map_err(unexpected)?;
    print(&entry_page(&entry));
    Ok(())
}

fn add(socket: &Path, address: &str, reason: Option<String>, json: bool) -> Result<(), Failure> {
    csv::check_address(address).map_err(Failure::Usage)?;
    let request = serde_json::to_vec(&AddRequest { reason }).map_err(unexpected)?;
    let body = client::request(socket, "PUT", &target(address), Some(&request))?;
    if json {
        print(&String::from_utf8_lossy(&body));
    } else {
        print(&format!("{address}: suppressed\n"));
    }
    Ok(())
}

/// Streams `GET /suppression` as it arrives: the JSON array as sent, or
/// one line per entry. Output that can no longer be written (`| head`)
/// ends the request, which stops the daemon's work.
fn list(
    socket: &Path,
    class: Option<String>,
    limit: Option<usize>,
    json: bool,
) -> Result<(), Failure> {
    let mut query = Vec::new();
    if let Some(class) = class {
        query.push(format!("class={}", percent_encode(&class)));
    }
    if let Some(limit) = limit {
        query.push(format!("limit={limit}"));
    }
    let target = if query.is_empty() {
        "/suppression".to_owned()
    } else {
        format!("/suppression?{}", query.join("&"))
    };
    let mut body = client::open_stream(socket, "GET", &target, None, Some(client::REPLY_TIMEOUT))?;
    let mut stdout = std::io::stdout().lock();
    if json {
        let _ = std::io::copy(&mut body, &mut stdout)
            .map_err(|error| ClientError::Protocol(error.to_string()))?;
        let _ = stdout.flush();
        return Ok(());
    }
    let mut count = 0usize;
    let mut closed = false;
    let parsed = each_in_array(&mut body, |entry: SuppressionView| {
        let mut text = String::new();
        if count == 0 {
            text.push_str(LIST_HEADER);
        }
        text.push_str(&list_line(&entry));
        count += 1;
        closed = stdout.write_all(text.as_bytes()).is_err();
        !closed
    });
    if closed {
        return Ok(());
    }
    parsed.map_err(unexpected)?;
    let footer = match count {
        0 => "The suppression list is empty.\n".to_owned(),
        1 => "-- 1 suppressed address\n".to_owned(),
        count => format!("-- {count} suppressed addresses\n"),
    };
    let _ = stdout.write_all(footer.as_bytes());
    let _ = stdout.flush();
    Ok(())
}

/// `GET /suppression` as CSV, the format `import` reads.
fn export(socket: &Path) -> Result<(), Failure> {
    let mut body = client::open_stream(
        socket,
        "GET",
        "/suppression",
        None,
        Some(client::REPLY_TIMEOUT),
    )?;
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(format!("{}\n", csv::HEADER).as_bytes())
        .is_err()
    {
        return Ok(());
    }
    let mut closed = false;
    let parsed = each_in_array(&mut body, |entry: SuppressionView| {
        let line = csv::export_line(&entry.address, entry.class.as_str(), &entry.reply);
        closed = stdout.write_all(line.as_bytes()).is_err();
        !closed
    });
    if !closed {
        parsed.map_err(unexpected)?;
    }
    let _ = stdout.flush();
    Ok(())
}

/// Reads FILE (or standard input), checks each line, and sends the good
/// ones in chunks (one spool commit each). Bad lines are reported with
/// their line numbers and skipped; they make the exit code 65.
fn import(socket: &Path, file: &Path) -> Result<(), Failure> {
    let name = file.display().to_string();
    let reader: Box<dyn BufRead> = if file == Path::new("-") {
        Box::new(BufReader::new(std::io::stdin().lock()))
    } else {
        let opened =
            File::open(file).map_err(|error| Failure::NoInput(format!("{name}: {error}")))?;
        Box::new(BufReader::with_capacity(256 * 1024, opened))
    };
    let progress = std::io::stderr().is_terminal();
    let mut chunk = Chunk::default();
    let mut imported = 0usize;
    let mut bad = 0usize;
    for (index, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(|error| Failure::NoInput(format!("{name}: {error}")))?;
        let parsed = std::str::from_utf8(&line)
            .map_err(|_| "not UTF-8 text".to_owned())
            .and_then(csv::parse_line)
            .and_then(|parsed| {
                if let Some(ImportLine {
                    class: Some(class), ..
                }) = &parsed
                {
                    crate::suppression::class_named(class)?;
                }
                Ok(parsed)
            });
        match parsed {
            Ok(Some(line)) => chunk.push(line),
            Ok(None) => {}
            Err(reason) => {
                bad += 1;
                if bad <= SHOWN_ERRORS {
                    eprintln!("{name}:{}: {reason}; line skipped", index + 1);
                }
            }
        }
        if chunk.is_full() {
            imported += chunk.send(socket)?;
            if progress {
                eprint!("\rimport: {imported} addresses so far");
            }
        }
    }
    imported += chunk.send(socket)?;
    if progress {
        eprint!("\r\x1b[K");
    }
    print(&format!("{imported} addresses imported\n"));
    if bad > 0 {
        if bad > SHOWN_ERRORS {
            eprintln!("{name}: {} more bad lines", bad - SHOWN_ERRORS);
        }
        return Err(Failure::Data(format!(
            "{name}: {bad} lines could not be read and were skipped"
        )));
    }
    Ok(())
}

/// Import entries waiting to be sent.
#[derive(Default)]
struct Chunk {
    entries: Vec<ImportEntry>,
    bytes: usize,
}

impl Chunk {
    fn push(&mut self, line: ImportLine) {
        self.bytes += line.address.len() + line.reason.len() + 64;
        self.entries.push(ImportEntry {
            address: line.address,
            class: line.class,
            reason: (!line.reason.is_empty()).then_some(line.reason),
        });
    }

    fn is_full(&self) -> bool {
        self.entries.len() >= IMPORT_CHUNK.min(MAX_IMPORT_ENTRIES)
            || self.bytes >= IMPORT_CHUNK_BYTES
    }

    /// Sends the chunk; returns how many entries it held.
    fn send(&mut self, socket: &Path) -> Result<usize, Failure> {
        if self.entries.is_empty() {
            return Ok(0);
        }
        let request = ImportRequest {
            entries: std::mem::take(&mut self.entries),
        };
        self.bytes = 0;
        let body = serde_json::to_vec(&request).map_err(unexpected)?;
        client::request(socket, "POST", "/suppression", Some(&body))?;
        Ok(request.entries.len())
    }
}

const LIST_HEADER: &str = "-Address-------------------------- -Class------------ -Since-------------- -Source- -Reply/Reason-\n";

/// One line of `suppression list`.
fn list_line(entry: &SuppressionView) -> String {
    let since = if entry.expired {
        format!("{} (expired)", entry.time)
    } else {
        entry.time.clone()
    };
    format!(
        "{:<34} {:<18} {:<20} {:<8} {}\n",
        entry.address,
        entry.class.as_str(),
        since,
        entry.source.as_str(),
        entry.reply
    )
}

/// `suppression show`.
fn entry_page(entry: &SuppressionView) -> String {
    let mut page = format!(
        "Address: {}\nClass:   {}\nSince:   {}\nSource:  {}\nReply:   {}\n",
        entry.address,
        entry.class.as_str(),
        entry.time,
        entry.source.as_str(),
        if entry.reply.is_empty() {
            "-"
        } else {
            &entry.reply
        },
    );
    if entry.expired {
        page.push_str("Expired: older than suppression.expire_after; no longer applied\n");
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suppression::Source;

    #[test]
    fn text_output() {
        let mut entry = SuppressionView {
            address: "user@example.org".into(),
            class: crate::bounce::BounceClass::InvalidRecipient,
            reply: "550 5.1.1 no such user".into(),
            time: "2026-11-23T09:01:56Z".into(),
            source: Source::Bounce,
            expired: false,
        };
        let line = list_line(&entry);
        assert!(line.starts_with("user@example.org "), "{line}");
        assert!(line.contains(" invalid_recipient "), "{line}");
        assert!(
            line.contains(" 2026-11-23T09:01:56Z bounce   550 5.1.1"),
            "{line}"
        );
        let page = entry_page(&entry);
        assert!(page.contains("Class:   invalid_recipient\n"), "{page}");
        assert!(!page.contains("Expired"));
        entry.expired = true;
        entry.reply.clear();
        assert!(list_line(&entry).contains("(expired)"));
        let page = entry_page(&entry);
        assert!(
            page.contains("Reply:   -\n") && page.contains("Expired:"),
            "{page}"
        );
    }
}
