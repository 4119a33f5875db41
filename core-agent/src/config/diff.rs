//! What a config reload changes, computed without touching anything (vector's
//! `ConfigDiff`): the running system applies the diff, and this module's tests pin
//! which edit restarts what.
//!
//! The rules, from the cheapest to the dearest:
//! - analytics rules only: nothing restarts (the stage swaps them, see
//!   [`crate::analytics::stage::AnalyticsShared::set_rules`]);
//! - a camera's subscriptions, or the socket of a model it subscribes to: its stream
//!   agent restarts, its kernel keeps running;
//! - the fastest subscription of a camera with `skip_frames = "auto"` (the kernel's
//!   `--consumer-fps`): its kernel restarts;
//! - anything else of a camera: the camera (kernel and agent) restarts;
//! - anything of a model: its server restarts;
//! - `[agent]`, `[api]`, `[limits]`, `[supervisor]`, `[[outputs]]`: applied at the next start
//!   only (listed in [`ConfigDiff::needs_restart`]).

use std::collections::BTreeSet;

use super::{CameraConfig, Config, SkipFramesSetting};

/// Everything a reload from one config to the next changes. Ids are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Models no longer configured: stop their servers.
    pub models_removed: Vec<String>,
    /// Models whose config changed: restart their servers.
    pub models_changed: Vec<String>,
    /// New models: start their servers.
    pub models_added: Vec<String>,
    /// Cameras no longer configured: stop them, forget their metrics.
    pub cameras_removed: Vec<String>,
    /// Cameras whose config changed beyond their analytics rules: restart kernel and
    /// agent (started again only if enabled).
    pub cameras_changed: Vec<String>,
    /// New enabled cameras: start them.
    pub cameras_added: Vec<String>,
    /// Cameras (kept as they are) whose kernel restarts because its `--consumer-fps`
    /// changed.
    pub kernels_restarted: Vec<String>,
    /// Cameras (kept as they are) whose stream agent restarts: their subscriptions
    /// changed, or a model they subscribe to moved its socket.
    pub agents_restarted: Vec<String>,
    /// Whether any camera's analytics rules changed.
    pub rules_changed: bool,
    /// Sections whose change applies only at the next start.
    pub needs_restart: Vec<&'static str>,
}

impl ConfigDiff {
    /// The diff from `old` to `new`.
    pub fn between(old: &Config, new: &Config) -> Self {
        let mut d = ConfigDiff::default();
        let mut agents: BTreeSet<String> = BTreeSet::new();
        for m in &old.models {
            match new.model(&m.id) {
                None => d.models_removed.push(m.id.clone()),
                Some(n) if n != m => {
                    d.models_changed.push(m.id.clone());
                    if m.socket_path(&old.agent.socket_dir) != n.socket_path(&new.agent.socket_dir)
                    {
                        agents.extend(
                            new.subscriptions
                                .iter()
                                .filter(|s| s.model == m.id)
                                .map(|s| s.camera.clone()),
                        );
                    }
                }
                Some(_) => {}
            }
        }
        d.models_added = new
            .models
            .iter()
            .filter(|m| old.model(&m.id).is_none())
            .map(|m| m.id.clone())
            .collect();
        let mut kept: BTreeSet<String> = BTreeSet::new();
        for c in &old.cameras {
            match new.camera(&c.id) {
                None => d.cameras_removed.push(c.id.clone()),
                Some(n) if !same_but_analytics(n, c) => d.cameras_changed.push(c.id.clone()),
                Some(n) => {
                    kept.insert(c.id.clone());
                    if !old.subscriptions_of(&c.id).eq(new.subscriptions_of(&c.id)) {
                        agents.insert(c.id.clone());
                    }
                    let auto =
                        n.decode.skip_frames == SkipFramesSetting::Auto && !n.decode.all_frames;
                    if auto && old.consumer_fps(&c.id) != new.consumer_fps(&c.id) {
                        d.kernels_restarted.push(c.id.clone());
                    }
                }
            }
            if new.camera(&c.id).map(|n| &n.analytics) != Some(&c.analytics) {
                d.rules_changed |= c.analytics.is_some()
                    || new.camera(&c.id).is_some_and(|n| n.analytics.is_some());
            }
        }
        for c in &new.cameras {
            if old.camera(&c.id).is_none() {
                d.rules_changed |= c.analytics.is_some();
                if c.enabled {
                    d.cameras_added.push(c.id.clone());
                }
            }
        }
        d.rules_changed |= old.analytics != new.analytics;
        // Only cameras kept as they are: a restarted camera restarts its agent anyway.
        d.agents_restarted = agents.into_iter().filter(|c| kept.contains(c)).collect();
        for (changed, section) in [
            (old.agent != new.agent, "agent"),
            (old.api != new.api, "api"),
            (old.limits != new.limits, "limits"),
            (old.supervisor != new.supervisor, "supervisor"),
            (old.outputs != new.outputs, "outputs"),
        ] {
            if changed {
                d.needs_restart.push(section);
            }
        }
        d
    }

    /// Whether the reload changes nothing that runs.
    pub fn is_empty(&self) -> bool {
        self.models_removed.is_empty()
            && self.models_changed.is_empty()
            && self.models_added.is_empty()
            && self.cameras_removed.is_empty()
            && self.cameras_changed.is_empty()
            && self.cameras_added.is_empty()
            && self.kernels_restarted.is_empty()
            && self.agents_restarted.is_empty()
    }
}

