//! The content-addressed blob directory: `<root>/sha256/ab/abcdef…`, plus `<root>/tmp/` for partial files.
//!
//! A blob becomes visible only by `rename` after it was written completely, hashed, compared with its digest
//! and fsynced, so a visible blob is always whole and correct, whatever crashes. Partial files live in
//! `tmp/`, which start-up empties.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::digest::{Digest, Hasher};

/// The blob directory.
pub struct BlobStore {
    root: PathBuf,
    tmp: PathBuf,
    next_temp: AtomicU64,
}

impl BlobStore {
    /// Opens (creating if needed) the directory and removes partial files left by an earlier run.
    pub fn open(root: &Path) -> io::Result<BlobStore> {
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp)?;
        let mut removed = 0;
        for entry in fs::read_dir(&tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!(removed, "removed partial blob files left by an earlier run");
        }
        Ok(BlobStore {
            root: root.to_path_buf(),
            tmp,
            next_temp: AtomicU64::new(0),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates and removes a small file in `tmp/`: whether blobs can be written at all.
    pub fn probe_writable(&self) -> io::Result<()> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let path = self
            .tmp
            .join(format!("probe-{}-{n}.partial", std::process::id()));
        let result = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| f.write_all(b"ok"));
        let _ = fs::remove_file(&path);
        result
    }

    /// Free bytes (for unprivileged users) on the blob directory's filesystem.
    pub fn free_bytes(&self) -> io::Result<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path =
            std::ffi::CString::new(self.root.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: statvfs writes into the zeroed struct we own; the path is a valid C string.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
    }

    /// Where the blob with `digest` lives once stored. Safe: a parsed digest is `[a-z0-9]+:[0-9a-f]+`.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    /// Starts writing the blob `digest` into a fresh temporary file.
    pub fn create(&self, digest: &Digest) -> io::Result<BlobWriter> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let temp_path = self.tmp.join(format!(
            "{}-{}-{}-{n}.partial",
            digest.algorithm().name(),
            digest.hex(),
            std::process::id()
        ));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&temp_path)?;
        Ok(BlobWriter {
            file,
            hasher: Some(digest.hasher()),
            written: 0,
            final_path: self.path(digest),
            temp_path,
            digest: digest.clone(),
        })
    }
}

/// A file in the content-addressed directory.
#[derive(Debug)]
pub struct BlobFile {
    /// `algorithm:hex`, from its path.
    pub digest: String,
    pub size: u64,
    /// Seconds since its last modification (how long ago it landed).
    pub age_secs: u64,
}

impl BlobStore {
    /// Every blob file (`<root>/<algorithm>/<2 hex>/<hex>`); anything else in the tree is ignored.
    pub fn files(&self) -> io::Result<Vec<BlobFile>> {
        let mut out = Vec::new();
        let now = std::time::SystemTime::now();
        for algorithm in fs::read_dir(&self.root)? {
            let algorithm = algorithm?;
            let name = algorithm.file_name().to_string_lossy().into_owned();
            if name == "tmp" || !algorithm.file_type()?.is_dir() {
                continue;
            }
            for shard in fs::read_dir(algorithm.path())? {
                let shard = shard?;
                if !shard.file_type()?.is_dir() {
                    continue;
                }
                for file in fs::read_dir(shard.path())? {
                    let file = file?;
                    let meta = file.metadata()?;
                    if !meta.is_file() {
                        continue;
                    }
                    let hex = file.file_name().to_string_lossy().into_owned();
                    let age_secs = meta
                        .modified()
                        .ok()
                        .and_then(|m| now.duration_since(m).ok())
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    out.push(BlobFile {
                        digest: format!("{name}:{hex}"),
                        size: meta.len(),
                        age_secs,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Unlinks a blob file. Readers that already opened it keep reading it (Linux keeps an unlinked file's
    /// data until the last descriptor closes); nothing truncates it.
    pub fn remove(&self, digest: &Digest) -> io::Result<bool> {
        match fs::remove_file(self.path(digest)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Why a blob could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("content does not match digest {expected}: got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("storing blob: {0}")]
    Io(#[from] io::Error),
}

/// A blob being written: bytes go to a temporary file and through the hasher. Dropping it without
/// [`BlobWriter::commit`] removes the temporary file.
pub struct BlobWriter {
    file: File,
    /// Taken by `verify`.
    hasher: Option<Hasher>,
    written: u64,
    temp_path: PathBuf,
    final_path: PathBuf,
    digest: Digest,
}

impl BlobWriter {
    /// The temporary file, readable while the blob is being written.
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(bytes);
        }
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Checks size and digest. On failure the temporary file is removed and nothing becomes visible.
    pub fn verify(mut self, expected_size: Option<u64>) -> Result<VerifiedBlob, CommitError> {
        if let Some(expected) = expected_size {
            if expected != self.written {
                return Err(CommitError::SizeMismatch {
                    digest: self.digest.clone(),
                    expected,
                    actual: self.written,
                });
            }
        }
        let actual = self
            .hasher
            .take()
            .expect("a writer is verified once")
            .finish();
        if actual != self.digest {
            return Err(CommitError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
            });
        }
        Ok(VerifiedBlob { writer: self })
    }

    /// Verifies, fsyncs and renames into place in one step.
    pub fn commit(self, expected_size: Option<u64>) -> Result<u64, CommitError> {
        let verified = self.verify(expected_size)?;
        let size = verified.size();
        verified.persist()?;
        Ok(size)
    }
}

/// A blob whose bytes matched its digest, not yet durable nor visible.
pub struct VerifiedBlob {
    writer: BlobWriter,
}

impl VerifiedBlob {
    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.writer.written
    }

    /// Fsyncs the file, renames it to its content address and fsyncs the directory, so the blob becomes
    /// visible only whole, and stays so across a crash.
    pub fn persist(self) -> Result<(), CommitError> {
        let w = &self.writer;
        w.file.sync_all()?;
        let dir = w.final_path.parent().expect("blob path has a parent");
        if !dir.is_dir() {
            // A new shard directory (and its algorithm directory) must itself be durable in its parent, or a
            // crash could lose the directory entry and the blob with it.
            fs::create_dir_all(dir)?;
            for created in [Some(dir), dir.parent()].into_iter().flatten() {
                if let Some(parent) = created.parent() {
                    File::open(parent)?.sync_all()?;
                }
            }
        }
        fs::rename(&w.temp_path, &w.final_path)?;
        File::open(dir)?.sync_all()?;
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful commit the temp path no longer exists; this only cleans up abandoned writes.
        let _ = fs::remove_file(&self.temp_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn commit_verifies_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = Digest::of(Algorithm::Sha256, b"hello");
        let mut w = store.create(&digest).unwrap();
        w.write(b"hel").unwrap();
        w.write(b"lo").unwrap();
        assert_eq!(w.commit(Some(5)).unwrap(), 5);
        assert_eq!(fs::read(store.path(&digest)).unwrap(), b"hello");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn mismatch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = Digest::of(Algorithm::Sha256, b"hello");
        let mut w = store.create(&digest).unwrap();
        w.write(b"jello").unwrap();
        assert!(matches!(
            w.commit(None),
            Err(CommitError::DigestMismatch { .. })
        ));
        let mut w = store.create(&digest).unwrap();
        w.write(b"hello").unwrap();
        assert!(matches!(
            w.commit(Some(6)),
            Err(CommitError::SizeMismatch { .. })
        ));
        assert!(!store.path(&digest).exists());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn startup_removes_partials() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        fs::write(dir.path().join("tmp/x.partial"), b"junk").unwrap();
        BlobStore::open(dir.path()).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
