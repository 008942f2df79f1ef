//! systemd service notifications (sd_notify(3)) without libsystemd: one
//! datagram per state change to the socket named in `NOTIFY_SOCKET`.
//!
//! With `Type=notify` systemd considers relayq started only once it says
//! `READY=1` (spool opened, listeners up; the queue's rebuild may still run),
//! shows its `STATUS=` line in `systemctl status` (the rebuild's progress,
//! then the messages it found), and with `WatchdogSec=` restarts it when the
//! `WATCHDOG=1` pings stop. Pings are sent only while the spool is healthy:
//! a spool that can no longer commit gets a restart, not a silent hang.
//! Without `NOTIFY_SOCKET` (not run by systemd) every call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// The notifier systemd asked for through the environment, if any. A
    /// socket name that cannot be used is logged once and ignored.
    pub fn from_env() -> Notifier {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        let target = socket_address(&name.to_string_lossy()).and_then(|address| {
            let socket = UnixDatagram::unbound()?;
            Ok((socket, address))
        });
        match target {
            Ok(target) => Notifier {
                target: Some(target),
            },
            Err(error) => {
                tracing::warn!("NOTIFY_SOCKET {name:?} cannot be used: {error}");
                Notifier { target: None }
            }
        }
    }

    /// Sends `state` (`KEY=value` lines). Best effort: systemd going away
    /// must not stop mail.
    pub fn notify(&self, state: &str) {
        if let Some((socket, address)) = &self.target
            && let Err(error) = socket.send_to_addr(state.as_bytes(), address)
        {
            tracing::debug!("sd_notify {state:?}: {error}");
        }
    }

    /// A reload begins; `READY=1` says it ended (sd_notify(3)).
    pub fn reloading(&self) {
        self.notify("RELOADING=1\nSTATUS=reloading the configuration");
    }

    /// How often to ping the watchdog: half of `WATCHDOG_USEC`, when it is
    /// set for this process (sd_watchdog_enabled(3)).
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref()?;
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID")
            && pid.parse::<u32>().ok() != Some(std::process::id())
        {
            return None;
        }
        (usec > 0).then(|| Duration::from_micros(usec / 2))
    }
}

/// A path, or `@name` for a Linux abstract socket.
fn socket_address(name: &str) -> std::io::Result<SocketAddr> {
    if let Some(abstract_name) = name.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(abstract_name.as_bytes())
    } else {
        SocketAddr::from_pathname(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_abstract_names() {
        let path = socket_address("/run/systemd/notify").unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        let abstract_address = socket_address("@relayq-test").unwrap();
        use std::os::linux::net::SocketAddrExt;
        assert_eq!(
            abstract_address.as_abstract_name(),
            Some(&b"relayq-test"[..])
        );
    }

    #[test]
    fn datagrams_reach_the_socket() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier {
            target: Some((
                UnixDatagram::unbound().unwrap(),
                SocketAddr::from_pathname(&path).unwrap(),
            )),
        };
        notifier.notify("READY=1");
        let mut buffer = [0u8; 64];
        let length = listener.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..length], b"READY=1");
        Notifier { target: None }.notify("READY=1");
    }
}
