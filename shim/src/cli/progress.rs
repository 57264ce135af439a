//! Transfer progress: a bar per blob on a terminal (indicatif), one plain line per blob otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use wasmbox_images::registry::Progress;

/// Progress shown on stderr.
pub enum StderrProgress {
    /// Bars, on a terminal.
    Bars {
        /// All bars.
        multi: MultiProgress,
        /// Each blob's bar.
        bars: Mutex<HashMap<String, ProgressBar>>,
    },
    /// A line per finished blob.
    Lines,
}

impl StderrProgress {
    /// Bars when stderr is a terminal, lines otherwise.
    pub fn new() -> Self {
        if std::io::stderr().is_terminal() {
            StderrProgress::Bars {
                multi: MultiProgress::new(),
                bars: Mutex::new(HashMap::new()),
            }
        } else {
            StderrProgress::Lines
        }
    }
}

impl Default for StderrProgress {
    fn default() -> Self {
        Self::new()
    }
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

impl Progress for StderrProgress {
    fn started(&self, digest: &str, size: u64) {
        if let StderrProgress::Bars { multi, bars } = self {
            let bar = multi.add(ProgressBar::new(size));
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(short(digest).to_string());
            bars.lock().expect("bars").insert(digest.to_string(), bar);
        }
    }

    fn advanced(&self, digest: &str, n: u64) {
        if let StderrProgress::Bars { bars, .. } = self
            && let Some(b) = bars.lock().expect("bars").get(digest)
        {
            b.inc(n);
        }
    }

    fn done(&self, digest: &str, note: &str) {
        match self {
            StderrProgress::Bars { multi, bars } => {
                match bars.lock().expect("bars").remove(digest) {
                    Some(b) => b.finish_with_message(note.to_string()),
                    None => {
                        let _ = multi.println(format!("{}: {note}", short(digest)));
                    }
                }
            }
            StderrProgress::Lines => eprintln!("{digest}: {note}"),
        }
    }
}
