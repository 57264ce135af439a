//! The lifecycle driven directly, without containerd: real wasm guests, or fake instances that
//! record what they are asked; a recording event sink.

use std::sync::{Arc, Mutex};

use super::*;

/// Records every event.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>);

impl Events for Recorder {
    fn send(&self, event: Event) {
        self.0.lock().unwrap().push(event);
    }
}

impl Recorder {
    fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A short name for each event, with its process and code where it has one.
fn names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            Event::Create { .. } => "create".into(),
            Event::Start { .. } => "start".into(),
            Event::ExecAdded { exec_id, .. } => format!("exec-added {exec_id}"),
            Event::ExecStarted { exec_id, .. } => format!("exec-started {exec_id}"),
            Event::Oom { .. } => "oom".into(),
            Event::Exit { exec_id, exit, .. } => format!("exit {exec_id:?} {}", exit.code),
            Event::Paused { .. } => "paused".into(),
            Event::Resumed { .. } => "resumed".into(),
            Event::Delete { exit, .. } => format!("delete {}", exit.code),
        })
        .collect()
}

const EXIT3: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 3))))"#;

const SPIN: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start") (loop br 0)))"#;

/// Grows its memory by 4 MiB, and traps if it cannot.
const GROW: &str = r#"(module
  (memory (export "memory") 1)
  (func (export "_start")
    (if (i32.eq (memory.grow (i32.const 64)) (i32.const -1)) (then unreachable))))"#;

struct Fixture {
    events: Arc<Recorder>,
    life: Lifecycle,
    dirs: Vec<tempfile::TempDir>,
}

impl Fixture {
    fn new() -> Self {
        let events = Arc::new(Recorder::default());
        let make: MakeRuntime = Box::new(|_spec: &Spec| {
            Runtime::new(wasmbox_runtime::RuntimeConfig {
                cache_dir: None,
                cache_max: None,
                allocator: wasmbox_runtime::Allocator::OnDemand,
                scratch_dir: None,
                mount_tree: false,
                protected: Vec::new(),
                own_executor: true,
                compiler: wasmbox_runtime::compiler::Compiler::in_process(),
                deny_guest_sockets: false,
            })
            .map_err(|e| ShimError::Internal(e.to_string()))
        });
        Self {
            life: Lifecycle::new(events.clone(), "test".into(), make, Default::default()),
            events,
            dirs: Vec::new(),
        }
    }

