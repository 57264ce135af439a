//! The lifecycle's events as containerd task events, sent through a channel to one publishing
//! task so that request handlers never wait on containerd.
//!
//! Events are packed by their message names, not through protobuf reflection: the first
//! reflective look-up parses the descriptors of every proto file an event's file imports (gogo's
//! and `descriptor.proto`, comments included) and keeps them for the life of the process, about
//! 0.4 MiB in every shim.

use std::time::{Duration, SystemTime};

use containerd_shim::protos::api::Mount;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_async::Events as _;
use containerd_shim::protos::topics::{
    TASK_CREATE_EVENT_TOPIC, TASK_DELETE_EVENT_TOPIC, TASK_EXEC_ADDED_EVENT_TOPIC,
    TASK_EXEC_STARTED_EVENT_TOPIC, TASK_EXIT_EVENT_TOPIC, TASK_OOM_EVENT_TOPIC,
    TASK_PAUSED_EVENT_TOPIC, TASK_RESUMED_EVENT_TOPIC, TASK_START_EVENT_TOPIC,
};
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::publisher::RemotePublisher;
use tokio::sync::{mpsc, oneshot};

use crate::lifecycle::{Event, Events, RootfsMount};

/// What the publishing task is asked to do, in order.
enum Job {
    Publish(&'static str, Any),
    /// Answer once everything queued before has been published.
    Flush(oneshot::Sender<()>),
}

/// Publishes events to containerd. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Job>,
}

impl Publisher {
    /// Starts the publishing task for `namespace`.
    pub fn start(publisher: RemotePublisher, namespace: String) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                match job {
                    Job::Publish(topic, event) => {
                        // Queued on the publisher's own channel, which retries and reconnects.
                        let req = ForwardRequest {
                            envelope: MessageField::some(Envelope {
                                timestamp: MessageField::some(timestamp(SystemTime::now())),
                                namespace: namespace.clone(),
                                topic: topic.into(),
                                event: MessageField::some(event),
                                ..Default::default()
                            }),
                            ..Default::default()
                        };
                        let ctx = TtrpcContext {
                            mh: Default::default(),
                            metadata: Default::default(),
                            timeout_nano: 0,
                        };
                        if let Err(e) = publisher.forward(&ctx, req).await {
                            tracing::warn!(topic, error = %e, "publishing an event failed");
                        }
                    }
                    Job::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Self { tx }
    }

    /// Waits until every event queued so far has been published, for at most `limit`: the
    /// last container's delete event must reach containerd before the shim exits.
    pub async fn flush(&self, limit: Duration) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(done)).is_ok() && tokio::time::timeout(limit, rx).await.is_err()
        {
            tracing::warn!(?limit, "events still unpublished at exit");
        }
    }
}

impl Events for Publisher {
    fn send(&self, event: Event) {
        let (topic, message) = message(event);
        // The receiver lives as long as the process.
        let _ = self.tx.send(Job::Publish(topic, message));
    }
}

/// An event message as containerd's `Any`: its type URL is the message's full protobuf name, as
/// containerd's type registry names events.
fn pack<M: Message>(m: M) -> Any {
    Any {
        type_url: format!("containerd.events.{}", M::NAME),
        // Writing to a Vec cannot fail for these messages (no required fields, sizes far below
        // protobuf's 2 GiB limit).
        value: m.write_to_bytes().unwrap_or_default(),
        ..Default::default()
    }
}

