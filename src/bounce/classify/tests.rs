//! The classifier against replies as servers send them: per status-code
//! family, per provider's documented wordings, and relayq's own local
//! conditions.

use super::*;
use BounceClass::*;

fn classifier() -> Classifier {
    Classifier::new(
        OperatorRules::default(),
        Arc::new(BuiltinRules::compile().unwrap()),
    )
}

/// A server's reply line as it arrives: `CODE STATUS TEXT`, or `CODE TEXT`
/// without an enhanced code (relayq then derives `X.0.0`).
fn remote(line: &str) -> RemoteReply {
    let (code, rest) = line.split_once(' ').unwrap();
    let code: u16 = code.parse().unwrap();
    let (status, text) = match rest.split_once(' ') {
        Some((status, text)) if Status::parse(status).is_some() => (status.to_owned(), text),
        _ => (format!("{}.0.0", code / 100), rest),
    };
    RemoteReply {
        code,
        status,
        text: text.to_owned(),
    }
}

fn check(cases: &[(&str, BounceClass)]) {
    let classifier = classifier();
    for (line, expected) in cases {
        assert_eq!(classifier.classify(&remote(line)), *expected, "{line}");
    }
}

#[test]
fn enhanced_codes_decide_when_specific() {
    check(&[
        (
            "550 5.1.1 <a@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
            InvalidRecipient,
        ),
        ("550 5.1.2 Host unknown", BadDomain),
        ("553 5.1.3 Bad recipient address syntax", InvalidRecipient),
        ("550 5.1.6 Recipient mailbox moved", InactiveMailbox),
        (
            "550 5.2.1 Mailbox disabled for this recipient",
            InactiveMailbox,
        ),
        ("552 5.2.2 Mailbox quota exceeded", MailboxFull),
        (
            "552 5.2.3 Message length exceeds administrative limit",
            MessageTooLarge,
        ),
        (
            "552 5.3.4 Message size exceeds fixed limit",
            MessageTooLarge,
        ),
        ("451 4.4.3 Directory server failure", DnsFailure),
        ("452 4.5.3 Too many recipients", RateLimited),
        ("501 5.5.4 Syntax error in parameters", ProtocolError),
        ("554 5.6.7 Non-ASCII addresses not permitted", ProtocolError),
        ("530 5.7.10 Encryption needed", TlsFailure),
        ("550 5.7.23 SPF validation failed", Policy),
        (
            "550 5.7.25 The IP address sending this message does not have a PTR record",
            Policy,
        ),
    ]);
}

#[test]
fn generic_and_ambiguous_codes_let_the_text_decide() {
    check(&[
        ("550 5.0.0 mailbox unavailable", InvalidRecipient),
        (
            "550 Requested action not taken: mailbox unavailable",
            InvalidRecipient,
        ),
        (
            "552 Requested mail action aborted: exceeded storage allocation",
            MailboxFull,
        ),
        (
            "552 Message size exceeds fixed maximum message size",
            MessageTooLarge,
        ),
        ("554 5.7.1 <a@example.org>: Relay access denied", Policy),
        (
            "550 5.7.1 Message rejected as spam by Content Filtering",
            SpamContent,
        ),
        ("554 5.7.1 Rejected: message contains a virus", SpamContent),
        (
            "450 4.7.1 <a@example.org>: Recipient address rejected: Greylisted",
            Policy,
        ),
        ("451 4.7.1 greylisted", Policy),
        ("554 5.7.1 unknown user", InvalidRecipient),
        (
            "421 4.3.2 Service not available, closing transmission channel",
            ConnectionFailure,
        ),
        ("451 4.3.0 Temporary lookup failure", DnsFailure),
        ("550 5.7.1 Delivery not authorized, message refused", Policy),
        ("550 5.7.0 Message refused", Policy),
    ]);
}

