//! Wiring of one run: directories, sinks, the API, signals, the live table and the
//! [`System`]; then the ordered shutdown.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::analytics::counts::CsvWriter;
use crate::analytics::sink::{EventSink, JsonlEventSink, Writer};
use crate::analytics::stage::{AnalyticsShared, AnalyticsStage};
use crate::clock::SystemClock;
use crate::config::{Config, OutputConfig};
use crate::metrics::Metrics;
use crate::results::{Dispatcher, JsonlSink, ResultQueue, Sink, SinkError, StdoutSink};
use crate::sinks::SinkHealth;
use crate::supervisor::child::kill_all_groups;
use crate::system::{ensure_dir, remove_files, Binaries, Shared, StartError, System};
use crate::{api, status, table};

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Binaries or directories missing.
    #[error(transparent)]
    Start(#[from] StartError),
    /// An output could not be opened.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The API address is taken or not allowed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start the result thread: {0}")]
    Thread(std::io::Error),
    /// The API token could not be read or created.
    #[error(transparent)]
    Token(#[from] api::auth::TokenError),
    /// The clips folder could not be created.
    #[error("clips: {0}")]
    Clips(#[from] crate::clips::ClipError),
    /// A broker sink could not start (its password, its settings).
    #[error(transparent)]
    Broker(#[from] crate::outputs::BrokerStartError),
    /// The descriptor limit cannot hold the API's cap and the agent's own work.
    #[error(transparent)]
    Fds(#[from] crate::fds::FdBudgetError),
}

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Result records written to the sinks.
    pub written: u64,
    /// Records dropped by the full queue or not written by a sink (disk full).
    pub dropped: u64,
    /// The final camera reports.
    pub cameras: Vec<status::CameraStatus>,
    /// The final model reports.
    pub models: Vec<status::ModelStatus>,
}

fn open_sinks(
    outputs: &[OutputConfig],
    health: &SinkHealth,
) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    outputs
        .iter()
        .map(|o| -> Result<Box<dyn Sink>, SinkError> {
            Ok(match o {
                OutputConfig::Jsonl { path } => Box::new(JsonlSink::create(path, health)?),
                OutputConfig::Stdout => Box::new(StdoutSink::new(health)),
            })
        })
        .collect()
}

/// The analytics state, its event sink (`events.jsonl`) and counts files, and the
/// thread writing them.
fn start_analytics(
    config: &Config,
    recent: &Arc<crate::web::RecentEvents>,
    brokers: &crate::outputs::Brokers,
    health: &SinkHealth,
) -> Result<(Arc<AnalyticsShared>, Writer), RunError> {
    let a = &config.analytics;
    let shared = AnalyticsShared::new(a.clone(), AnalyticsShared::rules_of(config));
    let mut sinks: Vec<Box<dyn EventSink>> = Vec::new();
    if let Some(path) = a.events_file(&config.outputs) {
        sinks.push(Box::new(JsonlEventSink::create(&path, health)?));
    }
    // The dashboard's recent events (`GET /events`, `/events/stream`).
    sinks.push(Box::new(crate::web::RecentSink(recent.clone())));
    sinks.extend(brokers.event_sink());
    let csv = match a.counts_directory(&config.outputs) {
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|source| SinkError::Open {
                path: dir.clone(),
                source,
            })?;
            Some(CsvWriter::new(&dir, health))
        }
        None => None,
    };
    let writer = Writer::start(
        shared.queue.clone(),
        sinks,
        csv,
        shared.write_errors.clone(),
    )
    .map_err(RunError::Thread)?;
    Ok((shared, writer))
}

/// First SIGTERM/SIGINT: ordered shutdown. Second: kill every child group, remove
/// rings and sockets, exit at once.
fn install_signals(shutdown: watch::Sender<bool>, shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down (a second signal exits at once)");
        let _ = shutdown.send(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("core-agent: second signal, exiting now");
        kill_all_groups();
        remove_files(&shared.view().owned_files);
        std::process::exit(proto_schema::exit::EXIT_INTERRUPTED);
    });
}

fn spawn_table(shared: Arc<Shared>, every: Duration, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let tty = std::io::stdout().is_terminal();
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let text = table::render(
                &status::cameras(&shared),
                &status::models(&shared),
                shared.api_addr,
                shared.metrics.uptime().as_secs(),
                shared.results.pushed(),
                shared.results.dropped(),
            );
            let mut out = std::io::stdout().lock();
            let _ = if tty {
                write!(out, "\x1b[2J\x1b[H{text}")
            } else {
                writeln!(out, "{text}")
            };
            let _ = out.flush();
        }
    });
}

