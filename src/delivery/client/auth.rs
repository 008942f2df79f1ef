//! AUTH PLAIN and LOGIN (RFC 4954, RFC 4616) for routes with credentials.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use smtp_proto::{AUTH_LOGIN, AUTH_PLAIN};

use super::connection::session_error;
use super::transport::Transport;
use super::{ClientSettings, ConnectError, ConnectErrorKind, Credentials, RemoteReply, Target};
use crate::wire::ehlo::Capabilities;

/// AUTH PLAIN when offered, else AUTH LOGIN (RFC 4954). The caller has made
/// sure the connection is encrypted. Nothing here logs or reports the
/// password or the encoded exchange.
pub(super) async fn authenticate(
    transport: &mut Transport,
    target: &Target,
    settings: &ClientSettings,
    offered: &Capabilities,
    credentials: &Credentials,
) -> Result<(), ConnectError> {
    const STAGE_SEND: &str = "sending AUTH";
    const STAGE_READ: &str = "waiting for reply to AUTH";
    let limit = settings.command_timeout;
    let session = |error| session_error(target, error);
    let refused = |reply: RemoteReply| {
        ConnectError::refused(
            ConnectErrorKind::Auth,
            format!(
                "{target} refused authentication as {}: {reply}",
                credentials.username
            ),
            reply,
        )
    };
    if offered.auth_mechanisms & AUTH_PLAIN != 0 {
        let token = BASE64
            .encode(format!("\0{}\0{}", credentials.username, credentials.password).as_bytes());
        let command = format!("AUTH PLAIN {token}\r\n");
        transport
            .send(command.as_bytes(), limit, STAGE_SEND)
            .await
            .map_err(session)?;
    } else if offered.auth_mechanisms & AUTH_LOGIN != 0 {
        transport
            .send(b"AUTH LOGIN\r\n", limit, STAGE_SEND)
            .await
            .map_err(session)?;
        for secret in [&credentials.username, &credentials.password] {
            let reply = transport
                .read_reply(limit, STAGE_READ)
                .await
                .map_err(session)?;
            if reply.code != 334 {
                return Err(refused(reply));
            }
            let line = format!("{}\r\n", BASE64.encode(secret.as_bytes()));
            transport
                .send(line.as_bytes(), limit, STAGE_SEND)
                .await
                .map_err(session)?;
        }
    } else {
        return Err(ConnectError::new(
            ConnectErrorKind::Auth,
            format!("{target} offers neither AUTH PLAIN nor AUTH LOGIN"),
        ));
    }
    let reply = transport
        .read_reply(limit, STAGE_READ)
        .await
        .map_err(session)?;
    if reply.is_positive() {
        Ok(())
    } else {
        Err(refused(reply))
    }
}
