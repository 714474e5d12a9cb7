//! The `comet` command line: serve handlers (`run`), deploy them to a running
//! server (`deploy`), and manage what a server runs (`modules`).

mod remote;
mod run;

use std::io::IsTerminal;

use clap::{Parser, Subcommand};

/// jemalloc, with background threads (turned on in `main`), gives freed
/// memory back to the OS: after a history flood expired, glibc's malloc
/// kept 24 MiB and jemalloc nothing; an idle WebSocket costs 5.47 KiB
/// instead of 5.59 (BENCHMARKS.md, "Hostile guests and clients").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Comet: a WebAssembly edge runtime for real-time web handlers.
///
/// Handlers are WebAssembly components built with the comet-sdk crate for
/// wasm32-wasip2 (or, for a crate that says `wasi = false` under
/// `[package.metadata.comet]`, for wasm32-unknown-unknown and made a
/// component when comet builds the crate: `comet run DIR`, `comet deploy
/// DIR`). Each event runs in a fresh sandbox with a deadline and a
/// memory limit; the server holds the connections and channels.
#[derive(Debug, Parser)]
#[command(name = "comet", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve handlers: one .wasm component or guest crate, or the modules and
    /// routes of an app manifest.
    ///
    /// Examples:
    ///   comet run guest-examples/hello --listen 127.0.0.1:8080
    ///   comet run guest-examples/chat --watch
    ///   comet run --config app.toml
    #[command(verbatim_doc_comment)]
    Run(Box<run::RunArgs>),

    /// Build (if PATH is a crate) and upload a module to a running server,
    /// which validates it and swaps it in without dropping connections.
    ///
    /// Example: comet deploy --token $COMET_ADMIN_TOKEN chat guest-examples/chat
    Deploy(remote::DeployArgs),

    /// List, inspect, remove or roll back the modules of a running server.
    Modules(remote::ModulesArgs),
}

fn main() -> anyhow::Result<()> {
    // Purge freed pages in the background (every 10 s of decay), also
    // while the server is idle.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let cli = Cli::parse();
    // Colours only for a person at a terminal: a log file or journal gets
    // plain text (and each line is cheaper to format).
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Log lines are formatted on the thread that logs and written by one
    // thread of their own, batched: a guest that logs on every request
    // made the workers queue on stderr's lock and pay a write(2) per line
    // (BENCHMARKS.md, "The log line"). Nothing is dropped: when the queue
    // is full (stderr not read), the thread that logs waits, as it did on
    // stderr itself.
    let (log_writer, log_flush) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("comet-log")
        .finish(std::io::BufWriter::with_capacity(
            64 << 10,
            std::io::stderr(),
        ));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_ansi(colour)
        .with_writer(log_writer)
        .init();
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Deploy(args) => remote::deploy(&args),
        Command::Modules(args) => remote::modules(&args),
    };
    // Write out the lines still queued before the process ends.
    drop(log_flush);
    result
}
