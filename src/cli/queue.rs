//! `relayq queue …`: list, show, stats, tail, and the operations, as
//! requests to the daemon's control API. Exit codes (sysexits): 0 done,
//! 64 usage, 69 daemon not available, 75 not yet (the queue is being
//! rebuilt after a start: try again), 77 no permission on the socket.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::client::{self, ClientError};
use super::{EXIT_TEMPFAIL, EXIT_USAGE, format, load_config};
use crate::control::http::percent_encode;
use crate::control::view::{MessageDetail, MessageView, OperationReport, StatsView};
use crate::queue::RebuildProgress;

/// How long `tail` keeps trying to reconnect after the daemon went away.
const RECONNECT_FOR: Duration = Duration::from_secs(60);
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// Configuration file, to find the control socket (default:
    /// /etc/relayq/relayq.toml if present, else built-in defaults).
    #[arg(long, short = 'c', env = "RELAYQ_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// One entry per queued message (like Postfix's mailq).
    List {
        /// Only this lane (high, low).
        #[arg(long)]
        lane: Option<String>,
        /// Only this state (ready, active, deferred, held).
        #[arg(long)]
        state: Option<String>,
        /// Only messages with an open recipient at this domain.
        #[arg(long)]
        domain: Option<String>,
        /// Only messages older than this ("90s", "1h", "2d").
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<Duration>,
        /// Stop after this many messages.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Envelope, state, recipients and headers of one message.
    Show {
        id: String,
        /// Print the message too.
        #[arg(long)]
        body: bool,
    },
    /// Counts by lane × state, and by destination × age.
    Stats,
    /// Follow queue events live.
    Tail,
    /// Make deferred mail due now.
    Retry(Selection),
    /// No delivery attempts until released.
    Hold(Selection),
    /// Release held mail: due now.
    Release(Selection),
    /// Remove from the queue without a bounce.
    Delete(Selection),
    /// Give up now, with a bounce (DSN) to the sender.
    Bounce(Selection),
}

/// Which messages an operation applies to: ids, or `--all` / `--domain D`
/// narrowed by `--lane`, `--state` and `--older-than`.
#[derive(Debug, Args)]
pub struct Selection {
    /// Queue ids.
    ids: Vec<String>,
    /// Every message in the queue (never implied).
    #[arg(long)]
    all: bool,
    /// Messages with an open recipient at this domain.
    #[arg(long)]
    domain: Option<String>,
    /// With --all or --domain: only this lane (high, low).
    #[arg(long)]
    lane: Option<String>,
    /// With --all or --domain: only this state (ready, active, deferred, held).
    #[arg(long)]
    state: Option<String>,
    /// With --all or --domain: only messages older than this ("90s", "1h", "2d").
    #[arg(long, value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    /// With --json: list the ids of a bulk operation, not only its counts.
    #[arg(long)]
    ids_in_report: bool,
}

