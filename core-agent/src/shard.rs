//! Camera sharding for scale-out (issue 15): N agents (a Kubernetes StatefulSet of N pods,
//! or N bare-metal boxes) read the same config and each keeps only its share of the
//! cameras, chosen by **rendezvous (highest-random-weight) hashing** of the camera id over
//! the replica count.
//!
//! Why rendezvous hashing: it needs no ring of virtual nodes and no shared state, only
//! `(camera id, replica index, replica count)`, so every replica decides alone and all
//! agree. Going from N to N+1 replicas moves exactly the cameras whose new highest
//! weight is the new replica (about `1/(N+1)` of them) and no others; removing the last
//! replica moves only its own cameras. Balance over many ids is binomial: with 1000 ids
//! every replica holds within ±30 % of the mean for 2..=16 replicas (unit test below).
//!
//! The function is fixed (FNV-1a 64 of the id's UTF-8 bytes, then the splitmix64
//! finaliser mixed with the replica index; ties to the lower index), so an operator can
//! recompute an assignment anywhere; `docs/deploy.md` prints it. Changing it reshuffles
//! every camera and is a breaking change.
//!
//! Where the shard comes from ([`Shard::from_env`]): `FRAMEBUS_SHARD_COUNT` (replicas,
//! `1..=`[`MAX_SHARDS`]) and `FRAMEBUS_SHARD_INDEX` (this replica, `0..count`); without
//! `FRAMEBUS_SHARD_INDEX` the index is the ordinal at the end of `HOSTNAME`
//! (`framebus-3` → 3), which is how a StatefulSet names its pods. Without
//! `FRAMEBUS_SHARD_COUNT` there is no sharding: the agent runs every camera.

use crate::config::Config;

/// Environment variable: number of replicas sharing the cameras.
pub const ENV_SHARD_COUNT: &str = "FRAMEBUS_SHARD_COUNT";
/// Environment variable: this replica's index, `0..count`.
pub const ENV_SHARD_INDEX: &str = "FRAMEBUS_SHARD_INDEX";
/// Environment variable read for a StatefulSet ordinal when `FRAMEBUS_SHARD_INDEX` is unset.
pub const ENV_HOSTNAME: &str = "HOSTNAME";
/// Most replicas a deployment may declare (a sanity bound: a typo like `10000` fails loudly).
pub const MAX_SHARDS: u32 = 4096;

/// This replica's place among `count` replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// Why the shard settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// `FRAMEBUS_SHARD_COUNT` is not an integer in `1..=MAX_SHARDS`.
    #[error("{ENV_SHARD_COUNT}={value:?}: must be an integer from 1 to {MAX_SHARDS}")]
    BadCount {
        /// The value as given.
        value: String,
    },
    /// `FRAMEBUS_SHARD_INDEX` is not a non-negative integer.
    #[error("{ENV_SHARD_INDEX}={value:?}: must be a non-negative integer")]
    BadIndex {
        /// The value as given.
        value: String,
    },
    /// The index is not below the count.
    #[error("shard index {index} is not below the shard count {count} ({ENV_SHARD_INDEX} or the {ENV_HOSTNAME} ordinal)")]
    IndexOutOfRange {
        /// This replica's index.
        index: u32,
        /// Replica count.
        count: u32,
    },
    /// `FRAMEBUS_SHARD_COUNT` is set but there is no index: no `FRAMEBUS_SHARD_INDEX` and
    /// `HOSTNAME` does not end in `-<ordinal>`.
    #[error("{ENV_SHARD_COUNT} is set but {ENV_SHARD_INDEX} is not, and {ENV_HOSTNAME}={hostname:?} has no -<ordinal> suffix")]
    NoIndex {
        /// `HOSTNAME` as found (empty when unset).
        hostname: String,
    },
    /// `FRAMEBUS_SHARD_INDEX` is set without `FRAMEBUS_SHARD_COUNT`.
    #[error("{ENV_SHARD_INDEX} is set but {ENV_SHARD_COUNT} is not")]
    IndexWithoutCount,
}

impl ShardError {
    /// The environment variable this error is about (for [`crate::config::LoadError::Env`]).
    pub fn variable(&self) -> &'static str {
        match self {
            ShardError::BadCount { .. } => ENV_SHARD_COUNT,
            ShardError::NoIndex { .. } => ENV_HOSTNAME,
            ShardError::BadIndex { .. }
            | ShardError::IndexOutOfRange { .. }
            | ShardError::IndexWithoutCount => ENV_SHARD_INDEX,
        }
    }
}

