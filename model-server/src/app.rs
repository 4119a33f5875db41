//! Start-up and shutdown order: validate the settings, load the runtime and the model,
//! start one worker thread per instance, bind the socket, serve until a signal or a
//! `shutdown` request, drain, join the workers, remove the socket.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::batcher::{BatchPolicy, Batcher};
use crate::calibrate;
use crate::config::ServerConfig;
use crate::family::{self, NamesSource};
use crate::postprocess::PostprocessConfig;
use crate::server::{self, Limits, ModelDescription, Shared};
use crate::session::{Runtime, SessionConfig};
use crate::stats::Stats;
use crate::worker::{self, Job, Pipeline};

/// Runs a model server with `config` until it is shut down.
pub fn run(config: ServerConfig) -> anyhow::Result<()> {
    crate::config::validate(&config)?;
    let started = Instant::now();
    let model_id = config.model_id();
    let labels = match &config.labels {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading labels {}", path.display()))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        None => None,
    };

    let runtime = Runtime::init(&config.ort_dylib)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (loaded, max_batch, calibration) = calibrate::run(
        &runtime,
        &calibrate::Request {
            session: SessionConfig {
                model: config.model.clone(),
                device: config.device,
                intra_threads: 1,
                spinning: config.spin,
            },
            threads: config.threads,
            instances: config.instances,
            max_batch: config.max_batch,
            cores,
            budget: Duration::from_millis(config.calibration_ms),
            cache: config.calibration_cache.clone(),
        },
    )?;
    tracing::info!(
        how = %calibration.how,
        threads = calibration.threads,
        instances = calibration.instances,
        max_batch = calibration.max_batch,
        "sessions: {}",
        calibrate::summary(&calibration)
    );
    let info = loaded.info.clone();
    let layout = family::detect(
        config.family,
        &info.output_shape,
        info.input_width,
        info.input_height,
        &info.metadata,
    )
    .with_context(|| format!("model {}", config.model.display()))?;
    let (names, names_source) = family::class_names(layout.num_classes, labels, &info.metadata);
    if names_source == NamesSource::Coco80 {
        tracing::info!("model has no `names` metadata; using the COCO-80 class names");
    }
    if !info.dynamic_batch && config.max_batch.fixed().is_some_and(|b| b > 1) {
        tracing::info!("model batch dimension is fixed at 1; requests run one by one");
    }
    let batcher = Arc::new(Batcher::<Job>::new(BatchPolicy {
        max_batch,
        delay: Duration::from_micros(config.batch_delay_us),
        capacity: config.max_inflight,
        per_source: config.max_queue_per_source,
        max_wait: crate::config::max_wait(&config),
    }));
    // Start the `auto` wait bound from the calibration's single-image run time.
    if let Some(r) = calibration.runs.first().filter(|r| r.images > 0) {
        let per_run = r.wall_us * u64::from(r.instances) / r.images;
        batcher.observe_run(Duration::from_micros(per_run));
    }
    let pipeline = Arc::new(Pipeline {
        spec: layout
            .family
            .input_spec(info.input_width, info.input_height),
        layout,
        post: PostprocessConfig {
            score_threshold: config.score_threshold,
            iou_threshold: config.iou_threshold,
            max_detections: config.max_detections,
        },
        names,
        max_batch,
    });
    let instances = loaded.instances.len();
    let workers: Vec<JoinHandle<()>> = loaded
        .instances
        .into_iter()
        .enumerate()
        .map(|(i, instance)| {
            let batcher = Arc::clone(&batcher);
            let pipeline = Arc::clone(&pipeline);
            std::thread::Builder::new()
                .name(format!("instance-{i}"))
                .spawn(move || worker::run(instance, batcher, pipeline))
                .context("spawning a worker thread")
        })
        .collect::<anyhow::Result<_>>()?;

    let stats = Arc::new(Stats::new(started));
    let shared = Arc::new(Shared::new(
        ModelDescription {
            model_id: model_id.clone(),
            model_path: config.model.display().to_string(),
            family: layout.family.as_str().to_owned(),
            provider: loaded.provider.as_str().to_owned(),
            instances: instances as u32,
            input: [info.input_width, info.input_height],
            calibration: Some(calibration),
        },
        Limits {
            max_connections: config.max_connections,
            max_inflight: config.max_inflight,
            max_frame: config.max_frame,
            read_timeout: config.read_timeout(),
            idle_timeout: config.idle_timeout(),
            drain_timeout: Duration::from_secs(config.drain_timeout_s),
        },
        config.ring_dir.clone(),
        crate::config::ring_trust(&config),
        Arc::clone(&batcher),
        stats,
    ));

    let result = serve_until_shutdown(&config, &shared);
    // Whatever happened, let the workers drain and stop.
    shared.begin_shutdown();
    for w in workers {
        if w.join().is_err() {
            tracing::error!("a worker thread panicked");
        }
    }
    result?;
    tracing::info!(
        uptime_s = started.elapsed().as_secs(),
        requests = shared.stats().report(0).requests,
        "stopped"
    );
    drop(runtime);
    Ok(())
}

fn serve_until_shutdown(config: &ServerConfig, shared: &Arc<Shared>) -> anyhow::Result<()> {
    let std_listener = server::bind_socket(&config.socket, config.socket_mode)?;
    // The control socket is the service's own: 0600 whatever the data socket's mode.
    let control = match &config.control_socket {
        Some(path) => match server::bind_socket(path, 0o600) {
            Ok(l) => Some(l),
            Err(e) => {
                let _ = std::fs::remove_file(&config.socket);
                return Err(e.into());
            }
        },
        None => None,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.io_threads)
        .thread_name("io")
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    let result = rt.block_on(async {
        let listener =
            tokio::net::UnixListener::from_std(std_listener).context("registering the socket")?;
        if let Some(ctl) = control {
            let ctl = tokio::net::UnixListener::from_std(ctl)
                .context("registering the control socket")?;
            tokio::spawn(server::serve_control(Arc::clone(shared), ctl));
        }
        let signals = Arc::clone(shared);
        tokio::spawn(async move {
            wait_for_signal().await;
            let first = Instant::now();
            signals.begin_shutdown();
            // A second signal means "now": skip the drain (a stale socket file is
            // removed by the next start). Not one within SIGNAL_REPEAT_AFTER of the
            // first: when the agent dies, PR_SET_PDEATHSIG fires once per agent thread
            // this process is re-parented through, a burst that is one stop request.
            loop {
                wait_for_signal().await;
                if first.elapsed() >= SIGNAL_REPEAT_AFTER {
                    break;
                }
            }
            tracing::warn!("second signal: exiting without draining");
            std::process::exit(proto_schema::exit::EXIT_INTERRUPTED);
        });
        tracing::info!(
            socket = %config.socket.display(),
            mode = format!("{:o}", config.socket_mode),
            "ready"
        );
        server::serve(Arc::clone(shared), listener).await;
        anyhow::Ok(())
    });
    rt.shutdown_timeout(Duration::from_millis(100));
    for path in std::iter::once(&config.socket).chain(config.control_socket.as_ref()) {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(error = %e, socket = %path.display(), "removing the socket failed");
        }
    }
    result
}

/// Signals closer than this to the first are the same stop request.
const SIGNAL_REPEAT_AFTER: Duration = Duration::from_millis(500);

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop the server with a shutdown request");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
