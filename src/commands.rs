//! One function per command. Each returns the process exit code or a [`Failure`].

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use elastos_bundle::{PublisherKey, UnpackLimits};
use elastos_host::activator::AppLauncher;
use elastos_host::apps::{self, AppError, StartPhase, StartRequest};
use elastos_host::control::{ControlClient, ControlRequest};
use elastos_host::link::BrokerLink;
use elastos_host::ownership::Admission;
use elastos_host::paths::{PathsError, StateDirs};
use elastos_identity::TrustList;
use elastos_loader::cgroup::{AppCgroup, CgroupFs};
use elastos_loader::{BlockedSignals, FirstEvent, LaunchError, SubordinateIds};
use serde::Serialize;

use crate::apps_cmd;
use crate::broker_cmd;
use crate::cloud_cmd;
use crate::identity_cmd;
use crate::ops_cmd;

use crate::cli::{
    BundleCommand, Cli, Command, Format, KeyCommand, LimitArgs, PolicyCommand, RunArgs,
};
use crate::exit;

/// A failed command: the error to print and the exit code.
pub struct Failure {
    pub error: anyhow::Error,
    pub code: u8,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        // Entry problems surface from the bundle (at unpack) or from the loader (at exec).
        let code = match (
            error.downcast_ref::<AppError>(),
            error.downcast_ref::<LaunchError>(),
        ) {
            (Some(app), _) => app.exit_code() as u8,
            (None, Some(launch)) => launch.exit_code() as u8,
            (None, None) => exit::ELASTOS_FAILED,
        };
        Failure { error, code }
    }
}

impl From<LaunchError> for Failure {
    fn from(error: LaunchError) -> Self {
        anyhow::Error::from(error).into()
    }
}

impl From<PathsError> for Failure {
    fn from(error: PathsError) -> Self {
        anyhow::Error::from(error).into()
    }
}

impl From<AppError> for Failure {
    fn from(error: AppError) -> Self {
        anyhow::Error::from(error).into()
    }
}

impl From<elastos_host::link::LinkError> for Failure {
    fn from(error: elastos_host::link::LinkError) -> Self {
        anyhow::Error::from(error).into()
    }
}

pub fn try_main(cli: Cli) -> Result<u8, Failure> {
    let state = || StateDirs::from_env().map_err(Failure::from);
    match cli.command {
        Command::Broker(args) => broker_cmd::daemon(args, cli.log_level.as_deref(), cli.log_format)
            .map_err(Failure::from),
        Command::Metrics { format } => ops_cmd::metrics(&state()?, format).map_err(Failure::from),
        Command::Info { format } => ops_cmd::info(format.format).map_err(Failure::from),
        // Reached only after options of ours (`elastos --log-level X oci ...`): as runc would.
        Command::Oci { args } => {
            let mut all = vec![std::ffi::OsString::from("elastos oci")];
            all.extend(args);
            Ok(
                if crate::oci_cmd::main(all) == std::process::ExitCode::SUCCESS {
                    0
                } else {
                    1
                },
            )
        }
        Command::Install {
            bundle,
            allow_downgrade,
            format,
        } => broker_cmd::store_command(
            ControlRequest::Install {
                bundle,
                allow_downgrade,
            },
            &state()?,
            format.format,
        )
        .map_err(Failure::from),
        Command::Uninstall { app_id, format } => broker_cmd::store_command(
            ControlRequest::Uninstall { app_id },
            &state()?,
            format.format,
        )
        .map_err(Failure::from),
        Command::List { format } => {
            broker_cmd::store_command(ControlRequest::List, &state()?, format.format)
                .map_err(Failure::from)
        }
        Command::Ps {
            all,
            filter,
            quiet,
            no_trunc,
            format,
        } => apps_cmd::ps(
            apps_cmd::PsOptions {
                all,
                filters: filter,
                quiet,
                no_trunc,
            },
            &format,
        )
        .map_err(Failure::from),
        Command::Services { format } => {
            broker_cmd::daemon_command(ControlRequest::Services, &state()?, format.format)
                .map_err(Failure::from)
        }
        Command::Stop { ids, timeout } => apps_cmd::stop(&ids, timeout).map_err(Failure::from),
        Command::Detached(command) => apps_cmd::detached(command).map_err(Failure::from),
        Command::Run(args) if args.detach => apps_cmd::run_detached(args).map_err(Failure::from),
        Command::Run(args) => run(args),
        Command::Id {
            command: None,
            format,
        } => identity_cmd::id(format.format).map_err(Failure::from),
        Command::Id {
            command: Some(command),
            ..
        } => identity_cmd::id_move(command).map_err(Failure::from),
        Command::Ledger(command) => identity_cmd::ledger(command).map_err(Failure::from),
        Command::Trust(command) => identity_cmd::trust(command).map_err(Failure::from),
        Command::Config(command) => identity_cmd::config(command).map_err(Failure::from),
        Command::Cloud(_) | Command::Sync(_)
            if let Some(code) = cloud_cmd::rerun_over_subordinate_homes(&state()?)? =>
        {
            Ok(code)
        }
        Command::Cloud(command) => cloud_cmd::cloud(command).map_err(Failure::from),
        Command::Sync(command) => cloud_cmd::sync(command).map_err(Failure::from),
        Command::Unshare { stop: true, .. } => {
            stop_user_namespace(&state()?).map_err(Failure::from)
        }
        Command::Unshare { command, .. } => unshare(&state()?, command).map_err(Failure::from),
        Command::Bundle(command) => bundle(command),
        Command::Key(command) => key(command).map_err(Failure::from),
        Command::Policy(PolicyCommand::Show {
            bundle,
            args,
            limits,
            format,
        }) => policy_show(&bundle, args, limits, format.format).map_err(Failure::from),
    }
}

