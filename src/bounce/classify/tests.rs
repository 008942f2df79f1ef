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

/// A case: `expected_class | reply`.
fn case(case: &str) -> (BounceClass, &str) {
    let (class, reply) = case.split_once(" | ").unwrap();
    (class.parse().unwrap(), reply)
}

fn check(cases: &[&str]) {
    let classifier = classifier();
    for (expected, line) in cases.iter().map(|text| case(text)) {
        assert_eq!(classifier.classify(&remote(line)), expected, "{line}");
    }
}

#[test]
fn enhanced_codes_decide_when_specific() {
    check(&[
        "invalid_recipient | 550 5.1.1 <a@example.org>: Recipient address rejected: User unknown in virtual mailbox table",
        "bad_domain | 550 5.1.2 Host unknown",
        "invalid_recipient | 553 5.1.3 Bad recipient address syntax",
        "inactive_mailbox | 550 5.1.6 Recipient mailbox moved",
        "inactive_mailbox | 550 5.2.1 Mailbox disabled for this recipient",
        "mailbox_full | 552 5.2.2 Mailbox quota exceeded",
        "message_too_large | 552 5.2.3 Message length exceeds administrative limit",
        "message_too_large | 552 5.3.4 Message size exceeds fixed limit",
        "dns_failure | 451 4.4.3 Directory server failure",
        "rate_limited | 452 4.5.3 Too many recipients",
        "protocol_error | 501 5.5.4 Syntax error in parameters",
        "protocol_error | 554 5.6.7 Non-ASCII addresses not permitted",
        "tls_failure | 530 5.7.10 Encryption needed",
        "policy | 550 5.7.23 SPF validation failed",
        "policy | 550 5.7.25 The IP address sending this message does not have a PTR record",
    ]);
}

#[test]
fn generic_and_ambiguous_codes_let_the_text_decide() {
    check(&[
        "invalid_recipient | 550 5.0.0 mailbox unavailable",
        "invalid_recipient | 550 Requested action not taken: mailbox unavailable",
        "mailbox_full | 552 Requested mail action aborted: exceeded storage allocation",
        "message_too_large | 552 Message size exceeds fixed maximum message size",
        "policy | 554 5.7.1 <a@example.org>: Relay access denied",
        "spam_content | 550 5.7.1 Message rejected as spam by Content Filtering",
        "spam_content | 554 5.7.1 Rejected: message contains a virus",
        "policy | 450 4.7.1 <a@example.org>: Recipient address rejected: Greylisted",
        "policy | 451 4.7.1 greylisted",
        "invalid_recipient | 554 5.7.1 unknown user",
        "connection_failure | 421 4.3.2 Service not available, closing transmission channel",
        "dns_failure | 451 4.3.0 Temporary lookup failure",
        "policy | 550 5.7.1 Delivery not authorized, message refused",
        "policy | 550 5.7.0 Message refused",
    ]);
}

#[test]
fn ambiguous_codes_fall_back_to_what_they_suggest_then_the_reply_code() {
    check(&[
        "policy | 550 5.7.1 Command rejected",
        "invalid_recipient | 550 5.1.0 Address rejected",
        "connection_failure | 421 4.4.0 Please reconnect",
        "protocol_error | 500 Command unrecognised",
        "protocol_error | 503 Bad sequence of commands",
        "mailbox_full | 552 Requested mail action aborted",
        "invalid_recipient | 553 Requested action not taken",
        "unclassified | 550 Requested action not taken",
        "unclassified | 451 4.3.0 Error: queue file write error",
        "unclassified | 421 Please come back",
    ]);
}

#[test]
fn blocklists_and_reputation_are_spam_block_whatever_the_code() {
    check(&[
        "spam_block | 554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; https://www.spamhaus.org/query/ip/192.0.2.1",
        "spam_block | 550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus. To request removal from this list see https://www.spamhaus.org/query/ip/192.0.2.1 (AS3130)",
        "spam_block | 554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using b.barracudacentral.org",
        "spam_block | 550 5.7.1 Rejected because 192.0.2.1 is in a black list at dnsbl.sorbs.net",
        "spam_block | 554 Blocked - see https://www.spamcop.net/bl.shtml?192.0.2.1",
        "spam_block | 550 5.1.1 Your IP is listed at bl.example",
        "spam_block | 550 5.7.0 Your message has been blocked due to poor reputation",
        "spam_block | 554 5.7.1 Client host rejected: dynamic IP address, use your provider's relay",
    ]);
}

