//! Gradients reduced over the ranks while the backward pass still runs, as PyTorch's
//! `DistributedDataParallel` does: the flat gradient buffer is cut into buckets of about
//! `cap` values from its end (the last layers, whose gradients the backward pass writes
//! first), and each bucket's all-reduce is queued on the communicator's own stream as soon
//! as every node that writes into it has run, so it travels while the device computes the
//! gradients of earlier layers. The plan depends on the network alone, so every rank queues
//! the same reductions in the same order, as NCCL requires.

use std::ops::Range;

/// A stretch of the flat gradient buffer reduced in one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    /// Offsets (in values) into the flat buffer.
    pub range: Range<usize>,
    /// The lowest node that writes into the bucket: the backward pass, which runs the
    /// nodes from the last down, has written all of it once it has run this node.
    pub written_by: usize,
}

/// The buckets of a flat buffer of `len` values that holds `tensors` (each its range and
/// the node whose backward writes it), every bucket at least `cap` values but the last,
/// from the buffer's end down, together covering all of it (alignment padding included).
/// Tensors are never split; `cap` = 0 gives one bucket per tensor.
pub fn plan(tensors: &[(Range<usize>, usize)], len: usize, cap: usize) -> Vec<Bucket> {
    let mut by_offset: Vec<&(Range<usize>, usize)> = tensors.iter().collect();
    by_offset.sort_by_key(|(r, _)| r.start);
    let mut buckets = Vec::new();
    let mut end = len;
    let mut written_by = usize::MAX;
    for (i, (range, node)) in by_offset.iter().enumerate().rev() {
        written_by = written_by.min(*node);
        // The bucket takes this tensor and reaches down to it; the first bucket reaches
        // down to the buffer's start.
        let start = if i == 0 { 0 } else { range.start };
        if end - start >= cap || i == 0 {
            buckets.push(Bucket {
                range: start..end,
                written_by,
            });
            end = start;
            written_by = usize::MAX;
        }
    }
    if buckets.is_empty() && len > 0 {
        // No tensors: one bucket of padding, complete from the start.
        buckets.push(Bucket {
            range: 0..len,
            written_by: usize::MAX,
        });
    }
    buckets
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_buffer_from_its_end_without_splitting_a_tensor() {
        // Four tensors of nodes 1, 2, 4, 6, with padding after each.
        let tensors = [(0..10, 1), (16..20, 2), (32..60, 4), (64..66, 6)];
        let want = |ranges: &[(Range<usize>, usize)]| {
            ranges
                .iter()
                .map(|(r, n)| Bucket {
                    range: r.clone(),
                    written_by: *n,
                })
                .collect::<Vec<_>>()
        };
        // Each tensor alone.
        assert_eq!(
            plan(&tensors, 70, 0),
            want(&[(64..70, 6), (32..64, 4), (16..32, 2), (0..16, 1)])
        );
        // At least 30 values: the last two tensors, then the rest.
        assert_eq!(plan(&tensors, 70, 30), want(&[(32..70, 4), (0..32, 1)]));
        // More than the buffer: one bucket.
        assert_eq!(plan(&tensors, 70, 1000), want(&[(0..70, 1)]));
        // Order given does not matter; a later tensor may be written by an earlier node.
        let shuffled = [(32..60, 1), (0..10, 4), (64..66, 6), (16..20, 2)];
        assert_eq!(plan(&shuffled, 70, 30), want(&[(32..70, 1), (0..32, 2)]));
        assert_eq!(plan(&[], 8, 4), want(&[(0..8, usize::MAX)]));
        assert!(plan(&[], 0, 4).is_empty());
    }

    #[test]
    fn every_value_is_in_exactly_one_bucket() {
        let mut tensors = Vec::new();
        let mut at: usize = 0;
        for node in 1..40 {
            let len = (node * 37) % 101 + 1;
            tensors.push((at..at + len, node));
            at = (at + len).next_multiple_of(8);
        }
        for cap in [0, 1, 50, 300, 5000] {
            let buckets = plan(&tensors, at, cap);
            let mut covered = vec![0u8; at];
            for b in &buckets {
                covered[b.range.clone()].iter_mut().for_each(|c| *c += 1);
                // Its writers are exactly the tensors inside it.
                let inside = tensors.iter().filter(|(r, _)| b.range.contains(&r.start));
                assert_eq!(inside.clone().map(|(_, n)| *n).min(), Some(b.written_by));
                assert!(inside.clone().all(|(r, _)| r.end <= b.range.end));
            }
            assert!(covered.iter().all(|&c| c == 1), "cap {cap}");
            for b in &buckets[..buckets.len() - 1] {
                assert!(b.range.len() >= cap, "cap {cap}: {b:?}");
            }
        }
    }
}
