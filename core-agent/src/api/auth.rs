//! Who may use the control API, and from where.
//!
//! The API listens on loopback only, but loopback is shared by every local user and by
//! every web page a local browser opens. So every request passes [`guard`]:
//!
//! 1. `Host` must name loopback (`localhost`, `127.x.y.z`, `[::1]`): a DNS-rebound name
//!    (`evil.example` resolving to 127.0.0.1) is refused with 403.
//! 2. An `Origin` header, when present, must be the API's own (`http://<loopback>:<port>`):
//!    cross-origin requests from web pages are refused with 403.
//! 3. Everything except the probe endpoints (`GET /health`, `/ready`, `/metrics`) needs
//!    `Authorization: Bearer <token>`; missing or wrong: 401 with `WWW-Authenticate:
//!    Bearer`. The token is compared in constant time.
//! 4. A request that carries a body, or names a content type, must say
//!    `Content-Type: application/json`; anything else is 415. A browser cannot send a
//!    cross-origin JSON body without a CORS preflight, which this API never grants.
//!
//! The token comes from [`ApiToken::resolve`]: the environment variable
//! [`ENV_API_TOKEN`], else the file `agent.api_token_file` (default
//! `<socket_dir>/api.token`), which must be a regular file of mode 0600 or 0400 owned by
//! the agent's user or root, else a fresh random token written there (created with
//! `O_EXCL|O_NOFOLLOW`, mode 0600) and kept for the next start.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// Environment variable holding the API token (wins over the token file).
pub const ENV_API_TOKEN: &str = "FRAMEBUS_API_TOKEN";

/// File name of the generated token inside the socket directory.
pub const TOKEN_FILE_NAME: &str = "api.token";

/// Shortest token accepted from the environment or a file.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = 256;
/// Random bytes of a generated token (written as twice as many hex digits).
pub const GENERATED_BYTES: usize = 32;

/// Endpoints served without a token (read-only probes that carry no camera details).
pub const OPEN_PATHS: [&str; 3] = ["/health", "/ready", "/metrics"];

/// Where the token in use came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOrigin {
    /// The [`ENV_API_TOKEN`] environment variable.
    Env,
    /// An existing token file.
    File(PathBuf),
    /// Generated at this start into this file.
    Generated(PathBuf),
}

impl fmt::Display for TokenOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenOrigin::Env => write!(f, "from ${ENV_API_TOKEN}"),
            TokenOrigin::File(p) => write!(f, "read from {}", p.display()),
            TokenOrigin::Generated(p) => write!(f, "generated into {}", p.display()),
        }
    }
}

/// The bearer token of the API. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct ApiToken {
    secret: String,
    origin: TokenOrigin,
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("secret", &"***")
            .field("origin", &self.origin)
            .finish()
    }
}

/// Why no API token could be set up.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The environment variable holds a token that breaks the token rule.
    #[error("${ENV_API_TOKEN}: {reason}")]
    BadEnv {
        /// What is wrong with it.
        reason: String,
    },
    /// The token file exists but cannot be trusted: not a regular file, a symlink, a
    /// mode that lets others read it, or another owner.
    #[error("API token file {path}: {reason}", path = path.display())]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// The token file holds something that breaks the token rule.
    #[error("API token file {path}: {reason}", path = path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        reason: String,
    },
    /// Reading, creating or writing the token file failed.
    #[error("API token file {path}: {op}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel's random source failed.
    #[error("cannot get random bytes for the API token: {0}")]
    Random(std::io::Error),
}

