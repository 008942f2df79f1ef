//! One Redis connection of the stream's publisher or follower: opened when
//! needed with connect and response timeouts, dropped after a failure and
//! tried again after a pause; and the log of whether Redis answers.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{CONNECT_TIMEOUT, RETRY_MIN, WARN_EVERY};

/// One Redis connection, opened when needed, dropped after a failure.
pub(super) struct Connection {
    response_timeout: Duration,
    open: Option<(String, MultiplexedConnection)>,
    retry_at: Option<Instant>,
}

impl Connection {
    pub(super) fn new(response_timeout: Duration) -> Connection {
        Connection {
            response_timeout,
            open: None,
            retry_at: None,
        }
    }

    pub(super) async fn get(
        &mut self,
        url: &str,
        health: &Health,
    ) -> Option<MultiplexedConnection> {
        if let Some((open_url, connection)) = &self.open
            && open_url == url
        {
            return Some(connection.clone());
        }
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return None;
        }
        let client = match redis::Client::open(url) {
            Ok(client) => client,
            Err(error) => {
                self.failed(health, &error.to_string());
                return None;
            }
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.response_timeout));
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        match connected {
            Ok(Ok(connection)) => {
                self.open = Some((url.to_owned(), connection.clone()));
                Some(connection)
            }
            Ok(Err(error)) => {
                self.failed(health, &error.to_string());
                None
            }
            Err(_) => {
                self.failed(health, "connection timed out");
                None
            }
        }
    }

    /// Drops the connection after a failure; always `false` (nothing sent).
    pub(super) fn failed(&mut self, health: &Health, reason: &str) -> bool {
        self.open = None;
        self.retry_at = Some(Instant::now() + RETRY_MIN);
        health.down(reason);
        false
    }
}

/// Whether Redis answers, for the log: a warning at most once a minute
/// while it does not, a line when it does again.
#[derive(Default)]
pub(super) struct Health {
    state: Mutex<HealthState>,
}

#[derive(Default)]
struct HealthState {
    down: bool,
    last_warning: Option<Instant>,
}

impl Health {
    pub(super) fn up(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if std::mem::take(&mut state.down) {
            tracing::info!("suppression stream: Redis answers again; catching up");
        }
    }

    pub(super) fn down(&self, reason: &str) {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.down = true;
        if state
            .last_warning
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY)
        {
            state.last_warning = Some(now);
            tracing::warn!(
                "suppression stream: cannot reach Redis ({reason}); this relay keeps its own list and catches up later"
            );
        }
    }
}

pub(super) async fn wait(shutdown: &CancellationToken, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = shutdown.cancelled() => {}
    }
}
