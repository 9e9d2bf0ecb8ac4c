//! Splitting imsg's stdout into lines (imsg-protocol.md §A2 R1–R4).
//!
//! Bytes are buffered and split on `0x0A` only, then each complete line is decoded, so a
//! character split across two reads is reassembled (a `0x0A` byte never occurs inside a
//! multi-byte UTF-8 sequence). U+2028/U+2029 and a lone `\r` are text. A line longer than the
//! cap is discarded up to its newline without buffering it whole.

/// An owned line, as the tests collect them.
#[cfg(test)]
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Line(String),
    /// A line exceeded the cap and was discarded.
    Oversized,
}

pub const DEFAULT_MAX_LINE_BYTES: usize = 32 * 1024 * 1024;

pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    discarding: bool,
}

impl LineSplitter {
    pub fn new(max_line_bytes: usize) -> Self {
        LineSplitter {
            buf: Vec::with_capacity(8192),
            max: max_line_bytes.max(1),
            discarding: false,
        }
    }

    /// Feeds bytes; complete lines are appended to `out` (owned).
    #[cfg(test)]
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Frame>) {
        self.feed(data, |line| out.push(line.into_frame()));
    }

    /// End of stream: a last line without `\n` still counts.
    #[cfg(test)]
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        self.finish_with(|line| out.push(line.into_frame()));
    }

    /// Feeds bytes and calls `on_line` for each complete line. A line that lies entirely
    /// inside `data` is handed over borrowed, without being copied.
    pub fn feed(&mut self, mut data: &[u8], mut on_line: impl FnMut(Line<'_>)) {
        while !data.is_empty() {
            let newline = memchr::memchr(b'\n', data);
            let (segment, rest) = match newline {
                Some(i) => (&data[..i], Some(&data[i + 1..])),
                None => (data, None),
            };
            match rest {
                Some(rest) => {
                    if self.discarding {
                        self.discarding = false;
                    } else if self.buf.is_empty() && segment.len() <= self.max {
                        emit(segment, &mut on_line);
                    } else {
                        self.buf.extend_from_slice(segment);
                        if self.buf.len() > self.max {
                            on_line(Line::Oversized);
                        } else {
                            emit(&self.buf, &mut on_line);
                        }
                        self.buf.clear();
                    }
                    data = rest;
                }
                None => {
                    if !self.discarding {
                        self.buf.extend_from_slice(segment);
                        if self.buf.len() > self.max {
                            self.buf.clear();
                            self.discarding = true;
                            on_line(Line::Oversized);
                        }
                    }
                    break;
                }
            }
        }
    }

    pub fn finish_with(&mut self, mut on_line: impl FnMut(Line<'_>)) {
        if !self.discarding && !self.buf.is_empty() {
            emit(&self.buf, &mut on_line);
        }
        self.discarding = false;
        self.buf.clear();
    }
}

/// One complete line, borrowed when possible.
pub enum Line<'a> {
    Text(std::borrow::Cow<'a, str>),
    Oversized,
}

#[cfg(test)]
impl Line<'_> {
    fn into_frame(self) -> Frame {
        match self {
            Line::Text(t) => Frame::Line(t.into_owned()),
            Line::Oversized => Frame::Oversized,
        }
    }
}

/// Drops one trailing `\r`, skips blank lines, decodes (lossily, copying only when invalid).
fn emit(bytes: &[u8], on_line: &mut impl FnMut(Line<'_>)) {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    // The strict check first: it is several times faster than the lossy decoder on valid
    // text (which is every line of a healthy imsg).
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    };
    on_line(Line::Text(text));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> Vec<Frame> {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(s.to_string())
    }

    #[test]
    fn splits_on_newline_only() {
        let text = "a\u{2028}b\u{2029}c\r d\n";
        assert_eq!(
            split(&[text.as_bytes()], 1024),
            vec![line("a\u{2028}b\u{2029}c\r d")]
        );
    }

    #[test]
    fn reassembles_characters_split_across_reads() {
        let bytes = "h\u{e9}llo \u{1f44d}\n".as_bytes();
        for cut in 1..bytes.len() {
            assert_eq!(
                split(&[&bytes[..cut], &bytes[cut..]], 1024),
                vec![line("h\u{e9}llo \u{1f44d}")],
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn crlf_blank_lines_and_last_line_without_newline() {
        assert_eq!(
            split(&[b"x\r\n\n   \n\r\ny"], 1024),
            vec![line("x"), line("y")]
        );
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(split(&[b"a\xffb\n"], 1024), vec![line("a\u{fffd}b")]);
    }

    #[test]
    fn oversized_lines_are_discarded_and_reading_goes_on() {
        let big = [b'x'; 100];
        let out = split(&[b"ok1\n", &big[..60], &big[60..], b"\nok2\n"], 50);
        assert_eq!(out, vec![line("ok1"), Frame::Oversized, line("ok2")]);
    }
}
