//! `[bounce]`: the operator's bounce classification rules (docs/events.md,
//! "Your own rules"). The rules file is read and checked here, with the
//! configuration, so that `relayq check-config` and a reload report a bad
//! file, and a reload re-reads it whether or not its path changed.
//!
//! The file: a `[rules]` table of `CLASS = ["regex", ...]`. Every error
//! names the rules file, the key in it (`rules.spam_block[1]`) and the
//! reason, under the configuration's own key `bounce.rules_file`.

use std::fs;
use std::path::{Path, PathBuf};

use toml::de::DeTable;

use super::raw::{RawBounce, line_and_column};
use super::{Invalid, describe_io_error};
use crate::bounce::{BounceClass, OperatorRules};

const KEY: &str = "bounce.rules_file";

/// `[bounce]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BounceSettings {
    /// The operator's rules file, if any.
    pub rules_file: Option<PathBuf>,
    /// Its rules, compiled, in the order they are written; empty without a
    /// file. Tried before the built-in ones.
    pub rules: OperatorRules,
}

pub(super) fn bounce(raw: RawBounce) -> Result<BounceSettings, Invalid> {
    let Some(path) = raw.rules_file else {
        return Ok(BounceSettings::default());
    };
    if path.as_os_str().is_empty() {
        return Err(Invalid::new(KEY, "must not be empty"));
    }
    let text = fs::read_to_string(&path).map_err(|error| {
        Invalid::new(
            KEY,
            format!(
                "cannot read {}: {}",
                path.display(),
                describe_io_error(&error)
            ),
        )
    })?;
    let rules = load(&text).map_err(|invalid| in_rules_file(&path, invalid))?;
    Ok(BounceSettings {
        rules_file: Some(path),
        rules,
    })
}

/// A problem inside the rules file, under the configuration's key.
fn in_rules_file(path: &Path, invalid: Invalid) -> Invalid {
    let key = if invalid.key.is_empty() {
        String::new()
    } else {
        format!("{}: ", invalid.key)
    };
    Invalid::new(KEY, format!("{}: {key}{}", path.display(), invalid.reason))
}

/// A rules file's text → its compiled rules. Errors carry the key within
/// the rules file.
pub(super) fn load(text: &str) -> Result<OperatorRules, Invalid> {
    let entries = parse(text)?;
    let mut keys = Vec::with_capacity(entries.len());
    let mut rules = Vec::with_capacity(entries.len());
    for (key, class, pattern) in entries {
        keys.push(key);
        rules.push((class, pattern));
    }
    OperatorRules::compile(rules)
        .map_err(|invalid| Invalid::new(keys[invalid.index].clone(), invalid.reason))
}

