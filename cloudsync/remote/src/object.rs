//! A network store (S3, WebDAV) through `object_store`, behind a blocking API with retries, as
//! the helper serves it to the engine.
//!
//! HTTP backends already retry 5xx answers and timeouts with exponential
//! backoff inside `object_store` ([`retry_config`]); this layer adds a few slower attempts around
//! whole requests (a connection cut mid-body, a server restarting), so a flaky store delays a
//! sync instead of failing it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use elastos_cloudsync::remote_protocol::{FailureKind, ListedObject, Response};
use elastos_cloudsync::{StoreConfig, StoreUrl};

/// Attempts of this layer around one request (each with `object_store`'s own retries inside).
const ATTEMPTS: u32 = 3;
/// Uploads and downloads in flight at once (each holds one sealed chunk of at most 4 MiB plus
/// padding, which bounds the helper's memory).
const PARALLEL: usize = 4;

/// A failed request, as the engine is told ([`Response::Failed`]).
pub(crate) struct Failure {
    kind: FailureKind,
    op: &'static str,
    object: String,
    attempts: u32,
    message: String,
}

impl Failure {
    fn config(message: String) -> Self {
        Failure {
            kind: FailureKind::Config,
            op: "open",
            object: String::new(),
            attempts: 1,
            message,
        }
    }

    pub(crate) fn into_response(self) -> Response {
        Response::Failed {
            kind: self.kind,
            op: self.op.to_owned(),
            object: self.object,
            attempts: self.attempts,
            message: self.message,
        }
    }
}

pub(crate) struct ObjectRemote {
    store: Arc<dyn ObjectStore>,
    prefix: Option<ObjectPath>,
    runtime: tokio::runtime::Runtime,
    /// Whether the backend refuses to overwrite on `PutMode::Create` (S3 with If-None-Match, a
    /// local directory). WebDAV has no such mode: commits there are checked by reading back.
    conditional_create: AtomicBool,
    /// For messages.
    url: String,
}

/// A request's outcome as the helper answers it.
type Answer<T> = Result<T, Failure>;

fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 6,
        retry_timeout: Duration::from_secs(90),
    }
}

fn client_options() -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(120))
}

/// Errors worth another attempt: anything but a clear answer from the store.
fn transient(e: &object_store::Error) -> bool {
    !matches!(
        e,
        object_store::Error::NotFound { .. }
            | object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotImplemented { .. }
            | object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. }
            | object_store::Error::InvalidPath { .. }
    )
}

