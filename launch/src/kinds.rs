//! The enums both a parent and a child name: on the command line (clap), in core-agent's
//! TOML config (serde), in logs (`as_str`). Each is defined here only.

use serde::{Deserialize, Serialize};

/// Defines `as_str`, `Display` and a case-insensitive `FromStr` from one name table.
macro_rules! names {
    ($ty:ident, $what:literal, $expected:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Name as written in the config and on the command line.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($name => Ok($ty::$variant),)+
                    other => Err(format!(
                        concat!("unknown ", $what, " {:?} (expected ", $expected, ")"),
                        other
                    )),
                }
            }
        }
    };
}

/// RTSP lower transport (`frame-kernel --transport`, `cameras.transport`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RTP interleaved on the RTSP TCP connection (default; survives lossy networks).
    #[default]
    Tcp,
    /// RTP over UDP.
    Udp,
}
names!(Transport, "transport", "tcp or udp", { Tcp => "tcp", Udp => "udp" });

/// Log output format (`frame-kernel --log-format`, `agent.log_format`, env
/// `FRAMEBUS_LOG_FORMAT`; `model-server --log-json`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
names!(LogFormat, "log format", "text or json", { Text => "text", Json => "json" });

/// Execution device of a model server (`model-server --device`, `models.device`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CPU execution provider.
    #[default]
    Cpu,
    /// CUDA execution provider when the loaded runtime has it and it starts; else CPU with
    /// a warning.
    Cuda,
}
names!(Device, "device", "cpu or cuda", { Cpu => "cpu", Cuda => "cuda" });

/// Model family asked for, which decides the pre- and post-processing
/// (`model-server --family`, `models.family`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    /// Detect from the output shape and the metadata.
    #[default]
    Auto,
    /// Force the YOLOv8 layout (Ultralytics, `[1, 4 + classes, anchors]`).
    Yolov8,
    /// Force the YOLOX layout (Megvii, `[1, anchors, 5 + classes]`).
    Yolox,
}
names!(ModelFamily, "model family", "auto, yolov8 or yolox", {
    Auto => "auto",
    Yolov8 => "yolov8",
    Yolox => "yolox",
});

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    /// The clap name, the serde name and `as_str` are one name, parsed case-insensitively.
    #[test]
    fn names_agree_everywhere() {
        fn check<T>()
        where
            T: ValueEnum + Copy + std::fmt::Debug + PartialEq + std::str::FromStr + Serialize,
            T: std::fmt::Display,
        {
            for v in T::value_variants() {
                let name = v.to_possible_value().unwrap().get_name().to_owned();
                assert_eq!(v.to_string(), name);
                assert_eq!(
                    serde_json::to_string(v).unwrap(),
                    format!("\"{name}\""),
                    "serde name of {v:?}"
                );
                let parsed: T = name.to_ascii_uppercase().parse().ok().unwrap();
                assert_eq!(parsed, *v);
            }
            assert!("bogus".parse::<T>().is_err());
        }
        check::<Transport>();
        check::<LogFormat>();
        check::<Device>();
        check::<ModelFamily>();
        assert_eq!(
            "x".parse::<LogFormat>().unwrap_err(),
            "unknown log format \"x\" (expected text or json)"
        );
    }
}
