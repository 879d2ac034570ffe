//! Labels of a project apart from HTTP: the GeoJSON and CSV file formats, checking rows against the
//! project, importing a file as a new version and exporting one. Shared by the API, the web pages and
//! the CLI.

pub mod check;
pub mod export;
pub mod formats;
pub mod import;

pub use export::{Export, export_file};
pub use formats::{Format, ImportReport, RowError};
pub use import::{LabelEdit, assign_pending, edit_labels, import_file};
