#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/TARGET/: a handful of small,
realistic inputs per fuzz target, written here by hand rather than kept from
fuzzer runs. Run it from anywhere after changing a target's input layout;
it replaces the seeds it writes and leaves other files alone."""

import struct
import zlib
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def frame(payload: bytes) -> bytes:
    """The spool's record framing: version 1, crc32 (LE), payload."""
    return bytes([1]) + struct.pack("<I", zlib.crc32(payload)) + payload


def envelope_json(**changes) -> bytes:
    fields = {
        "version": 1,
        "reverse_path": "app@example.com",
        "recipients": [
            {
                "address": "user@example.org",
                "orcpt": "user@example.org",
                "notify": {"success": False, "failure": True, "delay": False, "never": False},
                "status": "pending",
                "last_reply": None,
            }
        ],
        "lane": "high",
        "arrival_ms": 1795424516000,
        "size": 1234,
        "client_address": "127.0.0.1",
        "helo": "client.example.com",
        "eight_bit_mime": False,
        "smtputf8": False,
    }
    fields.update(changes)
    import json

    return json.dumps(fields, separators=(",", ":")).encode()


MESSAGE = b"From: App <app@example.com>\r\nTo: user@example.org\r\nSubject: Receipt\r\n\r\nThank you.\r\n"

