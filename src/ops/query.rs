//! What the admin listings (`dead-letter`, `events`, `sagas`) share: the query parameters of
//! their filters and pages, and a table that ends with where the next page starts.

use super::print_table;

/// The query parameters of the filters that are set, in order.
pub(super) fn filter_params<'a>(
    filters: impl IntoIterator<Item = (&'static str, &'a Option<String>)>,
) -> Vec<(&'static str, String)> {
    filters
        .into_iter()
        .filter_map(|(key, value)| value.clone().map(|value| (key, value)))
        .collect()
}

/// The query parameters of one page: `params` (the filters), then `limit`, then the cursor
/// named `name` when there is one.
pub(super) fn page_params(
    mut params: Vec<(&'static str, String)>,
    limit: usize,
    (name, cursor): (&'static str, Option<u64>),
) -> Vec<(&'static str, String)> {
    params.push(("limit", limit.to_string()));
    params.extend(cursor.map(|c| (name, c.to_string())));
    params
}

/// The rows of a table that starts with `header`.
pub(super) fn table(header: &[&str]) -> Vec<Vec<String>> {
    vec![header.iter().map(|h| (*h).to_owned()).collect()]
}

/// Prints `rows` as a table, then `more: --<flag> <next>` when there is a next page.
pub(super) fn print_page(rows: &[Vec<String>], flag: &str, next: Option<u64>) {
    print_table(rows);
    if let Some(next) = next {
        println!("more: --{flag} {next}");
    }
}
