//! MQTT over TLS end to end: a real `mosquitto` with a TLS listener on a free loopback
//! port that requires a client certificate, a CA, server and client certificates
//! generated here with the `openssl` CLI, the real system on the real footage, and a
//! TLS subscriber (`mosquitto_sub --cafile --cert --key`). Checks: every event of
//! `events.jsonl` arrives in order over TLS; with the wrong CA the system runs,
//! `/health` says `degraded` and names the certificate problem.

mod common;
mod outputs_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{assets, bin_dir, kill, serial, wait_for, Agent, Dirs};
use outputs_support::{free_port, health, jsonl_event_ids, pipeline_config};
use serde_json::Value;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (apt-get install openssl; scripts/setup.sh does)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<name>.pem`, `<name>.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A leaf certificate `<name>.pem` / `<name>.key` signed by CA `ca`, with `ext`
/// (e.g. `subjectAltName=IP:127.0.0.1`).
fn make_leaf(dir: &Path, ca: &str, name: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), format!("{ext}\n")).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join(format!("{name}.key")),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// Certificates and a TLS mosquitto requiring a client certificate.
struct TlsBroker {
    port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl TlsBroker {
    fn start() -> TlsBroker {
        let dir = tempfile::Builder::new()
            .prefix("framebus-mqtts")
            .tempdir()
            .unwrap();
        let d = dir.path();
        make_ca(d, "ca");
        make_ca(d, "other-ca");
        make_leaf(
            d,
            "ca",
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        );
        make_leaf(d, "ca", "client", "extendedKeyUsage=clientAuth");
        let port = free_port();
        std::fs::write(
            d.join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\ncafile {0}/ca.pem\ncertfile {0}/server.pem\nkeyfile {0}/server.key\nrequire_certificate true\nmax_queued_messages 100000\n",
                d.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(d.join("mosquitto.log")).unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(d.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start mosquitto (apt-get install mosquitto; scripts/setup.sh does)");
        wait_for(Duration::from_secs(10), "mosquitto (TLS) to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok()
                .then_some(())
        });
        TlsBroker { port, dir, child }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn mqtt_table(&self, ca: &str) -> String {
        format!(
            "[brokers.mqtt]\nurl = \"mqtts://127.0.0.1:{}\"\nca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\nclient_id = \"framebus-tls-test\"\nbackoff_initial_ms = 100\nbackoff_max_ms = 1000\nconnect_timeout_ms = 2000\ndrain_timeout_ms = 5000\n\n",
            self.port,
            self.file(ca).display(),
            self.file("client.pem").display(),
            self.file("client.key").display(),
        )
    }

    /// `mosquitto_sub` over TLS with the client certificate, `-v` lines into a file.
    fn subscribe(&self) -> (Child, PathBuf) {
        let out = self.file("sub.txt");
        let child = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-i",
                "framebus-tls-sub",
                "-q",
                "1",
                "-v",
                "-t",
                "framebus/#",
            ])
            .arg("--cafile")
            .arg(self.file("ca.pem"))
            .arg("--cert")
            .arg(self.file("client.pem"))
            .arg("--key")
            .arg(self.file("client.key"))
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(self.file("sub.err")).unwrap())
            .spawn()
            .expect("mosquitto_sub (apt-get install mosquitto-clients)");
        (child, out)
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (topic, payload) lines of `mosquitto_sub -v`.
fn received(out: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(t, p)| (t.to_owned(), p.to_owned()))
        .collect()
}

fn event_ids(out: &Path) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    received(out)
        .into_iter()
        .filter(|(t, _)| t == "framebus/walk/events")
        .filter_map(|(_, p)| serde_json::from_str::<Value>(&p).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

#[test]
fn events_arrive_in_order_over_tls_with_a_client_certificate() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let broker = TlsBroker::start();
    let (mut sub, out) = broker.subscribe();
    // The subscriber is connected (its TLS handshake done) before the agent starts.
    wait_for(Duration::from_secs(10), "the TLS subscriber", || {
        std::fs::read_to_string(broker.file("mosquitto.log"))
            .unwrap_or_default()
            .contains("framebus-tls-sub")
            .then_some(())
    });
    let dirs = Dirs::new();
    let config = pipeline_config(&dirs, &assets, &broker.mqtt_table("ca.pem"));
    let mut agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));
    wait_for(Duration::from_secs(90), "3 events over TLS", || {
        (event_ids(&out).len() >= 3).then_some(())
    });
    let (code, h) = health(&agent);
    assert_eq!(code, 200);
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["brokers"][0]["state"], "connected", "{h}");
    assert!(h["brokers"][0]["last_error"].is_null(), "{h}");
    let status = agent.stop(Duration::from_secs(30));
    assert!(status.success(), "{status}");

    let want = jsonl_event_ids(agent.dir.path());
    let got = wait_for(Duration::from_secs(10), "the last events", || {
        let got = event_ids(&out);
        (got.len() >= want.len()).then_some(got)
    });
    assert!(want.len() >= 3, "{} events", want.len());
    assert_eq!(got, want, "MQTT (TLS) events differ from events.jsonl");
    let available: Vec<String> = received(&out)
        .into_iter()
        .filter(|(t, _)| t == "framebus/available")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(available.first().map(String::as_str), Some("online"));
    assert_eq!(available.last().map(String::as_str), Some("offline"));
    kill(sub.id(), libc::SIGTERM);
    let _ = sub.wait();
}

#[test]
fn a_broker_certificate_from_another_ca_degrades_health_with_the_reason() {
    let _serial = serial();
    let Some(assets) = assets() else { return };
    bin_dir();
    let broker = TlsBroker::start();
    let dirs = Dirs::new();
    let config = pipeline_config(&dirs, &assets, &broker.mqtt_table("other-ca.pem"));
    let mut agent = Agent::start(dirs, &config, &[]);
    agent.wait_ready(Duration::from_secs(120));
    let (code, h) = wait_for(Duration::from_secs(60), "a failed TLS attempt", || {
        let (code, h) = health(&agent);
        (h["brokers"][0]["reconnects"].as_u64() >= Some(1)).then_some((code, h))
    });
    assert_eq!(code, 200, "a broker away degrades, never fails, the agent");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_ne!(h["brokers"][0]["state"], "connected", "{h}");
    let reason = h["brokers"][0]["last_error"].as_str().unwrap_or_default();
    eprintln!("wrong CA: last_error = {reason:?}");
    assert!(
        reason.to_ascii_lowercase().contains("certificate"),
        "the reason names the certificate: {h}"
    );
    // The system runs on.
    wait_for(
        Duration::from_secs(90),
        "results without the broker",
        || (agent.results().len() >= 10).then_some(()),
    );
    let metrics = agent.http("GET", "/metrics", None).1;
    assert!(
        metrics.contains("framebus_broker_connected{sink=\"mqtt\"} 0"),
        "{metrics}"
    );
    let status = agent.stop(Duration::from_secs(30));
    assert!(status.success(), "{status}");
}
