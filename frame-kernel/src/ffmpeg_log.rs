//! FFmpeg's own log lines, routed into `tracing` (target `ffmpeg`) with the camera id,
//! since they may come from decoder threads outside the camera span. Rate-limited: a
//! corrupt stream can make the decoder print hundreds of lines per second.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use ffmpeg_next::ffi;

static CAMERA: OnceLock<String> = OnceLock::new();
/// Strings never to be logged (the source's user-info and password), replaced by `***`
/// in every FFmpeg line: FFmpeg's messages are not ours to word, and some name the URL.
static SECRETS: OnceLock<Vec<String>> = OnceLock::new();
/// While set, FFmpeg's errors and warnings are logged at debug level: during
/// reconnects every attempt fails the same way, and the kernel logs each loss itself.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Most FFmpeg lines logged per second; the rest are counted and reported.
const MAX_LINES_PER_SEC: u64 = 50;
/// Current one-second window (monotonic seconds) in the high 32 bits, lines logged in
/// it in the low 32 bits.
static WINDOW: AtomicU64 = AtomicU64::new(0);
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Routes FFmpeg logging through `tracing`. `verbose` lets FFmpeg's verbose lines
/// through (as debug); otherwise only warnings and errors.
pub fn install(camera_id: &str, verbose: bool) {
    let _ = CAMERA.set(camera_id.to_owned());
    // SAFETY: setting FFmpeg's global log level and callback; `callback` is a valid
    // `extern "C"` function for the whole process lifetime.
    unsafe {
        ffi::av_log_set_level(if verbose {
            ffi::AV_LOG_VERBOSE
        } else {
            ffi::AV_LOG_WARNING
        });
        ffi::av_log_set_callback(Some(callback));
    }
}

/// Registers the user-info (`user:password`) of `url`, if any, so that FFmpeg lines
/// never show it. Call once, before the source is opened.
pub fn hide_credentials_of(url: &str) {
    let Some((_, rest)) = url.split_once("://") else {
        return;
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return;
    };
    let mut secrets = vec![userinfo.to_owned()];
    if let Some((_, password)) = userinfo.split_once(':') {
        if !password.is_empty() {
            secrets.push(password.to_owned());
        }
    }
    secrets.retain(|s| !s.is_empty());
    let _ = SECRETS.set(secrets);
}

/// `text` with every registered secret replaced by `***`.
pub fn scrub(text: &str) -> std::borrow::Cow<'_, str> {
    let secrets = SECRETS.get().map_or(&[][..], Vec::as_slice);
    let mut out = std::borrow::Cow::Borrowed(text);
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = std::borrow::Cow::Owned(
                out.replace(secret.as_str(), proto_schema::redact::REDACTED),
            );
        }
    }
    out
}

/// Demotes FFmpeg's errors and warnings to debug (`true`) or restores them.
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn admit() -> bool {
    let sec = proto_schema::time::MonoNanos::now().get() / 1_000_000_000;
    let cur = WINDOW.load(Ordering::Relaxed);
    let new_window = (sec & 0xFFFF_FFFF) << 32 | 1;
    if cur >> 32 != sec & 0xFFFF_FFFF
        && WINDOW
            .compare_exchange(cur, new_window, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let dropped = SUPPRESSED.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(target: "ffmpeg", camera = camera(), dropped, "FFmpeg log lines suppressed");
        }
        return true;
    }
    if WINDOW.fetch_add(1, Ordering::Relaxed) & 0xFFFF_FFFF < MAX_LINES_PER_SEC {
        true
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// The `va_list` parameter as bindgen declares it: x86_64's `va_list` is an array, so it
/// arrives as a pointer to its tag; on aarch64 and most other targets it is passed as the
/// `va_list` value itself.
#[cfg(target_arch = "x86_64")]
type VaList = *mut ffi::__va_list_tag;
#[cfg(not(target_arch = "x86_64"))]
type VaList = ffi::va_list;

fn camera() -> &'static str {
    CAMERA.get().map_or("", String::as_str)
}

unsafe extern "C" fn callback(avcl: *mut c_void, level: c_int, fmt: *const c_char, args: VaList) {
    // Called by av_log with a valid format string and a va_list that is consumed exactly
    // once, through av_log_format_line2, into a local buffer that it NUL-terminates.
    // SAFETY: av_log_get_level reads a global int; no pointer is involved.
    if level > unsafe { ffi::av_log_get_level() } || !admit() {
        return;
    }
    let mut line = [0 as c_char; 1024];
    let mut print_prefix: c_int = 1;
    // SAFETY: fmt and args come from av_log unchanged and args is consumed only here;
    // the output buffer and its length are a live local array (it truncates to fit).
    unsafe {
        ffi::av_log_format_line2(
            avcl,
            level,
            fmt,
            args,
            line.as_mut_ptr(),
            line.len() as c_int,
            &mut print_prefix,
        );
    }
    // SAFETY: av_log_format_line2 NUL-terminated `line` within its length.
    let text = unsafe { CStr::from_ptr(line.as_ptr()) }.to_string_lossy();
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    let text = scrub(text);
    let camera = camera();
    let level = if QUIET.load(Ordering::Relaxed) {
        level.max(ffi::AV_LOG_VERBOSE)
    } else {
        level
    };
    match level {
        l if l <= ffi::AV_LOG_FATAL => tracing::error!(target: "ffmpeg", camera, "{text}"),
        l if l <= ffi::AV_LOG_WARNING => tracing::warn!(target: "ffmpeg", camera, "{text}"),
        l if l <= ffi::AV_LOG_INFO => tracing::info!(target: "ffmpeg", camera, "{text}"),
        l if l <= ffi::AV_LOG_VERBOSE => tracing::debug!(target: "ffmpeg", camera, "{text}"),
        _ => tracing::trace!(target: "ffmpeg", camera, "{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_scrubbed_from_ffmpeg_lines() {
        hide_credentials_of("rtsp://admin:s3cr3t@127.0.0.1:8554/cam");
        assert_eq!(
            scrub("[rtsp @ 0x1] rtsp://admin:s3cr3t@127.0.0.1:8554/cam: 401"),
            "[rtsp @ 0x1] rtsp://***@127.0.0.1:8554/cam: 401"
        );
        assert_eq!(scrub("password s3cr3t echoed"), "password *** echoed");
        assert_eq!(scrub("nothing here"), "nothing here");
    }
}
