//! Wiring: the one place that builds components, spawns the long-lived tasks
//! and runs shutdown (ARCHITECTURE.md, "one place builds components").

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use relayq_spool::{Spool, SpoolOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::control;
use crate::delivery::{self, DeliveryContext};
use crate::dkim::{Signers, SigningKeys};
use crate::events::Events;
use crate::http::ResolverSource;
use crate::live::{Live, Settings};
use crate::logging::LogLevel;
use crate::maildrop;
use crate::metrics::{self, Metrics};
use crate::queue::handle::QueueHandle;
use crate::queue::{Queue, Recovery};
use crate::reload::{self, Reloader};
use crate::smtp::auth::AuthFailures;
use crate::smtp::credentials::Loaded;
use crate::smtp::idempotency;
use crate::smtp::idempotency::claims::Claims;
use crate::smtp::pressure::Pressure;
use crate::smtp::server;
use crate::smtp::session::{Security, SessionShared};
use crate::storage::FreeSpace;
use crate::suppression::{self, Suppression};
use crate::systemd::Notifier;
use crate::tls_rpt::TlsRpt;
use crate::webhook::Webhooks;

/// How long in-flight sessions may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Runs the daemon until SIGTERM or SIGINT; `SIGHUP` reloads the
/// configuration. `log_level` changes the installed subscriber's level.
pub async fn serve(config: Config, log_level: LogLevel) -> anyhow::Result<()> {
    // Registered first: SIGHUP's default action would end the process.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler")?;
    let shutdown = CancellationToken::new();
    let signal_shutdown = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        signal_shutdown.cancel();
    });
    run(config, log_level, Some(hangup), shutdown).await
}

