//! Where elastos keeps its state: `$ELASTOS_HOME` when set, else the XDG base directories; and
//! where its companion binaries are.

use std::path::{Path, PathBuf};

use crate::apps::{AppDirs, AppError};

/// The state directories of the current user.
#[derive(Debug, Clone)]
pub struct StateDirs {
    /// Publisher keys.
    pub keys: PathBuf,
    /// Where apps' files live (unpacked bundles, homes, installed bundles).
    pub apps: AppDirs,
    /// The broker's RocksDB database.
    pub broker_db: PathBuf,
    /// The broker daemon's control socket, in the runtime directory.
    pub control_socket: PathBuf,
    /// This user's runtime directory: the control socket, and the record of the holder of its
    /// user namespace (`elastos_loader::holder`). `$ELASTOS_HOME/run`, else
    /// `$XDG_RUNTIME_DIR/elastos` (`/run/elastos` for root).
    pub runtime: PathBuf,
    /// The logs of detached apps, one directory per instance: `$ELASTOS_HOME/logs`, else
    /// `$XDG_STATE_HOME/elastos/logs`.
    pub app_logs: PathBuf,
    /// The cloud disk's settings (`elastos cloud set`): `$ELASTOS_HOME/cloud.toml`, else
    /// `$XDG_CONFIG_HOME/elastos/cloud.toml`.
    pub cloud_config: PathBuf,
    /// The cloud disk's local state (sync index, and the default store standing in for the
    /// cloud disk): `$ELASTOS_HOME/cloud`, else `$XDG_DATA_HOME/elastos/cloud`.
    pub cloud: PathBuf,
}

impl StateDirs {
    /// `$ELASTOS_HOME/{keys,bundles,homes,installed,ledger,trust.json}`, else
    /// `$XDG_DATA_HOME/elastos/{keys,homes,installed,ledger,trust.json}` and
    /// `$XDG_CACHE_HOME/elastos/bundles` (with the XDG defaults under `$HOME`).
    pub fn from_env() -> Result<StateDirs, PathsError> {
        if let Some(home) = std::env::var_os("ELASTOS_HOME").filter(|v| !v.is_empty()) {
            let root = PathBuf::from(home);
            if !root.is_absolute() {
                return Err(PathsError::Relative { root });
            }
            return Ok(StateDirs {
                keys: root.join("keys"),
                apps: AppDirs {
                    bundles: root.join("bundles"),
                    homes: root.join("homes"),
                    installed: root.join("installed"),
                    user_keys: root.join("keys"),
                    ledger: root.join("ledger"),
                    trust: root.join("trust.json"),
                    user_limits: root.join(elastos_policy::ceilings::USER_FILE),
                },
                broker_db: root.join("broker.db"),
                control_socket: root.join("run/broker.sock"),
                runtime: root.join("run"),
                app_logs: root.join("logs"),
                cloud_config: root.join("cloud.toml"),
                cloud: root.join("cloud"),
            });
        }
        let xdg = |var: &str, fallback: &str| -> Result<PathBuf, PathsError> {
            match std::env::var_os(var)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
            {
                Some(dir) => Ok(dir),
                None => {
                    let home = std::env::var_os("HOME").ok_or(PathsError::NoHome)?;
                    Ok(Path::new(&home).join(fallback))
                }
            }
        };
        let data = xdg("XDG_DATA_HOME", ".local/share")?.join("elastos");
        let cache = xdg("XDG_CACHE_HOME", ".cache")?.join("elastos");
        let config = xdg("XDG_CONFIG_HOME", ".config")?.join("elastos");
        Ok(StateDirs {
            keys: data.join("keys"),
            apps: AppDirs {
                bundles: cache.join("bundles"),
                homes: data.join("homes"),
                installed: data.join("installed"),
                user_keys: data.join("keys"),
                ledger: data.join("ledger"),
                trust: data.join("trust.json"),
                user_limits: config.join(elastos_policy::ceilings::USER_FILE),
            },
            broker_db: data.join("broker.db"),
            control_socket: runtime_dir()?.join("broker.sock"),
            runtime: runtime_dir()?,
            app_logs: xdg("XDG_STATE_HOME", ".local/state")?.join("elastos/logs"),
            cloud_config: config.join("cloud.toml"),
            cloud: data.join("cloud"),
        })
    }

    /// The default publisher key.
    pub fn publisher_key(&self) -> PathBuf {
        self.keys.join("publisher.key")
    }

    /// The user key (`elastos id`), beside the publisher keys.
    pub fn user_key(&self) -> PathBuf {
        self.apps.user_keys.join("user.key")
    }
}

/// `/run/elastos` for root, else `$XDG_RUNTIME_DIR/elastos`.
fn runtime_dir() -> Result<PathBuf, PathsError> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/run/elastos"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        Some(dir) => Ok(dir.join("elastos")),
        None => Err(PathsError::NoRuntimeDir),
    }
}

/// The state directories cannot be determined.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathsError {
    /// `ELASTOS_HOME` is relative.
    #[error("ELASTOS_HOME must be an absolute path, found {}", root.display())]
    Relative {
        /// The value found.
        root: PathBuf,
    },
    /// Neither `ELASTOS_HOME` nor `HOME` is set.
    #[error("neither ELASTOS_HOME nor HOME is set: cannot tell where to keep state")]
    NoHome,
    /// No runtime directory for the control socket.
    #[error(
        "XDG_RUNTIME_DIR is not set: cannot tell where the broker's control socket is (hint: set \
         ELASTOS_HOME, or log in through a session that sets XDG_RUNTIME_DIR)"
    )]
    NoRuntimeDir,
}

/// A companion executable of elastos (`elastos-loader`, `elastos-broker`): the path in the
/// environment variable `env` when set, else next to the running executable.
pub fn companion_binary(env: &'static str, name: &'static str) -> Result<PathBuf, AppError> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let exe =
        std::env::current_exe().map_err(|source| AppError::Companion { name, env, source })?;
    Ok(exe.with_file_name(name))
}
