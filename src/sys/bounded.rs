//! Reading a file root trusts only so far (the state record, a policy
//! file): a regular file of bounded size, or a clear refusal. It is opened
//! with `O_NONBLOCK | O_NOFOLLOW`, so a FIFO cannot stall the run and a
//! planted link is not followed, and its type and size are checked on the
//! opened descriptor (`fstat`), never on the path. The read itself stops
//! one byte past the cap, so a file that grows meanwhile (or `/dev/zero`
//! under another name) cannot exhaust memory either.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The contents of the regular file `path`, at most `max` bytes. A path
/// that does not exist is `ErrorKind::NotFound`, as from `std::fs::read`;
/// a link, a FIFO, a device, a directory or a file over `max` bytes is
/// `ErrorKind::InvalidData` with a message that says which.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => refused("is a symbolic link, which is not followed"),
            _ => e,
        })?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(refused(&format!("is {what}, not a regular file")));
    }
    if meta.len() > max {
        return Err(too_large(meta.len(), max));
    }
    read_capped(file, max)
}

fn read_capped(file: File, max: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(too_large(buf.len() as u64, max));
    }
    Ok(buf)
}

fn too_large(len: u64, max: u64) -> io::Error {
    refused(&format!("is {len} bytes or more, over the {max} allowed"))
}

fn refused(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_within_the_cap_is_read() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("f");
        std::fs::write(&p, b"hello").expect("w");
        assert_eq!(read_regular(&p, 5).expect("read"), b"hello");
        let e = read_regular(&p, 4).expect_err("over the cap");
        assert!(e.to_string().contains("over the 4 allowed"), "{e}");
        let gone = read_regular(&d.path().join("none"), 4).expect_err("missing");
        assert_eq!(gone.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let started = std::time::Instant::now();
        let e = read_regular(&p, 1024).expect_err("a FIFO");
        assert!(e.to_string().contains("is a FIFO"), "{e}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "no wait for a writer"
        );
    }

    #[test]
    fn links_devices_and_directories_are_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let link = d.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).expect("symlink");
        let e = read_regular(&link, 1024).expect_err("a link");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = read_regular(Path::new("/dev/zero"), 1024).expect_err("a device");
        assert!(e.to_string().contains("is a device"), "{e}");
        let e = read_regular(d.path(), 1024).expect_err("a directory");
        assert!(e.to_string().contains("is a directory"), "{e}");
    }

    #[test]
    fn a_sparse_file_over_the_cap_is_refused_without_reading_it() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("sparse");
        let f = File::create(&p).expect("create");
        f.set_len(1 << 40).expect("1 TiB, sparse");
        let e = read_regular(&p, 4 << 20).expect_err("too large");
        assert!(e.to_string().contains("over the"), "{e}");
    }
}
