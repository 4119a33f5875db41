//! The machine and the versions a run was measured on, printed with every result.

use std::fs;
use std::process::Command;

use serde::Serialize;

/// Hardware and OS facts of this machine.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    pub hostname: String,
    /// CPUs this process may run on.
    pub cores: usize,
    /// Logical CPUs listed in /proc/cpuinfo.
    pub cpuinfo_processors: usize,
    pub cpu_model: String,
    pub mem_total_mib: u64,
    pub kernel: String,
}

/// Versions of the toolchain and libraries in the measured path.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    pub framebus: String,
    pub rustc: String,
    pub ffmpeg: String,
    pub onnxruntime: String,
}

/// `(model name, processor count)` from /proc/cpuinfo text.
pub fn parse_cpuinfo(text: &str) -> (String, usize) {
    let mut model = None;
    let mut count = 0;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => count += 1,
            // x86 says "model name"; some ARM kernels only "Hardware" or "CPU part".
            "model name" | "Hardware" if model.is_none() => model = Some(value.trim().to_string()),
            _ => {}
        }
    }
    (model.unwrap_or_else(|| "unknown".to_string()), count)
}

/// `MemTotal` from /proc/meminfo text, MiB.
pub fn parse_mem_total_mib(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_ascii_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

impl MachineInfo {
    pub fn detect() -> MachineInfo {
        let (cpu_model, cpuinfo_processors) =
            parse_cpuinfo(&fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
        MachineInfo {
            hostname: read_trim("/proc/sys/kernel/hostname"),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpuinfo_processors,
            cpu_model,
            mem_total_mib: parse_mem_total_mib(
                &fs::read_to_string("/proc/meminfo").unwrap_or_default(),
            ),
            kernel: read_trim("/proc/sys/kernel/osrelease"),
        }
    }

    /// One line for the report header.
    pub fn line(&self) -> String {
        format!(
            "{} cores ({}), {} MiB, Linux {}",
            self.cores, self.cpu_model, self.mem_total_mib, self.kernel
        )
    }
}

impl Versions {
    /// Asks the tools; `onnxruntime` is the version of the library the harness loaded.
    pub fn detect(onnxruntime: &str) -> Versions {
        Versions {
            framebus: env!("CARGO_PKG_VERSION").to_string(),
            rustc: first_line("rustc", &["--version"]),
            ffmpeg: first_line("ffmpeg", &["-hide_banner", "-version"])
                .split(" Copyright")
                .next()
                .unwrap_or_default()
                .to_string(),
            onnxruntime: onnxruntime.to_string(),
        }
    }

    pub fn line(&self) -> String {
        format!(
            "framebus {}, {}, {}, onnxruntime {}",
            self.framebus, self.rustc, self.ffmpeg, self.onnxruntime
        )
    }
}

/// The version from ONNX Runtime's build-info string (`... git-branch=rel-1.31.1, ...`),
/// else the whole string.
pub fn ort_version_from_build_info(info: &str) -> String {
    info.split([',', ' '])
        .find_map(|f| f.trim().strip_prefix("git-branch=rel-"))
        .map(str::to_string)
        .unwrap_or_else(|| info.trim().to_string())
}

fn read_trim(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| format!("{cmd} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpuinfo() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\n\
                    processor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(parse_cpuinfo(text), ("AMD EPYC 7B13".to_string(), 2));
        assert_eq!(parse_cpuinfo(""), ("unknown".to_string(), 0));
    }

    #[test]
    fn parses_meminfo() {
        assert_eq!(
            parse_mem_total_mib("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            24000
        );
        assert_eq!(parse_mem_total_mib("nothing"), 0);
    }

    #[test]
    fn ort_version_from_info() {
        let info = "ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc, build type=Release";
        assert_eq!(ort_version_from_build_info(info), "1.31.1");
        assert_eq!(ort_version_from_build_info("odd"), "odd");
    }

    #[test]
    fn detects_this_machine() {
        let m = MachineInfo::detect();
        assert!(m.cores >= 1);
        assert!(!m.line().is_empty());
    }
}
