//! Broker outputs: `[brokers.mqtt]` and `[brokers.redis]` (events, counts, camera
//! status and optionally detections to an MQTT broker; events to Redis Streams).
//!
//! The tables live under `brokers`, not `outputs`: `[[outputs]]` is already the array
//! of result-record sinks, and TOML cannot make `outputs` both an array and a table.
//! Secrets (broker passwords) never sit in the file: `password_file` names a file,
//! `password_env` an environment variable; neither the value nor the variable's
//! content is logged or shown in `/status`. Validation lives in [`check`]; topics and
//! payloads are documented in `docs/events.md`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validate::ConfigError;
use super::Config;

/// `[brokers]`: the broker sinks; each is off unless its table is present.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    /// `[brokers.mqtt]`: an MQTT 3.1.1 broker.
    pub mqtt: Option<MqttSettings>,
    /// `[brokers.redis]`: a Redis server (Streams).
    pub redis: Option<RedisSettings>,
}

/// Delivery settings shared by both brokers (flattened into each table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Delivery {
    /// Items (events, counts rows, status) kept while the broker is away or slow,
    /// sent-but-unconfirmed ones included; when full the **oldest** is dropped and
    /// counted (`framebus_broker_dropped_total`). `1..=1000000`, default `10000`.
    pub buffer: usize,
    /// First reconnect delay, ms; doubles per failed attempt up to `backoff_max_ms`,
    /// jittered into `[d/2, d)`. `1..=60000`, default `200`.
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay, ms, `>= backoff_initial_ms`, `<= 600000`. Default `10000`.
    pub backoff_max_ms: u64,
    /// Connect (TCP + handshake) timeout, ms, `1..=60000`. Default `3000`.
    pub connect_timeout_ms: u64,
    /// How long shutdown waits for the buffer to drain while connected, ms,
    /// `0..=60000`. Default `2000`.
    pub drain_timeout_ms: u64,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            buffer: 10_000,
            backoff_initial_ms: 200,
            backoff_max_ms: 10_000,
            connect_timeout_ms: 3_000,
            drain_timeout_ms: 2_000,
        }
    }
}

/// Where a broker password comes from (never the config file itself).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Credentials {
    /// User name. Default: none (anonymous).
    pub username: Option<String>,
    /// File holding the password (trailing newline stripped). Default: none.
    pub password_file: Option<PathBuf>,
    /// Name of an environment variable holding the password. Default: none.
    pub password_env: Option<String>,
}

/// Why a password could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The password file could not be read.
    #[error("password_file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The environment variable is not set or not UTF-8.
    #[error("password_env {name}: not set or not UTF-8")]
    Env {
        /// The variable's name.
        name: String,
    },
}

impl Credentials {
    /// The password, if one is configured (read now, not cached in the config).
    pub fn password(&self) -> Result<Option<String>, SecretError> {
        if let Some(path) = &self.password_file {
            let s = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                path: path.clone(),
                source,
            })?;
            return Ok(Some(s.trim_end_matches(['\r', '\n']).to_owned()));
        }
        if let Some(name) = &self.password_env {
            return std::env::var(name)
                .map(Some)
                .map_err(|_| SecretError::Env { name: name.clone() });
        }
        Ok(None)
    }
}

