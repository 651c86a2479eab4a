//! End-to-end tests live in `tests/`: they train a small model, export it, and check the host
//! engine against candle and the firmware under QEMU against the host engine.
