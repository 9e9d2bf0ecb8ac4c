//! Outbound (channel-behaviour.md §7): turning a host send request into `send` parts, and
//! sending them.

pub(crate) mod path;
pub(crate) mod ratelimit;

pub mod attempt;
pub mod chunk;
pub mod format;
pub mod media;
pub mod sanitize;
pub mod send;
pub mod target;

use std::path::PathBuf;

use plugin_abi::types::SendRequest;
use serde_json::{Map, Value};

use crate::config::{AccountConfig, ChunkMode, TextFormatting};
pub use target::Target;

/// One `send` request to make.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    /// `""` for a file-only part.
    pub text: String,
    pub file: Option<String>,
    /// Native formatting of `text` (UTF-16 ranges; actions.md §5).
    pub ranges: Vec<format::StyleRange>,
}

/// Everything needed to send one reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub target: Target,
    pub service: String,
    pub region: String,
    pub reply_to: Option<String>,
    pub parts: Vec<Part>,
    pub chunks: usize,
    /// Send the parts' ranges as `text_formatting`; cleared when imsg cannot render them
    /// (the text is marker-free either way).
    pub formatting: bool,
    /// Subject to the rate limiter's hard caps: a host's reply. Plugin-generated texts
    /// (pairing codes, refusals, approval notices) only wait for send slots.
    pub capped: bool,
    /// The host's idempotency key (actions.md §7.4).
    pub idempotency_key: Option<String>,
}

impl Plan {
    /// The exact `send` params of part `i` (§7.3).
    pub fn params(&self, part: &Part, with_reply_to: bool) -> Value {
        let mut p = Map::new();
        self.target.write_params(&mut p);
        p.insert("text".into(), Value::from(part.text.clone()));
        if let Some(file) = &part.file {
            p.insert("file".into(), Value::from(file.clone()));
        }
        p.insert("service".into(), Value::from(self.service.clone()));
        p.insert("region".into(), Value::from(self.region.clone()));
        if let (true, Some(r)) = (with_reply_to, &self.reply_to) {
            p.insert("reply_to".into(), Value::from(r.clone()));
        }
        if self.formatting && part.file.is_none() && !part.ranges.is_empty() {
            p.insert("text_formatting".into(), format::to_wire(&part.ranges));
        }
        Value::Object(p)
    }
}

/// Why a request was rejected before anything was written to imsg.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejected {
    InvalidTarget(String),
    InvalidRequest(String),
}

/// `reply_to` sanitising: control characters and brackets removed, trimmed, 256 chars.
pub fn clean_reply_to(raw: Option<&str>) -> Option<String> {
    let raw = raw?;
    let cleaned: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}' | '[' | ']'))
        .collect();
    let cut: String = cleaned.trim().chars().take(256).collect();
    (!cut.is_empty()).then_some(cut)
}

/// Checks one media item (§7.7): a local regular file within the size cap, and under one of
/// `roots` when media roots are in force ([`media::resolve_under`]; its resolved path is what
/// is sent).
pub fn check_media(
    item: &str,
    max_bytes: u64,
    max_mb: u64,
    roots: Option<&[String]>,
) -> Result<String, Rejected> {
    let path = match item.strip_prefix("file://") {
        Some(rest) => rest.to_string(),
        None if item.contains("://") => {
            return Err(Rejected::InvalidRequest("unsupported media URL".into()))
        }
        None => item.to_string(),
    };
    let mut path = PathBuf::from(path);
    if let Some(roots) = roots {
        path = media::resolve_under(&path, roots).map_err(Rejected::InvalidRequest)?;
    } else if path.is_relative() {
        // imsg resolves relative paths against its own working directory.
        if let Ok(cwd) = std::env::current_dir() {
            path = cwd.join(path);
        }
    }
    let shown = path.display().to_string();
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => {
            if m.len() > max_bytes {
                return Err(Rejected::InvalidRequest(format!(
                    "media too large: {shown} ({} bytes, limit {max_mb} MB)",
                    m.len()
                )));
            }
            Ok(shown)
        }
        _ => Err(Rejected::InvalidRequest(format!(
            "media not found: {shown}"
        ))),
    }
}

