//! A Pratt parser for the CESQL grammar, with the precedence of the specification's ANTLR
//! grammar (tightest first): function calls, `NOT` and unary `-`; `LIKE` and `IN`; `* / %`;
//! `+ -`; `= != <>`; `< <= > >=`; and `AND`, `OR`, `XOR` together on the loosest level, all
//! grouping from the left.

use super::functions::Function;
use super::lexer::{parse_error, tokens, Tok, Token};
use super::like::Pattern;
use super::value::Type;
use super::{CompileError, CompileErrorKind, MAX_DEPTH};

/// A node of the expression tree, with the byte range and column of its text.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) kind: Kind,
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) column: usize,
}

/// What a node computes.
#[derive(Debug, Clone)]
pub(super) enum Kind {
    Bool(bool),
    Int(i32),
    Str(Box<str>),
    Attribute(Box<str>),
    Exists(Box<str>),
    Not(Box<Node>),
    Negate(Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    Like {
        negated: bool,
        value: Box<Node>,
        pattern: Pattern,
    },
    In {
        negated: bool,
        value: Box<Node>,
        set: Box<[Node]>,
    },
    Call(Function, Box<[Node]>),
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinOp {
    And,
    Or,
    Xor,
    Eq,
    NotEq,
    Less,
    LessEq,
    Greater,
    GreaterEq,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Binding power of `LIKE` and `IN`, and of the operand of `NOT` and unary `-`.
const POSTFIX: u8 = 6;
const PREFIX: u8 = 7;

impl BinOp {
    fn from_token(tok: &Tok) -> Option<(Self, u8)> {
        Some(match tok {
            Tok::Word(w) if w.eq_ignore_ascii_case("AND") => (Self::And, 1),
            Tok::Word(w) if w.eq_ignore_ascii_case("OR") => (Self::Or, 1),
            Tok::Word(w) if w.eq_ignore_ascii_case("XOR") => (Self::Xor, 1),
            Tok::Op(op) => match *op {
                "<" => (Self::Less, 2),
                "<=" => (Self::LessEq, 2),
                ">" => (Self::Greater, 2),
                ">=" => (Self::GreaterEq, 2),
                "=" => (Self::Eq, 3),
                "!=" | "<>" => (Self::NotEq, 3),
                "+" => (Self::Add, 4),
                "-" => (Self::Sub, 4),
                "*" => (Self::Mul, 5),
                "/" => (Self::Div, 5),
                _ => (Self::Rem, 5),
            },
            _ => return None,
        })
    }

    /// The type of the operator's result.
    pub(super) fn result(self) -> Type {
        match self {
            Self::Add | Self::Sub | Self::Mul | Self::Div | Self::Rem => Type::Int,
            _ => Type::Bool,
        }
    }
}

/// Parses a whole expression.
pub(super) fn parse(text: &str) -> Result<Node, CompileError> {
    let mut p = Parser {
        tokens: tokens(text)?,
        at: 0,
        depth: 0,
    };
    let node = p.expression(0)?;
    match p.peek() {
        Tok::End => Ok(node),
        _ => Err(p.unexpected()),
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

fn is_keyword(word: &str, keyword: &str) -> bool {
    word.eq_ignore_ascii_case(keyword)
}

impl Parser {
    fn token(&self) -> &Token {
        let last = self.tokens.len() - 1;
        &self.tokens[self.at.min(last)]
    }

    fn peek(&self) -> &Tok {
        &self.token().tok
    }

    fn peek_word(&self, offset: usize, keyword: &str) -> bool {
        matches!(self.tokens.get(self.at + offset), Some(Token { tok: Tok::Word(w), .. }) if is_keyword(w, keyword))
    }

    fn next(&mut self) -> Token {
        let token = self.token().clone();
        self.at += 1;
        token
    }

    fn unexpected(&self) -> CompileError {
        let token = self.token();
        let what = match &token.tok {
            Tok::End => "unexpected end of expression".to_owned(),
            Tok::Int(i) => format!("unexpected number {i}"),
            Tok::Str(s) => format!("unexpected string {s:?}"),
            Tok::Word(w) => format!("unexpected `{w}`"),
            Tok::Open => "unexpected `(`".to_owned(),
            Tok::Close => "unexpected `)`".to_owned(),
            Tok::Comma => "unexpected `,`".to_owned(),
            Tok::Op(op) => format!("unexpected `{op}`"),
        };
        parse_error(token.column, what)
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<Token, CompileError> {
        if self.peek() == tok {
            return Ok(self.next());
        }
        let token = self.token();
        Err(parse_error(token.column, format!("expected {what}")))
    }

    fn expression(&mut self, min_bp: u8) -> Result<Node, CompileError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(parse_error(
                self.token().column,
                "expression nested too deeply",
            ));
        }
        let mut lhs = self.prefix()?;
        loop {
            if let Some(negated) = self.postfix_ahead() {
                if POSTFIX < min_bp {
                    break;
                }
                lhs = self.postfix(lhs, negated)?;
                continue;
            }
            let Some((op, bp)) = BinOp::from_token(self.peek()) else {
                break;
            };
            if bp < min_bp {
                break;
            }
            self.next();
            let rhs = self.expression(bp + 1)?;
            let (start, column, end) = (lhs.start, lhs.column, rhs.end);
            lhs = Node {
                kind: Kind::Binary(op, Box::new(lhs), Box::new(rhs)),
                start,
                end,
                column,
            };
        }
        self.depth -= 1;
        Ok(lhs)
    }

    /// `Some(negated)` when `[NOT] LIKE` or `[NOT] IN` comes next.
    fn postfix_ahead(&self) -> Option<bool> {
        let op = |offset| self.peek_word(offset, "LIKE") || self.peek_word(offset, "IN");
        if op(0) {
            Some(false)
        } else if self.peek_word(0, "NOT") && op(1) {
            Some(true)
        } else {
            None
        }
    }

    fn postfix(&mut self, value: Node, negated: bool) -> Result<Node, CompileError> {
        if negated {
            self.next();
        }
        let op = self.next();
        let like = matches!(&op.tok, Tok::Word(w) if is_keyword(w, "LIKE"));
        if like {
            let token = self.next();
            let Tok::Str(pattern) = &token.tok else {
                return Err(parse_error(
                    token.column,
                    "LIKE needs a string literal pattern",
                ));
            };
            let (start, column) = (value.start, value.column);
            let kind = Kind::Like {
                negated,
                value: Box::new(value),
                pattern: Pattern::compile(pattern),
            };
            return Ok(Node {
                kind,
                start,
                end: token.end,
                column,
            });
        }
        self.expect(&Tok::Open, "`(` after IN")?;
        let mut set = vec![self.expression(0)?];
        while self.peek() == &Tok::Comma {
            self.next();
            set.push(self.expression(0)?);
        }
        let close = self.expect(&Tok::Close, "`,` or `)` in the IN set")?;
        let (start, column) = (value.start, value.column);
        let kind = Kind::In {
            negated,
            value: Box::new(value),
            set: set.into(),
        };
        Ok(Node {
            kind,
            start,
            end: close.end,
            column,
        })
    }

    fn prefix(&mut self) -> Result<Node, CompileError> {
        let token = self.next();
        let leaf = |kind| Node {
            kind,
            start: token.start,
            end: token.end,
            column: token.column,
        };
        match &token.tok {
            Tok::Int(i) => match i32::try_from(*i) {
                Ok(i) => Ok(leaf(Kind::Int(i))),
                Err(_) => Err(parse_error(token.column, "integer literal beyond 32 bits")),
            },
            Tok::Str(s) => Ok(leaf(Kind::Str(s.as_str().into()))),
            Tok::Open => {
                let inner = self.expression(0)?;
                let close = self.expect(&Tok::Close, "`)`")?;
                Ok(Node {
                    start: token.start,
                    end: close.end,
                    column: token.column,
                    ..inner
                })
            }
            Tok::Op("-") => self.negate(&token),
            Tok::Word(w) if is_keyword(w, "NOT") => {
                let operand = self.expression(PREFIX)?;
                let end = operand.end;
                Ok(Node {
                    end,
                    ..leaf(Kind::Not(Box::new(operand)))
                })
            }
            Tok::Word(w) if is_keyword(w, "EXISTS") => {
                let name = self.next();
                let Tok::Word(n) = &name.tok else {
                    return Err(parse_error(name.column, "EXISTS needs an attribute name"));
                };
                let n = attribute_name(n, name.column)?;
                Ok(Node {
                    end: name.end,
                    ..leaf(Kind::Exists(n))
                })
            }
            Tok::Word(w) if is_keyword(w, "TRUE") => Ok(leaf(Kind::Bool(true))),
            Tok::Word(w) if is_keyword(w, "FALSE") => Ok(leaf(Kind::Bool(false))),
            Tok::Word(w) if self.peek() == &Tok::Open => self.call(w, &token),
            Tok::Word(w) => Ok(leaf(Kind::Attribute(attribute_name(w, token.column)?))),
            _ => {
                self.at -= 1;
                Err(self.unexpected())
            }
        }
    }

    /// Unary minus; applied to an integer literal it makes a negative literal, so that
    /// `-2147483648` can be written.
    fn negate(&mut self, minus: &Token) -> Result<Node, CompileError> {
        let start = Node {
            kind: Kind::Bool(false),
            start: minus.start,
            end: minus.end,
            column: minus.column,
        };
        if let &Tok::Int(i) = self.peek() {
            let digits = self.next();
            let value = i64::try_from(i)
                .ok()
                .map(|i| -i)
                .and_then(|i| i32::try_from(i).ok());
            let Some(value) = value else {
                return Err(parse_error(minus.column, "integer literal beyond 32 bits"));
            };
            let end = Node {
                end: digits.end,
                ..start
            };
            return Ok(Node {
                kind: Kind::Int(value),
                ..end
            });
        }
        let operand = self.expression(PREFIX)?;
        Ok(Node {
            end: operand.end,
            kind: Kind::Negate(Box::new(operand)),
            ..start
        })
    }

    fn call(&mut self, name: &str, token: &Token) -> Result<Node, CompileError> {
        self.next();
        let mut args = Vec::new();
        if self.peek() != &Tok::Close {
            args.push(self.expression(0)?);
            while self.peek() == &Tok::Comma {
                self.next();
                args.push(self.expression(0)?);
            }
        }
        let close = self.expect(&Tok::Close, "`,` or `)` after a function argument")?;
        let Some(function) = Function::resolve(name, args.len()) else {
            return Err(CompileError {
                kind: CompileErrorKind::MissingFunction,
                column: token.column,
                message: format!(
                    "no function {}() with {} argument(s)",
                    name.to_ascii_uppercase(),
                    args.len()
                ),
            });
        };
        Ok(Node {
            kind: Kind::Call(function, args.into()),
            start: token.start,
            end: close.end,
            column: token.column,
        })
    }
}

/// Checks an attribute name (letters and digits; compared in lower case).
fn attribute_name(word: &str, column: usize) -> Result<Box<str>, CompileError> {
    const KEYWORDS: [&str; 9] = [
        "AND", "OR", "XOR", "NOT", "LIKE", "IN", "EXISTS", "TRUE", "FALSE",
    ];
    if KEYWORDS.iter().any(|k| is_keyword(word, k)) {
        return Err(parse_error(column, format!("unexpected keyword `{word}`")));
    }
    if !word.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(parse_error(
            column,
            format!("`{word}` is not an attribute name (letters a-z and digits only)"),
        ));
    }
    Ok(word.to_ascii_lowercase().into())
}

// === impl Node ===

impl Node {
    /// The type of the node's value, unless it depends on the event (a bare attribute).
    pub(super) fn static_type(&self) -> Option<Type> {
        match &self.kind {
            Kind::Bool(_)
            | Kind::Exists(_)
            | Kind::Not(_)
            | Kind::Like { .. }
            | Kind::In { .. } => Some(Type::Bool),
            Kind::Int(_) | Kind::Negate(_) => Some(Type::Int),
            Kind::Str(_) => Some(Type::Str),
            Kind::Attribute(_) => None,
            Kind::Binary(op, _, _) => Some(op.result()),
            Kind::Call(f, _) => Some(f.result()),
        }
    }

    /// The zero value of the node's type; an attribute's is `false` (specification §3.2).
    pub(super) fn zero_type(&self) -> Type {
        self.static_type().unwrap_or(Type::Bool)
    }

    /// Exact types and prefixes the top-level `AND` chain pins `type` to, if it does.
    pub(super) fn pinned_types(&self) -> Option<(Vec<String>, Vec<String>)> {
        match &self.kind {
            Kind::Binary(BinOp::And, l, r) => l.pinned_types().or_else(|| r.pinned_types()),
            Kind::Binary(BinOp::Eq, l, r) => match (&l.kind, &r.kind) {
                (Kind::Attribute(a), Kind::Str(s)) | (Kind::Str(s), Kind::Attribute(a))
                    if &**a == "type" =>
                {
                    Some((vec![s.to_string()], Vec::new()))
                }
                _ => None,
            },
            Kind::In {
                negated: false,
                value,
                set,
            } if matches!(&value.kind, Kind::Attribute(a) if &**a == "type") => {
                let exact = set.iter().map(|n| match &n.kind {
                    Kind::Str(s) => Some(s.to_string()),
                    _ => None,
                });
                Some((exact.collect::<Option<Vec<_>>>()?, Vec::new()))
            }
            Kind::Like {
                negated: false,
                value,
                pattern,
            } if matches!(&value.kind, Kind::Attribute(a) if &**a == "type") => pattern.pinned(),
            _ => None,
        }
    }
}
