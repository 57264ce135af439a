//! The agent's work, one image at a time: the watcher queues images by name, and one thread
//! looks at each in turn (its manifest and config from containerd, then its wasm), compiling
//! what it finds into the cache. An image already looked at (by manifest digest) is skipped, so
//! catching up after a reconnection costs a lookup per image.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use containerd_client::services::v1::GetImageRequest;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::tonic::transport::Channel;
use wasmbox_images::Digest;
use wasmbox_runtime::{LoadedFrom, Runtime};

use super::content::{Content, in_namespace};
use super::metrics::{Metrics, Outcome};

/// Most manifest digests remembered as looked at; past it the memory starts afresh.
const MAX_DONE: usize = 1 << 16;

/// An image to look at.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Job {
    /// Its containerd namespace.
    pub namespace: String,
    /// Its name there.
    pub image: String,
}

/// The images waiting, each once.
pub struct Queue {
    state: Mutex<(VecDeque<Job>, HashSet<Job>)>,
    ready: Condvar,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// An empty queue.
    pub fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            ready: Condvar::new(),
            metrics,
        })
    }

    /// Queues `job` unless it waits already.
    pub fn push(&self, job: Job) {
        let mut s = self.state.lock().expect("queue lock");
        if s.1.insert(job.clone()) {
            s.0.push_back(job);
            self.metrics.queued.set(s.0.len() as i64);
            self.ready.notify_one();
        }
    }

    /// The next job, once there is one.
    fn pop(&self) -> Job {
        let mut s = self.state.lock().expect("queue lock");
        loop {
            if let Some(job) = s.0.pop_front() {
                s.1.remove(&job);
                self.metrics.queued.set(s.0.len() as i64);
                return job;
            }
            s = self.ready.wait(s).expect("queue lock");
        }
    }
}

/// The connection to containerd, replaced by the watcher at each reconnection.
pub type Connection = Arc<Mutex<Option<Channel>>>;

/// Looks at what `queue` holds, forever, on a thread of its own.
pub fn start(
    queue: Arc<Queue>,
    connection: Connection,
    runtime: Runtime,
    rt: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
) -> std::io::Result<()> {
    let mut w = Worker {
        connection,
        runtime,
        rt,
        metrics,
        done: HashSet::new(),
    };
    std::thread::Builder::new()
        .name("wasmbox-agent".into())
        .spawn(move || {
            loop {
                let job = queue.pop();
                w.look(&job);
            }
        })
        .map(drop)
}

struct Worker {
    connection: Connection,
    runtime: Runtime,
    rt: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
    /// Manifests (or indexes) looked at.
    done: HashSet<Digest>,
}

impl Worker {
    fn look(&mut self, job: &Job) {
        let name = format!("{}/{}", job.namespace, job.image);
        let outcome = match self.compile(job) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("wasmbox agent: {name}: {e:#}");
                Outcome::Unreadable
            }
        };
        self.metrics.image(outcome);
    }

    /// What became of `job`'s image. What is not wasm, or does not compile, is said once (an
    /// image is not looked into again).
    fn compile(&mut self, job: &Job) -> Result<Outcome> {
        let channel = self
            .connection
            .lock()
            .expect("connection lock")
            .clone()
            .context("not connected to containerd")?;
        let mut images = ImagesClient::new(channel.clone());
        let req = in_namespace(
            &job.namespace,
            GetImageRequest {
                name: job.image.clone(),
            },
        )?;
        let target = self
            .rt
            .block_on(images.get(req))
            .context("getting the image")?
            .into_inner()
            .image
            .and_then(|i| i.target)
            .context("the image has no target")?;
        let digest: Digest = target.digest.parse().context("the image's target")?;
        if self.done.contains(&digest) {
            return Ok(Outcome::SeenBefore);
        }
        let content = Content::new(channel, &job.namespace, self.rt.clone());
        let image = wasmbox_images::Image::open_in(&content, &job.image, digest.clone())?;
        let max = wasmbox_runtime::shape::MAX_WASM_BYTES as u64;
        let found = wasmbox_images::entry::entry_wasm(&content, &image, max)?;
        let outcome = match found {
            None => {
                if let Some(d) = &image.detection {
                    eprintln!(
                        "wasmbox agent: {}: holds no wasm binary where it says ({}); skipped",
                        job.image, d.because
                    );
                }
                Outcome::NotWasm
            }
            Some(entry) => {
                let name = format!("{}:{}", job.image, entry.path);
                eprintln!(
                    "wasmbox agent: compiling {name} ({:.1} MB)…",
                    entry.bytes.len() as f64 / 1e6
                );
                let started = Instant::now();
                let result = self.runtime.compile_to_cache(&name, &entry.bytes);
                let took = started.elapsed().as_secs_f64();
                match result {
                    Ok(LoadedFrom::Compiled) => {
                        self.metrics.compile_seconds.inc_by(took);
                        eprintln!(
                            "wasmbox agent: compiled {name} ({} bytes) in {took:.1} s",
                            entry.bytes.len()
                        );
                        Outcome::Compiled
                    }
                    Ok(_) => {
                        eprintln!("wasmbox agent: {name}: in the cache already");
                        Outcome::Cached
                    }
                    Err(e) => {
                        eprintln!("wasmbox agent: {name} did not compile: {e}");
                        Outcome::Failed
                    }
                }
            }
        };
        if self.done.len() >= MAX_DONE {
            self.done.clear();
        }
        self.done.insert(digest);
        Ok(outcome)
    }
}
