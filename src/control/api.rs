//! The control API's routes: requests in, JSON out. See docs/operations.md
//! ("The control API") for the endpoints. Lists and bulk operations are answered as
//! streams (`Reply::List`, `Reply::Bulk`), served by the connection code in
//! `mod.rs`.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use relayq_spool::QueueId;
use serde::Deserialize;

use super::Context;
use super::http::Request;
use super::operations::{self, Bulk};
use super::select::Filter;
use super::view::{
    AGE_BUCKETS, DestinationAges, LaneCounts, MessageDetail, MessageView, StatsView, age_bucket,
};
use crate::queue::envelope::unix_ms;
use crate::queue::transition::Operation;
use crate::queue::{Envelope, Lane, RebuildProgress, SetId};
use crate::reload::Reloader;

/// What a request gets back.
pub enum Reply {
    /// A complete JSON response.
    Json { status: u16, body: Vec<u8> },
    /// The live event stream (`GET /events`); `text` for `?format=text`
    /// (the lines of `queue tail`), else JSON lines.
    Events { text: bool },
    /// `GET /queue`: a JSON array streamed as it is built.
    List {
        filter: Filter,
        limit: Option<usize>,
    },
    /// A bulk operation, run in chunks; with `progress`, JSON lines of
    /// progress before the report.
    Bulk { bulk: Bulk, progress: bool },
    /// `GET /suppression`: a JSON array streamed as it is built.
    Suppressions {
        class: Option<crate::bounce::BounceClass>,
        limit: Option<usize>,
    },
}

impl Reply {
    fn ok(value: &impl serde::Serialize) -> Reply {
        Reply::Json {
            status: 200,
            body: to_json(value),
        }
    }

    pub fn error(status: u16, message: &str) -> Reply {
        Reply::Json {
            status,
            body: to_json(&serde_json::json!({ "error": message })),
        }
    }
}

pub fn to_json(value: &impl serde::Serialize) -> Vec<u8> {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    body
}

pub async fn handle(context: &Context, request: &Request, body: &[u8]) -> Reply {
    let path = request.path.trim_start_matches('/');
    if let Some(rest) = path.strip_prefix("suppression")
        && (rest.is_empty() || rest.starts_with('/'))
    {
        let address = rest.strip_prefix('/').unwrap_or_default();
        return super::suppression::handle(context, request, body, address).await;
    }
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["queue"]) => list(request),
        ("GET", ["queue", id]) => show(context, request, id).await,
        ("GET", ["stats"]) => stats(context),
        ("GET", ["rebuild"]) => Reply::ok(&context.queue.rebuild_progress()),
        ("GET", ["events"]) => Reply::Events {
            text: request.param("format") == Some("text"),
        },
        ("POST", ["queue", name]) => match operations::parse(name) {
            Some(operation) => operate(context, operation, request, body).await,
            None => Reply::error(404, "no such operation"),
        },
        ("GET", ["webhooks"]) => Reply::ok(&context.webhooks.status()),
        ("POST", ["webhooks", name, "test"]) => match context.webhooks.test(name).await {
            Some(outcome) => Reply::ok(&outcome),
            None => Reply::error(404, &format!("no webhook named {name:?}")),
        },
        (_, ["queue"] | ["queue", _] | ["stats"] | ["rebuild"] | ["events"] | ["webhooks"])
        | (_, ["webhooks", _, "test"]) => Reply::error(405, "method not allowed"),
        _ => Reply::error(404, "no such endpoint"),
    }
}

/// `POST /reload`: re-reads the daemon's configuration file. 200 with the
/// keys changed and those that need a restart; 422 with the file, key and
/// reason when the file is refused (nothing changed).
pub async fn reload(reloader: &Reloader, request: &Request) -> Reply {
    if request.method != "POST" {
        return Reply::error(405, "method not allowed");
    }
    match reloader.reload().await {
        Ok(report) => Reply::ok(&report),
        Err(error) => Reply::error(422, &error.to_string()),
    }
}

