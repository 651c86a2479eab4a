//! The l1sparse firmware: validates the model in its flash slot at boot, runs the batch of test
//! images in the inputs slot through the sparse engine, and reports each image's logits (as f32
//! bit patterns, for exact comparison with the host), the per-layer cost and peak RAM as typed
//! `protocol::Record`s over defmt, with a one-line summary for people.
//!
//! Any problem with the model or the images is a defmt error naming it and, under QEMU, a
//! non-zero exit: never a HardFault.
#![no_std]
#![no_main]

/// The board's facts, from `firmware/boards/<board>/board.toml` (see build.rs).
mod board {
    include!(concat!(env!("OUT_DIR"), "/board.rs"));
}
/// The network the engine's buffers are sized for (see build.rs).
#[allow(unused_imports)]
mod network {
    include!(concat!(env!("OUT_DIR"), "/network.rs"));
}
mod regions;
mod stack;
mod timer;

use cortex_m_rt::{entry, exception, ExceptionFrame};
use model_format::Model;
use panic_probe as _;
use protocol::batch::Batch;
use protocol::slot::{read_slot, SlotKind};
use protocol::Record;
use sparse_engine::{argmax, BufferPlan, Engine, Probe};

#[cfg(feature = "rtt")]
use defmt_rtt as _;
#[cfg(feature = "qemu")]
use defmt_semihosting as _;

/// Engine memory, from the engine's bound for the network this firmware is built for (the
/// recipe's CNN unless built with `L1SPARSE_NETWORK`; a smaller network fits too, a larger one
/// is refused by `Engine::new` by name).
/// It lives on the stack of `run`, which starts after validation has returned, so the two
/// phases share RAM.
const PLAN: BufferPlan = match BufferPlan::for_spec(&network::NETWORK) {
    Ok(plan) => plan,
    Err(_) => panic!("the network has no buffer plan"),
};
const ACTIVATIONS: usize = PLAN.activations;
const TAP_OFFSETS: usize = PLAN.tap_offsets;
const MAX_CLASSES: usize = protocol::MAX_CLASSES;
const MAX_LAYERS: usize = model_format::network::MAX_LAYERS;

/// The logits' bit patterns (`run` checked that they fit).
fn bits(logits: &[f32]) -> heapless::Vec<u32, MAX_CLASSES> {
    let mut out = heapless::Vec::new();
    for l in logits {
        let _ = out.push(l.to_bits());
    }
    out
}

/// Sends one report record (postcard bytes in a defmt message, see `protocol`).
fn send(record: &Record) {
    let mut buf = [0u8; protocol::MAX_RECORD];
    match record.encode(&mut buf) {
        Some(bytes) => defmt::println!("{=str} {=[u8]:x}", protocol::TAG, bytes),
        None => defmt::error!("report record too large"),
    }
}

/// Ends the program: a semihosting exit status under QEMU, a breakpoint (probe-rs stops) on boards.
fn finish(success: bool) -> ! {
    #[cfg(feature = "qemu")]
    {
        use cortex_m_semihosting::debug;
        debug::exit(if success {
            debug::EXIT_SUCCESS
        } else {
            debug::EXIT_FAILURE
        });
    }
    let _ = success;
    loop {
        cortex_m::asm::bkpt();
    }
}

/// Sums the counter over each layer's work (streamed layers report several spans).
struct LayerCost {
    started: u64,
    cost: [u64; MAX_LAYERS],
}

impl Probe for LayerCost {
    fn layer_start(&mut self, _layer: usize) {
        self.started = timer::now();
    }
    fn layer_end(&mut self, layer: usize) {
        if let Some(c) = self.cost.get_mut(layer) {
            *c += timer::now().saturating_sub(self.started);
        }
    }
}

