//! Packaging the binary as a deterministic zip: the same binary always gives the same bytes,
//! so the zip's SHA-256 can name it in S3.

use std::fs;
use std::io::{Cursor, Write};
use std::path::Path;

use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, System, ZipWriter};

use super::{read, BuildError, BINARY, ZIP_ENTRY_MODE};

/// Packages `binary` as the single entry `bootstrap` (mode 0755, timestamp 1980-01-01
/// 00:00:00, deflated, no extra fields) of a zip written atomically to `zip_path`, and returns
/// the zip's hex SHA-256 and size. The same binary always gives the same bytes.
pub fn package(binary: &Path, zip_path: &Path) -> Result<(String, u64), BuildError> {
    let contents = read(binary)?;
    let bytes = zip_bytes(&contents).map_err(|source| BuildError::Zip {
        path: zip_path.to_owned(),
        source,
    })?;
    write_atomically(zip_path, &bytes)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok((sha256, bytes.len() as u64))
}

fn zip_bytes(contents: &[u8]) -> zip::result::ZipResult<Vec<u8>> {
    // Every field that would otherwise come from the clock, the host system or the zip
    // crate's enabled features is fixed here, so that the output depends on `contents` only.
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(9))
        .last_modified_time(DateTime::default())
        .system(System::Unix)
        .unix_permissions(ZIP_ENTRY_MODE)
        .large_file(false);
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    writer.start_file(BINARY, options)?;
    writer.write_all(contents)?;
    Ok(writer.finish()?.into_inner())
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| BuildError::Io {
            action,
            path,
            source,
        }
    };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    }
    // A temporary file in the same directory, renamed over the target: readers (such as a
    // concurrent upload) see the old zip or the new one, never half of one. Its name is unique
    // (tempfile), so builds racing in one process (tests starting sessions side by side) each
    // rename their own file.
    let name = path.file_name().map_or_else(
        || "bootstrap.zip".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir.unwrap_or_else(|| Path::new(".")))
        .map_err(io("create a temporary file beside", path))?;
    write_and_sync(temp.as_file(), bytes).map_err(io("write", temp.path()))?;
    // On failure the temporary file is removed when dropped.
    temp.persist(path)
        .map(drop)
        .map_err(|err| io("replace", path)(err.error))
}

fn write_and_sync(mut file: &fs::File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}
