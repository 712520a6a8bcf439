//! Where elastos keeps its state: `$ELASTOS_HOME` when set, else the XDG base directories.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The state directories of the current user.
#[derive(Debug, Clone)]
pub struct StateDirs {
    /// Publisher keys.
    pub keys: PathBuf,
    /// Unpacked bundles, by digest.
    pub bundles: PathBuf,
    /// Per-app homes, by app id.
    pub homes: PathBuf,
}

impl StateDirs {
    /// `$ELASTOS_HOME/{keys,bundles,homes}`, else `$XDG_DATA_HOME/elastos/{keys,homes}` and
    /// `$XDG_CACHE_HOME/elastos/bundles` (with the XDG defaults under `$HOME`).
    pub fn from_env() -> Result<StateDirs> {
        if let Some(home) = std::env::var_os("ELASTOS_HOME").filter(|v| !v.is_empty()) {
            let root = PathBuf::from(home);
            if !root.is_absolute() {
                bail!(
                    "ELASTOS_HOME must be an absolute path, found {:?}",
                    root.display().to_string()
                );
            }
            return Ok(StateDirs {
                keys: root.join("keys"),
                bundles: root.join("bundles"),
                homes: root.join("homes"),
            });
        }
        let xdg = |var: &str, fallback: &str| -> Result<PathBuf> {
            match std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
            {
                Some(dir) => Ok(dir),
                None => {
                    let home = std::env::var_os("HOME").context(
                        "neither ELASTOS_HOME nor HOME is set: cannot tell where to keep state",
                    )?;
                    Ok(Path::new(&home).join(fallback))
                }
            }
        };
        let data = xdg("XDG_DATA_HOME", ".local/share")?.join("elastos");
        let cache = xdg("XDG_CACHE_HOME", ".cache")?.join("elastos");
        Ok(StateDirs {
            keys: data.join("keys"),
            bundles: cache.join("bundles"),
            homes: data.join("homes"),
        })
    }

    /// The default publisher key.
    pub fn publisher_key(&self) -> PathBuf {
        self.keys.join("publisher.key")
    }

    /// The persistent home of one app (created 0700 if missing).
    pub fn app_home(&self, app_id: &uuid::Uuid) -> Result<PathBuf> {
        let home = self.homes.join(app_id.to_string());
        create_private_dir(&self.homes)?;
        create_private_dir(&home)?;
        Ok(home)
    }
}

/// Creates `dir` (and parents) with mode 0700 for the last component.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}
