//! The outbound-request policy's command-line settings, shared by `serve`, `worker`, `demo` and
//! `model fetch`.

use clap::Args;
use groundwork_imagery::OutboundPolicy;
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Args)]
pub struct OutboundOptions {
    /// Let catalogues, asset hrefs and downloads reach this host although it resolves to a loopback,
    /// private or link-local address (an in-house STAC server, MinIO): `HOST` or `HOST:PORT`,
    /// repeatable or comma-separated. Without it, only public addresses are fetched.
    #[arg(
        long = "allow-host",
        env = "GROUNDWORK_ALLOW_HOSTS",
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    pub allow_hosts: Vec<String>,
    /// Let users name local catalogues (a path or `file://` URL) under this directory, repeatable or
    /// comma-separated. Without it, only http(s) catalogues are read.
    #[arg(
        long = "catalog-root",
        env = "GROUNDWORK_CATALOG_ROOTS",
        value_delimiter = ',',
        value_name = "DIR"
    )]
    pub catalog_roots: Vec<PathBuf>,
}

impl OutboundOptions {
    /// The policy these settings describe.
    pub fn policy(&self) -> anyhow::Result<OutboundPolicy> {
        OutboundPolicy::configured(&self.allow_hosts, &self.catalog_roots)
            .map_err(|e| anyhow::anyhow!("outbound-request policy: {e}"))
    }
}
