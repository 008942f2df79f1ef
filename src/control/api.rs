//! The control API's routes: requests in, JSON out. See README "Operating
//! relayq" for the endpoints.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::time::SystemTime;

use relayq_spool::QueueId;
use serde::Deserialize;

use super::http::Request;
use super::operations;
use super::view::{
    AGE_BUCKETS, DestinationAges, LaneCounts, MessageDetail, MessageView, StatsView, age_bucket,
    domain_of,
};
use crate::queue::envelope::unix_ms;
use crate::queue::handle::QueueHandle;
use crate::queue::transition::Operation;
use crate::queue::{Entry, Envelope, Lane, State};

/// What a request gets back.
pub enum Reply {
    /// A complete JSON response.
    Json { status: u16, body: Vec<u8> },
    /// The live event stream (`GET /events`); `text` for `?format=text`
    /// (the lines of `queue tail`), else JSON lines.
    Events { text: bool },
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

fn to_json(value: &impl serde::Serialize) -> Vec<u8> {
    let mut body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    body
}

pub async fn handle(context: &QueueHandle, request: &Request, body: &[u8]) -> Reply {
    let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
    match (request.method.as_str(), segments.as_slice()) {
        ("GET", ["queue"]) => list(context, request).await,
        ("GET", ["queue", id]) => show(context, request, id).await,
        ("GET", ["stats"]) => stats(context).await,
        ("GET", ["events"]) => Reply::Events {
            text: request.param("format") == Some("text"),
        },
        ("POST", ["queue", name]) => match operations::parse(name) {
            Some(operation) => operate(context, operation, body).await,
            None => Reply::error(404, "no such operation"),
        },
        (_, ["queue"] | ["queue", _] | ["stats"] | ["events"]) => {
            Reply::error(405, "method not allowed")
        }
        _ => Reply::error(404, "no such endpoint"),
    }
}

/// Every queued message with its entry and envelope, in id order.
async fn load(context: &QueueHandle) -> Result<Vec<(QueueId, Entry, Envelope)>, String> {
    let spool = context.spool.clone();
    let scanned = tokio::task::spawn_blocking(move || spool.scan())
        .await
        .map_err(|error| error.to_string())?
        .map_err(|error| error.to_string())?;
    let mut envelopes: HashMap<QueueId, Envelope> = scanned
        .into_iter()
        .filter_map(|(id, bytes)| Some((id, Envelope::decode(&bytes).ok()?)))
        .collect();
    Ok(context
        .queue
        .snapshot()
        .into_iter()
        .filter_map(|(id, entry)| Some((id, entry, envelopes.remove(&id)?)))
        .collect())
}

/// Messages with an open recipient at `domain`.
fn open_at(envelope: &Envelope, domain: &str) -> bool {
    envelope
        .recipients
        .iter()
        .any(|recipient| !recipient.status.is_final() && domain_of(&recipient.address) == domain)
}

async fn list(context: &QueueHandle, request: &Request) -> Reply {
    let lane = match request.param("lane").map(str::parse::<Lane>) {
        Some(Err(_)) => return Reply::error(400, "lane: high or low"),
        Some(Ok(lane)) => Some(lane),
        None => None,
    };
    let state = match request.param("state") {
        Some(name) => match State::ALL.iter().find(|state| state.as_str() == name) {
            Some(state) => Some(*state),
            None => return Reply::error(400, "state: ready, active, deferred or held"),
        },
        None => None,
    };
    let older_than = match request.param("older_than").map(str::parse::<u64>) {
        Some(Err(_)) => return Reply::error(400, "older_than: seconds"),
        Some(Ok(seconds)) => Some(seconds),
        None => None,
    };
    let domain = request.param("domain").map(str::to_ascii_lowercase);
    let messages = match load(context).await {
        Ok(messages) => messages,
        Err(error) => return Reply::error(500, &format!("cannot read the spool: {error}")),
    };
    let now_ms = unix_ms(SystemTime::now());
    let views: Vec<MessageView> = messages
        .iter()
        .filter(|(_, entry, envelope)| {
            lane.is_none_or(|lane| envelope.lane == lane)
                && state.is_none_or(|state| entry.state() == state)
                && older_than.is_none_or(|seconds| {
                    now_ms.saturating_sub(envelope.arrival_ms) >= seconds * 1000
                })
                && domain
                    .as_deref()
                    .is_none_or(|domain| open_at(envelope, domain))
        })
        .map(|(id, entry, envelope)| MessageView::new(*id, entry, envelope))
        .collect();
    Reply::ok(&views)
}

async fn show(context: &QueueHandle, request: &Request, id: &str) -> Reply {
    let Ok(id) = id.parse::<QueueId>() else {
        return Reply::error(400, "not a queue id");
    };
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
        envid: envelope.envid.clone(),
        ret: envelope
            .ret
            .map(|ret| format!("{ret:?}").to_ascii_lowercase()),
        mt_priority: envelope.mt_priority,
        headers: String::from_utf8_lossy(&message[..header_end]).into_owned(),
        body: with_body.then(|| String::from_utf8_lossy(&message).into_owned()),
    };
    Reply::ok(&detail)
}

