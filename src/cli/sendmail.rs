//! `relayq sendmail` (and relayq invoked as `sendmail`): the drop-in for
//! `/usr/sbin/sendmail` that PHP's `mail()`, cron and scripts call.
//!
//! It reads a message on stdin, submits it to the first listener over SMTP
//! and, when the listener cannot be reached or answers 4xx, leaves it in the
//! maildrop for the daemon to import (`crate::maildrop`). Exit codes
//! (sysexits.h): 0 accepted or safely in the maildrop; 64 usage;
//! 65 a malformed message or a 5xx refusal; 67 every recipient refused at
//! RCPT as unavailable (550/551: unknown or suppressed); 75 neither
//! listener nor maildrop took it.
//!
//! Parsing (arguments, the message) is pure; [`run`] does the I/O.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod message;

pub use message::{Prepared, ReadError, prepare, read_message};

use crate::config::Config;
use crate::maildrop::{self, Dropped};
use crate::submission::{self, Outcome, Submission, Timeouts};

pub const EXIT_OK: u8 = 0;
/// EX_USAGE: bad arguments or configuration.
pub const EXIT_USAGE: u8 = 64;
/// EX_DATAERR: a malformed message, or a 5xx refusal.
pub const EXIT_DATAERR: u8 = 65;
/// EX_NOUSER: every recipient was refused at RCPT as unavailable (550, 551).
pub const EXIT_NOUSER: u8 = 67;
/// EX_TEMPFAIL: neither the listener nor the maildrop took the message.
pub const EXIT_TEMPFAIL: u8 = 75;

/// Configuration used when no `-C`/`--config` is given and it exists.
const SYSTEM_CONFIG: &str = "/etc/relayq/relayq.toml";
/// How long to wait for a TCP connection to the local listener.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: sendmail [-t] [-i] [-f sender] [-F full-name] [-N never|success,failure,delay] \
[-C config] [recipient ...]\n       sendmail -bp   (the queue, as `relayq queue list`)";

/// What the command line asks for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// `-t`: recipients from To, Cc and Bcc, besides those on the command line.
    pub extract_recipients: bool,
    /// `-i`/`-oi`: a line with a single dot does not end the message.
    pub ignore_dots: bool,
    /// `-f`/`-r`: the envelope sender; `Some("")` for `<>`.
    pub sender: Option<String>,
    /// `-F`: the full name for an added `From:`.
    pub full_name: Option<String>,
    /// `-N`: the NOTIFY value, upper case (`NEVER`, `SUCCESS,FAILURE`).
    pub notify: Option<String>,
    pub recipients: Vec<String>,
    /// `-C FILE` or `--config FILE`.
    pub config: Option<PathBuf>,
    /// `-v`: say what happened on stderr.
    pub verbose: bool,
    /// `-bp`, or invoked as `mailq`.
    pub list_queue: bool,
    /// `--help`.
    pub help: bool,
}

/// What `main` should do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Exit(u8),
    /// Show the queue (`relayq queue list`), with this configuration.
    ListQueue {
        config: Option<PathBuf>,
    },
}

/// Parses sendmail's traditional arguments (without the program name).
/// Options and recipients may be mixed; `--` ends the options.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Options, String> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    let mut only_recipients = false;
    while let Some(arg) = args.next() {
        if only_recipients || !arg.starts_with('-') || arg == "-" {
            add_recipients(&mut options.recipients, &arg)?;
            continue;
        }
        if arg == "--" {
            only_recipients = true;
            continue;
        }
        if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=') {
                Some(("config", path)) => options.config = Some(PathBuf::from(path)),
                None if long == "config" => {
                    let path = args.next().ok_or("--config needs a file")?;
                    options.config = Some(PathBuf::from(path));
                }
                None if long == "help" => options.help = true,
                _ => return Err(format!("unknown option {arg}")),
            }
            continue;
        }
        let cluster = &arg[1..];
        for (index, letter) in cluster.char_indices() {
            let rest = &cluster[index + letter.len_utf8()..];
            match letter {
                't' => options.extract_recipients = true,
                'i' => options.ignore_dots = true,
                'v' => options.verbose = true,
                // -m (me too), -n (no aliasing), -U (initial submission):
                // nothing to do for a relay.
                'm' | 'n' | 'U' => {}
                'o' => {
                    // -oi is -i; -odi, -odb, -oem, -oee, -oQ..., -oX...: ignored.
                    if rest == "i" {
                        options.ignore_dots = true;
                    } else if rest.is_empty() {
                        return Err("-o needs an option letter, as in -oi".into());
                    }
                    break;
                }
                'b' => {
                    match rest {
                        "p" => options.list_queue = true,
                        "m" => {}
                        "" => return Err("-b needs a mode, as in -bm or -bp".into()),
                        mode => return Err(format!("-b{mode} is not supported")),
                    }
                    break;
                }
                // -q (run the queue), -d (debug), -e (error mode): ignored.
                'q' | 'd' | 'e' => break,
                'f' | 'r' | 'F' | 'N' | 'C' | 'A' | 'B' | 'h' | 'L' | 'O' | 'R' | 'V' | 'X' => {
                    let value = if rest.is_empty() {
                        args.next()
                            .ok_or_else(|| format!("-{letter} needs a value"))?
                    } else {
                        rest.to_owned()
                    };
                    match letter {
                        'f' | 'r' => options.sender = Some(parse_sender(&value)?),
                        'F' => options.full_name = Some(value),
                        'N' => options.notify = Some(parse_notify(&value)?),
                        'C' => options.config = Some(PathBuf::from(value)),
                        // -Am/-Ac, -B8BITMIME, -h hops, -L tag, -O opt, -R ret,
                        // -V envid, -X log: accepted and ignored.
                        _ => {}
                    }
                    break;
                }
                other => return Err(format!("unknown option -{other}")),
            }
        }
    }
    Ok(options)
}

