//! Issue 25, break 1: any local user could take the whole system down through the API
//! port. About 1000 idle TCP connections (one `GET /health` each, held open) used up the
//! agent's 1024 descriptors; the supervisor then blamed its own `Too many open files` on
//! the children, killed the healthy model server and both kernels, could not restart
//! them and gave up within 7 s.
//!
//! Here the agent runs with the real `yolox_nano` on the real footage, its descriptor
//! limit forced to 1024 (soft and hard, as on the box of the report, set from outside
//! with `prlimit(2)` once it runs), and the API is flooded:
//! - `idle_flood_is_capped_and_idle_connections_are_closed`: 1100 idle connections;
//!   the ones over `[api] max_connections` get a 503 at once, the served ones are closed
//!   by the agent after `[api] header_timeout_s`, the children keep their pids and the
//!   results keep coming;
//! - `a_minute_of_2000_idle_connections_leaves_the_children_untouched` (the soak): an
//!   attacker that keeps 2000 connections open for a minute, opening a new one for
//!   each the agent closes. Results are delivered all along, no child is restarted, the
//!   agent's descriptors stay under its cap plus its own work, and its anonymous memory
//!   stays flat.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::soak::Series;
use common::{assets, bin_dir, children_of, of, serial, wait_for, Agent, Dirs};

/// The descriptor limit of the report's box.
const AGENT_NOFILE: u64 = 1024;
/// `[api] max_connections` in these tests (the default).
const MAX_CONNECTIONS: usize = 256;

/// Raises this test process's own soft limit to its hard one (the flood needs 2000+).
fn raise_own_nofile(need: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    assert!(
        hard >= need,
        "this test needs {need} descriptors; the hard limit is {hard}"
    );
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        },
    )
    .unwrap();
}

/// Forces `pid`'s descriptor limit to `n` (soft and hard).
fn force_nofile(pid: u32, n: u64) {
    use rustix::process::{prlimit, Pid, Resource, Rlimit};
    prlimit(
        Pid::from_raw(pid as i32),
        Resource::Nofile,
        Rlimit {
            current: Some(n),
            maximum: Some(n),
        },
    )
    .unwrap_or_else(|e| panic!("prlimit({pid}): {e}"));
}

fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One connection with a keep-alive `GET /health` sent and nothing read.
fn idle_connection(api: SocketAddr) -> Option<TcpStream> {
    let mut s = TcpStream::connect_timeout(&api, Duration::from_secs(2)).ok()?;
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    Some(s)
}