/// Runs a `queue` command; prints its output and returns the exit code.
pub fn run(args: QueueArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("relayq: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let socket = config.control.socket;
    let result = match args.command {
        QueueCommand::List {
            lane,
            state,
            domain,
            older_than,
            limit,
        } => {
            let mut query = Vec::new();
            let mut add = |name: &str, value: Option<String>| {
                if let Some(value) = value {
                    query.push(format!("{name}={}", percent_encode(&value)));
                }
            };
            add("lane", lane);
            add("state", state);
            add("domain", domain);
            add(
                "older_than",
                older_than.map(|age| age.as_secs().to_string()),
            );
            add("limit", limit.map(|limit| limit.to_string()));
            let target = if query.is_empty() {
                "/queue".to_owned()
            } else {
                format!("/queue?{}", query.join("&"))
            };
            list(&socket, &target, args.json)
        }
        QueueCommand::Show { id, body } => {
            let target = format!(
                "/queue/{}{}",
                percent_encode(&id),
                if body { "?body=1" } else { "" }
            );
            get::<MessageDetail>(&socket, &target, args.json, |detail| {
                let mut text = format::show(detail);
                if let Some(message) = &detail.body {
                    text.push_str("Message:\n");
                    text.push_str(message);
                }
                text
            })
        }
        QueueCommand::Stats => get::<StatsView>(&socket, "/stats", args.json, format::stats),
        QueueCommand::Tail => tail(&socket, args.json),
        QueueCommand::Retry(selection) => {
            operate(&socket, "retry", "retry requested", selection, args.json)
        }
        QueueCommand::Hold(selection) => operate(&socket, "hold", "held", selection, args.json),
        QueueCommand::Release(selection) => {
            operate(&socket, "release", "released", selection, args.json)
        }
        QueueCommand::Delete(selection) => {
            operate(&socket, "delete", "deleted", selection, args.json)
        }
        QueueCommand::Bounce(selection) => {
            operate(&socket, "bounce", "bounced", selection, args.json)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("relayq queue: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Client(error)) => {
            eprintln!("relayq queue: {error}");
            // 503: the startup rebuild has not read the messages yet.
            ExitCode::from(match error {
                ClientError::Refused { status: 503, .. } => EXIT_TEMPFAIL,
                error => error.exit_code(),
            })
        }
    }
}

enum Failure {
    Usage(String),
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        Failure::Client(error)
    }
}

fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// GETs `target` and prints it: the JSON as the daemon sent it, or as text.
fn get<T: serde::de::DeserializeOwned>(
    socket: &Path,
    target: &str,
    json: bool,
    text: impl Fn(&T) -> String,
) -> Result<(), Failure> {
    let body = client::request(socket, "GET", target, None)?;
    if json {
        print(&String::from_utf8_lossy(&body));
        return Ok(());
    }
    let value: T = serde_json::from_slice(&body)
        .map_err(|error| ClientError::Protocol(format!("unexpected answer: {error}")))?;
    print(&text(&value));
    Ok(())
}

/// `GET /queue`, printed as it arrives: the JSON array as the daemon sends
/// it, or `mailq` text entry by entry. Output that can no longer be written
/// (`relayq queue list | head`) ends the request, which stops the daemon's
/// work.
fn list(socket: &Path, target: &str, json: bool) -> Result<(), Failure> {
    if !json {
        rebuild_note(socket);
    }
    let mut body = client::open_stream(socket, "GET", target, None, Some(client::REPLY_TIMEOUT))?;
    let mut stdout = std::io::stdout().lock();
    if json {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let read = body
                .read(&mut buffer)
                .map_err(|error| ClientError::Protocol(error.to_string()))?;
            if read == 0 {
                let _ = stdout.flush();
                return Ok(());
            }
            if stdout.write_all(&buffer[..read]).is_err() {
                return Ok(());
            }
        }
    }
    let mut bytes = 0u64;
    let mut count = 0usize;
    let mut closed = false;
    let parsed = each_in_array(&mut body, |message: MessageView| {
        let mut text = String::new();
        if count == 0 {
            text.push_str(&format::list_header());
        }
        text.push_str(&format::list_entry(&message));
        bytes += message.size;
        count += 1;
        closed = stdout.write_all(text.as_bytes()).is_err();
        !closed
    });
    if closed {
        return Ok(());
    }
    parsed.map_err(|error| ClientError::Protocol(format!("unexpected answer: {error}")))?;
    let footer = if count == 0 {
        format::list_empty().to_owned()
    } else {
        format::list_footer(bytes, count)
    };
    let _ = stdout.write_all(footer.as_bytes());
    let _ = stdout.flush();
    Ok(())
}

/// While the daemon rebuilds its queue after a start, says so on stderr:
/// a list then shows only the messages it has read. Best effort (an older
/// daemon has no `GET /rebuild`).
fn rebuild_note(socket: &Path) {
    let Ok(body) = client::request(socket, "GET", "/rebuild", None) else {
        return;
    };
    if let Ok(progress) = serde_json::from_slice::<RebuildProgress>(&body)
        && progress.in_progress
    {
        eprintln!("relayq queue: {progress}; the list shows only the messages read so far");
    }
}

/// Reads a JSON array from `reader` one element at a time, calling `each`
/// for each until it returns false.
pub(super) fn each_in_array<T: serde::de::DeserializeOwned>(
    reader: impl Read,
    each: impl FnMut(T) -> bool,
) -> Result<(), serde_json::Error> {
    use serde::de::{Deserializer, SeqAccess, Visitor};

    struct Elements<T, F>(F, std::marker::PhantomData<T>);

    impl<'de, T: serde::de::DeserializeOwned, F: FnMut(T) -> bool> Visitor<'de> for Elements<T, F> {
        type Value = ();

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            formatter.write_str("an array")
        }

        fn visit_seq<A: SeqAccess<'de>>(mut self, mut sequence: A) -> Result<(), A::Error> {
            while let Some(element) = sequence.next_element::<T>()? {
                if !(self.0)(element) {
                    // Nobody reads on: stop without reading the rest.
                    return Ok(());
                }
            }
            Ok(())
        }
    }

    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    match deserializer.deserialize_seq(Elements(each, std::marker::PhantomData)) {
        // An early stop leaves the array unfinished: not an error.
        Err(error) if error.is_eof() => Ok(()),
        result => result,
    }
}

