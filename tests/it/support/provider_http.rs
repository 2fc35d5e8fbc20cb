//! Test support: runs the simulated provider on 127.0.0.1:0 and walks its login pages over
//! real HTTP the way a browser would (manual redirects, a cookie jar of one cookie, hidden
//! form fields).

#![allow(dead_code)] // each test binary uses a different part of it

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use tokio_util::sync::CancellationToken;
use warden_devkit::provider::{self, ProviderConfig, ProviderState, ProviderStats};

pub const CLIENT_ID: &str = "warden-test";
pub const CLIENT_SECRET: &str = "client-secret-for-tests";
/// A valid base32 TOTP seed (160 bits).
pub const TOTP_SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

/// A provider running in this test process; stops when dropped.
pub struct TestProvider {
    pub base: String,
    pub state: ProviderState,
    shutdown: CancellationToken,
}

impl Drop for TestProvider {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestProvider {
    pub async fn start(config: ProviderConfig) -> Self {
        let config = ProviderConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            ..config
        };
        let shutdown = CancellationToken::new();
        let running = provider::start(config, shutdown.clone())
            .await
            .expect("provider starts");
        Self {
            base: running.base_url(),
            state: running.state,
            shutdown,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The authorization request of [`authorize_url`] for this provider's
    /// `/callback`, carrying `state`.
    pub fn authorize_url(&self, state: &str) -> String {
        authorize_url(&self.base, &self.url("/callback"), state)
    }

    /// The login form of a fresh authorization request carrying `state`.
    pub async fn login_form(&self, state: &str) -> LoginForm {
        LoginForm::open(&self.base, &self.authorize_url(state)).await
    }

    pub async fn stats(&self) -> ProviderStats {
        reqwest::get(self.url("/admin/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// Two channels: `acme` (password only) and `globex` (password + TOTP).
pub fn two_channel_config() -> ProviderConfig {
    ProviderConfig::new(CLIENT_ID, CLIENT_SECRET)
        .with_account("acme", provider::Account::new("acme-user", "acme-pass"))
        .with_account(
            "globex",
            provider::Account::new("globex-user", "globex-pass").with_totp(TOTP_SEED),
        )
}

pub fn current_totp(seed: &str) -> String {
    let bytes = totp_rs::Secret::Encoded(seed.to_owned())
        .to_bytes()
        .unwrap();
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, bytes)
        .unwrap()
        .generate_current()
        .unwrap()
}

/// A page as the "browser" saw it.
pub struct Page {
    pub status: StatusCode,
    pub url: String,
    pub body: String,
}

impl Page {
    /// The value of the hidden input `name`.
    pub fn hidden(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker)? + marker.len();
        let end = self.body[start..].find('"')? + start;
        Some(self.body[start..end].to_owned())
    }
}

/// A cookie-keeping, redirect-following HTTP client that records every hop.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
    /// Every (status, location) hop followed, for asserting the redirect chain.
    pub hops: Vec<(StatusCode, String)>,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookie: None,
            hops: Vec::new(),
        }
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.base)
        }
    }

    fn remember_cookie(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all(SET_COOKIE) {
            let pair = value
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned();
            self.cookie = Some(pair);
        }
    }

    /// Follows redirects until a page answers, or until the next hop leaves the provider
    /// (the client's redirect URI), which is returned as the final `url` unfetched.
    async fn follow(&mut self, mut response: reqwest::Response) -> Page {
        loop {
            self.remember_cookie(&response);
            let status = response.status();
            if status.is_redirection() {
                let location = response.headers()[LOCATION].to_str().unwrap().to_owned();
                self.hops.push((status, location.clone()));
                let next = self.absolute(&location);
                if !next.starts_with(&self.base) || next.contains("/callback") {
                    return Page {
                        status,
                        url: next,
                        body: String::new(),
                    };
                }
                response = self.send(self.http.get(&next)).await;
                continue;
            }
            let url = response.url().to_string();
            let body = response.text().await.unwrap();
            return Page { status, url, body };
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let request = match &self.cookie {
            Some(cookie) => request.header(COOKIE, cookie),
            None => request,
        };
        request.send().await.unwrap()
    }

    pub async fn get(&mut self, url: &str) -> Page {
        let response = self.send(self.http.get(self.absolute(url))).await;
        self.follow(response).await
    }

    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let response = self
            .send(self.http.post(self.absolute(url)).form(form))
            .await;
        self.follow(response).await
    }
}

pub fn authorize_url(base: &str, redirect_uri: &str, state: &str) -> String {
    let mut url = url::Url::parse(&format!("{base}/oauth/authorize")).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", "posts:write profile")
        .append_pair("state", state);
    url.to_string()
}

/// The query parameter `name` of `url`.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The login form of one authorization request, as a fresh browser reached it:
/// the page, and the transaction and CSRF token every later form post carries.
pub struct LoginForm {
    pub browser: Browser,
    pub page: Page,
    pub tx: String,
    pub csrf: String,
}

impl LoginForm {
    /// Opens `authorize_url` of the provider at `base` in a fresh browser and
    /// reads the form it lands on.
    pub async fn open(base: &str, authorize_url: &str) -> Self {
        let mut browser = Browser::new(base);
        let page = browser.get(authorize_url).await;
        let field = |name: &str| {
            page.hidden(name).unwrap_or_else(|| {
                panic!(
                    "no {name} on {} ({}):\n{}",
                    page.url, page.status, page.body
                )
            })
        };
        let (tx, csrf) = (field("tx"), field("csrf_token"));
        Self {
            browser,
            page,
            tx,
            csrf,
        }
    }

    /// Posts the credentials with the session's CSRF token.
    pub async fn submit(&mut self, username: &str, password: &str) -> Page {
        let csrf = self.csrf.clone();
        self.submit_with_csrf(&csrf, username, password).await
    }

    /// Posts the credentials with `csrf` as the form's CSRF token.
    pub async fn submit_with_csrf(&mut self, csrf: &str, username: &str, password: &str) -> Page {
        let tx = self.tx.clone();
        let form = [
            ("tx", tx.as_str()),
            ("csrf_token", csrf),
            ("username", username),
            ("password", password),
        ];
        self.browser.post_form("/login", &form).await
    }

    /// Posts a one-time code on the TOTP page.
    pub async fn totp(&mut self, code: &str) -> Page {
        self.post("/login/totp", ("code", code)).await
    }

    /// Answers the consent page with `decision` (`allow` or `deny`).
    pub async fn consent(&mut self, decision: &str) -> Page {
        self.post("/oauth/consent", ("decision", decision)).await
    }

    async fn post(&mut self, path: &str, field: (&str, &str)) -> Page {
        let (tx, csrf) = (self.tx.clone(), self.csrf.clone());
        let form = [("tx", tx.as_str()), ("csrf_token", csrf.as_str()), field];
        self.browser.post_form(path, &form).await
    }
}
