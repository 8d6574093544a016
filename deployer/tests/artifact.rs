//! Tests of `deployer::artifact`: the reproducible zip, the glibc check, the choice of
//! builder, and one real release build of the function.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use deployer::artifact::{
    self, Architecture, Artifact, BuildError, BuildOptions, Builder, CargoLambda, Plan, Purpose,
    Toolchain,
};

/// Zips `contents` as a fake binary in a fresh directory; returns the directory (kept alive),
/// the zip's path, its sha256 and size.
fn package_bytes(contents: &[u8]) -> (tempfile::TempDir, PathBuf, String, u64) {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("bootstrap-input");
    fs::write(&binary, contents).unwrap();
    let zip_path = dir.path().join("out").join("bootstrap.zip");
    let (sha256, size) = artifact::package(&binary, &zip_path).unwrap();
    (dir, zip_path, sha256, size)
}

/// The single entry of the zip at `path`: (name, unix mode, (y, m, d, h, min, s), bytes,
/// compression, whether it has extra fields).
struct Entry {
    name: String,
    mode: Option<u32>,
    modified: (u16, u8, u8, u8, u8, u8),
    bytes: Vec<u8>,
    compression: zip::CompressionMethod,
    extra_len: usize,
}

fn only_entry(path: &Path) -> Entry {
    let mut archive = zip::ZipArchive::new(fs::File::open(path).unwrap()).unwrap();
    assert_eq!(archive.len(), 1, "the zip must hold exactly one entry");
    let mut file = archive.by_index(0).unwrap();
    let time = file.last_modified().expect("the entry has a timestamp");
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).unwrap();
    Entry {
        name: file.name().unwrap().into_owned(),
        mode: file.unix_mode(),
        modified: (
            time.year(),
            time.month(),
            time.day(),
            time.hour(),
            time.minute(),
            time.second(),
        ),
        compression: file.compression(),
        extra_len: file.extra_data().map_or(0, |extra| extra.len()),
        bytes,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn the_zip_holds_only_an_executable_bootstrap_with_the_input_bytes() {
    let contents: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (_dir, zip_path, sha256, size) = package_bytes(&contents);

    let entry = only_entry(&zip_path);
    assert_eq!(entry.name, "bootstrap");
    assert_eq!(entry.mode, Some(0o100_755), "a regular file with mode 0755");
    assert_eq!(entry.modified, (1980, 1, 1, 0, 0, 0));
    assert_eq!(entry.compression, zip::CompressionMethod::Deflated);
    assert_eq!(entry.extra_len, 0, "no extra fields that could vary");
    assert_eq!(entry.bytes, contents);

    let zip_bytes = fs::read(&zip_path).unwrap();
    assert_eq!(size, zip_bytes.len() as u64);
    assert_eq!(sha256, sha256_hex(&zip_bytes));
    assert!(
        size < contents.len() as u64 / 4,
        "repetitive input should deflate well: {size} bytes"
    );
}

#[test]
fn packaging_the_same_input_twice_gives_identical_bytes() {
    let contents = b"\x7fELF not really, but the same bytes every time".repeat(100);
    let (_a, first, sha_a, size_a) = package_bytes(&contents);
    // A different directory, name and moment: none of them may reach the zip.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (_b, second, sha_b, size_b) = package_bytes(&contents);

    assert_eq!(fs::read(&first).unwrap(), fs::read(&second).unwrap());
    assert_eq!(sha_a, sha_b);
    assert_eq!(size_a, size_b);

    let (_c, _, sha_c, _) = package_bytes(b"other contents");
    assert_ne!(sha_a, sha_c, "different binaries give different zips");
}

#[test]
fn packaging_replaces_an_existing_zip_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("bin");
    let zip_path = dir.path().join("bootstrap.zip");
    fs::write(&zip_path, b"stale").unwrap();
    fs::write(&binary, b"fresh binary").unwrap();

    artifact::package(&binary, &zip_path).unwrap();

    assert_eq!(only_entry(&zip_path).bytes, b"fresh binary");
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "only the binary and the zip remain: {names:?}"
    );
}

