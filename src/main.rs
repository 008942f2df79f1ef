//! The `relayq` command: `serve` runs the daemon, `check-config` validates a
//! configuration file, `queue` (or `mailq`), `suppression` and `webhook` talk
//! to the running daemon, `sendmail` submits a message (also when invoked as
//! `sendmail`), `reload` makes the daemon re-read its configuration,
//! `completions` prints a shell completion script.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use relayq::cli::{generate, sendmail};
use relayq::config::Config;
use relayq::smtp::credentials;

/// sysexits.h EX_USAGE / EX_CONFIG-style exit for bad configuration.
const EXIT_USAGE: u8 = 64;
/// sysexits.h EX_SOFTWARE: the daemon failed at run time.
const EXIT_SOFTWARE: u8 = 70;
/// sysexits.h EX_IOERR: output could not be written.
const EXIT_IOERR: u8 = 74;

/// Configuration used by `serve` when no `--config` is given and it exists.
const SYSTEM_CONFIG: &str = "/etc/relayq/relayq.toml";

#[derive(Parser)]
#[command(
    name = "relayq",
    version,
    about = "Local SMTP relay and durable outbound mail spooler",
    after_long_help = "Each subcommand has its own page: relayq-serve(8), \
relayq-queue(8), relayq-sendmail(8), ... From the Debian package: the \
configuration is /etc/relayq/relayq.toml, the queue /var/spool/relayq, \
the documentation /usr/share/doc/relayq."
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

/// The flags `relayq sendmail` (and `/usr/sbin/sendmail`) takes, for its
/// help and its man page: clap does not parse them (see `main`).
const SENDMAIL_HELP: &str = "\
Also run as /usr/sbin/sendmail (or /usr/lib/sendmail): the message goes to \
the local listener; when the daemon cannot take it, it waits in the maildrop \
until the daemon is back. Flags:

-t: the recipients are those of the To:, Cc: and Bcc: fields (Bcc: is removed).

-i, -oi: a line with a single dot does not end the message.

-f FROM, -r FROM: the envelope sender (-f '<>': none).

-F NAME: the full name for the From: field relayq adds when there is none.

-N NOTIFY: delivery status notifications: never, or a list of success, failure, delay.

-C FILE, --config FILE: the configuration (to find the listener and the maildrop).

-bp: list the queue (as mailq). -bm: read a message (the default). -v: say what happens.

Accepted and ignored, for compatibility: -m, -n, -U, -q, -d, -e, -odi, -oem \
and the other -o options, -A, -B, -h, -L, -O, -R, -V, -X.

Exit status: 0 accepted, or left in the maildrop; 64 bad usage; 65 a \
malformed message or a permanent refusal (5xx); 75 neither accepted nor \
left in the maildrop (try again later).";

#[derive(Subcommand)]
enum Commands {
    /// Run the daemon.
    Serve {
        /// Configuration file (default: /etc/relayq/relayq.toml if present,
        /// else built-in defaults that run unprivileged).
        #[arg(long, short = 'c', env = "RELAYQ_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file: exit 0, or 64 with the file, key and reason.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Read a message on stdin and submit it, like sendmail: -t, -i, -f FROM,
    /// -F NAME, -N NOTIFY, -C CONFIG, recipients. Exit 0 once accepted or in
    /// the maildrop, 65 malformed or refused, 67 every recipient refused, 75 neither.
    #[command(disable_help_flag = true, after_long_help = SENDMAIL_HELP)]
    Sendmail {
        /// sendmail's own flags and the recipients.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<OsString>,
    },
    /// Inspect and operate the queue of the running daemon (also `mailq`).
    Queue(relayq::cli::queue::QueueArgs),
    /// The running daemon's webhooks: status, or a test post.
    Webhook(relayq::cli::webhook::WebhookArgs),
    /// The suppression list: recipients not mailed again until removed.
    Suppression(relayq::cli::suppression::SuppressionArgs),
    /// Make the running daemon re-read its configuration file: exit 0 and
    /// what changed, or 64 with the file, key and reason (nothing changed).
    Reload {
        /// Configuration that names the daemon's control socket (default as
        /// for `serve`).
        #[arg(long, short = 'c', env = "RELAYQ_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print a shell completion script.
    ///
    /// For example `relayq completions bash > /etc/bash_completion.d/relayq`;
    /// the Debian package installs the bash, zsh and fish scripts.
    Completions {
        /// The shell to complete for.
        shell: Shell,
    },
}

// `relayq generate …` is parsed apart from `Cli` so that neither the
// completions nor the man pages offer this packaging helper.
#[derive(Parser)]
#[command(
    name = "generate",
    bin_name = "relayq generate",
    about = "Write the generated man pages or completion files into a directory (for packaging)"
)]
struct Generate {
    #[command(subcommand)]
    what: Generated,
}

#[derive(Subcommand)]
enum Generated {
    /// relayq.8 and one page per subcommand.
    Man { directory: PathBuf },
    /// The bash, zsh and fish completion files.
    Completions { directory: PathBuf },
}

