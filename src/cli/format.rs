//! Text output of the `queue` commands (pure): the mailq-style list, the
//! `show` page, the stats tables and operation reports.

use std::fmt::Write as _;

use crate::control::view::{AGE_BUCKETS, MessageDetail, MessageView, OperationReport, StatsView};
use crate::metrics::DestinationShaping;
use crate::queue::envelope::RecipientStatus;

/// The header line of `queue list`, as Postfix's `mailq`.
pub const LIST_HEADER: &str = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------";

/// Column where recipients start, under the sender.
const RECIPIENT_INDENT: usize = 46;

/// `Tue Jun  3 10:00:00` (UTC) from the daemon's RFC 3339 time
/// (`2026-06-03T10:00:00Z`, fractions allowed).
fn arrival_text(rfc3339: &str) -> String {
    let field = |range: std::ops::Range<usize>| rfc3339.get(range)?.parse::<u16>().ok();
    let parsed = (|| {
        let month = time::Month::try_from(field(5..7)? as u8).ok()?;
        let date =
            time::Date::from_calendar_date(field(0..4)? as i32, month, field(8..10)? as u8).ok()?;
        let at = date
            .with_hms(
                field(11..13)? as u8,
                field(14..16)? as u8,
                field(17..19)? as u8,
            )
            .ok()?;
        let format = time::macros::format_description!(
            "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second]"
        );
        at.format(&format).ok()
    })();
    parsed.unwrap_or_else(|| rfc3339.to_owned())
}

fn sender_text(sender: &str) -> &str {
    if sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        sender
    }
}

/// Postfix `mailq` style: per message the id (`*` active, `!` held), size,
/// arrival and sender, then each open recipient, with the last reply of a
/// deferred one in parentheses above it. The CLI prints it entry by entry
/// as the list streams in (`list_header`, `list_entry`, `list_footer`).
#[cfg(test)]
pub fn list(messages: &[MessageView]) -> String {
    if messages.is_empty() {
        return list_empty().to_owned();
    }
    let mut out = list_header();
    let mut bytes = 0u64;
    for message in messages {
        bytes += message.size;
        out.push_str(&list_entry(message));
    }
    out.push_str(&list_footer(bytes, messages.len()));
    out
}

/// What `mailq` says of an empty queue.
pub fn list_empty() -> &'static str {
    "Mail queue is empty\n"
}

/// The column heads, before the first entry.
pub fn list_header() -> String {
    format!("{LIST_HEADER}\n")
}

/// One message's lines and the blank line after them.
pub fn list_entry(message: &MessageView) -> String {
    let mut out = String::new();
    let flag = match message.state.as_str() {
        "active" => "*",
        "held" => "!",
        _ => "",
    };
    let _ = writeln!(
        out,
        "{:<15} {:>8} {:>19}  {}",
        format!("{}{flag}", message.id),
        message.size,
        arrival_text(&message.arrival),
        sender_text(&message.sender),
    );
    for recipient in &message.recipients {
        if matches!(
            recipient.status,
            RecipientStatus::Delivered | RecipientStatus::Bounced
        ) {
            continue;
        }
        if recipient.status == RecipientStatus::Deferred
            && let Some(reply) = &recipient.last_reply
        {
            let _ = writeln!(out, "{:RECIPIENT_INDENT$}({reply})", "");
        }
        let _ = writeln!(out, "{:RECIPIENT_INDENT$}{}", "", recipient.address);
    }
    out.push('\n');
    out
}

/// The total after the last entry.
pub fn list_footer(bytes: u64, messages: usize) -> String {
    format!(
        "-- {} Kbytes in {messages} Requests.\n",
        bytes.div_ceil(1024)
    )
}

