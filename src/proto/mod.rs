//! Sans-I/O SRP channel logic: login negotiation, credits, the command
//! state machine, descriptor mapping and data buffer pools. Nothing here
//! performs I/O; [`channel::Channel`] consumes events and emits
//! [`action::Action`]s for a driver to execute.
//!
//! - [`action`]: what the driver is asked to do; work request ids.
//! - [`channel`]: one RDMA channel: its memory, events, requests, target IUs.
//! - `command`: the per-command state machine and its wait queues.
//! - `request`: what the channel keeps of an SRP_CMD.
//! - [`credits`], [`login`], [`pool`]: flow control, login, buffer pools.
//! - [`stats`], `accounting`: what channels count, per channel and per LUN.
//! - `ordering`: task attributes (ORDERED, HEAD OF QUEUE).
//! - `task_set`: task management across channels (LUN RESET, PREEMPT AND ABORT).

mod accounting;
pub mod action;
pub mod channel;
mod command;
pub mod credits;
pub mod login;
mod ordering;
pub mod pool;
mod request;
pub mod stats;
mod table;
mod task_set;

pub use action::{Action, CmdId, LocalSeg, Region, WorkRequest, WrId, WrKind, WrOpcode};
pub use channel::{
    Channel, ChannelConfig, ChannelMemory, ChannelMemoryLayout, ChannelStats, ExecRequest, SharedRecv,
    RECV_FLUSH_GRACE,
};
pub use credits::Credits;
pub use login::{negotiate, Accepted, LoginLimits, MultiChannel, TargetPortId};
pub use request::MAX_CDB;
pub use stats::{IoStats, LatencyHistogram, LunStats, StatusCounts, TickScale};
pub use task_set::TASK_SET_POLL;
