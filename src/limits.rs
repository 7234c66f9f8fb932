//! The sizes mnemo accepts for what it stores, shared by every writer: the
//! MCP tools (`tools::validate` turns them into argument errors) and the
//! backup import of other servers' files. Below both, so neither imports
//! the other.

/// Longest memory content, in characters (the table's CHECK).
pub const MAX_CONTENT_CHARS: usize = 32_768;
/// Most tags on one memory.
pub const MAX_TAGS: usize = 32;
/// Longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;
/// Largest metadata object, in bytes of JSON.
pub const MAX_METADATA_BYTES: usize = 16_384;
/// Deepest nesting of a metadata object.
pub const MAX_METADATA_DEPTH: usize = 16;
/// Longest user id, in characters (the table's CHECK).
pub const MAX_USER_CHARS: usize = 256;

/// True for 1 to `max_chars` characters with no control character: what a
/// tag or a user id may be (trim it first).
pub fn is_label(text: &str, max_chars: usize) -> bool {
    let chars = text.chars().count();
    (1..=max_chars).contains(&chars) && !text.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_is_short_printable_and_not_empty() {
        assert!(is_label("person", MAX_TAG_CHARS));
        assert!(is_label(&"ü".repeat(MAX_TAG_CHARS), MAX_TAG_CHARS));
        assert!(!is_label(&"x".repeat(MAX_TAG_CHARS + 1), MAX_TAG_CHARS));
        assert!(!is_label("", MAX_TAG_CHARS));
        assert!(!is_label("a\nb", MAX_TAG_CHARS));
    }
}
