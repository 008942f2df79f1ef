//! Unit tests of loading and validating configuration files.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::validate::SystemDefaults;
use super::*;

const EXAMPLE: &str = include_str!("../../conf/relayq.toml");

fn system() -> SystemDefaults {
    SystemDefaults {
        hostname: "host.test".to_string(),
        state_dir: PathBuf::from("/state/relayq"),
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse_with(text, Path::new("relayq.toml"), &system())
}

/// The error message for `text`, which must be refused.
fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("accepted {text:?} as {config:#?}"),
        Err(error) => error.to_string(),
    }
}

fn address(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn empty_file_gives_the_defaults() {
    let config = parse("").unwrap();
    assert_eq!(config.hostname, "host.test");
    assert_eq!(config.spool.path, Path::new("/state/relayq"));
    assert_eq!(config.spool.max_message_size, 26_214_400);
    assert_eq!(config.spool.min_free_space, 268_435_456);
    assert_eq!(
        config.listeners,
        [ListenerSettings {
            address: address("127.0.0.1:2525"),
            lane: Lane::High,
            tls: ListenerTls::None,
            tls_files: None,
            auth: ListenerAuth::None,
        }]
    );
    let networks: Vec<String> = config
        .smtp
        .relay_networks
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(networks, ["127.0.0.0/8", "::1/128"]);
    assert_eq!(config.smtp.max_connections, 1000);
    assert_eq!(config.smtp.max_recipients, 1000);
    assert_eq!(config.smtp.origin, "host.test");
    assert_eq!(config.smtp.admin_address, None);
    assert_eq!(config.smtp.idle_timeout, Duration::from_secs(300));
    assert_eq!(config.smtp.stress_idle_timeout, Duration::from_secs(10));
    assert_eq!(config.smtp.min_data_rate, 500);
    assert_eq!(config.smtp.max_errors, 20);
    assert_eq!(config.smtp.idempotency_window, Duration::from_secs(86_400));
    assert!(!config.smtp.dedupe_message_id);
    assert_eq!(config.lanes.high.concurrency, 64);
    assert_eq!(config.lanes.low.concurrency, 8);
    assert_eq!(config.lanes.get(Lane::Low).concurrency, 8);
    assert_eq!(config.lanes.high.max_queued, None);
    assert_eq!(config.lanes.low.max_queued, None);
    let delivery = &config.delivery;
    assert_eq!(delivery.port, 25);
    assert_eq!(delivery.destination_concurrency, 20);
    assert_eq!(delivery.tls, TlsPolicy::Opportunistic);
    assert_eq!(delivery.ip_version, IpVersion::Any);
    assert_eq!(delivery.connect_timeout, Duration::from_secs(30));
    assert_eq!(delivery.greeting_timeout, Duration::from_secs(300));
    assert_eq!(delivery.command_timeout, Duration::from_secs(300));
    assert_eq!(delivery.data_timeout, Duration::from_secs(180));
    assert_eq!(delivery.final_timeout, Duration::from_secs(600));
    assert_eq!(config.retry.initial, Duration::from_secs(300));
    assert_eq!(config.retry.factor, 2.0);
    assert_eq!(config.retry.max, Duration::from_secs(3600));
    assert_eq!(config.retry.max_age, Duration::from_secs(5 * 86_400));
    assert_eq!(config.retry.delay_warning, None);
    assert!(config.dns.nameservers.is_empty());
    assert!(config.routes.is_empty());
    assert_eq!(
        config.control.socket,
        Path::new("/state/relayq/control.sock")
    );
    assert_eq!(config.control.maildrop, Path::new("/state/relayq/maildrop"));
    assert_eq!(config.metrics.listen, None);
    assert_eq!(config.log.format, LogFormat::Text);
    assert_eq!(config.log.level, None);
    assert_eq!(config.source.as_deref(), Some(Path::new("relayq.toml")));
}

#[test]
fn builtin_uses_the_defaults_and_has_no_source() {
    let config = Config::builtin();
    assert_eq!(config.source, None);
    assert!(!config.hostname.is_empty());
    assert_eq!(config.smtp.origin, config.hostname);
    assert_eq!(config.spool.path, Config::default_state_dir());
    assert_eq!(config.listeners[0].address, address("127.0.0.1:2525"));
}

#[test]
fn example_file_loads_with_production_values() {
    let config = parse(EXAMPLE).unwrap();
    assert_eq!(config.hostname, "relay.example.com");
    assert_eq!(config.spool.path, Path::new("/var/spool/relayq"));
    assert_eq!(config.listeners[0].address, address("127.0.0.1:25"));
    assert_eq!(config.control.socket, Path::new("/run/relayq/control.sock"));
    assert_eq!(
        config.control.maildrop,
        Path::new("/var/spool/relayq/maildrop")
    );
    assert_eq!(config.metrics.listen, Some(address("127.0.0.1:9325")));
    assert_eq!(config.log.level.as_deref(), Some("info"));

    // Everything else in the example is the built-in default.
    let defaults = parse("").unwrap();
    assert_eq!(
        config.spool.max_message_size,
        defaults.spool.max_message_size
    );
    assert_eq!(config.spool.min_free_space, defaults.spool.min_free_space);
    assert_eq!(config.listeners[0].lane, defaults.listeners[0].lane);
    assert_eq!(
        config.smtp,
        SmtpSettings {
            origin: "relay.example.com".to_string(),
            ..defaults.smtp
        }
    );
    assert_eq!(config.lanes, defaults.lanes);
    assert_eq!(config.delivery, defaults.delivery);
    assert_eq!(config.retry, defaults.retry);
    assert_eq!(config.dns, defaults.dns);
    assert_eq!(config.routes, defaults.routes);
    assert_eq!(config.log.format, defaults.log.format);
    let same_host = parse("hostname = \"relay.example.com\"").unwrap();
    assert_eq!(config.tls_rpt, same_host.tls_rpt);
}

#[test]
fn example_file_loads_from_disk() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/relayq.toml");
    let config = Config::load(&path).unwrap();
    assert_eq!(config.source, Some(path));
}

