//! Instance workers: one thread per model instance takes batches from the [`Batcher`],
//! letterboxes each frame straight from its ring slot into the batch tensor, runs the
//! session once per batch, decodes each image and answers each request.

use std::sync::Arc;
use std::time::Instant;

use proto_schema::error::{ErrorBody, ErrorCode};
use proto_schema::message::{
    Detection, InferenceRequest, InferenceResponse, Timings, MAX_CLASS_NAME_LEN,
};
use proto_schema::time::MonoNanos;
use proto_schema::PROTOCOL_VERSION;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::batcher::{Batcher, Shed};
use crate::family::{InputSpec, OutputLayout};
use crate::frames::ResolvedFrame;
use crate::postprocess::{self, FrameDetection, PostprocessConfig};
use crate::preprocess::{self, Letterbox};
use crate::session::Instance;
use crate::wire_code::WireCode;

/// One queued inference request.
#[derive(Debug)]
pub struct Job {
    /// The request as received.
    pub request: InferenceRequest,
    /// Its validated frame reference.
    pub frame: ResolvedFrame,
    /// When the request's last byte was read.
    pub received: Instant,
    /// Where the answer goes.
    pub reply: Reply,
}

/// The way back to the connection that sent a request. Holds the request's in-flight
/// permit until the answer is handed over; a reply dropped unanswered (a worker bug)
/// still answers, with `internal`, so the connection never waits forever.
#[derive(Debug)]
pub struct Reply {
    tx: mpsc::UnboundedSender<InferenceResponse>,
    fallback: Option<InferenceResponse>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Reply {
    /// A reply to `request` over `tx`, holding `permit` (`None`: the request may only be
    /// queued in place of another, whose permit it then takes: see
    /// [`Reply::take_permit_from`]).
    pub fn new(
        request: &InferenceRequest,
        tx: mpsc::UnboundedSender<InferenceResponse>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let fallback = InferenceResponse::failure(
            request,
            ErrorBody::new(
                ErrorCode::Internal,
                "the model worker dropped the request without an answer",
            ),
        );
        Reply {
            tx,
            fallback: Some(fallback),
            permit,
        }
    }

    /// Whether this reply holds an in-flight permit.
    pub fn has_permit(&self) -> bool {
        self.permit.is_some()
    }

    /// Moves `other`'s permit to this reply (a request queued in place of `other`).
    pub fn take_permit_from(&mut self, other: &mut Reply) {
        if self.permit.is_none() {
            self.permit = other.permit.take();
        }
    }

    /// Hands the answer to the connection (a no-op if the client has gone). The permit
    /// is released first: once the client can see the answer, the request no longer
    /// counts as in flight.
    pub fn send(mut self, response: InferenceResponse) {
        self.fallback = None;
        self.permit = None;
        let _ = self.tx.send(response);
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(fallback) = self.fallback.take() {
            self.permit = None;
            let _ = self.tx.send(fallback);
        }
    }
}

/// What every worker needs besides its session.
#[derive(Debug)]
pub struct Pipeline {
    /// Model input preparation.
    pub spec: InputSpec,
    /// Model output layout.
    pub layout: OutputLayout,
    /// Thresholds.
    pub post: PostprocessConfig,
    /// Class names by id.
    pub names: Vec<String>,
    /// Largest batch the session takes.
    pub max_batch: usize,
}

impl Pipeline {
    fn image_len(&self) -> usize {
        3 * self.spec.width as usize * self.spec.height as usize
    }

    fn class_name(&self, id: u32) -> String {
        let mut name = self
            .names
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| format!("class_{id}"));
        if name.len() > MAX_CLASS_NAME_LEN {
            let mut end = MAX_CLASS_NAME_LEN;
            while !name.is_char_boundary(end) {
                end -= 1;
            }
            name.truncate(end);
        }
        name
    }

    fn detections(&self, found: &[FrameDetection]) -> Vec<Detection> {
        found
            .iter()
            .map(|d| Detection {
                class_id: d.class_id,
                class_name: self.class_name(d.class_id),
                confidence: d.score.clamp(0.0, 1.0),
                bbox: d.bbox,
            })
            .collect()
    }
}

