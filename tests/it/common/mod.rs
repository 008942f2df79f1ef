//! Test harness: the real `relayq` binary on a temporary spool and an
//! ephemeral loopback port, and a small blocking SMTP client.
pub mod dane;
pub mod delivery;
pub mod dkim;
pub mod dns_server;

pub mod fake_mx;
pub mod policy_server;
pub mod report_receiver;
pub mod shaping;
pub mod signed_dns;
pub mod silent;
pub mod tls_client;
pub mod webhook_receiver;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use relayq::queue::Envelope;
pub use relayq::wire::dot::dot_stuff;
use relayq_spool::{QueueId, Spool, SpoolOptions};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub struct TestRelay {
    pub directory: tempfile::TempDir,
    pub config_path: PathBuf,
    /// The first listener's address.
    pub address: SocketAddr,
    /// Every listener's address, in configuration order.
    pub addresses: Vec<SocketAddr>,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
    /// Extra environment for the relay process (e.g. SSL_CERT_FILE).
    env: Vec<(String, String)>,
    /// The default DNS server, when the test did not configure one.
    _dns: Option<dns_server::TestDns>,
}

impl TestRelay {
    /// Starts relayq with a config on a fresh spool; `extra` is appended to
    /// the TOML (it may add sections such as `[smtp]` keys).
    pub fn start(extra: &str) -> TestRelay {
        TestRelay::start_with_env(extra, &[])
    }

    /// As `start`, with extra environment variables for the relay; an empty
    /// value removes the variable (`RUST_LOG`, which the harness sets).
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> TestRelay {
        let directory = tempfile::tempdir().expect("temp dir");
        let config_path = directory.path().join("relayq.toml");
        let spool = directory.path().join("spool");
        // Tests never reach a real resolver: without a `[dns]` section of
        // their own, the relay asks a local server that answers SERVFAIL, so
        // mail of intake-only tests is deferred and stays in the spool.
        let dns = (!extra.contains("[dns]"))
            .then(|| dns_server::TestDns::start(dns_server::Zone::default().servfail_unknown()));
        let config = test_config(&spool, extra, dns.as_ref().map(|dns| dns.address));
        std::fs::write(&config_path, config).expect("write config");
        let mut relay = TestRelay {
            directory,
            config_path,
            address: "127.0.0.1:0".parse().unwrap(),
            addresses: Vec::new(),
            child: None,
            logs: Arc::new(Mutex::new(Vec::new())),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            _dns: dns,
        };
        relay.launch();
        relay
    }

    pub fn spool_path(&self) -> PathBuf {
        self.directory.path().join("spool")
    }

    /// Starts (or restarts) the process and waits until it listens and has
    /// rebuilt its queue from the spool ("queue rebuilt"), so the queue
    /// commands see every stored message. Logs of an earlier run are
    /// dropped.
    pub fn launch(&mut self) {
        self.launch_until(true);
    }

    /// As `launch`, but waits only until the process listens ("relayq
    /// ready"): with a full spool the rebuild may still be running.
    pub fn launch_listening(&mut self) {
        self.launch_until(false);
    }

