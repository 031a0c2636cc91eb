//! Prices: the workflow's [`Prices`] port over the AWS Price List API ([`sdk`]: one
//! `GetProducts` per region and node type), behind a cache ([`CachedPrices`]) so that a plan
//! costs at most one call per type a day, and never waits on the Price List for long.
//!
//! A price is read for the card, never to decide: every failure here ends as "unknown (why)"
//! on the card, never as a failed or delayed plan. The simulator's side of the protocol lives
//! with the other AWS services in `elasticache::sim`.

pub mod sdk;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::domain::{NodeType, Timestamp};
use crate::workflow::ports::{BoxFuture, Clock, PriceError, Prices};

pub use sdk::SdkPrices;

/// How long a price that was read is believed: AWS changes list prices rarely, and announces
/// it.
pub const FRESH_FOR: Duration = Duration::from_secs(24 * 3600);
/// How long a failed read is remembered: long enough that a burst of plans doesn't hammer a
/// throttled or forbidden API, short enough that one throttle doesn't hide prices for a day.
pub const FAILURE_FRESH_FOR: Duration = Duration::from_secs(5 * 60);
/// How long one read may take before it counts as failed: the plan is on its way to a card.
pub const LOOKUP_WITHIN: Duration = Duration::from_secs(5);

/// What one (region, node type) read found, and until when it holds.
#[derive(Debug, Clone)]
struct Entry {
    until: Timestamp,
    found: Result<Option<f64>, PriceError>,
}

/// [`Prices`] that asks `inner` at most once per (region, node type) per [`FRESH_FOR`] (per
/// [`FAILURE_FRESH_FOR`] after a failure), each read bounded by [`LOOKUP_WITHIN`]. Time is the
/// [`Clock`]'s, so tests move a day in no time.
pub struct CachedPrices {
    inner: Arc<dyn Prices>,
    clock: Arc<dyn Clock>,
    within: Duration,
    entries: Mutex<HashMap<(String, NodeType), Entry>>,
}

impl CachedPrices {
    pub fn new(inner: Arc<dyn Prices>, clock: Arc<dyn Clock>) -> CachedPrices {
        CachedPrices {
            inner,
            clock,
            within: LOOKUP_WITHIN,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Each read gives up after `within` (tests).
    pub fn within(mut self, within: Duration) -> CachedPrices {
        self.within = within;
        self
    }

    fn cached(&self, key: &(String, NodeType), now: Timestamp) -> Option<Entry> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).filter(|e| now < e.until).cloned()
    }

