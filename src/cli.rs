//! Command-line arguments (clap). No logic here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run untrusted Linux apps in a seccomp-bpf + Landlock jail.
#[derive(Debug, Parser)]
#[command(
    name = "elastos",
    version,
    propagate_version = true,
    max_term_width = 100
)]
#[command(
    after_help = "Exit codes: the app's own code from `run` (128+N if it died of signal N); \
125 elastos failed; 126 the entry cannot be executed; 127 the entry was not found; \
`bundle verify`: 1 when the bundle is invalid; `ledger verify`: 1 when the ledger is not sound.\n\nState lives under $ELASTOS_HOME, else the XDG \
directories. Logs: --log-level or ELASTOS_LOG (e.g. debug), --log-format text|json."
)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace) or a tracing filter; overrides ELASTOS_LOG.
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format on stderr: `text` (colours on a terminal only; syslog priorities and no
    /// timestamps when stderr is journald's) or `json` (one object per line).
    #[arg(long, global = true, value_name = "FORMAT", default_value = "text")]
    pub log_format: elastos_host::logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Verify a bundle and run its app in a jail.
    Run(RunArgs),
    /// Pack, inspect and verify signed app bundles.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Manage the publisher key that signs bundles.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show the jail a bundle would run in.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Run the broker daemon (control socket under $XDG_RUNTIME_DIR/elastos, /run/elastos as
    /// root, $ELASTOS_HOME/run when set). Without it, `elastos run` embeds a broker.
    Broker(BrokerArgs),
    /// Install a bundle so the broker starts it when one of its services is looked up.
    Install {
        /// The bundle.
        bundle: PathBuf,
        /// Install a version older than the highest one seen of this app.
        #[arg(long)]
        allow_downgrade: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Uninstall an app (by app id).
    Uninstall {
        /// The app's UUID.
        app_id: uuid::Uuid,
        #[command(flatten)]
        format: FormatArg,
    },
    /// The OCI runtime (runc's command line) for podman, containerd and Kubernetes: `elastos oci
    /// create|start|state|kill|delete|features`; also installed as `elastos-runc`. See `elastos
    /// oci --help`.
    #[command(disable_help_flag = true)]
    Oci {
        /// The runtime's own arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// List installed apps.
    List {
        #[command(flatten)]
        format: FormatArg,
    },
    /// List the apps the broker daemon runs: detached ones (`run -d`) with their state,
    /// restarts, memory and uptime, and the other apps connected to it.
    Ps {
        /// Show exited detached apps too (kept until `elastos rm`, also across daemon restarts).
        #[arg(short, long)]
        all: bool,
        /// Only the apps that match KEY=VALUE: status=running|restarting|exited, name=NAME,
        /// id=ID-PREFIX, app=APP-ID. Repeated: a key given twice matches either value,
        /// different keys must all match (podman's rule). A status filter lists exited apps
        /// without --all.
        #[arg(short, long = "filter", value_name = "KEY=VALUE")]
        filter: Vec<crate::apps_cmd::PsFilter>,
        /// Print only the ids.
        #[arg(short, long)]
        quiet: bool,
        /// Show whole instance ids (12 digits otherwise).
        #[arg(long)]
        no_trunc: bool,
        /// `table` (default), `json`, or a Go template applied to each row, e.g. '{{.ID}}
        /// {{.Status}}' or 'table {{.ID}}\t{{.Name}}\t{{.ExitCode}}' (fields: those of the
        /// JSON rows, as .ID or .id; see docs/operations.md).
        #[arg(long, value_name = "FORMAT", default_value = "table")]
        format: crate::template::OutputFormat,
    },
    /// Stop running apps: SIGTERM, then SIGKILL after the timeout, all at once. A detached app
    /// is not restarted by its policy after a stop.
    Stop {
        /// Instance ids (or unique prefixes), app ids or app names; or connection ids (`elastos
        /// ps`).
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(short = 't', long = "time", value_name = "SECONDS", default_value_t = elastos_host::detached::DEFAULT_STOP_TIMEOUT_SECS)]
        timeout: u64,
    },
    #[command(flatten)]
    Detached(DetachedCommand),
    /// List services: registered providers and installed ones that can be activated.
    Services {
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show your user ID (the key that signs your ownership ledger and encrypts your cloud
    /// disk; made on first use), or move it to another machine (export, import).
    #[command(args_conflicts_with_subcommands = true)]
    Id {
        #[command(subcommand)]
        command: Option<IdCommand>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show, verify, export and import the ledger of who owns which app id and service.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Manage the publishers you trust.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Change settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print the broker daemon's metrics in Prometheus' text exposition format (apps running,
    /// calls, call latency, denials, activations, restarts).
    Metrics {
        /// Output format (`json`: one object per sample, `name`, `labels` and `value`).
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show the kernel features the jail is built from (Landlock ABI, seccomp, user namespaces,
    /// cgroups) and what `elastos run` would enforce here and what it would have to skip.
    Info {
        #[command(flatten)]
        format: FormatArg,
    },
    /// Your end-to-end encrypted cloud disk, of which every app's home is a cache: where it
    /// is, what it holds, earlier versions of files.
    #[command(subcommand)]
    Cloud(CloudCommand),
    /// Sync apps' homes with your cloud disk now, or show how far each is.
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Run a command as root of a user namespace in which your subordinate ids are mapped, as
    /// `podman unshare` does. Launched by you, each app runs as one of your subordinate ids
    /// (/etc/subuid, /etc/subgid), which own its home: this is how you read, copy or delete an
    /// app's files (`elastos unshare rm -r HOME`). There, you are uid 0 and host id FIRST+N is
    /// N+1. The namespace is the one your apps' jails are nested in, kept by a small holder
    /// process (`elastos info` shows it; it ends after 10 minutes without a launch).
    #[command(
        after_help = "Exit code: the command's (128+N if it died of signal N); 125 when \
elastos failed."
    )]
    Unshare {
        /// Stop the holder of your user namespace instead (running apps keep their jails; the
        /// next launch starts another).
        #[arg(long, conflicts_with = "command")]
        stop: bool,
        /// The command and its arguments (default: $SHELL, else /bin/sh).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<std::ffi::OsString>,
    },
}

/// The commands on detached apps (`elastos run -d`), podman style.
#[derive(Debug, Subcommand)]
pub enum DetachedCommand {
    /// Print a detached app's output (stdout to stdout, stderr to stderr), kept by the daemon
    /// with a size cap (see `elastos broker --log-max-size`).
    Logs {
        /// Instance id (or a unique prefix), app id or app name.
        id: String,
        /// Go on printing what the app writes, until it has exited for good (Ctrl-C to stop).
        #[arg(short, long)]
        follow: bool,
        /// Print only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<usize>,
        /// Prefix each line with the time the daemon read it (RFC 3339).
        #[arg(short, long)]
        timestamps: bool,
        /// Only lines read at or after TIME: RFC 3339 (2026-12-07T15:00:00Z) or a duration
        /// before now (10m, 1h30m, 45s).
        #[arg(long, value_name = "TIME", value_parser = crate::apps_cmd::parse_log_time)]
        since: Option<std::time::SystemTime>,
        /// Only lines read before TIME (as --since); with --follow, stop following then.
        #[arg(long, value_name = "TIME", value_parser = crate::apps_cmd::parse_log_time)]
        until: Option<std::time::SystemTime>,
    },
    /// Send a signal to detached apps (their restart policy then decides as after any end).
    Kill {
        /// Instance ids (or unique prefixes), app ids or app names.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// KILL, TERM, INT, HUP, QUIT, USR1 or USR2 (the signals the jail's init relays), by
        /// name or number.
        #[arg(short, long, default_value = "KILL", value_parser = parse_signal)]
        signal: i32,
    },
    /// Stop detached apps (SIGTERM, SIGKILL after the timeout) and start them again.
    Restart {
        /// Instance ids (or unique prefixes), app ids or app names.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Seconds to wait after SIGTERM before SIGKILL.
        #[arg(short = 't', long = "time", value_name = "SECONDS", default_value_t = elastos_host::detached::DEFAULT_STOP_TIMEOUT_SECS)]
        timeout: u64,
    },
    /// Remove exited detached apps with their records and logs.
    Rm {
        /// Instance ids (or unique prefixes), app ids or app names.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Kill running ones first (SIGKILL).
        #[arg(short, long)]
        force: bool,
    },
    /// Remove every exited detached app with its record and logs; prints their ids.
    Prune {
        /// Accepted for podman's command line: prune never asks.
        #[arg(short, long)]
        force: bool,
    },
    /// Everything about detached apps: manifest, the jail in force (as `elastos policy show`
    /// renders it), limits, cgroup, pid, uptime, restarts, runs and policy.
    Inspect {
        /// Instance ids (or unique prefixes), app ids or app names.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// `json` (default: an array, one object per app, as podman's), `table` (as `ps`), or a
        /// Go template applied to each app, e.g. '{{.State}}' or '{{.Limits.MemoryBytes}}'.
        #[arg(short, long, value_name = "FORMAT", default_value = "json")]
        format: crate::template::OutputFormat,
    },
}

fn parse_signal(text: &str) -> Result<i32, String> {
    elastos_host::detached::parse_signal(text)
}

#[derive(Debug, Subcommand)]
pub enum CloudCommand {
    /// Choose the store of your cloud disk.
    ///
    /// DIR or file://DIR (a local directory, e.g. a mounted drive), s3://BUCKET/PREFIX (S3-compatible; credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY, else --credentials FILE, else AWS_SHARED_CREDENTIALS_FILE), or
    /// webdav+http(s)://HOST/PATH. Without it, a directory under the state dir stands in.
    Set {
        /// The store.
        url: String,
        /// S3 only: the endpoint of an S3-compatible server (default: AWS).
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// S3 only: a file of credentials (mode 0600; `aws_access_key_id=...`,
        /// `aws_secret_access_key=...`, `region=...` lines), used when AWS_ACCESS_KEY_ID is not
        /// set.
        #[arg(long, value_name = "FILE")]
        credentials: Option<PathBuf>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show the store, and per app: pending changes, last sync, conflicts, bytes.
    Status {
        #[command(flatten)]
        format: FormatArg,
    },
    /// List the versions of a file the cloud disk keeps, newest first (deletions included, for
    /// the retention period).
    Versions {
        /// The app: its id, or its name when no other app has it.
        app: String,
        /// The file, relative to the app's home.
        path: String,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Bring back an app's home, or one PATH of it, as it was at a time.
    ///
    /// The default time is now: the newest version, deleted files included. The home is synced
    /// first, so a local version that is replaced stays among the versions; files created after
    /// the time are kept.
    Restore {
        /// The app: its id, or its name when no other app has it.
        app: String,
        /// A file or directory, relative to the app's home (default: all of it).
        path: Option<String>,
        /// The time, RFC 3339 (e.g. 2026-12-02T15:00:00Z).
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Drop the local content of an app's files, keeping placeholders (files on demand).
    ///
    /// Each file keeps its name, size, mode, mtime and owner; its first read (read, mmap, exec,
    /// write) fetches the content back from your cloud disk, served by the broker daemon
    /// (fanotify pre-content events: root, Linux 6.14+). Only files whose content is the synced
    /// version are evicted: if one has changes not yet on the cloud disk, nothing is evicted
    /// and the command names it. Pinned files are skipped.
    Evict {
        /// The app: its id, or its name when no other app has it.
        app: String,
        /// Files or directories, relative to the app's home (default: all of it).
        paths: Vec<PathBuf>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Pin files or directories of an app's home: never evicted, and fetched back now if they
    /// are.
    Pin {
        /// The app: its id, or its name when no other app has it.
        app: String,
        /// Files or directories, relative to the app's home.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Unpin files or directories pinned with `elastos cloud pin` (as given there).
    Unpin {
        /// The app: its id, or its name when no other app has it.
        app: String,
        /// Pinned paths, relative to the app's home.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Delete old snapshots (beyond the retention period) and the chunks no snapshot needs, in
    /// the whole store. Unreferenced chunks are deleted by a later run, at least the grace
    /// period after one found them (the broker daemon runs this once a day).
    Gc {
        /// Keep every version younger than this (`30d`, `12h`, `90m`, `10s`).
        #[arg(long, value_name = "DURATION", default_value = "30d")]
        retention: String,
        /// Delete an unreferenced chunk only this long after a run found it, and only if it was
        /// not written within this long; longer than any one sync takes.
        #[arg(long, value_name = "DURATION", default_value = "1d")]
        grace: String,
        #[command(flatten)]
        format: FormatArg,
    },
}

/// A positive number of seconds (`2.5`), for `--store-timeout`.
fn parse_seconds(text: &str) -> Result<std::time::Duration, String> {
    text.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .map(std::time::Duration::from_secs_f64)
        .ok_or_else(|| format!("{text:?} is not a number of seconds; expected e.g. 2.5 (more than 0, at most 86400)"))
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Sync now, both ways: one app, or every app whose home syncs.
    Now {
        /// The app: its id, or its name when no other app has it (default: all).
        app: Option<String>,
        /// Go on with a sync that would delete more than half of an app's files (it stops
        /// without this and says so).
        #[arg(long, alias = "confirm-delete")]
        confirm_mass_delete: bool,
        /// Give up on a network store that has not answered within SECONDS: the sync stops,
        /// commits nothing, and local changes stay pending for the next one. Default: as long
        /// as the store's own timeouts and retries take (minutes for a store that never answers).
        #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
        store_timeout: Option<std::time::Duration>,
        /// With --store-timeout: bound only the wait for the store's first answer; once it has
        /// answered, a long upload goes on.
        #[arg(long, requires = "store_timeout")]
        first_answer: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Per app: pending changes up and down, last sync, conflicts, bytes.
    Status {
        #[command(flatten)]
        format: FormatArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdCommand {
    /// Write your user key to FILE sealed with a passphrase (Argon2id, then
    /// XChaCha20-Poly1305), to import it on your other machines.
    Export {
        /// The file to write (refused if it exists).
        file: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArg,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Make the user key sealed in FILE (by `elastos id export`) this machine's user key. A
    /// wrong passphrase changes nothing.
    Import {
        /// The export.
        file: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArg,
        /// Replace a different user key already here. The old key is kept beside it as
        /// `user.key.replaced-<unix time>`; the ledger is re-signed by the new key (its records
        /// are kept, the old ledger is kept as `ledger.replaced-<unix time>`).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        format: FormatArg,
    },
}

/// Where the passphrase of `id export|import` comes from: the file, else `ELASTOS_PASSPHRASE`,
/// else a prompt on the terminal (without echo).
#[derive(Debug, Args)]
pub struct PassphraseArg {
    /// Read the passphrase from the first line of FILE instead of prompting.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// List the records of the ledger.
    Show {
        #[command(flatten)]
        format: FormatArg,
    },
    /// Fully verify the ledger: every signature, every record against the earlier ones, and
    /// every tree head ever issued (exit 0 sound, 1 with a report of what is wrong).
    Verify {
        #[command(flatten)]
        format: FormatArg,
    },
    /// Write the whole ledger (records and tree heads) to FILE.
    Export {
        /// The file to write.
        file: PathBuf,
    },
    /// Merge an export of another machine's (or this one's) ledger; refuses a forked or
    /// conflicting log, naming both records.
    Import {
        /// The export.
        file: PathBuf,
        #[command(flatten)]
        format: FormatArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Trust a publisher (and the keys it rotates to).
    Add {
        /// The publisher ID (64 hex digits).
        publisher: elastos_identity::PublisherId,
        /// A name to know it by (default: the first 16 hex digits of its ID).
        #[arg(long)]
        name: Option<String>,
    },
    /// Stop trusting a publisher.
    Remove {
        /// The publisher ID (64 hex digits).
        publisher: elastos_identity::PublisherId,
    },
    /// List trusted publishers and the policy.
    List {
        #[command(flatten)]
        format: FormatArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Set a setting.
    Set {
        /// The setting.
        key: ConfigKey,
        /// Its value (policy.publishers: `any` or `trusted-only`).
        value: String,
    },
}

/// The settings `elastos config set` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigKey {
    /// Which publishers' bundles may run and be installed: `any` (the default; the first run of
    /// an unknown publisher prints a notice) or `trusted-only` (those on `elastos trust list`).
    #[value(name = "policy.publishers")]
    PolicyPublishers,
}

#[derive(Debug, Args)]
pub struct BrokerArgs {
    /// Stop providers started on demand after this many seconds without calls or subscribers
    /// (0: never).
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub idle_stop: u64,
    /// Also serve the metrics over HTTP (`GET /metrics`) at this address, e.g. 127.0.0.1:9464.
    /// Loopback addresses only, unless --metrics-allow-non-loopback.
    #[arg(long, value_name = "ADDRESS:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Allow --metrics-addr to be a non-loopback address: the endpoint has no authentication,
    /// and what the broker is doing is then visible beyond this machine.
    #[arg(long, requires = "metrics_addr")]
    pub metrics_allow_non_loopback: bool,
    /// Rotate a detached app's log file at this size (bytes, or with a K, M or G suffix; at
    /// least 64K). With --log-max-files, an app's logs take at most SIZE x N.
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_size)]
    pub log_max_size: u64,
    /// Log files kept per detached app, the current one included.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub log_max_files: u32,
    /// Jails kept built ahead of time for detached runs and for activations (this many of each;
    /// 0: none): their first process already in its namespaces, so a start does only what
    /// depends on the app. Each parked one costs its process's memory (`elastos metrics`).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub warm_jails: usize,
}

/// A size in bytes: a number, or one with a K, M or G suffix (powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let upper = text.trim().to_ascii_uppercase();
    let (number, unit) = match upper.trim_end_matches('B').strip_suffix(['K', 'M', 'G']) {
        Some(number) => (number, upper.trim_end_matches('B').chars().last()),
        None => (upper.as_str(), None),
    };
    let shift = match unit {
        Some('K') => 10,
        Some('M') => 20,
        Some('G') => 30,
        _ => 0,
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("{text:?} is not a size (expected bytes, or e.g. 512K, 4M)"))
}

/// Output format for machine-readable commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

#[derive(Debug, Args)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The bundle to run.
    pub bundle: PathBuf,
    /// Arguments passed to the app's entry (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
    /// Never put the app in a cgroup; enforce memory and threads with rlimits only.
    #[arg(long)]
    pub no_cgroup: bool,
    /// Run a version older than the highest one seen of this app.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// DANGEROUS: run even if the kernel has no Landlock or no seccomp filter support, i.e.
    /// without two of the jail's walls. Never needed on a supported kernel.
    #[arg(long)]
    pub dangerously_run_without_kernel_sandbox: bool,
    /// Run it detached, supervised by the broker daemon (`elastos broker`), and print its
    /// instance id. Its output goes to its log (`elastos logs`).
    #[arg(short, long, conflicts_with_all = ["no_cgroup", "allow_downgrade", "dangerously_run_without_kernel_sandbox"])]
    pub detach: bool,
    /// With --detach: start it again after it ends: `no` (default), `on-failure[:N]` (a
    /// non-zero exit or a signal; at most N restarts), `always` or `unless-stopped`. Restarts
    /// back off exponentially, from 250 ms up to 30 s. When the daemon restarts, `always`
    /// apps start again, `unless-stopped` ones unless stopped by `elastos stop`, `on-failure`
    /// ones if the daemon's end ended them (docker's rules).
    #[arg(long, value_name = "POLICY", requires = "detach", default_value = "no")]
    pub restart: elastos_host::detached::RestartPolicy,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// The manifest's limits, overridden for this run (higher or lower), within the host's
/// ceilings (/etc/elastos/limits.toml; an override above one is refused, naming it).
#[derive(Debug, Clone, Copy, Args)]
pub struct LimitArgs {
    /// Memory of the whole app, as `limits.memory` (e.g. 256MiB, 1GiB; at least 16MiB).
    #[arg(long, value_name = "BYTES", value_parser = elastos_policy::LimitOverrides::parse_memory)]
    pub memory: Option<u64>,
    /// CPU time of the whole app per unit of time, as `limits.cpus` (e.g. 0.5, 2).
    #[arg(long, value_name = "CPUS", value_parser = elastos_policy::LimitOverrides::parse_cpus)]
    pub cpus: Option<u64>,
    /// Tasks (processes and threads) of the app, as `limits.threads`.
    #[arg(long, value_name = "N", value_parser = elastos_policy::LimitOverrides::parse_pids)]
    pub pids: Option<u64>,
}

impl LimitArgs {
    /// The overrides these flags ask for.
    pub fn overrides(&self) -> elastos_policy::LimitOverrides {
        elastos_policy::LimitOverrides {
            memory_bytes: self.memory,
            cpu_millis: self.cpus,
            threads: self.pids,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Pack DIR (manifest.toml + the app's files) into a signed bundle.
    Pack {
        /// Directory holding manifest.toml and the app's files.
        dir: PathBuf,
        /// The bundle file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Publisher key to sign with (default: the state dir's; created on first use).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show a bundle's manifest, publisher, digest and signature status.
    Inspect {
        /// The bundle.
        bundle: PathBuf,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Check a bundle's digest and signature (exit 0 valid, 1 invalid).
    Verify {
        /// The bundle.
        bundle: PathBuf,
        #[command(flatten)]
        format: FormatArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a new publisher key.
    Generate {
        /// Where to write it (default: the state dir's publisher key).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace an existing key (bundles signed by it will show another publisher).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Show the publisher ID of a key.
    Show {
        /// The key file (default: the state dir's publisher key).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Replace the publisher key with a new one that owns everything the old one owned: appends
    /// a rotation record signed by the old key and counter-signed by the new one to the ledger
    /// and keeps the old key as `FILE.old-<unix time>`.
    Rotate {
        /// The key file (default: the state dir's publisher key).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Revoke a publisher key: appends a revocation record, signed by the key (or by a key it
    /// rotated to), to the ledger; its bundles are refused from then on.
    Revoke {
        /// The signing key file (default: the state dir's publisher key).
        #[arg(long, value_name = "FILE")]
        key: Option<PathBuf>,
        /// The publisher ID to revoke (default: the signing key's own).
        publisher: Option<elastos_identity::PublisherId>,
        /// Refuse signatures made at or after this time (unix seconds; default 0: all of them,
        /// as bundles carry no signing time yet).
        #[arg(long, value_name = "TIME", default_value_t = 0)]
        from: u64,
        #[command(flatten)]
        format: FormatArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the effective jail policy of a bundle: syscalls with reasons, paths and rights,
    /// limits, environment.
    Show {
        /// The bundle.
        bundle: PathBuf,
        /// Arguments the app would get.
        #[arg(last = true)]
        args: Vec<String>,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        format: FormatArg,
    },
}
