//! Crash soak: cycles of SMTP load with deliveries in flight, each ended by
//! a SIGKILL at a random moment and followed by a restart. At the end every
//! message that got `250` has been delivered at least once, and every
//! duplicate belongs to a kill (a delivery in flight at that kill, the only
//! duplicate at-least-once delivery allows). `cargo test` runs 3 cycles;
//! `tests/bench/crash_soak.sh` runs the ignored long variant, which takes
//! its cycle count from `RELAYQ_SOAK_CYCLES` (default 20) and prints the
//! same report.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::TestRelay;
use crate::common::delivery::{config, start_mx, zone_with_sender_mx};
use crate::common::dns_server::TestDns;
use crate::common::fake_mx::{Received, Script, Stage};

/// The sink's address; `sender.test`'s MX (for bounces, which must not
/// happen) is the same sink on another address.
const SINK_IP: &str = "127.0.31.1";
const BOUNCE_IP: &str = "127.0.31.9";
/// Connections the relay may hold to the sink at once: at most this many
/// deliveries are in flight at a kill, so at most this many duplicates.
const DESTINATION_CONCURRENCY: usize = 8;
/// The sink waits this long before its reply to the final dot, so that
/// deliveries are in flight most of the time.
const SINK_FINAL_DELAY: Duration = Duration::from_millis(20);
/// Submitting clients, and each one's pause between messages: enough load
/// to keep the queue and the deliveries busy without outrunning delivery.
const CLIENTS: usize = 3;
const CLIENT_PAUSE: Duration = Duration::from_millis(15);
/// The header carrying each submitted message's unique token.
const TOKEN_HEADER: &str = "X-Soak-Token: ";
/// How long the queue may take to drain after the last restart.
const DRAIN_WITHIN: Duration = Duration::from_secs(120);

#[test]
fn crash_soak_short() {
    soak(3);
}

#[test]
#[ignore = "long: run by tests/bench/crash_soak.sh"]
fn crash_soak_long() {
    let cycles = std::env::var("RELAYQ_SOAK_CYCLES")
        .ok()
        .map(|value| value.parse().expect("RELAYQ_SOAK_CYCLES is a number"))
        .unwrap_or(20);
    soak(cycles);
}

/// What happened at one kill.
struct Kill {
    /// Load time since the process was ready.
    after: Duration,
    /// `250`s received by the clients before the kill.
    acknowledged: usize,
    /// Sink sessions open at the kill (busy or idle connections).
    sink_sessions: usize,
    /// Deliveries the sink recorded after the kill: their reply to the
    /// final dot was on its way when the relay died.
    recorded_after_kill: usize,
    /// Deliveries the sink had recorded when the process was gone, just
    /// before the restart: later deliveries belong to the next run.
    boundary: usize,
    /// `launch` until listening ("relayq ready") and the schedule rebuilt
    /// ("queue rebuilt in").
    restart: Duration,
    /// Messages the restarted daemon found queued.
    queued_at_restart: String,
}

