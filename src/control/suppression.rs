//! The suppression list's routes: `GET /suppression` (streamed, like
//! `GET /queue`), `GET|PUT|DELETE /suppression/ADDR`, and `POST
//! /suppression` for a chunk of an import. The JSON document of an entry
//! is shared with the CLI.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use super::Context;
use super::api::{Reply, to_json};
use super::http::{self, Request};
use super::write_all;
use crate::bounce::BounceClass;
use crate::suppression::entry::{from_unix_ms, normalize, one_line, unix_ms};
use crate::suppression::{Entry, READ_CHUNK, Source, Suppression, class_named, csv};

/// Entries an import request may carry (its body is capped too).
pub const MAX_IMPORT_ENTRIES: usize = 10_000;
/// The class of an entry added by an operator, and of an imported address
/// whose line names none.
pub const ADMIN_CLASS: BounceClass = BounceClass::Admin;

/// One entry as the API and the CLI show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuppressionView {
    pub address: String,
    pub class: BounceClass,
    /// The remote reply, or the operator's reason; `""` when there is none.
    pub reply: String,
    /// RFC 3339.
    pub time: String,
    pub source: Source,
    /// Older than `suppression.expire_after`: no longer applied at RCPT,
    /// and soon swept. Absent when it still applies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
}

impl SuppressionView {
    fn new(entry: &Entry, suppression: &Suppression, now: SystemTime) -> SuppressionView {
        SuppressionView {
            address: entry.address.clone(),
            class: entry.class,
            reply: entry.reply.clone(),
            // Whole seconds: the set keeps no more, and the RCPT reply says
            // the same.
            time: crate::timefmt::rfc3339(from_unix_ms(unix_ms(entry.time) / 1000 * 1000)),
            source: entry.source,
            expired: Suppression::lapsed(&suppression.current_settings(), entry.time, now),
        }
    }
}

/// One entry of an import request.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImportEntry {
    pub address: String,
    #[serde(default)]
    pub class: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    pub entries: Vec<ImportEntry>,
}

/// `PUT /suppression/ADDR`'s optional body.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// Routes `/suppression` and `/suppression/ADDR` (the address is the rest
/// of the path, percent-decoded: it may hold a `/`).
pub async fn handle(context: &Context, request: &Request, body: &[u8], rest: &str) -> Reply {
    let suppression = &context.suppression;
    if rest.is_empty() {
        return match request.method.as_str() {
            "GET" => list(request),
            "POST" => import(suppression, body).await,
            _ => Reply::error(405, "method not allowed"),
        };
    }
    let address = rest;
    match request.method.as_str() {
        "GET" => match suppression.get(address).await {
            Ok(Some(entry)) => ok(&SuppressionView::new(
                &entry,
                suppression,
                SystemTime::now(),
            )),
            Ok(None) => not_suppressed(address),
            Err(error) => Reply::error(500, &format!("cannot read the suppression list: {error}")),
        },
        "PUT" => add(suppression, address, body).await,
        "DELETE" => match suppression.remove(address).await {
            Ok(true) => {
                tracing::info!(
                    "suppression: {} removed by administrator",
                    normalize(address)
                );
                ok(&serde_json::json!({ "removed": normalize(address) }))
            }
            Ok(false) => not_suppressed(address),
            Err(error) => Reply::error(503, &format!("cannot remove {address}: {error}")),
        },
        _ => Reply::error(405, "method not allowed"),
    }
}

fn ok(value: &impl Serialize) -> Reply {
    Reply::Json {
        status: 200,
        body: to_json(value),
    }
}

fn not_suppressed(address: &str) -> Reply {
    Reply::error(404, &format!("{} is not suppressed", normalize(address)))
}

fn list(request: &Request) -> Reply {
    let limit = match request.param("limit").map(str::parse::<usize>) {
        Some(Ok(limit)) => Some(limit),
        Some(Err(_)) => return Reply::error(400, "limit: a number of entries"),
        None => None,
    };
    let class = match request.param("class").map(class_named) {
        Some(Ok(class)) => Some(class),
        Some(Err(reason)) => return Reply::error(400, &format!("class: {reason}")),
        None => None,
    };
    Reply::Suppressions { class, limit }
}