    fn launch_until(&mut self, rebuilt: bool) {
        /// What the log says about the start.
        enum Started {
            Ready(Vec<String>),
            Rebuilt,
        }
        self.logs.lock().unwrap().clear();
        let mut command = Command::new(env!("CARGO_BIN_EXE_relayq"));
        command.env("RUST_LOG", "info");
        for (name, value) in &self.env {
            if value.is_empty() {
                command.env_remove(name);
            } else {
                command.env(name, value);
            }
        }
        let mut child = command
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn relayq");
        let stderr = child.stderr.take().expect("stderr");
        // Killed by `drop` if the start fails below.
        self.child = Some(child);
        let (sender, receiver) = std::sync::mpsc::channel();
        let logs = self.logs.clone();
        std::thread::spawn(move || {
            let mut addresses = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    addresses.push(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
                if line.contains("relayq ready") {
                    let _ = sender.send(Started::Ready(std::mem::take(&mut addresses)));
                }
                if line.contains("queue rebuilt in ") {
                    let _ = sender.send(Started::Rebuilt);
                }
                logs.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut addresses = None;
        let mut waiting_for_rebuild = rebuilt;
        while addresses.is_none() || waiting_for_rebuild {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(Started::Ready(ready)) => addresses = Some(ready),
                Ok(Started::Rebuilt) => waiting_for_rebuild = false,
                Err(_) => panic!(
                    "relayq did not start listening{}; logs:\n{}",
                    if rebuilt {
                        " and rebuild its queue"
                    } else {
                        ""
                    },
                    self.logs_text()
                ),
            }
        }
        self.addresses = addresses
            .unwrap_or_default()
            .iter()
            .map(|a| a.parse().expect("listen address"))
            .collect();
        self.address = self.addresses[0];
    }

    pub fn logs_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(line) = self.log_lines(needle).into_iter().next() {
                return line;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no log line with {needle:?}; logs:\n{}", self.logs_text());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Rewrites the configuration file as `start` wrote it, with `extra`
    /// in place of the original extra (same spool, same test DNS server).
    /// The file is replaced in one rename, so a reload never reads half of
    /// it. The daemon is not told: see `reload` and `sighup`.
    pub fn rewrite_config(&self, extra: &str) {
        let dns = self._dns.as_ref().map(|dns| dns.address);
        let config = test_config(&self.spool_path(), extra, dns);
        let staged = self.config_path.with_extension("toml.new");
        std::fs::write(&staged, config).expect("write config");
        std::fs::rename(&staged, &self.config_path).expect("replace config");
    }

    /// `relayq reload --config`, as an operator runs it.
    pub fn reload(&self) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_relayq"))
            .arg("reload")
            .arg("--config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .output()
            .expect("run relayq reload")
    }

    /// Sends SIGHUP (what `kill -HUP` does).
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP failed");
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + WAIT;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(
                        status.success(),
                        "relayq exited with {status}; logs:\n{}",
                        self.logs_text()
                    );
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            panic!(
                "relayq did not stop on SIGTERM; logs:\n{}",
                self.logs_text()
            );
        }
    }

    pub fn client(&self) -> SmtpClient {
        SmtpClient::connect(self.address)
    }

    /// Opens the spool of a stopped relay and returns every message.
    pub fn spooled_messages(&self) -> Vec<SpooledMessage> {
        assert!(
            self.child.is_none(),
            "stop the relay before reading its spool"
        );
        read_spool(&self.spool_path())
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The harness's config: `extra` may contain its own `[spool]` section (the
/// spool path is added to it) and its own `[[listener]]`s.
fn test_config(spool: &Path, extra: &str, dns: Option<SocketAddr>) -> String {
    let spool_line = format!("path = \"{}\"\n", spool.display());
    let mut config = String::from("hostname = \"relay.test.example\"\n");
    let extra = if extra.contains("[spool]\n") {
        extra.replacen("[spool]\n", &format!("[spool]\n{spool_line}"), 1)
    } else {
        config.push_str(&format!("[spool]\n{spool_line}"));
        extra.to_owned()
    };
    if let Some(dns) = dns {
        config.push_str(&format!("[dns]\nnameservers = [\"{dns}\"]\n"));
    }
    if !extra.contains("[[listener]]") {
        config.push_str("[[listener]]\naddress = \"127.0.0.1:0\"\n");
    }
    config.push_str(&extra);
    config.push('\n');
    config
}

pub struct SpooledMessage {
    pub id: QueueId,
    pub envelope: Envelope,
    pub body: Vec<u8>,
}

pub fn read_spool(path: &Path) -> Vec<SpooledMessage> {
    let spool = Spool::open(SpoolOptions::new(path)).expect("open spool");
    let mut messages = Vec::new();
    for (id, bytes) in spool.scan().expect("scan") {
        let envelope = Envelope::decode(&bytes).expect("envelope decodes");
        let mut body = Vec::new();
        spool
            .read_body(id)
            .expect("body")
            .read_to_end(&mut body)
            .expect("read body");
        messages.push(SpooledMessage { id, envelope, body });
    }
    spool.close();
    messages
}

/// Reads one (possibly multi-line) reply from `stream`, keeping what follows
/// it in `input`; `None` at end of stream or on a read error (a timeout).
pub fn read_reply(stream: &mut impl Read, input: &mut Vec<u8>) -> Option<Response> {
    loop {
        let parsed = relayq::wire::reply::parse_reply(input)
            .unwrap_or_else(|error| panic!("bad reply: {error}"));
        if let Some((reply, used)) = parsed {
            let lines = reply.lines().map(|line| line.into_owned()).collect();
            let code = reply.code();
            input.drain(..used);
            return Some(Response { code, lines });
        }
        let mut chunk = [0; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(count) => input.extend_from_slice(&chunk[..count]),
        }
    }
}

/// A blocking SMTP client that shows exactly what the server answers.
pub struct SmtpClient {
    stream: TcpStream,
    /// Received bytes not yet read as replies.
    input: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub code: u16,
    /// All lines, without the code and separator.
    pub lines: Vec<String>,
}

impl Response {
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }
}

impl SmtpClient {
    pub fn connect(address: SocketAddr) -> SmtpClient {
        let stream = TcpStream::connect_timeout(&address, WAIT).expect("connect");
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        SmtpClient {
            stream,
            input: Vec::new(),
        }
    }

    /// Reads one (possibly multi-line) reply; `None` at end of stream. Each
    /// read waits at most `WAIT` (the socket's read timeout).
    pub fn try_read(&mut self) -> Option<Response> {
        read_reply(&mut self.stream, &mut self.input)
    }

    pub fn read(&mut self) -> Response {
        self.try_read()
            .expect("connection closed while waiting for a reply")
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The raw stream, for tests that must see write errors.
    pub fn writer(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// Sends one command line and returns its reply.
    pub fn command(&mut self, line: &str) -> Response {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.read()
    }

    /// Reads the greeting and sends EHLO.
    pub fn greet(&mut self) -> Response {
        let greeting = self.read();
        assert_eq!(greeting.code, 220, "{greeting:?}");
        let ehlo = self.command("EHLO client.test.example");
        assert_eq!(ehlo.code, 250, "{ehlo:?}");
        ehlo
    }

    /// A full transaction; returns the reply to the final dot.
    pub fn send_message(&mut self, from: &str, to: &[&str], content: &[u8]) -> Response {
        let reply = self.command(&format!("MAIL FROM:<{from}>"));
        assert_eq!(reply.code, 250, "MAIL: {reply:?}");
        for recipient in to {
            let reply = self.command(&format!("RCPT TO:<{recipient}>"));
            assert_eq!(reply.code, 250, "RCPT: {reply:?}");
        }
        let reply = self.command("DATA");
        assert_eq!(reply.code, 354, "DATA: {reply:?}");
        self.send_raw(&dot_stuff(content));
        self.send_raw(b".\r\n");
        self.read()
    }
}

/// `relayq queue ARGS --config` of `relay`, as an operator runs it.
pub fn queue(relay: &TestRelay, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_relayq"))
        .arg("queue")
        .args(args)
        .arg("--config")
        .arg(&relay.config_path)
        .stdin(Stdio::null())
        .output()
        .expect("run relayq queue")
}

/// A queue command that must succeed; returns its stdout.
pub fn queue_ok(relay: &TestRelay, args: &[&str]) -> String {
    let output = queue(relay, args);
    assert!(
        output.status.success(),
        "relayq queue {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// A queue command run with `--json` that must succeed; returns its JSON.
pub fn queue_json(relay: &TestRelay, args: &[&str]) -> serde_json::Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&queue_ok(relay, &args)).expect("JSON output")
}

/// `relayq queue tail ARGS` of `relay`, its output lines collected as they
/// come.
pub fn spawn_tail(
    relay: &TestRelay,
    args: &[&str],
) -> (std::process::Child, Arc<Mutex<Vec<String>>>) {
    const FOLLOWING: &str = "control: a client follows the events";
    let following = relay.logs_text().matches(FOLLOWING).count();
    let mut tail = Command::new(env!("CARGO_BIN_EXE_relayq"))
        .args(["queue", "tail"])
        .args(args)
        .arg("--config")
        .arg(&relay.config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tail");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let collected = lines.clone();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            collected.lock().unwrap().push(line);
        }
    });
    // Returns once the daemon has the subscription, so no event the test
    // causes next can come before it.
    shaping::wait_until("queue tail follows the events", WAIT, || {
        relay.logs_text().matches(FOLLOWING).count() > following
    });
    (tail, lines)
}

/// The names of the files directly in `directory` (a maildrop).
pub fn maildrop_files(directory: &Path) -> Vec<String> {
    std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap())
        .filter(|entry| entry.file_type().unwrap().is_file())
        .map(|entry| entry.file_name().into_string().unwrap())
        .collect()
}

/// Extracts the queue id from `250 2.0.0 Ok: queued as ID`.
pub fn queued_id(response: &Response) -> QueueId {
    assert_eq!(response.code, 250, "{response:?}");
    let text = response.text();
    let id = text.rsplit(' ').next().unwrap();
    assert!(text.starts_with("2.0.0 Ok: queued as "), "{text}");
    id.parse()
        .unwrap_or_else(|_| panic!("bad queue id in {text}"))
}

/// What a command printed: its standard output, then its standard error.
pub fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