/// The rules of a rules file in the order they are written (whatever
/// order the TOML parser keeps tables in), each with its key.
fn parse(text: &str) -> Result<Vec<(String, BounceClass, String)>, Invalid> {
    let document = DeTable::parse(text).map_err(|error| {
        let position = match error.span() {
            Some(span) => {
                let (line, column) = line_and_column(text, span.start);
                format!(" at line {line}, column {column}")
            }
            None => String::new(),
        };
        Invalid::new(
            "",
            format!("TOML syntax error{position}: {}", error.message()),
        )
    })?;
    let mut found = Vec::new();
    for (key, value) in document.get_ref().iter() {
        let key = key.get_ref().as_ref();
        if key != "rules" {
            return Err(Invalid::new(key, "unknown key (expected `rules`)"));
        }
        let Some(table) = value.get_ref().as_table() else {
            return Err(Invalid::new(
                "rules",
                format!(
                    "must be a table of CLASS = [\"regex\", ...], not {}",
                    value.get_ref().type_str()
                ),
            ));
        };
        for (name, patterns) in table.iter() {
            let name = name.get_ref().as_ref();
            let class_key = format!("rules.{name}");
            let class: BounceClass =
                name.parse().map_err(|error: crate::bounce::UnknownClass| {
                    Invalid::new(&class_key, error.to_string())
                })?;
            if class == BounceClass::Admin {
                return Err(Invalid::new(
                    class_key,
                    "admin is the class of an operator's bounce; no reply can be given it",
                ));
            }
            let Some(array) = patterns.get_ref().as_array() else {
                return Err(Invalid::new(
                    class_key,
                    format!(
                        "must be an array of regular expressions, not {}",
                        patterns.get_ref().type_str()
                    ),
                ));
            };
            for (index, pattern) in array.iter().enumerate() {
                let key = format!("{class_key}[{index}]");
                let Some(text) = pattern.get_ref().as_str() else {
                    return Err(Invalid::new(
                        key,
                        format!(
                            "must be a regular expression (a string), not {}",
                            pattern.get_ref().type_str()
                        ),
                    ));
                };
                if text.is_empty() {
                    return Err(Invalid::new(
                        key,
                        "must not be empty (it would match every reply)",
                    ));
                }
                found.push((pattern.span().start, key, class, text.to_owned()));
            }
        }
    }
    found.sort_by_key(|(position, ..)| *position);
    Ok(found
        .into_iter()
        .map(|(_, key, class, pattern)| (key, class, pattern))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::RemoteReply;

    fn error(text: &str) -> Invalid {
        load(text).unwrap_err()
    }

    #[test]
    fn rules_keep_the_order_they_are_written_in() {
        let rules = load(
            "[rules]\n\
             spam_block = ['acme.*blocked']\n\
             # comment\n\
             policy = [\"^550 5\\\\.7\\\\.1 acme\", 'acme']\n",
        )
        .unwrap();
        assert_eq!(rules.len(), 3);
        // `spam_block` sorts after `policy` but is written first.
        assert_eq!(
            rules.classify("550 5.7.1 ACME: you are blocked"),
            Some(BounceClass::SpamBlock)
        );
        assert_eq!(
            rules.classify("550 5.7.1 acme: no"),
            Some(BounceClass::Policy)
        );
        let reply = RemoteReply {
            code: 421,
            status: "4.7.0".into(),
            text: "ACME".into(),
        };
        assert_eq!(
            rules.classify(&reply.to_string()),
            Some(BounceClass::Policy)
        );
        assert!(load("").unwrap().is_empty());
        assert!(load("[rules]\n").unwrap().is_empty());
    }

    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("../../docs/events.md");
        let start = doc.find("# /etc/relayq/bounce-rules.toml").unwrap();
        let example = &doc[start..start + doc[start..].find("```").unwrap()];
        let rules = load(example).unwrap();
        assert_eq!(rules.len(), 4);
        assert_eq!(
            rules.classify("550 5.7.1 Rejected by ACME Filter"),
            Some(BounceClass::SpamContent)
        );
        assert_eq!(
            rules.classify("4.4.3 SERVFAIL looking up MX for example.org"),
            Some(BounceClass::DnsFailure)
        );
    }

    #[test]
    fn errors_name_the_key_and_the_reason() {
        let unknown = error("[rules]\nspammy = ['x']\n");
        assert_eq!(unknown.key, "rules.spammy");
        assert!(
            unknown.reason.contains("unknown bounce class"),
            "{unknown:?}"
        );
        assert!(unknown.reason.contains("spam_block"), "{unknown:?}");

        let regex = error("[rules]\npolicy = ['fine', '(unclosed']\n");
        assert_eq!(regex.key, "rules.policy[1]");
        assert!(
            regex.reason.contains("invalid regular expression"),
            "{regex:?}"
        );

        assert_eq!(error("[rules]\npolicy = 'x'\n").key, "rules.policy");
        assert_eq!(error("[rules]\npolicy = [1]\n").key, "rules.policy[0]");
        assert_eq!(error("[rules]\npolicy = ['']\n").key, "rules.policy[0]");
        assert_eq!(error("[rules]\nadmin = ['x']\n").key, "rules.admin");
        assert_eq!(error("rules = 1\n").key, "rules");
        assert_eq!(error("[other]\n").key, "other");
        let syntax = error("[rules\n");
        assert_eq!(syntax.key, "");
        assert!(syntax.reason.contains("line 1"), "{syntax:?}");
    }

    #[test]
    fn the_file_is_read_and_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bounce-rules.toml");
        let raw = || RawBounce {
            rules_file: Some(path.clone()),
        };
        let missing = bounce(raw()).unwrap_err();
        assert_eq!(missing.key, KEY);
        assert!(
            missing
                .reason
                .starts_with(&format!("cannot read {}", path.display())),
            "{missing:?}"
        );
        fs::write(&path, "[rules]\nmailbox_full = ['(']\n").unwrap();
        let invalid = bounce(raw()).unwrap_err();
        assert_eq!(invalid.key, KEY);
        assert!(
            invalid.reason.starts_with(&format!(
                "{}: rules.mailbox_full[0]: invalid regular expression",
                path.display()
            )),
            "{invalid:?}"
        );
        fs::write(&path, "[rules]\nmailbox_full = ['storage']\n").unwrap();
        let settings = bounce(raw()).unwrap();
        assert_eq!(settings.rules_file.as_deref(), Some(path.as_path()));
        assert_eq!(settings.rules.len(), 1);
        assert_eq!(
            bounce(RawBounce::default()).unwrap(),
            BounceSettings::default()
        );
    }
}
