//! The built-in wordings: regular expressions over a reply as relayq shows
//! it (`550 5.1.1 text`, or `5.1.2 text` for a local condition), matched
//! case-insensitively anywhere in it, each naming a class.
//!
//! Two tables, tried at different points (see `classify`):
//! [`OVERRIDES`] are phrases that decide whatever the enhanced status code
//! says (a blocklist named in a `5.1.1` reply is still a blocklist), and
//! [`WORDINGS`] decide when the code is generic or ambiguous (`5.0.0`,
//! `5.5.0`, `4.7.0`, `5.7.1`). In each, the first rule that matches wins,
//! so narrower phrases come before broader ones.
//!
//! The wordings are those the large mailbox providers document for their
//! replies (Gmail, Microsoft 365/Outlook, Yahoo/AOL), the blocklists'
//! own names, and the common phrases of Postfix, Exim, Sendmail and
//! Exchange.

use regex::{Regex, RegexBuilder};

use super::BounceClass::{self, *};

/// Which replies a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// 4xx replies (and local 4.x.x conditions).
    Temporary,
    /// 5xx replies (and local 5.x.x conditions).
    Permanent,
}

impl When {
    fn applies(self, temporary: bool) -> bool {
        match self {
            When::Always => true,
            When::Temporary => temporary,
            When::Permanent => !temporary,
        }
    }
}

/// One built-in rule, as written.
pub struct Rule {
    pub class: BounceClass,
    pub when: When,
    pub pattern: &'static str,
}

const fn rule(class: BounceClass, when: When, pattern: &'static str) -> Rule {
    Rule {
        class,
        when,
        pattern,
    }
}

/// Rate wording: the receiver wants less mail from us. A temporary reply
/// is a request to slow down; a permanent one is a refusal by policy.
const RATE: &str = r"rate[ -]?limit|unusual rate|(sending|message|connection|ip|mail) (rate|frequency)|rate of (unsolicited|mail|e-?mail|messages)|too many (connections|concurrent|sessions|(messages|e-?mails|mails) from)|exceeded the (rate|message|connection|sending)|too fast|slow down|throttl|unexpected volume|server busy|\[tss04\]";

/// Blocklists and reputation: who sends, not what is sent.
const BLOCKLIST: &str = r"spamhaus|spamcop|barracuda|sorbs|uceprotect|abuseat|mailspike|psbl|dnsbl|\brbl\b|black ?list|block ?list|blocked using|listed (at|in|on|by)|\(s3140\)|\(s3150\)|(poor|low|bad|negative) (ip |sender |domain )?reputation|(ip|sender|domain) reputation|banned sending|banned sender|traffic not accepted|not accepted from this ip|permanently deferred|excessive unknown recipients|\[(bl2\d|ts0[1-3]|tss0[89]|tss1[12])\]";

/// Decide whatever the enhanced status code says; remote replies only.
pub const OVERRIDES: &[Rule] = &[
    // Microsoft returns 5.1.10 (RFC 7505's null MX) and 5.4.1 ("no answer
    // from host") for recipients its directory does not know.
    rule(
        InvalidRecipient,
        When::Always,
        r"recipientnotfound|recipient not found by smtp address lookup|^5\d\d 5\.4\.1 .*recipient address rejected",
    ),
    // Lotus Domino's unknown user, before "listed in" means a blocklist.
    rule(
        InvalidRecipient,
        When::Always,
        r"not listed in (the )?(public |domino )?(name|address|directory)",
    ),
    // Gmail 4.2.1/5.2.1: the recipient gets too much mail, not we too
    // little reputation.
    rule(
        RateLimited,
        When::Always,
        r"receiving mail (too quickly|at a rate|at too high a rate)",
    ),
    rule(RateLimited, When::Temporary, RATE),
    rule(SpamBlock, When::Permanent, RATE),
    rule(SpamBlock, When::Always, BLOCKLIST),
    // Gmail 552 5.2.2 "over quota and inactive": the abandoned mailbox is
    // the news, not its size.
    rule(InactiveMailbox, When::Always, r"over quota and inactive"),
];