#[test]
fn example_route_is_valid_when_uncommented() {
    let start = EXAMPLE.find("# [[route]]").unwrap();
    let end = EXAMPLE[start..].find("\n\n").unwrap() + start;
    let route: String = EXAMPLE[start..end]
        .lines()
        .map(|line| line.strip_prefix("# ").unwrap_or(line))
        .filter(|line| !line.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    let config = parse(&route).unwrap();
    let route = &config.routes[0];
    assert_eq!(route.domains, ["*"]);
    assert_eq!(route.port, 587);
    assert_eq!(route.username.as_deref(), Some("app"));
    assert!(route.verify_certificate);
}

#[test]
fn every_key_of_the_example_is_set_or_shown() {
    // Only keys the example leaves commented out, because their default is "unset".
    for key in [
        "admin_address",
        "delay_warning",
        "[[route]]",
        "[[dkim]]",
        "trust_anchor",
        "[bounce]",
        "rules_file",
    ] {
        assert!(EXAMPLE.contains(&format!("# {key}")), "{key} is missing");
    }
}

#[test]
fn unknown_key_names_the_key_path() {
    let message = error("[smtp]\nbogus = 1\n");
    assert!(
        message.starts_with("relayq.toml: smtp.bogus: unknown key (expected "),
        "{message}"
    );
    assert_eq!(
        error("bogus = 1").split(" (").next().unwrap(),
        "relayq.toml: bogus: unknown key"
    );
    assert!(
        error("[lanes.medium]\nconcurrency = 1\n")
            .starts_with("relayq.toml: lanes.medium: unknown key")
    );
    assert!(
        error("[[listener]]\naddress = \"127.0.0.1:25\"\nport = 25\n")
            .starts_with("relayq.toml: listener[0].port: unknown key")
    );
}

#[test]
fn bad_duration_names_the_key() {
    let message = error("[delivery]\nconnect_timeout = \"30 parsecs\"\n");
    assert!(
        message.starts_with(
            "relayq.toml: delivery.connect_timeout: invalid duration \"30 parsecs\": unknown time unit"
        ),
        "{message}"
    );
    assert!(error("[retry]\nmax_age = 5\n").starts_with(
        "relayq.toml: retry.max_age: invalid type: integer `5`, expected a duration string"
    ));
    assert_eq!(
        error("[smtp]\nidle_timeout = \"0s\"\n"),
        "relayq.toml: smtp.idle_timeout: must be greater than zero"
    );
}

#[test]
fn idempotency_keys() {
    let config = parse("[smtp]\nidempotency_window = \"2s\"\ndedupe_message_id = true\n").unwrap();
    assert_eq!(config.smtp.idempotency_window, Duration::from_secs(2));
    assert!(config.smtp.dedupe_message_id);
    assert_eq!(
        error("[smtp]\nidempotency_window = \"0s\"\n"),
        "relayq.toml: smtp.idempotency_window: must be greater than zero"
    );
    assert!(
        error("[smtp]\ndedupe_message_id = \"yes\"\n")
            .starts_with("relayq.toml: smtp.dedupe_message_id: invalid type: string"),
    );
}

#[test]
fn pressure_keys() {
    let config = parse("[smtp]\nidle_timeout = \"4s\"\n").unwrap();
    assert_eq!(
        config.smtp.stress_idle_timeout,
        Duration::from_secs(4),
        "the stress default never exceeds idle_timeout"
    );
    let config = parse("[smtp]\nstress_idle_timeout = \"3s\"\nmin_data_rate = 2000\n").unwrap();
    assert_eq!(config.smtp.stress_idle_timeout, Duration::from_secs(3));
    assert_eq!(config.smtp.min_data_rate, 2000);
    assert_eq!(
        error("[smtp]\nidle_timeout = \"5s\"\nstress_idle_timeout = \"6s\"\n"),
        "relayq.toml: smtp.stress_idle_timeout: must not be longer than smtp.idle_timeout"
    );
    assert_eq!(
        error("[smtp]\nstress_idle_timeout = \"0s\"\n"),
        "relayq.toml: smtp.stress_idle_timeout: must be greater than zero"
    );
    assert_eq!(
        error("[smtp]\nmin_data_rate = 0\n"),
        "relayq.toml: smtp.min_data_rate: must be at least 1"
    );
}

#[test]
fn compound_durations_parse() {
    let config = parse("[retry]\nmax = \"1h30m\"\ndelay_warning = \"4h\"\n").unwrap();
    assert_eq!(config.retry.max, Duration::from_secs(5400));
    assert_eq!(
        config.retry.delay_warning,
        Some(Duration::from_secs(4 * 3600))
    );
}

#[test]
fn enums_parse_and_bad_values_are_refused() {
    let config = parse(
        "[delivery]\ntls = \"required\"\nip_version = \"prefer_ipv6\"\n[log]\nformat = \"json\"\n\
         [[listener]]\naddress = \"[::1]:2525\"\nlane = \"low\"\n",
    )
    .unwrap();
    assert_eq!(config.delivery.tls, TlsPolicy::Required);
    assert_eq!(config.delivery.ip_version, IpVersion::PreferIpv6);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.listeners[0].lane, Lane::Low);

    assert_eq!(
        error("[delivery]\ntls = \"sometimes\"\n"),
        "relayq.toml: delivery.tls: unknown value \"sometimes\", expected \"opportunistic\", \"required\" or \"disabled\""
    );
    assert_eq!(
        error("[delivery]\nip_version = 4\n"),
        "relayq.toml: delivery.ip_version: invalid type: integer `4`, expected one of \"any\", \"ipv4\", \"ipv6\", \"prefer_ipv4\" or \"prefer_ipv6\""
    );
    assert_eq!(
        error(
            "[[listener]]\naddress = \"127.0.0.1:25\"\n[[listener]]\naddress = \"127.0.0.1:26\"\nlane = \"medium\"\n"
        ),
        "relayq.toml: listener[1].lane: unknown lane `medium`, expected `high` or `low`"
    );
}

