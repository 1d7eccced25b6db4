//! Cuts an expression into tokens, each with the 1-based column (in characters) it starts at.

use super::{CompileError, CompileErrorKind};

/// One token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    /// Digits, unsigned (a sign is an operator).
    Int(u64),
    /// A quoted string, escapes resolved.
    Str(String),
    /// A word: keyword, attribute or function name, as written.
    Word(String),
    /// `(`
    Open,
    /// `)`
    Close,
    /// `,`
    Comma,
    /// An operator: `= != <> < <= > >= + - * / %`.
    Op(&'static str),
    /// The end of the text.
    End,
}

/// A token, its column and its byte range in the text.
#[derive(Debug, Clone)]
pub(super) struct Token {
    pub(super) tok: Tok,
    pub(super) column: usize,
    pub(super) start: usize,
    pub(super) end: usize,
}

const OPERATORS: [&str; 12] = [
    "!=", "<>", "<=", ">=", "=", "<", ">", "+", "-", "*", "/", "%",
];

/// Splits `text` into tokens, ending with [`Tok::End`].
pub(super) fn tokens(text: &str) -> Result<Vec<Token>, CompileError> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    let mut column = 0;
    while let Some(&(start, c)) = chars.peek() {
        column += 1;
        let at = column;
        let tok = if c.is_whitespace() {
            chars.next();
            continue;
        } else if c.is_ascii_digit() {
            let mut value: u64 = 0;
            while let Some(&(_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                chars.next();
                column += 1;
                value = value
                    .saturating_mul(10)
                    .saturating_add(u64::from(d.to_digit(10).unwrap_or(0)));
            }
            column -= 1;
            Tok::Int(value)
        } else if c == '\'' || c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                let Some((_, d)) = chars.next() else {
                    return Err(parse_error(at, "string literal is not closed"));
                };
                column += 1;
                if d == c {
                    break;
                }
                if d == '\\' {
                    if let Some(&(_, e)) = chars.peek() {
                        chars.next();
                        column += 1;
                        // `\'` (or `\"`) is the quote itself; any other pair stays as written,
                        // so that `LIKE` still sees its `\%` and `\_` escapes.
                        if e != c {
                            s.push('\\');
                        }
                        s.push(e);
                        continue;
                    }
                }
                s.push(d);
            }
            Tok::Str(s)
        } else if c.is_alphanumeric() || c == '_' {
            let mut s = String::new();
            while let Some(&(_, d)) = chars
                .peek()
                .filter(|(_, d)| d.is_alphanumeric() || *d == '_')
            {
                chars.next();
                column += 1;
                s.push(d);
            }
            column -= 1;
            Tok::Word(s)
        } else {
            match c {
                '(' | ')' | ',' => {
                    chars.next();
                    match c {
                        '(' => Tok::Open,
                        ')' => Tok::Close,
                        _ => Tok::Comma,
                    }
                }
                _ => {
                    let rest = &text[start..];
                    let Some(op) = OPERATORS.iter().find(|op| rest.starts_with(**op)) else {
                        return Err(parse_error(at, format!("unexpected character `{c}`")));
                    };
                    for _ in 0..op.len() {
                        chars.next();
                    }
                    column += op.len() - 1;
                    Tok::Op(op)
                }
            }
        };
        let end = chars.peek().map_or(text.len(), |&(i, _)| i);
        out.push(Token {
            tok,
            column: at,
            start,
            end,
        });
    }
    out.push(Token {
        tok: Tok::End,
        column: column + 1,
        start: text.len(),
        end: text.len(),
    });
    Ok(out)
}

/// A parse error at `column`.
pub(super) fn parse_error(column: usize, message: impl Into<String>) -> CompileError {
    CompileError {
        kind: CompileErrorKind::Parse,
        column,
        message: message.into(),
    }
}
