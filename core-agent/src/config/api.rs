//! `[api]`: limits of the HTTP listener on `agent.api_addr` (the control API, the
//! dashboard, its streams). Every local user can open connections to it, so it is a door
//! that must not be exhaustible: a cap on open connections, a deadline on request
//! headers (which also closes a keep-alive connection left idle), and descriptors kept
//! for the supervisor's own work. See [`crate::api::listener`].

use serde::{Deserialize, Serialize};

use super::validate::ConfigError;
use super::Config;

/// `[api]` settings. Every key has a default; the section may be left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Connections open at once, `16..=16384`; one more is answered `503` and closed at
    /// once. Must leave room for the dashboard's streams and the live views. The agent
    /// refuses to start when its descriptor limit (`RLIMIT_NOFILE`, raised to the hard
    /// limit at start) is below twice this plus a reserve for its own work. Default `256`.
    pub max_connections: usize,
    /// Seconds a connection may take to send a request's headers, `1..=300`; the same
    /// deadline closes a keep-alive connection that sends no next request. Streams
    /// (`/events/stream`, `stream.mjpeg`) are not affected once their answer started.
    /// Default `10`.
    pub header_timeout_s: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            max_connections: 256,
            header_timeout_s: 10,
        }
    }
}

/// Checks `[api]`, adding every problem to `errs`.
pub fn check(c: &Config, errs: &mut Vec<ConfigError>) {
    let a = &c.api;
    if !(16..=16_384).contains(&a.max_connections) {
        errs.push(ConfigError::OutOfRange {
            field: "api.max_connections".into(),
            value: a.max_connections.to_string(),
            expected: "16..=16384",
        });
    } else {
        // Every long-lived stream holds a connection: the streams' own caps must leave
        // room for plain requests.
        let streams = c.dashboard.max_streams + c.live.max_viewers * c.cameras.len().max(1);
        if streams + 8 > a.max_connections {
            errs.push(ConfigError::OutOfRange {
                field: "api.max_connections".into(),
                value: a.max_connections.to_string(),
                expected: "at least 8 above dashboard.max_streams + live.max_viewers per camera",
            });
        }
    }
    if !(1..=300).contains(&a.header_timeout_s) {
        errs.push(ConfigError::OutOfRange {
            field: "api.header_timeout_s".into(),
            value: a.header_timeout_s.to_string(),
            expected: "1..=300",
        });
    }
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
        c.api.max_connections = 4;
        c.api.header_timeout_s = 0;
        check(&c, &mut errs);
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].starts_with("api.max_connections: 4"), "{text:?}");
        assert!(text[1].starts_with("api.header_timeout_s: 0"), "{text:?}");
    }

    #[test]
    fn streams_must_leave_room_for_requests() {
        let mut c = Config::default();
        c.api.max_connections = 16;
        c.dashboard.max_streams = 8;
        let mut errs = Vec::new();
        check(&c, &mut errs);
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 1, "{text:?}");
        assert!(text[0].contains("dashboard.max_streams"), "{text:?}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<Config>("[api]\nmax_conn = 3\n").unwrap_err();
        assert!(e.to_string().contains("max_conn"), "{e}");
        let c: Config = toml::from_str("[api]\nmax_connections = 64\n").unwrap();
        assert_eq!(c.api.max_connections, 64);
        assert_eq!(c.api.header_timeout_s, 10);
    }
}
