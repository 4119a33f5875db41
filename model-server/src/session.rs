//! ONNX Runtime sessions: the runtime library loaded once, the model loaded into N
//! instances (independent sessions that run in parallel on their own threads).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::builder::PrepackedWeights;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

/// Execution device asked for on the command line (`--device`), shared with
/// core-agent's `models.device`.
pub use framebus_launch::Device;

/// Execution provider actually in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// `CPUExecutionProvider`.
    Cpu,
    /// `CUDAExecutionProvider`.
    Cuda,
}

impl Provider {
    /// Short lower-case name for status reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the ONNX Runtime library could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// `dlopen` of the library failed or it is not a usable ONNX Runtime.
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Load {
        /// Library path.
        path: PathBuf,
        /// Loader message.
        message: String,
    },
    /// The runtime environment could not be created.
    #[error("cannot create the ONNX Runtime environment: {0}")]
    Environment(String),
}

/// Why a model could not be loaded into sessions.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// ONNX Runtime refused the file or an option.
    #[error("model {path}: {message}")]
    Ort {
        /// Model path.
        path: PathBuf,
        /// ONNX Runtime's message.
        message: String,
    },
    /// The model's inputs or outputs are not those of a single-image detector.
    #[error("model {path}: unsupported signature: {reason}")]
    Signature {
        /// Model path.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
}

/// Why one inference run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The input buffer does not hold `batch` images.
    #[error("input holds {len} floats, batch {batch} needs {need}")]
    InputSize {
        /// Floats given.
        len: usize,
        /// Batch size asked for.
        batch: usize,
        /// Floats needed.
        need: usize,
    },
    /// ONNX Runtime failed.
    #[error("onnxruntime: {0}")]
    Ort(String),
}

fn msg<R>(e: ort::Error<R>) -> String {
    e.to_string()
}

/// The loaded ONNX Runtime library and its (single, process-wide) environment.
#[derive(Debug)]
pub struct Runtime {
    env: Environment,
}

impl Runtime {
    /// Loads `libonnxruntime` from `dylib` and creates the environment. Only one runtime
    /// may exist per process.
    pub fn init(dylib: &Path) -> Result<Self, InitError> {
        let builder = ort::init_from(dylib).map_err(|e| InitError::Load {
            path: dylib.to_path_buf(),
            message: e.to_string(),
        })?;
        let env = builder
            .with_name("model-server")
            .with_telemetry(false)
            .build()
            .map_err(|e| InitError::Environment(msg(e)))?;
        Ok(Runtime { env })
    }

    /// Whether the loaded library was built with the CUDA execution provider.
    pub fn has_cuda(&self) -> bool {
        ep::CUDA::is_available().unwrap_or(false)
    }
}

/// Session options shared by every instance.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Model file.
    pub model: PathBuf,
    /// Device asked for.
    pub device: Device,
    /// Intra-op threads per instance.
    pub intra_threads: usize,
    /// Whether idle intra-op threads spin (lower latency, burns CPU between runs).
    pub spinning: bool,
}

/// What the model looks like from outside.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Input tensor name.
    pub input_name: String,
    /// Output tensor name (the first output).
    pub output_name: String,
    /// Input width in pixels.
    pub input_width: u32,
    /// Input height in pixels.
    pub input_height: u32,
    /// Whether the batch dimension is dynamic (`-1`); otherwise it is 1.
    pub dynamic_batch: bool,
    /// Output shape for one image, from a warm-up run (`[1, a, b]`).
    pub output_shape: Vec<i64>,
    /// Custom metadata (`names`, `task`, ...).
    pub metadata: BTreeMap<String, String>,
}

impl ModelInfo {
    /// Floats of one input image.
    pub fn image_len(&self) -> usize {
        3 * self.input_width as usize * self.input_height as usize
    }
}

/// One session; runs are serialised by `&mut self` (ONNX Runtime sessions are not run
/// concurrently, see `ort::session::Session`).
#[derive(Debug)]
pub struct Instance {
    session: Session,
    input_name: String,
    image_len: usize,
    input_dims: [usize; 3],
}

impl Instance {
    /// Runs `batch` images held back to back in `input` and hands the first output's
    /// shape and data to `f` (they borrow the session's output buffer).
    pub fn run<T>(
        &mut self,
        input: &[f32],
        batch: usize,
        f: impl FnOnce(&[i64], &[f32]) -> T,
    ) -> Result<T, RunError> {
        let need = batch * self.image_len;
        if batch == 0 || input.len() < need {
            return Err(RunError::InputSize {
                len: input.len(),
                batch,
                need,
            });
        }
        let [c, h, w] = self.input_dims;
        let tensor = TensorRef::from_array_view(([batch, c, h, w], &input[..need]))
            .map_err(|e| RunError::Ort(msg(e)))?;
        let outputs = self
            .session
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(|e| RunError::Ort(msg(e)))?;
        let (shape, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| RunError::Ort(msg(e)))?;
        Ok(f(shape, data))
    }
}

/// The model loaded into its instances.
#[derive(Debug)]
pub struct LoadedModel {
    /// Shape, names and metadata.
    pub info: ModelInfo,
    /// Provider in use.
    pub provider: Provider,
    /// The sessions; each is driven by one worker thread.
    pub instances: Vec<Instance>,
}

