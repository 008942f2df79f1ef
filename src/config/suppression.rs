//! `[suppression]`: whether bounces put recipients on the suppression list,
//! which bounce classes do, and when an entry lapses (README
//! "Suppression").

use std::time::Duration;

use super::Invalid;
use super::raw::{RawDuration, RawSuppression};

/// The classes that suppress by default: the address does not exist or
/// takes no mail, which a retry will not change.
pub const DEFAULT_CLASSES: [&str; 3] = ["invalid_recipient", "inactive_mailbox", "bad_domain"];

/// `[suppression]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionSettings {
    /// `false`: RCPT checks nothing and bounces add nothing (the list is
    /// kept, and the CLI still manages it).
    pub enabled: bool,
    /// Bounce class names that put a recipient on the list; no duplicates,
    /// each a known class.
    pub classes: Vec<String>,
    /// Entries older than this no longer apply; `None` (`"0s"`): never.
    pub expire_after: Option<Duration>,
}

impl Default for SuppressionSettings {
    fn default() -> Self {
        SuppressionSettings {
            enabled: true,
            classes: DEFAULT_CLASSES.map(str::to_owned).to_vec(),
            expire_after: None,
        }
    }
}

impl SuppressionSettings {
    /// Whether a bounce of class `class` suppresses its recipient.
    pub fn suppresses(&self, class: &str) -> bool {
        self.enabled && self.classes.iter().any(|listed| listed == class)
    }
}

pub(super) fn suppression(
    raw: RawSuppression,
    check_class: impl Fn(&str) -> Result<(), String>,
) -> Result<SuppressionSettings, Invalid> {
    let defaults = SuppressionSettings::default();
    let classes = match raw.classes {
        None => defaults.classes,
        Some(classes) => {
            let mut checked: Vec<String> = Vec::with_capacity(classes.len());
            for (index, class) in classes.into_iter().enumerate() {
                let key = format!("suppression.classes[{index}]");
                check_class(&class).map_err(|reason| Invalid::new(key.clone(), reason))?;
                if checked.contains(&class) {
                    return Err(Invalid::new(key, format!("{class:?} is listed twice")));
                }
                checked.push(class);
            }
            checked
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
