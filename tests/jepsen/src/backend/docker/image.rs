//! The node image: a rootfs of the server binary, the shared libraries it
//! links and the loader, imported with `docker import` (no registry, no base
//! image). `docker/build-image.sh` does the assembling; it is compiled into
//! this binary and run with `bash`, so there is one way to build the image.
//!
//! The image carries the SHA-256 of the binary it was built from as a label;
//! [`ensure`] rebuilds it when the label does not match the binary at hand.

use super::command::{args, docker, run};
use crate::Error;
use std::path::Path;

/// Label holding the binary's SHA-256 (hex), set by the build script.
const HASH_LABEL: &str = "org.flotilla.binary-sha256";
/// The image build script, as in `docker/build-image.sh`.
const BUILD_SCRIPT: &str = include_str!("../../../../../docker/build-image.sh");

/// Makes sure `tag` is an image of `binary`, building it if it is missing
/// or was built from another binary.
pub(super) async fn ensure(binary: &Path, tag: &str) -> Result<(), Error> {
    let binary = std::path::absolute(binary)
        .map_err(Error::io(format!("resolving {}", binary.display())))?;
    let wanted = sha256_hex(&binary).await?;
    let format = format!("{{{{ index .Config.Labels \"{HASH_LABEL}\" }}}}");
    let current = docker(&args(&["image", "inspect", "--format", &format, tag]))
        .await
        .unwrap_or_default();
    if current == wanted {
        tracing::debug!(tag, "image is up to date");
        return Ok(());
    }
    tracing::info!(tag, binary = %binary.display(), "building the node image");
    let build = [
        "-c".to_owned(),
        BUILD_SCRIPT.to_owned(),
        "build-image.sh".to_owned(),
        binary.display().to_string(),
        tag.to_owned(),
    ];
    run("bash", &build).await?;
    Ok(())
}

/// The SHA-256 of a file in lowercase hex, by `sha256sum` (as the build
/// script computes it).
async fn sha256_hex(path: &Path) -> Result<String, Error> {
    let listing = run("sha256sum", &[path.display().to_string()]).await?;
    match listing.split_whitespace().next() {
        Some(hash) if hash.len() == 64 => Ok(hash.to_owned()),
        _ => Err(Error::Command {
            command: format!("sha256sum {}", path.display()),
            status: "unexpected output".to_owned(),
            stderr: listing,
        }),
    }
}
