//! The sandbox: suspect tasks run in a child process, so a task that kills
//! its process (abort, SIGSEGV, a memory bomb) or blocks its thread for ever
//! takes only that child with it, and the worker can tell exactly which task
//! did it.
//!
//! Why the worker cannot leave this to the broker: when a consumer dies, the
//! broker returns *every* message it held, running or only prefetched, as a
//! failed delivery, so its delivery counter charges all of them for one
//! task's crash, and the worker dies as often as the limit allows.
//!
//! - **Who is a suspect.** A delivery the broker redelivered (it was in
//!   flight when a session ended, so it may be what ended it), a retry of a
//!   task that already ran here, and every task of a type configured with
//!   `isolation = "always"`. Everything else runs in the worker as before, so
//!   with no suspects the sandbox costs one flag check per delivery.
//! - **Sharing.** Suspects share one sandbox process, started on first need,
//!   reused, and stopped after `sandbox_idle` with nothing to run.
//! - **Pinning the blame.** When a shared sandbox dies (or must be killed for
//!   a task past its hard deadline), each task that was in it runs again
//!   alone, in a fresh process of its own. A task that kills a sandbox it ran
//!   in alone (a fresh one, or a shared one that never ran anything else) is
//!   the culprit: [`Outcome::Crashed`]. Nobody else is charged an attempt or
//!   a delivery.
//! - **What a process cannot enforce on itself.** A hard timeout (the process
//!   is killed, the task gets a transient timeout) and a memory limit
//!   (`sandbox_memory`, enforced in the child with `RLIMIT_DATA`).
//!
//! The child is the worker's own executable (`/proc/self/exe`, so an upgrade
//! that replaces the file on disk cannot mix versions) with the worker's
//! arguments and environment plus [`wire::SOCKET_ENV`];
//! [`crate::cli::run_binary`] and [`crate::worker::run`] turn such a process
//! into a sandbox before doing anything else, and the worker sends it its effective
//! settings first. A binary built on the library therefore gets the sandbox,
//! with its own handlers, without any code of its own.

pub mod child;
pub mod wire;

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use secrecy::ExposeSecret;
use tokio::net::UnixListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_util::bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::amqp::envelope::Task;
use crate::channels::ChannelToken;
use crate::config::Settings;
use crate::observe::metrics::Metrics;
use crate::outcome::TaskError;
use wire::{Done, Job, WireToken};

/// The socket path this process was started with, if it is a sandbox.
#[must_use]
pub fn child_socket() -> Option<PathBuf> {
    std::env::var_os(wire::SOCKET_ENV).map(PathBuf::from)
}

/// How a suspect task ended.
#[derive(Debug)]
pub enum Outcome {
    /// The handler returned (a panic or soft timeout included).
    Ran(Result<(), TaskError>),
    /// It killed the sandbox it ran in alone; how the process ended.
    Crashed(String),
    /// It ran alone past its hard deadline and its process was killed.
    TimedOut,
    /// No sandbox process could be started.
    Unavailable(String),
}

/// One task for the sandbox.
#[derive(Debug)]
pub struct Request<'a> {
    /// The decoded task.
    pub task: &'a Task,
    /// Its attempt number.
    pub attempt: u32,
    /// Whether the broker redelivered it.
    pub redelivered: bool,
    /// Its channel's token, if any.
    pub token: Option<&'a ChannelToken>,
    /// The delivery's trace context, if traced.
    pub traceparent: Option<String>,
}

/// What the child process is: a program and its arguments.
#[derive(Debug, Clone)]
pub struct Command {
    program: PathBuf,
    args: Vec<OsString>,
}

impl Command {
    /// This very executable with this process's arguments: the child parses
    /// the same command line and configuration and builds the same handlers.
    #[must_use]
    pub fn this_process() -> Self {
        let program = if cfg!(target_os = "linux") {
            PathBuf::from("/proc/self/exe")
        } else {
            std::env::current_exe().unwrap_or_else(|_| PathBuf::from("warden"))
        };
        Self {
            program,
            args: std::env::args_os().skip(1).collect(),
        }
    }

    /// Another program, e.g. the `warden` binary from a test or a bench that
    /// runs a worker inside its own process.
    #[must_use]
    pub fn new(program: impl Into<PathBuf>, args: impl IntoIterator<Item = OsString>) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().collect(),
        }
    }
}

