//! The one place with `unsafe` code: memory that RDMA hardware reads and
//! writes, and the verbs / RDMA/CM wrappers.

pub mod mem;
pub mod umad;