/// Runs the daemon until `shutdown` is cancelled; reloads on `hangup`.
pub async fn run(
    config: Config,
    log_level: LogLevel,
    hangup: Option<tokio::signal::unix::Signal>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let dkim = Arc::new(SigningKeys::new(Signers::load_for(&config)?));
    let spool_path = config.spool.path.clone();
    // The boundary of the background rebuild is read before anything can
    // allocate a queue id (ARCHITECTURE.md, "the rebuild's boundary").
    let opened = tokio::task::spawn_blocking(move || {
        let spool = Spool::open(SpoolOptions::new(spool_path))?;
        let boundary = spool.last_allocated_id();
        let stored = spool.message_count()?;
        Ok::<_, relayq_spool::SpoolError>((spool, boundary, stored))
    })
    .await
    .context("spool open task failed")?;
    let (spool, boundary, stored) =
        opened.with_context(|| format!("cannot open spool {}", config.spool.path.display()))?;
    tracing::info!(
        "spool {}: {stored} messages stored (ids up to {boundary}); rebuilding the queue in the background",
        config.spool.path.display(),
    );
    let queue = Arc::new(Queue::rebuilding(
        boundary,
        usize::try_from(stored).unwrap_or(usize::MAX),
    ));
    let tracker = TaskTracker::new();
    let notifier = Arc::new(Notifier::from_env());
    // The suppression set must be whole before the first RCPT is checked.
    let loading = std::time::Instant::now();
    let suppressed = Suppression::load(&spool)
        .await
        .context("cannot load the suppression list from the spool")?;
    tracing::info!(
        "suppression list: {} addresses loaded ({} unreadable) in {} ms, {:.1} MB in memory",
        suppressed.len(),
        suppressed.unreadable,
        loading.elapsed().as_millis(),
        suppressed.table_bytes() as f64 / 1e6,
    );

    let events = Events::new();
    let metrics = Arc::new(Metrics::new());
    let control_socket = control::bind(&config.control.socket)?;
    let live =
        Live::build(config.clone(), None, &metrics, &tracker).context("cannot set up delivery")?;
    let destinations = DeliveryContext::destinations(&config);
    let settings = Settings::new(live);
    check_dnssec(&settings, &tracker);
    let resolver: ResolverSource = {
        let settings = settings.clone();
        Arc::new(move || settings.delivery().load().resolver.clone())
    };
    let webhooks =
        Arc::new(Webhooks::new(&config.webhooks, &resolver).context("cannot set up webhooks")?);
    {
        let webhooks = Arc::downgrade(&webhooks);
        metrics.webhooks.set_source(move || {
            webhooks
                .upgrade()
                .map(|webhooks| webhooks.metric_rows())
                .unwrap_or_default()
        });
    }
    let suppression = Arc::new(Suppression::new(
        suppressed,
        settings.clone(),
        spool.clone(),
        events.clone(),
        metrics.clone(),
    ));
    let handle = QueueHandle {
        settings: settings.queue(),
        spool: spool.clone(),
        queue: queue.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        hooks: vec![webhooks.clone(), suppression.clone()],
        reservations: destinations.clone(),
    };
    webhooks.start(&spool, &tracker, shutdown.clone()).await;
    // Counts sessions for TLS reports and sends them; its last counts are
    // committed once delivery has stopped, before the spool closes.
    let tls_rpt = TlsRpt::new(handle.clone(), settings.clone(), dkim.clone(), &resolver)
        .context("cannot set up TLS reporting")?;
    tls_rpt.spawn(&tracker, shutdown.clone());
    let delivery = Arc::new(
        DeliveryContext::new(
            &config,
            handle.clone(),
            destinations,
            settings.delivery(),
            tls_rpt.clone(),
            tracker.clone(),
        )
        .context("cannot set up delivery")?,
    );
    {
        // Weak: the metrics outlive nothing, and the context holds them.
        let delivery = Arc::downgrade(&delivery);
        metrics.shaping.set_source(move || {
            delivery
                .upgrade()
                .map(|delivery| delivery.destinations.shaping())
                .unwrap_or_default()
        });
    }
    let delivery_shutdown = CancellationToken::new();
    let engine = delivery::engine::spawn(
        delivery.clone(),
        &config,
        &tracker,
        delivery_shutdown.clone(),
    );

    // Read from the spool once the listeners are open (`spawn_claims_load`);
    // a keyed message waits until then.
    let claims = Arc::new(Claims::new());
    // Certificates and the users file; a reload replaces them through this.
    let credentials = Arc::new(Loaded::load(&config)?);
    let free_space = FreeSpace::new(config.spool.path.clone(), config.spool.min_free_space);
    let shared = Arc::new(SessionShared {
        settings: settings.clone(),
        spool: spool.clone(),
        queue: queue.clone(),
        free_space: free_space.clone(),
        shutdown: shutdown.clone(),
        events: events.clone(),
        metrics: metrics.clone(),
        users: credentials.users.clone(),
        auth_failures: Arc::new(AuthFailures::new()),
        password_checks: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(1, |cores| cores.get()),
        )),
        dkim: dkim.clone(),
        webhooks: webhooks.clone(),
        suppression: suppression.clone(),
        claims: claims.clone(),
    });

    let pressure = Pressure::new(config.smtp.max_connections, metrics.clone());
    let mut listeners = Vec::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        let security = Security {
            tls: listener.tls,
            acceptor: credentials.acceptors[index].clone(),
            auth: listener.auth,
        };
        let socket = server::bind(listener.address)
            .with_context(|| format!("cannot listen on {}", listener.address))?;
        let bound = socket.local_addr()?;
        tracing::info!(
            "listening on {bound} (lane {}, tls {}, auth {})",
            listener.lane,
            listener.tls,
            listener.auth,
        );
        listeners.push(tokio::spawn(server::accept_loop(
            socket,
            listener.lane,
            security,
            shared.clone(),
            pressure.clone(),
            tracker.clone(),
            shutdown.clone(),
        )));
    }
    metrics.set_listeners_up();
    // Started once the listeners are open, so it does not compete with the
    // start for the CPU; runs beside everything else: intake, delivery and
    // the control API work on the messages the scan has placed so far.
    let rebuild = spawn_rebuild(&config, &queue, &spool, &tracker, &shutdown);
    spawn_claims_load(&claims, &spool, &tracker, &shutdown);
    if let Some(address) = config.metrics.listen {
        let socket = metrics::http::bind(address).await?;
        tracing::info!(
            "metrics on {} (GET /metrics, /healthz)",
            socket.local_addr()?
        );
        let endpoint = Arc::new(metrics::http::Endpoint {
            metrics: metrics.clone(),
            queue: queue.clone(),
            destinations: {
                let delivery = delivery.clone();
                Arc::new(move || delivery.active_connections())
            },
            spool: spool.clone(),
            free_space: free_space.clone(),
            shutdown: shutdown.clone(),
        });
        tracker.spawn(metrics::http::serve(socket, endpoint, tracker.clone()));
    }
    start_maildrop_import(&config, &shared, &tracker, &shutdown);
    // Forgets idempotency keys once their window has passed (once they
    // are loaded).
    tracker.spawn(idempotency::sweep::run(
        spool.clone(),
        claims.clone(),
        settings.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(suppression::stream::run(
        suppression.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(suppression::sweep::run(
        suppression.clone(),
        shutdown.clone(),
    ));
    let reloader = Arc::new(Reloader {
        file: config.source.clone(),
        settings,
        metrics: metrics.clone(),
        engine,
        delivery: delivery.clone(),
        pressure: pressure.clone(),
        free_space,
        log_level,
        notifier: notifier.clone(),
        credentials: credentials.clone(),
        dkim: dkim.clone(),
        serial: tokio::sync::Mutex::new(()),
    });
    if let Some(hangup) = hangup {
        tokio::spawn(reload::on_hangup(
            reloader.clone(),
            hangup,
            shutdown.clone(),
        ));
    }
    // The control API (`relayq queue …`, `relayq reload`); its socket is
    // removed at shutdown.
    tracing::info!("control socket {}", config.control.socket.display());
    let control = control::Context {
        handle,
        webhooks,
        suppression: suppression.clone(),
    };
    control::spawn(
        control_socket,
        control,
        reloader,
        &tracker,
        shutdown.clone(),
    );

    tracing::info!(
        "relayq ready: hostname {}, spool {}, config {}",
        config.hostname,
        config.spool.path.display(),
        config
            .source
            .as_ref()
            .map(|path| path.display().to_string())
            .unwrap_or_else(|| "built-in defaults".to_owned()),
    );

    let ready_status = status(&queue, &rebuild);
    notifier.notify(&format!("READY=1\nSTATUS={ready_status}"));
    tracker.spawn(report_rebuild(
        queue.clone(),
        rebuild.clone(),
        notifier.clone(),
        ready_status,
        shutdown.clone(),
    ));
    if let Some(interval) = notifier.watchdog_interval() {
        tokio::spawn(watchdog(
            notifier.clone(),
            interval,
            spool.clone(),
            shutdown.clone(),
        ));
    }

    shutdown.cancelled().await;
    notifier.notify("STOPPING=1\nSTATUS=stopping: finishing sessions and deliveries");
    for listener in listeners {
        let _ = listener.await;
    }
    // Sessions first (they may still hand mail to the spool), then delivery:
    // in-flight attempts get the grace period, and whatever is not finished
    // stays queued.
    delivery_shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} sessions still open after the grace period; closing",
            tracker.len()
        );
    }
    if let Err(error) = tls_rpt.flush().await {
        tracing::warn!("tls-rpt: cannot commit the last session counts: {error}");
    }
    let remaining = queue.len();
    let unscanned = queue.rebuild_progress();
    let closing = spool.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .context("spool close task failed")?;
    if unscanned.in_progress {
        tracing::info!(
            "stopped; {remaining} messages stay queued in the spool, and the {} the rebuild had not read yet",
            unscanned.total.saturating_sub(unscanned.scanned)
        );
    } else {
        tracing::info!("stopped; {remaining} messages stay queued in the spool");
    }
    match &*rebuild.borrow() {
        Rebuild::Failed(error) => Err(anyhow::anyhow!("cannot rebuild the queue: {error}")),
        _ => Ok(()),
    }
}

