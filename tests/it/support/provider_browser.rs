//! Test support for browser logins against the simulated provider: the login flow that fits
//! its pages, credentials, the Playwright environment check, the turns that keep Chromium tests
//! one at a time, and process accounting.

#![allow(dead_code)] // each test binary uses a different part of it

use std::collections::HashMap;
use std::path::PathBuf;

use secrecy::SecretString;
use warden::reauth::browser::LoginDriverConfig;
use warden::reauth::flow::{ChannelCredentials, OAuthProvider, SecretRef};

/// Tests that drive Chromium, in-process or through `warden reauth`, run one at a time: two
/// cores, a login that times out under load would count as a second login, and process
/// accounting must not see another test's browser.
static BROWSER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This test's turn with Chromium: checks that Chromium and the driver are installed
/// ([`require_playwright`]), then keeps every other browser test waiting until dropped.
pub async fn browser_turn() -> tokio::sync::MutexGuard<'static, ()> {
    require_playwright();
    BROWSER_LOCK.lock().await
}

/// Makes sure Chromium and the Playwright driver are installed, running
/// `scripts/setup-playwright.sh` (idempotent, locked) when `PLAYWRIGHT_DRIVER_PATH` names a
/// directory that is not set up yet; fails with instructions when the variable is unset,
/// since a test cannot set it for the driver (`set_var` is unsafe and unsafe is forbidden).
pub fn require_playwright() {
    static SETUP: std::sync::Once = std::sync::Once::new();
    let Some(path) = std::env::var_os("PLAYWRIGHT_DRIVER_PATH") else {
        panic!(
            "PLAYWRIGHT_DRIVER_PATH is not set. Run `eval \"$(scripts/setup-playwright.sh)\"` \
             (installs Chromium and the pinned driver) and run the tests again, or set it in \
             .cargo/config.toml [env]."
        );
    };
    let path = PathBuf::from(path);
    let ready = |path: &PathBuf| {
        path.join("node").exists()
            && path.join("package/cli.js").exists()
            && std::path::Path::new("/usr/bin/chromium").exists()
    };
    SETUP.call_once(|| {
        if !ready(&path) {
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup-playwright.sh");
            let status = std::process::Command::new("bash")
                .arg(script)
                .env("PLAYWRIGHT_DRIVER_DIR", &path)
                .stdout(std::process::Stdio::null())
                .status()
                .expect("run scripts/setup-playwright.sh");
            assert!(status.success(), "scripts/setup-playwright.sh failed");
        }
    });
    assert!(
        ready(&path),
        "PLAYWRIGHT_DRIVER_PATH={} lacks node or package/cli.js, or /usr/bin/chromium is missing; \
         run scripts/setup-playwright.sh",
        path.display()
    );
}

/// The client secret lives in a file, as a mounted secret would.
pub fn client_secret_file(dir: &tempfile::TempDir, secret: &str) -> SecretRef {
    let path = dir.path().join("client-secret");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    SecretRef::File(path)
}

/// A provider entry pointing at the simulator at `base`.
pub fn simulator_provider(base: &str, client_id: &str, client_secret: SecretRef) -> OAuthProvider {
    warden_devkit::provider::oauth_client(base, client_id, client_secret).unwrap()
}

pub fn credentials(channel: &str, username: &str, password: &str) -> ChannelCredentials {
    ChannelCredentials::new(channel)
        .with("username", SecretString::from(username.to_owned()))
        .with("password", SecretString::from(password.to_owned()))
}

pub fn driver_config(artifacts: Option<PathBuf>) -> LoginDriverConfig {
    LoginDriverConfig {
        artifacts_dir: artifacts,
        // The simulator's host, so warming the browser up launches it as the first login
        // will want it.
        resolvable_hosts: vec!["127.0.0.1".into()],
        ..LoginDriverConfig::default()
    }
}

/// (pid, parent pid, command name) of every process.
fn process_table() -> Vec<(u32, u32, String)> {
    let mut table = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may contain spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let mut rest = stat[close + 2..].split(' ');
        let state = rest.next().unwrap_or("");
        if state == "Z" {
            continue; // exited, only waiting to be reaped
        }
        let ppid = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        table.push((pid, ppid, comm));
    }
    table
}

/// Live processes named `name` whose parent is `parent`.
pub fn children_named(parent: u32, name: &str) -> Vec<u32> {
    process_table()
        .into_iter()
        .filter(|(_, ppid, comm)| *ppid == parent && comm == name)
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Live node and Chromium processes that descend from this test process.
pub fn browser_descendants() -> Vec<(u32, String)> {
    let table = process_table();
    let mut children: HashMap<u32, Vec<(u32, String)>> = HashMap::new();
    for (pid, ppid, comm) in &table {
        children
            .entry(*ppid)
            .or_default()
            .push((*pid, comm.clone()));
    }
    let mut found = Vec::new();
    let mut stack = vec![std::process::id()];
    while let Some(pid) = stack.pop() {
        for (child, comm) in children.get(&pid).into_iter().flatten() {
            stack.push(*child);
            if comm.contains("node") || comm.contains("chrom") {
                found.push((*child, comm.clone()));
            }
        }
    }
    found
}

/// Whether `pid` is a live process (not gone, not a zombie awaiting its reaper).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// Asserts that every process of `processes` exits within `within`. A child
/// outlives its parent only as an orphan re-parented away from this test, so
/// each recorded pid is looked up rather than the tree.
pub async fn assert_exited(processes: &[(u32, String)], within: std::time::Duration) {
    assert!(
        super::eventually(within, async || processes
            .iter()
            .all(|(pid, _)| !alive(*pid)))
        .await,
        "still running after {within:?}: {:?}",
        processes
            .iter()
            .filter(|(pid, _)| alive(*pid))
            .collect::<Vec<_>>()
    );
}
