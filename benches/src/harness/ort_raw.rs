//! The raw ONNX Runtime baseline: a tight `session.run` loop on a fixed tensor, measured by
//! the harness itself so the system's numbers are ratios against this machine, this run.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use model_server::family::{self, Family, FamilyChoice};
use model_server::preprocess;
use ort::session::Session;
use ort::value::TensorRef;
use proto_schema::pixel::{FrameGeometry, PixelFormat};
use serde::Serialize;

use super::assets;
use super::stats::Summary;

/// A problem loading ONNX Runtime or running the baseline.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// `ORT_DYLIB_PATH` is not set (source .local/env.sh).
    #[error("ORT_DYLIB_PATH is not set: `source .local/env.sh` first (after scripts/setup.sh)")]
    NoDylib,
    /// The ONNX Runtime library could not be loaded.
    #[error("loading ONNX Runtime from {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    /// ONNX Runtime refused the model or a run.
    #[error("model {model}: {reason}")]
    Session { model: PathBuf, reason: String },
    /// The model's input or output is not the shape of a YOLO detector.
    #[error("model {model}: unexpected {what} shape {shape:?}")]
    Shape {
        model: PathBuf,
        what: &'static str,
        shape: Vec<i64>,
    },
    /// The input frame could not be prepared.
    #[error(transparent)]
    Asset(#[from] assets::AssetError),
    /// The model's output fits no supported family (as the server would refuse it).
    #[error("model {model}: {source}")]
    Family {
        model: PathBuf,
        source: family::FamilyError,
    },
    /// The server's letterbox refused the frame.
    #[error("model {model}: letterbox: {source}")]
    Letterbox {
        model: PathBuf,
        source: preprocess::PreprocessError,
    },
}

static ENV: OnceLock<Result<(ort::environment::Environment, String), String>> = OnceLock::new();

/// Loads ONNX Runtime once per process from `ORT_DYLIB_PATH`; returns its version.
pub fn init() -> Result<String, RawError> {
    let path = std::env::var_os("ORT_DYLIB_PATH").ok_or(RawError::NoDylib)?;
    let res = ENV.get_or_init(|| {
        let env = ort::init_from(&path)
            .map_err(|e| e.to_string())?
            .with_name("bench")
            .build()
            .map_err(|e| e.to_string())?;
        let version = loaded_version(std::path::Path::new(&path))
            .unwrap_or_else(|| super::machine::ort_version_from_build_info(ort::info()));
        Ok((env, version))
    });
    match res {
        Ok((_, v)) => Ok(v.clone()),
        Err(reason) => Err(RawError::Load {
            path: PathBuf::from(path),
            reason: reason.clone(),
        }),
    }
}

/// The version string of the ONNX Runtime library already loaded from `path`
/// (`OrtGetApiBase()->GetVersionString()`).
fn loaded_version(path: &Path) -> Option<String> {
    use std::ffi::{CStr, CString};
    use std::os::unix::ffi::OsStrExt;
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: RTLD_NOLOAD only returns a handle to a library ort already loaded (it
    // stays loaded for the process lifetime); `OrtGetApiBase` has the signature of the
    // ONNX Runtime C API, and the version string it returns is static and NUL-terminated.
    unsafe {
        let handle = libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return None;
        }
        let sym = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        let version = if sym.is_null() {
            None
        } else {
            let get_base: unsafe extern "C" fn() -> *const ort::sys::OrtApiBase =
                std::mem::transmute(sym);
            let base = get_base();
            if base.is_null() {
                None
            } else {
                let v = ((*base).GetVersionString)();
                (!v.is_null()).then(|| CStr::from_ptr(v).to_string_lossy().into_owned())
            }
        };
        libc::dlclose(handle);
        version
    }
}

fn env() -> Result<&'static ort::environment::Environment, RawError> {
    init()?;
    match ENV.get() {
        Some(Ok((e, _))) => Ok(e),
        _ => Err(RawError::NoDylib),
    }
}

