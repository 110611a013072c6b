//! The benchmark floor: the image's kernel with a trivial `/init` (`shoal-floor-init`, which
//! prints [`FLOOR_LINE`] and powers off). Nothing Shoal's init does can boot faster than this.

use std::fs::File;
use std::path::{Path, PathBuf};

use shoal_image_build::binaries::{self, Source};
use shoal_image_build::cpio::CpioWriter;
use shoal_image_build::profile::BinarySpec;

use crate::{Error, Result, workspace_root};

/// What `shoal-floor-init` prints on the console once it runs.
pub const FLOOR_LINE: &str = "SHOAL-FLOOR reached /init";

/// Builds `shoal-floor-init` statically (as image-build builds the image's binaries) and writes
/// `floor.cpio` into `dir`: `/init` and `/dev/console`. Returns the archive's path.
pub fn build_floor_initramfs(dir: &Path) -> Result<PathBuf> {
    let spec = BinarySpec {
        package: "shoal-test-helpers".into(),
        bin: "shoal-floor-init".into(),
    };
    let workspace = workspace_root();
    let built = binaries::provide(
        std::slice::from_ref(&spec),
        &Source::Build {
            workspace: &workspace,
        },
        |step| {
            tracing::info!("{step}");
        },
    )
    .map_err(|e| Error::ImageBuild {
        message: format!("building shoal-floor-init: {e}"),
    })?;
    let init = built.get(&spec).ok_or_else(|| Error::ImageBuild {
        message: "cargo produced no shoal-floor-init".into(),
    })?;
    let cpio_error = |e: shoal_image_build::Error| Error::ImageBuild {
        message: format!("floor initramfs: {e}"),
    };
    let mut archive = CpioWriter::new(0);
    archive.add_dir("/dev", 0o755).map_err(cpio_error)?;
    archive
        .add_char_device("/dev/console", 0o600, 5, 1)
        .map_err(cpio_error)?;
    archive
        .add_file_from("/init", 0o755, init)
        .map_err(cpio_error)?;
    let path = dir.join("floor.cpio");
    let file = File::create(&path).map_err(Error::io(format!("create {}", path.display())))?;
    archive.write_to(file).map_err(cpio_error)?;
    Ok(path)
}
