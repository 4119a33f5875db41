//! The Redis Streams worker: one thread with a synchronous `redis` connection.
//!
//! Per event: `XADD <prefix><camera>:events MAXLEN ~ <maxlen> * id <event id> type
//! <event type> json <event JSON>`, and with `publish_channel` also `PUBLISH
//! <channel> <event JSON>`. Up to `batch` events go in one pipeline; they leave the
//! buffer when the pipeline's replies arrived. A failed pipeline drops the connection
//! and the next one sends the same events again from the front (at-least-once: a
//! reader de-duplicates by the `id` field). Attempts are spaced by
//! [`Backoff`].

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redis::IntoConnectionInfo;

use super::payload::{stream_key, Item, ItemKind};
use super::{BrokerLink, BrokerStartError};
use crate::config::outputs::RedisSettings;
use proto_schema::backoff::Backoff;

struct Worker {
    link: Arc<BrokerLink>,
    client: redis::Client,
    key_prefix: String,
    maxlen: u64,
    channel: Option<String>,
    batch: usize,
    connect_timeout: Duration,
    drain_timeout: Duration,
    backoff: Backoff,
}

/// Starts the worker for `s`.
pub fn start(s: &RedisSettings) -> Result<(Arc<BrokerLink>, JoinHandle<()>), BrokerStartError> {
    let settings = |reason: String| BrokerStartError::Settings {
        sink: "redis",
        reason,
    };
    let info = s
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| settings(e.to_string()))?;
    let target = info.addr().to_string();
    let mut rs = info.redis_settings().clone();
    if let Some(u) = &s.credentials.username {
        rs = rs.set_username(u);
    }
    if let Some(p) = s
        .credentials
        .password()
        .map_err(|source| BrokerStartError::Secret {
            sink: "redis",
            source,
        })?
    {
        rs = rs.set_password(p);
    }
    let client =
        redis::Client::open(info.set_redis_settings(rs)).map_err(|e| settings(e.to_string()))?;
    let link = BrokerLink::new("redis", target, s.delivery.buffer);
    let d = &s.delivery;
    let mut worker = Worker {
        link: link.clone(),
        client,
        key_prefix: s.key_prefix.clone(),
        maxlen: s.maxlen,
        channel: s.publish_channel.clone(),
        batch: s.batch,
        connect_timeout: Duration::from_millis(d.connect_timeout_ms),
        drain_timeout: Duration::from_millis(d.drain_timeout_ms),
        backoff: super::broker_backoff(d.backoff_initial_ms, d.backoff_max_ms),
    };
    let t = std::thread::Builder::new()
        .name("redis-out".into())
        .spawn(move || worker.run())
        .map_err(|source| BrokerStartError::Thread {
            sink: "redis",
            source,
        })?;
    Ok((link, t))
}

/// The pipeline for `items` (events only; other kinds are not sent to Redis).
pub fn pipeline(
    key_prefix: &str,
    maxlen: u64,
    channel: Option<&str>,
    items: &[(u64, Item)],
) -> redis::Pipeline {
    let mut p = redis::pipe();
    for (_, item) in items {
        let Some((id, kind)) = &item.event else {
            continue;
        };
        if item.kind != ItemKind::Event {
            continue;
        }
        p.cmd("XADD")
            .arg(stream_key(key_prefix, &item.camera))
            .arg("MAXLEN")
            .arg("~")
            .arg(maxlen)
            .arg("*")
            .arg("id")
            .arg(&**id)
            .arg("type")
            .arg(*kind)
            .arg("json")
            .arg(&*item.json)
            .ignore();
        if let Some(ch) = channel {
            p.cmd("PUBLISH").arg(ch).arg(&*item.json).ignore();
        }
    }
    p
}

impl Worker {
    fn run(&mut self) {
        let link = self.link.clone();
        let buf = &link.buffer;
        'outer: loop {
            if buf.is_closed() {
                break;
            }
            let conn = self
                .client
                .get_connection_with_timeout(self.connect_timeout)
                .and_then(|c| {
                    c.set_read_timeout(Some(self.connect_timeout))?;
                    c.set_write_timeout(Some(self.connect_timeout))?;
                    Ok(c)
                });
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    self.lost(e.to_string());
                    continue;
                }
            };
            self.backoff.reset();
            self.link.connected();
            tracing::info!(target: "outputs", "redis: connected to {}", self.link.target);
            let mut drain_until: Option<Instant> = None;
            loop {
                buf.wait_for(0, Duration::from_millis(200));
                let items = buf.peek_from(0, self.batch);
                if items.is_empty() {
                    if buf.is_closed() {
                        break 'outer;
                    }
                    continue;
                }
                if buf.is_closed() {
                    let until =
                        *drain_until.get_or_insert_with(|| Instant::now() + self.drain_timeout);
                    if Instant::now() >= until {
                        tracing::warn!(target: "outputs", "redis: {} events undelivered at shutdown", buf.len());
                        break 'outer;
                    }
                }
                let p = pipeline(
                    &self.key_prefix,
                    self.maxlen,
                    self.channel.as_deref(),
                    &items,
                );
                match p.query::<()>(&mut conn) {
                    Ok(()) => {
                        for (seq, _) in &items {
                            buf.confirm(*seq);
                        }
                    }
                    Err(e) => {
                        self.lost(e.to_string());
                        continue 'outer;
                    }
                }
            }
        }
        self.link.stopped();
    }

    /// Records the failure and sleeps the backoff delay (woken early by shutdown).
    fn lost(&mut self, e: String) {
        if self.backoff.failures() == 0 {
            tracing::warn!(target: "outputs", "redis {}: {e} (reconnecting with backoff)", self.link.target);
        }
        self.link.failed(e);
        let delay = self.backoff.next_delay();
        let deadline = Instant::now() + delay;
        while !self.link.buffer.is_closed() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            // Wakes on a push too; loop until the delay passed or shutdown.
            self.link.buffer.wait_for(u64::MAX, deadline - now);
        }
        self.link.count_reconnect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::events::{Event, EventKind};

    #[test]
    fn pipeline_is_one_xadd_per_event_with_publish_mirror() {
        let e = Event {
            id: "a-1".into(),
            kind: EventKind::ZoneEnter,
            camera: "door".into(),
            model: "m".into(),
            rule: "z".into(),
            track: 1,
            class: "person".into(),
            score: 0.5,
            bbox: [0.0; 4],
            direction: None,
            dwell_ms: None,
            capture_ts_ns: 0,
            capture_unix_ms: 0,
            frame_id: 0,
            frame: None,
            suppressed: 0,
            clip: None,
        };
        let items = vec![(0, Item::event(&e).unwrap()), (1, Item::event(&e).unwrap())];
        let p = pipeline("framebus:", 1000, Some("ch"), &items);
        let packed = String::from_utf8_lossy(&p.get_packed_pipeline()).into_owned();
        assert_eq!(packed.matches("XADD").count(), 2);
        assert_eq!(packed.matches("PUBLISH").count(), 2);
        assert!(packed.contains("framebus:door:events"));
        assert!(packed.contains("zone_enter"));
        assert!(packed.contains("MAXLEN"));
    }
}