/// Session settings; kept equal to what `model-server` uses so the baseline is fair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SessionSettings {
    /// Intra-op threads per session.
    pub threads: usize,
    /// Sessions run in parallel, one thread each.
    pub instances: usize,
    /// ONNX Runtime's intra-op spin-waiting.
    pub spinning: bool,
}

/// A model prepared for the baseline: its family, input name and size, and the tensor.
#[derive(Debug, Clone)]
pub struct PreparedModel {
    pub path: PathBuf,
    pub family: Family,
    pub input_name: String,
    pub input_size: usize,
    /// NCHW float tensor of frame `frame_index` of the footage.
    pub tensor: Arc<Vec<f32>>,
    pub frame_index: u32,
}

fn session(model: &Path, s: SessionSettings) -> Result<Session, RawError> {
    let err = |e: &dyn std::fmt::Display| RawError::Session {
        model: model.to_path_buf(),
        reason: e.to_string(),
    };
    Session::builder(env()?)
        .map_err(|e| err(&e))?
        .with_intra_threads(s.threads)
        .map_err(|e| err(&e))?
        .with_inter_threads(1)
        .map_err(|e| err(&e))?
        .with_intra_op_spinning(s.spinning)
        .map_err(|e| err(&e))?
        .commit_from_file(model)
        .map_err(|e| err(&e))
}

/// Reads the model's shapes and builds its input tensor from a real frame of `video`.
pub fn prepare(model: &Path, video: &Path, frame_index: u32) -> Result<PreparedModel, RawError> {
    let s = session(
        model,
        SessionSettings {
            threads: 1,
            instances: 1,
            spinning: false,
        },
    )?;
    let input = s.inputs().first().ok_or_else(|| RawError::Session {
        model: model.to_path_buf(),
        reason: "no inputs".into(),
    })?;
    let in_shape: Vec<i64> = input
        .dtype()
        .tensor_shape()
        .map(|sh| sh.iter().copied().collect())
        .unwrap_or_default();
    let out_shape: Vec<i64> = s
        .outputs()
        .first()
        .and_then(|o| o.dtype().tensor_shape())
        .map(|sh| sh.iter().copied().collect())
        .unwrap_or_default();
    let size = match in_shape.as_slice() {
        [_, 3, h, w] if h == w && *h > 0 => *h as usize,
        _ => {
            return Err(RawError::Shape {
                model: model.to_path_buf(),
                what: "input",
                shape: in_shape,
            })
        }
    };
    // The family and the tensor exactly as the server derives them, from the frame in the
    // ring's default format.
    let mut metadata = std::collections::BTreeMap::new();
    if let Ok(m) = s.metadata() {
        for key in m.custom_keys().unwrap_or_default() {
            if let Some(value) = m.custom(&key) {
                metadata.insert(key, value);
            }
        }
    }
    let side = size as u32;
    let family = family::detect(FamilyChoice::Auto, &out_shape, side, side, &metadata)
        .map_err(|source| RawError::Family {
            model: model.to_path_buf(),
            source,
        })?
        .family;
    let (w, h) = assets::video_size(video)?;
    let frame = assets::decode_frame(video, frame_index, "nv12")?;
    let geometry = FrameGeometry::packed(w, h, PixelFormat::Nv12).map_err(|_| RawError::Shape {
        model: model.to_path_buf(),
        what: "decoded frame",
        shape: vec![i64::from(w), i64::from(h)],
    })?;
    let mut tensor = vec![0.0f32; 3 * size * size];
    preprocess::letterbox_into(
        &frame,
        &geometry,
        &family.input_spec(side, side),
        &mut tensor,
    )
    .map_err(|source| RawError::Letterbox {
        model: model.to_path_buf(),
        source,
    })?;
    Ok(PreparedModel {
        path: model.to_path_buf(),
        family,
        input_name: input.name().to_string(),
        input_size: size,
        tensor: Arc::new(tensor),
        frame_index,
    })
}

/// One session of the baseline, for callers that interleave raw runs with other work.
#[derive(Debug)]
pub struct RawSession {
    session: Session,
    model: PreparedModel,
}

