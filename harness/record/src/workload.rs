//! Workload definitions: TOML files under `workloads/`, one per workload. Unknown keys are errors.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

// What a server answers: the herd's protocol, or echo (no doc comment: the schema would gain a
// description, and the result schema is unchanged by moving the type here).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The proxy herd (IAMAT, WHATSAT, flooding).
    Herd,
    /// Every line is sent back unchanged.
    Echo,
}

impl Mode {
    /// Its name on the command line and in files: `herd`, `echo`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Herd => "herd",
            Self::Echo => "echo",
        }
    }
}

/// A workload: what the generator sends and what the places backend is asked to do.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// The file's stem (`herd-mixed`); filled in on load.
    #[serde(default)]
    pub name: String,
    /// One sentence on what the workload exercises.
    pub description: String,
    /// `herd` or `echo`.
    pub mode: Mode,
    /// Relative weight of IAMAT requests (herd mode).
    #[serde(default)]
    pub iamat: u32,
    /// Relative weight of WHATSAT requests (herd mode).
    #[serde(default)]
    pub whatsat: u32,
    /// Number of distinct client ids (`client-0` …); all are announced before the run starts.
    #[serde(default = "default_clients")]
    pub clients: u32,
    /// Every IAMAT names a client id never used before (`fresh-<source>-<n>`), so each server's
    /// store sees as many distinct clients as there were updates: the high-cardinality population
    /// that `--max-clients` bounds. WHATSATs still ask for the announced `client-N` ids.
    #[serde(default)]
    pub fresh_ids: bool,
    /// WHATSAT radius in km, drawn uniformly from this inclusive integer range (1 ≤ r ≤ 50).
    #[serde(default = "default_radius")]
    pub radius_km: [u32; 2],
    /// WHATSAT result bound, drawn uniformly from this inclusive range (1 ≤ b ≤ 20).
    #[serde(default = "default_bound")]
    pub bound: [u8; 2],
    /// Client locations are drawn uniformly inside this box: [lat_min, lat_max, long_min, long_max].
    #[serde(default = "default_area")]
    pub area: [f64; 4],
    /// The places backend's `--latency` (e.g. `0`, `20ms`, `exp:20ms`).
    #[serde(default = "default_latency")]
    pub places_latency: String,
    /// Echo mode: bytes per message, newline included.
    #[serde(default = "default_message")]
    pub message_bytes: usize,
    /// Requests sent on a connection before the generator closes it and opens a new one
    /// (connection churn); 0 keeps connections open for the whole run.
    #[serde(default)]
    pub requests_per_connection: u32,
    /// Connections opened by the generator when `--connections` is not given.
    #[serde(default = "default_connections")]
    pub connections: usize,
}

fn default_clients() -> u32 {
    1000
}
fn default_radius() -> [u32; 2] {
    [1, 50]
}
fn default_bound() -> [u8; 2] {
    [1, 20]
}
fn default_area() -> [f64; 4] {
    [33.7, 34.3, -118.7, -117.9]
}
fn default_latency() -> String {
    "0".into()
}
fn default_message() -> usize {
    64
}
fn default_connections() -> usize {
    64
}

/// The committed workloads (`workloads/*.toml`), built into the binary: a name reads one of these,
/// never a file of the checkout the binary was built in; a path (`--workload my.toml`) reads that
/// file instead.
pub const BUILT_IN: [(&str, &str); 6] = [
    ("churn", include_str!("../../../workloads/churn.toml")),
    ("echo", include_str!("../../../workloads/echo.toml")),
    ("herd-churn-ids", include_str!("../../../workloads/herd-churn-ids.toml")),
    ("herd-mixed", include_str!("../../../workloads/herd-mixed.toml")),
    ("herd-query", include_str!("../../../workloads/herd-query.toml")),
    ("herd-update", include_str!("../../../workloads/herd-update.toml")),
];

