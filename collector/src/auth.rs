//! Project credentials: the agents' license key and the API's bearer
//! token. Only their SHA-256 hashes are stored; a leaked database does not
//! leak keys.
//!
//! Invariant: neither secret is ever logged; logs use
//! [`agent_core::license::mask`].

use std::collections::HashMap;
use std::sync::RwLock;

use agent_core::license::{License, mask};
use sha2::{Digest, Sha256};

use crate::model::Project;
use crate::store::{Store, StoreError};

/// The prefix of API tokens, so a token pasted as a license (or the other
/// way round) is recognised.
pub const TOKEN_PREFIX: &str = "slt-";

/// SHA-256 of a secret.
pub fn hash_secret(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// A new random API token: `slt-` and 48 hex digits (192 bits).
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{TOKEN_PREFIX}{hex}"))
}

/// A new project's secrets, shown once. `Debug` masks both.
pub struct NewProject {
    /// The project.
    pub project: Project,
    /// For agents.
    pub license: License,
    /// For the API.
    pub token: String,
}

impl std::fmt::Debug for NewProject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewProject")
            .field("project", &self.project)
            .field("license", &self.license)
            .field("token", &mask(&self.token))
            .finish()
    }
}

/// Why a project could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No randomness.
    #[error("cannot make a secret: {0}")]
    Random(String),
}

/// Makes a project with a fresh license and token.
pub async fn create_project<S: Store>(store: &S, name: &str) -> Result<NewProject, CreateError> {
    let license = License::generate().map_err(|e| CreateError::Random(e.to_string()))?;
    let token = new_token().map_err(|e| CreateError::Random(e.to_string()))?;
    let project = store
        .create_project(name, &hash_secret(license.expose()), &hash_secret(&token))
        .await?;
    Ok(NewProject {
        project,
        license,
        token,
    })
}

/// Remembers which hash belongs to which project. Only hits are cached:
/// a project created while the collector runs is found on first use.
#[derive(Debug, Default)]
pub struct ProjectCache {
    by_hash: RwLock<HashMap<Vec<u8>, Project>>,
}

impl ProjectCache {
    /// The project for `hash`, asking `lookup` on a miss.
    pub async fn get<F, Fut>(&self, hash: Vec<u8>, lookup: F) -> Result<Option<Project>, StoreError>
    where
        F: FnOnce(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = Result<Option<Project>, StoreError>>,
    {
        if let Some(p) = self.by_hash.read().ok().and_then(|m| m.get(&hash).cloned()) {
            return Ok(Some(p));
        }
        let found = lookup(hash.clone()).await?;
        if let (Some(p), Ok(mut map)) = (&found, self.by_hash.write()) {
            map.insert(hash, p.clone());
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_project_debug_masks_both_secrets() {
        let created = NewProject {
            project: Project {
                id: 7,
                name: "shop".into(),
            },
            license: License::generate().expect("randomness"),
            token: new_token().expect("randomness"),
        };
        let shown = format!("{created:?}");
        let license = created.license.expose();
        assert!(!shown.contains(&license[4..license.len() - 4]), "{shown}");
        assert!(
            !shown.contains(&created.token[4..created.token.len() - 4]),
            "{shown}"
        );
        assert!(shown.contains(&mask(&created.token)), "{shown}");
        assert!(shown.contains("shop"), "{shown}");
    }
}
