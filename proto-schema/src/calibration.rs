//! How a model server chose its session settings (threads x instances x batch), reported
//! in `status.calibration` (issue 16). Integers only, so the status stays `Eq + Hash`.

use serde::{Deserialize, Serialize};

/// The settings in force and how they were reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Calibration {
    /// `"calibrated"` (measured at load), `"cached"` (an earlier calibration's choice,
    /// reused under the same conditions), `"fixed"` (flags gave the values), `"derived"`
    /// (one flag given, the other filled to the core count) or `"skipped"` (see `reason`).
    pub how: String,
    /// Why the calibration did not run or what cut it short; empty when it ran in full.
    pub reason: String,
    /// Intra-op threads per instance.
    pub threads: u32,
    /// Instances (sessions) in parallel.
    pub instances: u32,
    /// Largest batch.
    pub max_batch: u32,
    /// Whether idle intra-op threads spin.
    pub spin: bool,
    /// Cores the server may use (`available_parallelism`).
    pub cores: u32,
    /// Time the calibration took, milliseconds.
    pub elapsed_ms: u64,
    /// The measurements, in the order they ran.
    pub runs: Vec<CalibrationRun>,
}

/// One measured candidate: all `instances` ran the model on a synthetic input at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CalibrationRun {
    /// Intra-op threads per instance.
    pub threads: u32,
    /// Instances run at once.
    pub instances: u32,
    /// Images per run.
    pub batch: u32,
    /// Images inferred in all.
    pub images: u64,
    /// Wall time of the measurement, microseconds.
    pub wall_us: u64,
    /// Process CPU time during the measurement, microseconds.
    pub cpu_us: u64,
}

impl CalibrationRun {
    /// Images per second of wall time.
    pub fn images_per_s(&self) -> f64 {
        self.images as f64 * 1e6 / self.wall_us.max(1) as f64
    }

    /// Images per second of CPU time: the figure the choice maximises.
    pub fn images_per_cpu_s(&self) -> f64 {
        self.images as f64 * 1e6 / self.cpu_us.max(1) as f64
    }

    /// CPU milliseconds per image.
    pub fn cpu_ms_per_image(&self) -> f64 {
        self.cpu_us as f64 / 1e3 / self.images.max(1) as f64
    }
}
