//! The sink interface and the two sinks that exist: a JSON Lines file and standard
//! output. A broker sink implements the same two methods. Both write whole lines only
//! and report what they wrote and lost to the [`SinkHealth`] register.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::ResultRecord;
use crate::sinks::{LineFile, LineFileError, LossReason, SinkHandle, SinkHealth, SinkKind};

/// Why a sink could not take a record.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Opening the output failed.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The output file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Writing failed (disk full, closed pipe).
    #[error("{sink}: {source}")]
    Write {
        /// Sink name.
        sink: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A file sink could not take or write lines (it names the sink and the file).
    #[error(transparent)]
    Lines(LineFileError),
    /// The record could not be encoded.
    #[error("{sink}: cannot encode record: {source}")]
    Encode {
        /// Sink name.
        sink: String,
        /// Underlying error.
        source: serde_json::Error,
    },
}

/// A file that cannot be opened is the sink's `Open` error, as for every sink; any other
/// failure of its lines is `Lines`.
impl From<LineFileError> for SinkError {
    fn from(e: LineFileError) -> Self {
        match e {
            LineFileError::Open { path, source, .. } => SinkError::Open { path, source },
            other => SinkError::Lines(other),
        }
    }
}

/// Where result records go. Called from one thread; writes may buffer until `flush`.
pub trait Sink: Send {
    /// Name for logs (`jsonl:/path`, `stdout`).
    fn name(&self) -> &str;
    /// Takes one record.
    fn write(&mut self, record: &ResultRecord) -> Result<(), SinkError>;
    /// Pushes buffered records out.
    fn flush(&mut self) -> Result<(), SinkError>;
}

/// Appends one JSON object per line to a file, whole lines only (see
/// [`crate::sinks`]).
#[derive(Debug)]
pub struct JsonlSink {
    file: LineFile,
}

impl JsonlSink {
    /// Opens `path` for appending (created with mode 0640 if missing; a torn last line
    /// is cut off), reporting to `health` as `jsonl:<path>`.
    pub fn create(path: &Path, health: &SinkHealth) -> Result<Self, SinkError> {
        let h = health.register(SinkKind::Results, format!("jsonl:{}", path.display()));
        Ok(Self {
            file: LineFile::open(path, None, h)?,
        })
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &str {
        self.file.health().name()
    }
    fn write(&mut self, record: &ResultRecord) -> Result<(), SinkError> {
        Ok(self.file.push_json(record)?)
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(self.file.flush()?)
    }
}

/// Writes one JSON object per line to standard output. Each batch goes out in one
/// `write_all` of whole lines; a pipe cannot be cut back, so a failed write may end
/// in a partial line there (counted and reported like a file's).
#[derive(Debug)]
pub struct StdoutSink {
    buf: Vec<u8>,
    lines: u64,
    health: SinkHandle,
}

impl StdoutSink {
    /// Standard output, reporting to `health` as `stdout`.
    pub fn new(health: &SinkHealth) -> Self {
        Self {
            buf: Vec::new(),
            lines: 0,
            health: health.register(SinkKind::Results, "stdout"),
        }
    }
}

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }
    fn write(&mut self, record: &ResultRecord) -> Result<(), SinkError> {
        let start = self.buf.len();
        if let Err(source) = serde_json::to_writer(&mut self.buf, record) {
            self.buf.truncate(start);
            self.health
                .failed(0, 1, LossReason::Encode, &source.to_string());
            return Err(SinkError::Encode {
                sink: "stdout".into(),
                source,
            });
        }
        self.buf.push(b'\n');
        self.lines += 1;
        if self.buf.len() >= crate::sinks::line_file::FLUSH_AT {
            return self.flush();
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let lines = std::mem::take(&mut self.lines);
        let result = {
            let mut out = std::io::stdout().lock();
            out.write_all(&self.buf).and_then(|()| out.flush())
        };
        self.buf.clear();
        match result {
            Ok(()) => {
                self.health.wrote(lines);
                Ok(())
            }
            Err(source) => {
                let reason = LossReason::of(&source);
                let err = SinkError::Write {
                    sink: "stdout".into(),
                    source,
                };
                self.health.failed(0, lines, reason, &err.to_string());
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_appends_across_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        for id in [1, 2] {
            let mut s = JsonlSink::create(&path, &SinkHealth::default()).unwrap();
            s.write(&crate::results::tests::record(id)).unwrap();
            s.flush().unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    #[test]
    fn unopenable_path_is_a_typed_error() {
        let err = JsonlSink::create(
            Path::new("/proc/no/such/dir/r.jsonl"),
            &SinkHealth::default(),
        )
        .unwrap_err();
        assert!(matches!(err, SinkError::Open { .. }), "{err}");
    }
}
