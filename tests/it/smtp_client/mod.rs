//! The outbound SMTP client (`relayq::delivery::client`) against scripted
//! fake MX servers on loopback: what arrives, byte for byte, and the
//! outcome each recipient gets. This module holds the client settings and
//! helpers its submodules share, one submodule per behaviour.

mod auth;
mod connection_reuse;
mod content;
mod extensions;
mod pipelining;
mod recipient_outcomes;
mod session_failures;
mod tls;

use std::sync::OnceLock;
use std::time::Duration;

use relayq::delivery::client::{
    Attempt, ClientSettings, Connection, Disposition, OutboundMessage, OutboundRecipient, Target,
    TlsMode,
};
use relayq::queue::envelope::Notify;
use relayq::tls::TlsConfigs;

use crate::common::fake_mx::{FakeMx, Script, test_ca};

fn settings() -> ClientSettings {
    ClientSettings {
        helo_name: "relay.test".to_owned(),
        connect_timeout: Duration::from_secs(5),
        greeting_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(5),
        final_timeout: Duration::from_secs(5),
    }
}

/// Trusts the system roots only: the test CA is unknown.
fn system_trust() -> &'static TlsConfigs {
    static CONFIGS: OnceLock<TlsConfigs> = OnceLock::new();
    CONFIGS.get_or_init(|| TlsConfigs::load().unwrap())
}

/// Also trusts the test CA.
fn test_trust() -> &'static TlsConfigs {
    static CONFIGS: OnceLock<TlsConfigs> = OnceLock::new();
    CONFIGS.get_or_init(|| TlsConfigs::with_extra_ca(test_ca().0.ca_pem.as_bytes()).unwrap())
}

fn start(script: Script) -> FakeMx {
    FakeMx::start("127.0.0.1:0".parse().unwrap(), script).unwrap()
}

fn target(mx: &FakeMx) -> Target {
    Target {
        host: "mx.test".to_owned(),
        address: mx.address,
    }
}

async fn open(mx: &FakeMx, tls: TlsMode) -> Connection {
    Connection::open(&target(mx), &settings(), tls, None, system_trust())
        .await
        .expect("session opens")
}

/// A plaintext session with `settings` (shorter timeouts).
async fn open_with(mx: &FakeMx, settings: &ClientSettings) -> Connection {
    Connection::open(
        &target(mx),
        settings,
        TlsMode::Disabled,
        None,
        system_trust(),
    )
    .await
    .expect("session opens")
}

fn recipients(addresses: &[&str]) -> Vec<OutboundRecipient> {
    addresses
        .iter()
        .map(|address| OutboundRecipient {
            address: (*address).to_owned(),
            notify: Notify::default(),
            orcpt: None,
        })
        .collect()
}

fn message<'a>(recipients: &'a [OutboundRecipient], body: &[u8]) -> OutboundMessage<'a> {
    OutboundMessage {
        reverse_path: "sender@example.com",
        recipients,
        size: body.len() as u64,
        eight_bit_mime: false,
        smtputf8: false,
        ret: None,
        envid: None,
        mt_priority: None,
    }
}

async fn send(connection: &mut Connection, addresses: &[&str], body: &[u8]) -> Attempt {
    let recipients = recipients(addresses);
    connection.deliver(&message(&recipients, body), body).await
}

fn dispositions(attempt: &Attempt) -> Vec<Disposition> {
    attempt
        .outcomes
        .iter()
        .map(|outcome| outcome.disposition)
        .collect()
}