/// Runs suspect tasks in child processes; see the module docs.
#[derive(Debug, Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Arc<Settings>,
    command: Command,
    metrics: Arc<Metrics>,
    /// The shared sandbox, if one is running.
    shared: tokio::sync::Mutex<Option<Arc<Proc>>>,
    /// Bounds the processes started to re-run tasks alone after a shared
    /// sandbox died with many tasks in it.
    solo: Semaphore,
    seq: AtomicU64,
}

/// Processes started at once to re-run the tasks of a dead shared sandbox
/// one by one: enough to get through a few dozen quickly on two cores
/// without a fork storm.
const SOLO_AT_ONCE: usize = 4;
/// How long a child has to connect back before it counts as failing to start.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The hard deadline is the task timeout plus this: the child's own timeout
/// answers first for any handler that yields.
const HARD_DEADLINE_SLACK: Duration = Duration::from_secs(2);

impl Sandbox {
    /// A sandbox running `command`; nothing starts until the first suspect.
    #[must_use]
    pub fn new(settings: Arc<Settings>, metrics: Arc<Metrics>, command: Command) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                command,
                metrics,
                shared: tokio::sync::Mutex::new(None),
                solo: Semaphore::new(SOLO_AT_ONCE),
                seq: AtomicU64::new(0),
            }),
        }
    }

    /// Runs one suspect: in the shared sandbox first and, if that dies or
    /// must be killed while it is in it, again alone in a fresh one, whose
    /// verdict stands.
    pub async fn run(&self, request: &Request<'_>) -> Outcome {
        let deadline = self.inner.settings.task_timeout + HARD_DEADLINE_SLACK;
        let shared = match self.shared().await {
            Ok(proc) => proc,
            Err(e) => return Outcome::Unavailable(e.to_string()),
        };
        let attempt = shared.run(self.job(request), deadline).await;
        // A process that never ran anything else is as good as one started
        // for this task alone: its verdict stands.
        if shared.jobs_sent.load(Ordering::Acquire) == 1 {
            match attempt {
                Attempt::Died(how) => return Outcome::Crashed(how),
                Attempt::TimedOut => return Outcome::TimedOut,
                Attempt::Done(_) => {}
            }
        }
        match attempt {
            Attempt::Done(result) => return Outcome::Ran(result),
            Attempt::Died(how) => {
                tracing::debug!(task.id = %request.task.id, sandbox = %how, "the shared sandbox died with this task in it; running it again alone");
            }
            Attempt::TimedOut => {
                tracing::debug!(task.id = %request.task.id, "the shared sandbox was killed past a hard deadline; running this task again alone");
            }
        }
        let _slot = self.inner.solo.acquire().await;
        let alone = match Proc::start(&self.inner).await {
            Ok(proc) => proc,
            Err(e) => return Outcome::Unavailable(e.to_string()),
        };
        let outcome = match alone.run(self.job(request), deadline).await {
            Attempt::Done(result) => Outcome::Ran(result),
            Attempt::Died(how) => Outcome::Crashed(how),
            Attempt::TimedOut => Outcome::TimedOut,
        };
        alone.stop.cancel();
        outcome
    }

    fn job(&self, r: &Request<'_>) -> Job {
        Job {
            seq: self.inner.seq.fetch_add(1, Ordering::Relaxed),
            task: r.task.clone(),
            attempt: r.attempt,
            redelivered: r.redelivered,
            token: r.token.map(|t| WireToken {
                access_token: t.access_token.expose_secret().to_owned(),
                version: t.version,
            }),
            traceparent: r.traceparent.clone(),
        }
    }

    /// The running shared sandbox, or a new one.
    async fn shared(&self) -> Result<Arc<Proc>, StartError> {
        let mut shared = self.inner.shared.lock().await;
        if let Some(proc) = shared.as_ref()
            && proc.alive()
        {
            // Under the lock, so the idle reaper cannot stop it between here
            // and the job's arrival.
            proc.touch();
            return Ok(proc.clone());
        }
        let proc = Proc::start(&self.inner).await?;
        tokio::spawn(stop_when_idle(
            Arc::downgrade(&self.inner),
            Arc::downgrade(&proc),
        ));
        *shared = Some(proc.clone());
        Ok(proc)
    }
}

/// Stops the shared sandbox `proc` once it has had nothing to run for
/// `sandbox_idle`; ends when it is gone or the sandbox is dropped.
async fn stop_when_idle(inner: Weak<Inner>, proc: Weak<Proc>) {
    loop {
        let Some(idle) = inner.upgrade().map(|i| i.settings.sandbox_idle) else {
            return;
        };
        tokio::time::sleep((idle / 4).max(Duration::from_millis(100))).await;
        let (Some(inner), Some(p)) = (inner.upgrade(), proc.upgrade()) else {
            return;
        };
        if !p.alive() {
            return;
        }
        if p.idle_for() >= idle {
            let mut shared = inner.shared.lock().await;
            // Checked again under the lock: a task may have just taken it.
            if p.idle_for() >= idle && shared.as_ref().is_some_and(|s| Arc::ptr_eq(s, &p)) {
                *shared = None;
                p.stop.cancel();
                tracing::debug!(pid = p.pid, "stopping the idle shared sandbox");
                return;
            }
        }
    }
}

