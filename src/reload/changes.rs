//! What a reload changes: the keys that differ between the running
//! configuration and the new file, split into those applied live and those
//! that need a restart (pure).

use crate::config::Config;

/// The keys that differ, by the name an operator knows them by.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Changes {
    /// Applied by the reload.
    pub applied: Vec<&'static str>,
    /// Different in the file but not applied: they take effect at the next
    /// start.
    pub restart: Vec<&'static str>,
}

/// Keys that a running daemon cannot change: sockets it has bound, the
/// spool it has open, the maildrop it watches, the log format of the
/// installed subscriber, the MTA-STS policy store and the trust anchors
/// it and the outbound TLS configurations were built with, and the
/// webhooks (each has a sender task and an outbox range of its own).
const RESTART_KEYS: [&str; 9] = [
    "listener",
    "spool.path",
    "control.socket",
    "control.maildrop",
    "metrics.listen",
    "log.format",
    "delivery.mta_sts",
    "delivery.tls_ca_file",
    "webhook",
];

/// Compares the running configuration with a new one.
pub fn compare(running: &Config, new: &Config) -> Changes {
    let mut changes = Changes::default();
    let new_delivery = keep_restart_keys(running, new.clone()).delivery;
    let live: [(&'static str, bool); 16] = [
        ("hostname", running.hostname != new.hostname),
        (
            "spool.max_message_size",
            running.spool.max_message_size != new.spool.max_message_size,
        ),
        (
            "spool.min_free_space",
            running.spool.min_free_space != new.spool.min_free_space,
        ),
        ("smtp", running.smtp != new.smtp),
        ("lanes.high", running.lanes.high != new.lanes.high),
        ("lanes.low", running.lanes.low != new.lanes.low),
        ("delivery", running.delivery != new_delivery),
        ("retry", running.retry != new.retry),
        ("dns", running.dns != new.dns),
        ("route", running.routes != new.routes),
        ("destination", running.destinations != new.destinations),
        ("cluster", running.cluster != new.cluster),
        // Compares the rules as read now, so an edited file with the same
        // path is a change too.
        ("bounce", running.bounce != new.bounce),
        ("suppression", running.suppression != new.suppression),
        (
            "control.bulk_chunk",
            running.control.bulk_chunk != new.control.bulk_chunk,
        ),
        ("log.level", running.log.level != new.log.level),
    ];
    changes.applied = live
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
    let restart: [bool; 9] = [
        running.listeners != new.listeners,
        running.spool.path != new.spool.path,
        running.control.socket != new.control.socket,
        running.control.maildrop != new.control.maildrop,
        running.metrics.listen != new.metrics.listen,
        running.log.format != new.log.format,
        running.delivery.mta_sts != new.delivery.mta_sts,
        running.delivery.extra_trust_anchors != new.delivery.extra_trust_anchors,
        running.webhooks != new.webhooks,
    ];
    changes.restart = RESTART_KEYS
        .into_iter()
        .zip(restart)
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect();
    // Keys added to the configuration without a line above are still
    // reported, as applied (they are part of the new live settings).
    let mut known = keep_restart_keys(running, new.clone());
    known.hostname.clone_from(&running.hostname);
    known.spool = running.spool.clone();
    known.smtp = running.smtp.clone();
    known.lanes = running.lanes.clone();
    known.delivery = running.delivery.clone();
    known.retry = running.retry.clone();
    known.dns = running.dns.clone();
    known.routes = running.routes.clone();
    known.destinations = running.destinations.clone();
    known.cluster = running.cluster.clone();
    known.bounce = running.bounce.clone();
    known.suppression = running.suppression.clone();
    known.control = running.control.clone();
    known.log = running.log.clone();
    known.source.clone_from(&running.source);
    if known != *running {
        changes.applied.push("other settings");
    }
    changes
}

/// `new` with the keys that need a restart set back to the running ones:
/// what the daemon actually runs with after the reload. Comparing the next
/// reload with it keeps reporting a pending restart.
pub fn keep_restart_keys(running: &Config, mut new: Config) -> Config {
    new.listeners.clone_from(&running.listeners);
    new.spool.path.clone_from(&running.spool.path);
    new.control.socket.clone_from(&running.control.socket);
    new.control.maildrop.clone_from(&running.control.maildrop);
    new.metrics.listen = running.metrics.listen;
    new.log.format = running.log.format;
    new.delivery.mta_sts = running.delivery.mta_sts;
    new.webhooks.clone_from(&running.webhooks);
    new.delivery
        .extra_trust_anchors
        .clone_from(&running.delivery.extra_trust_anchors);
    new
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(text: &str) -> Config {
        crate::config::parse_with_fixed_defaults(
            text,
            Path::new("/etc/relayq/relayq.toml"),
            "relay.example.com",
            Path::new("/var/lib/relayq"),
        )
        .expect("valid")
    }

    #[test]
    fn mta_sts_and_its_trust_anchors_need_a_restart() {
        let running = config("");
        let new = config("[delivery]\nmta_sts = false\nport = 2525\n");
        let changes = compare(&running, &new);
        assert_eq!(changes.applied, ["delivery"]);
        assert_eq!(changes.restart, ["delivery.mta_sts"]);
        assert!(keep_restart_keys(&running, new).delivery.mta_sts);
        let only_sts = compare(&running, &config("[delivery]\nmta_sts = false\n"));
        assert!(only_sts.applied.is_empty(), "{only_sts:?}");
    }

    #[test]
    fn an_edited_bounce_rules_file_is_a_change_under_the_same_path() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("bounce-rules.toml");
        let text = format!("[bounce]\nrules_file = {:?}\n", rules.display().to_string());
        std::fs::write(&rules, "[rules]\npolicy = ['acme']\n").unwrap();
        let running = config(&text);
        assert_eq!(compare(&running, &config(&text)), Changes::default());
        std::fs::write(&rules, "[rules]\nspam_block = ['acme']\n").unwrap();
        let changes = compare(&running, &config(&text));
        assert_eq!(changes.applied, ["bounce"]);
        assert!(changes.restart.is_empty());
    }

    #[test]
    fn webhooks_need_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s\n").unwrap();
        let running = config("");
        let new = config(&format!(
            "[[webhook]]\nname = \"app\"\nurl = \"http://127.0.0.1:9/\"\nsecret_file = {:?}\n",
            secret.display().to_string()
        ));
        let changes = compare(&running, &new);
        assert!(changes.applied.is_empty(), "{changes:?}");
        assert_eq!(changes.restart, ["webhook"]);
        assert!(keep_restart_keys(&running, new).webhooks.is_empty());
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let text = "[smtp]\nrelay_networks = [\"10.0.0.0/8\"]\n";
        assert_eq!(compare(&config(text), &config(text)), Changes::default());
    }

    #[test]
    fn live_and_restart_keys_are_told_apart() {
        let running = config("[[listener]]\naddress = \"127.0.0.1:25\"\n");
        let new = config(
            "[[listener]]\naddress = \"127.0.0.1:26\"\n[smtp]\nrelay_networks = [\"10.0.0.0/8\"]\n\
             [lanes.low]\nconcurrency = 2\n[metrics]\nlisten = \"127.0.0.1:9325\"\n",
        );
        let changes = compare(&running, &new);
        assert_eq!(changes.applied, ["smtp", "lanes.low"]);
        assert_eq!(changes.restart, ["listener", "metrics.listen"]);
    }

    #[test]
    fn keys_that_need_a_restart_stay_as_running() {
        let running = config("[[listener]]\naddress = \"127.0.0.1:25\"\n");
        let new = config(
            "[[listener]]\naddress = \"127.0.0.1:26\"\n[retry]\ninitial = \"1m\"\n[spool]\npath = \"/srv/spool\"\n",
        );
        let kept = keep_restart_keys(&running, new);
        assert_eq!(kept.listeners, running.listeners);
        assert_eq!(kept.spool.path, running.spool.path);
        assert_ne!(kept.retry, running.retry);
        // Not applied, so the next reload of the same file reports it again.
        let again = compare(
            &kept,
            &config(
                "[[listener]]\naddress = \"127.0.0.1:26\"\n[retry]\ninitial = \"1m\"\n[spool]\npath = \"/srv/spool\"\n",
            ),
        );
        // The control socket and maildrop default to the spool's directory.
        assert_eq!(
            again.restart,
            [
                "listener",
                "spool.path",
                "control.socket",
                "control.maildrop"
            ]
        );
        assert!(again.applied.is_empty(), "{again:?}");
    }
}
