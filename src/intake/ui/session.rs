//! Who is looking at the dashboard: session cookies, log in and out, CSRF tokens (DESIGN §9,
//! §12).
//!
//! - **Without API tokens** (a loopback bind) the dashboard opens directly: the first page
//!   mints an anonymous session with the `admin` scope, keyed by a random key of this process
//!   (so a restart ends it; the next page load mints another). It exists only to carry the
//!   CSRF token of the forms.
//! - **With API tokens** every page but `/ui/login` and `/ui/assets/…` needs a session:
//!   a page request without one is sent to `/ui/login`, which asks for a token once. The
//!   session has the token's scope; `jobs` sees, `admin` acts.
//!
//! The cookie, `warren_session`, is `EXPIRES.NONCE.MAC`: expiry (Unix seconds, 12 hours after
//! log in), 128 random bits, and HMAC-SHA256 over both, keyed by a key derived from the token
//! ([`crate::auth::Tokens::derived_keys`]). It never holds the token; it survives a restart
//! and works on every intake with the same tokens; removing the token ends its sessions.
//! Log out clears the cookie (a copy of the cookie stays valid until it expires: sessions are
//! not kept on the server). Attributes: `HttpOnly`, `SameSite=Strict`, `Path=/ui`, and
//! `Secure` when the request came over HTTPS as a TLS proxy in front of warren says with
//! `X-Forwarded-Proto: https` (warren itself serves plain HTTP).
//!
//! Every form that acts is a POST carrying `csrf`: HMAC-SHA256 of the session's nonce under
//! the session's key, so only pages of this session have it; [`ActForm`] refuses a form
//! without it (403) before anything happens. The log-in form has no session yet: it carries a
//! random value that must equal its `warren_login` cookie (double submit; `SameSite=Strict`
//! keeps other sites from sending that cookie).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, RequestExt as _};
use hmac::Mac as _;
use maud::{Markup, html};
use subtle::ConstantTimeEq as _;

use super::page::{self, Page};
use super::{FormData, Ui};
use crate::auth::{Scope, Tokens};

/// The session cookie's name.
pub(super) const COOKIE: &str = "warren_session";
/// The log-in form's double-submit cookie.
const LOGIN_COOKIE: &str = "warren_login";
/// How long a session lasts after log in.
const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// What session keys are derived for (see [`Tokens::derived_keys`]).
const PURPOSE: &[u8] = b"warren dashboard session v1";
/// Largest form body the dashboard reads (bytes).
const MAX_FORM: usize = 256 * 1024;

/// The keys sessions are signed with.
pub(super) struct Keys {
    /// With tokens: one per token, with its scope. Without: this process's random key, `admin`.
    keys: Vec<([u8; 32], Scope)>,
    /// Tokens configured: sessions come from logging in.
    login: bool,
    tokens: Tokens,
}

/// The session of a request, put in its extensions by [`middleware`].
#[derive(Clone)]
pub(super) struct Viewer {
    /// What the session may do.
    pub(super) scope: Scope,
    /// The CSRF token every acting form of this session carries (64 hex digits).
    pub(super) csrf: String,
    /// The session came from logging in with a token (so there is something to log out of).
    pub(super) logged_in: bool,
}

impl Viewer {
    /// True when the session may act (the `admin` scope).
    pub(super) fn admin(&self) -> bool {
        self.scope >= Scope::Admin
    }
}

impl Keys {
    pub(super) fn new(tokens: &Tokens) -> Self {
        if tokens.is_empty() {
            Self {
                keys: vec![(rand::random(), Scope::Admin)],
                login: false,
                tokens: tokens.clone(),
            }
        } else {
            Self {
                keys: tokens.derived_keys(PURPOSE),
                login: true,
                tokens: tokens.clone(),
            }
        }
    }

    /// A new session under `key`: the cookie's value and the viewer.
    fn issue(&self, key: &[u8; 32], scope: Scope) -> (String, Viewer) {
        let expires = unix_now() + LIFETIME.as_secs();
        let nonce = hex(&rand::random::<[u8; 16]>());
        let mac = hex(&mac(
            key,
            &[b"session", expires.to_string().as_bytes(), nonce.as_bytes()],
        ));
        let viewer = Viewer {
            scope,
            csrf: hex(&mac_csrf(key, &nonce)),
            logged_in: self.login,
        };
        (format!("{expires}.{nonce}.{mac}"), viewer)
    }

