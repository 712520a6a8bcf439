//! The tracing setup of `elastos` and of the daemon: text for people or JSON for log pipelines
//! (`--log-format`), on stderr.
//!
//! Text has colours only on a terminal: escape codes in a file or a pipe are noise (they were
//! written to files before this module). Under systemd, stderr is a stream to journald
//! (`$JOURNAL_STREAM` names it): then each line starts with its syslog priority (`<4>` for a
//! warning, as sd-daemon(3) describes), which journald turns into the entry's PRIORITY so that
//! `journalctl -p warning` works, and carries no timestamp of its own (journald stamps every
//! entry). JSON lines are left as they are, one object per event.

use std::io::IsTerminal;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One line per event for people (colours on a terminal only).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields.message` and the event's fields.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?}: expected text or json")),
        }
    }
}

/// The filter from `level` when given (a level or a tracing filter), else `ELASTOS_LOG`, else
/// `default`.
pub fn filter(level: Option<&str>, default: &str) -> EnvFilter {
    match level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_env("ELASTOS_LOG").unwrap_or_else(|_| EnvFilter::new(default)),
    }
}

/// Installs the process's subscriber: `filter`'s events in `format` on stderr.
pub fn init(filter: EnvFilter, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let stderr = std::io::stderr();
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text if stderr.is_terminal() => builder.init(),
        LogFormat::Text if stderr_is_journal() => {
            let format = tracing_subscriber::fmt::format()
                .with_target(false)
                .with_ansi(false)
                .without_time();
            builder
                .with_ansi(false)
                .event_format(WithPriority(format))
                .init()
        }
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

/// Whether stderr is the journal stream systemd set up: `$JOURNAL_STREAM` is `DEVICE:INODE` of
/// that stream, and a child that inherited the variable but not the stream must not think so.
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var("JOURNAL_STREAM").ok() else {
        return false;
    };
    let Some((device, inode)) = stream.split_once(':') else {
        return false;
    };
    // stat() follows /proc's magic link to the socket itself.
    std::fs::metadata("/proc/self/fd/2")
        .is_ok_and(|stderr| device.parse() == Ok(stderr.dev()) && inode.parse() == Ok(stderr.ino()))
}

/// The syslog priority journald reads from a `<N>` line prefix.
fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// A text format with each line prefixed by its event's syslog priority.
struct WithPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.0.format_event(context, writer, event)
    }
}