#[test]
fn packaging_takes_only_the_binary_whatever_lies_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let binary = dir.path().join("bootstrap");
    fs::write(&binary, b"\x7fELF the function").unwrap();
    // What a careless build directory might hold next to the binary.
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    fs::write(
        dir.path().join(".env"),
        format!("AWS_SECRET_ACCESS_KEY={secret}\n"),
    )
    .unwrap();
    fs::create_dir(dir.path().join(".aws")).unwrap();
    fs::write(
        dir.path().join(".aws").join("credentials"),
        format!("[default]\naws_secret_access_key = {secret}\n"),
    )
    .unwrap();
    fs::write(dir.path().join("bootstrap.d"), "deps").unwrap();
    let zip_path = dir.path().join("bootstrap.zip");

    artifact::package(&binary, &zip_path).unwrap();

    let entry = only_entry(&zip_path);
    assert_eq!(entry.name, "bootstrap");
    assert_eq!(entry.bytes, b"\x7fELF the function");
    let archive = zip::ZipArchive::new(fs::File::open(&zip_path).unwrap()).unwrap();
    assert!(archive.comment().is_empty(), "no archive comment");
    // Names are stored as they are, so a neighbour that slipped in would show.
    let zip_bytes = fs::read(&zip_path).unwrap();
    for needle in [
        &b".env"[..],
        b"credentials",
        b"bootstrap.d",
        secret.as_bytes(),
    ] {
        assert!(
            !zip_bytes.windows(needle.len()).any(|w| w == needle),
            "the zip holds {}",
            String::from_utf8_lossy(needle)
        );
    }
}

/// Whether `bytes` hold an AWS access key id: `AKIA`/`ASIA` and 16 more of `[A-Z0-9]`.
fn access_key_id_in(bytes: &[u8]) -> Option<String> {
    bytes.windows(20).find_map(|w| {
        let prefixed = w.starts_with(b"AKIA") || w.starts_with(b"ASIA");
        let rest = w[4..]
            .iter()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        (prefixed && rest).then(|| String::from_utf8_lossy(w).into_owned())
    })
}

#[test]
fn packaging_a_missing_binary_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-binary");
    let err = artifact::package(&missing, &dir.path().join("b.zip")).unwrap_err();
    assert!(matches!(err, BuildError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-binary"), "{err}");
}

#[test]
fn the_content_key_is_named_by_the_sha256() {
    let sha256 = "ab".repeat(32);
    let artifact = Artifact {
        zip_path: PathBuf::from("target/lambda/function/bootstrap.zip"),
        binary_path: PathBuf::from("target/release/bootstrap"),
        sha256: sha256.clone(),
        size: 1,
        architecture: Architecture::X86_64,
        builder: Builder::CargoLambda,
    };
    assert_eq!(
        artifact.content_key(),
        format!("usersync/bootstrap-{sha256}.zip")
    );
}

#[test]
fn required_glibc_reads_a_real_glibc_binary() {
    // This test's own executable is linked against the machine's glibc (the only installed
    // target is x86_64-unknown-linux-gnu), and Rust's std needs at least glibc 2.2.
    let own = std::env::current_exe().unwrap();
    let (major, minor) = artifact::required_glibc(&own)
        .unwrap()
        .expect("a glibc-linked binary requires GLIBC_x.y versions");
    assert_eq!(major, 2);
    assert!((2..100).contains(&minor), "implausible GLIBC_2.{minor}");

    if Path::new("/bin/ls").exists() {
        let ls = artifact::required_glibc(Path::new("/bin/ls")).unwrap();
        assert!(matches!(ls, Some((2, _))), "/bin/ls needs {ls:?}");
    }
}

#[test]
fn required_glibc_rejects_files_that_are_not_elf() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8]); 4] = [
        ("text", b"#!/bin/sh\necho hello\n"),
        ("empty", b""),
        // ELF magic followed by garbage: must be an error, not a panic.
        ("truncated-elf", b"\x7fELF\x02\x01\x01\x00\x00\x00"),
        ("bad-sections", &corrupt_section_headers()),
    ];
    for (name, contents) in cases {
        let path = dir.path().join(name);
        fs::write(&path, contents).unwrap();
        let err = artifact::required_glibc(&path).unwrap_err();
        assert!(matches!(err, BuildError::NotElf { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains(name), "{err}");
    }

    let missing = artifact::required_glibc(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(missing, BuildError::Io { .. }), "{missing:?}");
}

/// The first 64 bytes of this test's executable (a valid ELF header) with the section header
/// table pointed past the end of the file.
fn corrupt_section_headers() -> Vec<u8> {
    let own = fs::read(std::env::current_exe().unwrap()).unwrap();
    let mut header = own[..64].to_vec();
    header[0x28..0x30].copy_from_slice(&u64::MAX.to_le_bytes()); // e_shoff
    header
}

#[test]
fn glibc_up_to_2_34_goes_to_aws_and_newer_is_refused_with_the_fix() {
    let binary = Path::new("target/release/bootstrap");
    for ok in [None, Some((2, 17)), Some((2, 34)), Some((1, 99))] {
        artifact::check_glibc(binary, Architecture::Arm64, ok)
            .unwrap_or_else(|err| panic!("{ok:?} should pass: {err}"));
    }
    for refused in [Some((2, 35)), Some((2, 39)), Some((3, 0))] {
        let err = artifact::check_glibc(binary, Architecture::Arm64, refused).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, BuildError::GlibcTooNew { .. }), "{err:?}");
        assert!(message.contains("target/release/bootstrap"), "{message}");
        assert!(message.contains("cargo-lambda"), "{message}");
        assert!(message.contains("musl"), "{message}");
        assert!(
            message.contains("rustup target add aarch64-unknown-linux-musl"),
            "{message}"
        );
        assert!(message.contains("2.34"), "{message}");
    }
}