#[test]
fn ambiguous_codes_fall_back_to_what_they_suggest_then_the_reply_code() {
    check(&[
        ("550 5.7.1 Command rejected", Policy),
        ("550 5.1.0 Address rejected", InvalidRecipient),
        ("421 4.4.0 Please reconnect", ConnectionFailure),
        ("500 Command unrecognised", ProtocolError),
        ("503 Bad sequence of commands", ProtocolError),
        ("552 Requested mail action aborted", MailboxFull),
        ("553 Requested action not taken", InvalidRecipient),
        ("550 Requested action not taken", Unclassified),
        ("451 4.3.0 Error: queue file write error", Unclassified),
        ("421 Please come back", Unclassified),
    ]);
}

#[test]
fn blocklists_and_reputation_are_spam_block_whatever_the_code() {
    check(&[
        (
            "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.1",
            SpamBlock,
        ),
        (
            "550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus. To request removal from this list see https://www.spamhaus.org/query/ip/192.0.2.1 (AS3130)",
            SpamBlock,
        ),
        (
            "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using b.barracudacentral.org",
            SpamBlock,
        ),
        (
            "550 5.7.1 Rejected because 192.0.2.1 is in a black list at dnsbl.sorbs.net",
            SpamBlock,
        ),
        (
            "554 Blocked - see https://www.spamcop.net/bl.shtml?192.0.2.1",
            SpamBlock,
        ),
        ("550 5.1.1 Your IP is listed at bl.example", SpamBlock),
        (
            "550 5.7.0 Your message has been blocked due to poor reputation",
            SpamBlock,
        ),
        (
            "554 5.7.1 Client host rejected: dynamic IP address, use your provider's relay",
            SpamBlock,
        ),
    ]);
}

#[test]
fn rate_wording_is_rate_limited_when_temporary_and_spam_block_when_permanent() {
    check(&[
        (
            "421 4.7.0 Too many concurrent SMTP connections from this IP address; please try again later",
            RateLimited,
        ),
        ("451 4.7.1 Sending rate exceeded, slow down", RateLimited),
        ("450 4.7.1 Rate limited, try again later", RateLimited),
        ("550 5.7.1 Sending rate exceeded for this IP", SpamBlock),
        ("550 5.7.1 Message rate limit exceeded", SpamBlock),
    ]);
}

#[test]
fn gmail_wordings() {
    check(&[
        (
            "550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. Learn more at https://support.google.com/mail/?p=NoSuchUser",
            InvalidRecipient,
        ),
        (
            "550 5.2.1 The email account that you tried to reach is disabled. Learn more at https://support.google.com/mail/?p=DisabledUser",
            InactiveMailbox,
        ),
        (
            "452 4.2.2 The email account that you tried to reach is over quota. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaTemp",
            MailboxFull,
        ),
        (
            "552 5.2.2 The email account that you tried to reach is over quota and inactive. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaPerm",
            InactiveMailbox,
        ),
        (
            "552 5.2.3 Your message exceeded Google's message size limits. Please visit https://support.google.com/mail/?p=MaxSizeError",
            MessageTooLarge,
        ),
        (
            "450 4.2.1 The user you are trying to contact is receiving mail too quickly. Please resend your message at a later time.",
            RateLimited,
        ),
        (
            "550 5.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.",
            RateLimited,
        ),
        (
            "421 4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited. Please visit https://support.google.com/mail/?p=UnsolicitedRateLimitError",
            RateLimited,
        ),
        (
            "421 4.7.0 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited.",
            RateLimited,
        ),
        (
            "550 5.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been blocked.",
            SpamBlock,
        ),
        (
            "550 5.7.1 [192.0.2.1] Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked. Please visit https://support.google.com/mail/?p=UnsolicitedMessageError",
            SpamContent,
        ),
        (
            "550 5.7.1 [192.0.2.1] Our system has detected that this message is likely suspicious due to the very low reputation of the sending IP address. To best protect our users from spam, the message has been blocked.",
            SpamBlock,
        ),
        (
            "550 5.7.1 [192.0.2.1] The IP you're using to send mail is not authorized to send email directly to our servers. Please use the SMTP relay at your service provider instead.",
            SpamBlock,
        ),
        (
            "552 5.7.0 This message was blocked because its content presents a potential security issue. Please visit https://support.google.com/mail/?p=BlockedMessage",
            SpamContent,
        ),
        (
            "550 5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM.",
            Policy,
        ),
        (
            "550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy. Please contact the administrator of example.com domain.",
            Policy,
        ),
        (
            "421 4.7.26 This mail has been rate limited because it is unauthenticated.",
            RateLimited,
        ),
        ("530 5.7.0 Must issue a STARTTLS command first.", TlsFailure),
        (
            "550 5.7.1 The user or domain that you are sending to (or from) has a policy that prohibited the mail that you sent.",
            Policy,
        ),
        (
            "550 5.7.1 Messages missing a valid Message-ID header are not accepted.",
            Policy,
        ),
    ]);
}

