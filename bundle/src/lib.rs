//! Signed elastos bundles: publisher keys, packing, verification, and safe unpacking into a
//! content-addressed cache.
//!
//! This crate owns one concern: turning an app directory into a single signed file, and turning
//! such a file back into a directory tree that the loader can mount read-only at `/app` — without
//! ever trusting the file more than its signature and the unpack rules allow. It does not decide
//! *whether* a publisher is trusted (the caller sees the [`PublisherId`] and decides), and it does
//! not interpret the manifest beyond parsing it with [`elastos_policy::Manifest`] and checking
//! that the entry named there is an executable regular file.
//!
//! # Bundle format, version 1
//!
//! All integers are little-endian. Offsets are in bytes from the start of the file.
//!
//! | offset | size | field          | meaning                                                        |
//! |-------:|-----:|----------------|----------------------------------------------------------------|
//! | 0      | 8    | magic          | `b"ELASTOSB"`                                                  |
//! | 8      | 2    | version        | `u16`, always `1` for this format                              |
//! | 10     | 32   | publisher      | Ed25519 public key of the publisher                            |
//! | 42     | 64   | signature      | Ed25519 signature over `b"elastos-bundle-v1\0"` ‖ digest        |
//! | 106    | 32   | digest         | SHA-256 over every byte from offset 138 to the end of the file |
//! | 138    | 4    | manifest_len   | `u32`, at most [`MAX_MANIFEST_LEN`] (64 KiB)                   |
//! | 142    | m    | manifest       | `manifest.toml`, UTF-8                                         |
//! | 142+m  | 8    | payload_len    | `u64`                                                          |
//! | 150+m  | p    | payload        | gzip-compressed tar of the app's files                         |
//!
//! The file ends exactly after the payload: trailing bytes are an error, and the whole file is at
//! most [`MAX_BUNDLE_SIZE`] (1 GiB). The signature covers the digest, which covers the manifest
//! and the payload, so one signature check proves both. The domain-separation prefix
//! `elastos-bundle-v1\0` keeps a bundle signature from ever being valid for any other message a
//! publisher key signs. The manifest lives outside the compressed payload so that `elastos run`
//! can read it on every run without decompressing anything.
//!
//! The payload is a tar stream (GNU headers; GNU long-name records for long paths) holding every
//! file of the app directory except `manifest.toml`, in sorted order, directories before their
//! contents, with normalised metadata so that packing the same directory twice gives identical
//! bytes: mtime 0, uid/gid 0, mode 0755 for directories and executables, 0644 for other files,
//! 0777 for symlinks (Linux ignores symlink modes). Only directories, regular files and symlinks
//! that stay inside the bundle appear.
//!
//! # Verification
//!
//! [`verify`] checks, in order: magic, version, that the lengths add up to exactly the file size,
//! the digest ([`BundleError::DigestMismatch`]), the signature ([`BundleError::BadSignature`],
//! using Ed25519 strict verification, which also rejects weak public keys), and finally that the
//! manifest is UTF-8 and parses. Only then does it return a [`VerifiedBundle`], the one type that
//! can be unpacked. [`inspect`] runs the same checks but reports instead of failing.
//!
//! [`open_verified_cached`], the path `elastos run` takes, verifies and unpacks the same way,
//! then writes a verification record into the cache entry. When the same file is opened again
//! unchanged (same device, inode, size, mtime and ctime, and the same header), it reads only the
//! header and returns [`VerifiedFacts`] rebuilt from the record, without hashing the file again;
//! its documentation says why that is sound.
//!
//! # Unpacking
//!
//! [`VerifiedBundle::unpack_into_cache`] extracts into `CACHE/<digest>/app/` with its own writer
//! (never the `tar` crate's `unpack`) and refuses, each with its own [`BundleError`] variant:
//! `..` components, absolute paths, symlinks that are absolute or resolve outside the tree
//! (following the archive's other symlinks the way the kernel would), entries below a symlink,
//! hard links, device nodes, FIFOs, setuid/setgid bits, other entry types, duplicates, too many
//! entries, too many decompressed bytes (counted as read, so lying headers do not help), and
//! over-long paths. [`pack`] enforces the same tree rules, so a bundle it writes always unpacks.
//!
//! # Non-features
//!
//! - No encryption: bundle contents are not secret, and the cache is world-readable so a jail
//!   running under another uid can read it.
//! - No streaming verification: a bundle is read into memory once (bounded by
//!   [`MAX_BUNDLE_SIZE`]) so the bytes that were verified are the bytes that get unpacked.
//!   (An unchanged file is not re-read at all by [`open_verified_cached`].)
//! - No trust store: which publishers to trust is the caller's decision.
//! - The cache is trusted once written: a later run reuses `CACHE/<digest>/` without re-hashing
//!   it. Anyone who can write the cache can already write the user's files.

#![forbid(unsafe_code)]

mod error;
mod format;
mod inspect;
mod key;
mod pack;
mod record;
mod tree;
mod unpack;

pub use error::{BundleError, DeviceKind, EntryKind};
pub use format::{
    read_bundle_file, seal, verify, BundleDigest, VerifiedBundle, FORMAT_VERSION, MAGIC,
    MAX_BUNDLE_SIZE, MAX_MANIFEST_LEN, SIGNING_CONTEXT,
};
pub use inspect::{inspect, InspectReport, SignatureStatus};
pub use key::{PublisherId, PublisherKey};
pub use pack::{pack, pack_to, PackedBundle};
pub use record::{open_verified_cached, VerifiedBy, VerifiedFacts, RECORD_MIN_AGE};
pub use unpack::{exec_fork_lock, UnpackLimits, UnpackedBundle};
