//! The record stream (`--record-source`): a camera's main stream kept for clips without
//! decoding it, next to the (low-resolution) substream the kernel decodes for detection
//! (issue 16, "detect stream vs view/record stream").
//!
//! A thread of its own demuxes the record stream and hands every video packet to the
//! [`PacketKeeper`]; nothing of it is decoded or published. Each segment is anchored at
//! the wall-clock time its first packet arrived, which is how the decoded path anchors
//! too (publish time, a decode later), so the two streams share the capture clock within
//! the network and decode jitter (milliseconds).
//!
//! The record stream never holds detection back: it connects, stalls and reconnects (same
//! backoff as the camera) on its own, and while it is down clips have no packets for that
//! time (the clip recorder reports it) while frames keep flowing into the ring.

use std::sync::Arc;
use std::time::Duration;

use proto_schema::backoff::{Backoff, BackoffPolicy, SplitMix64};
use proto_schema::time::{Clock, MonoNanos, UnixNanos};

use crate::config::{Config, Source};
use crate::packets::{header_of, PacketKeeper};
use crate::source::{options_for_source, Interrupt, OpenSource, ReadError};

/// Longest a close (RTSP TEARDOWN) of the record stream may take.
const CLOSE_DEADLINE: Duration = Duration::from_millis(500);

/// Counts of one recorder run, for its exit log and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordStats {
    /// Connections that opened.
    pub sessions: u64,
    /// Video packets handed to the keeper.
    pub packets: u64,
    /// Opens that failed and sessions that ended (each followed by a backoff wait).
    pub losses: u64,
}

/// What the recorder needs of the kernel's configuration.
#[derive(Debug, Clone)]
pub struct RecordSettings {
    /// The record stream.
    pub source: Source,
    /// FFmpeg options for it (transport, socket timeout, the user's extras).
    pub options: Vec<(String, String)>,
    /// Open deadline.
    pub open_timeout: Duration,
    /// A read that waits longer than this ends the session (stall).
    pub stall_timeout: Duration,
    /// Reconnect backoff.
    pub backoff: BackoffPolicy,
}

impl RecordSettings {
    /// The recorder's settings from the kernel's, if a record stream is configured.
    pub fn from_config(config: &Config) -> Option<RecordSettings> {
        let source = config.record_source.clone()?;
        Some(RecordSettings {
            options: options_for_source(&source, config),
            source,
            open_timeout: config.open_timeout,
            stall_timeout: config.stall.stall_timeout,
            backoff: config.backoff,
        })
    }
}

/// Keeps the record stream's packets in `keeper` until `interrupt` says stop.
pub fn run(
    settings: &RecordSettings,
    mut keeper: PacketKeeper,
    interrupt: &Arc<Interrupt>,
    clock: &dyn Clock,
) -> RecordStats {
    let mut stats = RecordStats::default();
    let mut backoff = Backoff::new(settings.backoff, SplitMix64::from_entropy());
    let name = settings.source.redacted();
    while !interrupt.stopping() {
        let reason = match OpenSource::open(
            &settings.source,
            &settings.options,
            interrupt,
            settings.open_timeout,
        ) {
            Ok(mut open) => {
                stats.sessions += 1;
                tracing::info!(record_source = %name, "record stream open");
                keeper.start_session(header_of(&open.stream()));
                let before = stats.packets;
                let end = session(settings, &mut open, &mut keeper, interrupt, &mut stats);
                // A session that delivered packets was healthy: the next loss starts
                // the backoff over.
                if stats.packets > before {
                    backoff.reset();
                }
                interrupt.arm_for(CLOSE_DEADLINE);
                drop(open);
                match end {
                    Some(r) => r,
                    None => break, // stopping
                }
            }
            Err(e) => e.to_string(),
        };
        if interrupt.stopping() {
            break;
        }
        stats.losses += 1;
        let delay = backoff.next_delay();
        // The first failure after a healthy session, then every power of two in a row.
        if backoff.failures().is_power_of_two() {
            tracing::warn!(
                record_source = %name,
                %reason,
                retry_in_ms = delay.as_millis() as u64,
                "record stream unavailable; clips have no packets until it is back"
            );
        }
        wait(clock, delay, interrupt);
    }
    tracing::info!(
        sessions = stats.sessions,
        packets = stats.packets,
        losses = stats.losses,
        kept_errors = keeper.errors(),
        "record stream closed"
    );
    stats
}

/// One connection: every video packet to the keeper. `None` when stopping, else why the
/// session ended.
fn session(
    settings: &RecordSettings,
    open: &mut OpenSource,
    keeper: &mut PacketKeeper,
    interrupt: &Interrupt,
    stats: &mut RecordStats,
) -> Option<String> {
    let index = open.stream_index();
    loop {
        interrupt.arm_for(settings.stall_timeout);
        let packet = match open.read(interrupt) {
            Ok(p) => p,
            Err(ReadError::Stopping) => return None,
            Err(e) => return Some(e.to_string()),
        };
        if packet.stream() != index {
            continue;
        }
        stats.packets += 1;
        keeper.on_av_packet(&packet);
        // A segment's first packet anchors it: its presentation time arrived now.
        keeper.on_published(
            packet.pts().map(|t| open.ts_to_ns(t)),
            UnixNanos::now().get(),
        );
    }
}

/// Sleeps `delay`, returning early when the kernel stops.
fn wait(clock: &dyn Clock, delay: Duration, interrupt: &Interrupt) {
    let until = clock
        .now()
        .get()
        .saturating_add(proto_schema::time::duration_ns(delay));
    clock.sleep_until(MonoNanos(until), &|| interrupt.stopping());
}