#[test]
fn relay_networks_accept_cidr_and_bare_addresses() {
    let config =
        parse("[smtp]\nrelay_networks = [\"10.1.2.3/8\", \"192.0.2.7\", \"2001:db8::1\"]\n")
            .unwrap();
    let networks: Vec<String> = config
        .smtp
        .relay_networks
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(networks, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::1/128"]);
}

#[test]
fn bad_cidr_names_the_entry() {
    let message = error("[smtp]\nrelay_networks = [\"127.0.0.0/8\", \"10.0.0.0/33\"]\n");
    assert!(
        message.starts_with("relayq.toml: smtp.relay_networks[1]: invalid network \"10.0.0.0/33\""),
        "{message}"
    );
}

#[test]
fn missing_file_says_so() {
    let error = Config::load(Path::new("/nonexistent/relayq.toml")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "/nonexistent/relayq.toml: cannot read: No such file or directory"
    );
    assert_eq!(error.key, "");
}

#[test]
fn toml_syntax_error_gives_line_and_column() {
    let message = error("hostname = \"a.example\"\n[smtp]\nmax_connections = = 5\n");
    assert!(
        message.starts_with("relayq.toml: TOML syntax error at line 3, column 19: "),
        "{message}"
    );
    let message = error("[smtp]\nmax_errors = 1\n[smtp]\n");
    assert!(message.contains("at line 3"), "{message}");
}

#[test]
fn routes_are_validated() {
    let config = parse(
        "[[route]]\ndomains = [\"Example.COM\", \"example.net\"]\nhost = \"smtp.example\"\n\
         [[route]]\ndomains = [\"*\"]\nhost = \"192.0.2.25\"\nport = 465\ntls = \"implicit\"\n\
         username = \"app\"\npassword_file = \"/etc/relayq/pw\"\n",
    )
    .unwrap();
    let [first, second] = &config.routes[..] else {
        panic!("{:?}", config.routes)
    };
    assert_eq!(first.domains, ["example.com", "example.net"]);
    assert_eq!(first.port, 25);
    assert_eq!(first.tls, RouteTls::Starttls);
    assert!(!first.verify_certificate);
    assert_eq!(second.tls, RouteTls::Implicit);
    assert!(second.verify_certificate);
    assert_eq!(
        second.password_file.as_deref(),
        Some(Path::new("/etc/relayq/pw"))
    );

    let route = |body: &str| error(&format!("[[route]]\n{body}\n"));
    assert_eq!(
        route("domains = [\"*\"]\nhost = \"h.example\"\nusername = \"app\""),
        "relayq.toml: route[0].password_file: required when username is set"
    );
    assert_eq!(
        route("domains = [\"*\"]\nhost = \"h.example\"\npassword_file = \"/pw\""),
        "relayq.toml: route[0].username: required when password_file is set"
    );
    assert_eq!(
        route("domains = []\nhost = \"h.example\""),
        "relayq.toml: route[0].domains: must list at least one domain, or \"*\" for all"
    );
    assert_eq!(
        route("host = \"h.example\""),
        "relayq.toml: route[0].domains: required"
    );
    assert_eq!(
        route("domains = [\"*\"]"),
        "relayq.toml: route[0].host: required"
    );
    assert_eq!(
        route("domains = [\"*.example.com\"]\nhost = \"h.example\""),
        "relayq.toml: route[0].domains[0]: the only wildcard is \"*\" on its own, meaning every domain"
    );
    assert_eq!(
        route(
            "domains = [\"a.example\"]\nhost = \"h.example\"\n[[route]]\ndomains = [\"A.example\"]\nhost = \"i.example\""
        ),
        "relayq.toml: route[1].domains[0]: \"a.example\" is already routed by route[0]"
    );
    assert_eq!(
        route("domains = [\"*\"]\nhost = \"h.example\"\ntls = \"ssl\""),
        "relayq.toml: route[0].tls: unknown value \"ssl\", expected \"starttls\", \"implicit\" or \"none\""
    );
}

#[test]
fn route_reads_its_password_without_the_trailing_newline() {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("password");
    std::fs::write(&path, "s3cret\n").unwrap();
    let mut route = Route {
        domains: vec!["*".to_string()],
        host: "smtp.example".to_string(),
        port: 587,
        tls: RouteTls::Starttls,
        verify_certificate: true,
        username: Some("app".to_string()),
        password_file: Some(path.clone()),
    };
    assert_eq!(route.read_password().unwrap().as_deref(), Some("s3cret"));
    std::fs::write(&path, "two\n\n").unwrap();
    assert_eq!(route.read_password().unwrap().as_deref(), Some("two\n"));

    route.password_file = Some(directory.path().join("absent"));
    let message = format!("{:#}", route.read_password().unwrap_err());
    assert!(message.contains("cannot read password file"), "{message}");
    assert!(message.contains("absent"), "{message}");

    route.password_file = None;
    assert_eq!(route.read_password().unwrap(), None);
}

#[test]
fn nameservers_default_to_port_53() {
    let config = parse("[dns]\nnameservers = [\"127.0.0.1:5353\", \"[::1]:53\", \"192.0.2.53\", \"2001:db8::53\"]\n").unwrap();
    assert_eq!(
        config.dns.nameservers,
        [
            address("127.0.0.1:5353"),
            address("[::1]:53"),
            address("192.0.2.53:53"),
            address("[2001:db8::53]:53"),
        ]
    );
    let message = error("[dns]\nnameservers = [\"ns1.example\"]\n");
    assert!(
        message.starts_with("relayq.toml: dns.nameservers[0]: invalid nameserver \"ns1.example\""),
        "{message}"
    );
}

#[test]
fn listeners_are_validated() {
    assert_eq!(
        error("listener = []"),
        "relayq.toml: listener: at least one [[listener]] is needed; leave the key out for the default 127.0.0.1:2525"
    );
    assert_eq!(
        error(
            "[[listener]]\naddress = \"127.0.0.1:25\"\n[[listener]]\naddress = \"127.0.0.1:25\"\nlane = \"low\"\n"
        ),
        "relayq.toml: listener[1].address: 127.0.0.1:25 is already the address of listener[0]"
    );
    assert_eq!(
        error("[[listener]]\nlane = \"low\"\n"),
        "relayq.toml: listener[0].address: required"
    );
    assert!(
        error("[[listener]]\naddress = \"localhost:25\"\n")
            .starts_with("relayq.toml: listener[0].address: invalid address \"localhost:25\"")
    );
    // Port 0 lets the kernel choose, so tests may ask for it twice.
    let config =
        parse("[[listener]]\naddress = \"127.0.0.1:0\"\n[[listener]]\naddress = \"127.0.0.1:0\"\n")
            .unwrap();
    assert_eq!(config.listeners.len(), 2);
}

#[test]
fn values_are_range_checked() {
    assert_eq!(
        error("[spool]\nmax_message_size = 1000\n"),
        "relayq.toml: spool.max_message_size: must be at least 65536 bytes: RFC 5321 §4.5.3.1.7 requires accepting messages of 64K octets"
    );
    assert_eq!(
        error("[lanes.low]\nconcurrency = 0\n"),
        "relayq.toml: lanes.low.concurrency: must be at least 1"
    );
    assert_eq!(
        error("[lanes.low]\nmax_queued = 0\n"),
        "relayq.toml: lanes.low.max_queued: must be a positive integer (a number of messages), got 0"
    );
    assert_eq!(
        error("[lanes.high]\nmax_queued = -5\n"),
        "relayq.toml: lanes.high.max_queued: must be a positive integer (a number of messages), got -5"
    );
    assert!(
        error("[lanes.high]\nmax_queued = \"lots\"\n")
            .starts_with("relayq.toml: lanes.high.max_queued: invalid type: string")
    );
    assert_eq!(
        error("[retry]\nfactor = 0.5\n"),
        "relayq.toml: retry.factor: must be at least 1.0, got 0.5"
    );
    assert_eq!(
        error("[retry]\ninitial = \"2h\"\n"),
        "relayq.toml: retry.max: must be at least retry.initial (2h)"
    );
    assert_eq!(
        error("[retry]\ndelay_warning = \"6d\"\n"),
        "relayq.toml: retry.delay_warning: must be shorter than retry.max_age (5days), or the warning would never be sent"
    );
    assert_eq!(
        error("[smtp]\nadmin_address = \"ops\"\n"),
        "relayq.toml: smtp.admin_address: invalid address \"ops\": expected local-part@domain, such as \"postmaster@example.com\""
    );
    assert_eq!(
        error("hostname = \"relay example\""),
        "relayq.toml: hostname: \"relay example\" is not a domain name: it contains ' '"
    );
    assert_eq!(
        error("hostname = \"\""),
        "relayq.toml: hostname: must not be empty"
    );
    assert!(
        error("[log]\nlevel = \"relayq=loud\"\n")
            .starts_with("relayq.toml: log.level: invalid filter")
    );
    assert!(
        error("[spool]\nmin_free_space = -1\n")
            .starts_with("relayq.toml: spool.min_free_space: invalid value")
    );
    assert_eq!(parse("[retry]\nfactor = 3\n").unwrap().retry.factor, 3.0);
}

#[test]
fn explicit_spool_path_moves_the_control_defaults() {
    let config =
        parse("[spool]\npath = \"/srv/spool\"\n[control]\nmaildrop = \"/srv/drop\"\n").unwrap();
    assert_eq!(config.control.socket, Path::new("/srv/spool/control.sock"));
    assert_eq!(config.control.maildrop, Path::new("/srv/drop"));
}

#[test]
fn state_dir_follows_the_environment() {
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        }
    };
    let uid = || Some("1000".to_string());
    assert_eq!(
        state_dir_from(env(&[("RELAYQ_STATE_DIR", "/s"), ("HOME", "/h")]), uid),
        Path::new("/s")
    );
    assert_eq!(
        state_dir_from(env(&[("XDG_STATE_HOME", "/x"), ("HOME", "/h")]), uid),
        Path::new("/x/relayq")
    );
    assert_eq!(
        state_dir_from(env(&[("XDG_STATE_HOME", "relative"), ("HOME", "/h")]), uid),
        Path::new("/h/.local/state/relayq")
    );
    assert_eq!(
        state_dir_from(env(&[("RELAYQ_STATE_DIR", "")]), uid),
        Path::new("/tmp/relayq-1000")
    );
    assert_eq!(
        state_dir_from(env(&[]), || None),
        Path::new("/tmp/relayq-user")
    );
    assert!(current_uid().is_some());
}

