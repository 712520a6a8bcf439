//! `elastos policy show`: the effective jail of an app, as text for a reviewer.

use std::fmt::Write;

use std::path::Path;

use crate::linkage::EntryLinkage;
use crate::manifest::format_cpus;
use crate::plan::jail_paths::APP;
use crate::plan::{JailPlan, KernelFs, MountEntry, PathAccess, CPU_PERIOD_US};
use crate::syscalls::ArgCheck;

impl JailPlan {
    /// Everything the jail allows, in the order the loader applies it: filesystem, Landlock,
    /// seccomp, limits, environment. Values that came from a manifest or the host are quoted
    /// with escapes, so they cannot write control sequences to the reviewer's terminal.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_text(&mut out);
        out
    }

    fn write_text(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "app {:?} ({})", self.app_name, self.app_id)?;
        writeln!(out, "  entry: {:?}", self.entry)?;
        writeln!(out, "  argv:  {:?}", self.argv)?;
        writeln!(
            out,
            "  runs as uid {}, gid {} without capabilities, hostname {:?}",
            self.guest.uid, self.guest.gid, self.guest.hostname
        )?;

        writeln!(out, "\nfilesystem, built in this order on an empty tmpfs:")?;
        let mounts: Vec<[String; 3]> = self.mounts.iter().map(mount_row).collect();
        write_table(
            out,
            "  ",
            &[["JAIL PATH", "SOURCE", "MOUNT"].map(String::from)],
            &mounts,
        )?;

        writeln!(out, "\nLandlock (no access anywhere else):")?;
        let rules: Vec<[String; 4]> = self
            .landlock
            .iter()
            .map(|rule| {
                [
                    rule.path.display().to_string(),
                    access_label(rule.access).to_owned(),
                    if rule.optional { "if present" } else { "" }.to_owned(),
                    rule.reason.clone(),
                ]
            })
            .collect();
        write_table(
            out,
            "  ",
            &[["PATH", "RIGHTS", "", "WHY"].map(String::from)],
            &rules,
        )?;
        writeln!(
            out,
            "  programs it can execute: {}",
            self.executable_programs()
        )?;
        if self.landlock_net_deny_tcp {
            writeln!(out, "  TCP bind and connect: denied")?;
        }
        if self.landlock_scoped {
            writeln!(
                out,
                "  abstract unix sockets and signals: only within the jail"
            )?;
        }

        writeln!(out, "\nseccomp allow-list ({}):", std::env::consts::ARCH)?;
        let mut groups: Vec<&str> = Vec::new();
        for row in &self.seccomp.rows {
            if !groups.contains(&row.group.as_str()) {
                groups.push(&row.group);
            }
        }
        let any = ArgCheck::Any.describe();
        let width = self
            .seccomp
            .rows
            .iter()
            .map(|row| row.name.len())
            .max()
            .unwrap_or(0);
        for group in groups {
            writeln!(out, "  {group}:")?;
            for row in self.seccomp.rows.iter().filter(|row| row.group == group) {
                writeln!(out, "    {:width$}  {}", row.name, row.reason)?;
                if row.condition != any {
                    writeln!(out, "    {:width$}  only if {}", "", row.condition)?;
                }
            }
        }
        writeln!(
            out,
            "  everything else: fails with errno {} (ENOSYS)",
            self.seccomp.default_errno
        )?;
        writeln!(
            out,
            "\nioctl requests allowed (any other fails with ENOTTY):"
        )?;
        let ioctls: Vec<[String; 3]> = self
            .seccomp
            .ioctls
            .iter()
            .map(|i| {
                [
                    i.name.clone(),
                    format!("{:#010x}", i.request),
                    i.reason.clone(),
                ]
            })
            .collect();
        write_table(out, "  ", &[], &ioctls)?;

        writeln!(out, "\nlimits:")?;
        let limits = [
            ["memory".to_owned(), bytes_label(self.limits.memory_bytes)],
            ["threads".to_owned(), self.limits.threads.to_string()],
            ["open files".to_owned(), self.limits.open_files.to_string()],
            [
                "cpu".to_owned(),
                format!(
                    "{} CPU{} ({} us of CPU time every {CPU_PERIOD_US} us)",
                    format_cpus(self.limits.cpu_millis),
                    if self.limits.cpu_millis == 1000 {
                        ""
                    } else {
                        "s"
                    },
                    self.limits.cpu_quota_us()
                ),
            ],
        ];
        write_table(out, "  ", &[], &limits)?;
        match self.home_quota {
            Some(bytes) => writeln!(
                out,
                "  home quota  {}: launched by root, an ext4 image of that size mounted at the \
                 home (writes past it fail with ENOSPC); launched by another user, NOT enforced",
                bytes_label(bytes)
            )?,
            None => writeln!(
                out,
                "  home quota  none: the app can fill the disk its home is on ([home] quota)"
            )?,
        }
        writeln!(
            out,
            "\nkernel counters (the same for every app; charged to the app, not its launcher):"
        )?;
        use elastos_handoff::kernel_counters as counters;
        let mut rows: Vec<[String; 3]> = counters::USER_NAMESPACE_LIMITS
            .iter()
            .map(|limit| {
                [
                    format!("user.{}", limit.name),
                    limit.value.to_string(),
                    limit.reason.to_owned(),
                ]
            })
            .collect();
        rows.push([
            "RLIMIT_SIGPENDING".to_owned(),
            counters::PENDING_SIGNALS.to_string(),
            "signals queued to the app; also bounds what it takes from its launcher's count"
                .to_owned(),
        ]);
        rows.push([
            "RLIMIT_MSGQUEUE".to_owned(),
            counters::MESSAGE_QUEUE_BYTES.to_string(),
            "mq_open is denied (seccomp)".to_owned(),
        ]);
        write_table(out, "  ", &[], &rows)?;

        writeln!(out, "\nenvironment (nothing else):")?;
        for (name, value) in &self.env {
            writeln!(out, "  {name}={value:?}")?;
        }
        Ok(())
    }
}

