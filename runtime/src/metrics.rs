//! Prometheus metrics of served components: one set for a process (a `wasmbox serve`, or a pod's
//! shim with all its containers told apart by a `container` label), served at `/metrics` in the
//! OpenMetrics text format, which Prometheus scrapes as its own.
//!
//! Events (requests, traps, limit hits, outgoing requests, loads) are counted as they happen;
//! what a server holds (instance slots, guest memory, guest CPU time) is read from each live
//! server at scrape time, so a server that has ended leaves no stale gauge behind.
//!
//! Every label value is from a fixed set (methods outside the standard ones are `other`,
//! statuses are classes), so no client can grow the series a server holds.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub mod endpoint;

/// A metric's labels: name and value pairs.
pub type Labels = Vec<(String, String)>;

/// The metrics of every server of a process.
pub struct Metrics {
    registry: Registry,
    families: Families,
    live: Arc<Live>,
}

/// The counted metrics, by label set.
#[derive(Clone)]
struct Families {
    requests: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    in_flight: Family<Labels, Gauge>,
    traps: Family<Labels, Counter>,
    limit_hits: Family<Labels, Counter>,
    outgoing: Family<Labels, Counter>,
    compile_seconds: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
    loads: Family<Labels, Counter>,
}

/// Request durations, from 1 ms to about 65 s.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

impl Metrics {
    /// An empty set of metrics.
    pub fn new() -> Arc<Self> {
        let families = Families {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            in_flight: Family::default(),
            traps: Family::default(),
            limit_hits: Family::default(),
            outgoing: Family::default(),
            compile_seconds: Family::default(),
            loads: Family::default(),
        };
        let live = Arc::new(Live::default());
        let mut registry = Registry::with_prefix("wasmbox");
        let f = &families;
        registry.register(
            "http_requests",
            "HTTP requests answered, by method and status class",
            f.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its response's last byte",
            Unit::Seconds,
            f.duration.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests arrived and not yet answered in full",
            f.in_flight.clone(),
        );
        registry.register(
            "guest_traps",
            "Requests whose instance trapped",
            f.traps.clone(),
        );
        registry.register(
            "http_limit_hits",
            "Requests refused or cut by a serving limit, by limit",
            f.limit_hits.clone(),
        );
        registry.register(
            "http_outgoing_requests",
            "Outgoing wasi:http requests of handlers, by outcome (allowed, denied, limited)",
            f.outgoing.clone(),
        );
        registry.register_with_unit(
            "compile",
            "Time spent loading the served component: compiling it, or reading it from the compiled-code cache",
            Unit::Seconds,
            f.compile_seconds.clone(),
        );
        registry.register(
            "compile_loads",
            "Loads of the served component, by where its code came from (cache, compiled, memory)",
            f.loads.clone(),
        );
        registry.register_collector(Box::new(live.clone()));
        Arc::new(Self {
            registry,
            families,
            live,
        })
    }

    /// The metrics as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String does not fail");
        text
    }

    /// Serves `GET /metrics` on `listener` from a thread of its own, for as long as the process
    /// lives. At most a few scrapes are served at once, each within a deadline.
    pub fn serve(self: &Arc<Self>, listener: std::net::TcpListener) -> std::io::Result<()> {
        let me = self.clone();
        endpoint::start(Arc::new(move || me.render()), listener)
    }

    /// A server's view: what it counts carries `labels`, and `sampled` is read at each scrape
    /// while it lives.
    pub(crate) fn observer(&self, labels: Labels, sampled: Weak<dyn Sampled>) -> Observer {
        self.live
            .servers
            .lock()
            .expect("metrics lock")
            .push((labels.clone(), sampled));
        let hot = Hot {
            in_flight: self.families.in_flight.get_or_create_owned(&labels),
            duration: self.families.duration.get_or_create_owned(&labels),
            requests: Default::default(),
        };
        Observer(Arc::new(Observed {
            labels,
            families: self.families.clone(),
            hot,
        }))
    }
}

