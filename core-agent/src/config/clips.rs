//! `[clips]`: event clips with pre-roll, remuxed from the packets the frame kernels keep
//! (see `core_agent::clips` and `docs/architecture.md`, "Event clips").
//!
//! ```toml
//! [clips]
//! cameras = ["door"]      # or ["*"]: every camera
//! dir = "clips"           # clips/<camera>/<YYYY-MM-DD>/<event-id>.mp4
//! pre_roll_s = 5
//! post_roll_s = 5
//! types = ["line_crossed", "zone_enter", "loitering"]
//! max_age_s = 604800
//! max_bytes = 2147483648  # per camera
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validate::ConfigError;
use super::Config;
use crate::analytics::events::EventKind;

/// Name of the folder under `dir` holding the kernels' packet segments, one folder per
/// camera (a camera id never starts with a dot, so it cannot collide with a camera's
/// clips folder).
pub const BUFFER_DIR: &str = ".buffer";
/// History the kernel keeps beyond the pre-roll: the recorder starts a clip a little
/// after its event (the event comes out of inference), and must still find the
/// keyframe before the pre-roll.
pub const KEEP_MARGIN_S: f64 = 5.0;

/// `[clips]`: which cameras record clips of which events, how long before and after,
/// where, and how many are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClipsSettings {
    /// Cameras that record clips; `"*"` stands for every camera. Default: none (clips
    /// off). A camera's packets are kept (by its frame kernel) only when it records
    /// clips.
    pub cameras: Vec<String>,
    /// Clips directory: `<dir>/<camera>/<YYYY-MM-DD>/<event-id>.mp4` (UTC dates), and
    /// `<dir>/.buffer/<camera>/` for the kernel's packet segments. Relative to the
    /// config file. Default `clips`.
    pub dir: PathBuf,
    /// Seconds of video before the event, `0..=60`. A clip starts at the keyframe at or
    /// before `event - pre_roll_s`, so it may hold up to one GOP more. Default `5`.
    pub pre_roll_s: f64,
    /// Seconds of video after the event (after the last event of the same track while
    /// the clip is being recorded), `0..=300`. Default `5`.
    pub post_roll_s: f64,
    /// Longest clip in seconds (extension by later events stops there), at least
    /// `pre_roll_s + post_roll_s`, at most `3600`. Default `120`.
    pub max_clip_s: f64,
    /// Event types that get a clip. Default `["line_crossed", "zone_enter",
    /// "loitering"]`.
    pub types: Vec<EventKind>,
    /// Clips older than this many seconds are deleted, `>= 60`. Default `604800` (7
    /// days).
    pub max_age_s: u64,
    /// Most bytes of clips per camera; the oldest go first, `>= 1048576`. Default
    /// `2147483648` (2 GiB).
    pub max_bytes: u64,
    /// Most bytes of packet segments the kernel keeps per camera, `1048576..=
    /// 1099511627776`. Default `67108864` (64 MiB).
    pub buffer_max_bytes: u64,
    /// Clips recorded at once per camera, `1..=64`; an event beyond this gets no clip
    /// (counted in `framebus_clips_refused_total`). Default `4`.
    pub max_active: usize,
}

impl Default for ClipsSettings {
    fn default() -> Self {
        Self {
            cameras: Vec::new(),
            dir: PathBuf::from("clips"),
            pre_roll_s: 5.0,
            post_roll_s: 5.0,
            max_clip_s: 120.0,
            types: vec![
                EventKind::LineCrossed,
                EventKind::ZoneEnter,
                EventKind::Loitering,
            ],
            max_age_s: 7 * 24 * 3600,
            max_bytes: 2 << 30,
            buffer_max_bytes: 64 << 20,
            max_active: 4,
        }
    }
}

impl ClipsSettings {
    /// Whether `camera` records clips.
    pub fn enabled_for(&self, camera: &str) -> bool {
        self.cameras.iter().any(|c| c == "*" || c == camera)
    }

    /// Whether any camera records clips.
    pub fn any(&self) -> bool {
        !self.cameras.is_empty()
    }

    /// The folder of the kernel's packet segments for `camera`.
    pub fn buffer_dir(&self, camera: &str) -> PathBuf {
        self.dir.join(BUFFER_DIR).join(camera)
    }

    /// History the kernel keeps, ms.
    pub fn keep_ms(&self) -> u64 {
        ((self.pre_roll_s + KEEP_MARGIN_S) * 1000.0).ceil() as u64
    }