/// Whether the agent closed `s` (end of stream or a reset); reads without blocking.
fn closed_by_agent(s: &mut TcpStream, buf: &mut [u8]) -> bool {
    s.set_nonblocking(true).unwrap();
    loop {
        match s.read(buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

/// The system under test: a looping file camera at 25 fps, `yolox_nano` at 5 fps.
fn start_system(
    max_connections: usize,
    header_timeout_s: u64,
) -> Option<(Agent, Vec<(u32, String)>)> {
    let assets = assets()?;
    bin_dir();
    let dirs = Dirs::new();
    let config = format!(
        "{}[api]\nmax_connections = {max_connections}\nheader_timeout_s = {header_timeout_s}\n\n\
         [[cameras]]\nid = \"cam\"\nsource = \"{}\"\nfps = 25\nring_slots = 16\nloop = true\n\n\
         [[models]]\nid = \"yolox\"\npath = \"{}\"\n\n\
         [[subscriptions]]\ncamera = \"cam\"\nmodel = \"yolox\"\nfps = 5\n",
        dirs.agent_table(),
        assets.join("video/people_walk_540p.mp4").display(),
        assets.join("models/yolox_nano.onnx").display()
    );
    let agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));
    wait_for(Duration::from_secs(60), "a first result", || {
        (!of(&agent.results(), "cam", "yolox").is_empty()).then_some(())
    });
    let mut children = children_of(agent.pid());
    children.sort();
    assert_eq!(children.len(), 2, "{children:?}");
    force_nofile(agent.pid(), AGENT_NOFILE);
    Some((agent, children))
}

fn results(agent: &Agent) -> usize {
    of(&agent.results(), "cam", "yolox").len()
}

#[test]
fn idle_flood_is_capped_and_idle_connections_are_closed() {
    let _serial = serial();
    raise_own_nofile(4096);
    let Some((agent, children)) = start_system(MAX_CONNECTIONS, 3) else {
        return;
    };
    let before = results(&agent);
    let flood_start = Instant::now();
    let mut flood: Vec<TcpStream> = (0..1100)
        .filter_map(|_| idle_connection(agent.api))
        .collect();
    assert_eq!(
        flood.len(),
        1100,
        "every connection was accepted by the kernel"
    );
    let agent_fds = fds_of(agent.pid());
    println!("MEASURED api flood: 1100 idle connections, agent holds {agent_fds} descriptors");
    // The ones over the cap were answered 503 and closed at once (well before the
    // header deadline): at least 1100 - 256.
    let mut buf = [0u8; 4096];
    let refused = wait_for(Duration::from_secs(10), "the refusals", || {
        let mut n = 0;
        for s in flood.iter_mut() {
            n += usize::from(closed_by_agent(s, &mut buf));
        }
        (n >= 1100 - MAX_CONNECTIONS).then_some(n)
    });
    println!(
        "MEASURED api flood: {refused} refused within {:?}",
        flood_start.elapsed()
    );
    assert!(
        agent_fds < MAX_CONNECTIONS + 32 + 200,
        "the agent holds {agent_fds} descriptors under a flood (cap {MAX_CONNECTIONS})"
    );
    // The served ones are closed by the agent after the header deadline (3 s).
    let all_closed = wait_for(Duration::from_secs(15), "idle connections closed", || {
        let mut open = 0;
        for s in flood.iter_mut() {
            open += usize::from(!closed_by_agent(s, &mut buf));
        }
        (open == 0).then(|| flood_start.elapsed())
    });
    println!("MEASURED api flood: every idle connection closed by the agent after {all_closed:?}");
    drop(flood);
    // The API answers again, counted what it refused, and nothing was restarted.
    let (code, _) = agent.http("GET", "/health", None);
    assert_eq!(code, 200);
    let (_, metrics) = agent.http("GET", "/metrics", None);
    let refused_metric: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("framebus_api_connections_refused_total "))
        .and_then(|v| v.parse().ok())
        .expect("framebus_api_connections_refused_total");
    // (On a slow box some early connections time out while the flood is still being
    // opened, and their slots serve later ones: fewer than 1100 - 256 may be refused.)
    println!("MEASURED api flood: framebus_api_connections_refused_total {refused_metric}");
    assert!(refused_metric > 0, "nothing refused over the cap");
    let mut now = children_of(agent.pid());
    now.sort();
    assert_eq!(now, children, "a child was restarted");
    assert_eq!(agent.model("yolox")["server"]["restarts"], 0);
    assert_eq!(agent.camera("cam")["kernel"]["restarts"], 0);
    // Results kept coming through the flood.
    wait_for(Duration::from_secs(10), "results after the flood", || {
        (results(&agent) > before + 10).then_some(())
    });
}