/// A sender from `-f`: angle brackets optional, `<>` or empty for the null
/// reverse-path.
fn parse_sender(value: &str) -> Result<String, String> {
    let value = value.trim();
    let inner = value
        .strip_prefix('<')
        .and_then(|rest| rest.strip_suffix('>'))
        .unwrap_or(value);
    if inner
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
    {
        return Err(format!("invalid sender address {value:?}"));
    }
    Ok(inner.to_owned())
}

/// Recipients from one argument: `a@x`, `<a@x>`, or `a@x, b@y`.
fn add_recipients(recipients: &mut Vec<String>, arg: &str) -> Result<(), String> {
    for part in arg.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let address = match (part.find('<'), part.rfind('>')) {
            (Some(open), Some(close)) if open < close => &part[open + 1..close],
            _ => part,
        };
        if address.is_empty()
            || address
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
        {
            return Err(format!("invalid recipient address {part:?}"));
        }
        push_unique(recipients, address.to_owned());
    }
    Ok(())
}

fn push_unique(recipients: &mut Vec<String>, address: String) {
    if !recipients.contains(&address) {
        recipients.push(address);
    }
}

/// RFC 3461 NOTIFY: `never`, or a list of `success`, `failure`, `delay`.
fn parse_notify(value: &str) -> Result<String, String> {
    let upper = value.trim().to_ascii_uppercase();
    let words: Vec<&str> = upper.split(',').map(str::trim).collect();
    let valid = if words.contains(&"NEVER") {
        words.len() == 1
    } else {
        words
            .iter()
            .all(|word| matches!(*word, "SUCCESS" | "FAILURE" | "DELAY"))
    };
    if !valid {
        return Err(format!(
            "-N {value}: expected never, or a list of success, failure and delay"
        ));
    }
    Ok(words.join(","))
}

/// The invoking user's login name: `$USER`, `$LOGNAME`, else the passwd
/// entry of the real uid, else `nobody`.
fn login_name() -> String {
    let plausible = |name: &str| {
        !name.is_empty()
            && name
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"._-+".contains(&byte))
    };
    for variable in ["USER", "LOGNAME"] {
        if let Ok(name) = std::env::var(variable)
            && plausible(&name)
        {
            return name;
        }
    }
    let uid = rustix::process::getuid().as_raw();
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            let mut parts = line.split(':');
            let (Some(name), _, Some(entry_uid)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if entry_uid == uid.to_string() && plausible(name) {
                return name.to_owned();
            }
        }
    }
    "nobody".to_owned()
}

fn load_config(explicit: Option<&Path>) -> Result<Config, crate::config::ConfigError> {
    let from_env = std::env::var_os("RELAYQ_CONFIG")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from);
    match explicit.map(Path::to_path_buf).or(from_env) {
        Some(path) => Config::load(&path),
        None if Path::new(SYSTEM_CONFIG).exists() => Config::load(Path::new(SYSTEM_CONFIG)),
        None => Ok(Config::builtin()),
    }
}

/// Where to submit: the first listener, with an unspecified address
/// (`0.0.0.0`, `::`) replaced by loopback.
fn submission_address(config: &Config) -> SocketAddr {
    let mut address = config.listeners[0].address;
    match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => address.set_ip(Ipv4Addr::LOCALHOST.into()),
        IpAddr::V6(ip) if ip.is_unspecified() => address.set_ip(Ipv6Addr::LOCALHOST.into()),
        _ => {}
    }
    address
}

/// `relayq sendmail ARGS` / `sendmail ARGS`: parses, reads stdin, submits.
pub fn run(args: Vec<String>) -> Action {
    let options = match parse_args(args) {
        Ok(options) => options,
        Err(reason) => {
            eprintln!("sendmail: {reason}\n{USAGE}");
            return Action::Exit(EXIT_USAGE);
        }
    };
    if options.help {
        println!("{USAGE}");
        return Action::Exit(EXIT_OK);
    }
    if options.list_queue {
        return Action::ListQueue {
            config: options.config,
        };
    }
    Action::Exit(send(&options))
}

