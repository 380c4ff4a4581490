#![no_main]
//! cargo-fuzz target `node_api`: see `listo_fuzz::targets::node_api` for the input format and invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    listo_fuzz::targets::node_api(data);
});
