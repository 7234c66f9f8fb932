//! Signing in to the console and staying signed in.
//!
//! A person types an API key into the sign-in form; it is checked exactly
//! as the MCP guard checks a bearer key (`Store::find_key` on its hash:
//! unknown, revoked or expired keys fail) and decides the companion. The
//! browser then holds only a random 256-bit session id in an HttpOnly,
//! SameSite=Strict cookie (Secure behind TLS); the database keeps its
//! SHA-256, the companion, the key and a CSRF token. A server without keys
//! opens the console for its configured companion (still with a session,
//! for the CSRF token). Every POST but the sign-in itself must carry the
//! session's token ([`attach`]); the sign-in form carries a token matched
//! against a short-lived cookie of its own.

use std::sync::Arc;
use std::time::Duration;

use axum::Form;
use axum::body::Body;
use axum::extract::{FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use maud::html;
use rand::RngCore;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::layout::{self, Nav, Oops};
use super::{Console, Reply};
use crate::auth::hash_key;
use crate::store::Scope;

/// The session cookie's name.
const COOKIE: &str = "mnemo_console";
/// The sign-in form's own CSRF cookie.
const SIGNIN_COOKIE: &str = "mnemo_console_signin";
/// How long a console session lasts (fixed: signing in again is cheap).
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Largest form body read (a memory's 32,768 characters, percent-encoded).
const MAX_FORM_BYTES: usize = 1024 * 1024;

/// The signed-in session a page acts for.
#[derive(Debug, Clone)]
pub struct Signed {
    pub scope: Scope,
    pub csrf: String,
    /// Signed in with a key (so signing out means something).
    pub with_key: bool,
    /// Who the rate limit counts: the key, or the keyless companion.
    principal: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Signed>()
            .cloned()
            .ok_or_else(|| Redirect::to("/console/signin").into_response())
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Signed {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Signed>().cloned())
    }
}

/// A random token of 256 bits, base64url.
fn token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The value of cookie `name`, if the request has it.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether the request reached the proxy in front of mnemo over TLS
/// (mnemo itself serves plain HTTP).
pub fn is_https(headers: &HeaderMap) -> bool {
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|f| f.to_ascii_lowercase().contains("proto=https"));
    proto || forwarded
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, on `path`, Secure
/// behind TLS; `max_age` 0 deletes the cookie.
fn set_cookie(
    headers: &HeaderMap,
    name: &str,
    value: &str,
    path: &str,
    max_age: u64,
) -> HeaderValue {
    let secure = if is_https(headers) { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path={path}; Max-Age={max_age}{secure}"
    );
    // Our own tokens are base64url: always a valid header value.
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("invalid=1"))
}

fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The live session of this request, if its cookie names one. A session
/// opened without a key stops counting once keys exist.
async fn resolve(console: &Console, headers: &HeaderMap) -> Result<Option<Signed>, Oops> {
    let Some(id) = cookie(headers, COOKIE) else {
        return Ok(None);
    };
    let Some(row) = console.app.store.console_session(&hash_key(id)).await? else {
        return Ok(None);
    };
    if row.api_key_id.is_none() && console.keys_required().await? {
        return Ok(None);
    }
    Ok(Some(Signed {
        scope: row.scope,
        csrf: row.csrf_token,
        with_key: row.api_key_id.is_some(),
        principal: match row.api_key_id {
            Some(k) => format!("key:{k}"),
            None => "anonymous".into(),
        },
    }))
}

