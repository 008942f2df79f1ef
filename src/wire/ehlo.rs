//! What a server offers in its EHLO reply (RFC 5321 §4.1.1.1): service
//! extensions, the SIZE limit (RFC 1870) and AUTH mechanisms (RFC 4954).
//! The parsing itself is smtp-proto's `EhloResponse`.

use smtp_proto::EhloResponse;

/// An EHLO reply smtp-proto cannot read: a line whose code is not 250, an
/// odd separator, or an incomplete reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unparsable EHLO reply: {0}")]
pub struct EhloError(smtp_proto::Error);

/// Extensions and limits from an EHLO reply; empty after HELO.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// smtp-proto's `EXT_*` flags.
    pub extensions: u32,
    /// SIZE; 0 when absent or unlimited.
    pub max_size: u64,
    /// smtp-proto's `AUTH_*` flags.
    pub auth_mechanisms: u64,
}

impl Capabilities {
    /// Whether `extension` (one of smtp-proto's `EXT_*` flags) is offered.
    pub fn offers(&self, extension: u32) -> bool {
        self.extensions & extension != 0
    }

    /// Parses a complete 250 EHLO reply, as received (line ends included).
    /// The first line is the server's name; keywords are matched without
    /// regard to case; unknown keywords are ignored.
    pub fn from_ehlo(raw: &[u8]) -> Result<Capabilities, EhloError> {
        let parsed = EhloResponse::parse(&mut raw.iter()).map_err(EhloError)?;
        Ok(Capabilities {
            extensions: parsed.capabilities,
            max_size: parsed.size as u64,
            auth_mechanisms: parsed.auth_mechanisms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smtp_proto::{
        AUTH_LOGIN, AUTH_PLAIN, EXT_8BIT_MIME, EXT_DSN, EXT_PIPELINING, EXT_SIZE, EXT_SMTP_UTF8,
        EXT_START_TLS,
    };

    #[test]
    fn extensions_size_and_auth() {
        let raw = b"250-mx.test hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-AUTH LOGIN PLAIN\r\n250 DSN\r\n";
        let capabilities = Capabilities::from_ehlo(raw).unwrap();
        assert!(capabilities.offers(EXT_PIPELINING));
        assert!(capabilities.offers(EXT_DSN));
        assert!(!capabilities.offers(EXT_START_TLS));
        assert_eq!(capabilities.max_size, 1000);
        assert_ne!(capabilities.auth_mechanisms & AUTH_PLAIN, 0);
        assert_ne!(capabilities.auth_mechanisms & AUTH_LOGIN, 0);
        let bare = Capabilities::from_ehlo(b"250 mx.test\r\n").unwrap();
        assert_eq!(bare, Capabilities::default());
    }

    #[test]
    fn keywords_on_the_first_line_are_the_server_name() {
        let offered = Capabilities::from_ehlo(b"250-relay\r\n250-SIZE 100\r\n250 DSN\r\n").unwrap();
        assert!(offered.offers(EXT_SIZE) && offered.offers(EXT_DSN));
        assert!(!offered.offers(EXT_SMTP_UTF8));
        let named = Capabilities::from_ehlo(b"250-DSN\r\n250 8BITMIME\r\n").unwrap();
        assert!(!named.offers(EXT_DSN) && named.offers(EXT_8BIT_MIME));
    }

    #[test]
    fn keywords_in_any_case_and_bare_lf() {
        let offered =
            Capabilities::from_ehlo(b"250-mx\n250-size\n250-smtputf8\n250 StartTLS\n").unwrap();
        assert!(offered.offers(EXT_SIZE) && offered.offers(EXT_SMTP_UTF8));
        assert!(offered.offers(EXT_START_TLS));
        assert_eq!(offered.max_size, 0);
        let unreadable_size = Capabilities::from_ehlo(b"250-mx\r\n250 SIZE lots\r\n").unwrap();
        assert!(unreadable_size.offers(EXT_SIZE));
        assert_eq!(unreadable_size.max_size, 0);
    }

    #[test]
    fn unparsable_replies_are_errors() {
        for raw in [
            &b"550 no\r\n"[..],
            b"250-mx\r\n251 DSN\r\n",
            b"250-mx\r\n250-DSN",
            b"",
            b"hello\r\n",
        ] {
            let Err(error) = Capabilities::from_ehlo(raw) else {
                panic!("{:?} parsed", String::from_utf8_lossy(raw));
            };
            assert!(
                error.to_string().starts_with("unparsable EHLO reply: "),
                "{error}"
            );
        }
    }
}
