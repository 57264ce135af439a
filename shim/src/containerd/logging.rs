//! The shim's own log, written to the `log` FIFO containerd reads from the bundle directory, in
//! containerd's (logrus text) format: `time="…" level=info msg="…" key=value`.
//!
//! wasmtime and its WASI implementation trace every host call at info level; those are kept at
//! warnings unless `WASMBOX_LOG` (a list of `target=level`, [`crate::log_filter`]) asks for more.

use std::fmt::Write as _;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Default filter: our crates at info, everything else at warn.
const DEFAULT_FILTER: &str = "warn,wasmbox_shim=info,wasmbox_runtime=info";
/// Default filter under containerd's `-debug`: our crates at debug.
const DEBUG_FILTER: &str = "warn,wasmbox_shim=debug,wasmbox_runtime=debug";

/// Sends `tracing` events to containerd's log FIFO (`./log`). `debug` (containerd's `-debug`)
/// lowers our crates to debug.
pub fn init(debug: bool) {
    let Ok(file) = std::fs::OpenOptions::new().write(true).open("log") else {
        return;
    };
    let default = if debug { DEBUG_FILTER } else { DEFAULT_FILTER };
    let (filter, bad) = match std::env::var("WASMBOX_LOG") {
        Ok(v) => match crate::parse_log_filter(&v) {
            Ok(f) => (f, None),
            Err(e) => (default_filter(default), Some(e)),
        },
        Err(_) => (default_filter(default), None),
    };
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .event_format(Logrus)
                .with_writer(Mutex::new(LineWriter(file))),
        )
        .with(filter)
        .try_init();
    if let Some(e) = bad {
        tracing::warn!("WASMBOX_LOG: {e}; logging with the default filter");
    }
}

/// One of the default filters (each parses: see the tests).
fn default_filter(s: &str) -> tracing_subscriber::filter::Targets {
    crate::parse_log_filter(s).unwrap_or_default()
}

/// Writes each formatted event in one `write`, so lines of concurrent shims never interleave.
struct LineWriter(std::fs::File);

impl std::io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // A gone reader must not take the shim down.
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// logrus's text format.
struct Logrus;

struct Fields {
    msg: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), quote(value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let v = format!("{value:?}");
        if field.name() == "message" {
            self.msg = v;
        } else {
            let _ = write!(self.rest, " {}={}", field.name(), quote(&v));
        }
    }
}

/// Quotes a value as logrus does when it needs quoting.
fn quote(v: &str) -> String {
    if !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._/@^+:".contains(c))
    {
        v.to_string()
    } else {
        serde_json::to_string(v).unwrap_or_default()
    }
}

impl<S, N> FormatEvent<S, N> for Logrus
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let mut f = Fields {
            msg: String::new(),
            rest: String::new(),
        };
        event.record(&mut f);
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        let level = if level == "warn" {
            "warning".into()
        } else {
            level
        };
        writeln!(
            w,
            "time=\"{}\" level={level} msg={}{} runtime=io.containerd.wasmbox.v1",
            wasmbox_runtime::rfc3339::nanos(std::time::SystemTime::now()),
            quote(&f.msg),
            f.rest
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn the_default_filters_parse_and_keep_wasmtime_at_warnings() {
        for (s, ours) in [
            (DEFAULT_FILTER, LevelFilter::INFO),
            (DEBUG_FILTER, LevelFilter::DEBUG),
        ] {
            let f = crate::parse_log_filter(s).unwrap();
            assert_eq!(f.default_level(), Some(LevelFilter::WARN));
            assert!(f.would_enable(
                "wasmbox_runtime::engine",
                ours.into_level().as_ref().unwrap()
            ));
            assert!(!f.would_enable("wasmtime_wasi::p1", &tracing::Level::INFO));
        }
        assert!(crate::parse_log_filter("warn,wasmbox_runtime=loud").is_err());
    }

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(quote("abc-1.2"), "abc-1.2");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
        assert_eq!(quote(""), "\"\"");
    }
}
