//! Running int8 models (feature `int8`): the int8 engine, its memory on this module's stack
//! frame.

use crate::{exact_logits, network, run_batch, LayerCost, Outcome, Runner, MAX_CLASSES};
use model_format::Model;
use protocol::batch::Batch;
use sparse_engine::{Cursor, EngineError, Int8Engine, Int8Memory, Int8Plan, Stats};

/// The engine's memory bound for the network this firmware is built for (see `f32::PLAN`), its
/// scratch cut to what a built-in model needs.
const PLAN: Int8Plan = match Int8Plan::for_spec(&network::NETWORK) {
    Ok(plan) => plan.with_scratch_at_most(network::MODEL_SCRATCH),
    Err(_) => panic!("the network has no int8 buffer plan"),
};

/// The engine with room for the network's conv layers only (a model with more is refused).
type Engine<'m, 'b> = Int8Engine<'m, 'b, { PLAN.layout.convs }>;

impl Runner for Engine<'_, '_> {
    fn classes(&self) -> usize {
        Engine::classes(self)
    }
    fn stats(&self) -> Stats {
        Engine::stats(self)
    }
    fn run(
        &mut self,
        image: &[u8],
        bits: &mut [u32],
        probe: &mut LayerCost,
    ) -> Result<usize, EngineError> {
        exact_logits::<i32, MAX_CLASSES>(
            bits,
            |l| l as u32,
            |logits| self.infer(image, logits, probe),
        )
    }
}

#[inline(never)]
pub fn run(model: &Model<'_>, batch: &Batch<'_>) -> Option<Outcome> {
    let mut activations = [0i16; PLAN.activations];
    let mut accumulators = [0i32; PLAN.accumulators];
    let mut tap_offsets = [0u16; PLAN.tap_offsets];
    let mut cursors = [Cursor::default(); PLAN.cursors];
    let mut scratch = [0u32; PLAN.scratch];
    let memory = Int8Memory {
        activations: &mut activations,
        accumulators: &mut accumulators,
        tap_offsets: &mut tap_offsets,
        cursors: &mut cursors,
        scratch: &mut scratch,
    };
    let outcome = match Engine::with_stages(model, memory) {
        Ok(mut engine) => run_batch(&mut engine, model, batch)
            .map(|(n, c, cost)| (n, c, cost, PLAN.total_bytes())),
        Err(e) => {
            defmt::error!("model cannot run: {}", e);
            None
        }
    };
    outcome
}