/// Middleware on every console route: finds the session, applies the rate
/// limit, and refuses a POST (other than signing in) without a session or
/// without its CSRF token (403), before any handler runs.
pub async fn attach(State(console): State<Arc<Console>>, request: Request, next: Next) -> Response {
    if request.uri().path().starts_with("/console/assets/") {
        return next.run(request).await;
    }
    let signed = match resolve(&console, request.headers()).await {
        Ok(s) => s,
        Err(oops) => return oops.into_response(),
    };
    let who = signed
        .as_ref()
        .map_or("anonymous", |s| s.principal.as_str());
    if !console.allow(who) {
        let mut response = Oops::RateLimited.into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    }
    let mut request = request;
    if request.method() == Method::POST && request.uri().path() != "/console/signin" {
        let Some(s) = &signed else {
            return Oops::Forbidden("sign in first: this form needs a console session".into())
                .into_response();
        };
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return Oops::TooLarge.into_response();
        };
        let token = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        if !token.is_some_and(|t| same(&t, &s.csrf)) {
            return Oops::Forbidden(
                "this form's CSRF token is missing or out of date: reload the page and try again"
                    .into(),
            )
            .into_response();
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    if let Some(s) = signed {
        request.extensions_mut().insert(s);
    }
    next.run(request).await
}

/// Opens a session for `scope` and answers with its cookie and a redirect
/// to the overview.
async fn open(
    console: &Console,
    headers: &HeaderMap,
    scope: &Scope,
    key: Option<uuid::Uuid>,
) -> Reply {
    // Expired sessions go when someone signs in: no job of their own needed.
    if let Err(e) = console.app.store.purge_console_sessions().await {
        tracing::warn!(error = %e, "console: purging expired sessions failed");
    }
    let id = token();
    console
        .app
        .store
        .create_console_session(scope, key, &hash_key(&id), &token(), SESSION_TTL)
        .await?;
    let mut response = Redirect::to("/console").into_response();
    let jar = response.headers_mut();
    jar.append(
        header::SET_COOKIE,
        set_cookie(headers, COOKIE, &id, "/console", SESSION_TTL.as_secs()),
    );
    jar.append(
        header::SET_COOKIE,
        set_cookie(headers, SIGNIN_COOKIE, "", "/console/signin", 0),
    );
    tracing::info!(keyed = key.is_some(), "console: signed in");
    Ok(response)
}

/// The sign-in page; a server without keys signs in at once.
pub async fn signin_form(
    State(console): State<Arc<Console>>,
    signed: Option<Signed>,
    headers: HeaderMap,
) -> Reply {
    if signed.is_some() {
        return Ok(Redirect::to("/console").into_response());
    }
    if !console.keys_required().await? {
        return open(&console, &headers, &console.app.scope, None).await;
    }
    Ok(form(&headers, StatusCode::OK, None))
}

fn form(headers: &HeaderMap, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = token();
    let body = html! {
        p { "Sign in with an API key (from " code { "mnemo token create" } "). The key decides the \
             companion whose memories you see, as it does for MCP clients." }
        form.card method="post" action="/console/signin" {
            input type="hidden" name="csrf" value=(csrf);
            (layout::field("api_key", "API key", None, error, html! {
                input #api_key type="password" name="api_key" autocomplete="current-password"
                    required autofocus spellcheck="false"
                    aria-invalid=[error.map(|_| "true")]
                    aria-describedby=[layout::described_by("api_key", false, error.is_some())];
            }))
            button type="submit" { "Sign in" }
        }
    };
    let mut response = layout::reply(status, layout::page("Sign in", Nav::None, None, body));
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(headers, SIGNIN_COOKIE, &csrf, "/console/signin", 3600),
    );
    response
}

#[derive(Deserialize)]
pub struct SignIn {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    api_key: String,
}

/// Checks the key as the MCP guard does and opens a session for its
/// companion. The key is never logged, echoed or put in a URL.
pub async fn signin(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(input): Form<SignIn>,
) -> Reply {
    let expected = cookie(&headers, SIGNIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !same(expected, &input.csrf) {
        return Err(Oops::Forbidden(
            "the sign-in form is out of date (its CSRF token does not match): reload it and try again"
                .into(),
        ));
    }
    if !console.keys_required().await? {
        return open(&console, &headers, &console.app.scope, None).await;
    }
    let key = input.api_key.trim();
    if key.is_empty() {
        return Ok(form(
            &headers,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("api_key is empty: paste the key `mnemo token create` printed"),
        ));
    }
    match console.app.store.find_key(&hash_key(key)).await? {
        Some((key_id, scope)) => open(&console, &headers, &scope, Some(key_id)).await,
        None => {
            tracing::info!("console: sign-in refused (unknown, revoked or expired key)");
            Ok(form(
                &headers,
                StatusCode::UNAUTHORIZED,
                Some("invalid, expired or revoked API key"),
            ))
        }
    }
}

/// Ends the session (its row goes) and forgets the cookie.
pub async fn signout(
    State(console): State<Arc<Console>>,
    _signed: Signed,
    headers: HeaderMap,
) -> Reply {
    if let Some(id) = cookie(&headers, COOKIE) {
        console.app.store.end_console_session(&hash_key(id)).await?;
    }
    let mut response = Redirect::to("/console/signin").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&headers, COOKIE, "", "/console", 0),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("other=1; mnemo_console_signin=s; mnemo_console=abc"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, SIGNIN_COOKIE), Some("s"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn session_cookies_are_httponly_strict_and_secure_behind_tls() {
        let mut headers = HeaderMap::new();
        let plain = set_cookie(&headers, COOKIE, "v", "/console", 60);
        let plain = plain.to_str().unwrap();
        assert!(
            plain.contains("HttpOnly") && plain.contains("SameSite=Strict"),
            "{plain}"
        );
        assert!(!plain.contains("Secure"), "{plain}");
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let tls = set_cookie(&headers, COOKIE, "v", "/console", 60);
        assert!(tls.to_str().unwrap().ends_with("; Secure"));
    }

    #[test]
    fn tokens_are_random_256_bits() {
        let (a, b) = (token(), token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(same(&a, &a) && !same(&a, &b) && !same(&a, ""));
    }
}