/// Checks the token rule: [`MIN_TOKEN_LEN`]..=[`MAX_TOKEN_LEN`] visible ASCII characters.
fn check_token(token: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_LEN || token.len() > MAX_TOKEN_LEN {
        return Err(format!(
            "a token must have {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters, this one has {}",
            token.len()
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token must be visible ASCII characters only (no spaces)".to_owned());
    }
    Ok(())
}

impl ApiToken {
    /// A token from a known secret (tests, and callers that hold one already).
    pub fn new(secret: impl Into<String>, origin: TokenOrigin) -> Result<Self, String> {
        let secret = secret.into();
        check_token(&secret)?;
        Ok(Self { secret, origin })
    }

    /// The token in use: `env` (the value of [`ENV_API_TOKEN`]) when set and not empty,
    /// else the content of `file`, else a new random token written to `file`.
    pub fn resolve(env: Option<String>, file: &Path) -> Result<Self, TokenError> {
        if let Some(v) = env.filter(|v| !v.trim().is_empty()) {
            let v = v.trim().to_owned();
            check_token(&v).map_err(|reason| TokenError::BadEnv { reason })?;
            return Ok(Self {
                secret: v,
                origin: TokenOrigin::Env,
            });
        }
        match Self::read_file(file) {
            Err(TokenError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                match Self::generate(file) {
                    // Another process created it between our open and our create.
                    Err(TokenError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists =>
                    {
                        Self::read_file(file)
                    }
                    r => r,
                }
            }
            r => r,
        }
    }

    /// Reads and checks an existing token file.
    fn read_file(path: &Path) -> Result<Self, TokenError> {
        let io = |op| io_error(path, op);
        // O_NOFOLLOW: a symlink is refused, not followed; O_NONBLOCK: a FIFO planted
        // there cannot hang the start (it is refused as not a regular file below).
        let mut f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    TokenError::Untrusted {
                        path: path.to_owned(),
                        reason: "is a symbolic link; refusing to follow it".to_owned(),
                    }
                } else {
                    io("open")(e)
                }
            })?;
        let meta = f.metadata().map_err(io("fstat"))?;
        let untrusted = |reason: String| TokenError::Untrusted {
            path: path.to_owned(),
            reason,
        };
        if !meta.file_type().is_file() {
            return Err(untrusted("is not a regular file".to_owned()));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o177 != 0 {
            return Err(untrusted(format!(
                "mode {mode:#o} lets others read or change it; chmod it to 0600 or 0400"
            )));
        }
        if !shm_ring::owned_dir::is_trusted_owner(meta.uid()) {
            return Err(untrusted(format!(
                "owned by uid {}, expected uid {} or root",
                meta.uid(),
                shm_ring::owned_dir::effective_uid()
            )));
        }
        let mut text = String::new();
        (&mut f)
            .take(MAX_TOKEN_LEN as u64 + 2)
            .read_to_string(&mut text)
            .map_err(io("read"))?;
        let secret = text.trim().to_owned();
        check_token(&secret).map_err(|reason| TokenError::BadFile {
            path: path.to_owned(),
            reason,
        })?;
        Ok(Self {
            secret,
            origin: TokenOrigin::File(path.to_owned()),
        })
    }

    /// Writes a new random token to `path` (which must not exist), mode 0600.
    fn generate(path: &Path) -> Result<Self, TokenError> {
        let mut bytes = [0u8; GENERATED_BYTES];
        fill_random(&mut bytes).map_err(TokenError::Random)?;
        let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let io = |op| io_error(path, op);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io("create"))?;
        // The umask may only have narrowed the mode; say it exactly anyway.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(io("chmod"))?;
        f.write_all(format!("{secret}\n").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io("write"))?;
        Ok(Self {
            secret,
            origin: TokenOrigin::Generated(path.to_owned()),
        })
    }

    /// Where the token came from.
    pub fn origin(&self) -> &TokenOrigin {
        &self.origin
    }

    /// The secret itself (for clients in the same process, e.g. tests).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// Whether `presented` is the token, in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(self.secret.as_bytes(), presented)
    }
}

/// Fills `buf` from the kernel's CSPRNG (getrandom(2)).
fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Compares two byte strings without an early exit on the first difference. The length
/// is not secret (a generated token is always 64 characters).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// What the guard needs: the token and the port the API listens on (for `Origin`).
#[derive(Debug, Clone)]
pub struct Guard {
    /// The token.
    pub token: Arc<ApiToken>,
    /// The API's port.
    pub port: u16,
}

/// Why a request was refused before reaching its handler.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Host` header, or one that does not name loopback (DNS rebinding).
    #[error("Host {0:?} is not a loopback name (localhost, 127.0.0.1, [::1])")]
    Host(String),
    /// An `Origin` header that is not the API's own (a cross-origin web page).
    #[error("cross-origin request from {0:?} refused")]
    Origin(String),
    /// No `Authorization: Bearer` header.
    #[error("this endpoint needs Authorization: Bearer <token> (see agent.api_token_file)")]
    MissingToken,
    /// A bearer token that is not the API's.
    #[error("invalid API token")]
    WrongToken,
    /// A body or content type other than JSON.
    #[error("Content-Type must be application/json, not {0:?}")]
    ContentType(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match self {
            Refusal::Host(_) | Refusal::Origin(_) => StatusCode::FORBIDDEN,
            Refusal::MissingToken | Refusal::WrongToken => StatusCode::UNAUTHORIZED,
            Refusal::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        };
        let challenge = match self {
            Refusal::MissingToken => Some("Bearer realm=\"framebus\""),
            Refusal::WrongToken => Some("Bearer realm=\"framebus\", error=\"invalid_token\""),
            _ => None,
        };
        let mut resp = (status, Json(json!({ "error": self.to_string() }))).into_response();
        if let Some(c) = challenge {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp
    }
}

