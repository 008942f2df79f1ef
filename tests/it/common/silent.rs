//! A server that accepts TCP connections and never says anything: a hung
//! Redis, a tarpit MTA-STS policy host. It counts the connections it was
//! given, and how many were open at once.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Default)]
struct Counts {
    accepted: usize,
    open: usize,
    most_open: usize,
}

/// Stops (closing every connection) on drop.
pub struct SilentServer {
    pub address: SocketAddr,
    counts: Arc<Mutex<Counts>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SilentServer {
    /// Listens on `address` (port 0: a spare one).
    pub fn start(address: &str) -> SilentServer {
        let listener = TcpListener::bind(address)
            .unwrap_or_else(|error| panic!("bind {address} (tests run as root): {error}"));
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let address = listener.local_addr().expect("address");
        let counts = Arc::new(Mutex::new(Counts::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let counts = counts.clone();
            let stop = stop.clone();
            std::thread::spawn(move || accept(listener, counts, stop))
        };
        SilentServer {
            address,
            counts,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counts.lock().unwrap().accepted
    }

    /// Connections open now (the client has not closed them).
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap().open
    }

    /// The most connections that were open at once.
    pub fn most_open(&self) -> usize {
        self.counts.lock().unwrap().most_open
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept(listener: TcpListener, counts: Arc<Mutex<Counts>>, stop: Arc<AtomicBool>) {
    let mut readers = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                {
                    let mut counts = counts.lock().unwrap();
                    counts.accepted += 1;
                    counts.open += 1;
                    counts.most_open = counts.most_open.max(counts.open);
                }
                let counts = counts.clone();
                let stop = stop.clone();
                readers.push(std::thread::spawn(move || swallow(stream, counts, stop)));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
}

/// Reads and drops whatever comes until the client closes the connection.
fn swallow(mut stream: TcpStream, counts: Arc<Mutex<Counts>>, stop: Arc<AtomicBool>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buffer = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    counts.lock().unwrap().open -= 1;
}

/// A listening socket whose accept queue is full, so the kernel drops new
/// connection attempts, as a firewall dropping packets would: connecting
/// to it hangs until the client gives up. Closed on drop.
pub struct BlackHole {
    _listener: TcpListener,
    _queued: Vec<TcpStream>,
}

impl BlackHole {
    pub fn start(address: &str) -> BlackHole {
        let address: SocketAddr = address.parse().expect("address");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        // A backlog of 0: one connection fills the queue.
        let listener = runtime
            .block_on(async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(address)?;
                socket.listen(0)?.into_std()
            })
            .unwrap_or_else(|error| panic!("listen on {address} (tests run as root): {error}"));
        let mut queued = Vec::new();
        while let Ok(stream) = TcpStream::connect_timeout(&address, Duration::from_millis(300)) {
            queued.push(stream);
            assert!(
                queued.len() < 16,
                "the accept queue of {address} never fills"
            );
        }
        BlackHole {
            _listener: listener,
            _queued: queued,
        }
    }
}
