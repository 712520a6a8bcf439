//! The app's home quota (`[home] quota`): launched by root, the home is an ext4 image of the
//! quota's size (`<home>.img`, beside the home) mounted at the home; writes past it fail with
//! `ENOSPC`, and nothing of the app's reaches the disk beyond the image.
//!
//! Why an image: the kernel this was built on has no quota support (`CONFIG_QUOTA` is off, so
//! ext4 refuses `prjquota`), and turning on the host filesystem's project quotas is not
//! elastos's to do. An image needs nothing of the host filesystem, survives a crash (ext4's
//! journal; the image is a file of the host's), costs nothing at a start once mounted (one
//! `stat` to see it is), and keeps the home a directory of the host, so everything that reads it
//! there (the cloud disk's sync) is unchanged. It costs a `mkfs` once per app (20-50 ms here)
//! and a loop mount once per boot (15-45 ms), and needs root (loop devices and ext4 mounts): launched by
//! another user, the quota is not enforced and the launcher says so.
//!
//! The mount lives in the host's mount namespace until the next boot (or an `umount` of the
//! home); the loop device is released with it (`mount -o loop` sets autoclear).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A home quota could not be put in place.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeQuotaError {
    /// A file or directory of the home could not be read or made.
    #[error("cannot prepare {path} for the home quota")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `mkfs.ext4` or `mount` failed.
    #[error(
        "`{command}` failed for the home quota: {message} (hint: the quota needs e2fsprogs' \
         mkfs.ext4, mount and a free loop device; remove [home] quota to run without it)"
    )]
    Command {
        /// The command line.
        command: String,
        /// Its exit status and stderr.
        message: String,
    },
}

/// What [`ensure_mounted`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeMount {
    /// The home was already a mount (of its image): nothing done.
    AlreadyMounted,
    /// The image was mounted now (made first, if new): a jail's first process cloned before
    /// this does not see it in its copy of the mount namespace.
    MountedNow,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> HomeQuotaError + '_ {
    move |source| HomeQuotaError::Io {
        path: path.into(),
        source,
    }
}

/// Makes `home` (an existing directory) the mount of an ext4 image of `quota_bytes`, whose root
/// belongs to `owner` (uid, gid): made once, with what the home held copied in (the home's old
/// directory is kept beside it as `<home>.before-quota`), and mounted `nosuid,nodev,noexec`.
/// An image that exists keeps its size, whatever `quota_bytes` says now.
pub fn ensure_mounted(
    home: &Path,
    quota_bytes: u64,
    owner: (u32, u32),
) -> Result<HomeMount, HomeQuotaError> {
    let parent = home.parent().unwrap_or(Path::new("/"));
    let device = |path: &Path| fs::metadata(path).map(|m| m.dev()).map_err(io_error(path));
    let mounted = || Ok::<_, HomeQuotaError>(device(home)? != device(parent)?);
    if mounted()? {
        return Ok(HomeMount::AlreadyMounted);
    }
    // Two starts of one app at once (`elastos run` and the daemon's activation, or two
    // activations) would both make the image and mount it twice: one at a time, and the second
    // finds it mounted.
    let image = image_path(home);
    let mut lock = image.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let _locked = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock)
        .and_then(|file| file.lock().map(|()| file))
        .map_err(io_error(&lock))?;
    if mounted()? {
        return Ok(HomeMount::AlreadyMounted);
    }
    if !image.exists() {
        make_image(home, &image, quota_bytes, owner)?;
    }
    run(Command::new("mount")
        .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noexec"])
        .arg(&image)
        .arg(home))?;
    // The app has no use for it (and could not read it): e2fsck makes a new one when needed.
    let lost = home.join("lost+found");
    match fs::remove_dir(&lost) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(&lost)(e)),
        _ => {}
    }
    Ok(HomeMount::MountedNow)
}

/// `<home>.img`, beside the home.
pub fn image_path(home: &Path) -> PathBuf {
    let mut name = home.file_name().unwrap_or_default().to_owned();
    name.push(".img");
    home.with_file_name(name)
}

fn make_image(
    home: &Path,
    image: &Path,
    quota_bytes: u64,
    (uid, gid): (u32, u32),
) -> Result<(), HomeQuotaError> {
    // Made under a temporary name, so that a crash midway leaves no half-made image that a
    // later start would mount.
    let mut partial = image.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io_error(&partial))?;
    // Sparse: the disk holds only what the app writes (and the filesystem's bookkeeping).
    file.set_len(quota_bytes).map_err(io_error(&partial))?;
    drop(file);
    let has_files = fs::read_dir(home).map_err(io_error(home))?.next().is_some();
    let mut mkfs = Command::new("mkfs.ext4");
    // -m 0: no blocks reserved for root, the quota is the app's; root_owner: the home's root
    // directory is the app's, as a plain home is.
    mkfs.args(["-q", "-F", "-m", "0", "-L", "elastos-home", "-E"])
        .arg(format!("root_owner={uid}:{gid}"));
    if has_files {
        mkfs.arg("-d").arg(home);
    }
    mkfs.arg(&partial);
    if let Err(e) = run(&mut mkfs) {
        let _ = fs::remove_file(&partial);
        return Err(e);
    }
    if has_files {
        // The files are in the image now; the old directory stays beside it, out of the app's
        // reach, for whoever wants to check the copy.
        let mut kept = home.as_os_str().to_owned();
        kept.push(".before-quota");
        let kept = PathBuf::from(kept);
        fs::rename(home, &kept).map_err(io_error(home))?;
        fs::create_dir(home).map_err(io_error(home))?;
        tracing::warn!(home = %home.display(), kept = %kept.display(), "the home's files moved into its quota image");
    }
    fs::rename(&partial, image).map_err(io_error(image))
}

fn run(command: &mut Command) -> Result<(), HomeQuotaError> {
    let shown = format!("{command:?}");
    let out = command.output().map_err(|e| HomeQuotaError::Command {
        command: shown.clone(),
        message: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(HomeQuotaError::Command {
        command: shown,
        message: format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_sits_beside_the_home() {
        assert_eq!(
            image_path(Path::new(
                "/h/homes/pub/0b8e1f7c-3c1d-4a55-9d0e-5f7f5e2a9c11"
            )),
            Path::new("/h/homes/pub/0b8e1f7c-3c1d-4a55-9d0e-5f7f5e2a9c11.img")
        );
    }
}
