//! Task events, sent through a channel to one publishing task so that request handlers never wait
//! on containerd.

use std::time::SystemTime;

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::ttrpc::context::Context;
use containerd_shim::publisher::RemotePublisher;
use tokio::sync::mpsc;

/// Queues events for containerd. Cheap to clone.
#[derive(Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<(&'static str, Box<dyn MessageDyn>)>,
}

impl Events {
    /// Starts the publishing task for `namespace`.
    pub fn start(publisher: RemotePublisher, namespace: String) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<(&'static str, Box<dyn MessageDyn>)>();
        tokio::spawn(async move {
            while let Some((topic, event)) = rx.recv().await {
                if let Err(e) = publisher
                    .publish(Context::default(), topic, &namespace, event)
                    .await
                {
                    tracing::warn!(topic, error = %e, "publishing an event failed");
                }
            }
        });
        Self { tx }
    }

    /// Queues `event` under `topic`; never waits.
    pub fn send(&self, topic: &'static str, event: impl MessageDyn) {
        // The receiver lives as long as the process.
        let _ = self.tx.send((topic, Box::new(event)));
    }
}

/// A protobuf timestamp for `t`.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}