/// Whether the request's deadline (if any) has passed.
pub fn deadline_passed(request: &InferenceRequest, now_ns: u64) -> bool {
    request.deadline_ts_ns.is_some_and(|d| now_ns > d)
}

fn micros(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_micros() as u64
}

fn fail(job: Job, code: ErrorCode, message: String, timings: Timings) {
    let mut resp = InferenceResponse::failure(&job.request, ErrorBody::new(code, message));
    resp.timings = Timings {
        total_us: micros(job.received, Instant::now()),
        ..timings
    };
    job.reply.send(resp);
}

/// Answers a request the queue shed (displaced by a newer one, or waited too long)
/// with `overloaded`, without running it.
pub fn answer_shed(why: Shed, job: Job) {
    let queue_us = micros(job.received, Instant::now());
    let msg = match why {
        Shed::Displaced => format!(
            "shed: a newer request from ring {:?} (or a camera further behind) took its \
             place in the full queue",
            job.request.frame.ring
        ),
        Shed::Expired(waited) => format!(
            "shed: waited {} ms in the queue, past the wait bound",
            waited.as_millis()
        ),
    };
    let t = Timings {
        queue_us,
        ..Timings::default()
    };
    fail(job, ErrorCode::Overloaded, msg, t);
}

/// A job whose frame is in the batch tensor.
struct Prepared {
    job: Job,
    letterbox: Letterbox,
    queue_us: u64,
    preprocess_us: u64,
}

/// Runs one instance until the batcher is closed and drained.
pub fn run(mut instance: Instance, batcher: Arc<Batcher<Job>>, pipeline: Arc<Pipeline>) {
    let image_len = pipeline.image_len();
    let mut input = vec![0.0f32; image_len * pipeline.max_batch];
    let mut batch: Vec<Job> = Vec::with_capacity(pipeline.max_batch);
    let mut prepared: Vec<Prepared> = Vec::with_capacity(pipeline.max_batch);
    let mut shed: Vec<(Shed, Job)> = Vec::new();
    let mut scratch = preprocess::Scratch::default();
    while batcher.next_batch(&mut batch, &mut shed) {
        for (why, job) in shed.drain(..) {
            answer_shed(why, job);
        }
        for job in batch.drain(..) {
            let start = Instant::now();
            let queue_us = micros(job.received, start);
            let t = Timings {
                queue_us,
                ..Timings::default()
            };
            if deadline_passed(&job.request, MonoNanos::now().get()) {
                fail(
                    job,
                    ErrorCode::DeadlineExceeded,
                    "deadline passed while queued".into(),
                    t,
                );
                continue;
            }
            let n = prepared.len();
            let slot = &mut input[n * image_len..(n + 1) * image_len];
            let frame = &job.request.frame;
            let geometry = job.frame.geometry;
            let read = job.frame.reader.read(frame.slot, frame.seq, |bytes| {
                scratch.letterbox_into(bytes, &geometry, &pipeline.spec, slot)
            });
            let preprocess_us = micros(start, Instant::now());
            let t = Timings { preprocess_us, ..t };
            match read {
                Ok(Ok(letterbox)) => prepared.push(Prepared {
                    job,
                    letterbox,
                    queue_us,
                    preprocess_us,
                }),
                Ok(Err(e)) => {
                    let msg = format!("ring {:?} slot {}: {e}", frame.ring, frame.slot);
                    fail(job, ErrorCode::UnsupportedFormat, msg, t);
                }
                // The read error already names the ring and the slot (issue 18).
                Err(e) => fail(job, e.wire_code(), e.to_string(), t),
            }
        }
        if prepared.is_empty() {
            continue;
        }
        let took = run_batch(&mut instance, &input, &mut prepared, &pipeline);
        batcher.observe_run(took);
    }
}

