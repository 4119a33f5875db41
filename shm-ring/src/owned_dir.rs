//! Directories the service owns: where rings and sockets live.
//!
//! `/dev/shm` and `/tmp` are world-writable, so any local user can create a file or a
//! directory under a name the service is about to use (squatting) or swap one in
//! (spoofing). Every file the system trusts therefore lives in a directory that
//!
//! - is a real directory (checked with `lstat`: a symlink is refused, never followed),
//! - is owned by this process's effective uid or by root (the trusted owners),
//! - grants nothing to others and no write to the group (`mode & 0o027 == 0`), and
//! - sits in a parent that others cannot rename it out of: the parent is not writable
//!   by group or others, or it has the sticky bit (as `/dev/shm` and `/tmp` have).
//!
//! [`ensure_owned_dir`] creates such a directory (mode `0750` by default, so the
//! service group may read rings) or accepts an existing one that passes the checks;
//! [`check_owned_dir`] only checks, for processes that must not create it.
//! An existing directory that fails a check is refused with [`OwnedDirError`], never
//! repaired: it may belong to an attacker.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of a directory created by [`ensure_owned_dir`]: owner all, group read/search.
pub const OWNED_DIR_MODE: u32 = 0o750;

/// Permission bits an owned directory must not have: group write and anything for
/// others.
pub const FORBIDDEN_DIR_BITS: u32 = 0o027;

/// Why a directory cannot be trusted or created.
#[derive(Debug, thiserror::Error)]
pub enum OwnedDirError {
    /// The path is a symbolic link; it is not followed.
    #[error("{path}: is a symbolic link; refusing to follow it", path = path.display())]
    Symlink {
        /// The directory path.
        path: PathBuf,
    },
    /// Something other than a directory exists at the path.
    #[error("{path}: exists and is not a directory", path = path.display())]
    NotADirectory {
        /// The directory path.
        path: PathBuf,
    },
    /// The directory is owned by a uid that is neither this process's nor root's: it may
    /// have been created by another local user.
    #[error(
        "{path}: owned by uid {owner}, expected uid {expected} or root; it may have been \
         created by another user: remove it or choose another directory",
        path = path.display()
    )]
    WrongOwner {
        /// The directory path.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// This process's effective uid.
        expected: u32,
    },
    /// The directory's mode grants group write or any access to others.
    #[error(
        "{path}: mode {mode:#o} is too open (group write or access for others); \
         chmod it to 0750 or 0700",
        path = path.display()
    )]
    TooOpen {
        /// The directory path.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The parent lets others replace the directory: writable by group or others without
    /// the sticky bit.
    #[error(
        "{parent}: mode {mode:#o} lets other users rename or replace {path} (writable \
         without the sticky bit)",
        parent = parent.display(),
        path = path.display()
    )]
    UnsafeParent {
        /// The directory path.
        path: PathBuf,
        /// Its parent.
        parent: PathBuf,
        /// The parent's permission bits.
        mode: u32,
    },
    /// A system call failed.
    #[error("{path}: {op} failed: {source}", path = path.display())]
    Io {
        /// The path the call was about.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Where model-server sockets live unless configured otherwise: `/run/framebus` for root,
/// else `$XDG_RUNTIME_DIR/framebus` (a per-user 0700 directory) when that is set, else
/// `/tmp/framebus-<uid>`. None of these can be pre-created by another user without
/// [`ensure_owned_dir`] refusing it.
pub fn default_socket_dir() -> PathBuf {
    let uid = effective_uid();
    if uid == 0 {
        return PathBuf::from("/run/framebus");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| Path::new(v).is_absolute()) {
        Some(run) => Path::new(&run).join("framebus"),
        None => PathBuf::from(format!("/tmp/framebus-{uid}")),
    }
}

/// This process's effective uid.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// True when `uid` is a trusted owner of service files: this process's euid or root.
pub fn is_trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == effective_uid()
}

/// Creates `path` with [`OWNED_DIR_MODE`] when it is missing (its parents with the
/// default mode), or accepts it when it exists and passes [`check_owned_dir`].
pub fn ensure_owned_dir(path: &Path) -> Result<(), OwnedDirError> {
    ensure_owned_dir_with_mode(path, OWNED_DIR_MODE)
}

/// [`ensure_owned_dir`] with another creation mode (`mode & FORBIDDEN_DIR_BITS` must be
/// zero, e.g. `0o700`).
pub fn ensure_owned_dir_with_mode(path: &Path, mode: u32) -> Result<(), OwnedDirError> {
    assert_eq!(mode & FORBIDDEN_DIR_BITS, 0, "owned dir mode {mode:#o}");
    let io_err = |op, source| OwnedDirError::Io {
        path: path.to_owned(),
        op,
        source,
    };
    match fs::symlink_metadata(path) {
        Ok(_) => return check_owned_dir(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("lstat", e)),
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| io_err("create parent directories", e))?;
    }
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {
            // mkdir's mode is filtered by the umask; set it exactly.
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| io_err("chmod", e))?;
        }
        // Lost a race with another creator: whoever it was, the checks decide.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("mkdir", e)),
    }
    check_owned_dir(path)
}

