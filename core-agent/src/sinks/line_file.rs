//! [`LineFile`]: an append-only file of whole lines (see the policy in
//! [`crate::sinks`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::health::{LossReason, SinkHandle};

/// Pending bytes at which [`LineFile::push`] writes out before taking more (bounds
/// the memory of one batch).
pub const FLUSH_AT: usize = 256 * 1024;
/// How far back from its end a file opened for appending is searched for the end of
/// its last whole line.
pub const REPAIR_SCAN: u64 = 1 << 20;

/// Why a line file could not take or write lines. Every variant names the sink and
/// the file.
#[derive(Debug, thiserror::Error)]
pub enum LineFileError {
    /// Opening the file (or cutting off a torn last line) failed.
    #[error("{sink}: cannot open {path}: {source}")]
    Open {
        /// Sink name.
        sink: String,
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A write failed; the file was cut back to its last whole line.
    #[error("{sink}: {path}: write failed, {lost} line(s) lost: {source}")]
    Write {
        /// Sink name.
        sink: String,
        /// The file.
        path: PathBuf,
        /// Lines of the write that were dropped.
        lost: u64,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A line could not be encoded; nothing of it was written.
    #[error("{sink}: cannot encode a line: {source}")]
    Encode {
        /// Sink name.
        sink: String,
        /// Underlying error.
        source: serde_json::Error,
    },
}

impl LineFileError {
    /// The OS error, if any.
    pub fn io(&self) -> Option<&std::io::Error> {
        match self {
            LineFileError::Open { source, .. } | LineFileError::Write { source, .. } => {
                Some(source)
            }
            LineFileError::Encode { .. } => None,
        }
    }
}

/// What a [`LineFile`] writes into: a file opened for appending, or a fake in tests.
pub trait AppendTarget: Write {
    /// The current size in bytes.
    fn size(&mut self) -> std::io::Result<u64>;
    /// Cuts the target back to `len` bytes.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl AppendTarget for File {
    fn size(&mut self) -> std::io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)
    }
}

/// An append-only file that only ever holds whole lines: lines are built in memory
/// and written at [`LineFile::flush`]; a write that fails part-way is cut back to the
/// last whole line, its other lines dropped and counted in the sink's
/// [`SinkHandle`]. With a `header`, the header line is written first whenever the
/// file is empty (a new file, or one whose first write failed).
#[derive(Debug)]
pub struct LineFile<F: AppendTarget = File> {
    path: PathBuf,
    out: F,
    header: Option<String>,
    buf: Vec<u8>,
    /// End offset in `buf` of each pending line.
    ends: Vec<usize>,
    /// A cut that failed: retried before the next write.
    cut_to: Option<u64>,
    health: SinkHandle,
}

/// The length `file` must be cut to so that it ends with a whole line, or `None` when
/// it already does. A last line with no newline within [`REPAIR_SCAN`] bytes of the
/// end is not ours to judge: `None`, and the caller ends it instead.
fn torn_tail(file: &File) -> std::io::Result<Option<u64>> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 && len - end < REPAIR_SCAN {
        let n = (end.min(chunk.len() as u64)) as usize;
        let at = end - n as u64;
        file.read_exact_at(&mut chunk[..n], at)?;
        if end == len && chunk[n - 1] == b'\n' {
            return Ok(None);
        }
        if let Some(p) = chunk[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(Some(at + p as u64 + 1));
        }
        end = at;
    }
    // The whole file is one torn line.
    Ok((end == 0 && len > 0).then_some(0))
}

