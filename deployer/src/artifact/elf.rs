//! Checking the built binary before it is packaged: its instruction set and the newest glibc
//! it needs, read from its ELF headers with `object`, so a binary that would not start on
//! Lambda is refused here rather than at its first invocation.

use std::path::Path;

use object::read::elf::{FileHeader, SectionTable};
use object::{elf, Endianness, FileKind};

use super::plan::{musl_target, Plan, Purpose};
use super::{read, Architecture, BuildError, MAX_AWS_GLIBC};

/// Decides whether a binary needing glibc `required` (`None`: no glibc, such as a musl or
/// static binary) may go to real AWS: only up to [`MAX_AWS_GLIBC`]. `architecture` picks the
/// musl target the error suggests.
pub fn check_glibc(
    binary: &Path,
    architecture: Architecture,
    required: Option<(u32, u32)>,
) -> Result<(), BuildError> {
    match required {
        Some(version) if version > MAX_AWS_GLIBC => Err(BuildError::GlibcTooNew {
            binary: binary.to_owned(),
            required: version,
            musl_target: musl_target(architecture),
        }),
        _ => Ok(()),
    }
}

/// The newest `GLIBC_x.y` symbol version `binary` requires (from its `.gnu.version_r`
/// section), or `None` when it requires none (static or musl binaries).
///
/// Patch levels are dropped: `GLIBC_2.2.5` is `(2, 2)`. A file that is not ELF is an error.
pub fn required_glibc(binary: &Path) -> Result<Option<(u32, u32)>, BuildError> {
    let data = read(binary)?;
    inspect_elf(&data)
        .map(|info| info.glibc)
        .map_err(|reason| BuildError::NotElf {
            path: binary.to_owned(),
            reason,
        })
}

/// What the ELF headers say about a binary.
struct ElfInfo {
    /// The instruction set, when it is one Lambda runs.
    architecture: Option<Architecture>,
    /// The `e_machine` name, for messages.
    machine: String,
    /// The newest glibc version required, if any.
    glibc: Option<(u32, u32)>,
}

fn inspect_elf(data: &[u8]) -> Result<ElfInfo, String> {
    match FileKind::parse(data).map_err(|e| e.to_string())? {
        FileKind::Elf64 => inspect_elf_as::<elf::FileHeader64<Endianness>>(data),
        FileKind::Elf32 => inspect_elf_as::<elf::FileHeader32<Endianness>>(data),
        other => Err(format!("it is a {other:?} file, not ELF")),
    }
}

fn inspect_elf_as<Elf: FileHeader<Endian = Endianness>>(data: &[u8]) -> Result<ElfInfo, String> {
    let header = Elf::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let machine = header.e_machine(endian);
    let sections = header.sections(endian, data).map_err(|e| e.to_string())?;
    Ok(ElfInfo {
        architecture: match machine {
            elf::EM_X86_64 => Some(Architecture::X86_64),
            elf::EM_AARCH64 => Some(Architecture::Arm64),
            _ => None,
        },
        machine: machine.to_string(),
        glibc: newest_glibc(&sections, endian, data).map_err(|e| e.to_string())?,
    })
}

fn newest_glibc<Elf: FileHeader<Endian = Endianness>>(
    sections: &SectionTable<'_, Elf>,
    endian: Endianness,
    data: &[u8],
) -> object::Result<Option<(u32, u32)>> {
    let Some((mut needs, link)) = sections.gnu_verneed(endian, data)? else {
        return Ok(None);
    };
    let strings = sections.strings(endian, data, link)?;
    let mut newest = None;
    while let Some((_, mut auxes)) = needs.next()? {
        while let Some(aux) = auxes.next()? {
            let version = glibc_version(aux.name(endian, strings)?);
            newest = newest.max(version);
        }
    }
    Ok(newest)
}

/// Parses a symbol version name such as `GLIBC_2.34` or `GLIBC_2.2.5` into (major, minor).
fn glibc_version(name: &[u8]) -> Option<(u32, u32)> {
    let name = std::str::from_utf8(name).ok()?;
    let version = name.strip_prefix("GLIBC_")?;
    // Linking with `-z pack-relative-relocs` adds this marker instead of a numbered version;
    // only glibc 2.36 and later understand it.
    if version == "ABI_DT_RELR" {
        return Some((2, 36));
    }
    let mut parts = version.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Checks the built binary against the plan: the requested instruction set and, for AWS, a
/// Linux ELF whose glibc Lambda has.
pub(super) fn verify(binary: &Path, plan: &Plan, purpose: Purpose) -> Result<(), BuildError> {
    let data = read(binary)?;
    let info = match inspect_elf(&data) {
        Ok(info) => info,
        // A local host may run a native non-ELF build (such as Mach-O on macOS).
        Err(_) if purpose == Purpose::Local => return Ok(()),
        Err(reason) => {
            return Err(BuildError::NotElf {
                path: binary.to_owned(),
                reason,
            })
        }
    };
    if info.architecture != Some(plan.architecture) {
        return Err(BuildError::WrongArchitecture {
            binary: binary.to_owned(),
            expected: plan.architecture,
            found: info.machine,
        });
    }
    if purpose == Purpose::Aws {
        check_glibc(binary, plan.architecture, info.glibc)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_version_names_parse() {
        assert_eq!(glibc_version(b"GLIBC_2.34"), Some((2, 34)));
        assert_eq!(glibc_version(b"GLIBC_2.2.5"), Some((2, 2)));
        assert_eq!(glibc_version(b"GLIBC_ABI_DT_RELR"), Some((2, 36)));
        assert_eq!(glibc_version(b"GLIBC_PRIVATE"), None);
        assert_eq!(glibc_version(b"GCC_3.0"), None);
        assert_eq!(glibc_version(b"GLIBC_2"), None);
    }
}
