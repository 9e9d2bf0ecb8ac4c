//! The six classic tapbacks (actions.md §2.1, §3.3): one table for what imsg reports, the
//! summary texts Messages writes for them, and the words a host may use to send one.

/// A classic tapback kind; `name` is the wire word (`love`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapbackKind {
    Love,
    Like,
    Dislike,
    Laugh,
    Emphasize,
    Question,
}

/// One row of the table.
struct Row {
    kind: TapbackKind,
    name: &'static str,
    emoji: &'static str,
    /// `Loved “…”`.
    added: &'static str,
    /// `Removed a heart from “…”`.
    removed: &'static str,
    /// The host's words besides the name (OpenClaw's `mapTapbackReaction`), lower-cased,
    /// without U+FE0F.
    aliases: &'static [&'static str],
}

const TABLE: [Row; 6] = [
    Row {
        kind: TapbackKind::Love,
        name: "love",
        emoji: "❤️",
        added: "Loved",
        removed: "a heart",
        aliases: &["heart", "\u{2764}"],
    },
    Row {
        kind: TapbackKind::Like,
        name: "like",
        emoji: "👍",
        added: "Liked",
        removed: "a like",
        aliases: &["+1", "thumbsup", "\u{1f44d}"],
    },
    Row {
        kind: TapbackKind::Dislike,
        name: "dislike",
        emoji: "👎",
        added: "Disliked",
        removed: "a dislike",
        aliases: &["-1", "thumbsdown", "\u{1f44e}"],
    },
    Row {
        kind: TapbackKind::Laugh,
        name: "laugh",
        emoji: "😂",
        added: "Laughed at",
        removed: "a laugh",
        aliases: &["haha", "\u{1f602}", "\u{1f923}"],
    },
    Row {
        kind: TapbackKind::Emphasize,
        name: "emphasize",
        emoji: "‼️",
        added: "Emphasized",
        removed: "an emphasis",
        aliases: &["!!", "\u{203c}"],
    },
    Row {
        kind: TapbackKind::Question,
        name: "question",
        emoji: "❓",
        added: "Questioned",
        removed: "a question",
        aliases: &["?", "\u{ff1f}", "\u{2753}"],
    },
];

impl TapbackKind {
    /// Every kind, in the order a removal of all of them goes out.
    pub const ALL: [TapbackKind; 6] = [
        TapbackKind::Love,
        TapbackKind::Like,
        TapbackKind::Dislike,
        TapbackKind::Laugh,
        TapbackKind::Emphasize,
        TapbackKind::Question,
    ];

    fn row(self) -> &'static Row {
        // The table has one row per kind, in `ALL`'s order.
        &TABLE[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.row().name
    }

    pub fn emoji(self) -> &'static str {
        self.row().emoji
    }

    /// The kind imsg names (`love`, …; `emphasis` too, as some builds spell it).
    pub fn from_name(name: &str) -> Option<TapbackKind> {
        let name = if name == "emphasis" {
            "emphasize"
        } else {
            name
        };
        TABLE.iter().find(|r| r.name == name).map(|r| r.kind)
    }

    /// The kind of a summary text's verb: `Loved` (added) or `a heart` (removed).
    pub fn from_summary(verb: &str, added: bool) -> Option<TapbackKind> {
        TABLE
            .iter()
            .find(|r| verb == if added { r.added } else { r.removed })
            .map(|r| r.kind)
    }

    /// The host vocabulary: a name or an alias, case-insensitive, U+FE0F ignored.
    pub fn from_word(word: &str) -> Option<TapbackKind> {
        let w: String = word
            .trim()
            .chars()
            .filter(|c| *c != '\u{fe0f}')
            .collect::<String>()
            .to_lowercase();
        TABLE
            .iter()
            .find(|r| r.name == w || r.aliases.contains(&w.as_str()))
            .map(|r| r.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_one_row_per_kind_in_order() {
        for (i, kind) in TapbackKind::ALL.iter().enumerate() {
            assert_eq!(TABLE[i].kind, *kind);
            assert_eq!(TapbackKind::from_name(kind.name()), Some(*kind));
            assert_eq!(TapbackKind::from_word(kind.emoji()), Some(*kind));
            assert_eq!(TapbackKind::from_summary(TABLE[i].added, true), Some(*kind));
            assert_eq!(
                TapbackKind::from_summary(TABLE[i].removed, false),
                Some(*kind)
            );
        }
        assert_eq!(
            TapbackKind::from_name("emphasis"),
            Some(TapbackKind::Emphasize)
        );
        assert_eq!(TapbackKind::from_summary("Loved", false), None);
    }
}