/// Host part of `authority` (`host`, `host:port`, `[v6]`, `[v6]:port`), and its port.
fn split_authority(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            return (host, tail.strip_prefix(':'));
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    }
}

/// Whether `host` (without port or brackets) is a loopback name.
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Checks one request's headers against the rules in the module docs.
pub fn check(
    guard: &Guard,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    let host = headers.get(header::HOST).map(text).unwrap_or_default();
    if !is_loopback_host(split_authority(&host).0) {
        return Err(Refusal::Host(host));
    }
    if let Some(origin) = headers.get(header::ORIGIN).map(text) {
        let own = origin
            .strip_prefix("http://")
            .map(split_authority)
            .is_some_and(|(h, p)| {
                is_loopback_host(h) && p.and_then(|p| p.parse::<u16>().ok()) == Some(guard.port)
            });
        if !own {
            return Err(Refusal::Origin(origin));
        }
    }
    let open = (method == Method::GET || method == Method::HEAD) && OPEN_PATHS.contains(&path);
    if !open {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| {
                let v = v.as_bytes();
                (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
                    .then(|| v[7..].trim_ascii())
            })
            .ok_or(Refusal::MissingToken)?;
        if !guard.token.matches(presented) {
            return Err(Refusal::WrongToken);
        }
    }
    if method != Method::GET && method != Method::HEAD {
        let has_body = headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
            || headers.contains_key(header::TRANSFER_ENCODING);
        match headers.get(header::CONTENT_TYPE).map(text) {
            Some(ct) => {
                let essence = ct.split(';').next().unwrap_or("").trim();
                if !essence.eq_ignore_ascii_case("application/json") {
                    return Err(Refusal::ContentType(ct));
                }
            }
            None if has_body => return Err(Refusal::ContentType(String::new())),
            None => {}
        }
    }
    Ok(())
}

