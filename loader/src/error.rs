//! What can go wrong starting or supervising a jail. No message repeats its source: callers print
//! the chain (`outer: cause`).

use std::io;
use std::path::PathBuf;

use crate::cgroup::CgroupError;
use crate::holder::HolderError;
use crate::sys::ChildStep;

/// Starting or supervising a jail failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The loader binary could not be opened.
    #[error(
        "cannot open the loader {path} (hint: install elastos-loader next to elastos, or set \
         ELASTOS_LOADER)"
    )]
    Loader {
        /// Where we looked.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A host path the jail mounts could not be opened.
    #[error("cannot open {path} to mount it in the jail")]
    MountSource {
        /// The host path.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Preparing the app's home (ownership) failed.
    #[error("cannot prepare the app's home {path}")]
    Home {
        /// The host path of the home.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Creating the pipes to the jail's first process, or numbering the fds it keeps, failed.
    #[error("cannot set up the jail's file descriptors")]
    Fds(#[source] io::Error),
    /// Creating the app's stdin, stdout and stderr (pipes, or a pseudo-terminal) failed.
    #[error("cannot connect the app's stdio: {what}")]
    Stdio {
        /// The step that failed.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Writing the plan to the jail's first process, or reading its reports, failed.
    #[error("cannot hand the jail its plan")]
    HandOff(#[source] io::Error),
    /// Blocking or receiving the supervisor's signals failed.
    #[error("cannot handle the supervisor's signals")]
    Signals(#[source] nix::Error),
    /// clone() into new namespaces failed.
    #[error(
        "cannot create the jail's namespaces (hint: unprivileged user namespaces must be \
         enabled: sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0, and no \
         AppArmor restrict_unprivileged_userns)"
    )]
    Namespaces {
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Writing the child's uid/gid map failed.
    #[error("cannot write {file} of the jail")]
    IdMap {
        /// The /proc file.
        file: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// `newuidmap`/`newgidmap` (or a command run through them) failed.
    #[error("{} failed: {message} (hint: the user's ranges in /etc/subuid and /etc/subgid must \
             not overlap anyone's, and the helpers must be setuid root)", tool.display())]
    IdMapHelper {
        /// The program.
        tool: PathBuf,
        /// What went wrong (its exit status and stderr).
        message: String,
    },
    /// The user's namespace (its holder) cannot be joined or made.
    #[error(transparent)]
    Holder(#[from] HolderError),
    /// The cgroup for the limits could not be set up.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The child failed between clone and exec of the loader.
    #[error("the jail's first process failed at {step:?}")]
    Child {
        /// The step.
        step: ChildStep,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The loader failed at a jail step; the app never ran.
    #[error("building the jail failed at step {step}: {message}{}", errno_text(*.errno))]
    Jail {
        /// The jail step (see `jail::Step`).
        step: String,
        /// What failed.
        message: String,
        /// The kernel's answer, if any.
        errno: Option<i32>,
    },
    /// The entry does not exist (or its ELF interpreter does not, in the jail).
    #[error(
        "entry {entry} not found in the jail (if it exists in the bundle, it is dynamically \
         linked against a loader or library the host does not have)"
    )]
    EntryNotFound {
        /// The entry's jail path.
        entry: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The entry exists but cannot be executed.
    #[error(
        "entry {entry} cannot be executed (is it an executable for this architecture, with its \
         x bit set?)"
    )]
    EntryNotExecutable {
        /// The entry's jail path.
        entry: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// The plan binds more host paths than a jail can take.
    #[error("the jail would bind {count} host paths; at most {max} are supported")]
    TooManyMountSources {
        /// How many the plan has.
        count: usize,
        /// The limit ([`crate::MAX_MOUNT_SOURCES`]).
        max: usize,
    },
    /// The loader went away without saying why.
    #[error("the loader exited before starting the app ({0})")]
    LoaderVanished(String),
    /// A process could not be added to a running jail (`elastos oci exec`).
    #[error("cannot enter the running jail: {what}")]
    Join {
        /// The step that failed.
        what: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Waiting for the app failed.
    #[error("waiting for the app failed")]
    Wait(#[source] nix::Error),
}

fn errno_text(errno: Option<i32>) -> String {
    errno
        .map(|e| format!(": {}", io::Error::from_raw_os_error(e)))
        .unwrap_or_default()
}

impl LaunchError {
    /// The podman-style exit code for this failure: 127 entry not found, 126 entry not
    /// executable, 125 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::EntryNotFound { .. } => 127,
            LaunchError::EntryNotExecutable { .. } => 126,
            _ => 125,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// Every variant formats, and none repeats its source (the caller prints the chain).
    #[test]
    fn every_variant_formats_without_repeating_its_source() {
        let io = || io::Error::from_raw_os_error(libc::ENOENT);
        let errors = [
            LaunchError::Loader {
                path: "/x/elastos-loader".into(),
                source: io(),
            },
            LaunchError::MountSource {
                path: "/usr".into(),
                source: io(),
            },
            LaunchError::Home {
                path: "/h".into(),
                source: io(),
            },
            LaunchError::Fds(io()),
            LaunchError::HandOff(io()),
            LaunchError::Stdio {
                what: "opening a pseudo-terminal",
                source: io(),
            },
            LaunchError::Signals(nix::Error::EINVAL),
            LaunchError::Namespaces { source: io() },
            LaunchError::IdMap {
                file: "/proc/1/uid_map".into(),
                source: io(),
            },
            LaunchError::IdMapHelper {
                tool: "/usr/bin/newuidmap".into(),
                message:
                    "exit status: 1: newuidmap: uid range [0-1) -> [100000-100001) not allowed"
                        .into(),
            },
            LaunchError::Cgroup(CgroupError::Io {
                path: "/sys/fs/cgroup/x".into(),
                source: io(),
            }),
            LaunchError::Child {
                step: ChildStep::SetIds,
                source: io(),
            },
            LaunchError::EntryNotFound {
                entry: "/app/x".into(),
                source: io(),
            },
            LaunchError::EntryNotExecutable {
                entry: "/app/x".into(),
                source: io(),
            },
            LaunchError::TooManyMountSources { count: 41, max: 40 },
            LaunchError::LoaderVanished("no report".into()),
            LaunchError::Join {
                what: "setns into the jail's namespaces".into(),
                source: io(),
            },
            LaunchError::Wait(nix::Error::ECHILD),
            LaunchError::Holder(HolderError::Start {
                loader: "/x/elastos-loader".into(),
                source: io(),
            }),
        ];
        for error in &errors {
            let text = error.to_string();
            assert!(!text.is_empty());
            if let Some(source) = error.source() {
                assert!(
                    !text.contains(&source.to_string()),
                    "{text:?} repeats its source {source}"
                );
            }
        }
        let jail = LaunchError::Jail {
            step: "landlock".into(),
            message: "landlock_restrict_self".into(),
            errno: Some(libc::EPERM),
        };
        assert_eq!(
            jail.to_string(),
            "building the jail failed at step landlock: landlock_restrict_self: Operation not \
             permitted (os error 1)"
        );
        assert_eq!(jail.exit_code(), 125);
        assert_eq!(errors[12].exit_code(), 127);
        assert_eq!(errors[13].exit_code(), 126);
    }
}
