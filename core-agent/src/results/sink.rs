//! The sink interface and the two sinks that exist: a JSON Lines file and standard
//! output. A broker sink implements the same two methods.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::ResultRecord;

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
    /// The record could not be encoded.
    #[error("{sink}: cannot encode record: {source}")]
    Encode {
        /// Sink name.
        sink: String,
        /// Underlying error.
        source: serde_json::Error,
    },
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

fn write_json_line(
    out: &mut impl Write,
    name: &str,
    record: &ResultRecord,
) -> Result<(), SinkError> {
    serde_json::to_writer(&mut *out, record).map_err(|source| SinkError::Encode {
        sink: name.to_owned(),
        source,
    })?;
    out.write_all(b"\n").map_err(|source| SinkError::Write {
        sink: name.to_owned(),
        source,
    })
}

/// Appends one JSON object per line to a file.
#[derive(Debug)]
pub struct JsonlSink {
    name: String,
    out: BufWriter<File>,
}

impl JsonlSink {
    /// Opens `path` for appending (created with mode 0640 if missing).
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(|source| SinkError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            name: format!("jsonl:{}", path.display()),
            out: BufWriter::new(file),
        })
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }
    fn write(&mut self, record: &ResultRecord) -> Result<(), SinkError> {
        write_json_line(&mut self.out, &self.name, record)
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|source| SinkError::Write {
            sink: self.name.clone(),
            source,
        })
    }
}

/// Writes one JSON object per line to standard output.
#[derive(Debug, Default)]
pub struct StdoutSink;

impl Sink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }
    fn write(&mut self, record: &ResultRecord) -> Result<(), SinkError> {
        write_json_line(&mut std::io::stdout().lock(), "stdout", record)
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        std::io::stdout()
            .flush()
            .map_err(|source| SinkError::Write {
                sink: "stdout".into(),
                source,
            })
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
            let mut s = JsonlSink::create(&path).unwrap();
            s.write(&crate::results::tests::record(id)).unwrap();
            s.flush().unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    #[test]
    fn unopenable_path_is_a_typed_error() {
        let err = JsonlSink::create(Path::new("/proc/no/such/dir/r.jsonl")).unwrap_err();
        assert!(matches!(err, SinkError::Open { .. }), "{err}");
    }
}
