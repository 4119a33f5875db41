//! Exit statuses of every framebus binary (`frame-kernel`, `model-server`, `core-agent`):
//! one table, a contract with the supervisor in `core-agent`, which restarts a child that
//! failed for a reason that may pass and marks it `failed` (not retried by the restart
//! backoff) when the child says retrying cannot help. `docs/architecture.md` ("Failure
//! handling") has the same table.

/// Stopped cleanly (SIGTERM/SIGINT handled, or the work ended).
pub const EXIT_OK: i32 = 0;
/// A fatal runtime error that a restart may cure.
pub const EXIT_FATAL: i32 = 1;
/// The command line or configuration is invalid; every problem was printed and nothing
/// was touched. Permanent for the same command line.
pub const EXIT_CONFIG: i32 = 2;
/// (`frame-kernel`) The source can never produce video. Permanent.
pub const EXIT_SOURCE_UNUSABLE: i32 = 3;
/// A second SIGINT/SIGTERM while stopping: exit at once (128 + SIGINT, the shell's
/// convention), skipping the clean stop.
pub const EXIT_INTERRUPTED: i32 = 130;

/// Stopped cleanly: SIGTERM/SIGINT, end of a non-looping file, or `--max-frames`.
pub const KERNEL_OK: i32 = EXIT_OK;
/// A fatal runtime error that a restart may cure (the ring could not be created, a
/// thread could not be started).
pub const KERNEL_FATAL: i32 = EXIT_FATAL;
/// The command line is invalid (including a `--source` file that is missing or not
/// readable, and an unreadable `--source-fd`); nothing was touched. Permanent for the
/// same command line.
pub const KERNEL_CONFIG: i32 = EXIT_CONFIG;
/// The source can never produce video: no video stream, an unsupported codec, a file
/// that is not a video (invalid data, no demuxer, no decodable frame). Permanent; the
/// kernel's last error line says why. A camera that is down or refuses connections is
/// never reported this way: the kernel keeps retrying it.
pub const KERNEL_SOURCE_UNUSABLE: i32 = EXIT_SOURCE_UNUSABLE;

/// Exit statuses after which restarting the kernel with the same command line cannot
/// help.
pub const KERNEL_PERMANENT: [i32; 2] = [KERNEL_CONFIG, KERNEL_SOURCE_UNUSABLE];
