//! The protocol between the engine and `elastos-cloud-remote`, the helper that reaches network
//! stores (S3, WebDAV through `object_store`, with HTTP and TLS). The engine links none of that:
//! it execs the helper only when the store is a network one and talks to it over the helper's
//! stdin and stdout. The helper sees object names and ciphertext, never a key.
//!
//! Every message is a frame:
//!
//! ```text
//! u32 LE header length | header (postcard: Request or Response) | blobs
//! blob = u64 LE length | bytes
//! ```
//!
//! The header says how many blobs follow ([`Request::blobs`], [`Response::blobs`]): objects
//! travel as raw bytes, never through serde. Both sides treat the other's bytes as hostile: a
//! header over [`MAX_HEADER`], a blob over [`MAX_OBJECT`], an undecodable header or a count that
//! does not match is a [`ProtocolError`], and memory grows only as bytes actually arrive (a
//! length prefix alone allocates nothing). The engine sends [`Request::Open`] first, then one
//! request at a time, each answered by one response (a listing by pages, the last with
//! `more: false`); end of input tells the helper to exit.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::{S3Credentials, StoreConfig, StoreUrl};

/// The largest header accepted: a listing page or a batch of object names.
pub const MAX_HEADER: u32 = 4 << 20;
/// The largest object accepted: a snapshot of a very large home; chunks are at most 4 MiB.
pub const MAX_OBJECT: u64 = 256 << 20;
/// Entries per listing page.
pub const LIST_PAGE: usize = 1000;

/// Where the store is, with its credentials: the first request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenStore {
    pub url: StoreAddress,
    /// S3: access key id, secret access key, region.
    pub s3: Option<(String, String, String)>,
}

/// [`StoreUrl`] on the wire (postcard needs externally tagged enums; `StoreUrl`'s serde form is
/// internally tagged, for JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoreAddress {
    LocalDir(std::path::PathBuf),
    S3 {
        bucket: String,
        prefix: String,
        endpoint: Option<String>,
    },
    WebDav {
        url: String,
    },
}

impl From<&StoreUrl> for StoreAddress {
    fn from(url: &StoreUrl) -> Self {
        match url.clone() {
            StoreUrl::LocalDir(dir) => StoreAddress::LocalDir(dir),
            StoreUrl::S3 {
                bucket,
                prefix,
                endpoint,
            } => StoreAddress::S3 {
                bucket,
                prefix,
                endpoint,
            },
            StoreUrl::WebDav { url } => StoreAddress::WebDav { url },
        }
    }
}

impl From<StoreAddress> for StoreUrl {
    fn from(address: StoreAddress) -> Self {
        match address {
            StoreAddress::LocalDir(dir) => StoreUrl::LocalDir(dir),
            StoreAddress::S3 {
                bucket,
                prefix,
                endpoint,
            } => StoreUrl::S3 {
                bucket,
                prefix,
                endpoint,
            },
            StoreAddress::WebDav { url } => StoreUrl::WebDav { url },
        }
    }
}

impl OpenStore {
    pub(crate) fn from_config(config: &StoreConfig) -> Self {
        OpenStore {
            url: StoreAddress::from(&config.url),
            s3: config.s3_credentials.as_ref().map(|c| {
                (
                    c.access_key_id.clone(),
                    c.secret_access_key.clone(),
                    c.region.clone(),
                )
            }),
        }
    }

    /// Back to the configuration the helper opens.
    pub fn into_config(self) -> StoreConfig {
        let mut config = StoreConfig::new(self.url.into());
        config.s3_credentials =
            self.s3
                .map(|(access_key_id, secret_access_key, region)| S3Credentials {
                    access_key_id,
                    secret_access_key,
                    region,
                });
        config
    }
}

/// What the engine asks. Object names are relative to the store's root.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Open the store (first, once). Answer: [`Response::Done`].
    Open(OpenStore),
    /// Fetch objects in this order. Answer: [`Response::Objects`].
    Get { names: Vec<String> },
    /// Write objects, replacing what is there; one blob per name. Answer: [`Response::Done`].
    Put { names: Vec<String> },
    /// Write an object only if it does not exist; one blob. Answer: [`Response::Created`].
    Create { name: String },
    /// The objects under `dir/`, at any depth, whose names (relative to `dir/`) sort after
    /// `after`. Answer: [`Response::Listed`] pages.
    List { dir: String, after: Option<String> },
    /// Delete an object (gone already is no error). Answer: [`Response::Done`].
    Delete { name: String },
}

impl Request {
    /// How many blobs follow this header.
    pub fn blobs(&self) -> usize {
        match self {
            Request::Put { names } => names.len(),
            Request::Create { .. } => 1,
            _ => 0,
        }
    }
}

/// One object as listed (its name relative to the listed directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedObject {
    pub name: String,
    pub size: u64,
    pub e_tag: Option<String>,
    /// Unix milliseconds of its last write, as the store says.
    pub modified_ms: Option<u64>,
}

/// Which kind of failure the helper reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// The configuration cannot make a store (bad endpoint, URL).
    Config,
    /// S3 credentials are missing.
    Credentials,
    /// A request failed after every retry.
    Store,
}

/// The helper's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Done,
    /// One flag per requested name; a blob follows for each `true`.
    Objects {
        present: Vec<bool>,
    },
    Created(bool),
    /// A page of a listing; `more`: another page follows.
    Listed {
        entries: Vec<ListedObject>,
        more: bool,
    },
    Failed {
        kind: FailureKind,
        /// The operation (`get`, `put`, `create`, `list`, `delete`, `open`).
        op: String,
        object: String,
        attempts: u32,
        message: String,
    },
}

