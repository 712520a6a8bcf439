//! The app manifest, `manifest.toml`: who the app is, what it runs and how much it may use.
//!
//! A bundle carries its manifest under the publisher's signature; [`Manifest::from_toml`] is the
//! only way to get a [`Manifest`], so holding one proves every field below was checked.
//!
//! ```toml
//! [app]
//! id = "0b8e1f7c-3c1d-4a55-9d0e-5f7f5e2a9c11"
//! name = "hello"
//! version = "0.1.0"
//! entry = "bin/hello"
//!
//! [services]          # optional
//! provides = []
//! uses = []
//!
//! [limits]            # optional
//! memory = "512MiB"
//! threads = 256
//! open_files = 1024
//! cpus = "1"
//!
//! [env]               # optional
//! GREETING = "hello"
//!
//! [home]              # optional
//! sync = true
//! quota = "1GiB"
//! ```
//!
//! | key | type and unit | default | meaning |
//! |-----|---------------|---------|---------|
//! | `app.id` | UUID string | required | The app's identity. Its persistent home is keyed by it: two bundles with the same id share one home, so a publisher picks it once and keeps it. |
//! | `app.name` | 1 to 64 of `A-Z a-z 0-9 . _ -` | required | Human name, shown by the CLI and given to the app as `ELASTOS_APP_NAME`. Grants nothing. |
//! | `app.version` | non-empty string, no control characters | required | Shown by the CLI. Grants nothing. |
//! | `app.entry` | relative path inside the bundle | required | The program to run, as `/app/<entry>`. No leading `/`, no `.`, `..` or empty components, no control characters: it can only name a file of the bundle. |
//! | `services.provides` | array of UUID strings | `[]` | Services the app offers through the broker. Recorded and shown; not enforced until the broker exists. No duplicates. |
//! | `services.uses` | array of UUID strings, or of tables `{ service = "UUID", publisher = "ID" }` | `[]` | Services the app wants from the broker. A table pins the provider's publisher (64 hex digits, `elastos key show`): the app then never reaches a provider of that service signed by another key. |
//! | `limits.memory` | bytes: an integer, or a string with unit `B`, `KiB`, `MiB`, `GiB` (powers of 1024) or `K`/`KB`, `M`/`MB`, `G`/`GB` (powers of 1000) | `"512MiB"` | Memory of the whole app; at least 16 MiB. Exceeding it fails allocations or kills the app, never the host. |
//! | `limits.threads` | integer, 1 to 65536 | `256` | Threads of the app including the main one. Bounds how much kernel memory and scheduler time it can claim. |
//! | `limits.open_files` | integer, 16 to 65536 | `1024` | Open file descriptors (`RLIMIT_NOFILE`), including stdin/stdout/stderr and the IPC socket (fd 3). |
//! | `limits.cpus` | CPUs: a number or a string of one, with at most 3 decimals, 0.01 to 1024 | `"1"` | CPU time of the whole app per unit of wall-clock time: `"0.5"` is half of one CPU, `"2"` two CPUs' worth, over a 100 ms period (cgroup `cpu.max`, v1 `cpu.cfs_quota_us`). Enforced only where the app gets a cgroup with the cpu controller (see `elastos policy show`); rlimits have no rate limit. |
//! | `env.<NAME>` | string, no NUL | none | Extra environment variables. Names match `[A-Za-z_][A-Za-z0-9_]*`; `HOME`, `PATH`, `ELASTOS_*` and `LD_*` are reserved (set by elastos, or steering the dynamic loader). They may override the defaults for `LANG` and `TERM`. |
//! | `home.sync` | boolean | `true` | Whether the app's home is synced with the user's encrypted cloud disk (`elastos cloud`). `false` for a home that is only a cache: it stays on this machine and is lost with it. |
//! | `home.quota` | bytes, as `limits.memory`, at least 4 MiB | none (the host's `home_quota` ceiling, when it sets one) | The most the app's home may hold, its filesystem's own bookkeeping included: past it, writes fail with `ENOSPC`. Launched by root, the home is then an ext4 image of that size (`<home>.img`), mounted at the home from the app's first start on each boot; launched by another user it is not enforced, and `elastos policy show` says so. Fixed at the first start: a later manifest asking for another size keeps the image's. |
//!
//! Any other key, anywhere, is an error naming the key, its table and its line: a typo must not
//! silently drop a limit.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml_edit::TableLike;
use uuid::Uuid;

use crate::ceilings::{Ceilings, Excess, ExcessError, LimitOverrides, OverrideError};
use crate::plan::ResourceLimits;

const MIB: u64 = 1 << 20;

/// Limits of a manifest without `[limits]`.
pub const DEFAULT_LIMITS: ResourceLimits = ResourceLimits {
    memory_bytes: 512 * MIB,
    threads: 256,
    open_files: 1024,
    cpu_millis: 1000,
};
/// The smallest `limits.memory`: below this, dynamically linked programs barely start.
pub const MIN_MEMORY_BYTES: u64 = 16 * MIB;
/// Accepted `limits.threads`.
pub const THREADS_RANGE: RangeInclusive<u64> = 1..=65536;
/// Accepted `limits.open_files` (16: room for stdio, the IPC socket and a few files).
pub const OPEN_FILES_RANGE: RangeInclusive<u64> = 16..=65536;
/// Accepted `limits.cpus`, in thousandths of a CPU: 0.01 CPU (1 ms per 100 ms period, the
/// kernel's smallest quota) to 1024 CPUs.
pub const CPU_MILLIS_RANGE: RangeInclusive<u64> = 10..=1_024_000;
/// What `limits.cpus` (and `--cpus`) accept.
pub const CPUS_EXPECTED: &str =
    "a number of CPUs from 0.01 to 1024 with at most 3 decimals, like 1.5 or \"0.25\"";
