//! The real `warden` binary: a long-running child process, or one command run
//! to completion.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::eventually;

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `warden` binary as a child process; SIGKILLed on drop.
pub struct WardenProc {
    pub child: Child,
    pub admin_port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl WardenProc {
    pub fn spawn(args: &[&str], env: &[(String, String)]) -> Self {
        Self::spawn_wrapped(&[], args, env)
    }

    /// [`Self::spawn`] under `wrapper`, a command that execs the rest (e.g.
    /// `prlimit --data=N --`, a container's memory limit): the process is
    /// still warden's own.
    pub fn spawn_wrapped(wrapper: &[&str], args: &[&str], env: &[(String, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("stderr.log");
        let admin_port = free_port();
        let bin = env!("CARGO_BIN_EXE_warden");
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(args)
            .env_remove("WARDEN_CONFIG")
            .env("WARDEN_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
            .env("WARDEN_LOG_FORMAT", "json")
            .env("RUST_LOG", "info,lapin=off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn warden");
        Self {
            child,
            admin_port,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        let url = format!("http://127.0.0.1:{}{path}", self.admin_port);
        let r = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        Some((status, r.text().await.unwrap_or_default()))
    }

    /// `/metrics` as sample → value (`name{labels}` exactly as exported).
    pub async fn metrics(&self) -> HashMap<String, f64> {
        let (status, text) = self.get("/metrics").await.expect("/metrics answers");
        assert_eq!(status, 200);
        parse_metrics(&text)
    }

    pub async fn ready(&self) -> bool {
        matches!(self.get("/readyz").await, Some((200, _)))
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        assert!(
            eventually(timeout, async || self.ready().await).await,
            "worker not ready after {timeout:?}; log:\n{}",
            self.logs()
        );
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the process to exit and returns its status.
    pub async fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut status = None;
        let child = &mut self.child;
        let exited = eventually(timeout, async || {
            status = child.try_wait().unwrap();
            status.is_some()
        })
        .await;
        assert!(
            exited,
            "warden did not exit within {timeout:?}; log:\n{}",
            self.logs()
        );
        status.expect("exited")
    }
}

impl Drop for WardenProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion with `args` and env, returning (code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    run_cli_with_stdin(args, env, "")
}

/// [`run_cli`] with `input` on the command's stdin. The command may exit
/// before it reads all of it; that is its answer.
pub fn run_cli_with_stdin(
    args: &[&str],
    env: &[(&str, &str)],
    input: &str,
) -> (i32, String, String) {
    use std::io::Write as _;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.args(args)
        .env_remove("WARDEN_CONFIG")
        .env("WARDEN_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,lapin=off")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run warden");
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().expect("run warden");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Parses Prometheus/OpenMetrics text into sample → value; comments skipped.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}
