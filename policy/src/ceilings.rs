//! The host's ceilings on what a manifest's `[limits]` may ask for.
//!
//! A manifest is written by the app's publisher, so without ceilings a bundle could ask for
//! `memory = "1024GiB"` or `threads = 65536` (more than `pid_max` on many hosts) and get it. The
//! administrator sets ceilings in [`SYSTEM_FILE`], and each user may lower them further in a
//! file of their own ([`USER_FILE`]); neither file needs to exist ([`Ceilings::default`]).
//!
//! ```toml
//! memory = "4GiB"       # the most a manifest's limits.memory may ask (same units)
//! threads = 1024        # the most limits.threads may ask
//! open_files = 4096     # the most limits.open_files may ask
//! cpus = 4              # the most limits.cpus may ask (same units)
//! home_quota = "2GiB"   # the most home.quota may ask, and the quota of a home without one
//! on_excess = "refuse"  # "refuse" the bundle (default) or "cap" its limits at the ceilings
//! ```
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `memory` | bytes, as `limits.memory` of a manifest | `"4GiB"` | ceiling of `limits.memory` |
//! | `threads` | integer, 1 to 65536 | `1024` | ceiling of `limits.threads` |
//! | `open_files` | integer, 16 to 65536 | `4096` | ceiling of `limits.open_files` |
//! | `cpus` | CPUs, as `limits.cpus` of a manifest (0.01 to 1024) | `4` | ceiling of `limits.cpus` |
//! | `home_quota` | bytes, as `home.quota` of a manifest (at least 4 MiB) | none | ceiling of `home.quota`, and the quota of every app whose manifest sets none (enforced for apps launched by root: see `elastos_loader::home_quota`) |
//! | `on_excess` | `"refuse"` or `"cap"` | `"refuse"` | what happens to a bundle that asks for more |
//!
//! Every key is optional; an unknown key is an error naming it and its line, as in a manifest,
//! so a typo never leaves a ceiling at its default unnoticed. The user's file can only lower: a
//! ceiling takes the smaller of the two values, and `refuse` in either file wins over `cap`.
//!
//! The same ceilings hold the command line's overrides of a manifest's limits (`elastos run
//! --memory --cpus --pids`, [`LimitOverrides`]); an override above a ceiling is always refused,
//! naming the flag, whatever `on_excess` says: the user asked for it by hand.
//!
//! This module only parses and checks; reading the files is the host's job (this crate does no
//! I/O): `Ceilings::parse(system_text)?.lowered_by(user_text)?`, then
//! [`Ceilings::apply`] (or [`crate::Manifest::apply_ceilings`]) before planning the jail.

use serde::Deserialize;

use crate::manifest::{
    cpus_value, format_cpus, parse_memory, toml_problem, TomlProblem, CPUS_EXPECTED,
    MEMORY_EXPECTED, MIN_HOME_QUOTA_BYTES, MIN_MEMORY_BYTES, OPEN_FILES_RANGE, THREADS_RANGE,
};
use crate::plan::ResourceLimits;

/// The administrator's ceilings file.
pub const SYSTEM_FILE: &str = "/etc/elastos/limits.toml";
/// The user's ceilings file, relative to the user's elastos configuration directory
/// (`$ELASTOS_HOME` when set, else `$XDG_CONFIG_HOME/elastos`, else `~/.config/elastos`).
pub const USER_FILE: &str = "limits.toml";

/// The ceilings in force: the most any manifest may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceilings {
    /// Ceiling of `limits.memory`, in bytes.
    pub memory_bytes: u64,
    /// Ceiling of `limits.threads`.
    pub threads: u64,
    /// Ceiling of `limits.open_files`.
    pub open_files: u64,
    /// Ceiling of `limits.cpus`, in thousandths of a CPU.
    pub cpu_millis: u64,
    /// Ceiling of `home.quota`, in bytes, and the quota of a home whose manifest sets none;
    /// `None`: no ceiling, and no quota unless the manifest asks for one.
    pub home_quota_bytes: Option<u64>,
    /// What happens to a manifest that asks for more.
    pub on_excess: OnExcess,
}

