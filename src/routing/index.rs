//! The candidate index: which routes can match an event, found without testing every route.
//!
//! Imports `event`. Each route is filed under one dimension: its type list when it has one
//! (or else the types its CESQL filter pins with `type = …`, `type IN (…)` or
//! `type LIKE '…%'` in its top-level `AND` chain), else its source list when it has one, else with the catch-all routes. Within a dimension,
//! exact values (lower-cased) sit in a hash map and `*` prefixes in a byte trie, both mapping to
//! route positions in ascending order. A lookup gathers the positions whose pattern fits the
//! event, sorted and without duplicates; the caller then checks each candidate in full, so the
//! index only has to never miss a route, and table order is kept.

use crate::event::Event;
use crate::maps::HashMap;

use super::filter::{CompiledRoute, Patterns};
use super::text::Lowered;

/// Candidate routes by type, by source, and those that must always be checked.
#[derive(Debug, Default)]
pub(super) struct RouteIndex {
    types: PatternIndex,
    sources: PatternIndex,
    catch_all: Vec<usize>,
}

impl RouteIndex {
    /// Files every route under one dimension.
    pub(super) fn build(routes: &[CompiledRoute]) -> Self {
        let mut index = Self::default();
        for (i, route) in routes.iter().enumerate() {
            if !route.types.any {
                index.types.insert(&route.types, i);
            } else if let Some(types) = &route.sql_types {
                index.types.insert(types, i);
            } else if !route.sources.any {
                index.sources.insert(&route.sources, i);
            } else {
                index.catch_all.push(i);
            }
        }
        index
    }

    /// Replaces `out` with the positions of the routes that may match, ascending.
    pub(super) fn candidates(&self, event: &Event, out: &mut Vec<usize>) {
        out.clear();
        let mut lists = 0;
        lists += self.types.lookup(&event.ty, out);
        lists += self.sources.lookup(&event.source, out);
        if !self.catch_all.is_empty() {
            out.extend_from_slice(&self.catch_all);
            lists += 1;
        }
        // A single list is already ascending and free of duplicates.
        if lists > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }
}

/// Exact values and prefixes of one dimension, each to ascending route positions.
#[derive(Debug, Default)]
struct PatternIndex {
    exact: HashMap<Box<str>, Vec<usize>>,
    prefixes: Trie,
}

impl PatternIndex {
    fn insert(&mut self, patterns: &Patterns, route: usize) {
        for value in patterns.exact.iter() {
            push_once(self.exact.entry(value.clone()).or_default(), route);
        }
        for prefix in patterns.prefixes.iter() {
            self.prefixes.insert(prefix.as_bytes(), route);
        }
    }

    /// Appends the routes whose patterns fit `value`; returns how many lists it appended.
    fn lookup(&self, value: &str, out: &mut Vec<usize>) -> usize {
        if self.exact.is_empty() && self.prefixes.is_empty() {
            return 0;
        }
        let lowered = Lowered::new(value);
        let key = lowered.as_str();
        let mut lists = self.prefixes.collect(key.as_bytes(), out);
        if let Some(routes) = self.exact.get(key) {
            out.extend_from_slice(routes);
            lists += 1;
        }
        lists
    }
}

/// A byte trie of lower-cased prefixes; node 0 is the root (the empty prefix).
#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Default)]
struct TrieNode {
    /// Children by next byte, sorted by byte.
    children: Vec<(u8, usize)>,
    /// Routes with exactly this prefix, ascending.
    routes: Vec<usize>,
}

impl Trie {
    fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn insert(&mut self, prefix: &[u8], route: usize) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut at = 0;
        for &b in prefix {
            let next = self.nodes.len();
            let children = &mut self.nodes[at].children;
            at = match children.binary_search_by_key(&b, |c| c.0) {
                Ok(pos) => children[pos].1,
                Err(pos) => {
                    children.insert(pos, (b, next));
                    self.nodes.push(TrieNode::default());
                    next
                }
            };
        }
        push_once(&mut self.nodes[at].routes, route);
    }

    /// Appends the routes of every prefix of `key`; returns how many lists it appended.
    fn collect(&self, key: &[u8], out: &mut Vec<usize>) -> usize {
        let mut lists = 0;
        let mut node = self.nodes.first();
        let mut rest = key.iter();
        while let Some(n) = node {
            if !n.routes.is_empty() {
                out.extend_from_slice(&n.routes);
                lists += 1;
            }
            node = rest.next().and_then(|b| {
                let pos = n.children.binary_search_by_key(b, |c| c.0).ok()?;
                self.nodes.get(n.children[pos].1)
            });
        }
        lists
    }
}

/// Appends `route` unless it is already last (routes are inserted in ascending order).
fn push_once(routes: &mut Vec<usize>, route: usize) {
    if routes.last() != Some(&route) {
        routes.push(route);
    }
}
