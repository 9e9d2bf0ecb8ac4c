//! Chunking (channel-behaviour.md §7.5): limits in UTF-16 code units, cuts only at extended
//! grapheme cluster boundaries, so no character, surrogate pair, skin tone, ZWJ sequence or
//! flag is ever split. One pass over the clusters per chunk: linear in the text.

use std::ops::Range;

use unicode_segmentation::UnicodeSegmentation;

use crate::config::ChunkMode;

pub fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Where to cut the next chunk of `rest` (which does not fit): the end of the longest run
/// of whole clusters within `limit`, then the positions after its last newline and of its
/// last whitespace.
fn window(rest: &str, limit: usize) -> (usize, Option<usize>, Option<usize>) {
    let bytes = rest.as_bytes();
    let probe = bytes.len().min(limit + 1);
    if bytes[..probe].is_ascii() {
        // ASCII: one unit per byte, and every byte boundary is a cluster boundary except
        // inside "\r\n".
        let mut end = limit.min(bytes.len());
        if end > 0 && end < bytes.len() && bytes[end - 1] == b'\r' && bytes[end] == b'\n' {
            end -= 1;
        }
        let head = &bytes[..end];
        let newline = head.iter().rposition(|b| *b == b'\n').map(|i| i + 1);
        let space = head
            .iter()
            .rposition(|b| b.is_ascii_whitespace() && *b != b'\n');
        return (end, newline, space);
    }
    let mut units = 0;
    let mut end = 0;
    let mut last_newline = None;
    let mut last_space = None;
    for (i, g) in rest.grapheme_indices(true) {
        let n = utf16_len(g);
        if units + n > limit {
            break;
        }
        units += n;
        end = i + g.len();
        if g.contains('\n') {
            last_newline = Some(end);
        } else if g.chars().all(char::is_whitespace) {
            last_space = Some(i);
        }
    }
    (end, last_newline, last_space)
}

/// Whether `rest` fits in `limit` units, without walking past the limit.
fn fits(rest: &str, limit: usize) -> bool {
    if rest.len() <= limit {
        return true; // UTF-16 units never exceed UTF-8 bytes.
    }
    let mut units = 0;
    for c in rest.chars() {
        units += c.len_utf16();
        if units > limit {
            return false;
        }
    }
    true
}

/// A chunk: byte ranges of the text, sent joined by one blank line (one range unless
/// `newline` mode packed paragraphs). Ranges, not copies, so formatting ranges can follow
/// each chunk (actions.md §5.3).
pub type Pieces = Vec<Range<usize>>;

/// `length` mode over `text[base..base + text.len()]` of the whole.
fn by_length(text: &str, base: usize, limit: usize, out: &mut Vec<Pieces>) {
    let at = |rest: &str| base + text.len() - rest.len();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        if fits(rest, limit) {
            let chunk = rest.trim_end();
            if !chunk.is_empty() {
                out.push(std::iter::once(at(rest)..at(rest) + chunk.len()).collect());
            }
            break;
        }
        let (mut end, last_newline, last_space) = window(rest, limit);
        if end == 0 {
            // A single cluster longer than the limit forms its own chunk.
            end = rest
                .graphemes(true)
                .next()
                .map(str::len)
                .unwrap_or(rest.len());
        } else if let Some(cut) = last_newline.or(last_space).filter(|c| *c > 0) {
            end = cut;
        }
        let chunk = rest[..end].trim_end();
        if !chunk.is_empty() {
            out.push(std::iter::once(at(rest)..at(rest) + chunk.len()).collect());
        }
        rest = rest[end..].trim_start();
    }
}

/// Paragraphs (trimmed byte ranges) split at blank lines outside fenced code blocks.
fn paragraphs(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut current: Option<Range<usize>> = None;
    let mut fence: Option<&str> = None;
    let push = |r: Range<usize>, out: &mut Vec<Range<usize>>| {
        let p = &text[r.clone()];
        let start = r.start + (p.len() - p.trim_start().len());
        let end = r.start + p.trim_end().len();
        if end > start {
            out.push(start..end);
        }
    };
    let mut pos = 0;
    for line in text.split('\n') {
        let span = pos..pos + line.len();
        pos += line.len() + 1;
        let trimmed = line.trim_start();
        match fence {
            Some(f) if trimmed.starts_with(f) => fence = None,
            Some(_) => {}
            None if trimmed.starts_with("```") => fence = Some("```"),
            None if trimmed.starts_with("~~~") => fence = Some("~~~"),
            None if line.trim().is_empty() => {
                if let Some(r) = current.take() {
                    push(r, &mut out);
                }
                continue;
            }
            None => {}
        }
        current = Some(match current {
            Some(r) => r.start..span.end,
            None => span,
        });
    }
    if let Some(r) = current {
        push(r, &mut out);
    }
    out
}

pub fn chunk(text: &str, limit: usize, mode: ChunkMode) -> Vec<String> {
    chunk_pieces(text, limit, mode)
        .iter()
        .map(|pieces| join(text, pieces))
        .collect()
}

/// The text of one chunk.
pub fn join(text: &str, pieces: &[Range<usize>]) -> String {
    pieces
        .iter()
        .map(|r| &text[r.clone()])
        .collect::<Vec<_>>()
        .join(JOIN)
}