/// Decide when the enhanced status code is generic or only suggests a
/// class; for local conditions, after their status code.
pub const WORDINGS: &[Rule] = &[
    // relayq's own waits for a destination's rate or suspension
    // (`delivery::destination`), whatever the reply that suspended it says.
    rule(
        RateLimited,
        When::Temporary,
        r"^4\.7\.0 destination \S+ (suspended until|rate limit)",
    ),
    rule(
        TlsFailure,
        When::Always,
        r"starttls|\btls\b|\bssl\b|encryption (is )?(required|needed)|certificate|mta-sts|\bdane\b|\btlsa\b",
    ),
    rule(
        SpamBlock,
        When::Always,
        r"not authorized to send (e-?mail )?directly|dynamic (ip|address)|residential|dial-?up|\bpbl\b|reputation|known spammer|spam source|complaints|(ip|host|sender|client)( address)?( has been| is)? (blocked|banned)|client host \S* ?(rejected|blocked)|abuse",
    ),
    rule(
        SpamContent,
        When::Always,
        r"unsolicited|spam|junk|bulk mail|virus|malware|infected|phish|suspicious|content (filter|rejected|restrictions|polic)|rejected (due to|for|because of) (its )?content|content presents|security issue|attachment (type )?(is )?(not allowed|blocked|prohibited|rejected)|prohibited attachment",
    ),
    rule(
        BadDomain,
        When::Permanent,
        r"no such domain|domain (name )?(does not exist|doesn't exist|not found|is not valid|invalid)|unroutable|unrouteable (mail )?domain|nxdomain|null mx|host or domain name not found|no mx (record|host)|does not accept (e-?)?mail",
    ),
    rule(
        DnsFailure,
        When::Always,
        r"\bdns\b|name service|name ?server|servfail|(could not|unable to|cannot) resolve|resolution fail|lookup (failure|failed|error|timed out)|host or domain name not found",
    ),
    rule(
        MailboxFull,
        When::Always,
        r"mailbox (is )?full|full mailbox|mailbox size limit|over ?quota|quota (exceeded|full)|exceed(ed|s)? (the |their |his |her |its )?(storage|quota|mailbox)|insufficient (system )?storage|out of (storage|space|disk)|not enough (storage|space|disk)|storage (space )?(is )?(full|exceeded)|disk quota|too many messages in|has too many messages",
    ),
    rule(
        MessageTooLarge,
        When::Always,
        r"too (large|big)|message size|size limit|size exceeds|exceeds (the )?(maximum|max|size|message size)|message length exceeds|message (is )?too long|maximum (message )?size",
    ),
    rule(
        InactiveMailbox,
        When::Always,
        r"(account|mailbox|user|address|recipient)[^.;]{0,30}\b(disabled|inactive|deactivated|suspended|closed|locked|expired|discontinued|frozen)\b|no longer (active|in use|available|valid|exists?)|inactive|deactivated|dormant",
    ),
    rule(
        InvalidRecipient,
        When::Always,
        r"user unknown|unknown user|no such (user|mailbox|recipient|address|account|person|local user)|(user|mailbox|recipient|address|account|addressee)[^.;]{0,40}(does not|doesn't|did not) exist|does not exist|doesn't exist|(user|mailbox|recipient|address|account|addressee) (not found|unknown|invalid|not valid)|unknown (recipient|address|mailbox|local[ -]?part|alias|account|addressee)|invalid (recipient|mailbox|address|user|account)|not a valid (user|mailbox|recipient|address)|mailbox (is )?(unavailable|not available)|(doesn't|does not) have an? \S+ account|no mailbox|recipient rejected|undeliverable address|bad (recipient|destination mailbox|address)|unrouteable address|recipnotfound|not our customer|unknown or illegal",
    ),
    rule(
        RateLimited,
        When::Always,
        r"rate limit|too many recipients|too many (messages|connections)|suspended until",
    ),
    rule(
        ConnectionFailure,
        When::Always,
        r"connection (refused|reset|timed out|lost|closed|dropped|failed)|timed? ?out|network (is )?unreachable|no route to host|host unreachable|lost connection|broken pipe|(could not|unable to|cannot) connect|service (not |un)available|closing (transmission )?channel",
    ),
    rule(
        ProtocolError,
        When::Always,
        r"syntax|command (not recognized|unrecognized|not implemented|unknown)|unrecognized command|bad sequence|out of sequence|line too long|protocol|8bitmime|8-bit|smtputf8|non-ascii|not implemented|unsupported|not supported",
    ),
    rule(
        Policy,
        When::Always,
        r"dmarc|\bspf\b|dkim|\barc\b|authenticat|relay(ing)? (access )?(denied|not permitted|prohibited)|not permitted to relay|unable to relay|sender (address )?(rejected|denied|blocked|not allowed)|\bptr\b|reverse (dns|lookup|hostname)|\brdns\b|\bhelo\b|\behlo\b|greylist|graylist|policy|(white|allow) ?list|not (authorized|allowed|permitted)|access denied|denied|prohibited|forbidden|refused|administrative|blocked",
    ),
    rule(
        Expired,
        When::Always,
        r"(message|delivery( time)?) (has )?expired|expired after",
    ),
];

/// A rule ready to match.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub class: BounceClass,
    pub when: When,
    pub regex: Regex,
}

impl Compiled {
    pub fn matches(&self, subject: &str, temporary: bool) -> bool {
        self.when.applies(temporary) && self.regex.is_match(subject)
    }
}

/// Compiles `pattern` as every rule is: case-insensitive, matching
/// anywhere unless anchored.
pub fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern).case_insensitive(true).build()
}

pub fn compile_table(rules: &[Rule]) -> Result<Vec<Compiled>, regex::Error> {
    rules
        .iter()
        .map(|rule| {
            Ok(Compiled {
                class: rule.class,
                when: rule.when,
                regex: compile(rule.pattern)?,
            })
        })
        .collect()
}

/// The class of the first rule of `table` that matches.
pub fn first_match(table: &[Compiled], subject: &str, temporary: bool) -> Option<BounceClass> {
    table
        .iter()
        .find(|rule| rule.matches(subject, temporary))
        .map(|rule| rule.class)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_rule_compiles() {
        assert_eq!(compile_table(OVERRIDES).unwrap().len(), OVERRIDES.len());
        assert_eq!(compile_table(WORDINGS).unwrap().len(), WORDINGS.len());
    }

    #[test]
    fn severity_selects_rules() {
        let table = compile_table(&[
            rule(RateLimited, When::Temporary, "rate"),
            rule(SpamBlock, When::Permanent, "rate"),
        ])
        .unwrap();
        assert_eq!(
            first_match(&table, "421 4.7.0 RATE", true),
            Some(RateLimited)
        );
        assert_eq!(
            first_match(&table, "550 5.7.1 rate", false),
            Some(SpamBlock)
        );
        assert_eq!(first_match(&table, "550 5.7.1 other", false), None);
    }
}
