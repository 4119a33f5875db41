//! Characters that must not reach a log line, an API answer or a page inside a string
//! someone else gave (a camera source, a name): control characters (they forge log
//! lines), and the invisible Unicode *format* characters (general category `Cf`), among
//! them the bidirectional controls that make `rtsp://host/x\u{202e}4pm.` display as
//! something else than it is ("Trojan Source"), zero-width spaces and the byte-order
//! mark. Core-agent's config checks and the frame kernel's source check both use
//! [`hidden_chars`].

/// Unicode 16.0 general category `Cf` (format), as inclusive ranges in code point
/// order. Checked against `regex-syntax`'s Unicode tables by a test.
const FORMAT: [(char, char); 21] = [
    ('\u{ad}', '\u{ad}'),       // soft hyphen
    ('\u{600}', '\u{605}'),     // Arabic number signs
    ('\u{61c}', '\u{61c}'),     // Arabic letter mark (bidi)
    ('\u{6dd}', '\u{6dd}'),     // Arabic end of ayah
    ('\u{70f}', '\u{70f}'),     // Syriac abbreviation mark
    ('\u{890}', '\u{891}'),     // Arabic pound / piastre mark above
    ('\u{8e2}', '\u{8e2}'),     // Arabic disputed end of ayah
    ('\u{180e}', '\u{180e}'),   // Mongolian vowel separator
    ('\u{200b}', '\u{200f}'),   // zero-width space, (non-)joiner, LRM, RLM
    ('\u{202a}', '\u{202e}'),   // LRE, RLE, PDF, LRO, RLO
    ('\u{2060}', '\u{2064}'),   // word joiner, invisible operators
    ('\u{2066}', '\u{206f}'),   // LRI, RLI, FSI, PDI, deprecated format chars
    ('\u{feff}', '\u{feff}'),   // zero-width no-break space (BOM)
    ('\u{fff9}', '\u{fffb}'),   // interlinear annotation
    ('\u{110bd}', '\u{110bd}'), // Kaithi number sign
    ('\u{110cd}', '\u{110cd}'), // Kaithi number sign above
    ('\u{13430}', '\u{1343f}'), // Egyptian hieroglyph format controls
    ('\u{1bca0}', '\u{1bca3}'), // shorthand format controls
    ('\u{1d173}', '\u{1d17a}'), // musical symbol format controls
    ('\u{e0001}', '\u{e0001}'), // language tag
    ('\u{e0020}', '\u{e007f}'), // tag characters
];

/// Whether `c` is a Unicode format character (general category `Cf`).
pub fn is_format(c: char) -> bool {
    // Most text is ASCII, which holds none.
    if c.is_ascii() {
        return false;
    }
    FORMAT
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// Whether `c` is one of the bidirectional controls (Unicode's `Bidi_Control`
/// property: ALM, LRM, RLM, the embeddings and overrides, the isolates), the format
/// characters that reorder how text displays.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Whether `c` must not appear in a name or a source: a control character (`Cc`), a
/// format character (`Cf`), or the line and paragraph separators (U+2028, U+2029),
/// which break lines like a newline in some viewers.
pub fn is_hidden(c: char) -> bool {
    c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}')
}

/// The characters of `s` that [`is_hidden`] refuses, with their byte offsets.
pub fn hidden_chars(s: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    s.char_indices().filter(|&(_, c)| is_hidden(c))
}

/// `U+202E (a bidi control)`: how a refused character is named in an error (never the
/// character itself, which would do in the message what it was refused for).
pub fn describe(c: char) -> String {
    let code = format!("U+{:04X}", c as u32);
    if c.is_control() {
        // Kept as it was before format characters were refused: `U+000A`.
        code
    } else if is_bidi_control(c) {
        format!("{code}, a bidi control")
    } else if is_format(c) {
        format!("{code}, an invisible format character")
    } else {
        format!("{code}, a line or paragraph separator")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The table is exactly `\p{Cf}` of the Unicode tables `regex-syntax` ships.
    #[test]
    fn the_table_is_unicode_general_category_cf() {
        use regex_syntax::hir::{Class, HirKind};
        let hir = regex_syntax::Parser::new().parse(r"\p{Cf}").unwrap();
        let HirKind::Class(Class::Unicode(class)) = hir.kind() else {
            panic!("not a Unicode class: {hir:?}");
        };
        let want: Vec<(char, char)> = class
            .ranges()
            .iter()
            .map(|r| (r.start(), r.end()))
            .collect();
        assert_eq!(FORMAT.to_vec(), want);
        // Sorted and disjoint, as the binary search needs.
        assert!(FORMAT.windows(2).all(|w| w[0].1 < w[1].0));
    }

    #[test]
    fn the_characters_of_the_issue_are_refused_and_named() {
        for c in [
            '\u{202a}',
            '\u{202e}',
            '\u{2066}',
            '\u{2069}',
            '\u{200b}',
            '\u{200f}',
            '\u{feff}',
            '\u{61c}',
            '\u{ad}',
            '\u{e0041}',
        ] {
            assert!(is_format(c) && is_hidden(c), "{c:?}");
        }
        for c in ['\n', '\r', '\0', '\u{7f}', '\u{85}', '\u{2028}', '\u{2029}'] {
            assert!(is_hidden(c), "{c:?}");
        }
        for c in ['a', ' ', '/', 'é', 'ß', '中', '\u{1f600}', '\u{300}'] {
            assert!(!is_format(c), "{c:?}");
        }
        assert_eq!(describe('\n'), "U+000A");
        assert_eq!(describe('\u{202e}'), "U+202E, a bidi control");
        assert_eq!(
            describe('\u{200b}'),
            "U+200B, an invisible format character"
        );
        assert_eq!(
            describe('\u{2028}'),
            "U+2028, a line or paragraph separator"
        );
        let found: Vec<_> = hidden_chars("rtsp://h/x\u{202e}y\nz").collect();
        assert_eq!(found, [(10, '\u{202e}'), (14, '\n')]);
    }

    proptest! {
        /// Every character agrees with the regex engine's `\p{Cf}`, anywhere in the
        /// code space.
        #[test]
        fn is_format_agrees_with_the_unicode_tables(c in any::<char>()) {
            let cf = regex_syntax::Parser::new().parse(r"\p{Cf}").unwrap();
            let regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(class)) =
                cf.kind()
            else {
                unreachable!()
            };
            let want = class.ranges().iter().any(|r| r.start() <= c && c <= r.end());
            prop_assert_eq!(is_format(c), want);
        }

        /// A string is refused exactly when it holds a hidden character, and the first
        /// one reported is the first one in it.
        #[test]
        fn a_hidden_character_anywhere_is_found_first_where_it_is(
            head in "[a-zA-Z0-9:/@._-]{0,40}",
            tail in "\\PC{0,20}",
            hidden in prop::sample::select(vec![
                '\u{202e}', '\u{2066}', '\u{200b}', '\u{feff}', '\u{61c}', '\u{ad}',
                '\u{2028}', '\n', '\u{0}', '\u{7f}', '\u{e0001}',
            ]),
        ) {
            prop_assert_eq!(hidden_chars(&head).count(), 0);
            let s = format!("{head}{hidden}{tail}");
            let first = hidden_chars(&s).next();
            prop_assert_eq!(first, Some((head.len(), hidden)));
        }
    }
}