/// Plans a host reply: target, sanitiser, prefix, chunks, then one part per media item.
/// `media_roots`: the roots in force ([`media::effective_roots`]), `None` for none.
pub fn plan(
    request: &SendRequest,
    account: &AccountConfig,
    global_prefix: Option<&str>,
    media_roots: Option<&[String]>,
) -> Result<Plan, Rejected> {
    let target = target::parse(&request.to).map_err(|e| Rejected::InvalidTarget(e.to_string()))?;
    let mut files = Vec::new();
    for item in &request.media {
        files.push(check_media(
            item,
            account.media_max_bytes(),
            account.media_max_mb,
            media_roots,
        )?);
    }
    let formatting = match request.text_formatting.as_deref() {
        None => account.text_formatting,
        Some(name) => TextFormatting::parse(name).ok_or_else(|| {
            Rejected::InvalidRequest(
                "textFormatting must be \"native\", \"plain\" or \"off\"".into(),
            )
        })?,
    };
    let sanitized = sanitize::sanitize(request.text.as_deref().unwrap_or(""));
    let styled = match formatting {
        TextFormatting::Off => format::Styled {
            text: sanitized,
            ranges: Vec::new(),
        },
        TextFormatting::Plain => format::Styled {
            ranges: Vec::new(),
            ..format::convert(&sanitized)
        },
        TextFormatting::Native => format::convert(&sanitized),
    };
    let mut styled = styled.trimmed();
    if styled.text.is_empty() && files.is_empty() {
        return Err(Rejected::InvalidRequest("nothing to send".into()));
    }
    let prefix = account
        .response_prefix
        .as_deref()
        .or(global_prefix)
        .filter(|p| !p.is_empty());
    if let Some(prefix) = prefix {
        if !styled.text.is_empty() && !styled.text.starts_with(prefix) {
            // The prefix is never parsed; the ranges move past it and its space.
            styled.ranges = format::shift(&styled.ranges, chunk::utf16_len(prefix) + 1);
            styled.text = format!("{prefix} {}", styled.text);
        }
    }
    let mode = match request.chunk_mode.as_deref() {
        None => account.chunk_mode,
        Some("length") => ChunkMode::Length,
        Some("newline") => ChunkMode::Newline,
        Some(other) => {
            return Err(Rejected::InvalidRequest(format!(
                "chunkMode must be \"length\" or \"newline\", not \"{other}\""
            )))
        }
    };
    let chunks = chunked(&styled, account.text_chunk_limit, mode);
    let idempotency_key = match request.idempotency_key.as_deref() {
        None => None,
        Some(k) if (1..=200).contains(&k.chars().count()) && !k.chars().any(char::is_control) => {
            Some(k.to_string())
        }
        Some(_) => {
            return Err(Rejected::InvalidRequest(
                "idempotencyKey must be 1 to 200 characters without control characters".into(),
            ))
        }
    };
    Ok(Plan {
        capped: true,
        idempotency_key,
        ..assemble(
            target,
            account,
            clean_reply_to(request.reply_to_id.as_deref()),
            chunks,
            files,
        )
    })
}

/// Chunks a converted text, each chunk with the ranges that fall in it, re-based (§5.3).
fn chunked(styled: &format::Styled, limit: usize, mode: ChunkMode) -> Vec<Part> {
    let text = &styled.text;
    chunk::chunk_pieces(text, limit, mode)
        .into_iter()
        .map(|pieces| {
            let mut ranges = Vec::new();
            let mut at = 0; // UTF-16 position in the chunk
            for (i, piece) in pieces.iter().enumerate() {
                if i > 0 {
                    at += chunk::utf16_len(chunk::JOIN);
                }
                let start = chunk::utf16_len(&text[..piece.start]);
                let length = chunk::utf16_len(&text[piece.clone()]);
                if !styled.ranges.is_empty() {
                    let found = format::within(&styled.ranges, start, length);
                    ranges.extend(format::shift(&found, at));
                }
                at += length;
            }
            Part {
                text: chunk::join(text, &pieces),
                file: None,
                ranges,
            }
        })
        .collect()
}

/// Plans a plugin-generated text (pairing, refusals, approval notice): no sanitiser, no
/// prefix.
pub fn plan_plain(to: &str, text: &str, account: &AccountConfig) -> Result<Plan, Rejected> {
    let target = target::parse(to).map_err(|e| Rejected::InvalidTarget(e.to_string()))?;
    let chunks = chunk::chunk(text, account.text_chunk_limit, account.chunk_mode)
        .into_iter()
        .map(|text| Part {
            text,
            file: None,
            ranges: Vec::new(),
        })
        .collect();
    Ok(assemble(target, account, None, chunks, Vec::new()))
}

fn assemble(
    target: Target,
    account: &AccountConfig,
    reply_to: Option<String>,
    mut parts: Vec<Part>,
    files: Vec<String>,
) -> Plan {
    let n = parts.len();
    parts.extend(files.into_iter().map(|f| Part {
        text: String::new(),
        file: Some(f),
        ranges: Vec::new(),
    }));
    Plan {
        service: target.service(&account.service).to_string(),
        region: account.region.clone(),
        target,
        reply_to,
        parts,
        chunks: n,
        formatting: true,
        capped: false,
        idempotency_key: None,
    }
}

#[cfg(test)]
mod tests;
