//! Bounce classes: an operator's rules file (everything before the first
//! NUL) is checked without panicking, and any reply a server can send
//! (after it, framed and parsed as the outbound client does) gets a class,
//! with the built-in rules alone and with the operator's, whose name reads
//! back as the same class.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use relayq::fuzzing::{
    BounceClass, BuiltinRules, Classifier, OperatorRules, parse_bounce_rules, parse_reply,
    reply_length,
};

/// Compiled once per fuzzing process: compiling per input would be most
/// of the work.
fn builtin() -> Arc<BuiltinRules> {
    static BUILTIN: OnceLock<Arc<BuiltinRules>> = OnceLock::new();
    BUILTIN
        .get_or_init(|| Arc::new(BuiltinRules::compile().expect("the built-in rules compile")))
        .clone()
}

fn check(classifier: &Classifier, raw: &[u8]) {
    let reply = parse_reply(raw);
    let class = classifier.classify(&reply);
    assert_eq!(class.as_str().parse::<BounceClass>(), Ok(class));
}

fuzz_target!(|data: &[u8]| {
    let (rules, replies) = match data.iter().position(|&byte| byte == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let operator = match std::str::from_utf8(rules).map(parse_bounce_rules) {
        Ok(Ok(rules)) => rules,
        Ok(Err(error)) => {
            assert!(!error.is_empty());
            OperatorRules::default()
        }
        Err(_) => OperatorRules::default(),
    };
    let plain = Classifier::new(OperatorRules::default(), builtin());
    let with_rules = Classifier::new(operator, builtin());
    let mut rest = replies;
    while let Ok(Some(length)) = reply_length(rest) {
        check(&plain, &rest[..length]);
        check(&with_rules, &rest[..length]);
        rest = &rest[length..];
    }
});