impl JailPlan {
    /// What the app can execute, in words: the real guarantee for its kind of entry (see
    /// `crate::linkage` for why a dynamic one cannot have a stronger one).
    fn executable_programs(&self) -> String {
        let host_loader = self
            .landlock
            .iter()
            .any(|rule| rule.access == PathAccess::ReadExecute && rule.path != Path::new(APP));
        match (&self.entry_linkage, host_loader) {
            (EntryLinkage::Static, false) => "only the files of its bundle (the entry is \
                statically linked, so the dynamic loader is not executable)"
                .to_owned(),
            (_, false) => {
                "only the files of its bundle (the entry's interpreter is in it)".to_owned()
            }
            (linkage, true) => format!(
                "the files of its bundle, and any host program it can read under /usr, /lib*, \
                 /bin, /sbin, through the dynamic loader run directly (`ld.so /usr/bin/X`): \
                 the entry ({}) needs the loader, and Landlock cannot tell the kernel's \
                 execution of it from the app's; such a program runs in this same jail, under \
                 the same seccomp filter, Landlock rules, namespaces and limits, and can \
                 itself execute no more than the app",
                match linkage {
                    EntryLinkage::Dynamic { interpreter } => {
                        format!("dynamically linked, interpreter {interpreter:?}")
                    }
                    _ => "not a static ELF executable".to_owned(),
                }
            ),
        }
    }
}

