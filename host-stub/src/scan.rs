//! One validating pass over a delivered event: the JSON grammar checked, the few strings the
//! sink needs decoded, and the text of each event of a batch found, all at once.
//!
//! The sink used to parse a delivery with serde_json twice (the envelope with each event as a
//! `RawValue`, then each event for its ids); that cost more per message than the plugin's
//! serialisation of it (issue 22 item 7). This cursor reads the text once. It accepts what
//! serde_json accepts (RFC 8259; its tests compare the two on many inputs) up to 128 levels
//! of nesting, decodes escaped
//! strings with serde_json itself, and never panics or reads out of bounds.

use std::borrow::Cow;

/// Nesting deeper than this is refused (the cursor recurses), as serde_json refuses it when it
/// parses into values (its recursion limit is 128).
const MAX_DEPTH: u32 = 128;

/// A cursor over JSON text.
pub struct Cursor<'a> {
    text: &'a str,
    at: usize,
    depth: u32,
}

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str) -> Self {
        Cursor {
            text,
            at: 0,
            depth: 0,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn error(&self, what: &str) -> String {
        format!("{what} at byte {} of the event", self.at)
    }

    /// Skips whitespace; the index of the next token.
    pub fn ws(&mut self) -> usize {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
        self.at
    }

    /// The text from `start` to the cursor.
    pub fn since(&self, start: usize) -> &'a str {
        self.text.get(start..self.at).unwrap_or_default()
    }

    /// After the last value: only whitespace may follow.
    pub fn end(&mut self) -> Result<(), String> {
        self.ws();
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        self.ws();
        if self.peek() != Some(byte) {
            return Err(self.error(&format!("expected '{}'", byte as char)));
        }
        self.at += 1;
        Ok(())
    }

    fn nest(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        Ok(())
    }

    /// An object; `each(cursor, key)` must consume the key's value.
    pub fn object(
        &mut self,
        mut each: impl FnMut(&mut Self, Cow<'a, str>) -> Result<(), String>,
    ) -> Result<(), String> {
        self.expect(b'{')?;
        self.nest()?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.ws();
            let key = self.string()?;
            self.expect(b':')?;
            each(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => break,
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
        self.at += 1;
        self.depth -= 1;
        Ok(())
    }

    /// An array; `each(cursor)` must consume one item.
    pub fn array(
        &mut self,
        mut each: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        self.expect(b'[')?;
        self.nest()?;
        self.ws();
        if self.peek() == Some(b']') {
            self.at += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            each(self)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => break,
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
        self.at += 1;
        self.depth -= 1;
        Ok(())
    }

    /// A string, decoded: borrowed unless it has escapes (serde_json decodes those).
    pub fn string(&mut self) -> Result<Cow<'a, str>, String> {
        let (open, escaped) = self.string_literal()?;
        let literal = self.since(open);
        if !escaped {
            return Ok(Cow::Borrowed(
                literal.get(1..literal.len() - 1).unwrap_or_default(),
            ));
        }
        serde_json::from_str(literal)
            .map(Cow::Owned)
            .map_err(|e| format!("the string at byte {open} of the event: {e}"))
    }

    /// Any value, checked and skipped.
    pub fn skip(&mut self) -> Result<(), String> {
        match self.bytes().get(self.ws()) {
            Some(b'"') => self.string_literal().map(|_| ()),
            Some(b'{') => self.object(|c, _| c.skip()),
            Some(b'[') => self.array(Self::skip),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("expected a value")),
        }
    }

    fn literal(&mut self, word: &str) -> Result<(), String> {
        let rest = self.bytes().get(self.at..).unwrap_or_default();
        if !rest.starts_with(word.as_bytes()) {
            return Err(self.error("expected a value"));
        }
        self.at += word.len();
        Ok(())
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.at += 1;
        }
        self.at - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Result<(), String> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.error("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.error("invalid number"));
            }
        }
        Ok(())
    }

    /// Moves past the string at the cursor; its opening index and whether it has escapes.
    /// Eight bytes at a time: this loop is most of what the sink does per byte of an event.
    fn string_literal(&mut self) -> Result<(usize, bool), String> {
        let open = self.ws();
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a string"));
        }
        let b = self.bytes();
        let mut i = open + 1;
        let mut escaped = false;
        loop {
            while let Some(word) = b.get(i..i + 8) {
                let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
                let found = has_byte(word, b'"') | has_byte(word, b'\\') | has_control(word);
                if found != 0 {
                    i += (found.trailing_zeros() / 8) as usize;
                    break;
                }
                i += 8;
            }
            match b.get(i) {
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    i += match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 2,
                        Some(b'u')
                            if b.get(i + 2..i + 6)
                                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) =>
                        {
                            6
                        }
                        _ => {
                            self.at = i;
                            return Err(self.error("invalid escape"));
                        }
                    };
                }
                Some(c) if *c < 0x20 => {
                    self.at = i;
                    return Err(self.error("control character in a string"));
                }
                Some(_) => i += 1,
                None => {
                    self.at = b.len();
                    return Err(self.error("unterminated string"));
                }
            }
        }
        self.at = i + 1;
        Ok((open, escaped))
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` equal to `byte` (exact up to the lowest one found,
/// which is all the caller uses).
fn has_byte(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// The high bit of each byte below 0x20 (same exactness).
fn has_control(word: u64) -> u64 {
    word.wrapping_sub(ONES * 0x20) & !word & HIGHS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The top-level keys of an object and its string values (None for other values).
    fn fields(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
        let mut c = Cursor::new(text);
        let mut out = Vec::new();
        c.object(|c, key| {
            let value = match c.bytes().get(c.ws()) {
                Some(b'"') => Some(c.string()?.into_owned()),
                _ => {
                    c.skip()?;
                    None
                }
            };
            out.push((key.into_owned(), value));
            Ok(())
        })?;
        c.end()?;
        Ok(out)
    }

    fn valid(text: &str) -> bool {
        let mut c = Cursor::new(text);
        c.skip().and_then(|_| c.end()).is_ok()
    }

    #[test]
    fn reads_top_level_strings_and_skips_every_other_value() {
        let obj = r#" { "a" : "x" ,"n":-1.5e3,"o":{"k":["}",{"q":"\"]"}],"m":{}},"arr":[1,[2,"]"]],"t":true,"z":null,"last":"y"} "#;
        let want: Vec<(String, Option<String>)> = [
            ("a", Some("x")),
            ("n", None),
            ("o", None),
            ("arr", None),
            ("t", None),
            ("z", None),
            ("last", Some("y")),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
        .collect();
        assert_eq!(fields(obj).unwrap(), want);
        assert_eq!(fields("{}").unwrap(), vec![]);
    }

    #[test]
    fn escapes_are_decoded_in_keys_and_values() {
        let got = fields(r#"{"message\u0049d":"a\"b\\","text":"\ud83d\ude00\n"}"#).unwrap();
        assert_eq!(got[0], ("messageId".into(), Some("a\"b\\".into())));
        assert_eq!(got[1], ("text".into(), Some("\u{1f600}\n".into())));
    }

    #[test]
    fn a_string_ends_at_its_first_unescaped_quote_wherever_it_falls_in_a_word() {
        for len in 0..20 {
            for at in 0..len {
                let mut body = vec![b'a'; len];
                body[at] = b'"';
                let text = |body: &[u8]| format!("\"{}", String::from_utf8(body.to_vec()).unwrap());
                let t = text(&body);
                let mut c = Cursor::new(&t);
                assert_eq!(c.string_literal(), Ok((0, false)), "{len} {at}");
                assert_eq!(c.at, at + 2);
                if at >= 2 {
                    body[at - 2] = b'\\';
                    body[at - 1] = b'n';
                    let t = text(&body);
                    let mut c = Cursor::new(&t);
                    assert_eq!(c.string_literal(), Ok((0, true)), "{len} {at}");
                    assert_eq!(c.at, at + 2);
                    // An escaped quote does not end the string.
                    body[at - 2] = b'a';
                    body[at - 1] = b'\\';
                    let t = text(&body);
                    let mut c = Cursor::new(&t);
                    assert!(c.string_literal().is_err(), "escaped quote {len} {at}");
                }
            }
        }
    }

    /// What serde_json accepts, this accepts, and the other way round.
    #[test]
    fn accepts_exactly_what_serde_json_accepts() {
        let seeds = [
            r#"{"type":"batch","events":[{"type":"message","accountId":"a","messageId":"M1","text":"h\u00e9\"i","n":-0.5e+7,"o":{"x":[true,false,null,[]]}}]}"#,
            r#"[1, 2.0, -3e4, 0, "\/\b\f\n\r\t", {"":{}}]"#,
        ];
        let mut cases: Vec<String> = vec![
            "".into(),
            " ".into(),
            "01".into(),
            "-".into(),
            "1.".into(),
            ".5".into(),
            "1e".into(),
            "1e+".into(),
            "+1".into(),
            "tru".into(),
            "nul".into(),
            "\"\\x\"".into(),
            "\"\\u12G4\"".into(),
            "\"a\u{1}b\"".into(),
            "\"tab\there\"".into(),
            "{\"a\" 1}".into(),
            "{\"a\":1,}".into(),
            "[1,]".into(),
            "[1 2]".into(),
            "{1:2}".into(),
            "[]]".into(),
            "{}x".into(),
            "\"é漢😀\"".into(),
            "[".repeat(128) + &"]".repeat(128),
        ];
        // Every prefix of the seeds, and each with one byte replaced by a JSON-significant one.
        for seed in seeds {
            for cut in 0..=seed.len() {
                cases.push(seed[..cut].to_string());
            }
            for at in 0..seed.len() {
                for with in [
                    "\"", "\\", ",", ":", "}", "]", "{", "[", "0", "-", "e", ".", " ", "\n", "x",
                ] {
                    let mut s = seed.as_bytes().to_vec();
                    s.splice(at..at + 1, with.bytes());
                    cases.push(String::from_utf8(s).unwrap());
                }
            }
        }
        for case in &cases {
            let serde = serde_json::from_str::<serde::de::IgnoredAny>(case).is_ok();
            assert_eq!(valid(case), serde, "{case:?}");
        }
        // The one difference: serde_json skips any depth without recursing; this recurses,
        // so it refuses what serde_json would refuse to parse into a value.
        assert!(!valid(&("[".repeat(129) + &"]".repeat(129))));
        assert!(!valid(&"[{\"a\":".repeat(100_000)));
    }
}