#[test]
fn microsoft_wordings() {
    check(&[
        (
            "550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302).",
            InvalidRecipient,
        ),
        (
            "550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors.",
            SpamBlock,
        ),
        (
            "550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus. To request removal from this list see https://www.spamhaus.org/query/ip/192.0.2.1 (AS3130). [BN1NAM02FT003.eop-nam02.prod.protection.outlook.com]",
            SpamBlock,
        ),
        (
            "452 4.2.2 The email account that you tried to reach is over quota.",
            MailboxFull,
        ),
        (
            "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [DM6NAM11FT010.eop-nam11.prod.protection.outlook.com]",
            InvalidRecipient,
        ),
        (
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
            InvalidRecipient,
        ),
        (
            "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
            InvalidRecipient,
        ),
        (
            "554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException",
            MailboxFull,
        ),
        (
            "451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77714) [Hostname=BN1NAM02FT003.eop-nam02.prod.protection.outlook.com]",
            RateLimited,
        ),
        (
            "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.",
            RateLimited,
        ),
        (
            "550 5.7.606 Access denied, banned sending IP [192.0.2.1]. To request removal from this list please visit https://sender.office.com/",
            SpamBlock,
        ),
        (
            "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
            SpamBlock,
        ),
        (
            "550 5.7.509 Access denied, sending domain example.com does not pass DMARC verification and has a DMARC policy of reject.",
            Policy,
        ),
        ("550 5.7.64 TenantAttribution; Relay Access Denied", Policy),
        ("550 5.7.57 Client not authenticated to send mail.", Policy),
        (
            "550 5.7.350 Remote server returned message detected as spam",
            SpamContent,
        ),
        (
            "552 5.3.4 Message size exceeds fixed maximum message size",
            MessageTooLarge,
        ),
    ]);
}

#[test]
fn yahoo_and_aol_wordings() {
    check(&[
        (
            "554 5.7.9 Message not accepted for policy reasons. See https://postmaster.yahooinc.com/error-codes",
            Policy,
        ),
        (
            "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
            RateLimited,
        ),
        (
            "553 5.1.1 <a@yahoo.com>: Recipient address rejected: user doesn't have a yahoo.com account",
            InvalidRecipient,
        ),
        (
            "554 delivery error: dd This user doesn't have a yahoo.com account (a@yahoo.com) [0] - mta1001.mail.gq1.yahoo.com",
            InvalidRecipient,
        ),
        (
            "554 delivery error: dd Sorry your message to a@yahoo.com cannot be delivered. This mailbox is disabled (554.30). - mta1001.mail.gq1.yahoo.com",
            InactiveMailbox,
        ),
        (
            "552 1 Requested mail action aborted, mailbox not found",
            InvalidRecipient,
        ),
        (
            "421 4.7.0 [TSS09] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed. See https://postmaster.yahooinc.com/error-codes",
            SpamBlock,
        ),
        (
            "421 4.7.1 [TS03] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed.",
            SpamBlock,
        ),
        (
            "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.1, because the ip is in Spamhaus's list; see https://postmaster.yahooinc.com/error-codes",
            SpamBlock,
        ),
        (
            "554 5.7.1 [TSS11] Excessive unknown recipients - possible phishing",
            SpamBlock,
        ),
    ]);
}

