//! Output control settings in `check-config`: good rules pass; a bad one is
//! refused with exit 64 and an error naming the file, the key and the
//! reason.

use std::process::Command;

fn check(text: &str) -> (i32, String, String) {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("relayq.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_relayq"))
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run relayq");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        path.display().to_string(),
    )
}

#[test]
fn good_rules_pass() {
    let (code, stderr, _) = check(
        "[[destination]]\nname = \"google\"\nmatch = [\"mx:*.google.com\", \"example.org\", \"*.example.net\"]\n\
         concurrency = 10\nrate = \"600/m\"\nmessages_per_connection = 50\n\
         suspend_on = [\"4.7.28\", \"TSS04\"]\nsuspend_for = \"10m\"\n\
         [[destination]]\nname = \"slow\"\nmatch = [\"slow.test\"]\nrate = \"1/h\"\n\
         [cluster]\nredis_url = \"redis://127.0.0.1:6379/0\"\n",
    );
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn bad_rules_name_file_key_and_reason() {
    let cases = [
        (
            "[[destination]]\nmatch = [\"a.test\"]\n",
            "destination[0].name: required",
        ),
        (
            "[[destination]]\nname = \"x\"\nmatch = [\"a.test\"]\n[[destination]]\nname = \"x\"\nmatch = [\"b.test\"]\n",
            "destination[1].name: \"x\" is already the name of destination[0]",
        ),
        (
            "[[destination]]\nname = \"x\"\nmatch = [\"a.test\", \"mx:ex*mple.com\"]\n",
            "destination[0].match[1]",
        ),
        (
            "[[destination]]\nname = \"x\"\nmatch = []\n",
            "destination[0].match: must list at least one",
        ),
        (
            "[[destination]]\nname = \"x\"\nmatch = [\"a.test\"]\nrate = \"10/d\"\n",
            "destination[0].rate: invalid rate \"10/d\"",
        ),
        (
            "[[destination]]\nname = \"x\"\nmatch = [\"a.test\"]\nrate = \"0/s\"\n",
            "destination[0].rate",
        ),
        (
            "[[destination]]\nname = \"x\"\nmatch = [\"a.test\"]\nconcurrency = 0\n",
            "destination[0].concurrency: must be at least 1",
        ),
        (
            "[[destination]]\nname = \"x\"\nmatch = [\"a.test\"]\nsuspend_on = [\"\"]\n",
            "destination[0].suspend_on[0]",
        ),
        (
            "[[destination]]\nname = \"x\"\nmatch = [\"a.test\"]\nsuspend_for = \"0s\"\n",
            "destination[0].suspend_for: must be greater than zero",
        ),
        (
            "[[destination]]\nname = \"x\"\nmatch = [\"a.test\"]\nburst = 3\n",
            "burst",
        ),
        (
            "[cluster]\nredis_url = \"http://127.0.0.1:6379\"\n",
            "cluster.redis_url",
        ),
    ];
    for (text, expected) in cases {
        let (code, stderr, path) = check(text);
        assert_eq!(code, 64, "{text}: {stderr}");
        assert!(stderr.contains(&path), "names the file: {stderr}");
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
}