fn toolchain(host: &str, cargo_lambda: bool, musl: &[&str]) -> Toolchain {
    Toolchain {
        cargo_lambda: cargo_lambda.then(|| CargoLambda {
            program: None,
            version: "1.9.2".to_owned(),
        }),
        host: host.to_owned(),
        musl_targets: musl.iter().map(|t| (*t).to_owned()).collect(),
    }
}

fn options(architecture: Option<Architecture>, purpose: Purpose) -> BuildOptions {
    BuildOptions {
        architecture,
        purpose,
    }
}

const LINUX_X86: &str = "x86_64-unknown-linux-gnu";

#[test]
fn cargo_lambda_is_preferred_for_any_architecture() {
    let tools = toolchain(LINUX_X86, true, &["x86_64-unknown-linux-musl"]);
    for arch in [Architecture::Arm64, Architecture::X86_64] {
        let plan = artifact::plan(&options(Some(arch), Purpose::Aws), &tools).unwrap();
        assert_eq!(plan.builder, Builder::CargoLambda);
        assert_eq!(plan.architecture, arch);
    }
}

#[test]
fn an_installed_musl_target_is_used_next() {
    let tools = toolchain(LINUX_X86, false, &["aarch64-unknown-linux-musl"]);
    let plan = artifact::plan(&options(Some(Architecture::Arm64), Purpose::Aws), &tools).unwrap();
    assert_eq!(
        plan,
        Plan {
            architecture: Architecture::Arm64,
            builder: Builder::Cargo {
                target: "aarch64-unknown-linux-musl".to_owned()
            },
            cargo_target: Some("aarch64-unknown-linux-musl".to_owned()),
        }
    );
}

#[test]
fn without_either_the_host_builds_for_its_own_architecture() {
    let tools = toolchain(LINUX_X86, false, &[]);
    for purpose in [Purpose::Aws, Purpose::Local] {
        for requested in [None, Some(Architecture::X86_64)] {
            let plan = artifact::plan(&options(requested, purpose), &tools).unwrap();
            assert_eq!(plan.architecture, Architecture::X86_64);
            assert_eq!(
                plan.builder,
                Builder::Cargo {
                    target: LINUX_X86.to_owned()
                }
            );
            assert_eq!(plan.cargo_target, None, "host builds need no --target");
        }
    }
}

#[test]
fn the_default_architecture_is_the_hosts() {
    let tools = toolchain("aarch64-unknown-linux-gnu", true, &[]);
    let plan = artifact::plan(&options(None, Purpose::Aws), &tools).unwrap();
    assert_eq!(plan.architecture, Architecture::Arm64);
}

