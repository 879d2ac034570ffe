//! `groundwork imagery materialize` and `groundwork demo-data`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use groundwork_imagery::materialize::MaterializeRequest;
use groundwork_imagery::{
    AcquireReport, CancellationToken, CustomProfile, DemoOptions, Modality, Profile, Progress,
    generate_demo_data,
};

/// `groundwork imagery …`
#[derive(Debug, clap::Subcommand)]
pub enum ImageryCommand {
    /// Cut an AOI into windows and write model-ready window tensors from a STAC catalogue.
    Materialize(MaterializeArgs),
}

/// Catalogue profile names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProfileArg {
    /// Element 84 Earth Search.
    EarthSearch,
    /// Microsoft Planetary Computer (assets signed with SAS tokens).
    PlanetaryComputer,
    /// Asset mapping from `--profile-config`.
    Custom,
}

/// Arguments of `imagery materialize`.
#[derive(Debug, Clone, clap::Args)]
pub struct MaterializeArgs {
    /// STAC API root URL, or a static `catalog.json` path or URL.
    #[arg(long)]
    pub stac: String,
    /// Catalogue conventions.
    #[arg(long, value_enum, default_value = "earth-search")]
    pub profile: ProfileArg,
    /// JSON file with the custom profile: `{"modalities": {"sentinel2_l2a": {"collection": …, "assets": [12 keys], "scl_asset": …}}}`.
    #[arg(long)]
    pub profile_config: Option<PathBuf>,
    /// Planetary Computer token endpoint base.
    #[arg(long, default_value = groundwork_imagery::modality::PLANETARY_COMPUTER)]
    pub sas_endpoint: String,
    /// Comma-separated modalities: sentinel2_l2a, sentinel1, landsat.
    #[arg(long, value_delimiter = ',', default_value = "sentinel2_l2a")]
    pub modalities: Vec<String>,
    /// AOI GeoJSON (Polygon/MultiPolygon geometry, Feature or FeatureCollection) in EPSG:4326.
    #[arg(long)]
    pub aoi: PathBuf,
    /// First day, YYYY-MM-DD.
    #[arg(long)]
    pub start: NaiveDate,
    /// Last day (inclusive), YYYY-MM-DD.
    #[arg(long)]
    pub end: NaiveDate,
    /// Window side in 10 m pixels.
    #[arg(long, default_value_t = 64)]
    pub window_size: u32,
    /// Maximum scene cloud cover, percent.
    #[arg(long)]
    pub max_cloud: Option<f64>,
    /// One composite over the whole range instead of monthly bins.
    #[arg(long)]
    pub single_bin: bool,
    /// Windows processed concurrently.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Requests in flight per host.
    #[arg(long, default_value_t = 16)]
    pub per_host: usize,
    /// Fraction of windows that must succeed.
    #[arg(long, default_value_t = 0.95)]
    pub success_threshold: f64,
    /// Output directory: `windows/{id}.safetensors`, `windows/{id}.png`, `windows.geojson`, `report.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Arguments of `demo-data`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoDataArgs {
    /// Output directory (gets `catalog.json`, COGs, `ground_truth.tif`, `aoi.geojson`).
    #[arg(long)]
    pub out: PathBuf,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Year of the scenes (the same seed gives the same land cover every year: a second catalogue
    /// to try monitoring with).
    #[arg(long, default_value_t = 2024)]
    pub year: i32,
    /// Also write Landsat 9 Collection 2 Level-2 scenes (`landsat-c2-l2`, one a month).
    #[arg(long)]
    pub landsat: bool,
}

/// Runs an `imagery` subcommand.
pub async fn run_imagery(cmd: ImageryCommand) -> anyhow::Result<()> {
    match cmd {
        ImageryCommand::Materialize(args) => {
            let report = materialize(&args).await?;
            for (m, n) in &report.scenes_found {
                if *n == 0 {
                    eprintln!("warning: no {m} scenes found");
                }
            }
            println!(
                "{} windows: {} succeeded, {} empty (no scene or every pixel masked), {} quarantined ({:.1} s, {:.1} MB of pixels read); output in {}",
                report.total,
                report.succeeded,
                report.empty,
                report.quarantined,
                report.elapsed_s,
                report.bytes_read as f64 / 1e6,
                args.out.display()
            );
            if !report.success {
                bail!(
                    "only {} of {} windows succeeded (threshold {:.0} %); see {}",
                    report.succeeded,
                    report.total,
                    args.success_threshold * 100.0,
                    args.out.join("windows.geojson").display()
                );
            }
            Ok(())
        }
    }
}

/// Runs `demo-data`.
pub async fn run_demo_data(args: DemoDataArgs) -> anyhow::Result<()> {
    let out = args.out.clone();
    let opts = DemoOptions {
        seed: args.seed,
        year: args.year,
        landsat: args.landsat,
        ..DemoOptions::default()
    };
    let catalog = tokio::task::spawn_blocking(move || generate_demo_data(&out, &opts))
        .await
        .context("demo generator task")?
        .with_context(|| format!("generating demo data in {}", args.out.display()))?;
    println!(
        "demo catalogue: {} (AOI: {})",
        catalog.display(),
        args.out.join("aoi.geojson").display()
    );
    Ok(())
}

/// `imagery materialize`: the request from the flags, with a progress bar on standard error unless
/// `--quiet`, and Ctrl-C cancelling the run.
pub async fn materialize(args: &MaterializeArgs) -> anyhow::Result<AcquireReport> {
    let modalities = args
        .modalities
        .iter()
        .map(|m| m.parse::<Modality>())
        .collect::<Result<Vec<_>, _>>()?;
    let profile = match args.profile {
        ProfileArg::EarthSearch => Profile::EarthSearch,
        ProfileArg::PlanetaryComputer => Profile::PlanetaryComputer {
            sas_endpoint: args.sas_endpoint.clone(),
        },
        ProfileArg::Custom => {
            let path = args
                .profile_config
                .as_ref()
                .context("--profile custom needs --profile-config FILE")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Profile::Custom(
                serde_json::from_str::<CustomProfile>(&text)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )
        }
    };
    let req = MaterializeRequest {
        stac: args.stac.clone(),
        profile,
        modalities,
        aoi: args.aoi.clone(),
        start: args.start,
        end: args.end,
        window_size: args.window_size,
        max_cloud: args.max_cloud,
        single_bin: args.single_bin,
        concurrency: args.concurrency,
        per_host: args.per_host,
        success_threshold: args.success_threshold,
        out: args.out.clone(),
    };
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} windows ({per_sec}, eta {eta}) {msg}",
        ) {
            b.set_style(style);
        }
        b
    };
    let cancel = CancellationToken::new();
    let on_ctrl_c = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        })
    };
    let pb = Arc::new(bar.clone());
    let progress = move |p: &Progress<'_>| {
        pb.set_length(p.total as u64);
        pb.set_position(p.done as u64);
        pb.set_message(p.message.to_string());
    };
    let result = groundwork_imagery::materialize::materialize(&req, &progress, &cancel).await;
    on_ctrl_c.abort();
    bar.finish_and_clear();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().expect("date")
    }

    #[test]
    fn the_command_futures_can_be_spawned() {
        fn assert_send<T: Send>(_: &T) {}
        let args = MaterializeArgs {
            stac: "x".into(),
            profile: ProfileArg::EarthSearch,
            profile_config: None,
            sas_endpoint: String::new(),
            modalities: vec![],
            aoi: "x".into(),
            start: d("2024-01-01"),
            end: d("2024-01-31"),
            window_size: 64,
            max_cloud: None,
            single_bin: false,
            concurrency: 1,
            per_host: 1,
            success_threshold: 0.95,
            out: "x".into(),
            quiet: true,
        };
        assert_send(&materialize(&args));
        assert_send(&run_imagery(ImageryCommand::Materialize(args.clone())));
        let args = DemoDataArgs {
            out: "/nonexistent".into(),
            seed: 1,
            year: 2024,
            landsat: false,
        };
        assert_send(&run_demo_data(args));
    }
}
