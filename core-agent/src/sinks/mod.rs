//! What every file sink shares: [`LineFile`], an append-only file that holds whole
//! lines only, and [`SinkHealth`], the register of what each sink wrote and lost and
//! whether it is degraded (for `GET /health` and `/metrics`).
//!
//! Failure policy, the same for every sink (`results.jsonl` and the other `jsonl`
//! outputs, `events.jsonl`, the counts CSV, event clips, standard output):
//!
//! - **Whole lines or nothing.** A sink builds its lines in memory and writes them at
//!   its flush (once per batch of the writer thread, or when [`line_file::FLUSH_AT`]
//!   bytes are pending). A write that fails part-way (disk full, quota, I/O error) is
//!   cut back to the last whole line it wrote (`ftruncate`), so the file never holds a
//!   partial line and the next line never joins one. A torn line left by a crash is cut
//!   off when the file is opened. A clip is written to a hidden `.part` file and renamed
//!   when complete; a failed clip's `.part` is removed.
//! - **Lost, not retried.** The lines of a failed write are dropped (they are not kept
//!   for a later retry: the writer thread never waits on a disk, and memory stays
//!   bounded) and counted per sink and reason in `framebus_sink_dropped_total`.
//! - **Degraded while it lasts.** The first failure marks the sink degraded: one
//!   warning in the log, `GET /health` answers `"status": "degraded"` (still 200) with
//!   the sink and the reason. The next successful write clears it (one info line with
//!   what was lost meanwhile). A quiet sink that failed for want of space is also
//!   cleared once its filesystem has space again ([`health::MIN_FREE`] bytes, checked
//!   at most once per [`health::PROBE_EVERY`]).

pub mod health;
pub mod line_file;

pub use health::{LossReason, SinkHandle, SinkHealth, SinkKind, SinkReport};
pub use line_file::{AppendTarget, LineFile, LineFileError};
