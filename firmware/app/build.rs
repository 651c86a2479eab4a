//! Picks the board's memory map (from its feature) and adds the model and input regions' symbols.

use std::path::PathBuf;

fn main() {
    let boards = ["mps2-an386", "netduinoplus2", "nrf52840dk", "stm32f407"];
    let chosen: Vec<&str> = boards
        .iter()
        .copied()
        .filter(|b| {
            std::env::var_os(format!(
                "CARGO_FEATURE_{}",
                b.to_uppercase().replace('-', "_")
            ))
            .is_some()
        })
        .collect();
    let board = match chosen.as_slice() {
        [one] => *one,
        _ => panic!("enable exactly one board feature: {}", boards.join(", ")),
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let memory = std::fs::read_to_string(format!("memory/{board}.x")).expect("memory map");
    let regions = "
_model_start = ORIGIN(MODEL);
_model_len = LENGTH(MODEL);
_inputs_start = ORIGIN(INPUTS);
_inputs_len = LENGTH(INPUTS);
_ram_start = ORIGIN(RAM);
";
    std::fs::write(out.join("memory.x"), memory + regions).expect("writing memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory/{board}.x");
    println!("cargo:rerun-if-changed=build.rs");
}