/// What became of one job in one process.
enum Attempt {
    Done(Result<(), TaskError>),
    /// The process died with the job in it: how.
    Died(String),
    /// Past the hard deadline; the process was killed.
    TimedOut,
}

type Reply = oneshot::Sender<Result<(), TaskError>>;

/// One sandbox process and the task that talks to it.
#[derive(Debug)]
struct Proc {
    pid: u32,
    jobs: mpsc::UnboundedSender<(Job, Reply)>,
    /// How the process ended, once it has.
    ended: watch::Receiver<Option<String>>,
    /// Kill it now (a hard deadline passed).
    kill: CancellationToken,
    /// Hang up: it exits by itself, or is killed after a short grace.
    stop: CancellationToken,
    in_flight: AtomicUsize,
    /// Jobs ever handed to this process.
    jobs_sent: AtomicU64,
    last_used: Mutex<Instant>,
}

/// Why a sandbox process could not be started; the suspect then fails
/// transiently and is retried.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("creating the sandbox socket directory: {0}")]
    SocketDir(#[source] std::io::Error),
    #[error("binding the sandbox socket {}: {why}", path.display())]
    Bind {
        path: std::path::PathBuf,
        #[source]
        why: std::io::Error,
    },
    #[error("starting the sandbox process {}: {why}", program.display())]
    Spawn {
        program: std::path::PathBuf,
        #[source]
        why: std::io::Error,
    },
    #[error("accepting the sandbox's connection: {0}")]
    Accept(#[source] std::io::Error),
    #[error("the sandbox process exited before it was ready: {0}")]
    Exited(String),
    #[error("the sandbox process did not connect within {0:?}")]
    NoConnect(std::time::Duration),
    #[error("encoding the settings for the sandbox: {0}")]
    Settings(#[source] serde_json::Error),
    #[error("sending the sandbox its settings: {0}")]
    Hello(#[source] std::io::Error),
}

impl Proc {
    async fn start(inner: &Inner) -> Result<Arc<Self>, StartError> {
        let dir = tempfile::Builder::new()
            .prefix("warden-sandbox-")
            .tempdir()
            .map_err(StartError::SocketDir)?;
        let path = dir.path().join("socket");
        let listener = UnixListener::bind(&path).map_err(|why| StartError::Bind {
            path: path.clone(),
            why,
        })?;
        // Spawned from a runtime worker thread, which lives as long as the
        // runtime: the child's parent-death signal follows the thread that
        // forked it, not the process.
        let mut child = tokio::process::Command::new(&inner.command.program)
            .args(&inner.command.args)
            .env(wire::SOCKET_ENV, &path)
            .env(wire::PARENT_ENV, std::process::id().to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|why| StartError::Spawn {
                program: inner.command.program.clone(),
                why,
            })?;
        let pid = child.id().unwrap_or_default();
        let stream = tokio::select! {
            accepted = listener.accept() => accepted.map_err(StartError::Accept)?.0,
            status = child.wait() => {
                return Err(StartError::Exited(status.map_or_else(|e| e.to_string(), describe)));
            }
            () = tokio::time::sleep(START_TIMEOUT) => return Err(StartError::NoConnect(START_TIMEOUT)),
        };
        // Connected: the socket file has done its job.
        drop(listener);
        drop(dir);
        let mut link = wire::link(stream, inner.settings.max_body_bytes);
        let hello = serde_json::to_vec(&*inner.settings).map_err(StartError::Settings)?;
        link.send(Bytes::from(hello))
            .await
            .map_err(StartError::Hello)?;
        inner.metrics.sandbox_starts.inc();
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let (ended_tx, ended) = watch::channel(None);
        let proc = Arc::new(Self {
            pid,
            jobs,
            ended,
            kill: CancellationToken::new(),
            stop: CancellationToken::new(),
            in_flight: AtomicUsize::new(0),
            jobs_sent: AtomicU64::new(0),
            last_used: Mutex::new(Instant::now()),
        });
        tokio::spawn(drive(
            link,
            child,
            jobs_rx,
            ended_tx,
            proc.kill.clone(),
            proc.stop.clone(),
            inner.metrics.clone(),
        ));
        Ok(proc)
    }

    fn alive(&self) -> bool {
        self.ended.borrow().is_none() && !self.stop.is_cancelled() && !self.kill.is_cancelled()
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_used.lock() {
            *t = Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        self.last_used
            .lock()
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    async fn run(&self, job: Job, deadline: Duration) -> Attempt {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.jobs_sent.fetch_add(1, Ordering::AcqRel);
        let attempt = self.run_inner(job, deadline).await;
        self.touch();
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        attempt
    }

    async fn run_inner(&self, job: Job, deadline: Duration) -> Attempt {
        let (reply, answer) = oneshot::channel();
        if self.jobs.send((job, reply)).is_err() {
            return Attempt::Died(self.how_it_ended().await);
        }
        match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(result)) => Attempt::Done(result),
            Ok(Err(_)) => Attempt::Died(self.how_it_ended().await),
            Err(_) => {
                self.kill.cancel();
                let _ = self.how_it_ended().await;
                Attempt::TimedOut
            }
        }
    }

    async fn how_it_ended(&self) -> String {
        let mut ended = self.ended.clone();
        match ended.wait_for(Option::is_some).await {
            Ok(how) => how.clone().unwrap_or_default(),
            Err(_) => "the sandbox process is gone".into(),
        }
    }
}

/// Owns one child: sends it jobs, routes its answers, and records how it
/// ended *before* dropping the answers still owed, so that every waiter sees
/// why its answer will never come.
async fn drive(
    link: wire::Link,
    mut child: tokio::process::Child,
    mut jobs: mpsc::UnboundedReceiver<(Job, Reply)>,
    ended: watch::Sender<Option<String>>,
    kill: CancellationToken,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
) {
    metrics.sandbox_processes.inc();
    let (mut to_child, mut from_child) = link.split::<Bytes>();
    let mut owed: HashMap<u64, Reply> = HashMap::new();
    let mut killed = false;
    loop {
        tokio::select! {
            () = kill.cancelled() => {
                let _ = child.start_kill();
                killed = true;
                break;
            }
            () = stop.cancelled() => break,
            job = jobs.recv() => {
                let Some((job, reply)) = job else { break };
                let Ok(bytes) = serde_json::to_vec(&job) else {
                    let _ = reply.send(Err(TaskError::permanent("the task could not be encoded for the sandbox")));
                    continue;
                };
                owed.insert(job.seq, reply);
                if to_child.send(bytes.into()).await.is_err() {
                    break;
                }
            }
            frame = from_child.next() => {
                let Some(Ok(frame)) = frame else { break };
                if let Ok(done) = serde_json::from_slice::<Done>(&frame)
                    && let Some(reply) = owed.remove(&done.seq)
                {
                    let _ = reply.send(done.result);
                }
            }
        }
    }
    // Hang up (the child exits on EOF), give it a moment, then make sure.
    drop((to_child, from_child));
    let status = match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            let _ = child.start_kill();
            child.wait().await
        }
    };
    let how = status.map_or_else(|e| format!("could not be waited for: {e}"), describe);
    if !owed.is_empty() {
        metrics.sandbox_deaths.inc();
        if killed {
            tracing::warn!(
                tasks = owed.len(),
                "killed a sandbox process past a task's hard deadline"
            );
        } else {
            tracing::warn!(tasks = owed.len(), sandbox = %how, "a sandbox process died with tasks in it");
        }
    }
    let _ = ended.send(Some(how));
    drop(owed);
    metrics.sandbox_processes.dec();
}

/// "killed by signal SIGSEGV (core dumped)", "exited with status 3".
#[must_use]
pub fn describe(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let name = nix::sys::signal::Signal::try_from(sig)
            .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned());
        let hint = match name.as_str() {
            "SIGABRT" => {
                " (an abort: a failed allocation under the memory limit, a panic in a no-unwind context, or abort())"
            }
            "SIGKILL" => " (killed from outside: the kernel's OOM killer, or an operator)",
            _ => "",
        };
        let core = if status.core_dumped() {
            " (core dumped)"
        } else {
            ""
        };
        format!("killed by signal {name}{core}{hint}")
    } else {
        format!("exited with status {}", status.code().unwrap_or(-1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_name_the_signal_or_the_code() {
        assert_eq!(
            describe(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
        assert!(describe(ExitStatus::from_raw(11)).starts_with("killed by signal SIGSEGV"));
        assert!(describe(ExitStatus::from_raw(6)).contains("memory limit"));
    }
}