/// The axum middleware applying [`check`] to every request.
pub async fn guard(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    match check(&guard, req.method(), req.uri().path(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(refusal) => {
            tracing::debug!(
                method = %req.method(),
                path = req.uri().path(),
                "API request refused: {refusal}"
            );
            refusal.into_response()
        }
    }
}

/// Maps an I/O error of `op` on the token file `path` to [`TokenError::Io`].
fn io_error<'a>(path: &'a Path, op: &'static str) -> impl Fn(std::io::Error) -> TokenError + 'a {
    move |source| TokenError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn guard() -> Guard {
        Guard {
            token: Arc::new(ApiToken::new(SECRET, TokenOrigin::Env).unwrap()),
            port: 7878,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const AUTH: (&str, &str) = ("authorization", "Bearer 0123456789abcdef0123456789abcdef");

    #[test]
    fn probes_are_open_and_the_rest_needs_the_token() {
        let g = guard();
        let host = ("host", "127.0.0.1:7878");
        for p in OPEN_PATHS {
            assert_eq!(check(&g, &Method::GET, p, &headers(&[host])), Ok(()));
        }
        for p in ["/cameras", "/cameras/a", "/models", "/models/m"] {
            assert_eq!(
                check(&g, &Method::GET, p, &headers(&[host])),
                Err(Refusal::MissingToken),
                "{p}"
            );
            assert_eq!(check(&g, &Method::GET, p, &headers(&[host, AUTH])), Ok(()));
        }
        let wrong = ("authorization", "Bearer 0123456789abcdef0123456789abcdeX");
        assert_eq!(
            check(
                &g,
                &Method::POST,
                "/cameras/a/stop",
                &headers(&[host, wrong])
            ),
            Err(Refusal::WrongToken)
        );
        // The probes still need the token for anything but reading.
        assert_eq!(
            check(&g, &Method::POST, "/health", &headers(&[host])),
            Err(Refusal::MissingToken)
        );
        let basic = ("authorization", "Basic YWRtaW46cGFzcw==");
        assert_eq!(
            check(&g, &Method::DELETE, "/cameras/a", &headers(&[host, basic])),
            Err(Refusal::MissingToken)
        );
    }

    #[test]
    fn host_and_origin_must_be_loopback_and_own() {
        let g = guard();
        for host in [
            "localhost:7878",
            "127.0.0.1",
            "[::1]:7878",
            "127.0.0.2:1",
            "LOCALHOST",
        ] {
            assert_eq!(
                check(&g, &Method::GET, "/health", &headers(&[("host", host)])),
                Ok(()),
                "{host}"
            );
        }
        for host in [
            "evil.example:7878",
            "10.0.0.1:7878",
            "",
            "localhost.evil.example",
        ] {
            assert!(
                matches!(
                    check(&g, &Method::GET, "/health", &headers(&[("host", host)])),
                    Err(Refusal::Host(_))
                ),
                "{host}"
            );
        }
        let host = ("host", "127.0.0.1:7878");
        for origin in [
            "http://127.0.0.1:7878",
            "http://localhost:7878",
            "http://[::1]:7878",
        ] {
            assert_eq!(
                check(
                    &g,
                    &Method::POST,
                    "/cameras/a/stop",
                    &headers(&[host, AUTH, ("origin", origin)])
                ),
                Ok(()),
                "{origin}"
            );
        }
        for origin in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:8080",
            "https://127.0.0.1:7878",
            "http://127.0.0.1",
        ] {
            assert_eq!(
                check(
                    &g,
                    &Method::POST,
                    "/cameras/a/stop",
                    &headers(&[host, AUTH, ("origin", origin)])
                ),
                Err(Refusal::Origin(origin.to_owned())),
                "{origin}"
            );
        }
    }

    #[test]
    fn bodies_must_be_json() {
        let g = guard();
        let host = ("host", "127.0.0.1:7878");
        let post = |extra: &[(&str, &str)]| {
            let mut h = vec![host, AUTH];
            h.extend_from_slice(extra);
            check(&g, &Method::POST, "/cameras", &headers(&h))
        };
        assert_eq!(
            post(&[("content-type", "text/plain"), ("content-length", "10")]),
            Err(Refusal::ContentType("text/plain".into()))
        );
        assert_eq!(
            post(&[("content-type", "application/x-www-form-urlencoded")]),
            Err(Refusal::ContentType(
                "application/x-www-form-urlencoded".into()
            ))
        );
        assert_eq!(
            post(&[("content-length", "10")]),
            Err(Refusal::ContentType(String::new()))
        );
        assert_eq!(
            post(&[
                ("content-type", "Application/JSON; charset=utf-8"),
                ("content-length", "10")
            ]),
            Ok(())
        );
        // No body, no type: start/stop/delete.
        assert_eq!(post(&[("content-length", "0")]), Ok(()));
        assert_eq!(post(&[]), Ok(()));
    }

    #[test]
    fn refusals_answer_with_status_json_and_challenge() {
        let r = Refusal::MissingToken.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"framebus\""
        );
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            Refusal::ContentType("x".into()).into_response().status(),
            415
        );
        assert_eq!(Refusal::Origin("x".into()).into_response().status(), 403);
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn a_generated_token_is_0600_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOKEN_FILE_NAME);
        let first = ApiToken::resolve(None, &path).unwrap();
        assert_eq!(first.origin(), &TokenOrigin::Generated(path.clone()));
        assert_eq!(first.secret().len(), 2 * GENERATED_BYTES);
        assert!(first.secret().bytes().all(|b| b.is_ascii_hexdigit()));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        let again = ApiToken::resolve(None, &path).unwrap();
        assert_eq!(again.origin(), &TokenOrigin::File(path.clone()));
        assert_eq!(again.secret(), first.secret());
        // The environment wins; a bad one is refused, not ignored.
        let env = ApiToken::resolve(Some(format!(" {SECRET}\n")), &path).unwrap();
        assert_eq!((env.secret(), env.origin()), (SECRET, &TokenOrigin::Env));
        assert!(matches!(
            ApiToken::resolve(Some("short".into()), &path),
            Err(TokenError::BadEnv { .. })
        ));
        assert!(!format!("{first:?}").contains(first.secret()));
    }

    #[test]
    fn an_untrusted_token_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, SECRET).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ApiToken::resolve(None, &path).unwrap_err();
        assert!(matches!(e, TokenError::Untrusted { .. }), "{e}");
        assert!(e.to_string().contains("0o644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(ApiToken::resolve(None, &path).unwrap().secret(), SECRET);

        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = ApiToken::resolve(None, &link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");

        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        let e = ApiToken::resolve(None, &sub).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");

        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            ApiToken::resolve(None, &short),
            Err(TokenError::BadFile { .. })
        ));
    }
}
