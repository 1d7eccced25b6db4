//! Evaluation: walks the tree once, allocating only where a string has to be built (an
//! integer or boolean cast to a string, and the string functions).
//!
//! An operand that fails makes its operator yield the zero value of the operator's type,
//! carrying the operand's error up; a cast that fails in an operator gives the target type's
//! zero value and the operator goes on, reporting the cast error (so `NOT 10` is `true` with a
//! cast error, as the test kit requires).

use std::borrow::Cow;

use super::parser::{BinOp, Kind, Node};
use super::value::{Type, Value};
use super::{Attributes, ErrorKind, EvalError};

/// A failed evaluation: the fallback value and the error.
#[derive(Debug)]
pub(super) struct Failed<'a> {
    pub(super) value: Value<'a>,
    pub(super) error: EvalError<'a>,
}

type Eval<'a> = Result<Value<'a>, Failed<'a>>;

/// The first cast error an operator met, if any.
type Soft<'a> = Option<EvalError<'a>>;

/// What an evaluation reads: the expression's text (for error messages) and the event.
pub(super) struct Context<'a, A: ?Sized> {
    pub(super) source: &'a str,
    pub(super) attributes: &'a A,
}

fn finish<'a>(soft: Soft<'a>, value: Value<'a>) -> Eval<'a> {
    match soft {
        Some(error) => Err(Failed { value, error }),
        None => Ok(value),
    }
}