    /// The viewer of a cookie value, or `None` when it is malformed, expired or signed by no
    /// current key.
    fn verify(&self, value: &str) -> Option<Viewer> {
        let mut parts = value.split('.');
        let (expires, nonce, presented) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || nonce.len() != 32 || presented.len() != 64 {
            return None;
        }
        if expires.parse::<u64>().ok()? <= unix_now() {
            return None;
        }
        let mut found: Option<([u8; 32], Scope)> = None;
        for (key, scope) in &self.keys {
            let mac = hex(&mac(
                key,
                &[b"session", expires.as_bytes(), nonce.as_bytes()],
            ));
            if bool::from(mac.as_bytes().ct_eq(presented.as_bytes()))
                && found.is_none_or(|(_, s)| *scope > s)
            {
                found = Some((*key, *scope));
            }
        }
        let (key, scope) = found?;
        Some(Viewer {
            scope,
            csrf: hex(&mac_csrf(&key, nonce)),
            logged_in: self.login,
        })
    }
}

fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key)
        .expect("HMAC takes a key of any length");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            mac.update(b"|");
        }
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn mac_csrf(key: &[u8; 32], nonce: &str) -> [u8; 32] {
    mac(key, &[b"csrf", nonce.as_bytes()])
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// True when a TLS proxy in front of warren says the request came over HTTPS.
fn behind_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        })
}

/// A `Set-Cookie` value for `name=value` (`max_age` seconds; 0 clears it).
fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> Option<HeaderValue> {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/ui; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

/// Middleware: finds the request's session ([`Viewer`], put in its extensions). Without
/// tokens a request without a valid session gets a fresh anonymous one (and its cookie).
/// With tokens, `/ui/login` and `/ui/assets/…` are open; any other page without a session is
/// sent to the log-in page (a `GET` of a page) or refused with 401 (a fragment, a form).
pub(super) async fn middleware(
    Extension(ui): Extension<Arc<Ui>>,
    mut req: Request,
    next: Next,
) -> Response {
    let keys = &ui.keys;
    let secure = behind_tls(req.headers());
    if let Some(viewer) = cookie(req.headers(), COOKIE).and_then(|c| keys.verify(c)) {
        req.extensions_mut().insert(viewer);
        return next.run(req).await;
    }
    let path = req.uri().path();
    if !keys.login {
        let (key, scope) = keys.keys[0];
        let (value, viewer) = keys.issue(&key, scope);
        req.extensions_mut().insert(viewer);
        let mut resp = next.run(req).await;
        if let Some(v) = set_cookie(COOKIE, &value, LIFETIME.as_secs(), secure) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
        return resp;
    }
    if path == "/ui/login" || path.starts_with("/ui/assets/") {
        return next.run(req).await;
    }
    if req.method() == Method::GET && !path.starts_with("/ui/live/") {
        let here = req.uri().path_and_query().map_or(path, |pq| pq.as_str());
        let to = format!("/ui/login?next={}", super::encode_query(here));
        return Redirect::to(&to).into_response();
    }
    Page::error(
        StatusCode::UNAUTHORIZED,
        "Log in first",
        "This dashboard needs an API token: log in at /ui/login.",
    )
    .into_response()
}

/// A form of this session: its CSRF token checked. Refused with 403 without a session or
/// with a missing or wrong `csrf` field.
pub(super) struct CheckedForm {
    pub(super) viewer: Viewer,
    pub(super) data: FormData,
}

impl<S: Send + Sync> FromRequest<S> for CheckedForm {
    type Rejection = Page;

    async fn from_request(req: Request, _: &S) -> Result<Self, Page> {
        let viewer = req.extensions().get::<Viewer>().cloned().ok_or_else(|| {
            Page::error(
                StatusCode::UNAUTHORIZED,
                "Log in first",
                "This form needs a session.",
            )
        })?;
        let bytes = axum::body::to_bytes(req.into_body(), MAX_FORM)
            .await
            .map_err(|_| {
                Page::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Form too large",
                    "The form is over 256 KiB.",
                )
            })?;
        let data = FormData::parse(&bytes);
        let presented = data.get("csrf").unwrap_or_default();
        if !bool::from(presented.as_bytes().ct_eq(viewer.csrf.as_bytes())) {
            return Err(Page::error(
                StatusCode::FORBIDDEN,
                "Form refused",
                "The form carried no valid CSRF token (it may come from another site, or from a page older than this session). Nothing was done; reload the page and try again.",
            ));
        }
        Ok(Self { viewer, data })
    }
}

