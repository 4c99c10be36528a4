//! Checks of ociregistry's on-disk blob store (`<data>/blobs/sha256/ab/abcdef...`, temp files in
//! `<data>/blobs/tmp/`): the store is content-addressed and holds whole files only, so every file
//! named by a digest must hash to that digest, whatever happened (corrupt upstream, kill -9).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where the contract says blob `digest` lives under `data_dir`.
pub fn blob_path(data_dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
    data_dir
        .join("blobs")
        .join("sha256")
        .join(&hex[..2])
        .join(hex)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// All regular files below `dir` (empty if it does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out
}

/// Files in `<data>/blobs/tmp/`.
pub fn tmp_files(data_dir: &Path) -> Vec<PathBuf> {
    files_under(&data_dir.join("blobs").join("tmp"))
}

/// Hashes every file under `<data>/blobs/sha256/` whose name is a 64-hex digest and asserts that
/// its content matches its name. Returns the digests found.
pub fn verify_blob_store(data_dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for path in files_under(&data_dir.join("blobs").join("sha256")) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.len() != 64 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
            eprintln!("[store] ignoring non-digest file {}", path.display());
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        let actual = hex::encode(Sha256::digest(&data));
        assert_eq!(
            actual,
            name,
            "blob store file {} does not hash to its name (len {})",
            path.display(),
            data.len()
        );
        found.push(format!("sha256:{name}"));
    }
    found
}