/// What a server holds, read at scrape time.
pub(crate) struct Sample {
    pub(crate) slots_in_use: u64,
    pub(crate) slots: u64,
    pub(crate) memory: u64,
    pub(crate) cpu: Duration,
}

/// A server that can say what it holds.
pub(crate) trait Sampled: Send + Sync {
    fn sample(&self) -> Sample;
}

/// A gauge read from each live server: its name, help, unit and value.
type Gauged = (&'static str, &'static str, Option<Unit>, fn(&Sample) -> i64);

/// The live servers, read at each scrape.
#[derive(Default)]
struct Live {
    servers: Mutex<Vec<(Labels, Weak<dyn Sampled>)>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let samples: Vec<(Labels, Sample)> = {
            let mut servers = self.servers.lock().expect("metrics lock");
            servers.retain(|(_, s)| s.strong_count() > 0);
            servers
                .iter()
                .filter_map(|(l, s)| Some((l.clone(), s.upgrade()?.sample())))
                .collect()
        };
        let gauges: [Gauged; 3] = [
            (
                "instance_slots_in_use",
                "Instance slots running a request",
                None,
                |s| s.slots_in_use as i64,
            ),
            (
                "instance_slots",
                "Instance slots: requests handled at once",
                None,
                |s| s.slots as i64,
            ),
            (
                "guest_memory",
                "Linear memory and tables of the instances alive",
                Some(Unit::Bytes),
                |s| s.memory as i64,
            ),
        ];
        for (name, help, unit, value) in &gauges {
            let mut m = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
            for (labels, s) in &samples {
                ConstGauge::new(value(s)).encode(m.encode_family(labels)?)?;
            }
        }
        let mut m = encoder.encode_descriptor(
            "guest_cpu",
            "CPU time spent running the instances",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        for (labels, s) in &samples {
            ConstCounter::new(s.cpu.as_secs_f64()).encode(m.encode_family(labels)?)?;
        }
        Ok(())
    }
}

/// A limit that refused or cut a request.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Limit {
    /// `--max-body-size` (413).
    BodySize,
    /// A client that stopped sending its body (`--idle-timeout`, 408).
    BodyStalled,
    /// Too many requests waiting for a slot (503, or `REFUSED_STREAM`).
    Waiting,
    /// `--request-timeout`.
    RequestTimeout,
    /// `--request-memory`.
    RequestMemory,
    /// The container's memory, taken by the requests in flight.
    Memory,
}

impl Limit {
    fn name(self) -> &'static str {
        match self {
            Limit::BodySize => "body_size",
            Limit::BodyStalled => "body_stalled",
            Limit::Waiting => "waiting",
            Limit::RequestTimeout => "request_timeout",
            Limit::RequestMemory => "request_memory",
            Limit::Memory => "memory",
        }
    }
}

/// One server's counters, labelled as its: a handle each request and each outgoing-request
/// hook holds, so cloning it is one reference count, not its labels and families.
#[derive(Clone)]
pub(crate) struct Observer(Arc<Observed>);

struct Observed {
    labels: Labels,
    families: Families,
    /// What every request touches, looked up once: nothing is allocated or hashed per request.
    hot: Hot,
}

/// A server's per-request series, each resolved in its family once.
struct Hot {
    in_flight: Gauge,
    duration: Histogram,
    /// By method (the standard ones, then `other`) and status class.
    requests: [[OnceLock<Counter>; 5]; METHODS.len() + 1],
}

