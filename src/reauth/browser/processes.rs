//! Finding a driver's Chromium processes, and killing the ones that outlive a teardown.

/// One Chromium process of a driver.
pub(super) struct BrowserProcess {
    pub(super) pid: u32,
    /// The browser process itself, not a helper (crash handler, zygote, renderer, utility).
    pub(super) main: bool,
}

/// This driver's Chromium processes: those whose environment carries `marker` (the browser
/// and its crash handlers) and those whose command line names the profile directory of one of
/// its browsers (zygotes, renderers and utilities, which Chromium starts with a scrubbed
/// environment). Profiles seen are added to `profiles`, so processes orphaned after the
/// browser process died are still recognised.
#[cfg(target_os = "linux")]
pub(super) fn find_browser_processes(
    marker: &str,
    profiles: &mut Vec<String>,
) -> Vec<BrowserProcess> {
    const PROFILE_FLAG: &str = "--user-data-dir=";
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let marker = marker.as_bytes();
    let processes: Vec<(u32, Vec<String>, bool)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let marked = std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == marker));
            Some((pid, args, marked))
        })
        .collect();
    for (_, args, marked) in &processes {
        if *marked {
            for profile in args.iter().filter_map(|a| a.strip_prefix(PROFILE_FLAG)) {
                if !profiles.iter().any(|p| p == profile) {
                    profiles.push(profile.to_owned());
                }
            }
        }
    }
    let mut found: Vec<BrowserProcess> = processes
        .into_iter()
        .filter_map(|(pid, args, marked)| {
            let profile = args.iter().find_map(|a| a.strip_prefix(PROFILE_FLAG));
            let ours = marked || profile.is_some_and(|dir| profiles.iter().any(|p| p == dir));
            // The crash handler carries the marker too, but no profile; helpers carry a
            // profile and a --type.
            let main =
                marked && profile.is_some() && !args.iter().any(|a| a.starts_with("--type="));
            ours.then_some(BrowserProcess { pid, main })
        })
        .collect();
    found.sort_unstable_by_key(|p| p.pid);
    found
}

#[cfg(not(target_os = "linux"))]
pub(super) fn find_browser_processes(
    _marker: &str,
    _profiles: &mut Vec<String>,
) -> Vec<BrowserProcess> {
    Vec::new()
}

#[cfg(unix)]
pub(super) fn kill_process(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(not(unix))]
pub(super) fn kill_process(_pid: u32) {}
