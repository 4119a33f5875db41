//! Credentials never leave the process that needs them: every API response, log line and
//! metric label shows a camera source through [`redact_url`].

use std::borrow::Cow;

/// What replaces the user-info part of a URL.
pub const REDACTED: &str = "***";

/// `scheme://user:pass@host/...` becomes `scheme://***@host/...`; anything without
/// user-info (a file path, a URL without `@` before the host) is returned unchanged.
/// Query parameters are left alone, since cameras rarely carry secrets there and a
/// redactor that guesses would hide useful paths.
pub fn redact_url(source: &str) -> Cow<'_, str> {
    let Some(scheme_end) = source.find("://") else {
        return Cow::Borrowed(source);
    };
    let rest_start = scheme_end + 3;
    let rest = &source[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => Cow::Owned(format!(
            "{}{}@{}",
            &source[..rest_start],
            REDACTED,
            &rest[at + 1..]
        )),
        None => Cow::Borrowed(source),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_replaced() {
        assert_eq!(
            redact_url("rtsp://admin:pass@10.0.0.5:554/stream1"),
            "rtsp://***@10.0.0.5:554/stream1"
        );
        assert_eq!(redact_url("rtsps://u@h/x"), "rtsps://***@h/x");
        // '@' inside the password, and an '@' in the path that is not user-info.
        assert_eq!(redact_url("rtsp://a:p@ss@h/p@th"), "rtsp://***@h/p@th");
        assert_eq!(redact_url("rtsp://h/p@th"), "rtsp://h/p@th");
    }

    #[test]
    fn other_sources_are_unchanged() {
        for s in [
            "/srv/video/a.mp4",
            "rtsp://127.0.0.1:8554/cam",
            "",
            "file:x@y",
        ] {
            assert_eq!(redact_url(s), s);
        }
    }
}
