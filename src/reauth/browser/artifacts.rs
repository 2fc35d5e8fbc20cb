//! What a failed login leaves for a human to look at: a masked screenshot, the redacted page
//! HTML and a summary, in a directory only the owner can read, pruned by count and age.

use std::path::{Path, PathBuf};
use std::time::Duration;

use playwright_rs::{Page, ScreenshotOptions};
use tokio::time::timeout;

use super::context::duration_ms;
use super::error::{LoginError, LoginErrorKind};
use crate::reauth::flow::ChannelCredentials;

/// Bound on taking the failure screenshot and HTML.
const ARTIFACT_TIMEOUT: Duration = Duration::from_secs(5);
/// Login artifacts kept at most: the newest this many directories...
const MAX_ARTIFACT_DIRS: usize = 50;
/// ...and none older than this. Screenshots of login pages are sensitive; they are for
/// looking into a recent failure, not an archive.
const ARTIFACT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Runs in the page before the screenshot: every form field that holds text shows a mask
/// instead, so no typed value (password, TOTP code) is ever drawn into the image.
const MASK_FIELDS: &str = "document.querySelectorAll('input, textarea').forEach(e => { \
     if (e.type !== 'hidden' && e.type !== 'submit' && e.type !== 'button' && e.value) \
     { e.value = '********'; } })";

/// Saves the artifacts of the failed login on `page` into a new directory under `root`, and
/// prunes old ones. `None` when the directory cannot be created.
pub(super) async fn save(
    root: &Path,
    page: &Page,
    credentials: &ChannelCredentials,
    error: &LoginError,
) -> Option<PathBuf> {
    let dir = match artifact_dir(root, credentials.channel(), error.kind()) {
        Ok(dir) => dir,
        Err(e) => {
            tracing::warn!(error = %e, "cannot create the login artifacts directory");
            return None;
        }
    };
    if let Some(png) = masked_screenshot(page).await {
        write_private(&dir.join("page.png"), &png);
    }
    if let Ok(Ok(html)) = timeout(ARTIFACT_TIMEOUT, page.content()).await
        && let Some(html) = redact_html(&html, credentials)
    {
        write_private(&dir.join("page.html"), html.as_bytes());
    }
    let summary = format!(
        "channel: {}\nkind: {}\nurl: {}\nerror: {}\n",
        credentials.channel(),
        error.kind(),
        credentials.redact(&page.url()),
        error.detail()
    );
    write_private(&dir.join("error.txt"), summary.as_bytes());
    tracing::info!(dir = %dir.display(), "saved login failure artifacts");
    prune_artifacts(root, MAX_ARTIFACT_DIRS, ARTIFACT_MAX_AGE);
    Some(dir)
}

/// A full-page screenshot with every form field masked first: without the mask, a field
/// typed into shows its value (or a password's length) in the image. If masking fails, no
/// screenshot is taken.
async fn masked_screenshot(page: &Page) -> Option<Vec<u8>> {
    let masked = matches!(
        timeout(ARTIFACT_TIMEOUT, page.evaluate_expression(MASK_FIELDS)).await,
        Ok(Ok(()))
    );
    if !masked {
        return None;
    }
    let options = ScreenshotOptions::builder()
        .full_page(true)
        .timeout(duration_ms(ARTIFACT_TIMEOUT))
        .build();
    timeout(ARTIFACT_TIMEOUT, page.screenshot(options))
        .await
        .ok()?
        .ok()
}

/// The page's HTML with every form value and script body replaced, found by parsing the
/// HTML (a string search misses a secret that the page escaped or encoded), then with any
/// credential still in the text replaced too. `None` when the page cannot be parsed: then
/// nothing is saved rather than something unredacted.
fn redact_html(html: &str, credentials: &ChannelCredentials) -> Option<String> {
    use lol_html::html_content::ContentType;
    use lol_html::{RewriteStrSettings, element, rewrite_str};
    const MASK: &str = "[REDACTED]";
    let settings = RewriteStrSettings::new()
        // What a field holds, typed or put there by the page (CSRF tokens, state).
        .append_element_content_handler(element!("[value]", |el| {
            el.set_attribute("value", MASK)?;
            Ok(())
        }))
        .append_element_content_handler(element!("textarea, script", |el| {
            el.set_inner_content(MASK, ContentType::Text);
            Ok(())
        }));
    let rewritten = rewrite_str(html, settings).ok()?;
    Some(credentials.redact(&rewritten))
}

/// Deletes artifact directories under `root` beyond the newest `keep`, and any older than
/// `max_age`. Names start with a UTC timestamp, so they sort by age.
fn prune_artifacts(root: &Path, keep: usize, max_age: Duration) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut dirs: Vec<(String, PathBuf, Option<std::time::SystemTime>)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.path(),
                modified,
            )
        })
        .collect();
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (i, (_, path, modified)) in dirs.iter().enumerate() {
        let too_old = modified
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > max_age);
        if (i >= keep || too_old)
            && let Err(e) = std::fs::remove_dir_all(path)
        {
            tracing::warn!(dir = %path.display(), error = %e, "cannot prune a login artifacts directory");
        }
    }
}

fn artifact_dir(root: &Path, channel: &str, kind: LoginErrorKind) -> std::io::Result<PathBuf> {
    create_private_dir(root)?;
    let safe: String = channel
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let kind = kind.to_string().replace(' ', "-");
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let dir = root.join(format!("{stamp}-{safe}-{kind}-{suffix}"));
    create_private_dir(&dir)?;
    Ok(dir)
}

/// Creates `dir` (and parents) readable by the owner only, tightening it if it already
/// existed: screenshots of login pages are sensitive.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let written = options.open(path).and_then(|mut f| f.write_all(bytes));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot write a login artifact");
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    #[test]
    fn html_is_redacted_by_parsing_not_by_string_search() {
        let credentials = ChannelCredentials::new("acme")
            .with("password", SecretString::from("p@ss<word>".to_owned()));
        // The page escaped the password, so replacing the raw string would miss it.
        let html = r#"<html><body><form>
            <input name="user" value="acme-user">
            <input type="password" name="password" value="p&#64;ss&lt;word&gt;">
            <input type="hidden" name="csrf" value="csrf-123">
            <textarea name="note">p@ss&lt;word&gt;</textarea>
            </form><script>var typed = "p@ss<word>";</script>
            <p>Signed in as p@ss<word></p></body></html>"#;
        let out = redact_html(html, &credentials).unwrap();
        for leaked in [
            "acme-user",
            "p&#64;ss",
            "csrf-123",
            "var typed",
            "p@ss<word>",
        ] {
            assert!(!out.contains(leaked), "{leaked} in {out}");
        }
        assert!(
            out.contains(r#"name="password" value="[REDACTED]""#),
            "{out}"
        );
        assert!(out.contains("Signed in as [REDACTED]"), "{out}");
    }

    #[test]
    fn artifacts_are_pruned_to_the_newest_and_the_recent() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::create_dir(root.path().join(format!("20260101T00000{i}.000Z-acme"))).unwrap();
        }
        prune_artifacts(root.path(), 3, Duration::from_secs(3600));
        let mut left: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "20260101T000002.000Z-acme",
                "20260101T000003.000Z-acme",
                "20260101T000004.000Z-acme"
            ]
        );
        prune_artifacts(root.path(), 3, Duration::ZERO);
        assert_eq!(
            std::fs::read_dir(root.path()).unwrap().count(),
            0,
            "all older than 0s"
        );
    }
}