pub fn print_json(value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("encoding JSON output")?;
    println!("{text}");
    Ok(())
}

/// A spinner on a terminal while a large bundle is verified and unpacked.
struct VerifySpinner<'a> {
    bundle: &'a Path,
    bar: Option<indicatif::ProgressBar>,
}

impl VerifySpinner<'_> {
    fn observe(&mut self, phase: StartPhase) {
        match phase {
            StartPhase::Verifying => {
                let large = std::fs::metadata(self.bundle).is_ok_and(|m| m.len() > 4 << 20);
                if large && std::io::stderr().is_terminal() {
                    let bar = indicatif::ProgressBar::new_spinner()
                        .with_message(format!("verifying and unpacking {}", self.bundle.display()));
                    bar.enable_steady_tick(std::time::Duration::from_millis(100));
                    self.bar = Some(bar);
                }
            }
            StartPhase::Verified => {
                if let Some(bar) = self.bar.take() {
                    bar.finish_and_clear();
                }
            }
            StartPhase::Ready(_) | StartPhase::HomeReady(_) | StartPhase::EntryNext => {}
        }
    }
}

/// How long the providers an embedded broker started get to end after SIGTERM, when their
/// `elastos run` ends, before SIGKILL.
const PROVIDER_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn run(args: RunArgs) -> Result<u8, Failure> {
    // Before any other thread exists (the embedded broker's), so that only `wait` below ever
    // receives these signals.
    let _signals = BlockedSignals::block()?;
    let state = StateDirs::from_env()?;
    let options = apps::launch_options(
        &state.runtime,
        args.dangerously_run_without_kernel_sandbox,
        args.no_cgroup,
    )?;
    if options.allow_without_kernel_sandbox {
        tracing::warn!(
            "--dangerously-run-without-kernel-sandbox: the app may run without Landlock or seccomp"
        );
    }
    let store = Arc::new(broker_cmd::broker_binary()?);
    let host = apps::host_env();
    let request = StartRequest {
        bundle: &args.bundle,
        args: &args.args,
        dirs: &state.apps,
        host: &host,
        options: &options,
        allow_downgrade: args.allow_downgrade,
        overrides: args.limits.overrides(),
    };
    let mut spinner = VerifySpinner {
        bundle: &args.bundle,
        bar: None,
    };
    // Whether a broker daemon runs, asked once the app is admitted; it syncs the app's home when
    // it does, this process otherwise.
    let mut daemon = None;
    let mut control = None;
    let mut home_sync = None;
    // Before any other thread exists (the embedded broker's starts only once the app speaks),
    // so the jail is cloned from a single-threaded process.
    let started = apps::start_app(&request, &mut |phase| {
        spinner.observe(phase);
        match phase {
            StartPhase::Ready(_) => {
                let link = BrokerLink::daemon(&state);
                control = link
                    .as_ref()
                    .and_then(BrokerLink::daemon_client)
                    .map(ControlClient::same_daemon);
                daemon = Some(link);
            }
            // The home syncs while the loader builds the jail; the entry waits for it.
            StartPhase::HomeReady(prepared) => {
                home_sync = cloud_cmd::RunSync::before_run(&state, prepared, control.take());
            }
            StartPhase::EntryNext => {
                if let Some(home_sync) = &mut home_sync {
                    home_sync.wait_before_entry();
                }
            }
            StartPhase::Verifying | StartPhase::Verified => {}
        }
    })?;
    let (jail, identity, broker_end) = (started.jail, started.identity, started.broker_end);
    let facts = jail.facts();
    tracing::info!(
        pid = facts.pid,
        host_uid = facts.identity.uid,
        landlock_abi = facts.landlock_abi,
        landlock_fully_enforced = facts.landlock_fully_enforced,
        limits = ?facts.limits,
        "app started"
    );
    let pid = facts.pid as u32;
    // The command line is done with: the launcher waits with as little memory as it can.
    drop(args);
    elastos_loader::release_free_heap();
    let exit = match daemon.flatten() {
        // The daemon lists the app from its start (`elastos ps`).
        // The attach is answered while the app runs: an app that ends first (a short command)
        // does not wait for the daemon's answer; a refusal seen before that ends the run.
        Some(daemon) => match daemon.attach(broker_end, identity, &jail.handle(), pid)? {
            Some(answer) => match jail.wait_until_readable(answer.as_fd())? {
                FirstEvent::Ended(exit) => exit,
                FirstEvent::Readable(jail) => {
                    answer
                        .wait()
                        .map_err(elastos_host::link::LinkError::Attach)?;
                    jail.wait()?
                }
            },
            None => jail.wait()?,
        },
        // No daemon: a broker embedded in this process, started only once the app speaks. An app
        // that never uses its fd 3 never pays for the broker's thread and runtime.
        None => match jail.wait_until_readable(broker_end.as_fd())? {
            FirstEvent::Ended(exit) => exit,
            FirstEvent::Readable(jail) => {
                let launcher = AppLauncher::new(state.apps.clone(), store, options.clone(), host);
                BrokerLink::embedded(launcher.clone())?.attach(
                    broker_end,
                    identity,
                    &jail.handle(),
                    pid,
                )?;
                let exit = jail.wait();
                // Providers this process started end with it: stop them while their
                // supervisors can still clean up after them.
                launcher.stop_all(PROVIDER_STOP_GRACE);
                exit?
            }
        },
    };
    tracing::debug!(?exit, "app ended");
    if let Some(home_sync) = home_sync {
        home_sync.after_run();
    }
    Ok(u8::try_from(exit.code()).unwrap_or(exit::ELASTOS_FAILED))
}