/// Longest `app.name`.
pub const NAME_MAX_LEN: usize = 64;

/// A checked `manifest.toml`. See the [module docs](self) for the format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    id: Uuid,
    name: String,
    version: String,
    entry: PathBuf,
    provides: Vec<Uuid>,
    uses: Vec<Uuid>,
    /// The `uses` entries that pin their provider's publisher.
    pinned: Pins,
    limits: ResourceLimits,
    env: BTreeMap<String, String>,
    /// `home.sync`.
    home_sync: bool,
    /// `home.quota`, in bytes.
    home_quota: Option<u64>,
}

/// Why a manifest was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestError {
    /// The text is not TOML.
    #[error("manifest is not valid TOML{}: {message}", at_line(*.line))]
    Syntax {
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// The TOML parser's description.
        message: String,
    },
    /// A key the format does not define.
    #[error(
        "unknown key `{key}` in {} at line {line} ({message}); hint: fix its spelling or remove \
         it; the manifest format is documented in elastos_policy::manifest",
        table_label(.table)
    )]
    UnknownKey {
        /// Dotted path of the table holding the key; empty for the top level.
        table: String,
        /// The unknown key.
        key: String,
        /// 1-based line of the key.
        line: usize,
        /// The parser's description, listing the keys that table accepts.
        message: String,
    },
    /// A value of the wrong TOML type (e.g. a string where a number belongs).
    #[error("`{field}` at line {line} has the wrong type: {message}")]
    WrongType {
        /// Dotted path of the key, e.g. `limits.threads`.
        field: String,
        /// 1-based line of the value.
        line: usize,
        /// The parser's description of what was found and expected.
        message: String,
    },
    /// A required key is absent.
    #[error(
        "`{key}` is missing; hint: every manifest needs an [app] table with id, name, version \
         and entry"
    )]
    MissingKey {
        /// Dotted path of the missing key, e.g. `app.entry`.
        key: &'static str,
    },
    /// A value of the right type that is not acceptable.
    #[error("invalid `{field}`: found {found}, expected {expected}")]
    InvalidValue {
        /// Dotted path of the key, e.g. `limits.memory`.
        field: String,
        /// The value found, as written or described.
        found: String,
        /// What would be accepted.
        expected: String,
    },
    /// An `[env]` variable that elastos reserves.
    #[error("`env.{name}` is reserved: {reason}; hint: remove it from [env]")]
    ReservedEnv {
        /// The variable name.
        name: String,
        /// Why it is reserved.
        reason: &'static str,
    },
    /// A service UUID listed twice.
    #[error("`{field}` lists {id} more than once; hint: list each service once")]
    DuplicateService {
        /// `services.provides` or `services.uses`.
        field: &'static str,
        /// The repeated UUID.
        id: Uuid,
    },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|line| format!(" at line {line}"))
        .unwrap_or_default()
}

fn table_label(table: &str) -> String {
    if table.is_empty() {
        "the top level".to_owned()
    } else {
        format!("[{table}]")
    }
}

// The manifest as written: required keys are `Option` so that their absence is reported by
// name; `deny_unknown_fields` makes every unknown key an error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a manifest")]
struct RawManifest {
    app: Option<RawApp>,
    #[serde(default)]
    services: RawServices,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    home: RawHome,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [home] table")]
struct RawHome {
    sync: Option<bool>,
    quota: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "the [app] table")]
struct RawApp {
    id: Option<String>,
    name: Option<String>,
    version: Option<String>,
    entry: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [services] table")]
struct RawServices {
    #[serde(default)]
    provides: Vec<String>,
    #[serde(default)]
    uses: Vec<RawUse>,
}

/// One `services.uses` entry: a service id, or a service id with the publisher it is pinned to.
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a service UUID string, or { service = \"UUID\", publisher = \"ID\" }"
)]
enum RawUse {
    Plain(String),
    Pinned(RawPinned),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPinned {
    service: String,
    publisher: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, expecting = "the [limits] table")]
struct RawLimits {
    memory: Option<toml::Value>,
    threads: Option<i64>,
    open_files: Option<i64>,
    cpus: Option<toml::Value>,
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn from_toml(text: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        let app = raw.app.ok_or(ManifestError::MissingKey { key: "app" })?;
        let (uses, pinned) = split_pins(raw.services.uses)?;
        Ok(Manifest {
            id: parse_uuid("app.id", &required("app.id", app.id)?)?,
            name: check_name(required("app.name", app.name)?)?,
            version: check_version(required("app.version", app.version)?)?,
            entry: check_entry(required("app.entry", app.entry)?)?,
            provides: parse_services("services.provides", &raw.services.provides)?,
            uses: parse_services("services.uses", &uses)?,
            pinned,
            limits: check_limits(raw.limits)?,
            env: check_env(raw.env)?,
            home_sync: raw.home.sync.unwrap_or(true),
            home_quota: raw
                .home
                .quota
                .map(|value| check_home_quota(&value))
                .transpose()?,
        })
    }