#[test]
fn error_without_key_prints_file_and_reason() {
    let error = ConfigError {
        file: PathBuf::from("/etc/relayq/relayq.toml"),
        key: String::new(),
        reason: "cannot read: Permission denied".to_string(),
    };
    assert_eq!(
        error.to_string(),
        "/etc/relayq/relayq.toml: cannot read: Permission denied"
    );
}

#[test]
fn lane_caps_are_optional_and_per_lane() {
    let config = parse("[lanes.low]\nmax_queued = 50000\n").unwrap();
    assert_eq!(config.lanes.low.max_queued, Some(50_000));
    assert_eq!(config.lanes.high.max_queued, None);
    assert_eq!(config.lanes.low.concurrency, 8);

    // The example's commented-out caps are valid as written.
    let uncommented = EXAMPLE.replace("# max_queued = ", "max_queued = ");
    let config = parse(&uncommented).unwrap();
    assert_eq!(config.lanes.high.max_queued, Some(100_000));
    assert_eq!(config.lanes.low.max_queued, Some(100_000));
}

#[test]
fn listener_tls_and_auth() {
    let config = parse(
        "[[listener]]\naddress = \"0.0.0.0:587\"\ntls = \"starttls\"\n\
         certificate = \"/etc/relayq/tls/fullchain.pem\"\nprivate_key = \"/etc/relayq/tls/key.pem\"\n\
         auth = \"required\"\n[smtp]\nusers_file = \"/etc/relayq/users\"\n",
    )
    .unwrap();
    let listener = &config.listeners[0];
    assert_eq!(listener.tls, ListenerTls::Starttls);
    assert_eq!(listener.auth, ListenerAuth::Required);
    assert_eq!(
        listener.tls_files,
        Some(TlsFiles {
            certificate: PathBuf::from("/etc/relayq/tls/fullchain.pem"),
            private_key: PathBuf::from("/etc/relayq/tls/key.pem"),
        })
    );
    assert_eq!(
        config.smtp.users_file.as_deref(),
        Some(Path::new("/etc/relayq/users"))
    );
}

