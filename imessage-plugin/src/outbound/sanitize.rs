//! The outbound sanitiser (channel-behaviour.md §7.4): assistant-internal markup never
//! reaches a recipient. Fenced code blocks are left exactly as they are.

use std::sync::OnceLock;

use regex::Regex;

const REASONING: &str = "think|thinking|thought|antthinking|reasoning";
const TOOLS: &str = "tool_call|function_call|tool_result";

struct Rules {
    blocks: Vec<Regex>,
    unclosed: Regex,
    final_tags: Regex,
    directives: Regex,
    separators: Regex,
    routing: Regex,
    role_lines: Regex,
    many_newlines: Regex,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let block = |names: &str| {
            Regex::new(&format!(
                r"(?is)<\s*(?:[a-z]+:)?(?:{names})\b[^>]*>.*?<\s*/\s*(?:[a-z]+:)?(?:{names})\s*>"
            ))
            .expect("static pattern")
        };
        Rules {
            blocks: vec![
                block(REASONING),
                block("relevant_memories|relevant-memories"),
                block(TOOLS),
            ],
            unclosed: Regex::new(&format!(r"(?is)<\s*(?:[a-z]+:)?(?:{REASONING})\b[^>]*>.*$"))
                .expect("static pattern"),
            final_tags: Regex::new(r"(?i)<\s*/?\s*(?:[a-z]+:)?final\b[^>]*>")
                .expect("static pattern"),
            directives: Regex::new(
                r"(?i)\[\[\s*(?:reply_to\s*:[^\]]*|reply_to_current|audio_as_voice)\s*\]\]",
            )
            .expect("static pattern"),
            separators: Regex::new(r"[#+]*(?:#\+){2,}[#+]*").expect("static pattern"),
            routing: Regex::new(r"(?i)assistant to=[\w.:-]+").expect("static pattern"),
            role_lines: Regex::new(r"(?im)^[ \t]*>?[ \t]*(?:user|assistant|system):[ \t]*$\n?")
                .expect("static pattern"),
            many_newlines: Regex::new(r"\n{3,}").expect("static pattern"),
        }
    })
}

/// Cleans one prose segment; `true` when an unclosed reasoning tag cut it (everything after
/// it, later segments included, is dropped).
fn clean_prose(text: &str) -> (String, bool) {
    let r = rules();
    let mut s = text.to_string();
    for block in &r.blocks {
        s = block.replace_all(&s, "").into_owned();
    }
    let cut = r.unclosed.is_match(&s);
    s = r.unclosed.replace_all(&s, "").into_owned();
    s = r.final_tags.replace_all(&s, "").into_owned();
    s = r.directives.replace_all(&s, "").into_owned();
    s = r.separators.replace_all(&s, "").into_owned();
    s = r.routing.replace_all(&s, "").into_owned();
    (r.role_lines.replace_all(&s, "").into_owned(), cut)
}

/// Splits into (is_fence, text) segments; an unterminated fence runs to the end.
fn segments(text: &str) -> Vec<(bool, String)> {
    let mut out: Vec<(bool, String)> = Vec::new();
    let mut fence: Option<&str> = None;
    let mut current = String::new();
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        match fence {
            None if trimmed.starts_with("```") || trimmed.starts_with("~~~") => {
                if !current.is_empty() {
                    out.push((false, std::mem::take(&mut current)));
                }
                fence = Some(if trimmed.starts_with("```") {
                    "```"
                } else {
                    "~~~"
                });
                current.push_str(line);
            }
            None => current.push_str(line),
            Some(f) => {
                current.push_str(line);
                if trimmed.starts_with(f) && current.lines().count() > 1 {
                    out.push((true, std::mem::take(&mut current)));
                    fence = None;
                }
            }
        }
    }
    if !current.is_empty() {
        out.push((fence.is_some(), current));
    }
    out
}

/// Sanitises host text; the result may be empty.
pub fn sanitize(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let mut out = String::with_capacity(text.len());
    for (is_fence, segment) in segments(&text) {
        if is_fence {
            out.push_str(&segment);
            continue;
        }
        let (cleaned, cut) = clean_prose(&segment);
        out.push_str(&cleaned);
        if cut {
            break;
        }
    }
    let collapsed = rules().many_newlines.replace_all(&out, "\n\n");
    collapsed.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases = [
            (
                "<thinking>x</thinking>The answer is 42.",
                "The answer is 42.",
            ),
            ("Visible\n<thinking>secret", "Visible"),
            ("<final>Hello</final>", "Hello"),
            ("a\n\n\n\nb", "a\n\nb"),
            ("[[ reply_to: 42 ]] Hi there", "Hi there"),
            ("[[reply_to:65]] Great question", "Great question"),
            ("[[reply_to_current]]", ""),
            (
                "<thinking>hidden</thinking>\nVisible reply\nassistant:",
                "Visible reply",
            ),
            ("<relevant_memories>m</relevant_memories>ok", "ok"),
            ("<tool_call>{}</tool_call>done", "done"),
            ("one +#+#+# two", "one  two"),
            ("hi assistant to=functions.run there", "hi  there"),
            ("> user:\nreal", "real"),
            ("line\r\nnext", "line\nnext"),
        ];
        for (input, want) in cases {
            assert_eq!(sanitize(input), want, "{input:?}");
        }
    }

    #[test]
    fn fenced_code_is_left_alone() {
        let text = "Look:\n```\n<thinking>kept</thinking>\n```\nend";
        assert_eq!(sanitize(text), text);
    }
}
