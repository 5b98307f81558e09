//! Attaching image files to loop devices.
//!
//! Devices are configured with LO_FLAGS_AUTOCLEAR: the kernel detaches them
//! when the last mount and the last open descriptor go away, so a container
//! that dies (even by SIGKILL) cannot leave a loop device behind.

use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device. Keep it alive until the filesystem is mounted;
/// after that, dropping it only closes our descriptor (autoclear does the rest).
pub struct LoopDevice {
    pub path: PathBuf,
    pub file: File,
}

/// An image a caller opened and handed over as a descriptor (the checkpoint helper's):
/// read through it, never reopened by its path, which the caller could point elsewhere
/// in between.
static HANDED_OVER: std::sync::Mutex<Option<(PathBuf, std::os::fd::RawFd)>> =
    std::sync::Mutex::new(None);

/// From now on `image` is read through descriptor `fd` of this process.
pub fn read_image_through(image: &Path, fd: std::os::fd::RawFd) {
    if let Ok(mut h) = HANDED_OVER.lock() {
        *h = Some((image.to_path_buf(), fd));
    }
}

/// The path to open `image` by: its handed-over descriptor's, if it has one.
pub fn image_path_to_open(image: &Path) -> PathBuf {
    match HANDED_OVER.lock().ok().and_then(|h| h.clone()) {
        Some((path, fd)) if path == image => PathBuf::from(format!("/proc/self/fd/{fd}")),
        _ => image.to_path_buf(),
    }
}

/// Attaches `image` read-only, exposing `size` bytes (0 = to the end) from `offset`.
pub fn attach(image: &Path, offset: u64, size: u64) -> Result<LoopDevice> {
    let backing = File::open(image_path_to_open(image))
        .with_context(|| format!("cannot open image {}", image.display()))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .context("cannot open /dev/loop-control (loop devices need root and the loop module)")?;
    // Another process may grab the free device between GET_FREE and CONFIGURE:
    // that shows up as EBUSY, and we simply ask for the next free one.
    for _ in 0..64 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if number < 0 {
            return Err(std::io::Error::last_os_error()).context("no free loop device");
        }
        let path = PathBuf::from(format!("/dev/loop{number}"));
        let dev = match OpenOptions::new().read(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_node(&path, number as u64)?;
                OpenOptions::new()
                    .read(true)
                    .open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        // SAFETY: LoopConfig is plain C data, valid when zeroed.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing.as_raw_fd() as u32;
        config.info.lo_offset = offset;
        config.info.lo_sizelimit = size;
        config.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
        let name = image.as_os_str().as_encoded_bytes();
        let n = name.len().min(LO_NAME_SIZE - 1);
        config.info.lo_file_name[..n].copy_from_slice(&name[..n]);
        // SAFETY: LOOP_CONFIGURE reads a loop_config, which `config` is laid out as.
        let rc = unsafe {
            libc::ioctl(
                dev.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        };
        if rc == 0 {
            rctr_log::debug!(
                "loop device {}: {} from offset {offset} ({} bytes), read-only, autoclear",
                path.display(),
                image.display(),
                if size == 0 {
                    "all".to_string()
                } else {
                    size.to_string()
                }
            );
            return Ok(LoopDevice { path, file: dev });
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(err).with_context(|| {
                format!("cannot set up {} for {}", path.display(), image.display())
            });
        }
    }
    bail!(
        "no free loop device for {} after 64 attempts",
        image.display()
    )
}

/// Opens the existing loop device `path` if it is attached read-only to exactly `image`
/// (same file by device and inode) at `offset` with `size`; None otherwise.
pub fn open_attached(path: &Path, image: &Path, offset: u64, size: u64) -> Option<LoopDevice> {
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(image_path_to_open(image)).ok()?;
    let dev = OpenOptions::new().read(true).open(path).ok()?;
    // SAFETY: LoopInfo64 is plain C data, valid when zeroed.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 fills a loop_info64, which `info` is laid out as.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            LOOP_GET_STATUS64,
            &mut info as *mut LoopInfo64,
        )
    };
    (rc == 0
        && info.lo_device == want.dev()
        && info.lo_inode == want.ino()
        && info.lo_offset == offset
        && info.lo_sizelimit == size
        && info.lo_flags & LO_FLAGS_READ_ONLY != 0)
        .then(|| LoopDevice {
            path: path.to_path_buf(),
            file: dev,
        })
}

fn create_node(path: &Path, number: u64) -> Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    match mknod(
        path,
        SFlag::S_IFBLK,
        Mode::from_bits_truncate(0o660),
        makedev(7, number),
    ) {
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}
