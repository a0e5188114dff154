//! The channel driven by the simulated initiator (tests/common): the input
//! decodes into commands of every descriptor layout with real data
//! movement, malformed IUs, held executions released in any order, failed
//! work requests, task management, logout, disconnect, a shared receive
//! ring and simulated time. Oracles (tests/common/chaos.rs): one answer per
//! command unless aborted, balanced credits, reads return what was written,
//! nothing leaked after disconnect.
#![no_main]

#[path = "../../tests/common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::chaos::run(data);
});