/// What happens to a manifest whose limits exceed a ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExcess {
    /// The bundle is refused ([`ExcessError`]).
    Refuse,
    /// Its limits are lowered to the ceilings, and the lowering is reported ([`Excess`]).
    Cap,
}

impl Default for Ceilings {
    /// Ceilings without any file: an app may ask for 8 times the default memory, 4 times the
    /// default threads, open files and CPUs of a manifest (see `manifest::DEFAULT_LIMITS`);
    /// more threads would let a few apps exhaust a `pid_max` of 32768.
    fn default() -> Ceilings {
        Ceilings {
            memory_bytes: 4 << 30,
            threads: 1024,
            open_files: 4096,
            cpu_millis: 4000,
            home_quota_bytes: None,
            on_excess: OnExcess::Refuse,
        }
    }
}

/// One limit of a manifest above its ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excess {
    /// The manifest field, e.g. `limits.threads`.
    pub field: &'static str,
    /// What the manifest asked for.
    pub requested: u64,
    /// The ceiling.
    pub ceiling: u64,
}

impl std::fmt::Display for Excess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |value| shown(self.field, value);
        write!(
            f,
            "`{}` = {} is above this host's ceiling of {}",
            self.field,
            show(self.requested),
            show(self.ceiling)
        )
    }
}

/// A limit's value as the manifest writes it: CPUs as a decimal number, the others as integers.
fn shown(field: &str, value: u64) -> String {
    if field.ends_with("cpus") {
        format_cpus(value)
    } else {
        value.to_string()
    }
}

/// A manifest asked for more than a ceiling allows, and the ceilings say `refuse`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{excess}; hint: the bundle's manifest must ask for less, or the administrator may raise the \
     ceiling in {SYSTEM_FILE} (or set on_excess = \"cap\")"
)]
pub struct ExcessError {
    /// The first limit above its ceiling (memory, threads, open files, in this order).
    pub excess: Excess,
}

/// Why a ceilings file was rejected. `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CeilingsError {
    /// The text is not TOML.
    #[error("the ceilings file is not valid TOML{}: {message}", at_line(*.line))]
    Syntax {
        /// Line of the problem, when known.
        line: Option<usize>,
        /// The TOML parser's description.
        message: String,
    },
    /// A key the format does not define.
    #[error(
        "unknown key `{key}` at line {line} of the ceilings file; hint: the keys are memory, \
         threads, open_files, cpus, home_quota and on_excess (see elastos_policy::ceilings)"
    )]
    UnknownKey {
        /// The unknown key (dotted if inside a table).
        key: String,
        /// Its line.
        line: usize,
    },
    /// A value of the wrong TOML type.
    #[error("`{key}` at line {line} of the ceilings file has the wrong type: {message}")]
    WrongType {
        /// The key.
        key: String,
        /// Its line.
        line: usize,
        /// The parser's description.
        message: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("invalid `{key}` in the ceilings file: found {found}, expected {expected}")]
    InvalidValue {
        /// The key.
        key: &'static str,
        /// The value as found.
        found: String,
        /// What would be accepted.
        expected: String,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|line| format!(" at line {line}"))
        .unwrap_or_default()
}

/// A ceilings file as written: every key optional, no other key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a ceilings file")]
struct RawCeilings {
    memory: Option<toml::Value>,
    threads: Option<i64>,
    open_files: Option<i64>,
    cpus: Option<toml::Value>,
    home_quota: Option<toml::Value>,
    on_excess: Option<String>,
}

/// A checked ceilings file: the keys it sets.
struct CeilingsFile {
    memory_bytes: Option<u64>,
    threads: Option<u64>,
    open_files: Option<u64>,
    cpu_millis: Option<u64>,
    home_quota_bytes: Option<u64>,
    on_excess: Option<OnExcess>,
}

