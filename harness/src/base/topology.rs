//! The herd's shape: server names and bidirectional flood links (configuration, not code).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

const DEFAULT: &str = include_str!("../../topology.toml");

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Server names, in start order.
    pub servers: Vec<String>,
    /// Bidirectional links as name pairs.
    pub links: Vec<[String; 2]>,
}

impl Topology {
    /// The default five-server herd of DESIGN.md.
    pub fn default_herd() -> Self {
        Self::parse(DEFAULT).expect("the built-in topology is valid")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading topology {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in topology {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let t: Topology = toml::from_str(text)?;
        if t.servers.is_empty() {
            bail!("a topology needs at least one server");
        }
        for (i, s) in t.servers.iter().enumerate() {
            if s.is_empty() || s.contains(char::is_whitespace) {
                bail!("server name {s:?} must be one word");
            }
            if t.servers[..i].contains(s) {
                bail!("server {s} is listed twice");
            }
        }
        for [a, b] in &t.links {
            for end in [a, b] {
                if !t.servers.contains(end) {
                    bail!("link {a}–{b} names {end}, which is not in `servers`");
                }
            }
            if a == b {
                bail!("link {a}–{b} joins a server to itself");
            }
        }
        Ok(t)
    }

    /// `name`'s neighbours, in `servers` order.
    pub fn neighbours(&self, name: &str) -> Vec<String> {
        self.servers
            .iter()
            .filter(|s| self.links.iter().any(|[a, b]| (a == name && b == *s) || (b == name && a == *s)))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_herd_links_as_in_the_design() {
        let t = Topology::default_herd();
        assert_eq!(t.neighbours("Alford"), ["Hamilton", "Welsh"]);
        assert_eq!(t.neighbours("Ball"), ["Holiday", "Welsh"]);
        assert_eq!(t.neighbours("Hamilton"), ["Alford", "Holiday"]);
        assert_eq!(t.neighbours("Holiday"), ["Ball", "Hamilton"]);
        assert_eq!(t.neighbours("Welsh"), ["Alford", "Ball"]);
    }

    #[test]
    fn bad_topologies_are_rejected() {
        assert!(Topology::parse("servers = [\"A\"]\nlinks = [[\"A\", \"B\"]]").is_err());
        assert!(Topology::parse("servers = [\"A\", \"A\"]\nlinks = []").is_err());
        assert!(Topology::parse("servers = [\"A\"]\nlinks = []\nextra = 1").is_err());
    }
}
