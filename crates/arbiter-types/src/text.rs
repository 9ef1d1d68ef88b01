//! Text from records and files shown on a terminal.

/// `s` for one cell of a table on a terminal: control characters (which could move the cursor
/// or recolour the screen when the text comes from an agent or a file) shown as `?`, and cut
/// to `width` characters with `…` as the last one when longer.
pub fn terminal_cell(s: &str, width: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if out.chars().count() > width {
        out = out.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::terminal_cell;

    #[test]
    fn control_characters_are_shown_and_long_text_is_cut() {
        assert_eq!(terminal_cell("a\u{1b}[31mb", 10), "a?[31mb");
        assert_eq!(terminal_cell("abcdef", 4), "abc…");
        assert_eq!(terminal_cell("abcd", 4), "abcd");
        assert_eq!(terminal_cell("dé\n", 3), "dé?");
    }
}
