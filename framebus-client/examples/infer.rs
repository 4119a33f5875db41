//! Asks a model server about the newest frame of a ring, several requests in flight:
//!
//! ```text
//! cargo run -p framebus-client --example infer -- SOCKET RING_DIR RING MODEL_ID [COUNT]
//! ```

use std::time::Duration;

use framebus_client::{ring, Client, ClientOptions, InferError};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, ring_dir, ring_name, model_id, rest @ ..] = args.as_slice() else {
        eprintln!("usage: infer SOCKET RING_DIR RING MODEL_ID [COUNT]");
        std::process::exit(2);
    };
    let count: usize = rest.first().map_or(Ok(4), |c| c.parse())?;
    let options = ClientOptions::default().request_timeout(Duration::from_secs(10));
    let client = Client::connect_with(socket, options).await?;
    let status = client.status().await?;
    println!(
        "{} ({}, {}) is {:?}",
        status.model_id, status.family, status.provider, status.state
    );
    let reader = ring::open_ring(ring_dir, ring_name)?;
    let Some(frame) = ring::latest_frame(&reader)? else {
        println!("ring {ring_name} holds no frame yet");
        return Ok(());
    };
    // `count` requests on one connection at once; each answer finds its own call.
    let calls = (0..count).map(|_| {
        let request = frame.request(ring_name, model_id, Some(Duration::from_secs(2)));
        client.infer(request)
    });
    for (i, answer) in join_all(calls).await.into_iter().enumerate() {
        match answer {
            Ok(r) => println!(
                "#{i}: frame {} -> {} detections in {} us",
                r.frame_id,
                r.detections.len(),
                r.timings.total_us
            ),
            Err(InferError::Server { code, message, .. }) => println!("#{i}: {code}: {message}"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Polls all futures on this task (no extra crate for one `join_all`).
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (f, slot) in pinned.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().map(|v| v.expect("all done")).collect()
}
