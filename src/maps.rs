//! The hash maps of the daemon's hot paths, with a faster hasher than std's.
//!
//! Their keys are names from the configuration (sinks, routes, route templates) and ids the
//! daemon assigns, so no client chooses what goes in. SipHash, std's default, guards a map
//! against keys chosen to collide, which these maps need not pay for on every lookup;
//! foldhash, seeded at random for each map, hashes a short name in a fraction of the time.

/// The hasher of the maps below: foldhash, seeded at random for each map.
pub(crate) type FastHasher = foldhash::fast::RandomState;

/// A `HashMap` with [`FastHasher`].
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, FastHasher>;

/// A `DashMap` with [`FastHasher`].
pub(crate) type DashMap<K, V> = dashmap::DashMap<K, V, FastHasher>;
