//! Persistent reservations, sans I/O (tests/common/pr_model.rs): PR OUT
//! parameter lists well-formed and raw, PR IN, RESERVE/RELEASE, nexus
//! loss and LUN reset from four I_T nexuses, with a model check of the
//! SPC-4 register/reserve invariants and of the APTPL file round trip
//! after every step.
#![no_main]

#[path = "../../tests/common/pr_model.rs"]
mod pr_model;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    pr_model::run(data);
});
