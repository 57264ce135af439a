//! The agent's connection to containerd: subscribe to image events, queue what containerd
//! already holds (images pulled while the agent was away), then queue each image an event
//! names. A lost connection (containerd restarting) is made again, and the catching up with it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::images_client::ImagesClient;
use containerd_client::services::v1::namespaces_client::NamespacesClient;
use containerd_client::services::v1::{
    ImageCreate, ImageUpdate, ListImagesRequest, ListNamespacesRequest, SubscribeRequest,
};
use containerd_client::tonic::Request;
use containerd_client::tonic::transport::Channel;
use prost::Message as _;

use super::AgentCommand;
use super::content::in_namespace;
use super::metrics::Metrics;
use super::worker::{Connection, Job, Queue};

/// The events that name an image to look at.
const TOPICS: [&str; 2] = ["/images/create", "/images/update"];
/// Waits between connection attempts, doubling up to the last.
const FIRST_WAIT: Duration = Duration::from_millis(200);
const LONGEST_WAIT: Duration = Duration::from_secs(5);

/// Runs the agent until it is killed.
pub fn run(cmd: AgentCommand) -> Result<i32> {
    // Before any thread starts: the threads and compile helpers inherit it.
    super::priority::lower();
    let config = cmd.cache.settings().config()?;
    if config.cache_dir.is_none() {
        bail!("no compiled-code cache directory: give --cache-dir or set WASMBOX_CACHE_DIR");
    }
    let runtime = wasmbox_runtime::Runtime::new(config)?;
    let metrics = Metrics::new();
    if let Some(addr) = cmd.metrics_addr {
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("binding the metrics address {addr}"))?;
        let m = metrics.clone();
        wasmbox_runtime::metrics::endpoint::start(Arc::new(move || m.render()), listener)
            .context("serving metrics")?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let queue = Queue::new(metrics.clone());
    let connection = Connection::default();
    super::worker::start(
        queue.clone(),
        connection.clone(),
        runtime,
        rt.handle().clone(),
        metrics.clone(),
    )
    .context("starting the worker")?;
    rt.block_on(async {
        let mut wait = FIRST_WAIT;
        let mut sessions = 0u64;
        loop {
            let before = sessions;
            let result = session(&cmd, &queue, &connection, &metrics, &mut sessions).await;
            *connection.lock().expect("connection lock") = None;
            metrics.connected.set(0);
            if let Err(e) = result {
                eprintln!(
                    "wasmbox agent: containerd at {}: {e:#}; connecting again",
                    cmd.address.display()
                );
            }
            // This session got as far as watching: the waits start afresh.
            if sessions > before {
                wait = FIRST_WAIT;
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(LONGEST_WAIT);
        }
    })
}

/// One connection: subscribed, caught up, then following events until the stream ends.
async fn session(
    cmd: &AgentCommand,
    queue: &Queue,
    connection: &Connection,
    metrics: &Metrics,
    sessions: &mut u64,
) -> Result<()> {
    let channel = containerd_client::connect(&cmd.address)
        .await
        .context("connecting")?;
    // Subscribing before listing: an image made meanwhile is in one or the other. containerd
    // answers a subscription only with its first event, so it is awaited after the listing.
    let filters = TOPICS.iter().map(|t| format!("topic=={t:?}")).collect();
    let mut client = EventsClient::new(channel.clone());
    let subscribing =
        tokio::spawn(async move { client.subscribe(SubscribeRequest { filters }).await });
    // The worker reads through it from the first image queued.
    *connection.lock().expect("connection lock") = Some(channel.clone());
    let namespaces = if cmd.namespaces.is_empty() {
        all_namespaces(&channel).await?
    } else {
        cmd.namespaces.clone()
    };
    let mut held = 0;
    for ns in &namespaces {
        for image in images(&channel, ns).await? {
            queue.push(Job {
                namespace: ns.clone(),
                image,
            });
            held += 1;
        }
    }
    metrics.connected.set(1);
    if *sessions > 0 {
        metrics.reconnects.inc();
    }
    *sessions += 1;
    eprintln!(
        "wasmbox agent: watching containerd at {} ({held} images held in {} namespaces)",
        cmd.address.display(),
        namespaces.len()
    );
    let mut events = subscribing
        .await?
        .context("subscribing to image events")?
        .into_inner();
    while let Some(envelope) = events.message().await.context("reading events")? {
        if !cmd.namespaces.is_empty() && !cmd.namespaces.contains(&envelope.namespace) {
            continue;
        }
        let Some(event) = envelope.event else {
            continue;
        };
        let name = match envelope.topic.as_str() {
            "/images/create" => ImageCreate::decode(event.value.as_slice()).map(|e| e.name),
            "/images/update" => ImageUpdate::decode(event.value.as_slice()).map(|e| e.name),
            _ => continue,
        };
        match name {
            Ok(image) => queue.push(Job {
                namespace: envelope.namespace,
                image,
            }),
            Err(e) => eprintln!(
                "wasmbox agent: an undecodable {} event: {e}",
                envelope.topic
            ),
        }
    }
    bail!("containerd ended the event stream")
}

async fn all_namespaces(channel: &Channel) -> Result<Vec<String>> {
    let list = NamespacesClient::new(channel.clone())
        .list(Request::new(ListNamespacesRequest::default()))
        .await
        .context("listing namespaces")?
        .into_inner();
    Ok(list.namespaces.into_iter().map(|n| n.name).collect())
}

async fn images(channel: &Channel, namespace: &str) -> Result<Vec<String>> {
    let req = in_namespace(namespace, ListImagesRequest::default())?;
    let list = ImagesClient::new(channel.clone())
        .list(req)
        .await
        .with_context(|| format!("listing the images of namespace {namespace}"))?
        .into_inner();
    Ok(list.images.into_iter().map(|i| i.name).collect())
}
