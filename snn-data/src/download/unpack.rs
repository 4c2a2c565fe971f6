//! Unpacking verified archives into place.

use std::fs::{self, File};
use std::io;
use std::path::Path;

use super::{DownloadError, Unpack};

/// Unpacks a verified archive in `dir` into a scratch folder, then renames the folder it
/// creates into place, so that a folder under its final name is always complete.
pub(super) fn unpack(archive: &Path, dir: &Path, how: &Unpack) -> Result<(), DownloadError> {
    let Some(creates) = how.creates() else {
        return Ok(());
    };
    let target = dir.join(creates);
    if target.is_dir() {
        return Ok(());
    }
    let scratch = dir.join(format!(".{creates}.unpacking"));
    if scratch.exists() {
        fs::remove_dir_all(&scratch).map_err(|e| DownloadError::io("delete", &scratch, e))?;
    }
    fs::create_dir_all(&scratch).map_err(|e| DownloadError::io("create", &scratch, e))?;
    let failed = |reason: String| DownloadError::Unpack {
        archive: archive.to_path_buf(),
        reason,
    };
    let opened = File::open(archive).map_err(|e| DownloadError::io("open", archive, e))?;
    let result = match how {
        Unpack::Keep => Ok(()),
        Unpack::TarGz { .. } => {
            let mut tar =
                tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(opened)));
            tar.set_preserve_permissions(false);
            tar.unpack(&scratch).map_err(|e| failed(e.to_string()))
        }
        Unpack::Zip { .. } => zip::ZipArchive::new(io::BufReader::new(opened))
            .and_then(|mut z| z.extract(&scratch))
            .map_err(|e| failed(e.to_string())),
    };
    let result = result.and_then(|()| {
        let made = scratch.join(creates);
        if !made.is_dir() {
            return Err(failed(format!("it holds no folder `{creates}`")));
        }
        fs::rename(&made, &target).map_err(|e| DownloadError::io("rename", &made, e))
    });
    let _ = fs::remove_dir_all(&scratch);
    result
}
