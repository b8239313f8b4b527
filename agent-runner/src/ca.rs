//! Extra CA certificates the spawner mounted for the job (`AGENTSMITH_EXTRA_CA_FILE`: a
//! private CA, a TLS-inspecting proxy's): the runner trusts them for its callbacks and its
//! git commands, and gives the agent a bundle of the image's public roots joined with them
//! (`SSL_CERT_FILE`, `GIT_SSL_CAINFO`, `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`) and the extra
//! file itself (`NODE_EXTRA_CA_CERTS`, which Node adds to its own roots).

use std::path::{Path, PathBuf};

/// Where images keep their public roots, by distribution (Debian and Ubuntu, Fedora and
/// RHEL, Alpine and macOS).
const PUBLIC_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The most of an extra CA file read: a bundle of some hundred certificates.
const MAX_BYTES: u64 = 1 << 20;

/// The extra certificates, and the public roots joined with them.
#[derive(Clone)]
pub struct ExtraCa {
    /// The file the spawner mounted.
    pub path: PathBuf,
    /// Its certificates (PEM).
    pub pem: String,
    /// The image's public roots (when it has any) followed by them.
    pub joined: String,
}

impl std::fmt::Debug for ExtraCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraCa")
            .field("path", &self.path)
            .field("certificates", &self.pem.matches(BEGIN).count())
            .finish()
    }
}

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";

impl ExtraCa {
    /// Reads `path`, which must hold PEM certificates, and joins them with the public
    /// roots at `public` (`SSL_CERT_FILE` as the image set it), else the distribution's.
    pub fn read(path: &Path, public: Option<&Path>) -> Result<Self, String> {
        let size = std::fs::metadata(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .len();
        if size > MAX_BYTES {
            return Err(format!(
                "{} is {size} bytes, over the {MAX_BYTES} a CA bundle may have",
                path.display()
            ));
        }
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| format!("{} is not PEM certificates: {e}", path.display()))?;
        if certificates.is_empty() || !pem.contains(BEGIN) {
            return Err(format!("{} holds no PEM certificate", path.display()));
        }
        let public = public
            .map(Path::to_path_buf)
            .into_iter()
            .chain(PUBLIC_BUNDLES.iter().map(PathBuf::from))
            .find_map(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let mut joined = public.trim_end().to_string();
        if !joined.is_empty() {
            joined.push('\n');
        }
        joined.push_str(pem.trim_end());
        joined.push('\n');
        Ok(Self {
            path: path.to_path_buf(),
            pem,
            joined,
        })
    }

    /// The certificates, for the runner's own HTTP client.
    pub fn certificates(&self) -> Vec<reqwest::Certificate> {
        // Parsed once already, in `read`.
        reqwest::Certificate::from_pem_bundle(self.pem.as_bytes()).unwrap_or_default()
    }

    /// The agent's variables, with `bundle` the joined bundle's path in the work directory.
    pub fn agent_env(&self, bundle: &Path) -> Vec<(&'static str, Option<String>)> {
        let bundle = Some(bundle.display().to_string());
        vec![
            ("SSL_CERT_FILE", bundle.clone()),
            ("GIT_SSL_CAINFO", bundle.clone()),
            ("REQUESTS_CA_BUNDLE", bundle.clone()),
            ("CURL_CA_BUNDLE", bundle),
            ("NODE_EXTRA_CA_CERTS", Some(self.path.display().to_string())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::temp::TempDir;
    use testkit::tls::TestCa;

    #[test]
    fn the_extra_certificates_follow_the_public_roots_and_anything_else_is_refused() {
        let dir = TempDir::new("extra-ca");
        let ca = TestCa::new("extra");
        let public = TestCa::new("public");
        let extra = ExtraCa::read(&ca.ca_file(), Some(&public.ca_file())).unwrap();
        assert!(extra.joined.starts_with(public.ca_pem().trim_end()));
        assert!(extra
            .joined
            .ends_with(&format!("{}\n", ca.ca_pem().trim_end())));
        assert_eq!(extra.certificates().len(), 1);
        let env = extra.agent_env(Path::new("/work/.agentsmith/ca-certificates.crt"));
        assert!(env.contains(&(
            "SSL_CERT_FILE",
            Some("/work/.agentsmith/ca-certificates.crt".into())
        )));
        assert!(env.contains(&(
            "NODE_EXTRA_CA_CERTS",
            Some(ca.ca_file().display().to_string())
        )));

        let junk = dir.path().join("junk.crt");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let err = ExtraCa::read(&junk, None).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = ExtraCa::read(&dir.path().join("missing.crt"), None).unwrap_err();
        assert!(err.contains("cannot read"), "{err}");
    }
}
