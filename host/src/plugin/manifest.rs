//! A plugin's manifest: what the operator must see before loading it — its
//! name and version, the URL schemes it serves, the hosts it asks to reach
//! and the limits it runs under (SPEC §3).
//!
//! What a plugin can do is not declared here: the host learns it from the
//! component's exports. A manifest written for `ferry:transfer@0.1.0` still
//! lists `capabilities`; it is accepted, and must agree with the component.
//! The operator's grants narrow the hosts it declares.

use serde::Deserialize;
use std::time::Duration;

/// Something a plugin can do: what its component exports (0.2), or reports
/// and its 0.1-era manifest lists.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// Downloads (`ferry:transfer/download`).
    Download,
    /// Uploads and their cancels (`ferry:transfer/upload`).
    Upload,
    /// Uploads that return the server's reply (`ferry:transfer/upload-reply`).
    UploadReply,
    /// Byte ranges and resume. Every 0.2 download transport takes ranges
    /// (it answers `unsupported` where its protocol has none); a 0.1 plugin
    /// reports it.
    Ranges,
    /// Reply processing (`ferry:transfer/reply-processing`).
    ReplyProcessing,
}

impl Capability {
    /// The manifest's (kebab-case) name.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Download => "download",
            Capability::Upload => "upload",
            Capability::UploadReply => "upload-reply",
            Capability::Ranges => "ranges",
            Capability::ReplyProcessing => "reply-processing",
        }
    }
}

/// The manifest file (TOML) that sits beside every plugin component.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// URL schemes served, lower case, e.g. `["http", "https"]`.
    #[serde(default)]
    pub schemes: Vec<String>,
    /// The 0.1 format's list of what the plugin does; when present it must
    /// agree with the component. New manifests leave it out.
    #[serde(default)]
    pub capabilities: Option<Vec<Capability>>,
    /// Host patterns the plugin may ask to reach: `*`, `example.com`,
    /// `*.example.com`, or any of them with `:port`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
}

/// What a plugin's calls may use.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Limits {
    /// Linear memory, in MiB.
    #[serde(default = "Limits::default_memory_mib")]
    pub memory_mib: u64,
    /// How long guest code may run without coming back to the host, in ms.
    #[serde(default = "Limits::default_deadline_ms")]
    pub deadline_ms: u64,
}

impl Limits {
    fn default_memory_mib() -> u64 {
        64
    }
    fn default_deadline_ms() -> u64 {
        1000
    }
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: Self::default_memory_mib(),
            deadline_ms: Self::default_deadline_ms(),
        }
    }
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not valid TOML for a plugin manifest: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("the manifest is invalid: {0}")]
    Invalid(String),
}

/// Hard ceilings no manifest can raise.
const MAX_MEMORY_MIB: u64 = 4096;
const MAX_DEADLINE_MS: u64 = 60_000;

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = toml::from_str(text)?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |why: String| Err(ManifestError::Invalid(why));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return invalid(format!(
                "name {:?} must be non-empty ASCII letters, digits, '-' or '_'",
                self.name
            ));
        }
        for scheme in &self.schemes {
            let valid = scheme
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
            if !valid {
                return invalid(format!("scheme {scheme:?} is not a lower-case URL scheme"));
            }
        }
        if let Some(capabilities) = &self.capabilities {
            if capabilities.is_empty() {
                return invalid("capabilities, when listed, must not be empty".into());
            }
            let processor = capabilities.contains(&Capability::ReplyProcessing);
            if processor && capabilities.len() > 1 {
                return invalid(
                    "reply-processing cannot be combined with transport capabilities".into(),
                );
            }
            if !processor && self.schemes.is_empty() {
                return invalid("a transport must serve at least one URL scheme".into());
            }
        }
        for pattern in &self.allowed_hosts {
            crate::plugin::grants::HostPattern::parse(pattern).map_err(ManifestError::Invalid)?;
        }
        if self.limits.memory_mib == 0 || self.limits.memory_mib > MAX_MEMORY_MIB {
            return invalid(format!("limits.memory-mib must be 1..={MAX_MEMORY_MIB}"));
        }
        if self.limits.deadline_ms == 0 || self.limits.deadline_ms > MAX_DEADLINE_MS {
            return invalid(format!("limits.deadline-ms must be 1..={MAX_DEADLINE_MS}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_manifest() {
        let m = Manifest::parse(
            r#"
            name = "http"
            version = "0.1.0"
            schemes = ["http", "https"]
            capabilities = ["download", "ranges"]
            allowed-hosts = ["*"]
            [limits]
            memory-mib = 32
            deadline-ms = 500
            "#,
        )
        .unwrap();
        assert_eq!(m.schemes, ["http", "https"]);
        assert_eq!(m.limits.memory_bytes(), 32 << 20);
        assert_eq!(m.limits.deadline(), Duration::from_millis(500));
        assert_eq!(
            m.capabilities,
            Some(vec![Capability::Download, Capability::Ranges])
        );
    }

    #[test]
    fn a_0_2_manifest_lists_no_capabilities() {
        let m = Manifest::parse(
            "name = 'mirror'\nversion = '0.2.0'\nschemes = ['mirror']\nallowed-hosts = ['*']",
        )
        .unwrap();
        assert_eq!(m.capabilities, None);
        assert_eq!(m.limits.memory_mib, 64);
    }

    #[test]
    fn refuses_bad_manifests() {
        for text in [
            "name = 'x'\nversion = '1'\ncapabilities = ['download']",
            "version = '1'\nschemes = ['a']",
            "name = 'x y'\nversion = '1'\nschemes = ['a']\ncapabilities = ['download']",
            "name = 'x'\nversion = '1'\nschemes = ['A']\ncapabilities = ['download']",
            "name = 'x'\nversion = '1'\nschemes = ['a']\ncapabilities = []",
            "name = 'x'\nversion = '1'\nschemes = ['a']\ncapabilities = ['teleport']",
            "name = 'x'\nversion = '1'\nschemes = ['a']\ncapabilities = ['download']\nextra = 1",
            "name = 'x'\nversion = '1'\nschemes = ['a']\ncapabilities = ['download']\n[limits]\nmemory-mib = 0",
            "name = 'x'\nversion = '1'\nschemes = ['a']\ncapabilities = ['download']\nallowed-hosts = ['a b']",
        ] {
            assert!(Manifest::parse(text).is_err(), "accepted: {text}");
        }
    }
}