/// The host uid and gid an app would run as, and why those (`policy show`).
#[derive(Serialize)]
struct HostIds {
    uid: u32,
    gid: u32,
    /// `per-app` (launched by root), `subordinate` or `launcher` (the user's own ids).
    kind: &'static str,
    /// Why the launcher's own ids, when they are.
    #[serde(skip_serializing_if = "Option::is_none")]
    fallback_reason: Option<String>,
}

impl HostIds {
    fn of(app_id: &uuid::Uuid, home: &Path) -> HostIds {
        let subordinate = elastos_loader::SubordinateIds::of_current_user();
        let identity = elastos_loader::HostIdentity::for_app_home(
            app_id,
            Some(home),
            subordinate.as_ref().ok(),
        );
        let (kind, fallback_reason) = match (identity.launched_by_root, identity.subordinate) {
            (true, _) => ("per-app", None),
            (false, true) => ("subordinate", None),
            (false, false) => ("launcher", subordinate.err().map(|why| why.to_string())),
        };
        HostIds {
            uid: identity.uid,
            gid: identity.gid,
            kind,
            fallback_reason,
        }
    }

    fn describe(&self) -> String {
        let ids = format!("uid {}, gid {}", self.uid, self.gid);
        match (self.kind, &self.fallback_reason) {
            ("per-app", _) => format!("{ids}: the app's own, never root's"),
            ("subordinate", _) => format!(
                "{ids}: subordinate ids of yours, the app's own: its pipe pages, processes, \
                 pending signals and mqueue bytes count against it, not you (its files: \
                 `elastos unshare`)"
            ),
            (_, reason) => format!(
                "{ids}: yours ({}): the app's pipe pages, processes, pending signals and mqueue \
                 bytes count against you (docs/security.md)",
                reason.as_deref().unwrap_or("no subordinate ids")
            ),
        }
    }
}