SEEDS = {
    "command_line": {
        "ehlo": b"EHLO client.example.com",
        "mail": b"MAIL FROM:<app@example.com> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=abc+2Bdef",
        "mail-null": b"MAIL FROM:<>",
        "rcpt": b"RCPT TO:<\"john doe\"@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;john+20doe@example.org",
        "bdat": b"BDAT 1000 LAST",
        "mt-priority": b"MAIL FROM:<a@example.com> MT-PRIORITY=-3",
    },
    "data_reader": {
        "simple": b"\x07Subject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n",
        "stuffed": b"\x03..leading dot\r\nbody\r\n..\r\n.\r\n",
        "bare-lf": b"\x05a\nb\r\nc\n\r\n.\r\n",
        "smuggling": b"\x04x\r\n.\nMAIL FROM:<e@x>\r\n\n.\r\n\r.\r\n.\r\r\nRCPT\r\n.\r\n",
        "empty": b"\x01.\r\nNOOP\r\n",
    },
    "spool_record": {
        "envelope": frame(envelope_json()),
        "body-inline": frame(b"\x00" + MESSAGE),
        "body-file": frame(b"\x01" + struct.pack("<QI", 1 << 20, 0xDEADBEEF)),
        "quarantine": frame(
            struct.pack("<I", 12) + b"bad envelope" + struct.pack("<I", 4) + b"junk" + frame(b"\x00x")
        ),
        "damaged": bytes([1, 0, 0, 0, 0]) + b"payload",
    },
    "envelope": {
        "pending": envelope_json(),
        "held": envelope_json(held=True, held_since_ms=1795424600000, held_ms=5000, attempts=3,
                              next_attempt_ms=1795428116000, ret="full", envid="abc",
                              mt_priority=-2, lane="low"),
        "null-sender": envelope_json(reverse_path="", client_address="::1", helo=None),
        "newer": envelope_json(version=2),
        "unicode": envelope_json(reverse_path="j\u00f6rg@example.de", smtputf8=True),
    },
    "maildrop": {
        "full": b"relayq-maildrop 1\nsender app@example.com\nrecipient root\nrecipient user@example.org\n"
                b"notify SUCCESS,FAILURE\nuser www-data\n\n" + MESSAGE,
        "null-sender": b"relayq-maildrop 1\nsender \nrecipient root\n\nSubject: x\r\n\r\nbody\r\n",
        "no-recipient": b"relayq-maildrop 1\nsender a@example.com\n\nx",
        "truncated": b"relayq-maildrop 1\nsender a@example.com\nrecipient b",
        "unknown-line": b"relayq-maildrop 1\nsender a\nfoo bar\n\n",
    },
    "control_request": {
        "get-queue": b"GET /queue?lane=high&state=deferred HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "post-hold": b"POST /queue/01JD0Q7Z/hold?reason=a%20b+c HTTP/1.1\r\nContent-Length: 12\r\n\r\n",
        "chunked": b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "response": b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n",
        "chunk-size": b"1f;ext=1\r\n",
    },
    "sendmail_message": {
        "cron": b"\x42To: root\nSubject: Cron <root@host> run-parts\n\noutput\n",
        "extract": b"\x02To: Joe <joe@example.org>, root\nCc: a@example.org,\n b@example.org\n"
                   b"Bcc: hidden@example.org\nSubject: hi\n\nbody\n.\nafter\n",
        "mbox-from": b"\x01From someone Mon Jan 1 00:00:00 2026\r\nFrom: me@x\r\n\r\n.\r\nstill body\r\n",
        "no-header": b"\x80just text\nmore text\n",
        "too-big": b"\x04" + b"x" * 100 + b"\n",
    },
    "dsn": {
        # Control bytes (RET, recipient count and actions, times), then 0xFF
        # separated fields; see fuzz_targets/dsn.rs.
        "bounce": b"\x00\x00\x00" + b"\x00" * 16 + b"\xff".join([
            b"relay.example", b"01JD0Q7Z", b"app@example.com", b"", b"<dsn.1@relay.example>",
            b"user@example.org", b"user@example.org", b"5.1.1", b"mx.example.org",
            b"550-5.1.1 The email account that you tried to reach does not exist.\r\n550 5.1.1 Try again",
            MESSAGE,
        ]),
        "delayed-full": b"\x02\x01\x01" + b"\x10" * 40 + b"\xff".join([
            b"relay.example", b"01JD0Q80", b"app@example.com", b"env-1", b"<dsn.2@relay.example>",
            b"j\xc3\xb6rg@example.de", b"", b"4.4.1", b"", b"connection refused",
            b"Subject: x\r\n\r\n" + b"y" * 1200 + b"\r\n",
        ]),
        "bare-lf-original": b"\x01\x02\x00\x02" + b"\x01" * 24 + b"\xff".join([
            b"relay.example", b"q", b"a@b", b"", b"<m@relay.example>",
            b"x@y", b"", b"5.0.0", b"", b"",
            b"z@y", b"", b"2.0.0", b"mx", b"250 ok",
            b"Subject: bare\nX: y\r\rbody\x00\n",
        ]),
    },
    "config": {
        "shipped": (CORPUS.parent.parent / "conf" / "relayq.toml").read_bytes(),
        "minimal": b'hostname = "relay.example.com"\n\n[[listener]]\naddress = "127.0.0.1:2525"\nlane = "high"\n',
        "retry": b'[retry]\ninitial = "5m"\nfactor = 2.0\nmax = "1h"\nmax_age = "5d"\ndelay_warning = "4h"\n',
        "route": b'[[route]]\ndomains = ["*"]\nhost = "smtp.provider.example"\nport = 587\ntls = "starttls"\n'
                 b'username = "app"\npassword_file = "/etc/relayq/smarthost.password"\n',
        "invalid": b'hostname = 42\n[lanes.high]\nconcurrency = 0\n[unknown]\nx = 1\n',
    },
    "reply": {
        "single": b"250 2.0.0 Ok: queued as ABC\r\n",
        "multi": b"451-4.3.0 first\r\n451 4.3.0 second\r\n250 ok\r\n",
        "no-status": b"554\r\n220 mx.example.org ESMTP\r\n",
        "control": b"421 4.4.2 bye\x1b[31m\r\n",
        "malformed": b"hello\r\n",
    },
    "ehlo": {
        "typical": b"250-mx.example.org hello\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n"
                   b"250-STARTTLS\r\n250-AUTH LOGIN PLAIN XOAUTH2\r\n250-ENHANCEDSTATUSCODES\r\n"
                   b"250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n",
        "bare": b"250 mx.example.org\r\n",
        "size-huge": b"250-mx\r\n250 SIZE 99999999999999999999999\r\n",
        "lowercase": b"250-mx\r\n250-auth=login plain\r\n250 pipelining\r\n",
        "refused": b"554 5.7.1 no thanks\r\n",
    },
    "sasl": {
        "plain": b"\x00AGFsaWNlAHNlY3JldA==",
        "plain-empty-challenge": b"\x01\nAGJvYgBwdw==",
        "login": b"\x04\nYWxpY2U=\ncHc=",
        "login-initial": b"\x0cYWxpY2U=\ncHc=",
        "cancel": b"\x01\n*",
        "users": b"\x02# accounts\nalice:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1\n",
    },
    "consumed_headers": {
        "key-and-meta": b"From: app@example.com\r\nIdempotency-Key: order-42\r\nX-Relayq-Meta-Tenant: acme\r\nSubject: hi\r\n",
        "folded": b"X-Relayq-Meta-note: a\r\n b\r\nIdempotency-Key:\r\n\tk\r\n",
        "malformed-key": b"X-Relayq-Meta-a.b: x\r\n",
        "repeated": b"Idempotency-Key: a\r\nIdempotency-Key: b\r\nMessage-ID: <m@example.com>\r\n",
        "no-colon": b" leading space\r\nno colon\r\nX-Relayq-Meta-: empty\r\n",
    },
    "bounce_class": {
        "no-rules": b"\x00550 5.1.1 The email account that you tried to reach does not exist.\r\n",
        "rules": b"[rules]\nspam_block = ['acme.*blocked', '^550 5\\.7\\.1 ']\npolicy = [\"relay\"]\n"
                 b"\x00554 5.7.1 ACME: you are blocked\r\n421 4.7.0 [TSS04] Messages deferred\r\n",
        "bad-rules": b"[rules]\nspammy = ['(']\n\x00452-4.2.2 The email account\r\n452 4.2.2 is over quota\r\n",
        "microsoft": b"\x00550 5.7.1 Unfortunately, messages from [192.0.2.1] weren't sent. (S3150)\r\n",
    },
    "dane": {
        "dnskey": b"; the root\n. 3600 IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==\n",
        "ds": b". IN DS 20326 8 2 E06D44B80B8F1D39A95C0B0D7C65D08458E880409BBC683457104237C7F8EC8D\n",
        "bad-line": b"example. IN DS 1 13 2 00\n",
        "der": bytes.fromhex("3003020100"),
    },
    "mta_sts": {
        "policy": b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n",
        "txt": b"v=STSv1; id=20160831085700Z;",
        "response": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nvers\r\n0\r\n\r\n",
        "redirect": b"HTTP/1.1 301 Moved\r\nLocation: https://elsewhere/\r\n\r\n",
    },
    "tls_rpt": {
        "txt": b"v=TLSRPTv1; rua=mailto:tlsrpt@example.com,https://reports.example.com/v1",
        "txt-encoded": b"v=TLSRPTv1;rua=mailto:tls%2Breports@example.com?subject=x ; ext=1;",
        "key": struct.pack(">QQ", 1775001600, 1775088000) + b"example.com",
        "counts": b'[{"policy":{"policy-type":"sts","policy-string":["version: STSv1","mode: enforce",'
        b'"mx: mx.example.com","max_age: 86400"],"policy-domain":"example.com","mx-host":["mx.example.com"]},'
        b'"summary":{"total-successful-session-count":3,"total-failure-session-count":1},'
        b'"failure-details":[{"result-type":"certificate-expired","sending-mta-ip":null,'
        b'"receiving-mx-hostname":"mx.example.com","receiving-mx-helo":null,"receiving-ip":"192.0.2.25",'
        b'"failed-session-count":1,"additional-information":"expired","failure-reason-code":null}]}]',
    },
}


def main() -> None:
    for target, seeds in SEEDS.items():
        directory = CORPUS / target
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (directory / name).write_bytes(data)


if __name__ == "__main__":
    main()