/// Loads `config.model` into `instances` sessions, warms each up with one zero image and
/// reads the model's signature and metadata.
pub fn load(
    runtime: &Runtime,
    config: &SessionConfig,
    instances: usize,
) -> Result<LoadedModel, LoadError> {
    let path = &config.model;
    let mut provider = match config.device {
        Device::Cpu => Provider::Cpu,
        Device::Cuda if runtime.has_cuda() => Provider::Cuda,
        Device::Cuda => {
            tracing::warn!(
                "CUDA requested but the loaded ONNX Runtime has no CUDA execution provider; using CPU"
            );
            Provider::Cpu
        }
    };
    // The instances share one copy of the weights ONNX Runtime pre-packs for its kernels,
    // as a single session shared by several threads would (less memory, fewer cache
    // misses when instances run side by side).
    let packed = PrepackedWeights::new();
    let first = match build(runtime, config, provider, &packed) {
        Ok(s) => s,
        Err(e) if provider == Provider::Cuda => {
            tracing::warn!(error = %e, "CUDA execution provider failed to start; using CPU");
            provider = Provider::Cpu;
            build(runtime, config, provider, &packed)?
        }
        Err(e) => return Err(e),
    };
    let mut sessions = vec![first];
    while sessions.len() < instances.max(1) {
        sessions.push(build(runtime, config, provider, &packed)?);
    }
    let first = &sessions[0];
    let mut info = signature(path, first)?;
    let metadata = first.metadata().map_err(|e| LoadError::Ort {
        path: path.clone(),
        message: msg(e),
    })?;
    for key in metadata.custom_keys().unwrap_or_default() {
        if let Some(value) = metadata.custom(&key) {
            info.metadata.insert(key, value);
        }
    }
    drop(metadata);
    let dims = [3, info.input_height as usize, info.input_width as usize];
    let mut instances: Vec<Instance> = sessions
        .into_iter()
        .map(|session| Instance {
            session,
            input_name: info.input_name.clone(),
            image_len: info.image_len(),
            input_dims: dims,
        })
        .collect();
    let zeros = vec![0.0f32; info.image_len()];
    for inst in &mut instances {
        let shape = inst
            .run(&zeros, 1, |shape, _| shape.to_vec())
            .map_err(|e| LoadError::Ort {
                path: path.clone(),
                message: format!("warm-up run failed: {e}"),
            })?;
        info.output_shape = shape;
    }
    Ok(LoadedModel {
        info,
        provider,
        instances,
    })
}

fn build(
    runtime: &Runtime,
    config: &SessionConfig,
    provider: Provider,
    packed: &PrepackedWeights,
) -> Result<Session, LoadError> {
    let path = &config.model;
    let err = |message: String| LoadError::Ort {
        path: path.clone(),
        message,
    };
    let mut builder = Session::builder(&runtime.env)
        .map_err(|e| err(msg(e)))?
        .with_intra_threads(config.intra_threads.max(1))
        .map_err(|e| err(msg(e)))?
        .with_inter_threads(1)
        .map_err(|e| err(msg(e)))?
        .with_intra_op_spinning(config.spinning)
        .map_err(|e| err(msg(e)))?
        .with_prepacked_weights(packed)
        .map_err(|e| err(msg(e)))?;
    if provider == Provider::Cuda {
        builder = builder
            .with_execution_providers([ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| err(msg(e)))?;
    }
    builder.commit_from_file(path).map_err(|e| err(msg(e)))
}

/// Checks the model is one float image in, one float tensor out, and reads the sizes.
fn signature(path: &Path, session: &Session) -> Result<ModelInfo, LoadError> {
    let bad = |reason: String| LoadError::Signature {
        path: path.to_path_buf(),
        reason,
    };
    let [input] = session.inputs() else {
        return Err(bad(format!(
            "expected one input, found {}",
            session.inputs().len()
        )));
    };
    let Some(output) = session.outputs().first() else {
        return Err(bad("no outputs".into()));
    };
    let (
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            shape: in_shape,
            ..
        },
        ValueType::Tensor {
            ty: TensorElementType::Float32,
            ..
        },
    ) = (input.dtype(), output.dtype())
    else {
        return Err(bad("input and output must be float32 tensors".into()));
    };
    let dims: &[i64] = in_shape;
    let &[batch, channels, height, width] = dims else {
        return Err(bad(format!("input shape {dims:?} is not [batch, 3, h, w]")));
    };
    if channels != 3 || height <= 0 || width <= 0 || height > 8192 || width > 8192 {
        return Err(bad(format!(
            "input shape {dims:?}: need 3 channels and a static size"
        )));
    }
    if batch != 1 && batch != -1 {
        return Err(bad(format!(
            "input batch dimension {batch}: must be 1 or dynamic"
        )));
    }
    Ok(ModelInfo {
        input_name: input.name().to_string(),
        output_name: output.name().to_string(),
        input_width: width as u32,
        input_height: height as u32,
        dynamic_batch: batch == -1,
        output_shape: Vec::new(),
        metadata: BTreeMap::new(),
    })
}
