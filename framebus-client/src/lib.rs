//! The client of the model-server Unix-socket protocol (`docs/protocol.md`), the only one
//! in the repository: core-agent's stream agents and health probe, the bench harness and
//! the tests all use it.
//!
//! - [`Connection`]: one framed stream (4-byte length prefix, JSON payload), the length
//!   checked against the limit before any payload buffer exists; cancel-safe reads.
//!   Both ends of the protocol use it.
//! - [`Client`] (tokio) and [`BlockingClient`] (std): connect with a timeout, pipeline
//!   any number of requests on one connection (bounded by
//!   [`ClientOptions::max_in_flight`]), answers matched to requests by id whatever order
//!   they come in, a timeout per send and per answer.
//! - Typed errors, one enum per operation: [`ConnectError`], [`SendError`],
//!   [`CallError`], [`InferError`]; a server's error code is an
//!   [`ErrorCode`](proto_schema::error::ErrorCode), never only text.
//! - [`Reconnect`] with [`Backoff`]: reconnects a dropped connection, no faster than the
//!   back-off allows.
//! - [`ring`]: open a ring and turn its newest frame into the request's frame reference.
//!
//! ```no_run
//! use std::time::Duration;
//! use framebus_client::{ring, Client, ClientOptions, InferError};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let options = ClientOptions::default().request_timeout(Duration::from_secs(2));
//! let client = Client::connect_with("/run/framebus/yolox.sock", options).await?;
//! let reader = ring::open_ring("/dev/shm/framebus", "cam1")?;
//! if let Some(frame) = ring::latest_frame(&reader)? {
//!     let request = frame.request("cam1", "yolox", Some(Duration::from_millis(500)));
//!     // Several requests may be in flight on one client: `tokio::join!` them.
//!     match client.infer(request).await {
//!         Ok(answer) => println!("{} detections", answer.detections.len()),
//!         Err(InferError::Server { code, .. }) if code.is_retryable() => {} // newer frame
//!         Err(e) => return Err(e.into()),
//!     }
//! }
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod blocking;
mod client;
mod connection;
mod error;
mod options;
pub mod raw;
pub mod ring;

pub use blocking::{connect as connect_blocking, BlockingClient};
pub use client::{connect, split, Client, Reconnect, RequestSender, ResponseReceiver};
pub use connection::{Connection, ReadError};
pub use error::{CallError, Closed, ConnectError, InferError, SendError};
pub use options::{Backoff, ClientOptions};
