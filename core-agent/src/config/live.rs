//! `[live]`: the live view (`GET /cameras/{id}/snapshot.jpg` and
//! `GET /cameras/{id}/stream.mjpeg`). Every key has a default, so the table may be left
//! out; [`check`] reports every problem with its dotted key.

use serde::{Deserialize, Serialize};

use super::validate::ConfigError;
use super::Config;

/// Highest `max_fps` accepted (an MJPEG stream is for looking at, not for recording).
pub const FPS_LIMIT: f64 = 30.0;
/// Highest `max_viewers` accepted per camera.
pub const VIEWERS_LIMIT: usize = 64;

/// `[live]`: rates, viewer cap and JPEG quality of the live view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveSettings {
    /// Frames per second of an MJPEG stream without `?fps=`. Default `5`.
    pub fps: f64,
    /// Highest rate a viewer may ask for with `?fps=` (higher asks are capped to it),
    /// `> 0` and at most 30. Default `10`.
    pub max_fps: f64,
    /// MJPEG viewers per camera at once, `1..=64`; one more gets 503. Default `4`.
    pub max_viewers: usize,
    /// JPEG quality, `1..=100`. Default `80`.
    pub jpeg_quality: u8,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            fps: 5.0,
            max_fps: 10.0,
            max_viewers: 4,
            jpeg_quality: 80,
        }
    }
}

impl LiveSettings {
    /// The rate of a stream for a viewer asking `asked` (none: the default), capped
    /// to `max_fps`.
    pub fn rate(&self, asked: Option<f64>) -> f64 {
        match asked {
            Some(f) if f.is_finite() && f > 0.0 => f.min(self.max_fps),
            _ => self.fps.min(self.max_fps),
        }
    }
}

fn bad(errs: &mut Vec<ConfigError>, key: &str, reason: String) {
    errs.push(ConfigError::InvalidRule {
        key: format!("live.{key}"),
        reason,
    });
}

/// Adds every problem of `config.live` to `errs`.
pub fn check(config: &Config, errs: &mut Vec<ConfigError>) {
    check_settings(&config.live, errs);
}

/// Adds every problem of `s` to `errs`.
pub fn check_settings(s: &LiveSettings, errs: &mut Vec<ConfigError>) {
    if !(s.max_fps.is_finite() && s.max_fps > 0.0 && s.max_fps <= FPS_LIMIT) {
        bad(
            errs,
            "max_fps",
            format!("{} is not a rate in (0, {FPS_LIMIT}]", s.max_fps),
        );
    }
    if !(s.fps.is_finite() && s.fps > 0.0 && s.fps <= FPS_LIMIT) {
        bad(
            errs,
            "fps",
            format!("{} is not a rate in (0, {FPS_LIMIT}]", s.fps),
        );
    } else if s.max_fps.is_finite() && s.fps > s.max_fps {
        bad(
            errs,
            "fps",
            format!("{} is above live.max_fps = {}", s.fps, s.max_fps),
        );
    }
    if !(1..=VIEWERS_LIMIT).contains(&s.max_viewers) {
        bad(
            errs,
            "max_viewers",
            format!("{} is not in 1..={VIEWERS_LIMIT}", s.max_viewers),
        );
    }
    if !(1..=100).contains(&s.jpeg_quality) {
        bad(
            errs,
            "jpeg_quality",
            format!("{} is not in 1..=100", s.jpeg_quality),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s: LiveSettings = toml::from_str("").unwrap();
        assert_eq!(s, LiveSettings::default());
        assert_eq!(
            (s.fps, s.max_fps, s.max_viewers, s.jpeg_quality),
            (5.0, 10.0, 4, 80)
        );
        let mut errs = Vec::new();
        check_settings(&s, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<LiveSettings>("fsp = 5").is_err());
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let s = LiveSettings {
            fps: f64::NAN,
            max_fps: 0.0,
            max_viewers: 0,
            jpeg_quality: 0,
        };
        let mut errs = Vec::new();
        check_settings(&s, &mut errs);
        let keys: Vec<String> = errs
            .iter()
            .map(|e| match e {
                ConfigError::InvalidRule { key, .. } => key.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "live.max_fps",
                "live.fps",
                "live.max_viewers",
                "live.jpeg_quality"
            ]
        );
        let mut errs = Vec::new();
        check_settings(
            &LiveSettings {
                fps: 12.0,
                ..LiveSettings::default()
            },
            &mut errs,
        );
        assert!(
            errs[0].to_string().contains("above live.max_fps"),
            "{errs:?}"
        );
    }

    #[test]
    fn asked_rates_are_capped() {
        let s = LiveSettings::default();
        assert_eq!(s.rate(None), 5.0);
        assert_eq!(s.rate(Some(2.0)), 2.0);
        assert_eq!(s.rate(Some(100.0)), 10.0);
        assert_eq!(s.rate(Some(-1.0)), 5.0);
        assert_eq!(s.rate(Some(f64::INFINITY)), 5.0);
    }
}
