//! The remote behind a small blocking API: a local directory with plain file calls
//! ([`dir::DirStore`]), or, with the `remote` feature, an `object_store` backend (S3, WebDAV)
//! driven by a current-thread runtime made only for it ([`object::ObjectRemote`]).
//!
//! Object names are relative to the store's root (the local directory, the S3 prefix, the
//! WebDAV collection).

use bytes::Bytes;

use crate::{StoreConfig, StoreUrl, SyncError};

mod dir;
#[cfg(feature = "remote")]
mod object;

/// Uploads and downloads in flight at once on a network store. Each holds one sealed chunk (at
/// most [`crate::engine::MAX_CHUNK`] plus padding), which bounds the memory of a sync.
pub(crate) const PARALLEL: usize = 4;

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// Name relative to the listed directory.
    pub name: String,
    pub size: u64,
    pub e_tag: Option<String>,
    /// When the object was last written, as the store says.
    pub modified: Option<std::time::SystemTime>,
}

enum Backend {
    Dir(dir::DirStore),
    #[cfg(feature = "remote")]
    Object(object::ObjectRemote),
}

pub(crate) struct Remote {
    backend: Backend,
    /// For messages.
    pub url: String,
}

impl Remote {
    pub(crate) fn open(config: &StoreConfig) -> Result<Self, SyncError> {
        let url = config.url.to_string();
        let backend = match &config.url {
            StoreUrl::LocalDir(dir) => Backend::Dir(dir::DirStore::open(dir)?),
            #[cfg(feature = "remote")]
            _ => Backend::Object(object::ObjectRemote::open(config, &url)?),
            #[cfg(not(feature = "remote"))]
            _ => {
                return Err(SyncError::StoreConfig {
                    url,
                    reason: "this program was built without network stores (elastos-cloudsync's `remote` feature); only a local directory works".into(),
                })
            }
        };
        Ok(Remote { backend, url })
    }

    /// The object's bytes, or `None` when it does not exist.
    pub(crate) fn get(&self, name: &str) -> Result<Option<Bytes>, SyncError> {
        match &self.backend {
            Backend::Dir(d) => d.get(name),
            #[cfg(feature = "remote")]
            Backend::Object(o) => o.get(name),
        }
    }

    /// Fetches several objects in the order given ([`PARALLEL`] at a time on a network store).
    pub(crate) fn get_many(&self, names: &[String]) -> Result<Vec<Option<Bytes>>, SyncError> {
        match &self.backend {
            Backend::Dir(d) => names.iter().map(|name| d.get(name)).collect(),
            #[cfg(feature = "remote")]
            Backend::Object(o) => o.get_many(names),
        }
    }

    /// Writes several objects, replacing what is there (content-addressed objects: the same
    /// name always means the same plaintext).
    pub(crate) fn put_many(&self, objects: Vec<(String, Bytes)>) -> Result<(), SyncError> {
        match &self.backend {
            Backend::Dir(d) => objects
                .iter()
                .try_for_each(|(name, bytes)| d.put(name, bytes)),
            #[cfg(feature = "remote")]
            Backend::Object(o) => o.put_many(objects),
        }
    }

    /// Writes `name` only if it does not exist yet: `Ok(false)` when it does (on WebDAV, which
    /// has no conditional write, checked by reading back).
    pub(crate) fn create(&self, name: &str, bytes: Bytes) -> Result<bool, SyncError> {
        match &self.backend {
            Backend::Dir(d) => d.create(name, &bytes),
            #[cfg(feature = "remote")]
            Backend::Object(o) => o.create(name, bytes),
        }
    }

    /// Every object under `dir/`, at any depth, named relative to `dir/` (`a/b`), sorted.
    pub(crate) fn list_all(&self, dir: &str) -> Result<Vec<Listed>, SyncError> {
        match &self.backend {
            Backend::Dir(d) => d.list_all(dir),
            // Object stores list every object under a prefix, at any depth.
            #[cfg(feature = "remote")]
            Backend::Object(o) => o.list(dir, None),
        }
    }

    /// Deletes `name`; an object that is already gone is no error.
    pub(crate) fn delete(&self, name: &str) -> Result<(), SyncError> {
        match &self.backend {
            Backend::Dir(d) => d.delete(name),
            #[cfg(feature = "remote")]
            Backend::Object(o) => o.delete(name),
        }
    }

    /// Objects in `dir/` whose names sort after `dir/after` (all when `None`), sorted.
    pub(crate) fn list(&self, dir: &str, after: Option<&str>) -> Result<Vec<Listed>, SyncError> {
        match &self.backend {
            Backend::Dir(d) => d.list(dir, after),
            #[cfg(feature = "remote")]
            Backend::Object(o) => o.list(dir, after),
        }
    }
}
