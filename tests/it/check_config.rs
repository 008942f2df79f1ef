//! `relayq check-config`: exit 0 for a good file, 64 with file, key and
//! reason for a bad one; `serve` refuses a bad file the same way.

use std::process::Command;

fn relayq(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_relayq"))
        .args(args)
        .output()
        .expect("run relayq");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/relayq.toml");
    let (code, stdout, stderr) = relayq(&["check-config", example]);
    assert_eq!(code, 0, "{stdout}{stderr}");
}

#[test]
fn errors_name_file_key_and_reason() {
    let directory = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[delivery]\nconnect_timeout = \"30 parsecs\"\n",
            "delivery.connect_timeout",
        ),
        ("[smtp]\nbogus_key = 1\n", "bogus_key"),
        ("[lanes.low]\nconcurrency = 0\n", "lanes.low.concurrency"),
        ("[delivery]\ntls = \"sometimes\"\n", "delivery.tls"),
        (
            "[smtp]\nrelay_networks = [\"300.1.2.3/8\"]\n",
            "smtp.relay_networks",
        ),
    ];
    for (index, (text, key)) in cases.iter().enumerate() {
        let path = directory.path().join(format!("bad{index}.toml"));
        std::fs::write(&path, text).unwrap();
        let (code, _, stderr) = relayq(&["check-config", path.to_str().unwrap()]);
        assert_eq!(code, 64, "{text}: {stderr}");
        assert!(
            stderr.contains(path.to_str().unwrap()),
            "names the file: {stderr}"
        );
        assert!(stderr.contains(key), "names {key}: {stderr}");
        let (code, _, serve_stderr) = relayq(&["serve", "--config", path.to_str().unwrap()]);
        assert_eq!(code, 64, "serve refuses it too: {serve_stderr}");
    }
    let missing = directory.path().join("missing.toml");
    let (code, _, stderr) = relayq(&["check-config", missing.to_str().unwrap()]);
    assert_eq!(code, 64);
    assert!(stderr.contains("missing.toml"), "{stderr}");
}
