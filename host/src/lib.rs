//! elastos-host: the privileged host side of elastos. It owns what a user's rights are needed
//! for, and nothing that parses an app's bytes (the broker core, `elastos-broker`, does that):
//!
//! - [`apps`]: verifying, unpacking and planning bundles, and [`apps::start_app`], the one
//!   function every start of an app goes through (`elastos run`, on-demand activation, the
//!   daemon's detached runs);
//! - [`activator`]: the broker's [`elastos_broker::Activator`] that starts installed providers in
//!   jails and supervises them, and the same supervision for the daemon's detached runs;
//! - [`detached`]: detached runs (`elastos run -d`): the requests and views, restart policies;
//! - [`applog`]: the detached apps' logs, capped and rotated;
//! - [`link`]: where an app's connection goes: the daemon, or a broker embedded in `elastos run`;
//! - [`control`]: the daemon's control socket (`SO_PEERCRED`, `SCM_RIGHTS` attach), whose peers
//!   are the user's own processes;
//! - [`cloud`]: the cloud disk's store, key and app homes, for the commands and the daemon;
//! - [`ownership`]: the ID ledger's decision before every start and install: who owns an app
//!   id, its home and its services;
//! - [`paths`]: where state lives and where the companion binaries are;
//! - [`kernel`]: the kernel features the jail needs, detected (`elastos info`);
//! - [`logging`]: the tracing setup of `elastos` and the daemon (text or JSON, journald-aware).
//!
//! The installed-app database (RocksDB) is not here: only the daemon binary
//! (`elastos-broker-daemon`) links it, because its static initializers would slow every
//! `elastos` start; this crate reaches it through [`activator::InstalledApps`].

#![deny(unsafe_code)]

pub mod activator;
pub mod applog;
pub mod apps;
pub mod cloud;
// The one exception: the control socket receives app sockets as file descriptors (SCM_RIGHTS),
// which takes `OwnedFd::from_raw_fd`. See the SAFETY comments there.
#[allow(unsafe_code)]
pub mod control;
pub mod detached;
pub mod installed_index;
pub mod kernel;
pub mod link;
pub mod logging;
pub mod ownership;
pub mod paths;
pub mod pool;

/// An error and its chain of causes on one line, `outer: cause: root cause`: for messages that
/// cross a process boundary as text (the control socket's answers, the helper's stderr). No
/// error message of elastos repeats its source, so nothing is said twice.
pub fn describe_error(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        text.push_str(": ");
        text.push_str(&source.to_string());
        cause = source.source();
    }
    text
}