fn send(options: &Options) -> u8 {
    let config = match load_config(options.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sendmail: {error}");
            return EXIT_USAGE;
        }
    };
    if !options.extract_recipients && options.recipients.is_empty() {
        eprintln!("sendmail: no recipients given (name them, or use -t)\n{USAGE}");
        return EXIT_USAGE;
    }
    let limit = config.spool.max_message_size;
    let raw = match read_message(io::stdin().lock(), options.ignore_dots, limit) {
        Ok(raw) => raw,
        Err(ReadError::TooBig) => {
            eprintln!("sendmail: message larger than spool.max_message_size ({limit} octets)");
            return EXIT_DATAERR;
        }
        Err(ReadError::Io(error)) => {
            eprintln!("sendmail: cannot read the message: {error}");
            return EXIT_TEMPFAIL;
        }
    };
    let user = login_name();
    let sender = options.sender.clone().unwrap_or_else(|| user.clone());
    let qualify = |address: &str| {
        if address.contains('@') {
            address.to_owned()
        } else {
            format!("{address}@{}", config.smtp.origin)
        }
    };
    let from_address = qualify(if sender.is_empty() { &user } else { &sender });
    let prepared = match prepare(
        &raw,
        options.extract_recipients,
        options.full_name.as_deref(),
        &from_address,
    ) {
        Ok(prepared) => prepared,
        Err(reason) => {
            eprintln!("sendmail: malformed message: {reason}");
            return EXIT_DATAERR;
        }
    };
    if prepared.message.len() as u64 > limit {
        eprintln!("sendmail: message larger than spool.max_message_size ({limit} octets)");
        return EXIT_DATAERR;
    }
    let mut recipients = prepared.header_recipients;
    for recipient in &options.recipients {
        push_unique(&mut recipients, recipient.clone());
    }
    if recipients.is_empty() {
        eprintln!("sendmail: no recipients found in To, Cc or Bcc");
        return EXIT_DATAERR;
    }
    let dropped = Dropped {
        submission: Submission {
            sender,
            recipients,
            notify: options.notify.clone(),
        },
        user: Some(user),
        message: prepared.message,
    };

    let address = submission_address(&config);
    let outcome = submit_over_tcp(address, &dropped);
    match outcome {
        Outcome::Accepted(reply) => {
            if options.verbose {
                eprintln!("sendmail: accepted by {address}: {reply}");
            }
            EXIT_OK
        }
        Outcome::Permanent(reason) => {
            eprintln!("sendmail: refused by {address}: {reason}");
            EXIT_DATAERR
        }
        Outcome::NoRecipients(reason) => {
            eprintln!("sendmail: refused by {address}: {reason}");
            EXIT_NOUSER
        }
        Outcome::Temporary(reason) => {
            let directory = &config.control.maildrop;
            match maildrop::write(directory, &dropped) {
                Ok(path) => {
                    if options.verbose {
                        eprintln!(
                            "sendmail: {address} unavailable ({reason}); left in the maildrop as {}",
                            path.display()
                        );
                    }
                    EXIT_OK
                }
                Err(error) => {
                    eprintln!(
                        "sendmail: {address} unavailable ({reason}), and cannot write to the maildrop {}: {error}",
                        directory.display()
                    );
                    EXIT_TEMPFAIL
                }
            }
        }
    }
}

fn submit_over_tcp(address: SocketAddr, dropped: &Dropped) -> Outcome {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return Outcome::Temporary(format!("cannot start the runtime: {error}")),
    };
    runtime.block_on(async {
        let connect = tokio::net::TcpStream::connect(address);
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                submission::submit(
                    stream,
                    "localhost",
                    &dropped.submission,
                    &dropped.message,
                    Timeouts::default(),
                )
                .await
            }
            Ok(Err(error)) => Outcome::Temporary(format!("cannot connect: {error}")),
            Err(_) => Outcome::Temporary("timeout connecting".to_owned()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Options, String> {
        parse_args(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn php_and_cron_command_lines() {
        let php = args("-t -i -f app@example.com").unwrap();
        assert!(php.extract_recipients && php.ignore_dots);
        assert_eq!(php.sender.as_deref(), Some("app@example.com"));
        let cron = args("-FCronDaemon -i -odi -oem -oi -t").unwrap();
        assert_eq!(cron.full_name.as_deref(), Some("CronDaemon"));
        assert!(cron.extract_recipients && cron.ignore_dots);
        let attached =
            args("-ti -fapp@example.com -N success,failure a@x,<b@y> -B8BITMIME -Am").unwrap();
        assert!(attached.extract_recipients && attached.ignore_dots);
        assert_eq!(attached.sender.as_deref(), Some("app@example.com"));
        assert_eq!(attached.notify.as_deref(), Some("SUCCESS,FAILURE"));
        assert_eq!(attached.recipients, ["a@x", "b@y"]);
        assert_eq!(args("-f <>").unwrap().sender.as_deref(), Some(""));
        assert!(args("-bp").unwrap().list_queue);
        assert_eq!(args("-oi user").unwrap().recipients, ["user"]);
        assert!(!args("-odi user").unwrap().ignore_dots);
    }

    #[test]
    fn usage_errors() {
        assert!(args("-x").is_err());
        assert!(args("-f").is_err());
        assert!(args("-N sometimes").is_err());
        assert!(args("-N never,success").is_err());
        assert!(args("-bs").is_err());
        assert!(args("--frobnicate").is_err());
    }
}
