//! Inbound attachments (channel-behaviour.md §8.1–§8.2): the pre-filter (rules 1–2, pure)
//! and the root matching it relies on. Staging copies files only after policy accepted the
//! message.

use serde_json::{Map, Value};

use crate::config::rules;

/// One attachment entry that passed the pre-filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub index: usize,
    pub path: String,
    pub mime: String,
    pub transfer_name: Option<String>,
    pub total_bytes: Option<u64>,
}

/// Collapses `//` and `/./`; `None` for relative paths, NUL or a `..` segment.
pub fn normalize_path(path: &str) -> Option<Vec<&str>> {
    if !path.starts_with('/') || path.contains('\0') {
        return None;
    }
    let segments: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if segments.contains(&"..") {
        return None;
    }
    Some(segments)
}

/// Whether `path` lies strictly inside `root` (`*` matches exactly one segment).
pub fn inside_root(path: &str, root: &str) -> bool {
    let (Some(p), Some(r)) = (normalize_path(path), normalize_path(root)) else {
        return false;
    };
    p.len() > r.len() && r.iter().zip(&p).all(|(rs, ps)| *rs == "*" || rs == ps)
}

pub fn inside_any(path: &str, roots: &[String]) -> bool {
    roots.iter().any(|r| inside_root(path, r))
}

/// MIME type from a file extension (rule 5), `None` when unknown.
pub fn mime_from_extension(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "webp" => "image/webp",
        "tif" | "tiff" => "image/tiff",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "m4v" => "video/x-m4v",
        "m4a" => "audio/mp4",
        "caf" => "audio/x-caf",
        "mp3" => "audio/mpeg",
        "aac" => "audio/aac",
        "wav" => "audio/wav",
        "amr" => "audio/amr",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "vcf" => "text/vcard",
        "zip" => "application/zip",
        _ => return None,
    })
}

fn str_field<'a>(entry: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    entry
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Rules 1–2 over the first 10 entries: skips missing files, rich-link previews and paths
/// outside `roots` (remote roots in remote mode, which also need the remote-path rule).
pub fn prefilter(entries: &[Map<String, Value>], roots: &[String], remote: bool) -> Vec<Candidate> {
    let mut out = Vec::new();
    for (index, entry) in entries.iter().take(10).enumerate() {
        if entry.get("missing").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let Some(path) = str_field(entry, "original_path") else {
            continue;
        };
        let transfer = str_field(entry, "transfer_name");
        let preview = |s: &str| s.to_ascii_lowercase().ends_with(".pluginpayloadattachment");
        if preview(path)
            || transfer.is_some_and(preview)
            || str_field(entry, "uti").is_some_and(|u| {
                u.eq_ignore_ascii_case("com.apple.messages.pluginpayloadattachment")
            })
        {
            continue;
        }
        if !inside_any(path, roots) || (remote && !rules::is_safe_remote_path(path)) {
            tracing::debug!(index, "attachment outside allowed roots");
            continue;
        }
        let mime = str_field(entry, "mime_type")
            .map(str::to_string)
            .or_else(|| mime_from_extension(path).map(str::to_string))
            .unwrap_or_else(|| "application/octet-stream".to_string());
        out.push(Candidate {
            index,
            path: path.to_string(),
            mime,
            transfer_name: transfer.map(str::to_string),
            total_bytes: entry.get("total_bytes").and_then(Value::as_u64),
        });
    }
    out
}

const UNAVAILABLE: &str = "<media:unavailable>";

/// The body placeholder for an attachment-only message (§2 step 11).
pub fn placeholder(first: Option<&Candidate>, entries: &[Map<String, Value>]) -> &'static str {
    let Some(c) = first else {
        return UNAVAILABLE;
    };
    let declared = entries
        .get(c.index)
        .and_then(|e| str_field(e, "mime_type"))
        .map(str::to_string)
        .or_else(|| mime_from_extension(&c.path).map(str::to_string));
    match declared.as_deref() {
        None => "<media:attachment>",
        Some(m) if m.starts_with("image/") => "<media:image>",
        Some(m) if m.starts_with("video/") => "<media:video>",
        Some(m) if m.starts_with("audio/") => "<media:audio>",
        Some(_) => "<media:document>",
    }
}

/// After staging: a placeholder body that promised media none of which could be staged says
/// so instead (§8.1), so the agent is not told about an image it cannot see.
pub fn placeholder_after_staging(placeholder: bool, staged: usize) -> Option<&'static str> {
    (placeholder && staged == 0).then_some(UNAVAILABLE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placeholder_without_staged_media_says_unavailable() {
        assert_eq!(
            placeholder_after_staging(true, 0),
            Some("<media:unavailable>")
        );
        assert_eq!(placeholder_after_staging(true, 1), None);
        assert_eq!(
            placeholder_after_staging(false, 0),
            None,
            "a text body stays"
        );
    }
    use serde_json::json;

    fn entries(v: serde_json::Value) -> Vec<Map<String, Value>> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn roots() {
        let root = "/Users/*/Library/Messages/Attachments";
        assert!(inside_root(
            "/Users/bob/Library/Messages/Attachments/ab/01/X/IMG_1.jpeg",
            root
        ));
        assert!(inside_root(
            "/Users/bob//Library/./Messages/Attachments/x",
            root
        ));
        assert!(
            !inside_root("/Users/bob/Library/Messages/Attachments", root),
            "strictly inside"
        );
        assert!(!inside_root(
            "/Users/bob/Library/Messages/Attachments/../../x",
            root
        ));
        assert!(!inside_root("/etc/passwd", root));
        assert!(!inside_root("relative/x", root));
    }

    #[test]
    fn prefilter_rules() {
        let roots = vec!["/Users/*/Library/Messages/Attachments".to_string()];
        let e = entries(json!([
            {"original_path": "/Users/bob/Library/Messages/Attachments/a/IMG.jpeg", "mime_type": "image/jpeg"},
            {"original_path": "/Users/bob/Library/Messages/Attachments/a/x.pluginPayloadAttachment"},
            {"original_path": "/Users/bob/Library/Messages/Attachments/a/gone.png", "missing": true},
            {"original_path": "/etc/passwd"},
            {"original_path": "/Users/bob/Library/Messages/Attachments/a/doc.pdf", "mime_type": ""},
        ]));
        let c = prefilter(&e, &roots, false);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].mime, "image/jpeg");
        assert_eq!(c[1].mime, "application/pdf", "guessed from the extension");
        assert_eq!(placeholder(c.first(), &e), "<media:image>");
        assert_eq!(placeholder(None, &e), "<media:unavailable>");
    }

    #[test]
    fn remote_paths_must_be_shell_safe() {
        let roots = vec!["/Users/*/Library/Messages/Attachments".to_string()];
        let e =
            entries(json!([{"original_path": "/Users/bob/Library/Messages/Attachments/a/$x.jpg"}]));
        assert!(prefilter(&e, &roots, true).is_empty());
        assert_eq!(prefilter(&e, &roots, false).len(), 1);
    }
}
