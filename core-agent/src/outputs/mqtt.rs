//! The MQTT worker: one thread running a single-threaded Tokio runtime with a
//! `rumqttc` client, MQTT 3.1.1 over TCP, or over TLS (rustls) for an `mqtts://` url
//! ([`super::tls`]).
//!
//! Each connection starts clean (`clean_session`), publishes `<prefix>available` =
//! `online` (retained; the last will is a retained `offline`), then sends the buffer
//! from its front: every item not yet confirmed, in order, at most `inflight` at a
//! time, after every camera's retained status again (a broker restarted without
//! persistence lost it). QoS 1 items (events, counts, status) leave the buffer on
//! their `PUBACK`, QoS 0 items (detections) once written. A lost connection drops the client; the
//! next one resends what was not confirmed (at-least-once: a subscriber de-duplicates
//! by event id). Attempts are spaced by [`Backoff`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};

use super::payload::{available_topic, ItemKind, OFFLINE, ONLINE};
use super::{BrokerLink, BrokerStartError};
use crate::config::outputs::{parse_mqtt_url, MqttSettings};
use proto_schema::backoff::Backoff;

/// Largest payload sent; a larger item is dropped (counted) rather than wedging the
/// connection (the broker would refuse it on every resend).
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Not an item: the availability message's slot in the sent queue.
const NOT_AN_ITEM: u64 = u64::MAX;

struct Worker {
    link: Arc<BrokerLink>,
    opts: MqttOptions,
    prefix: String,
    inflight: usize,
    connect_timeout: Duration,
    drain_timeout: Duration,
    backoff: Backoff,
}

/// Starts the worker for `s`.
pub fn start(s: &MqttSettings) -> Result<(Arc<BrokerLink>, JoinHandle<()>), BrokerStartError> {
    let (host, port, tls) =
        parse_mqtt_url(&s.url).map_err(|reason| BrokerStartError::Settings {
            sink: "mqtt",
            reason,
        })?;
    let mut opts = MqttOptions::new(s.client_id.clone(), host.clone(), port);
    opts.set_keep_alive(Duration::from_secs(s.keep_alive_s))
        .set_clean_session(true)
        .set_inflight(s.inflight)
        .set_max_packet_size(MAX_PAYLOAD + 4096, MAX_PAYLOAD + 4096)
        .set_request_channel_capacity(usize::from(s.inflight) * 2 + 8)
        .set_last_will(LastWill::new(
            available_topic(&s.topic_prefix),
            OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
    if tls {
        let config = super::tls::client_config(s).map_err(|source| BrokerStartError::Tls {
            sink: "mqtt",
            source,
        })?;
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(config)));
    }
    let password = s
        .credentials
        .password()
        .map_err(|source| BrokerStartError::Secret {
            sink: "mqtt",
            source,
        })?;
    if let Some(user) = &s.credentials.username {
        opts.set_credentials(user.clone(), password.unwrap_or_default());
    }
    let link = BrokerLink::new("mqtt", format!("{host}:{port}"), s.delivery.buffer);
    let d = &s.delivery;
    let worker = Worker {
        link: link.clone(),
        opts,
        prefix: s.topic_prefix.clone(),
        inflight: usize::from(s.inflight),
        connect_timeout: Duration::from_millis(d.connect_timeout_ms),
        drain_timeout: Duration::from_millis(d.drain_timeout_ms),
        backoff: super::broker_backoff(d.backoff_initial_ms, d.backoff_max_ms),
    };
    let t = std::thread::Builder::new()
        .name("mqtt-out".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(worker.run()),
                Err(e) => worker.link.failed(format!("cannot start its runtime: {e}")),
            }
        })
        .map_err(|source| BrokerStartError::Thread {
            sink: "mqtt",
            source,
        })?;
    Ok((link, t))
}

/// How a session ended.
enum End {
    /// Shutdown: the buffer was drained (or the drain timed out).
    Done,
    /// The connection failed.
    Lost(String),
}