    /// `app.id`: the app's identity; its home is keyed by it.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// `app.name`: 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `app.version`: free text without control characters.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `app.entry`: a relative path of plain components inside the bundle.
    pub fn entry(&self) -> &Path {
        &self.entry
    }

    /// `services.provides`: distinct service UUIDs.
    pub fn provides(&self) -> &[Uuid] {
        &self.provides
    }

    /// `services.uses`: distinct service UUIDs.
    pub fn uses(&self) -> &[Uuid] {
        &self.uses
    }

    /// The `services.uses` entries pinned to a publisher: service -> the publisher's key.
    pub fn pinned(&self) -> &Pins {
        &self.pinned
    }

    /// `[limits]`, defaults filled in ([`DEFAULT_LIMITS`]).
    pub fn limits(&self) -> ResourceLimits {
        self.limits
    }

    /// Holds `[limits]` to the host's ceilings: refused, or capped and the capping returned,
    /// as the ceilings say (see [`Ceilings::apply`]). Call it before planning the jail.
    ///
    /// The ceilings' `home_quota`, when the administrator (or the user) sets one, is also the
    /// quota of a manifest that asks for none: an app cannot escape it by saying nothing.
    pub fn apply_ceilings(&mut self, ceilings: &Ceilings) -> Result<Vec<Excess>, ExcessError> {
        let mut excesses = ceilings.apply(&mut self.limits)?;
        if let Some(excess) = ceilings.apply_home_quota(&mut self.home_quota)? {
            excesses.push(excess);
        }
        Ok(excesses)
    }

    /// Replaces `[limits]` with the command line's `overrides`, each held to its ceiling (see
    /// [`Ceilings::apply_overrides`]). Call it before [`Manifest::apply_ceilings`], so that a
    /// limit the user lowered by hand is not refused for what the manifest asked.
    pub fn apply_overrides(
        &mut self,
        ceilings: &Ceilings,
        overrides: &LimitOverrides,
    ) -> Result<(), OverrideError> {
        ceilings.apply_overrides(overrides, &mut self.limits)
    }

    /// `home.sync`: whether the app's home is synced with the user's cloud disk (default true).
    pub fn home_sync(&self) -> bool {
        self.home_sync
    }

    /// `home.quota`: the most the app's home may hold, in bytes (none by default).
    pub fn home_quota(&self) -> Option<u64> {
        self.home_quota
    }

    /// `[env]`: extra variables, none of them reserved.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }
}

/// Turns a TOML error into one that names the key (and its table) it is about.
fn toml_error(text: &str, error: &toml::de::Error) -> ManifestError {
    match toml_problem(text, error) {
        TomlProblem::Syntax { line, message } => ManifestError::Syntax { line, message },
        TomlProblem::UnknownKey {
            table,
            key,
            line,
            message,
        } => ManifestError::UnknownKey {
            table,
            key,
            line,
            message,
        },
        TomlProblem::WrongType {
            field,
            line,
            message,
        } => ManifestError::WrongType {
            field,
            line,
            message,
        },
    }
}

/// What a TOML error of a file read with `deny_unknown_fields` is about, located by key: the
/// errors of the manifest and of the ceilings files ([`crate::ceilings`]) are built from it.
pub(crate) enum TomlProblem {
    /// Not TOML.
    Syntax {
        line: Option<usize>,
        message: String,
    },
    /// A key the format does not define.
    UnknownKey {
        table: String,
        key: String,
        line: usize,
        message: String,
    },
    /// A value of the wrong TOML type.
    WrongType {
        field: String,
        line: usize,
        message: String,
    },
}

pub(crate) fn toml_problem(text: &str, error: &toml::de::Error) -> TomlProblem {
    let message = error.message().to_owned();
    let Some(span) = error.span() else {
        return TomlProblem::Syntax {
            line: None,
            message,
        };
    };
    let line = text.as_bytes()[..span.start.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1;
    let located = toml_edit::ImDocument::parse(text)
        .ok()
        .and_then(|document| locate(document.as_table(), &span));
    match located {
        Some(Located {
            mut path,
            at_key: true,
        }) => {
            let key = path.pop().unwrap_or_default();
            TomlProblem::UnknownKey {
                table: path.join("."),
                key,
                line,
                message,
            }
        }
        Some(Located {
            path,
            at_key: false,
        }) => TomlProblem::WrongType {
            field: path.join("."),
            line,
            message,
        },
        None => TomlProblem::Syntax {
            line: Some(line),
            message,
        },
    }
}

/// What a TOML error's span points at.
struct Located {
    /// Dotted key path, e.g. `["limits", "cpu"]`.
    path: Vec<String>,
    /// At the key itself (with `deny_unknown_fields`, only unknown keys are reported there),
    /// rather than inside its value.
    at_key: bool,
}

/// Finds the key whose span is `span`, or else the innermost value containing `span`. Walking
/// the parsed document handles `[table]` headers, dotted keys and inline tables alike.
fn locate(table: &dyn TableLike, span: &Range<usize>) -> Option<Located> {
    for (name, item) in table.iter() {
        let (key, _) = table.get_key_value(name)?;
        if key.span().as_ref() == Some(span) {
            return Some(Located {
                path: vec![name.to_owned()],
                at_key: true,
            });
        }
        let contains = |s: Range<usize>| s.start <= span.start && span.end <= s.end;
        let found = item
            .as_table_like()
            .and_then(|inner| locate(inner, span))
            .or_else(|| {
                item.span()
                    .filter(|s| contains(s.clone()))
                    .map(|_| Located {
                        path: vec![],
                        at_key: false,
                    })
            });
        if let Some(mut found) = found {
            found.path.insert(0, name.to_owned());
            return Some(found);
        }
    }
    None
}

fn required(key: &'static str, value: Option<String>) -> Result<String, ManifestError> {
    value.ok_or(ManifestError::MissingKey { key })
}

fn invalid(field: &str, found: impl Into<String>, expected: impl Into<String>) -> ManifestError {
    ManifestError::InvalidValue {
        field: field.to_owned(),
        found: found.into(),
        expected: expected.into(),
    }
}

fn parse_uuid(field: &str, text: &str) -> Result<Uuid, ManifestError> {
    Uuid::parse_str(text).map_err(|_| {
        invalid(
            field,
            format!("{text:?}"),
            "a UUID like \"0b8e1f7c-3c1d-4a55-9d0e-5f7f5e2a9c11\"",
        )
    })
}

fn check_name(name: String) -> Result<String, ManifestError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if (1..=NAME_MAX_LEN).contains(&name.len()) && name.chars().all(allowed) {
        return Ok(name);
    }
    Err(invalid(
        "app.name",
        format!("{name:?}"),
        "1 to 64 characters from A-Z a-z 0-9 . _ -",
    ))
}

