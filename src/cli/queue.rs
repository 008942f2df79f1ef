//! `relayq queue …`: list, show, stats, tail, and the operations, as
//! requests to the daemon's control API. Exit codes (sysexits): 0 done,
//! 64 usage, 69 daemon not available, 77 no permission on the socket.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use super::client::{self, ClientError};
use super::{EXIT_NOPERM, EXIT_SOFTWARE, EXIT_UNAVAILABLE, EXIT_USAGE, format, load_config};
use crate::control::http::percent_encode;
use crate::control::view::{MessageDetail, MessageView, OperationReport, StatsView};

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
    Bounce {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct Selection {
    /// Queue ids.
    ids: Vec<String>,
    /// Every message in the queue (never implied).
    #[arg(long)]
    all: bool,
    /// Messages with an open recipient at this domain (retry only).
    #[arg(long)]
    domain: Option<String>,
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
            let target = if query.is_empty() {
                "/queue".to_owned()
            } else {
                format!("/queue?{}", query.join("&"))
            };
            get::<Vec<MessageView>>(&socket, &target, args.json, |messages| {
                format::list(messages)
            })
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
        QueueCommand::Bounce { ids } => operate(
            &socket,
            "bounce",
            "bounced",
            Selection {
                ids,
                all: false,
                domain: None,
            },
            args.json,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("relayq queue: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Client(error)) => {
            eprintln!("relayq queue: {error}");
            ExitCode::from(match error {
                ClientError::Unavailable { .. } => EXIT_UNAVAILABLE,
                ClientError::Permission { .. } => EXIT_NOPERM,
                ClientError::Refused { status, .. } if (400..500).contains(&status) => EXIT_USAGE,
                ClientError::Refused { .. } | ClientError::Protocol(_) => EXIT_SOFTWARE,
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
            "{operation}: give queue ids{}",
            match operation {
                "retry" => ", --all or --domain D",
                _ => " or --all",
            }
        )));
    }
    if selection.domain.is_some() && operation != "retry" {
        return Err(Failure::Usage(format!(
            "{operation}: --domain is for retry only"
        )));
    }
    for id in &selection.ids {
        if id.parse::<relayq_spool::QueueId>().is_err() {
            return Err(Failure::Usage(format!("not a queue id: {id}")));
        }
    }
    let request = if selection.all {
        serde_json::json!({ "all": true })
    } else if let Some(domain) = selection.domain {
        serde_json::json!({ "domain": domain })
    } else {
        serde_json::json!({ "ids": selection.ids })
    };
    let body = client::request(
        socket,
        "POST",
        &format!("/queue/{operation}"),
        Some(request.to_string().as_bytes()),
    )?;
    if json {
        print(&String::from_utf8_lossy(&body));
        return Ok(());
    }
    let report: OperationReport = serde_json::from_slice(&body)
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