#[test]
fn a_minute_of_2000_idle_connections_leaves_the_children_untouched() {
    const FLOOD: usize = 2000;
    const SOAK: Duration = Duration::from_secs(60);
    const WARMUP: Duration = Duration::from_secs(10);
    let _serial = serial();
    raise_own_nofile(FLOOD as u64 + 1024);
    let Some((agent, children)) = start_system(MAX_CONNECTIONS, 10) else {
        return;
    };
    let mut series = Series::new("core-agent", agent.pid());
    let mut flood: Vec<TcpStream> = Vec::with_capacity(FLOOD);
    let mut buf = [0u8; 4096];
    let mut opened = 0u64;
    let mut max_fds = 0usize;
    let mut checkpoints: Vec<(Duration, usize)> = Vec::new();
    let start = Instant::now();
    let mut next_sample = Duration::ZERO;
    while start.elapsed() < SOAK {
        // Keep FLOOD connections open: each one the agent closed is replaced at once.
        flood.retain_mut(|s| !closed_by_agent(s, &mut buf));
        while flood.len() < FLOOD {
            match idle_connection(agent.api) {
                Some(s) => {
                    flood.push(s);
                    opened += 1;
                }
                None => break,
            }
        }
        let at = start.elapsed();
        if at >= next_sample {
            next_sample += Duration::from_secs(1);
            assert!(series.record(at), "core-agent exited during the flood");
            max_fds = max_fds.max(series.samples.last().unwrap().fds);
            if series.samples.len().is_multiple_of(5) {
                checkpoints.push((at, results(&agent)));
                let mut now = children_of(agent.pid());
                now.sort();
                assert_eq!(now, children, "a child was restarted at {at:?}");
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(flood);
    println!(
        "MEASURED api soak: {FLOOD} connections held for {SOAK:?}, {opened} opened in all, \
         agent descriptors at most {max_fds} (limit {AGENT_NOFILE})"
    );
    // Results were delivered all along: every 5 s checkpoint has more than the last.
    for w in checkpoints.windows(2) {
        let ((t0, n0), (t1, n1)) = (w[0], w[1]);
        assert!(
            n1 > n0,
            "no result between {t0:?} and {t1:?} of the flood ({n0} -> {n1})"
        );
    }
    let (t_first, n_first) = checkpoints[0];
    let (t_last, n_last) = *checkpoints.last().unwrap();
    let rate = (n_last - n_first) as f64 / (t_last - t_first).as_secs_f64();
    println!("MEASURED api soak: {rate:.2} results/s under the flood (subscription 5 fps)");
    assert!(rate > 2.0, "{rate:.2} results/s under the flood");
    assert!(
        max_fds < MAX_CONNECTIONS + 32 + 200,
        "the agent held {max_fds} descriptors (cap {MAX_CONNECTIONS})"
    );
    // Nothing was restarted, no check of a child failed for the agent's own reasons.
    let mut now = children_of(agent.pid());
    now.sort();
    assert_eq!(now, children);
    let model = agent.model("yolox");
    assert_eq!(model["server"]["restarts"], 0, "{model}");
    assert_eq!(agent.camera("cam")["kernel"]["restarts"], 0);
    // Memory of the agent flat after warm-up (its connection buffers are bounded by the
    // cap); descriptors come and go with the flood, bounded above.
    let d = series.drift(WARMUP);
    println!(
        "MEASURED api soak: agent RssAnon {} -> {} KiB ({:+} KiB over {:.0} s), fds {} -> {} (max {})",
        d.anon_start_kib,
        d.anon_end_kib,
        d.anon_growth_kib(),
        d.span.as_secs_f64(),
        d.fds_start,
        d.fds_end,
        d.fds_max
    );
    assert!(
        d.anon_growth_kib() < 8 * 1024,
        "the agent's anonymous memory grew {} KiB under the flood: {:?}",
        d.anon_growth_kib(),
        series.samples
    );
}

/// The supervisor's half of the fix, on its own: with the API's cap set far above the
/// descriptor limit (16384 against 1024), a flood does exhaust the agent's descriptors.
/// Its health checks then fail with `Too many open files` in its own process: they are
/// counted as inconclusive, and no child is killed or restarted.
#[test]
fn the_agent_s_own_exhaustion_never_kills_a_child() {
    let _serial = serial();
    raise_own_nofile(4096);
    let Some((agent, children)) = start_system(16_384, 30) else {
        return;
    };
    let flood: Vec<TcpStream> = (0..1500)
        .filter_map(|_| idle_connection(agent.api))
        .collect();
    // Out of descriptors: the agent's accepts fail, so do its probes. Several health checks of each child made impossible (the supervisor logs each),
    // more than `unhealthy_after` (3) in a row.
    wait_for(
        Duration::from_secs(30),
        "inconclusive health checks",
        || {
            let lines = agent.stderr.all();
            let both = ["kernel:cam", "model:yolox"].iter().all(|p| {
                lines
                    .iter()
                    .any(|l| l.contains("health check not made, 11 in a row") && l.contains(p))
            });
            both.then_some(())
        },
    );
    let mut now = children_of(agent.pid());
    now.sort();
    drop(flood);
    assert_eq!(
        now, children,
        "a child was killed for the agent's own exhaustion"
    );
    wait_for(Duration::from_secs(40), "the API back", || {
        (agent.http("GET", "/health", None).0 == 200).then_some(())
    });
    let model = agent.model("yolox");
    assert_eq!(model["server"]["restarts"], 0, "{model}");
    let inconclusive = model["server"]["checks_inconclusive"].as_u64().unwrap_or(0)
        + agent.camera("cam")["kernel"]["checks_inconclusive"]
            .as_u64()
            .unwrap_or(0);
    println!(
        "MEASURED api flood: {inconclusive} health checks inconclusive while out of descriptors"
    );
    assert!(inconclusive > 0, "no check was counted inconclusive");
    assert_eq!(agent.camera("cam")["kernel"]["restarts"], 0);
}
