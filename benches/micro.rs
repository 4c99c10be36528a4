//! Criterion micro-benchmarks of the hot path's building blocks: name/reference parsing and routing, digest
//! verification throughput, redb index lookups, and hot-cache manifest hits.
//!
//! Run: `cargo bench --bench micro` (HTML reports in target/criterion/).

use std::sync::Arc;

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use ociregistry::cache::{CachedManifest, HotCache};
use ociregistry::digest::{Algorithm, Digest};
use ociregistry::reference::{validate_repository, Reference};
use ociregistry::route::{Aliases, Target};
use ociregistry::store::{Index, ManifestWrite, TagRecord};

fn parsing(c: &mut Criterion) {
    let default: Arc<str> = Arc::from("docker.io");
    let aliases = Aliases::new();
    let digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    c.bench_function("validate_repository nested", |b| {
        b.iter(|| validate_repository(black_box("team-a/project.x/sub_component/app")))
    });
    c.bench_function("Reference::parse tag", |b| {
        b.iter(|| Reference::parse(black_box("v1.27.3-alpine")))
    });
    c.bench_function("Reference::parse digest", |b| {
        b.iter(|| Reference::parse(black_box(digest)))
    });
    c.bench_function("Target::resolve ns", |b| {
        b.iter(|| {
            Target::resolve(
                black_box("library/nginx"),
                Some("docker.io"),
                &default,
                &aliases,
            )
        })
    });
    c.bench_function("Target::resolve in-path", |b| {
        b.iter(|| Target::resolve(black_box("registry.k8s.io/pause"), None, &default, &aliases))
    });
}

fn digests(c: &mut Criterion) {
    let data = vec![0x5au8; 1024 * 1024];
    let mut group = c.benchmark_group("digest verification");
    group.throughput(Throughput::Bytes(data.len() as u64));
    for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
        group.bench_with_input(
            BenchmarkId::from_parameter(algorithm.name()),
            &data,
            |b, data| b.iter(|| Digest::of(algorithm, black_box(data))),
        );
    }
    group.finish();
}

fn index_lookups(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(&dir.path().join("index.redb")).unwrap();
    let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#;
    let digests: Vec<String> = (0..10_000u32)
        .map(|i| Digest::of(Algorithm::Sha256, &i.to_le_bytes()).to_string())
        .collect();
    for chunk in digests.chunks(1000) {
        for (i, digest) in chunk.iter().enumerate() {
            let tag = format!("docker.io/library/app:{i}");
            index
                .put_manifest(ManifestWrite {
                    digest,
                    media_type: "application/vnd.oci.image.manifest.v1+json",
                    body,
                    repository: "docker.io/library/app",
                    references: &[],
                    tag: Some((
                        &tag,
                        TagRecord {
                            digest: digest.clone(),
                            fetched_at: 1,
                            created: 1,
                        },
                    )),
                    now: 1,
                })
                .unwrap();
        }
    }
    let probe = digests[4321].clone();
    c.bench_function("index manifest lookup (10k manifests)", |b| {
        b.iter(|| index.manifest(black_box(&probe)).unwrap().unwrap())
    });
    c.bench_function("index tag lookup", |b| {
        b.iter(|| {
            index
                .tag(black_box("docker.io/library/app:321"))
                .unwrap()
                .unwrap()
        })
    });
}

fn hot_cache_hits(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let hot = HotCache::new(32 * 1024 * 1024);
    let target = Target::resolve(
        "library/nginx",
        Some("docker.io"),
        &Arc::from("docker.io"),
        &Aliases::new(),
    )
    .unwrap();
    let body = Bytes::from(vec![b'{'; 2048]);
    let digest = Digest::of(Algorithm::Sha256, &body);
    runtime.block_on(hot.manifests.insert(
        HotCache::manifest_key(&target, &digest),
        Arc::new(CachedManifest::new(
            digest.clone(),
            "application/vnd.oci.image.index.v1+json",
            body,
        )),
    ));
    c.bench_function("hot cache manifest hit (key + lookup)", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let key = HotCache::manifest_key(black_box(&target), black_box(&digest));
                hot.manifests.get(&key).await.unwrap()
            })
        })
    });
}

criterion_group!(benches, parsing, digests, index_lookups, hot_cache_hits);
criterion_main!(benches);
