//! Errors of the sandbox engine: one enum, each variant naming the operation and the thing it was done to.

use std::path::PathBuf;

/// A boxed source error, as produced by wasmtime and I/O.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Converts a wasmtime error into a boxed source error.
pub(crate) fn boxed(e: wasmtime::Error) -> BoxError {
    anyhow::Error::from(e).into()
}

/// Everything that can go wrong before a guest starts running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The wasm file could not be read.
    #[error("reading wasm {path}")]
    ReadWasm {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is neither a wasm binary nor wasm text.
    #[error("{name} is not a wasm module or component: {reason}")]
    NotWasm {
        /// The workload's name (its path).
        name: String,
        /// What was found instead.
        reason: String,
    },
    /// The file holds precompiled native code, which is only ever loaded from our own cache.
    #[error(
        "{name} is precompiled native code; wasmbox refuses precompiled code it did not compile itself"
    )]
    Precompiled {
        /// The workload's name.
        name: String,
    },
    /// The wasm is beyond the limits wasmbox compiles (size, function count, nesting).
    #[error("{name} is refused: {reason}")]
    TooLarge {
        /// The workload's name.
        name: String,
        /// Which limit, by how much.
        reason: String,
    },
    /// The wasm failed to validate or compile.
    #[error("compiling {name}")]
    Compile {
        /// The workload's name.
        name: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The compiler helper process failed.
    #[error("compiling {name}: {reason}")]
    CompileHelper {
        /// The workload's name.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// Compiling needed more memory than the compiler is given.
    #[error(
        "compiling {name}: the compiler needed more than its {} MiB memory cap",
        limit >> 20
    )]
    CompileMemory {
        /// The workload's name.
        name: String,
        /// The cap, in bytes.
        limit: u64,
    },
    /// The deadline passed while compiling.
    #[error("compiling {name}: the deadline passed")]
    CompileDeadline {
        /// The workload's name.
        name: String,
    },
    /// Loading (compiling included) did not finish within the bundle's deadline.
    #[error("{name}: timed out after {after:?} while loading")]
    LoadDeadline {
        /// The workload's name.
        name: String,
        /// The deadline.
        after: std::time::Duration,
    },
    /// A bundle's entrypoint is missing, unreadable, or not what its spec says.
    #[error("{reason}")]
    Entrypoint {
        /// What is wrong, naming the entrypoint.
        reason: String,
    },
    /// A setting from the environment does not parse.
    #[error("{name}: {reason}")]
    Setting {
        /// The variable.
        name: &'static str,
        /// Why.
        reason: String,
    },
    /// The requested entry export does not exist or has the wrong type.
    #[error("{name} has no export {export:?} callable without arguments")]
    ExportNotFound {
        /// The workload's name.
        name: String,
        /// The export asked for.
        export: String,
    },
    /// A component does not export `wasi:cli/run`.
    #[error("component {name} does not export wasi:cli/run and no export was named with #export")]
    NotCommand {
        /// The workload's name.
        name: String,
    },
    /// The workload imports something the sandbox does not provide.
    #[error("linking {name}")]
    Link {
        /// The workload's name.
        name: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A directory grant could not be opened.
    #[error("granting {host} at {guest}")]
    Preopen {
        /// Host directory.
        host: PathBuf,
        /// Guest path.
        guest: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// A grant would reach one of wasmbox's own directories.
    #[error("granting {host} at {guest}: {reason}")]
    Protected {
        /// Host directory.
        host: PathBuf,
        /// Guest path.
        guest: String,
        /// Which protected path it reaches, and how.
        reason: String,
    },
    /// A grant source is not acceptable (a symbolic link on its path, a kernel filesystem).
    #[error("granting {host} at {guest}: {reason}")]
    Source {
        /// Host directory.
        host: PathBuf,
        /// Guest path.
        guest: String,
        /// What is wrong.
        reason: String,
    },
    /// An HTTP component's listening address could not be bound.
    #[error("serving HTTP on {addr}")]
    Serve {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// HTTPS's certificate or key could not be loaded.
    #[error("serving HTTPS: {reason}")]
    Tls {
        /// Which file, and what is wrong with it.
        reason: String,
    },
    /// The guest's mount tree could not be built.
    #[error("building the guest's mount tree: {reason}")]
    MountTree {
        /// Why.
        reason: String,
    },
    /// A private scratch directory (for a tmpfs mount) could not be made.
    #[error("creating private directory for {guest}")]
    Scratch {
        /// Guest path of the tmpfs mount.
        guest: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A stdio stream could not be attached to the guest.
    #[error("attaching the guest's {stream}")]
    Stdio {
        /// `stdin`, `stdout` or `stderr`.
        stream: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The runtime bundle's config is unusable.
    #[error("bundle config {path}: {reason}")]
    Spec {
        /// `config.json`.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The entry wasm could not be read from the rootfs.
    #[error("reading entrypoint {entry} in rootfs {rootfs}")]
    ReadEntry {
        /// Guest path of the entry.
        entry: String,
        /// Host path of the rootfs.
        rootfs: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A network grant did not parse.
    #[error("network grant {spec:?}: {reason}")]
    NetGrant {
        /// The grant as written.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// A listening socket could not be opened for the guest.
    #[error("listening on {addr}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The compiled-code cache directory is not safe to load native code from.
    #[error("cache directory {path}: {reason}")]
    UnsafeCache {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A cache entry's MAC does not match: it was not written by this cache with its key.
    #[error("cache entry {path} failed its MAC check")]
    CacheTampered {
        /// The entry.
        path: PathBuf,
    },
    /// Reading or writing the compiled-code cache failed.
    #[error("cache {path}")]
    CacheIo {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Creating the engine failed.
    #[error("configuring the wasm engine")]
    Engine {
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The seccomp filter for guest threads could not be built.
    #[error("{reason}")]
    Seccomp {
        /// Why.
        reason: String,
    },
    /// The async executor could not be created.
    #[error("starting the executor")]
    Executor {
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