/// The containerd topic and packed message of a lifecycle event.
fn message(event: Event) -> (&'static str, Any) {
    match event {
        Event::Create {
            id,
            bundle,
            rootfs,
            stdio,
            pid,
        } => (
            TASK_CREATE_EVENT_TOPIC,
            pack(TaskCreate {
                container_id: id,
                bundle,
                rootfs: rootfs.into_iter().map(mount).collect(),
                io: MessageField::some(TaskIO {
                    stdin: stdio.stdin,
                    stdout: stdio.stdout,
                    stderr: stdio.stderr,
                    terminal: stdio.terminal,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            }),
        ),
        Event::Start { id, pid } => (
            TASK_START_EVENT_TOPIC,
            pack(TaskStart {
                container_id: id,
                pid,
                ..Default::default()
            }),
        ),
        Event::ExecAdded { id, exec_id } => (
            TASK_EXEC_ADDED_EVENT_TOPIC,
            pack(TaskExecAdded {
                container_id: id,
                exec_id,
                ..Default::default()
            }),
        ),
        Event::ExecStarted { id, exec_id, pid } => (
            TASK_EXEC_STARTED_EVENT_TOPIC,
            pack(TaskExecStarted {
                container_id: id,
                exec_id,
                pid,
                ..Default::default()
            }),
        ),
        Event::Oom { id } => (
            TASK_OOM_EVENT_TOPIC,
            pack(TaskOOM {
                container_id: id,
                ..Default::default()
            }),
        ),
        Event::Exit {
            id,
            exec_id,
            pid,
            exit,
        } => (
            TASK_EXIT_EVENT_TOPIC,
            pack(TaskExit {
                // containerd names the process by its exec id, the init by the container's.
                id: if exec_id.is_empty() {
                    id.clone()
                } else {
                    exec_id
                },
                container_id: id,
                pid,
                exit_status: exit.code,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            }),
        ),
        Event::Paused { id } => (
            TASK_PAUSED_EVENT_TOPIC,
            pack(TaskPaused {
                container_id: id,
                ..Default::default()
            }),
        ),
        Event::Resumed { id } => (
            TASK_RESUMED_EVENT_TOPIC,
            pack(TaskResumed {
                container_id: id,
                ..Default::default()
            }),
        ),
        Event::Delete { id, pid, exit } => (
            TASK_DELETE_EVENT_TOPIC,
            pack(TaskDelete {
                container_id: id.clone(),
                id,
                pid,
                exit_status: exit.code,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            }),
        ),
    }
}

/// containerd's form of a rootfs mount.
pub fn mount(m: RootfsMount) -> Mount {
    Mount {
        type_: m.kind,
        source: m.source,
        options: m.options,
        ..Default::default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{Exit, StdioPaths};
    use containerd_shim::protos::protobuf::MessageFull;

    /// The message in `any`, after checking its type URL against protobuf's own full name.
    fn unpack<M: MessageFull>(any: &Any) -> M {
        assert_eq!(any.type_url, M::descriptor().full_name());
        M::parse_from_bytes(&any.value).unwrap()
    }

    #[test]
    fn every_event_is_packed_under_its_full_protobuf_name() {
        let exit = Exit {
            code: 0,
            at: SystemTime::UNIX_EPOCH,
        };
        let id = || "c1".to_string();
        let names = [
            Event::Start { id: id(), pid: 1 },
            Event::ExecAdded {
                id: id(),
                exec_id: id(),
            },
            Event::ExecStarted {
                id: id(),
                exec_id: id(),
                pid: 1,
            },
            Event::Oom { id: id() },
            Event::Paused { id: id() },
            Event::Resumed { id: id() },
            Event::Delete {
                id: id(),
                pid: 1,
                exit,
            },
        ]
        .into_iter()
        .map(|e| message(e).1.type_url)
        .collect::<Vec<_>>();
        let want = [
            TaskStart::descriptor(),
            TaskExecAdded::descriptor(),
            TaskExecStarted::descriptor(),
            TaskOOM::descriptor(),
            TaskPaused::descriptor(),
            TaskResumed::descriptor(),
            TaskDelete::descriptor(),
        ]
        .map(|d| d.full_name().to_string());
        assert_eq!(names, want);
    }

    #[test]
    fn an_exit_names_the_init_by_its_container_and_an_exec_by_its_own_id() {
        let exit = Exit {
            code: 137,
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1500),
        };
        let ev = |exec_id: &str| Event::Exit {
            id: "c1".into(),
            exec_id: exec_id.into(),
            pid: 9,
            exit,
        };
        for (exec_id, want) in [("", "c1"), ("e1", "e1")] {
            let (topic, m) = message(ev(exec_id));
            assert_eq!(topic, TASK_EXIT_EVENT_TOPIC);
            let m = unpack::<TaskExit>(&m);
            assert_eq!((m.container_id.as_str(), m.id.as_str()), ("c1", want));
            assert_eq!(m.exit_status, 137);
            assert_eq!((m.exited_at.seconds, m.exited_at.nanos), (1, 500_000_000));
        }
    }

    #[test]
    fn a_create_carries_its_rootfs_and_stdio() {
        let (topic, m) = message(Event::Create {
            id: "c1".into(),
            bundle: "/b".into(),
            rootfs: vec![RootfsMount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: vec!["lowerdir=/l".into()],
            }],
            stdio: StdioPaths {
                stdout: "/fifo/out".into(),
                ..Default::default()
            },
            pid: 4,
        });
        assert_eq!(topic, TASK_CREATE_EVENT_TOPIC);
        let m = unpack::<TaskCreate>(&m);
        assert_eq!(m.rootfs[0].type_, "overlay");
        assert_eq!(m.rootfs[0].options, ["lowerdir=/l"]);
        assert_eq!(m.io.stdout, "/fifo/out");
        assert_eq!(m.pid, 4);
    }
}