impl Worker {
    async fn run(mut self) {
        loop {
            if self.link.buffer.is_closed() {
                break;
            }
            let (client, mut el) = AsyncClient::new(self.opts.clone(), self.inflight * 2 + 8);
            let mut net = el.network_options();
            net.set_tcp_nodelay(true);
            net.set_connection_timeout(self.connect_timeout.as_secs().max(1));
            el.set_network_options(net);
            let connected = match tokio::time::timeout(self.connect_timeout, el.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => Ok(()),
                Ok(Ok(other)) => Err(format!("unexpected first packet {other:?}")),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "no CONNACK within {} ms",
                    self.connect_timeout.as_millis()
                )),
            };
            let end = match connected {
                Ok(()) => {
                    self.backoff.reset();
                    self.link.connected();
                    tracing::info!(target: "outputs", "mqtt: connected to {}", self.link.target);
                    self.session(&client, el).await
                }
                Err(e) => End::Lost(e),
            };
            match end {
                End::Done => break,
                End::Lost(e) => {
                    if self.backoff.failures() == 0 {
                        tracing::warn!(target: "outputs", "mqtt {}: {e} (reconnecting with backoff)", self.link.target);
                    }
                    self.link.failed(e);
                    let delay = self.backoff.next_delay();
                    // Sleep, but wake for a shutdown: nothing is sent while away.
                    let _ = tokio::time::timeout(delay, async {
                        while !self.link.buffer.is_closed() {
                            self.link.buffer.notified().await;
                        }
                    })
                    .await;
                    self.link.count_reconnect();
                }
            }
        }
        self.link.stopped();
    }

    async fn session(&mut self, client: &AsyncClient, mut el: rumqttc::EventLoop) -> End {
        let buf = &self.link.buffer;
        // The event loop is polled on its own task and never cancelled mid-poll (a
        // cancelled poll could cut a packet in half); its events come over a channel.
        let (tx, mut events) = tokio::sync::mpsc::channel(256);
        let poller = tokio::spawn(async move {
            loop {
                let ev = el.poll().await;
                let failed = ev.is_err();
                if tx.send(ev).await.is_err() || failed {
                    break;
                }
            }
        });
        let end = self.pump(client, buf, &mut events).await;
        if matches!(end, End::Done) {
            // Let the DISCONNECT go out.
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while let Some(Ok(ev)) = events.recv().await {
                    if matches!(ev, Event::Outgoing(Outgoing::Disconnect)) {
                        break;
                    }
                }
            })
            .await;
        }
        poller.abort();
        end
    }

    async fn pump(
        &self,
        client: &AsyncClient,
        buf: &super::buffer::DeliveryBuffer<super::Item>,
        events: &mut tokio::sync::mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
    ) -> End {
        // Requests handed to the client, not yet written: (item seq, QoS 0?).
        let mut sent: VecDeque<(u64, bool)> = VecDeque::new();
        // Written QoS 1 publishes awaiting PUBACK: pkid -> item seq.
        let mut unacked: HashMap<u16, u64> = HashMap::new();
        let mut cursor = 0u64;
        let mut drain_until: Option<Instant> = None;
        if let Err(e) = client.try_publish(
            available_topic(&self.prefix),
            QoS::AtLeastOnce,
            true,
            ONLINE,
        ) {
            return End::Lost(e.to_string());
        }
        sent.push_back((NOT_AN_ITEM, false));
        let mut offline_sent = false;
        // Each camera's retained status goes out again first; newer ones in the buffer
        // follow and win.
        let mut republish: VecDeque<super::Item> = self.link.retained().into();
        loop {
            // Fill the window.
            let mut room = self.inflight.saturating_sub(sent.len() + unacked.len());
            while room > 0 && !offline_sent {
                let Some(item) = republish.pop_front() else {
                    break;
                };
                let topic = item.topic(&self.prefix);
                let payload = item.json.as_bytes().to_vec();
                if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, true, payload) {
                    return End::Lost(e.to_string());
                }
                sent.push_back((NOT_AN_ITEM, false));
                room -= 1;
            }
            if room > 0 && !offline_sent {
                for (seq, item) in buf.peek_from(cursor, room) {
                    cursor = seq + 1;
                    if item.json.len() > MAX_PAYLOAD {
                        buf.reject(seq);
                        continue;
                    }
                    let (qos, retain) = match item.kind {
                        ItemKind::Detections => (QoS::AtMostOnce, false),
                        ItemKind::Status => (QoS::AtLeastOnce, true),
                        ItemKind::Event | ItemKind::Counts => (QoS::AtLeastOnce, false),
                    };
                    if let Err(e) = client.try_publish(
                        item.topic(&self.prefix),
                        qos,
                        retain,
                        item.json.as_bytes().to_vec(),
                    ) {
                        return End::Lost(e.to_string());
                    }
                    sent.push_back((seq, qos == QoS::AtMostOnce));
                }
            }
            if buf.is_closed() {
                let until = *drain_until.get_or_insert_with(|| Instant::now() + self.drain_timeout);
                let idle = sent.is_empty() && unacked.is_empty();
                if offline_sent && (idle || Instant::now() >= until) {
                    let _ = client.try_disconnect();
                    return End::Done;
                }
                if !offline_sent && ((idle && buf.is_empty()) || Instant::now() >= until) {
                    let left = buf.len();
                    if left > 0 {
                        tracing::warn!(target: "outputs", "mqtt: {left} items undelivered at shutdown");
                    }
                    // A clean stop says `offline` itself (the will is only for a crash).
                    if client
                        .try_publish(
                            available_topic(&self.prefix),
                            QoS::AtLeastOnce,
                            true,
                            OFFLINE,
                        )
                        .is_err()
                    {
                        return End::Done;
                    }
                    sent.push_back((NOT_AN_ITEM, false));
                    offline_sent = true;
                    drain_until = Some(Instant::now() + Duration::from_millis(500));
                }
            }
            tokio::select! {
                ev = events.recv() => match ev.unwrap_or(Err(rumqttc::ConnectionError::RequestsDone)) {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some((seq, qos0)) = sent.pop_front() {
                            if seq == NOT_AN_ITEM {
                                continue;
                            }
                            if qos0 {
                                buf.confirm(seq);
                            } else {
                                unacked.insert(pkid, seq);
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(seq) = unacked.remove(&ack.pkid) {
                            buf.confirm(seq);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return End::Lost(e.to_string()),
                },
                _ = buf.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }
}
