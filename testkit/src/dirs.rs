//! Temporary directories with the modes the services demand.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// A ring directory for one test, mode 0700, under `/dev/shm` when present (like
/// production). The kernel and servers accept only a ring directory they own that others
/// cannot enter; tempfile's default mode follows the umask.
pub fn ring_dir() -> tempfile::TempDir {
    let base = Path::new("/dev/shm");
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("framebus-test-");
        b
    };
    let dir = if base.is_dir() {
        builder.tempdir_in(base)
    } else {
        builder.tempdir()
    }
    .expect("create a ring directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod 0700 the ring directory");
    dir
}

/// A private temp dir (mode 0700) named `<prefix>...` for a test's sockets, configs and logs.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod 0700 the temp dir");
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_are_private() {
        for d in [ring_dir(), temp_dir("tk-")] {
            let mode = std::fs::metadata(d.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", d.path().display());
        }
    }
}