    fn remember(&self, key: (String, NodeType), found: Result<Option<f64>, PriceError>) {
        let now = self.clock.now();
        let keep = if found.is_ok() {
            FRESH_FOR
        } else {
            FAILURE_FRESH_FOR
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // Forget what no longer holds, so the map stays as small as the types in use.
        entries.retain(|_, e| now < e.until);
        entries.insert(
            key,
            Entry {
                until: now.plus(keep),
                found,
            },
        );
    }
}

impl Prices for CachedPrices {
    fn on_demand_hourly<'a>(
        &'a self,
        region: &'a str,
        node_type: &'a NodeType,
    ) -> BoxFuture<'a, Result<Option<f64>, PriceError>> {
        Box::pin(async move {
            let key = (region.to_string(), node_type.clone());
            if let Some(e) = self.cached(&key, self.clock.now()) {
                return e.found;
            }
            let within = self.within;
            let read = self.inner.on_demand_hourly(region, node_type);
            let found = tokio::time::timeout(within, read)
                .await
                .unwrap_or_else(|_| {
                    Err(PriceError::Unavailable {
                        code: "Timeout".into(),
                        message: format!("no answer within {within:?}"),
                    })
                });
            self.remember(key, found.clone());
            found
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::ports::TokioClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers from a script and counts the calls per node type.
    struct Scripted {
        calls: Mutex<Vec<String>>,
        answer: Mutex<Result<Option<f64>, PriceError>>,
        slow: AtomicUsize,
    }

    impl Scripted {
        fn new(answer: Result<Option<f64>, PriceError>) -> Arc<Scripted> {
            Arc::new(Scripted {
                calls: Mutex::new(Vec::new()),
                answer: Mutex::new(answer),
                slow: AtomicUsize::new(0),
            })
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn answer(&self, a: Result<Option<f64>, PriceError>) {
            *self.answer.lock().unwrap() = a;
        }
    }

    impl Prices for Scripted {
        fn on_demand_hourly<'a>(
            &'a self,
            region: &'a str,
            node_type: &'a NodeType,
        ) -> BoxFuture<'a, Result<Option<f64>, PriceError>> {
            Box::pin(async move {
                self.calls
                    .lock()
                    .unwrap()
                    .push(format!("{region} {node_type}"));
                if self.slow.load(Ordering::SeqCst) > 0 {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                self.answer.lock().unwrap().clone()
            })
        }
    }

    fn t(s: &str) -> NodeType {
        NodeType::parse(s).unwrap()
    }

    fn throttled() -> PriceError {
        PriceError::Unavailable {
            code: "ThrottlingException".into(),
            message: "Rate exceeded".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_price_is_read_once_a_day_per_region_and_type() {
        let inner = Scripted::new(Ok(Some(0.206)));
        let cache = CachedPrices::new(inner.clone(), Arc::new(TokioClock::new()));
        let (large, xlarge) = (t("cache.r6g.large"), t("cache.r6g.xlarge"));
        // Two plans in a day: one read per type.
        for _ in 0..2 {
            for ty in [&large, &xlarge] {
                assert_eq!(
                    cache.on_demand_hourly("us-east-1", ty).await,
                    Ok(Some(0.206))
                );
            }
            tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
        }
        // Another region is another price.
        cache.on_demand_hourly("eu-west-1", &large).await.unwrap();
        assert_eq!(
            inner.calls(),
            [
                "us-east-1 cache.r6g.large",
                "us-east-1 cache.r6g.xlarge",
                "eu-west-1 cache.r6g.large"
            ]
        );
        // A day after the first read it is read again.
        tokio::time::sleep(Duration::from_secs(12 * 3600 + 1)).await;
        inner.answer(Ok(Some(0.25)));
        assert_eq!(
            cache.on_demand_hourly("us-east-1", &large).await,
            Ok(Some(0.25))
        );
        assert_eq!(inner.calls().len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_remembered_for_minutes_not_a_day() {
        let inner = Scripted::new(Err(throttled()));
        let cache = CachedPrices::new(inner.clone(), Arc::new(TokioClock::new()));
        let large = t("cache.r6g.large");
        assert_eq!(
            cache.on_demand_hourly("us-east-1", &large).await,
            Err(throttled())
        );
        // A burst of plans right after doesn't ask again…
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            cache.on_demand_hourly("us-east-1", &large).await,
            Err(throttled())
        );
        assert_eq!(inner.calls().len(), 1);
        // …but five minutes later it does, and the price then holds for a day.
        inner.answer(Ok(Some(0.206)));
        tokio::time::sleep(FAILURE_FRESH_FOR).await;
        assert_eq!(
            cache.on_demand_hourly("us-east-1", &large).await,
            Ok(Some(0.206))
        );
        assert_eq!(inner.calls().len(), 2);
        inner.answer(Err(throttled()));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(
            cache.on_demand_hourly("us-east-1", &large).await,
            Ok(Some(0.206))
        );
        assert_eq!(inner.calls().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_hangs_is_unknown_after_the_timeout_and_remembered_briefly() {
        let inner = Scripted::new(Ok(Some(0.206)));
        inner.slow.store(1, Ordering::SeqCst);
        let cache = CachedPrices::new(inner.clone(), Arc::new(TokioClock::new()));
        let large = t("cache.r6g.large");
        let started = tokio::time::Instant::now();
        let e = cache
            .on_demand_hourly("us-east-1", &large)
            .await
            .unwrap_err();
        assert_eq!(started.elapsed(), LOOKUP_WITHIN);
        assert!(e.to_string().contains("no answer within 5s"), "{e}");
        cache
            .on_demand_hourly("us-east-1", &large)
            .await
            .unwrap_err();
        assert_eq!(inner.calls().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn no_listed_price_is_an_answer_and_holds_for_a_day() {
        let inner = Scripted::new(Ok(None));
        let cache = CachedPrices::new(inner.clone(), Arc::new(TokioClock::new()));
        let t4g = t("cache.t4g.micro");
        assert_eq!(cache.on_demand_hourly("us-east-1", &t4g).await, Ok(None));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(cache.on_demand_hourly("us-east-1", &t4g).await, Ok(None));
        assert_eq!(inner.calls().len(), 1);
    }
}
