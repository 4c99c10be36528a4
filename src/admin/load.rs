//! `ociregistry load`: pre-loads a list of images with bounded parallelism, showing progress (a bar on a
//! terminal, log lines otherwise), and ends with a summary table and every failure named.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;

use futures::StreamExt;

use super::client::Admin;
use super::render::{size, table};
use super::{LoadReport, LoadRequest};
use crate::manifest::Platform;

/// One image to load, and where it was named (for error messages).
#[derive(Clone, Debug)]
pub struct Wanted {
    pub reference: String,
    pub origin: String,
}

/// Reads an image file: one reference per line; `#` starts a comment; blank lines are skipped.
pub fn read_image_file(path: &Path) -> anyhow::Result<Vec<Wanted>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--image-file {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.split('#').next().unwrap_or("").trim();
            (!line.is_empty()).then(|| Wanted {
                reference: line.to_owned(),
                origin: format!("{}:{}", path.display(), i + 1),
            })
        })
        .collect())
}

/// Checks `--platform` values before anything is fetched.
pub fn parse_platforms(values: &[String]) -> anyhow::Result<Vec<String>> {
    for value in values {
        Platform::parse(value).map_err(|e| anyhow::anyhow!("--platform: {e}"))?;
    }
    Ok(values.to_vec())
}

/// Loads every image; returns whether all succeeded.
pub async fn run(
    admin: Arc<Admin>,
    images: Vec<Wanted>,
    platforms: Vec<String>,
    parallel: usize,
) -> anyhow::Result<bool> {
    let total = images.len() as u64;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} images  {msg}",
            )
            .expect("a valid template"),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    });
    let mut bytes_fetched = 0u64;
    let mut results: Vec<(Wanted, Result<LoadReport, String>)> = Vec::new();
    let mut stream = futures::stream::iter(images.into_iter().map(|wanted| {
        let admin = admin.clone();
        let request = LoadRequest {
            image: wanted.reference.clone(),
            platforms: platforms.clone(),
        };
        async move {
            let result = admin.load(&request).await.map_err(|e| e.message);
            (wanted, result)
        }
    }))
    .buffer_unordered(parallel.max(1));
    while let Some((wanted, result)) = stream.next().await {
        let line = match &result {
            Ok(report) => {
                bytes_fetched += report.prefetch.bytes_fetched;
                format!(
                    "loaded {} {} ({} blobs, {} fetched, {})",
                    report.image,
                    report.prefetch.digest,
                    report.prefetch.blobs,
                    report.prefetch.blobs_fetched,
                    size(report.prefetch.bytes_fetched)
                )
            }
            // The reason is printed once, with the summary.
            Err(_) => format!("FAILED {} ({})", wanted.reference, wanted.origin),
        };
        match &bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(format!("{} fetched", size(bytes_fetched)));
                bar.println(line);
            }
            None => eprintln!("{line}"),
        }
        results.push((wanted, result));
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    results.sort_by(|a, b| a.0.reference.cmp(&b.0.reference));
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(wanted, result)| match result {
            Ok(r) => vec![
                r.image.clone(),
                r.prefetch
                    .digest
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .chars()
                    .take(12)
                    .collect(),
                if r.prefetch.platforms.is_empty() {
                    "-".into()
                } else {
                    r.prefetch.platforms.join(",")
                },
                format!("{}/{}", r.prefetch.blobs_fetched, r.prefetch.blobs),
                size(r.prefetch.bytes_fetched),
                size(r.prefetch.bytes),
                if r.prefetch.blobs_fetched == 0 {
                    "cached".into()
                } else {
                    "loaded".into()
                },
            ],
            Err(_) => vec![
                wanted.reference.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "FAILED".into(),
            ],
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                "IMAGE",
                "DIGEST",
                "PLATFORMS",
                "FETCHED BLOBS",
                "FETCHED",
                "SIZE",
                "STATUS"
            ],
            &rows
        )
    );
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    println!(
        "{} images: {} loaded or cached, {} failed; {} fetched",
        results.len(),
        results.len() - failed.len(),
        failed.len(),
        size(bytes_fetched)
    );
    for (wanted, result) in &failed {
        if let Err(message) = result {
            eprintln!(
                "ociregistry load: {} ({}) failed: {message}",
                wanted.reference, wanted.origin
            );
        }
    }
    Ok(failed.is_empty())
}
