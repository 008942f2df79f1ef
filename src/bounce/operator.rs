//! The operator's own rules (`bounce.rules_file`), compiled: tried before
//! the built-in ones, in the order they are written, the first match
//! deciding. Reading and checking the file is `config`'s job; this is the
//! matching.

use std::fmt;

use regex::Regex;

use super::BounceClass;
use super::rules::compile;

/// The operator's rules, in file order. Cheap to clone (compiled regular
/// expressions are shared). Two sets are equal when they have the same
/// classes and patterns in the same order.
#[derive(Clone, Default)]
pub struct OperatorRules {
    rules: Vec<OperatorRule>,
}

#[derive(Clone)]
struct OperatorRule {
    class: BounceClass,
    pattern: String,
    regex: Regex,
}

/// A pattern that is not a valid regular expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPattern {
    /// Its position in the list given to [`OperatorRules::compile`].
    pub index: usize,
    pub reason: String,
}

impl OperatorRules {
    /// Compiles `(class, pattern)` pairs in the order they are to be tried.
    /// Patterns match case-insensitively, anywhere in the reply unless
    /// anchored.
    pub fn compile(rules: Vec<(BounceClass, String)>) -> Result<OperatorRules, InvalidPattern> {
        let rules = rules
            .into_iter()
            .enumerate()
            .map(|(index, (class, pattern))| match compile(&pattern) {
                Ok(regex) => Ok(OperatorRule {
                    class,
                    pattern,
                    regex,
                }),
                Err(error) => Err(InvalidPattern {
                    index,
                    reason: describe(&error),
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(OperatorRules { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The class of the first rule that matches `subject` (the reply as
    /// relayq shows it: `550 5.1.1 text`, or `5.1.2 text` when local).
    pub fn classify(&self, subject: &str) -> Option<BounceClass> {
        self.rules
            .iter()
            .find(|rule| rule.regex.is_match(subject))
            .map(|rule| rule.class)
    }

    fn sources(&self) -> impl Iterator<Item = (BounceClass, &str)> {
        self.rules
            .iter()
            .map(|rule| (rule.class, rule.pattern.as_str()))
    }
}

impl PartialEq for OperatorRules {
    fn eq(&self, other: &OperatorRules) -> bool {
        self.sources().eq(other.sources())
    }
}

impl fmt::Debug for OperatorRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.sources()).finish()
    }
}

/// The regex crate's error on one line: its last line (`error: unclosed
/// group`) says what is wrong, the lines above draw the pattern.
fn describe(error: &regex::Error) -> String {
    let text = error.to_string();
    match text
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("error: "))
    {
        Some(reason) => format!("invalid regular expression: {reason}"),
        None => format!("invalid regular expression: {}", text.replace('\n', " ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_rule_in_order_wins_case_insensitively() {
        let rules = OperatorRules::compile(vec![
            (
                BounceClass::Policy,
                "^550 5\\.7\\.1 .*acme filter".to_owned(),
            ),
            (BounceClass::SpamContent, "acme".to_owned()),
        ])
        .unwrap();
        assert_eq!(
            rules.classify("550 5.7.1 Rejected by ACME Filter"),
            Some(BounceClass::Policy)
        );
        assert_eq!(
            rules.classify("554 5.7.1 rejected by Acme"),
            Some(BounceClass::SpamContent)
        );
        assert_eq!(rules.classify("550 5.1.1 user unknown"), None);
    }

    #[test]
    fn a_bad_pattern_names_its_position_and_reason_on_one_line() {
        let error = OperatorRules::compile(vec![
            (BounceClass::Policy, "fine".to_owned()),
            (BounceClass::Policy, "(unclosed".to_owned()),
        ])
        .unwrap_err();
        assert_eq!(error.index, 1);
        assert!(!error.reason.contains('\n'), "{}", error.reason);
        assert!(
            error.reason.starts_with("invalid regular expression: ")
                && error.reason.contains("unclosed"),
            "{}",
            error.reason
        );
    }

    #[test]
    fn equality_is_by_classes_and_patterns() {
        let one = |pattern: &str| {
            OperatorRules::compile(vec![(BounceClass::Policy, pattern.to_owned())]).unwrap()
        };
        assert_eq!(one("a"), one("a"));
        assert_ne!(one("a"), one("b"));
        assert_ne!(one("a"), OperatorRules::default());
    }
}
