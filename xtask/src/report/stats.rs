//! How sure an accuracy is: 95% intervals on the test set's size.

/// z for a two-sided 95% interval.
const Z: f64 = 1.959_964;

/// Wilson score interval of an accuracy measured on `n` images: (low, high).
pub fn wilson95(accuracy: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let z2 = Z * Z;
    let centre = (accuracy + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z * (accuracy * (1.0 - accuracy) / n + z2 / (4.0 * n * n)).sqrt() / (1.0 + z2 / n);
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// 95% interval of the difference `b − a` of two accuracies on `n` images each (normal
/// approximation, as if the two samples were independent: wider than a paired test, so "within
/// noise" errs on the side of noise).
pub fn difference95(a: f64, b: f64, n: usize) -> (f64, f64) {
    let n = n.max(1) as f64;
    let se = (a * (1.0 - a) / n + b * (1.0 - b) / n).sqrt();
    let d = b - a;
    (d - Z * se, d + Z * se)
}

/// `-0.30 pp (95% CI -1.52 to +0.92 pp: within noise)`.
pub fn difference_text(a: f64, b: f64, n: usize) -> String {
    let (lo, hi) = difference95(a, b, n);
    let verdict = if lo <= 0.0 && hi >= 0.0 {
        "within noise"
    } else if hi < 0.0 {
        "a real loss"
    } else {
        "a real gain"
    };
    format!(
        "{:+.2} pp (95% CI {:+.2} to {:+.2} pp: {verdict})",
        100.0 * (b - a),
        100.0 * lo,
        100.0 * hi
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_match_textbook_values() {
        // Wilson interval of 95/100: 0.8882 to 0.9785.
        let (lo, hi) = wilson95(0.95, 100);
        assert!(
            (lo - 0.8882).abs() < 1e-4 && (hi - 0.9785).abs() < 1e-4,
            "{lo} {hi}"
        );
        // Wider with fewer images, inside [0, 1] at the extremes.
        assert!(wilson95(0.95, 10).0 < lo);
        let (lo, hi) = wilson95(1.0, 50);
        assert!(
            hi <= 1.0 && hi > 0.9999 && lo > 0.92 && lo < 1.0,
            "{lo} {hi}"
        );
        let (lo, hi) = difference95(0.9621, 0.9591, 2004);
        assert!(lo < 0.0 && hi > 0.0);
        assert!(difference_text(0.9621, 0.9591, 2004).contains("within noise"));
        assert!(difference_text(0.9621, 0.9232, 2004).contains("a real loss"));
    }
}