fn mount_row(mount: &MountEntry) -> [String; 3] {
    let rw = |writable: bool| if writable { "read-write" } else { "read-only" };
    let (jail, source, how) = match mount {
        MountEntry::Host {
            host,
            jail,
            writable,
            optional,
        } => {
            let optional = if *optional { ", if present" } else { "" };
            (
                jail,
                format!("host {}", host.display()),
                format!("{}{optional}", rw(*writable)),
            )
        }
        MountEntry::Bind {
            host,
            jail,
            writable,
        } => (
            jail,
            format!("host {}", host.display()),
            rw(*writable).to_owned(),
        ),
        MountEntry::Device { host, jail } => (
            jail,
            format!("device {}", host.display()),
            "read-write".to_owned(),
        ),
        MountEntry::Tmpfs {
            jail,
            size_bytes,
            mode,
        } => (
            jail,
            "tmpfs".to_owned(),
            format!(
                "{}, {} inodes, mode {mode:04o}",
                bytes_label(*size_bytes),
                elastos_handoff::tmpfs_inodes(*size_bytes)
            ),
        ),
        MountEntry::Dir { jail, mode } => {
            (jail, "directory".to_owned(), format!("mode {mode:04o}"))
        }
        MountEntry::Symlink { target, jail } => (
            jail,
            "symlink".to_owned(),
            format!("-> {}", target.display()),
        ),
        MountEntry::Proc { jail } => (jail, "procfs".to_owned(), "own pid namespace".to_owned()),
        MountEntry::Kernel { fs, source, jail } => {
            let (kind, how) = match fs {
                KernelFs::Tmpfs { size_bytes, mode } => (
                    "tmpfs",
                    format!(
                        "{}, {} inodes, mode {mode:04o}",
                        bytes_label(*size_bytes),
                        elastos_handoff::tmpfs_inodes(*size_bytes)
                    ),
                ),
                KernelFs::Devpts => (
                    "devpts",
                    "new instance, no terminal can be opened (nodev)".to_owned(),
                ),
                KernelFs::Mqueue => ("mqueue", "own IPC namespace".to_owned()),
                KernelFs::Sysfs => (
                    "sysfs",
                    "read-only, own network namespace; readable: the CPUs".to_owned(),
                ),
            };
            (jail, format!("{kind} ({source})"), how)
        }
    };
    [jail.display().to_string(), source, how]
}

fn access_label(access: PathAccess) -> &'static str {
    match access {
        PathAccess::ReadOnly => "read",
        PathAccess::ReadExecute => "read, execute",
        PathAccess::ReadWrite => "read, write, create, remove",
        PathAccess::ReadWriteFiles => "read, write files",
    }
}

/// `512 MiB (536870912 bytes)`, or just the bytes when not a whole number of KiB.
fn bytes_label(bytes: u64) -> String {
    let unit = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
        .into_iter()
        .find(|(size, _)| bytes >= *size && bytes.is_multiple_of(*size));
    match unit {
        Some((size, name)) => format!("{} {name} ({bytes} bytes)", bytes / size),
        None => format!("{bytes} bytes"),
    }
}