/// Where the background rebuild of the schedule is.
#[derive(Debug, Clone)]
enum Rebuild {
    Running,
    Done(Recovery),
    /// The spool could not be read: the daemon stops (as a start that
    /// cannot read its spool fails), and `run` returns the error.
    Failed(String),
}

/// Reads the idempotency claims from the spool in the background, beside
/// the queue rebuild; keyed messages wait for it (`Claims::take`). An error
/// shuts the daemon down: without its claims, intake could store a repeat.
fn spawn_claims_load(
    claims: &Arc<Claims>,
    spool: &Spool,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let claims = claims.clone();
    let spool = spool.clone();
    let shutdown = shutdown.clone();
    tracker.spawn(async move {
        let started = std::time::Instant::now();
        match claims.load(&spool).await {
            Ok(loaded) => tracing::info!(
                "idempotency keys: {} loaded ({} moved from the earlier layout, {} unreadable) in {} ms, {:.1} MB in memory",
                loaded.claims,
                loaded.migrated,
                loaded.unreadable,
                started.elapsed().as_millis(),
                claims.table_bytes() as f64 / 1e6,
            ),
            Err(error) => {
                tracing::error!("cannot load the idempotency keys from the spool: {error}; shutting down");
                shutdown.cancel();
            }
        }
    });
}