fn list(request: &Request) -> Reply {
    let filter = match Filter::from_query(request) {
        Ok(filter) => filter,
        Err(error) => return Reply::error(400, &error),
    };
    let limit = match request.param("limit").map(str::parse::<usize>) {
        Some(Ok(limit)) => Some(limit),
        Some(Err(_)) => return Reply::error(400, "limit: a number of messages"),
        None => None,
    };
    Reply::List { filter, limit }
}

async fn show(context: &Context, request: &Request, id: &str) -> Reply {
    let Ok(id) = id.parse::<QueueId>() else {
        return Reply::error(400, "not a queue id");
    };
    if let Err(progress) = context.queue.wait_scanned(id, REBUILD_WAIT).await {
        return rebuilding(progress);
    }
    let Some(entry) = context.queue.get(id) else {
        return Reply::error(404, "no such message in the queue");
    };
    let with_body = matches!(request.param("body"), Some("1" | "true" | "yes"));
    let spool = context.spool.clone();
    let loaded =
        tokio::task::spawn_blocking(move || -> Result<Option<(Envelope, Vec<u8>)>, String> {
            let Some(bytes) = spool.envelope(id).map_err(|e| e.to_string())? else {
                return Ok(None);
            };
            let envelope = Envelope::decode(&bytes).map_err(|e| e.to_string())?;
            let mut message = Vec::new();
            spool
                .read_body(id)
                .map_err(|e| e.to_string())?
                .read_to_end(&mut message)
                .map_err(|e| e.to_string())?;
            Ok(Some((envelope, message)))
        })
        .await;
    let (envelope, message) = match loaded {
        Ok(Ok(Some(loaded))) => loaded,
        Ok(Ok(None)) => return Reply::error(404, "no such message in the queue"),
        Ok(Err(error)) => return Reply::error(500, &format!("cannot read {id}: {error}")),
        Err(error) => return Reply::error(500, &format!("cannot read {id}: {error}")),
    };
    let header_end = memchr::memmem::find(&message, b"\r\n\r\n")
        .map(|at| at + 2)
        .unwrap_or(message.len());
    let detail = MessageDetail {
        message: MessageView::new(id, &entry, &envelope),
        client_address: envelope.client_address.map(|address| address.to_string()),
        helo: envelope.helo.clone(),
        auth_user: envelope.auth_user.clone(),
        envid: envelope.envid.clone(),
        ret: envelope
            .ret
            .map(|ret| format!("{ret:?}").to_ascii_lowercase()),
        mt_priority: envelope.mt_priority,
        meta: envelope.meta.clone(),
        headers: String::from_utf8_lossy(&message[..header_end]).into_owned(),
        body: with_body.then(|| String::from_utf8_lossy(&message).into_owned()),
    };
    Reply::ok(&detail)
}

/// How long an operation on a message the startup rebuild has not read
/// yet (or a bulk operation, which needs all of them) waits for it before
/// it is answered `503`.
const REBUILD_WAIT: Duration = Duration::from_secs(15);

/// `503`: the startup rebuild has not read the messages a request needs
/// yet; nothing was done.
fn rebuilding(progress: RebuildProgress) -> Reply {
    Reply::error(503, &format!("{progress}; try again in a moment"))
}

