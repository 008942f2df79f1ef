//! `[suppression]`: whether bounces put recipients on the suppression list,
//! which bounce classes do, and when an entry lapses (docs/suppression.md).

use std::time::Duration;

use super::Invalid;
use super::raw::{RawDuration, RawSuppression};
use crate::bounce::BounceClass;

/// The classes that suppress by default: the address does not exist or
/// takes no mail, which a retry will not change.
pub const DEFAULT_CLASSES: [BounceClass; 3] = [
    BounceClass::InvalidRecipient,
    BounceClass::InactiveMailbox,
    BounceClass::BadDomain,
];

/// `[suppression]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionSettings {
    /// `false`: RCPT checks nothing and bounces add nothing (the list is
    /// kept, and the CLI still manages it).
    pub enabled: bool,
    /// The bounce classes that put a recipient on the list; no duplicates.
    pub classes: Vec<BounceClass>,
    /// Entries older than this no longer apply; `None` (`"0s"`): never.
    pub expire_after: Option<Duration>,
}

impl Default for SuppressionSettings {
    fn default() -> Self {
        SuppressionSettings {
            enabled: true,
            classes: DEFAULT_CLASSES.to_vec(),
            expire_after: None,
        }
    }
}

impl SuppressionSettings {
    /// Whether a bounce of `class` suppresses its recipient.
    pub fn suppresses(&self, class: BounceClass) -> bool {
        self.enabled && self.classes.contains(&class)
    }
}

pub(super) fn suppression(raw: RawSuppression) -> Result<SuppressionSettings, Invalid> {
    let defaults = SuppressionSettings::default();
    let classes = match raw.classes {
        None => defaults.classes,
        Some(names) => {
            let mut classes: Vec<BounceClass> = Vec::with_capacity(names.len());
            for (index, name) in names.iter().enumerate() {
                let key = format!("suppression.classes[{index}]");
                let class = name
                    .parse::<BounceClass>()
                    .map_err(|error| Invalid::new(key.clone(), error.to_string()))?;
                if classes.contains(&class) {
                    return Err(Invalid::new(key, format!("{name:?} is listed twice")));
                }
                classes.push(class);
            }
            classes
        }
    };
    Ok(SuppressionSettings {
        enabled: raw.enabled.unwrap_or(defaults.enabled),
        classes,
        expire_after: match raw.expire_after {
            Some(RawDuration(after)) if !after.is_zero() => Some(after),
            _ => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, String> {
        crate::config::parse_with_fixed_defaults(
            text,
            Path::new("relayq.toml"),
            "host.test",
            Path::new("/state/relayq"),
        )
        .map_err(|error| error.to_string())
    }

    #[test]
    fn defaults_and_the_example_file() {
        let defaults = parse("").unwrap().suppression;
        assert_eq!(defaults, SuppressionSettings::default());
        assert!(defaults.enabled && defaults.expire_after.is_none());
        assert!(defaults.suppresses(BounceClass::InvalidRecipient));
        assert!(!defaults.suppresses(BounceClass::Admin));
        let example = parse(include_str!("../../conf/relayq.toml")).unwrap();
        assert_eq!(example.suppression, defaults);
    }

    #[test]
    fn values_as_written() {
        let config = parse(
            "[suppression]\nenabled = false\nclasses = [\"admin\", \"mailbox_full\"]\nexpire_after = \"30d\"\n",
        )
        .unwrap()
        .suppression;
        assert!(!config.enabled);
        assert_eq!(
            config.classes,
            [BounceClass::Admin, BounceClass::MailboxFull]
        );
        assert_eq!(config.expire_after, Some(Duration::from_secs(30 * 86_400)));
        assert!(!config.suppresses(BounceClass::Admin), "disabled");
        let none = parse("[suppression]\nclasses = []\n").unwrap().suppression;
        assert!(!none.suppresses(BounceClass::InvalidRecipient));
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_reason() {
        let error = parse("[suppression]\nclasses = [\"bad_domain\", \"bounced\"]\n").unwrap_err();
        assert!(
            error.starts_with(
                "relayq.toml: suppression.classes[1]: unknown bounce class \"bounced\""
            ),
            "{error}"
        );
        let error = parse("[suppression]\nclasses = [\"admin\", \"admin\"]\n").unwrap_err();
        assert_eq!(
            error,
            "relayq.toml: suppression.classes[1]: \"admin\" is listed twice"
        );
        let error = parse("[suppression]\nexpire_after = \"soon\"\n").unwrap_err();
        assert!(
            error.starts_with("relayq.toml: suppression.expire_after: invalid duration"),
            "{error}"
        );
        let error = parse("[suppression]\nexpire = \"1d\"\n").unwrap_err();
        assert!(
            error.starts_with("relayq.toml: suppression.expire: unknown key"),
            "{error}"
        );
    }
}
