//! The cycle estimate: its Cortex-M4 table against the TRM on micro-benchmarks, and its
//! instruction counts against QEMU's own on a real firmware run.

mod common;

use common::{firmware_elf, fixture, write_file, DEVICE_IMAGES};
use model_format::writer::AlignedBytes;
use std::time::Duration;
use trainer::pipeline;
use xtask::cycles;
use xtask::firmware::Board;
use xtask::qemu;

#[test]
fn the_estimate_equals_the_trm_on_every_micro_benchmark() {
    let checks = cycles::validate::validate().unwrap();
    assert_eq!(checks.len(), 9);
    for c in &checks {
        eprintln!("{c:?}");
        assert!(c.passes(), "{c:?}");
    }
}

/// The plugin's instructions per inference are QEMU's instruction count (SysTick under
/// `-icount`, in a run of its own) less the firmware's timing code, and its layers are the
/// firmware's layers.
#[test]
fn the_profile_counts_what_qemu_counts() {
    let f = fixture();
    let board = Board::Mps2An386;
    let elf = firmware_elf(board);
    let images = f.test_set.truncated(DEVICE_IMAGES);
    let files = pipeline::device_files(&AlignedBytes::from(&f.sparse_file[..]), &images).unwrap();
    let dir = f.work.join("cycles");
    std::fs::create_dir_all(&dir).unwrap();
    let model = write_file(&dir, "model.slot", &files.model_slot);
    let inputs = write_file(&dir, "inputs.slot", &files.inputs_slot);
    let timeout = Duration::from_secs(300);
    let (profiled, profile) =
        qemu::run_profiled(board, &elf, Some(&model), Some(&inputs), timeout).unwrap();
    assert_eq!(profiled.exit_code, Some(0), "{:?}", profiled.errors());
    let run = qemu::run(board, &elf, Some(&model), Some(&inputs), timeout).unwrap();
    let report = qemu::parse_report(&run).unwrap();
    let estimate = cycles::estimate(&profile, &cycles::disassemble(&elf).unwrap()).unwrap();
    assert_eq!(estimate.inferences, DEVICE_IMAGES as u64);
    assert_eq!(estimate.layers.len(), report.layers.len());
    let counted = estimate.inference.instructions as f64;
    let qemu = report.cost_per_image as f64;
    assert!(
        counted <= qemu && counted > 0.99 * qemu,
        "plugin {counted} vs QEMU {qemu} instructions per inference"
    );
    for (est, layer) in estimate.layers.iter().zip(&report.layers) {
        let (a, b) = (est.instructions as f64, layer.cost as f64);
        assert!(
            (a - b).abs() <= 0.02 * b + 200.0,
            "{}: plugin {a} vs QEMU {b}",
            layer.name
        );
    }
    // Every instruction costs at least a cycle; an f32 model's MACs cost 3.
    assert!(estimate.inference.cycles > estimate.inference.instructions);
}
