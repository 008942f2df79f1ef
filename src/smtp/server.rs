//! The SMTP listeners: bind, accept, take a connection permit from the
//! server's pressure logic, spawn a session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::pressure::Pressure;
use super::session::{Security, Session, SessionShared};
use super::stream::InboundStream;
use crate::queue::Lane;

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

/// Accepts connections until `shutdown`. Every listener's loop draws on the
/// same `pressure` (one pool of `smtp.max_connections` permits per server).
/// A loop takes the permit right after accept and accepts nothing more until
/// it has one, so over the cap at most one client per listener is held
/// without a greeting while the others wait in the kernel's backlog; that
/// client is the evidence the pressure logic sheds an idle session for.
///
/// A session uses the listener's certificate as it is at the session's TLS
/// handshake; a reload replaces it for later handshakes only.
pub async fn accept_loop(
    listener: TcpListener,
    lane: Lane,
    security: Security,
    shared: Arc<SessionShared>,
    pressure: Arc<Pressure>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
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
        let Some(lease) = pressure.admit(&shutdown).await else {
            return;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let security = security.clone();
        tracker.spawn(async move {
            let _active = shared.metrics.smtp_connection();
            Session::new(InboundStream::Plain(stream), client, lane, shared)
                .with_lease(lease)
                .with_security(security)
                .run()
                .await;
        });
    }
}