impl Response {
    /// How many blobs follow this header.
    pub fn blobs(&self) -> usize {
        match self {
            Response::Objects { present } => present.iter().filter(|p| **p).count(),
            _ => 0,
        }
    }
}

/// Bytes from the other side that are not a valid frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Reading or writing the pipe failed (the other side exited).
    #[error("pipe: {0}")]
    Io(#[from] std::io::Error),
    /// A length prefix over the limit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        what: &'static str,
        len: u64,
        max: u64,
    },
    /// A header that does not decode as the expected message.
    #[error("undecodable {what}: {reason}")]
    Undecodable { what: &'static str, reason: String },
}

/// Writes one frame: `header` and its blobs.
pub fn write_frame<T: Serialize>(
    out: &mut impl Write,
    header: &T,
    blobs: &[&[u8]],
) -> Result<(), ProtocolError> {
    let bytes = postcard::to_stdvec(header).map_err(|e| ProtocolError::Undecodable {
        what: "header",
        reason: e.to_string(),
    })?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|len| *len <= MAX_HEADER)
        .ok_or(ProtocolError::TooLarge {
            what: "header",
            len: bytes.len() as u64,
            max: u64::from(MAX_HEADER),
        })?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&bytes)?;
    for blob in blobs {
        let len = blob.len() as u64;
        if len > MAX_OBJECT {
            return Err(ProtocolError::TooLarge {
                what: "object",
                len,
                max: MAX_OBJECT,
            });
        }
        out.write_all(&len.to_le_bytes())?;
        out.write_all(blob)?;
    }
    out.flush()?;
    Ok(())
}

/// Reads one header; `Ok(None)` at a clean end of input (before the first byte).
pub fn read_header<T: for<'de> Deserialize<'de>>(
    input: &mut impl Read,
    what: &'static str,
) -> Result<Option<T>, ProtocolError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            n => got += n,
        }
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_HEADER {
        return Err(ProtocolError::TooLarge {
            what: "header",
            len: u64::from(len),
            max: u64::from(MAX_HEADER),
        });
    }
    let bytes = read_exactly(input, u64::from(len))?;
    postcard::from_bytes(&bytes)
        .map(Some)
        .map_err(|e| ProtocolError::Undecodable {
            what,
            reason: e.to_string(),
        })
}

/// Reads `count` blobs.
pub fn read_blobs(input: &mut impl Read, count: usize) -> Result<Vec<Vec<u8>>, ProtocolError> {
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let mut len = [0u8; 8];
        input.read_exact(&mut len)?;
        let len = u64::from_le_bytes(len);
        if len > MAX_OBJECT {
            return Err(ProtocolError::TooLarge {
                what: "object",
                len,
                max: MAX_OBJECT,
            });
        }
        out.push(read_exactly(input, len)?);
    }
    Ok(out)
}

/// `len` bytes, allocated as they arrive (a hostile length costs nothing before its bytes).
fn read_exactly(input: &mut impl Read, len: u64) -> Result<Vec<u8>, ProtocolError> {
    let mut bytes = Vec::with_capacity(len.min(1 << 20) as usize);
    input.take(len).read_to_end(&mut bytes)?;
    if bytes.len() as u64 != len {
        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_round_trips() {
        let mut config = StoreConfig::new("s3://bucket/p".parse().unwrap());
        config.s3_credentials = Some(S3Credentials {
            access_key_id: "id".into(),
            secret_access_key: "secret".into(),
            region: "r".into(),
        });
        let mut buf = Vec::new();
        write_frame(
            &mut buf,
            &Request::Open(OpenStore::from_config(&config)),
            &[],
        )
        .unwrap();
        let Some(Request::Open(open)) = read_header(&mut &buf[..], "request").unwrap() else {
            panic!("not Open");
        };
        let back = open.into_config();
        assert_eq!(back.url, config.url);
        assert!(back.s3_credentials == config.s3_credentials);
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        let request = Request::Put {
            names: vec!["a".into(), "b".into()],
        };
        write_frame(&mut buf, &request, &[b"one", b""]).unwrap();
        let mut input = &buf[..];
        let got: Request = read_header(&mut input, "request").unwrap().unwrap();
        assert_eq!(got.blobs(), 2);
        assert_eq!(
            read_blobs(&mut input, 2).unwrap(),
            vec![b"one".to_vec(), Vec::new()]
        );
        assert!(read_header::<Request>(&mut input, "request")
            .unwrap()
            .is_none());
    }

    #[test]
    fn hostile_frames_are_refused_without_allocating() {
        // A header length over the limit.
        let mut input = &(MAX_HEADER + 1).to_le_bytes()[..];
        assert!(matches!(
            read_header::<Request>(&mut input, "request"),
            Err(ProtocolError::TooLarge { .. })
        ));
        // A blob that claims 256 MiB but ends at once: an error, not a 256 MiB buffer.
        let mut frame = MAX_OBJECT.to_le_bytes().to_vec();
        frame.extend_from_slice(b"short");
        assert!(matches!(
            read_blobs(&mut &frame[..], 1),
            Err(ProtocolError::Io(_))
        ));
        let mut frame = (MAX_OBJECT + 1).to_le_bytes().to_vec();
        frame.extend_from_slice(b"x");
        assert!(matches!(
            read_blobs(&mut &frame[..], 1),
            Err(ProtocolError::TooLarge { .. })
        ));
        // Garbage where a header should be.
        let mut frame = 3u32.to_le_bytes().to_vec();
        frame.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            read_header::<Response>(&mut &frame[..], "response"),
            Err(ProtocolError::Undecodable { .. })
        ));
        // A frame cut inside its length prefix.
        assert!(matches!(
            read_header::<Response>(&mut &[1u8, 0][..], "response"),
            Err(ProtocolError::Io(_))
        ));
    }
}