impl Ceilings {
    /// The ceilings of the administrator's file ([`SYSTEM_FILE`]): the defaults, with the
    /// values `text` sets instead, higher or lower.
    pub fn parse(text: &str) -> Result<Ceilings, CeilingsError> {
        let file = parse(text)?;
        let default = Ceilings::default();
        Ok(Ceilings {
            memory_bytes: file.memory_bytes.unwrap_or(default.memory_bytes),
            threads: file.threads.unwrap_or(default.threads),
            open_files: file.open_files.unwrap_or(default.open_files),
            cpu_millis: file.cpu_millis.unwrap_or(default.cpu_millis),
            home_quota_bytes: file.home_quota_bytes.or(default.home_quota_bytes),
            on_excess: file.on_excess.unwrap_or(default.on_excess),
        })
    }

    /// These ceilings lowered by `text` (a user's [`USER_FILE`]): a value above the current
    /// ceiling changes nothing, and `cap` does not undo `refuse`.
    pub fn lowered_by(self, text: &str) -> Result<Ceilings, CeilingsError> {
        let file = parse(text)?;
        let lower = |current: u64, new: Option<u64>| new.map_or(current, |new| new.min(current));
        Ok(Ceilings {
            memory_bytes: lower(self.memory_bytes, file.memory_bytes),
            threads: lower(self.threads, file.threads),
            open_files: lower(self.open_files, file.open_files),
            cpu_millis: lower(self.cpu_millis, file.cpu_millis),
            // No ceiling is the highest of all: the user's file may set one.
            home_quota_bytes: match (self.home_quota_bytes, file.home_quota_bytes) {
                (Some(current), Some(new)) => Some(current.min(new)),
                (current, new) => current.or(new),
            },
            on_excess: match (self.on_excess, file.on_excess) {
                (OnExcess::Cap, Some(OnExcess::Refuse)) => OnExcess::Refuse,
                (current, _) => current,
            },
        })
    }

    /// Holds `limits` to the ceilings: with [`OnExcess::Refuse`], the first limit above its
    /// ceiling is an error and `limits` is unchanged; with [`OnExcess::Cap`], every such limit
    /// is lowered to its ceiling and returned, for the host to report.
    pub fn apply(&self, limits: &mut ResourceLimits) -> Result<Vec<Excess>, ExcessError> {
        let checks = [
            ("limits.memory", limits.memory_bytes, self.memory_bytes),
            ("limits.threads", limits.threads, self.threads),
            ("limits.open_files", limits.open_files, self.open_files),
            ("limits.cpus", limits.cpu_millis, self.cpu_millis),
        ];
        let excesses: Vec<Excess> = checks
            .into_iter()
            .filter(|&(_, requested, ceiling)| requested > ceiling)
            .map(|(field, requested, ceiling)| Excess {
                field,
                requested,
                ceiling,
            })
            .collect();
        match (self.on_excess, excesses.first()) {
            (_, None) => Ok(excesses),
            (OnExcess::Refuse, Some(excess)) => Err(ExcessError {
                excess: excess.clone(),
            }),
            (OnExcess::Cap, Some(_)) => {
                limits.memory_bytes = limits.memory_bytes.min(self.memory_bytes);
                limits.threads = limits.threads.min(self.threads);
                limits.open_files = limits.open_files.min(self.open_files);
                limits.cpu_millis = limits.cpu_millis.min(self.cpu_millis);
                Ok(excesses)
            }
        }
    }
}

/// Limits given on the command line (`elastos run --memory --cpus --pids`): each replaces the
/// manifest's value, higher or lower, within the ceilings ([`Ceilings::apply_overrides`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitOverrides {
    /// `--memory`: `limits.memory`, in bytes.
    pub memory_bytes: Option<u64>,
    /// `--cpus`: `limits.cpus`, in thousandths of a CPU.
    pub cpu_millis: Option<u64>,
    /// `--pids`: `limits.threads`, the app's tasks (processes and threads).
    pub threads: Option<u64>,
}