/// Checks that `path` is a directory this process can trust (see the module docs),
/// without creating or changing anything.
pub fn check_owned_dir(path: &Path) -> Result<(), OwnedDirError> {
    check_owned_dir_trusting(path, |uid, _gid| is_trusted_owner(uid))
}

/// [`check_owned_dir`] where `trusted(uid, gid)` decides whether the directory's owner
/// and group are acceptable (e.g. a ring directory of an outside writer the reader
/// trusts, see `RingTrust::trusts_file`); every other check is the same. This
/// process's effective uid and root should stay trusted.
pub fn check_owned_dir_trusting(
    path: &Path,
    trusted: impl Fn(u32, u32) -> bool,
) -> Result<(), OwnedDirError> {
    let path_buf = path.to_owned();
    let meta = fs::symlink_metadata(path).map_err(|source| OwnedDirError::Io {
        path: path_buf.clone(),
        op: "lstat",
        source,
    })?;
    if meta.file_type().is_symlink() {
        return Err(OwnedDirError::Symlink { path: path_buf });
    }
    if !meta.is_dir() {
        return Err(OwnedDirError::NotADirectory { path: path_buf });
    }
    if !trusted(meta.uid(), meta.gid()) {
        return Err(OwnedDirError::WrongOwner {
            path: path_buf,
            owner: meta.uid(),
            expected: effective_uid(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & FORBIDDEN_DIR_BITS != 0 {
        return Err(OwnedDirError::TooOpen {
            path: path_buf,
            mode,
        });
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let pmeta = fs::metadata(&parent).map_err(|source| OwnedDirError::Io {
        path: parent.clone(),
        op: "stat parent",
        source,
    })?;
    let pmode = pmeta.mode() & 0o7777;
    let others_write = pmode & 0o022 != 0;
    let sticky = pmode & 0o1000 != 0;
    if others_write && !sticky {
        return Err(OwnedDirError::UnsafeParent {
            path: path_buf,
            parent,
            mode: pmode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn creates_missing_dir_with_exact_mode() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b/framebus");
        ensure_owned_dir(&d).unwrap();
        assert_eq!(mode_of(&d), OWNED_DIR_MODE);
        // Idempotent.
        ensure_owned_dir(&d).unwrap();
        ensure_owned_dir_with_mode(&t.path().join("private"), 0o700).unwrap();
        assert_eq!(mode_of(&t.path().join("private")), 0o700);
    }

    #[test]
    fn refuses_symlink_file_and_open_modes() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::set_permissions(&real, fs::Permissions::from_mode(0o750)).unwrap();
        let link = t.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            ensure_owned_dir(&link),
            Err(OwnedDirError::Symlink { .. })
        ));
        let file = t.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(matches!(
            check_owned_dir(&file),
            Err(OwnedDirError::NotADirectory { .. })
        ));
        for bad in [0o770, 0o755, 0o751, 0o777, 0o1777] {
            fs::set_permissions(&real, fs::Permissions::from_mode(bad)).unwrap();
            let e = ensure_owned_dir(&real).unwrap_err();
            assert!(matches!(e, OwnedDirError::TooOpen { .. }), "{bad:#o}: {e}");
        }
    }

    #[test]
    fn refuses_a_replaceable_parent_but_accepts_a_sticky_one() {
        let t = tempfile::tempdir().unwrap();
        let open = t.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_owned_dir(&open.join("fb")).unwrap_err();
        assert!(matches!(e, OwnedDirError::UnsafeParent { .. }), "{e}");
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        ensure_owned_dir(&open.join("fb")).unwrap();
    }

    #[test]
    fn refuses_a_dir_of_another_owner() {
        if effective_uid() != 0 {
            eprintln!("skipped: chown to another uid needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("squatted");
        fs::create_dir(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
        let e = ensure_owned_dir(&d).unwrap_err();
        assert!(
            matches!(e, OwnedDirError::WrongOwner { owner: 65534, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("another user"), "{e}");
        // Trusted explicitly (an outside writer's own directory), by uid or by group.
        check_owned_dir_trusting(&d, |uid, _| uid == 65534).unwrap();
        check_owned_dir_trusting(&d, |_, gid| gid == 65534).unwrap();
        let e = check_owned_dir_trusting(&d, |uid, _| uid == 1).unwrap_err();
        assert!(matches!(e, OwnedDirError::WrongOwner { .. }), "{e}");
        // The trusted owner does not loosen the mode rule.
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        let e = check_owned_dir_trusting(&d, |uid, _| uid == 65534).unwrap_err();
        assert!(matches!(e, OwnedDirError::TooOpen { .. }), "{e}");
    }
}
