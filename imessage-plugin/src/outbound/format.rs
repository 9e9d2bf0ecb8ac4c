//! Markdown → native text formatting (actions.md §5): the marker-free text and the style
//! ranges imsg's `text_formatting` takes (UTF-16 code units of the text sent).
//!
//! The text is the *source* with only what was understood taken out: emphasis, strong and
//! strikethrough delimiters, `<u>`/`<ins>` tags and backslash escapes. Everything else —
//! headings, lists, links, code spans and blocks, entities — stays exactly as written, so a
//! construct this converter does not render is never lost (§5.2, decision D5). pulldown-cmark
//! decides what is emphasis (CommonMark flanking rules); its source offsets say what to cut.

use std::ops::Range;

use pulldown_cmark::{Event, Options, Parser, Tag};
use regex::Regex;
use serde_json::{json, Value};

/// The four styles iMessage renders, in the order ranges are listed (§5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Style {
    Bold,
    Italic,
    Underline,
    Strikethrough,
}

impl Style {
    pub fn as_str(self) -> &'static str {
        match self {
            Style::Bold => "bold",
            Style::Italic => "italic",
            Style::Underline => "underline",
            Style::Strikethrough => "strikethrough",
        }
    }
}

/// One style over `start..start + length`, in UTF-16 code units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StyleRange {
    pub start: usize,
    pub length: usize,
    pub style: Style,
}

/// A converted text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Styled {
    pub text: String,
    pub ranges: Vec<StyleRange>,
}

impl Styled {
    /// Without leading and trailing whitespace, the ranges following the text.
    pub fn trimmed(&self) -> Styled {
        let start = self.text.len() - self.text.trim_start().len();
        let text = self.text.trim();
        let units = |s: &str| s.chars().map(char::len_utf16).sum::<usize>();
        Styled {
            ranges: within(&self.ranges, units(&self.text[..start]), units(text)),
            text: text.to_string(),
        }
    }
}

/// `__name__` identifiers that CommonMark would turn bold but are code (Python dunders):
/// preceded by `.`, followed by `(` or `[`, or preceded by a `(` that follows a word
/// character (OpenClaw's `protectDunderIdentifiers`).
fn dunders(source: &str) -> Vec<Range<usize>> {
    static DUNDER: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let re =
        DUNDER.get_or_init(|| Regex::new(r"__[A-Za-z0-9][A-Za-z0-9_]*?__").expect("valid pattern"));
    let bytes = source.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    re.find_iter(source)
        .filter(|m| {
            let before = m.start().checked_sub(1).map(|i| bytes[i]);
            let before2 = m.start().checked_sub(2).map(|i| bytes[i]);
            let after = bytes.get(m.end()).copied();
            before == Some(b'.')
                || matches!(after, Some(b'(' | b'['))
                || (before == Some(b'(') && before2.is_some_and(word))
        })
        .map(|m| m.range())
        .collect()
}