/// A command-line override asks for more than a ceiling allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{flag} {value}` is above this host's ceiling of {ceiling}; hint: ask for less, or the \
     administrator may raise `{key}` in {SYSTEM_FILE} (your own {USER_FILE} can only lower it)"
)]
pub struct OverrideError {
    /// The flag, e.g. `--cpus`.
    pub flag: &'static str,
    /// What it asked for, in the flag's units.
    pub value: String,
    /// The ceiling, in the same units.
    pub ceiling: String,
    /// The ceilings file's key.
    pub key: &'static str,
}

impl LimitOverrides {
    /// Parses a `--memory` value: the units of `limits.memory`, at least 16 MiB.
    pub fn parse_memory(text: &str) -> Result<u64, String> {
        parse_memory(text)
            .filter(|bytes| *bytes >= MIN_MEMORY_BYTES)
            .ok_or_else(|| format!("expected {MEMORY_EXPECTED}, at least 16MiB"))
    }

    /// Parses a `--cpus` value: the units of `limits.cpus`.
    pub fn parse_cpus(text: &str) -> Result<u64, String> {
        crate::manifest::parse_cpus(text).ok_or_else(|| format!("expected {CPUS_EXPECTED}"))
    }

    /// Parses a `--pids` value: the range of `limits.threads`.
    pub fn parse_pids(text: &str) -> Result<u64, String> {
        text.parse::<u64>()
            .ok()
            .filter(|n| THREADS_RANGE.contains(n))
            .ok_or_else(|| {
                format!(
                    "expected an integer from {} to {}",
                    THREADS_RANGE.start(),
                    THREADS_RANGE.end()
                )
            })
    }
}

impl Ceilings {
    /// Replaces `limits` (a manifest's) with the command line's `overrides`; the first
    /// override above its ceiling is an error and `limits` is unchanged. The limits it does not
    /// set are left for [`Ceilings::apply`].
    pub fn apply_overrides(
        &self,
        overrides: &LimitOverrides,
        limits: &mut ResourceLimits,
    ) -> Result<(), OverrideError> {
        let refused = |flag, key, value: u64, ceiling: u64, show: fn(u64) -> String| {
            Err(OverrideError {
                flag,
                value: show(value),
                ceiling: show(ceiling),
                key,
            })
        };
        let above = |value: Option<u64>, ceiling| value.filter(|value| *value > ceiling);
        if let Some(value) = above(overrides.memory_bytes, self.memory_bytes) {
            return refused("--memory", "memory", value, self.memory_bytes, |v| {
                format!("{v} bytes")
            });
        }
        if let Some(value) = above(overrides.cpu_millis, self.cpu_millis) {
            return refused("--cpus", "cpus", value, self.cpu_millis, format_cpus);
        }
        if let Some(value) = above(overrides.threads, self.threads) {
            return refused("--pids", "threads", value, self.threads, |v| v.to_string());
        }
        limits.memory_bytes = overrides.memory_bytes.unwrap_or(limits.memory_bytes);
        limits.cpu_millis = overrides.cpu_millis.unwrap_or(limits.cpu_millis);
        limits.threads = overrides.threads.unwrap_or(limits.threads);
        Ok(())
    }
}

impl Ceilings {
    /// Holds a manifest's `home.quota` to the `home_quota` ceiling: none asked gets the
    /// ceiling; more than it is refused or, with [`OnExcess::Cap`], lowered to it and returned.
    pub fn apply_home_quota(&self, quota: &mut Option<u64>) -> Result<Option<Excess>, ExcessError> {
        let Some(ceiling) = self.home_quota_bytes else {
            return Ok(None);
        };
        let Some(requested) = quota.filter(|asked| *asked > ceiling) else {
            *quota = Some(quota.unwrap_or(ceiling));
            return Ok(None);
        };
        let excess = Excess {
            field: "home.quota",
            requested,
            ceiling,
        };
        match self.on_excess {
            OnExcess::Refuse => Err(ExcessError { excess }),
            OnExcess::Cap => {
                *quota = Some(ceiling);
                Ok(Some(excess))
            }
        }
    }
}

