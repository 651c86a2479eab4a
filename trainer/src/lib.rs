//! Host trainer for the L1-sparse CNN: data loading, the reference recipe's model in Candle,
//! L1 training (penalty in the loss, or a proximal step that leaves exact zeros), magnitude
//! pruning with masked fine-tuning, and evaluation.
//!
//! The `trainer` binary wraps these steps in a CLI; everything it does is reachable from here so
//! the end-to-end pipeline and tests can drive it.

pub mod bench;
pub mod conv;
pub mod data;
pub mod datasets;
pub mod engine_eval;
pub mod eval;
pub mod export;
pub mod gemm;
pub mod idx;
pub mod linear;
pub mod model;
pub mod optim;
pub mod output;
pub mod pipeline;
pub mod prune;
pub mod tensor_file;
pub mod train;
