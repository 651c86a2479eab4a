//! Output activations: argmax for the class, softmax for probabilities.

use micromath::F32Ext;

/// Index of the largest value (the first one on ties); 0 for an empty slice. For f32 logits
/// and the int8 engine's `i32` ones alike.
pub fn argmax<T: PartialOrd + Copy>(values: &[T]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if values.get(best).is_some_and(|&b| v > b) {
            best = i;
        }
    }
    best
}

/// Softmax in place, shifted by the maximum for stability. Uses micromath's fast `exp`
/// (about 1e-3 relative error): for display, never for the predicted class.
pub fn softmax(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in values.iter_mut() {
        *v = F32Ext::exp(*v - max);
        sum += *v;
    }
    if sum > 0.0 {
        for v in values.iter_mut() {
            *v /= sum;
        }
    }
}
