//! The `groundwork` binary: server, worker, database tools, and benchmarks.

mod cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    cli::main().await
}
