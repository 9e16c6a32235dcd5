//! Blocking work on many items at once: requests that each wait a round trip (S3) are sent
//! side by side instead of one after another.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// `f` of every item, `workers` at a time on threads of their own; the results in the items'
/// order.
pub(crate) fn map_in_order<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    if workers <= 1 || items.len() <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..workers.min(items.len()) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let result = f(item);
                *results[i].lock().expect("result slot") = Some(result);
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            let result = slot.into_inner().expect("result slot");
            result.expect("every item done")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_come_in_the_items_order_whatever_finishes_first() {
        let items: Vec<u64> = (0..50).collect();
        let doubled = super::map_in_order(&items, 8, |&i| {
            // The later items finish first.
            std::thread::sleep(std::time::Duration::from_micros(50 * (50 - i)));
            i * 2
        });
        assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!(super::map_in_order(&[] as &[u64], 8, |&i| i).is_empty());
    }
}
