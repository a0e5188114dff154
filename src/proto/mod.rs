//! Sans-I/O SRP channel logic: login negotiation, credits, the command
//! state machine, descriptor mapping and data buffer pools. Nothing here
//! performs I/O; [`channel::Channel`] consumes events and emits
//! [`action::Action`]s for a driver to execute.

pub mod action;
pub mod channel;
pub mod credits;
pub mod login;
pub mod pool;

pub use action::{Action, CmdId, LocalSeg, Region, WorkRequest, WrId, WrKind, WrOpcode};
pub use channel::{Channel, ChannelConfig, ChannelStats, ExecRequest, SharedRecv};
pub use credits::Credits;
pub use login::{negotiate, Accepted, LoginLimits, MultiChannel, TargetPortId};