pub fn chunk_pieces(text: &str, limit: usize, mode: ChunkMode) -> Vec<Pieces> {
    let mut out = Vec::new();
    match mode {
        ChunkMode::Length => by_length(text, 0, limit, &mut out),
        ChunkMode::Newline => by_paragraph(text, limit, &mut out),
    }
    out
}

/// What packed paragraphs are joined by.
pub const JOIN: &str = "\n\n";

/// `newline` mode (§7.5): whole paragraphs packed, in order, into as few messages as fit,
/// joined by one blank line; a paragraph longer than the limit is split by `length` rules and
/// its pieces are not packed with neighbours. (One message per paragraph sent a 9,000-
/// character reply as 19 iMessages where OpenClaw sends 3.)
fn by_paragraph(text: &str, limit: usize, out: &mut Vec<Pieces>) {
    let mut packed: Pieces = Vec::new();
    let mut packed_units = 0;
    for p in paragraphs(text) {
        let units = utf16_len(&text[p.clone()]);
        if units > limit {
            if !packed.is_empty() {
                out.push(std::mem::take(&mut packed));
                packed_units = 0;
            }
            by_length(&text[p.clone()], p.start, limit, out);
            continue;
        }
        if !packed.is_empty() && packed_units + JOIN.len() + units > limit {
            out.push(std::mem::take(&mut packed));
            packed_units = 0;
        }
        if !packed.is_empty() {
            packed_units += JOIN.len();
        }
        packed.push(p);
        packed_units += units;
    }
    if !packed.is_empty() {
        out.push(packed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_case_118() {
        let text = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna aliqua";
        let chunks = chunk(text, 50, ChunkMode::Length);
        assert!(chunks.len() > 1);
        for c in &chunks {
            assert!(utf16_len(c) <= 50, "{c:?}");
            assert_eq!(c.trim(), c);
        }
        assert_eq!(chunks.join(" "), text, "cut at word boundaries only");
    }

    #[test]
    fn no_whitespace_case_119() {
        let chunks = chunk(&"x".repeat(60), 50, ChunkMode::Length);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            vec![50, 10]
        );
    }

    #[test]
    fn clusters_are_never_split_case_120() {
        let text = format!("{}\u{1f44d}\u{1f3fd}", "a".repeat(49));
        assert_eq!(
            chunk(&text, 50, ChunkMode::Length),
            vec!["a".repeat(49), "\u{1f44d}\u{1f3fd}".to_string()]
        );
        let family = "\u{1f468}\u{200d}\u{1f469}\u{200d}\u{1f467}";
        let text = format!("{}{family}", "a".repeat(45));
        assert_eq!(
            chunk(&text, 50, ChunkMode::Length),
            vec!["a".repeat(45), family.to_string()]
        );
        // A cluster longer than the limit is its own chunk.
        let long = format!("e{}", "\u{301}".repeat(60));
        assert_eq!(chunk(&long, 50, ChunkMode::Length), vec![long.clone()]);
    }

    #[test]
    fn newline_mode_packs_paragraphs_case_121_122() {
        let text = "p1\n\np2\n\n\np3";
        assert_eq!(
            chunk(text, 4000, ChunkMode::Newline),
            vec!["p1\n\np2\n\np3"]
        );
        assert_eq!(chunk(text, 5, ChunkMode::Newline), vec!["p1", "p2", "p3"]);
        assert_eq!(chunk(text, 6, ChunkMode::Newline), vec!["p1\n\np2", "p3"]);
        let fenced = "intro\n\n```\ncode\n\nmore code\n```\n\nend";
        assert_eq!(chunk(fenced, 4000, ChunkMode::Newline), vec![fenced]);
        assert_eq!(
            chunk(fenced, 25, ChunkMode::Newline),
            vec!["intro", "```\ncode\n\nmore code\n```", "end"],
            "a fence with a blank line inside stays one paragraph"
        );
        // 40 paragraphs of ~220 characters: 3 sends, each ending at a paragraph boundary.
        let paragraphs: Vec<String> = (0..40)
            .map(|i| format!("{i:02} {}", "word ".repeat(44).trim_end()))
            .collect();
        let text = paragraphs.join("\n\n");
        assert!((8_900..9_200).contains(&text.len()), "{}", text.len());
        let chunks = chunk(&text, 4000, ChunkMode::Newline);
        assert_eq!(chunks.len(), 3);
        for c in &chunks {
            assert!(utf16_len(c) <= 4000);
            assert!(
                paragraphs.iter().any(|p| c.ends_with(p.as_str())),
                "ends at a paragraph"
            );
        }
        assert_eq!(chunks.join("\n\n"), text);
        // A paragraph over the limit is split alone; its pieces are not packed with others.
        let sizes: Vec<usize> = chunk(
            &format!("a\n\n{}\n\nb", "y".repeat(9000)),
            4000,
            ChunkMode::Newline,
        )
        .iter()
        .map(|c| c.len())
        .collect();
        assert_eq!(sizes, vec![1, 4000, 4000, 1000, 1]);
    }

    #[test]
    fn prefers_newlines() {
        let text = format!("{}\n{}", "a ".repeat(10).trim(), "b".repeat(45));
        let chunks = chunk(&text, 50, ChunkMode::Length);
        assert_eq!(chunks[0], "a a a a a a a a a a");
    }
}