/// Whether two camera configs differ at most in their analytics rules (which reload
/// without a restart).
pub fn same_but_analytics(a: &CameraConfig, b: &CameraConfig) -> bool {
    a == b || {
        let (mut a, mut b) = (a.clone(), b.clone());
        a.analytics = None;
        b.analytics = None;
        a == b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[agent]
socket_dir = "/tmp/fb-diff"

[[cameras]]
id = "a"
source = "rtsp://127.0.0.1/a"
[cameras.decode]
skip_frames = "never"

[[cameras]]
id = "b"
source = "rtsp://127.0.0.1/b"
[cameras.decode]
skip_frames = "auto"

[[models]]
id = "m"
path = "/models/m.onnx"

[[models]]
id = "n"
path = "/models/n.onnx"

[[subscriptions]]
camera = "a"
model = "m"
fps = 5

[[subscriptions]]
camera = "b"
model = "n"
fps = 5
"#;

    fn parse(text: &str) -> Config {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn diff(old: &str, new: &str) -> ConfigDiff {
        ConfigDiff::between(&parse(old), &parse(new))
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let d = diff(BASE, BASE);
        assert!(
            d.is_empty() && !d.rules_changed && d.needs_restart.is_empty(),
            "{d:?}"
        );
    }

    #[test]
    fn analytics_rules_restart_nothing() {
        let new = BASE.replace(
            "skip_frames = \"never\"\n",
            "skip_frames = \"never\"\n[[cameras.analytics.lines]]\nname = \"l\"\nfrom = [0.5, 0.0]\nto = [0.5, 1.0]\n",
        );
        let d = diff(BASE, &new);
        assert!(d.is_empty(), "{d:?}");
        assert!(d.rules_changed);
    }

    #[test]
    fn a_subscription_rate_restarts_the_agent_and_an_auto_skipping_kernel() {
        // Camera a decodes every frame: only its agent restarts.
        let d = diff(
            BASE,
            &BASE.replace(
                "camera = \"a\"\nmodel = \"m\"\nfps = 5",
                "camera = \"a\"\nmodel = \"m\"\nfps = 2",
            ),
        );
        assert_eq!(d.agents_restarted, ["a"]);
        assert!(
            d.kernels_restarted.is_empty() && d.cameras_changed.is_empty(),
            "{d:?}"
        );
        // Camera b skips frames for its fastest consumer: its kernel restarts too.
        let d = diff(
            BASE,
            &BASE.replace(
                "camera = \"b\"\nmodel = \"n\"\nfps = 5",
                "camera = \"b\"\nmodel = \"n\"\nfps = 2",
            ),
        );
        assert_eq!(
            (d.agents_restarted, d.kernels_restarted),
            (vec!["b".to_owned()], vec!["b".to_owned()])
        );
    }

    #[test]
    fn a_model_socket_move_restarts_its_server_and_its_subscribers_agents() {
        let new = BASE.replace(
            "path = \"/models/m.onnx\"",
            "path = \"/models/m.onnx\"\nsocket = \"/tmp/fb-diff/other.sock\"",
        );
        let d = diff(BASE, &new);
        assert_eq!(d.models_changed, ["m"]);
        assert_eq!(d.agents_restarted, ["a"]);
        // A model change that keeps the socket restarts only the server.
        let d = diff(BASE, &BASE.replace("/models/n.onnx", "/models/n2.onnx"));
        assert_eq!(d.models_changed, ["n"]);
        assert!(d.agents_restarted.is_empty(), "{d:?}");
    }

    #[test]
    fn cameras_and_models_added_removed_and_changed() {
        let new = BASE
            .replace("rtsp://127.0.0.1/a", "rtsp://127.0.0.1/a2")
            .replace(
                "[[cameras]]\nid = \"b\"\nsource = \"rtsp://127.0.0.1/b\"\n[cameras.decode]\nskip_frames = \"auto\"\n",
                "[[cameras]]\nid = \"c\"\nsource = \"rtsp://127.0.0.1/c\"\n\n[[cameras]]\nid = \"d\"\nsource = \"rtsp://127.0.0.1/d\"\nenabled = false\n",
            )
            .replace("camera = \"b\"\nmodel = \"n\"", "camera = \"c\"\nmodel = \"n\"")
            .replace("id = \"n\"\npath = \"/models/n.onnx\"", "id = \"o\"\npath = \"/models/o.onnx\"")
            .replace("model = \"n\"", "model = \"o\"");
        let d = diff(BASE, &new);
        assert_eq!(d.cameras_changed, ["a"]);
        assert_eq!(d.cameras_removed, ["b"]);
        assert_eq!(d.cameras_added, ["c"], "d is disabled: not started");
        assert_eq!(
            (d.models_removed, d.models_added),
            (vec!["n".to_owned()], vec!["o".to_owned()])
        );
        // A restarted camera restarts its agent anyway: not listed twice.
        assert!(d.agents_restarted.is_empty(), "{:?}", d.agents_restarted);
    }

    #[test]
    fn a_source_change_restarts_the_camera_even_with_the_same_rules() {
        let d = diff(
            BASE,
            &BASE.replace("rtsp://127.0.0.1/b", "rtsp://127.0.0.1/b2"),
        );
        assert_eq!(d.cameras_changed, ["b"]);
    }

    #[test]
    fn start_only_sections_are_named() {
        let new = format!("[limits]\nresult_queue = 77\n{BASE}");
        let d = diff(BASE, &new);
        assert_eq!(d.needs_restart, ["limits"]);
        assert!(d.is_empty());
    }
}