/// A request in flight: counted until dropped.
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Observer {
    fn with(&self, more: &[(&str, &str)]) -> Labels {
        let mut l = self.0.labels.clone();
        l.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        l
    }

    /// A request has arrived.
    pub(crate) fn arrived(&self) -> InFlight {
        let g = self.0.hot.in_flight.clone();
        g.inc();
        InFlight(g)
    }

    /// A request was answered (or its client left) after `took`.
    pub(crate) fn answered(&self, method: &str, status: u16, took: Duration) {
        let m = METHODS
            .iter()
            .position(|k| *k == method)
            .unwrap_or(METHODS.len());
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.0.hot.requests[m][class]
            .get_or_init(|| {
                let labels = self.with(&[
                    ("method", METHODS.get(m).copied().unwrap_or("other")),
                    ("status", CLASSES[class]),
                ]);
                self.0.families.requests.get_or_create_owned(&labels)
            })
            .inc();
        self.0.hot.duration.observe(took.as_secs_f64());
    }

    pub(crate) fn trapped(&self) {
        self.0.families.traps.get_or_create(&self.0.labels).inc();
    }

    pub(crate) fn limit(&self, limit: Limit) {
        let labels = self.with(&[("limit", limit.name())]);
        self.0.families.limit_hits.get_or_create(&labels).inc();
    }

    /// An outgoing request: `allowed`, `denied` (no grant) or `limited` (connection caps).
    pub(crate) fn outgoing(&self, outcome: &'static str) {
        let labels = self.with(&[("outcome", outcome)]);
        self.0.families.outgoing.get_or_create(&labels).inc();
    }

    /// The served component was loaded from `from` in `took`.
    pub(crate) fn loaded(&self, from: crate::LoadedFrom, took: Duration) {
        let name = match from {
            crate::LoadedFrom::Cache => "cache",
            crate::LoadedFrom::Compiled => "compiled",
            crate::LoadedFrom::Memory => "memory",
        };
        self.0
            .families
            .loads
            .get_or_create(&self.with(&[("from", name)]))
            .inc();
        self.0
            .families
            .compile_seconds
            .get_or_create(&self.0.labels)
            .inc_by(took.as_secs_f64());
    }
}

/// The methods labelled by name; any other is `other`.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Status classes, by the status's first digit (anything past 5xx is 5xx).
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Sampled for Fixed {
        fn sample(&self) -> Sample {
            Sample {
                slots_in_use: 2,
                slots: 8,
                memory: 4096,
                cpu: Duration::from_millis(1500),
            }
        }
    }

    #[test]
    fn counts_carry_their_servers_labels_and_live_values_go_with_the_server() {
        let m = Metrics::new();
        let server: Arc<dyn Sampled> = Arc::new(Fixed);
        let o = m.observer(
            vec![("container".into(), "web".into())],
            Arc::downgrade(&server),
        );
        let flight = o.arrived();
        o.answered("GET", 204, Duration::from_millis(3));
        o.answered("BREW", 418, Duration::from_millis(3));
        o.limit(Limit::BodySize);
        o.outgoing("denied");
        let text = m.render();
        for want in [
            r#"wasmbox_http_requests_total{container="web",method="GET",status="2xx"} 1"#,
            r#"wasmbox_http_requests_total{container="web",method="other",status="4xx"} 1"#,
            r#"wasmbox_http_request_duration_seconds_count{container="web"} 2"#,
            r#"wasmbox_http_requests_in_flight{container="web"} 1"#,
            r#"wasmbox_http_limit_hits_total{container="web",limit="body_size"} 1"#,
            r#"wasmbox_http_outgoing_requests_total{container="web",outcome="denied"} 1"#,
            r#"wasmbox_instance_slots_in_use{container="web"} 2"#,
            r#"wasmbox_instance_slots{container="web"} 8"#,
            r#"wasmbox_guest_memory_bytes{container="web"} 4096"#,
            r#"wasmbox_guest_cpu_seconds_total{container="web"} 1.5"#,
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        drop(flight);
        drop(server);
        let text = m.render();
        assert!(text.contains(r#"wasmbox_http_requests_in_flight{container="web"} 0"#));
        assert!(!text.contains("wasmbox_instance_slots{"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
