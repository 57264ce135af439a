//! The shim's own log, written to the `log` FIFO containerd reads from the bundle directory, in
//! containerd's (logrus text) format: `time="…" level=info msg="…" key=value`.
//!
//! wasmtime and its WASI implementation trace every host call at info level; those are kept at
//! warnings unless `WASMBOX_LOG` (an env filter) asks for more.

use std::fmt::Write as _;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Default filter: our crates at info, everything else at warn.
const DEFAULT_FILTER: &str = "warn,wasmbox_shim=info,wasmbox_runtime=info";

/// Sends `tracing` events to containerd's log FIFO (`./log`). `debug` (containerd's `-debug`)
/// lowers our crates to debug.
pub fn init(debug: bool) {
    let Ok(file) = std::fs::OpenOptions::new().write(true).open("log") else {
        return;
    };
    let default = if debug {
        "warn,wasmbox_shim=debug,wasmbox_runtime=debug"
    } else {
        DEFAULT_FILTER
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMBOX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .event_format(Logrus)
        .with_writer(Mutex::new(LineWriter(file)))
        .try_init();
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

    #[test]
    fn values_are_quoted_only_when_needed() {
        assert_eq!(quote("abc-1.2"), "abc-1.2");
        assert_eq!(quote("two words"), "\"two words\"");
        assert_eq!(quote("say \"hi\"\n"), "\"say \\\"hi\\\"\\n\"");
        assert_eq!(quote(""), "\"\"");
    }
}