/// Converts Markdown to plain text and style ranges (§5.2).
pub fn convert(source: &str) -> Styled {
    // Dunder underscores are swapped for a byte CommonMark treats as text; offsets are kept,
    // and the output is cut from the original source.
    let protected = dunders(source);
    let parsed: std::borrow::Cow<str> = if protected.is_empty() {
        source.into()
    } else {
        let mut bytes = source.as_bytes().to_vec();
        for r in &protected {
            for b in &mut bytes[r.clone()] {
                if *b == b'_' {
                    *b = b'\x01';
                }
            }
        }
        String::from_utf8(bytes)
            .expect("ASCII bytes swapped for ASCII")
            .into()
    };
    let bytes = source.as_bytes();
    let mut cuts: Vec<Range<usize>> = Vec::new();
    let mut spans: Vec<(Range<usize>, Style)> = Vec::new();
    let mut open_underline: Vec<Range<usize>> = Vec::new();
    let mut covered = 0;
    for (event, range) in Parser::new_ext(&parsed, Options::ENABLE_STRIKETHROUGH).into_offset_iter()
    {
        match event {
            Event::Start(tag @ (Tag::Emphasis | Tag::Strong | Tag::Strikethrough)) => {
                let (style, marker) = match tag {
                    Tag::Emphasis => (Style::Italic, None),
                    Tag::Strong => (Style::Bold, None),
                    _ => (Style::Strikethrough, Some(b'~')),
                };
                let width = match (style, marker) {
                    (Style::Bold, _) => 2,
                    (_, Some(m)) => bytes[range.clone()]
                        .iter()
                        .take_while(|b| **b == m)
                        .count()
                        .min(2),
                    _ => 1,
                };
                if range.len() <= 2 * width {
                    continue;
                }
                cuts.push(range.start..range.start + width);
                cuts.push(range.end - width..range.end);
                spans.push((range.start + width..range.end - width, style));
            }
            Event::InlineHtml(html) => {
                let tag = html.trim().to_ascii_lowercase();
                if tag == "<u>" || tag == "<ins>" {
                    open_underline.push(range.clone());
                } else if tag == "</u>" || tag == "</ins>" {
                    if let Some(open) = open_underline.pop() {
                        cuts.push(open.clone());
                        cuts.push(range.clone());
                        spans.push((open.end..range.start, Style::Underline));
                    }
                }
                covered = range.end;
            }
            Event::Text(text) => {
                // A backslash escape: the text starts one byte after an uncovered `\`.
                let escaped = range.start > covered
                    && range.start >= 1
                    && bytes[range.start - 1] == b'\\'
                    && bytes.get(range.start).is_some_and(|b| {
                        b.is_ascii_punctuation() && text.as_bytes().first() == Some(b)
                    });
                if escaped {
                    cuts.push(range.start - 1..range.start);
                }
                covered = covered.max(range.end);
            }
            Event::Code(_) | Event::SoftBreak | Event::HardBreak | Event::Html(_) => {
                covered = covered.max(range.end);
            }
            _ => {}
        }
    }
    cuts.sort_by_key(|r| r.start);
    // Source byte → UTF-16 position in the output; cut bytes map to where they would be.
    let mut map = vec![0usize; source.len() + 1];
    let mut text = String::with_capacity(source.len());
    let mut units = 0;
    let mut next_cut = cuts.iter().peekable();
    let mut skip_until = 0;
    for (i, c) in source.char_indices() {
        map[i..i + c.len_utf8()].fill(units);
        while next_cut.peek().is_some_and(|r| r.start <= i) {
            let r = next_cut.next().expect("peeked");
            skip_until = skip_until.max(r.end);
        }
        if i < skip_until {
            continue;
        }
        text.push(c);
        units += c.len_utf16();
    }
    map[source.len()] = units;
    let ranges = spans
        .into_iter()
        .filter_map(|(r, style)| {
            let (start, end) = (map[r.start], map[r.end]);
            (end > start).then(|| StyleRange {
                start,
                length: end - start,
                style,
            })
        })
        .collect();
    Styled {
        text,
        ranges: normalise(ranges),
    }
}

/// Maximal runs per style, ordered by start then style.
fn normalise(mut ranges: Vec<StyleRange>) -> Vec<StyleRange> {
    ranges.sort_by_key(|r| (r.style, r.start));
    let mut out: Vec<StyleRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if last.style == r.style && r.start <= last.start + last.length => {
                let end = (last.start + last.length).max(r.start + r.length);
                last.length = end - last.start;
            }
            _ => out.push(r),
        }
    }
    out.sort_by_key(|r| (r.start, r.style));
    out
}

/// Every range moved right by `by` units (a response prefix put before the text).
pub fn shift(ranges: &[StyleRange], by: usize) -> Vec<StyleRange> {
    ranges
        .iter()
        .map(|r| StyleRange {
            start: r.start + by,
            ..*r
        })
        .collect()
}

/// The ranges that fall in `start..start + length` (UTF-16 units of the whole text),
/// re-based so `start` is 0 (one chunk's ranges, §5.3).
pub fn within(ranges: &[StyleRange], start: usize, length: usize) -> Vec<StyleRange> {
    let end = start + length;
    ranges
        .iter()
        .filter_map(|r| {
            let s = r.start.max(start);
            let e = (r.start + r.length).min(end);
            (e > s).then(|| StyleRange {
                start: s - start,
                length: e - s,
                style: r.style,
            })
        })
        .collect()
}

