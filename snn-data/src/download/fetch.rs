//! One HTTP transfer into a `.part` file, resumed with a `Range` request where the server
//! allows it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{BUF, DownloadError, DownloadOptions, MIRROR_ENV, RemoteFile, remove};

/// Brings `part` to the whole file from `url`, resuming from its length when it exists;
/// returns how many bytes were reused. On an interrupted transfer the partial file is kept.
pub(super) fn fetch(
    agent: &ureq::Agent,
    file: &RemoteFile,
    url: &str,
    part: &Path,
    opts: &DownloadOptions,
) -> Result<u64, DownloadError> {
    let mut offset = match fs::metadata(part) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(DownloadError::io("read", part, e)),
    };
    if let Some(size) = file.size {
        if offset == size {
            return Ok(offset); // complete already; verification decides
        }
        if offset > size {
            remove(part)?;
            offset = 0;
        }
    }
    let hint = || {
        format!(
            "check the network connection, or set {MIRROR_ENV} to a mirror that serves {}",
            file.name
        )
    };
    let transport = |error| DownloadError::Transport {
        url: url.to_string(),
        name: file.name.clone(),
        error: Box::new(error),
        hint: hint(),
    };
    let mut response = request(agent, url, offset).map_err(transport)?;
    let mut status = response.status().as_u16();
    let mut append = false;
    if offset > 0 {
        let start = (status == 206).then(|| content_range(&response)).flatten();
        if status == 206 && start.is_some_and(|(s, _)| s == offset) {
            append = true;
        } else if status == 416 && unsatisfied_total(&response) == Some(offset) {
            // The partial file is already the whole file; verification decides.
            return Ok(offset);
        } else if status == 206 || status == 416 {
            // A range we did not ask for, or the partial file is no prefix of the file
            // (416: longer than it): start again without a range.
            drop(response);
            remove(part)?;
            offset = 0;
            response = request(agent, url, 0).map_err(transport)?;
            status = response.status().as_u16();
        } else {
            // 200: the server ignores ranges and sends the whole file.
            offset = 0;
        }
    }
    if !(200..300).contains(&status) || (status == 206 && !append) {
        return Err(DownloadError::Http {
            url: url.to_string(),
            name: file.name.clone(),
            status,
            hint: hint(),
        });
    }
    let body_len = response.body().content_length();
    let total = if append {
        content_range(&response)
            .and_then(|(_, total)| total)
            .or(body_len.map(|n| n + offset))
    } else {
        body_len
    };
    let path = part.with_file_name(&file.name);
    if let (Some(size), Some(total)) = (file.size, total)
        && size != total
    {
        return Err(DownloadError::SizeMismatch {
            path,
            expected: size,
            actual: total,
            note: format!(
                "{url} serves a file of a different size than the published one: it is not \
                 that file; nothing was downloaded"
            ),
        });
    }

    let mut out = if append {
        OpenOptions::new().append(true).open(part)
    } else {
        File::create(part)
    }
    .map_err(|e| DownloadError::io("create", part, e))?;
    let bar = progress_bar(opts.progress, total, &file.name);
    bar.set_position(offset);
    let mut reader = response.into_body().into_reader();
    let mut buf = vec![0u8; BUF];
    let mut received = offset;
    let result = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                out.write_all(&buf[..n])
                    .map_err(|e| DownloadError::io("write", part, e))?;
                received += n as u64;
                bar.set_position(received);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    bar.finish_and_clear();
    // Keep what arrived, complete or not, durable before anything looks at it.
    out.sync_all()
        .map_err(|e| DownloadError::io("write", part, e))?;
    match result {
        Ok(()) if total.is_none_or(|t| received >= t) => Ok(offset),
        Ok(()) => Err(DownloadError::Interrupted {
            url: url.to_string(),
            partial: part.to_path_buf(),
            received,
            total,
            error: io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed early"),
        }),
        Err(error) => Err(DownloadError::Interrupted {
            url: url.to_string(),
            partial: part.to_path_buf(),
            received,
            total,
            error,
        }),
    }
}

fn request(
    agent: &ureq::Agent,
    url: &str,
    offset: u64,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let mut req = agent.get(url);
    if offset > 0 {
        req = req.header("Range", format!("bytes={offset}-"));
    }
    req.call()
}

/// The start and total of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range(response: &ureq::http::Response<ureq::Body>) -> Option<(u64, Option<u64>)> {
    let value = response.headers().get("content-range")?.to_str().ok()?;
    let spec = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = spec.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

/// The total of a 416 answer's `Content-Range: bytes */TOTAL` header.
fn unsatisfied_total(response: &ureq::http::Response<ureq::Body>) -> Option<u64> {
    let value = response.headers().get("content-range")?.to_str().ok()?;
    let spec = value.trim().strip_prefix("bytes")?.trim_start();
    spec.strip_prefix("*/")?.trim().parse().ok()
}

fn progress_bar(show: bool, total: Option<u64>, name: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let (bar, template) = match total {
        Some(t) => (
            ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{spinner} {msg} {bytes} {bytes_per_sec}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(name.to_string());
    bar
}