/// `[brokers.mqtt]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttSettings {
    /// Broker address: `mqtt://host:port` or `host:port` (port default 1883), or
    /// `mqtts://host:port` for TLS (port default 8883; the broker's certificate must
    /// name `host`, a DNS name or an IP address). Default `mqtt://127.0.0.1:1883`.
    pub url: String,
    /// MQTT client id, 1..=64 characters. Default `framebus`.
    pub client_id: String,
    /// Credentials; default anonymous.
    #[serde(flatten)]
    pub credentials: Credentials,
    /// CA certificate(s) (PEM) the broker's certificate must chain to; `mqtts://`
    /// only. Default: none, i.e. the system trust store (`/etc/ssl/certs`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for brokers that require one; `mqtts://` only,
    /// together with `client_key_file`. Default: none.
    pub client_cert_file: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1) of `client_cert_file`; must not be
    /// readable by group or others (mode `0600` or `0400`). Default: none.
    pub client_key_file: Option<PathBuf>,
    /// Prefix of every topic, ending in `/`; default `framebus/`.
    pub topic_prefix: String,
    /// Keep-alive, s, `5..=3600`. Default `30`.
    pub keep_alive_s: u64,
    /// QoS 1 messages in flight (sent, not yet acknowledged), `1..=1000`. Default `100`.
    pub inflight: u16,
    /// Publish `<prefix><camera>/detections` (QoS 0) from the result records. Default `false`.
    pub detections: bool,
    /// At most one detections message per camera per this many ms of capture time
    /// (the others are skipped, not queued), `0..=3600000`. Default `1000`.
    pub detections_interval_ms: u64,
    /// How often camera states are checked for `<prefix><camera>/status` (published on
    /// change, retained), ms, `100..=3600000`. Default `1000`.
    pub status_interval_ms: u64,
    /// Buffer and reconnect settings.
    #[serde(flatten)]
    pub delivery: Delivery,
}

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: "framebus".into(),
            credentials: Credentials::default(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            topic_prefix: "framebus/".into(),
            keep_alive_s: 30,
            inflight: 100,
            detections: false,
            detections_interval_ms: 1_000,
            status_interval_ms: 1_000,
            delivery: Delivery::default(),
        }
    }
}

/// Parses `mqtt://host:port`, `host:port` or `host` into (host, port, tls).
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16, bool), String> {
    let (rest, tls) = if let Some(r) = url.strip_prefix("mqtt://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (r, true)
    } else if url.contains("://") {
        return Err(format!("{url:?}: scheme must be mqtt:// or mqtts://"));
    } else {
        (url, false)
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') {
        return Err(format!(
            "{url:?}: only host:port (credentials go in username / password_file / password_env)"
        ));
    }
    let default_port = if tls { 8883 } else { 1883 };
    let port_of = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("{url:?}: port {p:?} is not a number in 1..=65535"))
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        // [v6]:port or [v6]
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed ["))?;
        match after.strip_prefix(':') {
            Some(p) => (h, port_of(p)?),
            None if after.is_empty() => (h, default_port),
            None => return Err(format!("{url:?}: junk after ]")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, port_of(p)?),
            None => (rest, default_port),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    if port == 0 {
        return Err(format!("{url:?}: port 0"));
    }
    Ok((host.to_owned(), port, tls))
}

/// `[brokers.redis]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// Server address: `redis://host:port[/db]` (no credentials in it). Default
    /// `redis://127.0.0.1:6379`.
    pub url: String,
    /// Credentials (Redis 6 ACL user, or only a password); default none.
    #[serde(flatten)]
    pub credentials: Credentials,
    /// Stream key prefix: events go to `<prefix><camera>:events`. Default `framebus:`.
    pub key_prefix: String,
    /// `MAXLEN ~` of each stream (approximate trim), `1..=1000000000`. Default `100000`.
    pub maxlen: u64,
    /// Also `PUBLISH` each event's JSON to this channel. Default: none.
    pub publish_channel: Option<String>,
    /// Events per pipelined round trip, `1..=10000`. Default `256`.
    pub batch: usize,
    /// Buffer and reconnect settings.
    #[serde(flatten)]
    pub delivery: Delivery,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            credentials: Credentials::default(),
            key_prefix: "framebus:".into(),
            maxlen: 100_000,
            publish_channel: None,
            batch: 256,
            delivery: Delivery::default(),
        }
    }
}

fn bad(errs: &mut Vec<ConfigError>, key: String, reason: String) {
    errs.push(ConfigError::InvalidBroker { key, reason });
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    errs: &mut Vec<ConfigError>,
    key: &str,
    v: T,
    lo: T,
    hi: T,
) {
    if v < lo || v > hi {
        bad(errs, key.into(), format!("{v} is not in {lo}..={hi}"));
    }
}

fn check_delivery(errs: &mut Vec<ConfigError>, t: &str, d: &Delivery) {
    in_range(errs, &format!("{t}.buffer"), d.buffer, 1, 1_000_000);
    in_range(
        errs,
        &format!("{t}.backoff_initial_ms"),
        d.backoff_initial_ms,
        1,
        60_000,
    );
    if d.backoff_max_ms < d.backoff_initial_ms || d.backoff_max_ms > 600_000 {
        bad(
            errs,
            format!("{t}.backoff_max_ms"),
            format!(
                "{} must be >= backoff_initial_ms ({}) and <= 600000",
                d.backoff_max_ms, d.backoff_initial_ms
            ),
        );
    }
    in_range(
        errs,
        &format!("{t}.connect_timeout_ms"),
        d.connect_timeout_ms,
        1,
        60_000,
    );
    in_range(
        errs,
        &format!("{t}.drain_timeout_ms"),
        d.drain_timeout_ms,
        0,
        60_000,
    );
}

