//! Control commands from the API (add, start, stop, remove a camera) and the checks an
//! added camera passes before anything starts: the same as the config file's, plus the
//! API's stricter source rule.

use tokio::sync::oneshot;

use crate::config::validate::{check_api_source, check_camera};
use crate::config::{
    validate, CameraConfig, Config, ConfigError, SubscriptionConfig, ValidationErrors,
};

/// Why a control command was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No camera with that id.
    #[error("no camera {0:?}")]
    NotFound(String),
    /// The camera exists already.
    #[error("camera {0:?} exists already")]
    Exists(String),
    /// The camera (with its subscriptions) does not validate.
    #[error(transparent)]
    Invalid(ValidationErrors),
    /// The system is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

/// A control command from the API.
#[derive(Debug)]
pub enum Command {
    /// Add a camera (and its subscriptions), optionally starting it.
    AddCamera {
        /// The camera (boxed: it is much larger than the other commands).
        camera: Box<CameraConfig>,
        /// Its subscriptions.
        subscriptions: Vec<SubscriptionConfig>,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Start a stopped camera.
    StartCamera {
        /// Camera id.
        id: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Stop a running camera (kernel and agent).
    StopCamera {
        /// Camera id.
        id: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
    /// Stop and forget a camera.
    RemoveCamera {
        /// Camera id.
        id: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Result<(), ControlError>>,
    },
}

/// The running config with `camera` and its subscriptions added, when they pass the
/// file's checks and the API's source rule (rtsp(s) URLs, or files under
/// `agent.media_dirs`); the camera as admitted comes with it. Every problem is
/// reported at once.
pub fn admit_camera(
    running: &Config,
    mut camera: CameraConfig,
    subs: Vec<SubscriptionConfig>,
) -> Result<(Config, CameraConfig), ControlError> {
    if running.camera(&camera.id).is_some() {
        return Err(ControlError::Exists(camera.id));
    }
    // API sources are less trusted than the file's: rtsp(s) or media_dirs only.
    let mut own = Vec::new();
    let source_ok = check_api_source(&mut camera, &running.agent.media_dirs, &mut own);
    let mut candidate = running.clone();
    candidate.cameras.push(camera.clone());
    candidate.subscriptions.extend(subs.iter().cloned());
    let mut errs = match validate(&candidate, false) {
        Ok(()) => Vec::new(),
        Err(e) => e.0,
    };
    // The file checks for the new camera only (the others ran at start), and only
    // for a source allowed at all (no probing of files outside media_dirs).
    check_camera(&camera, source_ok, &mut own);
    for e in own {
        if !errs.contains(&e) {
            errs.push(e);
        }
    }
    if let Some(s) = subs.iter().find(|s| s.camera != camera.id) {
        errs.push(ConfigError::UnknownCamera {
            index: 1,
            camera: s.camera.clone(),
        });
    }
    if !errs.is_empty() {
        return Err(ControlError::Invalid(ValidationErrors(errs)));
    }
    Ok((candidate, camera))
}

/// Removes camera `id` from the running config with everything that names it: its
/// subscriptions and its entry in `[clips] cameras`. The config left behind validates
/// as it did before the camera was added: the next camera added through the API is
/// checked against it, and a `clips.cameras` entry naming a removed camera would refuse
/// every later add (issue 25). A camera added again with the same id starts afresh, as
/// it does for its subscriptions; `"*"` keeps covering every camera.
pub fn forget_camera(config: &mut Config, id: &str) {
    config.cameras.retain(|c| c.id != id);
    config.subscriptions.retain(|s| s.camera != id);
    config.clips.cameras.retain(|c| c != id);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn running() -> Config {
        let text = r#"
[agent]
media_dirs = ["/nonexistent-media"]

[[cameras]]
id = "lobby"
source = "rtsp://127.0.0.1:8554/lobby"
fps = 25

[[models]]
id = "yolox"
path = "/m/yolox_nano.onnx"
"#;
        Config::from_toml(text, Path::new("t.toml"), Path::new("/cfg")).unwrap()
    }

    fn camera(id: &str, source: &str) -> CameraConfig {
        let mut c = running().cameras[0].clone();
        c.id = id.to_owned();
        c.source = source.to_owned();
        c
    }

    fn sub(camera: &str, model: &str) -> SubscriptionConfig {
        let text = format!("camera = {camera:?}\nmodel = {model:?}\nfps = 5\n");
        toml::from_str(&text).unwrap()
    }

    fn problems(r: Result<(Config, CameraConfig), ControlError>) -> Vec<ConfigError> {
        match r {
            Err(ControlError::Invalid(e)) => e.0,
            other => panic!("expected Invalid, got {:?}", other.map(|(_, c)| c.id)),
        }
    }

    #[test]
    fn an_rtsp_camera_with_a_known_model_is_admitted() {
        let (next, cam) = admit_camera(
            &running(),
            camera("door", "rtsp://127.0.0.1:8554/door"),
            vec![sub("door", "yolox")],
        )
        .unwrap();
        assert_eq!(cam.id, "door");
        assert!(next.camera("door").is_some() && next.camera("lobby").is_some());
        assert_eq!(next.subscriptions_of("door").count(), 1);
    }

    #[test]
    fn an_existing_id_is_refused() {
        let r = admit_camera(&running(), camera("lobby", "rtsp://h/x"), vec![]);
        assert!(matches!(r, Err(ControlError::Exists(id)) if id == "lobby"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errs = problems(admit_camera(
            &running(),
            camera("door", "http://127.0.0.1/x"),
            vec![sub("door", "nope"), sub("yard", "yolox")],
        ));
        let kinds: Vec<String> = errs
            .iter()
            .map(|e| {
                format!("{e:?}")
                    .split([' ', '{', '('])
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        for want in ["SourceScheme", "UnknownModel", "UnknownCamera"] {
            assert!(
                kinds.iter().any(|k| k == want),
                "missing {want} in {kinds:?}"
            );
        }
    }

    /// A file outside `media_dirs` is refused without being looked at.
    #[test]
    fn a_file_outside_media_dirs_is_refused() {
        let errs = problems(admit_camera(
            &running(),
            camera("door", "/etc/passwd"),
            vec![],
        ));
        assert!(
            errs.iter()
                .any(|e| matches!(e, ConfigError::SourceOutsideMediaDirs { .. })),
            "{errs:?}"
        );
        assert!(
            !errs
                .iter()
                .any(|e| matches!(e, ConfigError::MissingSourceFile { .. })),
            "not probed: {errs:?}"
        );
    }

    /// Issue 25, item 5a: removing a camera that `[clips] cameras` names left a config
    /// that refused every later add with `clips.cameras: no camera "door"`.
    #[test]
    fn a_removed_clips_camera_does_not_block_the_next_add() {
        let mut base = running();
        base.clips.cameras = vec!["lobby".into()];
        let (mut next, _) = admit_camera(
            &base,
            camera("door", "rtsp://h/door"),
            vec![sub("door", "yolox")],
        )
        .unwrap();
        next.clips.cameras.push("door".into());
        crate::config::validate(&next, false).unwrap();
        forget_camera(&mut next, "lobby");
        assert_eq!(next.clips.cameras, ["door"]);
        assert!(next.camera("lobby").is_none());
        crate::config::validate(&next, false).unwrap();
        forget_camera(&mut next, "door");
        assert!(next.clips.cameras.is_empty() && next.subscriptions.is_empty());
        let (after, _) = admit_camera(&next, camera("yard", "rtsp://h/yard"), vec![]).unwrap();
        assert!(after.camera("yard").is_some());
        // "*" is nobody's entry: it stays.
        let mut all = running();
        all.clips.cameras = vec!["*".into()];
        forget_camera(&mut all, "lobby");
        assert_eq!(all.clips.cameras, ["*"]);
    }
}
