//! Shared helpers for the trainer's integration tests.
#![allow(dead_code)]

use trainer::data::Dataset;

/// A learnable synthetic dataset: class `c` is a bright 6x6 square at a class-specific position
/// plus deterministic noise, so a few steps of training move the weights meaningfully.
pub fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as u32
    };
    let mut images = Vec::with_capacity(n * 28 * 28);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = i % 10;
        let (top, left) = (2 + (class / 5) * 12, 2 + (class % 5) * 5);
        for y in 0..28 {
            for x in 0..28 {
                let inside = (top..top + 6).contains(&y) && (left..left + 6).contains(&x);
                let noise = (next() % 40) as u8;
                images.push(if inside { 200 + noise } else { noise });
            }
        }
        labels.push(class as u8);
    }
    Dataset::new(images, labels, 28, 28).expect("28x28 images")
}
pub mod relu_pool;