/// Runs one batch and answers its requests; returns how long the run took.
fn run_batch(
    instance: &mut Instance,
    input: &[f32],
    prepared: &mut Vec<Prepared>,
    pipeline: &Pipeline,
) -> std::time::Duration {
    let n = prepared.len();
    let per_image = pipeline.layout.per_image();
    let input_size = (pipeline.spec.width, pipeline.spec.height);
    let t_run = Instant::now();
    let mut inference_us = 0;
    // Postprocess inside the closure: the output borrows the session's buffer.
    let result = instance.run(input, n, |shape, data| {
        inference_us = micros(t_run, Instant::now());
        if shape.first().copied() != Some(n as i64) || data.len() < n * per_image {
            return Err(format!(
                "output shape {shape:?} does not hold {n} images of {per_image} values"
            ));
        }
        Ok(prepared
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let t = Instant::now();
                let out = &data[i * per_image..(i + 1) * per_image];
                let r = postprocess::postprocess(
                    out,
                    &pipeline.layout,
                    input_size,
                    &p.letterbox,
                    &pipeline.post,
                );
                (r, micros(t, Instant::now()))
            })
            .collect::<Vec<_>>())
    });
    let took = t_run.elapsed();
    let now_ns = MonoNanos::now().get();
    match result {
        Ok(Ok(per_image)) => {
            for (p, (found, postprocess_us)) in prepared.drain(..).zip(per_image) {
                let timings = Timings {
                    queue_us: p.queue_us,
                    preprocess_us: p.preprocess_us,
                    inference_us,
                    postprocess_us,
                    total_us: 0,
                    batch_size: n as u32,
                };
                let found = match found {
                    Ok(f) => f,
                    Err(e) => {
                        fail(p.job, ErrorCode::Internal, e.to_string(), timings);
                        continue;
                    }
                };
                if deadline_passed(&p.job.request, now_ns) {
                    let msg = "deadline passed during inference; result discarded".into();
                    fail(p.job, ErrorCode::DeadlineExceeded, msg, timings);
                    continue;
                }
                let req = &p.job.request;
                let resp = InferenceResponse {
                    v: PROTOCOL_VERSION,
                    id: req.id,
                    model_id: req.model_id.clone(),
                    camera_id: req.camera_id.clone(),
                    frame_id: req.meta.frame_id,
                    detections: pipeline.detections(&found),
                    timings: Timings {
                        total_us: micros(p.job.received, Instant::now()),
                        ..timings
                    },
                    error: None,
                };
                p.job.reply.send(resp);
            }
        }
        Ok(Err(msg)) => {
            tracing::error!(%msg, "model output does not fit the layout");
            for p in prepared.drain(..) {
                fail(p.job, ErrorCode::Internal, msg.clone(), Timings::default());
            }
        }
        Err(e) => {
            tracing::error!(error = %e, batch = n, "inference failed");
            for p in prepared.drain(..) {
                let msg = format!("inference failed: {e}");
                fail(p.job, ErrorCode::ModelUnavailable, msg, Timings::default());
            }
        }
    }
    took
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto_schema::message::{FrameMeta, FrameRef};
    use proto_schema::pixel::{FrameGeometry, PixelFormat};

    fn request(deadline: Option<u64>) -> InferenceRequest {
        let g = FrameGeometry::packed(4, 2, PixelFormat::Nv12).unwrap();
        InferenceRequest {
            v: PROTOCOL_VERSION,
            id: 1,
            camera_id: "c".into(),
            model_id: "m".into(),
            frame: FrameRef {
                ring: "r".into(),
                generation: 1,
                slot: 0,
                seq: 2,
            },
            meta: FrameMeta::from_geometry(0, &g, 0),
            sent_ts_ns: 0,
            deadline_ts_ns: deadline,
        }
    }

    #[test]
    fn deadlines_use_the_given_clock() {
        assert!(!deadline_passed(&request(None), u64::MAX));
        assert!(!deadline_passed(&request(Some(100)), 100));
        assert!(deadline_passed(&request(Some(100)), 101));
        let now = MonoNanos::now().get();
        assert!(now > 0 && MonoNanos::now().get() >= now);
    }

    #[test]
    fn class_names_are_bounded() {
        let p = Pipeline {
            spec: crate::family::Family::Yolox.input_spec(416, 416),
            layout: OutputLayout {
                family: crate::family::Family::Yolox,
                num_classes: 2,
                num_anchors: 3549,
            },
            post: PostprocessConfig {
                score_threshold: 0.25,
                iou_threshold: 0.45,
                max_detections: 10,
            },
            names: vec!["é".repeat(100), "b".into()],
            max_batch: 1,
        };
        assert!(p.class_name(0).len() <= MAX_CLASS_NAME_LEN);
        assert_eq!(p.class_name(1), "b");
        assert_eq!(p.class_name(7), "class_7");
    }
}
