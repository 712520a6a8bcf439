//! The remote behind a small blocking API: a local directory with plain file calls, in this
//! process ([`dir::DirStore`]), or a network store (S3, WebDAV) through the helper process
//! `elastos-cloud-remote` ([`helper::HelperRemote`]).
//!
//! Object names are relative to the store's root (the local directory, the S3 prefix, the
//! WebDAV collection).

use bytes::Bytes;

use crate::{StoreConfig, StoreUrl, SyncError};

mod dir;
mod helper;

pub use helper::{HELPER_ENV, HELPER_NAME, HELPER_SOCKET_ENV};

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
    Helper(helper::HelperRemote),
}

pub(crate) struct Remote {
    backend: Backend,
    /// Whether [`Remote::create`] is atomic (not on WebDAV: checked by reading back).
    conditional_create: bool,
    /// For messages.
    pub url: String,
}

impl Remote {
    pub(crate) fn open(config: &StoreConfig) -> Result<Self, SyncError> {
        let url = config.url.to_string();
        let backend = match &config.url {
            StoreUrl::LocalDir(dir) => Backend::Dir(dir::DirStore::open(dir)?),
            _ => Backend::Helper(helper::HelperRemote::open(config, &url)?),
        };
        let conditional_create = !matches!(config.url, StoreUrl::WebDav { .. });
        Ok(Remote {
            backend,
            conditional_create,
            url,
        })
    }

    /// Whether [`Remote::create`] never overwrites an object (every backend but WebDAV).
    pub(crate) fn conditional_create(&self) -> bool {
        self.conditional_create
    }

    /// The object's bytes, or `None` when it does not exist.
    pub(crate) fn get(&self, name: &str) -> Result<Option<Bytes>, SyncError> {
        match &self.backend {
            Backend::Dir(d) => d.get(name),
            Backend::Helper(h) => h.get(name),
        }
    }

    /// Fetches several objects in the order given ([`PARALLEL`] at a time on a network store).
    pub(crate) fn get_many(&self, names: &[String]) -> Result<Vec<Option<Bytes>>, SyncError> {
        match &self.backend {
            Backend::Dir(d) => names.iter().map(|name| d.get(name)).collect(),
            Backend::Helper(h) => h.get_many(names),
        }
    }

    /// Writes several objects, replacing what is there (content-addressed objects: the same
    /// name always means the same plaintext).
    pub(crate) fn put_many(&self, objects: Vec<(String, Bytes)>) -> Result<(), SyncError> {
        match &self.backend {
            Backend::Dir(d) => objects
                .iter()
                .try_for_each(|(name, bytes)| d.put(name, bytes)),
            Backend::Helper(h) => h.put_many(objects),
        }
    }

    /// Writes `name` only if it does not exist yet: `Ok(false)` when it does (on WebDAV, which
    /// has no conditional write, checked by reading back).
    pub(crate) fn create(&self, name: &str, bytes: Bytes) -> Result<bool, SyncError> {
        match &self.backend {
            Backend::Dir(d) => d.create(name, &bytes),
            Backend::Helper(h) => h.create(name, bytes),
        }
    }

    /// Every object under `dir/`, at any depth, named relative to `dir/` (`a/b`), sorted.
    pub(crate) fn list_all(&self, dir: &str) -> Result<Vec<Listed>, SyncError> {
        match &self.backend {
            Backend::Dir(d) => d.list_all(dir),
            Backend::Helper(h) => h.list(dir, None),
        }
    }

    /// Deletes `name`; an object that is already gone is no error.
    pub(crate) fn delete(&self, name: &str) -> Result<(), SyncError> {
        match &self.backend {
            Backend::Dir(d) => d.delete(name),
            Backend::Helper(h) => h.delete(name),
        }
    }

    /// Objects in `dir/` whose names sort after `dir/after` (all when `None`), sorted.
    pub(crate) fn list(&self, dir: &str, after: Option<&str>) -> Result<Vec<Listed>, SyncError> {
        match &self.backend {
            Backend::Dir(d) => d.list(dir, after),
            Backend::Helper(h) => h.list(dir, after),
        }
    }
}
