//! The `imagery materialize` and `demo-data` commands, as a library the `groundwork` binary mounts.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use object_store::local::LocalFileSystem;

use crate::acquire::{AcquireReport, AcquireRequest, OutputLayout, Progress, acquire};
use crate::composite::TimeBinning;
use crate::demo::{DemoOptions, generate_demo_data};
use crate::grid::{GridOptions, windows_for_aoi};
use crate::modality::{CustomProfile, Modality, Profile};
use crate::source::Source;

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
    #[arg(long, default_value = crate::modality::PLANETARY_COMPUTER)]
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
}

/// Runs an `imagery` subcommand.
pub async fn run_imagery(cmd: ImageryCommand) -> anyhow::Result<()> {
    match cmd {
        ImageryCommand::Materialize(args) => {
            let report = materialize(&args).await?;
            for (m, n) in &report.scenes_found {
                if *n == 0 {
                    eprintln!("warning: no {m} scenes found; its tensors are all missing (mask 3)");
                }
            }
            println!(
                "{} windows: {} succeeded, {} quarantined ({:.1} s, {:.1} MB of pixels read); output in {}",
                report.total,
                report.succeeded,
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

/// Reads an AOI file into one (multi)polygon geometry.
pub fn read_aoi(path: &std::path::Path) -> anyhow::Result<geojson::Geometry> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let gj: geojson::GeoJson = text
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    let geoms: Vec<geojson::Geometry> = match gj {
        geojson::GeoJson::Geometry(g) => vec![g],
        geojson::GeoJson::Feature(f) => f.geometry.into_iter().collect(),
        geojson::GeoJson::FeatureCollection(fc) => {
            fc.features.into_iter().filter_map(|f| f.geometry).collect()
        }
    };
    let mut polys = Vec::new();
    for g in &geoms {
        polys.extend(crate::grid::aoi_multipolygon(g)?.0);
    }
    if polys.is_empty() {
        bail!("{} has no polygon", path.display());
    }
    Ok(geojson::Geometry::from(&geo::MultiPolygon(polys)))
}

/// `imagery materialize`: windows, acquisition, `windows.geojson` and `report.json`.
pub async fn materialize(args: &MaterializeArgs) -> anyhow::Result<AcquireReport> {
    let aoi = read_aoi(&args.aoi)?;
    let grid = GridOptions {
        window_size: args.window_size,
        ..GridOptions::default()
    };
    let windows = windows_for_aoi(&aoi, &grid).context("cutting the AOI into windows")?;
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
    let mut req = AcquireRequest::new(Source::parse(&args.stac), modalities, args.start, args.end);
    req.profile = profile;
    req.max_cloud = args.max_cloud;
    req.binning = if args.single_bin {
        TimeBinning::Whole
    } else {
        TimeBinning::Monthly
    };
    req.window_concurrency = args.concurrency;
    req.http.per_host_concurrency = args.per_host;
    req.success_threshold = args.success_threshold;
    req.layout = OutputLayout::Combined;
    req.previews = true;
    if let Source::Static(p) = &req.source
        && !p.starts_with("http")
    {
        let abs = std::fs::canonicalize(p).with_context(|| format!("catalogue {p}"))?;
        req.source = Source::Static(abs.to_string_lossy().into_owned());
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let sink = LocalFileSystem::new_with_prefix(&args.out)
        .with_context(|| format!("opening {}", args.out.display()))?;
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(windows.len() as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} windows ({per_sec}, eta {eta}) {msg}",
        ) {
            b.set_style(style);
        }
        b
    };
    let cancel = crate::CancellationToken::new();
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
        pb.set_position(p.done as u64);
        pb.set_message(p.message.to_string());
    };
    let result = acquire(
        &windows,
        &req,
        &sink,
        &object_store::path::Path::default(),
        &progress,
        &cancel,
    )
    .await;
    on_ctrl_c.abort();
    bar.finish_and_clear();
    let report = result.context("acquiring imagery")?;
    let fc = report.feature_collection(&windows);
    let path = args.out.join("windows.geojson");
    std::fs::write(&path, serde_json::to_vec_pretty(&fc)?)
        .with_context(|| format!("writing {}", path.display()))?;
    let path = args.out.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(report)
}