async fn add(suppression: &Suppression, address: &str, body: &[u8]) -> Reply {
    let request: AddRequest = if body.is_empty() {
        AddRequest::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(error) => return Reply::error(400, &format!("body: {error}")),
        }
    };
    if let Err(reason) = csv::check_address(address) {
        return Reply::error(400, &reason);
    }
    let entry = Entry {
        address: normalize(address),
        class: ADMIN_CLASS,
        reply: one_line(request.reason.as_deref().unwrap_or_default()),
        time: SystemTime::now(),
        source: Source::Admin,
    };
    match suppression.put(vec![entry.clone()]).await {
        Ok(()) => {
            tracing::info!("suppression: {} added by administrator", entry.address);
            ok(&SuppressionView::new(
                &entry,
                suppression,
                SystemTime::now(),
            ))
        }
        Err(error) => Reply::error(503, &format!("cannot add {address}: {error}")),
    }
}

/// A chunk of an import: every entry is checked before any is stored, and
/// the chunk is one commit.
async fn import(suppression: &Suppression, body: &[u8]) -> Reply {
    let request: ImportRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(error) => return Reply::error(400, &format!("body: {error}")),
    };
    if request.entries.len() > MAX_IMPORT_ENTRIES {
        return Reply::error(
            400,
            &format!("at most {MAX_IMPORT_ENTRIES} entries per request"),
        );
    }
    let now = SystemTime::now();
    let mut entries = Vec::with_capacity(request.entries.len());
    for (index, imported) in request.entries.into_iter().enumerate() {
        let checked = csv::check_address(&imported.address).and_then(|()| {
            imported
                .class
                .as_deref()
                .map_or(Ok(ADMIN_CLASS), class_named)
        });
        let class = match checked {
            Ok(class) => class,
            Err(reason) => return Reply::error(400, &format!("entries[{index}]: {reason}")),
        };
        entries.push(Entry {
            address: normalize(&imported.address),
            class,
            reply: one_line(imported.reason.as_deref().unwrap_or_default()),
            time: now,
            source: Source::Import,
        });
    }
    let count = entries.len();
    match suppression.put(entries).await {
        Ok(()) => ok(&serde_json::json!({ "imported": count })),
        Err(error) => Reply::error(503, &format!("cannot store the entries: {error}")),
    }
}

/// `GET /suppression`: the entries (of `class`, if given) in address
/// order, as one JSON array written a chunk of the table at a time, each
/// chunk one short read transaction on the blocking pool: memory stays
/// that of one chunk whatever the list's length. A write that fails (the
/// client went away) ends the work.
pub async fn stream_list(
    mut stream: UnixStream,
    context: &Context,
    class: Option<BounceClass>,
    limit: Option<usize>,
) -> std::io::Result<()> {
    write_all(&mut stream, &http::streaming_head("application/json")).await?;
    write_all(&mut stream, &http::chunk(b"[")).await?;
    let mut remaining = limit.unwrap_or(usize::MAX);
    let mut after: Option<String> = None;
    let mut first = true;
    while remaining > 0 {
        let suppression = context.suppression.clone();
        let from = after.clone();
        let chunk = tokio::task::spawn_blocking(move || {
            suppression.list_after(from.as_deref(), READ_CHUNK)
        })
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
        let Some(last) = chunk.last() else { break };
        after = Some(last.address.clone());
        let now = SystemTime::now();
        let mut out = Vec::with_capacity(chunk.len() * 160);
        for entry in chunk
            .iter()
            .filter(|entry| class.is_none_or(|class| entry.class == class))
            .take(remaining)
        {
            if !first {
                out.extend_from_slice(b",\n");
            }
            first = false;
            let view = SuppressionView::new(entry, &context.suppression, now);
            serde_json::to_writer(&mut out, &view).map_err(std::io::Error::other)?;
            remaining -= 1;
        }
        if !out.is_empty() {
            write_all(&mut stream, &http::chunk(&out)).await?;
        }
        if chunk.len() < READ_CHUNK {
            break;
        }
    }
    write_all(&mut stream, &http::chunk(b"]\n")).await?;
    write_all(&mut stream, &http::chunk(b"")).await?;
    stream.shutdown().await
}
