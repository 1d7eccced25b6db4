//! Advanced-filter keys: attribute names and aliases, extension attributes, `data.` paths.

use crate::config::Condition;
use crate::config::Condition as C;
use crate::event::{Event, ExtensionValue};

use super::{adv, advanced, event, matches, strings, with_data};

#[test]
fn data_paths_walk_objects() {
    let doc = r#"{"order":{"total":150,"lines":[{"sku":"a"}],"Tag":"x"},"n":1}"#;
    let e = with_data(event("T"), doc);
    let one = |key: &str, c: Condition| matches(advanced(vec![adv(key, c)]), &e);
    assert!(one("data.order.total", C::NumberGreaterThan(100.0)));
    assert!(one("Data.order.total", C::NumberGreaterThan(100.0)));
    assert!(one("data.order.Tag", C::StringIn(strings(&["X"]))));
    assert!(one("data.order.tag", C::IsNullOrUndefined));
    assert!(one("data.order.total.deeper", C::IsNullOrUndefined));
    assert!(one("data.n.x", C::IsNullOrUndefined));
    assert!(one("data.order.lines", C::IsNullOrUndefined));
    assert!(one("data.order", C::IsNotNull));
    assert!(one("data", C::IsNotNull));
    assert!(!one("data.missing", C::NumberLessThan(1.0)));
}

#[test]
fn attribute_keys_and_aliases() {
    let mut e: Event = with_data(event("Contoso.Orders.Created"), "{}");
    e.subject = Some("/orders/1".to_owned());
    e.time = Some("2024-01-01T00:00:00Z".to_owned());
    e.data_version = Some("2.0".to_owned());
    e.datacontenttype = Some("application/json".to_owned());
    e.set_extension("tenant", ExtensionValue::String("Acme".to_owned()));
    let one = |key: &str, c: Condition| matches(advanced(vec![adv(key, c)]), &e);
    let s = |v: &[&str]| strings(v);
    assert!(one("id", C::StringIn(s(&["ID-1"]))));
    assert!(one("ID", C::StringIn(s(&["id-1"]))));
    assert!(one("source", C::StringIn(s(&["/SRC"]))));
    assert!(one("Topic", C::StringIn(s(&["/src"]))));
    assert!(one("type", C::StringEndsWith(s(&[".created"]))));
    assert!(one("EventType", C::StringBeginsWith(s(&["contoso."]))));
    assert!(one("Subject", C::StringContains(s(&["ORDERS"]))));
    assert!(one("specversion", C::StringIn(s(&["1.0"]))));
    assert!(one("time", C::StringBeginsWith(s(&["2024-"]))));
    assert!(one("EventTime", C::IsNotNull));
    assert!(one(
        "datacontenttype",
        C::StringIn(s(&["Application/JSON"]))
    ));
    assert!(one("dataschema", C::IsNullOrUndefined));
    assert!(one("DataVersion", C::StringIn(s(&["2.0"]))));
    assert!(one("dataversion", C::NumberNotIn(vec![2.0])));
    assert!(one("Tenant", C::StringIn(s(&["acme"]))));
    assert!(!one("subject", C::IsNullOrUndefined));
    e.subject = None;
    assert!(matches(
        advanced(vec![adv("subject", C::IsNullOrUndefined)]),
        &e
    ));
    assert!(!matches(
        advanced(vec![adv("subject", C::StringNotContains(s(&["x"])))]),
        &e
    ));
}