#[test]
fn common_mta_wordings() {
    check(&[
        ("550 No such user here", InvalidRecipient),
        (
            "550 5.0.0 <a@example.org>... User unknown",
            InvalidRecipient,
        ),
        ("550 Unrouteable address", InvalidRecipient),
        (
            "550 User not listed in public Name & Address Book",
            InvalidRecipient,
        ),
        (
            "550 This account has been disabled or discontinued",
            InactiveMailbox,
        ),
        ("550 5.0.0 Mailbox is full", MailboxFull),
        ("452 Insufficient system storage", MailboxFull),
        ("550 Message too large", MessageTooLarge),
        ("550 5.0.0 Domain does not exist", BadDomain),
        (
            "550 Host or domain name not found. Name service error for name=example.invalid type=A: Host not found",
            BadDomain,
        ),
        (
            "450 Host or domain name not found. Name service error for name=example.org type=MX: Host not found, try again",
            DnsFailure,
        ),
        ("500 5.5.2 Line too long", ProtocolError),
        ("554 5.4.7 Delivery time expired", Expired),
    ]);
}

#[test]
fn local_conditions_keep_their_exact_status() {
    let classifier = classifier();
    let cases = [
        ("5.1.2", "example.invalid: no such domain", BadDomain),
        (
            "5.1.10",
            "example.org has a null MX: it accepts no mail",
            BadDomain,
        ),
        (
            "4.4.3",
            "SERVFAIL looking up MX for example.org",
            DnsFailure,
        ),
        ("4.4.4", "no mail exchanger to try", DnsFailure),
        (
            "4.4.1",
            "connection refused by 192.0.2.1:25",
            ConnectionFailure,
        ),
        (
            "4.4.2",
            "timeout waiting for reply to DATA",
            ConnectionFailure,
        ),
        (
            "4.5.0",
            "mx.example.org[192.0.2.1]:25: connection lost while reading the greeting: reset",
            ConnectionFailure,
        ),
        (
            "4.7.5",
            "MTA-STS policy of example.org: certificate not valid",
            TlsFailure,
        ),
        ("4.7.10", "STARTTLS required but not offered", TlsFailure),
        (
            "4.7.8",
            "authentication refused by smtp.provider.example",
            Policy,
        ),
        (
            "4.5.0",
            "protocol error: reply does not start with a code",
            ProtocolError,
        ),
        (
            "5.6.7",
            "message needs SMTPUTF8, which mx.example.org does not offer",
            ProtocolError,
        ),
        (
            "5.3.4",
            "message size 2000000 exceeds the limit of 1000000 octets of mx.example.org",
            MessageTooLarge,
        ),
        ("5.1.3", "invalid recipient address", InvalidRecipient),
        (
            "4.5.3",
            "too many recipients; retrying in a later transaction",
            RateLimited,
        ),
        (
            "4.7.0",
            "destination example.org rate limit: next start in 1.0s",
            RateLimited,
        ),
        (
            "4.7.0",
            "destination example.org suspended until 2026-01-01T00:00:00Z: 421 4.7.0 come back later",
            RateLimited,
        ),
        // A domain that looks like a blocklist does not outvote the code.
        ("5.1.2", "blocklist.example: no such domain", BadDomain),
    ];
    for (status, text, expected) in cases {
        let reply = RemoteReply::local(status, text);
        assert_eq!(classifier.classify(&reply), expected, "{status} {text}");
    }
}

#[test]
fn operator_rules_come_first() {
    let operator = OperatorRules::compile(vec![
        (SpamBlock, r"^550 5\.1\.1 .*acme".to_owned()),
        (Policy, r"^5\.1\.2 ".to_owned()),
    ])
    .unwrap();
    let classifier = Classifier::new(operator, Arc::new(BuiltinRules::compile().unwrap()));
    assert_eq!(
        classifier.classify(&remote("550 5.1.1 ACME says no such user")),
        SpamBlock
    );
    assert_eq!(
        classifier.classify(&remote("550 5.1.1 no such user")),
        InvalidRecipient
    );
    // Local conditions are matched without a reply code.
    assert_eq!(
        classifier.classify(&RemoteReply::local("5.1.2", "x.example: no such domain")),
        Policy
    );
}
