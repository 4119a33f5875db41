//! One logging setup for every binary: tracing to stderr, text or JSON lines.
//!
//! Filter precedence (first that is set wins): the value the binary was given
//! explicitly (core-agent's `agent.log`, itself defaulting to `FRAMEBUS_LOG`), then the
//! `FRAMEBUS_LOG` environment variable, then `RUST_LOG`, then the binary's default. The
//! agent passes its filter to its children as `FRAMEBUS_LOG`, so one setting reaches
//! every process. A filter that does not parse is reported on stderr and the default is
//! used: a typo in a log filter never stops a camera.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::LogFormat;

/// The environment variable every binary reads its log filter from.
pub const ENV_LOG: &str = "FRAMEBUS_LOG";
/// The conventional fallback, read when [`ENV_LOG`] is not set.
pub const ENV_RUST_LOG: &str = "RUST_LOG";

/// The filter text to use, by the precedence above; `env` reads a variable (injected so
/// the precedence is unit-tested without touching the process environment).
pub fn filter_text(
    explicit: Option<&str>,
    default: &str,
    env: impl Fn(&str) -> Option<String>,
) -> String {
    explicit
        .map(str::to_owned)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| env(ENV_LOG).filter(|s| !s.trim().is_empty()))
        .or_else(|| env(ENV_RUST_LOG).filter(|s| !s.trim().is_empty()))
        .unwrap_or_else(|| default.to_owned())
}

/// Installs the global subscriber for binary `bin`: stderr, ANSI colours only on a
/// terminal, text or JSON. Returns whether DEBUG is enabled (a caller may turn on
/// costlier diagnostics then).
pub fn init(bin: &str, format: LogFormat, explicit: Option<&str>, default: &str) -> bool {
    let text = filter_text(explicit, default, |k| std::env::var(k).ok());
    let filter = EnvFilter::try_new(&text).unwrap_or_else(|e| {
        // Not `eprintln!`: it panics when stderr is a broken pipe.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "{bin}: bad log filter {text:?} ({e}); using {default:?}"
        );
        EnvFilter::new(default)
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        // When the process that reads our stderr dies, writes fail with EPIPE; the
        // default reports that with `eprintln!`, which panics in whichever task logged
        // (a signal task that panics would leave rings and sockets behind).
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
    tracing::enabled!(tracing::Level::DEBUG)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn explicit_then_framebus_log_then_rust_log_then_default() {
        let all = env(&[("FRAMEBUS_LOG", "debug"), ("RUST_LOG", "trace")]);
        assert_eq!(filter_text(Some("warn"), "info", &all), "warn");
        assert_eq!(filter_text(None, "info", &all), "debug");
        assert_eq!(
            filter_text(None, "info", env(&[("RUST_LOG", "trace")])),
            "trace"
        );
        assert_eq!(
            filter_text(None, "info,ort=warn", env(&[])),
            "info,ort=warn"
        );
        // Empty values count as unset.
        assert_eq!(
            filter_text(Some(" "), "info", env(&[("FRAMEBUS_LOG", "")])),
            "info"
        );
    }
}