/// Runs `f` up to [`ATTEMPTS`] times while it fails with a [`transient`] error, waiting 250 ms,
/// then 1 s, between attempts.
async fn with_retries<T, F, Fut>(
    op: &'static str,
    name: &str,
    f: F,
) -> Result<T, object_store::Error>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, object_store::Error>>,
{
    let mut wait = Duration::from_millis(250);
    let mut attempt = 1;
    loop {
        match f().await {
            Err(e) if transient(&e) && attempt < ATTEMPTS => {
                tracing::warn!(op, object = name, attempt, error = %e, "store request failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 4;
                attempt += 1;
            }
            other => return other,
        }
    }
}

impl ObjectRemote {
    pub(crate) fn open(config: &StoreConfig) -> Answer<Self> {
        let url = config.url.to_string();
        let fail = Failure::config;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start the I/O runtime: {e}")))?;
        let (store, prefix, conditional_create): (Arc<dyn ObjectStore>, Option<ObjectPath>, bool) =
            match &config.url {
                StoreUrl::LocalDir(_) => {
                    return Err(fail(
                        "a local directory is no network store: the engine reads it itself".into(),
                    ))
                }
                StoreUrl::S3 {
                    bucket,
                    prefix,
                    endpoint,
                } => {
                    let creds = config.s3_credentials.as_ref().ok_or_else(|| Failure {
                        kind: FailureKind::Credentials,
                        message: "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give a 0600 credentials file".into(),
                        ..fail(String::new())
                    })?;
                    let mut builder = object_store::aws::AmazonS3Builder::new()
                        .with_bucket_name(bucket)
                        .with_access_key_id(&creds.access_key_id)
                        .with_secret_access_key(&creds.secret_access_key)
                        .with_region(&creds.region)
                        .with_retry(retry_config())
                        .with_client_options(client_options());
                    if let Some(endpoint) = endpoint {
                        // Path-style requests: what self-hosted S3 servers (MinIO, rclone, SeaweedFS) expect.
                        builder = builder
                            .with_endpoint(endpoint)
                            .with_allow_http(endpoint.starts_with("http://"))
                            .with_virtual_hosted_style_request(false);
                    }
                    let store = builder.build().map_err(|e| fail(e.to_string()))?;
                    let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.as_str()));
                    (Arc::new(store), prefix, true)
                }
                StoreUrl::WebDav { url: http } => {
                    // The store is rooted at the server and the collection's path is the prefix:
                    // `HttpStore` lists full URL paths (`cloud/homes/...` for
                    // `http://host/cloud`), and creates missing parent collections (MKCOL) only
                    // below its root, so the collection itself is made on first use too.
                    let (origin, path) = split_url(http).map_err(fail)?;
                    let store = object_store::http::HttpBuilder::new()
                        .with_url(origin)
                        .with_retry(retry_config())
                        .with_client_options(
                            client_options().with_allow_http(http.starts_with("http://")),
                        )
                        .build()
                        .map_err(|e| fail(e.to_string()))?;
                    (Arc::new(store), path, false)
                }
            };
        Ok(ObjectRemote {
            store,
            prefix,
            runtime,
            conditional_create: AtomicBool::new(conditional_create),
            url,
        })
    }

    fn path(&self, name: &str) -> ObjectPath {
        match &self.prefix {
            Some(prefix) => ObjectPath::from(format!("{prefix}/{name}")),
            None => ObjectPath::from(name),
        }
    }

    /// Runs `f` with [`with_retries`] on the runtime.
    fn attempt<T, F, Fut>(
        &self,
        op: &'static str,
        name: &str,
        f: F,
    ) -> Result<T, object_store::Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, object_store::Error>>,
    {
        self.runtime.block_on(with_retries(op, name, f))
    }

    fn failed(op: &'static str, name: &str, source: object_store::Error) -> Failure {
        Failure {
            kind: FailureKind::Store,
            op,
            object: name.to_owned(),
            attempts: ATTEMPTS,
            message: source.to_string(),
        }
    }

    /// One GET with retries: the bytes, or `None` when the object does not exist.
    async fn fetch(&self, name: &str) -> Answer<Option<Bytes>> {
        let path = self.path(name);
        match with_retries("get", name, || async {
            self.store.get(&path).await?.bytes().await
        })
        .await
        {
            Ok(bytes) => Ok(Some(bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Self::failed("get", name, e)),
        }
    }

    /// The object's bytes, or `None` when it does not exist.
    fn get(&self, name: &str) -> Answer<Option<Bytes>> {
        self.runtime.block_on(self.fetch(name))
    }

    /// Fetches several objects, [`PARALLEL`] at a time, in the order given.
    pub(crate) fn get_many(&self, names: &[String]) -> Answer<Vec<Option<Bytes>>> {
        let all = futures::stream::iter(names)
            .map(|name| self.fetch(name))
            .buffered(PARALLEL)
            .try_collect();
        self.runtime.block_on(all)
    }

    /// Writes several objects, [`PARALLEL`] at a time, replacing what is there (content-addressed
    /// objects: the same name always means the same plaintext).
    pub(crate) fn put_many(&self, objects: Vec<(String, Bytes)>) -> Answer<()> {
        let put = |(name, bytes): (String, Bytes)| async move {
            let path = self.path(&name);
            with_retries("put", &name, || {
                self.store.put(&path, PutPayload::from_bytes(bytes.clone()))
            })
            .await
            .map(drop)
            .map_err(|e| Self::failed("put", &name, e))
        };
        self.runtime.block_on(
            futures::stream::iter(objects)
                .map(put)
                .buffer_unordered(PARALLEL)
                .try_collect(),
        )
    }

    /// Writes `name` only if it does not exist yet: `Ok(false)` when it does. On a backend
    /// without conditional writes (WebDAV) the object is written when absent and read back, so
    /// a concurrent writer is noticed in all but a narrow race (see `docs/cloud.md`).
    pub(crate) fn create(&self, name: &str, bytes: Bytes) -> Answer<bool> {
        let path = self.path(name);
        if self.conditional_create.load(Ordering::Relaxed) {
            let opts = || PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match self.attempt("create", name, || {
                self.store
                    .put_opts(&path, PutPayload::from_bytes(bytes.clone()), opts())
            }) {
                Ok(_) => return Ok(true),
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => return Ok(false),
                Err(object_store::Error::NotImplemented { .. }) => {
                    tracing::info!(store = %self.url, "no conditional writes; checking commits by reading back");
                    self.conditional_create.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(Self::failed("create", name, e)),
            }
        }
        if self.get(name)?.is_some() {
            return Ok(false);
        }
        self.attempt("put", name, || {
            self.store.put(&path, PutPayload::from_bytes(bytes.clone()))
        })
        .map_err(|e| Self::failed("put", name, e))?;
        Ok(self.get(name)?.as_deref() == Some(&bytes[..]))
    }

    /// Deletes `name`; an object already gone is no error.
    pub(crate) fn delete(&self, name: &str) -> Answer<()> {
        let path = self.path(name);
        match self.attempt("delete", name, || self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Self::failed("delete", name, e)),
        }
    }

    /// Objects under `dir/` whose names sort after `dir/after` (all when `None`), sorted.
    pub(crate) fn list(&self, dir: &str, after: Option<&str>) -> Answer<Vec<ListedObject>> {
        let prefix = self.path(dir);
        let offset = after.map(|a| self.path(&format!("{dir}/{a}")));
        let listed = self.attempt("list", dir, || async {
            let stream = match &offset {
                Some(offset) => self.store.list_with_offset(Some(&prefix), offset),
                None => self.store.list(Some(&prefix)),
            };
            stream.try_collect::<Vec<_>>().await
        });
        let metas = match listed {
            Ok(metas) => metas,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(Self::failed("list", dir, e)),
        };
        let mut out: Vec<ListedObject> = metas
            .into_iter()
            .filter_map(|meta| {
                let name = meta
                    .location
                    .prefix_match(&prefix)?
                    .map(|p| p.as_ref().to_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                Some(ListedObject {
                    name,
                    size: meta.size,
                    e_tag: meta.e_tag,
                    modified_ms: u64::try_from(meta.last_modified.timestamp_millis()).ok(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// `http(s)://HOST[:PORT]/PATH` as the server's origin and the path as an object path (`None`
/// for the root).
fn split_url(url: &str) -> Result<(&str, Option<ObjectPath>), String> {
    let host_start = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[host_start..]
        .find('/')
        .map_or(url.len(), |i| host_start + i);
    let (origin, path) = url.split_at(path_start);
    let path = ObjectPath::from_url_path(path)
        .map_err(|e| format!("the WebDAV URL's path {path:?} is not usable: {e}"))?;
    Ok((origin, (!path.as_ref().is_empty()).then_some(path)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_urls() {
        let split = |u| {
            let (origin, path) = super::split_url(u).unwrap();
            (origin, path.map(|p| p.to_string()))
        };
        assert_eq!(
            split("http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080", None)
        );
        assert_eq!(
            split("http://127.0.0.1:8080/"),
            ("http://127.0.0.1:8080", None)
        );
        assert_eq!(
            split("https://h/cloud"),
            ("https://h", Some("cloud".into()))
        );
        assert_eq!(
            split("https://h/remote.php/dav/files/me%20too/"),
            ("https://h", Some("remote.php/dav/files/me too".into()))
        );
    }
}