impl Shard {
    /// Replica `index` of `count`.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        if count == 0 || count > MAX_SHARDS {
            return Err(ShardError::BadCount {
                value: count.to_string(),
            });
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange { index, count });
        }
        Ok(Shard { index, count })
    }

    /// Reads the shard from the environment through `get` (injected for tests):
    /// `Ok(None)` when `FRAMEBUS_SHARD_COUNT` is unset or empty (no sharding).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>, ShardError> {
        let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let Some(count_text) = set(ENV_SHARD_COUNT) else {
            return match set(ENV_SHARD_INDEX) {
                Some(_) => Err(ShardError::IndexWithoutCount),
                None => Ok(None),
            };
        };
        let count = count_text
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|c| (1..=MAX_SHARDS).contains(c))
            .ok_or(ShardError::BadCount { value: count_text })?;
        let index = match set(ENV_SHARD_INDEX) {
            Some(v) => v
                .trim()
                .parse::<u32>()
                .map_err(|_| ShardError::BadIndex { value: v })?,
            None => {
                let hostname = get(ENV_HOSTNAME).unwrap_or_default();
                hostname_ordinal(&hostname).ok_or(ShardError::NoIndex { hostname })?
            }
        };
        Shard::new(index, count).map(Some)
    }

    /// This replica's index.
    pub fn index(self) -> u32 {
        self.index
    }

    /// Replica count.
    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether this replica runs `camera_id`.
    pub fn owns(self, camera_id: &str) -> bool {
        replica_for(camera_id, self.count) == self.index
    }

    /// Keeps only this replica's cameras in `config`, and the subscriptions of those
    /// cameras (a subscription of a dropped camera would otherwise fail validation).
    /// Models stay: a replica starts every model server, idle ones cost their memory only.
    /// Returns how many cameras were dropped.
    pub fn retain(self, config: &mut Config) -> usize {
        let before = config.cameras.len();
        config.cameras.retain(|c| self.owns(&c.id));
        let kept: std::collections::HashSet<&str> =
            config.cameras.iter().map(|c| c.id.as_str()).collect();
        config
            .subscriptions
            .retain(|s| kept.contains(s.camera.as_str()));
        before - config.cameras.len()
    }
}