fn check_version(version: String) -> Result<String, ManifestError> {
    if !version.is_empty() && !version.chars().any(char::is_control) {
        return Ok(version);
    }
    Err(invalid(
        "app.version",
        format!("{version:?}"),
        "a non-empty version without control characters, like \"1.2.0\"",
    ))
}

fn check_entry(entry: String) -> Result<PathBuf, ManifestError> {
    let plain = |part: &str| !matches!(part, "" | "." | "..");
    if entry.split('/').all(plain) && !entry.chars().any(char::is_control) {
        return Ok(PathBuf::from(entry));
    }
    Err(invalid(
        "app.entry",
        format!("{entry:?}"),
        "a relative path inside the bundle like \"bin/hello\": no leading '/', no '.', '..' or \
         empty components, no control characters",
    ))
}

/// Services pinned to a publisher: service -> the publisher's Ed25519 key.
pub type Pins = BTreeMap<Uuid, [u8; 32]>;

/// The service ids of `services.uses`, and the publishers the pinned ones name.
fn split_pins(entries: Vec<RawUse>) -> Result<(Vec<String>, Pins), ManifestError> {
    let mut texts = Vec::with_capacity(entries.len());
    let mut pinned = BTreeMap::new();
    for entry in entries {
        match entry {
            RawUse::Plain(text) => texts.push(text),
            RawUse::Pinned(RawPinned { service, publisher }) => {
                let id = parse_uuid("services.uses", &service)?;
                let mut key = [0u8; 32];
                let hex_ok = publisher.len() == 64
                    && publisher.is_ascii()
                    && (0..32).all(|i| {
                        u8::from_str_radix(&publisher[2 * i..2 * i + 2], 16)
                            .map(|byte| key[i] = byte)
                            .is_ok()
                    });
                if !hex_ok {
                    return Err(invalid(
                        "services.uses",
                        format!("publisher {publisher:?}"),
                        "a publisher id: 64 hex digits, as `elastos key show` prints it",
                    ));
                }
                pinned.insert(id, key);
                texts.push(service);
            }
        }
    }
    Ok((texts, pinned))
}

fn parse_services(field: &'static str, texts: &[String]) -> Result<Vec<Uuid>, ManifestError> {
    let mut seen = BTreeSet::new();
    texts
        .iter()
        .map(|text| {
            let id = parse_uuid(field, text)?;
            if seen.insert(id) {
                Ok(id)
            } else {
                Err(ManifestError::DuplicateService { field, id })
            }
        })
        .collect()
}

pub(crate) const MEMORY_EXPECTED: &str =
    "a number of bytes, or a string like \"512MiB\" (units B, KiB, \
    MiB, GiB; K/KB, M/MB, G/GB are powers of 1000)";

fn check_limits(raw: RawLimits) -> Result<ResourceLimits, ManifestError> {
    let memory_bytes = match raw.memory {
        None => DEFAULT_LIMITS.memory_bytes,
        Some(toml::Value::Integer(bytes)) => u64::try_from(bytes)
            .map_err(|_| invalid("limits.memory", bytes.to_string(), MEMORY_EXPECTED))?,
        Some(toml::Value::String(text)) => parse_memory(&text)
            .ok_or_else(|| invalid("limits.memory", format!("{text:?}"), MEMORY_EXPECTED))?,
        Some(other) => {
            return Err(invalid(
                "limits.memory",
                format!("a {}", other.type_str()),
                MEMORY_EXPECTED,
            ))
        }
    };
    if memory_bytes < MIN_MEMORY_BYTES {
        return Err(invalid(
            "limits.memory",
            format!("{memory_bytes} bytes"),
            format!("at least 16MiB ({MIN_MEMORY_BYTES} bytes)"),
        ));
    }
    Ok(ResourceLimits {
        memory_bytes,
        threads: check_count(
            "limits.threads",
            raw.threads,
            DEFAULT_LIMITS.threads,
            THREADS_RANGE,
        )?,
        open_files: check_count(
            "limits.open_files",
            raw.open_files,
            DEFAULT_LIMITS.open_files,
            OPEN_FILES_RANGE,
        )?,
        cpu_millis: match raw.cpus {
            None => DEFAULT_LIMITS.cpu_millis,
            Some(value) => cpus_value(&value)
                .ok_or_else(|| invalid("limits.cpus", shown_value(&value), CPUS_EXPECTED))?,
        },
    })
}