#[test]
fn rate_wording_is_rate_limited_when_temporary_and_spam_block_when_permanent() {
    check(&[
        "rate_limited | 421 4.7.0 Too many concurrent SMTP connections from this IP address; please try again later",
        "rate_limited | 451 4.7.1 Sending rate exceeded, slow down",
        "rate_limited | 450 4.7.1 Rate limited, try again later",
        "spam_block | 550 5.7.1 Sending rate exceeded for this IP",
        "spam_block | 550 5.7.1 Message rate limit exceeded",
    ]);
}

#[test]
fn gmail_wordings() {
    check(&[
        "invalid_recipient | 550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces. Learn more at https://support.google.com/mail/?p=NoSuchUser",
        "inactive_mailbox | 550 5.2.1 The email account that you tried to reach is disabled. Learn more at https://support.google.com/mail/?p=DisabledUser",
        "mailbox_full | 452 4.2.2 The email account that you tried to reach is over quota. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaTemp",
        "inactive_mailbox | 552 5.2.2 The email account that you tried to reach is over quota and inactive. Please direct the recipient to https://support.google.com/mail/?p=OverQuotaPerm",
        "message_too_large | 552 5.2.3 Your message exceeded Google's message size limits. Please visit https://support.google.com/mail/?p=MaxSizeError",
        "rate_limited | 450 4.2.1 The user you are trying to contact is receiving mail too quickly. Please resend your message at a later time.",
        "rate_limited | 550 5.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.",
        "rate_limited | 421 4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited. Please visit https://support.google.com/mail/?p=UnsolicitedRateLimitError",
        "rate_limited | 421 4.7.0 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited.",
        "spam_block | 550 5.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been blocked.",
        "spam_content | 550 5.7.1 [192.0.2.1] Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked. Please visit https://support.google.com/mail/?p=UnsolicitedMessageError",
        "spam_block | 550 5.7.1 [192.0.2.1] Our system has detected that this message is likely suspicious due to the very low reputation of the sending IP address. To best protect our users from spam, the message has been blocked.",
        "spam_block | 550 5.7.1 [192.0.2.1] The IP you're using to send mail is not authorized to send email directly to our servers. Please use the SMTP relay at your service provider instead.",
        "spam_content | 552 5.7.0 This message was blocked because its content presents a potential security issue. Please visit https://support.google.com/mail/?p=BlockedMessage",
        "policy | 550 5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM.",
        "policy | 550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy. Please contact the administrator of example.com domain.",
        "rate_limited | 421 4.7.26 This mail has been rate limited because it is unauthenticated.",
        "tls_failure | 530 5.7.0 Must issue a STARTTLS command first.",
        "policy | 550 5.7.1 The user or domain that you are sending to (or from) has a policy that prohibited the mail that you sent.",
        "policy | 550 5.7.1 Messages missing a valid Message-ID header are not accepted.",
    ]);
}

#[test]
fn microsoft_wordings() {
    check(&[
        "invalid_recipient | 550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302).",
        "spam_block | 550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150). You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors.",
        "spam_block | 550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus. To request removal from this list see https://www.spamhaus.org/query/ip/192.0.2.1 (AS3130). [BN1NAM02FT003.eop-nam02.prod.protection.outlook.com]",
        "mailbox_full | 452 4.2.2 The email account that you tried to reach is over quota.",
        "invalid_recipient | 550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [DM6NAM11FT010.eop-nam11.prod.protection.outlook.com]",
        "invalid_recipient | 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        "invalid_recipient | 550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
        "mailbox_full | 554 5.2.2 mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException",
        "rate_limited | 451 4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77714) [Hostname=BN1NAM02FT003.eop-nam02.prod.protection.outlook.com]",
        "rate_limited | 451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.",
        "spam_block | 550 5.7.606 Access denied, banned sending IP [192.0.2.1]. To request removal from this list please visit https://sender.office.com/",
        "spam_block | 550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
        "policy | 550 5.7.509 Access denied, sending domain example.com does not pass DMARC verification and has a DMARC policy of reject.",
        "policy | 550 5.7.64 TenantAttribution; Relay Access Denied",
        "policy | 550 5.7.57 Client not authenticated to send mail.",
        "spam_content | 550 5.7.350 Remote server returned message detected as spam",
        "message_too_large | 552 5.3.4 Message size exceeds fixed maximum message size",
    ]);
}

