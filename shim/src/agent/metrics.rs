//! The agent's Prometheus metrics: what it found and compiled, how long compiling took, what
//! waits, and whether it is connected to containerd. Labels come from fixed sets.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// What became of one image.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Outcome {
    /// Its wasm was compiled into the cache.
    Compiled,
    /// Its wasm was in the cache already.
    Cached,
    /// Its wasm did not compile.
    Failed,
    /// It runs no wasm.
    NotWasm,
    /// It could not be read from containerd.
    Unreadable,
    /// Its manifest was looked at before (under this name or another).
    SeenBefore,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Compiled => "compiled",
            Outcome::Cached => "cached",
            Outcome::Failed => "failed",
            Outcome::NotWasm => "not_wasm",
            Outcome::Unreadable => "unreadable",
            Outcome::SeenBefore => "seen_before",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

/// The agent's counters and gauges.
pub struct Metrics {
    registry: Registry,
    images: Family<ResultLabel, Counter>,
    /// Seconds spent compiling.
    pub compile_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Images waiting to be looked at.
    pub queued: Gauge,
    /// 1 while subscribed to containerd's events.
    pub connected: Gauge,
    /// Connections to containerd made after the first.
    pub reconnects: Counter,
}

impl Metrics {
    /// A fresh set, registered.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("wasmbox_agent");
        let images = Family::<ResultLabel, Counter>::default();
        registry.register(
            "images",
            "Images looked at, by what became of them",
            images.clone(),
        );
        let compile_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "compile",
            "Time spent compiling wasm into the cache",
            Unit::Seconds,
            compile_seconds.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "queued_images",
            "Images waiting to be looked at",
            queued.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "containerd_connected",
            "1 while the agent is subscribed to containerd's events",
            connected.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "containerd_reconnects",
            "Connections to containerd made again after one was lost",
            reconnects.clone(),
        );
        Arc::new(Self {
            registry,
            images,
            compile_seconds,
            queued,
            connected,
            reconnects,
        })
    }

    /// Counts an image.
    pub fn image(&self, outcome: Outcome) {
        self.images
            .get_or_create(&ResultLabel {
                result: outcome.label().into(),
            })
            .inc();
    }

    /// The metrics as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_with_their_conventional_names() {
        let m = Metrics::new();
        m.image(Outcome::Compiled);
        m.image(Outcome::Compiled);
        m.image(Outcome::NotWasm);
        m.compile_seconds.inc_by(1.5);
        let text = m.render();
        assert!(
            text.contains("wasmbox_agent_images_total{result=\"compiled\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("wasmbox_agent_images_total{result=\"not_wasm\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("wasmbox_agent_compile_seconds_total 1.5"),
            "{text}"
        );
        assert!(
            text.contains("wasmbox_agent_containerd_connected 0"),
            "{text}"
        );
    }
}
