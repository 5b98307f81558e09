//! rctr-image: the image layer above SIF and squashfs.
//!
//! - [`ImageSource::open`]: what to mount (SIF partition offset, plain squashfs, sandbox dir)
//!   after checking the image can run here, and reading files inside any of them.
//! - [`Definition`]: the subset of Apptainer definition files rctr builds from.
//! - [`build`]: directory / image / definition file to SIF, with Apptainer's layout;
//!   [`build_with`] also runs %post and %test through a [`SectionRunner`].
//! - [`Reference`] / [`RegistryOptions`]: `docker://` images, fetched from registries into
//!   the user's blob cache.
//! - [`inspect`]: labels, scripts, environment and definition, shaped like `apptainer inspect`.

mod apps;
mod bootstrap;
mod build_image;
mod buildargs;
mod cache;
mod deffile;
mod files;
mod fsutil;
mod inspect;
mod labels;
mod layout;
mod oci;
mod progress;
mod registry;
mod sandbox;
mod scriptlets;
mod source;

pub use apps::{app_command, app_runscript, app_test, APPS_DIR};
pub use build_image::{build, build_with, BuildOptions, BuildReport};
pub use buildargs::BuildArgs;
pub use cache::cache_dir;
pub use deffile::{
    App, Bootstrap, Definition, DefinitionFile, FileTransfer, OciKind, PostSection, ScriptSection,
};
pub use inspect::{
    inspect, read_attributes, Attributes, InspectData, InspectItem, InspectMetadata,
};
pub use labels::format_build_date;
pub use layout::DEFAULT_RUNSCRIPT;
pub use registry::{Reference, RegistryOptions};
pub use sandbox::resolve_in_root;
pub use scriptlets::{
    section_command, SectionRun, SectionRunner, BUILD_LABELS, POST_ENVIRONMENT, POST_SCRIPT,
};
pub use source::{ImageKind, ImageSource, INSPECT_METADATA_OBJECT};
