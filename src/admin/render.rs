//! How the CLI prints what operations return: aligned tables with human sizes and ages, or JSON / YAML.

use serde::Serialize;

use super::plan::Image;
use super::{ImageList, PruneReport, Stats};
use crate::store::unix_now;

/// `--output`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML; `false` for table output (the caller prints the table).
pub fn structured<T: Serialize>(output: Output, value: &T) -> anyhow::Result<bool> {
    match output {
        Output::Table => Ok(false),
        Output::Json => {
            println!("{}", serde_json::to_string_pretty(value)?);
            Ok(true)
        }
        Output::Yaml => {
            print!("{}", serde_yaml_ng::to_string(value)?);
            Ok(true)
        }
    }
}

/// `1.2 MiB`.
pub fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

/// How long ago a Unix time was: `45s`, `12m`, `5h`, `3d`.
pub fn ago(at: u64) -> String {
    if at == 0 {
        return "-".into();
    }
    let secs = unix_now().saturating_sub(at);
    match secs {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// A table: columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

fn short(digest: &str) -> String {
    let hex = digest.split_once(':').map(|(_, h)| h).unwrap_or(digest);
    hex.chars().take(12).collect()
}

fn image_rows(images: &[Image]) -> Vec<Vec<String>> {
    images
        .iter()
        .map(|i| {
            vec![
                i.reference.clone(),
                short(&i.digest),
                if i.platforms.is_empty() {
                    "-".into()
                } else {
                    i.platforms.join(",")
                },
                size(i.size),
                ago(i.created),
                ago(i.last_pulled),
                i.pull_count.to_string(),
                if i.pinned {
                    "yes".into()
                } else {
                    String::new()
                },
            ]
        })
        .collect()
}

const IMAGE_HEADER: &[&str] = &[
    "IMAGE",
    "DIGEST",
    "PLATFORMS",
    "SIZE",
    "CREATED",
    "LAST PULLED",
    "PULLS",
    "PINNED",
];

pub fn image_list(list: &ImageList) -> String {
    let mut out = table(IMAGE_HEADER, &image_rows(&list.images));
    out.push_str(&format!(
        "total: {} images, {} blobs, {} (shared blobs counted once)\n",
        list.total.images,
        list.total.blobs,
        size(list.total.bytes)
    ));
    out
}

pub fn prune_report(report: &PruneReport) -> String {
    let mut out = String::new();
    if let Some(sweep) = &report.bucket {
        out.push_str(&format!(
            "bucket: {} replica reference sets ({}), {} stale ones of gone replicas{}; {} digests referenced; {} {} blobs, {} manifests, {} tag records, {} freed; {} unreferenced objects younger than the grace kept\n",
            sweep.replicas.len(),
            sweep.replicas.join(", "),
            sweep.stale_replicas.len(),
            if sweep.stale_replicas.is_empty() {
                String::new()
            } else {
                format!(" ({})", sweep.stale_replicas.join(", "))
            },
            sweep.referenced,
            if report.dry_run { "would delete" } else { "deleted" },
            sweep.blobs_deleted,
            sweep.manifests_deleted,
            sweep.tags_deleted,
            size(sweep.bytes_freed),
            sweep.young_kept,
        ));
        return out;
    }
    if !report.images.is_empty() {
        out.push_str(&table(IMAGE_HEADER, &image_rows(&report.images)));
    }
    out.push_str(&format!(
        "{} {} images ({} manifests, {} blobs), {} freed\n",
        if report.dry_run {
            "would remove"
        } else {
            "removed"
        },
        report.images.len(),
        report.manifests,
        report.blobs,
        size(report.bytes_freed)
    ));
    out
}

pub fn stats(stats: &Stats) -> String {
    let rows = vec![
        vec!["version".into(), stats.version.clone()],
        vec!["schema version".into(), stats.schema_version.to_string()],
        vec!["index".into(), stats.db.clone()],
        vec!["blobs".into(), stats.blobs_dir.clone()],
        vec!["images".into(), stats.images.to_string()],
        vec!["manifests".into(), stats.manifests.to_string()],
        vec!["tags".into(), stats.tags.to_string()],
        vec![
            "blob files".into(),
            format!("{} ({})", stats.blobs, size(stats.blob_bytes)),
        ],
        vec!["pins".into(), stats.pins.to_string()],
        vec![
            "max cache".into(),
            stats
                .max_cache_bytes
                .map(size)
                .unwrap_or_else(|| "off".into()),
        ],
        vec!["free on disk".into(), size(stats.free_bytes)],
    ];
    table(&["", ""], &rows)
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect()
}