fn check_credentials(errs: &mut Vec<ConfigError>, t: &str, c: &Credentials, check_files: bool) {
    if c.password_file.is_some() && c.password_env.is_some() {
        bad(
            errs,
            format!("{t}.password_file"),
            "set password_file or password_env, not both".into(),
        );
    }
    if let Some(name) = &c.password_env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            bad(
                errs,
                format!("{t}.password_env"),
                format!("{name:?} is not an environment variable name"),
            );
        }
    }
    if check_files {
        if let Some(p) = &c.password_file {
            if !p.is_file() {
                bad(
                    errs,
                    format!("{t}.password_file"),
                    format!("{} is not a readable file", p.display()),
                );
            }
        }
    }
    if let Some(u) = &c.username {
        if u.is_empty() || u.len() > 256 {
            bad(
                errs,
                format!("{t}.username"),
                "must be 1..=256 bytes".into(),
            );
        }
    }
}

/// The TLS keys of `[brokers.mqtt]`: only with `mqtts://`, cert and key together,
/// and (when `check_files`) files that load, with a key no other user can read.
fn check_tls(errs: &mut Vec<ConfigError>, m: &MqttSettings, tls: bool, check_files: bool) {
    use crate::outputs::tls::{load_certs, load_key};
    let t = "brokers.mqtt";
    let files = [
        ("ca_file", &m.ca_file),
        ("client_cert_file", &m.client_cert_file),
        ("client_key_file", &m.client_key_file),
    ];
    if !tls {
        for (k, v) in files {
            if v.is_some() {
                bad(
                    errs,
                    format!("{t}.{k}"),
                    "is a TLS setting: use an mqtts:// url".into(),
                );
            }
        }
        return;
    }
    if m.client_cert_file.is_some() != m.client_key_file.is_some() {
        bad(
            errs,
            format!("{t}.client_cert_file"),
            "set client_cert_file and client_key_file together".into(),
        );
    }
    if !check_files {
        return;
    }
    let mut report = |e: crate::outputs::tls::TlsError| {
        bad(errs, format!("{t}.tls"), e.to_string());
    };
    if let Some(p) = &m.ca_file {
        if let Err(e) = load_certs("brokers.mqtt.ca_file", p) {
            report(e);
        }
    }
    if let Some(p) = &m.client_cert_file {
        if let Err(e) = load_certs("brokers.mqtt.client_cert_file", p) {
            report(e);
        }
    }
    if let Some(p) = &m.client_key_file {
        use std::os::unix::fs::PermissionsExt as _;
        match std::fs::metadata(p) {
            Ok(md) if md.permissions().mode() & 0o077 != 0 => bad(
                errs,
                format!("{t}.client_key_file"),
                format!(
                    "{} has mode {:o}: a private key must not be readable by group or others (chmod 600)",
                    p.display(),
                    md.permissions().mode() & 0o7777
                ),
            ),
            _ => {
                if let Err(e) = load_key(p) {
                    bad(errs, format!("{t}.client_key_file"), e.to_string());
                }
            }
        }
    }
}