/// This user's namespace, where it is root over its subordinate ids (see
/// `elastos_loader::holder`): its holder's, made if none runs.
/// `runtime_dir` is [`StateDirs::runtime`].
pub fn user_namespace(
    runtime_dir: &Path,
    ids: &SubordinateIds,
) -> Result<elastos_loader::holder::UserNamespace> {
    let loader = apps::launch_options(runtime_dir, false, false)?.loader;
    Ok(elastos_loader::holder::UserNamespace::of_current_user(
        runtime_dir,
        ids,
        &loader,
    )?)
}

/// This user's subordinate ids, for `elastos unshare`.
fn unshare_ids() -> Result<SubordinateIds> {
    if nix::unistd::getuid().is_root() {
        anyhow::bail!(
            "elastos unshare is for users: launched by root, apps run as uids of their own whose \
             files root reaches directly"
        );
    }
    SubordinateIds::of_current_user()
        .context("elastos unshare maps your subordinate ids, and you have none here")
}

/// `elastos unshare --stop`.
fn stop_user_namespace(state: &StateDirs) -> Result<u8> {
    match elastos_loader::holder::stop(&state.runtime, &unshare_ids()?)? {
        Some(pid) => eprintln!("elastos: stopped the holder of your user namespace (pid {pid})"),
        None => eprintln!("elastos: no holder of your user namespace runs"),
    }
    Ok(0)
}

/// `elastos unshare [COMMAND...]`.
fn unshare(state: &StateDirs, command: Vec<std::ffi::OsString>) -> Result<u8> {
    use std::os::unix::process::ExitStatusExt;
    let ids = unshare_ids()?;
    let mut words = command.into_iter();
    let program = words
        .next()
        .or_else(|| std::env::var_os("SHELL"))
        .unwrap_or_else(|| "/bin/sh".into());
    let mut command = std::process::Command::new(&program);
    command.args(words);
    let status = user_namespace(&state.runtime, &ids)?
        .spawn(command)?
        .wait()
        .with_context(|| format!("waiting for {}", program.to_string_lossy()))?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(exit::ELASTOS_FAILED),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(exit::ELASTOS_FAILED),
        (None, None) => exit::ELASTOS_FAILED,
    })
}