#[test]
fn listener_tls_and_auth_errors_name_the_key() {
    let listener = "[[listener]]\naddress = \"127.0.0.1:587\"\n";
    assert_eq!(
        error(&format!(
            "{listener}tls = \"implicit\"\nprivate_key = \"k.pem\"\n"
        )),
        "relayq.toml: listener[0].certificate: required when tls is set"
    );
    assert_eq!(
        error(&format!(
            "{listener}tls = \"starttls\"\ncertificate = \"c.pem\"\n"
        )),
        "relayq.toml: listener[0].private_key: required when tls is set"
    );
    assert!(
        error(&format!(
            "{listener}certificate = \"c.pem\"\nprivate_key = \"k.pem\"\n"
        ))
        .starts_with(
            "relayq.toml: listener[0].tls: certificate and private_key are used only with"
        )
    );
    assert!(
        error(&format!("{listener}tls = \"yes\"\n"))
            .starts_with("relayq.toml: listener[0].tls: unknown value \"yes\", expected \"none\", \"starttls\" or \"implicit\"")
    );
    assert_eq!(
        error(&format!(
            "{listener}auth = \"required\"\n[smtp]\nusers_file = \"u\"\n"
        )),
        "relayq.toml: listener[0].auth: needs tls = \"starttls\" or \"implicit\": AUTH is offered only under TLS"
    );
    assert_eq!(
        error(&format!(
            "{listener}tls = \"implicit\"\ncertificate = \"c.pem\"\nprivate_key = \"k.pem\"\nauth = \"optional\"\n"
        )),
        "relayq.toml: smtp.users_file: required: listener[0] has auth = \"optional\""
    );
}

