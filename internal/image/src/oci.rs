//! OCI and Docker images as build sources.

use crate::deffile::{Definition, OciKind};
use anyhow::{bail, Result};
use std::path::Path;

pub(crate) fn populate(
    def: &Definition,
    kind: OciKind,
    from: &str,
    _rootfs: &Path,
    _warnings: &mut Vec<String>,
) -> Result<()> {
    bail!(
        "{}: {}:{from} is not supported yet",
        def.origin.display(),
        kind.agent()
    )
}
