//! The flows lexer: a file is a stream of whitespace-separated words with `#` comments.
//!
//! `#` starts a comment wherever it appears, even inside a word (`deny#x` is `deny`), and the
//! comment runs to the end of the line. Line breaks and indentation carry no meaning.

use super::diag::Span;

/// One word of a flows file and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token<'s> {
    pub text: &'s str,
    pub span: Span,
}

/// Splits `src` into its words, dropping whitespace and comments.
pub fn tokenize(src: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    let mut start: Option<usize> = None;
    let mut in_comment = false;
    for (i, c) in src.char_indices() {
        if in_comment {
            if c == '\n' {
                in_comment = false;
            }
            continue;
        }
        if c == '#' || c.is_whitespace() {
            if let Some(s) = start.take() {
                tokens.push(Token {
                    text: &src[s..i],
                    span: Span::new(s, i),
                });
            }
            in_comment = c == '#';
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        tokens.push(Token {
            text: &src[s..],
            span: Span::new(s, src.len()),
        });
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(src: &str) -> Vec<&str> {
        tokenize(src).iter().map(|t| t.text).collect()
    }

    #[test]
    fn words_and_comments() {
        assert_eq!(
            words("flow a deny#x\n  match # all\n"),
            ["flow", "a", "deny", "match"]
        );
        assert_eq!(words("#only\n\n\t"), Vec::<&str>::new());
        assert_eq!(words("a\r\nb"), ["a", "b"]);
        assert_eq!(words("x#y z\nw"), ["x", "w"]);
    }

    #[test]
    fn spans_are_byte_offsets() {
        let t = tokenize(" ab  cd");
        assert_eq!(t[0].span, Span::new(1, 3));
        assert_eq!(t[1].span, Span::new(5, 7));
    }
}
