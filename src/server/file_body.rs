//! Bodies of cached blobs, streamed from the blob file without copying it through user space.
//!
//! `Mmap` (default): the file is mapped in windows of [`MMAP_WINDOW`] bytes, each handed to hyper as a
//! `Bytes` that owns its mapping; the kernel copies straight from the page cache to the socket, as `sendfile`
//! does, and a window is unmapped as soon as it was written, so resident memory stays flat whatever the blob
//! size. Small blobs are read in one `pread` (cheaper than a mapping). Blob files are immutable once renamed
//! into place (prune unlinks, which does not disturb a live mapping), so a mapping can't see a truncation.
//! `Buffered`: large sequential `read`s, for filesystems where mapping is unwise (e.g. network mounts).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use memmap2::{Advice, MmapOptions};

use crate::config::BlobIo;

/// Blobs up to this size are answered with one read.
const SMALL_BLOB: u64 = 64 * 1024;
/// Size of each mapped window.
const MMAP_WINDOW: u64 = 2 * 1024 * 1024;
/// Size of each read in buffered mode.
const READ_CHUNK: u64 = 256 * 1024;

/// A body of `len` bytes of `file` from `start`.
pub fn body(file: File, start: u64, len: u64, mode: BlobIo) -> io::Result<Body> {
    if len <= SMALL_BLOB {
        return Ok(Body::from(read_at(&file, start, len as usize)?));
    }
    let file = Arc::new(file);
    let end = start + len;
    let stream = futures::stream::try_unfold(start, move |pos| {
        let file = file.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let chunk = match mode {
                BlobIo::Mmap => map_window(&file, pos, (end - pos).min(MMAP_WINDOW))?,
                BlobIo::Buffered => {
                    let want = (end - pos).min(READ_CHUNK) as usize;
                    crate::blocking::spawn(move || read_at(&file, pos, want))
                        .await
                        .map_err(io::Error::other)??
                }
            };
            let next = pos + chunk.len() as u64;
            Ok::<_, io::Error>(Some((chunk, next)))
        }
    });
    Ok(Body::from_stream(stream))
}

/// Reads exactly `len` bytes at `offset`.
fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(len);
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf.freeze())
}

/// Maps `len` bytes at `offset` (the mapping starts at the enclosing page boundary).
fn map_window(file: &File, offset: u64, len: u64) -> io::Result<Bytes> {
    let page = page_size();
    let map_start = offset - offset % page;
    let skip = (offset - map_start) as usize;
    // SAFETY: blob files are never modified or truncated after they are renamed into place; the mapping is
    // read-only and owned by the returned `Bytes`.
    let map = unsafe {
        MmapOptions::new()
            .offset(map_start)
            .len(skip + len as usize)
            .map(file)?
    };
    let _ = map.advise(Advice::Sequential);
    Ok(Bytes::from_owner(map).slice(skip..))
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn collect(body: Body) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn both_modes_return_exact_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..5 * 1024 * 1024 + 123)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        for mode in [BlobIo::Mmap, BlobIo::Buffered] {
            for (start, len) in [
                (0, data.len()),
                (4097, 3 * 1024 * 1024),
                (10, 100),
                (data.len() - 1, 1),
            ] {
                let file = File::open(&path).unwrap();
                let got = collect(body(file, start as u64, len as u64, mode).unwrap()).await;
                assert_eq!(got, &data[start..start + len], "{mode:?} {start}+{len}");
            }
        }
    }
}
