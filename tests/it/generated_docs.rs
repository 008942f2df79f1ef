//! Man pages and shell completions generated from the command's definitions:
//! `relayq completions SHELL` prints a script its shell accepts, and
//! `relayq generate man DIR` writes a page for every subcommand the command
//! lists in its help, nested ones included.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

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

fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs `shell ARGS FILE` on the script and returns whether it accepted it,
/// with what it printed.
fn shell_accepts(shell: &str, args: &[&str], script: &str) -> (bool, String) {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("completion");
    std::fs::write(&file, script).unwrap();
    let output = Command::new(shell)
        .args(args)
        .arg(&file)
        .output()
        .expect("run the shell");
    (
        output.status.success() && output.stderr.is_empty(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The subcommands a `--help` output lists under "Commands:", without clap's
/// `help`.
fn listed_subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn completion_scripts_are_valid_for_their_shells() {
    let (code, bash, stderr) = relayq(&["completions", "bash"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(bash.contains("complete -F _relayq"), "{bash}");
    for subcommand in [
        "serve",
        "queue",
        "sendmail",
        "check-config",
        "reload",
        "completions",
    ] {
        assert!(
            bash.contains(subcommand),
            "bash script completes {subcommand}"
        );
    }
    let (valid, errors) = shell_accepts("bash", &["-n"], &bash);
    assert!(valid, "bash -n: {errors}");

    let (code, zsh, stderr) = relayq(&["completions", "zsh"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(zsh.starts_with("#compdef relayq"), "{zsh}");
    if available("zsh") {
        let (valid, errors) = shell_accepts("zsh", &["-n"], &zsh);
        assert!(valid, "zsh -n: {errors}");
    }

    let (code, fish, stderr) = relayq(&["completions", "fish"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        fish.contains("complete -c relayq") && fish.contains("-a \"queue\""),
        "{fish}"
    );
    if available("fish") {
        let (valid, errors) = shell_accepts("fish", &["--no-execute"], &fish);
        assert!(valid, "fish --no-execute: {errors}");
    }

    // The hidden packaging helper is not offered.
    assert!(!bash.contains("generate") && !fish.contains("generate"));
    let (code, _, stderr) = relayq(&["completions", "tcsh"]);
    assert_eq!(code, 64, "an unknown shell is a usage error: {stderr}");
    assert!(stderr.contains("tcsh"), "{stderr}");
}

#[test]
fn a_man_page_for_every_subcommand() {
    let directory = tempfile::tempdir().unwrap();
    let man = directory.path().join("man8");
    let (code, stdout, stderr) = relayq(&["generate", "man", man.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");

    let mut expected = BTreeSet::from(["relayq.8".to_owned()]);
    let (_, help, _) = relayq(&["--help"]);
    let top = listed_subcommands(&help);
    assert!(top.len() >= 6, "subcommands listed in {help}");
    for subcommand in &top {
        expected.insert(format!("relayq-{subcommand}.8"));
        let (_, help, _) = relayq(&[subcommand, "--help"]);
        for nested in listed_subcommands(&help) {
            expected.insert(format!("relayq-{subcommand}-{nested}.8"));
        }
    }
    assert!(expected.contains("relayq-queue-list.8"), "{expected:?}");
    let written: BTreeSet<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(written, expected);
    assert_eq!(stdout.lines().count(), expected.len(), "{stdout}");

    for page in &expected {
        let text = std::fs::read_to_string(man.join(page)).unwrap();
        let name = page.trim_end_matches(".8");
        assert!(text.contains(&format!(".TH {name} 8")), "{page}: {text}");
        assert!(text.contains(".SH SYNOPSIS"), "{page}: {text}");
    }
    let queue = std::fs::read_to_string(man.join("relayq-queue-list.8")).unwrap();
    assert!(queue.contains("limit"), "options are documented: {queue}");
    if available("man") {
        rendered_without_warnings(&man.join("relayq.8"));
    }
}

/// `man -l` renders the page and groff has nothing to say about it.
fn rendered_without_warnings(page: &Path) {
    let output = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .expect("run man");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("relayq-queue(8)"), "{text}");
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn generating_into_an_unwritable_place_is_an_error() {
    let directory = tempfile::tempdir().unwrap();
    let file = directory.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let target = file.join("man8");
    let (code, _, stderr) = relayq(&["generate", "man", target.to_str().unwrap()]);
    assert_eq!(code, 70, "{stderr}");
    assert!(stderr.contains("a-file"), "{stderr}");
}
