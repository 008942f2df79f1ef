//! One SMTP command line → a typed command, pure (no I/O).
//!
//! smtp-proto recognises the verb and the ESMTP parameters; the path itself is
//! cut out and checked by `address`, so quoted local parts, `<>` versus
//! `<postmaster>` and `<a@>` are handled the way RFC 5321 wants.

use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, Error as ProtoError, MAIL_BODY_8BITMIME, MAIL_BODY_BINARYMIME,
    MAIL_BY_NOTIFY, MAIL_BY_RETURN, MAIL_BY_TRACE, MAIL_CONPERM, MAIL_REQUIRETLS, MAIL_RET_FULL,
    MAIL_RET_HDRS, MAIL_SMTPUTF8, RCPT_CONNEG, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE,
    RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS, RCPT_RRVS_CONTINUE, RCPT_RRVS_REJECT, Request,
};

use super::address::{self, AddressError, Mailbox};
use super::auth::sasl::Mechanism;
use super::reply::Reply;
use crate::queue::envelope::{Notify, Ret};

/// A parsed command. Everything the session needs, nothing borrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    Mail(MailCommand),
    Rcpt(RcptCommand),
    Data,
    Bdat {
        chunk_size: usize,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    StartTls,
    /// RFC 4954 AUTH. `mechanism` is `None` for one this server does not
    /// know; `initial_response` is the base64 text (`=` for empty) if given.
    Auth {
        mechanism: Option<Mechanism>,
        initial_response: Option<String>,
    },
    /// Recognised but not offered by this server (EXPN, ETRN, ...).
    NotImplemented(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailCommand {
    /// `None` is the null reverse-path `<>`.
    pub reverse_path: Option<Mailbox>,
    /// RFC 1870 SIZE declaration, if any.
    pub declared_size: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub ret: Option<Ret>,
    pub envid: Option<String>,
    /// RFC 6710 priority, validated to −9..=9; `None` when absent or 0
    /// (both mean "normal").
    pub mt_priority: Option<i8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptCommand {
    pub forward_path: Mailbox,
    pub notify: Notify,
    /// RFC 3461 ORCPT, decoded from xtext, without the `rfc822;` type.
    pub orcpt: Option<String>,
}

/// What the caller must know about the session to parse a line.
#[derive(Debug, Clone, Copy)]
pub struct ParseContext {
    /// The client greeted with EHLO: ESMTP parameters are allowed.
    pub extended: bool,
    /// The current transaction's MAIL carried SMTPUTF8.
    pub smtputf8: bool,
}

/// Parses one command line (without its CRLF). Errors are the reply to send.
pub fn parse(line: &[u8], context: ParseContext) -> Result<Command, Reply> {
    let verb = line.get(..4).unwrap_or(line);
    if verb.eq_ignore_ascii_case(b"MAIL") {
        return parse_mail(line, context);
    }
    if verb.eq_ignore_ascii_case(b"RCPT") {
        return parse_rcpt(line, context);
    }
    let request = proto_parse(line)?;
    Ok(match request {
        Request::Ehlo { host } => Command::Ehlo(host),
        Request::Helo { host } => Command::Helo(host),
        Request::Data => Command::Data,
        Request::Bdat {
            chunk_size,
            is_last,
        } => Command::Bdat {
            chunk_size,
            last: is_last,
        },
        Request::Rset => Command::Rset,
        Request::Noop { .. } => Command::Noop,
        Request::Quit => Command::Quit,
        Request::Vrfy { .. } => Command::Vrfy,
        Request::Help { .. } => Command::Help,
        Request::StartTls => Command::StartTls,
        Request::Auth {
            mechanism,
            initial_response,
        } => Command::Auth {
            mechanism: match mechanism {
                AUTH_PLAIN => Some(Mechanism::Plain),
                AUTH_LOGIN => Some(Mechanism::Login),
                _ => None,
            },
            initial_response: (!initial_response.is_empty()).then_some(initial_response),
        },
        Request::Expn { .. } => Command::NotImplemented("EXPN"),
        Request::Etrn { .. } => Command::NotImplemented("ETRN"),
        Request::Atrn { .. } => Command::NotImplemented("ATRN"),
        Request::Burl { .. } => Command::NotImplemented("BURL"),
        Request::Lhlo { .. } => Command::NotImplemented("LHLO"),
        // smtp-proto skips white space before the verb, so ` MAIL …` and
        // ` RCPT …` get here; the verb must start the line (RFC 5321
        // §4.1.1), and the path parsing above only reads it there.
        Request::Mail { .. } | Request::Rcpt { .. } => {
            return Err(Reply::new(500, "5.5.2", "Error: command not recognized"));
        }
    })
}

fn proto_parse(line: &[u8]) -> Result<Request<String>, Reply> {
    let mut framed = Vec::with_capacity(line.len() + 2);
    framed.extend_from_slice(line);
    framed.extend_from_slice(b"\r\n");
    match Request::parse(&mut framed.iter()) {
        Ok(request) => Ok(request.into_owned()),
        Err(error) => Err(proto_error_reply(error)),
    }
}

fn proto_error_reply(error: ProtoError) -> Reply {
    match error {
        ProtoError::UnknownCommand | ProtoError::NeedsMoreData { .. } => {
            Reply::new(500, "5.5.2", "Error: command not recognized")
        }
        ProtoError::SyntaxError { syntax } => {
            Reply::new(501, "5.5.4", format!("Syntax error, expected: {syntax}"))
        }
        ProtoError::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", format!("Invalid value for parameter {param}"))
        }
        ProtoError::UnsupportedParameter { param } => {
            Reply::new(555, "5.5.4", format!("Unsupported parameter {param}"))
        }
        ProtoError::InvalidSenderAddress => Reply::new(501, "5.1.7", "Bad sender address syntax"),
        ProtoError::InvalidRecipientAddress => {
            Reply::new(501, "5.1.3", "Bad recipient address syntax")
        }
        ProtoError::ResponseTooLong => Reply::new(500, "5.5.2", "Error: line too long"),
        ProtoError::InvalidResponse { .. } => Reply::new(500, "5.5.2", "Error: bad syntax"),
    }
}

/// Splits `MAIL FROM:<path> params` into the path text and a line that
/// smtp-proto can parse for the parameters, with the path replaced by a
/// placeholder it accepts.
fn split_path<'a>(
    line: &'a str,
    keyword: &str,
    placeholder: &str,
) -> Result<(&'a str, String), Reply> {
    let syntax = || {
        Reply::new(
            501,
            "5.5.4",
            format!(
                "Syntax error, expected: {} {keyword}:<address> [parameters]",
                &line[..4]
            ),
        )
    };
    let colon = line.find(':').ok_or_else(syntax)?;
    if !line[4..colon].trim().eq_ignore_ascii_case(keyword) {
        return Err(syntax());
    }
    let (inner, range) = address::locate_path(line).ok_or_else(syntax)?;
    let rest = &line[range.end..];
    if !rest.is_empty() && !rest.starts_with(' ') {
        return Err(syntax());
    }
    let canonical = format!("{} {keyword}:<{placeholder}>{rest}", &line[..4]);
    Ok((inner, canonical))
}

fn line_as_str(line: &[u8]) -> Result<&str, Reply> {
    std::str::from_utf8(line)
        .map_err(|_| Reply::new(553, "5.6.7", "Error: command contains invalid UTF-8"))
}

fn parse_mail(line: &[u8], context: ParseContext) -> Result<Command, Reply> {
    let line = line_as_str(line)?;
    let (inner, canonical) = split_path(line, "FROM", "")?;
    let Request::Mail { from } = proto_parse(canonical.as_bytes())? else {
        return Err(Reply::new(501, "5.5.4", "Syntax error in MAIL command"));
    };
    let has_parameters = canonical.trim_end().len() > "MAIL FROM:<>".len();
    if has_parameters && !context.extended {
        return Err(Reply::new(555, "5.5.4", "MAIL parameters require EHLO"));
    }
    if from.flags & MAIL_BODY_BINARYMIME != 0 {
        return Err(not_advertised("BODY=BINARYMIME"));
    }
    if from.flags & MAIL_REQUIRETLS != 0 {
        return Err(not_advertised("REQUIRETLS"));
    }
    if from.flags & MAIL_CONPERM != 0 {
        return Err(not_advertised("CONPERM"));
    }
    if from.flags & (MAIL_BY_NOTIFY | MAIL_BY_RETURN | MAIL_BY_TRACE) != 0 || from.by != 0 {
        return Err(not_advertised("BY"));
    }
    if from.auth.is_some() {
        return Err(not_advertised("AUTH"));
    }
    if from.trans_id.is_some() || from.mtrk.is_some() {
        return Err(not_advertised("MTRK"));
    }
    if from.solicit.is_some() {
        return Err(not_advertised("SOLICIT"));
    }
    if from.hold_for != 0 || from.hold_until != 0 {
        return Err(not_advertised("FUTURERELEASE"));
    }
    if !(-9..=9).contains(&from.mt_priority) {
        return Err(Reply::new(
            501,
            "5.5.4",
            "Invalid MT-PRIORITY value, must be between -9 and 9",
        ));
    }
    let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
    let reverse_path = address::parse_reverse_path(inner, smtputf8)
        .map_err(|error| address_error_reply(error, "5.1.7", "sender"))?;
    let ret = if from.flags & MAIL_RET_FULL != 0 {
        Some(Ret::Full)
    } else if from.flags & MAIL_RET_HDRS != 0 {
        Some(Ret::Headers)
    } else {
        None
    };
    Ok(Command::Mail(MailCommand {
        reverse_path,
        declared_size: (from.size != 0).then_some(from.size as u64),
        eight_bit_mime: from.flags & MAIL_BODY_8BITMIME != 0,
        smtputf8,
        ret,
        envid: from.env_id,
        mt_priority: (from.mt_priority != 0).then_some(from.mt_priority as i8),
    }))
}

fn parse_rcpt(line: &[u8], context: ParseContext) -> Result<Command, Reply> {
    let line = line_as_str(line)?;
    let (inner, canonical) = split_path(line, "TO", "placeholder@relayq.invalid")?;
    let Request::Rcpt { to } = proto_parse(canonical.as_bytes())? else {
        return Err(Reply::new(501, "5.5.4", "Syntax error in RCPT command"));
    };
    let has_parameters = canonical.trim_end().len() > "RCPT TO:<placeholder@relayq.invalid>".len();
    if has_parameters && !context.extended {
        return Err(Reply::new(555, "5.5.4", "RCPT parameters require EHLO"));
    }
    if to.flags & (RCPT_RRVS_REJECT | RCPT_RRVS_CONTINUE) != 0 || to.rrvs != 0 {
        return Err(not_advertised("RRVS"));
    }
    if to.flags & RCPT_CONNEG != 0 {
        return Err(not_advertised("CONNEG"));
    }
    let forward_path = address::parse_forward_path(inner, context.smtputf8)
        .map_err(|error| address_error_reply(error, "5.1.3", "recipient"))?;
    let notify = Notify {
        success: to.flags & RCPT_NOTIFY_SUCCESS != 0,
        failure: to.flags & RCPT_NOTIFY_FAILURE != 0,
        delay: to.flags & RCPT_NOTIFY_DELAY != 0,
        never: to.flags & RCPT_NOTIFY_NEVER != 0,
    };
    if notify.never && (notify.success || notify.failure || notify.delay) {
        return Err(Reply::new(
            501,
            "5.5.4",
            "NOTIFY=NEVER cannot be combined with other values",
        ));
    }
    Ok(Command::Rcpt(RcptCommand {
        forward_path,
        notify,
        orcpt: to.orcpt,
    }))
}

fn not_advertised(parameter: &str) -> Reply {
    Reply::new(
        555,
        "5.5.4",
        format!("Parameter {parameter} not supported by this server"),
    )
}

fn address_error_reply(error: AddressError, syntax_status: &'static str, role: &str) -> Reply {
    match error {
        AddressError::NeedsSmtpUtf8 => Reply::new(
            553,
            "5.6.7",
            format!("Non-ASCII {role} address requires SMTPUTF8"),
        ),
        AddressError::Syntax(reason) => Reply::new(
            501,
            syntax_status,
            format!("Bad {role} address syntax: {reason}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESMTP: ParseContext = ParseContext {
        extended: true,
        smtputf8: false,
    };

    fn parse_ok(line: &str) -> Command {
        parse(line.as_bytes(), ESMTP).unwrap_or_else(|reply| panic!("{line}: {reply}"))
    }

    fn parse_err(line: &str) -> Reply {
        parse(line.as_bytes(), ESMTP).expect_err(line)
    }

    #[test]
    fn mail_with_parameters() {
        let Command::Mail(mail) = parse_ok(
            "MAIL FROM:<a@example.com> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=abc+2B1 MT-PRIORITY=-3",
        ) else {
            panic!("not MAIL");
        };
        assert_eq!(mail.reverse_path.unwrap().to_string(), "a@example.com");
        assert_eq!(mail.declared_size, Some(1000));
        assert!(mail.eight_bit_mime);
        assert_eq!(mail.ret, Some(Ret::Headers));
        assert_eq!(mail.envid.as_deref(), Some("abc+1"));
        assert_eq!(mail.mt_priority, Some(-3));
    }

    #[test]
    fn null_sender_and_postmaster_are_distinct() {
        let Command::Mail(null) = parse_ok("MAIL FROM:<>") else {
            panic!()
        };
        assert_eq!(null.reverse_path, None);
        let Command::Rcpt(rcpt) = parse_ok("RCPT TO:<Postmaster>") else {
            panic!()
        };
        assert_eq!(rcpt.forward_path.local_part, "Postmaster");
    }

    #[test]
    fn quoted_local_part_survives() {
        let Command::Rcpt(rcpt) = parse_ok(
            "RCPT TO:<\"john doe\"@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;john+20doe@example.com",
        ) else {
            panic!()
        };
        assert_eq!(rcpt.forward_path.to_string(), "\"john doe\"@example.com");
        assert!(rcpt.notify.success && rcpt.notify.failure && !rcpt.notify.delay);
        assert_eq!(rcpt.orcpt.as_deref(), Some("john doe@example.com"));
    }

    /// Found by the `command_line` fuzz target: MAIL or RCPT after white
    /// space reached an `unreachable!` (a panic on network input).
    #[test]
    fn mail_and_rcpt_after_white_space_are_refused() {
        for line in [
            " RCPT TO:<a@example.com>",
            "\tMAIL FROM:<a@example.com>",
            "  mail FROM:<>",
        ] {
            assert_eq!(parse_err(line).code, 500, "{line:?}");
        }
    }

    #[test]
    fn errors_have_the_right_codes() {
        assert_eq!(parse_err("MAIL FROM:<a@>").code, 501);
        assert_eq!(
            parse_err("MAIL FROM:<a@example.com> BODY=BINARYMIME").code,
            555
        );
        assert_eq!(parse_err("MAIL FROM:<a@example.com> REQUIRETLS").code, 555);
        assert_eq!(parse_err("MAIL FROM:<a@example.com> FOO=BAR").code, 555);
        assert_eq!(
            parse_err("MAIL FROM:<a@example.com> MT-PRIORITY=12").code,
            501
        );
        assert_eq!(parse_err("MAIL FROM:<jörg@example.com>").code, 553);
        assert_eq!(parse_err("RCPT TO:<jörg@example.com>").status, "5.6.7");
        assert_eq!(parse_err("RCPT TO:<>").code, 501);
        assert_eq!(parse_err("RCPT TO:user@example.com").code, 501);
        assert_eq!(parse_err("FROB").code, 500);
        assert_eq!(
            parse_err("RCPT TO:<a@b.example> NOTIFY=NEVER,SUCCESS").code,
            501
        );
    }

    #[test]
    fn parameters_need_ehlo() {
        let helo = ParseContext {
            extended: false,
            smtputf8: false,
        };
        assert_eq!(
            parse(b"MAIL FROM:<a@b.example> SIZE=10", helo)
                .unwrap_err()
                .code,
            555
        );
        assert!(parse(b"MAIL FROM:<a@b.example>", helo).is_ok());
    }

    #[test]
    fn smtputf8_transaction_allows_utf8_recipients() {
        let Command::Mail(mail) = parse_ok("MAIL FROM:<jörg@bücher.example> SMTPUTF8") else {
            panic!()
        };
        assert!(mail.smtputf8);
        let utf8 = ParseContext {
            extended: true,
            smtputf8: true,
        };
        assert!(parse("RCPT TO:<ü@bücher.example>".as_bytes(), utf8).is_ok());
    }

    #[test]
    fn other_verbs() {
        assert_eq!(
            parse_ok("ehlo client.example"),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(
            parse_ok("BDAT 100 LAST"),
            Command::Bdat {
                chunk_size: 100,
                last: true
            }
        );
        assert_eq!(parse_ok("STARTTLS"), Command::StartTls);
        assert_eq!(parse_ok("noop"), Command::Noop);
    }

    #[test]
    fn auth() {
        assert_eq!(
            parse_ok("AUTH PLAIN AGFsaWNlAHB3"),
            Command::Auth {
                mechanism: Some(Mechanism::Plain),
                initial_response: Some("AGFsaWNlAHB3".into())
            }
        );
        assert_eq!(
            parse_ok("auth login"),
            Command::Auth {
                mechanism: Some(Mechanism::Login),
                initial_response: None
            }
        );
        assert_eq!(
            parse_ok("AUTH PLAIN ="),
            Command::Auth {
                mechanism: Some(Mechanism::Plain),
                initial_response: Some("=".into())
            }
        );
        assert!(matches!(
            parse_ok("AUTH CRAM-MD5"),
            Command::Auth {
                mechanism: None,
                ..
            }
        ));
    }
}
