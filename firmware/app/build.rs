//! Picks the board (from its feature) and reads its description in `firmware/boards/<board>/`:
//! the memory map (`memory.x`, plus the model and input regions' symbols) for the linker, and
//! the board's facts (`board.toml`) as constants in `board.rs`.

use std::path::{Path, PathBuf};

const BOARDS: [&str; 4] = ["mps2-an386", "netduinoplus2", "nrf52840dk", "stm32f407"];

/// The facts of `board.toml` the firmware uses.
#[derive(serde::Deserialize)]
struct Board {
    description: String,
    core_hz: u64,
}

fn main() {
    let chosen: Vec<&str> = BOARDS
        .iter()
        .copied()
        .filter(|b| {
            let feature = format!("CARGO_FEATURE_{}", b.to_uppercase().replace('-', "_"));
            std::env::var_os(feature).is_some()
        })
        .collect();
    let board = match chosen.as_slice() {
        [one] => *one,
        _ => panic!("enable exactly one board feature: {}", BOARDS.join(", ")),
    };
    let dir = Path::new("../boards").join(board);
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let memory = std::fs::read_to_string(dir.join("memory.x")).expect("the board's memory.x");
    let regions = "
_model_start = ORIGIN(MODEL);
_model_len = LENGTH(MODEL);
_inputs_start = ORIGIN(INPUTS);
_inputs_len = LENGTH(INPUTS);
_ram_start = ORIGIN(RAM);
";
    std::fs::write(out.join("memory.x"), memory + regions).expect("writing memory.x");
    let facts = std::fs::read_to_string(dir.join("board.toml")).expect("the board's board.toml");
    let facts: Board = toml::from_str(&facts).expect("board.toml: description, core_hz");
    let constants = format!(
        "/// The board this image is built for.\npub const NAME: &str = {board:?};\n\
         /// {}.\npub const DESCRIPTION: &str = {:?};\n\
         /// The core clock (SysTick's under QEMU).\npub const CORE_HZ: u32 = {};\n",
        facts.description, facts.description, facts.core_hz
    );
    std::fs::write(out.join("board.rs"), constants).expect("writing board.rs");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=../boards/{board}");
    println!("cargo:rerun-if-changed=build.rs");
}
