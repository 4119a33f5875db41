//! File descriptors of the agent: one budget, checked at start. The agent's own work
//! (children's pipes, probes, connections to model servers, rings, outputs, clips) must
//! never compete with what other local users can open (API connections): the soft
//! `RLIMIT_NOFILE` is raised to the hard limit, and the start is refused when that limit
//! cannot hold the API's cap plus a reserve. An error caused by the agent running out of
//! descriptors ([`out_of_resources`]) is the agent's, never a child's.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors kept for the agent's own work, whatever the config.
pub const RESERVE_BASE: u64 = 256;
/// More per camera: its kernel's pipes, the stream agent's model connections, the live
/// view's ring, clip files.
pub const RESERVE_PER_CAMERA: u64 = 16;
/// More per model: its server's pipes and probe connections.
pub const RESERVE_PER_MODEL: u64 = 8;

/// The descriptor budget in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft limit now.
    pub limit: u64,
    /// The soft limit before the agent raised it (`None`: unchanged).
    pub raised_from: Option<u64>,
    /// Descriptors the API may hold (its cap plus the refusals in progress).
    pub api: u64,
    /// Descriptors kept for the agent's own work.
    pub reserve: u64,
}

/// Why the start is refused.
#[derive(Debug, thiserror::Error)]
pub enum FdBudgetError {
    /// The limit cannot hold the API's cap and the reserve.
    #[error(
        "descriptor limit {limit} (RLIMIT_NOFILE; hard limit {hard}) is below {need}: \
         the API may hold {api} ([api] max_connections plus refusals in progress) and the \
         agent keeps {reserve} for its own work; lower api.max_connections or raise the \
         limit (ulimit -n, systemd LimitNOFILE=)"
    )]
    TooLow {
        /// The soft limit.
        limit: u64,
        /// The hard limit (`u64::MAX`: unlimited).
        hard: u64,
        /// What is needed.
        need: u64,
        /// The API's share.
        api: u64,
        /// The reserve.
        reserve: u64,
    },
}

/// Whether `e` means this process ran out of descriptors or memory (so it says nothing
/// about the other end of whatever was being opened).
pub fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The reserve for `cameras` and `models`.
pub fn reserve(cameras: usize, models: usize) -> u64 {
    RESERVE_BASE + RESERVE_PER_CAMERA * cameras as u64 + RESERVE_PER_MODEL * models as u64
}

/// Checks that `limit` holds `api` plus `reserve`.
pub fn check(limit: u64, hard: u64, api: u64, reserve: u64) -> Result<(), FdBudgetError> {
    let need = api + reserve;
    if limit < need {
        return Err(FdBudgetError::TooLow {
            limit,
            hard,
            need,
            api,
            reserve,
        });
    }
    Ok(())
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and checks the budget of an API
/// holding at most `api_connections` with `cameras` and `models` configured.
pub fn raise_and_check(
    api_connections: usize,
    cameras: usize,
    models: usize,
) -> Result<FdBudget, FdBudgetError> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let hard = maximum.unwrap_or(u64::MAX);
    let mut limit = current.unwrap_or(u64::MAX);
    let mut raised_from = None;
    if limit < hard {
        let wanted = Rlimit {
            current: maximum,
            maximum,
        };
        match setrlimit(Resource::Nofile, wanted) {
            Ok(()) => {
                raised_from = Some(limit);
                limit = hard;
            }
            Err(e) => tracing::warn!("cannot raise RLIMIT_NOFILE from {limit} to {hard}: {e}"),
        }
    }
    let api = (api_connections + crate::api::listener::MAX_REFUSALS) as u64;
    let reserve = reserve(cameras, models);
    check(limit, hard, api, reserve)?;
    Ok(FdBudget {
        limit,
        raised_from,
        api,
        reserve,
    })
}

/// Descriptors this process has open now (`/proc/self/fd`), `None` if unreadable.
pub fn open_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_names_every_number() {
        assert!(check(1024, 1024, 288, 400).is_ok());
        let e = check(512, 4096, 288, 400).unwrap_err().to_string();
        for part in ["512", "4096", "688", "288", "400", "api.max_connections"] {
            assert!(e.contains(part), "{part} missing in {e}");
        }
        assert_eq!(reserve(2, 1), 256 + 32 + 8);
    }

    #[test]
    fn out_of_descriptors_is_told_from_the_peer_s_errors() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::ENOBUFS] {
            assert!(out_of_resources(&std::io::Error::from_raw_os_error(errno)));
        }
        for errno in [
            libc::ECONNREFUSED,
            libc::ENOENT,
            libc::EACCES,
            libc::ECONNABORTED,
        ] {
            assert!(!out_of_resources(&std::io::Error::from_raw_os_error(errno)));
        }
    }

    #[test]
    fn open_descriptors_are_counted() {
        let before = open_count().unwrap();
        let f = std::fs::File::open("/proc/self/status").unwrap();
        assert!(open_count().unwrap() > before.saturating_sub(1));
        drop(f);
    }
}