    /// Sets the kernel's clip flags for `camera` (none when it records no clips).
    pub fn apply_to(&self, camera: &str, launch: &mut framebus_launch::KernelLaunch) {
        if !self.enabled_for(camera) {
            return;
        }
        launch.clip_dir = Some(self.buffer_dir(camera));
        launch.clip_keep_ms = self.keep_ms();
        launch.clip_max_bytes = self.buffer_max_bytes;
    }
}

/// Adds every problem of `[clips]` to `errs`.
pub fn check(c: &Config, errs: &mut Vec<ConfigError>) {
    let s = &c.clips;
    let mut bad = |key: &str, reason: String| {
        errs.push(ConfigError::InvalidRule {
            key: format!("clips.{key}"),
            reason,
        })
    };
    for cam in &s.cameras {
        if cam != "*" && c.camera(cam).is_none() {
            bad("cameras", format!("no camera {cam:?}"));
        }
    }
    let range = |v: f64, lo: f64, hi: f64| v.is_finite() && (lo..=hi).contains(&v);
    if !range(s.pre_roll_s, 0.0, 60.0) {
        bad("pre_roll_s", format!("{} is not in 0..=60", s.pre_roll_s));
    }
    if !range(s.post_roll_s, 0.0, 300.0) {
        bad(
            "post_roll_s",
            format!("{} is not in 0..=300", s.post_roll_s),
        );
    }
    if !range(s.max_clip_s, s.pre_roll_s + s.post_roll_s, 3600.0) || s.max_clip_s <= 0.0 {
        bad(
            "max_clip_s",
            format!(
                "{} is not in pre_roll_s + post_roll_s ..= 3600 (and above 0)",
                s.max_clip_s
            ),
        );
    }
    if s.types.is_empty() {
        bad(
            "types",
            "no event type: clips would never be recorded".into(),
        );
    }
    if s.max_age_s < 60 {
        bad("max_age_s", format!("{} is below 60", s.max_age_s));
    }
    if s.max_bytes < 1 << 20 {
        bad("max_bytes", format!("{} is below 1048576", s.max_bytes));
    }
    if !(1 << 20..=1 << 40).contains(&s.buffer_max_bytes) {
        bad(
            "buffer_max_bytes",
            format!("{} is not in 1048576..=1099511627776", s.buffer_max_bytes),
        );
    }
    if !(1..=64).contains(&s.max_active) {
        bad("max_active", format!("{} is not in 1..=64", s.max_active));
    }
    if s.dir.as_os_str().is_empty() {
        bad("dir", "empty path".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_kernel_args() {
        let s = ClipsSettings {
            cameras: vec!["door".into()],
            dir: "/var/clips".into(),
            ..Default::default()
        };
        assert!(s.enabled_for("door") && !s.enabled_for("yard"));
        assert_eq!(s.keep_ms(), 10_000);
        let args = |camera: &str| {
            let mut l = framebus_launch::KernelLaunch::new(camera, 0);
            let bare = l.to_argv();
            s.apply_to(camera, &mut l);
            l.to_argv()
                .into_iter()
                .filter(|a| !bare.contains(a))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            args("door"),
            [
                "--clip-dir",
                "/var/clips/.buffer/door",
                "--clip-keep-ms",
                "10000",
                "--clip-max-bytes",
                "67108864"
            ]
        );
        assert!(args("yard").is_empty());
        let all = ClipsSettings {
            cameras: vec!["*".into()],
            ..Default::default()
        };
        assert!(all.enabled_for("yard"));
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"
            [clips]
            cameras = ["ghost"]
            pre_roll_s = -1
            post_roll_s = 1000
            max_clip_s = 1
            types = []
            max_age_s = 5
            max_bytes = 10
            buffer_max_bytes = 10
            max_active = 0
            dir = ""
        "#;
        let c: Config = toml::from_str(text).unwrap();
        let mut errs = Vec::new();
        check(&c, &mut errs);
        let keys: Vec<String> = errs
            .iter()
            .map(|e| match e {
                ConfigError::InvalidRule { key, .. } => key.clone(),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(
            keys,
            [
                "clips.cameras",
                "clips.pre_roll_s",
                "clips.post_roll_s",
                "clips.max_clip_s",
                "clips.types",
                "clips.max_age_s",
                "clips.max_bytes",
                "clips.buffer_max_bytes",
                "clips.max_active",
                "clips.dir"
            ]
        );
        assert!(toml::from_str::<Config>("[clips]\nbogus = 1").is_err());
        let c: Config = toml::from_str("[clips]\ntypes = [\"zone_exit\"]").unwrap();
        assert_eq!(c.clips.types, [EventKind::ZoneExit]);
    }
}