#[test]
fn yahoo_and_aol_wordings() {
    check(&[
        "policy | 554 5.7.9 Message not accepted for policy reasons. See https://postmaster.yahooinc.com/error-codes",
        "rate_limited | 421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
        "invalid_recipient | 553 5.1.1 <a@yahoo.com>: Recipient address rejected: user doesn't have a yahoo.com account",
        "invalid_recipient | 554 delivery error: dd This user doesn't have a yahoo.com account (a@yahoo.com) [0] - mta1001.mail.gq1.yahoo.com",
        "inactive_mailbox | 554 delivery error: dd Sorry your message to a@yahoo.com cannot be delivered. This mailbox is disabled (554.30). - mta1001.mail.gq1.yahoo.com",
        "invalid_recipient | 552 1 Requested mail action aborted, mailbox not found",
        "spam_block | 421 4.7.0 [TSS09] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed. See https://postmaster.yahooinc.com/error-codes",
        "spam_block | 421 4.7.1 [TS03] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed.",
        "spam_block | 553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.1, because the ip is in Spamhaus's list; see https://postmaster.yahooinc.com/error-codes",
        "spam_block | 554 5.7.1 [TSS11] Excessive unknown recipients - possible phishing",
    ]);
}

#[test]
fn common_mta_wordings() {
    check(&[
        "invalid_recipient | 550 No such user here",
        "invalid_recipient | 550 5.0.0 <a@example.org>... User unknown",
        "invalid_recipient | 550 Unrouteable address",
        "invalid_recipient | 550 User not listed in public Name & Address Book",
        "inactive_mailbox | 550 This account has been disabled or discontinued",
        "mailbox_full | 550 5.0.0 Mailbox is full",
        "mailbox_full | 452 Insufficient system storage",
        "message_too_large | 550 Message too large",
        "bad_domain | 550 5.0.0 Domain does not exist",
        "bad_domain | 550 Host or domain name not found. Name service error for name=example.invalid type=A: Host not found",
        "dns_failure | 450 Host or domain name not found. Name service error for name=example.org type=MX: Host not found, try again",
        "protocol_error | 500 5.5.2 Line too long",
        "expired | 554 5.4.7 Delivery time expired",
    ]);
}

#[test]
fn local_conditions_keep_their_exact_status() {
    let classifier = classifier();
    let cases = [
        "bad_domain | 5.1.2 example.invalid: no such domain",
        "bad_domain | 5.1.10 example.org has a null MX: it accepts no mail",
        "dns_failure | 4.4.3 SERVFAIL looking up MX for example.org",
        "dns_failure | 4.4.4 no mail exchanger to try",
        "connection_failure | 4.4.1 connection refused by 192.0.2.1:25",
        "connection_failure | 4.4.2 timeout waiting for reply to DATA",
        "connection_failure | 4.5.0 mx.example.org[192.0.2.1]:25: connection lost while reading the greeting: reset",
        "tls_failure | 4.7.5 MTA-STS policy of example.org: certificate not valid",
        "tls_failure | 4.7.10 STARTTLS required but not offered",
        "policy | 4.7.8 authentication refused by smtp.provider.example",
        "protocol_error | 4.5.0 protocol error: reply does not start with a code",
        "protocol_error | 5.6.7 message needs SMTPUTF8, which mx.example.org does not offer",
        "message_too_large | 5.3.4 message size 2000000 exceeds the limit of 1000000 octets of mx.example.org",
        "invalid_recipient | 5.1.3 invalid recipient address",
        "rate_limited | 4.5.3 too many recipients; retrying in a later transaction",
        "rate_limited | 4.7.0 destination example.org rate limit: next start in 1.0s",
        "rate_limited | 4.7.0 destination example.org suspended until 2026-01-01T00:00:00Z: 421 4.7.0 come back later",
        "rate_limited | 4.7.0 destination gmail suspended until 2026-01-01T00:00:00Z: 421 4.7.28 Our system has detected an unusual rate of unsolicited mail",
        // A domain that looks like a blocklist does not outvote the code.
        "bad_domain | 5.1.2 blocklist.example: no such domain",
    ];
    for (expected, line) in cases.map(case) {
        let (status, text) = line.split_once(' ').unwrap();
        let reply = RemoteReply::local(status, text);
        assert_eq!(classifier.classify(&reply), expected, "{line}");
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