/// The ordinal at the end of a StatefulSet pod's hostname (`framebus-12` → 12).
pub fn hostname_ordinal(hostname: &str) -> Option<u32> {
    let (_, digits) = hostname.trim().rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The replica (`0..count`) that runs `camera_id`: the one with the highest
/// [`weight`]. `count == 0` gives 0.
pub fn replica_for(camera_id: &str, count: u32) -> u32 {
    let key = fnv1a64(camera_id.as_bytes());
    let mut best = (0u32, 0u64);
    for r in 0..count {
        let w = weight_of(key, r);
        if r == 0 || w > best.1 {
            best = (r, w);
        }
    }
    best.0
}

/// Rendezvous weight of `camera_id` on replica `replica`.
pub fn weight(camera_id: &str, replica: u32) -> u64 {
    weight_of(fnv1a64(camera_id.as_bytes()), replica)
}

fn weight_of(key: u64, replica: u32) -> u64 {
    splitmix64(key ^ splitmix64(u64::from(replica).wrapping_add(0x9e37_79b9_7f4a_7c15)))
}

/// FNV-1a, 64 bit.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The splitmix64 finaliser: a bijective mix so nearby inputs give unrelated outputs.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("cam-{i:04}")).collect()
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    /// Pinned values: the function must not change silently (it would move every camera).
    #[test]
    fn assignment_is_stable() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let got: Vec<u32> = ["cam-0000", "cam-0001", "cam-0002", "entrance"]
            .iter()
            .map(|id| replica_for(id, 7))
            .collect();
        assert_eq!(got, PINNED_7);
    }
    const PINNED_7: [u32; 4] = [2, 1, 2, 5];

    /// Balance: over 1000 ids every replica holds within ±30 % of the mean, N = 2..=16.
    #[test]
    fn balance_over_1000_ids() {
        let ids = ids(1000);
        for n in 2..=16u32 {
            let mut counts = vec![0usize; n as usize];
            for id in &ids {
                counts[replica_for(id, n) as usize] += 1;
            }
            let mean = 1000.0 / f64::from(n);
            for (r, &c) in counts.iter().enumerate() {
                let ratio = c as f64 / mean;
                assert!(
                    (0.7..=1.3).contains(&ratio),
                    "n={n} replica {r} holds {c} (mean {mean:.1}): {counts:?}"
                );
            }
        }
    }

    /// N → N+1 moves only cameras that go to the new replica, about 1/(N+1) of them.
    #[test]
    fn growing_moves_about_one_over_n_plus_one() {
        let ids = ids(1000);
        for n in 1..=16u32 {
            let moved: Vec<&String> = ids
                .iter()
                .filter(|id| replica_for(id, n) != replica_for(id, n + 1))
                .collect();
            for id in &moved {
                assert_eq!(replica_for(id, n + 1), n, "{id} moved to an old replica");
            }
            let frac = moved.len() as f64 / 1000.0;
            let want = 1.0 / f64::from(n + 1);
            assert!(
                (0.7 * want..=1.3 * want).contains(&frac),
                "n={n}: moved {frac:.3}, expected about {want:.3}"
            );
        }
    }

    proptest! {
        /// For any id and N: the replica is in range, shrinking N+1 → N moves only the
        /// last replica's cameras, and exactly one shard of N owns the id.
        #[test]
        fn prop_minimal_movement(id in "[A-Za-z0-9][A-Za-z0-9_-]{0,63}", n in 1u32..64) {
            let a = replica_for(&id, n);
            let b = replica_for(&id, n + 1);
            prop_assert!(a < n && b <= n);
            prop_assert!(a == b || b == n);
            let owners = (0..n).filter(|&i| Shard::new(i, n).unwrap().owns(&id)).count();
            prop_assert_eq!(owners, 1);
        }

        /// Any environment gives a valid shard, none, or a typed error: never a panic.
        #[test]
        fn prop_env_is_total(count in "\\PC{0,8}", index in "\\PC{0,8}", host in "\\PC{0,16}") {
            let get = env(&[(ENV_SHARD_COUNT, &count), (ENV_SHARD_INDEX, &index), (ENV_HOSTNAME, &host)]);
            if let Ok(Some(shard)) = Shard::from_env(get) {
                prop_assert!(shard.index() < shard.count() && shard.count() <= MAX_SHARDS);
            }
        }
    }

    #[test]
    fn env_parsing() {
        assert_eq!(Shard::from_env(env(&[])), Ok(None));
        assert_eq!(
            Shard::from_env(env(&[(ENV_SHARD_COUNT, "4"), (ENV_SHARD_INDEX, "2")])),
            Ok(Some(Shard { index: 2, count: 4 }))
        );
        assert_eq!(
            Shard::from_env(env(&[(ENV_SHARD_COUNT, "4"), (ENV_HOSTNAME, "framebus-3")])),
            Ok(Some(Shard { index: 3, count: 4 }))
        );
        // The explicit index wins over the hostname.
        assert_eq!(
            Shard::from_env(env(&[
                (ENV_SHARD_COUNT, "4"),
                (ENV_SHARD_INDEX, "0"),
                (ENV_HOSTNAME, "framebus-3")
            ])),
            Ok(Some(Shard { index: 0, count: 4 }))
        );
        for bad in ["0", "-1", "x", "4097", "1.5"] {
            assert_eq!(
                Shard::from_env(env(&[(ENV_SHARD_COUNT, bad), (ENV_SHARD_INDEX, "0")])),
                Err(ShardError::BadCount {
                    value: bad.to_owned()
                })
            );
        }
        assert_eq!(
            Shard::from_env(env(&[(ENV_SHARD_COUNT, "4"), (ENV_SHARD_INDEX, "a")])),
            Err(ShardError::BadIndex {
                value: "a".to_owned()
            })
        );
        assert_eq!(
            Shard::from_env(env(&[(ENV_SHARD_COUNT, "4"), (ENV_SHARD_INDEX, "4")])),
            Err(ShardError::IndexOutOfRange { index: 4, count: 4 })
        );
        assert_eq!(
            Shard::from_env(env(&[(ENV_SHARD_COUNT, "4"), (ENV_HOSTNAME, "box")])),
            Err(ShardError::NoIndex {
                hostname: "box".to_owned()
            })
        );
        assert_eq!(
            Shard::from_env(env(&[(ENV_SHARD_INDEX, "1")])),
            Err(ShardError::IndexWithoutCount)
        );
    }

    #[test]
    fn hostname_ordinals() {
        assert_eq!(hostname_ordinal("framebus-0"), Some(0));
        assert_eq!(hostname_ordinal("fb-node-12"), Some(12));
        assert_eq!(hostname_ordinal("framebus"), None);
        assert_eq!(hostname_ordinal("framebus-"), None);
        assert_eq!(hostname_ordinal("framebus-1a"), None);
        assert_eq!(hostname_ordinal("framebus-+1"), None);
    }

    #[test]
    fn retain_keeps_own_cameras_and_their_subscriptions() {
        let mut text =
            String::from("[[models]]\nid = \"m\"\npath = \"/m.onnx\"\nfamily = \"yolov8\"\n");
        for i in 0..20 {
            text.push_str(&format!(
                "[[cameras]]\nid = \"cam-{i}\"\nsource = \"rtsp://127.0.0.1/{i}\"\n\
                 [[subscriptions]]\ncamera = \"cam-{i}\"\nmodel = \"m\"\nfps = 1.0\n"
            ));
        }
        let full = Config::from_toml(&text, "t.toml".as_ref(), "/".as_ref()).unwrap();
        let mut seen = 0;
        for i in 0..3 {
            let mut c = full.clone();
            let shard = Shard::new(i, 3).unwrap();
            let dropped = shard.retain(&mut c);
            assert_eq!(dropped + c.cameras.len(), 20);
            assert!(c.cameras.iter().all(|cam| shard.owns(&cam.id)));
            assert_eq!(c.subscriptions.len(), c.cameras.len());
            assert!(c
                .subscriptions
                .iter()
                .all(|s| c.cameras.iter().any(|cam| cam.id == s.camera)));
            assert_eq!(c.models.len(), 1);
            seen += c.cameras.len();
        }
        assert_eq!(seen, 20, "every camera on exactly one replica");
    }
}