fn main() -> ExitCode {
    // As `sendmail` (symlink), the arguments are sendmail's, which clap
    // cannot parse (`-oi`, `-FCronDaemon`, `-odi`); as `mailq`, it is
    // `queue list`. `generate` is a packaging helper outside `Cli`.
    let mut arguments = std::env::args_os();
    let program = arguments.next().unwrap_or_default();
    let invoked_as = Path::new(&program)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default()
        .to_owned();
    if invoked_as == "sendmail" {
        return run_sendmail(arguments.collect());
    }
    if relayq::cli::invoked_as_mailq(Some(program.as_os_str())) {
        return parse_and_dispatch(relayq::cli::mailq_arguments(arguments));
    }
    let arguments: Vec<_> = std::env::args_os().collect();
    if arguments.get(1).is_some_and(|first| first == "generate") {
        return generate_files(arguments[1..].to_vec());
    }
    parse_and_dispatch(arguments)
}

/// Usage errors exit 64 (sysexits EX_USAGE), not clap's 2.
fn parse_and_dispatch(arguments: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(arguments) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    dispatch(cli)
}

fn dispatch(cli: Cli) -> ExitCode {
    match cli.command {
        Commands::Serve { config } => serve(config),
        Commands::CheckConfig { file } => check_config(&file),
        Commands::Sendmail { args } => run_sendmail(args),
        Commands::Queue(args) => relayq::cli::queue::run(args),
        Commands::Webhook(args) => relayq::cli::webhook::run(args),
        Commands::Suppression(args) => relayq::cli::suppression::run(args),
        Commands::Reload { config } => relayq::cli::reload::run(config.as_deref()),
        Commands::Completions { shell } => print_completions(shell),
    }
}

fn print_completions(shell: Shell) -> ExitCode {
    let mut script = Vec::new();
    generate::completions(shell, &mut Cli::command(), &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Ok(()) => ExitCode::SUCCESS,
        // `relayq completions bash | head` is not an error.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("relayq: cannot write the completion script: {error}");
            ExitCode::from(EXIT_IOERR)
        }
    }
}

fn generate_files(arguments: Vec<OsString>) -> ExitCode {
    let what = match Generate::try_parse_from(arguments) {
        Ok(Generate { what }) => what,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let (directory, written) = match what {
        Generated::Man { directory } => {
            let written = generate::man_pages(Cli::command(), &directory);
            (directory, written)
        }
        Generated::Completions { directory } => {
            let written = generate::completion_files(&mut Cli::command(), &directory);
            (directory, written)
        }
    };
    match written {
        Ok(files) => {
            for file in files {
                println!("{}", file.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("relayq: cannot write into {}: {error}", directory.display());
            ExitCode::from(EXIT_SOFTWARE)
        }
    }
}

fn run_sendmail(args: Vec<OsString>) -> ExitCode {
    let args: Result<Vec<String>, _> = args.into_iter().map(OsString::into_string).collect();
    let Ok(args) = args else {
        eprintln!("sendmail: arguments must be UTF-8");
        return ExitCode::from(sendmail::EXIT_USAGE);
    };
    match sendmail::run(args) {
        sendmail::Action::Exit(code) => ExitCode::from(code),
        sendmail::Action::ListQueue { config } => list_queue(config),
    }
}

/// `sendmail -bp`: `relayq queue list`.
fn list_queue(config: Option<PathBuf>) -> ExitCode {
    let mut argv = vec![
        OsString::from("relayq"),
        OsString::from("queue"),
        OsString::from("list"),
    ];
    if let Some(config) = config {
        argv.push(OsString::from("--config"));
        argv.push(config.into_os_string());
    }
    parse_and_dispatch(argv)
}

fn check_config(file: &Path) -> ExitCode {
    // The certificates, the users file and the DKIM key files are read as
    // the daemon would.
    let checked = Config::load(file).and_then(|config| {
        credentials::check(&config)?;
        relayq::dkim::Signers::load_for(&config)?;
        Ok(config)
    });
    match checked {
        Ok(_) => {
            println!("{}: configuration ok", file.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("relayq: {error}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn load_for_serve(explicit: Option<PathBuf>) -> Result<Config, relayq::config::ConfigError> {
    let config = match explicit {
        Some(path) => Config::load(&path)?,
        None if Path::new(SYSTEM_CONFIG).exists() => Config::load(Path::new(SYSTEM_CONFIG))?,
        None => Config::builtin(),
    };
    // Unusable certificates, users files and DKIM keys are configuration
    // errors (exit 64), found before the daemon starts; it loads them again
    // for itself.
    credentials::check(&config)?;
    relayq::dkim::Signers::load_for(&config)?;
    Ok(config)
}

fn serve(explicit: Option<PathBuf>) -> ExitCode {
    let config = match load_for_serve(explicit) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("relayq: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let log_level = relayq::logging::init(config.log.format, config.log.level.as_deref());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("relayq: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_SOFTWARE);
        }
    };
    match runtime.block_on(relayq::daemon::serve(config, log_level)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("relayq: {error:#}");
            ExitCode::from(EXIT_SOFTWARE)
        }
    }
}
