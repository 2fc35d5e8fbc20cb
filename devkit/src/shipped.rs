//! The shipped `warden` binary, which the dev kit runs whenever it needs a
//! real worker process: the bench measures that binary, not a copy of the
//! worker linked into `warden-dev`.
//!
//! It is looked for beside the running executable (`target/release/warden`
//! next to `target/release/warden-dev`, `/usr/local/bin/warden` next to
//! `/usr/local/bin/warden-dev` in the dev kit image), unless a path is given
//! (`--warden PATH` or [`ENV`]).

use std::path::{Path, PathBuf};

/// The environment variable naming the `warden` binary (also read by
/// `deploy/validate.sh`).
pub const ENV: &str = "WARDEN_BIN";

/// The `warden` binary is not where it was looked for.
#[derive(Debug, thiserror::Error)]
#[error(
    "no warden binary at {}: build it with `cargo build --release --bin warden` \
     (`cargo build --bin warden` for a debug build), or name one with --warden PATH or {ENV}",
    path.display()
)]
pub struct Missing {
    /// Where it was looked for.
    pub path: PathBuf,
}

/// The `warden` binary: `explicit` if given, else the one beside this
/// executable.
///
/// # Errors
/// [`Missing`] when there is no file at that path.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, Missing> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => beside_this_executable(),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Missing { path })
    }
}

fn beside_this_executable() -> PathBuf {
    let name = format!("warden{}", std::env::consts::EXE_SUFFIX);
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(&name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let e = locate(Some(Path::new("/nonexistent/warden"))).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/nonexistent/warden"), "{text}");
        assert!(
            text.contains("cargo build --release --bin warden"),
            "{text}"
        );
        assert!(text.contains("--warden PATH"), "{text}");
    }

    #[test]
    fn an_explicit_path_that_exists_is_taken_as_is() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(locate(Some(&exe)).unwrap(), exe);
    }
}
