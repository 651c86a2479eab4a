//! The built-in MNIST conversion: fixed per-digit 80/20 split, interleaved classes, valid IDX.

use trainer::data::datasets::write_split_idx;
use trainer::data::{Dataset, Split};

const PIXELS: usize = 28 * 28;

#[test]
fn split_is_80_20_per_digit_and_round_robin() {
    // Digit d has 10 + d images whose pixels all equal d·10 + index within the digit.
    let digits: Vec<Vec<u8>> = (0..10u8)
        .map(|d| (0..10 + d).flat_map(|i| vec![d * 10 + i; PIXELS]).collect())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write_split_idx(&digits, dir.path()).unwrap();
    let train = Dataset::load_split(dir.path(), Split::Train).unwrap();
    let test = Dataset::load_split(dir.path(), Split::Test).unwrap();
    let n_train: usize = (0..10).map(|d| (10 + d) * 4 / 5).sum();
    assert_eq!(train.len(), n_train);
    assert_eq!(
        train.len() + test.len(),
        (0..10).map(|d| 10 + d).sum::<usize>()
    );
    // The first ten training samples are the first image of each digit, in class order.
    assert_eq!(&train.labels[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    for (i, &label) in train.labels[..10].iter().enumerate() {
        assert_eq!(train.image(i)[0], label * 10);
    }
    // Test images of digit 9 (19 images, 15 train) are its images 15..19.
    let nines: Vec<u8> = (0..test.len())
        .filter(|&i| test.labels[i] == 9)
        .map(|i| test.image(i)[0])
        .collect();
    assert_eq!(nines, vec![105, 106, 107, 108]);
}
