//! The `groundwork` binary: server, worker, database tools, and benchmarks.

mod cli;

fn main() -> std::process::ExitCode {
    // libcurl (inside GDAL) reads `no_proxy` itself and would reach the hosts it lists directly,
    // around the proxy that applies the outbound-request policy to GDAL's requests. The process's
    // own HTTP clients take no proxy settings from the environment, so the variable is dropped here,
    // before any other thread exists.
    for key in ["no_proxy", "NO_PROXY"] {
        if std::env::var_os(key).is_some() {
            // SAFETY: no other thread has started yet: nothing reads the environment concurrently.
            #[expect(
                unsafe_code,
                reason = "removing an environment variable before threads start"
            )]
            unsafe {
                std::env::remove_var(key);
            }
            eprintln!(
                "{key} is ignored: outbound requests follow the outbound-request policy alone"
            );
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(cli::main())
}
