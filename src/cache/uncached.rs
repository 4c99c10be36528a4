//! Serving a blob the disk cannot hold: when the blob filesystem is below `min_free_bytes` (or a temp file
//! cannot be created), the upstream's body goes straight to the client, uncached, so pulls keep working on a
//! full disk. The bytes are still checked: the last chunk is held back until the whole body hashed to the
//! digest (and matched the announced size), so a client never receives a complete-looking wrong blob.

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::digest::{Digest, Hasher};
use crate::error::RegistryError;
use crate::upstream::BlobStream;

/// Wraps an upstream body so that it ends with an error instead of its last chunk when the bytes do not
/// match `digest` (or `size`).
pub fn verified(
    digest: Digest,
    upstream: BlobStream,
) -> BoxStream<'static, Result<Bytes, RegistryError>> {
    struct State {
        body: BoxStream<'static, Result<Bytes, RegistryError>>,
        hasher: Option<Hasher>,
        held: Option<Bytes>,
        received: u64,
        size: Option<u64>,
        digest: Digest,
    }
    let state = State {
        hasher: Some(digest.hasher()),
        body: upstream.body,
        held: None,
        received: 0,
        size: upstream.size,
        digest,
    };
    futures::stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        loop {
            match state.body.next().await {
                Some(Ok(chunk)) if chunk.is_empty() => continue,
                Some(Ok(chunk)) => {
                    state.received += chunk.len() as u64;
                    if let Some(h) = state.hasher.as_mut() {
                        h.update(&chunk);
                    }
                    match state.held.replace(chunk) {
                        Some(previous) => return Some((Ok(previous), Some(state))),
                        None => continue,
                    }
                }
                Some(Err(err)) => return Some((Err(err), None)),
                None => {
                    let actual = state.hasher.take().map(Hasher::finish);
                    let size_ok = state.size.is_none_or(|s| s == state.received);
                    if actual.as_ref() != Some(&state.digest) || !size_ok {
                        return Some((
                            Err(RegistryError::UpstreamDigestMismatch(format!(
                                "upstream sent a bad blob for {} ({} bytes)",
                                state.digest, state.received
                            ))),
                            None,
                        ));
                    }
                    return state.held.take().map(|last| (Ok(last), None));
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    async fn collect(
        digest: Digest,
        chunks: Vec<&'static [u8]>,
        size: Option<u64>,
    ) -> Vec<Result<Bytes, RegistryError>> {
        let body =
            futures::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c)))).boxed();
        verified(digest, BlobStream { size, body }).collect().await
    }

    #[tokio::test]
    async fn good_bytes_pass_and_bad_ones_lose_their_tail() {
        let digest = Digest::of(Algorithm::Sha256, b"hello world");
        let good = collect(digest.clone(), vec![b"hello", b" ", b"world"], Some(11)).await;
        let bytes: Vec<u8> = good.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
        assert_eq!(bytes, b"hello world");
        let bad = collect(digest.clone(), vec![b"hello", b" ", b"WORLD"], None).await;
        assert!(bad.last().unwrap().is_err());
        let sent: usize = bad
            .iter()
            .filter_map(|c| c.as_ref().ok())
            .map(|c| c.len())
            .sum();
        assert!(sent < 11, "the last chunk was held back");
        let short = collect(digest, vec![b"hello world"], Some(12)).await;
        assert!(short.last().unwrap().is_err());
    }
}