/// `limits.cpus` in thousandths of a CPU, from a TOML integer, float or string.
pub(crate) fn cpus_value(value: &toml::Value) -> Option<u64> {
    match value {
        toml::Value::Integer(cpus) => parse_cpus(&cpus.to_string()),
        // The float's shortest decimal form ("1.5"), so 0.1 is 100, never 99.
        toml::Value::Float(cpus) => parse_cpus(&cpus.to_string()),
        toml::Value::String(text) => parse_cpus(text),
        _ => None,
    }
}

fn shown_value(value: &toml::Value) -> String {
    match value {
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::String(_) => {
            value.to_string()
        }
        other => format!("a {}", other.type_str()),
    }
}

/// Thousandths of a CPU in `1`, `1.5`, `0.25` or `2.000`: decimal digits only (no sign, no
/// exponent), at most 3 after the point, within [`CPU_MILLIS_RANGE`]; `None` otherwise.
pub fn parse_cpus(text: &str) -> Option<u64> {
    let (whole, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || fraction.len() > 3 {
        return None;
    }
    let fraction = format!("{fraction:0<3}").parse::<u64>().ok()?;
    let millis = whole.parse::<u64>().ok()?.checked_mul(1000)? + fraction;
    CPU_MILLIS_RANGE.contains(&millis).then_some(millis)
}

/// `1500` thousandths as `1.5`: how `limits.cpus` is written.
pub fn format_cpus(millis: u64) -> String {
    let text = format!("{}.{:03}", millis / 1000, millis % 1000);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The smallest `home.quota`: an ext4 filesystem smaller than this has little room left for
/// files after its own bookkeeping.
pub const MIN_HOME_QUOTA_BYTES: u64 = 4 * MIB;

fn check_home_quota(value: &toml::Value) -> Result<u64, ManifestError> {
    let bytes = match value {
        toml::Value::Integer(bytes) => u64::try_from(*bytes).ok(),
        toml::Value::String(text) => parse_memory(text),
        _ => None,
    };
    bytes
        .filter(|bytes| *bytes >= MIN_HOME_QUOTA_BYTES)
        .ok_or_else(|| {
            invalid(
                "home.quota",
                shown_value(value),
                format!("{MEMORY_EXPECTED}, at least 4MiB"),
            )
        })
}

/// Bytes in `512MiB`, `512 MiB`, `2G` or `1000`; `None` if malformed or too large.
pub fn parse_memory(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let multiplier: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "K" | "KB" => 1_000,
        "M" | "MB" => 1_000_000,
        "G" | "GB" => 1_000_000_000,
        _ => return None,
    };
    // `number` holds ASCII digits only (no sign), so parse fails only when empty or huge.
    number.parse::<u64>().ok()?.checked_mul(multiplier)
}

fn check_count(
    field: &str,
    value: Option<i64>,
    default: u64,
    range: RangeInclusive<u64>,
) -> Result<u64, ManifestError> {
    let Some(value) = value else {
        return Ok(default);
    };
    u64::try_from(value)
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| {
            invalid(
                field,
                value.to_string(),
                format!("an integer from {} to {}", range.start(), range.end()),
            )
        })
}

fn check_env(env: BTreeMap<String, String>) -> Result<BTreeMap<String, String>, ManifestError> {
    for (name, value) in &env {
        let mut chars = name.chars();
        let well_formed = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !well_formed {
            return Err(invalid(
                "env",
                format!("the name {name:?}"),
                "names matching [A-Za-z_][A-Za-z0-9_]*",
            ));
        }
        if let Some(reason) = reserved_env_reason(name) {
            return Err(ManifestError::ReservedEnv {
                name: name.clone(),
                reason,
            });
        }
        if value.contains('\0') {
            return Err(invalid(
                &format!("env.{name}"),
                "a value containing a NUL byte",
                "text without NUL bytes",
            ));
        }
    }
    Ok(env)
}

