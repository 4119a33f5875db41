//! Clocks: the one injectable [`Clock`] and the two clock types of the contract
//! ([`UnixNanos`] for capture times, [`MonoNanos`] for heartbeats, request times and
//! deadlines) live in `proto_schema::time`; this module re-exports them so timing logic
//! here (restart backoff, restart windows, session expiry) takes an `Arc<dyn Clock>` and
//! tests move a [`ManualClock`] instead of sleeping.

pub use proto_schema::time::{Clock, ManualClock, MonoNanos, SystemClock, UnixNanos};
