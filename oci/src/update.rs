//! `elastos oci update`: new limits for a running container, checked by the rules of its spec.

use elastos_policy::ResourceLimits;
use oci_spec::runtime::LinuxResources;

use crate::translate::{check_limits, cpu_millis, invalid, refused};
use crate::OciError;

/// The limits an `update` asks for (runc's flags, or a spec's `linux.resources`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceUpdate {
    /// `--memory`: bytes.
    pub memory_bytes: Option<u64>,
    /// `--pids-limit`: tasks (the jail's init comes on top).
    pub tasks: Option<i64>,
    /// `--cpu-quota`: microseconds of CPU time per period.
    pub cpu_quota_us: Option<u64>,
    /// `--cpu-period`: microseconds (the jail's own period, 100 ms, when only a quota is given).
    pub cpu_period_us: Option<u64>,
    /// What else was asked for, which the jail does not enforce (flags or fields).
    pub unenforced: Vec<String>,
}

impl ResourceUpdate {
    /// The limits of a spec's `linux.resources` (`update --resources FILE`).
    pub fn from_resources(resources: &LinuxResources) -> ResourceUpdate {
        let cpu = resources.cpu().as_ref();
        let memory = resources.memory().as_ref();
        let unenforced = [
            (
                "cpu",
                cpu.is_some_and(|c| {
                    c.shares().is_some()
                        || c.cpus().is_some()
                        || c.mems().is_some()
                        || c.realtime_runtime().is_some()
                        || c.realtime_period().is_some()
                }),
            ),
            (
                "memory",
                memory.is_some_and(|m| m.reservation().is_some() || m.swap().is_some()),
            ),
            ("blockIO", resources.block_io().is_some()),
            ("hugepageLimits", resources.hugepage_limits().is_some()),
            ("network", resources.network().is_some()),
            ("rdma", resources.rdma().is_some()),
            ("unified", resources.unified().is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| format!("linux.resources.{name}"))
        .collect();
        ResourceUpdate {
            memory_bytes: memory
                .and_then(|m| m.limit())
                .and_then(|l| u64::try_from(l).ok()),
            tasks: resources.pids().as_ref().map(|p| p.limit()),
            cpu_quota_us: cpu
                .and_then(|c| c.quota())
                .and_then(|q| u64::try_from(q).ok()),
            cpu_period_us: cpu.and_then(|c| c.period()),
            unenforced,
        }
    }

    /// `current` with this update's limits. Refused: what the jail does not enforce (an engine
    /// must not believe it applied), no task limit, limits the jail cannot take.
    pub fn apply(&self, current: ResourceLimits) -> Result<ResourceLimits, OciError> {
        if let Some(what) = self.unenforced.first() {
            return Err(refused(
                what.clone(),
                "(set)",
                "not enforced by elastos oci: only memory, the task limit and the CPU quota \
                 can be updated",
            ));
        }
        let mut limits = current;
        if let Some(bytes) = self.memory_bytes {
            limits.memory_bytes = bytes;
        }
        if let Some(tasks) = self.tasks {
            limits.threads = u64::try_from(tasks)
                .ok()
                .filter(|t| *t > 0)
                .ok_or_else(|| {
                    invalid(
                        "pids.limit",
                        &format!("{tasks} is not a task limit: the jail always has one, above 0"),
                    )
                })?;
        }
        if self.cpu_quota_us.is_some() || self.cpu_period_us.is_some() {
            let period = self
                .cpu_period_us
                .unwrap_or(elastos_policy::CPU_PERIOD_US)
                .max(1);
            let quota = self
                .cpu_quota_us
                .unwrap_or(current.cpu_quota_us() * period / elastos_policy::CPU_PERIOD_US);
            limits.cpu_millis = cpu_millis(quota, period);
        }
        check_limits(&limits)?;
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use elastos_policy::manifest::DEFAULT_LIMITS;

    #[test]
    fn an_update_sets_memory_tasks_and_the_cpu_quota() {
        let update = ResourceUpdate {
            memory_bytes: Some(32 << 20),
            tasks: Some(8),
            cpu_quota_us: Some(50_000),
            ..Default::default()
        };
        let limits = update.apply(DEFAULT_LIMITS).unwrap();
        assert_eq!(limits.memory_bytes, 32 << 20);
        assert_eq!(limits.threads, 8);
        assert_eq!(limits.cpu_millis, 500, "50 ms of every 100 ms");
        assert_eq!(limits.open_files, DEFAULT_LIMITS.open_files);
        // Only a period: the quota keeps its share of a CPU.
        let period_only = ResourceUpdate {
            cpu_period_us: Some(200_000),
            ..Default::default()
        };
        assert_eq!(
            period_only.apply(limits).unwrap().cpu_millis,
            limits.cpu_millis
        );
    }

    #[test]
    fn what_the_jail_does_not_enforce_or_cannot_take_is_refused() {
        let shares = ResourceUpdate {
            unenforced: vec!["--cpu-share".into()],
            ..Default::default()
        };
        assert!(matches!(shares.apply(DEFAULT_LIMITS),
            Err(OciError::Refused { field, .. }) if field == "--cpu-share"));
        for tasks in [0, -1] {
            let unlimited = ResourceUpdate {
                tasks: Some(tasks),
                ..Default::default()
            };
            assert!(matches!(unlimited.apply(DEFAULT_LIMITS),
                Err(OciError::Invalid { field, .. }) if field == "pids.limit"));
        }
        let tiny = ResourceUpdate {
            memory_bytes: Some(4096),
            ..Default::default()
        };
        assert!(tiny.apply(DEFAULT_LIMITS).is_err());
    }

    #[test]
    fn a_specs_resources_name_what_is_not_enforced() {
        let resources: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 33554432},
            "pids": {"limit": 8},
            "cpu": {"quota": 25000, "period": 100000, "shares": 512}
        }))
        .unwrap();
        let update = ResourceUpdate::from_resources(&resources);
        assert_eq!(update.memory_bytes, Some(32 << 20));
        assert_eq!(update.tasks, Some(8));
        assert_eq!(update.cpu_quota_us, Some(25_000));
        assert_eq!(update.unenforced, ["linux.resources.cpu"]);
    }
}