/// Checks `[brokers]`, pushing every problem found (keys named in full).
pub fn check(c: &Config, check_files: bool, errs: &mut Vec<ConfigError>) {
    if let Some(m) = &c.brokers.mqtt {
        let t = "brokers.mqtt";
        match parse_mqtt_url(&m.url) {
            Ok((_, _, tls)) => check_tls(errs, m, tls, check_files),
            Err(reason) => bad(errs, format!("{t}.url"), reason),
        }
        if m.client_id.is_empty()
            || m.client_id.len() > 64
            || !m.client_id.chars().all(|ch| ch.is_ascii_graphic())
        {
            bad(
                errs,
                format!("{t}.client_id"),
                format!(
                    "{:?} must be 1..=64 printable ASCII characters",
                    m.client_id
                ),
            );
        }
        if m.topic_prefix.contains(['#', '+', '\0']) || m.topic_prefix.starts_with('$') {
            bad(
                errs,
                format!("{t}.topic_prefix"),
                format!(
                    "{:?} must not hold # + or NUL, nor start with $",
                    m.topic_prefix
                ),
            );
        } else if !m.topic_prefix.is_empty() && !m.topic_prefix.ends_with('/') {
            bad(
                errs,
                format!("{t}.topic_prefix"),
                format!("{:?} must end in /", m.topic_prefix),
            );
        }
        check_credentials(errs, t, &m.credentials, check_files);
        in_range(errs, &format!("{t}.keep_alive_s"), m.keep_alive_s, 5, 3_600);
        in_range(errs, &format!("{t}.inflight"), m.inflight, 1, 1_000);
        in_range(
            errs,
            &format!("{t}.detections_interval_ms"),
            m.detections_interval_ms,
            0,
            3_600_000,
        );
        in_range(
            errs,
            &format!("{t}.status_interval_ms"),
            m.status_interval_ms,
            100,
            3_600_000,
        );
        check_delivery(errs, t, &m.delivery);
        for cam in &c.cameras {
            if cam.id.contains(['#', '+', '/']) {
                bad(
                    errs,
                    format!("cameras.{}.id", cam.id),
                    "cannot be an MQTT topic level".into(),
                );
            }
        }
    }
    if let Some(r) = &c.brokers.redis {
        let t = "brokers.redis";
        match r.url.strip_prefix("redis://") {
            None => bad(
                errs,
                format!("{t}.url"),
                format!("{:?}: scheme must be redis://", r.url),
            ),
            Some(rest) if rest.contains('@') => bad(
                errs,
                format!("{t}.url"),
                "no credentials in the url (username / password_file / password_env)".into(),
            ),
            Some(rest) if rest.is_empty() || rest.starts_with(['/', ':']) => {
                bad(errs, format!("{t}.url"), format!("{:?}: no host", r.url))
            }
            Some(_) => {
                if let Err(e) = redis::parse_redis_url(&r.url).ok_or("unparsable") {
                    bad(errs, format!("{t}.url"), format!("{:?}: {e}", r.url));
                }
            }
        }
        if r.key_prefix.is_empty() || r.key_prefix.len() > 128 {
            bad(
                errs,
                format!("{t}.key_prefix"),
                "must be 1..=128 bytes".into(),
            );
        }
        if let Some(ch) = &r.publish_channel {
            if ch.is_empty() || ch.len() > 256 {
                bad(
                    errs,
                    format!("{t}.publish_channel"),
                    "must be 1..=256 bytes".into(),
                );
            }
        }
        in_range(errs, &format!("{t}.maxlen"), r.maxlen, 1, 1_000_000_000);
        in_range(errs, &format!("{t}.batch"), r.batch, 1, 10_000);
        check_credentials(errs, t, &r.credentials, check_files);
        check_delivery(errs, t, &r.delivery);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_urls() {
        assert_eq!(
            parse_mqtt_url("mqtt://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".into(), 1884, false)
        );
        assert_eq!(
            parse_mqtt_url("broker").unwrap(),
            ("broker".into(), 1883, false)
        );
        assert_eq!(
            parse_mqtt_url("mqtts://[::1]").unwrap(),
            ("::1".into(), 8883, true)
        );
        assert_eq!(
            parse_mqtt_url("[::1]:99").unwrap(),
            ("::1".into(), 99, false)
        );
        for bad in [
            "http://x",
            "mqtt://u:p@h:1",
            "mqtt://:1",
            "mqtt://h:0",
            "mqtt://h:x",
            "mqtt://h/a",
        ] {
            assert!(parse_mqtt_url(bad).is_err(), "{bad}");
        }
    }

    fn config(toml: &str) -> Config {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn defaults_validate_and_every_problem_is_reported() {
        let c = config("[brokers.mqtt]\n[brokers.redis]\n");
        let mut errs = Vec::new();
        check(&c, false, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(c.brokers.mqtt.as_ref().unwrap().topic_prefix, "framebus/");

        let c = config(
            r#"
[brokers.mqtt]
url = "ftp://h"
client_id = ""
topic_prefix = "a/#"
password_file = "/x"
password_env = "Y"
buffer = 0
backoff_initial_ms = 500
backoff_max_ms = 100
[brokers.redis]
url = "redis://u:p@h"
maxlen = 0
batch = 0
"#,
        );
        let mut errs = Vec::new();
        check(&c, false, &mut errs);
        let keys: Vec<String> = errs
            .iter()
            .map(|e| match e {
                ConfigError::InvalidBroker { key, .. } => key.clone(),
                other => panic!("{other}"),
            })
            .collect();
        for k in [
            "brokers.mqtt.url",
            "brokers.mqtt.client_id",
            "brokers.mqtt.topic_prefix",
            "brokers.mqtt.password_file",
            "brokers.mqtt.buffer",
            "brokers.mqtt.backoff_max_ms",
            "brokers.redis.url",
            "brokers.redis.maxlen",
            "brokers.redis.batch",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing in {keys:?}");
        }
    }

    #[test]
    fn tls_keys_need_mqtts_and_loadable_private_files() {
        let errs_of = |toml: &str, files: bool| -> Vec<String> {
            let mut errs = Vec::new();
            check(&config(toml), files, &mut errs);
            errs.iter().map(ToString::to_string).collect()
        };
        // TLS keys on a plain url.
        let e = errs_of(
            "[brokers.mqtt]\nurl = \"mqtt://h\"\nca_file = \"/x\"\n",
            false,
        );
        assert!(
            e.iter()
                .any(|e| e.contains("ca_file") && e.contains("mqtts://")),
            "{e:?}"
        );
        // Cert without key.
        let e = errs_of(
            "[brokers.mqtt]\nurl = \"mqtts://h\"\nclient_cert_file = \"/x\"\n",
            false,
        );
        assert!(e.iter().any(|e| e.contains("together")), "{e:?}");
        // mqtts:// alone is fine (system trust store).
        assert!(errs_of("[brokers.mqtt]\nurl = \"mqtts://h\"\n", true).is_empty());
        // Missing files, a file with no certificate, a key others can read.
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem\n").unwrap();
        let key = dir.path().join("k.pem");
        std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let toml = format!(
            "[brokers.mqtt]\nurl = \"mqtts://h\"\nca_file = \"{}/missing.pem\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            dir.path().display(),
            junk.display(),
            key.display()
        );
        let e = errs_of(&toml, true);
        assert!(e.iter().any(|e| e.contains("missing.pem")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("no PEM CERTIFICATE")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("mode 644")), "{e:?}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = errs_of(&toml, true);
        assert!(!e.iter().any(|e| e.contains("client_key_file")), "{e:?}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("[brokers.mqtt]\nhost = \"x\"\n").is_err());
        assert!(toml::from_str::<Config>("[brokers.kafka]\n").is_err());
    }

    #[test]
    fn passwords_come_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let c = Credentials {
            username: Some("u".into()),
            password_file: Some(f),
            password_env: None,
        };
        assert_eq!(c.password().unwrap().as_deref(), Some("s3cret"));
        let c = Credentials {
            password_env: Some("FRAMEBUS_TEST_SURELY_UNSET_VAR".into()),
            ..Default::default()
        };
        assert!(matches!(c.password(), Err(SecretError::Env { .. })));
        assert_eq!(Credentials::default().password().unwrap(), None);
    }

    /// The commented `[brokers]` example in `config/example.toml` parses and validates
    /// once uncommented, and lists every key.
    #[test]
    fn example_toml_block_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/example.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let block: String = text
            .lines()
            .skip_while(|l| !l.contains("brokers example begin"))
            .skip(1)
            .take_while(|l| !l.contains("brokers example end"))
            .map(|l| format!("{}\n", l.trim_start_matches('#').trim_start()))
            .collect();
        let c: Config = toml::from_str(&block).unwrap();
        let mut errs = Vec::new();
        check(&c, false, &mut errs);
        assert!(errs.is_empty(), "{errs:?}");
        let m = c.brokers.mqtt.unwrap();
        assert_eq!(m.delivery, Delivery::default());
        assert_eq!(m.topic_prefix, MqttSettings::default().topic_prefix);
        let r = c.brokers.redis.unwrap();
        assert_eq!(r.maxlen, RedisSettings::default().maxlen);
        assert_eq!(r.publish_channel.as_deref(), Some("framebus:events"));
    }
}