/// Starts the background rebuild (`Queue::scan`, on the blocking pool,
/// tracked: it commits the removal of completed messages). Its end is
/// logged ("queue rebuilt: …") and published on the returned channel; an
/// error shuts the daemon down.
fn spawn_rebuild(
    config: &Config,
    queue: &Arc<Queue>,
    spool: &Spool,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) -> tokio::sync::watch::Receiver<Rebuild> {
    let (sender, receiver) = tokio::sync::watch::channel(Rebuild::Running);
    let queue = queue.clone();
    let spool = spool.clone();
    let shutdown = shutdown.clone();
    let path = config.spool.path.display().to_string();
    tracker.spawn(async move {
        let started = std::time::Instant::now();
        match queue.scan(&spool, shutdown.clone()).await {
            Ok(_) if queue.rebuild_progress().in_progress => {
                tracing::info!("queue rebuild stopped by shutdown; the rest stays in the spool");
            }
            Ok(recovery) => {
                tracing::info!(
                    "queue rebuilt in {} ms: spool {path}: {} messages queued (high {}, low {}), {} completed removed, {} set aside",
                    started.elapsed().as_millis(),
                    recovery.high + recovery.low,
                    recovery.high,
                    recovery.low,
                    recovery.completed,
                    recovery.quarantined,
                );
                sender.send_replace(Rebuild::Done(recovery));
            }
            Err(error) => {
                tracing::error!(
                    "cannot rebuild the queue from the spool {path}: {error}; shutting down"
                );
                sender.send_replace(Rebuild::Failed(error.to_string()));
                shutdown.cancel();
            }
        }
    });
    receiver
}

/// systemd's `STATUS=` text: the rebuild's progress, then the messages it
/// found.
fn status(queue: &Queue, rebuild: &tokio::sync::watch::Receiver<Rebuild>) -> String {
    match &*rebuild.borrow() {
        Rebuild::Done(recovery) => format!(
            "accepting mail; {} messages queued at start",
            recovery.high + recovery.low
        ),
        Rebuild::Failed(error) => format!("cannot rebuild the queue: {error}"),
        Rebuild::Running => format!("accepting mail; {}", queue.rebuild_progress()),
    }
}

/// Updates systemd's `STATUS=` (last sent: `sent`) with the rebuild's
/// progress every `STATUS_INTERVAL` until it ends, then once more with its
/// result.
async fn report_rebuild(
    queue: Arc<Queue>,
    mut rebuild: tokio::sync::watch::Receiver<Rebuild>,
    notifier: Arc<Notifier>,
    mut sent: String,
    shutdown: CancellationToken,
) {
    const STATUS_INTERVAL: Duration = Duration::from_millis(500);
    loop {
        let running = matches!(*rebuild.borrow_and_update(), Rebuild::Running);
        let text = status(&queue, &rebuild);
        if text != sent {
            notifier.notify(&format!("STATUS={text}"));
            sent = text;
        }
        if !running {
            return;
        }
        tokio::select! {
            changed = rebuild.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(STATUS_INTERVAL) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Pings systemd's watchdog while the spool is healthy (it can commit).
async fn watchdog(
    notifier: Arc<Notifier>,
    interval: Duration,
    spool: Spool,
    shutdown: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        if spool.is_healthy() {
            notifier.notify("WATCHDOG=1");
        } else {
            tracing::warn!("spool unhealthy: not pinging the systemd watchdog");
        }
    }
}

/// Creates the maildrop if needed and imports what `sendmail` left there,
/// now and while running. A maildrop that cannot be created is logged, not
/// fatal: SMTP intake works without it.
fn start_maildrop_import(
    config: &Config,
    shared: &Arc<SessionShared>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    let directory = config.control.maildrop.clone();
    if let Err(error) = maildrop::prepare_directory(&directory) {
        tracing::error!("maildrop {}: cannot create: {error}", directory.display());
    }
    let settings = maildrop::ImportSettings {
        directory,
        lane: config.listeners[0].lane,
    };
    maildrop::spawn(settings, shared.clone(), tracker, shutdown.clone());
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!("cannot install SIGTERM handler: {error}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// With `delivery.dane`, checks at start that DNSSEC validation works on
/// the configured name servers and logs the result (an error names a path
/// that strips DNSSEC: MX delivery would defer until it is fixed). Never
/// delays the start.
fn check_dnssec(settings: &Settings, tracker: &TaskTracker) {
    let resolver = settings.snapshot().delivery.resolver.clone();
    if resolver.validates() {
        tracker.spawn(async move {
            resolver.check_dnssec().await;
        });
    }
}
