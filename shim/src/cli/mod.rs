//! The `wasmbox` command line: one subcommand per file, each `FooCommand::execute(self)`.

mod agent_unit;
mod cache;
mod compile;
mod host_root;
mod images;
mod install;
mod options;
mod progress;
mod run;
mod scratch;
mod store;
mod target;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use wasmbox_runtime::EXIT_RUNTIME_ERROR;

pub use cache::CacheCommand;
pub use compile::{AheadOptions, CompileCommand};
pub use images::{
    BuildCommand, ImagesCommand, InspectCommand, LoadCommand, PruneCommand, PullCommand,
    PushCommand, RmiCommand, SaveCommand,
};
pub use install::InstallCommand;
pub use options::{CacheOptions, SandboxOptions, ServeOptions, parse_duration, parse_size};
pub use run::RunCommand;
pub use store::StoreOptions;

/// wasmbox: run WebAssembly workloads as sandboxed containers.
#[derive(Parser, Debug)]
#[command(name = "wasmbox", version, about, long_about = None)]
pub struct Cli {
    /// Log filter: a level and `target=level`s (e.g. `debug`, `warn,wasmbox_runtime=trace`); also
    /// from `WASMBOX_LOG`.
    #[arg(long, global = true, env = "WASMBOX_LOG", default_value = "warn", value_parser = crate::parse_log_filter)]
    pub log_level: tracing_subscriber::filter::Targets,
    /// The image store.
    #[command(flatten)]
    pub store: StoreOptions,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a wasm module or component, or an OCI runtime bundle, in a sandbox.
    Run(Box<RunCommand>),
    /// Serve an HTTP component (`wasi:http/incoming-handler`): a fresh instance per request.
    Serve(Box<RunCommand>),
    /// Pull an image from a registry into the store.
    Pull(PullCommand),
    /// Push an image from the store to a registry.
    Push(PushCommand),
    /// Build an image in the store from a wasm file.
    Build(BuildCommand),
    /// List the images in the store.
    Images(ImagesCommand),
    /// Show an image's manifest, config and wasm form.
    Inspect(InspectCommand),
    /// Remove images from the store.
    Rmi(RmiCommand),
    /// Delete blobs no image refers to.
    Prune(PruneCommand),
    /// Load images from an OCI layout directory or tarball.
    Load(LoadCommand),
    /// Compile wasm files and images into the compiled-code cache, so their first start is warm.
    Compile(CompileCommand),
    /// List, empty or trim the compiled-code cache.
    Cache(CacheCommand),
    /// Write an image as an OCI layout tarball.
    Save(SaveCommand),
    /// Install wasmbox on a node: the containerd shim and its CRI runtime entry.
    Install(InstallCommand),
    /// Compile the wasm of every image containerd pulls on this node, ahead of its first start.
    Agent(crate::agent::AgentCommand),
}

/// Entry point of the `wasmbox` binary: parses, runs, maps the outcome to an exit code.
pub fn main() -> ExitCode {
    if let Some(code) = crate::compiler_helper() {
        return ExitCode::from(code as u8);
    }
    // Before anything else, and before any thread: `run` handles these from the start.
    crate::signals::block();
    // runc's command line (an engine driving `wasmbox` as its OCI runtime).
    let raw: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if crate::oci::is_oci(&raw) {
        return crate::oci::main(raw);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                EXIT_RUNTIME_ERROR
            } else {
                0
            };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(false)
                    // Colours only on a terminal: a container log or a pipe gets plain lines.
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .with(cli.log_level.clone())
            .init();
    }
    if !matches!(cli.command, Command::Run(_) | Command::Serve(_)) {
        crate::signals::unblock();
        // Listing commands end quietly when their reader goes away (`wasmbox inspect | head`),
        // as other Unix tools do. `run` keeps SIGPIPE ignored: a guest gets EPIPE instead.
        default_sigpipe();
    }
    let result = match cli.command {
        Command::Run(c) => c.execute(&cli.store),
        Command::Serve(mut c) => {
            c.serve_only = true;
            c.execute(&cli.store)
        }
        Command::Pull(c) => c.execute(&cli.store),
        Command::Push(c) => c.execute(&cli.store),
        Command::Build(c) => c.execute(&cli.store),
        Command::Images(c) => c.execute(&cli.store),
        Command::Inspect(c) => c.execute(&cli.store),
        Command::Rmi(c) => c.execute(&cli.store),
        Command::Prune(c) => c.execute(&cli.store),
        Command::Load(c) => c.execute(&cli.store),
        Command::Compile(c) => c.execute(&cli.store),
        Command::Cache(c) => c.execute(),
        Command::Save(c) => c.execute(&cli.store),
        Command::Install(c) => c.execute(),
        Command::Agent(c) => c.execute(),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("wasmbox: error: {e:#}");
            ExitCode::from(EXIT_RUNTIME_ERROR as u8)
        }
    }
}

#[allow(
    unsafe_code,
    reason = "restoring SIGPIPE's default action, before any thread is started"
)]
fn default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
