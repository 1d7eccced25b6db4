//! `LIKE` patterns: `%` is any run of characters, `_` exactly one, and `\%`, `\_` (and `\\`)
//! are the characters themselves. A pattern is compiled once; the common shapes (exact, prefix,
//! suffix, contains) compare without walking the pattern character by character.

/// One element of a general pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece {
    /// A literal character.
    Char(char),
    /// `_`
    One,
    /// `%`
    Any,
}

/// A compiled `LIKE` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pattern {
    /// No wildcard.
    Exact(Box<str>),
    /// `literal%`
    Prefix(Box<str>),
    /// `%literal`
    Suffix(Box<str>),
    /// `%literal%`
    Contains(Box<str>),
    /// Anything else.
    General(Box<[Piece]>),
}

impl Pattern {
    /// Compiles a pattern as written in the expression.
    pub(super) fn compile(pattern: &str) -> Self {
        let pieces = pieces(pattern);
        let literal = |p: &[Piece]| -> Option<Box<str>> {
            p.iter()
                .map(|p| match p {
                    Piece::Char(c) => Some(*c),
                    _ => None,
                })
                .collect::<Option<String>>()
                .map(String::into_boxed_str)
        };
        let n = pieces.len();
        let any = |i: usize| pieces.get(i) == Some(&Piece::Any);
        if let Some(s) = literal(&pieces) {
            return Self::Exact(s);
        }
        if n >= 2 && any(0) && any(n - 1) {
            if let Some(s) = literal(&pieces[1..n - 1]) {
                return Self::Contains(s);
            }
        }
        if any(n - 1) {
            if let Some(s) = literal(&pieces[..n - 1]) {
                return Self::Prefix(s);
            }
        }
        if any(0) {
            if let Some(s) = literal(&pieces[1..]) {
                return Self::Suffix(s);
            }
        }
        Self::General(pieces.into())
    }

    /// True when `value` matches.
    pub(super) fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == &**s,
            Self::Prefix(s) => value.starts_with(&**s),
            Self::Suffix(s) => value.ends_with(&**s),
            Self::Contains(s) => value.contains(&**s),
            Self::General(pieces) => general(value, pieces),
        }
    }

    /// The exact value or prefix the pattern pins a string to, as `(exact, prefixes)`.
    pub(super) fn pinned(&self) -> Option<(Vec<String>, Vec<String>)> {
        match self {
            Self::Exact(s) => Some((vec![s.to_string()], Vec::new())),
            Self::Prefix(s) => Some((Vec::new(), vec![s.to_string()])),
            _ => None,
        }
    }
}

fn pieces(pattern: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '%' => Piece::Any,
            '_' => Piece::One,
            '\\' => match chars.peek() {
                Some(&e @ ('%' | '_' | '\\')) => {
                    chars.next();
                    Piece::Char(e)
                }
                _ => Piece::Char('\\'),
            },
            c => Piece::Char(c),
        });
    }
    out
}

/// Wildcard matching with one backtrack point (the last `%`), linear in practice.
fn general(value: &str, pieces: &[Piece]) -> bool {
    let (mut v, mut p) = (0, 0);
    let mut retry: Option<(usize, usize)> = None;
    loop {
        let next = value[v..].chars().next();
        let step = match (pieces.get(p), next) {
            (Some(Piece::Any), _) => {
                retry = Some((p + 1, v));
                p += 1;
                continue;
            }
            (Some(Piece::One), Some(c)) => Some(c),
            (Some(Piece::Char(want)), Some(c)) if *want == c => Some(c),
            (None, None) => return true,
            _ => None,
        };
        if let Some(c) = step {
            v += c.len_utf8();
            p += 1;
            continue;
        }
        // Mismatch: let the last `%` swallow one more character, or fail.
        let Some((rp, rv)) = retry else {
            return false;
        };
        let Some(c) = value[rv..].chars().next() else {
            return false;
        };
        retry = Some((rp, rv + c.len_utf8()));
        (p, v) = (rp, rv + c.len_utf8());
    }
}
