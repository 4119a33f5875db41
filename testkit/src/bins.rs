//! The workspace's binaries, from the target dir of the same build as the running test.
//!
//! A test (or bench) executable lives in `target/<profile>/deps/`, a binary in
//! `target/<profile>/`: the binaries of this build are one level up from `deps`. A missing
//! binary is built with the same cargo into the same target dir and profile (`cargo build
//! --workspace --bins` up front avoids the wait; `scripts/test.sh` does it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Why a binary could not be found or built.
#[derive(Debug, thiserror::Error)]
pub enum BinError {
    /// The running executable's path is unknown.
    #[error("cannot locate the running executable")]
    CurrentExe(#[source] std::io::Error),
    /// `cargo build` could not start.
    #[error("cannot run cargo to build {package}")]
    Spawn {
        /// The package being built.
        package: String,
        /// Why cargo did not start.
        #[source]
        source: std::io::Error,
    },
    /// `cargo build` failed, or did not produce the binary.
    #[error(
        "cargo could not build {binary} into {dir} (run `cargo build --workspace --bins` first)"
    )]
    Build {
        /// The binary that is missing.
        binary: String,
        /// Where it was expected.
        dir: PathBuf,
    },
}

/// The binary dir of `exe`: its parent, or the parent's parent when that is `deps`.
pub fn bin_dir_of(exe: &Path) -> PathBuf {
    let parent = exe.parent().unwrap_or(Path::new("."));
    if parent.file_name().is_some_and(|n| n == "deps") {
        parent.parent().unwrap_or(parent).to_path_buf()
    } else {
        parent.to_path_buf()
    }
}

/// The binary dir of this build (see the module doc).
pub fn bin_dir() -> Result<PathBuf, BinError> {
    let exe = std::env::current_exe().map_err(BinError::CurrentExe)?;
    Ok(bin_dir_of(&exe))
}

/// The path of workspace binary `name` (its package has the same name) in this build's
/// binary dir, built there first if missing.
pub fn bin(name: &str) -> Result<PathBuf, BinError> {
    // One build at a time per test process: parallel tests asking for the same binary
    // wait for the first build instead of racing cargo's lock.
    static BUILD: Mutex<()> = Mutex::new(());
    let dir = bin_dir()?;
    let path = dir.join(name);
    if path.is_file() {
        return Ok(path);
    }
    let _one = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if path.is_file() {
        return Ok(path);
    }
    build(name, &dir)?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(BinError::Build {
            binary: name.to_owned(),
            dir,
        })
    }
}

/// `cargo build -p <package>` into the target dir and profile of `bin_dir`
/// (`target/<profile>`).
fn build(package: &str, bin_dir: &Path) -> Result<(), BinError> {
    let profile = bin_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = bin_dir.parent().unwrap_or(bin_dir);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building {package} into {}", target.display());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(crate::workspace_root())
        .args(["build", "-p", package, "--bins", "--target-dir"])
        .arg(target);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let st = cmd.status().map_err(|source| BinError::Spawn {
        package: package.to_owned(),
        source,
    })?;
    if st.success() {
        Ok(())
    } else {
        Err(BinError::Build {
            binary: package.to_owned(),
            dir: bin_dir.to_path_buf(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deps_is_skipped() {
        assert_eq!(
            bin_dir_of(Path::new("/t/target/debug/deps/end_to_end-0123")),
            PathBuf::from("/t/target/debug")
        );
        assert_eq!(
            bin_dir_of(Path::new("/t/target/release/bench")),
            PathBuf::from("/t/target/release")
        );
    }

    #[test]
    fn this_build_is_found() {
        let dir = bin_dir().unwrap();
        assert!(dir.join("deps").is_dir(), "{}", dir.display());
    }
}