#[test]
fn dkim_blocks_are_validated() {
    let config = parse(
        "[[dkim]]\ndomain = \"Example.COM.\"\nselector = \"rsa2026\"\nprivate_key = \"/k.pem\"\n\
         [[dkim]]\ndomain = \"example.com\"\nselector = \"ed\"\nprivate_key = \"/e.pem\"\n\
         headers = [\"From\", \"Subject\"]\n",
    )
    .unwrap();
    assert_eq!(config.dkim.len(), 2);
    assert_eq!(config.dkim[0].domain, "example.com");
    assert_eq!(config.dkim[0].headers, None);
    assert_eq!(
        config.dkim[1].headers.as_deref(),
        Some(&["From".to_string(), "Subject".to_string()][..])
    );
    let block = "[[dkim]]\ndomain = \"example.com\"\nselector = \"s\"\nprivate_key = \"/k.pem\"\n";
    assert!(
        error(&format!("{block}bogus = 1\n"))
            .starts_with("relayq.toml: dkim[0].bogus: unknown key")
    );
    assert_eq!(
        error("[[dkim]]\ndomain = \"example.com\"\nprivate_key = \"/k.pem\"\n"),
        "relayq.toml: dkim[0].selector: required"
    );
    assert!(error(&format!("{block}{block}")).starts_with("relayq.toml: dkim[1].selector: "));
    assert!(
        error(&format!("{block}headers = [\"Subject\"]\n"))
            .starts_with("relayq.toml: dkim[0].headers: must include \"From\"")
    );
    assert!(
        error(&block.replace("\"s\"", "\"a b\"")).starts_with("relayq.toml: dkim[0].selector: ")
    );
    assert!(
        error(&block.replace("example.com", "exa mple.com"))
            .starts_with("relayq.toml: dkim[0].domain: ")
    );
}

