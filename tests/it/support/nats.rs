//! The NATS server with JetStream that the NATS tests require (see `nats_server`: the one
//! `SWITCHYARD_TEST_NATS_URL` names, or a `nats-server` this process starts; the tests fail,
//! never skip, without either), and per-test streams that are deleted afterwards.

use async_nats::jetstream::{self, stream, Context};

pub(crate) use super::nats_server::url;

/// A JetStream context on the test server.
pub(crate) async fn jetstream() -> Context {
    let url = url();
    let client = async_nats::connect(url)
        .await
        .unwrap_or_else(|e| panic!("the test NATS server at {url} answers: {e}"));
    jetstream::new(client)
}

/// A fresh stream name for one test: `prefix` plus a random suffix.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{:012x}", fastrand::u64(..1 << 48))
}

/// Streams a test created (directly or through a spool prefix); deleted on drop, also when
/// the test panicked.
#[derive(Debug)]
pub(crate) struct Streams {
    names: Vec<String>,
}

impl Streams {
    /// The work and dead-letter streams of the spool prefix `prefix`.
    pub(crate) fn spool(prefix: &str) -> Self {
        Self {
            names: vec![prefix.to_owned(), format!("{prefix}-dlq")],
        }
    }

    /// The streams of the spool prefix `prefix` and the stream of its saga bucket.
    pub(crate) fn spool_and_sagas(prefix: &str) -> Self {
        let mut streams = Self::spool(prefix);
        streams.names.push(format!("KV_{prefix}-sagas"));
        streams
    }

    /// Creates a stream capturing `subjects`, to be deleted with the guard.
    pub(crate) async fn create(name: &str, subjects: Vec<String>) -> (Self, stream::Stream) {
        let config = stream::Config {
            name: name.to_owned(),
            subjects,
            ..stream::Config::default()
        };
        let created = jetstream().await.create_stream(config).await;
        let guard = Self {
            names: vec![name.to_owned()],
        };
        (guard, created.expect("test stream created"))
    }

    /// A stream's current state.
    pub(crate) async fn state(name: &str) -> stream::State {
        let mut s = jetstream().await.get_stream(name).await.expect("stream");
        s.info().await.expect("stream info").state.clone()
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        // Drop cannot await; a thread with its own runtime works under either test flavour.
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let js = jetstream().await;
                for name in names {
                    if let Err(error) = js.delete_stream(&name).await {
                        eprintln!("stream {name} not deleted: {error}");
                    }
                }
            });
        });
        if deleted.join().is_err() {
            eprintln!("deleting the test streams panicked");
        }
    }
}
