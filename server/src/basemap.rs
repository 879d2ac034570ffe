//! The basemap the web maps draw under their layers: OpenStreetMap's raster tiles by default, another
//! XYZ raster tile template with its attribution, or none at all for an installation without internet
//! access (`serve --offline`, `GROUNDWORK_OFFLINE=1`, or `--basemap-url none`), whose maps then draw a
//! plain background with a graticule and reach no other site.

/// OpenStreetMap's standard raster tiles, the default basemap.
pub const OSM_TILES: &str = "https://tile.openstreetmap.org/{z}/{x}/{y}.png";

/// The attribution OpenStreetMap's tiles require, shown on the map.
pub const OSM_ATTRIBUTION: &str = "© OpenStreetMap contributors";

/// A basemap: an XYZ raster tile template and the attribution shown on the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basemap {
    /// XYZ raster tile template (`https://…/{z}/{x}/{y}.png`).
    pub url: String,
    /// Attribution text shown on the map (plain text; empty for none).
    pub attribution: String,
}

impl Basemap {
    /// OpenStreetMap's standard tiles with their attribution.
    #[must_use]
    pub fn openstreetmap() -> Self {
        Self {
            url: OSM_TILES.to_owned(),
            attribution: OSM_ATTRIBUTION.to_owned(),
        }
    }

    /// The basemap the settings ask for: none when `offline`, or when `url` is blank, `none` or `off`;
    /// OpenStreetMap's when `url` is not given; else `url`. The attribution is `attribution` when it
    /// is not blank, else OpenStreetMap's for tiles from `tile.openstreetmap.org` and none for others.
    #[must_use]
    pub fn from_settings(
        url: Option<&str>,
        attribution: Option<&str>,
        offline: bool,
    ) -> Option<Self> {
        if offline {
            return None;
        }
        let url = match url.map(str::trim) {
            None => OSM_TILES,
            Some(u)
                if u.is_empty()
                    || u.eq_ignore_ascii_case("none")
                    || u.eq_ignore_ascii_case("off") =>
            {
                return None;
            }
            Some(u) => u,
        };
        let attribution = match attribution.map(str::trim).filter(|a| !a.is_empty()) {
            Some(a) => a.to_owned(),
            None if is_openstreetmap(url) => OSM_ATTRIBUTION.to_owned(),
            None => String::new(),
        };
        Some(Self {
            url: url.to_owned(),
            attribution,
        })
    }
}

/// Whether `url` names OpenStreetMap's own tile servers.
fn is_openstreetmap(url: &str) -> bool {
    crate::hygiene::basemap_origin(url).is_some_and(|origin| {
        origin
            .split_once("://")
            .map(|(_, host)| host.split(':').next().unwrap_or(host))
            .is_some_and(|host| {
                host == "tile.openstreetmap.org" || host.ends_with(".tile.openstreetmap.org")
            })
    })
}

/// The basemap options of `serve` and `demo`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BasemapArgs {
    /// XYZ raster tile template (`https://…/{z}/{x}/{y}.png`) drawn under the web maps (default:
    /// OpenStreetMap's tiles, `https://tile.openstreetmap.org/{z}/{x}/{y}.png`); `none` for no
    /// basemap.
    #[arg(long, env = "GROUNDWORK_BASEMAP_URL", value_name = "TEMPLATE")]
    pub basemap_url: Option<String>,
    /// Attribution shown on the map for the basemap's tiles (plain text; default "© OpenStreetMap
    /// contributors" for OpenStreetMap's tiles, none for others).
    #[arg(long, env = "GROUNDWORK_BASEMAP_ATTRIBUTION", value_name = "TEXT")]
    pub basemap_attribution: Option<String>,
    /// An installation without internet access: the web maps draw no basemap and reach no other site
    /// (a plain background with a graticule). `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    #[arg(long, env = "GROUNDWORK_OFFLINE", value_name = "BOOL",
        num_args = 0..=1, default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new())]
    pub offline: Option<bool>,
}

impl BasemapArgs {
    /// The basemap these options ask for ([`Basemap::from_settings`]).
    #[must_use]
    pub fn basemap(&self) -> Option<Basemap> {
        Basemap::from_settings(
            self.basemap_url.as_deref(),
            self.basemap_attribution.as_deref(),
            self.offline.unwrap_or(false),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        basemap: BasemapArgs,
    }

    #[test]
    fn openstreetmap_is_the_default_and_offline_or_none_switch_it_off() {
        assert_eq!(
            Basemap::from_settings(None, None, false),
            Some(Basemap::openstreetmap())
        );
        assert_eq!(Basemap::from_settings(None, None, true), None);
        for off in ["", "  ", "none", "None", "off"] {
            assert_eq!(
                Basemap::from_settings(Some(off), None, false),
                None,
                "{off:?}"
            );
        }
        let other = Basemap::from_settings(
            Some(" https://tiles.example.org/{z}/{x}/{y}.png "),
            None,
            false,
        );
        assert_eq!(
            other,
            Some(Basemap {
                url: "https://tiles.example.org/{z}/{x}/{y}.png".into(),
                attribution: String::new(),
            })
        );
        let credited = Basemap::from_settings(
            Some("https://tiles.example.org/{z}/{x}/{y}.png"),
            Some("© Example Maps"),
            false,
        );
        assert_eq!(
            credited.map(|b| b.attribution).as_deref(),
            Some("© Example Maps")
        );
        let osm = Basemap::from_settings(
            Some("https://a.tile.openstreetmap.org/{z}/{x}/{y}.png"),
            None,
            false,
        );
        assert_eq!(osm.map(|b| b.attribution).as_deref(), Some(OSM_ATTRIBUTION));
    }

    #[test]
    fn the_command_line_switches_the_basemap_off() {
        // Flags given on the command line win over the environment, so these hold whatever it says.
        for args in [
            vec!["gw", "--offline"],
            vec!["gw", "--offline", "true"],
            vec!["gw", "--basemap-url", "none"],
            vec![
                "gw",
                "--basemap-url",
                "https://tiles.example.org/{z}/{x}/{y}.png",
                "--offline=yes",
            ],
        ] {
            let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.basemap.basemap(), None, "{args:?}");
        }
        let cli = Cli::try_parse_from([
            "gw",
            "--offline=false",
            "--basemap-url",
            "https://tiles.example.org/{z}/{x}/{y}.png",
            "--basemap-attribution",
            "© Example Maps",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cli.basemap.basemap(),
            Some(Basemap {
                url: "https://tiles.example.org/{z}/{x}/{y}.png".into(),
                attribution: "© Example Maps".into(),
            })
        );
    }
}
