//! How the CLI shows things to people: tables and `key: value` blocks.
//! (`--json` bypasses this module and prints the API's views as they are.)

use crate::api::views::{ErrorView, JobView};

/// Bytes the way people read them.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn name_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn progress(job: &JobView) -> String {
    let p = &job.progress;
    match p.bytes_total {
        Some(total) => format!("{} / {}", bytes(p.bytes_transferred), bytes(total)),
        None => format!("{} / ?", bytes(p.bytes_transferred)),
    }
}

pub fn error_line(e: &ErrorView) -> String {
    let status = e
        .http_status
        .map(|s| format!(", HTTP {s}"))
        .unwrap_or_default();
    format!(
        "{} ({}, {}{status}): {}",
        e.code,
        name_of(&e.class),
        name_of(&e.context),
        e.message
    )
}

/// `ferry list`: one line per job.
pub fn table(jobs: &[JobView]) -> String {
    if jobs.is_empty() {
        return "no jobs".to_string();
    }
    let mut rows = vec![[
        "ID".to_string(),
        "TYPE".into(),
        "STATE".into(),
        "PRIORITY".into(),
        "OWNER".into(),
        "FILES".into(),
        "BYTES".into(),
        "NAME".into(),
    ]];
    for j in jobs {
        rows.push([
            j.id.clone(),
            name_of(&j.job_type),
            name_of(&j.state),
            name_of(&j.priority),
            j.owner.to_string(),
            format!(
                "{}/{}",
                j.progress.files_transferred, j.progress.files_total
            ),
            progress(j),
            j.name.clone(),
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            row.iter()
                .zip(widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `ferry info`: one job in full.
pub fn details(j: &JobView) -> String {
    let s = &j.settings;
    let mut out = vec![
        format!("id:                  {}", j.id),
        format!("type:                {}", name_of(&j.job_type)),
        format!("state:               {}", name_of(&j.state)),
        format!("owner:               {}", j.owner),
        format!("name:                {}", j.name),
        format!("description:         {}", j.description),
        format!("priority:            {}", name_of(&j.priority)),
        format!(
            "progress:            {} ({}/{} files)",
            progress(j),
            j.progress.files_transferred,
            j.progress.files_total
        ),
        format!("created:             {}", j.created),
        format!("modified:            {}", j.modified),
        format!(
            "transfer completed:  {}",
            j.transfer_completed.as_deref().unwrap_or("-")
        ),
        format!(
            "error:               {}",
            j.error
                .as_ref()
                .map(error_line)
                .unwrap_or_else(|| "-".into())
        ),
        format!("errors so far:       {}", j.error_count),
        format!("retry delay:         {} s", s.retry_delay_secs),
        format!("no-progress timeout: {} s", s.no_progress_timeout_secs),
        format!("max download time:   {} s", s.max_download_time_secs),
        format!("headers:             {}", s.headers.join(", ")),
        format!(
            "credentials:         {}",
            s.credentials.as_deref().unwrap_or("-")
        ),
        format!(
            "notify command:      {}",
            s.notify_command.as_deref().unwrap_or("-")
        ),
        "files:".to_string(),
    ];
    for (i, f) in j.files.iter().enumerate() {
        let total = f.bytes_total.map(bytes).unwrap_or_else(|| "?".into());
        out.push(format!(
            "  {i}  {}  {} -> {}  {} / {total}",
            if f.complete { "done" } else { "    " },
            f.remote,
            f.local.display(),
            bytes(f.bytes_transferred)
        ));
    }
    out.join("\n")
}