/// A form that acts: its CSRF token checked ([`CheckedForm`]) and its session `admin`
/// (403 otherwise). Every acting endpoint takes one, so none can forget either check.
pub(super) struct ActForm {
    pub(super) data: FormData,
}

impl<S: Send + Sync> FromRequest<S> for ActForm {
    type Rejection = Page;

    async fn from_request(req: Request, state: &S) -> Result<Self, Page> {
        let form = CheckedForm::from_request(req, state).await?;
        if !form.viewer.admin() {
            return Err(Page::error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "This action needs a session with the `admin` scope. Nothing was done.",
            ));
        }
        Ok(Self { data: form.data })
    }
}

/// `GET /ui/login?next=PATH`: the log-in form (with tokens), or straight to the overview.
pub(super) async fn login_page(Extension(ui): Extension<Arc<Ui>>, req: Request) -> Response {
    if !ui.keys.login {
        return Redirect::to("/ui/").into_response();
    }
    let next = req
        .uri()
        .query()
        .map(|q| FormData::parse(q.as_bytes()))
        .and_then(|f| f.get("next").map(str::to_owned));
    login_form(
        next.as_deref(),
        None,
        StatusCode::OK,
        behind_tls(req.headers()),
    )
}

fn login_form(
    next: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
    secure: bool,
) -> Response {
    let nonce = hex(&rand::random::<[u8; 16]>());
    let body: Markup = html! {
        section.login {
            h1 { "Log in" }
            p { "This dashboard needs an API token (from " code { "WARREN_API_TOKENS" } " or " code { "auth.tokens_file" } "). A " code { "jobs" } " token sees; an " code { "admin" } " token also acts." }
            @if let Some(e) = error { p.notice.bad role="alert" { (e) } }
            form method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(nonce);
                input type="hidden" name="next" value=(safe_next(next));
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Log in" }
            }
        }
    };
    let mut resp = (status, page::layout("Log in", None, body)).into_response();
    if let Some(v) = set_cookie(LOGIN_COOKIE, &nonce, 3600, secure) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

/// Where to go after logging in: a dashboard path, never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/ui/",
    }
}

