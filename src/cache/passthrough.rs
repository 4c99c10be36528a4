//! Client credential passthrough (`auth: passthrough`): the client's own `Authorization: Basic` credentials are
//! used toward the upstream, and cached content of such a registry is served only to a client whose
//! credentials the upstream accepted for that repository — checked with a HEAD and remembered, per credential
//! fingerprint and repository, for a short while. An upstream that cannot answer means no (fail closed).

use super::{pull, PullThrough, CREDENTIAL_TTL};
use crate::error::RegistryError;
use crate::route::Target;

/// What a request asks for, to HEAD the same thing upstream.
pub enum Asked<'a> {
    Manifest(&'a str),
    Blob(&'a str),
}

impl PullThrough {
    /// Checks a request to a `passthrough` registry; other registries pass at once.
    pub async fn authorize(&self, target: &Target, asked: Asked<'_>) -> Result<(), RegistryError> {
        if !self.upstreams.is_passthrough(&target.registry) {
            return Ok(());
        }
        let Some(credentials) = &target.credentials else {
            return Err(RegistryError::Unauthorized(format!(
                "{} needs the client's credentials (auth: passthrough)",
                target.registry
            )));
        };
        if self.air_gapped {
            return Err(RegistryError::Unauthorized(format!(
                "{} passes credentials through, which cannot be checked while air-gapped",
                target.registry
            )));
        }
        let key = format!("{} {target}", credentials.fingerprint());
        if self.accepted_credentials.contains_key(&key) {
            return Ok(());
        }
        let upstream = self.upstreams.get(&target.registry)?;
        let answer = match asked {
            Asked::Manifest(reference) => upstream
                .head_manifest(&pull(target), reference)
                .await
                .map(drop),
            Asked::Blob(digest) => upstream.head_blob(&pull(target), digest).await.map(drop),
        };
        match answer {
            // Accepted; a 404 also means the credentials were accepted (the registry looked).
            Ok(()) | Err(RegistryError::ManifestUnknown(_) | RegistryError::BlobUnknown(_)) => {
                self.accepted_credentials.insert(key, ());
                tracing::debug!(%target, ttl_s = CREDENTIAL_TTL.as_secs(), "passthrough credentials accepted");
                Ok(())
            }
            Err(RegistryError::Denied(message)) => Err(RegistryError::Unauthorized(message)),
            Err(err) => Err(err),
        }
    }
}
