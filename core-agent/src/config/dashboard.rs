//! `[dashboard]`: the web page served at `/` on the API listener, its live-update
//! stream (`GET /events/stream`), its recent-events store (`GET /events`) and its
//! login sessions. See `core-agent/src/web/` and the README's "Dashboard" section.

use serde::{Deserialize, Serialize};

use super::validate::ConfigError;
use super::Config;

/// `[dashboard]` settings. Every key has a default; the section may be left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSettings {
    /// Serve the page at `/` (the JSON endpoints `/events` and `/events/stream` are
    /// served either way). Default `true`.
    pub enabled: bool,
    /// Events kept in memory for `GET /events` (oldest dropped first), `1..=100000`.
    /// Default `500`.
    pub recent_events: usize,
    /// Live-update streams (`GET /events/stream`) open at once, `1..=1024`; one more is
    /// answered 503. Default `8`.
    pub max_streams: usize,
    /// Seconds between the status snapshots a stream sends (cameras, models, counts,
    /// processes), `1..=60`. Default `1`.
    pub status_interval_s: u64,
    /// Seconds between keep-alive comments on a quiet stream (a dead client is noticed
    /// at the next one), `1..=300`. Default `15`.
    pub keepalive_s: u64,
    /// Seconds after which a stream is closed even if active (the browser's
    /// `EventSource` reconnects at once), so a forgotten tab cannot hold a slot for
    /// ever, `10..=86400`. Default `1800`.
    pub stream_max_s: u64,
    /// Login sessions kept (the oldest is logged out when one more logs in),
    /// `1..=1024`. Default `16`.
    pub max_sessions: usize,
    /// Seconds a login session lasts, `60..=2592000` (30 days). Default `43200` (12 h).
    pub session_ttl_s: u64,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            recent_events: 500,
            max_streams: 8,
            status_interval_s: 1,
            keepalive_s: 15,
            stream_max_s: 1800,
            max_sessions: 16,
            session_ttl_s: 43_200,
        }
    }
}

/// Checks `[dashboard]`, adding every problem to `errs`.
pub fn check(c: &Config, errs: &mut Vec<ConfigError>) {
    let d = &c.dashboard;
    let mut range = |field: &str, value: u64, lo: u64, hi: u64, expected: &'static str| {
        if !(lo..=hi).contains(&value) {
            errs.push(ConfigError::OutOfRange {
                field: format!("dashboard.{field}"),
                value: value.to_string(),
                expected,
            });
        }
    };
    range(
        "recent_events",
        d.recent_events as u64,
        1,
        100_000,
        "1..=100000",
    );
    range("max_streams", d.max_streams as u64, 1, 1024, "1..=1024");
    range("status_interval_s", d.status_interval_s, 1, 60, "1..=60");
    range("keepalive_s", d.keepalive_s, 1, 300, "1..=300");
    range("stream_max_s", d.stream_max_s, 10, 86_400, "10..=86400");
    range("max_sessions", d.max_sessions as u64, 1, 1024, "1..=1024");
    range(
        "session_ttl_s",
        d.session_ttl_s,
        60,
        2_592_000,
        "60..=2592000",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_every_bad_key_is_named() {
        let mut c = Config::default();
        let mut errs = Vec::new();
        check(&c, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        c.dashboard.max_streams = 0;
        c.dashboard.keepalive_s = 0;
        c.dashboard.session_ttl_s = 1;
        check(&c, &mut errs);
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].starts_with("dashboard.max_streams: 0"), "{text:?}");
        assert!(text[1].starts_with("dashboard.keepalive_s"), "{text:?}");
        assert!(text[2].starts_with("dashboard.session_ttl_s"), "{text:?}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<Config>("[dashboard]\nmax_stream = 3\n").unwrap_err();
        assert!(e.to_string().contains("max_stream"), "{e}");
        let c: Config = toml::from_str("[dashboard]\nmax_streams = 3\n").unwrap();
        assert_eq!(c.dashboard.max_streams, 3);
        assert_eq!(c.dashboard.recent_events, 500);
    }
}
