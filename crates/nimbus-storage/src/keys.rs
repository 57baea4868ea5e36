//! [`AccessKeys`]: the access key → secret map that SigV4 signatures are checked against. The
//! server owns the keys (in its store) and swaps a fresh map in whenever they change.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};

/// The current access keys. Cheap to clone; all clones see every change at once.
#[derive(Clone, Default)]
pub struct AccessKeys {
    keys: Arc<ArcSwap<HashMap<String, String>>>,
}

// === impl AccessKeys ===

impl AccessKeys {
    /// No keys: every request is refused until keys are added.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        let keys = Self::new();
        keys.replace(pairs.into_iter().collect());
        keys
    }

    /// Replaces all keys at once (e.g. after `nimbus keys create` or a revoke).
    pub fn replace(&self, keys: HashMap<String, String>) {
        self.keys.store(Arc::new(keys));
    }

    pub fn insert(&self, access_key: impl Into<String>, secret: impl Into<String>) {
        let (access_key, secret) = (access_key.into(), secret.into());
        self.keys.rcu(|current| {
            let mut next = HashMap::clone(current);
            next.insert(access_key.clone(), secret.clone());
            next
        });
    }

    /// Revokes one key; `false` if it was not there.
    pub fn remove(&self, access_key: &str) -> bool {
        let mut removed = false;
        self.keys.rcu(|current| {
            let mut next = HashMap::clone(current);
            removed = next.remove(access_key).is_some();
            next
        });
        removed
    }

    pub fn len(&self) -> usize {
        self.keys.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.load().is_empty()
    }

    fn secret(&self, access_key: &str) -> Option<String> {
        self.keys.load().get(access_key).cloned()
    }
}

impl std::fmt::Debug for AccessKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("AccessKeys")
            .field("count", &self.len())
            .finish()
    }
}

/// The s3s side: an unknown access key is `InvalidAccessKeyId` (403); s3s itself checks the
/// signature with the secret and answers `SignatureDoesNotMatch` (403).
pub(crate) struct KeyAuth(pub(crate) AccessKeys);

#[async_trait::async_trait]
impl S3Auth for KeyAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        self.0
            .secret(access_key)
            .map(SecretKey::from)
            .ok_or_else(|| s3_error!(InvalidAccessKeyId))
    }
}