/// Runs the system described by `config` (already validated) until a signal or
/// `duration`. `api_token` is the value of `FRAMEBUS_API_TOKEN`, if any (read by the
/// caller, which also keeps it out of the children's environment).
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    duration: Option<Duration>,
    api_token: Option<String>,
) -> Result<Summary, RunError> {
    let fds = crate::fds::raise_and_check(
        config.api.max_connections,
        config.cameras.len(),
        config.models.len(),
    )?;
    tracing::info!(
        limit = fds.limit,
        raised_from = ?fds.raised_from,
        api = fds.api,
        reserve = fds.reserve,
        "descriptor budget"
    );
    let bins = Binaries::locate(config.agent.bin_dir.as_deref())?;
    ensure_dir(&config.agent.ring_dir)?;
    ensure_dir(&config.agent.socket_dir)?;
    let token = api::auth::ApiToken::resolve(api_token, &config.agent.token_file())?;
    let queue = ResultQueue::new(config.limits.result_queue);
    let recent = crate::web::RecentEvents::new(config.dashboard.recent_events);
    let brokers = crate::outputs::Brokers::start(&config.brokers)?;
    // Before the sinks: each file sink reports to its register (`metrics.sinks`).
    let metrics = Arc::new(Metrics::default());
    let (analytics, analytics_writer) =
        start_analytics(&config, &recent, &brokers, &metrics.sinks)?;
    let clips = crate::clips::Clips::new(config.clips.clone(), &metrics.sinks)?;
    let recorder = match &clips {
        Some(c) => Some(crate::clips::Recorder::start(c.clone()).map_err(RunError::Thread)?),
        None => None,
    };
    let live = crate::live::LiveShared::new(config.live.clone(), config.agent.ring_dir.clone());
    let mut sinks = open_sinks(&config.outputs, &metrics.sinks)?;
    sinks.push(Box::new(crate::live::store::LiveSink::new(
        live.store.clone(),
    )));
    if let (Some(m), Some(link)) = (&config.brokers.mqtt, &brokers.mqtt) {
        if m.detections {
            sinks.push(Box::new(crate::outputs::DetectionsSink::new(
                link.clone(),
                m.detections_interval_ms,
            )));
        }
    }
    let dispatcher = Dispatcher::start_with(
        queue.clone(),
        sinks,
        Some(Box::new(
            AnalyticsStage::new(analytics.clone()).with_clips(clips.clone()),
        )),
    )
    .map_err(RunError::Thread)?;
    let listener = tokio::net::TcpListener::bind(config.agent.api_addr)
        .await
        .map_err(|source| RunError::Bind {
            addr: config.agent.api_addr,
            source,
        })?;
    let api_addr = listener.local_addr().unwrap_or(config.agent.api_addr);
    let shared = Arc::new(Shared {
        metrics,
        results: queue,
        analytics,
        live,
        clips,
        view: Default::default(),
        shutting_down: AtomicBool::new(false),
        api_addr,
        brokers: brokers.clone(),
        api_connections: Default::default(),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    install_signals(shutdown_tx.clone(), shared.clone());
    if let Some(d) = duration {
        let tx = shutdown_tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            tracing::info!("--duration reached");
            let _ = tx.send(true);
        });
    }
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let guard = api::auth::Guard {
        token: Arc::new(token),
        port: api_addr.port(),
    };
    eprintln!(
        "core-agent: API token {} (send it as Authorization: Bearer <token>)",
        guard.token.origin()
    );
    let dashboard = crate::web::Dashboard::start(
        config.dashboard.clone(),
        config.agent.socket_dir.clone(),
        shared.clone(),
        recent,
        guard.clone(),
        shutdown_rx.clone(),
    );
    let api_task = tokio::spawn(api::serve(
        listener,
        crate::web::attach(api::router(shared.clone(), cmd_tx, guard), dashboard),
        api::listener::Limits::from(&config.api),
        shared.api_connections.clone(),
        shutdown_rx.clone(),
    ));
    eprintln!("core-agent: status API on http://{api_addr}");
    if config.dashboard.enabled {
        eprintln!("core-agent: dashboard on http://{api_addr}/ (log in with the API token)");
    }
    if let (Some(m), Some(link)) = (&config.brokers.mqtt, &brokers.mqtt) {
        crate::outputs::spawn_status(
            shared.clone(),
            link.clone(),
            Duration::from_millis(m.status_interval_ms),
            shutdown_rx.clone(),
        );
    }
    if config.agent.live_table {
        spawn_table(
            shared.clone(),
            Duration::from_secs(config.agent.table_interval_s),
            shutdown_rx.clone(),
        );
    }

    let mut system = System::new(
        config,
        config_path,
        bins,
        Arc::new(SystemClock),
        shared.clone(),
    );
    system.start();
    system.run(cmd_rx, shutdown_rx).await;

    match tokio::time::timeout(Duration::from_secs(2), api_task).await {
        Ok(Ok(Err(e))) => tracing::warn!("status API: {e}"),
        Err(_) => tracing::warn!("status API did not stop in 2 s"),
        _ => {}
    }
    // Closing the queue lets the dispatcher write what is left and flush.
    let written = tokio::task::spawn_blocking(move || {
        let n = dispatcher.finish();
        analytics_writer.finish();
        if let Some(r) = recorder {
            r.finish();
        }
        brokers.finish();
        n
    })
    .await
    .unwrap_or(0);
    Ok(Summary {
        written,
        dropped: shared.results.dropped()
            + shared
                .metrics
                .sinks
                .lost_of(crate::sinks::SinkKind::Results),
        cameras: status::cameras(&shared),
        models: status::models(&shared),
    })
}