/// The `text_formatting` value (§5.1).
pub fn to_wire(ranges: &[StyleRange]) -> Value {
    Value::Array(
        ranges
            .iter()
            .map(|r| json!({"start": r.start, "length": r.length, "styles": [r.style.as_str()]}))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn r(start: usize, length: usize, style: Style) -> StyleRange {
        StyleRange {
            start,
            length,
            style,
        }
    }

    /// The golden table of §5.2 (case 204), ranges compared as sets.
    #[test]
    fn golden_vectors_case_204() {
        use Style::*;
        let table: Vec<(&str, &str, Vec<StyleRange>)> = vec![
            ("plain text reply", "plain text reply", vec![]),
            ("**bold** text", "bold text", vec![r(0, 4, Bold)]),
            (
                "**hi** and *there*",
                "hi and there",
                vec![r(0, 2, Bold), r(7, 5, Italic)],
            ),
            ("a _word_ b", "a word b", vec![r(2, 4, Italic)]),
            (
                "a **b** c **d** e",
                "a b c d e",
                vec![r(2, 1, Bold), r(6, 1, Bold)],
            ),
            ("***hi***", "hi", vec![r(0, 2, Bold), r(0, 2, Italic)]),
            (
                "**bold _and italic_ together**",
                "bold and italic together",
                vec![r(0, 24, Bold), r(5, 10, Italic)],
            ),
            (
                "__strong__ and ~~strike~~",
                "strong and strike",
                vec![r(0, 6, Bold), r(11, 6, Strikethrough)],
            ),
            ("<u>under</u> line", "under line", vec![r(0, 5, Underline)]),
            ("snake_case_var ok", "snake_case_var ok", vec![]),
            ("def __init__(self):", "def __init__(self):", vec![]),
            ("price * quantity", "price * quantity", vec![]),
            ("**  ** literal", "**  ** literal", vec![]),
            ("use `a*b*c` here", "use `a*b*c` here", vec![]),
            ("👍 **ok** now", "👍 ok now", vec![r(3, 2, Bold)]),
        ];
        for (input, text, ranges) in table {
            let out = convert(input);
            assert_eq!(out.text, text, "text of {input:?}");
            assert_eq!(
                out.ranges.iter().copied().collect::<BTreeSet<_>>(),
                ranges.into_iter().collect::<BTreeSet<_>>(),
                "ranges of {input:?}"
            );
        }
    }

    #[test]
    fn what_is_not_rendered_stays_as_written() {
        for kept in [
            "# Title\n\n- one\n- two",
            "> quoted",
            "[a link](https://example.com)",
            "```\nlet x = *y*;\n```",
            "a &amp; b",
            "obj.__dict__ and self.__class__",
            "x = __all__[0]",
        ] {
            assert_eq!(convert(kept).text, kept, "{kept:?}");
            assert!(convert(kept).ranges.is_empty(), "{kept:?}");
        }
        // Emphasis inside a kept construct is still converted.
        let out = convert("- **done**\n- [*x*](https://e.com)");
        assert_eq!(out.text, "- done\n- [x](https://e.com)");
        assert_eq!(
            out.ranges,
            vec![r(2, 4, Style::Bold), r(10, 1, Style::Italic)]
        );
    }

    #[test]
    fn escapes_become_the_character() {
        let out = convert(r"a \*literal\* and \_x\_ and **b**");
        assert_eq!(out.text, "a *literal* and _x_ and b");
        assert_eq!(out.ranges, vec![r(24, 1, Style::Bold)]);
        // A backslash before a letter is not an escape.
        assert_eq!(convert(r"C:\Users\me").text, r"C:\Users\me");
    }

    #[test]
    fn unmatched_markers_and_tags_stay() {
        assert_eq!(convert("**open only").text, "**open only");
        assert_eq!(convert("<u>no close").text, "<u>no close");
        assert_eq!(convert("~~a~~ ~b~").text, "a b");
    }

    #[test]
    fn chunk_windows_and_prefix_shift() {
        let ranges = vec![r(0, 62, Style::Bold)];
        assert_eq!(within(&ranges, 0, 50), vec![r(0, 50, Style::Bold)]);
        assert_eq!(within(&ranges, 50, 12), vec![r(0, 12, Style::Bold)]);
        assert!(within(&ranges, 70, 5).is_empty());
        assert_eq!(
            shift(&[r(0, 2, Style::Bold)], 4),
            vec![r(4, 2, Style::Bold)]
        );
        assert_eq!(
            to_wire(&[r(0, 4, Style::Bold)]),
            json!([{"start":0,"length":4,"styles":["bold"]}])
        );
    }
}
