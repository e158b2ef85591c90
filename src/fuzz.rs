//! Inputs for the parsers' property tests (`fuzz_*` in each parser's module): hostile text made by
//! mutating a valid example, so most cases get past the first syntax check and reach the code
//! behind it, plus plain random text. The tests run in CI with proptest's default 256 cases each;
//! `scripts/fuzz.sh` runs a long campaign (`PROPTEST_CASES`).

use proptest::prelude::*;

/// Text that is hard on a parser: control characters, quotes and brackets of YAML, JSON and SDP,
/// non-ASCII, and long runs (serde's recursion limit, huge numbers).
fn hostile_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x1f\"'{}\\[\\]:,#&*!|>%@`=\\-\\r\\n ]{1,8}",
        Just("\u{202e}\u{0}\u{feff}".to_string()),
        (1usize..2000).prop_map(|n| "[".repeat(n)),
        (1usize..2000).prop_map(|n| "9".repeat(n)),
        (1usize..5000).prop_map(|n| "a".repeat(n)),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        Just("1e999".to_string()),
    ]
}

/// One edit of `text` at a position chosen from `at` (wrapped to the text's length).
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, String),
    Delete(usize, usize),
    Duplicate(usize, usize),
    /// Replaces the line at the index with the piece.
    ReplaceLine(usize, String),
    /// Swaps two lines (out-of-order fields, sections and m-lines).
    SwapLines(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let at = any::<usize>();
    prop_oneof![
        (at, hostile_piece()).prop_map(|(a, p)| Edit::Insert(a, p)),
        (at, 1usize..64).prop_map(|(a, n)| Edit::Delete(a, n)),
        (at, 1usize..256).prop_map(|(a, n)| Edit::Duplicate(a, n)),
        (at, hostile_piece()).prop_map(|(a, p)| Edit::ReplaceLine(a, p)),
        (at, any::<usize>()).prop_map(|(a, b)| Edit::SwapLines(a, b)),
    ]
}

/// The char boundary at or before `at` (wrapped), so edits never split a UTF-8 sequence.
fn boundary(text: &str, at: usize) -> usize {
    let mut i = at % (text.len() + 1);
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(text: &mut String, edit: &Edit) {
    match edit {
        Edit::Insert(at, piece) => {
            let i = boundary(text, *at);
            text.insert_str(i, piece);
        }
        Edit::Delete(at, n) | Edit::Duplicate(at, n) => {
            let start = boundary(text, *at);
            let end = boundary(text, start.saturating_add(*n).min(text.len()));
            let end = end.max(start);
            if matches!(edit, Edit::Delete(..)) {
                text.replace_range(start..end, "");
            } else {
                let copy = text[start..end].to_string();
                text.insert_str(end, &copy);
            }
        }
        Edit::ReplaceLine(at, piece) => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let i = at % lines.len();
            lines[i] = piece;
            *text = lines.join("\n");
        }
        Edit::SwapLines(a, b) => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let (a, b) = (a % lines.len(), b % lines.len());
            lines.swap(a, b);
            *text = lines.join("\n");
        }
    }
}

/// Lines as YAML counts them for its error positions: a lone `\r` breaks a line too (`str::lines`
/// does not).
pub(crate) fn yaml_lines(text: &str) -> usize {
    text.replace("\r\n", "\n").replace('\r', "\n").lines().count()
}

/// `seed` after 1 to 8 random edits, or (one case in eight) random text of its own.
pub(crate) fn mutated(seed: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        7 => prop::collection::vec(edit(), 1..8).prop_map(move |edits| {
            let mut text = seed.to_string();
            for e in &edits {
                apply(&mut text, e);
            }
            text
        }),
        1 => hostile_piece(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_keep_text_valid_utf8_and_change_it() {
        let mut text = "ab\u{e9}c\nline two\n".to_string();
        apply(&mut text, &Edit::Insert(3, "X".into()));
        assert_eq!(
            text, "abX\u{e9}c\nline two\n",
            "inserted before the two-byte char, not inside it"
        );
        apply(&mut text, &Edit::SwapLines(0, 1));
        assert_eq!(text, "line two\nabX\u{e9}c\n");
        apply(&mut text, &Edit::Delete(0, 5));
        assert_eq!(text, "two\nabX\u{e9}c\n");
        apply(&mut text, &Edit::ReplaceLine(1, "[[".into()));
        assert_eq!(text, "two\n[[\n");
        apply(&mut text, &Edit::Duplicate(4, 3));
        assert_eq!(text, "two\n[[\n[[\n");
        assert_eq!(yaml_lines("a\rb\r\nc\n"), 3);
    }
}
