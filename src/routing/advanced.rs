//! Event Grid advanced filters: the nineteen operators, with Event Grid's rules for missing
//! keys, `null`, arrays and mismatched types.
//!
//! Imports `event` and `config`; keys and values are in `key`. The rules, in one place:
//! - a key that is absent, JSON `null`, a scalar of another type than the operator's, an
//!   object, or an array with no element of the operator's type is *missing*: positive
//!   operators and the three `StringNot{Contains,BeginsWith,EndsWith}` are then not matched,
//!   `NumberNotIn` and `StringNotIn` are matched, as Event Grid documents. Event Grid leaves
//!   the range operators undocumented; here `NumberInRange` is not matched and
//!   `NumberNotInRange` is matched, so each behaves like its `In`/`NotIn` sibling;
//! - an array is tested element by element, skipping elements of another type: a positive
//!   operator matches when any element matches any operand, a negated one fails when any does;
//! - an array that holds an object is not filterable and counts as missing for every operator;
//! - `IsNullOrUndefined` is true and `IsNotNull` false exactly when the key is missing, null
//!   or an array that holds an object; any other value (an object, `[]`) is present;
//! - an integer extension attribute is a number for number operators and its decimal text for
//!   string operators (Event Grid's documentation filters one with `StringBeginsWith`);
//! - string comparisons ignore case.

use crate::config::{AdvancedFilter, Condition};
use crate::event::Event;

use super::key::{Key, LazyData, Val};
use super::text::{fold, Folded};

/// The test of a number operator, in its positive form.
#[derive(Debug, Clone, PartialEq)]
enum NumTest {
    In(Box<[f64]>),
    Lt(f64),
    Gt(f64),
    Le(f64),
    Ge(f64),
    InRange(Box<[(f64, f64)]>),
}

impl NumTest {
    fn test(&self, x: f64) -> bool {
        match self {
            Self::In(values) => values.contains(&x),
            Self::Lt(n) => x < *n,
            Self::Gt(n) => x > *n,
            Self::Le(n) => x <= *n,
            Self::Ge(n) => x >= *n,
            Self::InRange(ranges) => ranges.iter().any(|(lo, hi)| *lo <= x && x <= *hi),
        }
    }
}

/// The test of a string operator, in its positive form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrTest {
    In,
    Contains,
    BeginsWith,
    EndsWith,
}

/// A compiled operator with its operands (strings lower-cased).
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Num(NumTest, bool),
    Str(StrTest, Box<[Box<str>]>, bool),
    Bool(bool),
    IsNullOrUndefined,
    IsNotNull,
}

impl Op {
    fn compile(condition: &Condition) -> Self {
        use Condition as C;
        let strs = |values: &[String]| values.iter().map(|v| fold(v)).collect();
        match condition {
            C::NumberIn(v) => Self::Num(NumTest::In(v.as_slice().into()), false),
            C::NumberNotIn(v) => Self::Num(NumTest::In(v.as_slice().into()), true),
            C::NumberLessThan(n) => Self::Num(NumTest::Lt(*n), false),
            C::NumberGreaterThan(n) => Self::Num(NumTest::Gt(*n), false),
            C::NumberLessThanOrEquals(n) => Self::Num(NumTest::Le(*n), false),
            C::NumberGreaterThanOrEquals(n) => Self::Num(NumTest::Ge(*n), false),
            C::NumberInRange(r) => Self::Num(NumTest::InRange(r.as_slice().into()), false),
            C::NumberNotInRange(r) => Self::Num(NumTest::InRange(r.as_slice().into()), true),
            C::BoolEquals(b) => Self::Bool(*b),
            C::StringIn(v) => Self::Str(StrTest::In, strs(v), false),
            C::StringNotIn(v) => Self::Str(StrTest::In, strs(v), true),
            C::StringContains(v) => Self::Str(StrTest::Contains, strs(v), false),
            C::StringNotContains(v) => Self::Str(StrTest::Contains, strs(v), true),
            C::StringBeginsWith(v) => Self::Str(StrTest::BeginsWith, strs(v), false),
            C::StringNotBeginsWith(v) => Self::Str(StrTest::BeginsWith, strs(v), true),
            C::StringEndsWith(v) => Self::Str(StrTest::EndsWith, strs(v), false),
            C::StringNotEndsWith(v) => Self::Str(StrTest::EndsWith, strs(v), true),
            C::IsNullOrUndefined => Self::IsNullOrUndefined,
            C::IsNotNull => Self::IsNotNull,
        }
    }