impl RawSession {
    pub fn new(m: &PreparedModel, settings: SessionSettings) -> Result<RawSession, RawError> {
        Ok(RawSession {
            session: session(&m.path, settings)?,
            model: m.clone(),
        })
    }

    /// One `session.run` on the fixed tensor; returns its duration.
    pub fn run(&mut self) -> Result<Duration, RawError> {
        let m = &self.model;
        let fail = |e: ort::Error| RawError::Session {
            model: m.path.clone(),
            reason: e.to_string(),
        };
        let shape = [1usize, 3, m.input_size, m.input_size];
        let start = Instant::now();
        let t = TensorRef::from_array_view((shape, m.tensor.as_slice())).map_err(fail)?;
        let out = self
            .session
            .run(ort::inputs![m.input_name.as_str() => t])
            .map_err(fail)?;
        std::hint::black_box(&out);
        drop(out);
        Ok(start.elapsed())
    }
}

/// One raw-baseline measurement.
#[derive(Debug, Clone, Serialize)]
pub struct RawResult {
    pub settings: SessionSettings,
    pub runs: usize,
    pub seconds: f64,
    pub inferences_per_s: f64,
    /// Latency of one `session.run`, milliseconds.
    pub latency_ms: Option<Summary>,
}

/// Runs `settings.instances` sessions in parallel, each in a tight loop, for `duration`
/// after `warmup` runs each.
pub fn measure(
    m: &PreparedModel,
    settings: SessionSettings,
    warmup: usize,
    duration: Duration,
) -> Result<RawResult, RawError> {
    let (mut all, seconds) = run_loops(m, settings, warmup, duration)?;
    let runs = all.len();
    Ok(RawResult {
        settings,
        runs,
        seconds,
        inferences_per_s: runs as f64 / seconds,
        latency_ms: Summary::of(&mut all),
    })
}

/// The loops: latencies of all runs (ms) and the wall time of the longest loop (s).
fn run_loops(
    m: &PreparedModel,
    settings: SessionSettings,
    warmup: usize,
    duration: Duration,
) -> Result<(Vec<f64>, f64), RawError> {
    let mut sessions = (0..settings.instances.max(1))
        .map(|_| RawSession::new(m, settings))
        .collect::<Result<Vec<_>, _>>()?;
    for s in sessions.iter_mut() {
        for _ in 0..warmup {
            s.run()?;
        }
    }
    let barrier = Barrier::new(sessions.len());
    let per_instance: Vec<Result<(Vec<f64>, f64), RawError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = sessions
            .iter_mut()
            .map(|s| {
                let barrier = &barrier;
                scope.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut lat = Vec::new();
                    while start.elapsed() < duration || lat.is_empty() {
                        lat.push(s.run()?.as_secs_f64() * 1e3);
                    }
                    Ok((lat, start.elapsed().as_secs_f64()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(RawError::Session {
                        model: m.path.clone(),
                        reason: "baseline thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut all = Vec::new();
    let mut wall: f64 = 0.0;
    for r in per_instance {
        let (lat, secs) = r?;
        wall = wall.max(secs);
        all.extend(lat);
    }
    Ok((all, wall.max(1e-9)))
}

/// The threads x instances combinations worth measuring on `cores` cores: every pair whose
/// product is at most `cores`, smallest first.
pub fn configurations(cores: usize, spinning: bool) -> Vec<SessionSettings> {
    let cores = cores.max(1);
    let mut v = Vec::new();
    for instances in 1..=cores {
        for threads in 1..=cores {
            if threads * instances <= cores {
                v.push(SessionSettings {
                    threads,
                    instances,
                    spinning,
                });
            }
        }
    }
    v.sort_by_key(|s| (s.threads * s.instances, s.instances));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_fit_the_cores() {
        let c = configurations(2, false);
        let pairs: Vec<(usize, usize)> = c.iter().map(|s| (s.threads, s.instances)).collect();
        assert_eq!(pairs, vec![(1, 1), (2, 1), (1, 2)]);
        assert_eq!(configurations(0, false).len(), 1);
        assert!(configurations(4, false)
            .iter()
            .all(|s| s.threads * s.instances <= 4));
    }
}
