//! `relayq queue` without a running daemon exits 69 (EX_UNAVAILABLE), and
//! with bad arguments 64 (EX_USAGE).

use std::process::Command;

#[test]
fn usage_errors_and_no_daemon() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("relayq.toml");
    std::fs::write(
        &config,
        format!(
            "[spool]\npath = \"{}\"\n",
            directory.path().join("spool").display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_relayq"))
            .arg("queue")
            .args(args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let output = run(&["list"]);
    assert_eq!(output.status.code(), Some(69));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not available"), "{stderr}");
    assert_eq!(
        run(&["delete"]).status.code(),
        Some(64),
        "--all is never implied"
    );
    assert_eq!(run(&["hold", "not-an-id"]).status.code(), Some(64));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(64));
}
