//! rctr-image: the image layer above SIF and squashfs.
//!
//! - [`ImageSource::open`]: what to mount (SIF partition offset, plain squashfs, sandbox dir)
//!   after checking the image can run here, and reading files inside any of them.
//! - [`Definition`]: the subset of Apptainer definition files rctr builds from.
//! - [`build`]: directory / image / definition file to SIF, with Apptainer's layout;
//!   [`build_with`] also runs %post and %test through a [`SectionRunner`].
//! - [`inspect`]: labels, scripts, environment and definition, shaped like `apptainer inspect`.

mod build_image;
mod deffile;
mod files;
mod fsutil;
mod inspect;
mod labels;
mod layout;
mod sandbox;
mod scriptlets;
mod source;

pub use build_image::{build, build_with, BuildOptions, BuildReport};
pub use deffile::{Bootstrap, Definition, FileTransfer, PostSection};
pub use inspect::{
    inspect, read_attributes, Attributes, InspectData, InspectItem, InspectMetadata,
};
pub use labels::format_build_date;
pub use layout::DEFAULT_RUNSCRIPT;
pub use sandbox::resolve_in_root;
pub use scriptlets::{
    section_command, SectionRun, SectionRunner, BUILD_LABELS, POST_ENVIRONMENT, POST_SCRIPT,
};
pub use source::{ImageKind, ImageSource, INSPECT_METADATA_OBJECT};
