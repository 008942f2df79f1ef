//! The SMTP listeners: bind, take a connection permit, accept, spawn a session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::session::{Session, SessionShared};
use crate::queue::Lane;

/// How often "connection limit reached" may be logged.
const FULL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Binds a listening socket with a backlog large enough for bursts of
/// connect-per-message clients.
pub fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

/// Accepts connections until `shutdown`. The permit of `limit_connections`
/// is taken *before* accept, so over the cap new clients wait in the kernel's
/// backlog instead of costing a task and a file descriptor each.
pub async fn accept_loop(
    listener: TcpListener,
    lane: Lane,
    shared: Arc<SessionShared>,
    limit_connections: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let mut last_full_log: Option<Instant> = None;
    loop {
        let permit = match limit_connections.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if last_full_log.is_none_or(|at| at.elapsed() >= FULL_LOG_INTERVAL) {
                    tracing::warn!(
                        "connection limit (smtp.max_connections) reached; new clients wait"
                    );
                    last_full_log = Some(Instant::now());
                }
                tokio::select! {
                    permit = limit_connections.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => return,
                    },
                    _ = shutdown.cancelled() => return,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tracker.spawn(async move {
            let _active = shared.metrics.smtp_connection();
            Session::new(stream, client, lane, shared).run().await;
            drop(permit);
        });
    }
}