impl LineFile<File> {
    /// Opens `path` for appending (created with mode 0640 if missing). A torn last
    /// line (a crash in the middle of a write) is cut off, with a warning.
    pub fn open(
        path: &Path,
        header: Option<&str>,
        health: SinkHandle,
    ) -> Result<Self, LineFileError> {
        use std::os::unix::fs::OpenOptionsExt;
        let err = |source| LineFileError::Open {
            sink: health.name().to_owned(),
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
            .map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        match torn_tail(&file).map_err(err)? {
            Some(cut) => {
                file.set_len(cut).map_err(err)?;
                tracing::warn!(
                    sink = health.name(),
                    path = %path.display(),
                    "cut off a torn last line ({} bytes) left by an earlier run",
                    len - cut
                );
            }
            None if len > 0 && !ends_with_newline(&file).map_err(err)? => {
                // Longer than we would ever write: end it rather than cut it.
                file.write_all(b"\n").map_err(err)?;
            }
            None => {}
        }
        Ok(Self::with_target(file, path, header, health))
    }
}

fn ends_with_newline(file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

impl<F: AppendTarget> LineFile<F> {
    /// A line file writing into `out` (named `path` in errors).
    pub fn with_target(out: F, path: &Path, header: Option<&str>, health: SinkHandle) -> Self {
        LineFile {
            path: path.to_path_buf(),
            out,
            header: header.map(str::to_owned),
            buf: Vec::new(),
            ends: Vec::new(),
            cut_to: None,
            health,
        }
    }

    /// The sink's handle.
    pub fn health(&self) -> &SinkHandle {
        &self.health
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines pending.
    pub fn pending(&self) -> usize {
        self.ends.len()
    }

    fn make_room(&mut self) -> Result<(), LineFileError> {
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// Queues one line (`line` without its newline). Writes what is pending first
    /// when [`FLUSH_AT`] bytes are; that write's error is returned (this line is
    /// queued all the same).
    pub fn push(&mut self, line: &[u8]) -> Result<(), LineFileError> {
        let flushed = self.make_room();
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        self.ends.push(self.buf.len());
        flushed
    }

    /// Queues `value` as one line of JSON. An encoding error queues nothing.
    pub fn push_json<T: serde::Serialize>(&mut self, value: &T) -> Result<(), LineFileError> {
        let flushed = self.make_room();
        let start = self.buf.len();
        if let Err(source) = serde_json::to_writer(&mut self.buf, value) {
            self.buf.truncate(start);
            self.health
                .failed(0, 1, LossReason::Encode, &source.to_string());
            return Err(LineFileError::Encode {
                sink: self.health.name().to_owned(),
                source,
            });
        }
        self.buf.push(b'\n');
        self.ends.push(self.buf.len());
        flushed
    }

    /// Writes the pending lines. On failure the file is cut back to the last whole
    /// line written, the rest dropped and counted, and the sink marked degraded.
    pub fn flush(&mut self) -> Result<(), LineFileError> {
        if self.ends.is_empty() {
            if self.health.is_degraded() {
                self.health.recover_if_space(&self.path);
            }
            return Ok(());
        }
        let lines = self.ends.len() as u64;
        let (buf, ends) = (
            std::mem::take(&mut self.buf),
            std::mem::take(&mut self.ends),
        );
        match self.write_whole(&buf, &ends) {
            Ok(()) => {
                self.health.wrote(lines);
                self.reuse(buf);
                Ok(())
            }
            Err((kept, source)) => {
                let lost = lines - kept;
                let reason = LossReason::of(&source);
                let err = LineFileError::Write {
                    sink: self.health.name().to_owned(),
                    path: self.path.clone(),
                    lost,
                    source,
                };
                self.health.failed(kept, lost, reason, &err.to_string());
                self.reuse(buf);
                Err(err)
            }
        }
    }

    /// Keeps the buffer's allocation for the next batch, up to [`FLUSH_AT`].
    fn reuse(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() <= 2 * FLUSH_AT {
            buf.clear();
            self.buf = buf;
        }
    }

    /// Writes `buf` (lines ending at `ends`) after the header if the file is empty.
    /// On error: the lines kept whole, and the error.
    fn write_whole(&mut self, buf: &[u8], ends: &[usize]) -> Result<(), (u64, std::io::Error)> {
        if let Some(len) = self.cut_to {
            self.out.truncate(len).map_err(|e| (0, e))?;
            self.cut_to = None;
        }
        let before = self.out.size().map_err(|e| (0, e))?;
        let header = match &self.header {
            Some(h) if before == 0 => format!("{h}\n").into_bytes(),
            _ => Vec::new(),
        };
        let mut done = 0usize;
        let total = header.len() + buf.len();
        while done < total {
            let part = if done < header.len() {
                &header[done..]
            } else {
                &buf[done - header.len()..]
            };
            match self.out.write(part) {
                Ok(0) => {
                    return Err(self.cut_back(before, &header, ends, done, {
                        std::io::Error::from(std::io::ErrorKind::WriteZero)
                    }))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.cut_back(before, &header, ends, done, e)),
            }
        }
        Ok(())
    }

    /// After a write that stopped at `done` bytes: cuts the file to the last whole
    /// line (the header counts as one, but not as a written line).
    fn cut_back(
        &mut self,
        before: u64,
        header: &[u8],
        ends: &[usize],
        done: usize,
        e: std::io::Error,
    ) -> (u64, std::io::Error) {
        let h = header.len();
        let kept = if done < h {
            0
        } else {
            ends.partition_point(|&end| h + end <= done)
        };
        let keep = match kept {
            0 if done < h => 0,
            0 => h,
            k => h + ends[k - 1],
        };
        let cut = before + keep as u64;
        if let Err(te) = self.out.truncate(cut) {
            // Tried again before the next write; until then the file may end in a
            // partial line, which the next open would also cut off.
            tracing::warn!(sink = self.health.name(), path = %self.path.display(), "cannot cut a partial line off: {te}");
            self.cut_to = Some(cut);
        }
        (kept as u64, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::health::{SinkHealth, SinkKind};

    /// A "disk" of `room` bytes: a write takes what fits and the next one fails with
    /// ENOSPC, like a filesystem filling up in the middle of a write.
    #[derive(Debug, Default)]
    struct FullDisk {
        data: Vec<u8>,
        room: usize,
        fail_truncate: bool,
    }

    impl Write for FullDisk {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let free = self.room.saturating_sub(self.data.len());
            if free == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = b.len().min(free);
            self.data.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl AppendTarget for FullDisk {
        fn size(&mut self) -> std::io::Result<u64> {
            Ok(self.data.len() as u64)
        }
        fn truncate(&mut self, len: u64) -> std::io::Result<()> {
            if self.fail_truncate {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            self.data.truncate(len as usize);
            Ok(())
        }
    }

    fn lines_of(data: &[u8]) -> Vec<serde_json::Value> {
        assert!(data.is_empty() || data.ends_with(b"\n"), "a partial line");
        std::str::from_utf8(data)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect()
    }

    fn rec(i: u64) -> serde_json::Value {
        serde_json::json!({ "frame_id": i, "camera": "cam", "pad": "x".repeat(40) })
    }

    #[test]
    fn a_write_cut_by_a_full_disk_leaves_whole_lines_only() {
        let reg = SinkHealth::default();
        let h = reg.register(SinkKind::Results, "jsonl:/t/results.jsonl");
        let disk = FullDisk {
            room: 500,
            ..Default::default()
        };
        let mut f = LineFile::with_target(disk, Path::new("/t/results.jsonl"), None, h.clone());
        for i in 0..3 {
            f.push_json(&rec(i)).unwrap();
        }
        f.flush().unwrap();
        let line = f.out.data.len() / 3;
        // Room for two and a half more lines: the third is half-written, then ENOSPC.
        f.out.room = f.out.data.len() + line * 5 / 2;
        for i in 3..8 {
            f.push_json(&rec(i)).unwrap();
        }
        let err = f.flush().unwrap_err();
        assert!(
            matches!(&err, LineFileError::Write { lost: 3, source, .. } if source.raw_os_error() == Some(libc::ENOSPC)),
            "{err}"
        );
        assert!(err.to_string().contains("jsonl:/t/results.jsonl"), "{err}");
        let got = lines_of(&f.out.data);
        assert_eq!(got, (0..5).map(rec).collect::<Vec<_>>());
        assert!(h.is_degraded());
        let r = &reg.reports()[0];
        assert_eq!((r.written, r.lost, r.state), (5, 3, "degraded"));
        assert!(
            r.reason.as_deref().unwrap().contains("os error 28"),
            "{r:?}"
        );

        // Still full: nothing at all fits, nothing partial stays.
        f.push_json(&rec(8)).unwrap();
        assert!(f.flush().is_err());
        assert_eq!(lines_of(&f.out.data).len(), 5);

        // Space again: the next record follows a whole line, none glued.
        f.out.room = usize::MAX;
        f.push_json(&rec(9)).unwrap();
        f.flush().unwrap();
        let got = lines_of(&f.out.data);
        assert_eq!(got.len(), 6);
        assert_eq!(got[5], rec(9));
        assert!(!reg.any_degraded());
        assert_eq!(h.lost(LossReason::NoSpace), 4);
    }

    #[test]
    fn a_failed_cut_is_retried_before_the_next_write() {
        let h = SinkHandle::detached(SinkKind::Events, "events:/t/e.jsonl");
        let disk = FullDisk {
            room: 70,
            fail_truncate: true,
            ..Default::default()
        };
        let mut f = LineFile::with_target(disk, Path::new("/t/e.jsonl"), None, h);
        f.push_json(&rec(1)).unwrap();
        f.push_json(&rec(2)).unwrap();
        assert!(f.flush().is_err());
        // The cut failed: the partial line is still there, and remembered.
        assert_eq!(f.out.data.len(), 70);
        f.out.fail_truncate = false;
        f.out.room = usize::MAX;
        f.push_json(&rec(3)).unwrap();
        f.flush().unwrap();
        assert_eq!(lines_of(&f.out.data), vec![rec(3)]);
    }

    #[test]
    fn the_header_is_written_whenever_the_file_is_empty() {
        let h = SinkHandle::detached(SinkKind::Counts, "counts:/t");
        let disk = FullDisk {
            room: 4,
            ..Default::default()
        };
        let mut f = LineFile::with_target(disk, Path::new("/t/c.csv"), Some("a,b,c"), h);
        f.push(b"1,2,3").unwrap();
        // Not even the header fits: the file stays empty.
        assert!(matches!(
            f.flush(),
            Err(LineFileError::Write { lost: 1, .. })
        ));
        assert!(f.out.data.is_empty());
        f.out.room = 10;
        f.push(b"4,5,6").unwrap();
        // The header fits, the row does not: the header stays alone.
        assert!(f.flush().is_err());
        assert_eq!(f.out.data, b"a,b,c\n");
        f.out.room = usize::MAX;
        f.push(b"7,8,9").unwrap();
        f.flush().unwrap();
        assert_eq!(f.out.data, b"a,b,c\n7,8,9\n");
    }

    #[test]
    fn a_big_batch_is_written_in_bounded_pieces() {
        let h = SinkHandle::detached(SinkKind::Results, "jsonl:/t/r.jsonl");
        let disk = FullDisk {
            room: usize::MAX,
            ..Default::default()
        };
        let mut f = LineFile::with_target(disk, Path::new("/t/r.jsonl"), None, h.clone());
        let line = vec![b'7'; 1000];
        for _ in 0..600 {
            f.push(&line).unwrap();
            assert!(f.buf.len() <= FLUSH_AT + line.len() + 1);
        }
        f.flush().unwrap();
        assert_eq!(f.out.data.len(), 600 * 1001);
    }

    #[test]
    fn opening_cuts_off_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, b"{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let h = SinkHandle::detached(SinkKind::Results, "jsonl:r");
        let mut f = LineFile::open(&path, None, h.clone()).unwrap();
        f.push(b"{\"a\":3}").unwrap();
        f.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"
        );
        // One torn line and nothing else: emptied; a whole file is left alone.
        std::fs::write(&path, b"{\"a\":").unwrap();
        drop(LineFile::open(&path, None, h.clone()).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"");
        std::fs::write(&path, b"x\n").unwrap();
        drop(LineFile::open(&path, None, h).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"x\n");
    }

    #[test]
    fn a_real_file_on_dev_full_keeps_nothing_and_degrades() {
        // /dev/full fails every write with ENOSPC.
        let Ok(full) = OpenOptions::new().write(true).open("/dev/full") else {
            eprintln!("SKIP: no /dev/full");
            return;
        };
        let h = SinkHandle::detached(SinkKind::Events, "events:/dev/full");
        let mut f = LineFile::with_target(full, Path::new("/dev/full"), None, h.clone());
        f.push(b"{}").unwrap();
        let err = f.flush().unwrap_err();
        assert_eq!(err.io().and_then(|e| e.raw_os_error()), Some(libc::ENOSPC));
        assert_eq!(h.lost(LossReason::NoSpace), 1);
        assert!(h.is_degraded());
    }
}