fn bundle(command: BundleCommand) -> Result<u8, Failure> {
    match command {
        BundleCommand::Pack {
            dir,
            output,
            key,
            format,
        } => {
            let state = StateDirs::from_env()?;
            let key = load_or_create_key(key, &state)?;
            let packed = elastos_bundle::pack_to(&dir, &output, &key, &UnpackLimits::default())
                .with_context(|| format!("cannot pack {}", dir.display()))?;
            #[derive(Serialize)]
            struct Packed {
                bundle: PathBuf,
                digest: String,
                publisher: String,
                size: u64,
            }
            let report = Packed {
                bundle: output,
                digest: packed.digest.to_string(),
                publisher: packed.publisher.to_string(),
                size: packed.size,
            };
            match format.format {
                Format::Json => print_json(&report)?,
                Format::Text => println!(
                    "packed {} ({} bytes)\ndigest:    {}\npublisher: {}",
                    report.bundle.display(),
                    report.size,
                    report.digest,
                    report.publisher
                ),
            }
            Ok(0)
        }
        BundleCommand::Inspect { bundle, format } => {
            let bytes = elastos_bundle::read_bundle_file(&bundle)
                .with_context(|| format!("cannot read {}", bundle.display()))?;
            let report = elastos_bundle::inspect(&bytes);
            let ownership = identity_cmd::inspect_ownership(&report)?;
            match format.format {
                Format::Json => {
                    #[derive(Serialize)]
                    struct Inspected<'a> {
                        #[serde(flatten)]
                        report: &'a elastos_bundle::InspectReport,
                        #[serde(skip_serializing_if = "Option::is_none")]
                        ownership: Option<identity_cmd::OwnershipStatus>,
                    }
                    print_json(&Inspected {
                        report: &report,
                        ownership,
                    })?
                }
                Format::Text => {
                    print_inspect_text(&report);
                    if let Some(ownership) = ownership {
                        println!("\nownership: {} ({})", ownership.status, ownership.detail);
                        if let Some(entry) = ownership.entry {
                            println!("ledger:    {entry}");
                        }
                    }
                }
            }
            Ok(0)
        }
        BundleCommand::Verify { bundle, format } => {
            let bytes = elastos_bundle::read_bundle_file(&bundle)
                .with_context(|| format!("cannot read {}", bundle.display()))?;
            let result = elastos_bundle::verify(bytes);
            #[derive(Serialize)]
            struct Verdict {
                bundle: PathBuf,
                valid: bool,
                #[serde(skip_serializing_if = "Option::is_none")]
                digest: Option<String>,
                #[serde(skip_serializing_if = "Option::is_none")]
                publisher: Option<String>,
                #[serde(skip_serializing_if = "Option::is_none")]
                error: Option<String>,
            }
            let verdict = match &result {
                Ok(v) => Verdict {
                    bundle: bundle.clone(),
                    valid: true,
                    digest: Some(v.digest().to_string()),
                    publisher: Some(v.publisher().to_string()),
                    error: None,
                },
                Err(e) => Verdict {
                    bundle: bundle.clone(),
                    valid: false,
                    digest: None,
                    publisher: None,
                    error: Some(e.to_string()),
                },
            };
            match format.format {
                Format::Json => print_json(&verdict)?,
                Format::Text => match (&verdict.error, &verdict.publisher) {
                    (None, Some(publisher)) => println!(
                        "{}: valid (publisher {publisher}, digest {})",
                        bundle.display(),
                        verdict.digest.as_deref().unwrap_or_default()
                    ),
                    (error, _) => eprintln!(
                        "{}: INVALID: {}",
                        bundle.display(),
                        error.as_deref().unwrap_or_default()
                    ),
                },
            }
            Ok(if verdict.valid { 0 } else { exit::INVALID })
        }
    }
}

fn print_inspect_text(report: &elastos_bundle::InspectReport) {
    use elastos_bundle::SignatureStatus;
    let or_unknown = |v: Option<String>| v.unwrap_or_else(|| "(unreadable)".into());
    let signature = match &report.signature {
        SignatureStatus::Valid => "valid".to_string(),
        SignatureStatus::DigestMismatch => {
            "INVALID: digest mismatch (corrupt or tampered with)".to_string()
        }
        SignatureStatus::BadSignature => "INVALID: signature is not the publisher's".to_string(),
        SignatureStatus::Malformed(reason) => format!("INVALID: malformed bundle: {reason}"),
    };
    println!("signature: {signature}");
    println!(
        "publisher: {}",
        or_unknown(report.publisher.as_ref().map(|p| p.to_string()))
    );
    println!(
        "digest:    {}",
        or_unknown(report.digest.as_ref().map(|d| d.to_string()))
    );
    println!(
        "payload:   {} bytes",
        or_unknown(report.payload_size.map(|s| s.to_string()))
    );
    if let Some(manifest) = &report.manifest {
        println!(
            "app:       {} {} ({})\nentry:     {}",
            manifest.name(),
            manifest.version(),
            manifest.id(),
            manifest.entry().display()
        );
    }
    if let Some(error) = &report.manifest_error {
        println!("manifest:  INVALID: {error}");
    }
    if let Some(text) = &report.manifest_text {
        println!("\n--- manifest.toml ---\n{}", text.trim_end());
    }
}

