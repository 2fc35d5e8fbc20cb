//! HTML of the provider's pages. Plain server-rendered forms, like most real login pages, so
//! a login flow written against them (selectors, a CSRF field, an error element) carries over.

use std::fmt::Write as _;

const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f3f4f6;margin:0}\
main{max-width:22rem;margin:4rem auto;background:#fff;padding:2rem;border-radius:.5rem;\
box-shadow:0 1px 3px #0002}h1{font-size:1.4rem;margin:0 0 .5rem}label{display:block;\
margin-top:1rem;font-size:.9rem}input{width:100%;box-sizing:border-box;padding:.5rem;\
margin-top:.25rem}button{margin-top:1.25rem;padding:.6rem 1.2rem}\
.error{background:#fee2e2;color:#991b1b;padding:.6rem;border-radius:.25rem;margin-top:1rem}\
.app{color:#555}.help{margin-top:1.5rem;font-size:.85rem}";

/// Escapes text for an HTML element body or a double-quoted attribute.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>{} · Simulated Provider</title><style>{STYLE}</style></head>\
         <body><main>{body}</main></body></html>",
        escape(title)
    )
}

fn error_box(error: Option<&str>) -> String {
    error.map_or_else(String::new, |e| {
        format!("<div class=\"error\" role=\"alert\">{}</div>", escape(e))
    })
}

/// The username/password form. The password is never echoed back.
pub(super) fn login(
    client_name: &str,
    tx: &str,
    csrf: &str,
    username: &str,
    help_url: &str,
    error: Option<&str>,
) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Sign in</h1><p class=\"app\">to continue to <strong>{client}</strong></p>{error}\
         <form method=\"post\" action=\"/login\" autocomplete=\"off\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"tx\" value=\"{tx}\">\
         <label for=\"username\">Username</label>\
         <input id=\"username\" name=\"username\" type=\"text\" value=\"{username}\" required autofocus>\
         <label for=\"password\">Password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" required>\
         <button type=\"submit\" id=\"sign-in\">Sign in</button></form>\
         <p class=\"help\"><a id=\"forgot-password\" href=\"{help}\">Forgot password?</a></p>",
        client = escape(client_name),
        error = error_box(error),
        csrf = escape(csrf),
        tx = escape(tx),
        username = escape(username),
        help = escape(help_url),
    );
    page("Sign in", &body)
}

/// The one-time-code form.
pub(super) fn totp(tx: &str, csrf: &str, error: Option<&str>) -> String {
    let body = format!(
        "<h1>Two-step verification</h1><p class=\"app\">Enter the 6-digit code from your \
         authenticator app.</p>{error}\
         <form method=\"post\" action=\"/login/totp\" autocomplete=\"off\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"tx\" value=\"{tx}\">\
         <label for=\"totp\">Verification code</label>\
         <input id=\"totp\" name=\"code\" type=\"text\" inputmode=\"numeric\" \
         autocomplete=\"one-time-code\" pattern=\"[0-9]{{6}}\" maxlength=\"6\" required autofocus>\
         <button type=\"submit\" id=\"verify\">Verify</button></form>",
        error = error_box(error),
        csrf = escape(csrf),
        tx = escape(tx),
    );
    page("Two-step verification", &body)
}

/// The consent screen.
pub(super) fn consent(
    client_name: &str,
    channel: &str,
    scope: &str,
    tx: &str,
    csrf: &str,
) -> String {
    let scopes: String = scope
        .split_whitespace()
        .map(|s| format!("<li>{}</li>", escape(s)))
        .collect();
    let scopes = if scopes.is_empty() {
        "<li>basic access</li>".to_owned()
    } else {
        scopes
    };
    let body = format!(
        "<h1>Authorize {client}</h1><p class=\"app\">{client} wants to act for \
         <strong>{channel}</strong>:</p><ul>{scopes}</ul>\
         <form method=\"post\" action=\"/oauth/consent\">\
         <input type=\"hidden\" name=\"csrf_token\" value=\"{csrf}\">\
         <input type=\"hidden\" name=\"tx\" value=\"{tx}\">\
         <button type=\"submit\" name=\"decision\" value=\"allow\" id=\"allow\">Allow</button> \
         <button type=\"submit\" name=\"decision\" value=\"deny\" id=\"deny\">Deny</button></form>",
        client = escape(client_name),
        channel = escape(channel),
        csrf = escape(csrf),
        tx = escape(tx),
    );
    page("Authorize", &body)
}

/// A plain message page (errors the user cannot fix by retrying the form).
pub(super) fn message(title: &str, text: &str) -> String {
    page(
        title,
        &format!("<h1>{}</h1><p>{}</p>", escape(title), escape(text)),
    )
}