#[entry]
fn main() -> ! {
    let (ram_start, free_start, stack_top) = regions::ram_layout();
    stack::paint(free_start);
    let Some(peripherals) = cortex_m::Peripherals::take() else {
        defmt::error!("peripherals already taken");
        finish(false)
    };
    #[cfg(feature = "qemu")]
    timer::start(peripherals.SYST);
    #[cfg(feature = "rtt")]
    timer::start(peripherals.DCB, peripherals.DWT);

    let model_bytes = match read_slot(regions::model(), SlotKind::Model) {
        Ok(bytes) => bytes,
        Err(e) => {
            defmt::error!("model slot: {}", e);
            finish(false)
        }
    };
    let before = timer::now();
    let model = match Model::parse(model_bytes) {
        Ok(m) => m,
        Err(e) => {
            defmt::error!("model invalid: {}", e);
            finish(false)
        }
    };
    let validation = timer::to_unit(timer::now() - before);
    send(&Record::Model {
        bytes: model_bytes.len() as u32,
        layers: model.layers.len() as u8,
        validation_cost: validation,
        unit: timer::UNIT,
        core_hz: board::CORE_HZ,
    });
    let batch = match read_slot(regions::inputs(), SlotKind::Batch).and_then(Batch::parse) {
        Ok(b) => b,
        Err(e) => {
            defmt::error!("test images: {}", e);
            finish(false)
        }
    };

    // Validation's deeper frames are gone: measure them, then repaint for the run.
    let boot_stack = stack::high_water(free_start, stack_top);
    stack::paint(free_start);
    let outcome = run(&model, &batch);
    let run_stack = stack::high_water(free_start, stack_top);
    let Some((images, correct, cost_per_image)) = outcome else {
        finish(false)
    };
    let static_bytes = free_start - ram_start;
    send(&Record::Ram {
        static_bytes: static_bytes as u32,
        activation_bytes: PLAN.bytes() as u32,
        boot_stack: boot_stack as u32,
        run_stack: run_stack as u32,
        peak: (static_bytes + boot_stack.max(run_stack)) as u32,
    });
    send(&Record::Done {
        images: images as u16,
        correct: correct as u16,
        cost_per_image,
    });
    defmt::println!(
        "done on {=str} ({=str}): {=usize} images, {=usize} correct, {=u64} per image",
        board::NAME,
        board::DESCRIPTION,
        images,
        correct,
        cost_per_image
    );
    finish(true)
}

/// Runs the batch with the engine's memory on this frame; prints each image's result and the
/// per-layer cost. Returns (images, correct, average cost per image), `None` after an error.
#[inline(never)]
fn run(model: &Model<'_>, batch: &Batch<'_>) -> Option<(usize, usize, u64)> {
    let mut activations = [0f32; ACTIVATIONS];
    let mut tap_offsets = [0u16; TAP_OFFSETS];
    let mut engine = match Engine::new(model, &mut activations, &mut tap_offsets) {
        Ok(e) => e,
        Err(e) => {
            defmt::error!("model cannot run: {}", e);
            return None;
        }
    };
    let classes = engine.classes();
    if classes > MAX_CLASSES {
        defmt::error!(
            "model has {=usize} classes, firmware supports {=usize}",
            classes,
            MAX_CLASSES
        );
        return None;
    }
    let mut correct = 0;
    let mut total_cost: u64 = 0;
    let mut last = [0u64; MAX_LAYERS];
    let mut last_macs = [0u64; MAX_LAYERS];
    for i in 0..batch.len() {
        let (image, label) = batch.get(i)?;
        let mut logits = [0f32; MAX_CLASSES];
        let mut cost = LayerCost {
            started: 0,
            cost: [0; MAX_LAYERS],
        };
        let start = timer::now();
        let stats = match engine.infer(image, &mut logits[..classes], &mut cost) {
            Ok(s) => s,
            Err(e) => {
                defmt::error!("image {=usize}: {}", i, e);
                return None;
            }
        };
        let spent = timer::to_unit(timer::now() - start);
        total_cost += spent;
        let predicted = argmax(&logits[..classes]);
        correct += usize::from(predicted == usize::from(label));
        send(&Record::Image {
            index: i as u16,
            label,
            predicted: predicted as u8,
            cost: spent,
            logit_bits: bits(&logits[..classes]),
        });
        last = cost.cost;
        last_macs = stats.layer_macs;
    }
    for (i, params) in model.layers.iter().enumerate() {
        send(&Record::Layer {
            index: i as u8,
            name: heapless::String::try_from(params.layer.name).unwrap_or_default(),
            macs: last_macs.get(i).copied().unwrap_or(0),
            cost: timer::to_unit(last.get(i).copied().unwrap_or(0)),
        });
    }
    let images = batch.len();
    Some((images, correct, total_cost / images.max(1) as u64))
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("HardFault at pc {=u32:08x}", frame.pc());
    finish(false)
}