    /// The verdict when the key is missing (see the module documentation).
    fn when_missing(&self) -> bool {
        match self {
            Self::Num(_, negated) => *negated,
            Self::Str(test, _, negated) => *negated && *test == StrTest::In,
            Self::Bool(_) => false,
            Self::IsNullOrUndefined => true,
            Self::IsNotNull => false,
        }
    }

    /// Whether any operand matches a scalar; `None` when it is not of the operator's type.
    fn test_scalar(&self, v: Val<'_>) -> Option<bool> {
        match (self, v) {
            (Self::Num(t, _), Val::Num(x)) => Some(t.test(x)),
            #[expect(
                clippy::cast_precision_loss,
                reason = "Event Grid compares numbers as doubles"
            )]
            (Self::Num(t, _), Val::Int(i)) => Some(t.test(i as f64)),
            (Self::Str(t, ops, _), Val::Str(s)) => Some(test_str(*t, ops, s)),
            (Self::Str(t, ops, _), Val::Int(i)) => Some(test_str(*t, ops, &i.to_string())),
            (Self::Bool(b), Val::Bool(x)) => Some(*b == x),
            _ => None,
        }
    }

    /// Whether any element (or the scalar) matches any operand; `None`: behaves as missing.
    fn test_any(&self, v: Val<'_>) -> Option<bool> {
        let Val::Array(items) = v else {
            return self.test_scalar(v);
        };
        let mut seen = false;
        for item in items {
            if let Some(hit) = self.test_scalar(Val::from_json(item)) {
                if hit {
                    return Some(true);
                }
                seen = true;
            }
        }
        seen.then_some(false)
    }
}

fn test_str(test: StrTest, operands: &[Box<str>], value: &str) -> bool {
    let value = Folded::new(value);
    operands.iter().any(|op| match test {
        StrTest::In => value.eq(op),
        StrTest::Contains => value.contains(op),
        StrTest::BeginsWith => value.starts_with(op),
        StrTest::EndsWith => value.ends_with(op),
    })
}

/// How a filter judged a value, for explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Judgement {
    /// The value was tested; `true` when the filter holds.
    Tested(bool),
    /// The value behaves as missing (absent, null, wrong type); `true` when the filter holds.
    AsMissing(bool),
}

impl Judgement {
    /// True when the filter holds.
    pub(super) fn holds(self) -> bool {
        match self {
            Self::Tested(b) | Self::AsMissing(b) => b,
        }
    }
}

/// One compiled advanced filter.
#[derive(Debug)]
pub(super) struct CompiledFilter {
    key: Key,
    op: Op,
    /// The filter as configured, for explanations.
    pub(super) config: AdvancedFilter,
}

impl CompiledFilter {
    /// Compiles one configured filter.
    pub(super) fn compile(filter: &AdvancedFilter) -> Self {
        Self {
            key: Key::parse(&filter.key),
            op: Op::compile(&filter.condition),
            config: filter.clone(),
        }
    }

    /// The value the filter's key points at.
    pub(super) fn value<'a>(&self, event: &'a Event, data: &'a LazyData<'_>) -> Val<'a> {
        self.key.resolve(event, data)
    }

    /// True when the filter holds for the event.
    pub(super) fn holds(&self, event: &Event, data: &LazyData<'_>) -> bool {
        self.judge(self.value(event, data)).holds()
    }

    /// Judges a value found at the key.
    pub(super) fn judge(&self, v: Val<'_>) -> Judgement {
        match self.op {
            Op::IsNullOrUndefined => Judgement::Tested(v.is_absent()),
            Op::IsNotNull => Judgement::Tested(!v.is_absent()),
            _ => match self.op.test_any(v) {
                Some(any) => Judgement::Tested(any != self.is_negated()),
                None => Judgement::AsMissing(self.op.when_missing()),
            },
        }
    }

    fn is_negated(&self) -> bool {
        matches!(self.op, Op::Num(_, true) | Op::Str(_, _, true))
    }

    /// The kind of value the operator tests: `number`, `string`, `boolean` or `value`.
    pub(super) fn kind(&self) -> &'static str {
        match self.op {
            Op::Num(..) => "number",
            Op::Str(..) => "string",
            Op::Bool(_) => "boolean",
            Op::IsNullOrUndefined | Op::IsNotNull => "value",
        }
    }
}
