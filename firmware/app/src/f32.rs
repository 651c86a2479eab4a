//! Running f32 models (feature `f32`): the f32 engine, its memory on this module's stack frame.

use crate::{exact_logits, network, run_batch, LayerCost, Outcome, Runner, MAX_CLASSES};
use model_format::Model;
use protocol::batch::Batch;
use sparse_engine::{BufferPlan, Engine, EngineError, Stats};

/// Engine memory, from the engine's bound for the network this firmware is built for (the
/// recipe's CNN unless built with `L1SPARSE_NETWORK`; a smaller network fits too, a larger one
/// is refused by the engine by name). It lives on the stack of [`run`], which starts after
/// validation has returned, so the two phases share RAM.
const PLAN: BufferPlan = match BufferPlan::for_spec(&network::NETWORK) {
    Ok(plan) => plan,
    Err(_) => panic!("the network has no buffer plan"),
};

/// The engine with room for the network's conv layers only (a model with more is refused).
type F32Engine<'m, 'b> = Engine<'m, 'b, { PLAN.convs }>;

impl Runner for F32Engine<'_, '_> {
    fn classes(&self) -> usize {
        F32Engine::classes(self)
    }
    fn stats(&self) -> Stats {
        F32Engine::stats(self)
    }
    fn run(
        &mut self,
        image: &[u8],
        bits: &mut [u32],
        probe: &mut LayerCost,
    ) -> Result<usize, EngineError> {
        exact_logits::<f32, MAX_CLASSES>(bits, f32::to_bits, |logits| {
            self.infer(image, logits, probe)
        })
    }
}

#[inline(never)]
pub fn run(model: &Model<'_>, batch: &Batch<'_>) -> Option<Outcome> {
    let mut activations = [0f32; PLAN.activations];
    let mut tap_offsets = [0u16; PLAN.tap_offsets];
    let outcome = match F32Engine::with_stages(model, &mut activations, &mut tap_offsets) {
        Ok(mut engine) => {
            run_batch(&mut engine, model, batch).map(|(n, c, cost)| (n, c, cost, PLAN.bytes()))
        }
        Err(e) => {
            defmt::error!("model cannot run: {}", e);
            None
        }
    };
    outcome
}
