//! The bench's `--json` outputs (schemas under docs/schema/bench*.json).

use std::path::PathBuf;

use serde::Serialize;

use super::stats::Summary;
use super::Meta;

/// `bench --json`: where the run's files are, what ran, the statistics.
#[derive(Serialize, schemars::JsonSchema)]
pub struct RunOut<'a> {
    pub dir: &'a std::path::Path,
    pub meta: &'a Meta,
    pub summary: &'a Summary,
}

/// `bench report DIR --json`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct ReportOut<'a> {
    pub meta: &'a Meta,
    pub summary: &'a Summary,
}

/// One side of a comparison.
#[derive(Serialize, schemars::JsonSchema)]
pub struct Side<'a> {
    pub dir: PathBuf,
    pub meta: &'a Meta,
    pub summary: &'a Summary,
}

/// `bench report A B --json`.
#[derive(Serialize, schemars::JsonSchema)]
pub struct CompareOut<'a> {
    pub a: Side<'a>,
    pub b: Side<'a>,
}