fn load_or_create_key(path: Option<PathBuf>, state: &StateDirs) -> Result<PublisherKey> {
    if let Some(path) = path {
        return PublisherKey::load(&path)
            .with_context(|| format!("cannot load publisher key {}", path.display()));
    }
    let path = state.publisher_key();
    if path.exists() {
        return PublisherKey::load(&path)
            .with_context(|| format!("cannot load publisher key {}", path.display()));
    }
    let key = PublisherKey::generate()?;
    key.save(&path, false)
        .with_context(|| format!("cannot save the new publisher key to {}", path.display()))?;
    eprintln!(
        "elastos: created a publisher key at {} (publisher {}); keep it safe, it signs your bundles",
        path.display(),
        key.publisher_id()
    );
    Ok(key)
}

fn key(command: KeyCommand) -> Result<u8> {
    #[derive(Serialize)]
    struct KeyReport {
        path: PathBuf,
        publisher: String,
    }
    let state = StateDirs::from_env()?;
    let (path, key, format) = match command {
        KeyCommand::Generate {
            output,
            force,
            format,
        } => {
            let path = output.unwrap_or_else(|| state.publisher_key());
            let key = PublisherKey::generate()?;
            key.save(&path, force)
                .with_context(|| format!("cannot write publisher key {}", path.display()))?;
            (path, key, format.format)
        }
        KeyCommand::Show { key, format } => {
            let path = key.unwrap_or_else(|| state.publisher_key());
            let key = PublisherKey::load(&path)
                .with_context(|| format!("cannot load publisher key {}", path.display()))?;
            (path, key, format.format)
        }
        KeyCommand::Rotate { key, format } => return identity_cmd::rotate(key, format.format),
        KeyCommand::Revoke {
            key,
            publisher,
            from,
            format,
        } => return identity_cmd::revoke(key, publisher, from, format.format),
    };
    let report = KeyReport {
        path,
        publisher: key.publisher_id().to_string(),
    };
    match format {
        Format::Json => print_json(&report)?,
        Format::Text => {
            println!(
                "key:       {}\npublisher: {}",
                report.path.display(),
                report.publisher
            )
        }
    }
    Ok(0)
}

fn policy_show(bundle: &Path, args: Vec<String>, limits: LimitArgs, format: Format) -> Result<u8> {
    let state = StateDirs::from_env()?;
    // Check only: inspecting a bundle's jail must not bind its app id to its publisher.
    let prepared = apps::prepare(
        bundle,
        &args,
        &state.apps,
        &apps::host_env(),
        Admission::CheckOnly,
        &limits.overrides(),
    )?;
    let (plan, home_sync) = (prepared.plan, prepared.manifest.home_sync());
    let publishers = identity_cmd::policy_name(TrustList::load(&state.apps.trust)?.policy);
    let host_ids = HostIds::of(&plan.app_id, &prepared.home);
    // How `elastos run` by this user would enforce the limits here (it chooses the same way).
    let mechanism = AppCgroup::choose(&CgroupFs::detect(), "elastos-policy-show", false)
        .mechanism()
        .clone();
    match format {
        Format::Json => {
            let mut value = serde_json::to_value(&plan).context("encoding JSON output")?;
            value["publishers"] = publishers.into();
            value["home_sync"] = home_sync.into();
            value["host_ids"] = serde_json::to_value(&host_ids).context("encoding JSON output")?;
            value["limit_mechanism"] =
                serde_json::to_value(&mechanism).context("encoding JSON output")?;
            print_json(&value)?
        }
        Format::Text => {
            print!("{}", plan.render_text());
            println!("host ids:   {}", host_ids.describe());
            println!("limits in force here: {}", mechanism.describe());
            println!("publishers: {publishers} (elastos config set policy.publishers)");
            if home_sync {
                println!("home sync:  on: the home is a cache of your encrypted cloud disk (elastos cloud status)");
            } else {
                println!(
                    "home sync:  off ([home] sync = false): the home stays on this machine only"
                );
            }
        }
    }
    Ok(0)
}
