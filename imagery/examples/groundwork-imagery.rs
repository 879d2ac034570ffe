//! A stand-alone front end for the imagery commands, as the `groundwork` binary mounts them:
//! `cargo run -p groundwork-imagery --example groundwork-imagery -- demo-data --out /tmp/demo` and
//! `… -- imagery materialize --stac /tmp/demo/catalog.json --aoi /tmp/demo/aoi.geojson …`.

use clap::Parser;
use groundwork_imagery::cli::{DemoDataArgs, ImageryCommand, run_demo_data, run_imagery};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// Imagery acquisition.
    #[command(subcommand)]
    Imagery(ImageryCommand),
    /// Generate the offline demo catalogue.
    DemoData(DemoDataArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Imagery(c) => run_imagery(c).await,
        Cmd::DemoData(a) => run_demo_data(a).await,
    }
}
