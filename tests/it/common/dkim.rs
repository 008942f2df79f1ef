//! DKIM test keys (made with the openssl command line tool), `[[dkim]]`
//! blocks, relays that deliver to a fake MX, and the independent verifier:
//! dkimpy (Debian's python3-dkim, with python3-nacl for Ed25519).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;

use super::TestRelay;
use super::delivery::{config, start_mx, zone_with_sender_mx};
use super::dns_server::TestDns;
use super::fake_mx::{FakeMx, Received, Script};

pub const WITHIN: Duration = Duration::from_secs(15);

/// The interpreter Debian's python3-dkim is installed for (a `python3`
/// earlier in PATH, such as pyenv's, does not see it).
const PYTHON: &str = "/usr/bin/python3";

/// Verifies every DKIM-Signature of the message on stdin against the key
/// records in argv[1] (JSON: name → TXT record) and prints one JSON verdict
/// per signature, top first.
const VERIFIER: &str = r#"
import json, sys, dkim
records = json.loads(sys.argv[1])
message = sys.stdin.buffer.read()
def lookup(name, timeout=5):
    name = name.decode() if isinstance(name, bytes) else name
    return records.get(name.rstrip("."), "").encode()
checker = dkim.DKIM(message)
count = sum(1 for name, _ in checker.headers if name.lower() == b"dkim-signature")
verdicts = []
for index in range(count):
    try:
        ok, why = checker.verify(idx=index, dnsfunc=lookup), ""
    except dkim.ValidationError as error:
        ok, why = False, str(error)
    print(index, ok, why, file=sys.stderr)
    verdicts.append({"d": checker.domain.decode(), "s": checker.selector.decode(), "pass": bool(ok)})
print(json.dumps(verdicts))
"#;

#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub domain: String,
    pub selector: String,
    pub pass: bool,
}

/// A private key file and the DNS record that publishes its public key.
#[derive(Clone)]
pub struct TestKey {
    pub path: PathBuf,
    /// `SELECTOR._domainkey.DOMAIN`.
    pub name: String,
    pub record: String,
}

impl TestKey {
    /// The same key published under another selector of `domain`.
    pub fn under(&self, domain: &str, selector: &str) -> TestKey {
        TestKey {
            name: format!("{selector}._domainkey.{domain}"),
            ..self.clone()
        }
    }
}

fn openssl(arguments: &[&str]) -> Vec<u8> {
    let output = Command::new("openssl")
        .args(arguments)
        .output()
        .expect("the openssl command line tool runs");
    assert!(output.status.success(), "openssl {arguments:?}: {output:?}");
    output.stdout
}

/// Makes a key (`rsa_bits`: RSA of that size, else Ed25519) and derives
/// its record as docs/mail-authentication.md says.
pub fn make_key(directory: &Path, domain: &str, selector: &str, rsa_bits: Option<u32>) -> TestKey {
    let path = directory.join(format!("{selector}.{domain}.pem"));
    let out = path.to_str().unwrap();
    let bits;
    let mut arguments = vec!["genpkey", "-out", out, "-algorithm"];
    match rsa_bits {
        Some(size) => {
            bits = format!("rsa_keygen_bits:{size}");
            arguments.extend(["RSA", "-pkeyopt", &bits]);
        }
        None => arguments.push("ed25519"),
    }
    openssl(&arguments);
    let public = openssl(&["pkey", "-in", out, "-pubout", "-outform", "DER"]);
    let record = match rsa_bits {
        Some(_) => format!(
            "v=DKIM1; k=rsa; p={}",
            base64::engine::general_purpose::STANDARD.encode(&public)
        ),
        // The raw 32-octet key: the end of the SubjectPublicKeyInfo (RFC 8463 §4.2).
        None => format!(
            "v=DKIM1; k=ed25519; p={}",
            base64::engine::general_purpose::STANDARD.encode(&public[public.len() - 32..])
        ),
    };
    TestKey {
        path,
        name: format!("{selector}._domainkey.{domain}"),
        record,
    }
}

pub fn dkim_block(domain: &str, selector: &str, key: &TestKey) -> String {
    format!(
        "[[dkim]]\ndomain = \"{domain}\"\nselector = \"{selector}\"\nprivate_key = \"{}\"\n",
        key.path.display()
    )
}

/// Verifies every signature of `message` with dkimpy, `keys` being the
/// records DNS would publish.
pub fn verify(message: &[u8], keys: &[&TestKey]) -> Vec<Verdict> {
    let records: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|key| (key.name.clone(), key.record.clone().into()))
        .collect();
    let mut child = Command::new(PYTHON)
        .arg("-c")
        .arg(VERIFIER)
        .arg(serde_json::Value::Object(records).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 runs (the tests need python3-dkim and python3-nacl)");
    child.stdin.take().unwrap().write_all(message).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the verifier failed (are python3-dkim and python3-nacl installed?): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let verdicts: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("verifier: {}", String::from_utf8_lossy(&output.stderr));
    verdicts
        .iter()
        .map(|verdict| Verdict {
            domain: verdict["d"].as_str().unwrap().to_owned(),
            selector: verdict["s"].as_str().unwrap().to_owned(),
            pass: verdict["pass"].as_bool().unwrap(),
        })
        .collect()
}

pub fn passes(domain: &str, selector: &str) -> Verdict {
    Verdict {
        domain: domain.into(),
        selector: selector.into(),
        pass: true,
    }
}

pub fn with_subject<'a>(messages: &'a [Received], subject: &str) -> &'a [u8] {
    let needle = format!("Subject: {subject}\r\n");
    let found = messages
        .iter()
        .find(|message| String::from_utf8_lossy(&message.data).contains(&needle));
    &found
        .unwrap_or_else(|| panic!("no message {subject:?}"))
        .data
}

/// A relay with `dkim` blocks delivering `dest.test` to a fake MX on
/// 127.0.NET.1 (scripted by `script`), through the in-process DNS.
pub struct Setup {
    pub relay: TestRelay,
    pub mx: Vec<FakeMx>,
    pub dns: TestDns,
    pub port: u16,
}

pub fn start(net: u8, script: Script, dkim: &str) -> Setup {
    let ip = format!("127.0.{net}.1");
    let (port, mx) = start_mx(vec![(ip.as_str(), script)]);
    let dns = TestDns::start(
        zone_with_sender_mx(&format!("127.0.{net}.99"))
            .mx("dest.test", 10, "mx.dest.test")
            .a("mx.dest.test", &ip),
    );
    let relay = TestRelay::start(&config(&dns, port, "", dkim));
    Setup {
        relay,
        mx,
        dns,
        port,
    }
}