/// Counts by lane × state and by domain × age, from the schedule alone.
fn stats(context: &Context) -> Reply {
    // Read before the walk: counts made while the rebuild ran say so, even
    // when it ends during the walk.
    let rebuild = context.queue.rebuild_progress();
    let mut lanes: Vec<LaneCounts> = Lane::ALL
        .iter()
        .map(|lane| LaneCounts {
            lane: lane.to_string(),
            ..LaneCounts::default()
        })
        .collect();
    let now_ms = unix_ms(SystemTime::now());
    // Per domain set, the messages by age bucket; expanded to domains once
    // the walk is done (a set is shared by many messages).
    let mut by_set: BTreeMap<SetId, Vec<usize>> = BTreeMap::new();
    let mut set_domains: BTreeMap<SetId, Vec<Arc<str>>> = BTreeMap::new();
    context.queue.visit(None, |_, entry, domains| {
        let counts = match entry.lane {
            Lane::High => &mut lanes[0],
            Lane::Low => &mut lanes[1],
        };
        counts.add(entry.state());
        let age_minutes = now_ms.saturating_sub(entry.arrival_ms) / 60_000;
        let buckets = by_set
            .entry(entry.domains)
            .or_insert_with(|| vec![0; AGE_BUCKETS.len() + 1]);
        buckets[age_bucket(age_minutes)] += 1;
        set_domains
            .entry(entry.domains)
            .or_insert_with(|| domains.domains(entry.domains).to_vec());
        true
    });
    let mut domains: BTreeMap<Arc<str>, Vec<usize>> = BTreeMap::new();
    for (set, buckets) in by_set {
        for domain in set_domains.get(&set).into_iter().flatten() {
            let total = domains
                .entry(domain.clone())
                .or_insert_with(|| vec![0; AGE_BUCKETS.len() + 1]);
            for (sum, count) in total.iter_mut().zip(&buckets) {
                *sum += count;
            }
        }
    }
    let mut destinations: Vec<DestinationAges> = domains
        .into_iter()
        .map(|(domain, buckets)| DestinationAges {
            domain: domain.to_string(),
            total: buckets.iter().sum(),
            buckets,
        })
        .collect();
    destinations.sort_by(|a, b| b.total.cmp(&a.total).then(a.domain.cmp(&b.domain)));
    Reply::ok(&StatsView {
        rebuild: rebuild.in_progress.then_some(rebuild),
        total: lanes.iter().map(LaneCounts::total).sum(),
        lanes,
        destinations,
        shaping: context.metrics.shaping.rows(),
    })
}

/// The selection of an operation: ids, or `all` / a `domain`, narrowed by
/// the filters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    lane: Option<Lane>,
    #[serde(default)]
    state: Option<crate::queue::State>,
    /// Seconds since arrival.
    #[serde(default)]
    older_than: Option<u64>,
    /// List the ids in the report of a bulk operation (its counts always).
    #[serde(default)]
    report_ids: bool,
}

async fn operate(context: &Context, operation: Operation, request: &Request, body: &[u8]) -> Reply {
    let selection: Selection = match serde_json::from_slice(body) {
        Ok(selection) => selection,
        Err(error) => return Reply::error(400, &format!("body: {error}")),
    };
    let filtered =
        selection.lane.is_some() || selection.state.is_some() || selection.older_than.is_some();
    if let Some(ids) = selection.ids {
        if selection.all || selection.domain.is_some() || filtered {
            return Reply::error(400, "give ids, or all or domain (with filters), not both");
        }
        let mut parsed = Vec::with_capacity(ids.len());
        for id in ids {
            match id.parse::<QueueId>() {
                Ok(id) => parsed.push(id),
                Err(_) => return Reply::error(400, &format!("not a queue id: {id}")),
            }
        }
        // All or nothing: no message is changed before the scan has passed
        // every one (REBUILD_WAIT in all).
        let deadline = tokio::time::Instant::now() + REBUILD_WAIT;
        for id in &parsed {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Err(progress) = context.queue.wait_scanned(*id, left).await {
                return rebuilding(progress);
            }
        }
        return Reply::ok(&operations::run(context, operation, parsed).await);
    }
    if selection.all == selection.domain.is_some() {
        return Reply::error(400, "give exactly one of ids, all or domain");
    }
    let filter = Filter {
        lane: selection.lane,
        state: selection.state,
        domain: selection.domain,
        older_than: selection.older_than,
    }
    .normalised();
    // A selection is made from the schedule: it must hold every message.
    if let Err(progress) = context.queue.wait_rebuilt(REBUILD_WAIT).await {
        return rebuilding(progress);
    }
    Reply::Bulk {
        bulk: Bulk {
            operation,
            filter,
            report_ids: selection.report_ids,
        },
        progress: request.param("progress") == Some("1"),
    }
}