fn parse(text: &str) -> Result<CeilingsFile, CeilingsError> {
    let raw: RawCeilings = toml::from_str(text).map_err(|e| match toml_problem(text, &e) {
        TomlProblem::Syntax { line, message } => CeilingsError::Syntax { line, message },
        TomlProblem::UnknownKey {
            table, key, line, ..
        } => CeilingsError::UnknownKey {
            key: if table.is_empty() {
                key
            } else {
                format!("{table}.{key}")
            },
            line,
        },
        TomlProblem::WrongType {
            field,
            line,
            message,
        } => CeilingsError::WrongType {
            key: field,
            line,
            message,
        },
    })?;
    // A size in bytes (an integer, or a string like the manifest's) of at least `min`.
    let bytes = |key: &'static str, value: Option<toml::Value>, min: u64, min_text: &str| {
        value
            .map(|value| {
                let bytes = match &value {
                    toml::Value::Integer(bytes) => u64::try_from(*bytes).ok(),
                    toml::Value::String(text) => parse_memory(text),
                    _ => None,
                };
                bytes
                    .filter(|bytes| *bytes >= min)
                    .ok_or_else(|| CeilingsError::InvalidValue {
                        key,
                        found: value.to_string(),
                        expected: format!("{MEMORY_EXPECTED}, at least {min_text}"),
                    })
            })
            .transpose()
    };
    let memory_bytes = bytes("memory", raw.memory, MIN_MEMORY_BYTES, "16MiB")?;
    let count = |key: &'static str, value: Option<i64>, range: std::ops::RangeInclusive<u64>| {
        value
            .map(|value| {
                u64::try_from(value)
                    .ok()
                    .filter(|v| range.contains(v))
                    .ok_or_else(|| CeilingsError::InvalidValue {
                        key,
                        found: value.to_string(),
                        expected: format!("an integer from {} to {}", range.start(), range.end()),
                    })
            })
            .transpose()
    };
    let on_excess = raw
        .on_excess
        .map(|text| match text.as_str() {
            "refuse" => Ok(OnExcess::Refuse),
            "cap" => Ok(OnExcess::Cap),
            _ => Err(CeilingsError::InvalidValue {
                key: "on_excess",
                found: format!("{text:?}"),
                expected: "\"refuse\" or \"cap\"".to_owned(),
            }),
        })
        .transpose()?;
    let cpu_millis = raw
        .cpus
        .map(|value| {
            cpus_value(&value).ok_or_else(|| CeilingsError::InvalidValue {
                key: "cpus",
                found: value.to_string(),
                expected: CPUS_EXPECTED.to_owned(),
            })
        })
        .transpose()?;
    let home_quota_bytes = bytes("home_quota", raw.home_quota, MIN_HOME_QUOTA_BYTES, "4MiB")?;
    Ok(CeilingsFile {
        memory_bytes,
        cpu_millis,
        home_quota_bytes,
        threads: count("threads", raw.threads, THREADS_RANGE)?,
        open_files: count("open_files", raw.open_files, OPEN_FILES_RANGE)?,
        on_excess,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    const GIB: u64 = 1 << 30;

    fn limits(memory_bytes: u64, threads: u64, open_files: u64) -> ResourceLimits {
        ResourceLimits {
            memory_bytes,
            threads,
            open_files,
            cpu_millis: 1000,
        }
    }

    #[test]
    fn cpus_have_a_ceiling_like_the_other_limits() {
        assert_eq!(Ceilings::default().cpu_millis, 4000);
        let system = Ceilings::parse("cpus = \"2.5\"").unwrap();
        assert_eq!(system.cpu_millis, 2500);
        assert_eq!(system.lowered_by("cpus = 8").unwrap().cpu_millis, 2500);
        assert_eq!(system.lowered_by("cpus = 0.5").unwrap().cpu_millis, 500);
        let mut asked = limits(GIB, 8, 64);
        asked.cpu_millis = 3000;
        let err = system.apply(&mut asked).unwrap_err();
        assert_eq!(
            err.excess.to_string(),
            "`limits.cpus` = 3 is above this host's ceiling of 2.5"
        );
        let capping = Ceilings::parse("cpus = 2.5\non_excess = \"cap\"").unwrap();
        assert_eq!(capping.apply(&mut asked).unwrap()[0].field, "limits.cpus");
        assert_eq!(asked.cpu_millis, 2500);
    }

    #[test]
    fn the_home_quota_ceiling_is_also_the_quota_of_a_home_without_one() {
        assert_eq!(Ceilings::default().home_quota_bytes, None);
        let mut none = None;
        assert_eq!(Ceilings::default().apply_home_quota(&mut none), Ok(None));
        assert_eq!(none, None, "no ceiling: no quota unless asked");
        let system = Ceilings::parse("home_quota = \"1GiB\"").unwrap();
        assert_eq!(system.home_quota_bytes, Some(GIB));
        assert_eq!(
            Ceilings::default()
                .lowered_by("home_quota = \"64MiB\"")
                .unwrap()
                .home_quota_bytes,
            Some(64 << 20),
            "the user may set one where the administrator set none"
        );
        assert_eq!(
            system
                .lowered_by("home_quota = \"8GiB\"")
                .unwrap()
                .home_quota_bytes,
            Some(GIB),
            "only lowers"
        );
        let mut unset = None;
        system.apply_home_quota(&mut unset).unwrap();
        assert_eq!(
            unset,
            Some(GIB),
            "a manifest without a quota gets the ceiling"
        );
        let mut small = Some(8 << 20);
        system.apply_home_quota(&mut small).unwrap();
        assert_eq!(small, Some(8 << 20));
        let mut greedy = Some(2 * GIB);
        let err = system.apply_home_quota(&mut greedy).unwrap_err();
        assert_eq!(greedy, Some(2 * GIB), "refused: unchanged");
        assert!(err
            .to_string()
            .starts_with("`home.quota` = 2147483648 is above this host's ceiling of 1073741824"));
        let capping = Ceilings::parse("home_quota = \"1GiB\"\non_excess = \"cap\"").unwrap();
        assert_eq!(
            capping
                .apply_home_quota(&mut greedy)
                .unwrap()
                .map(|e| e.field),
            Some("home.quota")
        );
        assert_eq!(greedy, Some(GIB));
        assert!(matches!(
            Ceilings::parse("home_quota = \"1MiB\""),
            Err(CeilingsError::InvalidValue {
                key: "home_quota",
                ..
            })
        ));
    }

    #[test]
    fn overrides_replace_the_manifests_limits_within_the_ceilings() {
        let ceilings = Ceilings::parse("memory = \"1GiB\"\nthreads = 64\ncpus = 2").unwrap();
        let mut asked = limits(512 << 20, 32, 100);
        let overrides = LimitOverrides {
            memory_bytes: Some(GIB),
            cpu_millis: Some(200),
            threads: Some(8),
        };
        ceilings.apply_overrides(&overrides, &mut asked).unwrap();
        assert_eq!(
            asked,
            ResourceLimits {
                memory_bytes: GIB,
                threads: 8,
                open_files: 100,
                cpu_millis: 200
            }
        );
        let mut unchanged = asked;
        ceilings
            .apply_overrides(&LimitOverrides::default(), &mut unchanged)
            .unwrap();
        assert_eq!(unchanged, asked, "no flag: the manifest's limits");
        for (overrides, message) in [
            (
                LimitOverrides {
                    cpu_millis: Some(2500),
                    ..LimitOverrides::default()
                },
                "`--cpus 2.5` is above this host's ceiling of 2",
            ),
            (
                LimitOverrides {
                    memory_bytes: Some(2 * GIB),
                    ..LimitOverrides::default()
                },
                "`--memory 2147483648 bytes` is above this host's ceiling of 1073741824 bytes",
            ),
            (
                LimitOverrides {
                    threads: Some(65),
                    ..LimitOverrides::default()
                },
                "`--pids 65` is above this host's ceiling of 64",
            ),
        ] {
            let mut before = asked;
            let err = ceilings
                .apply_overrides(&overrides, &mut before)
                .unwrap_err();
            assert_eq!(before, asked, "refused: unchanged");
            assert!(err.to_string().starts_with(message), "{err}");
            assert!(
                err.to_string().contains("/etc/elastos/limits.toml"),
                "{err}"
            );
        }
        // Refused even where the administrator lets manifests be capped.
        let capping = Ceilings::parse("threads = 64\non_excess = \"cap\"").unwrap();
        let pids = LimitOverrides {
            threads: Some(65),
            ..LimitOverrides::default()
        };
        assert!(capping.apply_overrides(&pids, &mut asked).is_err());
    }

    #[test]
    fn override_values_are_parsed_like_the_manifests() {
        assert_eq!(LimitOverrides::parse_memory("64MiB"), Ok(64 << 20));
        assert!(LimitOverrides::parse_memory("8MiB")
            .unwrap_err()
            .contains("at least 16MiB"));
        assert_eq!(LimitOverrides::parse_cpus("0.2"), Ok(200));
        assert!(LimitOverrides::parse_cpus("0")
            .unwrap_err()
            .contains("0.01"));
        assert_eq!(LimitOverrides::parse_pids("16"), Ok(16));
        assert!(LimitOverrides::parse_pids("0")
            .unwrap_err()
            .contains("from 1 to 65536"));
    }

    #[test]
    fn an_empty_file_keeps_the_defaults() {
        let ceilings = Ceilings::parse("").unwrap();
        assert_eq!(ceilings, Ceilings::default());
        assert_eq!(ceilings.memory_bytes, 4 * GIB);
        assert_eq!(ceilings.on_excess, OnExcess::Refuse);
    }

    #[test]
    fn the_system_file_sets_any_value_and_the_user_file_only_lowers() {
        let system = Ceilings::parse(
            "# the admin's\nmemory = \"16GiB\"\nthreads = 64\nopen_files = 20000\n\
             on_excess = \"cap\"\n",
        )
        .unwrap();
        assert_eq!(
            system,
            Ceilings {
                memory_bytes: 16 * GIB,
                threads: 64,
                open_files: 20000,
                cpu_millis: 4000,
                home_quota_bytes: None,
                on_excess: OnExcess::Cap,
            }
        );
        let user = system
            .lowered_by("memory = \"1GiB\"\nthreads = 128\non_excess = \"refuse\"\n")
            .unwrap();
        assert_eq!(user.memory_bytes, GIB, "lowered");
        assert_eq!(user.threads, 64, "a higher user value changes nothing");
        assert_eq!(user.open_files, 20000, "absent: unchanged");
        assert_eq!(user.on_excess, OnExcess::Refuse);
        let refusing = Ceilings::default()
            .lowered_by("on_excess = \"cap\"")
            .unwrap();
        assert_eq!(
            refusing.on_excess,
            OnExcess::Refuse,
            "cap does not undo refuse"
        );
    }

    #[test]
    fn a_manifest_asking_for_more_is_refused_naming_the_field_value_and_ceiling() {
        let manifest = Manifest::from_toml(
            "[app]\nid = \"0b8e1f7c-3c1d-4a55-9d0e-5f7f5e2a9c11\"\nname = \"greedy\"\n\
             version = \"1.0.0\"\nentry = \"bin/greedy\"\n\
             [limits]\nmemory = \"1024GiB\"\nthreads = 65536\nopen_files = 65536\n",
        )
        .unwrap();
        let mut asked = manifest.limits();
        let before = asked;
        let err = Ceilings::default().apply(&mut asked).unwrap_err();
        assert_eq!(asked, before, "refused: unchanged");
        assert_eq!(
            err.excess,
            Excess {
                field: "limits.memory",
                requested: 1024 * GIB,
                ceiling: 4 * GIB
            }
        );
        assert_eq!(
            err.to_string(),
            "`limits.memory` = 1099511627776 is above this host's ceiling of 4294967296; hint: \
             the bundle's manifest must ask for less, or the administrator may raise the ceiling \
             in /etc/elastos/limits.toml (or set on_excess = \"cap\")"
        );
        let mut threads_only = limits(GIB, 65536, 64);
        let err = Ceilings::default().apply(&mut threads_only).unwrap_err();
        assert_eq!(
            (err.excess.field, err.excess.requested),
            ("limits.threads", 65536)
        );
    }

    #[test]
    fn cap_lowers_every_excess_and_reports_it() {
        let ceilings = Ceilings::parse("on_excess = \"cap\"").unwrap();
        let mut asked = limits(1024 * GIB, 65536, 100);
        let capped = ceilings.apply(&mut asked).unwrap();
        assert_eq!(asked, limits(4 * GIB, 1024, 100));
        let fields: Vec<&str> = capped.iter().map(|e| e.field).collect();
        assert_eq!(fields, ["limits.memory", "limits.threads"]);
    }

    #[test]
    fn limits_within_the_ceilings_pass_unchanged() {
        let mut asked = crate::manifest::DEFAULT_LIMITS;
        assert_eq!(Ceilings::default().apply(&mut asked), Ok(vec![]));
        assert_eq!(asked, crate::manifest::DEFAULT_LIMITS);
        let mut exact = limits(4 * GIB, 1024, 4096);
        assert_eq!(Ceilings::default().apply(&mut exact), Ok(vec![]));
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let err = Ceilings::parse("memory = \"1GiB\"\n\nthread = 4\n").unwrap_err();
        assert_eq!(
            err,
            CeilingsError::UnknownKey {
                key: "thread".into(),
                line: 3
            }
        );
        let err = Ceilings::default()
            .lowered_by("[limits]\nthreads = 4\n")
            .unwrap_err();
        assert!(
            matches!(err, CeilingsError::UnknownKey { line: 1, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("memory = \"lots\"", "memory"),
            ("memory = \"8MiB\"", "memory"),
            ("threads = 0", "threads"),
            ("open_files = 70000", "open_files"),
            ("cpus = 0", "cpus"),
            ("cpus = \"lots\"", "cpus"),
            ("on_excess = \"ignore\"", "on_excess"),
        ] {
            match Ceilings::parse(text) {
                Err(CeilingsError::InvalidValue { key: found, .. }) => assert_eq!(found, key),
                other => panic!("{text}: {other:?}"),
            }
        }
        assert!(matches!(
            Ceilings::parse("threads = \"many\""),
            Err(CeilingsError::WrongType { line: 1, .. })
        ));
        assert!(matches!(
            Ceilings::parse("threads ="),
            Err(CeilingsError::Syntax { .. })
        ));
    }

    #[test]
    fn every_error_variant_formats() {
        let errors = [
            CeilingsError::Syntax {
                line: Some(2),
                message: "m".into(),
            },
            CeilingsError::UnknownKey {
                key: "k".into(),
                line: 3,
            },
            CeilingsError::WrongType {
                key: "threads".into(),
                line: 1,
                message: "m".into(),
            },
            CeilingsError::InvalidValue {
                key: "threads",
                found: "0".into(),
                expected: "e".into(),
            },
        ];
        for error in errors {
            assert!(!error.to_string().is_empty());
        }
        assert_eq!(
            CeilingsError::UnknownKey {
                key: "k".into(),
                line: 3
            }
            .to_string(),
            "unknown key `k` at line 3 of the ceilings file; hint: the keys are memory, threads, \
             open_files, cpus, home_quota and on_excess (see elastos_policy::ceilings)"
        );
    }
}
