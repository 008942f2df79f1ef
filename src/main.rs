//! The `relayq` command: `serve` runs the daemon, `check-config` validates a
//! configuration file, `queue` (or `mailq`) and `suppression` talk to the
//! running daemon, `sendmail` submits a message (also when invoked as
//! `sendmail`), `reload` makes the daemon re-read its configuration.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use relayq::cli::sendmail;
use relayq::config::Config;
use relayq::smtp::credentials;

/// sysexits.h EX_USAGE / EX_CONFIG-style exit for bad configuration.
const EXIT_USAGE: u8 = 64;
/// sysexits.h EX_SOFTWARE: the daemon failed at run time.
const EXIT_SOFTWARE: u8 = 70;

/// Configuration used by `serve` when no `--config` is given and it exists.
const SYSTEM_CONFIG: &str = "/etc/relayq/relayq.toml";

#[derive(Parser)]
#[command(
    name = "relayq",
    version,
    about = "Local SMTP relay and durable outbound mail spooler"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

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
    #[command(disable_help_flag = true)]
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
}

fn main() -> ExitCode {
    // As `sendmail` (symlink), the arguments are sendmail's, which clap
    // cannot parse (`-oi`, `-FCronDaemon`, `-odi`); as `mailq`, it is
    // `queue list`.
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
    let arguments: Vec<_> = if relayq::cli::invoked_as_mailq(Some(program.as_os_str())) {
        relayq::cli::mailq_arguments(arguments)
    } else {
        std::env::args_os().collect()
    };
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
