//! Cases beyond the test kit: columns of parse errors, precedence, pinned types, overflow.

use std::borrow::Cow;

use super::{Attributes, CompileErrorKind, ErrorKind, Expr, Type, Value};

struct NoAttributes;

impl Attributes for NoAttributes {
    fn attribute(&self, name: &str) -> Option<Value<'_>> {
        (name == "type").then_some(Value::Str(Cow::Borrowed("Contoso.Orders.Created")))
    }
}

fn eval(source: &str) -> (Value<'static>, Option<ErrorKind>) {
    let expr = Expr::parse(source).expect("parses");
    let done = expr.evaluate(&NoAttributes);
    let value = match done.value {
        Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
        Value::Bool(b) => Value::Bool(b),
        Value::Int(i) => Value::Int(i),
    };
    (value, done.error.map(|e| e.kind))
}

#[test]
fn parse_errors_carry_the_column() {
    let e = Expr::parse("type = 'a' AND AND").expect_err("bad");
    assert_eq!((e.kind, e.column), (CompileErrorKind::Parse, 16));
    let e = Expr::parse("subject <> 'x' AND 'unclosed").expect_err("bad");
    assert_eq!(e.column, 20);
    let e = Expr::parse("NOPE(1)").expect_err("bad");
    assert_eq!((e.kind, e.column), (CompileErrorKind::MissingFunction, 1));
    let e = Expr::parse("x LIKE 1").expect_err("bad");
    assert_eq!(e.column, 8);
    let e = Expr::parse("2147483648").expect_err("bad");
    assert_eq!(e.column, 1);
    let e = Expr::parse(&"(".repeat(100)).expect_err("bad");
    assert_eq!(e.kind, CompileErrorKind::Parse);
}

#[test]
fn precedence_follows_the_grammar() {
    assert_eq!(eval("1 + 2 * 3").0, Value::Int(7));
    assert_eq!(eval("1 - 2 - 3").0, Value::Int(-4));
    assert_eq!(eval("NOT FALSE AND FALSE").0, Value::Bool(false));
    // AND, OR and XOR share one level and group from the left.
    assert_eq!(eval("TRUE OR TRUE AND FALSE").0, Value::Bool(false));
    assert_eq!(eval("-2147483648").0, Value::Int(i32::MIN));
}

#[test]
fn overflow_is_a_math_error() {
    assert_eq!(
        eval("2147483647 + 1"),
        (Value::Int(i32::MAX), Some(ErrorKind::Math))
    );
    assert_eq!(
        eval("-2147483648 - 1"),
        (Value::Int(i32::MIN), Some(ErrorKind::Math))
    );
    assert_eq!(
        eval("-(-2147483648)"),
        (Value::Int(i32::MAX), Some(ErrorKind::Math))
    );
    assert_eq!(
        eval("-2147483648 / -1"),
        (Value::Int(i32::MAX), Some(ErrorKind::Math))
    );
    assert_eq!(eval("-2147483648 % -1"), (Value::Int(0), None));
}

#[test]
fn functions_work_on_characters() {
    assert_eq!(eval("LENGTH('héllo')").0, Value::Int(5));
    assert_eq!(eval("LEFT('héllo', 2)").0, Value::Str("hé".into()));
    assert_eq!(eval("RIGHT('héllo', 4)").0, Value::Str("éllo".into()));
    assert_eq!(eval("SUBSTRING('héllo', 2, 2)").0, Value::Str("él".into()));
    assert_eq!(eval("'é' LIKE '_'").0, Value::Bool(true));
    assert_eq!(eval("IS_INT('12')").0, Value::Bool(true));
    assert_eq!(eval("IS_INT('x')").0, Value::Bool(false));
    assert_eq!(eval("IS_BOOL('False')").0, Value::Bool(true));
    assert_eq!(eval("IS_BOOL(1)").0, Value::Bool(false));
    assert_eq!(
        eval("concat_ws('-', 1, TRUE)").0,
        Value::Str("1-true".into())
    );
}

#[test]
fn static_types() {
    let ty = |s: &str| Expr::parse(s).expect("parses").static_type();
    assert_eq!(ty("1 + 1"), Some(Type::Int));
    assert_eq!(ty("UPPER(x)"), Some(Type::Str));
    assert_eq!(ty("x = 1"), Some(Type::Bool));
    assert_eq!(ty("(myflag)"), None);
}

#[test]
fn the_top_level_and_chain_pins_the_type() {
    let pinned = |s: &str| Expr::parse(s).expect("parses").pinned_types();
    let exact = |v: &[&str]| Some((v.iter().map(|s| s.to_string()).collect(), Vec::new()));
    assert_eq!(pinned("type = 'A' AND x = 1"), exact(&["A"]));
    assert_eq!(pinned("x = 1 AND 'B' = type"), exact(&["B"]));
    assert_eq!(pinned("type IN ('A', 'B')"), exact(&["A", "B"]));
    assert_eq!(
        pinned("type LIKE 'Contoso.%' AND EXISTS x"),
        Some((Vec::new(), vec!["Contoso.".to_owned()]))
    );
    assert_eq!(pinned("type = 'A' OR x = 1"), None);
    assert_eq!(pinned("type NOT IN ('A')"), None);
    assert_eq!(pinned("type IN ('A', x)"), None);
    assert_eq!(pinned("type LIKE '%.Created'"), None);
    assert_eq!(pinned("NOT type = 'A'"), None);
}

#[test]
fn attributes_borrow_without_copying() {
    let expr = Expr::parse("type").expect("parses");
    let done = expr.evaluate(&NoAttributes);
    assert!(matches!(done.value, Value::Str(Cow::Borrowed(_))));
    assert!(expr.filter(&NoAttributes).is_ok_and(|m| !m));
    let missing = Expr::parse("priority = 'high'").expect("parses");
    let error = missing
        .filter(&NoAttributes)
        .expect_err("missing attribute");
    assert_eq!(error.kind, ErrorKind::MissingAttribute);
    assert_eq!(
        error.to_string(),
        "missing attribute error at column 1 (`priority`): the event has no such attribute"
    );
}

#[test]
fn the_documented_examples_mean_what_they_say() {
    struct Ext;
    impl Attributes for Ext {
        fn attribute(&self, name: &str) -> Option<Value<'_>> {
            let s = match name {
                "retries" => "5",
                "region" => "eu",
                "tenant" => "Test_A",
                "tier" => "gold",
                _ => return None,
            };
            Some(Value::Str(Cow::Borrowed(s)))
        }
    }
    let holds = |s: &str| {
        let expr = Expr::parse(s).expect("parses");
        expr.filter(&Ext).map_err(|e| e.kind)
    };
    let retry =
        r"INT(retries) >= 3 AND region IN ('eu', 'uk') AND LOWER(tenant) NOT LIKE 'test\_%'";
    assert_eq!(holds(retry), Ok(false));
    assert_eq!(holds(&retry.replace("test", "prod")), Ok(true));
    assert_eq!(
        holds("EXISTS tier AND (tier = 'gold' OR tier = 'platinum')"),
        Ok(true)
    );
    assert_eq!(holds("EXISTS priority AND priority = 'high'"), Ok(false));
    assert!(holds("priority = 'high'").is_err());
    assert_eq!(holds("retries > 2 AND NOT 'true'"), Ok(false));
}
