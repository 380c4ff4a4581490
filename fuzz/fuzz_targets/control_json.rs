#![no_main]
//! cargo-fuzz target `control_json`: see `listo_fuzz::targets::control_json` for the input format and invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    listo_fuzz::targets::control_json(data);
});
