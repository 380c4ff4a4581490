#![no_main]
//! cargo-fuzz target `upstream_stream`: see `listo_fuzz::targets::upstream_stream` for the input format and invariants.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    listo_fuzz::targets::upstream_stream(data);
});