/// Left-aligned columns; the last column is not padded.
fn write_table<const N: usize>(
    out: &mut String,
    indent: &str,
    header: &[[String; N]],
    rows: &[[String; N]],
) -> std::fmt::Result {
    let mut widths = [0; N];
    for row in header.iter().chain(rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in header.iter().chain(rows) {
        let mut line = indent.to_owned();
        for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
            if column + 1 == N {
                line.push_str(cell);
            } else {
                write!(line, "{cell:width$}  ")?;
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::manifest::Manifest;
    use crate::plan::{HostEnv, JailPlan};

    fn plan() -> JailPlan {
        plan_linked(crate::EntryLinkage::Dynamic {
            interpreter: "/lib64/ld-linux-x86-64.so.2".into(),
        })
    }

    fn plan_linked(linkage: crate::EntryLinkage) -> JailPlan {
        let manifest = Manifest::from_toml(
            "[app]\nid = \"0b8e1f7c-3c1d-4a55-9d0e-5f7f5e2a9c11\"\nname = \"hello\"\n\
             version = \"0.1.0\"\nentry = \"bin/hello\"\n[env]\nMOTD = \"\\u001b[31mred\"\n",
        )
        .unwrap();
        JailPlan::build(
            &manifest,
            Path::new("/b"),
            Path::new("/h"),
            &[],
            &HostEnv::default(),
            linkage,
        )
        .unwrap()
    }

    #[test]
    fn says_what_a_static_entry_can_execute() {
        let text = plan_linked(crate::EntryLinkage::Static).render_text();
        assert!(
            text.contains("  programs it can execute: only the files of its bundle (the entry is statically linked"),
            "{text}"
        );
        assert!(!text.contains("ld-linux"), "{text}");
    }

    #[test]
    fn shows_every_syscall_row_with_its_condition_and_reason() {
        let plan = plan();
        let text = plan.render_text();
        for row in &plan.seccomp.rows {
            let shown = text.lines().any(|line| {
                line.split_whitespace().next() == Some(row.name.as_str())
                    && line.ends_with(&row.reason)
            });
            assert!(shown, "{} not shown with its reason", row.name);
            assert!(
                text.contains(&format!("\n  {}:\n", row.group)),
                "group {}",
                row.group
            );
            if row.condition != "any arguments" {
                assert!(
                    text.contains(&format!("only if {}", row.condition)),
                    "{}",
                    row.name
                );
            }
        }
        assert!(text.contains("everything else: fails with errno 38 (ENOSYS)"));
    }

    #[test]
    fn shows_every_allowed_ioctl_with_its_reason() {
        let plan = plan();
        let text = plan.render_text();
        assert!(text.contains("\nioctl requests allowed (any other fails with ENOTTY):\n"));
        assert!(!plan.seccomp.ioctls.is_empty());
        for ioctl in &plan.seccomp.ioctls {
            let shown = text.lines().any(|line| {
                line.split_whitespace().next() == Some(ioctl.name.as_str())
                    && line.contains(&format!("{:#010x}", ioctl.request))
                    && line.ends_with(&ioctl.reason)
            });
            assert!(shown, "{} not shown with its reason", ioctl.name);
        }
        assert!(text.contains("  TCGETS "), "{text}");
        assert!(!text.contains("  TIOCSTI "));
    }

    #[test]
    fn shows_header_filesystem_landlock_limits_and_environment() {
        let plan = plan();
        let text = plan.render_text();
        assert!(text.starts_with("app \"hello\" (0b8e1f7c-3c1d-4a55-9d0e-5f7f5e2a9c11)\n"));
        assert!(text.contains("  entry: \"/app/bin/hello\"\n"));
        let tmp = text
            .lines()
            .find(|line| line.starts_with("  /tmp "))
            .unwrap();
        assert!(
            tmp.ends_with(
                " tmpfs                  256 MiB (268435456 bytes), 65536 inodes, mode 1777"
            ),
            "{tmp}"
        );
        for rule in &plan.landlock {
            assert!(text.contains(&rule.reason), "{}", rule.reason);
        }
        assert!(
            text.contains("  memory      512 MiB (536870912 bytes)\n"),
            "{text}"
        );
        assert!(text.contains("  open files  1024\n"));
        assert!(
            text.contains("  cpu         1 CPU (100000 us of CPU time every 100000 us)\n"),
            "{text}"
        );
        assert!(
            text.contains("  home quota  none: the app can fill the disk its home is on"),
            "{text}"
        );
        let mut quota = plan.clone();
        quota.home_quota = Some(8 << 20);
        assert!(
            quota
                .render_text()
                .contains("  home quota  8 MiB (8388608 bytes): launched by root, an ext4 image"),
            "{}",
            quota.render_text()
        );
        let inotify = text
            .lines()
            .find(|line| line.starts_with("  user.max_inotify_instances "))
            .expect("the inotify instance limit is shown");
        assert!(inotify.contains(" 16 "), "{inotify}");
        assert!(text.contains("  RLIMIT_SIGPENDING "), "{text}");
        assert!(
            text.contains(
                "  programs it can execute: the files of its bundle, and any host program"
            ),
            "{text}"
        );
        assert!(text.contains("  HOME=\"/home/app\"\n"));
        assert!(
            text.contains("  MOTD=\"\\u{1b}[31mred\"\n"),
            "control characters are escaped"
        );
        assert!(!text.contains('\u{1b}'));
    }
}