impl Workload {
    /// Loads `name_or_path`: a path to a TOML file, or the name of a built-in one ([`BUILT_IN`]).
    pub fn load(name_or_path: &str) -> Result<Self> {
        let as_path = Path::new(name_or_path);
        if !(as_path.extension().is_some_and(|e| e == "toml") || as_path.components().count() > 1) {
            let Some((name, text)) = BUILT_IN.iter().find(|(name, _)| *name == name_or_path) else {
                bail!(
                    "no workload `{name_or_path}`; use --workload with one of: {} (or the path of a .toml file)",
                    available().join(", ")
                );
            };
            return Self::parse(text, name).with_context(|| format!("in the built-in workload {name}"));
        }
        let text = std::fs::read_to_string(as_path).with_context(|| {
            format!(
                "cannot read workload file {name_or_path}; or use --workload with one of: {}",
                available().join(", ")
            )
        })?;
        let stem = as_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Self::parse(&text, &stem).with_context(|| format!("in workload {name_or_path}"))
    }

    pub fn parse(text: &str, name: &str) -> Result<Self> {
        let mut w: Workload = toml::from_str(text)?;
        w.name = name.to_owned();
        w.validate()?;
        Ok(w)
    }

    fn validate(&self) -> Result<()> {
        if self.mode == Mode::Herd && self.iamat + self.whatsat == 0 {
            bail!("a herd workload needs iamat or whatsat weight above 0");
        }
        if self.clients == 0 {
            bail!("clients must be at least 1");
        }
        let [r0, r1] = self.radius_km;
        if !(1 <= r0 && r0 <= r1 && r1 <= 50) {
            bail!("radius_km must be a range within 1..=50, got {r0}..{r1}");
        }
        let [b0, b1] = self.bound;
        if !(1 <= b0 && b0 <= b1 && b1 <= 20) {
            bail!("bound must be a range within 1..=20, got {b0}..{b1}");
        }
        let [la0, la1, lo0, lo1] = self.area;
        if !(-90.0 <= la0 && la0 <= la1 && la1 <= 90.0 && -180.0 <= lo0 && lo0 <= lo1 && lo1 <= 180.0) {
            bail!("area must be [lat_min, lat_max, long_min, long_max] within ±90/±180");
        }
        if self.message_bytes < 2 || self.message_bytes > 60_000 {
            bail!("message_bytes must be within 2..=60000");
        }
        if self.connections == 0 {
            bail!("connections must be at least 1");
        }
        Ok(())
    }
}

/// Names of the built-in workloads.
pub fn available() -> Vec<String> {
    BUILT_IN.iter().map(|(name, _)| (*name).to_owned()).collect()
}

/// The `.toml` files' names in a folder, sorted (for tests that hold the built-in lists to the
/// committed files).
pub fn toml_stems(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_committed_workload_is_built_in_and_loads() {
        let names = available();
        assert_eq!(
            names,
            toml_stems(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workloads")),
            "workloads/ and BUILT_IN differ"
        );
        for required in ["herd-mixed", "herd-update", "herd-query", "echo", "churn"] {
            assert!(names.iter().any(|n| n == required), "workloads/{required}.toml is missing");
        }
        for name in names {
            let w = Workload::load(&name).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(w.name, name);
        }
    }

    #[test]
    fn unknown_keys_and_bad_ranges_are_rejected() {
        let base = "description = \"x\"\nmode = \"herd\"\niamat = 1\n";
        assert!(Workload::parse(base, "t").is_ok());
        assert!(Workload::parse(&format!("{base}iamats = 3\n"), "t").is_err());
        assert!(Workload::parse(&format!("{base}bound = [0, 5]\n"), "t").is_err());
        assert!(Workload::parse(&format!("{base}radius_km = [1, 51]\n"), "t").is_err());
        assert!(Workload::parse("description = \"x\"\nmode = \"herd\"\n", "t").is_err());
        let err = Workload::load("no-such-workload").expect_err("missing").to_string();
        assert!(err.contains("herd-mixed"), "{err}");
    }
}
