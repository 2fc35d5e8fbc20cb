//! What the worker and its sandbox process say to each other: one JSON
//! message per length-delimited frame over a Unix socket. The worker first
//! sends its settings, then a [`Job`] per task; the sandbox answers each with a [`Done`] carrying the
//! same `seq`, in whatever order the handlers finish.

use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::amqp::envelope::Task;
use crate::outcome::TaskError;

/// Environment variable that turns a warden process into a sandbox: the path
/// of the worker's socket to connect to.
pub const SOCKET_ENV: &str = "WARDEN_SANDBOX_SOCKET";
/// Environment variable holding the worker's pid, so a sandbox whose worker
/// is already gone when it starts exits instead of running orphaned.
pub const PARENT_ENV: &str = "WARDEN_SANDBOX_PARENT";

/// One task to run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Job {
    /// Matches the answer to the question.
    pub seq: u64,
    /// The decoded task.
    pub task: Task,
    /// Its attempt number (1-based).
    pub attempt: u32,
    /// Whether the broker redelivered it.
    pub redelivered: bool,
    /// The channel's token, if the task acts for one. It crosses a private
    /// socket between two processes of the same user and is never logged.
    pub token: Option<WireToken>,
    /// W3C `traceparent` of the delivery's process span, so the handler's
    /// spans in the sandbox join the task's trace.
    pub traceparent: Option<String>,
}

/// A channel token on the wire.
#[derive(Serialize, Deserialize)]
pub struct WireToken {
    /// The bearer token.
    pub access_token: String,
    /// Its version.
    pub version: u64,
}

impl std::fmt::Debug for WireToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireToken")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The handler's result for job `seq`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Done {
    /// The job's `seq`.
    pub seq: u64,
    /// What the handler returned (a panic or a soft timeout already turned
    /// into a [`TaskError`] by the sandbox).
    pub result: Result<(), TaskError>,
}

/// A framed socket: 4-byte big-endian length, then the JSON.
pub type Link = Framed<UnixStream, LengthDelimitedCodec>;

/// Frames `stream`, allowing messages a little larger than the largest body.
pub fn link(stream: UnixStream, max_body_bytes: usize) -> Link {
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(max_frame(max_body_bytes))
        .new_codec();
    Framed::new(stream, codec)
}

/// The largest message: JSON escaping can double a body, and the rest of a
/// job (or the settings the worker sends first) is small.
#[must_use]
pub fn max_frame(max_body_bytes: usize) -> usize {
    max_body_bytes.saturating_mul(2).saturating_add(1024 * 1024)
}