impl<'a, A: Attributes + ?Sized> Context<'a, A> {
    /// Evaluates one node.
    pub(super) fn eval(&self, node: &'a Node) -> Eval<'a> {
        match &node.kind {
            Kind::Bool(b) => Ok(Value::Bool(*b)),
            Kind::Int(i) => Ok(Value::Int(*i)),
            Kind::Str(s) => Ok(Value::Str(Cow::Borrowed(s))),
            Kind::Attribute(name) => self.attributes.attribute(name).ok_or_else(|| Failed {
                value: Value::Bool(false),
                error: self.error(
                    node,
                    ErrorKind::MissingAttribute,
                    "the event has no such attribute",
                ),
            }),
            Kind::Exists(name) => Ok(Value::Bool(self.attributes.attribute(name).is_some())),
            Kind::Not(x) => {
                let v = self.operand(x, node)?;
                let mut soft = None;
                let b = self.cast(&mut soft, x, v, Type::Bool) == Value::Bool(true);
                finish(soft, Value::Bool(!b))
            }
            Kind::Negate(x) => {
                let v = self.operand(x, node)?;
                let mut soft = None;
                let i = self.int(&mut soft, x, v);
                self.arithmetic(soft, node, i.checked_neg(), i32::MAX)
            }
            Kind::Binary(op, l, r) => self.binary(node, *op, l, r),
            Kind::Like {
                negated,
                value,
                pattern,
            } => {
                let v = self.operand(value, node)?.into_str();
                Ok(Value::Bool(pattern.matches(&v) != *negated))
            }
            Kind::In {
                negated,
                value,
                set,
            } => {
                let x = self.operand(value, node)?;
                let mut soft = None;
                let mut found = false;
                for item in set.iter() {
                    let v = self.operand(item, node)?;
                    if self.cast(&mut soft, item, v, x.ty()) == x {
                        found = true;
                        break;
                    }
                }
                finish(soft, Value::Bool(found != *negated))
            }
            Kind::Call(function, args) => {
                let mut soft = None;
                let mut values = Vec::with_capacity(args.len());
                for (i, arg) in args.iter().enumerate() {
                    let v = self.operand(arg, node)?;
                    values.push(match function.parameter(i) {
                        Some(ty) => self.cast(&mut soft, arg, v, ty),
                        None => v,
                    });
                }
                match function.call(values) {
                    Ok(v) => finish(soft, v),
                    Err((kind, detail, value)) => Err(Failed {
                        value,
                        error: soft.unwrap_or_else(|| self.error(node, kind, detail)),
                    }),
                }
            }
        }
    }

    fn binary(&self, node: &'a Node, op: BinOp, l: &'a Node, r: &'a Node) -> Eval<'a> {
        let lv = self.operand(l, node)?;
        let mut soft = None;
        if matches!(op, BinOp::And | BinOp::Or) {
            let lb = self.cast(&mut soft, l, lv, Type::Bool) == Value::Bool(true);
            // Short-circuit: the right operand is not evaluated at all.
            if lb == (op == BinOp::Or) {
                return finish(soft, Value::Bool(lb));
            }
            let rv = self.operand(r, node)?;
            let rb = self.cast(&mut soft, r, rv, Type::Bool) == Value::Bool(true);
            return finish(soft, Value::Bool(rb));
        }
        let rv = self.operand(r, node)?;
        let value = match op {
            BinOp::Xor => {
                let lb = self.cast(&mut soft, l, lv, Type::Bool);
                let rb = self.cast(&mut soft, r, rv, Type::Bool);
                Value::Bool(lb != rb)
            }
            // `=` is ambiguous: the right operand's type decides the left one's cast.
            BinOp::Eq | BinOp::NotEq => {
                let equal = self.cast(&mut soft, l, lv, rv.ty()) == rv;
                Value::Bool(equal == (op == BinOp::Eq))
            }
            _ => {
                let (a, b) = (self.int(&mut soft, l, lv), self.int(&mut soft, r, rv));
                return self.integers(soft, node, op, a, b);
            }
        };
        finish(soft, value)
    }

    /// Comparisons and arithmetic on two integers.
    fn integers(&self, soft: Soft<'a>, node: &Node, op: BinOp, a: i32, b: i32) -> Eval<'a> {
        let saturated = if (a < 0) == (b < 0) {
            i32::MAX
        } else {
            i32::MIN
        };
        let compared = match op {
            BinOp::Less => a < b,
            BinOp::LessEq => a <= b,
            BinOp::Greater => a > b,
            BinOp::GreaterEq => a >= b,
            BinOp::Add => return self.arithmetic(soft, node, a.checked_add(b), saturated_add(a)),
            BinOp::Sub => return self.arithmetic(soft, node, a.checked_sub(b), saturated_add(a)),
            BinOp::Mul => return self.arithmetic(soft, node, a.checked_mul(b), saturated),
            BinOp::Div | BinOp::Rem if b == 0 => {
                let error =
                    soft.unwrap_or_else(|| self.error(node, ErrorKind::Math, "division by zero"));
                return Err(Failed {
                    value: Value::Int(0),
                    error,
                });
            }
            BinOp::Div => return self.arithmetic(soft, node, a.checked_div(b), i32::MAX),
            _ => return finish(soft, Value::Int(a.wrapping_rem(b))),
        };
        finish(soft, Value::Bool(compared))
    }

    /// The result of a checked integer operation; an overflow yields `saturated` and a math
    /// error.
    fn arithmetic(
        &self,
        soft: Soft<'a>,
        node: &Node,
        result: Option<i32>,
        saturated: i32,
    ) -> Eval<'a> {
        match result {
            Some(i) => finish(soft, Value::Int(i)),
            None => Err(Failed {
                value: Value::Int(saturated),
                error: soft
                    .unwrap_or_else(|| self.error(node, ErrorKind::Math, "integer overflow")),
            }),
        }
    }

    /// Evaluates an operand of `parent`; if it fails, `parent` yields its own zero value.
    fn operand(&self, child: &'a Node, parent: &Node) -> Eval<'a> {
        self.eval(child).map_err(|failed| Failed {
            value: parent.zero_type().zero(),
            error: failed.error,
        })
    }

    /// Casts an operand, recording the first failure in `soft`.
    fn cast(&self, soft: &mut Soft<'a>, node: &Node, v: Value<'a>, ty: Type) -> Value<'a> {
        match v.cast(ty) {
            Ok(v) => v,
            Err((zero, why)) => {
                soft.get_or_insert_with(|| self.error(node, ErrorKind::Cast, why));
                zero
            }
        }
    }

    fn int(&self, soft: &mut Soft<'a>, node: &Node, v: Value<'a>) -> i32 {
        match self.cast(soft, node, v, Type::Int) {
            Value::Int(i) => i,
            _ => 0,
        }
    }

    fn error(&self, node: &Node, kind: ErrorKind, detail: &'static str) -> EvalError<'a> {
        EvalError {
            kind,
            detail,
            at: self.source.get(node.start..node.end).unwrap_or(""),
            column: node.column,
        }
    }
}

/// The saturated result of an overflowing `a + b` or `a - b` takes the sign of `a`.
fn saturated_add(a: i32) -> i32 {
    if a < 0 {
        i32::MIN
    } else {
        i32::MAX
    }
}
