//! Login sessions of the page: how a browser, which cannot put the bearer token on an
//! `EventSource`, an `<img>` or a `<video>`, uses the API.
//!
//! `POST /login` with `{"token": "<the API token>"}` (JSON, so the API's content-type
//! and `Origin` rules apply) answers with a cookie `framebus_session=<random id>;
//! HttpOnly; SameSite=Strict; Path=/`. The id is 32 random bytes, not the token, kept
//! in memory only (a restart logs everyone out), for `[dashboard] session_ttl_s`, at most
//! `max_sessions` of them (the oldest is logged out first). `DELETE /session` logs out.
//!
//! [`cookie_to_bearer`] runs before the API's guard: a request without an
//! `Authorization` header whose cookie names a live session gets the bearer header
//! added, so every rule of the guard (loopback `Host`, own `Origin`, JSON bodies) still
//! applies. The cookie is honoured only when the browser says the request comes from
//! the page itself (`Sec-Fetch-Site: same-origin`, or `none` for a typed address), or
//! says nothing (an old browser): `SameSite` treats every port of `localhost` as the
//! same site, `Sec-Fetch-Site` does not, so another local web app cannot ride on it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::auth::ApiToken;
use crate::clock::{Clock, MonoNanos};

/// Name of the session cookie.
pub const COOKIE: &str = "framebus_session";

/// Random bytes of a session id (written as twice as many hex digits).
const ID_BYTES: usize = 32;

/// The live sessions.
#[derive(Debug)]
pub struct Sessions {
    clock: Arc<dyn Clock>,
    ttl: Duration,
    max: usize,
    live: Mutex<VecDeque<(String, MonoNanos)>>,
}

/// Why no session was opened.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The token given is not the API's.
    #[error("invalid API token")]
    WrongToken,
    /// The kernel's random source failed.
    #[error("cannot get random bytes for a session id: {0}")]
    Random(std::io::Error),
}

impl Sessions {
    /// Sessions lasting `ttl`, at most `max` at once (at least 1), timed by `clock`.
    pub fn new(clock: Arc<dyn Clock>, ttl: Duration, max: usize) -> Self {
        Self {
            clock,
            ttl,
            max: max.max(1),
            live: Mutex::new(VecDeque::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, MonoNanos)>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a session lasts.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session id if `presented` is the API token.
    pub fn login(&self, token: &ApiToken, presented: &str) -> Result<String, LoginError> {
        if !token.matches(presented.trim().as_bytes()) {
            return Err(LoginError::WrongToken);
        }
        let mut bytes = [0u8; ID_BYTES];
        let mut filled = 0;
        while filled < bytes.len() {
            match rustix::rand::getrandom(
                &mut bytes[filled..],
                rustix::rand::GetRandomFlags::empty(),
            ) {
                Ok(n) => filled += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(LoginError::Random(e.into())),
            }
        }
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let now = self.clock.now();
        let mut live = self.lock();
        live.retain(|(_, until)| *until > now);
        while live.len() >= self.max {
            live.pop_front();
        }
        live.push_back((id.clone(), now + self.ttl));
        Ok(id)
    }

    /// Whether `id` is a live session (compared in constant time).
    pub fn valid(&self, id: &str) -> bool {
        let now = self.clock.now();
        let live = self.lock();
        // Every entry is compared, so the time does not tell which one matched.
        live.iter().fold(false, |ok, (s, until)| {
            ok | (crate::api::auth::constant_time_eq(s.as_bytes(), id.as_bytes()) && *until > now)
        })
    }

    /// Ends the session `id`, if live.
    pub fn logout(&self, id: &str) {
        self.lock().retain(|(s, _)| s != id);
    }
}

/// The value of the session cookie in `headers`, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
}

/// Whether the browser says the request comes from the page's own origin (or says
/// nothing): see the module docs.
pub fn from_own_page(headers: &HeaderMap) -> bool {
    match headers.get("sec-fetch-site").map(HeaderValue::as_bytes) {
        None => true,
        Some(v) => v == b"same-origin" || v == b"none",
    }
}

/// The `Set-Cookie` value opening session `id` for `ttl`.
pub fn set_cookie(id: &str, ttl: Duration) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        ttl.as_secs()
    )
}

/// The `Set-Cookie` value ending the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// What [`cookie_to_bearer`] needs.
#[derive(Debug, Clone)]
pub struct CookieAuth {
    /// The sessions.
    pub sessions: Arc<Sessions>,
    /// The API token put on a request with a live session cookie.
    pub token: Arc<ApiToken>,
}

/// Middleware: a request without `Authorization` that carries a live session cookie
/// from the page's own origin gets `Authorization: Bearer <token>`; the API's guard
/// then judges it like any other request.
pub async fn cookie_to_bearer(
    State(auth): State<CookieAuth>,
    mut req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    if !headers.contains_key(header::AUTHORIZATION)
        && from_own_page(headers)
        && cookie(headers).is_some_and(|id| auth.sessions.valid(id))
    {
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", auth.token.secret())) {
            req.headers_mut().insert(header::AUTHORIZATION, v);
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::TokenOrigin;
    use crate::clock::ManualClock;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn token() -> ApiToken {
        ApiToken::new(SECRET, TokenOrigin::Env).unwrap()
    }

    #[test]
    fn sessions_expire_are_bounded_and_log_out() {
        let clock = ManualClock::new();
        let s = Sessions::new(Arc::new(clock.clone()), Duration::from_secs(60), 2);
        assert!(matches!(
            s.login(&token(), "wrong-token-wrong-token"),
            Err(LoginError::WrongToken)
        ));
        let a = s.login(&token(), SECRET).unwrap();
        assert_eq!(a.len(), 2 * ID_BYTES);
        assert!(s.valid(&a));
        assert!(!s.valid(SECRET), "the token itself is not a session id");
        assert!(!s.valid(""));
        clock.advance(Duration::from_secs(59));
        assert!(s.valid(&a));
        clock.advance(Duration::from_secs(1));
        assert!(!s.valid(&a), "expired at its ttl");
        let b = s.login(&token(), SECRET).unwrap();
        let c = s.login(&token(), SECRET).unwrap();
        let d = s.login(&token(), SECRET).unwrap();
        assert_ne!(b, c);
        assert!(!s.valid(&b), "the oldest is logged out past max");
        assert!(s.valid(&c) && s.valid(&d));
        s.logout(&c);
        assert!(!s.valid(&c) && s.valid(&d));
    }

    #[test]
    fn cookie_and_fetch_site_are_read() {
        let mut h = HeaderMap::new();
        assert_eq!(cookie(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; framebus_session=abc ; b=2"),
        );
        assert_eq!(cookie(&h), Some("abc"));
        assert!(from_own_page(&h));
        for (v, own) in [
            ("same-origin", true),
            ("none", true),
            ("same-site", false),
            ("cross-site", false),
        ] {
            h.insert("sec-fetch-site", HeaderValue::from_static(v));
            assert_eq!(from_own_page(&h), own, "{v}");
        }
        let c = set_cookie("abc", Duration::from_secs(60));
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Max-Age=60")
        );
    }
}