async fn stats(context: &QueueHandle) -> Reply {
    let messages = match load(context).await {
        Ok(messages) => messages,
        Err(error) => return Reply::error(500, &format!("cannot read the spool: {error}")),
    };
    let mut lanes: Vec<LaneCounts> = Lane::ALL
        .iter()
        .map(|lane| LaneCounts {
            lane: lane.to_string(),
            ..LaneCounts::default()
        })
        .collect();
    for (_, entry) in context.queue.snapshot() {
        if let Some(counts) = lanes.iter_mut().find(|c| c.lane == entry.lane.as_str()) {
            counts.add(entry.state());
        }
    }
    let now_ms = unix_ms(SystemTime::now());
    let mut domains: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (_, _, envelope) in &messages {
        let age_minutes = now_ms.saturating_sub(envelope.arrival_ms) / 60_000;
        let mut seen: Vec<String> = envelope
            .recipients
            .iter()
            .filter(|recipient| !recipient.status.is_final())
            .map(|recipient| domain_of(&recipient.address))
            .collect();
        seen.sort();
        seen.dedup();
        for domain in seen {
            domains
                .entry(domain)
                .or_insert_with(|| vec![0; AGE_BUCKETS.len() + 1])[age_bucket(age_minutes)] += 1;
        }
    }
    let mut destinations: Vec<DestinationAges> = domains
        .into_iter()
        .map(|(domain, buckets)| DestinationAges {
            domain,
            total: buckets.iter().sum(),
            buckets,
        })
        .collect();
    destinations.sort_by(|a, b| b.total.cmp(&a.total).then(a.domain.cmp(&b.domain)));
    Reply::ok(&StatsView {
        total: lanes.iter().map(LaneCounts::total).sum(),
        lanes,
        destinations,
        shaping: context.metrics.shaping.rows(),
    })
}

/// The selection of an operation: exactly one of the three.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Selection {
    #[serde(default)]
    ids: Option<Vec<String>>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    domain: Option<String>,
}

async fn operate(context: &QueueHandle, operation: Operation, body: &[u8]) -> Reply {
    let selection: Selection = match serde_json::from_slice(body) {
        Ok(selection) => selection,
        Err(error) => return Reply::error(400, &format!("body: {error}")),
    };
    let chosen = usize::from(selection.ids.is_some())
        + usize::from(selection.all)
        + usize::from(selection.domain.is_some());
    if chosen != 1 {
        return Reply::error(400, "give exactly one of ids, all or domain");
    }
    if operation == Operation::Bounce && selection.ids.is_none() {
        return Reply::error(400, "bounce takes ids only");
    }
    let explicit = selection.ids.is_some();
    let ids: Vec<QueueId> = if let Some(ids) = selection.ids {
        let mut parsed = Vec::with_capacity(ids.len());
        for id in ids {
            match id.parse() {
                Ok(id) => parsed.push(id),
                Err(_) => return Reply::error(400, &format!("not a queue id: {id}")),
            }
        }
        parsed
    } else if let Some(domain) = selection.domain {
        let domain = domain.to_ascii_lowercase();
        match load(context).await {
            Ok(messages) => messages
                .into_iter()
                .filter(|(_, _, envelope)| open_at(envelope, &domain))
                .map(|(id, _, _)| id)
                .collect(),
            Err(error) => return Reply::error(500, &format!("cannot read the spool: {error}")),
        }
    } else {
        context
            .queue
            .snapshot()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    };
    // A retry of `all` or a domain means its deferred messages: reporting
    // every ready or held one as skipped would only be noise.
    let ids = if operation == Operation::Retry && !explicit {
        ids.into_iter()
            .filter(|id| {
                context
                    .queue
                    .get(*id)
                    .is_some_and(|entry| entry.state() == State::Deferred)
            })
            .collect()
    } else {
        ids
    };
    Reply::ok(&operations::run(context, operation, ids).await)
}