#[test]
fn a_bounce_rules_file_is_read_and_its_errors_name_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bounce-rules.toml");
    let text = format!("[bounce]\nrules_file = {:?}\n", rules.display().to_string());
    let missing = parse(&text).unwrap_err().to_string();
    assert!(
        missing.starts_with(&format!(
            "relayq.toml: bounce.rules_file: cannot read {}: ",
            rules.display()
        )),
        "{missing}"
    );
    std::fs::write(&rules, "[rules]\nspam_block = ['ok', '[unclosed']\n").unwrap();
    let invalid = parse(&text).unwrap_err().to_string();
    assert!(
        invalid.starts_with(&format!(
            "relayq.toml: bounce.rules_file: {}: rules.spam_block[1]: invalid regular expression",
            rules.display()
        )),
        "{invalid}"
    );
    std::fs::write(&rules, "[rules]\nspam_block = ['ok']\n").unwrap();
    let config = parse(&text).unwrap();
    assert_eq!(config.bounce.rules_file.as_deref(), Some(rules.as_path()));
    assert_eq!(config.bounce.rules.len(), 1);
    assert!(parse("").unwrap().bounce.rules.is_empty());
    assert_eq!(
        parse("[bounce]\nrules_file = \"\"\n")
            .unwrap_err()
            .to_string(),
        "relayq.toml: bounce.rules_file: must not be empty"
    );
}

mod dane;