/// `POST /ui/login` (`token`, `csrf`, `next`): opens a session with the token's scope and goes
/// to `next`; a wrong token gets the form again (401).
pub(super) async fn login(Extension(ui): Extension<Arc<Ui>>, req: Request) -> Response {
    if !ui.keys.login {
        return Redirect::to("/ui/").into_response();
    }
    let secure = behind_tls(req.headers());
    let expected = cookie(req.headers(), LOGIN_COOKIE)
        .unwrap_or_default()
        .to_owned();
    let Ok(bytes) = req.extract::<axum::body::Bytes, _>().await else {
        return Page::error(
            StatusCode::BAD_REQUEST,
            "Bad form",
            "The log-in form could not be read.",
        )
        .into_response();
    };
    let data = FormData::parse(&bytes);
    let next = data.get("next");
    let presented = data.get("csrf").unwrap_or_default();
    if expected.is_empty() || !bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        return login_form(
            next,
            Some("The log-in form expired or came from another site; try again."),
            StatusCode::FORBIDDEN,
            secure,
        );
    }
    let token = data.get("token").unwrap_or_default().trim();
    let Some((key, scope)) = ui.keys.tokens.derived_key(token, PURPOSE) else {
        return login_form(
            next,
            Some("That is not a valid API token."),
            StatusCode::UNAUTHORIZED,
            secure,
        );
    };
    let (value, _) = ui.keys.issue(&key, scope);
    let mut resp = Redirect::to(safe_next(next)).into_response();
    let headers = resp.headers_mut();
    if let Some(v) = set_cookie(COOKIE, &value, LIFETIME.as_secs(), secure) {
        headers.append(header::SET_COOKIE, v);
    }
    if let Some(v) = set_cookie(LOGIN_COOKIE, "", 0, secure) {
        headers.append(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /ui/logout` (`csrf`): clears the session cookie and shows the log-in page.
pub(super) async fn logout(headers: HeaderMap, _form: CheckedForm) -> Response {
    let mut resp = Redirect::to("/ui/login").into_response();
    if let Some(v) = set_cookie(COOKIE, "", 0, behind_tls(&headers)) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "0123456789abcdef0123456789abcdef";
    const JOBS: &str = "fedcba9876543210fedcba9876543210";

    fn keys() -> Keys {
        let tokens = Tokens::parse(&format!("admin:{ADMIN} jobs:{JOBS}"), "test").expect("tokens");
        Keys::new(&tokens)
    }

    #[test]
    fn a_session_keeps_its_tokens_scope_and_a_forged_one_is_refused() {
        let keys = keys();
        let (key, scope) = keys.tokens.derived_key(JOBS, PURPOSE).expect("known token");
        let (cookie, viewer) = keys.issue(&key, scope);
        assert!(!cookie.contains(JOBS));
        let seen = keys.verify(&cookie).expect("valid session");
        assert_eq!(seen.scope, Scope::Jobs);
        assert_eq!(seen.csrf, viewer.csrf);
        // Another nonce under the same MAC, or a later expiry: refused.
        let (exp, rest) = cookie.split_once('.').expect("dots");
        assert!(
            keys.verify(&format!("{}.{rest}", exp.parse::<u64>().expect("n") + 1))
                .is_none()
        );
        let mut other = cookie.clone();
        other.replace_range(
            cookie.len() - 1..,
            if cookie.ends_with('0') { "1" } else { "0" },
        );
        assert!(keys.verify(&other).is_none());
        // Signed by a key no token gives: refused.
        let stranger = Keys::new(&Tokens::default());
        let (foreign, _) = stranger.issue(&stranger.keys[0].0, Scope::Admin);
        assert!(keys.verify(&foreign).is_none());
        assert!(keys.verify("").is_none());
    }

    #[test]
    fn expired_sessions_are_refused() {
        let keys = keys();
        let (key, _) = keys
            .tokens
            .derived_key(ADMIN, PURPOSE)
            .expect("known token");
        let nonce = "0".repeat(32);
        let expires = unix_now() - 1;
        let m = hex(&mac(
            &key,
            &[b"session", expires.to_string().as_bytes(), nonce.as_bytes()],
        ));
        assert!(keys.verify(&format!("{expires}.{nonce}.{m}")).is_none());
        let expires = unix_now() + 60;
        let m = hex(&mac(
            &key,
            &[b"session", expires.to_string().as_bytes(), nonce.as_bytes()],
        ));
        assert_eq!(
            keys.verify(&format!("{expires}.{nonce}.{m}"))
                .map(|v| v.scope),
            Some(Scope::Admin)
        );
    }

    #[test]
    fn next_stays_on_the_dashboard() {
        assert_eq!(safe_next(Some("/ui/jobs/1")), "/ui/jobs/1");
        assert_eq!(safe_next(Some("https://evil.example/")), "/ui/");
        assert_eq!(safe_next(Some("//evil.example/ui/")), "/ui/");
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn cookies_are_read_by_name_and_https_proxies_make_them_secure() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; warren_session=x.y.z"),
        );
        assert_eq!(cookie(&h, COOKIE), Some("x.y.z"));
        assert_eq!(cookie(&h, "b"), None);
        assert!(!behind_tls(&h));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert!(behind_tls(&h));
        let v = set_cookie(COOKIE, "v", 60, true).expect("valid");
        assert_eq!(
            v.to_str().expect("ascii"),
            "warren_session=v; Path=/ui; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
    }
}
