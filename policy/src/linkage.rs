//! How the entry is linked, read from its ELF header: it decides whether the jail may execute
//! the host's dynamic loader at all.
//!
//! The dynamic loader is a program like any other: executed directly, it loads and runs any
//! file it can read (`/lib64/ld-linux-x86-64.so.2 /bin/echo`), and Landlock only sees the
//! execution of the loader itself. So whoever may execute the loader may run every host program
//! it can read in `/usr`. A statically linked entry never needs the loader, so its jail gets no
//! execute right on it, and the app then runs nothing but the files of its bundle. A dynamically
//! linked entry needs it (the kernel executes it on every exec of the entry), and its jail cannot
//! tell the kernel's use of it from the app's.

use serde::{Deserialize, Serialize};

/// The ELF facts about the entry that matter to the jail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntryLinkage {
    /// An ELF executable without an interpreter (`PT_INTERP`): it needs no dynamic loader.
    Static,
    /// An ELF executable whose interpreter (`PT_INTERP`) is this path.
    Dynamic {
        /// The interpreter's path, as the ELF names it (lossy UTF-8).
        interpreter: String,
    },
    /// Not a 64-bit little-endian ELF file, or one whose headers are not in the bytes read (a
    /// script, or an unusual layout): treated as needing the dynamic loader, as before this was
    /// read.
    Unknown,
}

/// How many bytes of the entry [`EntryLinkage::from_elf_prefix`] needs at most: program headers
/// and the interpreter's path sit in the first page of every executable linkers produce.
pub const ELF_PREFIX_BYTES: usize = 64 * 1024;

const PT_INTERP: u32 = 3;

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
    .ok()
}

impl EntryLinkage {
    /// Reads the linkage from the first bytes of the entry (up to [`ELF_PREFIX_BYTES`]).
    pub fn from_elf_prefix(bytes: &[u8]) -> EntryLinkage {
        Self::parse(bytes).unwrap_or(EntryLinkage::Unknown)
    }

    fn parse(bytes: &[u8]) -> Option<EntryLinkage> {
        // 64-bit (ELFCLASS64), little-endian (ELFDATA2LSB): x86_64 and aarch64.
        if bytes.get(..6)? != b"\x7fELF\x02\x01" {
            return None;
        }
        let table = u64_at(bytes, 0x20)?;
        let entry_size = usize::from(u16_at(bytes, 0x36)?);
        let count = usize::from(u16_at(bytes, 0x38)?);
        if entry_size < 0x28 {
            return None;
        }
        for index in 0..count {
            let header = table.checked_add(index.checked_mul(entry_size)?)?;
            if u32_at(bytes, header)? != PT_INTERP {
                continue;
            }
            let offset = u64_at(bytes, header.checked_add(0x08)?)?;
            let size = u64_at(bytes, header.checked_add(0x20)?)?;
            let path = bytes.get(offset..offset.checked_add(size)?)?;
            let path = path.split(|b| *b == 0).next().unwrap_or_default();
            return Some(EntryLinkage::Dynamic {
                interpreter: String::from_utf8_lossy(path).into_owned(),
            });
        }
        Some(EntryLinkage::Static)
    }

    /// Whether the jail must let the app execute the host's dynamic loader: for every entry but
    /// a static one, or a dynamic one whose interpreter is in its own bundle (under `app_dir`).
    pub fn needs_host_loader(&self, app_dir: &str) -> bool {
        match self {
            EntryLinkage::Static => false,
            EntryLinkage::Dynamic { interpreter } => !interpreter
                .strip_prefix(app_dir)
                .is_some_and(|rest| rest.starts_with('/')),
            EntryLinkage::Unknown => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with the given program headers ((type, offset, size)) at 0x40
    /// and `tail` at 0x100.
    fn elf(headers: &[(u32, u64, u64)], tail: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x100];
        bytes[..6].copy_from_slice(b"\x7fELF\x02\x01");
        bytes[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        bytes[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        bytes[0x38..0x3a].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        for (i, (kind, offset, size)) in headers.iter().enumerate() {
            let at = 0x40 + i * 0x38;
            bytes[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            bytes[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            bytes[at + 0x20..at + 0x28].copy_from_slice(&size.to_le_bytes());
        }
        bytes.extend_from_slice(tail);
        bytes
    }

    #[test]
    fn an_elf_without_an_interpreter_is_static() {
        let linkage = EntryLinkage::from_elf_prefix(&elf(&[(1, 0, 0x100)], b""));
        assert_eq!(linkage, EntryLinkage::Static);
        assert!(!linkage.needs_host_loader("/app"));
    }

    #[test]
    fn pt_interp_names_the_interpreter() {
        let path = b"/lib64/ld-linux-x86-64.so.2\0";
        let bytes = elf(&[(1, 0, 0x100), (3, 0x100, path.len() as u64)], path);
        let linkage = EntryLinkage::from_elf_prefix(&bytes);
        assert_eq!(
            linkage,
            EntryLinkage::Dynamic {
                interpreter: "/lib64/ld-linux-x86-64.so.2".into()
            }
        );
        assert!(linkage.needs_host_loader("/app"));
    }

    #[test]
    fn an_interpreter_in_the_bundle_needs_no_host_loader() {
        let bundled = |path: &str| EntryLinkage::Dynamic {
            interpreter: path.into(),
        };
        assert!(!bundled("/app/lib/ld.so").needs_host_loader("/app"));
        assert!(bundled("/apple/ld.so").needs_host_loader("/app"));
        assert!(bundled("/app").needs_host_loader("/app"));
    }

    #[test]
    fn scripts_truncated_and_foreign_files_are_unknown_and_keep_the_loader() {
        let script = EntryLinkage::from_elf_prefix(b"#!/app/bin/sh\n");
        assert_eq!(script, EntryLinkage::Unknown);
        assert!(script.needs_host_loader("/app"));
        let mut elf32 = elf(&[], b"");
        elf32[4] = 1;
        assert_eq!(EntryLinkage::from_elf_prefix(&elf32), EntryLinkage::Unknown);
        // PT_INTERP pointing past the bytes read, and a header table past them.
        let beyond = elf(&[(3, 0x10_0000, 10)], b"");
        assert_eq!(
            EntryLinkage::from_elf_prefix(&beyond),
            EntryLinkage::Unknown
        );
        let mut no_table = elf(&[(1, 0, 0)], b"");
        no_table[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            EntryLinkage::from_elf_prefix(&no_table),
            EntryLinkage::Unknown
        );
    }
}
