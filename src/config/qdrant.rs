//! How to reach Qdrant: URL, API key, CA certificate and cluster nodes, from the flags, the
//! environment and the config file's `qdrant:` section.

use std::path::{Path, PathBuf};

use super::discovery::expand_tilde;
use super::env::{Env, Overrides};
use super::parse::QdrantFile;

pub const DEFAULT_QDRANT_URL: &str = "http://localhost:6333";

/// How to reach Qdrant.
#[derive(Clone, Debug, PartialEq)]
pub struct QdrantSettings {
    pub url: String,
    pub api_key: Option<String>,
    /// A PEM file of extra trusted CA certificates for https.
    pub ca_cert: Option<PathBuf>,
    /// REST URLs of every node of a cluster (`url` is the entry point).
    pub nodes: Vec<String>,
}

impl QdrantSettings {
    /// Flags > environment > the file's `qdrant:` section > defaults.
    pub(super) fn resolve(
        qdrant_file: QdrantFile,
        env: &Env,
        overrides: &Overrides,
        home: Option<&Path>,
    ) -> Self {
        QdrantSettings {
            url: overrides
                .qdrant_url
                .clone()
                .or_else(|| env.get("QDRANT_URL").map(str::to_string))
                .or(qdrant_file.url)
                .unwrap_or_else(|| DEFAULT_QDRANT_URL.to_string()),
            api_key: env
                .get("QDRANT_API_KEY")
                .map(str::to_string)
                .or(qdrant_file.api_key),
            ca_cert: env
                .path("QDRANT_CA_CERT")
                .or(qdrant_file.ca_cert)
                .map(|p| expand_tilde(&p, home)),
            nodes: env
                .get("QDRANT_NODES")
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|u| !u.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .or(qdrant_file.nodes)
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::env::Overrides;
    use super::super::tests::{load_file, load_with};

    #[test]
    fn cluster_nodes_come_from_the_file_or_the_environment() {
        let s = load_file("qdrant:\n  nodes: [\"http://a:6333\", \"http://b:6333\"]\n").unwrap();
        assert_eq!(s.qdrant.nodes, ["http://a:6333", "http://b:6333"]);
        let s = load_with(
            &[
                ("HOME", "/h"),
                ("QDRANT_NODES", " http://x:6333, ,http://y:6333 "),
            ],
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(s.qdrant.nodes, ["http://x:6333", "http://y:6333"]);
        assert!(load_with(&[("HOME", "/h")], Overrides::default())
            .unwrap()
            .qdrant
            .nodes
            .is_empty());
    }
}
