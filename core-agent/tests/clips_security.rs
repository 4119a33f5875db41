//! Attacks on the clip tree and `GET /events/{id}/clip.mp4`, with an unprivileged local
//! user (uid 65534) in the threat model:
//!
//! - the clip folder, the kernels' packet segments and their folders are private:
//!   folders `0750` (or tighter), files without any bit for others and no group
//!   write, and uid 65534 can neither list, read nor create anything in them;
//! - symlinks planted in the clip tree (a clip file, a date folder, a camera folder,
//!   each pointing outside) are never followed: the endpoint answers 404 and serves
//!   nothing of the targets, and retention (which deletes old clips) deletes nothing
//!   outside the tree while it does delete a real old clip beside them;
//! - ids with path characters (`..%2f`, absolute, overly long, non-ASCII, invalid
//!   UTF-8, NUL) get a typed 4xx JSON error and read nothing.
//!
//! The camera plays the real footage with clips on and no model (no events needed:
//! the planted clips are found the way clips from before a restart are).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{assets, bin_dir, serial, wait_for, Agent, Dirs};

const SECRET: &str = "SECRET-outside-the-clip-tree";

/// `GET path` (sent byte for byte) with the agent's token: status, head, body.
fn get_raw(agent: &Agent, path: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(agent.api).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = agent
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {}\r\n{auth}Connection: close\r\n\r\n",
        agent.api
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_ascii_lowercase(), body.to_owned())
}

/// Sets the modification time of `p` (the link itself for a symlink) to 2001.
fn make_old(p: &Path) {
    let st = Command::new("touch")
        .args(["-h", "-d", "@1000000000"])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn as_nobody(script: &str) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    Command::new("/bin/sh")
        .args(["-c", script])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap()
}

#[test]
fn the_clip_tree_is_private_and_follows_no_planted_symlink_nor_path_in_an_id() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let dirs = Dirs::new();
    let root = dirs.root.path().to_owned();
    // Reachable by the other user, like a service's state folder: only the clip
    // tree's own modes may protect it.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();

    // Outside the tree: files an attacker would like served or deleted.
    let outside = root.join("outside");
    std::fs::create_dir_all(outside.join("2001-09-11")).unwrap();
    for f in ["secret.mp4", "cccc-3.mp4", "2001-09-11/dddd-4.mp4"] {
        std::fs::write(outside.join(f), SECRET).unwrap();
        make_old(&outside.join(f));
    }
    // The tree, with a real old clip (retention must delete it) and three symlinks.
    let clips = root.join("clips");
    let day = clips.join("walk/2001-09-09");
    std::fs::create_dir_all(&day).unwrap();
    for d in [&clips, &clips.join("walk"), &day] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o750)).unwrap();
    }
    std::fs::write(day.join("aaaa-1.mp4"), b"old clip").unwrap();
    make_old(&day.join("aaaa-1.mp4"));
    symlink(outside.join("secret.mp4"), day.join("bbbb-2.mp4")).unwrap();
    make_old(&day.join("bbbb-2.mp4"));
    symlink(&outside, clips.join("walk/2001-09-10")).unwrap();
    symlink(&outside, clips.join("evil")).unwrap();

    let video = assets.join("video/people_walk_540p.mp4");
    let mut config = dirs.agent_table();
    config += &format!(
        "[clips]\ncameras = [\"walk\"]\ndir = \"{}\"\nmax_age_s = 60\ntypes = [\"line_crossed\"]\n\n",
        clips.display()
    );
    config += &format!(
        "[[cameras]]\nid = \"walk\"\nsource = \"{}\"\nfps = 25\nring_slots = 8\nloop = true\n\n",
        video.display()
    );
    let mut agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));

    // Retention ran (the real old clip is gone) and deleted nothing through a link.
    wait_for(Duration::from_secs(30), "retention of the old clip", || {
        (!day.join("aaaa-1.mp4").exists()).then_some(())
    });
    for f in ["secret.mp4", "cccc-3.mp4", "2001-09-11/dddd-4.mp4"] {
        assert_eq!(
            std::fs::read_to_string(outside.join(f)).unwrap(),
            SECRET,
            "retention touched {f} outside the tree"
        );
    }

    // Planted links are not served.
    for id in ["bbbb-2", "cccc-3", "dddd-4"] {
        let (code, head, body) = get_raw(&agent, &format!("/events/{id}/clip.mp4"));
        assert_eq!(code, 404, "{id}: {head}\n{body}");
        assert!(head.contains("application/json"), "{id}: {head}");
        assert!(body.contains("\"error\""), "{id}: {body}");
        assert!(!body.contains(SECRET), "{id} served a planted link");
    }

    // Ids with path characters: typed 4xx, nothing read.
    let long = "a".repeat(5000);
    let attacks = [
        "..%2f..%2foutside%2fsecret",
        "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "%2Fetc%2Fpasswd",
        "%2e%2e",
        "..",
        "bbbb-2%00",
        "bbbb-2%2f..%2f..%2f..%2foutside%2fsecret",
        "%C3%A9t%C3%A9",
        "%FF%FE",
        "dddd%E2%80%AE-4",
        long.as_str(),
    ];
    for id in attacks {
        let (code, head, body) = get_raw(&agent, &format!("/events/{id}/clip.mp4"));
        let shown: String = id.chars().take(40).collect();
        assert_eq!(code, 400, "{shown}: {head}\n{body}");
        assert!(head.contains("application/json"), "{shown}: {head}");
        assert!(body.contains("\"error\""), "{shown}: {body}");
        assert!(!body.contains(SECRET) && !body.contains("root:"), "{shown}");
        assert!(body.len() < 1024, "{shown}: the error echoes too much");
    }
    // Paths the route does not match at all are 4xx too, and read nothing.
    for path in [
        "/events//etc/passwd/clip.mp4",
        "/events/../../etc/passwd/clip.mp4",
        "/events/a/b/clip.mp4",
    ] {
        let (code, _, body) = get_raw(&agent, path);
        assert!((400..500).contains(&code), "{path}: {code}");
        assert!(!body.contains(SECRET) && !body.contains("root:"), "{path}");
    }

    // Modes: the tree and the kernel's packet segments are private.
    let buffer = clips.join(".buffer/walk");
    let segment = wait_for(Duration::from_secs(30), "a packet segment", || {
        std::fs::read_dir(&buffer)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.is_file())
    });
    for d in [&clips, &clips.join(".buffer"), &buffer, &clips.join("walk")] {
        let m = mode(d);
        assert!(m == 0o700 || m == 0o750, "{}: {m:o}", d.display());
    }
    let m = mode(&segment);
    assert!(m == 0o600 || m == 0o640, "{}: {m:o}", segment.display());

    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        for (what, script) in [
            ("list the clip folder", format!("ls {}", clips.display())),
            ("list the segments", format!("ls {}", buffer.display())),
            ("read a segment", format!("cat {}", segment.display())),
            (
                "plant a file",
                format!("touch {}/walk/planted", clips.display()),
            ),
            (
                "plant a link",
                format!("ln -s /etc/passwd {}/walk/x.mp4", clips.display()),
            ),
        ] {
            let out = as_nobody(&script);
            assert!(!out.status.success(), "uid 65534 could {what}: {out:?}");
            assert!(out.stdout.is_empty(), "uid 65534 could {what}");
        }
    } else {
        println!("SKIP: the uid 65534 checks need root (CI runs as root)");
    }
    let status = agent.stop(Duration::from_secs(20));
    assert!(status.success(), "{status}");
}
