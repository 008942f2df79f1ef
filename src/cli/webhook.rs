//! `relayq webhook status|test`: the webhooks of the running daemon, as
//! requests to its control API. Exit codes (sysexits): 0 done (`test`: the
//! receiver answered 2xx), 64 usage or an unknown webhook, 69 daemon not
//! available or (`test`) the receiver did not answer 2xx, 77 no permission.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::client::{self, ClientError};
use super::{EXIT_UNAVAILABLE, EXIT_USAGE, load_config};
use crate::control::http::percent_encode;
use crate::webhook::{TestOutcome, WebhookStatus};

#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Configuration file, to find the control socket (default:
    /// /etc/relayq/relayq.toml if present, else built-in defaults).
    #[arg(long, short = 'c', env = "RELAYQ_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: WebhookCommand,
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Per webhook: backlog, oldest event, last success and error, posts.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send one {"type":"test"} event to a webhook now and print the answer.
    Test {
        /// The webhook's name in the configuration.
        name: String,
    },
}

pub fn run(args: WebhookArgs) -> ExitCode {
    let config = match load_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("relayq: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let socket = config.control.socket;
    match args.command {
        WebhookCommand::Status { json } => {
            match client::request(&socket, "GET", "/webhooks", None) {
                Ok(body) if json => {
                    print!("{}", String::from_utf8_lossy(&body));
                    ExitCode::SUCCESS
                }
                Ok(body) => match serde_json::from_slice::<Vec<WebhookStatus>>(&body) {
                    Ok(hooks) => {
                        print!("{}", describe(&hooks));
                        ExitCode::SUCCESS
                    }
                    Err(error) => failed(&ClientError::Protocol(error.to_string())),
                },
                Err(error) => failed(&error),
            }
        }
        WebhookCommand::Test { name } => {
            let target = format!("/webhooks/{}/test", percent_encode(&name));
            let outcome = client::request(&socket, "POST", &target, None).and_then(|body| {
                serde_json::from_slice::<TestOutcome>(&body)
                    .map_err(|error| ClientError::Protocol(error.to_string()))
            });
            match outcome {
                Ok(outcome) => {
                    let taken = outcome
                        .status
                        .is_some_and(|status| (200..300).contains(&status));
                    match outcome.status {
                        Some(status) => println!("{name}: HTTP {status}"),
                        None => println!("{name}: no answer"),
                    }
                    if !outcome.answer.is_empty() {
                        println!("{}", outcome.answer.trim_end());
                    }
                    ExitCode::from(if taken { 0 } else { EXIT_UNAVAILABLE })
                }
                Err(ClientError::Refused {
                    status: 404,
                    message,
                }) => {
                    eprintln!("relayq webhook: {message}");
                    ExitCode::from(EXIT_USAGE)
                }
                Err(error) => failed(&error),
            }
        }
    }
}

fn failed(error: &ClientError) -> ExitCode {
    eprintln!("relayq webhook: {error}");
    ExitCode::from(error.exit_code())
}

/// The text form of `relayq webhook status`.
fn describe(hooks: &[WebhookStatus]) -> String {
    if hooks.is_empty() {
        return "no webhooks configured\n".to_owned();
    }
    let mut text = String::new();
    for hook in hooks {
        text.push_str(&format!("{} → {}\n", hook.name, hook.url));
        text.push_str(&format!("  events:      {}\n", hook.events.join(", ")));
        let oldest = hook
            .oldest_event_age
            .map(|age| format!(" (oldest {age:.0}s)"))
            .unwrap_or_default();
        text.push_str(&format!("  backlog:     {}{oldest}\n", hook.backlog));
        text.push_str(&format!(
            "  posts:       {} ({} failed), {} events dropped\n",
            hook.posts, hook.failures, hook.dropped
        ));
        text.push_str(&format!(
            "  last success: {}\n",
            hook.last_success.as_deref().unwrap_or("never")
        ));
        if let (Some(error), Some(at)) = (&hook.last_error, &hook.last_error_time) {
            text.push_str(&format!("  last error:  {at}: {error}\n"));
        }
    }
    text
}