#[test]
fn arm64_without_cargo_lambda_or_its_musl_target_is_refused_with_the_fix() {
    // An x86_64 musl target does not help an arm64 build.
    let tools = toolchain(LINUX_X86, false, &["x86_64-unknown-linux-musl"]);
    for purpose in [Purpose::Aws, Purpose::Local] {
        let err = artifact::plan(&options(Some(Architecture::Arm64), purpose), &tools).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, BuildError::ArchitectureUnavailable { .. }),
            "{err:?}"
        );
        // Everything either way needs: cargo-lambda with zig (from PyPI too) and the glibc
        // target's standard library, or the musl target with a cross C compiler and linker
        // for aws-lc-sys.
        for needed in [
            "arm64",
            "cargo-lambda",
            "zig",
            "`pip install cargo-lambda`",
            "CARGO_LAMBDA",
            "`cargo install --locked cargo-lambda`",
            "rustup target add aarch64-unknown-linux-gnu",
            "rustup target add aarch64-unknown-linux-musl",
            "apt-get install gcc-aarch64-linux-gnu",
            "CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc",
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc",
        ] {
            assert!(message.contains(needed), "no {needed:?} in: {message}");
        }
    }
    // And the other way round, from an arm64 host.
    let tools = toolchain("aarch64-unknown-linux-gnu", false, &[]);
    let message = artifact::plan(&options(Some(Architecture::X86_64), Purpose::Aws), &tools)
        .unwrap_err()
        .to_string();
    for needed in [
        "rustup target add x86_64-unknown-linux-gnu",
        "apt-get install gcc-x86-64-linux-gnu",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_LINKER=x86_64-linux-gnu-gcc",
    ] {
        assert!(message.contains(needed), "no {needed:?} in: {message}");
    }
}

#[test]
fn a_non_linux_host_build_is_only_for_local_use() {
    let tools = toolchain("aarch64-apple-darwin", false, &[]);
    let local = artifact::plan(&options(None, Purpose::Local), &tools).unwrap();
    assert_eq!(local.architecture, Architecture::Arm64);

    let err = artifact::plan(&options(None, Purpose::Aws), &tools).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, BuildError::UnsupportedHost { .. }), "{err:?}");
    assert!(message.contains("aarch64-apple-darwin"), "{message}");
    assert!(message.contains("cargo-lambda"), "{message}");
    assert!(message.contains("aarch64-unknown-linux-musl"), "{message}");
}

#[test]
fn an_unknown_host_architecture_needs_an_explicit_one() {
    let tools = toolchain("riscv64gc-unknown-linux-gnu", true, &[]);
    let err = artifact::plan(&options(None, Purpose::Local), &tools).unwrap_err();
    assert!(matches!(err, BuildError::UnsupportedHost { .. }), "{err:?}");
    let plan = artifact::plan(&options(Some(Architecture::Arm64), Purpose::Local), &tools).unwrap();
    assert_eq!(plan.builder, Builder::CargoLambda);
}

/// The one real build: compiles the function in release mode (a few minutes the first
/// time) and checks the zip against the binary it was made from.
#[test]
fn build_for_local_use_packages_the_built_binary() {
    let mut steps = Vec::new();
    let built = artifact::build(&options(None, Purpose::Local), &mut |step| {
        eprintln!("{step}");
        steps.push(step.to_owned());
    })
    .unwrap_or_else(|err| panic!("build failed: {}", deployer::errors::chain(&err)));

    assert_eq!(built.zip_path, artifact::zip_path());
    assert!(built.zip_path.ends_with("lambda/function/bootstrap.zip"));
    assert!(!steps.is_empty(), "progress was reported");

    let binary = fs::read(&built.binary_path).unwrap();
    assert!(binary.starts_with(b"\x7fELF"), "a Linux binary");
    let zip_bytes = fs::read(&built.zip_path).unwrap();
    assert_eq!(built.size, zip_bytes.len() as u64);
    assert_eq!(built.sha256, sha256_hex(&zip_bytes));
    assert!(built.content_key().contains(&built.sha256));

    let entry = only_entry(&built.zip_path);
    assert_eq!(entry.name, "bootstrap");
    assert_eq!(entry.mode, Some(0o100_755));
    assert!(entry.bytes == binary, "the zip holds the built binary");
    let archive = zip::ZipArchive::new(fs::File::open(&built.zip_path).unwrap()).unwrap();
    assert!(archive.comment().is_empty(), "no archive comment");

    // No credentials reach the artifact: none of the shape of an access key id, and none of
    // this environment's (a build that captured them with env!/option_env! would show here).
    assert_eq!(
        access_key_id_in(&binary),
        None,
        "an access key id in bootstrap"
    );
    for variable in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        let Some(value) = std::env::var(variable).ok().filter(|v| v.len() >= 16) else {
            continue;
        };
        assert!(
            !binary.windows(value.len()).any(|w| w == value.as_bytes()),
            "bootstrap holds the value of {variable}"
        );
    }

    // This machine's build is for its own architecture.
    let host_arch = if cfg!(target_arch = "aarch64") {
        Architecture::Arm64
    } else {
        Architecture::X86_64
    };
    assert_eq!(built.architecture, host_arch);
    if let Builder::Cargo { target } = &built.builder {
        assert!(target.contains("-linux-"), "{target}");
    }
}