fn operate(
    socket: &Path,
    operation: &str,
    done_word: &str,
    selection: Selection,
    json: bool,
) -> Result<(), Failure> {
    let chosen = usize::from(!selection.ids.is_empty())
        + usize::from(selection.all)
        + usize::from(selection.domain.is_some());
    if chosen != 1 {
        return Err(Failure::Usage(format!(
            "{operation}: give queue ids, --all or --domain D (--lane, --state and --older-than narrow the last two)"
        )));
    }
    let filtered =
        selection.lane.is_some() || selection.state.is_some() || selection.older_than.is_some();
    if filtered && !selection.ids.is_empty() {
        return Err(Failure::Usage(format!(
            "{operation}: --lane, --state and --older-than go with --all or --domain, not with ids"
        )));
    }
    for id in &selection.ids {
        if id.parse::<relayq_spool::QueueId>().is_err() {
            return Err(Failure::Usage(format!("not a queue id: {id}")));
        }
    }
    if !selection.ids.is_empty() {
        let request = serde_json::json!({ "ids": selection.ids });
        let body = client::request(
            socket,
            "POST",
            &format!("/queue/{operation}"),
            Some(request.to_string().as_bytes()),
        )?;
        return print_report(&body, done_word, json);
    }
    let mut request = serde_json::json!({ "report_ids": selection.ids_in_report });
    if selection.all {
        request["all"] = true.into();
    }
    if let Some(domain) = &selection.domain {
        request["domain"] = domain.as_str().into();
    }
    if let Some(lane) = &selection.lane {
        request["lane"] = lane.as_str().into();
    }
    if let Some(state) = &selection.state {
        request["state"] = state.as_str().into();
    }
    if let Some(age) = selection.older_than {
        request["older_than"] = age.as_secs().into();
    }
    // Progress lines keep a long operation's connection alive; they are
    // shown only on a terminal.
    let show_progress = std::io::stderr().is_terminal();
    let mut report = None;
    client::stream_request_lines(
        socket,
        "POST",
        &format!("/queue/{operation}?progress=1"),
        Some(request.to_string().as_bytes()),
        Some(client::REPLY_TIMEOUT),
        |line| {
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(line) else {
                return true;
            };
            match value.get("progress") {
                Some(progress) => {
                    if show_progress {
                        let done = progress.get("done").and_then(|n| n.as_u64()).unwrap_or(0);
                        eprint!("\r{operation}: {done} messages so far");
                    }
                }
                None => report = Some(line.to_vec()),
            }
            true
        },
    )?;
    if show_progress {
        eprint!("\r\x1b[K");
    }
    let report = report.ok_or_else(|| {
        ClientError::Protocol("the daemon ended the operation without a report".to_owned())
    })?;
    print_report(&report, done_word, json)
}

fn print_report(body: &[u8], done_word: &str, json: bool) -> Result<(), Failure> {
    if json {
        let mut text = String::from_utf8_lossy(body).into_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        print(&text);
        return Ok(());
    }
    let report: OperationReport = serde_json::from_slice(body)
        .map_err(|error| ClientError::Protocol(format!("unexpected answer: {error}")))?;
    print(&format::report(done_word, &report));
    Ok(())
}

/// Follows `/events`; when the daemon goes away, reconnects with backoff for
/// up to `RECONNECT_FOR`.
fn tail(socket: &Path, json: bool) -> Result<(), Failure> {
    let target = if json {
        "/events"
    } else {
        "/events?format=text"
    };
    let mut connected_once = false;
    let mut failing_since: Option<Instant> = None;
    let mut backoff = Duration::from_millis(250);
    loop {
        let mut live = false;
        let result = client::stream_lines(socket, target, |line| {
            live = true;
            if !line.is_empty() {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(line);
                let _ = stdout.write_all(b"\n");
                let _ = stdout.flush();
            }
            true
        });
        if live {
            connected_once = true;
            failing_since = None;
            backoff = Duration::from_millis(250);
        }
        match result {
            Err(error @ (ClientError::Unavailable { .. } | ClientError::Protocol(_)))
                if connected_once =>
            {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= RECONNECT_FOR {
                    return Err(error.into());
                }
                if live {
                    eprintln!("relayq queue tail: connection to the daemon lost; reconnecting");
                }
            }
            Ok(()) if connected_once => {
                eprintln!("relayq queue tail: the daemon is stopping; reconnecting");
                failing_since.get_or_insert_with(Instant::now);
            }
            Ok(()) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
    }
}
