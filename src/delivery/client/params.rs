//! MAIL FROM and RCPT TO command lines with the parameters the next hop
//! offers and the message needs (RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531
//! SMTPUTF8, RFC 3461 DSN, RFC 6710 MT-PRIORITY). Pure.

use smtp_proto::{EXT_8BIT_MIME, EXT_DSN, EXT_MT_PRIORITY, EXT_SIZE, EXT_SMTP_UTF8};

use super::{OutboundMessage, OutboundRecipient};
use crate::queue::envelope::Ret;
use crate::wire::ehlo::Capabilities;

/// `MAIL FROM:<reverse-path> params CRLF`.
pub(super) fn mail_command(message: &OutboundMessage<'_>, offered: &Capabilities) -> String {
    let mut line = format!("MAIL FROM:<{}>", message.reverse_path);
    if offered.offers(EXT_SIZE) {
        line.push_str(&format!(" SIZE={}", message.size));
    }
    if message.eight_bit_mime && offered.offers(EXT_8BIT_MIME) {
        line.push_str(" BODY=8BITMIME");
    }
    if message.smtputf8 && offered.offers(EXT_SMTP_UTF8) {
        line.push_str(" SMTPUTF8");
    }
    if offered.offers(EXT_DSN) {
        match message.ret {
            Some(Ret::Full) => line.push_str(" RET=FULL"),
            Some(Ret::Headers) => line.push_str(" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = message.envid {
            line.push_str(" ENVID=");
            line.push_str(&xtext(envid));
        }
    }
    if let Some(priority) = message.mt_priority
        && offered.offers(EXT_MT_PRIORITY)
    {
        line.push_str(&format!(" MT-PRIORITY={priority}"));
    }
    line.push_str("\r\n");
    line
}

/// `RCPT TO:<forward-path> params CRLF`.
pub(super) fn rcpt_command(recipient: &OutboundRecipient, offered: &Capabilities) -> String {
    let mut line = format!("RCPT TO:<{}>", recipient.address);
    if offered.offers(EXT_DSN) {
        let notify = recipient.notify;
        if notify.never {
            line.push_str(" NOTIFY=NEVER");
        } else {
            let keywords: Vec<&str> = [
                (notify.success, "SUCCESS"),
                (notify.failure, "FAILURE"),
                (notify.delay, "DELAY"),
            ]
            .into_iter()
            .filter_map(|(set, keyword)| set.then_some(keyword))
            .collect();
            if !keywords.is_empty() {
                line.push_str(" NOTIFY=");
                line.push_str(&keywords.join(","));
            }
        }
        if let Some(orcpt) = &recipient.orcpt {
            line.push_str(" ORCPT=rfc822;");
            line.push_str(&xtext(orcpt));
        }
    }
    line.push_str("\r\n");
    line
}

/// RFC 3461 §4: octets outside 33..=126, and `+` and `=`, become `+HH`.
pub(super) fn xtext(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for &byte in value.as_bytes() {
        if (33..=126).contains(&byte) && byte != b'+' && byte != b'=' {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("+{byte:02X}"));
        }
    }
    encoded
}

/// Whether `address` can go on a command line as is: no controls (CR, LF),
/// no angle brackets. Intake validates addresses; this keeps a corrupt
/// envelope from injecting commands.
pub(super) fn is_safe_address(address: &str) -> bool {
    !address
        .bytes()
        .any(|byte| byte.is_ascii_control() || byte == b'<' || byte == b'>')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::envelope::Notify;

    fn offered(extensions: u32) -> Capabilities {
        Capabilities {
            extensions,
            max_size: 0,
            auth_mechanisms: 0,
        }
    }

    fn message<'a>(recipients: &'a [OutboundRecipient]) -> OutboundMessage<'a> {
        OutboundMessage {
            reverse_path: "a@example.com",
            recipients,
            size: 1234,
            eight_bit_mime: true,
            smtputf8: false,
            ret: Some(Ret::Headers),
            envid: Some("id+1 x"),
            mt_priority: Some(-3),
        }
    }

    #[test]
    fn xtext_encoding() {
        assert_eq!(xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(xtext("ü"), "+C3+BC");
        assert_eq!(xtext("plain@example.com"), "plain@example.com");
    }

    #[test]
    fn mail_parameters_follow_the_offer() {
        let all = EXT_SIZE | EXT_8BIT_MIME | EXT_DSN | EXT_MT_PRIORITY | EXT_SMTP_UTF8;
        assert_eq!(
            mail_command(&message(&[]), &offered(all)),
            "MAIL FROM:<a@example.com> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=id+2B1+20x MT-PRIORITY=-3\r\n"
        );
        assert_eq!(
            mail_command(&message(&[]), &offered(0)),
            "MAIL FROM:<a@example.com>\r\n"
        );
        let international = OutboundMessage {
            smtputf8: true,
            eight_bit_mime: false,
            ret: None,
            envid: None,
            mt_priority: None,
            ..message(&[])
        };
        assert_eq!(
            mail_command(&international, &offered(all)),
            "MAIL FROM:<a@example.com> SIZE=1234 SMTPUTF8\r\n"
        );
        let null_sender = OutboundMessage {
            reverse_path: "",
            ..message(&[])
        };
        assert_eq!(mail_command(&null_sender, &offered(0)), "MAIL FROM:<>\r\n");
    }

    #[test]
    fn rcpt_parameters_follow_the_offer() {
        let recipient = OutboundRecipient {
            address: "b@example.org".into(),
            notify: Notify {
                success: true,
                failure: true,
                ..Notify::default()
            },
            orcpt: Some("B+x@example.org".into()),
        };
        assert_eq!(
            rcpt_command(&recipient, &offered(EXT_DSN)),
            "RCPT TO:<b@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;B+2Bx@example.org\r\n"
        );
        assert_eq!(
            rcpt_command(&recipient, &offered(0)),
            "RCPT TO:<b@example.org>\r\n"
        );
        let never = OutboundRecipient {
            notify: Notify {
                never: true,
                ..Notify::default()
            },
            orcpt: None,
            ..recipient
        };
        assert_eq!(
            rcpt_command(&never, &offered(EXT_DSN)),
            "RCPT TO:<b@example.org> NOTIFY=NEVER\r\n"
        );
    }

    #[test]
    fn unsafe_addresses() {
        assert!(is_safe_address("user@example.com"));
        assert!(is_safe_address(""));
        assert!(!is_safe_address("a@b\r\nRSET"));
        assert!(!is_safe_address("a>@b"));
    }
}
