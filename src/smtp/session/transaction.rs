//! The envelope part of a session: EHLO/HELO, MAIL and RCPT, with the relay,
//! sequence, size and storage checks that decide whether a transaction may go on,
//! and the suppression list.

use std::time::SystemTime;

use super::super::address::Mailbox;
use super::super::command::{MailCommand, RcptCommand};
use super::super::reply::{self, Reply, write_multiline};
use super::Session;
use crate::metrics::RefusalReason;
use crate::queue::Lane;
use crate::queue::envelope::{Recipient, RecipientStatus};
use crate::webhook::{self, EventType};

/// A mail transaction in progress (RFC 5321 §3.3).
pub struct Transaction {
    pub mail: MailCommand,
    /// The reverse-path as stored (bare local names qualified); empty for `<>`.
    pub reverse_path: String,
    pub recipients: Vec<Recipient>,
}

impl<S> Session<S> {
    pub(super) fn ehlo(&mut self, host: String, extended: bool) {
        self.helo = Some(host);
        self.extended = extended;
        self.transaction = None;
        self.bdat = None;
        if !extended {
            let text = self.live.config.hostname.clone();
            self.reply(Reply::new(250, "2.0.0", text));
            return;
        }
        let mut lines = vec![
            self.live.config.hostname.clone(),
            "PIPELINING".to_owned(),
            format!("SIZE {}", self.live.config.spool.max_message_size),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
            "CHUNKING".to_owned(),
            "DSN".to_owned(),
            "MT-PRIORITY MIXER".to_owned(),
        ];
        if self.security.offers_starttls() && !self.secure {
            lines.push("STARTTLS".to_owned());
        }
        if self.offers_auth() && self.auth_user.is_none() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        write_multiline(250, &lines, &mut self.output);
    }

    pub(super) fn mail(&mut self, mail: MailCommand) {
        if self.helo.is_none() {
            self.reply_error(reply::bad_sequence("Error: send HELO/EHLO first"));
            return;
        }
        if self.transaction.is_some() {
            self.reply_error(reply::bad_sequence("Error: nested MAIL command"));
            return;
        }
        if self.needs_auth() {
            self.reply_error(Reply::new(530, "5.7.0", "Authentication required"));
            return;
        }
        if mail
            .declared_size
            .is_some_and(|size| size > self.live.config.spool.max_message_size)
        {
            self.reply_error(reply::message_too_big());
            return;
        }
        // Refusals for lack of room name the lane the message would most
        // likely have taken; the final lane is known only after the data.
        let candidates = Lane::candidates_at_mail(mail.mt_priority, self.listener_lane);
        if !self.shared.free_space.is_sufficient() {
            let metrics = &self.shared.metrics;
            metrics.message_refused(candidates[0], RefusalReason::Disk);
            self.reply_error(reply::insufficient_storage_at_mail());
            return;
        }
        let admission = &self.live.admission;
        if let Err(full) =
            admission.check_at_mail(&self.shared.queue, mail.mt_priority, self.listener_lane)
        {
            admission.refused(full, &self.shared.queue, &self.shared.metrics);
            // Not the client's error: a producer that is told to slow down
            // must not lose its session to `smtp.max_errors` for it.
            self.reply(reply::lane_full(full));
            return;
        }
        let reverse_path = match &mail.reverse_path {
            None => String::new(),
            Some(mailbox) => mailbox.qualified(&self.live.config.smtp.origin),
        };
        self.transaction = Some(Transaction {
            mail,
            reverse_path,
            recipients: Vec::new(),
        });
        self.reply(Reply::new(250, "2.1.0", "Ok"));
    }

    pub(super) async fn rcpt(&mut self, rcpt: RcptCommand) {
        let Some(transaction) = self.transaction.as_ref() else {
            self.reply_error(reply::bad_sequence("Error: need MAIL command"));
            return;
        };
        let client_ip = self.client_ip();
        // An authenticated client relays from anywhere (RFC 4954 §1).
        if self.auth_user.is_none()
            && !self
                .live
                .config
                .smtp
                .relay_networks
                .iter()
                .any(|network| network.contains(&client_ip))
        {
            let text = format!("<{}>: Relay access denied", rcpt.forward_path);
            self.reply_error(Reply::new(554, "5.7.1", text));
            return;
        }
        if transaction.recipients.len() >= self.live.config.smtp.max_recipients {
            self.reply(Reply::new(452, "4.5.3", "Error: too many recipients"));
            return;
        }
        let address = self.resolve_local(&rcpt.forward_path);
        let suppression = &self.shared.suppression;
        if let Some(hit) =
            suppression.check(&self.live.config.suppression, &address, SystemTime::now())
        {
            suppression.refused_at_rcpt(&transaction.reverse_path, &address, &hit);
            // The `suppressed` event is committed before the refusal is sent
            // (a rare path: one group commit's wait).
            let webhooks = &self.shared.webhooks;
            if webhooks.wants(EventType::Suppressed) {
                let event = webhook::event::suppressed(
                    &transaction.reverse_path,
                    &address,
                    hit.class,
                    webhooks.ids(),
                    SystemTime::now(),
                );
                webhooks.record(&self.shared.spool, &[event]).await;
            }
            // The other recipients go on; and like a full lane, this is no
            // client error that counts towards `smtp.max_errors`: a list
            // with many suppressed addresses must not cost the session.
            self.reply(Reply::new(550, "5.1.1", hit.reply_text(&address)));
            return;
        }
        let recipient = Recipient {
            address,
            orcpt: rcpt.orcpt,
            notify: rcpt.notify,
            status: RecipientStatus::Pending,
            last_reply: None,
            class: None,
        };
        if let Some(transaction) = self.transaction.as_mut() {
            transaction.recipients.push(recipient);
        }
        self.reply(Reply::new(250, "2.1.5", "Ok"));
    }

    /// Bare local names get `smtp.origin`; with `smtp.admin_address` set, mail
    /// for local names and for the host's own domain goes there instead
    /// (nullmailer's adminaddr).
    fn resolve_local(&self, mailbox: &Mailbox) -> String {
        let is_local = match &mailbox.domain {
            None => true,
            Some(domain) => {
                domain.eq_ignore_ascii_case(&self.live.config.smtp.origin)
                    || domain.eq_ignore_ascii_case(&self.live.config.hostname)
            }
        };
        match &self.live.config.smtp.admin_address {
            Some(admin) if is_local => admin.clone(),
            _ => mailbox.qualified(&self.live.config.smtp.origin),
        }
    }
}
