//! Transformation throughput (`cargo bench --bench transform`): the per-event work of a
//! delivery to a structured-mode HTTP sink, with and without a `transform`, in one run.
//!
//! Each case takes one order event (about 600 bytes) through `transform::apply_all` with the
//! programs of a route and sink, then encodes what the sink receives as the JSON format, and
//! reports events per second (one element per iteration):
//!
//! - `none`: no program: the event is encoded as it is.
//! - `rename`: a small program: moves `data.region` into an extension and renames the type.
//! - `reshape`: a typical reshaping program: builds a new `data` from fields, a sum over the
//!   line items and a filtered list, and moves a field into an extension.
//! - `rename_run_only`, `reshape_run_only`: the program alone, on the event already read as
//!   its input; the rest of `rename` and `reshape` is reading the event as JSON values and
//!   writing and checking the output.
//!
//! `bench/run.sh` reads the `bencher` output format.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard::event::http::{decode_structured, encode_structured};
use switchyard::transform;

const EVENT: &str = r#"{
  "specversion": "1.0", "id": "4f6e8a2c-1b2d-4c5e-9f00-1234567890ab",
  "source": "/shop/eu/checkout", "type": "Contoso.Orders.Created", "subject": "orders/8812",
  "time": "2026-12-06T10:00:00Z", "datacontenttype": "application/json",
  "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
  "data": {
    "id": "8812", "region": "eu", "currency": "EUR",
    "customer": {"id": "c-77", "name": "Ada Example", "tier": "gold", "email": "ada@example.org"},
    "items": [
      {"sku": "A-1", "price": 12.5, "quantity": 2, "gift": false},
      {"sku": "B-7", "price": 99.0, "quantity": 1, "gift": true},
      {"sku": "C-3", "price": 3.25, "quantity": 4, "gift": false}
    ],
    "shipping": {"method": "express", "address": {"city": "Lyon", "country": "FR"}}
  }
}"#;

const RENAME: &str = r#".region = .data.region | del(.data.region) | .type = "order.created.v2""#;

const RESHAPE: &str = r#"
.region = .data.region
| .data = {
    order: .data.id,
    customer: .data.customer.id,
    tier: .data.customer.tier,
    total: (.data.items | map(.price * .quantity) | add),
    currency: .data.currency,
    gifts: [.data.items[] | select(.gift) | .sku],
    country: .data.shipping.address.country
  }
"#;

fn config(program: Option<&str>) -> switchyard::Config {
    let transform = program
        .map(|p| format!("transform: |\n      {}", p.trim().replace('\n', "\n      ")))
        .unwrap_or_default();
    let yaml = format!(
        "sinks:\n  hook: {{ log: {{}} }}\nroutes:\n  - name: orders\n    to: [hook]\n    {transform}\n"
    );
    switchyard::config::load_str(&yaml, Path::new("bench.yaml"), &BTreeMap::new())
        .expect("the bench configuration is valid")
}

fn transforms(c: &mut Criterion) {
    let event = decode_structured(EVENT.as_bytes()).expect("a valid event");
    let mut group = c.benchmark_group("transform");
    group.throughput(Throughput::Elements(1));
    for (name, program) in [
        ("none", None),
        ("rename", Some(RENAME)),
        ("reshape", Some(RESHAPE)),
    ] {
        let config = config(program);
        let steps = transform::steps(&config, "orders", "hook");
        assert_eq!(steps.len(), usize::from(program.is_some()));
        let once = transform::apply_all(&event, &steps).expect("the program works");
        assert_eq!(once.is_some(), program.is_some());
        if let Some(step) = steps.first() {
            let text = encode_structured(&event);
            let input = jaq_json::read::parse_single(&text).expect("valid JSON");
            group.bench_function(format!("{name}_run_only"), |b| {
                b.iter(|| step.program.run_one(black_box(input.clone())).is_ok());
            });
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                let steps = transform::steps(&config, "orders", "hook");
                let out = transform::apply_all(black_box(&event), &steps)
                    .ok()
                    .flatten();
                black_box(encode_structured(out.as_ref().unwrap_or(&event)).len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, transforms);
criterion_main!(benches);