fn soak(cycles: usize) {
    let sink = Script {
        delay_before: vec![(Stage::FinalDot, SINK_FINAL_DELAY)],
        ..Script::default()
    };
    let (port, servers) = start_mx(vec![(SINK_IP, sink), (BOUNCE_IP, Script::default())]);
    let dns = TestDns::start(
        zone_with_sender_mx(BOUNCE_IP)
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", SINK_IP),
    );
    let mut relay = TestRelay::start(&config(
        &dns,
        port,
        &format!("destination_concurrency = {DESTINATION_CONCURRENCY}"),
        "",
    ));
    let load = Load::start(relay.address);
    let random = RandomState::new();
    let mut kills = Vec::new();
    for cycle in 0..cycles {
        let ready = Instant::now();
        // Kill only once this run is delivering: wait for a new delivery,
        // then a random extra moment.
        let delivered = servers[0].messages().len();
        let now = servers[0]
            .wait_for_messages(delivered + 1, crate::common::WAIT)
            .len();
        assert!(
            now > delivered,
            "cycle {}: no delivery after the restart; relay log:\n{}",
            cycle + 1,
            relay.logs_text()
        );
        std::thread::sleep(Duration::from_millis(50 + random.hash_one(cycle) % 700));
        let sink_sessions = servers[0].active_sessions();
        let acknowledged = load.acknowledged();
        let after = ready.elapsed();
        relay.kill();
        let recorded_at_kill = servers[0].messages().len();
        load.pause();
        // Replies the sink was still sleeping on when the process died are
        // written (or fail) now; what it recorded by then was in flight.
        std::thread::sleep(SINK_FINAL_DELAY * 5);
        let boundary = servers[0].messages().len();
        let started = Instant::now();
        relay.launch();
        let restart = started.elapsed();
        let queued_at_restart = recovery_summary(&relay.wait_for_log(" messages queued"));
        load.resume(relay.address);
        kills.push(Kill {
            after,
            acknowledged,
            sink_sessions,
            recorded_after_kill: boundary - recorded_at_kill,
            boundary,
            restart,
            queued_at_restart,
        });
    }
    let acknowledged = load.stop();

    let tokens: BTreeSet<&str> = acknowledged
        .iter()
        .map(|(token, _)| token.as_str())
        .collect();
    let deadline = Instant::now() + DRAIN_WITHIN;
    let received = loop {
        let received = servers[0].messages();
        let delivered: BTreeSet<String> = received.iter().filter_map(token).collect();
        if tokens.iter().all(|t| delivered.contains(*t)) || Instant::now() > deadline {
            break received;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let report = Report::new(&acknowledged, &received, &kills);
    report.print(&kills);
    assert!(
        report.lost.is_empty(),
        "acknowledged but never delivered: {:?}; relay log:\n{}",
        report.lost,
        relay.logs_text()
    );
    assert_eq!(
        report.unexplained_duplicates, 0,
        "duplicates with no kill between the deliveries"
    );
    for (index, duplicates) in report.duplicates_per_kill.iter().enumerate() {
        assert!(
            *duplicates <= DESTINATION_CONCURRENCY,
            "kill {}: {duplicates} duplicates, more than could be in flight",
            index + 1
        );
    }
    assert!(
        servers[1].messages().is_empty(),
        "no bounce: every message was deliverable"
    );
}

/// From the daemon's startup line, what it found in the spool: "N messages
/// queued (high H, low L), C completed removed, Q set aside".
fn recovery_summary(line: &str) -> String {
    let Some(at) = line.find(" messages queued") else {
        return line.to_owned();
    };
    let start = line[..at].rfind(' ').map_or(0, |space| space + 1);
    line[start..].to_owned()
}

/// The token a delivered message carries.
fn token(message: &Received) -> Option<String> {
    let text = String::from_utf8_lossy(&message.data);
    let rest = text.split(TOKEN_HEADER).nth(1)?;
    Some(rest.split("\r\n").next()?.to_owned())
}

/// The comparison of what was acknowledged with what the sink received.
struct Report {
    acknowledged: usize,
    deliveries: usize,
    delivered_unique: usize,
    /// Tokens acknowledged and never delivered (must be none).
    lost: Vec<String>,
    /// Delivered but never acknowledged: the kill came between the commit
    /// and the `250` (or the session was cut); allowed.
    delivered_unacknowledged: usize,
    /// Per kill, repeats of deliveries made before that kill and after the
    /// one before it: deliveries that kill caught uncommitted.
    duplicates_per_kill: Vec<usize>,
    /// Repeats with no kill between them (must be none).
    unexplained_duplicates: usize,
}

impl Report {
    fn new(acknowledged: &[(String, String)], received: &[Received], kills: &[Kill]) -> Report {
        // Per token, the indices of its deliveries in the sink's order.
        let mut deliveries: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (index, message) in received.iter().enumerate() {
            if let Some(token) = token(message) {
                deliveries.entry(token).or_default().push(index);
            }
        }
        let acknowledged_tokens: BTreeSet<&str> = acknowledged
            .iter()
            .map(|(token, _)| token.as_str())
            .collect();
        let lost = acknowledged
            .iter()
            .filter(|(token, _)| !deliveries.contains_key(token))
            .map(|(token, id)| format!("{token} (queued as {id})"))
            .collect();
        let mut duplicates_per_kill = vec![0; kills.len()];
        let mut unexplained_duplicates = 0;
        for indices in deliveries.values() {
            for pair in indices.windows(2) {
                let (earlier, later) = (pair[0], pair[1]);
                // The first kill after the earlier delivery: it stopped the
                // relay before that delivery was committed. The repeat must
                // come after it (a later kill may come between too, when the
                // backlog delayed the retry).
                let kill = kills.iter().position(|kill| earlier < kill.boundary);
                match kill {
                    Some(kill) if kills[kill].boundary <= later => {
                        duplicates_per_kill[kill] += 1;
                    }
                    _ => unexplained_duplicates += 1,
                }
            }
        }
        Report {
            acknowledged: acknowledged.len(),
            deliveries: received.len(),
            delivered_unique: deliveries.len(),
            lost,
            delivered_unacknowledged: deliveries
                .keys()
                .filter(|token| !acknowledged_tokens.contains(token.as_str()))
                .count(),
            duplicates_per_kill,
            unexplained_duplicates,
        }
    }

    fn print(&self, kills: &[Kill]) {
        eprintln!("crash soak: {} cycles", kills.len());
        for (index, kill) in kills.iter().enumerate() {
            eprintln!(
                "  kill {:>2}: after {:>5} ms of load ({} acknowledged so far, {} sink sessions open, \
                 {} recorded after the kill); restart {:>4} ms ({}); duplicates {}",
                index + 1,
                kill.after.as_millis(),
                kill.acknowledged,
                kill.sink_sessions,
                kill.recorded_after_kill,
                kill.restart.as_millis(),
                kill.queued_at_restart,
                self.duplicates_per_kill[index],
            );
        }
        let mut restarts: Vec<u128> = kills.iter().map(|kill| kill.restart.as_millis()).collect();
        restarts.sort_unstable();
        if let (Some(first), Some(last)) = (restarts.first(), restarts.last()) {
            eprintln!(
                "  restart ms: min {first}, median {}, max {last}",
                restarts[restarts.len() / 2]
            );
        }
        eprintln!(
            "  acknowledged {}, delivered {} distinct in {} deliveries, lost {}, \
             duplicates {} (per kill {:?}; without a kill between {}), \
             delivered without a 250 seen {}",
            self.acknowledged,
            self.delivered_unique,
            self.deliveries,
            self.lost.len(),
            self.duplicates_per_kill.iter().sum::<usize>(),
            self.duplicates_per_kill,
            self.unexplained_duplicates,
            self.delivered_unacknowledged,
        );
    }
}

/// Clients submitting one message after another over SMTP, each with a
/// unique token, tolerating the relay's death: a session cut by a kill is
/// abandoned and only `250 ... queued as ID` counts as acknowledged.
struct Load {
    shared: Arc<LoadShared>,
    threads: Vec<JoinHandle<()>>,
}

struct LoadShared {
    /// Where to connect; `None` while the relay is down.
    address: Mutex<Option<SocketAddr>>,
    stop: AtomicBool,
    /// `(token, queue id)` per acknowledged message.
    acknowledged: Mutex<Vec<(String, String)>>,
}

impl Load {
    fn start(address: SocketAddr) -> Load {
        let shared = Arc::new(LoadShared {
            address: Mutex::new(Some(address)),
            stop: AtomicBool::new(false),
            acknowledged: Mutex::new(Vec::new()),
        });
        let threads = (0..CLIENTS)
            .map(|client| {
                let shared = shared.clone();
                std::thread::spawn(move || client_loop(client, &shared))
            })
            .collect();
        Load { shared, threads }
    }

    fn acknowledged(&self) -> usize {
        self.shared.acknowledged.lock().unwrap().len()
    }

    fn pause(&self) {
        *self.shared.address.lock().unwrap() = None;
    }

    fn resume(&self, address: SocketAddr) {
        *self.shared.address.lock().unwrap() = Some(address);
    }

    /// Stops the clients and returns every acknowledged `(token, id)`.
    fn stop(self) -> Vec<(String, String)> {
        self.shared.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            thread.join().expect("client thread");
        }
        std::mem::take(&mut *self.shared.acknowledged.lock().unwrap())
    }
}

fn client_loop(client: usize, shared: &LoadShared) {
    let mut sequence = 0u64;
    let mut session: Option<Session> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let Some(address) = *shared.address.lock().unwrap() else {
            session = None;
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if session.as_ref().is_none_or(|s| s.address != address) {
            session = Session::open(address);
            if session.is_none() {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        }
        sequence += 1;
        let token = format!("c{client}-m{sequence}");
        match session.as_mut().and_then(|s| s.send(&token)) {
            Some(id) => shared.acknowledged.lock().unwrap().push((token, id)),
            None => session = None,
        }
        std::thread::sleep(CLIENT_PAUSE);
    }
    if let Some(mut session) = session {
        session.quit();
    }
}

/// One client session that reports failures instead of panicking.
struct Session {
    address: SocketAddr,
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Session {
    fn open(address: SocketAddr) -> Option<Session> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
        stream.set_read_timeout(Some(crate::common::WAIT)).ok()?;
        stream.set_write_timeout(Some(crate::common::WAIT)).ok()?;
        let reader = BufReader::new(stream.try_clone().ok()?);
        let mut session = Session {
            address,
            stream,
            reader,
        };
        (session.reply()?.0 == 220).then_some(())?;
        (session.command("EHLO soak.test")?.0 == 250).then_some(())?;
        Some(session)
    }

    /// One transaction; the queue id when the relay answered `250` to the
    /// final dot.
    fn send(&mut self, token: &str) -> Option<String> {
        (self.command("MAIL FROM:<app@sender.test>")?.0 == 250).then_some(())?;
        (self.command("RCPT TO:<user@dest.test>")?.0 == 250).then_some(())?;
        (self.command("DATA")?.0 == 354).then_some(())?;
        let content = format!(
            "Subject: soak {token}\r\n{TOKEN_HEADER}{token}\r\n\r\nsoak message {token}\r\n.\r\n"
        );
        self.stream.write_all(content.as_bytes()).ok()?;
        let (code, text) = self.reply()?;
        if code != 250 {
            return None;
        }
        let id = text.rsplit(' ').next()?;
        Some(id.to_owned())
    }

    fn quit(&mut self) {
        let _ = self.command("QUIT");
    }

    fn command(&mut self, line: &str) -> Option<(u16, String)> {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .ok()?;
        self.reply()
    }

    /// The reply's code and its last line's text.
    fn reply(&mut self) -> Option<(u16, String)> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end();
            let code = line.get(..3)?.parse().ok()?;
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some((code, line.get(4..).unwrap_or_default().to_owned()));
            }
        }
    }
}
