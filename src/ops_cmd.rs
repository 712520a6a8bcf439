//! The operator's commands: `elastos metrics` (the daemon's Prometheus metrics) and `elastos
//! info` (what this host's kernel offers the jail).

use anyhow::{Context, Result};
use elastos_host::control::ControlRequest;
use elastos_host::kernel::{HostReport, LayerState};
use elastos_host::paths::StateDirs;
use serde::Serialize;

use crate::broker_cmd::daemon_request;
use crate::cli::Format;
use crate::commands::print_json;

/// One sample of the exposition, for `--format json`.
#[derive(Debug, Serialize, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: serde_json::Map<String, serde_json::Value>,
    value: f64,
}

/// `elastos metrics`: the exposition as the daemon renders it, or its samples as JSON.
pub fn metrics(state: &StateDirs, format: Format) -> Result<u8> {
    let value = daemon_request(&ControlRequest::Metrics, state)?;
    let exposition = value
        .as_str()
        .context("the daemon's metrics are not a string")?;
    match format {
        Format::Text => print!("{exposition}"),
        Format::Json => print_json(&samples(exposition)?)?,
    }
    Ok(0)
}

/// The samples of a text exposition: `name{label="value",...} number` lines (comments and
/// blank lines skipped). Label values are the daemon's own, without escapes.
fn samples(exposition: &str) -> Result<Vec<Sample<'_>>> {
    exposition
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (series, value) = line
                .rsplit_once(' ')
                .with_context(|| format!("metrics line without a value: {line:?}"))?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair
                        .split_once('=')
                        .with_context(|| format!("bad label {pair:?} in {line:?}"))?;
                    Ok((key.to_owned(), value.trim_matches('"').to_owned().into()))
                })
                .collect::<Result<_>>()?;
            let value = value
                .parse()
                .with_context(|| format!("bad value in metrics line {line:?}"))?;
            Ok(Sample {
                name,
                labels,
                value,
            })
        })
        .collect()
}

/// `elastos info`: the kernel's features and what a run would enforce and skip.
pub fn info(format: Format) -> Result<u8> {
    let report = HostReport::detect();
    // Where this user's jails are nested (a user with subordinate ids only).
    let holder = report.kernel.subordinate_ids.as_ref().and_then(|ids| {
        let state = StateDirs::from_env().ok()?;
        Some(elastos_loader::holder::status(&state.runtime, ids))
    });
    if format == Format::Json {
        #[derive(Serialize)]
        struct Info<'a> {
            #[serde(flatten)]
            report: &'a HostReport,
            /// The holder of this user's namespace (see `elastos_loader::holder`).
            user_namespace_holder: Option<elastos_loader::holder::HolderStatus>,
        }
        print_json(&Info {
            report: &report,
            user_namespace_holder: holder,
        })?;
        return Ok(0);
    }
    let kernel = &report.kernel;
    let or_none = |value: Option<String>| value.unwrap_or_else(|| "-".into());
    println!(
        "kernel           {} ({})",
        or_none(kernel.release.clone()),
        if kernel.root { "root" } else { "unprivileged" }
    );
    println!(
        "landlock         {}",
        match kernel.landlock.abi {
            Some(abi) => format!("ABI {abi}"),
            None => format!("none ({})", or_none(kernel.landlock.unavailable.clone())),
        }
    );
    println!(
        "seccomp          {}",
        if kernel.seccomp.filter {
            format!("filter ({})", kernel.seccomp.actions.join(" "))
        } else {
            "no filter mode".into()
        }
    );
    let userns = &kernel.user_namespaces;
    println!(
        "user namespaces  {} (max {})",
        if userns.usable {
            "usable"
        } else {
            "not usable"
        },
        or_none(userns.max.map(|max| max.to_string()))
    );
    if let Some(holder) = holder {
        println!(
            "user ns holder   {} (record {})",
            match (holder.running, holder.stale) {
                (Some(running), _) => format!(
                    "pid {}: your jails are nested in its namespace; `elastos unshare --stop` \
                     ends it, as do 10 minutes without a launch",
                    running.pid
                ),
                (None, why) => format!(
                    "none ({}): the next launch starts one",
                    why.unwrap_or_default()
                ),
            },
            holder.record.display()
        );
    }
    let cgroups = &kernel.cgroups;
    println!(
        "cgroups          {}; v2 at {} [{}]; v1 [{}]",
        cgroups.layout,
        or_none(cgroups.v2_mount.as_ref().map(|p| p.display().to_string())),
        cgroups.v2_controllers.join(" "),
        cgroups.v1_controllers.join(" ")
    );
    println!("\nA run here:");
    for layer in &report.run {
        let state = match layer.state {
            LayerState::Enforced => "enforced",
            LayerState::Partial => "partial",
            LayerState::Refused => "REFUSED",
        };
        println!("  {:<11} {state:<9} {}", layer.layer, layer.detail);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lines_become_samples() {
        let text = "# HELP x y\n# TYPE x counter\nx 3\nh_bucket{le=\"0.5\",a=\"b\"} 7\n\n";
        let samples = samples(text).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!((samples[0].name, samples[0].value), ("x", 3.0));
        assert_eq!(samples[1].labels["le"], "0.5");
        assert_eq!(samples[1].labels["a"], "b");
        assert!(super::samples("x{le=\"1\"}").is_err());
    }
}