    /// A bundle whose rootfs holds each program as `/NAME.wasm`, running `entry`.
    fn bundle(&mut self, entry: &str) -> PathBuf {
        let d = tempfile::tempdir().unwrap();
        let rootfs = d.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        for (name, text) in [("exit3", EXIT3), ("spin", SPIN), ("grow", GROW)] {
            std::fs::write(
                rootfs.join(format!("{name}.wasm")),
                wat::parse_str(text).unwrap(),
            )
            .unwrap();
        }
        std::fs::write(
            d.path().join("config.json"),
            format!(
                r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},
                "process":{{"cwd":"/","args":["/{entry}.wasm"],"user":{{"uid":0,"gid":0}}}}}}"#
            ),
        )
        .unwrap();
        let path = d.path().to_path_buf();
        self.dirs.push(d);
        path
    }

    async fn create(&mut self, id: &str, entry: &str) -> PathBuf {
        let bundle = self.bundle(entry);
        self.life
            .create(CreateRequest {
                id: id.into(),
                bundle: bundle.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        bundle
    }

    async fn status(&self, id: &str, exec_id: &str) -> Status {
        self.life.state(id, exec_id).await.unwrap().status
    }
}

fn recorded(bundle: &Path) -> Option<Status> {
    Record::load(bundle).unwrap().map(|r| r.status)
}

fn precondition(r: Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(ShimError::FailedPrecondition(m)) => m,
        other => panic!("expected a failed precondition, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_goes_from_created_to_stopped_and_each_step_is_told_and_recorded() {
    let mut f = Fixture::new();
    let bundle = f.create("c1", "exit3").await;
    assert_eq!(f.status("c1", "").await, Status::Created);
    assert_eq!(recorded(&bundle), Some(Status::Created));
    f.life.start("c1", "").await.unwrap();
    let exit = f.life.wait("c1", "").await.unwrap();
    assert_eq!(exit.code, 3);
    let st = f.life.state("c1", "").await.unwrap();
    assert_eq!((st.status, st.exit), (Status::Stopped, Some(exit)));
    // Written before the exit was told.
    assert_eq!(recorded(&bundle), Some(Status::Stopped));
    let d = f.life.delete("c1", "").await.unwrap();
    assert_eq!(d.exit, Some(exit));
    assert_eq!(
        recorded(&bundle),
        None,
        "the record goes with the container"
    );
    assert!(matches!(
        f.life.state("c1", "").await,
        Err(ShimError::NotFound(_))
    ));
    assert!(f.life.is_empty());
    assert_eq!(
        names(&f.events.take()),
        ["create", "start", "exit \"\" 3", "delete 3"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_that_ends_at_once_is_told_to_have_started_before_it_ended() {
    let mut f = Fixture::new();
    for i in 0..20 {
        let id = format!("c{i}");
        f.create(&id, "exit3").await;
        f.life.start(&id, "").await.unwrap();
        f.life.wait(&id, "").await.unwrap();
        f.life.delete(&id, "").await.unwrap();
        assert_eq!(
            names(&f.events.take()),
            ["create", "start", "exit \"\" 3", "delete 3"],
            "run {i}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_a_status_forbids_are_refused_and_change_nothing() {
    let mut f = Fixture::new();
    let bundle = f.create("c1", "spin").await;
    assert!(precondition(f.life.pause("c1", true).await).contains("not running"));
    f.life.start("c1", "").await.unwrap();
    assert_eq!(recorded(&bundle), Some(Status::Running));
    assert!(precondition(f.life.start("c1", "").await).contains("already started"));
    assert!(precondition(f.life.delete("c1", "").await).contains("still running"));
    assert!(precondition(f.life.pause("c1", false).await).contains("not paused"));

    f.life.pause("c1", true).await.unwrap();
    assert_eq!(f.status("c1", "").await, Status::Paused);
    assert_eq!(recorded(&bundle), Some(Status::Paused));
    assert!(precondition(f.life.pause("c1", true).await).contains("already paused"));
    let exec = br#"{"cwd":"/","args":["/exit3.wasm"],"user":{"uid":0,"gid":0}}"#;
    let paused = f.life.exec("c1", "e1", StdioPaths::default(), exec).await;
    assert!(precondition(paused).contains("is paused"));
    assert!(precondition(f.life.delete("c1", "").await).contains("still running"));
    f.life.pause("c1", false).await.unwrap();
    assert_eq!(recorded(&bundle), Some(Status::Running));

    f.life.kill("c1", "", 9, false).await.unwrap();
    assert_eq!(f.life.wait("c1", "").await.unwrap().code, 137);
    assert!(matches!(
        f.life.kill("c1", "", 9, false).await,
        Err(ShimError::NotFound(_))
    ));
    assert!(precondition(f.life.start("c1", "").await).contains("has stopped"));
    assert!(precondition(f.life.pause("c1", true).await).contains("not running"));
    let stopped = f.life.exec("c1", "e1", StdioPaths::default(), exec).await;
    assert!(precondition(stopped).contains("has stopped"));
    // Killing every process of a stopped container is no error: there is nothing left.
    f.life.kill("c1", "", 9, true).await.unwrap();
    f.life.delete("c1", "").await.unwrap();
    assert_eq!(
        names(&f.events.take()),
        [
            "create",
            "start",
            "paused",
            "resumed",
            "exit \"\" 137",
            "delete 137"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_before_it_starts_ends_with_the_signal() {
    let mut f = Fixture::new();
    let bundle = f.create("c1", "spin").await;
    f.life.kill("c1", "", 15, false).await.unwrap();
    assert_eq!(f.life.wait("c1", "").await.unwrap().code, 143);
    assert_eq!(recorded(&bundle), Some(Status::Stopped));
    assert!(precondition(f.life.start("c1", "").await).contains("has stopped"));
    f.life.delete("c1", "").await.unwrap();
    assert_eq!(
        names(&f.events.take()),
        ["create", "exit \"\" 143", "delete 143"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_processes_run_beside_the_init_and_are_deleted_on_their_own() {
    let mut f = Fixture::new();
    f.create("c1", "spin").await;
    f.life.start("c1", "").await.unwrap();
    let exec = br#"{"cwd":"/","args":["/exit3.wasm"],"user":{"uid":0,"gid":0}}"#;
    f.life
        .exec("c1", "e1", StdioPaths::default(), exec)
        .await
        .unwrap();
    assert!(matches!(
        f.life.exec("c1", "e1", StdioPaths::default(), exec).await,
        Err(ShimError::AlreadyExists(_))
    ));
    assert_eq!(f.status("c1", "e1").await, Status::Created);
    f.life.start("c1", "e1").await.unwrap();
    assert_eq!(f.life.wait("c1", "e1").await.unwrap().code, 3);
    assert_eq!(f.status("c1", "").await, Status::Running);
    // One live process: the init; an exec's end leaves it running.
    assert_eq!(f.life.pids("c1").await.unwrap(), [std::process::id()]);
    let d = f.life.delete("c1", "e1").await.unwrap();
    assert_eq!(d.exit.map(|e| e.code), Some(3));
    assert!(matches!(
        f.life.state("c1", "e1").await,
        Err(ShimError::NotFound(_))
    ));
    // A program that is not wasm is refused, and nothing is added.
    let native = br#"{"cwd":"/","args":["/bin/sh"],"user":{"uid":0,"gid":0}}"#;
    assert!(matches!(
        f.life.exec("c1", "e2", StdioPaths::default(), native).await,
        Err(ShimError::InvalidArgument(_))
    ));
    assert!(f.life.state("c1", "e2").await.is_err());
    // Kill with `all` ends a created exec too.
    f.life
        .exec("c1", "e3", StdioPaths::default(), exec)
        .await
        .unwrap();
    f.life.kill("c1", "", 9, true).await.unwrap();
    assert_eq!(f.life.wait("c1", "e3").await.unwrap().code, 137);
    assert_eq!(f.life.wait("c1", "").await.unwrap().code, 137);
    f.life.delete("c1", "").await.unwrap();
    let mut told = names(&f.events.take());
    // The two kills' exits may be told in either order.
    told[6..8].sort();
    assert_eq!(
        told,
        [
            "create",
            "start",
            "exec-added e1",
            "exec-started e1",
            "exit \"e1\" 3",
            "exec-added e3",
            "exit \"\" 137",
            "exit \"e3\" 137",
            "delete 137",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_set_before_start_holds_from_the_start() {
    let mut f = Fixture::new();
    f.create("c1", "grow").await;
    f.life
        .update("c1", br#"{"memory":{"limit":2097152}}"#)
        .await
        .unwrap();
    f.life.start("c1", "").await.unwrap();
    let exit = f.life.wait("c1", "").await.unwrap();
    f.life.delete("c1", "").await.unwrap();
    let told = names(&f.events.take());
    assert!(told.contains(&"oom".to_string()), "{told:?} ({exit:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_fails_leaves_nothing_behind() {
    let mut f = Fixture::new();
    let bundle = f.bundle("missing");
    let r = f
        .life
        .create(CreateRequest {
            id: "c1".into(),
            bundle: bundle.clone(),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(&r, Err(ShimError::InvalidArgument(m)) if m.contains("does not exist")),
        "{r:?}"
    );
    assert_eq!(recorded(&bundle), None);
    assert!(f.life.is_empty());
    assert!(f.events.take().is_empty());
    // The id is free for a create that works.
    f.create("c1", "exit3").await;
    assert!(matches!(
        f.life
            .create(CreateRequest {
                id: "c1".into(),
                bundle,
                ..Default::default()
            })
            .await,
        Err(ShimError::AlreadyExists(_))
    ));
}

/// An instance that records what the lifecycle asks of it; its init ends when the test says (or
/// when killed, with 128+signal).
#[derive(Clone, Default)]
struct Fake {
    calls: Arc<Mutex<Vec<String>>>,
    end: Arc<Mutex<Option<tokio::sync::oneshot::Sender<instance::Ended>>>>,
    refuse_pause: bool,
}

impl Fake {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn end(&self, code: u32) {
        if let Some(tx) = self.end.lock().unwrap().take() {
            let _ = tx.send(instance::Ended { code, oom: false });
        }
    }

    fn call(&self, c: impl Into<String>) {
        self.calls.lock().unwrap().push(c.into());
    }
}

#[async_trait::async_trait]
impl Instance for Fake {
    fn describe(&self, _record: &mut Record) {}
    async fn start(&mut self, _exec_id: &str, pid: u32, _stdio: &StdioPaths) -> Result<Made> {
        self.call("start");
        Ok(Made { pid, exit: None })
    }
    async fn kill(&mut self, _exec_id: &str, _pid: u32, signal: u32, _all: bool) -> Result<()> {
        self.call(format!("kill {signal}"));
        self.end(128 + signal);
        Ok(())
    }
    async fn exec(&mut self, _: &str, _: &[u8], _: &StdioPaths) -> Result<Made> {
        Err(ShimError::Unimplemented("exec".into()))
    }
    fn remove_exec(&mut self, _exec_id: &str) {}
    async fn pause(&mut self) -> Result<()> {
        self.call("pause");
        if self.refuse_pause {
            return Err(ShimError::Internal("the freezer refused".into()));
        }
        Ok(())
    }
    async fn resume(&mut self) -> Result<()> {
        self.call("resume");
        Ok(())
    }
    async fn update(&mut self, _resources: &[u8]) -> Result<()> {
        self.call("update");
        Ok(())
    }
    fn stats(&self) -> Result<Stats> {
        Ok(Stats::default())
    }
    async fn delete(&mut self) -> Result<()> {
        self.call("delete");
        Ok(())
    }
}

impl Fixture {
    /// A lifecycle whose containers all run on `fake`.
    fn with_fake(fake: &Fake) -> Self {
        let mut f = Self::new();
        let fake = fake.clone();
        f.life.fake = Some(Box::new(move |_id: &str| {
            let (made, tx) = Made::promised(4242);
            *fake.end.lock().unwrap() = Some(tx);
            (Box::new(fake.clone()) as Box<dyn Instance>, made)
        }));
        f
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_is_asked_only_what_its_status_allows() {
    let fake = Fake::default();
    let mut f = Fixture::with_fake(&fake);
    f.create("c1", "exit3").await;
    assert!(precondition(f.life.pause("c1", true).await).contains("not running"));
    assert!(precondition(f.life.pause("c1", false).await).contains("not paused"));
    f.life.start("c1", "").await.unwrap();
    assert!(precondition(f.life.start("c1", "").await).contains("already started"));
    f.life.pause("c1", true).await.unwrap();
    assert!(precondition(f.life.pause("c1", true).await).contains("already paused"));
    f.life.pause("c1", false).await.unwrap();
    f.life.kill("c1", "", 15, false).await.unwrap();
    assert_eq!(f.life.wait("c1", "").await.unwrap().code, 143);
    assert!(precondition(f.life.pause("c1", false).await).contains("not running"));
    f.life.delete("c1", "").await.unwrap();
    assert_eq!(
        fake.calls(),
        ["start", "pause", "resume", "kill 15", "delete"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_the_instance_refuses_leaves_the_container_running_and_untold() {
    let fake = Fake {
        refuse_pause: true,
        ..Default::default()
    };
    let mut f = Fixture::with_fake(&fake);
    let bundle = f.create("c1", "exit3").await;
    f.life.start("c1", "").await.unwrap();
    let e = f.life.pause("c1", true).await.unwrap_err();
    assert!(matches!(e, ShimError::Internal(_)), "{e:?}");
    assert_eq!(f.status("c1", "").await, Status::Running);
    assert_eq!(recorded(&bundle), Some(Status::Running));
    fake.end(0);
    assert_eq!(f.life.wait("c1", "").await.unwrap().code, 0);
    assert_eq!(names(&f.events.take()), ["create", "start", "exit \"\" 0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_while_paused_stops_the_container_and_is_told_once() {
    let fake = Fake::default();
    let mut f = Fixture::with_fake(&fake);
    let bundle = f.create("c1", "exit3").await;
    f.life.start("c1", "").await.unwrap();
    f.life.pause("c1", true).await.unwrap();
    fake.end(7);
    assert_eq!(f.life.wait("c1", "").await.unwrap().code, 7);
    assert_eq!(f.status("c1", "").await, Status::Stopped);
    assert_eq!(recorded(&bundle), Some(Status::Stopped));
    // Nothing left to resume, and the instance is not asked.
    assert!(precondition(f.life.pause("c1", false).await).contains("not running"));
    assert_eq!(fake.calls(), ["start", "pause"]);
    assert_eq!(
        names(&f.events.take()),
        ["create", "start", "paused", "exit \"\" 7"]
    );
}
