//! A class of a project's legend.

use serde::{Deserialize, Serialize};

/// A class of the project's legend: its raster value, name and colour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClassDef {
    /// Raster value (0–254; 255 is nodata).
    pub id: u8,
    /// Name.
    pub name: String,
    /// `#rrggbb`.
    pub color: String,
}