pub fn show(detail: &MessageDetail) -> String {
    let message = &detail.message;
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        let _ = writeln!(out, "{:<14}{value}", format!("{name}:"));
    };
    field("Queue ID", &message.id);
    field("State", &message.state);
    field("Lane", &message.lane);
    field("Sender", &format!("<{}>", message.sender));
    field("Arrival", &message.arrival);
    field("Size", &message.size.to_string());
    field("Attempts", &message.attempts.to_string());
    field(
        "Next attempt",
        message
            .next_attempt
            .as_deref()
            .unwrap_or(match message.state.as_str() {
                "held" => "none (held)",
                "active" => "in progress",
                _ => "now",
            }),
    );
    if let Some(client) = &detail.client_address {
        let helo = detail.helo.as_deref().unwrap_or("unknown");
        field("Client", &format!("{client} (helo {helo})"));
    }
    if let Some(user) = &detail.auth_user {
        field("Auth user", user);
    }
    if let Some(envid) = &detail.envid {
        field("Envid", envid);
    }
    if let Some(priority) = detail.mt_priority {
        field("MT-Priority", &priority.to_string());
    }
    for (key, value) in detail.meta.iter() {
        field(&format!("Meta {key}"), value);
    }
    let _ = writeln!(out, "Recipients:");
    for recipient in &message.recipients {
        let status = serde_json::to_value(recipient.status)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = write!(out, "  <{}> {status}", recipient.address);
        if let Some(reply) = &recipient.last_reply {
            let _ = write!(out, " ({reply})");
        }
        if let Some(class) = recipient.class {
            let _ = write!(out, " class={class}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "Headers:");
    for line in detail.headers.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

pub fn stats(stats: &StatsView) -> String {
    let mut out = String::new();
    if let Some(rebuild) = &stats.rebuild {
        let _ = writeln!(
            out,
            "{rebuild}; the counts below cover only the messages read so far\n"
        );
    }
    let _ = writeln!(
        out,
        "{:<6} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "lane", "ready", "active", "deferred", "held", "total"
    );
    for lane in &stats.lanes {
        let _ = writeln!(
            out,
            "{:<6} {:>8} {:>8} {:>8} {:>8} {:>8}",
            lane.lane,
            lane.ready,
            lane.active,
            lane.deferred,
            lane.held,
            lane.total()
        );
    }
    let _ = writeln!(out, "{:<6} {:>44}", "total", stats.total);
    out.push('\n');
    // qshape: messages by destination and age in minutes.
    let width = stats
        .destinations
        .iter()
        .map(|destination| destination.domain.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let _ = write!(out, "{:>width$} {:>6}", "", "T");
    for limit in AGE_BUCKETS {
        let _ = write!(out, " {limit:>5}");
    }
    let _ = writeln!(
        out,
        " {:>5}",
        format!("{}+", AGE_BUCKETS[AGE_BUCKETS.len() - 1])
    );
    let mut totals = vec![0usize; AGE_BUCKETS.len() + 1];
    for destination in &stats.destinations {
        for (total, count) in totals.iter_mut().zip(&destination.buckets) {
            *total += count;
        }
    }
    let mut row = |name: &str, buckets: &[usize]| {
        let _ = write!(out, "{name:>width$} {:>6}", buckets.iter().sum::<usize>());
        for count in buckets {
            let _ = write!(out, " {count:>5}");
        }
        out.push('\n');
    };
    row("TOTAL", &totals);
    for destination in &stats.destinations {
        row(&destination.domain, &destination.buckets);
    }
    if !stats.shaping.is_empty() {
        shaping(&mut out, &stats.shaping);
    }
    out
}

/// Output control: destinations with a rule or a lowered limit.
fn shaping(out: &mut String, rows: &[DestinationShaping]) {
    let width = rows
        .iter()
        .map(|row| row.destination.len())
        .max()
        .unwrap_or(0)
        .max("destination".len());
    let _ = writeln!(
        out,
        "\n{:<width$} {:>5} {:>6} {:>7}  suspended until",
        "destination", "limit", "active", "waiting"
    );
    for row in rows {
        let _ = writeln!(
            out,
            "{:<width$} {:>5} {:>6} {:>7}  {}",
            row.destination,
            row.concurrency_limit,
            row.active,
            row.waiting,
            row.suspended_until.as_deref().unwrap_or("-")
        );
    }
}

fn messages(count: usize) -> String {
    match count {
        1 => "1 message".to_owned(),
        count => format!("{count} messages"),
    }
}

/// One line per id: what was done, or why not; a bulk operation's report
/// without ids: its counts.
pub fn report(done_word: &str, report: &OperationReport) -> String {
    let mut out = String::new();
    let counts = &report.counts;
    let listed =
        report.done.len() + report.pending.len() + report.skipped.len() + report.not_found.len();
    let counted = counts.done + counts.pending + counts.skipped + counts.not_found;
    if listed < counted {
        let _ = writeln!(out, "{done_word}: {}", messages(counts.done));
        if counts.pending > 0 {
            let _ = writeln!(
                out,
                "delivery in progress: {}, {done_word} when it ends",
                messages(counts.pending)
            );
        }
        if counts.skipped > 0 {
            let _ = writeln!(out, "skipped: {}", messages(counts.skipped));
        }
        if counts.not_found > 0 {
            let _ = writeln!(out, "gone meanwhile: {}", messages(counts.not_found));
        }
        if report.interrupted {
            out.push_str("stopped: the daemon is shutting down; the rest stays queued\n");
        }
        return out;
    }
    for id in &report.done {
        let _ = writeln!(out, "{id}: {done_word}");
    }
    for pending in &report.pending {
        let _ = writeln!(out, "{}: {}", pending.id, pending.reason);
    }
    for skipped in &report.skipped {
        let _ = writeln!(out, "{}: skipped ({})", skipped.id, skipped.reason);
    }
    for id in &report.not_found {
        let _ = writeln!(out, "{id}: not found in the queue");
    }
    if report.interrupted {
        out.push_str("stopped: the daemon is shutting down; the rest stays queued\n");
    }
    if out.is_empty() {
        out.push_str("nothing to do\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::view::RecipientView;

    #[test]
    fn list_looks_like_mailq() {
        assert_eq!(list(&[]), "Mail queue is empty\n");
        let message = sample();
        let text = list(&[message]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], LIST_HEADER);
        assert!(lines[1].starts_with("0660EE029DCD2E! "), "{text}");
        assert!(
            lines[1].contains(" 2048 Mon Nov 23 09:01:56  app@example.com"),
            "{text}"
        );
        assert_eq!(lines[2].trim(), "(451 4.7.1 later)");
        assert_eq!(lines[3].trim(), "user@example.org");
        assert!(!text.contains("done@example.org"));
        assert_eq!(lines.last().unwrap(), &"-- 2 Kbytes in 1 Requests.");
    }

    #[test]
    fn show_gives_each_failed_recipient_its_class() {
        let detail = MessageDetail {
            message: sample(),
            client_address: None,
            helo: None,
            auth_user: None,
            envid: None,
            ret: None,
            mt_priority: None,
            meta: Default::default(),
            headers: "Subject: x\r\n".into(),
            body: None,
        };
        let text = show(&detail);
        assert!(
            text.contains("  <user@example.org> deferred (451 4.7.1 later) class=policy\n"),
            "{text}"
        );
        assert!(text.contains("  <done@example.org> delivered\n"), "{text}");
        let json = serde_json::to_value(&detail).unwrap();
        assert_eq!(json["recipients"][0]["class"], "policy");
        assert!(json["recipients"][1].get("class").is_none());
    }

    #[test]
    fn stats_say_when_the_queue_is_being_rebuilt() {
        let mut view = StatsView {
            rebuild: Some(crate::queue::RebuildProgress {
                in_progress: true,
                scanned: 250,
                total: 1000,
            }),
            total: 0,
            lanes: Vec::new(),
            destinations: Vec::new(),
            shaping: Vec::new(),
        };
        let text = stats(&view);
        assert!(
            text.starts_with("queue is being rebuilt: 250 of 1000 messages scanned (25%); "),
            "{text}"
        );
        view.rebuild = None;
        assert!(stats(&view).starts_with("lane "));
        // The JSON leaves the field out once the rebuild is done.
        let json = serde_json::to_value(&view).unwrap();
        assert!(json.get("rebuild").is_none(), "{json}");
    }

    fn sample() -> MessageView {
        MessageView {
            id: "0660EE029DCD2E".into(),
            lane: "high".into(),
            state: "held".into(),
            sender: "app@example.com".into(),
            arrival: "2026-11-23T09:01:56Z".into(),
            size: 2048,
            attempts: 1,
            next_attempt: None,
            recipients: vec![
                RecipientView {
                    address: "user@example.org".into(),
                    status: RecipientStatus::Deferred,
                    last_reply: Some("451 4.7.1 later".into()),
                    class: Some(crate::bounce::BounceClass::Policy),
                },
                RecipientView {
                    address: "done@example.org".into(),
                    status: RecipientStatus::Delivered,
                    last_reply: None,
                    class: None,
                },
            ],
        }
    }
}