fn reserved_env_reason(name: &str) -> Option<&'static str> {
    match name {
        "HOME" => Some("elastos sets HOME to the app's home, /home/app"),
        "PATH" => Some("elastos sets PATH"),
        _ if name.starts_with("ELASTOS_") => {
            Some("the ELASTOS_ prefix is for variables elastos sets")
        }
        _ if name.starts_with("LD_") => {
            Some("LD_ variables steer the dynamic loader (LD_PRELOAD, LD_LIBRARY_PATH, ...)")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "[app]\nid = \"0b8e1f7c-3c1d-4a55-9d0e-5f7f5e2a9c11\"\nname = \"hello\"\n\
                       version = \"0.1.0\"\nentry = \"bin/hello\"\n";

    fn parse(extra: &str) -> Result<Manifest, ManifestError> {
        Manifest::from_toml(&format!("{APP}{extra}"))
    }

    fn invalid_field(result: Result<Manifest, ManifestError>) -> (String, String) {
        match result {
            Err(ManifestError::InvalidValue { field, found, .. }) => (field, found),
            other => panic!("expected InvalidValue, got {other:?}"),
        }
    }

    #[test]
    fn a_uses_entry_may_pin_its_providers_publisher() {
        let key = "ab".repeat(32);
        let manifest = parse(&format!(
            "[services]\nuses = [\"6f1c2a57-2b1e-4f0e-9d43-0c7a3e5b8f21\", \
             {{ service = \"7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c21\", publisher = \"{key}\" }}]\n"
        ))
        .expect("plain and pinned entries");
        let pinned: Uuid = "7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c21".parse().unwrap();
        assert_eq!(manifest.uses().len(), 2);
        assert!(manifest.uses().contains(&pinned));
        assert_eq!(manifest.pinned().get(&pinned), Some(&[0xab; 32]));
        assert_eq!(manifest.pinned().len(), 1);
        let bad = parse(
            "[services]\nuses = [{ service = \"7a6b5c4d-3e2f-4a1b-9c8d-7e6f5a4b3c21\", \
             publisher = \"xyz\" }]\n",
        )
        .unwrap_err();
        assert!(
            bad.to_string().contains("services.uses") && bad.to_string().contains("64 hex digits"),
            "{bad}"
        );
    }

    #[test]
    fn the_home_quota_is_bytes_of_at_least_4_mib() {
        assert_eq!(parse("").unwrap().home_quota(), None, "none by default");
        assert_eq!(
            parse("[home]\nquota = \"8MiB\"\n").unwrap().home_quota(),
            Some(8 * MIB)
        );
        assert_eq!(
            parse("[home]\nquota = 4194304\n").unwrap().home_quota(),
            Some(4 * MIB)
        );
        for (text, found) in [
            ("quota = \"1MiB\"", "\"1MiB\""),
            ("quota = \"lots\"", "\"lots\""),
            ("quota = -1", "-1"),
            ("quota = true", "a boolean"),
        ] {
            let (field, f) = invalid_field(parse(&format!("[home]\n{text}\n")));
            assert_eq!(
                (field.as_str(), f.as_str()),
                ("home.quota", found),
                "{text}"
            );
        }
    }

    #[test]
    fn the_home_syncs_unless_the_manifest_says_otherwise() {
        assert!(parse("").unwrap().home_sync());
        assert!(parse("[home]\n").unwrap().home_sync());
        assert!(parse("[home]\nsync = true\n").unwrap().home_sync());
        assert!(!parse("[home]\nsync = false\n").unwrap().home_sync());
        match parse("[home]\nsync = \"no\"\n") {
            Err(ManifestError::WrongType { field, line, .. }) => {
                assert_eq!((field.as_str(), line), ("home.sync", 7))
            }
            other => panic!("expected WrongType, got {other:?}"),
        }
        match parse("[home]\nsynk = false\n") {
            Err(ManifestError::UnknownKey { table, key, .. }) => {
                assert_eq!((table.as_str(), key.as_str()), ("home", "synk"))
            }
            other => panic!("expected UnknownKey, got {other:?}"),
        }
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let manifest = parse("").unwrap();
        assert_eq!(
            manifest.id().to_string(),
            "0b8e1f7c-3c1d-4a55-9d0e-5f7f5e2a9c11"
        );
        assert_eq!(manifest.name(), "hello");
        assert_eq!(manifest.version(), "0.1.0");
        assert_eq!(manifest.entry(), Path::new("bin/hello"));
        assert!(manifest.provides().is_empty() && manifest.uses().is_empty());
        assert_eq!(manifest.limits(), DEFAULT_LIMITS);
        assert_eq!(DEFAULT_LIMITS.memory_bytes, 512 * 1024 * 1024);
        assert!(manifest.env().is_empty());
    }

    #[test]
    fn full_manifest_from_the_module_docs() {
        let manifest = parse(
            "[services]\nprovides = [\"6f1c2a57-2b1e-4f0e-9d43-0c7a3e5b8f21\"]\nuses = []\n\
             [limits]\nmemory = \"1GiB\"\nthreads = 8\nopen_files = 64\ncpus = \"1.5\"\n\
             [env]\nGREETING = \"hello\"\nLANG = \"de_DE.UTF-8\"\n",
        )
        .unwrap();
        assert_eq!(manifest.provides().len(), 1);
        assert_eq!(
            manifest.limits(),
            ResourceLimits {
                memory_bytes: 1 << 30,
                threads: 8,
                open_files: 64,
                cpu_millis: 1500,
            }
        );
        assert_eq!(manifest.env()["GREETING"], "hello");
    }

    #[test]
    fn memory_units() {
        for (text, bytes) in [
            ("memory = 16777216", 16 * MIB),
            ("memory = \"20000000\"", 20_000_000),
            ("memory = \"64MiB\"", 64 * MIB),
            ("memory = \"64 MiB\"", 64 * MIB),
            ("memory = \"65536KiB\"", 64 * MIB),
            ("memory = \"2GiB\"", 2 << 30),
            ("memory = \"20M\"", 20_000_000),
            ("memory = \"20MB\"", 20_000_000),
            ("memory = \"1G\"", 1_000_000_000),
            ("memory = \"1GB\"", 1_000_000_000),
            ("memory = \"17000K\"", 17_000_000),
            ("memory = \"17000000B\"", 17_000_000),
        ] {
            let manifest = parse(&format!("[limits]\n{text}\n")).unwrap();
            assert_eq!(manifest.limits().memory_bytes, bytes, "{text}");
        }
    }

    #[test]
    fn cpus_are_a_number_or_a_string_of_one_in_thousandths() {
        for (text, millis) in [
            ("cpus = 2", 2000),
            ("cpus = 1.5", 1500),
            ("cpus = 0.1", 100),
            ("cpus = \"0.25\"", 250),
            ("cpus = \"0.01\"", 10),
            ("cpus = \" 3.000 \"", 3000),
            ("cpus = 1024", 1_024_000),
        ] {
            let manifest = parse(&format!("[limits]\n{text}\n")).unwrap();
            assert_eq!(manifest.limits().cpu_millis, millis, "{text}");
        }
        assert_eq!(
            parse("").unwrap().limits().cpu_millis,
            1000,
            "default: one CPU"
        );
        for (text, found) in [
            ("cpus = 0", "0"),
            ("cpus = 0.001", "0.001"),
            ("cpus = \"0.0001\"", "\"0.0001\""),
            ("cpus = 1025", "1025"),
            ("cpus = -1", "-1"),
            ("cpus = \"1e3\"", "\"1e3\""),
            ("cpus = \"half\"", "\"half\""),
            ("cpus = \".5\"", "\".5\""),
            ("cpus = true", "a boolean"),
        ] {
            match parse(&format!("[limits]\n{text}\n")) {
                Err(ManifestError::InvalidValue {
                    field,
                    found: f,
                    expected,
                }) => {
                    assert_eq!(
                        (field.as_str(), f.as_str()),
                        ("limits.cpus", found),
                        "{text}"
                    );
                    assert_eq!(expected, CPUS_EXPECTED);
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        for (millis, text) in [(1500, "1.5"), (2000, "2"), (10, "0.01"), (250, "0.25")] {
            assert_eq!(format_cpus(millis), text);
            assert_eq!(parse_cpus(text), Some(millis));
        }
    }

    #[test]
    fn unknown_keys_name_the_key_its_table_and_line() {
        for (extra, table, key, line) in [
            ("[app2]\n", "", "app2", 6),
            ("color = 1\n", "app", "color", 6),
            ("[limits]\ncpu = 2\n", "limits", "cpu", 7),
            ("[services]\nexports = []\n", "services", "exports", 7),
        ] {
            match parse(extra) {
                Err(ManifestError::UnknownKey {
                    table: t,
                    key: k,
                    line: l,
                    message,
                }) => {
                    assert_eq!((t.as_str(), k.as_str(), l), (table, key, line), "{extra}");
                    assert!(message.contains(key), "{message}");
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        let dotted = Manifest::from_toml(&format!("limits.cpu = 2\n{APP}")).unwrap_err();
        assert!(
            matches!(&dotted, ManifestError::UnknownKey { table, key, line: 1, .. }
            if table == "limits" && key == "cpu")
        );
        let inline = Manifest::from_toml("app = { id = \"x\", colour = 1 }\n").unwrap_err();
        assert!(
            matches!(&inline, ManifestError::UnknownKey { table, key, line: 1, .. }
            if table == "app" && key == "colour")
        );
        let top = Manifest::from_toml("extra = 1\n").unwrap_err();
        assert_eq!(
            top.to_string().split(" (").next().unwrap(),
            "unknown key `extra` in the top level at line 1"
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        for (extra, field) in [
            ("[limits]\nthreads = \"many\"\n", "limits.threads"),
            ("[services]\nuses = \"x\"\n", "services.uses"),
            ("[env]\nA = 5\n", "env.A"),
        ] {
            match parse(extra) {
                Err(ManifestError::WrongType { field: f, .. }) => assert_eq!(f, field, "{extra}"),
                other => panic!("{extra}: {other:?}"),
            }
        }
        let err = Manifest::from_toml("[app]\nname = 5\n").unwrap_err();
        assert!(
            matches!(&err, ManifestError::WrongType { field, line: 2, .. } if field == "app.name")
        );
    }

    #[test]
    fn bad_values_name_the_field_and_what_was_found() {
        let replace = |key: &str, value: &str| {
            let line = APP.lines().find(|l| l.starts_with(key)).unwrap();
            Manifest::from_toml(&APP.replace(line, &format!("{key} = {value}")))
        };
        for (key, value, field, found) in [
            ("id", "\"not-a-uuid\"", "app.id", "\"not-a-uuid\""),
            ("name", "\"\"", "app.name", "\"\""),
            ("name", "\"hello world\"", "app.name", "\"hello world\""),
            ("version", "\"\"", "app.version", "\"\""),
            (
                "version",
                "\"1\\u001b[2J\"",
                "app.version",
                "\"1\\u{1b}[2J\"",
            ),
            ("entry", "\"/bin/sh\"", "app.entry", "\"/bin/sh\""),
            ("entry", "\"../x\"", "app.entry", "\"../x\""),
            ("entry", "\"bin//x\"", "app.entry", "\"bin//x\""),
            ("entry", "\"bin/\"", "app.entry", "\"bin/\""),
            ("entry", "\"./x\"", "app.entry", "\"./x\""),
            ("entry", "\"\"", "app.entry", "\"\""),
        ] {
            assert_eq!(
                invalid_field(replace(key, value)),
                (field.into(), found.into())
            );
        }
        let long = format!("\"{}\"", "a".repeat(65));
        assert_eq!(invalid_field(replace("name", &long)).0, "app.name");
        assert!(replace("name", &format!("\"{}\"", "a".repeat(64))).is_ok());

        for (extra, field, found) in [
            (
                "[limits]\nmemory = \"8MiB\"\n",
                "limits.memory",
                "8388608 bytes",
            ),
            ("[limits]\nmemory = \"lots\"\n", "limits.memory", "\"lots\""),
            ("[limits]\nmemory = \"5TiB\"\n", "limits.memory", "\"5TiB\""),
            (
                "[limits]\nmemory = \"99999999999999999999\"\n",
                "limits.memory",
                "\"99999999999999999999\"",
            ),
            ("[limits]\nmemory = -1\n", "limits.memory", "-1"),
            ("[limits]\nmemory = 1.5\n", "limits.memory", "a float"),
            ("[limits]\nthreads = 0\n", "limits.threads", "0"),
            ("[limits]\nthreads = 65537\n", "limits.threads", "65537"),
            ("[limits]\nopen_files = 15\n", "limits.open_files", "15"),
            ("[limits]\nopen_files = -3\n", "limits.open_files", "-3"),
            (
                "[services]\nuses = [\"nope\"]\n",
                "services.uses",
                "\"nope\"",
            ),
            ("[env]\n\"1X\" = \"a\"\n", "env", "the name \"1X\""),
            ("[env]\n\"A-B\" = \"a\"\n", "env", "the name \"A-B\""),
            (
                "[env]\nA = \"a\\u0000b\"\n",
                "env.A",
                "a value containing a NUL byte",
            ),
        ] {
            assert_eq!(
                invalid_field(parse(extra)),
                (field.into(), found.into()),
                "{extra}"
            );
        }
    }

    #[test]
    fn reserved_env_names_are_refused_with_a_reason() {
        for name in ["HOME", "PATH", "ELASTOS_IPC_FD", "LD_PRELOAD"] {
            match parse(&format!("[env]\n{name} = \"x\"\n")) {
                Err(err @ ManifestError::ReservedEnv { .. }) => {
                    assert!(err.to_string().contains("reserved"), "{err}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        assert!(parse("[env]\nLDX = \"x\"\nELASTOS = \"y\"\n").is_ok());
    }

    #[test]
    fn duplicate_services_are_refused() {
        let id = "6f1c2a57-2b1e-4f0e-9d43-0c7a3e5b8f21";
        let upper = id.to_uppercase();
        let err = parse(&format!("[services]\nuses = [\"{id}\", \"{upper}\"]\n")).unwrap_err();
        assert_eq!(
            err,
            ManifestError::DuplicateService {
                field: "services.uses",
                id: id.parse().unwrap()
            }
        );
    }

    #[test]
    fn missing_keys_are_named() {
        assert_eq!(
            Manifest::from_toml("").unwrap_err(),
            ManifestError::MissingKey { key: "app" }
        );
        let without_entry = APP.replace("entry = \"bin/hello\"\n", "");
        assert_eq!(
            Manifest::from_toml(&without_entry).unwrap_err(),
            ManifestError::MissingKey { key: "app.entry" }
        );
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let err = Manifest::from_toml("[app]\nid = \n").unwrap_err();
        assert!(
            matches!(err, ManifestError::Syntax { line: Some(2), .. }),
            "{err:?}"
        );
    }

    #[test]
    fn every_error_variant_formats() {
        let id: Uuid = "6f1c2a57-2b1e-4f0e-9d43-0c7a3e5b8f21".parse().unwrap();
        for (err, expected) in [
            (
                ManifestError::Syntax {
                    line: Some(3),
                    message: "bad".into(),
                },
                "manifest is not valid TOML at line 3: bad",
            ),
            (
                ManifestError::Syntax {
                    line: None,
                    message: "bad".into(),
                },
                "manifest is not valid TOML: bad",
            ),
            (
                ManifestError::UnknownKey {
                    table: "limits".into(),
                    key: "cpu".into(),
                    line: 7,
                    message: "unknown field `cpu`".into(),
                },
                "unknown key `cpu` in [limits] at line 7 (unknown field `cpu`); hint:",
            ),
            (
                ManifestError::WrongType {
                    field: "limits.threads".into(),
                    line: 4,
                    message: "m".into(),
                },
                "`limits.threads` at line 4 has the wrong type: m",
            ),
            (
                ManifestError::MissingKey { key: "app.id" },
                "`app.id` is missing; hint:",
            ),
            (
                ManifestError::InvalidValue {
                    field: "limits.memory".into(),
                    found: "\"lots\"".into(),
                    expected: "bytes".into(),
                },
                "invalid `limits.memory`: found \"lots\", expected bytes",
            ),
            (
                ManifestError::ReservedEnv {
                    name: "PATH".into(),
                    reason: "elastos sets PATH",
                },
                "`env.PATH` is reserved: elastos sets PATH; hint:",
            ),
            (
                ManifestError::DuplicateService {
                    field: "services.uses",
                    id,
                },
                "`services.uses` lists 6f1c2a57-2b1e-4f0e-9d43-0c7a3e5b8f21 more than once; hint:",
            ),
        ] {
            let text = err.to_string();
            assert!(text.starts_with(expected), "{text}");
        }
    }
}
