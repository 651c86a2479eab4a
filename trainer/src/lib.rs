//! Host trainer for the L1-sparse CNN, one module per stage of the pipeline:
//!
//! - [`data`]: IDX files and the built-in datasets;
//! - [`model`]: the CNN in Candle, built from a network description (its conv blocks and linear
//!   layers as own ops), and saving/loading state dicts;
//! - [`train`]: the training loop (Adam, L1 in the loss or as a proximal step), checkpoints;
//! - [`prune`]: magnitude pruning (then masked fine-tuning through [`train`]); [`reduce`]: dead
//!   units removed before export;
//! - [`export`]: the model file, its inspection and densification;
//! - [`quantize`]: post-training int8 quantization (per-channel weights, calibrated activations);
//! - [`eval`]: accuracy, sparsity and per-layer cost, in Candle or the firmware's engine;
//! - [`pipeline`]: the stages as library calls, with the main job's defaults;
//! - [`output`]: what the CLI prints as JSON, as types; [`bench`]: training throughput.
//!
//! The `trainer` binary wraps these in a CLI; everything it does is reachable from here so the
//! end-to-end pipeline and tests can drive it.

pub mod bench;
pub mod data;
pub mod eval;
pub mod export;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod prune;
pub mod quantize;
pub mod reduce;
pub mod train;
