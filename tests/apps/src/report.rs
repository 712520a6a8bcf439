//! What a probe found, as one JSON line, and the `key=value` arguments probes take.

use std::collections::BTreeMap;
use std::fmt;

/// The result of one probe: the return value of the call it made and the errno it failed with.
///
/// `errno` is 0 when the call succeeded. [`Outcome::SETUP_FAILED`] marks a probe that could not
/// even attempt its call (a missing argument, a host without the needed file), so that a harness
/// never mistakes "did not try" for "was denied".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ret: i64,
    pub errno: i32,
    pub detail: String,
}

impl Outcome {
    /// The errno reported when the probe could not attempt its call at all.
    pub const SETUP_FAILED: i32 = -1;

    /// Builds an outcome from a libc-style return value, reading errno when it is negative.
    ///
    /// Call this immediately after the call, before anything else can overwrite errno.
    pub fn of(ret: i64, detail: impl Into<String>) -> Self {
        let errno = if ret < 0 { last_errno() } else { 0 };
        Self {
            ret,
            errno,
            detail: detail.into(),
        }
    }

    /// A successful call that returned `ret`.
    pub fn ok(ret: i64, detail: impl Into<String>) -> Self {
        Self {
            ret,
            errno: 0,
            detail: detail.into(),
        }
    }

    /// A call that failed with `errno`.
    pub fn failed(errno: i32, detail: impl Into<String>) -> Self {
        Self {
            ret: -1,
            errno,
            detail: detail.into(),
        }
    }

    /// A failure carried by an `io::Error` (std wrappers report errno this way).
    pub fn io_failed(err: &std::io::Error, detail: impl fmt::Display) -> Self {
        Self::failed(
            err.raw_os_error().unwrap_or(Self::SETUP_FAILED),
            format!("{detail}: {err}"),
        )
    }

    /// The probe could not attempt its call.
    pub fn setup_failed(detail: impl Into<String>) -> Self {
        Self {
            ret: -1,
            errno: Self::SETUP_FAILED,
            detail: detail.into(),
        }
    }

    /// Formats the outcome as the one-line JSON object harnesses parse.
    pub fn to_json(&self, probe: &str) -> String {
        format!(
            "{{\"probe\":{},\"ret\":{},\"errno\":{},\"detail\":{}}}",
            json_string(probe),
            self.ret,
            self.errno,
            json_string(&self.detail)
        )
    }
}

/// errno of the last failed libc call in this thread.
pub fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A JSON string literal for `s` (RFC 8259 escaping).
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `key=value` arguments a harness passes to probes (paths and pids it prepared).
///
/// Known keys: `canary` (a host file), `home_canary` (a file in the caller's host home),
/// `port` (a 127.0.0.1 TCP listener), `unix` (a unix stream listener path), `pid` (a sacrificial
/// host process), `env` (an environment variable name the caller set), `fd` (an inheritable fd
/// the caller opened), `app` (the bundle directory; `/app` in the jail).
#[derive(Debug, Default)]
pub struct ProbeArgs(BTreeMap<String, String>);

impl ProbeArgs {
    /// Parses `key=value` words; anything else is rejected with a message naming it.
    pub fn parse(words: &[String]) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("probe argument {word:?} is not of the form key=value"))?;
            map.insert(key.to_owned(), value.to_owned());
        }
        Ok(Self(map))
    }

    /// The value of `key`, or an outcome saying the harness forgot it.
    pub fn get(&self, key: &str) -> Result<&str, Outcome> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Outcome::setup_failed(format!("missing probe argument {key}=...")))
    }

    /// The bundle directory: `/app` in the jail, a host copy when probing unjailed.
    pub fn app_dir(&self) -> &str {
        self.0.get("app").map_or("/app", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes_quotes_backslashes_and_controls() {
        let outcome = Outcome::failed(13, "a\"b\\c\nd\u{1}");
        assert_eq!(
            outcome.to_json("p"),
            r#"{"probe":"p","ret":-1,"errno":13,"detail":"a\"b\\c\nd\u0001"}"#
        );
    }

    #[test]
    fn args_reject_words_without_equals() {
        assert!(ProbeArgs::parse(&["port".to_owned()]).is_err());
        let args = ProbeArgs::parse(&["port=1".to_owned()]).unwrap();
        assert_eq!(args.get("port").unwrap(), "1");
        assert_eq!(args.get("pid").unwrap_err().errno, Outcome::SETUP_FAILED);
    }
}
